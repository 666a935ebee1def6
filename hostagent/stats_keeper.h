// The glue between the kernel's counters and ConnectionStats: a conntrack
// event subscription (opened before the first dump, as conntrack-tools
// does, so that nothing falls between the two), resyncs after event loss,
// readings of the table's packet counters, and the metrics file.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "agent.h"
#include "hostlb/netlink/conntrack.h"
#include "hostlb/netlink/conntrack_events.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/sysctl.h"
#include "hostlb/policies/connection_stats.h"

namespace hostlb {

class StatsKeeper {
 public:
  // Subscribes to events and counts what is alive. Throws KernelError.
  StatsKeeper(Agent& agent, NftRuleset& nft, Sysctls& sysctls, ConntrackTable& table,
              std::unique_ptr<ConntrackEvents> events, const MarkLayout& marks);

  // Reads the conntrack table's fill; says once when it becomes full (the
  // kernel then drops new connections) and once when it has room again.
  // From 90% on, first has the kernel free the entries that timed out
  // (ConntrackTable::reap_expired): after a flood the table would otherwise
  // stay full of them for a minute or more.
  void check_conntrack_headroom();

  int fd() const { return events_->fd(); }
  // Reads the queued events; resyncs from a dump if the kernel lost some.
  void on_readable();

  // Current figures (reads the kernel's packet counters first; with a
  // datapath whose entries send no events, dumps the live connections too).
  StatsReport report();
  // The connections counted from conntrack's events alone, all services:
  // cheap enough for every fleet report (no kernel read).
  struct ConnectionTotals {
    uint64_t active = 0, opened = 0, closed = 0, flushed = 0;
  };
  ConnectionTotals connection_totals() const;
  // Adds the health checks' figures to every report (the health monitor's).
  void set_health_source(std::function<void(StatsReport&)> source) {
    health_source_ = std::move(source);
  }
  // Writes the Prometheus text to `path` atomically (temporary file,
  // rename), for node_exporter's textfile collector. Throws StoreError.
  void write_metrics(const std::string& path);

 private:
  ConnectionStats::Dump dump();
  void resync(bool after_loss);

  Agent& agent_;
  NftRuleset& nft_;
  Sysctls& sysctls_;
  ConntrackTable& table_;
  bool reap_failed_ = false;
  uint64_t ct_count_ = 0, ct_max_ = 0;
  bool ct_full_ = false;
  std::unique_ptr<ConntrackEvents> events_;
  ConnectionStats stats_;
  size_t losses_unreported_ = 0;
  std::function<void(StatsReport&)> health_source_;
  std::chrono::steady_clock::time_point last_loss_report_{};
};

}  // namespace hostlb
