#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "hostlb/netlink/conntrack.h"
#include "hostlb/netlink/error.h"

namespace hostlb {
namespace {

std::vector<char> encode(uint16_t type, uint16_t flags, uint32_t value, uint32_t mask,
                         uint32_t seq) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | type);
  nlh->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  nlh->nlmsg_seq = seq;
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = AF_UNSPEC;  // both families
  nfg->version = NFNETLINK_V0;
  nfg->res_id = 0;
  mnl_attr_put_u32(nlh, CTA_MARK, htonl(value));
  mnl_attr_put_u32(nlh, CTA_MARK_MASK, htonl(mask));
  buf.resize(nlh->nlmsg_len);
  return buf;
}

int count_entry(const nlmsghdr*, void* data) {
  ++*static_cast<size_t*>(data);
  return MNL_CB_OK;
}

class CtnetlinkTable final : public ConntrackTable {
 public:
  size_t count(uint32_t value, uint32_t mask) override {
    size_t entries = 0;
    const uint32_t seq = next_seq_++;
    talk("counting conntrack entries with mark " + hex(value) + "/" + hex(mask),
         encode_mark_dump(value, mask, seq), seq, count_entry, &entries);
    return entries;
  }

  size_t flush(uint32_t value, uint32_t mask) override {
    const size_t entries = count(value, mask);
    if (entries == 0) return 0;
    const uint32_t seq = next_seq_++;
    // ENOENT: nothing matched any more (they ended on their own meanwhile).
    talk("flushing conntrack entries with mark " + hex(value) + "/" + hex(mask),
         encode_mark_flush(value, mask, seq), seq, nullptr, nullptr, /*enoent_is_done=*/true);
    return entries;
  }

 private:
  static std::string hex(uint32_t v) {
    char buf[11];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
  }

  struct Socket {
    explicit Socket(const std::string& what)
        : nl(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC)) {
      if (!nl)
        throw KernelError(what, std::string("opening a ctnetlink socket: ") + std::strerror(errno));
      if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        const int saved = errno;
        mnl_socket_close(nl);
        throw KernelError(what, std::string("binding a ctnetlink socket: ") + std::strerror(saved));
      }
    }
    ~Socket() { mnl_socket_close(nl); }
    mnl_socket* nl;
  };

  // Sends one request and reads the answer (a dump, or an acknowledgement)
  // to its end.
  void talk(const std::string& what, const std::vector<char>& request, uint32_t seq, mnl_cb_t cb,
            void* data, bool enoent_is_done = false) {
    Socket sock(what);
    if (mnl_socket_sendto(sock.nl, request.data(), request.size()) < 0)
      throw KernelError(what, std::strerror(errno));
    std::vector<char> buf(32768);  // dump messages arrive in batches
    for (;;) {
      const ssize_t n = mnl_socket_recvfrom(sock.nl, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw KernelError(what, std::strerror(errno));
      }
      const int rc = mnl_cb_run(buf.data(), static_cast<size_t>(n), seq,
                                mnl_socket_get_portid(sock.nl), cb, data);
      if (rc == MNL_CB_STOP) return;
      if (rc < 0) {
        if (enoent_is_done && errno == ENOENT) return;
        throw KernelError(what, std::strerror(errno));
      }
    }
  }

  uint32_t next_seq_ = 1;
};

}  // namespace

std::vector<char> encode_mark_dump(uint32_t value, uint32_t mask, uint32_t seq) {
  return encode(IPCTNL_MSG_CT_GET, NLM_F_DUMP, value, mask, seq);
}

std::vector<char> encode_mark_flush(uint32_t value, uint32_t mask, uint32_t seq) {
  // No tuple: the kernel deletes every entry the mark filter matches.
  return encode(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, value, mask, seq);
}

std::unique_ptr<ConntrackTable> make_ctnetlink_table() {
  return std::make_unique<CtnetlinkTable>();
}

}  // namespace hostlb
