#include "reconciler.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <set>

#include "hostlb/netlink/error.h"

namespace hostlb {

Reconciler::Reconciler(NftClient& nft, RouteTable& routes, Sysctls& sysctls,
                       ReconcilerOptions options)
    : nft_(nft), routes_(routes), sysctls_(sysctls), options_(options) {}

void Reconciler::check_sysctls(const Datapath& desired) {
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

void Reconciler::apply(const Datapath& desired, const Datapath& previous) {
  const auto started = std::chrono::steady_clock::now();
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
  // nothing until a DNAT rule sends traffic their way.
  std::set<std::pair<std::string, IpAddress>> wanted;
  std::set<std::pair<std::string, IpAddress>> existed;
  for (const auto& host : previous.hosts) existed.insert({host.bridge, host.address});
  std::vector<const HostEntry*> added;
  NftRunStats stats;
  try {
    for (const auto& host : desired.hosts) {
      const int index = ifindex.at(host.bridge);
      if (!existed.count({host.bridge, host.address})) added.push_back(&host);
      routes_.replace_host_route(index, host.address);
      routes_.replace_neighbour(index, host.address, host.mac);
      wanted.insert({host.bridge, host.address});
    }
    // 3. The one transaction that switches packets over.
    stats = nft_.run("replacing nftables table " + std::string(kNftFamily) + " " + kNftTable,
                     render_full_ruleset(desired, options_.marks));
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
  spdlog::info(
      "datapath applied: {} bindings, {} host entries in {} ms (nft helper peak RSS {} kB)",
      desired.bindings.size(), desired.hosts.size(),
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                            started)
          .count(),
      stats.helper_peak_rss_kb);

  // 4. What is no longer wanted: entries of the previous state, and any
  // route of ours the kernel still holds (e.g. from a state that was lost).
  for (const auto& host : previous.hosts) {
    if (wanted.count({host.bridge, host.address})) continue;
    auto link = routes_.link(host.bridge);
    if (!link) continue;  // the bridge is gone, and its entries with it
    remove_host(link->ifindex, host.address);
    spdlog::info("removed host entry {} on {} (backend {})", host.address.str(), host.bridge,
                 host.backend);
  }
  for (const auto& route : routes_.list_host_routes()) {
    const std::string bridge = routes_.link_name(route.ifindex);
    if (wanted.count({bridge, route.address})) continue;
    remove_host(route.ifindex, route.address);
    spdlog::info("removed stale host route {} on {}", route.address.str(), bridge);
  }
}

void Reconciler::remove_host(int ifindex, const IpAddress& address) {
  routes_.delete_host_route(ifindex, address);
  routes_.delete_neighbour(ifindex, address);
}

void Reconciler::cleanup(const Datapath& previous) {
  nft_.run("removing nftables table " + std::string(kNftFamily) + " " + kNftTable,
           render_delete_ruleset());
  size_t removed = 0;
  for (const auto& route : routes_.list_host_routes()) {
    remove_host(route.ifindex, route.address);
    ++removed;
  }
  for (const auto& host : previous.hosts) {
    if (auto link = routes_.link(host.bridge)) remove_host(link->ifindex, host.address);
  }
  spdlog::info("cleanup: removed table {} {} and {} host routes", kNftFamily, kNftTable, removed);
}

}  // namespace hostlb
