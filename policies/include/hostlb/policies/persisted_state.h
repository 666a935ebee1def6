// What hostlbd keeps in its state directory: the last desired state it
// applied and the identities it gave each binding (so that conntrack marks
// keep their meaning across restarts).
#pragma once

#include <string>
#include <string_view>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/model.h"

namespace hostlb {

struct PersistedState {
  State state;
  BindingIds ids;
  // Which journal continues this snapshot (see hostagent/state_store.h).
  uint64_t generation = 0;
};

std::string persisted_state_to_text(const PersistedState& persisted);
// Throws DocumentError (paths are relative to the persisted file).
PersistedState persisted_state_from_text(std::string_view text);

}  // namespace hostlb
