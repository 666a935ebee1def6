#include "agent.h"

#include <spdlog/spdlog.h>

namespace hostlb {

namespace {
const State kEmptyState;
}

Agent::Agent(Reconciler& reconciler, StateStore& store, MarkLayout marks)
    : reconciler_(reconciler), store_(store), marks_(marks) {}

void Agent::load_persisted() {
  persisted_ = store_.load();
  if (!persisted_) return;
  // What the kernel holds from the previous run, as far as hostlbd knows:
  // its host entries are "previous" for the next apply.
  applied_ = compile_datapath(persisted_->state, persisted_->ids, marks_);
  spdlog::info("loaded persisted state from {}: {} backends, {} services", store_.state_path(),
               persisted_->state.backends.size(), persisted_->state.services.size());
}

void Agent::apply(const State& desired) {
  const BindingIds previous_ids = persisted_ ? persisted_->ids : BindingIds{};
  Datapath next = compile_datapath(desired, previous_ids, marks_);
  reconciler_.apply(next, applied_);
  applied_ = std::move(next);
  persisted_ = PersistedState{desired, applied_.ids()};
  store_.save(*persisted_);
}

void Agent::restore() { apply(current()); }

void Agent::cleanup() {
  reconciler_.cleanup(applied_);
  applied_ = Datapath{};
  persisted_ = PersistedState{};
  store_.save(*persisted_);
}

const State& Agent::current() const { return persisted_ ? persisted_->state : kEmptyState; }

}  // namespace hostlb
