#include "hostlb/policies/datapath.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace hostlb {

MarkLayout::MarkLayout(uint32_t mask) : mask_(mask), shift_(0) {
  if (mask == 0) throw std::invalid_argument("the conntrack mark mask must not be 0");
  shift_ = static_cast<unsigned>(std::countr_zero(mask));
  const uint32_t run = mask >> shift_;
  if ((run & (run + 1)) != 0)
    throw std::invalid_argument("the conntrack mark mask must be one contiguous run of bits");
}

BindingIds Datapath::ids() const {
  BindingIds ids;
  for (const auto& binding : bindings) ids.emplace(binding.key, binding.id);
  return ids;
}

namespace {

uint64_t big_endian_word(const uint8_t* bytes) {
  uint64_t word;
  std::memcpy(&word, bytes, sizeof word);
  return std::endian::native == std::endian::little ? __builtin_bswap64(word) : word;
}

// IpAddress's order with integer compares (family, then the address as two
// big-endian words) rather than byte-array compares.
struct AddressOrder {
  uint8_t family;
  uint64_t high, low;
  explicit AddressOrder(const IpAddress& a)
      : family(static_cast<uint8_t>(a.family())),
        high(big_endian_word(a.bytes().data())),
        low(big_endian_word(a.bytes().data() + 8)) {}
  bool operator<(const AddressOrder& o) const {
    if (family != o.family) return family < o.family;
    return high != o.high ? high < o.high : low < o.low;
  }
  bool operator==(const AddressOrder& o) const {
    return family == o.family && high == o.high && low == o.low;
  }
};

// BindingKey's order the same way. Sorting 10,000 bindings by BindingKey
// itself cost several milliseconds of every apply.
struct SortKey {
  AddressOrder address;
  uint32_t port_protocol;
  const std::string* backend;

  SortKey(const ServiceKey& service, const std::string& backend_name)
      : address(service.vip),
        port_protocol(uint32_t{service.port} << 8 | static_cast<uint32_t>(service.protocol)),
        backend(&backend_name) {}
  explicit SortKey(const BindingKey& key) : SortKey(key.service, key.backend) {}

  bool operator<(const SortKey& o) const {
    if (!(address == o.address)) return address < o.address;
    if (port_protocol != o.port_protocol) return port_protocol < o.port_protocol;
    return *backend < *o.backend;
  }
};

}  // namespace

std::vector<IpAddress> service_vips(const State& state) {
  std::vector<IpAddress> vips;
  vips.reserve(state.services.size());
  for (const auto& service : state.services) vips.push_back(service.key.vip);
  std::sort(vips.begin(), vips.end(), [](const IpAddress& a, const IpAddress& b) {
    return AddressOrder(a) < AddressOrder(b);
  });
  vips.erase(std::unique(vips.begin(), vips.end()), vips.end());
  return vips;
}

Datapath compile_datapath(const State& state, const BindingIds& previous, const MarkLayout& marks,
                          std::string_view host) {
  Datapath out;
  std::set<std::string> bridges;
  std::unordered_map<std::string_view, const Backend*> by_name;
  for (const auto& backend : state.backends) {
    if (!backend.is_on(host)) continue;
    for (const auto* addr : {&backend.ipv4, &backend.ipv6}) {
      if (*addr) out.hosts.push_back({backend.bridge, **addr, backend.mac, backend.name});
    }
    bridges.insert(backend.bridge);
    by_name.emplace(backend.name, &backend);
  }
  std::sort(out.hosts.begin(), out.hosts.end());
  out.bridges.assign(bridges.begin(), bridges.end());
  for (const auto& backend : state.backends)
    if (backend.is_on(host)) out.guard_macs.push_back(backend.mac);
  std::sort(out.guard_macs.begin(), out.guard_macs.end());
  out.guard_vips = service_vips(state);

  // Sorted before the bindings exist: each is then built once, in place.
  struct Source {
    SortKey key;
    const ServiceKey* service;
    const BackendRef* ref;
    const Backend* backend;
  };
  std::vector<Source> order;
  for (const auto& service : state.services) {
    for (const auto& ref : service.backends) {
      auto backend = by_name.find(ref.name);
      if (backend == by_name.end()) continue;  // on another host
      if (!backend->second->address_for(service.key.vip.family()))
        continue;  // validation guarantees it exists
      order.push_back({SortKey(service.key, ref.name), &service.key, &ref, backend->second});
    }
  }
  std::sort(order.begin(), order.end(),
            [](const Source& a, const Source& b) { return a.key < b.key; });
  out.bindings.reserve(order.size());
  for (const Source& s : order)
    out.bindings.push_back({{*s.service, s.ref->name},
                            s.backend->mac,
                            *s.backend->address_for(s.service->vip.family()),
                            s.ref->port,
                            0});

  // Identities of bindings that still exist are kept. A new binding never
  // takes an identity that `previous` used, even one this change frees: the
  // connections of a removed binding still carry its mark until they are
  // flushed, and must not be mistaken for the newcomer's. Freed identities
  // become available from the next change on.
  std::vector<uint32_t> taken;
  taken.reserve(previous.size());
  for (const auto& [key, id] : previous) taken.push_back(id);
  std::sort(taken.begin(), taken.end());
  std::unordered_set<uint32_t> kept;
  auto known = previous.begin();  // both are in key order: one merged walk
  for (auto& binding : out.bindings) {
    const SortKey key(binding.key);
    while (known != previous.end() && SortKey(known->first) < key) ++known;
    if (known != previous.end() && known->first == binding.key && known->second >= 1 &&
        known->second <= marks.max_id() && kept.insert(known->second).second)
      binding.id = known->second;
  }
  uint32_t next = 1;
  auto skip = taken.begin();
  for (auto& binding : out.bindings) {
    if (binding.id != 0) continue;
    // New identities go up from 1; `taken` is sorted, so one pass skips it.
    for (; skip != taken.end() && *skip <= next; ++skip)
      if (*skip == next) ++next;
    if (next > marks.max_id())
      throw IdSpaceExhausted("more bindings than the conntrack mark mask can number (at most " +
                             std::to_string(marks.max_id()) +
                             ", counting identities freed by this change)");
    binding.id = next++;
  }
  return out;
}

std::vector<const Binding*> select_bindings(const Datapath& datapath,
                                            const std::optional<ServiceKey>& service,
                                            const std::optional<std::string>& backend) {
  std::vector<const Binding*> out;
  for (const auto& b : datapath.bindings) {
    if (service && b.key.service != *service) continue;
    if (backend && b.key.backend != *backend) continue;
    out.push_back(&b);
  }
  return out;
}

std::vector<Binding> bindings_gone(const DatapathDiff& diff) {
  std::set<uint32_t> rewritten;
  for (const auto& b : diff.bindings_added) rewritten.insert(b.id);
  std::vector<Binding> out;
  for (const auto& b : diff.bindings_removed)
    if (!rewritten.count(b.id)) out.push_back(b);
  return out;
}

DatapathDiff diff_datapath(const Datapath& before, const Datapath& after) {
  DatapathDiff diff;
  auto by_key = [](const Binding& a, const Binding& b) { return a.key < b.key; };
  // Both lists are sorted by key; a binding is "the same" only if every
  // field is, so set differences on full equality give removed/added.
  auto full_less = [&](const Binding& a, const Binding& b) {
    if (a.key != b.key) return by_key(a, b);
    return std::tie(a.mac, a.target, a.target_port, a.id, a.serving) <
           std::tie(b.mac, b.target, b.target_port, b.id, b.serving);
  };
  std::set_difference(before.bindings.begin(), before.bindings.end(), after.bindings.begin(),
                      after.bindings.end(), std::back_inserter(diff.bindings_removed), full_less);
  std::set_difference(after.bindings.begin(), after.bindings.end(), before.bindings.begin(),
                      before.bindings.end(), std::back_inserter(diff.bindings_added), full_less);
  std::set_difference(before.hosts.begin(), before.hosts.end(), after.hosts.begin(),
                      after.hosts.end(), std::back_inserter(diff.hosts_removed));
  std::set_difference(after.hosts.begin(), after.hosts.end(), before.hosts.begin(),
                      before.hosts.end(), std::back_inserter(diff.hosts_added));
  auto both_ways = [](const auto& old_list, const auto& new_list, auto& added, auto& removed) {
    std::set_difference(old_list.begin(), old_list.end(), new_list.begin(), new_list.end(),
                        std::back_inserter(removed));
    std::set_difference(new_list.begin(), new_list.end(), old_list.begin(), old_list.end(),
                        std::back_inserter(added));
  };
  both_ways(before.guard_macs, after.guard_macs, diff.guard_macs_added, diff.guard_macs_removed);
  both_ways(before.guard_vips, after.guard_vips, diff.guard_vips_added, diff.guard_vips_removed);
  both_ways(before.refused, after.refused, diff.refused_added, diff.refused_removed);
  return diff;
}

namespace {
template <typename T, typename Less = std::less<>>
std::vector<T> patched(const std::vector<T>& before, const std::vector<T>& removed,
                       const std::vector<T>& added, Less less = {}) {
  std::vector<T> kept, out;
  std::set_difference(before.begin(), before.end(), removed.begin(), removed.end(),
                      std::back_inserter(kept), less);
  std::merge(kept.begin(), kept.end(), added.begin(), added.end(), std::back_inserter(out), less);
  return out;
}
}  // namespace

Datapath patch_datapath(const Datapath& before, const DatapathDiff& diff) {
  Datapath out;
  // A changed binding is in both lists: removed by its old fields, added
  // with the new ones.
  auto full_less = [](const Binding& a, const Binding& b) {
    return std::tie(a.key, a.mac, a.target, a.target_port, a.id, a.serving) <
           std::tie(b.key, b.mac, b.target, b.target_port, b.id, b.serving);
  };
  out.bindings = patched(before.bindings, diff.bindings_removed, diff.bindings_added, full_less);
  out.hosts = patched(before.hosts, diff.hosts_removed, diff.hosts_added);
  out.guard_macs = patched(before.guard_macs, diff.guard_macs_removed, diff.guard_macs_added);
  out.guard_vips = patched(before.guard_vips, diff.guard_vips_removed, diff.guard_vips_added);
  out.refused = patched(before.refused, diff.refused_removed, diff.refused_added);
  for (const auto& host : out.hosts) out.bridges.push_back(host.bridge);
  std::sort(out.bridges.begin(), out.bridges.end());
  out.bridges.erase(std::unique(out.bridges.begin(), out.bridges.end()), out.bridges.end());
  return out;
}

void set_refused(Datapath& next, std::vector<DeliveryKey> refused, const Datapath& before,
                 DatapathDiff& diff) {
  next.refused = std::move(refused);
  diff.refused_added.clear();
  diff.refused_removed.clear();
  std::set_difference(before.refused.begin(), before.refused.end(), next.refused.begin(),
                      next.refused.end(), std::back_inserter(diff.refused_removed));
  std::set_difference(next.refused.begin(), next.refused.end(), before.refused.begin(),
                      before.refused.end(), std::back_inserter(diff.refused_added));
}

}  // namespace hostlb
