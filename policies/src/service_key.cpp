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

std::string_view health_kind_name(HealthKind kind) {
  switch (kind) {
    case HealthKind::kTcp:
      return "tcp";
    case HealthKind::kHttp:
      return "http";
    case HealthKind::kUdp:
      return "udp";
  }
  return "?";
}

std::optional<HealthKind> parse_health_kind(std::string_view text) {
  for (HealthKind kind : {HealthKind::kTcp, HealthKind::kHttp, HealthKind::kUdp})
    if (text == health_kind_name(kind)) return kind;
  return std::nullopt;
}

std::string_view binding_state_name(BindingState state) {
  switch (state) {
    case BindingState::kActive:
      return "active";
    case BindingState::kHorizon:
      return "horizon";
    case BindingState::kDraining:
      return "draining";
  }
  return "?";
}

std::optional<BindingState> parse_binding_state(std::string_view text) {
  for (BindingState state :
       {BindingState::kActive, BindingState::kHorizon, BindingState::kDraining})
    if (text == binding_state_name(state)) return state;
  return std::nullopt;
}

std::string endpoint_str(const IpAddress& address, uint16_t port) {
  return (address.is_v6() ? "[" + address.str() + "]" : address.str()) + ":" + std::to_string(port);
}

std::string ServiceKey::str() const {
  return endpoint_str(vip, port) + "/" + std::string(protocol_name(protocol));
}

namespace {

// ADDRESS:PORT or [ADDRESS6]:PORT; `noun` names the address in messages
// ("VIP", "address") and `form` the whole ("VIP:PORT/PROTO").
std::optional<Endpoint> parse_endpoint_as(std::string_view text, std::string_view noun,
                                          std::string_view form, std::string* reason) {
  auto fail = [&](std::string why) -> std::optional<Endpoint> {
    if (reason) *reason = std::move(why);
    return std::nullopt;
  };
  std::string_view host;
  std::string_view port_text;
  const std::string v6_form = "an IPv6 " + std::string(noun) + " is written [ADDRESS]:PORT";
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return fail(v6_form);
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return fail("expected " + std::string(form) + " (missing :PORT)");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return fail(v6_form);
  }
  const auto address = text.front() == '[' ? IpAddress::parse_v6(host) : IpAddress::parse_v4(host);
  if (!address) return fail("\"" + std::string(host) + "\" is not an IP address");
  unsigned value = 0;
  const char* end = port_text.data() + port_text.size();
  auto [ptr, ec] = std::from_chars(port_text.data(), end, value);
  if (port_text.empty() || ec != std::errc() || ptr != end || port_text.front() == '+')
    return fail("\"" + std::string(port_text) + "\" is not a port number");
  if (value == 0 || value > 65535) return fail("port must be between 1 and 65535");
  return Endpoint{*address, static_cast<uint16_t>(value)};
}

}  // namespace

std::optional<Endpoint> parse_endpoint(std::string_view text, std::string* reason) {
  return parse_endpoint_as(text, "address", "ADDRESS:PORT", reason);
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
  const auto endpoint = parse_endpoint_as(text.substr(0, slash), "VIP", "VIP:PORT/PROTO", reason);
  if (!endpoint) return std::nullopt;
  if (!endpoint->address.is_usable_unicast())
    return fail(endpoint->address.str() + " cannot be a VIP (not a unicast address)");
  return ServiceKey{endpoint->address, endpoint->port, *protocol};
}

const Backend* State::find_backend(std::string_view name) const {
  for (const auto& backend : backends)
    if (backend.name == name) return &backend;
  return nullptr;
}

}  // namespace hostlb
