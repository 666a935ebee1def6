// The host's BPF datapath (hostlbd --host-datapath bpf) on the real kernel:
// br_netfilter off in the hypervisor, the program on the bridge's ports,
// VIP connections in the kernel's conntrack table, everything else bridged
// without an entry.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;

class HostBpfTest : public LabTest {
 protected:
  // br_netfilter for bridged IPv4 and IPv6 in the hypervisor's namespace.
  void set_br_netfilter(bool on) {
    const std::string v = on ? "1" : "0";
    ASSERT_EQ(lab_.in("hv", "sysctl -qw net.bridge.bridge-nf-call-iptables=" + v +
                                " net.bridge.bridge-nf-call-ip6tables=" + v)
                  .exit_code,
              0);
  }

  void SetUp() override {
    set_br_netfilter(false);
    lab_.gateway("c1", kVip10, kVm1.mac);
    lab_.gateway("c1", kVip6, kVm1.mac);
  }

  std::unique_ptr<Hostlbd> start_bpf(const std::string& doc, std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--host-datapath", "bpf"});
    return start_hostlbd(doc, extra);
  }

  // The figures of one service in `hostlbctl --json stats`.
  nlohmann::json service_figures(const std::string& service) {
    auto r = ctl("--json stats");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const auto doc = nlohmann::json::parse(r.output);
    for (const auto& entry : doc["services"])
      if (entry["service"] == service) return entry;
    return nlohmann::json{{"stats", r.output}};
  }

  // Seconds the entry of the client's `port` has left, as conntrack -L says.
  long ct_timeout(int client_port) {
    const std::string listing = conntrack("-p tcp --sport " + std::to_string(client_port));
    const size_t at = listing.find("tcp ");
    if (at == std::string::npos) return -1;
    std::istringstream words(listing.substr(at));
    std::string proto, number, timeout;
    words >> proto >> number >> timeout;
    return timeout.empty() ? -1 : std::stol(timeout);
  }

  // Whether conntrack lists any entry for `filter`.
  bool tracked(const std::string& filter) {
    return conntrack(filter).find("src=") != std::string::npos;
  }

  bool program_on(const std::string& port) {
    return lab_.in("hv", "tc filter show dev " + port + " ingress").output.find("hostlb_host") !=
           std::string::npos;
  }
};

std::string services() {
  return document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                   service_json(kVip10, 53, "udp", {{"web-1", 5353}}),
                   service_json(kVip6, 443, "tcp", {{"web-1", 8443}})});
}

TEST_F(HostBpfTest, VipTrafficIsDnatedAndBystandersGetNoConntrackEntry) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm1_dns(lab_, "vm1", 5353);
  BackendServer vm1_v6(lab_, "vm1", 8443, /*ipv6=*/true);
  BackendServer vm2(lab_, "vm2", 9090);
  auto daemon = start_bpf(services());
  for (const char* port : {"vm1", "vm2", "c1", "c2"}) EXPECT_TRUE(program_on(port)) << port;
  EXPECT_EQ(ruleset().find("hostlb"), std::string::npos) << "no nftables table: " << ruleset();

  TcpClient tcp(lab_, "c1", kVip10, 80);
  EXPECT_EQ(tcp.peer(), kVip10 + ":80");
  EXPECT_EQ(tcp.read_line(), "vm1 local=198.18.1.11:8080 peer=" + tcp.local());
  const std::string reply = udp_exchange(lab_, "c1", kVip10, 53);
  EXPECT_EQ(reply.rfind("vm1 local=0.0.0.0:5353 peer=198.18.0.1:", 0), 0u) << reply;
  TcpClient tcp6(lab_, "c1", kVip6, 443);
  EXPECT_EQ(tcp6.peer(), "[" + kVip6 + "]:443");
  EXPECT_EQ(tcp6.read_line().rfind("vm1 local=[2001:db8:1::11]:8443", 0), 0u);

  // The entries are the kernel's: both tuples, hostlb's mark.
  const std::string ct = conntrack("-p tcp --sport " + std::to_string(tcp.local_port()));
  EXPECT_EQ(ct_field(ct, "dport=80", "src", 1), kVm1.ipv4) << ct;
  EXPECT_EQ(ct_field(ct, "dport=80", "sport", 1), "8080") << ct;
  EXPECT_NE(std::stoul(ct_field(ct, "dport=80", "mark")) & 0xfffff000u, 0u) << ct;

  // Traffic to a VM's own address passes with no entry at all.
  TcpClient bystander(lab_, "c1", kVm2.ipv4, 9090);
  EXPECT_EQ(bystander.read_line(), "vm2 local=198.18.1.12:9090 peer=" + bystander.local());
  EXPECT_FALSE(tracked("-d " + std::string(kVm2.ipv4))) << "a bystander was tracked";
  EXPECT_FALSE(tracked("-s " + std::string(kVm2.ipv4)));
  // And to the backend's own port outside the VIP.
  TcpClient direct(lab_, "c1", kVm1.ipv4, 8080);
  EXPECT_EQ(direct.read_line(), "vm1 local=198.18.1.11:8080 peer=" + direct.local());

  // Counted without conntrack events.
  const auto f = service_figures("203.0.113.10:80/tcp");
  EXPECT_EQ(f.value("opened", 0), 1) << f.dump();
  EXPECT_EQ(f.value("active", 0), 1) << f.dump();
}

TEST_F(HostBpfTest, EntriesTimeOutAsTheKernelsStateMachineWould) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_bpf(services());
  TcpClient finished(lab_, "c1", kVip10, 80);
  ASSERT_EQ(finished.read_line().rfind("vm1", 0), 0u);
  EXPECT_GT(ct_timeout(finished.local_port()), 400000) << "established: 5 days";
  finished.send_all("abc");
  finished.shutdown_write();
  EXPECT_EQ(finished.read_line(), "bytes=3");
  std::this_thread::sleep_for(200ms);
  const long closing = ct_timeout(finished.local_port());
  EXPECT_GT(closing, 100);
  EXPECT_LE(closing, 120) << "after the FINs: the FIN_WAIT time";

  // A reset ends it within the CLOSE time (10 s).
  const int fd = lab_.socket_in("c1", AF_INET, SOCK_STREAM);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(80);
  inet_pton(AF_INET, kVip10.c_str(), &dst.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0)
      << std::strerror(errno);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  const linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  ::close(fd);
  std::this_thread::sleep_for(200ms);
  const long after_reset = ct_timeout(ntohs(local.sin_port));
  EXPECT_GE(after_reset, 0);
  EXPECT_LE(after_reset, 10);
}

// Receives on a connected UDP socket: the errno of an ICMP error, 0 for a
// datagram, ETIMEDOUT for nothing.
int udp_error(int fd, std::chrono::milliseconds timeout) {
  pollfd pfd{fd, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return ETIMEDOUT;
  char buf[64];
  return ::recv(fd, buf, sizeof buf, 0) < 0 ? errno : 0;
}

TEST_F(HostBpfTest, RefusalsAreAnsweredOutOfTheIngressPortWithNoRouteToTheClient) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm1_v6(lab_, "vm1", 8443, /*ipv6=*/true);
  auto daemon = start_bpf(services());
  // The hypervisor cannot route to the clients at all.
  EXPECT_NE(lab_.in("hv", "ip route get 198.18.0.1").exit_code, 0);
  EXPECT_NE(lab_.in("hv", "ip -6 route get 2001:db8::1").exit_code, 0);
  for (const char* service :
       {"203.0.113.10:80/tcp", "203.0.113.10:53/udp", "[2001:db8:f00::10]:443/tcp"}) {
    auto r = ctl(std::string("service detach ") + service + " web-1 --drain 30");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  for (const std::string& vip : {kVip10, kVip6}) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      TcpClient refused(lab_, "c1", vip, vip == kVip10 ? 80 : 443, 3000ms);
      ADD_FAILURE() << "a new connection to a draining binding was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("Connection refused"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms) << vip << ": refused by a reset";
  }

  const int fd = lab_.socket_in("c1", AF_INET, SOCK_DGRAM);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(53);
  inet_pton(AF_INET, kVip10.c_str(), &dst.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0);
  ASSERT_EQ(::send(fd, "query", 5, 0), 5);
  EXPECT_EQ(udp_error(fd, 2000ms), ECONNREFUSED) << "an ICMP port unreachable from the VIP";
  ::close(fd);

  EXPECT_EQ(service_figures("203.0.113.10:80/tcp").value("refused", 0), 1);
  EXPECT_EQ(service_figures("203.0.113.10:53/udp").value("refused", 0), 1);
  EXPECT_EQ(service_figures("[2001:db8:f00::10]:443/tcp").value("refused", 0), 1);

  // A backend removed altogether: its keys are still refused for a while,
  // though its MAC is no longer a backend's here.
  auto r = ctl("backend del web-1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  try {
    TcpClient refused(lab_, "c1", kVip10, 80, 3000ms);
    ADD_FAILURE() << "a new connection to a removed backend was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Connection refused"), std::string::npos) << e.what();
  }
}

// What a connected UDP socket in c1 gets for a datagram to `vip`:`port`.
int udp_answer(const Lab& lab, const std::string& vip, int port) {
  const bool v6 = vip.find(':') != std::string::npos;
  const int fd = lab.socket_in("c1", v6 ? AF_INET6 : AF_INET, SOCK_DGRAM);
  sockaddr_storage dst{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&dst);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET6, vip.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&dst);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, vip.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  int result = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), len) == 0 && ::send(fd, "q", 1, 0) == 1)
    result = udp_error(fd, 2000ms);
  ::close(fd);
  return result;
}

// The backend does not listen: its ICMP port unreachable reaches the client
// as coming from the VIP, about the datagram the client sent.
TEST_F(HostBpfTest, ABackendsIcmpErrorAboutAVipConnectionComesFromTheVip) {
  auto daemon = start_bpf(document({service_json(kVip10, 54, "udp", {{"web-1", 5354}}),
                                    service_json(kVip6, 54, "udp", {{"web-1", 5354}})}));
  EXPECT_EQ(udp_answer(lab_, kVip10, 54), ECONNREFUSED);
  EXPECT_EQ(udp_answer(lab_, kVip6, 54), ECONNREFUSED);
}

TEST_F(HostBpfTest, RemovalFlushesTheEntriesByMarkAndTheNextPacketIsReset) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_bpf(services());
  TcpClient cut(lab_, "c1", kVip10, 80);
  ASSERT_EQ(cut.read_line().rfind("vm1", 0), 0u);
  ASSERT_TRUE(tracked("-p tcp --orig-dst " + kVip10));

  auto r = ctl("service detach 203.0.113.10:80/tcp web-1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(tracked("-p tcp --orig-dst " + kVip10)) << "flushed";
  cut.send_all("after the removal\n");
  cut.shutdown_write();
  EXPECT_EQ(cut.read_line(2000ms), "") << "the connection was cut";
  const auto f = service_figures("203.0.113.10:80/tcp");
  EXPECT_EQ(f.value("flushed", 0), 1) << f.dump();
  EXPECT_EQ(f.value("closed", 0), 0) << f.dump();
}

TEST_F(HostBpfTest, ABackendCannotSendWithAVipAsItsSource) {
  auto daemon = start_bpf(services());
  ASSERT_EQ(lab_.in("vm1", "ip addr add 203.0.113.10/32 dev eth0").exit_code, 0);
  // vm1 claims the VIP: its datagram from the VIP is dropped and counted.
  lab_.in("vm1", "ping -c 1 -W 1 -I 203.0.113.10 198.18.0.1");
  auto r = ctl("--json stats");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).value("guard_drops", 0), 1) << r.output;
  EXPECT_EQ(lab_.in("vm1", "ping -c 1 -W 1 198.18.0.1").exit_code, 0) << "its own address passes";
}

TEST_F(HostBpfTest, StartIsRefusedWhileBrNetfilterHandsTheBridgeToNetfilter) {
  ASSERT_EQ(lab_.in("hv", "sysctl -qw net.bridge.bridge-nf-call-iptables=1").exit_code, 0);
  const std::string config = write_lab_file(lab_, "config.json", services());
  Hostlbd daemon(lab_, {"--host-datapath", "bpf", "--config", config, "--state-dir",
                        lab_.dir() + "/state", "--socket", lab_.dir() + "/hostlbd.sock"});
  const auto result = daemon.run_to_exit();
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(daemon.log().find("net.bridge.bridge-nf-call-iptables is 1"), std::string::npos)
      << daemon.log();
  EXPECT_FALSE(program_on("vm1")) << "nothing attached";
  EXPECT_EQ(lab_.in("hv", "sysctl -n net.bridge.bridge-nf-call-iptables").output, "1\n")
      << "and hostlbd did not turn it off";
}

TEST_F(HostBpfTest, APortThatJoinsTheBridgeGetsTheProgram) {
  auto daemon = start_bpf(services());
  ASSERT_EQ(lab_.in("hv",
                    "sh -c 'ip link add vm9 type veth peer name vm9p && ip link set vm9 "
                    "master br0 up && ip link set vm9p up'")
                .exit_code,
            0);
  bool attached = false;
  for (int i = 0; i < 20 && !attached; ++i) {
    std::this_thread::sleep_for(100ms);
    attached = program_on("vm9");
  }
  EXPECT_TRUE(attached);
  EXPECT_TRUE(daemon->wait_for_log("host program attached to new port vm9 of br0"))
      << daemon->log();
}

TEST_F(HostBpfTest, SwitchingDatapathsRemovesTheOtherAndKeepsConnections) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_bpf(services());
  TcpClient kept(lab_, "c1", kVip10, 80);
  ASSERT_EQ(kept.read_line().rfind("vm1", 0), 0u);
  // A restart loses nothing: the program stays attached, the entries stay.
  ASSERT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
  EXPECT_TRUE(program_on("vm1"));
  daemon = start_bpf(services());
  kept.send_all("abc");
  kept.shutdown_write();
  EXPECT_EQ(kept.read_line(), "bytes=3");
  ASSERT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();

  // To nft (br_netfilter back on): the programs go.
  set_br_netfilter(true);
  daemon = start_hostlbd(services());
  EXPECT_FALSE(program_on("vm1"));
  EXPECT_NE(ruleset().find("table inet hostlb"), std::string::npos);
  TcpClient through_nft(lab_, "c1", kVip10, 80);
  EXPECT_EQ(through_nft.read_line().rfind("vm1", 0), 0u);
  ASSERT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();

  // And back: the table goes.
  set_br_netfilter(false);
  daemon = start_bpf(services());
  EXPECT_EQ(ruleset().find("hostlb"), std::string::npos) << ruleset();
  EXPECT_TRUE(program_on("vm1"));
  ASSERT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
  Hostlbd cleanup(lab_,
                  {"--host-datapath", "bpf", "--cleanup", "--state-dir", lab_.dir() + "/state"});
  EXPECT_EQ(cleanup.run_to_exit().exit_code, 0);
  EXPECT_FALSE(program_on("vm1")) << "--cleanup takes it off";
}

TEST_F(HostBpfTest, DoctorSaysWhatItFoundAndWhatSuitsTheHost) {
  auto daemon = start_bpf(services());
  const std::string doctor = std::string(HOSTLBCTL_PATH) + " --socket " + socket_path() +
                             " doctor --state-dir " + lab_.dir() + "/state";
  auto r = lab_.in("hv", doctor);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"pass datapath bpf: no other conntrack user found on this host",
                           "pass br_netfilter: off for the bridges",
                           "pass host program on br0: attached to every port"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  EXPECT_EQ(r.output.find("table inet hostlb"), std::string::npos) << r.output;

  // A security-group style table appears: a warning that names it.
  const std::string sg = write_lab_file(
      lab_, "sg.nft",
      "table inet sg {\n chain vms {\n  type filter hook forward priority filter; policy "
      "accept;\n  ct state invalid drop\n }\n}\n");
  ASSERT_EQ(lab_.in("hv", "nft -f " + sg).exit_code, 0);
  r = lab_.in("hv", doctor);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warn datapath bpf: other conntrack users found (inet sg (ct state)); "
                          "with br_netfilter off they no longer see bridged frames"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("fix: if they filter the VMs' traffic, run hostlbd with "
                          "--host-datapath nft"),
            std::string::npos)
      << r.output;

  // A port without the program (taken off behind hostlbd's back) fails.
  lab_.in("hv", "tc filter del dev vm2 ingress");
  r = lab_.in("hv", doctor);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("fail host program on br0: missing on vm2"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace hostlb::lab
