# Writes a C++ source holding the bytes of a BPF object: -DINPUT, -DOUTPUT,
# -DNAME (the array's name in namespace hostlb).
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" length)
math(EXPR size "${length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by netlink/bpf/embed.cmake.\n"
  "#include <cstddef>\n#include <cstdint>\nnamespace hostlb {\n"
  "extern const uint8_t ${NAME}[];\nextern const size_t ${NAME}_size;\n"
  "const uint8_t ${NAME}[] = {${bytes}};\nconst size_t ${NAME}_size = ${size};\n}\n")
