#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/nft_batch.h"
#include "nft_internal.h"

namespace hostlb {
namespace {

using MnlSocketPtr = std::unique_ptr<mnl_socket, decltype(&mnl_socket_close)>;

void send_nft_batch(mnl_socket* nl, const NftBatch& batch);

class KernelRuleset final : public NftRuleset {
 public:
  explicit KernelRuleset(RulesetPolicies policies) : policies_(policies) {}

  NftRunStats replace(const Datapath& datapath, const MarkLayout& marks) override {
    const NftRunStats stats = run_nft_script_in_helper(
        "replacing nftables table " + std::string(kNftFamily) + " " + kNftTable,
        render_full_ruleset(datapath, marks, policies_));
    forget_generation();
    return stats;
  }

  Counters counters() override { return read_nft_counters(); }
  Inventory inventory() override { return read_nft_inventory(); }
  std::optional<std::string> difference(const Datapath& desired, const MarkLayout& marks) override {
    return find_nft_difference(desired, marks, policies_);
  }

  void apply(const DatapathDiff& diff, const MarkLayout& marks) override {
    if (!diff.changes_ruleset()) return;
    NftBatch batch = encode_diff_batch(diff, marks, next_seq_);
    next_seq_ = batch.last_seq + 2;
    send_nft_batch(batch_socket(), batch);
    ++own_commits_;
  }

  void remove() override {
    run_nft_script_in_helper("removing nftables table " + std::string(kNftFamily) + " " + kNftTable,
                             render_delete_ruleset());
    forget_generation();
  }

  bool changed_by_others() override {
    const uint32_t now = read_generation();
    // Every commit adds one to the generation: more than our own commits
    // since the last look means someone else committed too.
    const bool others = known_generation_ && now - *known_generation_ != own_commits_;
    known_generation_ = now;
    own_commits_ = 0;
    return others;
  }

 private:
  // libnftables (in the helper) may commit more than once for one script,
  // and the whole table was just written (what others did to it before is
  // gone): a new baseline, read at once so that a commit by someone else
  // from now on still counts.
  void forget_generation() {
    own_commits_ = 0;
    try {
      known_generation_ = read_generation();
    } catch (const KernelError&) {
      known_generation_.reset();  // the next look takes it
    }
  }

  uint32_t read_generation() {
    const char* what = "reading the nftables generation";
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    const uint32_t seq = next_seq_++;
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETGEN, NFPROTO_UNSPEC, 0, seq);
    mnl_socket* nl = batch_socket();
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
      throw KernelError(what, std::string("sending: ") + std::strerror(errno));
    std::unique_ptr<nftnl_gen, Deleter<nftnl_gen_free>> gen(nftnl_gen_alloc());
    // The answer is queued before sendto returns; older answers (of a batch
    // that failed half-read) are skipped by their sequence number.
    for (;;) {
      const ssize_t n = ::recv(mnl_socket_get_fd(nl), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw KernelError(what, std::string("receiving: ") + std::strerror(errno));
      const auto* reply = reinterpret_cast<const nlmsghdr*>(buf.data());
      int left = static_cast<int>(n);
      for (; mnl_nlmsg_ok(reply, left); reply = mnl_nlmsg_next(reply, &left)) {
        if (reply->nlmsg_seq != seq) continue;
        if (reply->nlmsg_type == NLMSG_ERROR) {
          const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(reply));
          throw KernelError(what, std::strerror(-err->error));
        }
        if (nftnl_gen_nlmsg_parse(reply, gen.get()) < 0 ||
            !nftnl_gen_is_set(gen.get(), NFTNL_GEN_ID))
          throw KernelError(what, "the answer holds no generation");
        return nftnl_gen_get_u32(gen.get(), NFTNL_GEN_ID);
      }
    }
  }

  // One socket for the ruleset's life. Closing a netfilter socket that has
  // committed a transaction waits in the kernel for the deferred destruction
  // of the old elements (an RCU grace period, 5-20 ms on a busy host), and
  // that wait would land on every change.
  mnl_socket* batch_socket() {
    if (socket_) return socket_.get();
    const char* what = "opening the nftables change socket";
    MnlSocketPtr nl(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC), &mnl_socket_close);
    if (!nl) throw KernelError(what, std::string("socket: ") + std::strerror(errno));
    if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0)
      throw KernelError(what, std::string("bind: ") + std::strerror(errno));
    socket_ = std::move(nl);
    return socket_.get();
  }

  RulesetPolicies policies_;
  uint32_t next_seq_ = 1;
  std::optional<uint32_t> known_generation_;
  uint32_t own_commits_ = 0;  // since known_generation_ was read
  MnlSocketPtr socket_{nullptr, &mnl_socket_close};
};

// Sends a batch over NETLINK_NETFILTER and waits for the kernel's verdict.
void send_nft_batch(mnl_socket* nl, const NftBatch& batch) {
  const std::string what =
      "applying an nftables change (" + std::to_string(batch.messages) + " messages)";
  const int fd = mnl_socket_get_fd(nl);
  // The kernel takes a batch as one message: the send buffer must hold it.
  int size = static_cast<int>(batch.bytes.size()) + 4096;
  if (size > 212992) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  if (mnl_socket_sendto(nl, batch.bytes.data(), batch.bytes.size()) < 0)
    throw KernelError(what, std::string("sending: ") + std::strerror(errno));

  // nfnetlink processes the batch while sendto runs: every answer is queued
  // by now, so reading until the queue is empty sees them all.
  bool acked = false;
  uint32_t failed_seq = 0;
  int failed_errno = 0;
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  for (;;) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      throw KernelError(what, std::string("receiving the answer: ") + std::strerror(errno));
    }
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
    int left = static_cast<int>(n);
    for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      // The socket outlives batches: answers to anything else are not ours.
      if (err->msg.nlmsg_seq < batch.first_seq || err->msg.nlmsg_seq > batch.last_seq) continue;
      if (err->error != 0 && failed_errno == 0) {
        failed_errno = -err->error;
        failed_seq = err->msg.nlmsg_seq;
      }
      if (err->error == 0 && err->msg.nlmsg_seq == batch.last_seq) acked = true;
    }
  }
  if (failed_errno != 0) {
    auto it = batch.operations.find(failed_seq);
    throw KernelError(it != batch.operations.end() ? it->second : what,
                      std::strerror(failed_errno));
  }
  if (!acked) throw KernelError(what, "the kernel did not acknowledge the batch");
}

}  // namespace

std::unique_ptr<NftRuleset> make_kernel_ruleset(RulesetPolicies policies) {
  return std::make_unique<KernelRuleset>(policies);
}

}  // namespace hostlb
