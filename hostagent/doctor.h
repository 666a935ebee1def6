// hostlbctl doctor: is this host able to run hostlb's datapath, and does
// the kernel hold what the desired state says? Facts are gathered from the
// kernel (gather_facts) and judged by a pure function (diagnose), so that
// every verdict and its fix is tested without root.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "hostlb/netlink/host_bpf.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/routes.h"
#include "hostlb/netlink/sysctl.h"
#include "hostlb/policies/datapath.h"

namespace hostlb {

struct Finding {
  enum class Level { kPass, kWarn, kFail };
  Level level = Level::kPass;
  std::string check;
  std::string detail;
  std::string fix;  // empty when there is nothing to do
};

struct HostFacts {
  std::optional<std::string> nftables_error;  // set if nf_tables cannot be used
  bool conntrack_available = false;
  std::optional<uint64_t> conntrack_count, conntrack_max;
  std::map<std::string, std::optional<std::string>> sysctls;  // key -> value
  std::map<std::string, std::optional<LinkState>> bridges;    // name -> link
  std::map<std::string, std::set<MacAddress>> learnt;         // bridge -> FDB MACs
  std::map<std::string, std::string> fdb_errors;              // bridge -> why unreadable
  std::set<std::pair<std::string, IpAddress>> routes;         // (bridge, address), proto 213
  std::map<std::pair<std::string, IpAddress>, MacAddress> neighbours;  // permanent ones
  NftRuleset::Inventory table;
  // Which datapath the daemon runs (from its status; nft without a daemon).
  HostDatapathKind datapath = HostDatapathKind::kNft;
  // Other users of conntrack on bridged traffic (tables_using_conntrack),
  // or why they could not be listed.
  std::vector<std::string> conntrack_users;
  std::optional<std::string> conntrack_users_error;
  std::vector<std::string> bpf_problems;  // bpf_datapath_problems
  // Whether the host has a default route of each family (nft's refusals
  // need a route toward the client).
  std::optional<bool> default_route_v4, default_route_v6;
  std::map<std::string, std::vector<std::string>> ports_without_program;  // bridge -> ports
  // The daemon's flood limits (from its status; unknown without a daemon).
  std::optional<AdmissionLimits> admission;
  // Where the desired state came from, or why there is none.
  std::string desired_source;
  bool daemon_reachable = false;
  std::string daemon_detail;  // version, or why unreachable
};

// Reads what `diagnose` needs for `desired` from the kernel; never throws
// (what cannot be read is recorded as such).
HostFacts gather_facts(const Datapath& desired, RouteTable& routes, Sysctls& sysctls,
                       NftRuleset& nft);

// One finding per check, in a fixed order.
std::vector<Finding> diagnose(const Datapath& desired, const HostFacts& facts);

}  // namespace hostlb
