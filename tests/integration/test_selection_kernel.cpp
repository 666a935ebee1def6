// The model of the kernel's choice against the kernel itself: nft's jhash
// expression, run on real packets, must put every flow in the row
// flow_row() computes. The kernel writes its row into each flow's conntrack
// mark (an output rule in a lab namespace); the test reads the marks back.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <tuple>

#include "hostlb/netlink/conntrack.h"
#include "hostlb/policies/selection.h"
#include "lab.h"

namespace hostlb {
namespace {

using lab::Lab;

constexpr uint32_t kRows = kDefaultRows;
constexpr uint32_t kOffset = 3 << 16;  // as the gateway offsets a service's rows

using Tuple = std::tuple<std::string, uint16_t, std::string, uint16_t>;

// Sends one UDP datagram per flow from `flows_per_socket` flows on each of
// `sockets` sockets (kernel-chosen source ports), to random VIPs and ports.
std::map<Tuple, Flow> send_flows(const Lab& lab, bool v6, int sockets, int flows_per_socket,
                                 std::mt19937& rng) {
  std::map<Tuple, Flow> sent;
  const int domain = v6 ? AF_INET6 : AF_INET;
  for (int s = 0; s < sockets; ++s) {
    const int fd = lab.socket_in("hv", domain, SOCK_DGRAM);
    EXPECT_GE(fd, 0);
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    for (int i = 0; i < flows_per_socket; ++i) {
      sockaddr_storage to{};
      Flow flow;
      flow.vip_port = static_cast<uint16_t>(1 + rng() % 65535);
      if (v6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&to);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(flow.vip_port);
        const std::string vip = "2001:db8:f00::" + std::to_string(1 + rng() % 9999);
        inet_pton(AF_INET6, vip.c_str(), &a->sin6_addr);
        flow.vip = *IpAddress::parse(vip);
      } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&to);
        a->sin_family = AF_INET;
        a->sin_port = htons(flow.vip_port);
        const std::string vip = "203.0.113." + std::to_string(1 + rng() % 254);
        inet_pton(AF_INET, vip.c_str(), &a->sin_addr);
        flow.vip = *IpAddress::parse(vip);
      }
      EXPECT_EQ(::sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&to),
                         v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in)),
                1);
      if (i == 0) ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
      flow.client_port = v6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port)
                            : ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
      flow.client = *IpAddress::parse(v6 ? "2001:db8:200::1" : "198.18.200.1");
      sent[{flow.client.str(), flow.client_port, flow.vip.str(), flow.vip_port}] = flow;
    }
    ::close(fd);
  }
  return sent;
}

TEST(SelectionKernel, TheKernelPutsEveryFlowInTheRowTheModelComputes) {
  Lab lab;
  // VIP routes lead out of a veth whose far end drops what it gets (no
  // forwarding): datagrams are tracked, and marked, on their way out. The
  // next hop's MAC is pinned, so nothing waits for ARP.
  for (const char* cmd :
       {"ip link add sel0 type veth peer name sel1", "ip link set sel0 up", "ip link set sel1 up",
        "ip addr add 198.18.200.1/24 dev sel0", "ip addr add 2001:db8:200::1/64 dev sel0 nodad",
        "ip neigh replace 198.18.200.2 lladdr 02:00:00:00:02:02 dev sel0 nud permanent",
        "ip neigh replace 2001:db8:200::2 lladdr 02:00:00:00:02:02 dev sel0 nud permanent",
        "ip route add 203.0.113.0/24 via 198.18.200.2 src 198.18.200.1",
        "ip route add 2001:db8:f00::/48 via 2001:db8:200::2 src 2001:db8:200::1"})
    ASSERT_EQ(lab.in("hv", cmd).exit_code, 0) << cmd;
  char seed[16];
  std::snprintf(seed, sizeof seed, "0x%08x", kSelectionSeed);
  const std::string rule =
      "mod " + std::to_string(kRows) + " seed " + seed + " offset " + std::to_string(kOffset);
  // (Rules end at a newline: nft 1.0.6 does not take "offset N;".)
  const std::string ruleset =
      "table inet hostlb_seltest {\n chain out {\n  type filter hook output priority 0;\n"
      "  ct mark set jhash ip saddr . th sport . ip daddr . th dport " +
      rule + "\n  ct mark set jhash ip6 saddr . th sport . ip6 daddr . th dport " + rule +
      "\n }\n}\n";
  const std::string file = lab.dir() + "/selection.nft";
  std::ofstream(file) << ruleset;
  ASSERT_EQ(lab.in("hv", "nft -f " + file).exit_code, 0) << ruleset;

  std::mt19937 rng(20261202);
  std::map<Tuple, Flow> flows = send_flows(lab, false, 100, 100, rng);
  auto v6 = send_flows(lab, true, 100, 100, rng);
  ASSERT_EQ(flows.size(), 10'000u);
  ASSERT_EQ(v6.size(), 10'000u);
  flows.merge(v6);

  Lab::Entered in_hv(lab, "hv");
  auto conntrack = make_ctnetlink_table();
  size_t checked[2] = {0, 0}, wrong = 0;
  conntrack->list(0, 0, [&](const ConntrackEntry& e) {
    auto it = flows.find({e.client.str(), e.client_port, e.vip.str(), e.vip_port});
    if (it == flows.end()) return;
    const uint32_t model = flow_row(it->second, kRows) + kOffset;
    ++checked[e.client.is_v6()];
    if (e.mark != model && ++wrong <= 5)
      ADD_FAILURE() << e.client.str() << ":" << e.client_port << " -> " << e.vip.str() << ":"
                    << e.vip_port << ": kernel row " << e.mark - kOffset << ", model "
                    << model - kOffset;
  });
  EXPECT_EQ(checked[0], 10'000u) << "IPv4 flows found in conntrack";
  EXPECT_EQ(checked[1], 10'000u) << "IPv6 flows found in conntrack";
  EXPECT_EQ(wrong, 0u);
}

}  // namespace
}  // namespace hostlb
