#include "health_monitor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <unordered_map>

#include "hostlb/netlink/error.h"

namespace hostlb {

struct HealthMonitor::Slot {
  Slot(HealthMonitor& monitor, Binding b, HealthCheck c)
      : loop(monitor.loop_),
        binding(std::move(b)),
        check(std::move(c)),
        next(loop, [this, &monitor] { monitor.start_probe(*this); }),
        deadline(loop, [this, &monitor] { monitor.finish(*this, probe->on_timeout()); }) {}
  ~Slot() { stop(); }
  void stop() {
    if (watching) loop.unwatch(probe->fd());
    watching = false;
    probe.reset();
    deadline.disarm();
  }

  EventLoop& loop;
  Binding binding;
  HealthCheck check;
  Timer next;
  Timer deadline;
  std::unique_ptr<Probe> probe;
  bool watching = false;
  Clock::TimePoint started{};
  // The kernel did not take the last change: tried again after the next
  // probe.
  bool follow_pending = false;
};

HealthMonitor::HealthMonitor(EventLoop& loop, Agent& agent, Prober& prober, StateStore& store,
                             HealthBook& book, HealthMonitorOptions options)
    : loop_(loop),
      agent_(agent),
      prober_(prober),
      store_(store),
      book_(book),
      options_(options),
      save_timer_(loop, [this] { save(); }) {
  loop_.on_prepare([this] {
    apply_transitions();
    sync();
  });
}

HealthMonitor::~HealthMonitor() {
  if (save_timer_.armed()) save();  // transitions not yet written
}

HealthBook HealthMonitor::load(const StateStore& store) {
  try {
    const auto text = store.load_health();
    if (!text) return {};
    HealthBook book = HealthBook::from_json(nlohmann::json::parse(*text));
    spdlog::info("health of {} bindings as the previous run left it ({})", book.entries().size(),
                 store.health_path());
    return book;
  } catch (const std::exception& e) {
    spdlog::warn("{} cannot be read ({}); health starts unknown", store.health_path(), e.what());
    return {};
  }
}

void HealthMonitor::sync() {
  if (seen_generation_ == agent_.generation()) return;
  seen_generation_ = agent_.generation();
  std::unordered_map<ServiceKey, const HealthCheck*, ServiceKeyHash> checks;
  for (const auto& s : agent_.current().services)
    if (s.health) checks.emplace(s.key, &*s.health);
  std::vector<BindingKey> keys;
  std::map<BindingKey, std::unique_ptr<Slot>> slots;
  for (const auto& b : agent_.datapath().bindings) {
    const auto check = checks.find(b.key.service);
    if (check == checks.end()) continue;
    keys.push_back(b.key);
    auto it = slots_.find(b.key);
    // The serving flag is the monitor's own doing; anything else that
    // changed (target, port, the check) starts the binding's probes anew.
    Binding probed = b;
    probed.serving = true;
    if (it != slots_.end() && it->second->binding == probed &&
        it->second->check == *check->second) {
      slots.emplace(b.key, std::move(it->second));
      continue;
    }
    auto slot = std::make_unique<Slot>(*this, probed, *check->second);
    // The first probe soon (a new binding of a service that fails closed
    // waits for it), spread over at most a second.
    const uint32_t spread = std::min<uint32_t>(check->second->interval_ms, 1000);
    slot->next.arm_in(std::chrono::milliseconds(probe_offset_ms(b.key, spread)));
    slots.emplace(b.key, std::move(slot));
  }
  slots_ = std::move(slots);  // the slots left behind stop probing
  book_.track(keys, loop_.clock().unix_ms());
}

void HealthMonitor::start_probe(Slot& slot) {
  if (slot.probe) finish(slot, slot.probe->on_timeout());
  slot.started = loop_.clock().monotonic();
  slot.next.arm_at(slot.started + std::chrono::milliseconds(slot.check.interval_ms));
  const ProbeSpec spec{slot.check, slot.binding.target, slot.binding.target_port,
                       slot.binding.target.is_v6() ? options_.source_v6 : options_.source_v4};
  slot.probe = prober_.start(spec);
  if (const auto outcome = slot.probe->finished()) {
    finish(slot, *outcome);
    return;
  }
  Slot* raw = &slot;
  loop_.watch(slot.probe->fd(), slot.probe->events(), [this, raw](short revents) {
    const auto outcome = raw->probe->on_ready(revents);
    if (outcome)
      finish(*raw, *outcome);
    else
      loop_.set_events(raw->probe->fd(), raw->probe->events());
  });
  slot.watching = true;
  slot.deadline.arm_in(std::chrono::milliseconds(slot.check.timeout_ms));
}

void HealthMonitor::finish(Slot& slot, const ProbeOutcome& outcome) {
  const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(
      loop_.clock().monotonic() - slot.started);
  slot.stop();
  ++totals_.probes;
  totals_.failed_probes += outcome.ok ? 0 : 1;
  const ProbeResult result{outcome.ok, outcome.detail, static_cast<uint32_t>(latency.count())};
  spdlog::debug("probe of {}: {} ({} ms)", slot.binding.key.str(), outcome.detail, latency.count());
  const auto transition =
      book_.record(slot.binding.key, result, slot.check, loop_.clock().unix_ms());
  if (!transition) {
    if (slot.follow_pending) to_follow_.push_back(slot.binding.key);
    return;
  }
  (transition->to == Health::kUp ? totals_.went_up : totals_.went_down) += 1;
  spdlog::info("health of {}: {} -> {} ({})", transition->key.str(), health_name(transition->from),
               health_name(transition->to), transition->reason);
  to_follow_.push_back(slot.binding.key);
  if (transition->to == Health::kDown && slot.check.flush_on_down)
    to_flush_.push_back(slot.binding.key);
  // Written at most once a second: a whole fleet of bindings going down at
  // once is one write, not one per binding.
  if (!save_timer_.armed()) save_timer_.arm_in(std::chrono::seconds(1));
}

void HealthMonitor::apply_transitions() {
  if (!to_follow_.empty()) {
    // One kernel change for every transition of this round of the loop.
    try {
      agent_.follow_health(to_follow_);
      for (const auto& key : to_follow_)
        if (auto it = slots_.find(key); it != slots_.end()) it->second->follow_pending = false;
    } catch (const KernelError& e) {
      spdlog::error("health of {} bindings not applied (tried again after their next probe): {}",
                    to_follow_.size(), e.what());
      for (const auto& key : to_follow_)
        if (auto it = slots_.find(key); it != slots_.end()) it->second->follow_pending = true;
    }
    to_follow_.clear();
    if (observer_) observer_();
  }
  for (const auto& key : to_flush_) {
    try {
      agent_.flush(key.service, key.backend);
    } catch (const KernelError& e) {
      spdlog::error("{} is down but its connections could not be flushed: {}", key.str(), e.what());
    }
  }
  to_flush_.clear();
}

void HealthMonitor::save() {
  try {
    store_.save_health(book_.to_json().dump());
  } catch (const StoreError& e) {
    spdlog::error("health not recorded: {}", e.what());
  }
}

void HealthMonitor::fill(StatsReport& report) const {
  report.health_probes = totals_.probes;
  report.health_probes_failed = totals_.failed_probes;
  report.health.clear();
  for (const auto& [key, slot] : slots_) {
    const BindingHealth* h = book_.find(key);
    report.health.push_back({key.service.str(), key.backend,
                             std::string(health_name(h ? h->state : Health::kUnknown)),
                             h ? h->transitions : 0});
  }
}

std::vector<BindingKey> HealthMonitor::down() const {
  std::vector<BindingKey> out;
  for (const auto& [key, slot] : slots_)
    if (const BindingHealth* h = book_.find(key); h && h->state == Health::kDown)
      out.push_back(key);
  return out;
}

nlohmann::json HealthMonitor::report() const {
  nlohmann::json bindings = nlohmann::json::array();
  const Datapath& datapath = agent_.datapath();
  for (const auto& [key, slot] : slots_) {
    const BindingHealth* h = book_.find(key);
    auto it = std::lower_bound(datapath.bindings.begin(), datapath.bindings.end(), key,
                               [](const Binding& b, const BindingKey& k) { return b.key < k; });
    const bool serving = it != datapath.bindings.end() && it->key == key && it->serving;
    nlohmann::json entry = {
        {"service", key.service.str()},
        {"backend", key.backend},
        {"check", health_kind_name(slot->check.kind)},
        {"target", endpoint_str(slot->binding.target, slot->binding.target_port)},
        {"state", health_name(h ? h->state : Health::kUnknown)},
        {"serving", serving},
        {"since_ms", h ? h->since_ms : 0},
        {"probes", h ? h->probes : 0},
        {"failed_probes", h ? h->failed_probes : 0},
        {"transitions", h ? h->transitions : 0}};
    if (h && h->last)
      entry["last"] = {{"ok", h->last->ok},
                       {"detail", h->last->detail},
                       {"latency_ms", h->last->latency_ms},
                       {"at_ms", h->last_ms}};
    else
      entry["last"] = nullptr;
    bindings.push_back(std::move(entry));
  }
  return {{"bindings", std::move(bindings)},
          {"probes", totals_.probes},
          {"failed_probes", totals_.failed_probes},
          {"went_up", totals_.went_up},
          {"went_down", totals_.went_down}};
}

}  // namespace hostlb
