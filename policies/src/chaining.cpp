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

void ChainPlanner::publish(Followed& f, uint32_t index) {
  forget_rows(f);
  for (const auto& [row, m] : f.moved) {
    if (!m.chains) continue;
    tables_.previous[index << 16 | row] = m.mac;
    f.chained_rows.push_back(index << 16 | row);
  }
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
    if (f.table.rows == table.rows && !f.table.owner.empty() && !table.owner.empty()) {
      // The previous table's backends may be gone from the state: their
      // MACs come with the table.
      for (uint32_t row = 0; row < table.rows; ++row) {
        const uint16_t was = f.table.owner[row];
        if (f.table.macs[was] == table.macs[table.owner[row]]) continue;
        auto [entry, fresh] = f.moved.try_emplace(row);
        if (fresh || entry->second.until <= now)
          entry->second = {f.table.backends[was], f.table.macs[was], {}, false};
        entry->second.until = now + window_;
      }
      // Rows back with their earlier owner, or whose window is over, do not
      // chain.
      std::erase_if(f.moved, [&](const auto& entry) {
        return entry.second.until <= now ||
               entry.second.mac == table.macs[table.owner[entry.first]];
      });
      for (auto& [row, m] : f.moved) {
        const Backend* owner = state.find_backend(table.backends[table.owner[row]]);
        const Backend* before = state.find_backend(m.backend);
        m.chains = owner && owner->is_on(host_) && !(before && before->is_on(host_));
      }
    } else {
      f.moved.clear();  // other rows, or none: nothing to chain to
    }
    tables_.services[service.key].rows = table.rows;
    f.service = service;
    f.macs = std::move(macs);
    f.table = std::move(table);
    publish(f, index);
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
    bool chained = false;
    std::erase_if(f.moved, [&](const auto& entry) {
      const bool over = entry.second.until <= now;
      chained |= over && entry.second.chains;
      return over;
    });
    if (!chained) continue;
    publish(f, tables_.services.at(key).index);
    any = true;
  }
  return any;
}

nlohmann::json ChainPlanner::to_json(TimePoint now, int64_t now_unix_ms) const {
  const auto unix_ms = [&](TimePoint t) {
    return now_unix_ms + std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count();
  };
  nlohmann::json services = nlohmann::json::array();
  for (const auto& [key, f] : followed_) {
    nlohmann::json rows = nlohmann::json::array();
    TimePoint last{};
    for (const auto& [row, m] : f.moved) {
      if (!m.chains || m.until <= now) continue;
      rows.push_back({row, m.mac.str(), unix_ms(m.until)});
      last = std::max(last, m.until);
    }
    if (rows.empty()) continue;
    services.push_back(
        {{"service", key.str()}, {"until_ms", unix_ms(last)}, {"rows", std::move(rows)}});
  }
  return {{"version", 1}, {"services", std::move(services)}};
}

void ChainPlanner::restore(const nlohmann::json& saved, TimePoint now, int64_t now_unix_ms) {
  struct Row {
    uint32_t row;
    MacAddress mac;
    TimePoint until;
  };
  std::vector<std::pair<ServiceKey, std::vector<Row>>> all;
  const auto at = [&](int64_t unix_ms) {
    return now + std::chrono::milliseconds(unix_ms - now_unix_ms);
  };
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
    const ServiceKey key =
        parse_service_key_param(s.value("service", nlohmann::json()), path + ".service");
    std::vector<Row> rows;
    // A row is [row, "MAC", until_ms], or [row, "MAC"] until the service's
    // until_ms (as an earlier version wrote it).
    for (const auto& row : s["rows"]) {
      std::optional<MacAddress> mac;
      const bool shaped = row.is_array() && (row.size() == 2 || row.size() == 3) &&
                          row[0].is_number_unsigned() && row[1].is_string() &&
                          (row.size() == 2 || row[2].is_number_integer());
      if (shaped) mac = MacAddress::parse(row[1].get<std::string>());
      if (!mac || row[0].get<uint64_t>() >= kMaxRows)
        throw DocumentError(path + ".rows", "each row is [row, \"MAC\", until_ms]");
      rows.push_back({row[0].get<uint32_t>(), *mac,
                      at(row.size() == 3 ? row[2].get<int64_t>() : s["until_ms"].get<int64_t>())});
    }
    all.emplace_back(key, std::move(rows));
  }
  for (auto& [key, rows] : all) {
    auto it = followed_.find(key);
    if (it == followed_.end()) continue;
    Followed& f = it->second;
    if (!f.moved.empty()) continue;  // a change of this run already says
    // Their new owners were here when they were kept (the record says
    // nothing of other rows).
    for (const auto& r : rows)
      if (r.row < f.table.rows && r.until > now) f.moved[r.row] = {"", r.mac, r.until, true};
    publish(f, tables_.services.at(key).index);
  }
}

const ServiceKey* ChainPlanner::service_of(uint32_t index) const {
  auto it = by_index_.find(index);
  return it == by_index_.end() ? nullptr : &it->second;
}

}  // namespace hostlb
