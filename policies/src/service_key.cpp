#include <charconv>

#include "hostlb/policies/model.h"

namespace hostlb {

std::string_view protocol_name(Protocol protocol) {
  return protocol == Protocol::kTcp ? "tcp" : "udp";
}

std::optional<Protocol> parse_protocol(std::string_view text) {
  if (text == "tcp") return Protocol::kTcp;
  if (text == "udp") return Protocol::kUdp;
  return std::nullopt;
}

std::string ServiceKey::str() const {
  std::string out;
  if (vip.is_v6()) {
    out = "[" + vip.str() + "]";
  } else {
    out = vip.str();
  }
  out += ":" + std::to_string(port) + "/";
  out += protocol_name(protocol);
  return out;
}

std::optional<ServiceKey> parse_service_key(std::string_view text, std::string* reason) {
  auto fail = [&](std::string why) -> std::optional<ServiceKey> {
    if (reason) *reason = std::move(why);
    return std::nullopt;
  };
  const size_t slash = text.rfind('/');
  if (slash == std::string_view::npos)
    return fail("expected VIP:PORT/PROTO (missing /tcp or /udp)");
  const auto protocol = parse_protocol(text.substr(slash + 1));
  if (!protocol) return fail("protocol must be tcp or udp");
  std::string_view host_port = text.substr(0, slash);

  std::string_view host;
  std::string_view port_text;
  if (!host_port.empty() && host_port.front() == '[') {
    const size_t close = host_port.find(']');
    if (close == std::string_view::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':')
      return fail("an IPv6 VIP is written [ADDRESS]:PORT");
    host = host_port.substr(1, close - 1);
    port_text = host_port.substr(close + 2);
  } else {
    const size_t colon = host_port.rfind(':');
    if (colon == std::string_view::npos) return fail("expected VIP:PORT/PROTO (missing :PORT)");
    host = host_port.substr(0, colon);
    port_text = host_port.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return fail("an IPv6 VIP is written [ADDRESS]:PORT");
  }

  ServiceKey key;
  key.protocol = *protocol;
  const auto vip = host_port.front() == '[' ? IpAddress::parse_v6(host) : IpAddress::parse_v4(host);
  if (!vip) return fail("\"" + std::string(host) + "\" is not an IP address");
  if (!vip->is_usable_unicast())
    return fail(vip->str() + " cannot be a VIP (not a unicast address)");
  key.vip = *vip;

  unsigned value = 0;
  const char* end = port_text.data() + port_text.size();
  auto [ptr, ec] = std::from_chars(port_text.data(), end, value);
  if (port_text.empty() || ec != std::errc() || ptr != end || port_text.front() == '+')
    return fail("\"" + std::string(port_text) + "\" is not a port number");
  if (value == 0 || value > 65535) return fail("port must be between 1 and 65535");
  key.port = static_cast<uint16_t>(value);
  return key;
}

const Backend* State::find_backend(std::string_view name) const {
  for (const auto& backend : backends)
    if (backend.name == name) return &backend;
  return nullptr;
}

}  // namespace hostlb
