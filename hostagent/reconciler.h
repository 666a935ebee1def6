// Brings the kernel in line with a compiled Datapath, in an order that
// leaves nothing half-applied: check everything that can be checked first,
// then host entries (harmless on their own), then the one nft transaction
// that makes the change visible to packets, then the removal of what is no
// longer wanted.
#pragma once

#include <stdexcept>
#include <string>

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
};

class Reconciler {
 public:
  Reconciler(NftClient& nft, RouteTable& routes, Sysctls& sysctls, ReconcilerOptions options);

  // Makes the kernel hold exactly `desired`. `previous` is what hostlbd last
  // applied (possibly from an earlier run); host entries in it that are no
  // longer desired are removed. Throws PreconditionError (nothing changed)
  // or KernelError.
  void apply(const Datapath& desired, const Datapath& previous);

  // Removes everything hostlbd installed: its nft table, its routes and the
  // neighbours it created. Established connections keep their conntrack NAT
  // bindings and are not flushed.
  void cleanup(const Datapath& previous);

 private:
  void check_sysctls(const Datapath& desired);
  void remove_host(int ifindex, const IpAddress& address);

  NftClient& nft_;
  RouteTable& routes_;
  Sysctls& sysctls_;
  ReconcilerOptions options_;
};

}  // namespace hostlb
