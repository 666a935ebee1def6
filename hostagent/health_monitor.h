// Health checks where the backends run: every binding of a service with a
// check is probed from this host on the event loop (one socket a probe, no
// thread, the probes of many bindings spread over their interval); results
// go to the HealthBook, and a transition makes the Agent refuse (or serve
// again) that binding alone.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "agent.h"
#include "event_loop.h"
#include "hostlb/netlink/probe.h"
#include "hostlb/policies/connection_stats.h"
#include "hostlb/policies/health.h"
#include "state_store.h"

namespace hostlb {

struct HealthMonitorOptions {
  // The addresses probes leave from, per family (see hostlbd(8) "Health
  // checks"); unset: the kernel's choice.
  std::optional<IpAddress> source_v4{};
  std::optional<IpAddress> source_v6{};
};

class HealthMonitor {
 public:
  // The book is the agent's (Agent::set_health): the monitor writes it,
  // the agent reads it.
  HealthMonitor(EventLoop& loop, Agent& agent, Prober& prober, StateStore& store, HealthBook& book,
                HealthMonitorOptions options);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // The book as the previous run left it, or empty (a record that cannot
  // be read is logged and ignored: probes will tell).
  static HealthBook load(const StateStore& store);

  // Follows the agent's bindings when they changed: starts probing new
  // checked bindings, stops probing gone ones. Called before every wait of
  // the loop (cheap when nothing changed).
  void sync();

  struct Totals {
    uint64_t probes = 0;
    uint64_t failed_probes = 0;
    uint64_t went_up = 0;
    uint64_t went_down = 0;
  };
  const Totals& totals() const { return totals_; }
  size_t checked() const { return slots_.size(); }
  // Per checked binding: state, since when, whether it serves, the last
  // probe (result, detail, latency), counts. For `hostlbctl health`.
  nlohmann::json report() const;
  // The same for the statistics and metrics.
  void fill(StatsReport& report) const;
  // The checked bindings whose check says down (the fleet's report).
  std::vector<BindingKey> down() const;
  // Called after the kernel followed a round's transitions (the fleet's
  // report says which bindings are down).
  void on_transitions(std::function<void()> observer) { observer_ = std::move(observer); }

 private:
  struct Slot;
  void start_probe(Slot& slot);
  void finish(Slot& slot, const ProbeOutcome& outcome);
  // Before the loop waits: the kernel follows this round's transitions.
  void apply_transitions();
  void save();

  EventLoop& loop_;
  Agent& agent_;
  Prober& prober_;
  StateStore& store_;
  HealthBook& book_;
  HealthMonitorOptions options_;
  std::map<BindingKey, std::unique_ptr<Slot>> slots_;
  std::optional<uint64_t> seen_generation_;
  Totals totals_;
  std::vector<BindingKey> to_follow_;
  std::vector<BindingKey> to_flush_;
  Timer save_timer_;
  std::function<void()> observer_;
};

}  // namespace hostlb
