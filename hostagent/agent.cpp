#include "agent.h"

#include <spdlog/spdlog.h>

namespace hostlb {

namespace {
const State kEmptyState;
}

Agent::Agent(Reconciler& reconciler, StateStore& store) : reconciler_(reconciler), store_(store) {}

void Agent::load_persisted() {
  persisted_ = store_.load();
  if (!persisted_) return;
  // What the kernel holds from the previous run, as far as hostlbd knows:
  // its host entries are "previous" for the first apply.
  applied_ = compile_datapath(persisted_->state, persisted_->ids, reconciler_.marks());
  spdlog::info("loaded persisted state from {}: {} backends, {} services", store_.state_path(),
               persisted_->state.backends.size(), persisted_->state.services.size());
}

ApplyReport Agent::start(const std::optional<State>& desired) {
  const State state = desired ? *desired : current();
  return apply(state, ApplyMode::kReplace);
}

ApplyReport Agent::change(const State& desired) { return apply(desired, ApplyMode::kIncremental); }

ApplyReport Agent::apply(const State& desired, ApplyMode mode) {
  const BindingIds previous_ids = persisted_ ? persisted_->ids : BindingIds{};
  Datapath next = compile_datapath(desired, previous_ids, reconciler_.marks());
  ApplyReport report = reconciler_.apply(next, applied_, mode);
  applied_ = std::move(next);
  const bool unchanged = persisted_ && persisted_->state == desired && !report.kernel_changed();
  persisted_ = PersistedState{desired, applied_.ids()};
  if (!unchanged) store_.save(*persisted_);
  return report;
}

void Agent::cleanup() {
  reconciler_.cleanup(applied_);
  applied_ = Datapath{};
  persisted_ = PersistedState{};
  store_.save(*persisted_);
}

const State& Agent::current() const { return persisted_ ? persisted_->state : kEmptyState; }

}  // namespace hostlb
