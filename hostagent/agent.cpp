#include "agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

namespace hostlb {

namespace {
const State kEmptyState;
}

Agent::Agent(Reconciler& reconciler, StateStore& store, ConntrackTable& conntrack,
             AgentOptions options)
    : reconciler_(reconciler), store_(store), conntrack_(conntrack), options_(std::move(options)) {}

int64_t Agent::now() const {
  if (options_.clock) return options_.clock->unix_seconds();
  return SystemClock().unix_seconds();
}

const Retirements& Agent::retired() const {
  static const Retirements kNone;
  return persisted_ ? persisted_->retired : kNone;
}

std::vector<size_t> Agent::flush_connections(const std::vector<const Binding*>& bindings) {
  const MarkLayout& marks = reconciler_.marks();
  std::vector<size_t> counts;
  if (bindings.size() == 1) {
    counts.push_back(conntrack_.flush(marks.mark_for(bindings[0]->id), marks.mask()));
  } else if (bindings.size() > 1) {
    // One walk of the table for all of them: the kernel's filtered flush
    // walks it twice per binding.
    std::set<uint32_t> values;
    for (const Binding* b : bindings) values.insert(marks.mark_for(b->id));
    const auto gone = conntrack_.flush_marks(values, marks.mask());
    for (const Binding* b : bindings) {
      const auto it = gone.find(marks.mark_for(b->id));
      counts.push_back(it == gone.end() ? 0 : it->second);
    }
  }
  for (size_t i = 0; i < bindings.size(); ++i)
    if (flush_observer_) flush_observer_(*bindings[i], counts[i]);
  return counts;
}

size_t Agent::flush_bindings(const std::vector<Binding>& bindings) {
  std::vector<const Binding*> pointers;
  pointers.reserve(bindings.size());
  for (const auto& b : bindings) pointers.push_back(&b);
  try {
    const auto counts = flush_connections(pointers);
    size_t flushed = 0;
    for (size_t i = 0; i < bindings.size(); ++i) {
      flushed += counts[i];
      if (counts[i] > 0)
        spdlog::info("flushed {} connections of {}", counts[i], bindings[i].key.str());
    }
    return flushed;
  } catch (const std::exception& e) {
    if (bindings.size() == 1)
      spdlog::error("{} is gone but its connections could not be flushed: {}",
                    bindings[0].key.str(), e.what());
    else
      spdlog::error("{} bindings are gone but their connections could not be flushed: {}",
                    bindings.size(), e.what());
    return 0;
  }
}

void Agent::load_persisted() {
  // The changes journaled since the snapshot come with the identities they
  // gave their bindings and the retirements they started.
  persisted_ = store_.load_replayed();
  if (!persisted_) return;
  drop_unheld_identities(*persisted_);
  // What the kernel holds from the previous run, as far as hostlbd knows:
  // its host entries are "previous" for the first apply.
  applied_ =
      compile_datapath(persisted_->state, persisted_->ids, reconciler_.marks(), options_.host);
  applied_.refused = persisted_->retired.refused_for(applied_);
  for (const auto& b : applied_.bindings) owners_[b.id] = b.key;
  for (const auto& r : persisted_->retired.entries())
    if (r.draining()) owners_[r.binding.id] = r.binding.key;
  spdlog::info("loaded persisted state from {}: {} backends, {} services, {} retired bindings",
               store_.state_path(), persisted_->state.backends.size(),
               persisted_->state.services.size(), persisted_->retired.entries().size());
}

ApplyReport Agent::start(const std::optional<State>& desired) {
  return apply(desired ? *desired : current(), ApplyMode::kReplace, 0);
}

ApplyReport Agent::change(const State& desired, uint32_t drain_seconds) {
  return apply(desired, ApplyMode::kIncremental, drain_seconds);
}

ApplyReport Agent::change(State desired, const StateChanges& changes, uint32_t drain_seconds) {
  return apply(std::move(desired), ApplyMode::kIncremental, drain_seconds, &changes);
}

ApplyReport Agent::apply(State desired, ApplyMode mode, uint32_t drain_seconds,
                         const StateChanges* changes) {
  if (!persisted_) persisted_ = PersistedState{};
  // With the changed parts known, only they are compiled (a large document
  // applied again with a few changes).
  Datapath next =
      changes ? compile_changed_datapath(applied_, *changes, desired, persisted_->ids,
                                         reconciler_.marks(), options_.host)
              : compile_datapath(desired, persisted_->ids, reconciler_.marks(), options_.host);
  DatapathDiff diff = diff_datapath(applied_, next);
  {
    std::unordered_map<ServiceKey, const HealthCheck*, ServiceKeyHash> checks;
    for (const auto& s : desired.services)
      if (s.health) checks.emplace(s.key, &*s.health);
    const bool starting = mode == ApplyMode::kReplace;
    settle_serving(next, diff, starting, [&](const Binding& b, const Binding* before) {
      const auto it = checks.find(b.key.service);
      return decide_serving(b, before, it == checks.end() ? nullptr : it->second, starting);
    });
  }
  const bool same_state = persisted_->state == desired;
  if (same_state && mode == ApplyMode::kIncremental && diff.bindings_added.empty() &&
      diff.bindings_removed.empty() && diff.hosts_added.empty() && diff.hosts_removed.empty())
    return {};
  // While running, a document that differs in a few places is journaled as
  // the edits between the two states; at start-up a snapshot is written.
  std::vector<Edit> edits;
  if (mode == ApplyMode::kIncremental)
    edits = changes ? edits_between(*changes) : edits_between(persisted_->state, desired);
  return commit(
      std::move(next), std::move(diff), mode, drain_seconds,
      [&](State& state) { state = std::move(desired); }, edits);
}

ApplyReport Agent::edit(const Edit& e, uint32_t drain_seconds) {
  if (!persisted_) persisted_ = PersistedState{};
  check_edit(persisted_->state, e);
  DatapathChange change = change_datapath(persisted_->state, e, applied_, reconciler_.marks(),
                                          persisted_->retired.reserved_ids(), options_.host);
  // The check a binding's service has after the edit.
  auto check_after = [&](const ServiceKey& key) -> const HealthCheck* {
    if ((e.kind == Edit::Kind::kAddService || e.kind == Edit::Kind::kSetHealth) &&
        e.service.key == key)
      return e.service.health ? &*e.service.health : nullptr;
    return health_check(key);
  };
  // A new check (or none) concerns the service's every binding.
  settle_serving(change.next, change.diff, e.kind == Edit::Kind::kSetHealth,
                 [&](const Binding& b, const Binding* before) {
                   return decide_serving(b, before, check_after(b.key.service), false);
                 });
  return commit(std::move(change.next), std::move(change.diff), ApplyMode::kIncremental,
                drain_seconds, [&](State& state) { apply_edit(state, e); }, {e});
}

ApplyReport Agent::commit(Datapath next, DatapathDiff diff, ApplyMode mode, uint32_t drain_seconds,
                          const std::function<void(State&)>& update_state,
                          const std::vector<Edit>& edits) {
  // The retirements are updated on a copy: if the kernel refuses the
  // change, nothing of it happened.
  Retirements retired = persisted_->retired;
  const Retirements::Change retirement = retired.record(
      bindings_gone(diff), next, diff, applied_, {now(), drain_seconds, options_.refuse_seconds});
  ApplyReport report = reconciler_.apply(next, applied_, diff, mode);
  applied_ = std::move(next);
  ++generation_;
  persisted_->retired = std::move(retired);
  update_state(persisted_->state);
  for (const auto& b : diff.bindings_removed) owners_.erase(b.id);
  for (const auto& b : diff.bindings_added) owners_[b.id] = b.key;
  for (const auto& r : retirement.retired)
    if (r.draining()) owners_[r.binding.id] = r.binding.key;
  report.connections_flushed = flush_bindings(retirement.flush_now);
  report.bindings_draining = 0;
  for (const auto& r : retirement.retired) report.bindings_draining += r.draining() ? 1 : 0;
  if (report.bindings_draining > 0)
    spdlog::info("{} bindings drain for {} s", report.bindings_draining, drain_seconds);
  persist(edits, diff, retirement, /*snapshot=*/mode == ApplyMode::kReplace);
  return report;
}

bool Agent::decide_serving(const Binding& binding, const Binding* before, const HealthCheck* check,
                           bool starting) const {
  if (!check || !health_) return true;
  if (const auto known = health_->serving(binding.key)) return *known;
  if (before && !starting) return before->serving;
  return check->start_up;
}

const HealthCheck* Agent::health_check(const ServiceKey& service) const {
  for (const auto& s : current().services)
    if (s.key == service) return s.health ? &*s.health : nullptr;
  return nullptr;
}

size_t Agent::follow_health(const std::vector<BindingKey>& keys) {
  Datapath next = applied_;
  DatapathDiff diff;
  for (const auto& key : keys) {
    auto it = std::lower_bound(next.bindings.begin(), next.bindings.end(), key,
                               [](const Binding& b, const BindingKey& k) { return b.key < k; });
    if (it == next.bindings.end() || it->key != key) continue;
    const bool serving = decide_serving(*it, &*it, health_check(key.service), false);
    if (serving == it->serving) continue;
    diff.bindings_removed.push_back(*it);
    it->serving = serving;
    diff.bindings_added.push_back(*it);
  }
  if (diff.bindings_added.empty()) return 0;
  reconciler_.apply(next, applied_, diff, ApplyMode::kIncremental);
  applied_ = std::move(next);
  ++generation_;
  return diff.bindings_added.size();
}

size_t Agent::expire() {
  if (!persisted_) return 0;
  const auto deadline = persisted_->retired.next_deadline();
  const int64_t t = now();
  if (!deadline || *deadline > t) return 0;
  Datapath next = applied_;
  DatapathDiff diff;
  Retirements retired = persisted_->retired;
  const Retirements::Expiry expiry = retired.expire(t, next, diff, applied_);
  if (diff.changes_ruleset()) reconciler_.apply(next, applied_, diff, ApplyMode::kIncremental);
  applied_ = std::move(next);
  persisted_->retired = std::move(retired);
  // The identities become free only once their connections are gone.
  const size_t flushed = flush_bindings(expiry.drained);
  for (const auto& b : expiry.drained) {
    spdlog::info("drain of {} ended", b.key.str());
    owners_.erase(b.id);
    auto it = persisted_->ids.find(b.key);
    if (it != persisted_->ids.end() && it->second == b.id) persisted_->ids.erase(it);
  }
  if (expiry.refusals_ended > 0)
    spdlog::info("{} removed bindings no longer refused", expiry.refusals_ended);
  store_.save(*persisted_);
  return flushed;
}

void Agent::persist(const std::vector<Edit>& edits, const DatapathDiff& diff,
                    const Retirements::Change& retirement, bool snapshot) {
  std::set<BindingKey> draining;
  for (const auto& r : retirement.retired)
    if (r.draining()) draining.insert(r.binding.key);
  for (const auto& b : diff.bindings_removed)
    if (!draining.count(b.key)) persisted_->ids.erase(b.key);
  for (const auto& b : diff.bindings_added) persisted_->ids[b.key] = b.id;
  if (snapshot || store_.journal_length() + edits.size() >= kJournalLimit) {
    store_.save(*persisted_);
    return;
  }
  JournalRecord record = journal_record_of(edits, diff, retirement);
  if (record.edits.empty() && record.retired.empty() && record.restored.empty()) return;
  // One record per change, so that a change is replayed whole or not at all.
  store_.append(record);
}

size_t Agent::flush(const std::optional<ServiceKey>& service,
                    const std::optional<std::string>& backend) {
  size_t flushed = 0;
  for (const size_t n : flush_connections(select_bindings(applied_, service, backend)))
    flushed += n;
  spdlog::info("flush{}{}: {} connections", service ? " " + service->str() : "",
               backend ? " backend " + *backend : "", flushed);
  return flushed;
}

std::unique_ptr<Agent::ConnectionCursor> Agent::open_connections(
    const std::optional<ServiceKey>& service, const std::optional<std::string>& backend) {
  auto cursor = std::make_unique<ConnectionCursor>();
  cursor->table_ = &conntrack_;
  cursor->marks_ = reconciler_.marks();
  cursor->filtered_ = service || backend;
  if (cursor->filtered_) {
    // The kernel filters by each selected binding's mark.
    for (const Binding* b : select_bindings(applied_, service, backend))
      cursor->bindings_.push_back(*b);
  } else {
    // One dump of the whole table, each entry matched to its binding by the
    // identity in its mark: one pass however many bindings there are.
    cursor->bindings_ = applied_.bindings;
    cursor->by_id_.reserve(cursor->bindings_.size());
    for (size_t i = 0; i < cursor->bindings_.size(); ++i)
      cursor->by_id_.emplace(cursor->bindings_[i].id, i);
  }
  return cursor;
}

bool Agent::ConnectionCursor::next(const Each& each) {
  if (!filtered_) {
    if (!listing_) listing_ = table_->open_listing(0, 0);
    return listing_->next([&](const ConntrackEntry& e) {
      auto it = by_id_.find(marks_.id_from_mark(e.mark));
      if (it == by_id_.end()) return;
      ++count_;
      each(bindings_[it->second], e);
    });
  }
  while (at_ < bindings_.size()) {
    const Binding& b = bindings_[at_];
    if (!listing_) listing_ = table_->open_listing(marks_.mark_for(b.id), marks_.mask());
    if (listing_->next([&](const ConntrackEntry& e) {
          ++count_;
          each(b, e);
        }))
      return true;
    listing_.reset();
    ++at_;
  }
  return false;
}

std::optional<BindingKey> Agent::binding_for(const DeliveryKey& key) const {
  auto it =
      std::lower_bound(applied_.bindings.begin(), applied_.bindings.end(), key.service,
                       [](const Binding& b, const ServiceKey& s) { return b.key.service < s; });
  for (; it != applied_.bindings.end() && it->key.service == key.service; ++it)
    if (it->mac == key.mac) return it->key;
  for (const auto& r : retired().entries())
    if (r.binding.mac == key.mac && r.binding.key.service == key.service) return r.binding.key;
  return std::nullopt;
}

const BindingKey* Agent::owner(uint32_t id) const {
  auto it = owners_.find(id);
  return it == owners_.end() ? nullptr : &it->second;
}

void Agent::each_identified_connection(
    const std::function<void(uint32_t id, const ConntrackEntry&)>& each) {
  const MarkLayout& marks = reconciler_.marks();
  conntrack_.list(0, 0, [&](const ConntrackEntry& e) {
    const uint32_t id = marks.id_from_mark(e.mark);
    if (id != 0) each(id, e);
  });
}

size_t Agent::count_connections(const Binding& binding) {
  const MarkLayout& marks = reconciler_.marks();
  return conntrack_.count(marks.mark_for(binding.id), marks.mask());
}

std::vector<std::string> Agent::repair(bool with_table, bool with_host_entries) {
  auto differences = reconciler_.differences(applied_, with_table, with_host_entries);
  if (differences.empty()) return differences;
  std::string all;
  for (const auto& d : differences) all += (all.empty() ? "" : "; ") + d;
  // While a repair cannot succeed (a bridge is gone) the same difference
  // comes back every second: said once.
  if (all != last_difference_)
    spdlog::warn("the kernel differs from what hostlbd applied ({}); rebuilding", all);
  last_difference_ = all;
  reconciler_.apply(applied_, applied_, DatapathDiff{}, ApplyMode::kReplace);
  last_difference_.clear();
  ++repairs_;
  spdlog::info("repaired (repair {} since start)", repairs_);
  return differences;
}

void Agent::cleanup() {
  reconciler_.cleanup(applied_);
  applied_ = Datapath{};
  owners_.clear();
  PersistedState empty;
  empty.generation = persisted_ ? persisted_->generation : 0;
  persisted_ = std::move(empty);
  store_.save(*persisted_);
}

const State& Agent::current() const { return persisted_ ? persisted_->state : kEmptyState; }

}  // namespace hostlb
