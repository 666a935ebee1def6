// libFuzzer: the state document parser and validator. A document that is
// accepted must survive a round trip through its canonical form unchanged;
// anything else must be refused with DocumentError, never crash. The fast
// path must never accept what the strict path refuses, nor read a document
// differently, and must take every canonical document.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/state_document.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const hostlb::DocumentOptions options{"br0"};
  const auto fast = hostlb::parse_state_document_fast(text, options);
  hostlb::State state;
  try {
    state = hostlb::state_from_json(hostlb::parse_json_strict(text), options);
  } catch (const hostlb::DocumentError&) {
    if (fast) __builtin_trap();  // the fast path took what the strict one refuses
    return 0;
  }
  if (fast && !(*fast == state)) __builtin_trap();
  const std::string canonical = hostlb::state_to_json(state).dump();
  const auto canonical_fast = hostlb::parse_state_document_fast(canonical);
  if (!canonical_fast || !(*canonical_fast == state)) __builtin_trap();
  const hostlb::State again = hostlb::parse_state_document(canonical);
  if (!(again == state)) __builtin_trap();
  // Whatever is valid compiles (identities within the default mark space).
  (void)hostlb::compile_datapath(state, {}, hostlb::MarkLayout(hostlb::MarkLayout::kDefaultMask));
  return 0;
}
