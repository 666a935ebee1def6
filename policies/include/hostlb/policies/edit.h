// Edits of a State as the control commands express them: checked against
// the current state with the rules of the document validator, then applied
// in place.
#pragma once

#include <string>

#include "hostlb/policies/model.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

// One control command, as data: what it changes and nothing else. Checked
// and applied in time that grows at most with a scan of the state, not with
// a rebuild of it: a change to one service costs the same with ten services
// as with ten thousand.
struct Edit {
  enum class Kind {
    kAddBackend,
    kRemoveBackend,
    kAddService,
    kRemoveService,
    kAttach,
    kDetach,
    kSetRows,
    kSetHealth,
    kSetState
  };
  Kind kind = Kind::kAddBackend;
  Backend backend;  // kAddBackend
  // kAddService; its key for the other service edits; its rows for
  // kSetRows, its health check for kSetHealth.
  Service service;
  // kAttach; ref.name alone for kRemoveBackend and kDetach, with ref.state
  // for kSetState.
  BackendRef ref;

  static Edit add_backend(Backend backend);
  static Edit remove_backend(std::string name);
  static Edit add_service(Service service);
  static Edit remove_service(ServiceKey key);
  // Attaching an attached backend again with another port re-points it,
  // with another weight re-weights it; with both the same it changes nothing.
  static Edit attach(ServiceKey key, BackendRef ref);
  static Edit detach(ServiceKey key, std::string name);
  // The service's row count at the gateways (unset: the default). Nothing
  // changes on a host.
  static Edit set_rows(ServiceKey key, std::optional<uint32_t> rows);
  // The service's health check (unset: none). Bindings keep their kernel
  // elements; the health monitor follows.
  static Edit set_health(ServiceKey key, std::optional<HealthCheck> health);
  // A binding's place in its life at the gateways (promote, drain, back to
  // the horizon); its port and weight stay. Nothing changes on a host.
  static Edit set_state(ServiceKey key, std::string name, BindingState state);

  bool operator==(const Edit&) const = default;
};

// Throws DocumentError (paths name the edit's parameters: "name", "mac",
// "service", "backend", "backends[1].name") if `edit` cannot be applied to
// `state`, or if the result would not be a valid document.
void check_edit(const State& state, const Edit& edit);
// Applies a checked edit. Removing a backend also detaches it everywhere.
void apply_edit(State& state, const Edit& edit);
// check_edit, then apply_edit on a copy.
State edited(const State& state, const Edit& edit);

}  // namespace hostlb
