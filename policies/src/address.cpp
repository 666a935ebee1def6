#include "hostlb/policies/address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>

namespace hostlb {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<MacAddress> MacAddress::parse(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  std::array<uint8_t, 6> bytes{};
  for (size_t i = 0; i < 6; ++i) {
    const size_t at = i * 3;
    const int hi = hex_value(text[at]);
    const int lo = hex_value(text[at + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    if (i < 5 && text[at + 2] != ':') return std::nullopt;
    bytes[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return MacAddress(bytes);
}

bool MacAddress::is_zero() const {
  for (uint8_t b : bytes_)
    if (b != 0) return false;
  return true;
}

std::string MacAddress::str() const {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", bytes_[0], bytes_[1], bytes_[2],
                bytes_[3], bytes_[4], bytes_[5]);
  return buf;
}

std::optional<IpAddress> IpAddress::parse_v4(std::string_view text) {
  // inet_pton(AF_INET) is already strict: dotted quad only, no leading zeros
  // ambiguity is rejected by glibc ("010.0.0.1" is refused), no trailing junk.
  if (text.empty() || text.size() > INET_ADDRSTRLEN - 1) return std::nullopt;
  std::string copy(text);
  IpAddress addr;
  addr.family_ = IpFamily::kV4;
  if (inet_pton(AF_INET, copy.c_str(), addr.bytes_.data()) != 1) return std::nullopt;
  return addr;
}

std::optional<IpAddress> IpAddress::parse_v6(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN - 1) return std::nullopt;
  std::string copy(text);
  IpAddress addr;
  addr.family_ = IpFamily::kV6;
  if (inet_pton(AF_INET6, copy.c_str(), addr.bytes_.data()) != 1) return std::nullopt;
  return addr;
}

IpAddress IpAddress::from_bytes(IpFamily family, const uint8_t* bytes) {
  IpAddress addr;
  addr.family_ = family;
  std::copy_n(bytes, family == IpFamily::kV4 ? 4 : 16, addr.bytes_.begin());
  return addr;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.find(':') != std::string_view::npos) return parse_v6(text);
  return parse_v4(text);
}

bool IpAddress::is_usable_unicast() const {
  const auto& b = bytes_;
  if (is_v4()) {
    if (b[0] == 0) return false;                   // 0.0.0.0/8
    if (b[0] == 127) return false;                 // loopback
    if (b[0] >= 224) return false;                 // multicast, reserved, broadcast
    if (b[0] == 169 && b[1] == 254) return false;  // link-local
    return true;
  }
  bool all_zero = true;
  for (size_t i = 0; i < 16; ++i)
    if (b[i] != 0) all_zero = false;
  if (all_zero) return false;  // ::
  bool loopback = b[15] == 1;
  for (size_t i = 0; i < 15 && loopback; ++i)
    if (b[i] != 0) loopback = false;
  if (loopback) return false;                               // ::1
  if (b[0] == 0xff) return false;                           // multicast
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return false;  // fe80::/10
  bool v4_mapped = b[10] == 0xff && b[11] == 0xff;
  for (size_t i = 0; i < 10 && v4_mapped; ++i)
    if (b[i] != 0) v4_mapped = false;
  if (v4_mapped) return false;  // ::ffff:a.b.c.d belongs to the IPv4 datapath
  return true;
}

std::string IpAddress::str() const {
  char buf[INET6_ADDRSTRLEN];
  const int af = is_v4() ? AF_INET : AF_INET6;
  if (inet_ntop(af, bytes_.data(), buf, sizeof buf) == nullptr) return "?";
  return buf;
}

std::string_view family_name(IpFamily family) { return family == IpFamily::kV4 ? "IPv4" : "IPv6"; }

}  // namespace hostlb
