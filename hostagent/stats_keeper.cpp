#include "stats_keeper.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <set>

#include "hostlb/netlink/error.h"
#include "maintenance.h"
#include "state_store.h"

namespace hostlb {

StatsKeeper::StatsKeeper(Agent& agent, NftRuleset& nft, Sysctls& sysctls, ConntrackTable& table,
                         std::unique_ptr<ConntrackEvents> events, const MarkLayout& marks)
    : agent_(agent),
      nft_(nft),
      sysctls_(sysctls),
      table_(table),
      events_(std::move(events)),
      stats_(marks, [&agent](uint32_t id) { return agent.owner(id); }) {
  agent_.set_flush_observer(
      [this](const Binding& b, size_t n) { stats_.on_flush(b.key, b.id, n); });
  resync(/*after_loss=*/false);
}

ConnectionStats::Dump StatsKeeper::dump() {
  ConnectionStats::Dump out;
  out.started_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  agent_.each_identified_connection([&](uint32_t id, const ConntrackEntry& e) {
    ++out.active_by_id[id];
    if (e.start_ns >= out.started_ns) out.created_during_dump.insert(e.id);
  });
  return out;
}

void StatsKeeper::resync(bool after_loss) {
  stats_.resync(dump(), after_loss);
  if (!after_loss) return;
  // An event storm can overflow the queue many times a second: one line a
  // minute says how often.
  ++losses_unreported_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_loss_report_ < std::chrono::minutes(1)) return;
  spdlog::warn(
      "conntrack events were lost (queue full) {} time(s) since the last report; counts "
      "resynced from a dump each time",
      losses_unreported_);
  losses_unreported_ = 0;
  last_loss_report_ = now;
}

void StatsKeeper::on_readable() {
  const auto batch = events_->read([this](const ConntrackEvent& e) {
    stats_.count_event();
    if (e.kind == ConntrackEvent::Kind::kNew)
      stats_.on_new(e.mark, e.id, e.start_ns);
    else
      stats_.on_destroy(e.mark, e.stop_ns);
  });
  if (batch.lost) {
    stats_.on_loss();
    resync(/*after_loss=*/true);
  }
}

StatsKeeper::ConnectionTotals StatsKeeper::connection_totals() const {
  ConnectionTotals out;
  for (const auto& [service, f] : stats_.report().services) {
    out.active += f.active;
    out.opened += f.opened;
    out.closed += f.closed;
    out.flushed += f.flushed;
  }
  return out;
}

StatsReport StatsKeeper::report() {
  const NftRuleset::Counters counters = nft_.counters();
  std::set<DeliveryKey> unhealthy;
  for (const auto& b : agent_.datapath().bindings)
    if (!b.serving) unhealthy.insert(b.delivery());
  stats_.observe(
      {counters.guard_drops, counters.misses, counters.refused, counters.misses_by_key,
       counters.limited, counters.limited_by_service, std::move(unhealthy), counters.opened_by_key},
      [this](const DeliveryKey& key) { return agent_.binding_for(key); });
  if (!nft_.sends_conntrack_events()) stats_.settle(dump());
  const State& state = agent_.current();
  stats_.forget_unless(
      [&](const std::string& service) {
        for (const auto& s : state.services)
          if (s.key.str() == service) return true;
        for (const auto& r : agent_.retired().entries())
          if (r.binding.key.service.str() == service) return true;
        return false;
      },
      [&](const std::string& backend) {
        if (state.find_backend(backend) != nullptr) return true;
        for (const auto& r : agent_.retired().entries())
          if (r.binding.key.backend == backend) return true;
        return false;
      });
  StatsReport report = stats_.report();
  report.repairs = agent_.repairs();
  check_conntrack_headroom();
  report.conntrack_count = ct_count_;
  report.conntrack_max = ct_max_;
  report.conntrack_full = ct_full_;
  if (health_source_) health_source_(report);
  return report;
}

void StatsKeeper::check_conntrack_headroom() {
  ct_count_ = read_sysctl_number(sysctls_, "net/netfilter/nf_conntrack_count").value_or(0);
  ct_max_ = read_sysctl_number(sysctls_, "net/netfilter/nf_conntrack_max").value_or(0);
  if (ct_max_ > 0 && ct_count_ * 10 >= ct_max_ * 9) {
    try {
      table_.reap_expired();
      if (reap_failed_) spdlog::info("freeing timed-out conntrack entries works again");
      reap_failed_ = false;
      ct_count_ = read_sysctl_number(sysctls_, "net/netfilter/nf_conntrack_count").value_or(0);
    } catch (const KernelError& e) {
      if (!reap_failed_) spdlog::warn("{}", e.what());
      reap_failed_ = true;
    }
  }
  const bool full = conntrack_full(ct_full_, ct_count_, ct_max_);
  if (full && !ct_full_)
    spdlog::error(
        "the conntrack table is full ({} of {} entries): the kernel drops new "
        "connections; raise net.netfilter.nf_conntrack_max",
        ct_count_, ct_max_);
  if (!full && ct_full_)
    spdlog::info("the conntrack table has room again ({} of {} entries)", ct_count_, ct_max_);
  ct_full_ = full;
}

void StatsKeeper::write_metrics(const std::string& path) {
  write_metrics_file(path, render_prometheus(report()));
}

}  // namespace hostlb
