// What happens to a binding after it is removed. Its connections are either
// flushed at once or left to drain for a while (the identity in their mark
// stays reserved until they are flushed, so that no newcomer inherits
// them); either way new connections to it are refused for a while longer,
// because gateways may still send them. Pure: the agent supplies the clock.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "hostlb/policies/datapath.h"

namespace hostlb {

struct RetiredBinding {
  Binding binding;
  // Unix time at which the drain ends and what is left is flushed; 0 once
  // its connections have been flushed (its identity is then free).
  int64_t drain_until = 0;
  // Unix time until which new connections to it are refused.
  int64_t refuse_until = 0;

  bool draining() const { return drain_until != 0; }
  bool operator==(const RetiredBinding&) const = default;
};

struct RetirePolicy {
  int64_t now = 0;
  uint32_t drain_seconds = 0;   // 0: flush at once
  uint32_t refuse_seconds = 0;  // after the drain (or the removal)
};

// Sorted by binding key; at most one entry per key.
class Retirements {
 public:
  Retirements() = default;
  explicit Retirements(const std::vector<RetiredBinding>& entries);

  const std::vector<RetiredBinding>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }

  // Identities still held: those of draining bindings.
  BindingIds reserved_ids() const;

  struct Change {
    std::vector<RetiredBinding> retired;  // entries added
    std::vector<BindingKey> restored;     // entries dropped: their binding is back
    std::vector<Binding> flush_now;       // gone without a drain
  };
  // Records a change that removed `gone` (see bindings_gone) and leads to
  // `next`: the gone bindings retire (draining when the policy says so), and
  // a retired binding whose key is a binding again in `next` is dropped (its
  // drain is cancelled; it has its identity back). Then sets next.refused
  // and the refused part of `diff` from `before`.
  Change record(const std::vector<Binding>& gone, Datapath& next, DatapathDiff& diff,
                const Datapath& before, const RetirePolicy& policy);

  struct Expiry {
    std::vector<Binding> drained;  // drains that ended: flush these now
    size_t refusals_ended = 0;
    bool empty() const { return drained.empty() && refusals_ended == 0; }
  };
  // Ends the drains and refusals due by `now`; updates next.refused and
  // `diff` like record().
  Expiry expire(int64_t now, Datapath& next, DatapathDiff& diff, const Datapath& before);

  // The earliest time at which expire() has something to do.
  std::optional<int64_t> next_deadline() const;

  // Applies a recorded change again (journal replay).
  void replay(const Change& change);

  // The keys to refuse while `active` is the datapath: sorted, unique.
  std::vector<DeliveryKey> refused_for(const Datapath& active) const;

  bool operator==(const Retirements&) const = default;

 private:
  void insert(const RetiredBinding& entry);

  std::vector<RetiredBinding> entries_;
};

}  // namespace hostlb
