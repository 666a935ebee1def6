#include "agent.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

namespace hostlb {

namespace {
const State kEmptyState;
}

Agent::Agent(Reconciler& reconciler, StateStore& store, ConntrackTable& conntrack)
    : reconciler_(reconciler), store_(store), conntrack_(conntrack) {}

size_t Agent::flush_removed(const DatapathDiff& diff) {
  const MarkLayout& marks = reconciler_.marks();
  size_t flushed = 0;
  for (const auto& b : bindings_gone(diff)) {
    try {
      const size_t n = conntrack_.flush(marks.mark_for(b.id), marks.mask());
      flushed += n;
      if (n > 0) spdlog::info("flushed {} connections of {}", n, b.key.str());
    } catch (const std::exception& e) {
      spdlog::error("{} is gone but its connections could not be flushed: {}", b.key.str(),
                    e.what());
    }
  }
  return flushed;
}

void Agent::load_persisted() {
  auto loaded = store_.load();
  if (!loaded) return;
  persisted_ = std::move(loaded->snapshot);
  // Replay the edits journaled since the snapshot, with the identities they
  // gave their bindings.
  for (size_t i = 0; i < loaded->journal.size(); ++i) {
    const auto& record = loaded->journal[i];
    try {
      for (const auto& one : record.at("edits")) {
        const Edit e = edit_from_json(one);
        check_edit(persisted_->state, e);
        apply_edit(persisted_->state, e);
      }
      for (const auto& id : record.at("ids")) {
        auto key = parse_service_key(id.at("service").get<std::string>());
        if (!key) throw DocumentError("ids", "bad service key");
        persisted_->ids[{*key, id.at("backend").get<std::string>()}] = id.at("id").get<uint32_t>();
      }
    } catch (const std::exception& e) {
      throw StoreError("journal record " + std::to_string(i + 1) + " of " + store_.directory() +
                       " does not apply: " + e.what());
    }
  }
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
  const DatapathDiff diff = diff_datapath(applied_, next);
  ApplyReport report = reconciler_.apply(next, applied_, diff, mode);
  applied_ = std::move(next);
  report.connections_flushed = flush_removed(diff);
  if (!persisted_) persisted_ = PersistedState{};
  const bool same_state = persisted_->state == desired;
  if (same_state && !report.kernel_changed() && store_.journal_length() == 0) return report;
  // While running, a document that differs in a few places is journaled as
  // the edits between the two states; at start-up a snapshot is written.
  const std::vector<Edit> edits = mode == ApplyMode::kIncremental
                                      ? edits_between(persisted_->state, desired)
                                      : std::vector<Edit>{};
  persisted_->state = desired;
  persist(edits, diff, /*snapshot=*/mode == ApplyMode::kReplace);
  return report;
}

void Agent::persist(const std::vector<Edit>& edits, const DatapathDiff& diff, bool snapshot) {
  for (const auto& b : diff.bindings_removed) persisted_->ids.erase(b.key);
  for (const auto& b : diff.bindings_added) persisted_->ids[b.key] = b.id;
  if (snapshot || store_.journal_length() + edits.size() >= kJournalLimit) {
    store_.save(*persisted_);
    return;
  }
  if (edits.empty()) return;
  // One record per change, so that a change is replayed whole or not at all.
  nlohmann::json record = {{"edits", nlohmann::json::array()}, {"ids", nlohmann::json::array()}};
  for (const auto& e : edits) record["edits"].push_back(edit_to_json(e));
  for (const auto& b : diff.bindings_added)
    record["ids"].push_back(
        {{"service", b.key.service.str()}, {"backend", b.key.backend}, {"id", b.id}});
  store_.append(record);
}

ApplyReport Agent::edit(const Edit& e) {
  if (!persisted_) persisted_ = PersistedState{};
  check_edit(persisted_->state, e);
  DatapathChange change = change_datapath(persisted_->state, e, applied_, reconciler_.marks());
  ApplyReport report =
      reconciler_.apply(change.next, applied_, change.diff, ApplyMode::kIncremental);
  apply_edit(persisted_->state, e);
  applied_ = std::move(change.next);
  report.connections_flushed = flush_removed(change.diff);
  persist({e}, change.diff, /*snapshot=*/false);
  return report;
}

size_t Agent::flush(const std::optional<ServiceKey>& service,
                    const std::optional<std::string>& backend) {
  const MarkLayout& marks = reconciler_.marks();
  size_t flushed = 0;
  for (const Binding* b : select_bindings(applied_, service, backend))
    flushed += conntrack_.flush(marks.mark_for(b->id), marks.mask());
  spdlog::info("flush{}{}: {} connections", service ? " " + service->str() : "",
               backend ? " backend " + *backend : "", flushed);
  return flushed;
}

size_t Agent::connections(const std::optional<ServiceKey>& service,
                          const std::optional<std::string>& backend,
                          const std::function<void(const Binding&, const ConntrackEntry&)>& each) {
  const MarkLayout& marks = reconciler_.marks();
  if (service || backend) {
    // The kernel filters by each selected binding's mark.
    size_t total = 0;
    for (const Binding* b : select_bindings(applied_, service, backend))
      total += conntrack_.list(marks.mark_for(b->id), marks.mask(),
                               [&](const ConntrackEntry& e) { each(*b, e); });
    return total;
  }
  // One dump of the whole table, each entry matched to its binding by the
  // identity in its mark: one pass however many bindings there are.
  std::unordered_map<uint32_t, const Binding*> by_id;
  by_id.reserve(applied_.bindings.size());
  for (const auto& b : applied_.bindings) by_id.emplace(b.id, &b);
  size_t total = 0;
  conntrack_.list(0, 0, [&](const ConntrackEntry& e) {
    auto it = by_id.find(marks.id_from_mark(e.mark));
    if (it == by_id.end()) return;
    ++total;
    each(*it->second, e);
  });
  return total;
}

void Agent::cleanup() {
  reconciler_.cleanup(applied_);
  applied_ = Datapath{};
  persisted_ = PersistedState{{}, {}, persisted_ ? persisted_->generation : 0};
  store_.save(*persisted_);
}

const State& Agent::current() const { return persisted_ ? persisted_->state : kEmptyState; }

}  // namespace hostlb
