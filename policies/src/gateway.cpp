#include "hostlb/policies/gateway.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <set>

#include "hostlb/policies/selection.h"

namespace hostlb {
namespace {

// FNV-1a: simple, stable, the same on every machine.
struct Fnv {
  uint64_t h = 0xcbf29ce484222325ULL;
  void bytes(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ULL;
    }
  }
  void u32(uint32_t v) {
    const uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                          static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
    bytes(b, 4);
  }
};

// Every row's MAC, in row order: computed once per table, so that a digest
// of the whole gateway costs its services, not its rows.
uint64_t hash_rows(const GatewayService& s) {
  Fnv f;
  for (auto o : s.owner) f.bytes(s.macs[o].bytes().data(), 6);
  f.u32(static_cast<uint32_t>(s.owner.size()));
  for (auto row : s.tracked) f.u32(row);
  f.u32(static_cast<uint32_t>(s.tracked.size()));
  return f.h;
}

}  // namespace

const GatewayService* GatewayDatapath::find(const ServiceKey& key) const {
  auto it =
      std::lower_bound(services.begin(), services.end(), key,
                       [](const GatewayService& s, const ServiceKey& k) { return s.key < k; });
  return it != services.end() && it->key == key ? &*it : nullptr;
}

size_t GatewayDatapath::row_count() const {
  size_t rows = 0;
  for (const auto& s : services) rows += s.owner.size();
  return rows;
}

ServiceIndexes indexes_of(const GatewayDatapath& datapath) {
  ServiceIndexes out;
  for (const auto& s : datapath.services) out[s.key] = s.index;
  return out;
}

namespace {

// Rows and tracked rows of a service whose backends are filled in.
void fill_rows(GatewayService& g) {
  // Those that own rows: active, and draining during their warm-up.
  std::vector<WeightedBackend> serving, universe;
  std::vector<uint16_t> serving_index, universe_index;
  for (size_t i = 0; i < g.backends.size(); ++i) {
    const bool owns = g.states[i] == BindingState::kActive ||
                      (g.states[i] == BindingState::kDraining && !g.drained[i]);
    const bool counts = owns || g.states[i] == BindingState::kHorizon;
    const WeightedBackend w{g.backends[i], g.weights[i]};
    if (owns) serving.push_back(w), serving_index.push_back(static_cast<uint16_t>(i));
    if (counts) universe.push_back(w), universe_index.push_back(static_cast<uint16_t>(i));
  }
  g.owner.clear();
  g.tracked.clear();
  for (uint32_t i : rendezvous_table(serving, g.rows)) g.owner.push_back(serving_index[i]);
  // Rendezvous is monotone: where the wider set's winner owns rows, it is
  // the owner; elsewhere (a horizon or warming backend wins) the flow is
  // one that a promotion or a drain's end would move.
  if (!g.owner.empty() && !universe.empty()) {
    const bool all_active =
        std::all_of(universe_index.begin(), universe_index.end(),
                    [&](uint16_t i) { return g.states[i] == BindingState::kActive; });
    if (!all_active) {
      const std::vector<uint32_t> wide = rendezvous_table(universe, g.rows);
      for (uint32_t row = 0; row < g.rows; ++row)
        if (g.states[universe_index[wide[row]]] != BindingState::kActive) g.tracked.push_back(row);
    }
  }
  g.rows_hash = hash_rows(g);
}

GatewayDatapath compile(const State& state, const ServiceIndexes& previous,
                        const GatewayDatapath* applied, const DrainedBindings& drained) {
  GatewayDatapath out;
  out.services.reserve(state.services.size());
  // A service keeps its index: from the applied table when there is one
  // (found there anyway), else from `previous`.
  auto index_of = [&](const ServiceKey& key) -> std::optional<uint32_t> {
    if (applied) {
      if (const GatewayService* s = applied->find(key)) return s->index;
      return std::nullopt;
    }
    if (auto it = previous.find(key); it != previous.end()) return it->second;
    return std::nullopt;
  };
  std::vector<bool> taken(kMaxGatewayServices + 2, false);
  for (const auto& s : state.services)
    if (auto index = index_of(s.key); index && *index < taken.size()) taken[*index] = true;
  uint32_t next_free = 1;
  for (const auto& service : state.services) {
    GatewayService g;
    g.key = service.key;
    g.rows = service.rows.value_or(kDefaultRows);
    if (auto index = index_of(service.key)) {
      g.index = *index;
    } else {
      while (next_free <= kMaxGatewayServices && taken[next_free]) ++next_free;
      if (next_free > kMaxGatewayServices)
        throw GatewayIndexExhausted("more than " + std::to_string(kMaxGatewayServices) +
                                    " services for one gateway");
      g.index = next_free;
      taken[next_free] = true;
    }
    std::vector<BackendRef> refs = service.backends;
    std::sort(refs.begin(), refs.end(),
              [](const BackendRef& a, const BackendRef& b) { return a.name < b.name; });
    for (const auto& ref : refs) {
      const Backend* backend = state.find_backend(ref.name);
      if (backend == nullptr) continue;  // validation guarantees it exists
      g.backends.push_back(ref.name);
      g.macs.push_back(backend->mac);
      g.weights.push_back(ref.weight);
      g.states.push_back(ref.state);
      g.drained.push_back(ref.state == BindingState::kDraining &&
                          drained.count({service.key, ref.name}) != 0);
    }
    const GatewayService* before = applied ? applied->find(service.key) : nullptr;
    if (before && before->rows == g.rows && before->backends == g.backends &&
        before->macs == g.macs && before->weights == g.weights && before->states == g.states &&
        before->drained == g.drained) {
      g.owner = before->owner;  // the same inputs fill the same table
      g.tracked = before->tracked;
      g.rows_hash = before->rows_hash;
    } else {
      fill_rows(g);
    }
    out.services.push_back(std::move(g));
  }
  std::sort(out.services.begin(), out.services.end(),
            [](const GatewayService& a, const GatewayService& b) { return a.key < b.key; });
  return out;
}

}  // namespace

GatewayDatapath compile_gateway(const State& state, const ServiceIndexes& previous,
                                const DrainedBindings& drained) {
  return compile(state, previous, nullptr, drained);
}

GatewayDatapath recompile_gateway(const State& state, const GatewayDatapath& applied,
                                  const DrainedBindings& drained) {
  return compile(state, {}, &applied, drained);
}

std::vector<uint32_t> tracked_marks(const std::vector<GatewayService>& services) {
  std::vector<uint32_t> out;
  for (const auto& s : services)
    for (uint32_t row : s.tracked) out.push_back(s.mark(row));
  return out;
}

std::vector<BindingName> draining_bindings(const State& state) {
  std::vector<BindingName> out;
  for (const auto& s : state.services)
    for (const auto& ref : s.backends)
      if (ref.state == BindingState::kDraining) out.emplace_back(s.key, ref.name);
  return out;
}

State without_tracking(const State& state) {
  State out = state;
  for (auto& s : out.services)
    std::erase_if(s.backends,
                  [](const BackendRef& ref) { return ref.state != BindingState::kActive; });
  return out;
}

std::optional<GatewayService> compile_gateway_service(const State& state, const ServiceKey& key,
                                                      const DrainedBindings& drained) {
  State one;
  one.backends = state.backends;
  for (const auto& s : state.services)
    if (s.key == key) one.services.push_back(s);
  if (one.services.empty()) return std::nullopt;
  return compile_gateway(one, {}, drained).services.front();
}

FlowChoice choose(const GatewayService& service, const IpAddress& client, uint16_t client_port) {
  FlowChoice out;
  out.row = flow_row({client, client_port, service.key.vip, service.key.port}, service.rows);
  if (!service.owner.empty()) {
    out.backend = service.backends[service.owner[out.row]];
    out.mac = service.macs[service.owner[out.row]];
    out.tracked = std::binary_search(service.tracked.begin(), service.tracked.end(), out.row);
  }
  return out;
}

GatewayDiff diff_gateway(const GatewayDatapath& before, const GatewayDatapath& after) {
  GatewayDiff diff;
  auto mac_of = [](const GatewayService& s, uint32_t row) -> std::optional<MacAddress> {
    if (s.owner.empty()) return std::nullopt;
    return s.macs[s.owner[row]];
  };
  auto b = before.services.begin();
  auto a = after.services.begin();
  while (b != before.services.end() || a != after.services.end()) {
    if (a == after.services.end() || (b != before.services.end() && b->key < a->key)) {
      diff.services_removed.push_back(*b++);
      continue;
    }
    if (b == before.services.end() || a->key < b->key) {
      diff.services_added.push_back(*a++);
      continue;
    }
    if (a->rows != b->rows || a->index != b->index) {
      diff.services_removed.push_back(*b);
      diff.services_added.push_back(*a);
    } else {
      if (a->macs != b->macs || a->owner != b->owner) {
        for (uint32_t row = 0; row < a->rows; ++row) {
          auto was = mac_of(*b, row), now = mac_of(*a, row);
          if (was != now) diff.rows.push_back({a->mark(row), was, now});
        }
      }
      if (a->tracked != b->tracked) {
        std::vector<uint32_t> added, removed;
        std::set_difference(a->tracked.begin(), a->tracked.end(), b->tracked.begin(),
                            b->tracked.end(), std::back_inserter(added));
        std::set_difference(b->tracked.begin(), b->tracked.end(), a->tracked.begin(),
                            a->tracked.end(), std::back_inserter(removed));
        for (auto row : added) diff.track_added.push_back(a->mark(row));
        for (auto row : removed) diff.track_removed.push_back(a->mark(row));
      }
    }
    ++a, ++b;
  }
  return diff;
}

RowAudit::RowAudit(const GatewayDatapath& applied) : applied_(applied) {
  seen_.reserve(applied.services.size());
  for (size_t i = 0; i < applied.services.size(); ++i) {
    by_index_[applied.services[i].index] = i;
    seen_.emplace_back(applied.services[i].owner.size(), false);
  }
}

const GatewayService* RowAudit::service_of(uint32_t mark) const {
  auto it = by_index_.find(mark >> 16);
  return it == by_index_.end() ? nullptr : &applied_.services[it->second];
}

void RowAudit::saw(uint32_t mark, const MacAddress& mac) {
  ++seen_count_;
  const GatewayService* s = service_of(mark);
  const uint32_t row = mark & 0xffff;
  if (s == nullptr || row >= s->owner.size()) {
    differ_.push_back({mark, mac, std::nullopt});  // not a row of any applied service
    return;
  }
  seen_[by_index_.at(s->index)][row] = true;
  const MacAddress& want = s->macs[s->owner[row]];
  if (mac != want) differ_.push_back({mark, mac, want});
}

std::vector<GatewayDiff::Row> RowAudit::finish() const {
  std::vector<GatewayDiff::Row> out = differ_;
  for (size_t i = 0; i < applied_.services.size(); ++i) {
    const GatewayService& s = applied_.services[i];
    for (uint32_t row = 0; row < s.owner.size(); ++row)
      if (!seen_[i][row]) out.push_back({s.mark(row), std::nullopt, s.macs[s.owner[row]]});
  }
  return out;
}

RowDifferences count_differences(const std::vector<GatewayDiff::Row>& rows) {
  RowDifferences out;
  for (const auto& r : rows) {
    if (r.before && r.after)
      ++out.repointed;
    else if (r.after)
      ++out.missing;
    else
      ++out.foreign;
  }
  return out;
}

std::string gateway_digest(const GatewayDatapath& datapath) {
  Fnv f;
  for (const auto& s : datapath.services) {
    const std::string key = s.key.str();
    f.u32(static_cast<uint32_t>(key.size()));
    f.bytes(key.data(), key.size());
    f.u32(s.index);
    f.u32(s.rows);
    f.u32(static_cast<uint32_t>(s.rows_hash >> 32));
    f.u32(static_cast<uint32_t>(s.rows_hash));
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(f.h));
  return out;
}

std::string render_gateway_prometheus(const GatewayFigures& f) {
  struct Metric {
    const char* name;
    const char* help;
    const char* type;
    double value;
  };
  const auto n = [](uint64_t v) { return static_cast<double>(v); };
  const Metric metrics[] = {
      {"tracking_enabled", "1 if this gateway tracks flows (JET), 0 with --no-tracking.", "gauge",
       f.tracking ? 1.0 : 0.0},
      {"rows", "Rows with an owner in the selection tables, all services.", "gauge", n(f.rows)},
      {"tracked_rows", "Rows whose flows are tracked (a horizon or warming backend wins them).",
       "gauge", n(f.tracked_rows)},
      {"tracked_row_ratio",
       "Tracked rows / rows: the share of flows this gateway is expected to track.", "gauge",
       f.tracked_row_fraction()},
      {"tracked_flows", "Flows in the tracking maps now.", "gauge", n(f.tracked_flows)},
      {"track_attempts_total", "Flows of tracked rows the tracking maps were asked to take.",
       "counter", n(f.track_attempts)},
      {"track_added_total", "Flows the tracking maps took.", "counter", n(f.track_added)},
      {"track_failed_total", "Flows a full tracking map could not take (they go on untracked).",
       "counter", n(f.track_failed())},
      {"rows_changed_last", "Rows that changed owner in the last change.", "gauge",
       n(f.rows_changed_last)},
      {"drains_warming", "Draining bindings whose rows are still tracked before they move.",
       "gauge", n(f.drains_warming)},
      {"drains_moved", "Draining bindings whose rows moved (their tracked flows stay).", "gauge",
       n(f.drains_moved)},
      {"repairs_total", "Times the table was built again after another process changed it.",
       "counter", n(f.repairs)},
  };
  std::string out;
  char value[32];
  for (const auto& m : metrics) {
    const std::string name = std::string("hostlb_gateway_") + m.name;
    std::snprintf(value, sizeof value, "%.17g", m.value);
    out += "# HELP " + name + " " + m.help + "\n# TYPE " + name + " " + m.type + "\n" + name + " " +
           value + "\n";
  }
  return out;
}

}  // namespace hostlb
