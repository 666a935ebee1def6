// The difference between two states: as the edits that turn one into the
// other (what the journal records for a whole document applied while
// running), and as lines for people.
#pragma once

#include <string>
#include <vector>

#include "hostlb/policies/edit.h"
#include "hostlb/policies/model.h"

namespace hostlb {

// Edits that turn `before` into a state with the same backends, services
// and bindings as `after` (the order of the lists may differ): removals
// first, then additions, so that each edit checks against the state the
// previous ones leave.
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

// The lines describe_changes would print for this edit.
std::vector<std::string> describe_edit(const State& before, const Edit& edit);

// Human-readable difference, one line per change, "+" added, "-" removed:
//   + backend web-2 mac 02:00:00:00:01:12 ipv4 198.18.1.12 bridge br0
//   - service 203.0.113.10:80/tcp
//   + binding 203.0.113.10:80/tcp -> web-2:8080
std::vector<std::string> describe_changes(const State& before, const State& after);

}  // namespace hostlb
