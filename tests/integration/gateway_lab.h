// A gateway in a lab: namespace `gw` between a client namespace `cl` (its
// cli0) and the lab's bridge (its fab0), forwarding by plain routing; the
// VMs hold the VIP themselves and route replies back through it.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "lab.h"

namespace hostlb::lab {

inline constexpr const char* kClient = "198.18.2.1";  // each client, alone behind its gateway
inline constexpr const char* kGatewayVip = "203.0.113.10";

// Builds gateway `gw` between client namespace `cl` and the lab's bridge.
inline void build_gateway(const Lab& lab, const std::string& gw, const std::string& cl) {
  const std::string g = lab.ns(gw), c = lab.ns(cl), hv = lab.ns("hv");
  for (const std::string& cmd : {
           "ip netns add " + g,
           "ip netns add " + c,
           "ip link add cli0 netns " + g + " type veth peer name eth0 netns " + c,
           "ip link add fab0 netns " + g + " address 02:00:00:00:0f:01 type veth peer name " + gw +
               " netns " + hv,
           "ip -n " + hv + " link set " + gw + " master br0 up",
           "ip -n " + g + " link set lo up",
           "ip -n " + g + " link set cli0 up",
           "ip -n " + g + " link set fab0 up",
           "ip -n " + g + " addr add 198.18.2.254/24 dev cli0",
           "ip -n " + g + " addr add 198.18.1.254/24 dev fab0",
           "ip netns exec " + g + " sysctl -qw net.ipv4.ip_forward=1",
           "ip -n " + c + " link set lo up",
           "ip -n " + c + " link set eth0 up",
           "ip -n " + c + " addr add " + std::string(kClient) + "/24 dev eth0",
           "ip -n " + c + " route add default via 198.18.2.254",
       }) {
    ASSERT_EQ(lab::sh(cmd).exit_code, 0) << cmd;
  }
  for (const char* vm : {"vm1", "vm2"}) {
    lab.in(vm, "ip addr add " + std::string(kGatewayVip) + "/32 dev lo");
    lab.in(vm, "ip route replace 198.18.2.0/24 via 198.18.1.254");
  }
}

}  // namespace hostlb::lab
