// The daemon's one flow: desired state -> compile (keeping binding
// identities) -> reconcile the kernel -> persist. Start-up, reloads and
// control requests all go through here.
#pragma once

#include <functional>
#include <optional>

#include "hostlb/netlink/conntrack.h"
#include "hostlb/policies/persisted_state.h"
#include "hostlb/policies/state_edit.h"
#include "reconciler.h"
#include "state_store.h"

namespace hostlb {

class Agent {
 public:
  Agent(Reconciler& reconciler, StateStore& store, ConntrackTable& conntrack);

  // Loads what the previous run persisted (if anything). Throws StoreError.
  void load_persisted();
  bool has_persisted() const { return persisted_.has_value(); }

  // Start-up: makes the kernel hold `desired` (or, without it, the persisted
  // state), rebuilding hostlb's table whatever the kernel held before.
  ApplyReport start(const std::optional<State>& desired);

  // One control command while running: checked and turned into a datapath
  // change without rebuilding anything, applied, journaled. Same failure
  // guarantees as change().
  ApplyReport edit(const Edit& edit);

  // A change while running: touches only what differs. On success the
  // kernel holds `desired` and it is persisted; on failure
  // (PreconditionError, KernelError, IdSpaceExhausted, StoreError) the
  // current state stays current.
  ApplyReport change(const State& desired);

  void cleanup();

  // Calls `each` for every live connection of the bindings that match (all
  // of hostlb's without filters), as the kernel's dump delivers them;
  // returns how many there were.
  size_t connections(const std::optional<ServiceKey>& service,
                     const std::optional<std::string>& backend,
                     const std::function<void(const Binding&, const ConntrackEntry&)>& each);

  // Deletes the connections of the bindings that match (every binding when
  // both are unset); returns how many there were.
  size_t flush(const std::optional<ServiceKey>& service, const std::optional<std::string>& backend);

  const State& current() const;

  const Datapath& datapath() const { return applied_; }

  // A snapshot is written after this many journaled edits.
  static constexpr size_t kJournalLimit = 1000;

 private:
  ApplyReport apply(const State& desired, ApplyMode mode);
  // Records a change that the kernel holds: identities, then one journal
  // record with its edits, or a snapshot (at start-up, or when the journal is
  // long).
  void persist(const std::vector<Edit>& edits, const DatapathDiff& diff, bool snapshot);

  // Deletes the connections of bindings that are gone. The change itself has
  // succeeded by then; a failure here is logged, not undone.
  size_t flush_removed(const DatapathDiff& diff);

  Reconciler& reconciler_;
  StateStore& store_;
  ConntrackTable& conntrack_;
  std::optional<PersistedState> persisted_;
  Datapath applied_;
};

}  // namespace hostlb
