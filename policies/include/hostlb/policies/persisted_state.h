// What hostlbd keeps in its state directory: the last desired state it
// applied and the identities it gave each binding (so that conntrack marks
// keep their meaning across restarts).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/model.h"
#include "hostlb/policies/retirement.h"

namespace hostlb {

struct PersistedState {
  State state;
  BindingIds ids;  // including those of draining bindings
  Retirements retired;
  // Which journal continues this snapshot (see hostagent/state_store.h).
  uint64_t generation = 0;
  // A gateway's service indexes (its row map's offsets), kept across restarts
  // so that rows keep their keys; empty on a host.
  std::map<ServiceKey, uint32_t> gateway_indexes{};
};

// One retired binding as the state file and the journal hold it.
nlohmann::json retired_to_json(const RetiredBinding& entry);
RetiredBinding retired_from_json(const nlohmann::json& value,
                                 const std::string& path);  // throws DocumentError

std::string persisted_state_to_text(const PersistedState& persisted);
// Throws DocumentError (paths are relative to the persisted file).
PersistedState persisted_state_from_text(std::string_view text);

}  // namespace hostlb
