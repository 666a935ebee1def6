#include "hostlb/policies/retirement.h"

#include <algorithm>

namespace hostlb {
namespace {

bool by_key(const RetiredBinding& a, const RetiredBinding& b) {
  return a.binding.key < b.binding.key;
}

// Whether `active` has a binding for `service` reached through `mac`.
// Bindings are sorted by key, service first: a binary search, not a scan.
bool served(const Datapath& active, const MacAddress& mac, const ServiceKey& service) {
  auto first =
      std::lower_bound(active.bindings.begin(), active.bindings.end(), service,
                       [](const Binding& b, const ServiceKey& s) { return b.key.service < s; });
  for (auto it = first; it != active.bindings.end() && it->key.service == service; ++it)
    if (it->mac == mac) return true;
  return false;
}

bool has_key(const Datapath& active, const BindingKey& key) {
  auto it = std::lower_bound(active.bindings.begin(), active.bindings.end(), key,
                             [](const Binding& b, const BindingKey& k) { return b.key < k; });
  return it != active.bindings.end() && it->key == key;
}

}  // namespace

Retirements::Retirements(const std::vector<RetiredBinding>& entries) {
  for (const auto& e : entries) insert(e);
}

void Retirements::insert(const RetiredBinding& entry) {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), entry, by_key);
  if (it != entries_.end() && it->binding.key == entry.binding.key)
    *it = entry;
  else
    entries_.insert(it, entry);
}

BindingIds Retirements::reserved_ids() const {
  BindingIds ids;
  for (const auto& e : entries_)
    if (e.draining()) ids.emplace(e.binding.key, e.binding.id);
  return ids;
}

std::vector<DeliveryKey> Retirements::refused_for(const Datapath& active) const {
  std::vector<DeliveryKey> keys;
  for (const auto& e : entries_) {
    // A key that a binding serves again (under another backend name with
    // the same MAC) is not refused: that binding takes the connections.
    if (served(active, e.binding.mac, e.binding.key.service)) continue;
    keys.push_back({e.binding.mac, e.binding.key.service});
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

Retirements::Change Retirements::record(const std::vector<Binding>& gone, Datapath& next,
                                        DatapathDiff& diff, const Datapath& before,
                                        const RetirePolicy& policy) {
  Change change;
  for (const auto& e : entries_)
    if (has_key(next, e.binding.key)) change.restored.push_back(e.binding.key);
  std::erase_if(entries_, [&](const RetiredBinding& e) { return has_key(next, e.binding.key); });
  for (Binding b : gone) {
    // Whether it served when it went no longer matters: its key is refused.
    b.serving = true;
    RetiredBinding entry{b, 0, policy.now + policy.refuse_seconds};
    if (policy.drain_seconds > 0) {
      entry.drain_until = policy.now + policy.drain_seconds;
      entry.refuse_until = entry.drain_until + policy.refuse_seconds;
    } else {
      change.flush_now.push_back(b);
      if (policy.refuse_seconds == 0) continue;
    }
    insert(entry);
    change.retired.push_back(entry);
  }
  if (!entries_.empty() || !before.refused.empty())
    set_refused(next, refused_for(next), before, diff);
  return change;
}

Retirements::Expiry Retirements::expire(int64_t now, Datapath& next, DatapathDiff& diff,
                                        const Datapath& before) {
  Expiry expiry;
  for (auto& e : entries_) {
    if (e.draining() && e.drain_until <= now) {
      expiry.drained.push_back(e.binding);
      e.drain_until = 0;
    }
  }
  expiry.refusals_ended = std::erase_if(
      entries_, [&](const RetiredBinding& e) { return !e.draining() && e.refuse_until <= now; });
  if (!expiry.empty()) set_refused(next, refused_for(next), before, diff);
  return expiry;
}

std::optional<int64_t> Retirements::next_deadline() const {
  std::optional<int64_t> earliest;
  for (const auto& e : entries_) {
    const int64_t due = e.draining() ? e.drain_until : e.refuse_until;
    if (!earliest || due < *earliest) earliest = due;
  }
  return earliest;
}

void Retirements::replay(const Change& change) {
  for (const auto& key : change.restored)
    std::erase_if(entries_, [&](const RetiredBinding& e) { return e.binding.key == key; });
  for (const auto& e : change.retired) insert(e);
}

}  // namespace hostlb
