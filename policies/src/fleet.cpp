#include "hostlb/policies/fleet.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "hostlb/policies/edit.h"

namespace hostlb {

FleetLayout::FleetLayout(std::string prefix) : prefix_(std::move(prefix)) {
  if (prefix_.empty() || prefix_.front() != '/')
    throw DocumentError("prefix", "\"" + prefix_ + "\" must start with '/'");
  if (prefix_.back() != '/') prefix_ += '/';
}

std::string FleetLayout::backend_key(std::string_view name) const {
  return backends() + std::string(name);
}

std::string FleetLayout::service_key(const ServiceKey& key) const { return services() + key.str(); }

bool FleetLayout::is_desired(std::string_view key) const {
  return key.starts_with(backends()) || key.starts_with(services());
}

std::string FleetLayout::status_key(std::string_view role, std::string_view name) const {
  return status() + std::string(role) + "/" + std::string(name);
}

std::string FleetLayout::watcher_key(std::string_view role, std::string_view name) const {
  return watchers() + std::string(role) + "/" + std::string(name);
}

uint64_t fleet_key_hash(std::string_view key, std::string_view value) {
  // FNV-1a over key, a separator no key holds, value; then a final mix so
  // that XORs of similar keys do not cancel out in patterns.
  uint64_t h = 0xcbf29ce484222325ULL;
  auto eat = [&h](std::string_view bytes) {
    for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ULL;
  };
  eat(key);
  eat(std::string_view("\0", 1));
  eat(value);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

uint64_t fleet_digest(const FleetLayout& layout, const FleetKeys& keys) {
  uint64_t digest = 0;
  for (auto it = keys.lower_bound(layout.backends()); it != keys.end(); ++it) {
    if (!layout.is_desired(it->first)) {
      if (it->first >= layout.desired_end()) break;
      continue;
    }
    digest ^= fleet_key_hash(it->first, it->second);
  }
  return digest;
}

std::string digest_text(uint64_t digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, digest >>= 4) out[static_cast<size_t>(i)] = kHex[digest & 15];
  return out;
}

namespace {

// The keys under `prefix`, in key order.
template <typename Each>
void under(const FleetKeys& keys, const std::string& prefix, Each&& each) {
  for (auto it = keys.lower_bound(prefix); it != keys.end() && it->first.starts_with(prefix); ++it)
    each(it->first, std::string_view(it->first).substr(prefix.size()), it->second);
}

std::string reason_of(const DocumentError& e) { return e.what(); }

// Adds the service of key PREFIX services/`name` to `state`, whose backends
// are read already. Throws DocumentError (then `state` is unchanged).
void add_service_key(State& state, std::string_view name, const std::string& value) {
  std::string reason;
  const auto service_key = parse_service_key(name, &reason);
  if (!service_key) throw DocumentError("", "the key does not name a service: " + reason);
  Service service = parse_service_object(parse_json_strict(value), "", state);
  if (service.key != *service_key)
    throw DocumentError("", "the value is service " + service.key.str() + ", not the key's");
  const Edit add = Edit::add_service(std::move(service));
  check_edit(state, add);
  apply_edit(state, add);
}

}  // namespace

FleetRead read_fleet(const FleetLayout& layout, const FleetKeys& keys,
                     const DocumentOptions& options) {
  FleetRead out;
  // Backends first: services name them.
  under(keys, layout.backends(),
        [&](const std::string& key, std::string_view name, const std::string& value) {
          try {
            Backend backend = parse_backend_object(parse_json_strict(value), "", options);
            if (backend.name != name)
              throw DocumentError("name", "\"" + backend.name + "\" is not the key's name \"" +
                                              std::string(name) + "\"");
            const Edit add = Edit::add_backend(std::move(backend));
            check_edit(out.state, add);
            apply_edit(out.state, add);
          } catch (const DocumentError& e) {
            out.errors.push_back({key, reason_of(e)});
          }
        });
  under(keys, layout.services(),
        [&](const std::string& key, std::string_view name, const std::string& value) {
          try {
            add_service_key(out.state, name, value);
          } catch (const DocumentError& e) {
            out.errors.push_back({key, reason_of(e)});
          }
        });
  return out;
}

FleetView::FleetView(FleetLayout layout, DocumentOptions options)
    : layout_(std::move(layout)), options_(std::move(options)) {}

void FleetView::reset(const FleetKeys& keys) {
  FleetRead read = read_fleet(layout_, keys, options_);
  state_ = std::move(read.state);
  errors_.clear();
  for (auto& e : read.errors) errors_.emplace(std::move(e.key), std::move(e.reason));
}

void FleetView::update(const FleetKeys& keys, const std::string& key) {
  if (!key.starts_with(layout_.services())) {
    // A backend: the services that name it (or would) read again with it.
    if (layout_.is_desired(key)) reset(keys);
    return;
  }
  // A service stands alone given the backends: only it is read again.
  const std::string_view name = std::string_view(key).substr(layout_.services().size());
  errors_.erase(key);
  auto& services = state_.services;
  if (const auto service_key = parse_service_key(name)) {
    auto old = std::find_if(services.begin(), services.end(),
                            [&](const Service& s) { return s.key == *service_key; });
    if (old != services.end()) services.erase(old);
  }
  const auto it = keys.find(key);
  if (it == keys.end()) return;
  try {
    add_service_key(state_, name, it->second);
  } catch (const DocumentError& e) {
    errors_.emplace(key, reason_of(e));
    return;
  }
  // In key order, as read_fleet reads them (the edit appended it).
  const std::string added = services.back().key.str();
  auto at =
      std::lower_bound(services.begin(), services.end() - 1, added,
                       [](const Service& s, const std::string& k) { return s.key.str() < k; });
  std::rotate(at, services.end() - 1, services.end());
}

std::vector<FleetKeyError> FleetView::errors() const {
  std::vector<FleetKeyError> out;
  for (const auto& [key, reason] : errors_) out.push_back({key, reason});
  return out;
}

FleetKeys fleet_keys(const FleetLayout& layout, const State& state) {
  FleetKeys out;
  for (const auto& b : state.backends) out[layout.backend_key(b.name)] = backend_to_json(b).dump();
  for (const auto& s : state.services) out[layout.service_key(s.key)] = service_to_json(s).dump();
  return out;
}

FleetWrite plan_fleet_write(const FleetLayout& layout, const FleetKeys& current,
                            const State& desired) {
  FleetWrite out;
  const FleetKeys wanted = fleet_keys(layout, desired);
  for (const auto& [key, value] : wanted) {
    const auto it = current.find(key);
    if (it == current.end() || it->second != value) out.puts.emplace(key, value);
  }
  for (const std::string& prefix : {layout.backends(), layout.services()})
    under(current, prefix, [&](const std::string& key, std::string_view, const std::string&) {
      if (!wanted.count(key)) out.deletes.push_back(key);
    });
  return out;
}

DrainedBindings fleet_unhealthy(const FleetLayout& layout, const State& state,
                                const FleetKeys& keys) {
  const std::string reports = layout.status() + "host/", watchers = layout.watchers() + "host/";
  std::set<std::string> reporting, expired;
  std::map<BindingName, std::set<std::string>> reported_by;
  under(keys, reports, [&](const std::string&, std::string_view name, const std::string& value) {
    reporting.emplace(name);
    const auto report = nlohmann::json::parse(value, nullptr, false);
    if (!report.is_object()) return;
    const auto figures = report.find("figures");
    if (figures == report.end() || !figures->is_object()) return;
    const auto list = figures->find("down");
    if (list == figures->end() || !list->is_array()) return;
    for (const auto& item : *list) {
      if (!item.is_object() || !item.contains("service") || !item.contains("backend") ||
          !item["service"].is_string() || !item["backend"].is_string())
        continue;
      const auto key = parse_service_key(item["service"].get<std::string>());
      if (!key) continue;
      reported_by[{*key, item["backend"].get<std::string>()}].emplace(name);
    }
  });
  under(keys, watchers, [&](const std::string&, std::string_view name, const std::string&) {
    if (!reporting.count(std::string(name))) expired.emplace(name);
  });
  DrainedBindings out;
  for (const auto& service : state.services)
    for (const auto& ref : service.backends) {
      const Backend* backend = state.find_backend(ref.name);
      if (backend == nullptr) continue;
      const std::string& host = backend->host;
      if (!host.empty() && expired.count(host)) {
        out.emplace(service.key, ref.name);
        continue;
      }
      const auto it = reported_by.find({service.key, ref.name});
      if (it != reported_by.end() && (host.empty() || it->second.count(host)))
        out.emplace(service.key, ref.name);
    }
  return out;
}

}  // namespace hostlb
