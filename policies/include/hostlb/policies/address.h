// Value types for the addresses hostlb handles: Ethernet MACs and IPv4/IPv6.
// Parsing is strict (one canonical spelling family, no surrounding spaces),
// because these values end up as nftables map keys and kernel neighbours.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace hostlb {

class MacAddress {
 public:
  MacAddress() = default;
  explicit MacAddress(const std::array<uint8_t, 6>& bytes) : bytes_(bytes) {}

  // Accepts six colon-separated pairs of hex digits ("02:00:00:00:01:aa").
  static std::optional<MacAddress> parse(std::string_view text);

  const std::array<uint8_t, 6>& bytes() const { return bytes_; }
  bool is_multicast() const { return (bytes_[0] & 0x01) != 0; }
  bool is_zero() const;
  // Lower-case, colon separated: the form nft and iproute2 print.
  std::string str() const;

  auto operator<=>(const MacAddress&) const = default;

 private:
  std::array<uint8_t, 6> bytes_{};
};

enum class IpFamily : uint8_t { kV4, kV6 };

class IpAddress {
 public:
  IpAddress() = default;

  static std::optional<IpAddress> parse(std::string_view text);
  static std::optional<IpAddress> parse_v4(std::string_view text);
  static std::optional<IpAddress> parse_v6(std::string_view text);
  // `bytes` holds 4 (IPv4) or 16 (IPv6) bytes in network order.
  static IpAddress from_bytes(IpFamily family, const uint8_t* bytes);

  IpFamily family() const { return family_; }
  bool is_v4() const { return family_ == IpFamily::kV4; }
  bool is_v6() const { return family_ == IpFamily::kV6; }
  // Network byte order; 4 or 16 significant bytes depending on the family.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  size_t size() const { return is_v4() ? 4 : 16; }

  // Addresses that can never identify a VIP or a VM interface: unspecified,
  // loopback, multicast, broadcast, link-local.
  bool is_usable_unicast() const;

  // Canonical text (RFC 5952 for IPv6).
  std::string str() const;

  auto operator<=>(const IpAddress&) const = default;

 private:
  IpFamily family_ = IpFamily::kV4;
  std::array<uint8_t, 16> bytes_{};
};

std::string_view family_name(IpFamily family);

// Hashes for unordered containers (large documents are checked and
// compared with them).
struct MacAddressHash {
  size_t operator()(const MacAddress& mac) const {
    return std::hash<std::string_view>()(
        std::string_view(reinterpret_cast<const char*>(mac.bytes().data()), mac.bytes().size()));
  }
};
struct IpAddressHash {
  size_t operator()(const IpAddress& address) const {
    return std::hash<std::string_view>()(std::string_view(
               reinterpret_cast<const char*>(address.bytes().data()), address.bytes().size())) ^
           static_cast<size_t>(address.family());
  }
};

}  // namespace hostlb
