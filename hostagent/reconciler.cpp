#include "reconciler.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <set>

#include "hostlb/netlink/error.h"

namespace hostlb {

namespace {
using HostSlot = std::pair<std::string, IpAddress>;  // (bridge, address)
}

Reconciler::Reconciler(NftRuleset& nft, RouteTable& routes, Sysctls& sysctls,
                       ReconcilerOptions options)
    : nft_(nft), routes_(routes), sysctls_(sysctls), options_(options) {}

void Reconciler::check_sysctls(const Datapath& desired) {
  if (options_.datapath == HostDatapathKind::kBpf) {
    const auto problems = bpf_datapath_problems(sysctls_, desired.bridges);
    if (!problems.empty())
      throw PreconditionError(
          problems.front() +
          "; hostlbd does not turn br_netfilter off, other conntrack users of the bridges may "
          "rely on it (see hostlbctl doctor), or run --datapath nft");
    return;
  }
  std::vector<SysctlRequirement> to_set;
  for (const auto& req : datapath_sysctls(desired.bridges)) {
    const auto current = sysctls_.read(req.key);
    if (!current) {
      if (req.key.rfind("net/bridge/", 0) == 0)
        throw PreconditionError(
            "sysctl " + sysctl_display_name(req.key) +
            " does not exist: br_netfilter is not loaded (modprobe br_netfilter)");
      throw PreconditionError("sysctl " + sysctl_display_name(req.key) + " does not exist");
    }
    if (*current == req.value) continue;
    if (!options_.manage_sysctls)
      throw PreconditionError("sysctl " + sysctl_display_name(req.key) + " is " + *current +
                              ", the datapath needs " + req.value + " (" + req.why + ")");
    to_set.push_back(req);
    to_set.back().why += " (was " + *current + ")";
  }
  for (const auto& req : to_set) {
    sysctls_.write(req.key, req.value);
    spdlog::info("set sysctl {}={}: {}", sysctl_display_name(req.key), req.value, req.why);
  }
}

ApplyReport Reconciler::apply(const Datapath& desired, const Datapath& previous,
                              const DatapathDiff& diff, ApplyMode mode) {
  const auto started = std::chrono::steady_clock::now();
  ApplyReport report;

  // 1. Everything that can be checked without changing anything.
  std::map<std::string, int> ifindex;
  for (const auto& bridge : desired.bridges) {
    auto link = routes_.link(bridge);
    if (!link) throw PreconditionError("bridge " + bridge + " does not exist on this host");
    if (!link->up) throw PreconditionError("bridge " + bridge + " is down");
    ifindex[bridge] = link->ifindex;
  }
  check_sysctls(desired);

  // 2. Host entries first: a route and a neighbour for a backend address do
  // nothing until a DNAT rule sends traffic their way. At start-up all are
  // (re)installed; while running only those that changed.
  const auto& hosts = mode == ApplyMode::kReplace ? desired.hosts : diff.hosts_added;
  std::set<HostSlot> existed;
  for (const auto& host : previous.hosts) existed.insert({host.bridge, host.address});
  std::vector<const HostEntry*> added;
  try {
    for (const auto& host : hosts) {
      const int index = ifindex.at(host.bridge);
      if (!existed.count({host.bridge, host.address})) added.push_back(&host);
      routes_.replace_host_route(index, host.address);
      routes_.replace_neighbour(index, host.address, host.mac);
    }
    report.hosts_added = diff.hosts_added.size();
    // 3. The one transaction that switches packets over.
    apply_nft(desired, previous, diff, mode, report);
  } catch (...) {
    for (const HostEntry* host : added) {
      try {
        remove_host(ifindex.at(host->bridge), host->address);
      } catch (const std::exception& e) {
        spdlog::warn("rolling back host entry {} on {}: {}", host->address.str(), host->bridge,
                     e.what());
      }
    }
    throw;
  }

  // 4. What is no longer wanted.
  std::set<HostSlot> wanted;
  for (const auto& host : desired.hosts) wanted.insert({host.bridge, host.address});
  for (const auto& host : diff.hosts_removed) {
    if (wanted.count({host.bridge, host.address})) continue;  // changed MAC: replaced above
    auto link = routes_.link(host.bridge);
    if (!link) continue;  // the bridge is gone, and its entries with it
    remove_host(link->ifindex, host.address);
    ++report.hosts_removed;
    spdlog::info("removed host entry {} on {} (backend {})", host.address.str(), host.bridge,
                 host.backend);
  }
  if (mode == ApplyMode::kReplace) {
    // Any route of ours the kernel still holds that no state explains (a
    // state directory that was lost, an interrupted run).
    for (const auto& route : routes_.list_host_routes()) {
      const std::string bridge = routes_.link_name(route.ifindex);
      if (wanted.count({bridge, route.address})) continue;
      remove_host(route.ifindex, route.address);
      ++report.hosts_removed;
      spdlog::info("removed stale host route {} on {}", route.address.str(), bridge);
    }
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  if (report.kernel_changed())
    spdlog::info("datapath applied: {} bindings, {} host entries in {} ms (+{} -{} bindings)",
                 desired.bindings.size(), desired.hosts.size(), ms, report.bindings_added,
                 report.bindings_removed);
  return report;
}

std::vector<std::string> Reconciler::differences(const Datapath& applied, bool with_table,
                                                 bool with_host_entries) {
  std::vector<std::string> out;
  if (with_table) {
    if (auto d = nft_.difference(applied, options_.marks)) out.push_back(*d);
  }
  if (!with_host_entries || applied.hosts.empty()) return out;
  std::map<int, std::string> bridge_of;
  std::map<std::string, int> ifindex;
  for (const auto& bridge : applied.bridges) {
    auto link = routes_.link(bridge);
    if (!link) {
      out.push_back("bridge " + bridge + " is missing");
      continue;
    }
    bridge_of[link->ifindex] = bridge;
    ifindex[bridge] = link->ifindex;
  }
  std::set<HostSlot> routes;
  for (const auto& r : routes_.list_host_routes())
    if (bridge_of.count(r.ifindex)) routes.insert({bridge_of[r.ifindex], r.address});
  std::map<HostSlot, MacAddress> neighbours;
  for (const auto& n : routes_.list_permanent_neighbours())
    if (bridge_of.count(n.ifindex)) neighbours[{bridge_of[n.ifindex], n.address}] = n.mac;
  for (const auto& h : applied.hosts) {
    if (!ifindex.count(h.bridge)) continue;
    if (!routes.count({h.bridge, h.address}))
      out.push_back("route " + h.address.str() + " dev " + h.bridge + " is missing");
    auto n = neighbours.find({h.bridge, h.address});
    if (n == neighbours.end() || n->second != h.mac)
      out.push_back("neighbour " + h.address.str() + " dev " + h.bridge + " is missing");
  }
  return out;
}

void Reconciler::apply_nft(const Datapath& desired, const Datapath& previous,
                           const DatapathDiff& diff, ApplyMode mode, ApplyReport& report) {
  if (mode == ApplyMode::kIncremental) {
    if (!diff.changes_ruleset()) return;
    try {
      const auto started = std::chrono::steady_clock::now();
      nft_.apply(diff, options_.marks);
      spdlog::debug("nftables change of +{} -{} bindings took {} us", diff.bindings_added.size(),
                    diff.bindings_removed.size(),
                    std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count());
      report.bindings_added = diff.bindings_added.size();
      report.bindings_removed = diff.bindings_removed.size();
      return;
    } catch (const KernelError& e) {
      // Something missing or already there: the kernel's table is not what
      // hostlbd believes (someone edited it), and rebuilding it whole is
      // still one atomic transaction. Any other refusal (permissions,
      // memory) would refuse the rebuild too.
      if (!e.is_not_found() && !e.is_exists()) throw;
      spdlog::warn("incremental nftables change failed ({}); replacing the whole table", e.what());
    }
  }
  const NftRunStats stats = nft_.replace(desired, options_.marks);
  report.replaced_table = true;
  report.bindings_added = diff.bindings_added.size();
  report.bindings_removed = diff.bindings_removed.size();
  if (options_.datapath == HostDatapathKind::kBpf)
    spdlog::info("replaced the host program's maps: {} bindings, {} before",
                 desired.bindings.size(), previous.bindings.size());
  else
    spdlog::info("replaced table {} {}: {} bindings, {} before (nft helper peak RSS {} kB)",
                 kNftFamily, kNftTable, desired.bindings.size(), previous.bindings.size(),
                 stats.helper_peak_rss_kb);
}

void Reconciler::remove_host(int ifindex, const IpAddress& address) {
  routes_.delete_host_route(ifindex, address);
  routes_.delete_neighbour(ifindex, address);
}

void Reconciler::cleanup(const Datapath& previous) {
  nft_.remove();
  size_t removed = 0;
  for (const auto& route : routes_.list_host_routes()) {
    remove_host(route.ifindex, route.address);
    ++removed;
  }
  for (const auto& host : previous.hosts) {
    if (auto link = routes_.link(host.bridge)) remove_host(link->ifindex, host.address);
  }
  if (options_.datapath == HostDatapathKind::kBpf)
    spdlog::info("cleanup: removed the host program and {} host routes", removed);
  else
    spdlog::info("cleanup: removed table {} {} and {} host routes", kNftFamily, kNftTable, removed);
}

}  // namespace hostlb
