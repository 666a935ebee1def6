#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/nft_batch.h"
#include "nft_internal.h"

namespace hostlb {
namespace {

using MnlSocketPtr = std::unique_ptr<mnl_socket, decltype(&mnl_socket_close)>;

void send_nft_batch(const NftBatch& batch);

class KernelRuleset final : public NftRuleset {
 public:
  explicit KernelRuleset(RulesetPolicies policies) : policies_(policies) {}

  NftRunStats replace(const Datapath& datapath, const MarkLayout& marks) override {
    return run_nft_script_in_helper(
        "replacing nftables table " + std::string(kNftFamily) + " " + kNftTable,
        render_full_ruleset(datapath, marks, policies_));
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
    send_nft_batch(batch);
  }

  void remove() override {
    run_nft_script_in_helper("removing nftables table " + std::string(kNftFamily) + " " + kNftTable,
                             render_delete_ruleset());
  }

 private:
  RulesetPolicies policies_;
  uint32_t next_seq_ = 1;
};

// Sends a batch over NETLINK_NETFILTER and waits for the kernel's verdict.
void send_nft_batch(const NftBatch& batch) {
  const std::string what =
      "applying an nftables change (" + std::to_string(batch.messages) + " messages)";
  MnlSocketPtr nl(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC), &mnl_socket_close);
  if (!nl)
    throw KernelError(what, std::string("opening a netfilter socket: ") + std::strerror(errno));
  if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    throw KernelError(what, std::string("binding a netfilter socket: ") + std::strerror(errno));
  const int fd = mnl_socket_get_fd(nl.get());
  // The kernel takes a batch as one message: the send buffer must hold it.
  int size = static_cast<int>(batch.bytes.size()) + 4096;
  if (size > 212992) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  if (mnl_socket_sendto(nl.get(), batch.bytes.data(), batch.bytes.size()) < 0)
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
