// The chaining program on a host's uplink (netlink/bpf/chain.bpf.c): tc
// ingress, BPF, with the kernel's conntrack lookup. Its maps are written
// from ChainTables (policies/chaining.h): what differs from what was
// written last, nothing else.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "hostlb/policies/address.h"
#include "hostlb/policies/chaining.h"

namespace hostlb {

class ChainDatapath {
 public:
  virtual ~ChainDatapath() = default;
  // Loads the program and attaches it at tc ingress of `uplink` (replacing
  // one attached before); chained frames leave with `self` as their
  // source. Throws KernelError.
  virtual void attach(const std::string& uplink, const MacAddress& self) = 0;
  // Frames from these MACs (the gateways') may be chained.
  virtual void set_gateways(const std::set<MacAddress>& gateways) = 0;
  virtual void update(const ChainTables& tables) = 0;
  // Chained packets per service index (ChainService::index), all CPUs.
  virtual std::map<uint32_t, uint64_t> chained() = 0;
  // Takes the program off the uplink.
  virtual void detach() = 0;
};

std::unique_ptr<ChainDatapath> make_bpf_chaining();
// Takes hostlb's chaining program off `uplink` (hostlbd --cleanup): the
// program stays attached when hostlbd exits, so that a restart loses
// nothing. Nothing to do if it is not there. Throws KernelError.
void remove_chaining(const std::string& uplink);

}  // namespace hostlb
