// Brings the kernel in line with a compiled Datapath, in an order that
// leaves nothing half-applied: check everything that can be checked first,
// then host entries (harmless on their own), then the one nft transaction
// that makes the change visible to packets, then the removal of what is no
// longer wanted.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "hostlb/netlink/host_bpf.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/routes.h"
#include "hostlb/netlink/sysctl.h"
#include "hostlb/policies/datapath.h"

namespace hostlb {

// The request cannot be applied on this host as it is (a bridge is missing,
// br_netfilter is absent, a sysctl is wrong and may not be set). Nothing was
// changed in the kernel.
class PreconditionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ReconcilerOptions {
  MarkLayout marks{MarkLayout::kDefaultMask};
  // When false, wrong sysctls are reported as a PreconditionError instead of
  // being set.
  bool manage_sysctls = true;
  // The BPF datapath needs br_netfilter off for the bridges instead (and
  // never turns it off itself).
  HostDatapathKind datapath = HostDatapathKind::kNft;
};

enum class ApplyMode {
  // Rebuild the whole table in one transaction and sweep stale host routes:
  // for start-up, when the kernel may hold anything.
  kReplace,
  // Touch only what differs from `previous`, which the kernel is known to
  // hold: for changes while running. Falls back to kReplace if the kernel
  // disagrees with hostlbd's view.
  kIncremental,
};

struct ApplyReport {
  size_t bindings_added = 0;
  size_t bindings_removed = 0;
  size_t hosts_added = 0;
  size_t hosts_removed = 0;
  bool replaced_table = false;
  size_t connections_flushed = 0;  // of bindings that are gone
  size_t bindings_draining = 0;    // gone, their connections left to drain
  bool kernel_changed() const {
    return replaced_table || bindings_added || bindings_removed || hosts_added || hosts_removed;
  }
};

class Reconciler {
 public:
  Reconciler(NftRuleset& nft, RouteTable& routes, Sysctls& sysctls, ReconcilerOptions options);

  // Makes the kernel hold exactly `desired`; `previous` is what hostlbd last
  // applied (possibly in an earlier run) and `diff` the difference from it to
  // `desired`. Throws PreconditionError (nothing changed) or KernelError
  // (nothing changed: new host entries are rolled back, the nft transaction
  // is atomic).
  ApplyReport apply(const Datapath& desired, const Datapath& previous, const DatapathDiff& diff,
                    ApplyMode mode);

  // Removes everything hostlbd installed: its nft table, its routes and the
  // neighbours it created. Established connections keep their conntrack NAT
  // bindings and are not flushed.
  void cleanup(const Datapath& previous);

  // How the kernel differs from `applied` (hostlbd's table, and when
  // `with_host_entries` its routes and neighbours); empty if it does not.
  std::vector<std::string> differences(const Datapath& applied, bool with_table,
                                       bool with_host_entries);

  // Whether another process committed an nftables transaction since the
  // previous call (then the table is worth a `differences` look).
  bool ruleset_changed_by_others() { return nft_.changed_by_others(); }

  const MarkLayout& marks() const { return options_.marks; }

 private:
  void check_sysctls(const Datapath& desired);
  void remove_host(int ifindex, const IpAddress& address);
  void apply_nft(const Datapath& desired, const Datapath& previous, const DatapathDiff& diff,
                 ApplyMode mode, ApplyReport& report);

  NftRuleset& nft_;
  RouteTable& routes_;
  Sysctls& sysctls_;
  ReconcilerOptions options_;
};

}  // namespace hostlb
