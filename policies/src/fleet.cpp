#include "hostlb/policies/fleet.h"

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

namespace {

// The keys under `prefix`, in key order.
template <typename Each>
void under(const FleetKeys& keys, const std::string& prefix, Each&& each) {
  for (auto it = keys.lower_bound(prefix); it != keys.end() && it->first.starts_with(prefix); ++it)
    each(it->first, std::string_view(it->first).substr(prefix.size()), it->second);
}

std::string reason_of(const DocumentError& e) { return e.what(); }

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
            std::string reason;
            const auto service_key = parse_service_key(name, &reason);
            if (!service_key) throw DocumentError("", "the key does not name a service: " + reason);
            Service service = parse_service_object(parse_json_strict(value), "", out.state);
            if (service.key != *service_key)
              throw DocumentError("",
                                  "the value is service " + service.key.str() + ", not the key's");
            const Edit add = Edit::add_service(std::move(service));
            check_edit(out.state, add);
            apply_edit(out.state, add);
          } catch (const DocumentError& e) {
            out.errors.push_back({key, reason_of(e)});
          }
        });
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

}  // namespace hostlb
