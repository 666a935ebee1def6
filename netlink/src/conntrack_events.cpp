#include "hostlb/netlink/conntrack_events.h"

#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_compat.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include <cerrno>
#include <string>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/netlink_socket.h"

namespace hostlb {

std::optional<ConntrackEvent> parse_conntrack_event(const nlmsghdr* nlh) {
  if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_CTNETLINK) return std::nullopt;
  ConntrackEvent event;
  switch (nlh->nlmsg_type & 0xff) {
    case IPCTNL_MSG_CT_NEW:
      event.kind = ConntrackEvent::Kind::kNew;
      break;
    case IPCTNL_MSG_CT_DELETE:
      event.kind = ConntrackEvent::Kind::kDestroy;
      break;
    default:
      return std::nullopt;
  }
  if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) return std::nullopt;
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  for (auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
       mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr)));
       attr = mnl_attr_next(attr)) {
    const auto type = mnl_attr_get_type(attr);
    if (type == CTA_MARK && mnl_attr_get_payload_len(attr) == 4) {
      event.mark = ntohl(mnl_attr_get_u32(attr));
    } else if (type == CTA_ID && mnl_attr_get_payload_len(attr) == 4) {
      event.id = ntohl(mnl_attr_get_u32(attr));
    } else if (type == CTA_TIMESTAMP) {
      const char* end = reinterpret_cast<const char*>(attr) + attr->nla_len;
      for (auto* inner = static_cast<const nlattr*>(mnl_attr_get_payload(attr));
           mnl_attr_ok(inner, static_cast<int>(end - reinterpret_cast<const char*>(inner)));
           inner = mnl_attr_next(inner)) {
        if (mnl_attr_get_payload_len(inner) != 8) continue;
        const uint64_t value = be64toh(mnl_attr_get_u64(inner));
        if (mnl_attr_get_type(inner) == CTA_TIMESTAMP_START) event.start_ns = value;
        if (mnl_attr_get_type(inner) == CTA_TIMESTAMP_STOP) event.stop_ns = value;
      }
    }
  }
  return event;
}

namespace {

class CtnetlinkEvents final : public ConntrackEvents {
 public:
  CtnetlinkEvents(uint32_t mark_mask, int queue_bytes)
      : socket_(NETLINK_NETFILTER, "subscribing to conntrack events",
                {.groups = NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY,
                 .nonblocking = true}) {
    const std::string what = "subscribing to conntrack events";
    // A bigger queue makes loss rarer.
    socket_.set_receive_queue(queue_bytes);
    // Only entries with one of hostlb's mark bits set: a BPF filter on the
    // socket, so other connections never reach the queue.
    nfct_filter* filter = nfct_filter_create();
    if (filter == nullptr) throw KernelError(what, "cannot allocate a filter");
    const nfct_filter_dump_mark mark{0, mark_mask};
    nfct_filter_add_attr(filter, NFCT_FILTER_MARK, &mark);
    nfct_filter_set_logic(filter, NFCT_FILTER_MARK, NFCT_FILTER_LOGIC_NEGATIVE);
    const int rc = nfct_filter_attach(socket_.fd(), filter);
    const int saved = errno;
    nfct_filter_destroy(filter);
    if (rc < 0) throw KernelError(what + " (attaching the mark filter)", saved);
  }

  int fd() const override { return socket_.fd(); }

  Batch read(const std::function<void(const ConntrackEvent&)>& each, size_t max_messages) override {
    Batch batch;
    const auto drained = socket_.drain(
        [&](const nlmsghdr* nlh) {
          if (auto event = parse_conntrack_event(nlh)) {
            ++batch.events;
            each(*event);
          }
        },
        max_messages);
    batch.lost = drained.lost;
    return batch;
  }

 private:
  netlink::Socket socket_;
};

}  // namespace

std::unique_ptr<ConntrackEvents> make_ctnetlink_events(uint32_t mark_mask, int queue_bytes) {
  return std::make_unique<CtnetlinkEvents>(mark_mask, queue_bytes);
}

}  // namespace hostlb
