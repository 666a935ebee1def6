#include "hostlb/policies/connection_stats.h"

#include <utility>

namespace hostlb {

ConnectionStats::ConnectionStats(MarkLayout marks, Owner owner)
    : marks_(marks), owner_(std::move(owner)) {}

void ConnectionStats::on_new(uint32_t mark, uint32_t ct_id, uint64_t start_ns) {
  if (start_ns != 0 && start_ns < dump_started_ns_) return;  // the dump has it
  if (ct_id != 0 && counted_by_dump_.erase(ct_id) != 0) return;
  const uint32_t id = marks_.id_from_mark(mark);
  const BindingKey* key = owner_(id);
  if (key == nullptr) return;  // not (or no longer) one of hostlb's bindings
  ++active_[id];
  ++service(*key).opened;
  ++backend(*key).opened;
}

void ConnectionStats::on_destroy(uint32_t mark, uint64_t stop_ns) {
  if (stop_ns != 0 && stop_ns < dump_started_ns_) return;  // gone before the dump
  const uint32_t id = marks_.id_from_mark(mark);
  if (auto it = active_.find(id); it != active_.end() && --it->second == 0) active_.erase(it);
  if (auto it = pending_flush_.find(id); it != pending_flush_.end()) {
    if (--it->second == 0) pending_flush_.erase(it);
    return;  // counted as flushed already
  }
  const BindingKey* key = owner_(id);
  if (key == nullptr) return;
  ++service(*key).closed;
  ++backend(*key).closed;
}

void ConnectionStats::on_flush(const BindingKey& key, uint32_t id, size_t count) {
  if (count == 0) return;
  service(key).flushed += count;
  backend(key).flushed += count;
  pending_flush_[id] += count;
  flushed_since_settle_[key] += count;
}

void ConnectionStats::settle(Dump dump) {
  std::map<BindingKey, int64_t> ended = std::move(unsettled_);
  unsettled_.clear();
  for (const auto& [id, n] : active_)
    if (const BindingKey* key = owner_(id)) ended[*key] += static_cast<int64_t>(n);
  for (const auto& [key, n] : opened_since_settle_) ended[key] += static_cast<int64_t>(n);
  for (const auto& [key, n] : flushed_since_settle_) ended[key] -= static_cast<int64_t>(n);
  resync(std::move(dump), /*after_loss=*/false);
  for (const auto& [id, n] : active_)
    if (const BindingKey* key = owner_(id)) ended[*key] -= static_cast<int64_t>(n);
  // Below zero: connections opened between the counters' reading and the
  // dump, whose opening the next reading brings.
  for (const auto& [key, n] : ended) {
    if (n < 0) unsettled_[key] = n;
    if (n <= 0) continue;
    service(key).closed += static_cast<uint64_t>(n);
    backend(key).closed += static_cast<uint64_t>(n);
  }
  opened_since_settle_.clear();
  flushed_since_settle_.clear();
}

void ConnectionStats::resync(Dump dump, bool after_loss) {
  active_.clear();
  for (const auto& [id, n] : dump.active_by_id)
    if (owner_(id) != nullptr) active_[id] = n;
  dump_started_ns_ = dump.started_ns;
  counted_by_dump_ = std::move(dump.created_during_dump);
  // The DESTROY events of earlier flushes may be among those lost.
  pending_flush_.clear();
  if (after_loss) ++resyncs_;
}

void ConnectionStats::observe(
    const KernelReading& reading,
    const std::function<std::optional<BindingKey>(const DeliveryKey&)>& binding_for) {
  guard_drops_ = reading.guard_drops;
  misses_ = reading.misses;
  // A counter lower than last time was reset (the element was removed and
  // added again, or the table rebuilt): all of it is new.
  auto add_deltas = [&](const std::map<DeliveryKey, uint64_t>& now,
                        std::map<DeliveryKey, uint64_t>& last, uint64_t StatFigures::*field) {
    for (const auto& [key, packets] : now) {
      auto it = last.find(key);
      const uint64_t before = it == last.end() || it->second > packets ? 0 : it->second;
      if (packets == before) continue;
      if (auto binding = binding_for(key)) {
        uint64_t StatFigures::*into = field == &StatFigures::refused && reading.unhealthy.count(key)
                                          ? &StatFigures::unhealthy
                                          : field;
        service(*binding).*into += packets - before;
        backend(*binding).*into += packets - before;
      }
    }
    last = now;
  };
  add_deltas(reading.refused, last_refused_, &StatFigures::refused);
  add_deltas(reading.misses_by_key, last_misses_, &StatFigures::misses);
  for (const auto& [key, n] : reading.opened_by_key) {
    auto it = last_opened_.find(key);
    const uint64_t before = it == last_opened_.end() || it->second > n ? 0 : it->second;
    if (n == before) continue;
    if (auto binding = binding_for(key)) opened_since_settle_[*binding] += n - before;
  }
  add_deltas(reading.opened_by_key, last_opened_, &StatFigures::opened);
  limited_ = reading.limited;
  for (const auto& [key, packets] : reading.limited_by_service) {
    auto it = last_limited_.find(key);
    const uint64_t before = it == last_limited_.end() || it->second > packets ? 0 : it->second;
    if (packets != before) services_[key.str()].limited += packets - before;
  }
  last_limited_ = reading.limited_by_service;
}

void ConnectionStats::forget_unless(const std::function<bool(const std::string&)>& known_service,
                                    const std::function<bool(const std::string&)>& known_backend) {
  std::erase_if(services_, [&](const auto& entry) { return !known_service(entry.first); });
  std::erase_if(backends_, [&](const auto& entry) { return !known_backend(entry.first); });
}

StatsReport ConnectionStats::report() const {
  StatsReport out;
  out.services = services_;
  out.backends = backends_;
  for (auto& [name, figures] : out.services) figures.active = 0;
  for (auto& [name, figures] : out.backends) figures.active = 0;
  for (const auto& [id, n] : active_) {
    const BindingKey* key = owner_(id);
    if (key == nullptr) continue;
    out.services[key->service.str()].active += n;
    out.backends[key->backend].active += n;
  }
  out.events = events_;
  out.event_losses = event_losses_;
  out.resyncs = resyncs_;
  out.guard_drops = guard_drops_;
  out.misses = misses_;
  out.limited = limited_;
  return out;
}

bool conntrack_full(bool was_full, uint64_t count, uint64_t max) {
  if (max == 0) return false;
  if (was_full) return count * 10 >= max * 9;
  return count * 100 >= max * 99;
}

namespace {

// Label values: backslash, double quote and newline are escaped.
std::string label_value(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string render_prometheus(const StatsReport& report) {
  std::string out;
  struct Metric {
    const char* name;
    const char* help;
    const char* type;
    uint64_t StatFigures::*field;
    bool services_only = false;
  };
  static const Metric kMetrics[] = {
      {"connections_active", "Connections committed by hostlb that are alive.", "gauge",
       &StatFigures::active},
      {"connections_opened_total", "Connections committed since hostlbd started.", "counter",
       &StatFigures::opened},
      {"connections_closed_total", "Connections that ended on their own.", "counter",
       &StatFigures::closed},
      {"connections_flushed_total", "Connections deleted by hostlbd (removal, drain end, flush).",
       "counter", &StatFigures::flushed},
      {"connections_refused_total",
       "Packets of new connections to draining or removed bindings, refused.", "counter",
       &StatFigures::refused},
      {"connections_refused_unhealthy_total",
       "Packets of new connections to bindings down by their health check, refused.", "counter",
       &StatFigures::unhealthy},
      {"consistency_misses_total",
       "TCP packets for a served key that were not SYNs and had no conntrack entry.", "counter",
       &StatFigures::misses},
      {"connections_limited_total",
       "New connection attempts over the service's rate on this host, dropped.", "counter",
       &StatFigures::limited, true},
      {"chained_total",
       "Mid-flow packets from a gateway without a connection here, sent to their row's previous "
       "owner.",
       "counter", &StatFigures::chained, true},
  };
  for (const auto& [scope, by] :
       {std::pair{"service", &report.services}, std::pair{"backend", &report.backends}}) {
    for (const auto& m : kMetrics) {
      if (m.services_only && by != &report.services) continue;
      const std::string name = std::string("hostlb_") + scope + "_" + m.name;
      out += "# HELP " + name + " " + m.help + "\n# TYPE " + name + " " + m.type + "\n";
      for (const auto& [label, figures] : *by) {
        out += name;
        out += "{";
        out += scope;
        out += "=\"";
        out += label_value(label);
        out += "\"} ";
        out += std::to_string(figures.*(m.field));
        out += "\n";
      }
    }
  }
  auto single = [&](const char* name, const char* help, uint64_t value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
           " " + std::to_string(value) + "\n";
  };
  single("hostlb_conntrack_events_total", "Conntrack events received for hostlb's connections.",
         report.events);
  single("hostlb_conntrack_event_losses_total",
         "Times the kernel dropped conntrack events (ENOBUFS).", report.event_losses);
  single("hostlb_conntrack_resyncs_total", "Counts rebuilt from a conntrack dump after a loss.",
         report.resyncs);
  single("hostlb_guard_drops_total",
         "Packets from backend MACs with a VIP as source address, dropped.", report.guard_drops);
  single("hostlb_consistency_misses_all_total", "Consistency misses, all keys.", report.misses);
  single("hostlb_connections_limited_all_total",
         "New connection attempts over a service's rate, dropped, all services.", report.limited);
  out +=
      "# HELP hostlb_conntrack_entries Entries in the conntrack table (all users).\n"
      "# TYPE hostlb_conntrack_entries gauge\nhostlb_conntrack_entries " +
      std::to_string(report.conntrack_count) + "\n";
  out +=
      "# HELP hostlb_conntrack_entries_max nf_conntrack_max.\n"
      "# TYPE hostlb_conntrack_entries_max gauge\nhostlb_conntrack_entries_max " +
      std::to_string(report.conntrack_max) + "\n";
  out +=
      "# HELP hostlb_conntrack_full 1 while the conntrack table is (nearly) full.\n"
      "# TYPE hostlb_conntrack_full gauge\nhostlb_conntrack_full " +
      std::string(report.conntrack_full ? "1" : "0") + "\n";
  single("hostlb_health_probes_total", "Health probes made since hostlbd started.",
         report.health_probes);
  single("hostlb_health_probes_failed_total", "Health probes that failed.",
         report.health_probes_failed);
  if (!report.health.empty()) {
    out +=
        "# HELP hostlb_binding_health 1 for the state a checked binding is in (up, down, "
        "unknown: not yet checked), 0 for the others.\n# TYPE hostlb_binding_health gauge\n";
    for (const auto& h : report.health)
      for (const char* state : {"up", "down", "unknown"})
        out += "hostlb_binding_health{service=\"" + label_value(h.service) + "\",backend=\"" +
               label_value(h.backend) + "\",state=\"" + state + "\"} " +
               (h.state == state ? "1" : "0") + "\n";
    out +=
        "# HELP hostlb_binding_health_transitions_total Changes of a checked binding's health.\n"
        "# TYPE hostlb_binding_health_transitions_total counter\n";
    for (const auto& h : report.health)
      out += "hostlb_binding_health_transitions_total{service=\"" + label_value(h.service) +
             "\",backend=\"" + label_value(h.backend) + "\"} " + std::to_string(h.transitions) +
             "\n";
  }
  single("hostlb_repairs_total",
         "Times hostlbd rebuilt its table, routes or neighbours after someone changed them.",
         report.repairs);
  return out;
}

}  // namespace hostlb
