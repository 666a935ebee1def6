#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hostlb/netlink/conntrack.h"
#include "hostlb/netlink/error.h"
#include "hostlb/netlink/netlink_socket.h"

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

struct Lister {
  const std::function<void(const ConntrackEntry&)>* each;
  size_t entries = 0;
};

IpAddress address(const nf_conntrack* ct, bool v4, int attr_v4, int attr_v6) {
  const void* bytes = nfct_get_attr(ct, static_cast<nf_conntrack_attr>(v4 ? attr_v4 : attr_v6));
  if (bytes == nullptr) return IpAddress();
  return IpAddress::from_bytes(v4 ? IpFamily::kV4 : IpFamily::kV6,
                               static_cast<const uint8_t*>(bytes));
}

// Turns one dumped entry into a ConntrackEntry: parsing is libnetfilter_conntrack's.
int list_entry(const nlmsghdr* nlh, void* data) {
  auto* lister = static_cast<Lister*>(data);
  std::unique_ptr<nf_conntrack, decltype(&nfct_destroy)> ct(nfct_new(), &nfct_destroy);
  if (!ct || nfct_nlmsg_parse(nlh, ct.get()) < 0) return MNL_CB_OK;
  const uint8_t l4 = nfct_get_attr_u8(ct.get(), ATTR_ORIG_L4PROTO);
  if (l4 != IPPROTO_TCP && l4 != IPPROTO_UDP) return MNL_CB_OK;
  const bool v4 = nfct_get_attr_u8(ct.get(), ATTR_ORIG_L3PROTO) == AF_INET;
  ConntrackEntry entry;
  entry.tcp = l4 == IPPROTO_TCP;
  entry.client = address(ct.get(), v4, ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC);
  entry.client_port = ntohs(nfct_get_attr_u16(ct.get(), ATTR_ORIG_PORT_SRC));
  entry.vip = address(ct.get(), v4, ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST);
  entry.vip_port = ntohs(nfct_get_attr_u16(ct.get(), ATTR_ORIG_PORT_DST));
  entry.backend = address(ct.get(), v4, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC);
  entry.backend_port = ntohs(nfct_get_attr_u16(ct.get(), ATTR_REPL_PORT_SRC));
  if (entry.tcp && nfct_attr_is_set(ct.get(), ATTR_TCP_STATE) > 0) {
    static const char* const kStates[] = {"NONE",     "SYN_SENT",   "SYN_RECV", "ESTABLISHED",
                                          "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
                                          "CLOSE",    "SYN_SENT2"};
    const uint8_t state = nfct_get_attr_u8(ct.get(), ATTR_TCP_STATE);
    entry.state = state < std::size(kStates) ? kStates[state] : "UNKNOWN";
  }
  entry.mark = nfct_get_attr_u32(ct.get(), ATTR_MARK);
  entry.id = nfct_get_attr_u32(ct.get(), ATTR_ID);
  if (nfct_attr_is_set(ct.get(), ATTR_TIMESTAMP_START) > 0)
    entry.start_ns = nfct_get_attr_u64(ct.get(), ATTR_TIMESTAMP_START);
  ++lister->entries;
  (*lister->each)(entry);
  return MNL_CB_OK;
}

// The attributes of a dumped entry that a delete of that very entry needs.
struct EntryAttributes {
  const nlattr* tuple = nullptr;  // CTA_TUPLE_ORIG, nested
  const nlattr* zone = nullptr;
  const nlattr* id = nullptr;
  const nlattr* mark = nullptr;
};

int collect_attribute(const nlattr* attr, void* data) {
  auto* found = static_cast<EntryAttributes*>(data);
  switch (mnl_attr_get_type(attr)) {
    case CTA_TUPLE_ORIG:
      found->tuple = attr;
      break;
    case CTA_ZONE:
      found->zone = attr;
      break;
    case CTA_ID:
      found->id = attr;
      break;
    case CTA_MARK:
      found->mark = attr;
      break;
    default:
      break;
  }
  return MNL_CB_OK;
}

// Deletes, as a dump delivers them, the entries whose marks are wanted:
// each becomes a delete of its original tuple, zone and id (the id keeps a
// new entry with the same tuple from being taken instead), sent in batches
// on a second socket while the dump goes on.
class MarkFlusher {
 public:
  // Beyond `delete_limit` entries, the rest are counted, not deleted.
  MarkFlusher(const std::set<uint32_t>& values, uint32_t mask, netlink::Socket& deleter,
              size_t delete_limit = SIZE_MAX)
      : values_(values), mask_(mask), deleter_(deleter), delete_limit_(delete_limit) {}

  static int on_entry(const nlmsghdr* nlh, void* data) {
    static_cast<MarkFlusher*>(data)->entry(nlh);
    return MNL_CB_OK;
  }

  // Sends what is left and reads the answers; returns the counts.
  std::map<uint32_t, size_t> finish(const std::string& what) {
    send(what);
    if (failure_) netlink::throw_ack(what, *failure_);
    return std::move(gone_);
  }

  void send(const std::string& what) {
    if (!pending_.empty()) deleter_.send(what + " (deletes)", pending_);
    pending_.clear();
    read_answers();
  }

 private:
  void entry(const nlmsghdr* nlh) {
    EntryAttributes a;
    mnl_attr_parse(nlh, sizeof(nfgenmsg), collect_attribute, &a);
    if (a.tuple == nullptr || a.mark == nullptr) return;  // no mark attribute: mark 0
    const uint32_t value = ntohl(mnl_attr_get_u32(a.mark)) & mask_;
    if (values_.count(value) == 0) return;
    ++gone_[value];
    if (++seen_ > delete_limit_) return;  // counted only

    const size_t room = sizeof(nlmsghdr) + sizeof(nfgenmsg) + 3 * sizeof(nlattr) + 16 +
                        mnl_attr_get_payload_len(a.tuple);
    const size_t at = pending_.size();
    pending_.resize(at + MNL_ALIGN(room));
    nlmsghdr* del = mnl_nlmsg_put_header(pending_.data() + at);
    del->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    del->nlmsg_flags = NLM_F_REQUEST;  // no ACK: only failures answer
    del->nlmsg_seq = deleter_.next_seq();
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(del, sizeof(nfgenmsg)));
    *nfg = *static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
    mnl_attr_put(del, a.tuple->nla_type, mnl_attr_get_payload_len(a.tuple),
                 mnl_attr_get_payload(a.tuple));
    if (a.zone != nullptr) mnl_attr_put_u16(del, CTA_ZONE, mnl_attr_get_u16(a.zone));
    if (a.id != nullptr) mnl_attr_put_u32(del, CTA_ID, mnl_attr_get_u32(a.id));
    pending_.resize(at + del->nlmsg_len);
    if (pending_.size() >= kBatchBytes) send("deleting conntrack entries by mark");
  }

  // Failures only; ENOENT is an entry that ended on its own meanwhile. The
  // answers of one batch (a few hundred, capped) fit the receive buffer, so
  // none is lost; if some were, a failure could hide among them: the flush
  // is then reported as failed.
  void read_answers() {
    const auto drained = deleter_.drain([&](const nlmsghdr* nlh) {
      const auto ack = netlink::parse_ack(nlh);
      if (ack && ack->error != 0 && ack->error != ENOENT && !failure_) failure_ = ack;
    });
    if (drained.lost && !failure_) failure_ = netlink::Ack{0, ENOBUFS, {}, {}};
  }

  static constexpr size_t kBatchBytes = size_t{32} * 1024;
  const std::set<uint32_t>& values_;
  uint32_t mask_;
  netlink::Socket& deleter_;
  std::vector<char> pending_;
  std::map<uint32_t, size_t> gone_;
  size_t seen_ = 0;
  size_t delete_limit_;
  std::optional<netlink::Ack> failure_;
};

std::string hex(uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

class CtnetlinkListing final : public ConntrackListing {
 public:
  CtnetlinkListing(uint32_t value, uint32_t mask)
      : what_("listing conntrack entries with mark " + hex(value) + "/" + hex(mask)),
        socket_(NETLINK_NETFILTER, "opening a ctnetlink socket for " + what_),
        seq_(socket_.next_seq()) {
    socket_.send(what_, encode_mark_dump(value, mask, seq_));
  }

  bool next(const std::function<void(const ConntrackEntry&)>& each) override {
    if (ended_) return false;
    Lister lister{&each};
    ended_ = socket_
                 .read_answer_part(what_, seq_,
                                   [&](const nlmsghdr* nlh) {
                                     list_entry(nlh, &lister);
                                     return true;
                                   })
                 .has_value();
    return true;
  }

 private:
  std::string what_;
  netlink::Socket socket_;
  uint32_t seq_;
  bool ended_ = false;
};

class CtnetlinkTable final : public ConntrackTable {
 public:
  std::unique_ptr<ConntrackListing> open_listing(uint32_t value, uint32_t mask) override {
    return std::make_unique<CtnetlinkListing>(value, mask);
  }

  size_t list(uint32_t value, uint32_t mask,
              const std::function<void(const ConntrackEntry&)>& each) override {
    Lister lister{&each};
    const uint32_t seq = socket().next_seq();
    talk("listing conntrack entries with mark " + hex(value) + "/" + hex(mask),
         encode_mark_dump(value, mask, seq), seq, list_entry, &lister);
    return lister.entries;
  }

  size_t count(uint32_t value, uint32_t mask) override {
    size_t entries = 0;
    const uint32_t seq = socket().next_seq();
    talk("counting conntrack entries with mark " + hex(value) + "/" + hex(mask),
         encode_mark_dump(value, mask, seq), seq, count_entry, &entries);
    return entries;
  }

  size_t reap_expired() override { return count(0xffffffff, 0xffffffff); }

  // One walk of the table when there are few entries (the kernel-filtered
  // dump, each entry deleted as it comes); when there are many, the rest go
  // with the kernel's own filtered delete, a second walk but much faster
  // than deleting them one by one.
  size_t flush(uint32_t value, uint32_t mask) override {
    const std::string what = "flushing conntrack entries with mark " + hex(value) + "/" + hex(mask);
    const auto gone =
        delete_while_dumping({value}, mask, {value, mask}, kDeletesWhileDumping, what);
    const size_t entries = gone.empty() ? 0 : gone.begin()->second;
    if (entries <= kDeletesWhileDumping) return entries;
    const uint32_t seq = socket().next_seq();
    // ENOENT: nothing matched any more (they ended on their own meanwhile).
    talk(what, encode_mark_flush(value, mask, seq), seq, nullptr, nullptr, ENOENT);
    return entries;
  }

  std::map<uint32_t, size_t> flush_marks(const std::set<uint32_t>& values, uint32_t mask) override {
    if (values.empty()) return {};
    return delete_while_dumping(values, mask, {0, 0}, SIZE_MAX,
                                "flushing conntrack entries of " + std::to_string(values.size()) +
                                    " marks under mask " + hex(mask));
  }

 private:
  static constexpr size_t kDeletesWhileDumping = 1024;

  struct DumpFilter {
    uint32_t value, mask;  // the kernel's: mark & mask == value ({0, 0}: all)
  };
  // Dumps the entries the filter lets through and deletes those whose
  // mark & mask is one of `values`, up to `delete_limit` of them, as they
  // come; counts them all.
  std::map<uint32_t, size_t> delete_while_dumping(const std::set<uint32_t>& values, uint32_t mask,
                                                  DumpFilter filter, size_t delete_limit,
                                                  const std::string& what) {
    // Only failures answer a delete; a capped error keeps each answer small.
    if (!deleter_)
      deleter_ = std::make_unique<netlink::Socket>(NETLINK_NETFILTER, what,
                                                   netlink::Socket::Options{.cap_ack = true});
    MarkFlusher flusher(values, mask, *deleter_, delete_limit);
    const uint32_t seq = socket().next_seq();
    try {
      talk(what, encode_mark_dump(filter.value, filter.mask, seq), seq, MarkFlusher::on_entry,
           &flusher);
      return flusher.finish(what);
    } catch (...) {
      deleter_.reset();  // answers of this attempt may still be queued there
      throw;
    }
  }

  // The socket is kept between requests: closing a netfilter socket after
  // an nftables commit waits for the commit's deferred cleanup (an RCU
  // grace period), which would land on every change that flushes. After a
  // failure it is dropped, with whatever was left unread in it.
  netlink::Socket& socket() {
    if (!socket_)
      socket_ = std::make_unique<netlink::Socket>(NETLINK_NETFILTER, "opening a ctnetlink socket");
    return *socket_;
  }

  // Sends one request and reads the answer (a dump, or an acknowledgement)
  // to its end.
  void talk(const std::string& what, const std::vector<char>& request, uint32_t seq, mnl_cb_t cb,
            void* data, int tolerated = 0) {
    try {
      socket().request(
          what, request, seq,
          [&](const nlmsghdr* nlh) {
            if (cb != nullptr) cb(nlh, data);
            return true;
          },
          tolerated);
    } catch (...) {
      socket_.reset();
      throw;
    }
  }

  std::unique_ptr<netlink::Socket> socket_;
  std::unique_ptr<netlink::Socket> deleter_;
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
