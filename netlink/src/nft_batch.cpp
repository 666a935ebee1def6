#include "hostlb/netlink/nft_batch.h"

#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>

#include "hostlb/netlink/nft.h"
#include "nft_names.h"

namespace hostlb {
namespace {

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    if (p) Free(p);
  }
};
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using UdataPtr = std::unique_ptr<nftnl_udata_buf, Deleter<nftnl_udata_buf_free>>;

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

void add_expr(nftnl_rule* rule, const char* name, const std::function<void(nftnl_expr*)>& fill) {
  nftnl_expr* expr = nftnl_expr_alloc(name);
  if (expr == nullptr) throw std::bad_alloc();
  fill(expr);
  nftnl_rule_add_expr(rule, expr);  // the rule owns it from here on
}

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

  void add_chain(const Binding& binding) {
    ChainPtr chain(nftnl_chain_alloc());
    nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TABLE, kNftTable);
    nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_NAME, nft_names::chain(binding.id).c_str());
    UdataPtr udata(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
    nftnl_udata_put_strz(udata.get(), NFTNL_UDATA_CHAIN_COMMENT,
                         nft_names::comment(binding).c_str());
    nftnl_chain_set_data(chain.get(), NFTNL_CHAIN_USERDATA, nftnl_udata_buf_data(udata.get()),
                         nftnl_udata_buf_len(udata.get()));
    // EXCL: a chain that already exists means the table is not what hostlbd
    // believes; fail rather than append a second rule to it.
    auto* nlh =
        header(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL,
               "adding chain " + nft_names::chain(binding.id) + " for " + binding.key.str());
    nftnl_chain_nlmsg_build_payload(nlh, chain.get());
    commit(nlh);
  }

  void delete_chain(const Binding& binding) {
    ChainPtr chain(nftnl_chain_alloc());
    nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TABLE, kNftTable);
    nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_NAME, nft_names::chain(binding.id).c_str());
    auto* nlh =
        header(NFT_MSG_DELCHAIN, 0,
               "deleting chain " + nft_names::chain(binding.id) + " of " + binding.key.str());
    nftnl_chain_nlmsg_build_payload(nlh, chain.get());
    commit(nlh);
  }

  void flush_chain(const Binding& binding) {
    RulePtr rule(nftnl_rule_alloc());
    nftnl_rule_set_u32(rule.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(rule.get(), NFTNL_RULE_TABLE, kNftTable);
    nftnl_rule_set_str(rule.get(), NFTNL_RULE_CHAIN, nft_names::chain(binding.id).c_str());
    auto* nlh =
        header(NFT_MSG_DELRULE, 0,
               "flushing chain " + nft_names::chain(binding.id) + " of " + binding.key.str());
    nftnl_rule_nlmsg_build_payload(nlh, rule.get());
    commit(nlh);
  }

  // The rule render_full_ruleset writes as
  //   meta l4proto P ct mark set ct mark & ~MASK | MARK dnat ip[6] to A:PORT
  void add_rule(const Binding& binding) {
    RulePtr rule(nftnl_rule_alloc());
    nftnl_rule_set_u32(rule.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(rule.get(), NFTNL_RULE_TABLE, kNftTable);
    nftnl_rule_set_str(rule.get(), NFTNL_RULE_CHAIN, nft_names::chain(binding.id).c_str());
    const uint8_t l4proto = binding.key.service.protocol == Protocol::kTcp ? 6 : 17;
    const uint32_t keep = ~marks_.mask();
    const uint32_t mark = marks_.mark_for(binding.id);
    const uint8_t port[2] = {static_cast<uint8_t>(binding.target_port >> 8),
                             static_cast<uint8_t>(binding.target_port & 0xff)};
    add_expr(rule.get(), "meta", [](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, NFT_META_L4PROTO);
      nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
    });
    add_expr(rule.get(), "cmp", [&](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
      nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, &l4proto, sizeof l4proto);
    });
    add_expr(rule.get(), "ct", [](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
      nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
    });
    add_expr(rule.get(), "bitwise", [&](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, sizeof(uint32_t));
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &keep, sizeof keep);
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &mark, sizeof mark);
    });
    add_expr(rule.get(), "ct", [](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
      nftnl_expr_set_u32(e, NFTNL_EXPR_CT_SREG, NFT_REG_1);
    });
    add_expr(rule.get(), "immediate", [&](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
      nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, binding.target.bytes().data(), binding.target.size());
    });
    add_expr(rule.get(), "immediate", [&](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_2);
      nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, port, sizeof port);
    });
    add_expr(rule.get(), "nat", [&](nftnl_expr* e) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY,
                         binding.target.is_v4() ? NFPROTO_IPV4 : NFPROTO_IPV6);
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, NFT_REG_2);
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
    });
    auto* nlh =
        header(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
               "adding the rule of " + nft_names::chain(binding.id) + " for " + binding.key.str());
    nftnl_rule_nlmsg_build_payload(nlh, rule.get());
    commit(nlh);
  }

  void element(const Binding& binding, bool add) {
    SetPtr set(nftnl_set_alloc());
    const std::string map = nft_names::map(binding.key.service.vip.family());
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, kNftTable);
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, map.c_str());
    nftnl_set_elem* elem = nftnl_set_elem_alloc();
    const auto key = nft_names::element_key(binding);
    nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, key.data(), key.size());
    if (add) {
      nftnl_set_elem_set_u32(elem, NFTNL_SET_ELEM_VERDICT, NFT_GOTO);
      nftnl_set_elem_set_str(elem, NFTNL_SET_ELEM_CHAIN, nft_names::chain(binding.id).c_str());
    }
    nftnl_set_elem_add(set.get(), elem);  // the set owns it from here on
    auto* nlh = add ? header(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL,
                             "adding element " + binding.key.str() + " to map " + map)
                    : header(NFT_MSG_DELSETELEM, 0,
                             "deleting element " + binding.key.str() + " from map " + map);
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
  // A binding whose identity appears on both sides changed in place (its
  // target, port or MAC): its chain is rewritten rather than recreated.
  std::map<uint32_t, const Binding*> added_by_id;
  for (const auto& binding : diff.bindings_added) added_by_id[binding.id] = &binding;
  std::set<uint32_t> changed;
  for (const auto& old : diff.bindings_removed) {
    auto it = added_by_id.find(old.id);
    if (it == added_by_id.end()) {
      encoder.element(old, /*add=*/false);
      encoder.delete_chain(old);
      continue;
    }
    const Binding& now = *it->second;
    changed.insert(old.id);
    const bool same_key = old.mac == now.mac;
    if (!same_key) encoder.element(old, /*add=*/false);
    encoder.flush_chain(now);
    encoder.add_rule(now);
    if (!same_key) encoder.element(now, /*add=*/true);
  }
  for (const auto& binding : diff.bindings_added) {
    if (changed.count(binding.id)) continue;
    encoder.add_chain(binding);
    encoder.add_rule(binding);
    encoder.element(binding, /*add=*/true);
  }
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
      case NFT_MSG_NEWCHAIN:
      case NFT_MSG_DELCHAIN: {
        ChainPtr chain(nftnl_chain_alloc());
        nftnl_chain_nlmsg_parse(nlh, chain.get());
        line = std::string(type == NFT_MSG_NEWCHAIN ? "newchain " : "delchain ") +
               nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME);
        break;
      }
      case NFT_MSG_NEWRULE:
      case NFT_MSG_DELRULE: {
        RulePtr rule(nftnl_rule_alloc());
        nftnl_rule_nlmsg_parse(nlh, rule.get());
        nftnl_rule_snprintf(text, sizeof text, rule.get(), NFTNL_OUTPUT_DEFAULT, 0);
        line = std::string(type == NFT_MSG_NEWRULE ? "newrule " : "delrule ") + text;
        break;
      }
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
