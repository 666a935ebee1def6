// The daemon's one flow: desired state -> compile (keeping binding
// identities) -> reconcile the kernel -> persist. Start-up, reloads and
// control requests all go through here.
#pragma once

#include <functional>
#include <optional>
#include <unordered_map>

#include "clock.h"
#include "hostlb/netlink/conntrack.h"
#include "hostlb/policies/datapath_change.h"
#include "hostlb/policies/health.h"
#include "hostlb/policies/journal.h"
#include "hostlb/policies/persisted_state.h"
#include "hostlb/policies/state_diff.h"
#include "reconciler.h"
#include "state_store.h"

namespace hostlb {

struct AgentOptions {
  // How long new connections to a removed binding are still refused (after
  // its drain, if any): gateways may keep sending them for a while.
  uint32_t refuse_seconds = 60;
  // The system clock when null.
  const Clock* clock = nullptr;
  // This hypervisor's name: backends of a document whose "host" names
  // another are not served here.
  std::string host{};
};

// A drain ended or a flush happened: how many connections went, per binding.
using FlushObserver = std::function<void(const Binding&, size_t flushed)>;

class Agent {
 public:
  Agent(Reconciler& reconciler, StateStore& store, ConntrackTable& conntrack,
        AgentOptions options = {});

  // Loads what the previous run persisted (if anything). Throws StoreError.
  void load_persisted();
  bool has_persisted() const { return persisted_.has_value(); }

  // Start-up: makes the kernel hold `desired` (or, without it, the persisted
  // state), rebuilding hostlb's table whatever the kernel held before.
  ApplyReport start(const std::optional<State>& desired);

  // One control command while running: checked and turned into a datapath
  // change without rebuilding anything, applied, journaled. Same failure
  // guarantees as change().
  ApplyReport edit(const Edit& edit, uint32_t drain_seconds = 0);

  // A change while running: touches only what differs. On success the
  // kernel holds `desired` and it is persisted; on failure
  // (PreconditionError, KernelError, IdSpaceExhausted, StoreError) the
  // current state stays current. Bindings it removes are flushed at once,
  // or drain for `drain_seconds` (no new connections, the established ones
  // continue, what is left is flushed at the end).
  ApplyReport change(const State& desired, uint32_t drain_seconds = 0);
  // The same, for a caller that has changed_parts(current(), desired) already.
  // (`desired` is taken: a large state is moved in, not copied.)
  ApplyReport change(State desired, const StateChanges& changes, uint32_t drain_seconds = 0);

  // Ends the drains and refusals that are due: flushes what drained, takes
  // the keys out of the refuse sets, writes a snapshot. Returns how many
  // connections were flushed.
  size_t expire();
  // When expire() next has something to do (unix seconds).
  std::optional<int64_t> next_deadline() const { return retired().next_deadline(); }
  const Retirements& retired() const;

  void set_flush_observer(FlushObserver observer) { flush_observer_ = std::move(observer); }

  // Health checks: which bindings of checked services take new
  // connections. A binding the book knows serves when it is up; one it
  // does not know keeps what it does, and a new one (or every one at
  // start-up) starts as its check says (closed by default). Null: every
  // binding serves.
  void set_health(const HealthBook* book) { health_ = book; }
  // Makes the kernel follow the book for these bindings (after probes
  // changed their health): each that should serve and does not, or the
  // other way round, is rewritten. Returns how many were. Throws
  // KernelError (then nothing changed).
  size_t follow_health(const std::vector<BindingKey>& keys);
  // The service's health check in the current state, if it has one.
  const HealthCheck* health_check(const ServiceKey& service) const;
  // Counts every change applied: components that follow the bindings
  // (the health monitor) look again when it moves.
  uint64_t generation() const { return generation_; }

  void cleanup();

  // Compares the kernel with what hostlbd applied (the table when
  // `with_table`, host routes and neighbours when `with_host_entries`); if
  // anything differs, rebuilds it all as at start-up and counts a repair.
  // Returns what differed. Throws what Reconciler::apply throws.
  std::vector<std::string> repair(bool with_table, bool with_host_entries);
  // See Reconciler::ruleset_changed_by_others.
  bool ruleset_changed_by_others() { return reconciler_.ruleset_changed_by_others(); }
  uint64_t repairs() const { return repairs_; }

  // The live connections of the bindings that match (all of hostlb's
  // without filters), read part by part as the kernel's dump delivers them
  // (see ConntrackListing): nothing is collected. The bindings are those of
  // the moment it was opened, copied: a change meanwhile does not disturb it.
  class ConnectionCursor {
   public:
    using Each = std::function<void(const Binding&, const ConntrackEntry&)>;
    // The next part's connections; false once all were listed. Throws
    // KernelError.
    bool next(const Each& each);
    size_t count() const { return count_; }

   private:
    friend class Agent;
    ConntrackTable* table_ = nullptr;
    MarkLayout marks_{MarkLayout::kDefaultMask};
    // Filtered: one kernel-filtered listing per binding, in turn. Whole:
    // one listing of everything, matched to bindings by identity.
    bool filtered_ = false;
    std::vector<Binding> bindings_;
    std::unordered_map<uint32_t, size_t> by_id_;
    size_t at_ = 0;
    std::unique_ptr<ConntrackListing> listing_;
    size_t count_ = 0;
  };
  std::unique_ptr<ConnectionCursor> open_connections(const std::optional<ServiceKey>& service,
                                                     const std::optional<std::string>& backend);

  // `hostlbctl flush`: deletes the connections of the live bindings that
  // match (all of them when both filters are unset; draining bindings are
  // left to their drain); returns how many there were. Throws KernelError.
  size_t flush(const std::optional<ServiceKey>& service, const std::optional<std::string>& backend);

  const State& current() const;

  // Live connections of one binding (draining ones included).
  size_t count_connections(const Binding& binding);

  // The binding (live, or retired: draining or refused) a kernel key
  // stands for.
  std::optional<BindingKey> binding_for(const DeliveryKey& key) const;
  // The binding (live or draining) an identity belongs to; nullptr if none.
  const BindingKey* owner(uint32_t id) const;
  // Calls `each` for every live connection that carries an identity, from
  // one dump of the whole table.
  void each_identified_connection(
      const std::function<void(uint32_t id, const ConntrackEntry&)>& each);

  // Unix time in seconds, from the clock the agent was given.
  int64_t now() const;

  const Datapath& datapath() const { return applied_; }

  // A snapshot is written after this many journaled edits.
  static constexpr size_t kJournalLimit = 1000;

 private:
  ApplyReport apply(State desired, ApplyMode mode, uint32_t drain_seconds,
                    const StateChanges* changes = nullptr);
  // The common end of every change: retires the bindings it removes, applies
  // it to the kernel, flushes what does not drain, persists. Nothing is
  // changed (in hostlbd or the kernel) if the kernel refuses.
  ApplyReport commit(Datapath next, DatapathDiff diff, ApplyMode mode, uint32_t drain_seconds,
                     const std::function<void(State&)>& update_state,
                     const std::vector<Edit>& edits);
  // Records a change that the kernel holds: identities, then one journal
  // record with its edits and retirements, or a snapshot (at start-up, or
  // when the journal is long).
  void persist(const std::vector<Edit>& edits, const DatapathDiff& diff,
               const Retirements::Change& retirement, bool snapshot);

  // Deletes the connections of `bindings` (one conntrack walk for all of
  // them) and tells the flush observer; returns how many each had. Throws
  // KernelError.
  std::vector<size_t> flush_connections(const std::vector<const Binding*>& bindings);
  // The same for bindings a change has removed (or whose drain ended): the
  // change has succeeded by then, so a failure is logged, not thrown or
  // undone. Returns the total flushed.
  size_t flush_bindings(const std::vector<Binding>& bindings);

  bool decide_serving(const Binding& binding, const Binding* before, const HealthCheck* check,
                      bool starting) const;

  Reconciler& reconciler_;
  StateStore& store_;
  ConntrackTable& conntrack_;
  AgentOptions options_;
  FlushObserver flush_observer_;
  std::optional<PersistedState> persisted_;
  Datapath applied_;
  std::unordered_map<uint32_t, BindingKey> owners_;
  uint64_t repairs_ = 0;
  const HealthBook* health_ = nullptr;
  uint64_t generation_ = 0;
  std::string last_difference_;
};

}  // namespace hostlb
