// The journal: one record per change made while running, appended after
// the last snapshot (hostagent/state_store.h keeps the files). A record is
// typed here, with both conversions and a pure replay, so that what is
// written is what is read back (a fuzz target holds the two together).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/persisted_state.h"
#include "hostlb/policies/retirement.h"

namespace hostlb {

// Everything one change did, replayed whole or not at all.
struct JournalRecord {
  std::vector<Edit> edits;
  BindingIds ids;                       // identities given to the bindings it added
  std::vector<RetiredBinding> retired;  // retirements it started
  std::vector<BindingKey> restored;     // retirements it cancelled (the binding is back)
  // A gateway's: the table indexes it gave the services it added.
  std::map<ServiceKey, uint32_t> gateway_indexes;

  bool empty() const {
    return edits.empty() && ids.empty() && retired.empty() && restored.empty() &&
           gateway_indexes.empty();
  }
  bool operator==(const JournalRecord&) const = default;
};

// The record of a change: its edits, the identities of the bindings it
// added, and its retirements.
JournalRecord journal_record_of(std::vector<Edit> edits, const DatapathDiff& diff,
                                const Retirements::Change& retirement);

// One line of JSON (no newline), and back. Throws DocumentError naming the
// path in the record ("edits[2].service") and the reason.
std::string journal_record_to_line(const JournalRecord& record);
JournalRecord journal_record_from_line(std::string_view line);

// The JSON form of one edit (a record's "edits" element).
nlohmann::json edit_to_json(const Edit& edit);
Edit edit_from_json(const nlohmann::json& value);  // throws DocumentError

// Applies a record to the state it was written after: each edit is checked
// as when it was made. Throws DocumentError if one does not apply (the
// journal does not belong to this snapshot); `persisted` is then partly
// changed and must not be used.
void replay_journal_record(PersistedState& persisted, const JournalRecord& record);

// After a replay: identities are held by bindings and by draining bindings,
// nothing else (a record holds the identities a change gives, not those it
// frees).
void drop_unheld_identities(PersistedState& persisted);

}  // namespace hostlb
