// Reading the table's counters: the per-element counters of the refuse and
// miss sets and the named counters, through libnftnl dumps (no libnftables cache,
// no helper process: this runs every time the metrics are written).
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/netlink_socket.h"
#include "nft_internal.h"
#include "nft_names.h"

namespace hostlb {
namespace {

using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using ObjPtr = std::unique_ptr<nftnl_obj, Deleter<nftnl_obj_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule_free>>;

// Sends one request and runs `cb` on every answer. Returns false if the
// kernel said ENOENT (no such table, set or object).
bool query(const std::string& what, const nlmsghdr* request, mnl_cb_t cb, void* data) {
  netlink::Socket socket(NETLINK_NETFILTER, what);
  const int error = socket.request(
      what, {reinterpret_cast<const char*>(request), request->nlmsg_len}, request->nlmsg_seq,
      [&](const nlmsghdr* nlh) {
        cb(nlh, data);
        return true;
      },
      ENOENT);
  return error != ENOENT;
}

// Dumps the elements of one of hostlb's sets or maps through `cb`. False
// if the kernel said ENOENT (no such table or set).
bool dump_set(const std::string& what, const std::string& name, mnl_cb_t cb, void* data) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  SetPtr set(nftnl_set_alloc());
  nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
  nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kNftTable);
  nftnl_set_set_str(set.get(), NFTNL_SET_NAME, name.c_str());
  nlmsghdr* nlh =
      nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 1);
  nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
  return query(what + " " + name, nlh, cb, data);
}

// A service key as the sets store it: address, l4proto padded to 4 bytes,
// port padded to 4 bytes (the admission sets' keys, and the tail of a
// delivery key).
std::optional<ServiceKey> parse_service(IpFamily family, const uint8_t* key, uint32_t len) {
  const size_t addr_len = family == IpFamily::kV4 ? 4 : 16;
  if (len != addr_len + 4 + 4) return std::nullopt;
  ServiceKey out;
  out.vip = IpAddress::from_bytes(family, key);
  const uint8_t proto = key[addr_len];
  if (proto != 6 && proto != 17) return std::nullopt;
  out.protocol = proto == 6 ? Protocol::kTcp : Protocol::kUdp;
  out.port = static_cast<uint16_t>(key[addr_len + 4] << 8 | key[addr_len + 5]);
  return out;
}

// The inverse of nft_names::element_key: the MAC padded to 8 bytes, then
// the service.
std::optional<DeliveryKey> parse_delivery(IpFamily family, const uint8_t* key, uint32_t len) {
  if (len < 8) return std::nullopt;
  auto service = parse_service(family, key + 8, len - 8);
  if (!service) return std::nullopt;
  std::array<uint8_t, 6> mac_bytes;
  std::memcpy(mac_bytes.data(), key, 6);
  return DeliveryKey{MacAddress(mac_bytes), *service};
}

int counter_of(nftnl_expr* expr, void* data) {
  const char* name = nftnl_expr_get_str(expr, NFTNL_EXPR_NAME);
  if (name != nullptr && std::strcmp(name, "counter") == 0)
    *static_cast<uint64_t*>(data) += nftnl_expr_get_u64(expr, NFTNL_EXPR_CTR_PACKETS);
  return 0;
}

template <typename Key>
struct KeyDump {
  IpFamily family;
  std::map<Key, uint64_t>* out;
};

// Each element's key, parsed by `parse`, with the packets of its counter
// (0 for elements without one).
template <typename Key, std::optional<Key> (*parse)(IpFamily, const uint8_t*, uint32_t)>
int counted(const nlmsghdr* nlh, void* data) {
  auto* dump = static_cast<KeyDump<Key>*>(data);
  for_each_set_element(nlh, [&](const SetElement& e) {
    auto parsed = parse(dump->family, e.key.data(), static_cast<uint32_t>(e.key.size()));
    if (!parsed) return;
    uint64_t packets = 0;
    nftnl_set_elem_expr_foreach(e.raw, counter_of, &packets);
    (*dump->out)[*parsed] += packets;
  });
  return MNL_CB_OK;
}
constexpr auto counted_element = counted<DeliveryKey, parse_delivery>;
constexpr auto counted_service = counted<ServiceKey, parse_service>;

int named_counter(const nlmsghdr* nlh, void* data) {
  ObjPtr obj(nftnl_obj_alloc());
  if (nftnl_obj_nlmsg_parse(nlh, obj.get()) < 0) return MNL_CB_OK;
  *static_cast<uint64_t*>(data) = nftnl_obj_get_u64(obj.get(), NFTNL_OBJ_CTR_PKTS);
  return MNL_CB_OK;
}

using Bytes = std::vector<uint8_t>;

// Every element of a set or map: key -> data (empty for a set).
int raw_element(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<std::map<Bytes, Bytes>*>(data);
  for_each_set_element(nlh, [&](const SetElement& e) {
    (*out)[Bytes(e.key.begin(), e.key.end())] = Bytes(e.data.begin(), e.data.end());
  });
  return MNL_CB_OK;
}

int count_rule(const nlmsghdr* nlh, void* data) {
  RulePtr rule(nftnl_rule_alloc());
  if (nftnl_rule_nlmsg_parse(nlh, rule.get()) < 0) return MNL_CB_OK;
  const char* table = nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE);
  const char* chain = nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN);
  if (table != nullptr && chain != nullptr && std::strcmp(table, kNftTable) == 0)
    ++(*static_cast<std::map<std::string, size_t>*>(data))[chain];
  return MNL_CB_OK;
}

}  // namespace

void for_each_set_element(const nlmsghdr* nlh, const std::function<void(const SetElement&)>& each) {
  SetPtr set(nftnl_set_alloc());
  if (nftnl_set_elems_nlmsg_parse(nlh, set.get()) < 0) return;
  nftnl_set_elems_iter* iter = nftnl_set_elems_iter_create(set.get());
  for (nftnl_set_elem* e = nftnl_set_elems_iter_next(iter); e != nullptr;
       e = nftnl_set_elems_iter_next(iter)) {
    uint32_t key_len = 0, data_len = 0;
    const auto* key =
        static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &key_len));
    if (key == nullptr) continue;
    const uint8_t* data = nullptr;
    if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_DATA))
      data = static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_DATA, &data_len));
    each({{key, key_len}, {data, data ? data_len : 0}, e});
  }
  nftnl_set_elems_iter_destroy(iter);
}

std::optional<std::string> find_nft_difference(const Datapath& desired, const MarkLayout& marks,
                                               RulesetPolicies policies) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  uint32_t seq = 1;
  std::map<std::string, size_t> rules;
  nlmsghdr* nlh =
      nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, seq++);
  RulePtr filter(nftnl_rule_alloc());
  nftnl_rule_set_str(filter.get(), NFTNL_RULE_TABLE, kNftTable);
  nftnl_rule_nlmsg_build_payload(nlh, filter.get());
  if (!query("listing the rules of table hostlb", nlh, count_rule, &rules))
    return "table inet hostlb is missing";
  for (const auto& [chain, count] :
       rules_per_chain(render_full_ruleset(Datapath{}, marks, policies)))
    if (rules[chain] != count)
      return "chain " + chain + " has " + std::to_string(rules[chain]) + " rules, not " +
             std::to_string(count);

  auto elements = [&](const std::string& name) -> std::optional<std::map<Bytes, Bytes>> {
    std::map<Bytes, Bytes> out;
    if (!dump_set("listing the elements of", name, raw_element, &out)) return std::nullopt;
    return out;
  };
  auto compare = [&](const std::string& name,
                     const std::map<Bytes, Bytes>& want) -> std::optional<std::string> {
    const auto have = elements(name);
    if (!have) return name + " is missing";
    if (*have == want) return std::nullopt;
    size_t missing = 0, wrong = 0, extra = 0;
    for (const auto& [key, data] : want) {
      auto it = have->find(key);
      if (it == have->end())
        ++missing;
      else if (it->second != data)
        ++wrong;
    }
    for (const auto& [key, data] : *have) extra += !want.count(key);
    return name + ": " + std::to_string(missing) + " elements missing, " + std::to_string(wrong) +
           " with other data, " + std::to_string(extra) + " not hostlbd's";
  };
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    std::map<Bytes, Bytes> targets, identities, refused, vips;
    for (const auto& b : desired.bindings) {
      if (b.key.service.vip.family() != family) continue;
      if (!b.serving) {
        refused[nft_names::element_key(b.mac, b.key.service)] = {};
        continue;
      }
      targets[nft_names::element_key(b)] = nft_names::target_data(b);
      const uint32_t mark = marks.mark_for(b.id);  // host order, as ct mark is
      const auto* bytes = reinterpret_cast<const uint8_t*>(&mark);
      identities[nft_names::element_key(b)] = Bytes(bytes, bytes + sizeof mark);
    }
    for (const auto& k : desired.refused)
      if (k.service.vip.family() == family) refused[nft_names::element_key(k.mac, k.service)] = {};
    for (const auto& vip : desired.guard_vips)
      if (vip.family() == family)
        vips[Bytes(vip.bytes().begin(), vip.bytes().begin() + vip.size())] = {};
    for (const auto& [name, want] : {std::pair{nft_names::targets_map(family), &targets},
                                     std::pair{nft_names::marks_map(family), &identities},
                                     std::pair{nft_names::refuse_set(family), &refused},
                                     std::pair{nft_names::guard_vips(family), &vips}})
      if (auto d = compare(name, *want)) return d;
  }
  std::map<Bytes, Bytes> macs;
  for (const auto& mac : desired.guard_macs)
    macs[Bytes(mac.bytes().begin(), mac.bytes().end())] = {};
  return compare(nft_names::kGuardMacs, macs);
}

NftRuleset::Counters read_nft_counters() {
  NftRuleset::Counters out;
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  uint32_t seq = 1;
  auto read_set = [&](const std::string& name, IpFamily family,
                      std::map<DeliveryKey, uint64_t>& into) {
    KeyDump<DeliveryKey> dump{family, &into};
    dump_set("reading the counters of set", name, counted_element, &dump);
  };
  auto read_counter = [&](const char* name, uint64_t& into) {
    ObjPtr obj(nftnl_obj_alloc());
    nftnl_obj_set_u32(obj.get(), NFTNL_OBJ_FAMILY, NFPROTO_INET);
    nftnl_obj_set_str(obj.get(), NFTNL_OBJ_TABLE, kNftTable);
    nftnl_obj_set_str(obj.get(), NFTNL_OBJ_NAME, name);
    nftnl_obj_set_u32(obj.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETOBJ, NFPROTO_INET, NLM_F_ACK, seq++);
    nftnl_obj_nlmsg_build_payload(nlh, obj.get());
    query(std::string("reading counter ") + name, nlh, named_counter, &into);
  };
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    read_set(nft_names::refuse_set(family), family, out.refused);
    read_set(nft_names::miss_set(family), family, out.misses_by_key);
    KeyDump<ServiceKey> limited{family, &out.limited_by_service};
    dump_set("reading the counters of set", nft_names::limited_set(family), counted_service,
             &limited);
  }
  read_counter(nft_names::kGuardCounter, out.guard_drops);
  read_counter(nft_names::kMissCounter, out.misses);
  read_counter(nft_names::kLimitedCounter, out.limited);
  return out;
}

NftRuleset::Inventory read_nft_inventory() {
  NftRuleset::Inventory out;
  bool all_found = true;
  auto read_keys = [&](const std::string& name, IpFamily family, std::set<DeliveryKey>& into) {
    std::map<DeliveryKey, uint64_t> keys;
    KeyDump<DeliveryKey> dump{family, &keys};
    if (!dump_set("listing the elements of map", name, counted_element, &dump)) all_found = false;
    for (const auto& [key, packets] : keys) into.insert(key);
  };
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    read_keys(nft_names::targets_map(family), family, out.targets);
    read_keys(nft_names::marks_map(family), family, out.identities);
    read_keys(nft_names::refuse_set(family), family, out.refused);
  }
  out.table = all_found;
  return out;
}

}  // namespace hostlb
