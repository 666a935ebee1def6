#include "gateway_agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>

#include "hostlb/policies/journal.h"
#include "hostlb/policies/state_diff.h"

namespace hostlb {
namespace {
const State kEmpty;
}

GatewayAgent::GatewayAgent(GatewayRuleset& kernel, StateStore& store, GatewayConfig config,
                           const Clock& clock, std::chrono::milliseconds warmup)
    : kernel_(kernel), store_(store), config_(std::move(config)), clock_(clock), warmup_(warmup) {}

const State& GatewayAgent::current() const { return persisted_ ? persisted_->state : kEmpty; }

void GatewayAgent::load_persisted() {
  // The changes journaled since the snapshot come with the indexes they
  // gave the services they added.
  persisted_ = store_.load_replayed();
  if (!persisted_) return;
  applied_ =
      compile_gateway(config_.tracking ? persisted_->state : without_tracking(persisted_->state),
                      persisted_->gateway_indexes);
  spdlog::info("loaded persisted gateway state from {}: {} services", store_.state_path(),
               applied_.services.size());
}

GatewayReport GatewayAgent::start(const std::optional<State>& desired) {
  return apply(desired ? *desired : current(), /*at_start=*/true);
}

GatewayReport GatewayAgent::change(const State& desired) { return apply(desired, false); }

GatewayReport GatewayAgent::edit(const Edit& e) { return apply(edited(current(), e), false); }

GatewayReport GatewayAgent::apply(const State& requested, bool at_start) {
  GatewayReport report;
  // Without tracking the tables are compiled from a view that has no
  // horizon or draining bindings; the request itself is what is persisted.
  std::optional<State> view;
  if (!config_.tracking) view = without_tracking(requested);
  if (!unhealthy_.empty()) {
    if (!view) view = requested;
    for (auto& service : view->services)
      for (auto& ref : service.backends)
        if (unhealthy_.count({service.key, ref.name})) ref.state = BindingState::kDraining;
  }
  const State& desired = view ? *view : requested;
  // Drains this change starts begin their warm-up; bindings no longer
  // draining forget theirs.
  std::map<BindingName, Clock::TimePoint> warming;
  DrainedBindings drained;
  for (auto& binding : draining_bindings(desired)) {
    const auto it = warming_.find(binding);
    if (drained_.count(binding) || unhealthy_.count(binding) ||
        (it == warming_.end() && warmup_.count() == 0))
      drained.insert(std::move(binding));
    else if (it != warming_.end())
      warming.emplace(std::move(binding), it->second);
    else
      warming.emplace(std::move(binding), clock_.monotonic() + warmup_);
  }
  GatewayDatapath next = recompile_gateway(desired, applied_, drained);
  bool rebuild = false;
  if (at_start) {
    // The kernel holds what was persisted only if its stamp says so;
    // anything else (no table, another document, a half-built table) is
    // built anew.
    const auto stamp = kernel_.stamp();
    rebuild = !persisted_ || !stamp || *stamp != gateway_stamp(applied_);
    if (rebuild)
      spdlog::info("building the gateway table ({})",
                   !stamp ? "none in the kernel" : "the kernel's is not the persisted one");
    else
      spdlog::info("the kernel holds the persisted gateway table (stamp {:08x}); kept", *stamp);
  }
  // The services this change adds and removes (a table's index is given
  // when its service is added, and kept).
  std::vector<std::pair<ServiceKey, uint32_t>> added;
  std::vector<ServiceKey> removed;
  if (rebuild) {
    kernel_.replace(next, config_);
    report.rebuilt = true;
    report.rows_written = next.row_count();
  } else {
    const GatewayDiff diff = diff_gateway(applied_, next);
    for (const auto& s : diff.services_added) added.emplace_back(s.key, s.index);
    for (const auto& s : diff.services_removed) removed.push_back(s.key);
    // At start, even an empty diff is applied: the kernel takes this run's
    // settings (interfaces, MAC, timeouts) with the table it kept.
    if (!diff.empty() || at_start) kernel_.apply(diff, config_, gateway_stamp(next));
    report.rows_written = diff.rows.size();
    report.services_added = diff.services_added.size();
    report.services_removed = diff.services_removed.size();
  }
  last_rows_changed_ = report.rows_written;
  warming_ = std::move(warming);
  drained_ = std::move(drained);
  if (!persisted_) persisted_ = PersistedState{};
  // While running, a change is journaled as the edits between the two
  // states and the indexes of the services it added (a line, whatever the
  // fleet's size); at start-up, or when the journal is long, a snapshot is
  // written.
  JournalRecord record;
  if (!at_start) {
    record.edits = edits_between(persisted_->state, requested);
    for (const auto& [key, index] : added) {
      const auto it = persisted_->gateway_indexes.find(key);
      if (it == persisted_->gateway_indexes.end() || it->second != index)
        record.gateway_indexes[key] = index;
    }
  }
  persisted_->state = requested;
  if (at_start || rebuild) {
    persisted_->gateway_indexes = indexes_of(next);
  } else {
    for (const auto& key : removed) persisted_->gateway_indexes.erase(key);
    for (const auto& [key, index] : added) persisted_->gateway_indexes[key] = index;
  }
  applied_ = std::move(next);
  ++applied_generation_;
  if (at_start || store_.journal_length() + record.edits.size() >= kJournalLimit)
    store_.save(*persisted_);
  else if (!record.empty())
    store_.append(record);
  return report;
}

GatewayFigures GatewayAgent::figures() {
  GatewayFigures f;
  f.tracking = config_.tracking;
  f.rows = applied_.row_count();
  for (const auto& s : applied_.services) f.tracked_rows += s.tracked.size();
  const TrackStats track = kernel_.track_stats();
  f.tracked_flows = track.entries;
  f.track_attempts = track.attempts;
  f.track_added = track.added;
  f.rows_changed_last = last_rows_changed_;
  f.drains_warming = warming_.size();
  f.drains_moved = drained_.size();
  f.repairs = repairs_;
  return f;
}

size_t GatewayAgent::settle_drains() {
  const auto now = clock_.monotonic();
  size_t due = 0;
  for (const auto& [binding, end] : warming_)
    if (end <= now) ++due;
  if (due == 0) return 0;
  // apply() keeps the warm-ups of what stays draining: those due become
  // drained first.
  for (auto it = warming_.begin(); it != warming_.end();) {
    if (it->second <= now) {
      spdlog::info("the warm-up of draining {} on {} ended: its rows move to the others",
                   it->first.second, it->first.first.str());
      drained_.insert(it->first);
      it = warming_.erase(it);
    } else {
      ++it;
    }
  }
  const State state = current();
  apply(state, false);
  return due;
}

std::vector<std::string> GatewayAgent::repair() {
  const auto stamp = kernel_.stamp();
  if (stamp && *stamp == gateway_stamp(applied_)) {
    start_audit();
    return {};
  }
  const std::string what = !stamp ? "the gateway table is missing"
                                  : "the gateway table holds something else (its stamp changed)";
  spdlog::warn("{}; building it again", what);
  kernel_.replace(applied_, config_);
  ++repairs_;
  spdlog::info("gateway table repaired (repair {} since start)", repairs_);
  return {what};
}

void GatewayAgent::start_audit() {
  scan_.reset();  // a scan under way is stale: the table changed again
  audit_.reset();
  const size_t rows = applied_.row_count();
  if (rows > kernel_.max_audited_rows()) {
    if (!said_too_large_)
      spdlog::info(
          "the gateway's {} rows are more than hostlbd audits after another process's commit "
          "({}: the kernel dumps a set in time that grows with the square of its size); only "
          "the table's stamp is checked",
          rows, kernel_.max_audited_rows());
    said_too_large_ = true;
    return;
  }
  audit_ = std::make_unique<RowAudit>(applied_);
  audit_generation_ = applied_generation_;
  scan_ = kernel_.scan_rows();
}

bool GatewayAgent::audit_step(size_t parts) {
  if (!scan_) return false;
  if (audit_generation_ != applied_generation_) {
    start_audit();  // we changed the table meanwhile: compare with what holds now
    return true;
  }
  try {
    auto saw = [&](uint32_t mark, const MacAddress& mac) { audit_->saw(mark, mac); };
    for (size_t i = 0; i < parts; ++i)
      if (!scan_->next(saw)) return finish_audit();
    return true;
  } catch (...) {
    scan_.reset();
    audit_.reset();
    throw;
  }
}

bool GatewayAgent::finish_audit() {
  const bool interrupted = scan_->interrupted();
  scan_.reset();
  if (interrupted) {
    start_audit();  // the map changed while it was read: not one picture
    return true;
  }
  // A dump can skip or repeat elements while the kernel resizes the map
  // (after a large load): each difference is read again by key before it
  // counts.
  std::vector<GatewayDiff::Row> rows;
  for (GatewayDiff::Row r : audit_->finish()) {
    r.before = kernel_.row(r.mark);
    if (r.before != r.after) rows.push_back(r);
  }
  const size_t seen = audit_->rows_seen();
  audit_.reset();
  // The track set (which rows' flows are tracked) is small: read whole.
  const std::vector<uint32_t> want = tracked_marks(applied_.services);
  const std::vector<uint32_t> have = kernel_.tracked_rows();
  GatewayDiff diff;
  diff.rows = rows;
  std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                      std::back_inserter(diff.track_added));
  std::set_difference(have.begin(), have.end(), want.begin(), want.end(),
                      std::back_inserter(diff.track_removed));
  if (diff.rows.empty() && diff.track_added.empty() && diff.track_removed.empty()) {
    spdlog::debug("gateway rows audited: {} rows and {} tracked rows, all as applied", seen,
                  want.size());
    return false;
  }
  if (!rows.empty()) {
    const RowDifferences differ = count_differences(rows);
    spdlog::warn(
        "{} of the gateway's rows differ from what was applied ({} re-pointed, {} missing, {} "
        "not hostlbd's); writing them back",
        rows.size(), differ.repointed, differ.missing, differ.foreign);
  }
  if (!diff.track_added.empty() || !diff.track_removed.empty())
    spdlog::warn(
        "the gateway's set of tracked rows differs from what was applied ({} missing, {} not "
        "tracked rows); writing it back",
        diff.track_added.size(), diff.track_removed.size());
  kernel_.apply(diff, config_, gateway_stamp(applied_));
  ++repairs_;
  spdlog::info("gateway rows repaired (repair {} since start)", repairs_);
  return false;
}

void GatewayAgent::cleanup() { kernel_.remove(); }

}  // namespace hostlb
