// Names and byte layouts shared by the text renderer and the batch encoder,
// so that the two cannot drift apart.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "hostlb/policies/datapath.h"

namespace hostlb::nft_names {

// DNAT targets: key -> backend address . port.
inline std::string targets_map(IpFamily family) {
  return family == IpFamily::kV4 ? "targets4" : "targets6";
}
// Binding identities: key -> conntrack mark.
inline std::string marks_map(IpFamily family) {
  return family == IpFamily::kV4 ? "marks4" : "marks6";
}

// The map key as nf_tables stores a concatenation: each field padded to a
// multiple of 4 bytes (MAC 6+2, address 4 or 16, l4proto 1+3, port 2+2).
inline std::vector<uint8_t> element_key(const MacAddress& frame_mac, const ServiceKey& service) {
  std::vector<uint8_t> key;
  const auto& mac = frame_mac.bytes();
  key.insert(key.end(), mac.begin(), mac.end());
  key.insert(key.end(), 2, 0);
  const auto& vip = service.vip;
  key.insert(key.end(), vip.bytes().begin(), vip.bytes().begin() + vip.size());
  key.push_back(service.protocol == Protocol::kTcp ? 6 : 17);
  key.insert(key.end(), 3, 0);
  key.push_back(static_cast<uint8_t>(service.port >> 8));
  key.push_back(static_cast<uint8_t>(service.port & 0xff));
  key.insert(key.end(), 2, 0);
  return key;
}
inline std::vector<uint8_t> element_key(const Binding& binding) {
  return element_key(binding.mac, binding.key.service);
}

// Keys (same layout) whose new connections are refused; each element has
// a counter of the packets refused.
inline std::string refuse_set(IpFamily family) {
  return family == IpFamily::kV4 ? "refuse4" : "refuse6";
}

// Consistency misses per binding key (dynamic, bounded), and in total.
inline std::string miss_set(IpFamily family) {
  return family == IpFamily::kV4 ? "misses4" : "misses6";
}
inline constexpr size_t kMissSetSize = 65536;
inline constexpr const char* kMissCounter = "misses";
inline constexpr const char* kGuardCounter = "guard_drops";

// Admission: the meter of new connections per service (VIP . l4proto .
// port), the per-service counts of what it dropped, and their total.
inline std::string rate_set(IpFamily family) {
  return family == IpFamily::kV4 ? "new_rate4" : "new_rate6";
}
inline std::string limited_set(IpFamily family) {
  return family == IpFamily::kV4 ? "limited4" : "limited6";
}
inline constexpr size_t kServiceSetSize = 65536;
inline constexpr const char* kLimitedCounter = "limited";
// The conntrack timeout policies of unanswered VIP connections.
inline std::string embryonic_timeout(IpFamily family, Protocol protocol) {
  return std::string("embryonic_") + (protocol == Protocol::kTcp ? "tcp" : "udp") +
         (family == IpFamily::kV4 ? "4" : "6");
}

inline constexpr const char* kGuardMacs = "guard_macs";
inline std::string guard_vips(IpFamily family) {
  return family == IpFamily::kV4 ? "guard_vips4" : "guard_vips6";
}

// The target as nf_tables stores address . port: the address, then the
// port in network order padded to 4 bytes.
inline std::vector<uint8_t> target_data(const Binding& binding) {
  std::vector<uint8_t> data(binding.target.bytes().begin(),
                            binding.target.bytes().begin() + binding.target.size());
  data.push_back(static_cast<uint8_t>(binding.target_port >> 8));
  data.push_back(static_cast<uint8_t>(binding.target_port & 0xff));
  data.insert(data.end(), 2, 0);
  return data;
}

}  // namespace hostlb::nft_names
