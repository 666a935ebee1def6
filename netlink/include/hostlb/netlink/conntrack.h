// Conntrack entries hostlb committed, found by the identity in their mark:
// counted with a kernel-filtered dump and deleted with one kernel-side
// filtered flush (ctnetlink delete without a tuple, carrying CTA_MARK and
// CTA_MARK_MASK), not by dumping everything and deleting entry by entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace hostlb {

class ConntrackTable {
 public:
  virtual ~ConntrackTable() = default;
  // Entries (IPv4 and IPv6) whose mark & mask == value. Throw KernelError.
  virtual size_t count(uint32_t value, uint32_t mask) = 0;
  // Deletes them; returns how many there were just before.
  virtual size_t flush(uint32_t value, uint32_t mask) = 0;
};

std::unique_ptr<ConntrackTable> make_ctnetlink_table();

// The two requests, as pure functions for tests.
std::vector<char> encode_mark_dump(uint32_t value, uint32_t mask, uint32_t seq);
std::vector<char> encode_mark_flush(uint32_t value, uint32_t mask, uint32_t seq);

}  // namespace hostlb
