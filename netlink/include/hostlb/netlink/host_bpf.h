// The host datapath as a tc BPF program on the bridges' ports
// (netlink/bpf/host.bpf.c), for hosts whose bridges run without
// br_netfilter: traffic hostlb does not balance never enters netfilter, and
// VIP connections still live in the kernel's conntrack table. It is an
// NftRuleset to the agent (the same diffs, counters and checks); its
// "table" is the program's maps.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/sysctl.h"

namespace hostlb {

// Which datapath a host runs (hostlbd --datapath).
enum class HostDatapathKind {
  // hostlb's nftables table, bridged frames through br_netfilter: safe
  // beside other conntrack users of the bridges (security groups).
  kNft,
  // The BPF program: needs br_netfilter off for those bridges.
  kBpf,
};
std::string_view host_datapath_name(HostDatapathKind kind);
std::optional<HostDatapathKind> parse_host_datapath(std::string_view text);

// Seconds, as the kernel's conntrack sysctls hold them: the program keeps
// its entries' timeouts itself, with the kernel's values.
struct ConntrackTimeouts {
  uint32_t tcp_syn_sent = 120;
  uint32_t tcp_established = 432000;
  uint32_t tcp_fin_wait = 120;
  uint32_t tcp_close = 10;
  uint32_t udp = 30;
  uint32_t udp_stream = 120;
};
// The kernel's values (defaults for any it does not have).
ConntrackTimeouts read_conntrack_timeouts(Sysctls& sysctls);

// What the BPF datapath needs of the host's sysctls: br_netfilter must not
// hand these bridges' frames to netfilter, where the rewritten frame would
// get a second conntrack entry that clashes with the program's. hostlbd
// never turns br_netfilter off itself: other conntrack users may rely on it.
// Returns a sentence per problem.
std::vector<std::string> bpf_datapath_problems(Sysctls& sysctls,
                                               const std::vector<std::string>& bridges);

// The tables of an `nft list ruleset` listing, other than hostlb's own,
// that use conntrack where bridged frames pass with br_netfilter (families
// ip, ip6, inet, bridge): "inet filter (ct state)", ... Pure.
std::vector<std::string> tables_using_conntrack(const std::string& listing);

// Who else uses conntrack on this host, for hostlbctl doctor: the nftables
// tables above (iptables-nft's included), and iptables-legacy's tables,
// which may. Throws KernelError if the ruleset cannot be listed.
std::vector<std::string> other_conntrack_users();

// The ports of `bridge` without hostlb's host program (for doctor).
std::vector<std::string> ports_without_host_program(const std::string& bridge);

std::unique_ptr<NftRuleset> make_bpf_host_ruleset(RulesetPolicies policies,
                                                  ConntrackTimeouts timeouts);

// Takes hostlb's host program off every bridge port of this host (hostlbd
// --cleanup, or a switch back to nft): it stays attached when hostlbd exits,
// so that a restart loses nothing. Throws KernelError.
void remove_bpf_host_datapath();

}  // namespace hostlb
