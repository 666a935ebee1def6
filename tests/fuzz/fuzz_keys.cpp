// libFuzzer: service keys, IP addresses and MACs. What parses prints in a
// form that parses back to the same value.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hostlb/policies/address.h"
#include "hostlb/policies/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto key = hostlb::parse_service_key(text)) {
    auto again = hostlb::parse_service_key(key->str());
    if (!again || !(*again == *key)) __builtin_trap();
  }
  if (auto ip = hostlb::IpAddress::parse(text)) {
    auto again = hostlb::IpAddress::parse(ip->str());
    if (!again || !(*again == *ip)) __builtin_trap();
  }
  if (auto mac = hostlb::MacAddress::parse(text)) {
    auto again = hostlb::MacAddress::parse(mac->str());
    if (!again || !(*again == *mac)) __builtin_trap();
  }
  return 0;
}
