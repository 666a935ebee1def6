// Per-service and per-backend connection counters, kept from conntrack
// events (NEW, DESTROY) and from the kernel's packet counters (refused
// connection attempts, consistency misses). Pure: the daemon feeds it
// events, flushes, dumps and counter readings; memory grows with the number
// of bindings, never with the event rate.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hostlb/policies/datapath.h"

namespace hostlb {

struct StatFigures {
  uint64_t active = 0;   // connections alive now
  uint64_t opened = 0;   // committed since hostlbd started
  uint64_t closed = 0;   // ended on their own
  uint64_t flushed = 0;  // deleted by hostlbd (removal, drain end, flush)
  uint64_t refused = 0;  // new connection attempts refused (packets)
  // New connection attempts refused because the binding is down by its
  // health check (packets; not in `refused`).
  uint64_t unhealthy = 0;
  uint64_t misses = 0;   // consistency misses (packets)
  uint64_t limited = 0;  // new connection attempts over the service's rate, dropped (services only)
  // Mid-flow packets without a connection here sent on to their row's
  // previous owner (chaining; services only).
  uint64_t chained = 0;
  bool operator==(const StatFigures&) const = default;
};

// A binding whose service has a health check, as the metrics show it.
struct BindingHealthFigures {
  std::string service;
  std::string backend;
  std::string state;  // up, down, unknown (health_name)
  uint64_t transitions = 0;
  bool operator==(const BindingHealthFigures&) const = default;
};

struct StatsReport {
  std::map<std::string, StatFigures> services;  // by service key text
  std::map<std::string, StatFigures> backends;  // by backend name
  uint64_t events = 0;                          // conntrack events received
  uint64_t event_losses = 0;                    // times the kernel dropped events (ENOBUFS)
  uint64_t resyncs = 0;                         // dumps that replaced the counts after a loss
  uint64_t guard_drops = 0;                     // forged VIP-sourced packets from backends
  uint64_t misses = 0;                          // consistency misses, all keys
  uint64_t limited = 0;                         // attempts over a service's rate, all services
  uint64_t repairs = 0;                         // times hostlbd rebuilt a datapath someone changed
  uint64_t conntrack_count = 0;                 // the conntrack table now (all users)
  uint64_t conntrack_max = 0;
  bool conntrack_full = false;
  std::vector<BindingHealthFigures> health{};  // the checked bindings
  uint64_t health_probes = 0;                  // probes made since hostlbd started
  uint64_t health_probes_failed = 0;
};

// Whether the conntrack table is to be reported full: from 99% of
// nf_conntrack_max (the kernel drops new connections at 100%), and no
// longer once it is below 90% again, so that a table at the brink is
// reported once, not at every fluctuation.
bool conntrack_full(bool was_full, uint64_t count, uint64_t max);

class ConnectionStats {
 public:
  // Which binding (live or draining) an identity belongs to.
  using Owner = std::function<const BindingKey*(uint32_t id)>;
  ConnectionStats(MarkLayout marks, Owner owner);

  // Events; `ct_id` and the timestamps (0 if unknown) tell events the last
  // resync's dump already counted from those it did not.
  void on_new(uint32_t mark, uint32_t ct_id = 0, uint64_t start_ns = 0);
  void on_destroy(uint32_t mark, uint64_t stop_ns = 0);
  // hostlbd deleted `count` connections of a binding; their DESTROY events
  // are expected and are not counted as closed.
  void on_flush(const BindingKey& key, uint32_t id, size_t count);
  // The kernel dropped events: the caller resyncs.
  void on_loss() { ++event_losses_; }
  // Replaces the live counts by a dump's. The subscription was opened before
  // the dump began (at `dump_started_ns`, wall clock), so events already
  // queued or arriving during the dump may describe entries the dump
  // counted: a NEW event of an entry committed before the dump began, or
  // among `created_during_dump` (the ids of dumped entries committed after
  // it began), is skipped, as is the DESTROY of an entry that was gone
  // before the dump began. Exact when conntrack timestamps are on.
  struct Dump {
    std::unordered_map<uint32_t, uint64_t> active_by_id;
    uint64_t started_ns = 0;
    std::unordered_set<uint32_t> created_during_dump;
  };
  void resync(Dump dump, bool after_loss);
  // For a datapath whose entries send no events (the BPF host datapath):
  // `opened` comes from observe(), and each dump settles what ended since
  // the previous one: per binding, what was alive, plus what opened, less
  // what hostlbd flushed, less what is alive now, closed on its own.
  void settle(Dump dump);

  // A reading of the kernel's counters. Packets counted since the previous
  // reading are added; a key that is gone (its refusal ended) keeps what
  // was added for it. `binding_for` names the binding a key stands for.
  struct KernelReading {
    uint64_t guard_drops = 0;
    uint64_t misses = 0;
    std::map<DeliveryKey, uint64_t> refused;
    std::map<DeliveryKey, uint64_t> misses_by_key;
    uint64_t limited = 0;
    std::map<ServiceKey, uint64_t> limited_by_service{};
    // The refused keys that are bindings down by their health check: their
    // refusals count as `unhealthy`.
    std::set<DeliveryKey> unhealthy{};
    // Connections opened per binding key, from datapaths that count them
    // (the BPF host datapath, whose entries send no conntrack events).
    std::map<DeliveryKey, uint64_t> opened_by_key{};
  };
  void observe(const KernelReading& reading,
               const std::function<std::optional<BindingKey>(const DeliveryKey&)>& binding_for);

  // Totals of services and backends that are no longer known are dropped
  // (a counter that comes back starts from zero, as after a restart).
  void forget_unless(const std::function<bool(const std::string& service)>& known_service,
                     const std::function<bool(const std::string& backend)>& known_backend);

  void count_event() { ++events_; }
  StatsReport report() const;

 private:
  StatFigures& service(const BindingKey& key) { return services_[key.service.str()]; }
  StatFigures& backend(const BindingKey& key) { return backends_[key.backend]; }

  MarkLayout marks_;
  Owner owner_;
  std::unordered_map<uint32_t, uint64_t> active_;         // by identity
  std::unordered_map<uint32_t, uint64_t> pending_flush_;  // DESTROY events still to come
  uint64_t dump_started_ns_ = 0;
  std::unordered_set<uint32_t> counted_by_dump_;
  std::map<std::string, StatFigures> services_;  // active is computed in report()
  std::map<std::string, StatFigures> backends_;
  std::map<DeliveryKey, uint64_t> last_refused_;
  std::map<DeliveryKey, uint64_t> last_misses_;
  std::map<ServiceKey, uint64_t> last_limited_;
  std::map<DeliveryKey, uint64_t> last_opened_;
  std::map<BindingKey, uint64_t> opened_since_settle_;
  std::map<BindingKey, uint64_t> flushed_since_settle_;
  std::map<BindingKey, int64_t> unsettled_;  // alive in a dump before their count was read
  uint64_t events_ = 0;
  uint64_t event_losses_ = 0;
  uint64_t resyncs_ = 0;
  uint64_t guard_drops_ = 0;
  uint64_t misses_ = 0;
  uint64_t limited_ = 0;
};

// The Prometheus text exposition of a report (for node_exporter's textfile
// collector, or an HTTP scrape).
std::string render_prometheus(const StatsReport& report);

}  // namespace hostlb
