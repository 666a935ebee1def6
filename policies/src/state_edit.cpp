#include "hostlb/policies/state_edit.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace hostlb {
namespace {

std::string describe_backend(const Backend& b) {
  std::string out = "backend " + b.name + " mac " + b.mac.str();
  if (b.ipv4) out += " ipv4 " + b.ipv4->str();
  if (b.ipv6) out += " ipv6 " + b.ipv6->str();
  return out + " bridge " + b.bridge;
}

}  // namespace

Edit Edit::add_backend(Backend backend) {
  Edit e;
  e.kind = Kind::kAddBackend;
  e.backend = std::move(backend);
  return e;
}
Edit Edit::remove_backend(std::string name) {
  Edit e;
  e.kind = Kind::kRemoveBackend;
  e.ref.name = std::move(name);
  return e;
}
Edit Edit::add_service(Service service) {
  Edit e;
  e.kind = Kind::kAddService;
  e.service = std::move(service);
  return e;
}
Edit Edit::remove_service(ServiceKey key) {
  Edit e;
  e.kind = Kind::kRemoveService;
  e.service.key = key;
  return e;
}
Edit Edit::attach(ServiceKey key, BackendRef ref) {
  Edit e;
  e.kind = Kind::kAttach;
  e.service.key = key;
  e.ref = std::move(ref);
  return e;
}
Edit Edit::detach(ServiceKey key, std::string name) {
  Edit e;
  e.kind = Kind::kDetach;
  e.service.key = key;
  e.ref.name = std::move(name);
  return e;
}

namespace {

const Service* find_service(const State& state, const ServiceKey& key) {
  for (const auto& s : state.services)
    if (s.key == key) return &s;
  return nullptr;
}

void check_serves(const Backend& backend, const IpAddress& vip, const std::string& path) {
  if (!backend.address_for(vip.family()))
    throw DocumentError(path, "backend \"" + backend.name + "\" has no " +
                                  std::string(family_name(vip.family())) + " address for VIP " +
                                  vip.str());
}

void check_add_backend(const State& state, const Backend& b) {
  if (state.find_backend(b.name))
    throw DocumentError("name", "backend \"" + b.name + "\" already exists");
  for (const auto& other : state.backends) {
    if (other.mac == b.mac)
      throw DocumentError(
          "mac", "MAC " + b.mac.str() + " is already used by backend \"" + other.name + "\"");
    for (const auto* addr : {&b.ipv4, &b.ipv6}) {
      if (*addr && (other.ipv4 == *addr || other.ipv6 == *addr))
        throw DocumentError(
            (*addr)->is_v4() ? "ipv4" : "ipv6",
            "address " + (*addr)->str() + " is already used by backend \"" + other.name + "\"");
    }
  }
  for (const auto& service : state.services) {
    for (const auto* addr : {&b.ipv4, &b.ipv6}) {
      if (*addr && service.key.vip == **addr)
        throw DocumentError((*addr)->is_v4() ? "ipv4" : "ipv6",
                            (*addr)->str() + " is the VIP of " + service.key.str() +
                                "; a VIP must not be a backend's own address");
    }
  }
}

void check_add_service(const State& state, const Service& service) {
  if (find_service(state, service.key))
    throw DocumentError("service", "service " + service.key.str() + " already exists");
  for (const auto& backend : state.backends) {
    if (backend.address_for(service.key.vip.family()) == service.key.vip)
      throw DocumentError("service", service.key.vip.str() + " is the address of backend \"" +
                                         backend.name +
                                         "\"; a VIP must not be a backend's own address");
  }
  for (size_t i = 0; i < service.backends.size(); ++i) {
    const std::string path = "backends[" + std::to_string(i) + "].name";
    const auto& ref = service.backends[i];
    const Backend* backend = state.find_backend(ref.name);
    if (!backend) throw DocumentError(path, "unknown backend \"" + ref.name + "\"");
    check_serves(*backend, service.key.vip, path);
    for (size_t j = 0; j < i; ++j)
      if (service.backends[j].name == ref.name)
        throw DocumentError(path, "backend \"" + ref.name + "\" is listed twice (also backends[" +
                                      std::to_string(j) + "])");
  }
}

}  // namespace

void check_edit(const State& state, const Edit& edit) {
  const ServiceKey& key = edit.service.key;
  switch (edit.kind) {
    case Edit::Kind::kAddBackend:
      return check_add_backend(state, edit.backend);
    case Edit::Kind::kRemoveBackend:
      if (!state.find_backend(edit.ref.name))
        throw DocumentError("name", "no backend \"" + edit.ref.name + "\"");
      return;
    case Edit::Kind::kAddService:
      return check_add_service(state, edit.service);
    case Edit::Kind::kRemoveService:
      if (!find_service(state, key)) throw DocumentError("service", "no service " + key.str());
      return;
    case Edit::Kind::kAttach: {
      if (!find_service(state, key)) throw DocumentError("service", "no service " + key.str());
      const Backend* backend = state.find_backend(edit.ref.name);
      if (!backend) throw DocumentError("backend", "no backend \"" + edit.ref.name + "\"");
      check_serves(*backend, key.vip, "backend");
      return;
    }
    case Edit::Kind::kDetach: {
      const Service* service = find_service(state, key);
      if (!service) throw DocumentError("service", "no service " + key.str());
      for (const auto& ref : service->backends)
        if (ref.name == edit.ref.name) return;
      throw DocumentError("backend",
                          "backend \"" + edit.ref.name + "\" does not serve " + key.str());
    }
  }
}

void apply_edit(State& state, const Edit& edit) {
  const ServiceKey& key = edit.service.key;
  auto service_it = [&] {
    return std::find_if(state.services.begin(), state.services.end(),
                        [&](const Service& s) { return s.key == key; });
  };
  switch (edit.kind) {
    case Edit::Kind::kAddBackend:
      state.backends.push_back(edit.backend);
      return;
    case Edit::Kind::kRemoveBackend:
      std::erase_if(state.backends, [&](const Backend& b) { return b.name == edit.ref.name; });
      for (auto& service : state.services)
        std::erase_if(service.backends,
                      [&](const BackendRef& r) { return r.name == edit.ref.name; });
      return;
    case Edit::Kind::kAddService:
      state.services.push_back(edit.service);
      return;
    case Edit::Kind::kRemoveService:
      state.services.erase(service_it());
      return;
    case Edit::Kind::kAttach: {
      auto& refs = service_it()->backends;
      for (auto& ref : refs) {
        if (ref.name == edit.ref.name) {
          ref.port = edit.ref.port;
          return;
        }
      }
      refs.push_back(edit.ref);
      return;
    }
    case Edit::Kind::kDetach:
      std::erase_if(service_it()->backends,
                    [&](const BackendRef& r) { return r.name == edit.ref.name; });
      return;
  }
}

State edited(const State& state, const Edit& edit) {
  check_edit(state, edit);
  State out = state;
  apply_edit(out, edit);
  return out;
}

nlohmann::json edit_to_json(const Edit& edit) {
  using nlohmann::json;
  const std::string key = edit.service.key.str();
  switch (edit.kind) {
    case Edit::Kind::kAddBackend:
      return {{"op", "backend.add"}, {"backend", backend_to_json(edit.backend)}};
    case Edit::Kind::kRemoveBackend:
      return {{"op", "backend.del"}, {"name", edit.ref.name}};
    case Edit::Kind::kAddService: {
      json refs = json::array();
      for (const auto& r : edit.service.backends)
        refs.push_back({{"name", r.name}, {"port", r.port}});
      return {{"op", "service.add"}, {"service", key}, {"backends", refs}};
    }
    case Edit::Kind::kRemoveService:
      return {{"op", "service.del"}, {"service", key}};
    case Edit::Kind::kAttach:
      return {{"op", "service.attach"},
              {"service", key},
              {"backend", edit.ref.name},
              {"port", edit.ref.port}};
    case Edit::Kind::kDetach:
      return {{"op", "service.detach"}, {"service", key}, {"backend", edit.ref.name}};
  }
  return {};
}

Edit edit_from_json(const nlohmann::json& value) {
  if (!value.is_object() || !value.contains("op") || !value["op"].is_string())
    throw DocumentError("op", "is required");
  const std::string op = value["op"];
  auto name = [&](const char* field) {
    if (!value.contains(field) || !value[field].is_string())
      throw DocumentError(field, "must be a string");
    return value[field].get<std::string>();
  };
  if (op == "backend.add")
    return Edit::add_backend(parse_backend_object(value["backend"], "backend", {}));
  if (op == "backend.del") return Edit::remove_backend(name("name"));
  const ServiceKey key =
      parse_service_key_param(value.value("service", nlohmann::json()), "service");
  if (op == "service.add") {
    Service service{key, {}};
    for (const auto& r : value.value("backends", nlohmann::json::array()))
      service.backends.push_back(parse_backend_ref(r, "backends"));
    return Edit::add_service(std::move(service));
  }
  if (op == "service.del") return Edit::remove_service(key);
  if (op == "service.attach")
    return Edit::attach(key, parse_backend_ref({{"name", value.value("backend", nlohmann::json())},
                                                {"port", value.value("port", nlohmann::json())}},
                                               ""));
  if (op == "service.detach") return Edit::detach(key, name("backend"));
  throw DocumentError("op", "unknown edit \"" + op + "\"");
}

DatapathChange change_datapath(const State& before, const Edit& edit, const Datapath& applied,
                               const MarkLayout& marks, const BindingIds& reserved) {
  DatapathChange out;
  const ServiceKey& key = edit.service.key;
  const std::string& name = edit.ref.name;
  auto removed_binding = [&](const Binding& b) {
    switch (edit.kind) {
      case Edit::Kind::kRemoveBackend:
        return b.key.backend == name;
      case Edit::Kind::kRemoveService:
        return b.key.service == key;
      case Edit::Kind::kDetach:
        return b.key.service == key && b.key.backend == name;
      case Edit::Kind::kAttach:  // a re-pointed binding is rewritten
        return b.key.service == key && b.key.backend == name && b.target_port != edit.ref.port;
      default:
        return false;
    }
  };
  std::vector<Binding> added;
  auto make_binding = [&](const ServiceKey& k, const BackendRef& ref) {
    const Backend* backend = before.find_backend(ref.name);
    return Binding{{k, ref.name}, backend->mac, *backend->address_for(k.vip.family()), ref.port, 0};
  };
  if (edit.kind == Edit::Kind::kAddService)
    for (const auto& ref : edit.service.backends) added.push_back(make_binding(key, ref));

  // One pass over the bindings: keep, drop, or note an existing one.
  out.next.bindings.reserve(applied.bindings.size() + added.size());
  const Binding* existing = nullptr;
  std::vector<bool> in_use(applied.bindings.size() + added.size() + reserved.size() + 2, false);
  std::set<uint32_t> reserved_ids;
  for (const auto& [k, id] : reserved) {
    if (id < in_use.size()) in_use[id] = true;
    reserved_ids.insert(id);
  }
  for (const auto& b : applied.bindings) {
    if (b.id < in_use.size()) in_use[b.id] = true;
    if (edit.kind == Edit::Kind::kAttach && b.key.service == key && b.key.backend == name)
      existing = &b;
    if (removed_binding(b)) {
      out.diff.bindings_removed.push_back(b);
      continue;
    }
    out.next.bindings.push_back(b);
  }
  if (edit.kind == Edit::Kind::kAttach && (!existing || existing->target_port != edit.ref.port)) {
    Binding b = make_binding(key, edit.ref);
    if (existing) b.id = existing->id;  // rewritten in place, same identity
    added.push_back(b);
  }
  // Lowest identities not in use (identities freed by this edit are still
  // marked in use: their connections carry them until flushed).
  for (auto& b : added) {
    auto it = reserved.find(b.key);
    if (b.id == 0 && it != reserved.end()) b.id = it->second;
  }
  uint32_t next_id = 1;
  for (auto& b : added) {
    if (b.id != 0) continue;
    while ((next_id < in_use.size() && in_use[next_id]) || reserved_ids.count(next_id)) ++next_id;
    if (next_id > marks.max_id())
      throw IdSpaceExhausted("more bindings than the conntrack mark mask can number (at most " +
                             std::to_string(marks.max_id()) + ")");
    b.id = next_id++;
  }
  auto by_key = [](const Binding& a, const Binding& b) { return a.key < b.key; };
  for (const auto& b : added) {
    out.next.bindings.insert(
        std::upper_bound(out.next.bindings.begin(), out.next.bindings.end(), b, by_key), b);
    out.diff.bindings_added.push_back(b);
  }

  // Host entries and bridges change only with backends.
  out.next.hosts = applied.hosts;
  if (edit.kind == Edit::Kind::kAddBackend) {
    for (const auto* addr : {&edit.backend.ipv4, &edit.backend.ipv6}) {
      if (!*addr) continue;
      HostEntry host{edit.backend.bridge, **addr, edit.backend.mac, edit.backend.name};
      out.next.hosts.insert(std::upper_bound(out.next.hosts.begin(), out.next.hosts.end(), host),
                            host);
      out.diff.hosts_added.push_back(host);
    }
  } else if (edit.kind == Edit::Kind::kRemoveBackend) {
    std::erase_if(out.next.hosts, [&](const HostEntry& h) {
      if (h.backend != name) return false;
      out.diff.hosts_removed.push_back(h);
      return true;
    });
  }
  std::set<std::string> bridges;
  for (const auto& b : before.backends)
    if (!(edit.kind == Edit::Kind::kRemoveBackend && b.name == name)) bridges.insert(b.bridge);
  if (edit.kind == Edit::Kind::kAddBackend) bridges.insert(edit.backend.bridge);
  out.next.bridges.assign(bridges.begin(), bridges.end());

  // The guard: a backend's MAC comes and goes with it; a VIP with the first
  // service that uses it and the last.
  out.next.refused = applied.refused;
  out.next.guard_macs = applied.guard_macs;
  out.next.guard_vips = applied.guard_vips;
  if (edit.kind == Edit::Kind::kAddBackend) {
    const MacAddress& mac = edit.backend.mac;
    out.next.guard_macs.insert(
        std::upper_bound(out.next.guard_macs.begin(), out.next.guard_macs.end(), mac), mac);
    out.diff.guard_macs_added.push_back(mac);
  } else if (edit.kind == Edit::Kind::kRemoveBackend) {
    const MacAddress mac = before.find_backend(name)->mac;
    std::erase(out.next.guard_macs, mac);
    out.diff.guard_macs_removed.push_back(mac);
  } else if (edit.kind == Edit::Kind::kAddService || edit.kind == Edit::Kind::kRemoveService) {
    const IpAddress& vip = key.vip;
    const bool shared =
        std::any_of(before.services.begin(), before.services.end(),
                    [&](const Service& s) { return s.key != key && s.key.vip == vip; });
    if (!shared && edit.kind == Edit::Kind::kAddService) {
      out.next.guard_vips.insert(
          std::upper_bound(out.next.guard_vips.begin(), out.next.guard_vips.end(), vip), vip);
      out.diff.guard_vips_added.push_back(vip);
    } else if (!shared) {
      std::erase(out.next.guard_vips, vip);
      out.diff.guard_vips_removed.push_back(vip);
    }
  }
  return out;
}

namespace {

std::vector<Edit> edits_between_slices(const State& before, const State& after);
std::vector<std::string> describe_slices(const State& before, const State& after);

}  // namespace

// Both functions below keep the relative order of what they are given, and
// the services left out yield no edit and no line: their answers for the
// parts are their answers for the whole states.
StateChanges changed_parts(const State& before, const State& after) {
  std::unordered_map<std::string_view, const Backend*> old_backends;
  for (const auto& b : before.backends) old_backends.emplace(b.name, &b);
  std::unordered_set<std::string_view> changed_backends;
  for (const auto& b : after.backends) {
    auto it = old_backends.find(b.name);
    if (it != old_backends.end() && !(*it->second == b)) changed_backends.insert(b.name);
  }
  auto uses_changed = [&](const Service& s) {
    return std::any_of(s.backends.begin(), s.backends.end(),
                       [&](const BackendRef& r) { return changed_backends.count(r.name) != 0; });
  };
  const auto& old_list = before.services;
  const auto& new_list = after.services;
  // same_old[i] / same_new[j]: the service is in both, equal, and uses no
  // changed backend.
  std::vector<bool> same_old(old_list.size(), false), same_new(new_list.size(), false);
  auto pair_up = [&](size_t i, size_t j) {
    if (old_list[i] == new_list[j] && !uses_changed(new_list[j])) same_old[i] = same_new[j] = true;
  };
  // A document applied again mostly keeps its order: the common beginning
  // and end are paired by position, the middle by key.
  size_t first = 0, old_end = old_list.size(), new_end = new_list.size();
  for (; first < old_end && first < new_end && old_list[first].key == new_list[first].key; ++first)
    pair_up(first, first);
  for (;
       old_end > first && new_end > first && old_list[old_end - 1].key == new_list[new_end - 1].key;
       --old_end, --new_end)
    pair_up(old_end - 1, new_end - 1);
  if (first < old_end && first < new_end) {
    std::unordered_map<ServiceKey, size_t, ServiceKeyHash> middle;
    middle.reserve(old_end - first);
    for (size_t i = first; i < old_end; ++i) middle.emplace(old_list[i].key, i);
    for (size_t j = first; j < new_end; ++j)
      if (auto it = middle.find(new_list[j].key); it != middle.end()) pair_up(it->second, j);
  }

  StateChanges out;
  out.before.backends = before.backends;
  out.after.backends = after.backends;
  for (size_t i = 0; i < old_list.size(); ++i)
    if (!same_old[i]) out.before.services.push_back(old_list[i]);
  for (size_t j = 0; j < new_list.size(); ++j)
    if (!same_new[j]) out.after.services.push_back(new_list[j]);
  return out;
}

Datapath compile_changed_datapath(const Datapath& applied, const StateChanges& changes,
                                  const State& desired, const BindingIds& previous,
                                  const MarkLayout& marks) {
  // All backends are in the parts: hosts, bridges and MACs come out whole.
  Datapath out = compile_datapath(changes.after, previous, marks);
  std::unordered_set<ServiceKey, ServiceKeyHash> changed;
  for (const auto* part : {&changes.before, &changes.after})
    for (const auto& s : part->services) changed.insert(s.key);
  std::vector<Binding> compiled = std::move(out.bindings);
  out.bindings.clear();
  out.bindings.reserve(applied.bindings.size() + compiled.size());
  // Both lists are sorted by key: merge the unchanged services' bindings
  // with the newly compiled ones.
  auto next = compiled.begin();
  for (const auto& b : applied.bindings) {
    if (changed.count(b.key.service) != 0) continue;
    for (; next != compiled.end() && next->key < b.key; ++next) out.bindings.push_back(*next);
    out.bindings.push_back(b);
  }
  out.bindings.insert(out.bindings.end(), next, compiled.end());
  // The guard's VIPs change only where a changed service's VIP comes or
  // goes: those few are looked up in the whole desired state.
  std::vector<IpAddress> touched;
  for (const auto* part : {&changes.before, &changes.after})
    for (const auto& s : part->services) touched.push_back(s.key.vip);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  std::vector<bool> used(touched.size(), false);
  if (!touched.empty()) {
    for (const auto& s : desired.services) {
      auto it = std::lower_bound(touched.begin(), touched.end(), s.key.vip);
      if (it != touched.end() && *it == s.key.vip) used[it - touched.begin()] = true;
    }
  }
  out.guard_vips.clear();
  auto t = touched.begin();
  for (const auto& vip : applied.guard_vips) {
    for (; t != touched.end() && *t < vip; ++t)
      if (used[t - touched.begin()]) out.guard_vips.push_back(*t);
    if (t != touched.end() && *t == vip) continue;  // decided with the touched ones
    out.guard_vips.push_back(vip);
  }
  for (; t != touched.end(); ++t)
    if (used[t - touched.begin()]) out.guard_vips.push_back(*t);
  return out;
}

std::vector<Edit> edits_between(const StateChanges& changes) {
  return edits_between_slices(changes.before, changes.after);
}

std::vector<Edit> edits_between(const State& before, const State& after) {
  return edits_between(changed_parts(before, after));
}

namespace {

std::vector<Edit> edits_between_slices(const State& before, const State& after) {
  std::unordered_map<std::string_view, const Backend*> old_backends, new_backends;
  for (const auto& b : before.backends) old_backends[b.name] = &b;
  for (const auto& b : after.backends) new_backends[b.name] = &b;
  auto changed_backend = [&](const std::string& name) {
    auto o = old_backends.find(name);
    auto n = new_backends.find(name);
    return o != old_backends.end() && n != new_backends.end() && !(*o->second == *n->second);
  };
  std::map<ServiceKey, const Service*> old_services, new_services;
  for (const auto& s : before.services) old_services.emplace(s.key, &s);
  for (const auto& s : after.services) new_services.emplace(s.key, &s);

  std::vector<Edit> edits;
  // 1. Services that go, and bindings that go from services that stay.
  for (const auto& [key, s] : old_services) {
    auto it = new_services.find(key);
    if (it == new_services.end()) {
      edits.push_back(Edit::remove_service(key));
      continue;
    }
    for (const auto& ref : s->backends) {
      const auto& refs = it->second->backends;
      const bool kept = std::any_of(refs.begin(), refs.end(),
                                    [&](const BackendRef& r) { return r.name == ref.name; });
      if (!kept && !changed_backend(ref.name) && new_backends.count(ref.name))
        edits.push_back(Edit::detach(key, ref.name));
    }
  }
  // 2. Backends that go or change (a changed one is removed and added again,
  // which detaches it everywhere; step 5 attaches it where it belongs).
  for (const auto& b : before.backends)
    if (!new_backends.count(b.name) || changed_backend(b.name))
      edits.push_back(Edit::remove_backend(b.name));
  // 3. Backends that come.
  for (const auto& b : after.backends)
    if (!old_backends.count(b.name) || changed_backend(b.name))
      edits.push_back(Edit::add_backend(b));
  // 4. Services that come, with their backends.
  for (const auto& s : after.services)
    if (!old_services.count(s.key)) edits.push_back(Edit::add_service(s));
  // 5. Bindings that come or change in services that stay.
  for (const auto& [key, s] : new_services) {
    auto it = old_services.find(key);
    if (it == old_services.end()) continue;
    for (const auto& ref : s->backends) {
      const auto& refs = it->second->backends;
      auto old_ref = std::find_if(refs.begin(), refs.end(),
                                  [&](const BackendRef& r) { return r.name == ref.name; });
      if (old_ref == refs.end() || old_ref->port != ref.port || changed_backend(ref.name))
        edits.push_back(Edit::attach(key, ref));
    }
  }
  return edits;
}

}  // namespace

std::vector<std::string> describe_edit(const State& before, const Edit& edit) {
  // An edit touches one backend or one service: describe that slice.
  State slice_before, slice_after;
  const ServiceKey& key = edit.service.key;
  const bool backend_edit =
      edit.kind == Edit::Kind::kAddBackend || edit.kind == Edit::Kind::kRemoveBackend;
  const std::string backend_name =
      edit.kind == Edit::Kind::kAddBackend ? edit.backend.name : edit.ref.name;
  for (const auto& b : before.backends)
    if (backend_edit && b.name == backend_name) slice_before.backends.push_back(b);
  for (const auto& s : before.services) {
    if (backend_edit) {
      Service only{s.key, {}};
      for (const auto& r : s.backends)
        if (r.name == backend_name) only.backends.push_back(r);
      if (!only.backends.empty()) slice_before.services.push_back(only);
    } else if (s.key == key) {
      slice_before.services.push_back(s);
    }
  }
  slice_after = slice_before;
  if (edit.kind == Edit::Kind::kRemoveBackend) {
    slice_after.backends.clear();
    for (auto& s : slice_after.services) s.backends.clear();
  } else {
    // The slice holds every object the edit names, so applying it to the
    // slice is the edit's effect; backends it references come along.
    for (const auto& b : before.backends)
      if (!slice_after.find_backend(b.name) && edit.kind != Edit::Kind::kAddBackend)
        slice_after.backends.push_back(b), slice_before.backends.push_back(b);
    apply_edit(slice_after, edit);
  }
  return describe_changes(slice_before, slice_after);
}

std::vector<std::string> describe_changes(const StateChanges& changes) {
  return describe_slices(changes.before, changes.after);
}

std::vector<std::string> describe_changes(const State& before, const State& after) {
  return describe_changes(changed_parts(before, after));
}

namespace {

std::vector<std::string> describe_slices(const State& before, const State& after) {
  std::vector<std::string> lines;
  // Sorted views and merges rather than maps: this runs on every apply of a
  // whole document.
  auto sorted_backends = [](const State& s) {
    std::vector<const Backend*> v;
    for (const auto& b : s.backends) v.push_back(&b);
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->name < b->name; });
    return v;
  };
  const auto ob = sorted_backends(before), nb = sorted_backends(after);
  auto find_backend = [](const std::vector<const Backend*>& v, const std::string& name) {
    auto it = std::lower_bound(v.begin(), v.end(), name,
                               [](const Backend* b, const std::string& n) { return b->name < n; });
    return it != v.end() && (*it)->name == name ? *it : nullptr;
  };
  for (const Backend* b : ob) {
    const Backend* n = find_backend(nb, b->name);
    if (!n || !(*n == *b)) lines.push_back("- " + describe_backend(*b));
  }
  for (const Backend* b : nb) {
    const Backend* o = find_backend(ob, b->name);
    if (!o || !(*o == *b)) lines.push_back("+ " + describe_backend(*b));
  }

  auto sorted_services = [](const State& s) {
    std::vector<const Service*> v;
    for (const auto& x : s.services) v.push_back(&x);
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->key < b->key; });
    return v;
  };
  const auto os = sorted_services(before), ns = sorted_services(after);
  auto find_service = [](const std::vector<const Service*>& v, const ServiceKey& key) {
    auto it = std::lower_bound(v.begin(), v.end(), key,
                               [](const Service* s, const ServiceKey& k) { return s->key < k; });
    return it != v.end() && (*it)->key == key ? *it : nullptr;
  };
  for (const Service* s : os)
    if (!find_service(ns, s->key)) lines.push_back("- service " + s->key.str());
  for (const Service* s : ns)
    if (!find_service(os, s->key)) lines.push_back("+ service " + s->key.str());

  using BindingLine = std::tuple<ServiceKey, std::string, uint16_t>;
  auto bindings = [](const std::vector<const Service*>& services) {
    std::vector<BindingLine> out;
    for (const Service* s : services)
      for (const auto& ref : s->backends) out.emplace_back(s->key, ref.name, ref.port);
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto old_bindings = bindings(os), new_bindings = bindings(ns);
  std::vector<BindingLine> gone, come;
  std::set_difference(old_bindings.begin(), old_bindings.end(), new_bindings.begin(),
                      new_bindings.end(), std::back_inserter(gone));
  std::set_difference(new_bindings.begin(), new_bindings.end(), old_bindings.begin(),
                      old_bindings.end(), std::back_inserter(come));
  auto line = [](char sign, const BindingLine& b) {
    return std::string(1, sign) + " binding " + std::get<0>(b).str() + " -> " + std::get<1>(b) +
           ":" + std::to_string(std::get<2>(b));
  };
  for (const auto& b : gone) lines.push_back(line('-', b));
  for (const auto& b : come) lines.push_back(line('+', b));
  return lines;
}

}  // namespace

}  // namespace hostlb
