#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <memory>
#include <optional>
#include <vector>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/netlink_socket.h"
#include "hostlb/netlink/nft_batch.h"
#include "nft_internal.h"

namespace hostlb {
namespace {

class KernelRuleset final : public NftRuleset {
 public:
  explicit KernelRuleset(RulesetPolicies policies)
      : policies_(policies), generation_([this]() -> netlink::Socket& { return batch_socket(); }) {}

  NftRunStats replace(const Datapath& datapath, const MarkLayout& marks) override {
    const NftRunStats stats = run_nft_script_in_helper(
        "replacing nftables table " + std::string(kNftFamily) + " " + kNftTable,
        render_full_ruleset(datapath, marks, policies_));
    generation_.rebase();
    return stats;
  }

  Counters counters() override { return read_nft_counters(); }
  Inventory inventory() override { return read_nft_inventory(); }
  std::optional<std::string> difference(const Datapath& desired, const MarkLayout& marks) override {
    return find_nft_difference(desired, marks, policies_);
  }

  void apply(const DatapathDiff& diff, const MarkLayout& marks) override {
    if (!diff.changes_ruleset()) return;
    netlink::Socket& socket = batch_socket();
    NftBatch batch = encode_diff_batch(diff, marks, socket.next_seq());
    socket.used_seqs_through(batch.last_seq + 1);  // and the batch's end
    send_nft_batch(socket, batch);
    generation_.own_commit();
  }

  void remove() override {
    run_nft_script_in_helper("removing nftables table " + std::string(kNftFamily) + " " + kNftTable,
                             render_delete_ruleset());
    generation_.rebase();
  }

  bool changed_by_others() override { return generation_.changed_by_others(); }

 private:
  // One socket for the ruleset's life. Closing a netfilter socket that has
  // committed a transaction waits in the kernel for the deferred destruction
  // of the old elements (an RCU grace period, 5-20 ms on a busy host), and
  // that wait would land on every change.
  netlink::Socket& batch_socket() {
    if (!socket_)
      socket_ = std::make_unique<netlink::Socket>(NETLINK_NETFILTER,
                                                  "opening the nftables change socket");
    return *socket_;
  }

  RulesetPolicies policies_;
  std::unique_ptr<netlink::Socket> socket_;
  GenerationWatch generation_;
};

}  // namespace

uint32_t GenerationWatch::read() {
  const char* what = "reading the nftables generation";
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  netlink::Socket& socket = socket_();
  const uint32_t seq = socket.next_seq();
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETGEN, NFPROTO_UNSPEC, 0, seq);
  std::unique_ptr<nftnl_gen, Deleter<nftnl_gen_free>> gen(nftnl_gen_alloc());
  bool parsed = false;
  socket.request(what, {buf.data(), nlh->nlmsg_len}, seq, [&](const nlmsghdr* reply) {
    parsed =
        nftnl_gen_nlmsg_parse(reply, gen.get()) >= 0 && nftnl_gen_is_set(gen.get(), NFTNL_GEN_ID);
    return false;  // one message, no acknowledgement
  });
  if (!parsed) throw KernelError(what, "the answer holds no generation");
  return nftnl_gen_get_u32(gen.get(), NFTNL_GEN_ID);
}

void GenerationWatch::rebase() {
  own_commits_ = 0;
  try {
    known_ = read();
  } catch (const KernelError&) {
    known_.reset();  // the next look takes it
  }
}

bool GenerationWatch::changed_by_others() {
  const uint32_t now = read();
  // Every commit adds one to the generation: more than our own commits
  // since the last look means someone else committed too.
  const bool others = known_ && now - *known_ != own_commits_;
  known_ = now;
  own_commits_ = 0;
  return others;
}

// Sends a batch over NETLINK_NETFILTER and waits for the kernel's verdict.
void send_nft_batch(netlink::Socket& socket, const NftBatch& batch) {
  const std::string what =
      "applying an nftables change (" + std::to_string(batch.messages) + " messages)";
  socket.send(what, batch.bytes);
  // nfnetlink processes the batch while sendto runs: every answer is queued
  // by now, so reading until the queue is empty sees them all.
  bool acked = false;
  std::optional<netlink::Ack> failure;
  const auto drained = socket.drain([&](const nlmsghdr* nlh) {
    const auto ack = netlink::parse_ack(nlh);
    // The socket outlives batches: answers to anything else are not ours.
    if (!ack || ack->seq < batch.first_seq || ack->seq > batch.last_seq) return;
    if (ack->error != 0 && !failure) failure = ack;
    if (ack->error == 0 && ack->seq == batch.last_seq) acked = true;
  });
  if (failure) {
    auto it = batch.operations.find(failure->seq);
    netlink::throw_ack(it != batch.operations.end() ? it->second : what, *failure);
  }
  if (drained.lost) throw KernelError(what + " (reading the answers)", ENOBUFS);
  if (!acked) throw KernelError(what, "the kernel did not acknowledge the batch");
}

std::unique_ptr<NftRuleset> make_kernel_ruleset(RulesetPolicies policies) {
  return std::make_unique<KernelRuleset>(policies);
}

}  // namespace hostlb
