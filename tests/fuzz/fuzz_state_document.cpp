// libFuzzer: the state document parser and validator. A document that is
// accepted must survive a round trip through its canonical form unchanged;
// anything else must be refused with DocumentError, never crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/state_document.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  hostlb::State state;
  try {
    state = hostlb::parse_state_document(text, {"br0"});
  } catch (const hostlb::DocumentError&) {
    return 0;
  }
  const hostlb::State again = hostlb::parse_state_document(hostlb::state_to_json(state).dump());
  if (!(again == state)) __builtin_trap();
  // Whatever is valid compiles (identities within the default mark space).
  (void)hostlb::compile_datapath(state, {}, hostlb::MarkLayout(hostlb::MarkLayout::kDefaultMask));
  return 0;
}
