#include "hostlb/netlink/nft_monitor.h"

#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "hostlb/netlink/error.h"

namespace hostlb {
namespace {

class Monitor final : public NftMonitor {
 public:
  explicit Monitor(std::string own_name) : own_name_(std::move(own_name)) {
    const std::string what = "subscribing to nftables notifications";
    nl_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (nl_ == nullptr) throw KernelError(what, std::strerror(errno));
    int group = NFNLGRP_NFTABLES;
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0 ||
        mnl_socket_setsockopt(nl_, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
      const int saved = errno;
      mnl_socket_close(nl_);
      throw KernelError(what, std::strerror(saved));
    }
  }
  ~Monitor() override { mnl_socket_close(nl_); }

  int fd() const override { return mnl_socket_get_fd(nl_); }

  bool foreign_change() override {
    bool foreign = false;
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    // Bounded: a storm of notifications (a big transaction) is read over
    // several turns of the event loop.
    for (int i = 0; i < 256; ++i) {
      const ssize_t n = ::recv(fd(), buf.data(), buf.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOBUFS) {
          foreign = true;  // lost some: assume the worst, the check is cheap
          continue;
        }
        break;  // EAGAIN: all read
      }
      const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
      int left = static_cast<int>(n);
      for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left))
        if (is_foreign_commit(nlh)) foreign = true;
    }
    return foreign;
  }

 private:
  bool is_foreign_commit(const nlmsghdr* nlh) const {
    if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES ||
        (nlh->nlmsg_type & 0xff) != NFT_MSG_NEWGEN)
      return false;
    const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
    for (auto* attr =
             static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
         mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr)));
         attr = mnl_attr_next(attr)) {
      if (mnl_attr_get_type(attr) != NFTA_GEN_PROC_NAME) continue;
      const auto* name = static_cast<const char*>(mnl_attr_get_payload(attr));
      const size_t len = strnlen(name, mnl_attr_get_payload_len(attr));
      return std::string(name, len) != own_name_;
    }
    return true;  // no name: cannot be sure it was us
  }

  std::string own_name_;
  mnl_socket* nl_ = nullptr;
};

}  // namespace

std::unique_ptr<NftMonitor> make_nft_monitor(const std::string& own_name) {
  return std::make_unique<Monitor>(own_name);
}

}  // namespace hostlb
