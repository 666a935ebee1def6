#include "hostlb/netlink/netlink_socket.h"

#include <libmnl/libmnl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "hostlb/netlink/error.h"

namespace hostlb {

namespace {
std::string describe(const std::string& attempted, int error, const std::string& message) {
  std::string out = attempted + ": " + std::strerror(error);
  if (!message.empty()) out += " (the kernel says: " + message + ")";
  return out;
}
}  // namespace

KernelError::KernelError(const std::string& attempted, int error, const std::string& kernel_message)
    : std::runtime_error(describe(attempted, error, kernel_message)),
      error_(error),
      kernel_message_(kernel_message) {}

namespace netlink {

std::optional<Ack> parse_ack(const nlmsghdr* nlh) {
  if (nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr)))
    return std::nullopt;
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  Ack ack;
  ack.seq = err->msg.nlmsg_seq;
  ack.error = -err->error;
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return ack;
  // The extended attributes follow the error header and, unless capped,
  // the echoed request.
  size_t offset = sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED) && err->msg.nlmsg_len >= sizeof(nlmsghdr))
    offset += err->msg.nlmsg_len - sizeof(nlmsghdr);
  offset = NLMSG_ALIGN(offset);
  const size_t payload = nlh->nlmsg_len - NLMSG_HDRLEN;
  if (offset >= payload) return ack;
  const char* begin = static_cast<const char*>(mnl_nlmsg_get_payload(nlh)) + offset;
  int left = static_cast<int>(payload - offset);
  for (auto* attr = reinterpret_cast<const nlattr*>(begin); mnl_attr_ok(attr, left);
       attr = mnl_attr_next(attr)) {
    left -= static_cast<int>(MNL_ALIGN(attr->nla_len));
    const uint16_t type = mnl_attr_get_type(attr);
    const uint16_t len = mnl_attr_get_payload_len(attr);
    if (type == NLMSGERR_ATTR_MSG && len > 0) {
      const char* text = static_cast<const char*>(mnl_attr_get_payload(attr));
      ack.message.assign(text, strnlen(text, len));
    } else if (type == NLMSGERR_ATTR_OFFS && len == 4) {
      ack.bad_attribute_offset = mnl_attr_get_u32(attr);
    }
  }
  return ack;
}

void throw_ack(const std::string& attempted, const Ack& ack) {
  std::string message = ack.message;
  if (message.empty() && ack.bad_attribute_offset)
    message = "refused the attribute at byte " + std::to_string(*ack.bad_attribute_offset) +
              " of the request";
  throw KernelError(attempted, ack.error, message);
}

void for_each_message(std::span<const char> bytes,
                      const std::function<void(const nlmsghdr*)>& each) {
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(bytes.data());
  int left = static_cast<int>(bytes.size());
  for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) each(nlh);
}

Socket::Socket(int protocol, const std::string& what, Options options)
    : buffer_(size_t{32} * 1024) {  // dump messages arrive in batches
  int type = SOCK_RAW | SOCK_CLOEXEC;
  if (options.nonblocking) type |= SOCK_NONBLOCK;
  fd_ = ::socket(AF_NETLINK, type, protocol);
  if (fd_ < 0) throw KernelError(what + " (opening a netlink socket)", errno);
  // Best effort: kernels without it still answer with the errno.
  int one = 1;
  ::setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  if (options.cap_ack) ::setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = options.groups;
  socklen_t len = sizeof addr;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int saved = errno;
    ::close(fd_);
    throw KernelError(what + " (binding a netlink socket)", saved);
  }
  port_id_ = addr.nl_pid;
  // Distinct starting points keep a late answer on a reopened socket from
  // matching a new request.
  seq_ = static_cast<uint32_t>(::time(nullptr));
}

Socket::~Socket() { ::close(fd_); }

void Socket::set_receive_queue(int bytes) {
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

void Socket::send(const std::string& what, std::span<const char> bytes) {
  int size = static_cast<int>(bytes.size()) + 4096;
  if (size > 212992) ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    const ssize_t n = ::sendto(fd_, bytes.data(), bytes.size(), 0,
                               reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel);
    if (n >= 0) return;
    if (errno != EINTR) throw KernelError(what + " (sending)", errno);
  }
}

std::optional<int> Socket::read_answer_part(const std::string& what, uint32_t seq,
                                            const OnMessage& on_message, int tolerated) {
  ssize_t n = -1;
  while (n < 0) {
    n = ::recv(fd_, buffer_.data(), buffer_.size(), 0);
    if (n < 0 && errno != EINTR) throw KernelError(what + " (receiving the answer)", errno);
  }
  bool done = false;
  std::optional<Ack> failure;
  for_each_message({buffer_.data(), static_cast<size_t>(n)}, [&](const nlmsghdr* nlh) {
    if (done || nlh->nlmsg_seq != seq) return;
    if (nlh->nlmsg_type == NLMSG_DONE) {
      done = true;
      // A dump that failed part-way says so in its end message.
      if (nlh->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
        int status = 0;
        std::memcpy(&status, mnl_nlmsg_get_payload(nlh), sizeof status);
        if (status < 0) failure = Ack{seq, -status, {}, {}};
      }
    } else if (nlh->nlmsg_type == NLMSG_ERROR) {
      done = true;
      if (auto ack = parse_ack(nlh); ack && ack->error != 0) failure = ack;
    } else if (nlh->nlmsg_type >= NLMSG_MIN_TYPE && !on_message(nlh)) {
      done = true;
    }
  });
  if (failure) {
    if (tolerated != 0 && failure->error == tolerated) return tolerated;
    throw_ack(what, *failure);
  }
  if (done) return 0;
  return std::nullopt;
}

int Socket::read_answer(const std::string& what, uint32_t seq, const OnMessage& on_message,
                        int tolerated) {
  for (;;)
    if (auto end = read_answer_part(what, seq, on_message, tolerated)) return *end;
}

int Socket::request(const std::string& what, std::span<const char> bytes, uint32_t seq,
                    const OnMessage& on_message, int tolerated) {
  send(what, bytes);
  return read_answer(what, seq, on_message, tolerated);
}

Socket::Drained Socket::drain(const std::function<void(const nlmsghdr*)>& each, size_t max_reads) {
  Drained out;
  while (out.reads < max_reads) {
    const ssize_t n = ::recv(fd_, buffer_.data(), buffer_.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        out.lost = true;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      throw KernelError("reading netlink messages", errno);
    }
    ++out.reads;
    for_each_message({buffer_.data(), static_cast<size_t>(n)}, each);
  }
  return out;
}

}  // namespace netlink
}  // namespace hostlb
