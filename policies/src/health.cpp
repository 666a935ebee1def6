#include "hostlb/policies/health.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "hostlb/policies/state_document.h"

namespace hostlb {

std::string_view health_name(Health health) {
  switch (health) {
    case Health::kUnknown:
      return "unknown";
    case Health::kUp:
      return "up";
    case Health::kDown:
      return "down";
  }
  return "?";
}

std::optional<Health> parse_health(std::string_view text) {
  for (Health h : {Health::kUnknown, Health::kUp, Health::kDown})
    if (text == health_name(h)) return h;
  return std::nullopt;
}

void HealthBook::track(const std::vector<BindingKey>& checked, int64_t now_ms) {
  std::map<BindingKey, BindingHealth> next;
  for (const auto& key : checked) {
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      next.emplace(key, std::move(it->second));
    } else {
      BindingHealth fresh;
      fresh.since_ms = now_ms;
      next.emplace(key, fresh);
    }
  }
  entries_ = std::move(next);
}

std::optional<HealthTransition> HealthBook::record(const BindingKey& key, const ProbeResult& result,
                                                   const HealthCheck& check, int64_t now_ms) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  BindingHealth& h = it->second;
  ++h.probes;
  h.last = result;
  h.last_ms = now_ms;
  const Health from = h.state;
  if (result.ok) {
    h.failures = 0;
    ++h.successes;
    if (h.state == Health::kUnknown || (h.state == Health::kDown && h.successes >= check.rise))
      h.state = Health::kUp;
  } else {
    ++h.failed_probes;
    h.successes = 0;
    ++h.failures;
    if (h.state != Health::kDown && h.failures >= check.fall) h.state = Health::kDown;
  }
  if (h.state == from) return std::nullopt;
  h.since_ms = now_ms;
  ++h.transitions;
  return HealthTransition{key, from, h.state, result.detail};
}

std::optional<bool> HealthBook::serving(const BindingKey& key) const {
  const BindingHealth* h = find(key);
  if (!h || h->state == Health::kUnknown) return std::nullopt;
  return h->state == Health::kUp;
}

const BindingHealth* HealthBook::find(const BindingKey& key) const {
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : &it->second;
}

nlohmann::json HealthBook::to_json() const {
  nlohmann::json bindings = nlohmann::json::array();
  for (const auto& [key, h] : entries_) {
    if (h.state == Health::kUnknown) continue;
    bindings.push_back({{"service", key.service.str()},
                        {"backend", key.backend},
                        {"state", health_name(h.state)},
                        {"since_ms", h.since_ms}});
  }
  return {{"version", 1}, {"bindings", std::move(bindings)}};
}

HealthBook HealthBook::from_json(const nlohmann::json& value) {
  if (!value.is_object() || value.value("version", 0) != 1 || !value.contains("bindings") ||
      !value["bindings"].is_array())
    throw DocumentError("", "not a health record (version 1 with \"bindings\")");
  HealthBook book;
  for (const auto& entry : value["bindings"]) {
    if (!entry.is_object()) continue;
    const auto service = parse_service_key(entry.value("service", std::string()));
    const std::string backend = entry.value("backend", std::string());
    const auto state = parse_health(entry.value("state", std::string()));
    const auto since = entry.value("since_ms", nlohmann::json());
    if (!service || !is_valid_backend_name(backend) || !state || !since.is_number_integer())
      continue;
    BindingHealth h;
    h.state = *state;
    h.since_ms = since.get<int64_t>();
    book.entries_[BindingKey{*service, backend}] = h;
  }
  return book;
}

uint32_t probe_offset_ms(const BindingKey& key, uint32_t interval_ms) {
  if (interval_ms == 0) return 0;
  // FNV-1a: the same on every run and every machine (std::hash is not).
  uint64_t h = 1469598103934665603ull;
  for (const char c : key.str()) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  return static_cast<uint32_t>(h % interval_ms);
}

void settle_serving(Datapath& next, DatapathDiff& diff, bool all,
                    const std::function<bool(const Binding&, const Binding*)>& decide) {
  std::unordered_map<uint32_t, size_t> removed_by_id;
  for (size_t i = 0; i < diff.bindings_removed.size(); ++i)
    removed_by_id.emplace(diff.bindings_removed[i].id, i);
  auto in_next = [&](const BindingKey& key) -> Binding* {
    auto it = std::lower_bound(next.bindings.begin(), next.bindings.end(), key,
                               [](const Binding& b, const BindingKey& k) { return b.key < k; });
    return it != next.bindings.end() && it->key == key ? &*it : nullptr;
  };
  std::unordered_set<uint32_t> added_ids;
  for (auto& added : diff.bindings_added) {
    added_ids.insert(added.id);
    auto r = removed_by_id.find(added.id);
    const Binding* before = r == removed_by_id.end() ? nullptr : &diff.bindings_removed[r->second];
    added.serving = decide(added, before);
    if (Binding* b = in_next(added.key)) b->serving = added.serving;
  }
  if (all) {
    for (auto& b : next.bindings) {
      if (added_ids.count(b.id)) continue;
      const bool serving = decide(b, &b);
      if (serving == b.serving) continue;
      diff.bindings_removed.push_back(b);
      b.serving = serving;
      diff.bindings_added.push_back(b);
    }
  }
  // A binding rewritten only to be as it was: no change for the kernel.
  std::unordered_map<uint32_t, size_t> added_by_id;
  for (size_t i = 0; i < diff.bindings_added.size(); ++i)
    added_by_id.emplace(diff.bindings_added[i].id, i);
  std::unordered_set<uint32_t> same;
  for (const auto& removed : diff.bindings_removed) {
    auto a = added_by_id.find(removed.id);
    if (a != added_by_id.end() && diff.bindings_added[a->second] == removed)
      same.insert(removed.id);
  }
  if (same.empty()) return;
  std::erase_if(diff.bindings_removed, [&](const Binding& b) { return same.count(b.id) != 0; });
  std::erase_if(diff.bindings_added, [&](const Binding& b) { return same.count(b.id) != 0; });
}

}  // namespace hostlb
