// libFuzzer: the control protocol decoder hostlbd runs on every line a
// client sends. It returns a request or an error, never crashes.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "hostlb/policies/control_protocol.h"
#include "hostlb/policies/journal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  hostlb::control::Error error;
  nlohmann::json id;
  const auto request = hostlb::control::decode_request(line, &error, &id);
  if (!request) {
    if (error.code == 0) __builtin_trap();  // a refusal always says why
    (void)hostlb::control::encode_error(id, error);
    return 0;
  }
  // The journal form of an edit is parsed from the same kind of JSON.
  try {
    (void)hostlb::edit_from_json(request->params);
  } catch (const hostlb::DocumentError&) {
  }
  (void)hostlb::control::encode_result(request->id, request->params);
  return 0;
}
