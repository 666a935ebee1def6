#include "hostlb/policies/chaining.h"

#include <algorithm>
#include <set>

#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

// Whether `service` has a backend on `host`.
bool served_here(const State& state, const Service& service, const std::string& host) {
  return std::any_of(service.backends.begin(), service.backends.end(), [&](const BackendRef& r) {
    const Backend* b = state.find_backend(r.name);
    return b && b->is_on(host);
  });
}

std::vector<MacAddress> macs_of(const State& state, const Service& service) {
  std::vector<MacAddress> out;
  for (const auto& r : service.backends)
    if (const Backend* b = state.find_backend(r.name)) out.push_back(b->mac);
  return out;
}

// The table the gateways hold once every drain's warm-up is over.
GatewayService settled_table(const State& state, const Service& service) {
  DrainedBindings drained;
  for (const auto& ref : service.backends)
    if (ref.state == BindingState::kDraining) drained.emplace(service.key, ref.name);
  return *compile_gateway_service(state, service.key, drained);
}

}  // namespace

void ChainPlanner::forget_rows(Followed& f) {
  for (uint32_t key : f.chained_rows) tables_.previous.erase(key);
  f.chained_rows.clear();
}

void ChainPlanner::follow(const State& state, TimePoint now) {
  std::set<ServiceKey> seen;
  for (const auto& service : state.services) {
    if (!served_here(state, service, host_)) continue;
    seen.insert(service.key);
    auto macs = macs_of(state, service);
    auto it = followed_.find(service.key);
    if (it != followed_.end() && it->second.service == service && it->second.macs == macs)
      continue;  // the same inputs fill the same table
    GatewayService table = settled_table(state, service);
    if (it == followed_.end()) {
      // A service new here has no previous version to chain to.
      uint32_t index = 1;
      while (by_index_.count(index)) ++index;
      if (index > kMaxGatewayServices) continue;  // more than a host could serve
      by_index_[index] = service.key;
      tables_.services[service.key] = {index, table.rows};
      followed_[service.key] = {service, std::move(macs), std::move(table), {}, {}};
      continue;
    }
    Followed& f = it->second;
    if (f.table.rows == table.rows && f.table.owner.size() == table.owner.size() &&
        std::equal(f.table.owner.begin(), f.table.owner.end(), table.owner.begin(),
                   [&](uint16_t a, uint16_t b) { return f.table.macs[a] == table.macs[b]; })) {
      // Another kind of change (a health check, a weight that moves nothing):
      // the rows and the window of the last change stay.
      f.service = service;
      f.macs = std::move(macs);
      f.table = std::move(table);
      continue;
    }
    const uint32_t index = tables_.services[service.key].index;
    forget_rows(f);
    if (f.table.rows == table.rows && !f.table.owner.empty() && !table.owner.empty()) {
      auto local = [&](const GatewayService& t, uint16_t owner) {
        const Backend* b = state.find_backend(t.backends[owner]);
        return b && b->is_on(host_);
      };
      // The previous table's backends may be gone from the state: their
      // MACs come with the table.
      for (uint32_t row = 0; row < table.rows; ++row) {
        const uint16_t was = f.table.owner[row], now_owner = table.owner[row];
        if (f.table.macs[was] == table.macs[now_owner]) continue;
        if (!local(table, now_owner)) continue;
        const Backend* before = state.find_backend(f.table.backends[was]);
        if (before && before->is_on(host_)) continue;  // its connections are here
        const uint32_t key = index << 16 | row;
        tables_.previous[key] = f.table.macs[was];
        f.chained_rows.push_back(key);
      }
    }
    tables_.services[service.key].rows = table.rows;
    f.service = service;
    f.macs = std::move(macs);
    f.table = std::move(table);
    f.until = now + window_;
  }
  for (auto it = followed_.begin(); it != followed_.end();) {
    if (seen.count(it->first)) {
      ++it;
      continue;
    }
    forget_rows(it->second);
    by_index_.erase(tables_.services[it->first].index);
    tables_.services.erase(it->first);
    it = followed_.erase(it);
  }
}

bool ChainPlanner::expire(TimePoint now) {
  bool any = false;
  for (auto& [key, f] : followed_) {
    if (f.chained_rows.empty() || f.until > now) continue;
    forget_rows(f);
    any = true;
  }
  return any;
}

nlohmann::json ChainPlanner::to_json(TimePoint now, int64_t now_unix_ms) const {
  nlohmann::json services = nlohmann::json::array();
  for (const auto& [key, f] : followed_) {
    if (f.chained_rows.empty() || f.until <= now) continue;
    nlohmann::json rows = nlohmann::json::array();
    for (uint32_t row_key : f.chained_rows)
      rows.push_back({row_key & 0xffff, tables_.previous.at(row_key).str()});
    services.push_back(
        {{"service", key.str()},
         {"until_ms",
          now_unix_ms +
              std::chrono::duration_cast<std::chrono::milliseconds>(f.until - now).count()},
         {"rows", std::move(rows)}});
  }
  return {{"version", 1}, {"services", std::move(services)}};
}

void ChainPlanner::restore(const nlohmann::json& saved, TimePoint now, int64_t now_unix_ms) {
  struct Restored {
    ServiceKey key;
    TimePoint until;
    std::vector<std::pair<uint32_t, MacAddress>> rows;
  };
  std::vector<Restored> all;
  // Read whole first: a bad record restores nothing.
  if (!saved.is_object() || saved.value("version", 0) != 1 || !saved.contains("services") ||
      !saved["services"].is_array())
    throw DocumentError("", "not a chaining record of version 1");
  const auto& services = saved["services"];
  for (size_t i = 0; i < services.size(); ++i) {
    const std::string path = "services[" + std::to_string(i) + "]";
    const auto& s = services[i];
    if (!s.is_object() || !s.contains("until_ms") || !s["until_ms"].is_number_integer() ||
        !s.contains("rows") || !s["rows"].is_array())
      throw DocumentError(path, "needs service, until_ms and rows");
    Restored r{parse_service_key_param(s.value("service", nlohmann::json()), path + ".service"),
               now + std::chrono::milliseconds(s["until_ms"].get<int64_t>() - now_unix_ms),
               {}};
    for (const auto& row : s["rows"]) {
      std::optional<MacAddress> mac;
      if (row.is_array() && row.size() == 2 && row[0].is_number_unsigned() && row[1].is_string())
        mac = MacAddress::parse(row[1].get<std::string>());
      if (!mac || row[0].get<uint64_t>() >= kMaxRows)
        throw DocumentError(path + ".rows", "each row is [row, \"MAC\"]");
      r.rows.emplace_back(row[0].get<uint32_t>(), *mac);
    }
    all.push_back(std::move(r));
  }
  for (auto& r : all) {
    auto it = followed_.find(r.key);
    if (it == followed_.end() || r.until <= now) continue;
    Followed& f = it->second;
    if (!f.chained_rows.empty()) continue;  // a change of this run already says
    const uint32_t index = tables_.services.at(r.key).index;
    for (const auto& [row, mac] : r.rows) {
      if (row >= f.table.rows) continue;
      tables_.previous[index << 16 | row] = mac;
      f.chained_rows.push_back(index << 16 | row);
    }
    f.until = r.until;
  }
}

const ServiceKey* ChainPlanner::service_of(uint32_t index) const {
  auto it = by_index_.find(index);
  return it == by_index_.end() ? nullptr : &it->second;
}

}  // namespace hostlb
