// Conntrack events (an entry committed, an entry destroyed) for hostlb's
// connections only: the kernel filters them by mark before they are queued,
// so the rate hostlbd sees is that of its own connections.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

struct nlmsghdr;

namespace hostlb {

struct ConntrackEvent {
  enum class Kind { kNew, kDestroy };
  Kind kind = Kind::kNew;
  uint32_t mark = 0;
  uint32_t id = 0;  // the kernel's entry id
  // Wall clock (ns) the entry was committed / destroyed at; 0 when
  // conntrack timestamps are off.
  uint64_t start_ns = 0;
  uint64_t stop_ns = 0;
};

// One ctnetlink event message as data; nullopt if it is not a NEW or
// DESTROY event. Pure, for tests.
std::optional<ConntrackEvent> parse_conntrack_event(const nlmsghdr* nlh);

class ConntrackEvents {
 public:
  virtual ~ConntrackEvents() = default;
  // Readable when events are queued (for poll).
  virtual int fd() const = 0;
  struct Batch {
    size_t events = 0;
    // The kernel dropped events because the socket's queue was full
    // (ENOBUFS): what was counted is no longer true; resync from a dump.
    bool lost = false;
  };
  // Reads what is queued without blocking; at most `max_messages` socket
  // reads so that a storm cannot starve the rest of the event loop.
  virtual Batch read(const std::function<void(const ConntrackEvent&)>& each,
                     size_t max_messages = 64) = 0;
};

// Subscribes to NEW and DESTROY events of entries whose mark has a bit in
// `mark_mask` set, with a receive queue of `queue_bytes`. Throws KernelError.
std::unique_ptr<ConntrackEvents> make_ctnetlink_events(uint32_t mark_mask, int queue_bytes);

}  // namespace hostlb
