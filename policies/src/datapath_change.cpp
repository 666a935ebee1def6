#include "hostlb/policies/datapath_change.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace hostlb {

DatapathChange change_datapath(const State& before, const Edit& edit, const Datapath& applied,
                               const MarkLayout& marks, const BindingIds& reserved,
                               std::string_view host) {
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
  auto local = [&](const std::string& backend) {
    return before.find_backend(backend)->is_on(host);
  };
  auto make_binding = [&](const ServiceKey& k, const BackendRef& ref) {
    const Backend* backend = before.find_backend(ref.name);
    return Binding{{k, ref.name}, backend->mac, *backend->address_for(k.vip.family()), ref.port, 0};
  };
  if (edit.kind == Edit::Kind::kAddService)
    for (const auto& ref : edit.service.backends)
      if (local(ref.name)) added.push_back(make_binding(key, ref));

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
  if (edit.kind == Edit::Kind::kAttach && local(name) &&
      (!existing || existing->target_port != edit.ref.port)) {
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
  const bool local_backend_edit =
      (edit.kind == Edit::Kind::kAddBackend && edit.backend.is_on(host)) ||
      (edit.kind == Edit::Kind::kRemoveBackend && local(name));
  if (edit.kind == Edit::Kind::kAddBackend && local_backend_edit) {
    for (const auto* addr : {&edit.backend.ipv4, &edit.backend.ipv6}) {
      if (!*addr) continue;
      HostEntry entry{edit.backend.bridge, **addr, edit.backend.mac, edit.backend.name};
      out.next.hosts.insert(std::upper_bound(out.next.hosts.begin(), out.next.hosts.end(), entry),
                            entry);
      out.diff.hosts_added.push_back(entry);
    }
  } else if (edit.kind == Edit::Kind::kRemoveBackend && local_backend_edit) {
    std::erase_if(out.next.hosts, [&](const HostEntry& h) {
      if (h.backend != name) return false;
      out.diff.hosts_removed.push_back(h);
      return true;
    });
  }
  std::set<std::string> bridges;
  for (const auto& b : before.backends)
    if (b.is_on(host) && !(edit.kind == Edit::Kind::kRemoveBackend && b.name == name))
      bridges.insert(b.bridge);
  if (edit.kind == Edit::Kind::kAddBackend && local_backend_edit)
    bridges.insert(edit.backend.bridge);
  out.next.bridges.assign(bridges.begin(), bridges.end());

  // The guard: a backend's MAC comes and goes with it; a VIP with the first
  // service that uses it and the last.
  out.next.refused = applied.refused;
  out.next.guard_macs = applied.guard_macs;
  out.next.guard_vips = applied.guard_vips;
  if (edit.kind == Edit::Kind::kAddBackend && local_backend_edit) {
    const MacAddress& mac = edit.backend.mac;
    out.next.guard_macs.insert(
        std::upper_bound(out.next.guard_macs.begin(), out.next.guard_macs.end(), mac), mac);
    out.diff.guard_macs_added.push_back(mac);
  } else if (edit.kind == Edit::Kind::kRemoveBackend && local_backend_edit) {
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

Datapath compile_changed_datapath(const Datapath& applied, const StateChanges& changes,
                                  const State& desired, const BindingIds& previous,
                                  const MarkLayout& marks, std::string_view host) {
  // All backends are in the parts: hosts, bridges and MACs come out whole.
  Datapath out = compile_datapath(changes.after, previous, marks, host);
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

}  // namespace hostlb
