// libFuzzer: hostlbd.conf and the services.d merge. The input is split at
// the first NUL byte: settings text before it, two state fragments after it
// (split again at the next NUL).
#include <cstddef>
#include <cstdint>
#include <string>

#include "hostlb/policies/config_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t first = input.find('\0');
  try {
    (void)hostlb::parse_daemon_settings(input.substr(0, first));
  } catch (const hostlb::DocumentError&) {
  }
  if (first == std::string::npos) return 0;
  const std::string rest = input.substr(first + 1);
  const size_t second = rest.find('\0');
  std::vector<hostlb::SourceFile> files{{"a.json", rest.substr(0, second)}};
  if (second != std::string::npos) files.push_back({"b.json", rest.substr(second + 1)});
  try {
    (void)hostlb::merge_state_files(files, {"br0"});
  } catch (const hostlb::DocumentError&) {
  }
  return 0;
}
