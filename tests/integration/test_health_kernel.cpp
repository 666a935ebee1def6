// Health checks on the real kernel with real backends: probes from the
// hypervisor, down bindings refused (and counted apart), established
// connections kept, recovery, HTTP statuses, UDP by ICMP, IPv6, and the
// last known health across a restart.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kSource4 = "198.18.255.254";
constexpr const char* kSource6 = "2001:db8:ffff::fe";

// An HTTP server in a backend namespace answering every request with the
// status the test sets.
class HttpServer {
 public:
  HttpServer(const Lab& lab, const std::string& role, int port) {
    if (::pipe2(stop_, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    fd_ = lab.socket_in(role, AF_INET, SOCK_STREAM);
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0)
      throw std::runtime_error("http server: " + std::string(std::strerror(errno)));
    thread_ = std::thread([this] { loop(); });
  }
  ~HttpServer() {
    (void)!::write(stop_[1], "x", 1);
    thread_.join();
    for (int fd : {fd_, stop_[0], stop_[1]}) ::close(fd);
  }
  std::atomic<int> status{200};

 private:
  void loop() {
    for (;;) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 || fds[1].revents) return;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      char buf[2048];
      pollfd in{c, POLLIN, 0};
      if (::poll(&in, 1, 1000) > 0) (void)!::recv(c, buf, sizeof buf, 0);
      const std::string reply = "HTTP/1.0 " + std::to_string(status.load()) + " X\r\n\r\n";
      (void)!::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  int fd_ = -1;
  int stop_[2] = {-1, -1};
  std::thread thread_;
};

std::string checked_service(const std::string& vip, int port, const std::string& proto,
                            const std::vector<std::pair<std::string, int>>& backends,
                            const std::string& health) {
  std::string s = service_json(vip, port, proto, backends);
  s.pop_back();  // the closing brace
  return s + R"(,"health":)" + health + "}";
}

constexpr const char* kFastTcp = R"({"interval":0.5,"timeout":0.4,"rise":2,"fall":2})";

class HealthTest : public LabTest {
 protected:
  void SetUp() override {
    // Routes towards the clients (for the kernel's resets) and the probes'
    // source addresses on the bridge, which the VMs reach on their link.
    lab_.in("hv", "ip route add 198.18.0.0/15 dev br0");
    lab_.in("hv", "ip -6 route add 2001:db8::/32 dev br0");
    lab_.in("hv", std::string("ip addr add ") + kSource4 + "/32 dev br0");
    lab_.in("hv", std::string("ip addr add ") + kSource6 + "/128 dev br0 nodad");
  }

  std::unique_ptr<Hostlbd> start(const std::string& doc) {
    return start_hostlbd(doc, {"--health-source-ipv4", kSource4, "--health-source-ipv6", kSource6});
  }

  nlohmann::json health_of(const std::string& service, const std::string& backend) {
    const auto r = ctl("--json health");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const auto doc = nlohmann::json::parse(r.output);
    for (const auto& b : doc["bindings"])
      if (b["service"] == service && b["backend"] == backend) return b;
    return {{"missing", r.output}};
  }
  // Waits for a binding's state; returns how long it took.
  std::chrono::milliseconds wait_state(const std::string& service, const std::string& backend,
                                       const std::string& state,
                                       std::chrono::milliseconds timeout = 6s) {
    const auto start_at = Clock::now();
    nlohmann::json h;
    while (Clock::now() - start_at < timeout) {
      h = health_of(service, backend);
      if (h.value("state", "") == state)
        return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_at);
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << service << " -> " << backend << " never " << state << ": " << h.dump();
    return timeout;
  }
  // The backend's own firewall: new TCP connections to `port` are reset
  // (the service died) or dropped (the VM hangs); established ones go on.
  void refuse_in(const std::string& vm, int port, const std::string& how) {
    lab_.in(vm, "nft add table inet t");
    lab_.in(vm, "nft 'add chain inet t in { type filter hook input priority 0; }'");
    lab_.in(vm, "nft add rule inet t in tcp dport " + std::to_string(port) +
                    " tcp flags \\& '(syn | ack)' == syn " +
                    (how == "reset" ? "reject with tcp reset" : "drop"));
  }
  void allow_in(const std::string& vm) { lab_.in(vm, "nft delete table inet t"); }
  uint64_t unhealthy_refusals(const std::string& service) {
    const auto doc = nlohmann::json::parse(ctl("--json stats").output);
    for (const auto& s : doc["services"])
      if (s["service"] == service) return s.value("unhealthy", uint64_t{0});
    return 0;
  }
  bool opens(const std::string& client, const std::string& vip, const std::string& banner) {
    try {
      TcpClient c(lab_, client, vip, 80, 1500ms);
      return c.read_line(1500ms).rfind(banner, 0) == 0;
    } catch (const std::exception&) {
      return false;
    }
  }
};

// A backend whose service stops accepting goes down within fall x interval
// + timeout; new connections to it are refused by the host (counted as
// unhealthy) while the other backend keeps serving; an established transfer
// to it completes; it comes back when it accepts again.
TEST_F(HealthTest, ADeadBackendIsRefusedKeepsItsConnectionsAndComesBack) {
  BackendServer vm1(lab_, "vm1", 8080), vm2(lab_, "vm2", 8080);
  lab_.gateway("c1", kVip10, kVm1.mac);
  lab_.gateway("c2", kVip10, kVm2.mac);
  const std::string key = "203.0.113.10:80/tcp";
  auto daemon = start(
      document({checked_service(kVip10, 80, "tcp", {{"web-1", 8080}, {"web-2", 8080}}, kFastTcp)}));
  wait_state(key, "web-1", "up");
  wait_state(key, "web-2", "up");
  ASSERT_TRUE(opens("c1", kVip10, "vm1"));
  TcpClient established(lab_, "c1", kVip10, 80);
  ASSERT_EQ(established.read_line().substr(0, 3), "vm1");

  refuse_in("vm1", 8080, "reset");
  const auto took = wait_state(key, "web-1", "down");
  // fall x interval + timeout = 1.4 s, and a probe's wait for its turn.
  EXPECT_LT(took, 2500ms);
  const auto h = health_of(key, "web-1");
  EXPECT_EQ(h["last"]["detail"], "connection refused (RST)") << h.dump();
  EXPECT_FALSE(h["serving"].get<bool>());
  EXPECT_TRUE(daemon->wait_for_log("health of " + key + " -> web-1: up -> down", 1, 2s))
      << daemon->log();

  EXPECT_FALSE(opens("c1", kVip10, "vm1")) << "refused by the host";
  EXPECT_GE(unhealthy_refusals(key), 1u);
  EXPECT_TRUE(opens("c2", kVip10, "vm2")) << "the other backend serves on";
  established.send_all("still here\n");
  established.shutdown_write();
  EXPECT_EQ(established.read_line(), "bytes=11") << "the established transfer completed";

  allow_in("vm1");
  wait_state(key, "web-1", "up");
  EXPECT_TRUE(opens("c1", kVip10, "vm1")) << "serving again";
  const auto status = nlohmann::json::parse(ctl("--json status").output);
  EXPECT_EQ(status["health"]["checked"], 2) << status.dump();
  EXPECT_EQ(status["health"]["not_serving"], 0) << status.dump();
  const std::string metrics = ctl("stats --prometheus").output;
  EXPECT_NE(
      metrics.find("hostlb_service_connections_refused_unhealthy_total{service=\"" + key + "\"}"),
      std::string::npos);
  EXPECT_NE(metrics.find("hostlb_binding_health{service=\"" + key +
                         "\",backend=\"web-1\",state=\"up\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("hostlb_binding_health_transitions_total{service=\"" + key +
                         "\",backend=\"web-1\"} 3"),
            std::string::npos)
      << metrics;
}

// A check that flushes: a binding that goes down loses its established
// connections too.
TEST_F(HealthTest, ACheckThatFlushesEndsTheEstablishedConnections) {
  BackendServer vm1(lab_, "vm1", 8080);
  lab_.gateway("c1", kVip10, kVm1.mac);
  const std::string key = "203.0.113.10:80/tcp";
  auto daemon = start(document({checked_service(
      kVip10, 80, "tcp", {{"web-1", 8080}},
      R"({"interval":0.5,"timeout":0.4,"rise":1,"fall":1,"established":"flush"})")}));
  wait_state(key, "web-1", "up");
  TcpClient established(lab_, "c1", kVip10, 80);
  ASSERT_EQ(established.read_line().substr(0, 3), "vm1");
  EXPECT_NE(conntrack("-p tcp --dport 80").find(kVip10), std::string::npos);
  refuse_in("vm1", 8080, "reset");
  wait_state(key, "web-1", "down");
  EXPECT_TRUE(daemon->wait_for_log("flush " + key + " backend web-1: 1 connections", 1, 3s))
      << daemon->log();
  EXPECT_EQ(conntrack("-p tcp --dport 80").find(kVip10), std::string::npos)
      << conntrack("-p tcp --dport 80");
}

// A backend that drops SYNs goes down by timeout.
TEST_F(HealthTest, ABlackholedBackendGoesDownByTimeout) {
  BackendServer vm2(lab_, "vm2", 8080);
  const std::string key = "203.0.113.10:80/tcp";
  auto daemon = start(document({checked_service(kVip10, 80, "tcp", {{"web-2", 8080}}, kFastTcp)}));
  wait_state(key, "web-2", "up");
  refuse_in("vm2", 8080, "drop");
  wait_state(key, "web-2", "down");
  EXPECT_EQ(health_of(key, "web-2")["last"]["detail"], "timeout");
}

// An HTTP check: 503 takes the binding down, 200 brings it back; a new
// binding takes no connections before its first success (fail closed).
TEST_F(HealthTest, AnHttpCheckFollowsTheStatus) {
  HttpServer http(lab_, "vm1", 8081);
  http.status = 503;
  const std::string key = "203.0.113.20:80/tcp";
  auto daemon = start(document({checked_service(
      kVip20, 80, "tcp", {{"web-1", 8081}},
      R"({"kind":"http","path":"/healthz","status":"200-299","interval":0.5,"timeout":0.4,"rise":1,"fall":2})")}));
  wait_state(key, "web-1", "down");
  EXPECT_EQ(health_of(key, "web-1")["last"]["detail"], "status 503");
  EXPECT_NE(lab_.in("hv", "nft list set inet hostlb refuse4").output.find(kVm1.mac),
            std::string::npos)
      << "never served: refused from the start";
  http.status = 200;
  wait_state(key, "web-1", "up");
  EXPECT_EQ(health_of(key, "web-1")["last"]["detail"], "status 200");
  EXPECT_NE(lab_.in("hv", "nft list map inet hostlb targets4").output.find(kVm1.mac),
            std::string::npos);
}

// UDP: an ICMP port unreachable takes the binding down; a listener brings
// it up (its answer, or the absence of an error).
TEST_F(HealthTest, AUdpCheckGoesDownOnIcmpPortUnreachable) {
  lab_.in("vm1", "sysctl -qw net.ipv4.icmp_ratelimit=0");
  const std::string key = "203.0.113.10:53/udp";
  auto daemon =
      start(document({checked_service(kVip10, 53, "udp", {{"web-1", 5353}},
                                      R"({"interval":0.5,"timeout":0.4,"rise":1,"fall":2})")}));
  wait_state(key, "web-1", "down");
  EXPECT_EQ(health_of(key, "web-1")["last"]["detail"], "ICMP port unreachable");
  BackendServer vm1(lab_, "vm1", 5353);
  wait_state(key, "web-1", "up");
  EXPECT_EQ(health_of(key, "web-1")["last"]["detail"], "answered");
}

// IPv6 bindings are probed over IPv6 from the IPv6 source.
TEST_F(HealthTest, Ipv6BindingsAreCheckedToo) {
  BackendServer vm1(lab_, "vm1", 8080, /*ipv6=*/true);
  const std::string key = "[2001:db8:f00::10]:80/tcp";
  auto daemon = start(document({checked_service(kVip6, 80, "tcp", {{"web-1", 8080}}, kFastTcp)}));
  wait_state(key, "web-1", "up");
  EXPECT_EQ(health_of(key, "web-1")["target"], "[2001:db8:1::11]:8080");
  refuse_in("vm1", 8080, "reset");
  wait_state(key, "web-1", "down");
  EXPECT_NE(lab_.in("hv", "nft list set inet hostlb refuse6").output.find(kVm1.mac),
            std::string::npos);
}

// After a restart the last known health holds until probes say otherwise:
// a backend known down is refused from the first moment, even with a
// check that would otherwise let it serve until proven down.
TEST_F(HealthTest, ARestartKeepsTheLastKnownHealth) {
  BackendServer vm1(lab_, "vm1", 8080);
  const std::string key = "203.0.113.10:80/tcp";
  const std::string doc =
      document({checked_service(kVip10, 80, "tcp", {{"web-1", 8080}},
                                R"({"interval":2,"timeout":1,"rise":2,"fall":1,"start":"up"})")});
  auto daemon = start(doc);
  wait_state(key, "web-1", "up");
  refuse_in("vm1", 8080, "reset");
  wait_state(key, "web-1", "down");
  ASSERT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
  daemon = start(doc);
  EXPECT_NE(lab_.in("hv", "nft list set inet hostlb refuse4").output.find(kVm1.mac),
            std::string::npos)
      << "refused at once, not after the first probes";
  EXPECT_TRUE(daemon->wait_for_log("health of 1 bindings as the previous run left it"))
      << daemon->log();
  EXPECT_EQ(health_of(key, "web-1")["state"], "down");
}

// A backend that flaps changes the kernel once per transition, not once per
// probe: each transition is one element added to or deleted from the
// refuse set, as nft monitor sees them.
TEST_F(HealthTest, FlappingChangesTheKernelOncePerTransition) {
  BackendServer vm1(lab_, "vm1", 8080);
  const std::string key = "203.0.113.10:80/tcp";
  auto daemon =
      start(document({checked_service(kVip10, 80, "tcp", {{"web-1", 8080}},
                                      R"({"interval":0.2,"timeout":0.2,"rise":1,"fall":1})")}));
  wait_state(key, "web-1", "up");
  const std::string events = lab_.dir() + "/nft-events";
  const std::string monitor = sh("ip netns exec " + lab_.ns("hv") + " timeout 6 nft monitor > " +
                                 events + " 2>&1 & echo $!")
                                  .output;
  std::this_thread::sleep_for(500ms);
  const uint64_t before = health_of(key, "web-1")["transitions"];
  for (int i = 0; i < 4; ++i) {
    refuse_in("vm1", 8080, "reset");
    wait_state(key, "web-1", "down");
    std::this_thread::sleep_for(400ms);  // probes go on failing: no change
    allow_in("vm1");
    wait_state(key, "web-1", "up");
    std::this_thread::sleep_for(400ms);
  }
  const uint64_t transitions = health_of(key, "web-1")["transitions"].get<uint64_t>() - before;
  EXPECT_EQ(transitions, 8u);
  const std::string pid = monitor.substr(0, monitor.find_first_not_of("0123456789"));
  ASSERT_FALSE(pid.empty()) << monitor;
  sh("while kill -0 " + pid + " 2>/dev/null; do sleep 0.1; done");
  std::ifstream in(events);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t changes = 0;
  for (size_t at = text.find("refuse4"); at != std::string::npos; at = text.find("refuse4", at + 1))
    changes += text.compare(text.find('{', at) + 2, 17, kVm1.mac) == 0;
  EXPECT_EQ(changes, transitions) << text;
}

// hostlbctl gives a service a check and takes it away.
TEST_F(HealthTest, HostlbctlSetsAndRemovesACheck) {
  BackendServer vm1(lab_, "vm1", 8080);
  const std::string key = "203.0.113.10:80/tcp";
  auto daemon = start(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  auto r = ctl("service health " + key + " --kind http --interval 0.5 --timeout 0.4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(health_of(key, "web-1")["check"], "http");
  // The backend speaks no HTTP: it goes down.
  wait_state(key, "web-1", "down");
  r = ctl("service health " + key + " --kind udp");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("params.health.kind"), std::string::npos) << r.output;
  r = ctl("service health " + key + " --none");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(lab_.in("hv", "nft list set inet hostlb refuse4").output.find(kVm1.mac),
            std::string::npos)
      << "no check: it serves again";
  const auto doc = nlohmann::json::parse(ctl("--json get").output);
  EXPECT_FALSE(doc["services"][0].contains("health")) << doc.dump();
}

}  // namespace
}  // namespace hostlb::lab
