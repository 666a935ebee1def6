// Conntrack entries hostlb committed, found by the identity in their mark:
// counted with a kernel-filtered dump and deleted with one kernel-side
// filtered flush (ctnetlink delete without a tuple, carrying CTA_MARK and
// CTA_MARK_MASK), not by dumping everything and deleting entry by entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hostlb/policies/address.h"

namespace hostlb {

struct ConntrackEntry {
  bool tcp = true;  // else UDP
  IpAddress client;
  uint16_t client_port = 0;
  IpAddress vip;  // the original destination
  uint16_t vip_port = 0;
  IpAddress backend;  // the reply's source
  uint16_t backend_port = 0;
  std::string state;  // TCP state ("ESTABLISHED", ...); empty for UDP
  uint32_t mark = 0;
  uint32_t id = 0;        // the kernel's entry id
  uint64_t start_ns = 0;  // wall clock, 0 if timestamps are off
};

// A listing read part by part: the kernel's dump advances only when a part
// is asked for, so whoever streams it on (hostlbctl connections) holds one
// part at a time, whatever the size of the table.
class ConntrackListing {
 public:
  virtual ~ConntrackListing() = default;
  // Calls `each` for the entries of the next part (one datagram, a few
  // hundred entries at most); false once the listing has ended. Throws
  // KernelError.
  virtual bool next(const std::function<void(const ConntrackEntry&)>& each) = 0;
};

class ConntrackTable {
 public:
  virtual ~ConntrackTable() = default;
  // Calls `each` for every TCP or UDP entry whose mark & mask == value, as
  // the kernel's filtered dump delivers them (nothing is collected);
  // returns how many there were.
  virtual size_t list(uint32_t value, uint32_t mask,
                      const std::function<void(const ConntrackEntry&)>& each) = 0;
  // The same entries, as a listing read part by part (its own socket: the
  // table's other requests may run between two parts). Throws KernelError.
  virtual std::unique_ptr<ConntrackListing> open_listing(uint32_t value, uint32_t mask) = 0;
  // Entries (IPv4 and IPv6) whose mark & mask == value. Throw KernelError.
  virtual size_t count(uint32_t value, uint32_t mask) = 0;
  // Deletes them; returns how many there were just before.
  virtual size_t flush(uint32_t value, uint32_t mask) = 0;
  // Deletes the entries whose mark & mask is any of `values`, in one walk
  // of the table: the dump's entries are deleted one by one as it delivers
  // them. For many marks at once, where flush() would walk the whole table
  // twice per mark (10,000 removed services: minutes instead of a fraction
  // of a second). Returns how many there were just before, per value (none:
  // absent).
  virtual std::map<uint32_t, size_t> flush_marks(const std::set<uint32_t>& values,
                                                 uint32_t mask) = 0;
  // Makes the kernel free the entries that have timed out but that its
  // garbage collector has not reached yet: after a flood it can leave a
  // table of them, still counted in nf_conntrack_count, for longer than a
  // minute (until then a new connection gets room only when its own
  // allocation happens to reap some). A dump frees every timed-out entry
  // it walks past; this one is filtered in the kernel on a mark hostlb
  // never sets (all 32 bits), so nothing comes back. Returns how many
  // entries did carry that mark (0 unless another user sets it).
  virtual size_t reap_expired() = 0;
};

std::unique_ptr<ConntrackTable> make_ctnetlink_table();

// The two requests, as pure functions for tests.
std::vector<char> encode_mark_dump(uint32_t value, uint32_t mask, uint32_t seq);
std::vector<char> encode_mark_flush(uint32_t value, uint32_t mask, uint32_t seq);

}  // namespace hostlb
