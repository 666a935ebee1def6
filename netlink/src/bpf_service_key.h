// A service's key as the BPF programs' `services` maps hold it
// (netlink/bpf/selection.bpf.h: struct service_key).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <cstring>

#include "hostlb/policies/model.h"

namespace hostlb {

struct ServiceKeyBpf {
  uint8_t vip[16];  // network order; IPv4: the first 4 bytes
  uint16_t port;    // network order
  uint8_t proto;    // IPPROTO_TCP or IPPROTO_UDP
  uint8_t family;   // 4 or 6
  bool operator==(const ServiceKeyBpf& o) const { return std::memcmp(this, &o, sizeof o) == 0; }
};

inline ServiceKeyBpf bpf_key(const ServiceKey& key) {
  ServiceKeyBpf out{};
  const auto bytes = key.vip.bytes();
  std::memcpy(out.vip, bytes.data(), key.vip.is_v4() ? 4 : 16);
  out.family = key.vip.is_v4() ? 4 : 6;
  out.port = htons(key.port);
  out.proto = key.protocol == Protocol::kTcp ? IPPROTO_TCP : IPPROTO_UDP;
  return out;
}

}  // namespace hostlb
