// libFuzzer: journal records as hostlbd reads them back at start-up. A line
// either is refused with a reason or reads as a record whose line reads
// back to the same record.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hostlb/policies/journal.h"
#include "hostlb/policies/state_document.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  hostlb::JournalRecord record;
  try {
    record = hostlb::journal_record_from_line(line);
  } catch (const hostlb::DocumentError& e) {
    if (e.reason().empty()) __builtin_trap();  // a refusal always says why
    return 0;
  }
  const std::string again = hostlb::journal_record_to_line(record);
  try {
    if (!(hostlb::journal_record_from_line(again) == record)) __builtin_trap();
  } catch (const hostlb::DocumentError&) {
    __builtin_trap();  // what was written must read back
  }
  return 0;
}
