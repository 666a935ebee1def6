#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/object.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string_view>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/gateway.h"
#include "hostlb/netlink/netlink_socket.h"
#include "hostlb/policies/selection.h"
#include "nft_internal.h"

namespace hostlb {
namespace {

using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using ObjPtr = std::unique_ptr<nftnl_obj, Deleter<nftnl_obj_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain_free>>;

std::string table_ref() { return std::string("netdev ") + kGatewayTable; }

std::string chain_of(const GatewayService& s) { return "svc_" + std::to_string(s.index); }

std::string entry_key(const ServiceKey& key) {
  return key.vip.str() + " . " + std::string(protocol_name(key.protocol)) + " . " +
         std::to_string(key.port);
}

std::string services_map(IpFamily family) {
  return family == IpFamily::kV4 ? "services4" : "services6";
}

// Above every row's mark (index << 16 | row, rows < 65536 - 14).
constexpr const char* kTrackedMark = "0xffffffff";
constexpr const char* kTrackSeed = "0x686c6232";  // "hlb2": not the rows' seed

std::string track_map(IpFamily family) { return family == IpFamily::kV4 ? "track4" : "track6"; }

void add_chain(std::string& out, const GatewayService& s, const GatewayConfig& config) {
  const std::string chain = "add rule " + table_ref() + " " + chain_of(s) + " ";
  const bool v4 = s.key.vip.is_v4();
  const char* ip = v4 ? "ip" : "ip6";
  const std::string flow = std::string(ip) + " saddr . th sport . " + ip + " daddr . th dport";
  const std::string map = "@" + track_map(s.key.vip.family());
  // nft 1.0.6 cannot write a map element whose key is longer than 16
  // bytes (an IPv6 4-tuple is 40): an IPv6 flow is tracked by a 32-bit hash
  // of its addresses (in skb->priority, cleared before it leaves) and its
  // ports; two flows share a key only with the same ports and hash.
  const std::string key = v4 ? flow : std::string("meta priority . th sport . th dport");
  const std::string forward = std::string(v4 ? "" : " meta priority set 0") +
                              " meta mark set 0 ether saddr set " + config.gateway_mac.str() +
                              " fwd to \"" + config.fabric_interface + "\"\n";
  char seed[11];
  std::snprintf(seed, sizeof seed, "0x%08x", kSelectionSeed);
  out += "add chain " + table_ref() + " " + chain_of(s) + "\n";
  if (!v4)
    out += chain + "meta priority set jhash ip6 saddr . ip6 daddr mod 4294967295 seed " +
           kTrackSeed + "\n";
  // A tracked flow keeps its backend, whatever its row says now; its last
  // packets (FIN, RST) shorten its life instead of deleting it, so that
  // the packets after them still find it. The lookup and the update are
  // rules of their own, joined by a mark no row has.
  out += chain + "ether daddr set " + key + " map " + map + " meta mark set " + kTrackedMark + "\n";
  if (s.key.protocol == Protocol::kTcp)
    out += chain + "meta mark " + kTrackedMark + " tcp flags & (fin | rst) != 0 update " + map +
           " { " + key + " timeout " + std::to_string(config.track_end_timeout_s) +
           "s : ether daddr }" + forward;
  out += chain + "meta mark " + kTrackedMark + " update " + map + " { " + key + " : ether daddr }" +
         forward;
  // The row, offset by the service's index: a key of the shared row map.
  out += chain + "meta mark set jhash " + flow + " mod " + std::to_string(s.rows) + " seed " +
         seed + " offset " + std::to_string(s.index << 16) + "\n";
  // A flow of a tracked row is tracked from the first packet seen; a full
  // map ends the rule before the second counter, and the next rule sends
  // the flow on untracked.
  out += chain + "meta mark @track counter name \"" + kTrackAttempts +
         "\" ether daddr set meta mark map @rows add " + map + " { " + key +
         " : ether daddr } counter name \"" + kTrackAdded + "\"" + forward;
  out += chain + "ether daddr set meta mark map @rows" + forward;
  // No row (no backend): nothing to send it to.
  out += chain + "drop\n";
}

}  // namespace

std::string render_gateway_skeleton(const GatewayDatapath& datapath, const GatewayConfig& config,
                                    const std::vector<std::string>& chains) {
  std::string out;
  const std::string t = table_ref();
  const std::string track_options = "size " + std::to_string(config.track_size) +
                                    "; flags dynamic,timeout; timeout " +
                                    std::to_string(config.track_timeout_s) + "s; }\n";
  // Created if missing, so that what follows finds everything it deletes;
  // the tracking maps and the counters stay (an existing map takes the new
  // size and timeout).
  out += "add table " + t + "\n";
  out += "add map " + t +
         " track4 { type ipv4_addr . inet_service . ipv4_addr . inet_service : ether_addr; " +
         track_options;
  out += "add map " + t + " track6 { type classid . inet_service . inet_service : ether_addr; " +
         track_options;
  out += "add counter " + t + " " + kTrackAttempts + "\n";
  out += "add counter " + t + " " + kTrackAdded + "\n";
  struct Set {
    const char* kind;
    const char* name;
    const char* type;
  };
  const Set sets[] = {{"map", "rows", "mark : ether_addr"},
                      {"set", "stamp", "mark"},
                      {"set", "track", "mark"},
                      {"map", "services4", "ipv4_addr . inet_proto . inet_service : verdict"},
                      {"map", "services6", "ipv6_addr . inet_proto . inet_service : verdict"}};
  auto add_sets = [&] {
    for (const auto& set : sets)
      out += std::string("add ") + set.kind + " " + t + " " + set.name + " { type " + set.type +
             "; }\n";
  };
  add_sets();
  // Then everything else goes: the rules, the verdict maps (they name the
  // chains), the chains, the other sets; and is made again.
  out += "flush table " + t + "\n";
  for (const auto& set : sets)
    if (std::string_view(set.name).starts_with("services"))
      out += std::string("delete map ") + t + " " + set.name + "\n";
  for (const auto& chain : chains) out += "delete chain " + t + " " + chain + "\n";
  for (const auto& set : sets)
    if (!std::string_view(set.name).starts_with("services"))
      out += std::string("delete ") + set.kind + " " + t + " " + set.name + "\n";
  add_sets();
  out += "add chain " + t + " ingress { type filter hook ingress device \"" +
         config.client_interface + "\" priority 0; policy accept; }\n";
  const std::string ingress = "add rule " + t + " ingress ";
  out += ingress + "meta protocol ip ip daddr . meta l4proto . th dport vmap @services4\n";
  out += ingress + "meta protocol ip6 ip6 daddr . meta l4proto . th dport vmap @services6\n";
  for (const auto& s : datapath.services) add_chain(out, s, config);
  return out;
}

std::string render_gateway_chains(const std::vector<GatewayService>& services,
                                  const GatewayConfig& config, bool add) {
  std::string out;
  for (const auto& s : services) {
    if (add) {
      add_chain(out, s, config);
    } else {
      out += "flush chain " + table_ref() + " " + chain_of(s) + "\n";
      out += "delete chain " + table_ref() + " " + chain_of(s) + "\n";
    }
  }
  return out;
}

std::string render_gateway_entries(const std::vector<GatewayService>& services, bool add) {
  std::string out;
  for (const auto& s : services)
    out += std::string(add ? "add" : "delete") + " element " + table_ref() + " " +
           services_map(s.key.vip.family()) + " { " + entry_key(s.key) +
           (add ? " : jump " + chain_of(s) : "") + " }\n";
  return out;
}

std::vector<GatewayDiff::Row> rows_of(const std::vector<GatewayService>& services, bool add) {
  std::vector<GatewayDiff::Row> out;
  for (const auto& s : services) {
    for (uint32_t row = 0; row < s.owner.size(); ++row) {
      const MacAddress mac = s.macs[s.owner[row]];
      out.push_back({s.mark(row), add ? std::nullopt : std::optional(mac),
                     add ? std::optional(mac) : std::nullopt});
    }
  }
  return out;
}

uint32_t gateway_stamp(const GatewayDatapath& datapath) {
  return static_cast<uint32_t>(std::stoul(gateway_digest(datapath).substr(0, 8), nullptr, 16));
}

std::vector<NftBatch> encode_gateway_rows(const std::vector<GatewayDiff::Row>& rows,
                                          uint32_t first_seq, size_t per_batch, StampChange stamp,
                                          const TrackChange& track) {
  std::vector<NftBatch> out;
  constexpr size_t kPerMessage = 512;  // elements: messages stay far below 64 KiB
  uint32_t seq = first_seq;
  const bool stamping = stamp.before != stamp.after;
  const bool tracking = !track.added.empty() || !track.removed.empty();
  for (size_t begin = 0; begin < rows.size() || (begin == 0 && (stamping || tracking));
       begin += per_batch) {
    const size_t end = std::min(rows.size(), begin + per_batch);
    const bool first = begin == 0, last = begin + per_batch >= rows.size();
    NftBatch batch;
    batch.first_seq = seq;
    size_t used = 0;
    auto room = [&](size_t n) {
      if (batch.bytes.size() < used + n)
        batch.bytes.resize(std::max(batch.bytes.size() * 2, used + n));
      return batch.bytes.data() + used;
    };
    auto put = [&](const nlmsghdr* nlh) { used += MNL_ALIGN(nlh->nlmsg_len); };
    put(nftnl_batch_begin(room(256), seq++));
    size_t last_command = 0;
    // One message adding (or deleting) up to kPerMessage elements of a set,
    // taken from `next` until it returns false.
    using Element = std::pair<uint32_t, const MacAddress*>;  // key (host order), data
    auto message = [&](const char* set_name, bool add, const std::string& what,
                       const std::function<std::optional<Element>()>& next) {
      SetPtr set(nftnl_set_alloc());
      nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_NETDEV);
      nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kGatewayTable);
      nftnl_set_set_str(set.get(), NFTNL_SET_NAME, set_name);
      size_t count = 0;
      uint32_t first_key = 0;
      while (count < kPerMessage) {
        const auto e = next();
        if (!e) break;
        nftnl_set_elem* elem = nftnl_set_elem_alloc();
        nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, &e->first, sizeof e->first);
        if (add && e->second)
          nftnl_set_elem_set(elem, NFTNL_SET_ELEM_DATA, e->second->bytes().data(), 6);
        nftnl_set_elem_add(set.get(), elem);
        if (count++ == 0) first_key = e->first;
      }
      if (count == 0) return false;
      nlmsghdr* nlh = nftnl_nlmsg_build_hdr(
          room(count * 64 + 512), add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, NFPROTO_NETDEV,
          add ? NLM_F_CREATE | NLM_F_EXCL : 0, seq);
      nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
      char text[128];
      std::snprintf(text, sizeof text, "%s %zu %s from 0x%08x", add ? "adding" : "deleting", count,
                    what.c_str(), first_key);
      batch.operations[seq] = text;
      batch.last_seq = seq++;
      ++batch.messages;
      last_command = used;
      put(nlh);
      return true;
    };
    auto marks = [&](const char* set_name, bool add, const std::vector<uint32_t>& keys) {
      size_t at = 0;
      while (message(set_name, add, "tracked gateway rows", [&]() -> std::optional<Element> {
        if (at == keys.size()) return std::nullopt;
        return Element{keys[at++], nullptr};
      })) {
      }
    };
    // Rows flagged for tracking before any row changes owner: a flow of a
    // row that a horizon backend takes is tracked on its old owner first.
    if (first) marks("track", true, track.added);
    // Deletions, then additions: a row that changes owner is both.
    for (const bool add : {false, true}) {
      size_t at = begin;
      while (message("rows", add, "gateway rows", [&]() -> std::optional<Element> {
        for (; at < end; ++at) {
          const auto& r = rows[at];
          const auto& mac = add ? r.after : r.before;
          if (mac) return Element{rows[at++].mark, &*mac};
        }
        return std::nullopt;
      })) {
      }
    }
    if (last) marks("track", false, track.removed);
    for (const bool add : {false, true}) {
      const auto& value = add ? stamp.after : stamp.before;
      if (!last || !stamping || !value) continue;
      bool once = true;
      message("stamp", add, "gateway table stamp", [&]() -> std::optional<Element> {
        if (!once) return std::nullopt;
        once = false;
        return Element{*value, nullptr};
      });
    }
    if (batch.messages > 0)
      reinterpret_cast<nlmsghdr*>(batch.bytes.data() + last_command)->nlmsg_flags |= NLM_F_ACK;
    put(nftnl_batch_end(room(256), seq++));
    batch.bytes.resize(used);
    if (batch.messages > 0) out.push_back(std::move(batch));
  }
  return out;
}

namespace {

class KernelRowScan final : public GatewayRowScan {
 public:
  KernelRowScan()
      : socket_(NETLINK_NETFILTER, "opening a socket to read the gateway's rows"),
        seq_(socket_.next_seq()) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    SetPtr set(nftnl_set_alloc());
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_NETDEV);
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kGatewayTable);
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, "rows");
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_NETDEV, NLM_F_DUMP, seq_);
    nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
    socket_.send(kWhat, {buf.data(), nlh->nlmsg_len});
  }

  bool next(const std::function<void(uint32_t, const MacAddress&)>& each) override {
    if (ended_) return false;
    // ENOENT: no table (or no map): nothing to read.
    ended_ = socket_
                 .read_answer_part(
                     kWhat, seq_,
                     [&](const nlmsghdr* nlh) {
                       if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted_ = true;
                       for_each_set_element(nlh, [&](const SetElement& e) {
                         if (e.key.size() != 4 || e.data.size() < 6) return;
                         uint32_t mark = 0;
                         std::memcpy(&mark, e.key.data(), 4);  // host order, as meta mark is
                         std::array<uint8_t, 6> mac{};
                         std::memcpy(mac.data(), e.data.data(), 6);
                         each(mark, MacAddress(mac));
                       });
                       return true;
                     },
                     ENOENT)
                 .has_value();
    return true;
  }

  bool interrupted() const override { return interrupted_; }

 private:
  static constexpr const char* kWhat = "reading the gateway's rows";
  netlink::Socket socket_;
  uint32_t seq_;
  bool ended_ = false, interrupted_ = false;
};

class KernelGateway final : public GatewayRuleset {
 public:
  KernelGateway() : generation_([this]() -> netlink::Socket& { return socket(); }) {}

  void replace(const GatewayDatapath& datapath, const GatewayConfig& config) override {
    run_nft_script_in_helper("building nftables table " + table_ref(),
                             render_gateway_skeleton(datapath, config, chains()));
    stamp_.reset();
    send_rows(rows_of(datapath.services, true), std::nullopt,
              {tracked_marks(datapath.services), {}});
    if (!datapath.services.empty())
      run_nft_script_in_helper("adding the gateway's services to their verdict maps",
                               render_gateway_entries(datapath.services, true));
    // Last: a table with a stamp is complete.
    send_rows({}, gateway_stamp(datapath));
    generation_.rebase();
  }

  void apply(const GatewayDiff& diff, const GatewayConfig& config, uint32_t new_stamp) override {
    if (!diff.services_removed.empty()) {
      run_nft_script_in_helper(
          "removing " + std::to_string(diff.services_removed.size()) + " services from the gateway",
          render_gateway_entries(diff.services_removed, false) +
              render_gateway_chains(diff.services_removed, config, false));
      send_rows(rows_of(diff.services_removed, false), std::nullopt,
                {{}, tracked_marks(diff.services_removed)});
    }
    if (!diff.services_added.empty()) {
      run_nft_script_in_helper(
          "adding " + std::to_string(diff.services_added.size()) + " services to the gateway",
          render_gateway_chains(diff.services_added, config, true));
      send_rows(rows_of(diff.services_added, true), std::nullopt,
                {tracked_marks(diff.services_added), {}});
      run_nft_script_in_helper("adding the gateway's new services to their verdict maps",
                               render_gateway_entries(diff.services_added, true));
    }
    if (!stamp_) stamp_ = stamp();
    send_rows(diff.rows, new_stamp, {diff.track_added, diff.track_removed});
    // Scripts may commit more than once: after them, a new baseline; a
    // change of rows alone counted its own batches.
    if (!diff.services_added.empty() || !diff.services_removed.empty()) generation_.rebase();
  }

  bool changed_by_others() override { return generation_.changed_by_others(); }

  std::unique_ptr<GatewayRowScan> scan_rows() override { return std::make_unique<KernelRowScan>(); }

  std::optional<uint32_t> stamp() override {
    std::optional<uint32_t> out;
    const bool found = get_elements("reading the gateway table's stamp", "stamp", std::nullopt,
                                    [&](Bytes key, Bytes) {
                                      if (key.size() == 4)
                                        std::memcpy(&out.emplace(), key.data(), 4);
                                    });
    if (!found) return std::nullopt;
    stamp_ = out;
    return out;
  }

  void remove() override {
    run_nft_script_in_helper("removing nftables table " + table_ref(),
                             "add table " + table_ref() + "\ndelete table " + table_ref() + "\n");
    stamp_.reset();
    generation_.rebase();
  }

  TrackStats track_stats() override {
    TrackStats out;
    for (const char* map : {"track4", "track6"})
      get_elements("reading the gateway's tracked flows", map, std::nullopt,
                   [&](Bytes, Bytes) { ++out.entries; });
    out.attempts = counter(kTrackAttempts);
    out.added = counter(kTrackAdded);
    return out;
  }

  // The maps' own garbage collection forgets expired flows.
  size_t sweep_tracked() override { return 0; }
  // A dump of N rows costs N^2 / 1,000 element visits (each datagram walks
  // the map from its start): 262,144 rows take about a second.
  size_t max_audited_rows() const override { return 262144; }

  std::vector<uint32_t> tracked_rows() override {
    std::vector<uint32_t> out;
    get_elements("reading the gateway's tracked rows", "track", std::nullopt,
                 [&](Bytes key, Bytes) {
                   if (key.size() == 4) std::memcpy(&out.emplace_back(), key.data(), 4);
                 });
    std::sort(out.begin(), out.end());
    return out;
  }

  std::optional<MacAddress> row(uint32_t mark) override {
    char what[64];
    std::snprintf(what, sizeof what, "reading gateway row 0x%08x", mark);
    std::optional<MacAddress> out;
    get_elements(what, "rows", mark, [&](Bytes, Bytes data) {
      if (data.size() < 6) return;
      std::array<uint8_t, 6> mac{};
      std::memcpy(mac.data(), data.data(), 6);
      out = MacAddress(mac);
    });
    return out;
  }

 private:
  // The elements of one of the table's sets (all of them, or the one with
  // `key`) through `each(key, data)`. False if the table, the set or the
  // element does not exist (ENOENT).
  using Bytes = std::span<const uint8_t>;
  bool get_elements(const std::string& what, const char* set_name, std::optional<uint32_t> key,
                    const std::function<void(Bytes key, Bytes data)>& each) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    netlink::Socket& s = socket();
    const uint32_t seq = s.next_seq();
    SetPtr set(nftnl_set_alloc());
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_NETDEV);
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kGatewayTable);
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, set_name);
    if (key) {
      nftnl_set_elem* elem = nftnl_set_elem_alloc();
      nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, &*key, sizeof *key);
      nftnl_set_elem_add(set.get(), elem);
    }
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_NETDEV,
                                          key ? NLM_F_ACK : NLM_F_DUMP, seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
    const int error = s.request(
        what, {buf.data(), nlh->nlmsg_len}, seq,
        [&](const nlmsghdr* reply) {
          for_each_set_element(reply, [&](const SetElement& e) { each(e.key, e.data); });
          return true;
        },
        ENOENT);
    return error != ENOENT;
  }

  // A named counter's packets (0 if there is none).
  uint64_t counter(const char* name) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    netlink::Socket& s = socket();
    const uint32_t seq = s.next_seq();
    ObjPtr obj(nftnl_obj_alloc());
    nftnl_obj_set_u32(obj.get(), NFTNL_OBJ_FAMILY, NFPROTO_NETDEV);
    nftnl_obj_set_str(obj.get(), NFTNL_OBJ_TABLE, kGatewayTable);
    nftnl_obj_set_str(obj.get(), NFTNL_OBJ_NAME, name);
    nftnl_obj_set_u32(obj.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETOBJ, NFPROTO_NETDEV, NLM_F_ACK, seq);
    nftnl_obj_nlmsg_build_payload(nlh, obj.get());
    uint64_t packets = 0;
    s.request(
        std::string("reading the gateway's counter ") + name, {buf.data(), nlh->nlmsg_len}, seq,
        [&](const nlmsghdr* reply) {
          ObjPtr got(nftnl_obj_alloc());
          if (nftnl_obj_nlmsg_parse(reply, got.get()) >= 0)
            packets = nftnl_obj_get_u64(got.get(), NFTNL_OBJ_CTR_PKTS);
          return true;
        },
        ENOENT);
    return packets;
  }

  // The names of the table's chains (none without a table).
  std::vector<std::string> chains() {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    netlink::Socket& s = socket();
    const uint32_t seq = s.next_seq();
    ChainPtr chain(nftnl_chain_alloc());
    nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_FAMILY, NFPROTO_NETDEV);
    nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TABLE, kGatewayTable);
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETCHAIN, NFPROTO_NETDEV, NLM_F_DUMP, seq);
    nftnl_chain_nlmsg_build_payload(nlh, chain.get());
    std::vector<std::string> out;
    s.request(
        "listing the chains of nftables table " + table_ref(), {buf.data(), nlh->nlmsg_len}, seq,
        [&](const nlmsghdr* reply) {
          ChainPtr got(nftnl_chain_alloc());
          if (nftnl_chain_nlmsg_parse(reply, got.get()) >= 0 &&
              std::strcmp(nftnl_chain_get_str(got.get(), NFTNL_CHAIN_TABLE), kGatewayTable) == 0)
            out.emplace_back(nftnl_chain_get_str(got.get(), NFTNL_CHAIN_NAME));
          return true;
        },
        ENOENT);
    return out;
  }

  netlink::Socket& socket() {
    if (!socket_)
      socket_ = std::make_unique<netlink::Socket>(NETLINK_NETFILTER, "opening the gateway socket");
    return *socket_;
  }

  // Rows and tracked rows, and with the last batch the new stamp (if given).
  void send_rows(const std::vector<GatewayDiff::Row>& rows,
                 std::optional<uint32_t> new_stamp = std::nullopt, const TrackChange& track = {}) {
    const StampChange change{stamp_, new_stamp ? new_stamp : stamp_};
    if (rows.empty() && change.before == change.after && track.added.empty() &&
        track.removed.empty())
      return;
    netlink::Socket& s = socket();
    for (const NftBatch& batch : encode_gateway_rows(rows, s.next_seq(), 65536, change, track)) {
      s.used_seqs_through(batch.last_seq + 1);
      send_nft_batch(s, batch);
      generation_.own_commit();
    }
    stamp_ = change.after;
  }

  std::unique_ptr<netlink::Socket> socket_;
  std::optional<uint32_t> stamp_;  // as the kernel holds it, when known
  GenerationWatch generation_;
};

}  // namespace

std::unique_ptr<GatewayRuleset> make_kernel_gateway() { return std::make_unique<KernelGateway>(); }

std::unique_ptr<GatewayRuleset> make_gateway(const GatewayConfig& config) {
  return config.engine == GatewayEngine::kBpf ? make_bpf_gateway(config) : make_kernel_gateway();
}

std::optional<GatewayEngine> parse_gateway_engine(std::string_view name) {
  if (name == "nft") return GatewayEngine::kNft;
  if (name == "bpf") return GatewayEngine::kBpf;
  return std::nullopt;
}

const char* engine_name(GatewayEngine engine) {
  return engine == GatewayEngine::kBpf ? "bpf" : "nft";
}

}  // namespace hostlb
