// The datapath on the real kernel: namespaces, a Linux bridge with
// br_netfilter, hostlbd in the hypervisor namespace, real TCP and UDP.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <regex>
#include <sstream>
#include <thread>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;

using DatapathTest = LabTest;

TEST_F(DatapathTest, TcpAndUdpToVipReachTheBackendAndRepliesComeFromTheVip) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm1_dns(lab_, "vm1", 5353);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                                        service_json(kVip10, 53, "udp", {{"web-1", 5353}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);

  TcpClient tcp(lab_, "c1", kVip10, 80);
  EXPECT_EQ(tcp.peer(), kVip10 + ":80");
  const std::string banner = tcp.read_line();
  EXPECT_EQ(banner, "vm1 local=198.18.1.11:8080 peer=" + tcp.local());

  const std::string reply = udp_exchange(lab_, "c1", kVip10, 53);
  EXPECT_TRUE(reply.rfind("vm1 local=0.0.0.0:5353 peer=198.18.0.1:", 0) == 0)
      << "no reply from " << kVip10 << ":53 on a connected socket: '" << reply << "'";

  // conntrack holds the NAT binding, marked with a binding identity.
  const std::string port = std::to_string(tcp.local_port());
  const std::string ct = conntrack("-p tcp --sport " + port);
  EXPECT_EQ(ct_field(ct, "dport=80", "src", 1), kVm1.ipv4) << ct;
  EXPECT_EQ(ct_field(ct, "dport=80", "sport", 1), "8080") << ct;
  const auto mark = std::stoul(ct_field(ct, "dport=80", "mark"));
  EXPECT_NE(mark & 0xfffff000u, 0u) << ct;
  EXPECT_EQ(ct_field(conntrack("-p udp --dport 53"), "dport=53", "src", 1), kVm1.ipv4);
}

TEST_F(DatapathTest, MarkBitsSetByOthersBeforeDnatAreLeftAlone) {
  BackendServer vm1(lab_, "vm1", 8080);
  ASSERT_EQ(lab_.in("hv", "nft add table ip other").exit_code, 0);
  ASSERT_EQ(lab_.in("hv",
                    "nft add chain ip other pre '{ type filter hook prerouting priority "
                    "mangle; }'")
                .exit_code,
            0);
  ASSERT_EQ(lab_.in("hv", "nft add rule ip other pre tcp dport 81 ct mark set 0x1").exit_code, 0);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                                        service_json(kVip10, 81, "tcp", {{"web-1", 8080}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);
  TcpClient marked(lab_, "c1", kVip10, 81);
  EXPECT_EQ(marked.read_line(), "vm1 local=198.18.1.11:8080 peer=" + marked.local())
      << "DNAT still happens";
  const std::string ct = conntrack("-p tcp --sport " + std::to_string(marked.local_port()));
  EXPECT_EQ(ct_field(ct, "dport=81", "mark"), "1") << "the other user's mark is kept: " << ct;
  TcpClient plain(lab_, "c1", kVip10, 80);
  const std::string ct80 = conntrack("-p tcp --sport " + std::to_string(plain.local_port()));
  EXPECT_NE(std::stoul(ct_field(ct80, "dport=80", "mark")) & 0xfffff000u, 0u) << ct80;
}

// Sends one UDP datagram from `from_ip` (an address of `role`) to
// `to_ip:port`.
void send_udp(const Lab& lab, const std::string& role, const std::string& from_ip,
              const std::string& to_ip, int port) {
  const int fd = lab.socket_in(role, AF_INET, SOCK_DGRAM);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, from_ip.c_str(), &src.sin_addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src), 0) << std::strerror(errno);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, to_ip.c_str(), &dst.sin_addr);
  ASSERT_EQ(::sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst), 1);
  ::close(fd);
}

// Waits up to `timeout` for a datagram; returns its source address or "".
std::string receive_udp_from(int fd, std::chrono::milliseconds timeout) {
  pollfd pfd{fd, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return "";
  char buf[64];
  sockaddr_in from{};
  socklen_t len = sizeof from;
  if (::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len) < 0) return "";
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &from.sin_addr, text, sizeof text);
  return text;
}

TEST_F(DatapathTest, ABackendCannotSendWithAVipAsItsSource) {
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  // vm1 claims the VIP (a compromised or misconfigured VM).
  ASSERT_EQ(lab_.in("vm1", "ip addr add 203.0.113.10/32 dev eth0").exit_code, 0);
  const int listener = lab_.socket_in("c1", AF_INET, SOCK_DGRAM);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(9999);
  inet_pton(AF_INET, kClient1V4, &addr.sin_addr);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);

  send_udp(lab_, "vm1", kVm1.ipv4, kClient1V4, 9999);
  EXPECT_EQ(receive_udp_from(listener, 2000ms), kVm1.ipv4) << "its own address goes through";
  send_udp(lab_, "vm1", kVip10, kClient1V4, 9999);
  EXPECT_EQ(receive_udp_from(listener, 1000ms), "") << "the forged VIP source is dropped";
  const std::string counter = lab_.in("hv", "nft list counter inet hostlb guard_drops").output;
  EXPECT_NE(counter.find("packets 1 "), std::string::npos) << counter;

  // Once no service uses the VIP any more, it is not guarded.
  write_lab_file(lab_, "config.json", document({}));
  daemon->signal(SIGHUP);
  ASSERT_TRUE(daemon->wait_for_log("reloaded")) << daemon->log();
  send_udp(lab_, "vm1", kVip10, kClient1V4, 9999);
  EXPECT_EQ(receive_udp_from(listener, 2000ms), kVip10);
  ::close(listener);
}

TEST_F(DatapathTest, OneBackendOnTwoVipsAnswersFromTheVipEachClientUsed) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                                        service_json(kVip20, 80, "tcp", {{"web-1", 8080}})}));
  for (const char* client : {"c1", "c2"})
    for (const auto& vip : {kVip10, kVip20}) lab_.gateway(client, vip, kVm1.mac);

  TcpClient a(lab_, "c1", kVip10, 80);
  TcpClient b(lab_, "c2", kVip20, 80);
  EXPECT_EQ(a.peer(), kVip10 + ":80");
  EXPECT_EQ(b.peer(), kVip20 + ":80");
  EXPECT_EQ(a.read_line(), "vm1 local=198.18.1.11:8080 peer=" + a.local());
  EXPECT_EQ(b.read_line(), "vm1 local=198.18.1.11:8080 peer=" + b.local());

  // The same client address and port to both VIPs at once: both tuples map
  // to the same backend socket pair, so conntrack must keep them apart.
  TcpClient same1(lab_, "c1", kVip10, 80, 3s, kClient1V4, 40000);
  TcpClient same2(lab_, "c1", kVip20, 80, 3s, kClient1V4, 40000);
  EXPECT_EQ(same1.local(), std::string(kClient1V4) + ":40000");
  EXPECT_EQ(same2.local(), std::string(kClient1V4) + ":40000");
  EXPECT_EQ(same1.peer(), kVip10 + ":80");
  EXPECT_EQ(same2.peer(), kVip20 + ":80");
  EXPECT_TRUE(same1.read_line().rfind("vm1 local=198.18.1.11:8080", 0) == 0);
  EXPECT_TRUE(same2.read_line().rfind("vm1 local=198.18.1.11:8080", 0) == 0);
  for (TcpClient* c : {&same1, &same2}) {
    c->send_all(std::string(1000, 'x'));
    c->shutdown_write();
    EXPECT_EQ(c->read_line(), "bytes=1000");
  }
}

TEST_F(DatapathTest, TwoBackendsOfOneVipTheFrameGoesToTheMacItCarries) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm2(lab_, "vm2", 8080);
  auto daemon = start_hostlbd(
      document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}, {"web-2", 8080}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);
  lab_.gateway("c2", kVip10, kVm2.mac);
  for (int i = 0; i < 3; ++i) {
    TcpClient to1(lab_, "c1", kVip10, 80);
    TcpClient to2(lab_, "c2", kVip10, 80);
    EXPECT_EQ(to1.read_line(), "vm1 local=198.18.1.11:8080 peer=" + to1.local());
    EXPECT_EQ(to2.read_line(), "vm2 local=198.18.1.12:8080 peer=" + to2.local());
    EXPECT_EQ(to1.peer(), kVip10 + ":80");
    EXPECT_EQ(to2.peer(), kVip10 + ":80");
  }
}

TEST_F(DatapathTest, Ipv6Vip) {
  BackendServer vm1(lab_, "vm1", 8443, /*ipv6=*/true);
  auto daemon = start_hostlbd(document({service_json(kVip6, 443, "tcp", {{"web-1", 8443}}),
                                        service_json(kVip6, 443, "udp", {{"web-1", 8443}})}));
  lab_.gateway("c1", kVip6, kVm1.mac);
  TcpClient tcp(lab_, "c1", kVip6, 443);
  EXPECT_EQ(tcp.peer(), "[" + kVip6 + "]:443");
  EXPECT_EQ(tcp.read_line(), "vm1 local=[2001:db8:1::11]:8443 peer=" + tcp.local());
  const std::string reply = udp_exchange(lab_, "c1", kVip6, 443);
  EXPECT_TRUE(reply.rfind("vm1 local=[::]:8443 peer=[2001:db8::1]:", 0) == 0) << reply;
}

TEST_F(DatapathTest, UnservedPortIsNotDnatedAndBackendIpTrafficIsUntouched) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm1_other(lab_, "vm1", 81);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);

  // VIP:81 is not a service: the frame reaches vm1 unchanged, and vm1 does
  // not own the VIP, so nothing answers (even though vm1 listens on 81).
  EXPECT_THROW(TcpClient(lab_, "c1", kVip10, 81, 1500ms), std::runtime_error);
  const std::string ct81 = conntrack("-p tcp --dport 81");
  EXPECT_EQ(ct_field(ct81, "dport=81", "src", 1), kVip10) << "not DNATed: " << ct81;

  // The same for UDP.
  EXPECT_EQ(udp_exchange(lab_, "c1", kVip10, 81, 1000ms), "");

  // The backend's own address works as if hostlb were not there.
  TcpClient direct(lab_, "c1", kVm1.ipv4, 8080);
  EXPECT_EQ(direct.read_line(), "vm1 local=198.18.1.11:8080 peer=" + direct.local());
  const std::string ct = conntrack("-p tcp --sport " + std::to_string(direct.local_port()));
  EXPECT_EQ(ct_field(ct, "dport=8080", "src", 1), kVm1.ipv4) << ct;
  EXPECT_EQ(ct_field(ct, "dport=8080", "mark"), "0") << ct;
}

TEST_F(DatapathTest, SigtermDuringATransferThenRestartTheTransferCompletes) {
  BackendServer vm1(lab_, "vm1", 8080);
  const std::string doc = document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})});
  auto daemon = start_hostlbd(doc);
  lab_.gateway("c1", kVip10, kVm1.mac);

  TcpClient client(lab_, "c1", kVip10, 80);
  ASSERT_EQ(client.read_line(), "vm1 local=198.18.1.11:8080 peer=" + client.local());
  const std::string sport = std::to_string(client.local_port());
  const std::string id_before =
      ct_field(conntrack("-p tcp --sport " + sport + " -o id"), "dport=80", "id");
  ASSERT_FALSE(id_before.empty());

  constexpr int kChunks = 120;
  const std::string chunk(64 * 1024, 'd');
  std::atomic<int> sent{0};
  std::thread sender([&] {
    for (int i = 0; i < kChunks; ++i) {  // ~7.5 MB over ~3 s
      client.send_all(chunk);
      sent = i + 1;
      std::this_thread::sleep_for(25ms);
    }
    client.shutdown_write();
  });

  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
  EXPECT_NE(daemon->log().find("SIGTERM received, exiting; the datapath stays in place"),
            std::string::npos);
  EXPECT_NE(ruleset().find("table inet hostlb"), std::string::npos) << "datapath left in place";
  std::this_thread::sleep_for(300ms);
  auto restarted = start_hostlbd(doc);
  sender.join();

  EXPECT_EQ(client.read_line(10s), "bytes=" + std::to_string(kChunks * chunk.size()));
  const std::string id_after =
      ct_field(conntrack("-p tcp --sport " + sport + " -o id"), "dport=80", "id");
  EXPECT_EQ(id_after, id_before) << "the conntrack entry was replaced (flushed)";
  EXPECT_GT(sent.load(), 0);
}

TEST_F(DatapathTest, RefusedDocumentLeavesTheKernelByteForByteUnchanged) {
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  const std::string before = ruleset();
  const std::string routes_before = lab_.in("hv", "ip route; ip -6 route; ip neigh").output;
  ASSERT_NE(before.find("203.0.113.10 . tcp . 80"), std::string::npos);

  struct Case {
    std::string doc;
    int exit_code;
    std::string message;
  };
  const std::string bad_mac =
      std::regex_replace(document({service_json(kVip20, 80, "tcp", {{"web-1", 8080}})}),
                         std::regex("02:00:00:00:01:11"), "02:00:00:00:01:zz");
  const std::string bad_bridge =
      std::regex_replace(document({}), std::regex("\"br0\""), "\"br-missing\"");
  for (const Case& c : {
           Case{bad_mac, 2, "backends[0].mac: \"02:00:00:00:01:zz\" is not a MAC address"},
           Case{"{\"version\":1,", 2, "invalid JSON: parse error at line 1, column 14"},
           Case{document({service_json(kVip10, 0, "tcp", {})}), 2,
                "services[0].port: 0 is not a port (1-65535)"},
           Case{bad_bridge, 1, "bridge br-missing does not exist on this host"},
       }) {
    const std::string config = write_lab_file(lab_, "bad.json", c.doc);
    Hostlbd refused(lab_, {"--config", config, "--state-dir", lab_.dir() + "/state"});
    const auto result = refused.run_to_exit();
    EXPECT_EQ(result.exit_code, c.exit_code) << result.output;
    EXPECT_NE(result.output.find(c.message), std::string::npos) << result.output;
    EXPECT_EQ(ruleset(), before) << "ruleset changed by a refused document";
    EXPECT_EQ(lab_.in("hv", "ip route; ip -6 route; ip neigh").output, routes_before);
  }
}

TEST_F(DatapathTest, RestartWithoutConfigRestoresThePersistedState) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  // As after a reboot: the kernel forgot everything, the state dir did not.
  ASSERT_EQ(lab_.in("hv", "nft delete table inet hostlb").exit_code, 0);
  ASSERT_EQ(lab_.in("hv", "ip route flush proto 213").exit_code, 0);

  Hostlbd again(lab_, {"--state-dir", lab_.dir() + "/state", "--socket", lab_.dir() + "/s.sock"});
  ASSERT_TRUE(again.start()) << again.log();
  lab_.gateway("c1", kVip10, kVm1.mac);
  TcpClient client(lab_, "c1", kVip10, 80);
  EXPECT_EQ(client.read_line(), "vm1 local=198.18.1.11:8080 peer=" + client.local());
  EXPECT_NE(lab_.in("hv", "ip route show proto 213").output.find("198.18.1.11 dev br0"),
            std::string::npos);
}

// Sorted lines of the table listing without the punctuation that depends on
// where an element falls in the list, so that two listings of the same
// table compare equal whatever order the kernel keeps the elements in.
// Counter values (what traffic did, not what was configured) are dropped.
std::vector<std::string> canonical_listing(const std::string& listing) {
  std::vector<std::string> lines;
  std::istringstream in(listing);
  std::string line;
  static const std::regex counter_values(" ?(counter )?packets [0-9]+ bytes [0-9]+");
  while (std::getline(in, line)) {
    line = std::regex_replace(line, counter_values, "");
    for (const char* noise : {"elements = {", "}", ","}) {
      for (size_t at = line.find(noise); at != std::string::npos; at = line.find(noise))
        line.erase(at, std::strlen(noise));
    }
    line.erase(0, line.find_first_not_of(" \t"));
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

TEST_F(DatapathTest, ReloadChangesOnlyWhatDiffersAndMatchesAFreshStart) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm1_new_port(lab_, "vm1", 9090);
  BackendServer vm2(lab_, "vm2", 8080);
  const std::string vip30 = "203.0.113.30";
  auto daemon =
      start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}, {"web-2", 8080}}),
                              service_json(kVip20, 80, "tcp", {{"web-1", 8080}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);
  lab_.gateway("c1", kVip20, kVm1.mac);
  lab_.gateway("c2", kVip10, kVm2.mac);
  lab_.gateway("c2", vip30, kVm2.mac);
  TcpClient unrelated(lab_, "c1", kVip20, 80);
  ASSERT_EQ(unrelated.read_line(), "vm1 local=198.18.1.11:8080 peer=" + unrelated.local());

  // web-1 moves to port 9090 on .10, web-2 leaves .10 and serves .30.
  write_lab_file(lab_, "config.json",
                 document({service_json(kVip10, 80, "tcp", {{"web-1", 9090}}),
                           service_json(kVip20, 80, "tcp", {{"web-1", 8080}}),
                           service_json(vip30, 80, "tcp", {{"web-2", 8080}})}));
  daemon->signal(SIGHUP);
  ASSERT_TRUE(daemon->wait_for_log("reloaded")) << daemon->log();
  const std::string log = daemon->log();
  EXPECT_NE(log.find("(+2 -2 bindings)"), std::string::npos) << log;
  EXPECT_EQ(log.find("replaced table"), log.rfind("replaced table"))
      << "only the start-up may rebuild the table: " << log;

  TcpClient moved(lab_, "c1", kVip10, 80);
  EXPECT_EQ(moved.read_line(), "vm1 local=198.18.1.11:9090 peer=" + moved.local());
  TcpClient added(lab_, "c2", vip30, 80);
  EXPECT_EQ(added.read_line(), "vm2 local=198.18.1.12:8080 peer=" + added.local());
  EXPECT_THROW(TcpClient(lab_, "c2", kVip10, 80, 1000ms), std::runtime_error)
      << "web-2 no longer serves .10";
  unrelated.send_all(std::string(5000, 'u'));
  unrelated.shutdown_write();
  EXPECT_EQ(unrelated.read_line(), "bytes=5000") << "the unrelated connection kept working";

  // The table the change built is the one a fresh start builds.
  const std::string incremental =
      without_meter_state(lab_.in("hv", "nft list table inet hostlb").output);
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  ASSERT_EQ(lab_.in("hv", "nft delete table inet hostlb").exit_code, 0);
  auto fresh = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 9090}}),
                                       service_json(kVip20, 80, "tcp", {{"web-1", 8080}}),
                                       service_json(vip30, 80, "tcp", {{"web-2", 8080}})}));
  const std::string full = without_meter_state(lab_.in("hv", "nft list table inet hostlb").output);
  EXPECT_EQ(canonical_listing(incremental), canonical_listing(full)) << "incremental:\n"
                                                                     << incremental << "\nfull:\n"
                                                                     << full;
}

TEST_F(DatapathTest, CleanupRemovesTheTableRoutesAndNeighbours) {
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  ASSERT_NE(ruleset().find("table inet hostlb"), std::string::npos);
  Hostlbd cleanup(lab_, {"--cleanup", "--state-dir", lab_.dir() + "/state"});
  const auto result = cleanup.run_to_exit();
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(ruleset().find("hostlb"), std::string::npos);
  EXPECT_EQ(lab_.in("hv", "ip route show proto 213; ip -6 route show proto 213").output, "");
  EXPECT_EQ(lab_.in("hv", "ip neigh show nud permanent").output, "");
}

// Two daemons in one network namespace would rebuild one table against
// each other: the second is refused, whatever its state directory and
// socket, and the first carries on (daemons in other namespaces, as in the
// fleet tests, are not concerned).
TEST_F(DatapathTest, ASecondHostlbdInOneNamespaceIsRefused) {
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  const std::string config = write_lab_file(lab_, "second.json", document({}));
  Hostlbd second(lab_, {"--config", config, "--state-dir", lab_.dir() + "/state2", "--socket",
                        lab_.dir() + "/second.sock"});
  const auto result = second.run_to_exit();
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(second.log().find("another hostlbd --role host runs in this network namespace"),
            std::string::npos)
      << second.log();
  EXPECT_NE(ruleset().find("203.0.113.10 . tcp . 80"), std::string::npos)
      << "the first one's table is untouched";
  EXPECT_EQ(ctl("status").exit_code, 0);
}

TEST_F(DatapathTest, OtherTablesAreLeftAlone) {
  ASSERT_EQ(lab_.in("hv", "nft add table ip other").exit_code, 0);
  ASSERT_EQ(lab_.in("hv", "nft add chain ip other c '{ type filter hook forward priority 0; }'")
                .exit_code,
            0);
  ASSERT_EQ(lab_.in("hv", "nft add rule ip other c counter").exit_code, 0);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  Hostlbd cleanup(lab_, {"--cleanup", "--state-dir", lab_.dir() + "/state"});
  ASSERT_EQ(cleanup.run_to_exit().exit_code, 0);
  const std::string after = ruleset();
  EXPECT_NE(after.find("table ip other"), std::string::npos) << after;
  EXPECT_NE(after.find("counter"), std::string::npos) << after;
}

}  // namespace
}  // namespace hostlb::lab
