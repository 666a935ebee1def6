// The control methods' parameters, decoded once into typed requests: one
// table names every method with the parameters it takes, and decoding a
// request checks them all (unknown, missing, of the wrong type, not a valid
// key or address) before anything is handed to the daemon. Pure; the
// daemon's handler only serves typed requests (hostagent/control_handler).
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "hostlb/policies/control_protocol.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/model.h"
#include "hostlb/policies/state_document.h"

namespace hostlb::control {

// A request that cannot be served, with the JSON-RPC error to answer.
class RequestError : public std::runtime_error {
 public:
  explicit RequestError(Error error)
      : std::runtime_error(error.message), error_(std::move(error)) {}
  const Error& error() const { return error_; }

 private:
  Error error_;
};

// Longest drain a request may ask for.
inline constexpr uint32_t kMaxDrainSeconds = 7 * 24 * 3600;

// The optional "service" and "backend" that select bindings.
struct BindingFilter {
  std::optional<ServiceKey> service;
  std::optional<std::string> backend;
  bool operator==(const BindingFilter&) const = default;
};

struct StatusRequest {};
struct GetRequest {};
struct BackendListRequest {};
struct ServiceListRequest {};
// backend.add/del, service.add/del/attach/detach.
struct EditRequest {
  Edit edit;
  uint32_t drain_seconds = 0;  // for removals: 0 flushes at once
};
struct FlushRequest {
  BindingFilter filter;
};
struct ConnectionsRequest {
  BindingFilter filter;
  bool count_only = false;
};
struct StatsRequest {
  bool prometheus = false;
};
// Each checked binding's health (hostlbctl health).
struct HealthRequest {};
struct GatewayDigestRequest {};
struct GatewayTableRequest {
  ServiceKey service;
};
// The backend a client's flow to a service gets.
struct WhichRequest {
  ServiceKey service;
  IpAddress client;
  uint16_t client_port = 0;
};
struct ApplyRequest {
  State document;
  bool dry_run = false;
  uint32_t drain_seconds = 0;
};

using TypedRequest =
    std::variant<StatusRequest, GetRequest, BackendListRequest, ServiceListRequest, EditRequest,
                 FlushRequest, ConnectionsRequest, StatsRequest, ApplyRequest, GatewayDigestRequest,
                 GatewayTableRequest, WhichRequest, HealthRequest>;

struct MethodInfo {
  std::string_view name;
  std::vector<std::string_view> params;  // the parameters it accepts
};
// Every method, in the order hostlbctl(8) lists them.
const std::vector<MethodInfo>& methods();

// Decodes `request`'s parameters (and the document after its line, for
// apply). Throws RequestError: kMethodNotFound, or kInvalidParams with the
// path at fault ("params.backends[0].port").
TypedRequest decode_params(const Request& request, const DocumentOptions& options);

// Throws RequestError (kInvalidParams) if the filter names a backend or
// service that `state` does not have.
void check_filter(const BindingFilter& filter, const State& state);

}  // namespace hostlb::control
