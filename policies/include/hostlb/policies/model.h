// The desired state of one host: local backends (VM interfaces) and the
// services (VIP:port/protocol) they serve. Plain data; see state_document.h
// for how it is read and validated.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/policies/address.h"

namespace hostlb {

enum class Protocol : uint8_t { kTcp, kUdp };

std::string_view protocol_name(Protocol protocol);
std::optional<Protocol> parse_protocol(std::string_view text);

struct ServiceKey {
  IpAddress vip;
  uint16_t port = 0;
  Protocol protocol = Protocol::kTcp;

  // "203.0.113.10:80/tcp", "[2001:db8:f00::10]:443/tcp".
  std::string str() const;
  auto operator<=>(const ServiceKey&) const = default;
};

struct ServiceKeyHash {
  size_t operator()(const ServiceKey& key) const {
    return IpAddressHash()(key.vip) ^ (size_t{key.port} << 8) ^ static_cast<size_t>(key.protocol);
  }
};

// "198.18.0.5:40000", "[2001:db8::5]:40000": an address and a port as
// messages, the control protocol and hostlbctl write them.
struct Endpoint {
  IpAddress address;
  uint16_t port = 0;
};
std::string endpoint_str(const IpAddress& address, uint16_t port);
std::optional<Endpoint> parse_endpoint(std::string_view text, std::string* reason = nullptr);

// Parses the "VIP:PORT/PROTO" form. On failure returns nullopt and, if
// `reason` is given, a sentence saying what is wrong.
std::optional<ServiceKey> parse_service_key(std::string_view text, std::string* reason = nullptr);

struct Backend {
  std::string name;
  MacAddress mac;
  std::optional<IpAddress> ipv4;
  std::optional<IpAddress> ipv6;
  std::string bridge;
  // The hypervisor it runs on; empty: the host that reads the document.
  // One document can describe a whole fleet: each host serves only its
  // own backends, gateways choose among all of them.
  std::string host{};

  bool is_on(std::string_view this_host) const { return host.empty() || host == this_host; }
  const std::optional<IpAddress>& address_for(IpFamily family) const {
    return family == IpFamily::kV4 ? ipv4 : ipv6;
  }
  bool operator==(const Backend&) const = default;
};

// Where a binding is in its life at the gateways (a host serves all three
// alike: a gateway may send to any of them while its peers catch up).
// Horizon: announced, not chosen for new connections; the gateways track
// the flows it would win, so that promoting it moves none of them.
// Draining: its rows are tracked for a warm-up, then move to the others;
// its tracked flows stay with it.
enum class BindingState : uint8_t { kActive, kHorizon, kDraining };
std::string_view binding_state_name(BindingState state);
std::optional<BindingState> parse_binding_state(std::string_view text);

struct BackendRef {
  std::string name;
  uint16_t port = 0;
  uint32_t weight = 1;  // its share of the gateways' choice, relative to the others
  BindingState state = BindingState::kActive;
  bool operator==(const BackendRef&) const = default;
};

// How the host of each backend checks that it serves (see health.h): a
// probe every `interval_ms`, answered within `timeout_ms`; `rise`
// successes in a row bring a binding up, `fall` failures take it down.
enum class HealthKind : uint8_t { kTcp, kHttp, kUdp };
std::string_view health_kind_name(HealthKind kind);
std::optional<HealthKind> parse_health_kind(std::string_view text);

struct HealthCheck {
  HealthKind kind = HealthKind::kTcp;
  uint32_t interval_ms = 5000;
  uint32_t timeout_ms = 2000;
  uint32_t rise = 2;
  uint32_t fall = 3;
  // HTTP: the path of the GET and the statuses that count as up.
  std::string path = "/";
  uint16_t status_min = 200;
  uint16_t status_max = 399;
  // Whether a binding not yet checked takes connections (fail open); by
  // default it waits for its first success (fail closed).
  bool start_up = false;
  // Whether a binding that goes down loses its established connections
  // too; by default they carry on.
  bool flush_on_down = false;
  bool operator==(const HealthCheck&) const = default;
};

struct Service {
  ServiceKey key;
  std::vector<BackendRef> backends;
  // Rows of its selection table at the gateways (see selection.h); unset:
  // the default.
  std::optional<uint32_t> rows{};
  // Unset: its bindings are taken to be up.
  std::optional<HealthCheck> health{};
  bool operator==(const Service&) const = default;
};

struct State {
  std::vector<Backend> backends;
  std::vector<Service> services;

  const Backend* find_backend(std::string_view name) const;
  bool operator==(const State&) const = default;
};

}  // namespace hostlb
