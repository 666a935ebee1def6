// What a change of the desired state changes in the datapath, computed from
// the change itself rather than by compiling the whole state again.
#pragma once

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/state_diff.h"

namespace hostlb {

// What a checked edit changes in the datapath: the next datapath and the
// difference, computed from the edit (the bindings of the services and
// backends it names). New bindings get the lowest identities neither in
// use, nor freed by this edit, nor `reserved` (held by draining bindings; a
// draining binding that comes back takes its own identity again, so its
// connections stay its own). The refused keys are left as `applied` has
// them.
struct DatapathChange {
  Datapath next;
  DatapathDiff diff;
};
// Backends not on `host` are left out as compile_datapath leaves them out.
DatapathChange change_datapath(const State& before, const Edit& edit, const Datapath& applied,
                               const MarkLayout& marks, const BindingIds& reserved = {},
                               std::string_view host = {});

// compile_datapath(desired, previous, marks) for a `desired` that differs
// from the state `applied` was compiled from by `changes`
// (changed_parts(that state, desired)): only the changed services are
// compiled; the bindings of the others are taken from `applied` as they
// are. The result is the same (a unit test holds the two to it).
Datapath compile_changed_datapath(const Datapath& applied, const StateChanges& changes,
                                  const State& desired, const BindingIds& previous,
                                  const MarkLayout& marks, std::string_view host = {});

}  // namespace hostlb
