// Stateful fakes of the kernel interfaces: each applies an operation the way
// the kernel would (a failed nft transaction leaves the ruleset as it was, a
// route to a missing link fails) and exposes the resulting state.
#pragma once

#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/routes.h"
#include "hostlb/netlink/sysctl.h"

namespace hostlb::testing {

class FakeNft : public NftClient {
 public:
  NftRunStats run(const std::string& what, const std::string& script) override {
    ++transactions;
    if (fail_next) {
      fail_next = false;
      throw KernelError(what, "Error: Could not process rule: No such file or directory");
    }
    // Every script hostlbd sends starts by deleting the table, so the
    // resulting ruleset is what follows the last "delete table".
    const std::string marker = "delete table inet hostlb\n";
    const auto at = script.rfind(marker);
    ruleset = at == std::string::npos ? ruleset + script : script.substr(at + marker.size());
    return {};
  }

  std::string ruleset;  // empty: no table
  int transactions = 0;
  bool fail_next = false;
};

class FakeRoutes : public RouteTable {
 public:
  std::optional<LinkState> link(const std::string& name) override {
    auto it = links.find(name);
    if (it == links.end()) return std::nullopt;
    return LinkState{it->second, !down.count(name)};
  }
  std::string link_name(int ifindex) override {
    for (const auto& [name, index] : links)
      if (index == ifindex) return name;
    return "ifindex " + std::to_string(ifindex);
  }
  void replace_host_route(int ifindex, const IpAddress& address) override {
    check_link(ifindex, "installing route " + address.str());
    if (fail_route_for && *fail_route_for == address)
      throw KernelError("installing route " + address.str(), "Operation not permitted");
    routes.insert({ifindex, address});
  }
  void replace_neighbour(int ifindex, const IpAddress& address, const MacAddress& mac) override {
    check_link(ifindex, "installing neighbour " + address.str());
    neighbours[{ifindex, address}] = mac;
  }
  void delete_host_route(int ifindex, const IpAddress& address) override {
    routes.erase({ifindex, address});
  }
  void delete_neighbour(int ifindex, const IpAddress& address) override {
    neighbours.erase({ifindex, address});
  }
  std::vector<InstalledRoute> list_host_routes() override {
    std::vector<InstalledRoute> out;
    for (const auto& [ifindex, address] : routes) out.push_back({ifindex, address});
    return out;
  }

  std::map<std::string, int> links{{"br0", 10}, {"br1", 11}};
  std::set<std::string> down;
  std::set<std::pair<int, IpAddress>> routes;
  std::map<std::pair<int, IpAddress>, MacAddress> neighbours;
  std::optional<IpAddress> fail_route_for;

 private:
  void check_link(int ifindex, const std::string& what) {
    for (const auto& [name, index] : links)
      if (index == ifindex) return;
    throw KernelError(what, "No such device");
  }
};

class FakeSysctls : public Sysctls {
 public:
  std::optional<std::string> read(const std::string& key) override {
    auto it = values.find(key);
    if (it == values.end()) return std::nullopt;
    return it->second;
  }
  void write(const std::string& key, const std::string& value) override {
    if (!values.count(key)) throw KernelError("setting sysctl " + key, "No such file or directory");
    values[key] = value;
    ++writes;
  }

  // A namespace with br_netfilter loaded and two bridges that do not forward.
  std::map<std::string, std::string> values{
      {"net/bridge/bridge-nf-call-iptables", "1"}, {"net/bridge/bridge-nf-call-ip6tables", "0"},
      {"net/ipv4/conf/br0/forwarding", "0"},       {"net/ipv6/conf/br0/forwarding", "0"},
      {"net/ipv4/conf/br1/forwarding", "0"},       {"net/ipv6/conf/br1/forwarding", "0"},
  };
  int writes = 0;
};

}  // namespace hostlb::testing
