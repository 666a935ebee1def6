#include "fleet_follower.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace hostlb {

using nlohmann::json;

namespace {

constexpr size_t kErrorsShown = 20;  // bad keys listed in a report or status

json errors_json(const std::vector<FleetKeyError>& errors) {
  json out = json::array();
  for (size_t i = 0; i < errors.size() && i < kErrorsShown; ++i)
    out.push_back({{"key", errors[i].key}, {"reason", errors[i].reason}});
  return out;
}

}  // namespace

FleetFollower::FleetFollower(EventLoop& loop, EtcdClient& etcd, FleetFollowerOptions options,
                             FleetTarget target)
    : loop_(loop),
      etcd_(etcd),
      options_(std::move(options)),
      layout_(options_.prefix),
      target_(std::move(target)),
      view_(layout_, options_.document),
      retry_delay_(options_.retry_first),
      apply_timer_(loop, [this] { apply_keys(); }),
      retry_timer_(loop, [this] { retry(); }),
      report_timer_(loop, [this] { report(); }),
      lease_timer_(loop, [this] { keep_lease(); }),
      alive_(std::make_shared<bool>(true)) {}

FleetFollower::~FleetFollower() {
  *alive_ = false;
  etcd_.cancel_all();
}

void FleetFollower::start() {
  spdlog::info("following the fleet in etcd: prefix {}, endpoint {}, reporting as {} {}",
               layout_.prefix(), etcd_.endpoint(), options_.role, options_.name);
  read_all();
  keep_lease();
}

std::string FleetFollower::range_start() const {
  return options_.follow_health ? layout_.prefix() : layout_.backends();
}

std::string FleetFollower::range_end() const {
  return options_.follow_health ? etcd::prefix_end(layout_.prefix()) : layout_.desired_end();
}

void FleetFollower::read_all() {
  etcd_.cancel_watch();
  watching_ = false;
  reading_ = true;
  etcd_.read_range(range_start(), range_end(), 0,
                   [this, alive = alive_](EtcdResult<etcd::RangeResponse> result) {
                     if (*alive) on_read(std::move(result));
                   });
}

void FleetFollower::on_read(EtcdResult<etcd::RangeResponse> result) {
  reading_ = false;
  if (!result.ok()) {
    failed("reading the fleet", result.failure);
    return;
  }
  reached();
  keys_.clear();
  for (auto& kv : result.value->kvs) keys_.emplace(std::move(kv.key), std::move(kv.value));
  revision_ = result.value->revision;
  digest_ = fleet_digest(layout_, keys_);
  spdlog::info("read the fleet at revision {}: {} keys", revision_, keys_.size());
  dirty_ = true;
  read_whole_ = true;
  reports_dirty_ = true;
  apply_keys();
  watch_from(revision_ + 1);
}

void FleetFollower::watch_from(int64_t revision) {
  watching_ = true;
  etcd_.watch(
      {range_start(), range_end(), revision, true},
      [this, alive = alive_](const etcd::WatchMessage& m) {
        if (*alive) on_message(m);
      },
      [this, alive = alive_](const EtcdFailure& f) {
        if (*alive) on_watch_end(f);
      });
}

void FleetFollower::on_message(const etcd::WatchMessage& message) {
  if (message.canceled) {
    watching_ = false;
    etcd_.cancel_watch();
    if (message.compact_revision > 0) {
      // The changes since our revision are gone from etcd's history: only
      // a whole read can tell what the fleet is now.
      spdlog::info(
          "etcd compacted its history past revision {} (to {}): reading the whole fleet again",
          revision_, message.compact_revision);
      read_all();
      return;
    }
    failed("watching the fleet", {"the watch was canceled: " + (message.cancel_reason.empty()
                                                                    ? std::string("no reason given")
                                                                    : message.cancel_reason),
                                  false, 0});
    return;
  }
  if (message.created) reached();
  for (const auto& event : message.events) {
    const std::string& key = event.kv.key;
    // Events come in revision order. The range holds the desired keys
    // and, for a gateway, the machines' reports.
    revision_ = std::max(revision_, event.kv.mod_revision);
    const bool desired = layout_.is_desired(key);
    auto it = keys_.find(key);
    if (it != keys_.end()) {
      if (desired) digest_ ^= fleet_key_hash(it->first, it->second);
      if (event.deleted) keys_.erase(it);
    }
    if (!event.deleted) {
      keys_[key] = event.kv.value;
      if (desired) digest_ ^= fleet_key_hash(key, event.kv.value);
    }
    (desired ? dirty_ : reports_dirty_) = true;
    if (desired) changed_.insert(key);
  }
  // A progress notice: everything up to its revision was sent. (A
  // creation's header is etcd's newest revision, not what was sent.)
  if (message.events.empty() && !message.created) revision_ = std::max(revision_, message.revision);
  if (dirty_ || (reports_dirty_ && options_.follow_health)) apply_soon();
}

void FleetFollower::on_watch_end(const EtcdFailure& failure) {
  watching_ = false;
  failed("watching the fleet", failure);
}

void FleetFollower::apply_soon() {
  // At the end of this loop round: the events of one read are applied as
  // one change.
  if (!apply_timer_.armed()) apply_timer_.arm_in(std::chrono::milliseconds(0));
}

void FleetFollower::apply_keys() {
  const auto started = loop_.clock().monotonic();
  const bool desired_changed = dirty_;
  if (dirty_) {
    dirty_ = false;
    // A change of a few services reads only them; a whole read, or a
    // backend's change (services name backends), reads everything.
    const bool whole = read_whole_ || changed_.size() > kReadWholeAbove ||
                       std::any_of(changed_.begin(), changed_.end(), [&](const std::string& k) {
                         return k.starts_with(layout_.backends());
                       });
    if (whole) {
      view_.reset(keys_);
    } else {
      for (const auto& key : changed_) view_.update(keys_, key);
    }
    read_whole_ = false;
    changed_.clear();
    std::vector<FleetKeyError> errors = view_.errors();
    std::set<std::pair<std::string, std::string>> before;
    for (const auto& e : errors_) before.emplace(e.key, e.reason);
    for (const auto& e : errors)
      if (!before.contains({e.key, e.reason}))
        spdlog::warn("fleet key {} left out (revision {}): {}", e.key, revision_, e.reason);
    for (const auto& e : errors_) {
      const bool still = std::any_of(errors.begin(), errors.end(),
                                     [&](const FleetKeyError& n) { return n.key == e.key; });
      if (!still) spdlog::info("fleet key {} is valid again or gone", e.key);
    }
    errors_ = std::move(errors);
  }
  const State& state = view_.state();
  bool health_changed = false;
  if (options_.follow_health && (reports_dirty_ || desired_changed)) {
    reports_dirty_ = false;
    DrainedBindings unhealthy = fleet_unhealthy(layout_, state, keys_);
    for (const auto& b : unhealthy)
      if (!unhealthy_.count(b))
        spdlog::info(
            "fleet: {} of {} is down (its host says so, or its lease expired): out of "
            "the choice (revision {})",
            b.second, b.first.str(), revision_);
    for (const auto& b : unhealthy_)
      if (!unhealthy.count(b))
        spdlog::info("fleet: {} of {} is up again (revision {})", b.second, b.first.str(),
                     revision_);
    health_changed = unhealthy != unhealthy_;
    unhealthy_ = std::move(unhealthy);
  }
  if (!desired_changed && !health_changed) return;
  const auto read = loop_.clock().monotonic();
  try {
    target_.apply(state, unhealthy_);
    if (!apply_error_.empty()) spdlog::info("fleet revision {} applied", revision_);
    apply_error_.clear();
    applied_revision_ = revision_;
    applied_digest_ = digest_;
    applied_at_ = loop_.clock().unix_seconds();
    const auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    spdlog::debug(
        "applied fleet revision {}: {} backends, {} services (read {:.1f} ms, applied "
        "{:.1f} ms)",
        revision_, state.backends.size(), state.services.size(), ms(read - started),
        ms(loop_.clock().monotonic() - read));
  } catch (const std::exception& e) {
    apply_error_ = e.what();
    spdlog::error("fleet revision {} not applied: {}; keeping revision {}", revision_, e.what(),
                  applied_revision_);
  }
  report_applied();
}

void FleetFollower::failed(const std::string& what, const EtcdFailure& failure) {
  if (!outage_since_) {
    outage_since_ = loop_.clock().monotonic();
    outage_reason_ = failure.message;
    spdlog::warn(
        "etcd: {} failed: {}; serving what revision {} applied, retrying (logged once until "
        "etcd answers again)",
        what, failure.message, applied_revision_);
  } else {
    spdlog::debug("etcd: {} failed again: {}", what, failure.message);
  }
  if (!retry_timer_.armed()) retry_timer_.arm_in(retry_delay_);
  retry_delay_ = std::min(retry_delay_ * 2, options_.retry_max);
}

void FleetFollower::reached() {
  retry_delay_ = options_.retry_first;
  if (!outage_since_) return;
  const auto seconds =
      std::chrono::duration<double>(loop_.clock().monotonic() - *outage_since_).count();
  spdlog::info("etcd answers again at {} after {:.1f} s; catching up from revision {}",
               etcd_.endpoint(), seconds, revision_);
  outage_since_.reset();
  outage_reason_.clear();
  report_soon();
}

void FleetFollower::retry() {
  if (reading_ || watching_) return;
  if (revision_ == 0)
    read_all();
  else
    watch_from(revision_ + 1);  // the changes made meanwhile, from etcd's history
}

void FleetFollower::report_soon() {
  report_urgent_ = true;
  report_after(std::chrono::milliseconds(20));
}

void FleetFollower::report_applied() {
  // A busy fleet changes many times a second: each machine reports what it
  // applied at most once per kReportSpacing, not once per change (every
  // report is a write that every watcher of the prefix receives).
  const auto now = loop_.clock().monotonic();
  const auto earliest = last_report_ + kReportSpacing;
  report_after(std::max<std::chrono::milliseconds>(
      std::chrono::milliseconds(20), std::chrono::ceil<std::chrono::milliseconds>(earliest - now)));
}

void FleetFollower::report_after(std::chrono::milliseconds delay) {
  report_wanted_ = true;
  report_timer_.arm_no_later_than(loop_.clock().monotonic() + delay);
}

json FleetFollower::report_value() const {
  json out{{"name", options_.name},
           {"role", options_.role},
           {"revision", applied_revision_},
           {"digest", digest_text(applied_digest_)},
           {"applied_at", applied_at_},
           {"reported_at", loop_.clock().unix_seconds()},
           {"bad_keys", errors_.size()},
           {"errors", errors_json(errors_)},
           {"apply_error", apply_error_.empty() ? json(nullptr) : json(apply_error_)}};
  if (target_.figures) out["figures"] = target_.figures();
  return out;
}

void FleetFollower::report() {
  report_timer_.arm_in(options_.report_every);
  if (lease_ == 0 || reporting_) return;  // after the lease, or after the report in flight
  reporting_ = true;
  report_wanted_ = false;
  report_urgent_ = false;
  last_report_ = loop_.clock().monotonic();
  etcd::TxnRequest put;
  put.puts.push_back(
      {layout_.status_key(options_.role, options_.name), report_value().dump(), 0, 0, lease_});
  const bool with_member = !member_written_;
  if (with_member)
    put.puts.push_back({layout_.watcher_key(options_.role, options_.name),
                        json{{"name", options_.name}, {"role", options_.role}}.dump(), 0, 0, 0});
  etcd_.txn(put, [this, alive = alive_, with_member](EtcdResult<etcd::TxnResponse> result) {
    if (!*alive) return;
    reporting_ = false;
    if (result.ok() && with_member) member_written_ = true;
    if (!result.ok()) {
      spdlog::debug("etcd: reporting failed: {}", result.failure.message);
      if (result.failure.code == etcd::kNotFound) lease_ = 0;  // expired meanwhile
      report_wanted_ = true;
      return;  // the lease's next beat grants or reports again
    }
    if (report_wanted_) report_urgent_ ? report_soon() : report_applied();
  });
}

void FleetFollower::keep_lease() {
  lease_timer_.arm_in(
      std::max<std::chrono::milliseconds>(options_.lease_ttl / 3, std::chrono::milliseconds(500)));
  auto grant = [this] {
    etcd_.lease_grant(options_.lease_ttl.count(),
                      [this, alive = alive_](EtcdResult<etcd::LeaseGrant> result) {
                        if (!*alive) return;
                        if (!result.ok()) {
                          spdlog::debug("etcd: lease grant failed: {}", result.failure.message);
                          return;
                        }
                        lease_ = result.value->id;
                        report_soon();
                      });
  };
  if (lease_ == 0) {
    grant();
    return;
  }
  etcd_.lease_keepalive(lease_, [this, alive = alive_, grant](EtcdResult<int64_t> result) {
    if (!*alive) return;
    if (!result.ok()) {
      spdlog::debug("etcd: lease keep-alive failed: {}", result.failure.message);
      return;
    }
    if (*result.value == 0) {
      // Expired (etcd was away longer than its TTL): the report went
      // with it; a new lease brings it back.
      lease_ = 0;
      grant();
    } else if (report_wanted_) {
      report_urgent_ ? report_soon() : report_applied();
    }
  });
}

json FleetFollower::status() const {
  json out{{"prefix", layout_.prefix()},
           {"endpoint", etcd_.endpoint()},
           {"connected", !outage_since_.has_value()},
           {"revision", revision_},
           {"applied_revision", applied_revision_},
           {"digest", digest_text(applied_digest_)},
           {"keys", keys_.size()},
           {"bad_keys", errors_.size()},
           {"errors", errors_json(errors_)},
           {"apply_error", apply_error_.empty() ? json(nullptr) : json(apply_error_)},
           {"reporting", lease_ != 0}};
  if (outage_since_) {
    out["outage_seconds"] =
        std::chrono::duration_cast<std::chrono::seconds>(loop_.clock().monotonic() - *outage_since_)
            .count();
    out["outage_reason"] = outage_reason_;
  }
  return out;
}

}  // namespace hostlb
