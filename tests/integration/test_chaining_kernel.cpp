// Chaining between hosts in the fleet lab (scripts/fleet-lab.sh): two
// gateways behind an ECMP router, two hypervisors each running hostlbd
// with the chaining program on its uplink. A backend added from outside
// the horizon takes rows from a backend on the other hypervisor: the open
// connections of those rows reach the new owner's host without a conntrack
// entry there, are sent once to their previous owner, and carry on.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "hostlb/netlink/chaining.h"
#include "hostlb/netlink/system.h"
#include "hostlb/policies/gateway.h"
#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"
#include "lab.h"

namespace hostlb {
namespace {

using lab::ControlClient;
using lab::Hostlbd;
using lab::Lab;
using lab::TcpClient;

constexpr const char* kVip = "203.0.113.10";
const char* const kBackends = R"("backends":[
  {"name":"vm1","mac":"02:00:00:00:0a:11","ipv4":"198.18.10.11","bridge":"br0","host":"hv1"},
  {"name":"vm2","mac":"02:00:00:00:0a:12","ipv4":"198.18.10.12","bridge":"br0","host":"hv1"},
  {"name":"vm3","mac":"02:00:00:00:0a:13","ipv4":"198.18.10.13","bridge":"br0","host":"hv2"}])";

std::string fleet(const std::string& refs) {
  return std::string(R"({"version":1,)") + kBackends +
         R"(,"services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","rows":1021,
            "backends":[)" +
         refs + "]}]}";
}
const std::string kBefore = R"({"name":"vm1","port":8080},{"name":"vm3","port":8080})";
const std::string kAfter = kBefore + R"(,{"name":"vm2","port":8080})";

std::vector<std::string> daemon_args(const Lab& lab, const std::string& role,
                                     const std::string& doc) {
  std::vector<std::string> args = {"--daemon-config", "",
                                   "--services-dir",  "",
                                   "--config",        doc,
                                   "--socket",        lab.dir() + "/" + role + ".sock",
                                   "--state-dir",     lab.dir() + "/" + role};
  if (role.starts_with("gw")) {
    args.insert(args.end(),
                {"--role", "gateway", "--client-interface", "cli0", "--fabric-interface", "fab0"});
  } else {
    args.insert(args.end(), {"--host-name", role, "--chain-uplink", "up0", "--chain-gateways",
                             "02:00:00:00:0f:01,02:00:00:00:0f:02", "--chain-window", "120"});
  }
  return args;
}

std::string backend_of(const std::string& banner) { return banner.substr(0, banner.find(' ')); }

TEST(ChainingKernel, ConnectionsWhoseRowsMoveToAnotherHypervisorCarryOn) {
  Lab lab(Lab::Topology::kFleet);
  lab::BackendServer vm1(lab, "vm1", 8080), vm2(lab, "vm2", 8080), vm3(lab, "vm3", 8080);
  const std::string doc = lab::write_lab_file(lab, "fleet.json", fleet(kBefore));
  std::map<std::string, std::unique_ptr<Hostlbd>> daemons;
  for (const std::string role : {"hv1", "hv2", "gw1", "gw2"}) {
    daemons[role] = std::make_unique<Hostlbd>(lab, daemon_args(lab, role, doc), role);
    ASSERT_TRUE(daemons[role]->start()) << role << ": " << daemons[role]->log();
  }
  // Connections from the client's eight addresses, spread over both
  // gateways by the router's ECMP.
  const State before = parse_state_document(fleet(kBefore));
  const State after = parse_state_document(fleet(kAfter));
  const GatewayService was = compile_gateway(before, {}).services[0];
  const GatewayService now = compile_gateway(after, {}).services[0];
  struct Open {
    std::unique_ptr<TcpClient> client;
    std::string backend, next;  // reached, and the row's owner after the change
  };
  std::vector<Open> open;
  int moved_across = 0;
  for (int i = 0; i < 160; ++i) {
    const std::string source = "198.18.20." + std::to_string(1 + i % 8);
    const int port = 42000 + i;
    Open o;
    o.client =
        std::make_unique<TcpClient>(lab, "cl", kVip, 80, std::chrono::seconds(3), source, port);
    o.backend = backend_of(o.client->read_line());
    const auto choice_before = choose(was, *IpAddress::parse(source), static_cast<uint16_t>(port));
    ASSERT_EQ(o.backend, *choice_before.backend) << source << ":" << port;
    o.next = *choose(now, *IpAddress::parse(source), static_cast<uint16_t>(port)).backend;
    moved_across += o.backend == "vm3" && o.next == "vm2" ? 1 : 0;
    open.push_back(std::move(o));
  }
  ASSERT_GT(moved_across, 10) << "vm2 (hv1) takes rows from vm3 (hv2)";

  // vm2 is added as active, not from the horizon: the gateways move its
  // rows at once, tracking nothing. Hosts first, then the gateways.
  for (const std::string role : {"hv1", "hv2", "gw1", "gw2"}) {
    ControlClient c(lab.dir() + "/" + role + ".sock");
    const auto r = c.call("service.attach",
                          {{"service", "203.0.113.10:80/tcp"}, {"backend", "vm2"}, {"port", 8080}});
    ASSERT_TRUE(r.ok) << role << ": " << r.error.message;
  }
  // hv1's hostlbd restarts within the window: the program stayed attached
  // meanwhile, and the new run chains the same rows (kept in its state
  // directory).
  ASSERT_EQ(daemons["hv1"]->stop(SIGTERM), 0);
  lab::write_lab_file(lab, "fleet.json", fleet(kAfter));  // its --config says so too now
  daemons["hv1"] = std::make_unique<Hostlbd>(lab, daemon_args(lab, "hv1", doc), "hv1");
  ASSERT_TRUE(daemons["hv1"]->start()) << daemons["hv1"]->log();
  EXPECT_NE(daemons["hv1"]->log().find("rows of changes before the restart chain"),
            std::string::npos)
      << daemons["hv1"]->log();
  int kept = 0;
  for (auto& o : open) {
    try {
      o.client->send_all("chained?");
      o.client->shutdown_write();
      if (o.client->read_line() == "bytes=8") ++kept;
    } catch (const std::exception&) {
    }
  }
  EXPECT_EQ(kept, 160) << "every connection carried on, " << moved_across
                       << " of them by way of their previous owner's host";
  ControlClient hv1(lab.dir() + "/hv1.sock");
  const auto status = hv1.call("status");
  ASSERT_TRUE(status.ok);
  const auto& chaining = status.result.at("chaining");
  EXPECT_GE(chaining.at("chained").get<int>(), moved_across) << chaining.dump();
  EXPECT_GT(chaining.at("rows").get<int>(), 0);
  const auto stats = hv1.call("stats");
  ASSERT_TRUE(stats.ok);
  EXPECT_GE(stats.result.at("services").at(0).at("chained").get<int>(), moved_across);
  // New connections go to the new owner.
  for (int i = 0; i < 40; ++i) {
    const std::string source = "198.18.20." + std::to_string(1 + i % 8);
    const int port = 43000 + i;
    TcpClient c(lab, "cl", kVip, 80, std::chrono::seconds(3), source, port);
    EXPECT_EQ(backend_of(c.read_line()),
              *choose(now, *IpAddress::parse(source), static_cast<uint16_t>(port)).backend);
  }
}

// The program computes each flow's row exactly as the gateways' nft rule
// and the model do: every row chains to a MAC that names it, and frames
// sent in come back out addressed to their flow's row.
TEST(ChainingKernel, TheProgramComputesTheRowTheModelComputes) {
  Lab lab;
  ASSERT_EQ(lab.in("hv", "ip link add chA type veth peer name chB").exit_code, 0);
  ASSERT_EQ(lab.in("hv", "ip link set chA up").exit_code, 0);
  ASSERT_EQ(lab.in("hv", "ip link set chB up").exit_code, 0);
  constexpr uint32_t kRows = 1021;
  const ServiceKey key4 = *parse_service_key("203.0.113.10:80/tcp");
  const ServiceKey key6 = *parse_service_key("[2001:db8:10::a]:80/tcp");
  std::unique_ptr<ChainDatapath> chain;
  MacAddress a_mac, b_mac;
  {
    Lab::Entered in_hv(lab, "hv");
    a_mac = *interface_mac("chA");
    b_mac = *interface_mac("chB");
    chain = make_bpf_chaining();
    chain->attach("chA", *MacAddress::parse("02:00:00:00:ee:ee"));
    chain->set_gateways({b_mac});
    ChainTables tables;
    tables.services[key4] = {1, kRows};
    tables.services[key6] = {2, kRows};
    // Each row chains to a MAC that names it: 02:cc:00:<index>:<row>.
    for (uint32_t index : {1u, 2u})
      for (uint32_t row = 0; row < kRows; ++row)
        tables.previous[index << 16 | row] =
            MacAddress({0x02, 0xcc, 0, static_cast<uint8_t>(index), static_cast<uint8_t>(row >> 8),
                        static_cast<uint8_t>(row)});
    chain->update(tables);
  }
  const int fd = lab.socket_in("hv", AF_PACKET, SOCK_RAW);
  ASSERT_GE(fd, 0);
  sockaddr_ll at{};
  at.sll_family = AF_PACKET;
  at.sll_protocol = htons(ETH_P_ALL);
  {
    Lab::Entered in_hv(lab, "hv");
    at.sll_ifindex = static_cast<int>(if_nametoindex("chB"));
  }
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  // Sends an ACK (mid-flow) from CLIENT:SPORT to the VIP as the gateway
  // (chB) would; returns the frame the program sent back, if it did.
  auto exchange = [&](bool v6, const uint8_t* client, uint16_t sport,
                      int wait_ms) -> std::optional<std::vector<uint8_t>> {
    const size_t l3 = v6 ? 40 : 20, address_size = v6 ? 16 : 4;
    std::vector<uint8_t> frame(14 + l3 + 20, 0);
    std::memcpy(frame.data(), a_mac.bytes().data(), 6);
    std::memcpy(frame.data() + 6, b_mac.bytes().data(), 6);
    uint8_t* ip = frame.data() + 14;
    uint8_t* source = ip + (v6 ? 8 : 12);
    if (v6) {
      frame[12] = 0x86, frame[13] = 0xdd;
      ip[0] = 0x60;
      ip[5] = 20;  // payload length
      ip[6] = IPPROTO_TCP;
      ip[7] = 64;
    } else {
      frame[12] = 0x08;
      ip[0] = 0x45;
      ip[3] = 40;  // total length
      ip[8] = 64;
      ip[9] = IPPROTO_TCP;
    }
    std::memcpy(source, client, address_size);
    std::memcpy(source + address_size, (v6 ? key6 : key4).vip.bytes().data(), address_size);
    uint8_t* tcp = ip + l3;
    tcp[0] = static_cast<uint8_t>(sport >> 8);
    tcp[1] = static_cast<uint8_t>(sport);
    tcp[3] = 80;
    tcp[12] = 0x50;
    tcp[13] = 0x10;  // ACK
    if (::send(fd, frame.data(), frame.size(), 0) != static_cast<ssize_t>(frame.size()))
      return std::nullopt;
    // Skip our own outgoing copy and anything else.
    for (int tries = 0; tries < 8; ++tries) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, wait_ms) != 1) break;
      std::vector<uint8_t> got(128);
      sockaddr_ll from{};
      socklen_t len = sizeof from;
      const ssize_t n =
          ::recvfrom(fd, got.data(), got.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < static_cast<ssize_t>(frame.size()) || from.sll_pkttype == PACKET_OUTGOING) continue;
      if (std::memcmp(got.data() + (source - frame.data()), source, address_size) == 0 &&
          got[14 + l3] == tcp[0] && got[15 + l3] == tcp[1])
        return got;
    }
    return std::nullopt;
  };

  std::mt19937 rng(5);
  std::map<int, int> checked;
  for (int i = 0; i < 3000; ++i) {
    const bool v6 = i % 3 == 2;
    const uint16_t sport = static_cast<uint16_t>(1024 + rng() % 60000);
    uint8_t client[16] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x20};  // 2001:db8:20::/48
    if (v6) {
      for (int k = 12; k < 16; ++k) client[k] = static_cast<uint8_t>(rng());
    } else {
      const uint32_t v4 = htonl(0xc6120000u | (rng() & 0xffff));  // 198.18.x.y
      std::memcpy(client, &v4, 4);
    }
    const auto got = exchange(v6, client, sport, 1000);
    ASSERT_TRUE(got) << "frame " << i << " did not come back";
    const Flow flow{IpAddress::from_bytes(v6 ? IpFamily::kV6 : IpFamily::kV4, client), sport,
                    (v6 ? key6 : key4).vip, 80};
    const uint32_t row = uint32_t{(*got)[4]} << 8 | (*got)[5];
    EXPECT_EQ((*got)[1], 0xcc) << "chained to a row's MAC";
    EXPECT_EQ((*got)[3], v6 ? 2 : 1) << "its service's rows";
    EXPECT_EQ(row, flow_row(flow, kRows)) << "flow " << i;
    EXPECT_EQ(std::memcmp(got->data() + 6, "\x02\x00\x00\x00\xee\xee", 6), 0)
        << "source: the host's";
    ++checked[v6 ? 6 : 4];
  }
  // A flow this host has a connection for is not chained (the program's
  // conntrack lookup), in either family; the same client on another port is.
  ASSERT_EQ(lab.in("hv",
                   "conntrack -I -s 198.18.9.9 -d 203.0.113.10 -p tcp --sport 40000 "
                   "--dport 80 --state ESTABLISHED -t 60 -u SEEN_REPLY")
                .exit_code,
            0);
  ASSERT_EQ(lab.in("hv",
                   "conntrack -I -s 2001:db8:20::9 -d 2001:db8:10::a -p tcp --sport 40000 "
                   "--dport 80 --state ESTABLISHED -t 60 -u SEEN_REPLY")
                .exit_code,
            0);
  const uint8_t known4[16] = {198, 18, 9, 9};
  const uint8_t known6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
  EXPECT_FALSE(exchange(false, known4, 40000, 500)) << "IPv4: the connection is here";
  EXPECT_FALSE(exchange(true, known6, 40000, 500)) << "IPv6: the connection is here";
  EXPECT_TRUE(exchange(false, known4, 40001, 1000));
  EXPECT_TRUE(exchange(true, known6, 40001, 1000));
  checked[4] += 1;
  checked[6] += 1;
  ::close(fd);
  EXPECT_EQ(checked[4], 2001);
  EXPECT_EQ(checked[6], 1001);
  Lab::Entered in_hv(lab, "hv");
  EXPECT_EQ(chain->chained()[1], 2001u);
  EXPECT_EQ(chain->chained()[2], 1001u);
  chain->detach();
}

}  // namespace
}  // namespace hostlb
