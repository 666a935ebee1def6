#include "hostlb/policies/datapath.h"

#include <algorithm>
#include <bit>
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

// BindingKey's order with integer compares: the address as two big-endian
// words. Sorting 10,000 bindings by BindingKey itself (byte arrays, then
// strings) cost several milliseconds of every apply.
struct SortKey {
  uint8_t family;
  uint64_t high, low;
  uint32_t port_protocol;
  const std::string* backend;

  explicit SortKey(const BindingKey& key)
      : family(static_cast<uint8_t>(key.service.vip.family())),
        high(big_endian_word(key.service.vip.bytes().data())),
        low(big_endian_word(key.service.vip.bytes().data() + 8)),
        port_protocol(uint32_t{key.service.port} << 8 |
                      static_cast<uint32_t>(key.service.protocol)),
        backend(&key.backend) {}

  static uint64_t big_endian_word(const uint8_t* bytes) {
    uint64_t word = 0;
    for (int i = 0; i < 8; ++i) word = word << 8 | bytes[i];
    return word;
  }
  bool operator<(const SortKey& o) const {
    if (family != o.family) return family < o.family;
    if (high != o.high) return high < o.high;
    if (low != o.low) return low < o.low;
    if (port_protocol != o.port_protocol) return port_protocol < o.port_protocol;
    return *backend < *o.backend;
  }
};

}  // namespace

Datapath compile_datapath(const State& state, const BindingIds& previous, const MarkLayout& marks) {
  Datapath out;
  std::set<std::string> bridges;
  std::unordered_map<std::string_view, const Backend*> by_name;
  for (const auto& backend : state.backends) {
    for (const auto* addr : {&backend.ipv4, &backend.ipv6}) {
      if (*addr) out.hosts.push_back({backend.bridge, **addr, backend.mac, backend.name});
    }
    bridges.insert(backend.bridge);
    by_name.emplace(backend.name, &backend);
  }
  std::sort(out.hosts.begin(), out.hosts.end());
  out.bridges.assign(bridges.begin(), bridges.end());
  for (const auto& backend : state.backends) out.guard_macs.push_back(backend.mac);
  std::sort(out.guard_macs.begin(), out.guard_macs.end());
  for (const auto& service : state.services) out.guard_vips.push_back(service.key.vip);
  std::sort(out.guard_vips.begin(), out.guard_vips.end());
  out.guard_vips.erase(std::unique(out.guard_vips.begin(), out.guard_vips.end()),
                       out.guard_vips.end());

  std::vector<Binding> unsorted;
  for (const auto& service : state.services) {
    for (const auto& ref : service.backends) {
      auto backend = by_name.find(ref.name);
      if (backend == by_name.end()) continue;  // validation guarantees it exists
      const auto& target = backend->second->address_for(service.key.vip.family());
      if (!target) continue;  // validation guarantees it exists
      unsorted.push_back({{service.key, ref.name}, backend->second->mac, *target, ref.port, 0});
    }
  }
  std::vector<std::pair<SortKey, size_t>> order;
  order.reserve(unsorted.size());
  for (size_t i = 0; i < unsorted.size(); ++i) order.emplace_back(SortKey(unsorted[i].key), i);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  out.bindings.reserve(unsorted.size());
  for (const auto& [key, i] : order) out.bindings.push_back(std::move(unsorted[i]));

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
    while (known != previous.end() && known->first < binding.key) ++known;
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
    return std::tie(a.mac, a.target, a.target_port, a.id) <
           std::tie(b.mac, b.target, b.target_port, b.id);
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

void set_refused(Datapath& next, std::vector<RefuseKey> refused, const Datapath& before,
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
