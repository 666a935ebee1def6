#include "hostlb/netlink/nft_batch.h"

#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <memory>
#include <set>
#include <stdexcept>

#include "hostlb/netlink/nft.h"
#include "nft_internal.h"
#include "nft_names.h"

namespace hostlb {
namespace {

using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;

// Grows a buffer of netlink messages; each message is built in place.
class BatchWriter {
 public:
  explicit BatchWriter(NftBatch& batch) : batch_(batch) {}

  char* next() {
    constexpr size_t kMaxMessage = 8192;  // far above any message built here
    if (batch_.bytes.size() < used_ + kMaxMessage)
      batch_.bytes.resize(std::max(batch_.bytes.size() * 2, used_ + kMaxMessage));
    return batch_.bytes.data() + used_;
  }
  void commit(const nlmsghdr* nlh) { used_ += MNL_ALIGN(nlh->nlmsg_len); }
  void finish() { batch_.bytes.resize(used_); }

 private:
  NftBatch& batch_;
  size_t used_ = 0;
};

class Encoder {
 public:
  Encoder(NftBatch& batch, const MarkLayout& marks, uint32_t seq)
      : batch_(batch), writer_(batch), marks_(marks), seq_(seq) {
    batch_.first_seq = seq;
    writer_.commit(nftnl_batch_begin(writer_.next(), seq_++));
  }

  void finish() {
    mark_last_for_ack();
    writer_.commit(nftnl_batch_end(writer_.next(), seq_++));
    writer_.finish();
  }

  // One element of one map: the DNAT target, or the identity.
  void element(const Binding& binding, bool identity, bool add) {
    const IpFamily family = binding.key.service.vip.family();
    const std::string map =
        identity ? nft_names::marks_map(family) : nft_names::targets_map(family);
    const auto key = nft_names::element_key(binding);
    std::vector<uint8_t> data;
    if (add && identity) {
      const uint32_t mark = marks_.mark_for(binding.id);  // host order, as ct mark is
      const auto* bytes = reinterpret_cast<const uint8_t*>(&mark);
      data.assign(bytes, bytes + sizeof mark);
    } else if (add) {
      data = nft_names::target_data(binding);
    }
    set_element(map, key, data, add, "element " + binding.key.str());
  }

  // One element of a set or map (`data` empty for a set, or when deleting).
  void set_element(const std::string& set_name, const std::vector<uint8_t>& key,
                   const std::vector<uint8_t>& data, bool add, const std::string& shown) {
    SetPtr set(nftnl_set_alloc());
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kNftTable);
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, set_name.c_str());
    nftnl_set_elem* elem = nftnl_set_elem_alloc();
    nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, key.data(), key.size());
    if (!data.empty()) nftnl_set_elem_set(elem, NFTNL_SET_ELEM_DATA, data.data(), data.size());
    nftnl_set_elem_add(set.get(), elem);  // the set owns it from here on
    // EXCL: an element that already exists means the table is not what
    // hostlbd believes; fail rather than guess.
    auto* nlh = add ? header(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL,
                             "adding " + shown + " to " + set_name)
                    : header(NFT_MSG_DELSETELEM, 0, "deleting " + shown + " from " + set_name);
    nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
    commit(nlh);
  }

 private:
  nlmsghdr* header(uint16_t type, uint16_t flags, std::string what) {
    const uint32_t seq = seq_++;
    batch_.operations[seq] = std::move(what);
    batch_.last_seq = seq;
    ++batch_.messages;
    return nftnl_nlmsg_build_hdr(writer_.next(), type, NFPROTO_INET, flags, seq);
  }
  void commit(nlmsghdr* nlh) {
    last_command_offset_ = static_cast<size_t>(reinterpret_cast<char*>(nlh) - batch_.bytes.data());
    writer_.commit(nlh);
    has_command_ = true;
  }

  // Only the last command asks for an acknowledgement: errors are reported
  // for every failing message anyway, and one ACK per message would need a
  // receive buffer that grows with the change.
  void mark_last_for_ack() {
    if (has_command_)
      reinterpret_cast<nlmsghdr*>(batch_.bytes.data() + last_command_offset_)->nlmsg_flags |=
          NLM_F_ACK;
  }

 private:
  NftBatch& batch_;
  BatchWriter writer_;
  const MarkLayout& marks_;
  uint32_t seq_;
  size_t last_command_offset_ = 0;
  bool has_command_ = false;
};

}  // namespace

NftBatch encode_diff_batch(const DatapathDiff& diff, const MarkLayout& marks, uint32_t first_seq) {
  NftBatch batch;
  Encoder encoder(batch, marks, first_seq);
  // Deletions first: a binding whose target changed is deleted and added
  // again (an element cannot be overwritten in place); its identity, and so
  // its mark element, stays unless its key (the MAC) changed.
  // A binding that does not serve is an element of the refuse set instead.
  auto refuse = [&](const DeliveryKey& key, bool add) {
    encoder.set_element(nft_names::refuse_set(key.service.vip.family()),
                        nft_names::element_key(key.mac, key.service), {}, add,
                        key.service.str() + " via " + key.mac.str());
  };
  std::map<uint32_t, const Binding*> added_by_id;
  for (const auto& binding : diff.bindings_added) added_by_id[binding.id] = &binding;
  std::set<uint32_t> mark_kept;
  for (const auto& old : diff.bindings_removed) {
    if (!old.serving) {
      refuse(old.delivery(), false);
      continue;
    }
    auto it = added_by_id.find(old.id);
    const bool same_key =
        it != added_by_id.end() && it->second->serving && it->second->mac == old.mac;
    encoder.element(old, /*identity=*/false, /*add=*/false);
    if (same_key) {
      mark_kept.insert(old.id);
    } else {
      encoder.element(old, /*identity=*/true, /*add=*/false);
    }
  }
  auto macs = [&](const std::vector<MacAddress>& list, bool add) {
    for (const auto& mac : list)
      encoder.set_element(nft_names::kGuardMacs, {mac.bytes().begin(), mac.bytes().end()}, {}, add,
                          "MAC " + mac.str());
  };
  auto vips = [&](const std::vector<IpAddress>& list, bool add) {
    for (const auto& vip : list)
      encoder.set_element(nft_names::guard_vips(vip.family()),
                          {vip.bytes().begin(), vip.bytes().begin() + vip.size()}, {}, add,
                          "VIP " + vip.str());
  };
  auto refused = [&](const std::vector<DeliveryKey>& list, bool add) {
    for (const auto& key : list) refuse(key, add);
  };
  macs(diff.guard_macs_removed, false);
  vips(diff.guard_vips_removed, false);
  refused(diff.refused_removed, false);
  // Additions after every deletion: a key that stops being refused for one
  // reason (a removal ended) may be refused for another (its binding is
  // back, and down).
  for (const auto& binding : diff.bindings_added) {
    if (!binding.serving) {
      refuse(binding.delivery(), true);
      continue;
    }
    encoder.element(binding, /*identity=*/false, /*add=*/true);
    if (!mark_kept.count(binding.id)) encoder.element(binding, /*identity=*/true, /*add=*/true);
  }
  macs(diff.guard_macs_added, true);
  vips(diff.guard_vips_added, true);
  refused(diff.refused_added, true);
  encoder.finish();
  return batch;
}

std::string describe_batch(const NftBatch& batch) {
  std::string out;
  char text[4096];
  const char* at = batch.bytes.data();
  size_t left = batch.bytes.size();
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(at);
  int remaining = static_cast<int>(left);
  for (; mnl_nlmsg_ok(nlh, remaining); nlh = mnl_nlmsg_next(nlh, &remaining)) {
    const uint16_t type = nlh->nlmsg_type & 0xff;
    const bool ack = (nlh->nlmsg_flags & NLM_F_ACK) != 0;
    std::string line;
    switch (type) {
      case NFT_MSG_NEWSETELEM:
      case NFT_MSG_DELSETELEM: {
        SetPtr set(nftnl_set_alloc());
        nftnl_set_elems_nlmsg_parse(nlh, set.get());
        nftnl_set_snprintf(text, sizeof text, set.get(), NFTNL_OUTPUT_DEFAULT, 0);
        line = std::string(type == NFT_MSG_NEWSETELEM ? "newsetelem " : "delsetelem ") + text;
        break;
      }
      default:
        line = nlh->nlmsg_type == NFNL_MSG_BATCH_BEGIN ? "batch begin"
               : nlh->nlmsg_type == NFNL_MSG_BATCH_END ? "batch end"
                                                       : "message " + std::to_string(type);
    }
    while (!line.empty() && line.back() == '\n') line.pop_back();
    out += line + (ack ? " [ack]" : "") + "\n";
  }
  return out;
}

}  // namespace hostlb
