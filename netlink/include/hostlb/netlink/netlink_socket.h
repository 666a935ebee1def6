// One netlink socket layer for every netfilter adapter: it owns a socket,
// sends a request or a batch, collects the answers and the errors by
// sequence number, retries EINTR, and reports the kernel's extended ACK
// text (NETLINK_EXT_ACK) with the errno. Parsing an acknowledgement is a
// pure function, tested without a kernel.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hostlb::netlink {

// What an NLMSG_ERROR message says.
struct Ack {
  uint32_t seq = 0;                              // of the request it answers
  int error = 0;                                 // positive errno; 0 for a plain acknowledgement
  std::string message;                           // NLMSGERR_ATTR_MSG, if the kernel gave one
  std::optional<uint32_t> bad_attribute_offset;  // NLMSGERR_ATTR_OFFS
};

// Parses an NLMSG_ERROR message; nullopt if it is not one or is cut short.
std::optional<Ack> parse_ack(const nlmsghdr* nlh);

// Throws KernelError(attempted, ack.error, ack.message).
[[noreturn]] void throw_ack(const std::string& attempted, const Ack& ack);

// Calls `each` for every complete message in `bytes` (one datagram).
void for_each_message(std::span<const char> bytes,
                      const std::function<void(const nlmsghdr*)>& each);

class Socket {
 public:
  struct Options {
    unsigned groups = 0;  // multicast groups to join at bind
    bool nonblocking = false;
    bool cap_ack = false;  // errors without the echoed request (smaller answers)
  };
  // Opens and binds a socket of `protocol` (NETLINK_NETFILTER, ...). Throws
  // KernelError naming `what`.
  Socket(int protocol, const std::string& what, Options options);
  Socket(int protocol, const std::string& what) : Socket(protocol, what, Options{}) {}
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  uint32_t port_id() const { return port_id_; }
  // Sequence numbers for this socket's requests, never reused while it
  // lives, so that answers to anything earlier are told apart.
  uint32_t next_seq() { return seq_++; }
  // For a batch encoded from next_seq() on: its numbers up to `last` are
  // taken.
  void used_seqs_through(uint32_t last) { seq_ = last + 1; }

  // Sends one message or a batch (the send buffer grows to hold it: the
  // kernel takes a batch as one datagram). Throws KernelError.
  void send(const std::string& what, std::span<const char> bytes);

  // Message callback: return false when the answer is complete (a request
  // whose answer is one message and no acknowledgement).
  using OnMessage = std::function<bool(const nlmsghdr*)>;

  // Reads the answer to request `seq` to its end: its data messages go to
  // `on_message`; it ends at NLMSG_DONE, an acknowledgement, or when
  // `on_message` says so. Answers to other sequence numbers are skipped.
  // An error answer throws KernelError (errno and the kernel's text), unless
  // its errno is `tolerated`: then that errno is returned (0 otherwise).
  int read_answer(const std::string& what, uint32_t seq, const OnMessage& on_message,
                  int tolerated = 0);
  // One datagram of that answer: nullopt while it goes on, else what
  // read_answer returns. The kernel fills a dump's next datagram only when
  // the previous one was read, so reading part by part paces the dump.
  std::optional<int> read_answer_part(const std::string& what, uint32_t seq,
                                      const OnMessage& on_message, int tolerated = 0);
  // send() then read_answer().
  int request(const std::string& what, std::span<const char> bytes, uint32_t seq,
              const OnMessage& on_message, int tolerated = 0);

  // Reads what is queued now, without waiting, at most `max_reads`
  // datagrams: each message goes to `each`. Returns whether the kernel
  // dropped messages because the queue was full (ENOBUFS) meanwhile.
  struct Drained {
    size_t reads = 0;
    bool lost = false;
  };
  Drained drain(const std::function<void(const nlmsghdr*)>& each, size_t max_reads = SIZE_MAX);

  // Sizes the receive queue (SO_RCVBUFFORCE, with CAP_NET_ADMIN, else SO_RCVBUF).
  void set_receive_queue(int bytes);

 private:
  int fd_ = -1;
  uint32_t port_id_ = 0;
  uint32_t seq_ = 1;
  std::vector<char> buffer_;
};

}  // namespace hostlb::netlink
