// Links, host routes and permanent neighbours (rtnetlink through libnl-route).
// br_netfilter hands a DNATed frame back to the bridge only if the host has a
// route to the backend via that bridge; the permanent neighbour spares an ARP
// or ND exchange from a bridge that usually has no address.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hostlb/policies/address.h"

namespace hostlb {

// rtm_protocol of the routes hostlb installs, so that they can be told apart
// from everyone else's ("ip route show proto 213").
inline constexpr int kRouteProtocol = 213;

struct LinkState {
  int ifindex = 0;
  bool up = false;
};

struct InstalledRoute {
  int ifindex = 0;
  IpAddress address;
};

class RouteTable {
 public:
  virtual ~RouteTable() = default;

  // nullopt if no link has that name.
  virtual std::optional<LinkState> link(const std::string& name) = 0;
  virtual std::string link_name(int ifindex) = 0;

  // Create or replace; throw KernelError.
  virtual void replace_host_route(int ifindex, const IpAddress& address) = 0;
  virtual void replace_neighbour(int ifindex, const IpAddress& address, const MacAddress& mac) = 0;
  // A missing entry is not an error.
  virtual void delete_host_route(int ifindex, const IpAddress& address) = 0;
  virtual void delete_neighbour(int ifindex, const IpAddress& address) = 0;

  // Routes carrying kRouteProtocol, in the main table.
  virtual std::vector<InstalledRoute> list_host_routes() = 0;

  struct Neighbour {
    int ifindex = 0;
    IpAddress address;
    MacAddress mac;
  };
  // Permanent neighbour entries (IPv4 and IPv6).
  virtual std::vector<Neighbour> list_permanent_neighbours() = 0;
};

// The MACs a bridge has learnt on its ports (not its own), from its
// forwarding database. Throws KernelError.
std::vector<MacAddress> bridge_learnt_macs(const std::string& bridge);

// Throws KernelError if the rtnetlink socket cannot be opened.
std::unique_ptr<RouteTable> make_libnl_route_table();

}  // namespace hostlb
