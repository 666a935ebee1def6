#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/gateway.h"
#include "hostlb/netlink/netlink_socket.h"
#include "hostlb/policies/selection.h"
#include "nft_internal.h"

namespace hostlb {
namespace {

using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;

std::string table_ref() { return std::string("netdev ") + kGatewayTable; }

std::string chain_of(const GatewayService& s) { return "svc_" + std::to_string(s.index); }

std::string entry_key(const ServiceKey& key) {
  return key.vip.str() + " . " + std::string(protocol_name(key.protocol)) + " . " +
         std::to_string(key.port);
}

std::string services_map(IpFamily family) {
  return family == IpFamily::kV4 ? "services4" : "services6";
}

void add_chain(std::string& out, const GatewayService& s, const GatewayConfig& config) {
  const std::string chain = "add rule " + table_ref() + " " + chain_of(s) + " ";
  const char* ip = s.key.vip.is_v4() ? "ip" : "ip6";
  char seed[11];
  std::snprintf(seed, sizeof seed, "0x%08x", kSelectionSeed);
  out += "add chain " + table_ref() + " " + chain_of(s) + "\n";
  // The row, offset by the service's index: a key of the shared row map.
  out += chain + "meta mark set jhash " + ip + " saddr . th sport . " + ip +
         " daddr . th dport mod " + std::to_string(s.rows) + " seed " + seed + " offset " +
         std::to_string(s.index << 16) + "\n";
  out += chain + "ether daddr set meta mark map @rows meta mark set 0 ether saddr set " +
         config.gateway_mac.str() + " fwd to \"" + config.fabric_interface + "\"\n";
  // No row (no backend): nothing to send it to.
  out += chain + "drop\n";
}

}  // namespace

std::string render_gateway_skeleton(const GatewayDatapath& datapath, const GatewayConfig& config) {
  std::string out;
  // Created, then deleted and created again: replaces whatever was there.
  out += "add table " + table_ref() + "\n";
  out += "delete table " + table_ref() + "\n";
  out += "add table " + table_ref() + "\n";
  out += "add map " + table_ref() + " rows { type mark : ether_addr; }\n";
  out += "add set " + table_ref() + " stamp { type mark; }\n";
  out += "add map " + table_ref() +
         " services4 { type ipv4_addr . inet_proto . inet_service : verdict; }\n";
  out += "add map " + table_ref() +
         " services6 { type ipv6_addr . inet_proto . inet_service : verdict; }\n";
  out += "add chain " + table_ref() + " ingress { type filter hook ingress device \"" +
         config.client_interface + "\" priority 0; policy accept; }\n";
  const std::string ingress = "add rule " + table_ref() + " ingress ";
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
                                          uint32_t first_seq, size_t per_batch, StampChange stamp) {
  std::vector<NftBatch> out;
  constexpr size_t kPerMessage = 512;  // elements: messages stay far below 64 KiB
  uint32_t seq = first_seq;
  const bool stamping = stamp.before != stamp.after;
  for (size_t begin = 0; begin < rows.size() || (begin == 0 && stamping); begin += per_batch) {
    const size_t end = std::min(rows.size(), begin + per_batch);
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
    // Deletions, then additions: a row that changes owner is both.
    for (const bool add : {false, true}) {
      for (size_t at = begin; at < end;) {
        SetPtr set(nftnl_set_alloc());
        nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_NETDEV);
        nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kGatewayTable);
        nftnl_set_set_str(set.get(), NFTNL_SET_NAME, "rows");
        size_t count = 0;
        uint32_t first_mark = 0;
        for (; at < end && count < kPerMessage; ++at) {
          const auto& r = rows[at];
          const auto& mac = add ? r.after : r.before;
          if (!mac) continue;
          nftnl_set_elem* elem = nftnl_set_elem_alloc();
          const uint32_t key = r.mark;  // host order, as meta mark is
          nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, &key, sizeof key);
          if (add) nftnl_set_elem_set(elem, NFTNL_SET_ELEM_DATA, mac->bytes().data(), 6);
          nftnl_set_elem_add(set.get(), elem);
          if (count++ == 0) first_mark = r.mark;
        }
        if (count == 0) continue;
        char* at_bytes = room(count * 64 + 512);
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(at_bytes, add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM,
                                  NFPROTO_NETDEV, add ? NLM_F_CREATE | NLM_F_EXCL : 0, seq);
        nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
        char what[96];
        std::snprintf(what, sizeof what, "%s %zu gateway rows from mark 0x%08x",
                      add ? "adding" : "deleting", count, first_mark);
        batch.operations[seq] = what;
        batch.last_seq = seq++;
        ++batch.messages;
        last_command = used;
        put(nlh);
      }
    }
    const bool last = begin + per_batch >= rows.size();
    for (const bool add : {false, true}) {
      const auto& value = add ? stamp.after : stamp.before;
      if (!last || !stamping || !value) continue;
      SetPtr set(nftnl_set_alloc());
      nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_NETDEV);
      nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kGatewayTable);
      nftnl_set_set_str(set.get(), NFTNL_SET_NAME, "stamp");
      nftnl_set_elem* elem = nftnl_set_elem_alloc();
      const uint32_t key = *value;
      nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, &key, sizeof key);
      nftnl_set_elem_add(set.get(), elem);
      nlmsghdr* nlh =
          nftnl_nlmsg_build_hdr(room(512), add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM,
                                NFPROTO_NETDEV, add ? NLM_F_CREATE | NLM_F_EXCL : 0, seq);
      nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
      char what[64];
      std::snprintf(what, sizeof what, "%s the gateway table's stamp %08x",
                    add ? "setting" : "clearing", key);
      batch.operations[seq] = what;
      batch.last_seq = seq++;
      ++batch.messages;
      last_command = used;
      put(nlh);
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
                             render_gateway_skeleton(datapath, config));
    stamp_.reset();
    send_rows(rows_of(datapath.services, true));
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
      send_rows(rows_of(diff.services_removed, false));
    }
    if (!diff.services_added.empty()) {
      run_nft_script_in_helper(
          "adding " + std::to_string(diff.services_added.size()) + " services to the gateway",
          render_gateway_chains(diff.services_added, config, true));
      send_rows(rows_of(diff.services_added, true));
      run_nft_script_in_helper("adding the gateway's new services to their verdict maps",
                               render_gateway_entries(diff.services_added, true));
    }
    if (!stamp_) stamp_ = stamp();
    send_rows(diff.rows, new_stamp);
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

  netlink::Socket& socket() {
    if (!socket_)
      socket_ = std::make_unique<netlink::Socket>(NETLINK_NETFILTER, "opening the gateway socket");
    return *socket_;
  }

  // Rows, and with the last batch the new stamp (if given).
  void send_rows(const std::vector<GatewayDiff::Row>& rows,
                 std::optional<uint32_t> new_stamp = std::nullopt) {
    const StampChange change{stamp_, new_stamp ? new_stamp : stamp_};
    if (rows.empty() && change.before == change.after) return;
    netlink::Socket& s = socket();
    for (const NftBatch& batch : encode_gateway_rows(rows, s.next_seq(), 65536, change)) {
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

}  // namespace hostlb
