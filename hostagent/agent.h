// The daemon's one flow: desired state -> compile (keeping binding
// identities) -> reconcile the kernel -> persist. Both the start-up path and
// reloads go through apply().
#pragma once

#include <optional>

#include "hostlb/policies/persisted_state.h"
#include "reconciler.h"
#include "state_store.h"

namespace hostlb {

class Agent {
 public:
  Agent(Reconciler& reconciler, StateStore& store, MarkLayout marks);

  // Loads what the previous run persisted (if anything). Throws StoreError.
  void load_persisted();
  bool has_persisted() const { return persisted_.has_value(); }

  // Applies `desired`; on success the kernel holds it and it is persisted.
  // On failure (PreconditionError, KernelError, IdSpaceExhausted) the
  // previous state stays current.
  void apply(const State& desired);
  // Applies the persisted state again (start-up without --config).
  void restore();

  void cleanup();

  const State& current() const;
  const Datapath& datapath() const { return applied_; }

 private:
  Reconciler& reconciler_;
  StateStore& store_;
  MarkLayout marks_;
  std::optional<PersistedState> persisted_;
  Datapath applied_;
};

}  // namespace hostlb
