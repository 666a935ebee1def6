// Edits of a State as the control commands express them, and what they
// change in the datapath.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/model.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

// Parses one backend object (the "backends" element form); `path` prefixes
// error paths.
Backend parse_backend_object(const nlohmann::json& value, const std::string& path,
                             const DocumentOptions& options);
// Parses {"name": N, "port": P}.
BackendRef parse_backend_ref(const nlohmann::json& value, const std::string& path);
// Parses a "VIP:PORT/PROTO" string.
ServiceKey parse_service_key_param(const nlohmann::json& value, const std::string& path);

// One control command, as data: what it changes and nothing else. Checked
// against the current state with the rules of the document validator, then
// applied in place, in time that grows at most with a scan of the state, not
// with a rebuild of it: a change to one service costs the same with ten
// services as with ten thousand.
struct Edit {
  enum class Kind { kAddBackend, kRemoveBackend, kAddService, kRemoveService, kAttach, kDetach };
  Kind kind = Kind::kAddBackend;
  Backend backend;  // kAddBackend
  Service service;  // kAddService; its key for kRemoveService, kAttach, kDetach
  BackendRef ref;   // kAttach; ref.name alone for kRemoveBackend and kDetach

  static Edit add_backend(Backend backend);
  static Edit remove_backend(std::string name);
  static Edit add_service(Service service);
  static Edit remove_service(ServiceKey key);
  // Attaching an attached backend again with another port re-points it; with
  // the same port it changes nothing.
  static Edit attach(ServiceKey key, BackendRef ref);
  static Edit detach(ServiceKey key, std::string name);
};

// Throws DocumentError (paths name the edit's parameters: "name", "mac",
// "service", "backend", "backends[1].name") if `edit` cannot be applied to
// `state`, or if the result would not be a valid document.
void check_edit(const State& state, const Edit& edit);
// Applies a checked edit. Removing a backend also detaches it everywhere.
void apply_edit(State& state, const Edit& edit);
// check_edit, then apply_edit on a copy.
State edited(const State& state, const Edit& edit);

// The journal form of an edit.
nlohmann::json edit_to_json(const Edit& edit);
Edit edit_from_json(const nlohmann::json& value);  // throws DocumentError

// What a checked edit changes in the datapath: the next datapath and the
// difference, computed from the edit (the bindings of the services and
// backends it names), not by compiling the whole state again. New bindings
// get the lowest identities neither in use, nor freed by this edit, nor
// `reserved` (held by draining bindings; a draining binding that comes back
// takes its own identity again, so its connections stay its own). The
// refused keys are left as `applied` has them.
struct DatapathChange {
  Datapath next;
  DatapathDiff diff;
};
DatapathChange change_datapath(const State& before, const Edit& edit, const Datapath& applied,
                               const MarkLayout& marks, const BindingIds& reserved = {});

// Edits that turn `before` into a state with the same backends, services
// and bindings as `after` (the order of the lists may differ): removals
// first, then additions, so that each edit checks against the state the
// previous ones leave. Replaying them is what the journal does for a whole
// document applied while running.
std::vector<Edit> edits_between(const State& before, const State& after);

// The parts of two states that can differ: all backends, and the services
// that are not the same in both or that use a backend that is not. Edits
// and descriptions of the parts are those of the whole states; for a large
// document applied again with one change, the parts are small. Computed
// once when both are wanted.
struct StateChanges {
  State before, after;
};
StateChanges changed_parts(const State& before, const State& after);
std::vector<Edit> edits_between(const StateChanges& changes);
std::vector<std::string> describe_changes(const StateChanges& changes);

// compile_datapath(desired, previous, marks) for a `desired` that differs
// from the state `applied` was compiled from by `changes`
// (changed_parts(that state, desired)): only the changed services are
// compiled; the bindings of the others are taken from `applied` as they
// are. The result is the same (a unit test holds the two to it).
Datapath compile_changed_datapath(const Datapath& applied, const StateChanges& changes,
                                  const State& desired, const BindingIds& previous,
                                  const MarkLayout& marks);

// The lines describe_changes would print for this edit.
std::vector<std::string> describe_edit(const State& before, const Edit& edit);

// Human-readable difference, one line per change, "+" added, "-" removed:
//   + backend web-2 mac 02:00:00:00:01:12 ipv4 198.18.1.12 bridge br0
//   - service 203.0.113.10:80/tcp
//   + binding 203.0.113.10:80/tcp -> web-2:8080
std::vector<std::string> describe_changes(const State& before, const State& after);

}  // namespace hostlb
