// Connection lifecycle on the real kernel: drains, refusals of new
// connections to removed bindings, and the counters that report them.
#include <nlohmann/json.hpp>
#include <thread>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;

class LifecycleTest : public LabTest {
 protected:
  void SetUp() override {
    // The hypervisor needs a route towards the clients for the kernel to
    // build a reset (it then sends it out of the bridge port the SYN came
    // in by) and to route an ICMP error; a real one has a default route.
    lab_.in("hv", "ip route add 198.18.0.0/15 dev br0");
    lab_.gateway("c1", kVip10, kVm1.mac);
    lab_.gateway("c1", kVip20, kVm1.mac);
  }

  // Packets counted for a refused key in the kernel's refuse set.
  uint64_t refused_packets(const std::string& vip, int port) {
    const std::string listing = lab_.in("hv", "nft list set inet hostlb refuse4").output;
    const std::string needle = std::string(kVm1.mac) + " . " + vip + " . tcp . " +
                               std::to_string(port) + " counter packets ";
    const size_t at = listing.find(needle);
    if (at == std::string::npos) return 0;
    return std::stoull(listing.substr(at + needle.size()));
  }

  // The figures of one service (or backend) in `hostlbctl --json stats`.
  nlohmann::json figures(const std::string& scope, const std::string& name) {
    auto r = ctl("--json stats");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const auto doc = nlohmann::json::parse(r.output);
    for (const auto& entry : doc[scope + "s"])
      if (entry[scope] == name) return entry;
    return nlohmann::json{{"stats", r.output}};
  }
  // Waits until `field` of a service or backend reaches `value` (events are
  // asynchronous); returns the last figures seen.
  nlohmann::json wait_figure(const std::string& scope, const std::string& name,
                             const std::string& field, uint64_t value) {
    nlohmann::json f;
    for (int i = 0; i < 50; ++i) {
      f = figures(scope, name);
      if (f.value(field, uint64_t{0}) == value) return f;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << scope << " " << name << " " << field << " never reached " << value << ": "
                  << f.dump();
    return f;
  }

  nlohmann::json status() {
    auto r = ctl("--json status");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output);
  }
};

std::string two_vips() {
  return document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                   service_json(kVip20, 80, "tcp", {{"web-1", 8080}})});
}

TEST_F(LifecycleTest, ADrainLetsATransferFinishRefusesNewConnectionsThenFlushes) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(two_vips());
  TcpClient finishing(lab_, "c1", kVip10, 80);
  TcpClient lingering(lab_, "c1", kVip10, 80);
  ASSERT_EQ(finishing.read_line().rfind("vm1", 0), 0u);
  ASSERT_EQ(lingering.read_line().rfind("vm1", 0), 0u);

  auto r = ctl("service detach 203.0.113.10:80/tcp web-1 --drain 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("1 binding draining"), std::string::npos) << r.output;

  // A new connection is refused with a reset, not left to time out.
  const auto t0 = std::chrono::steady_clock::now();
  try {
    TcpClient refused(lab_, "c1", kVip10, 80, 3000ms);
    ADD_FAILURE() << "a new connection to a draining binding was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Connection refused"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms) << "refused by a reset";
  EXPECT_EQ(refused_packets(kVip10, 80), 1u);
  // The other VIP of the same backend is untouched.
  TcpClient other(lab_, "c1", kVip20, 80);
  EXPECT_EQ(other.read_line().rfind("vm1", 0), 0u);

  // The running transfer finishes during the drain.
  finishing.send_all(std::string(100000, 'x'));
  finishing.shutdown_write();
  EXPECT_EQ(finishing.read_line(), "bytes=100000");

  // status and backend list show the drain with what is left.
  const auto s = status();
  ASSERT_EQ(s["draining"].size(), 1u) << s.dump();
  EXPECT_EQ(s["draining"][0]["service"], "203.0.113.10:80/tcp");
  EXPECT_EQ(s["draining"][0]["backend"], "web-1");
  EXPECT_GE(s["draining"][0]["connections"].get<int>(), 1);
  EXPECT_LE(s["draining"][0]["remaining_seconds"].get<int>(), 4);
  r = ctl("backend list");
  EXPECT_NE(r.output.find("203.0.113.10:80/tcp"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("s left"), std::string::npos) << r.output;

  // At the end, what is left is flushed: the lingering connection's next
  // packet finds no conntrack entry and is refused.
  ASSERT_TRUE(daemon->wait_for_log("drain of 203.0.113.10:80/tcp -> web-1 ended", 1, 10s))
      << daemon->log();
  EXPECT_EQ(conntrack("-p tcp --orig-dst " + kVip10).find("dport=80"), std::string::npos)
      << conntrack("-p tcp");
  lingering.send_all("after the drain\n");
  lingering.shutdown_write();
  EXPECT_EQ(lingering.read_line(2000ms), "") << "the lingering connection was cut";
  EXPECT_EQ(status()["draining"].size(), 0u);
  // The other VIP's connection is still served.
  other.send_all("still here");
  other.shutdown_write();
  EXPECT_EQ(other.read_line(), "bytes=10");
}

TEST_F(LifecycleTest, UdpOfARemovedBindingIsFlushedThenRefusedAndCounted) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(document({service_json(kVip10, 53, "udp", {{"web-1", 8080}})}));
  ASSERT_NE(udp_exchange(lab_, "c1", kVip10, 53), "");
  auto r = ctl("service del 203.0.113.10:53/udp");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(conntrack("-p udp --orig-dst " + kVip10).find("dport=53"), std::string::npos)
      << "the UDP entry was flushed at once";
  EXPECT_EQ(udp_exchange(lab_, "c1", kVip10, 53, 1000ms), "");
  const std::string listing = lab_.in("hv", "nft list set inet hostlb refuse4").output;
  EXPECT_NE(listing.find("udp . 53 counter packets 1 "), std::string::npos) << listing;
}

TEST_F(LifecycleTest, DropPolicyRefusesSilently) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(two_vips(), {"--refuse-policy", "drop"});
  ASSERT_EQ(ctl("service detach 203.0.113.10:80/tcp web-1").exit_code, 0);
  try {
    TcpClient refused(lab_, "c1", kVip10, 80, 1500ms);
    ADD_FAILURE() << "accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_GE(refused_packets(kVip10, 80), 1u);
}

TEST_F(LifecycleTest, ARefusalEndsAfterRefuseSeconds) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(two_vips(), {"--refuse-seconds", "2"});
  ASSERT_EQ(ctl("service detach 203.0.113.10:80/tcp web-1").exit_code, 0);
  EXPECT_NE(lab_.in("hv", "nft list set inet hostlb refuse4").output.find(kVip10),
            std::string::npos);
  ASSERT_TRUE(daemon->wait_for_log("removed bindings no longer refused", 1, 10s)) << daemon->log();
  EXPECT_EQ(lab_.in("hv", "nft list set inet hostlb refuse4").output.find(kVip10),
            std::string::npos);
}

TEST_F(LifecycleTest, CountersMatchTheTrafficSent) {
  BackendServer vm1(lab_, "vm1", 8080);
  const std::string metrics = lab_.dir() + "/hostlb.prom";
  auto daemon = start_hostlbd(two_vips(), {"--metrics-file", metrics, "--metrics-interval", "1"});
  const std::string s10 = "203.0.113.10:80/tcp", s20 = "203.0.113.20:80/tcp";
  std::vector<std::unique_ptr<TcpClient>> clients;
  for (int i = 0; i < 3; ++i)
    clients.push_back(std::make_unique<TcpClient>(lab_, "c1", kVip10, 80));
  for (int i = 0; i < 2; ++i)
    clients.push_back(std::make_unique<TcpClient>(lab_, "c1", kVip20, 80));
  for (auto& c : clients) ASSERT_EQ(c->read_line().rfind("vm1", 0), 0u);

  auto f = wait_figure("service", s10, "opened", 3);
  EXPECT_EQ(f["active"], 3);
  f = wait_figure("service", s20, "opened", 2);
  EXPECT_EQ(f["active"], 2);
  f = wait_figure("backend", "web-1", "opened", 5);
  EXPECT_EQ(f["active"], 5);

  // Two end outside hostlbd's doing: closed, not flushed.
  lab_.in("hv", "conntrack -D -p tcp --orig-dst " + kVip20);
  f = wait_figure("service", s20, "closed", 2);
  EXPECT_EQ(f["active"], 0);
  EXPECT_EQ(f["flushed"], 0);

  // A detach flushes three: flushed, not closed.
  ASSERT_EQ(ctl("service detach " + s10 + " web-1").exit_code, 0);
  f = figures("service", s10);
  EXPECT_EQ(f["flushed"], 3) << f.dump();
  std::this_thread::sleep_for(300ms);  // the DESTROY events arrive
  f = figures("service", s10);
  EXPECT_EQ(f["closed"], 0) << f.dump();
  EXPECT_EQ(f["active"], 0) << f.dump();

  // One refused attempt.
  EXPECT_THROW(TcpClient(lab_, "c1", kVip10, 80, 1000ms), std::runtime_error);
  EXPECT_EQ(figures("service", s10)["refused"], 1);

  // A consistency miss: a flow whose conntrack entry is gone (as if a
  // gateway had moved it here mid-connection) sends data; its packet is
  // counted and answered with a reset.
  TcpClient moved(lab_, "c1", kVip20, 80);
  ASSERT_EQ(moved.read_line().rfind("vm1", 0), 0u);
  lab_.in("hv", "conntrack -D -p tcp --orig-dst " + kVip20);
  moved.send_all("x");
  moved.shutdown_write();
  EXPECT_EQ(moved.read_line(2000ms), "") << "reset, not served";
  f = figures("service", s20);
  EXPECT_GE(f["misses"].get<int>(), 1) << f.dump();
  auto r = ctl("--json stats");
  EXPECT_GE(nlohmann::json::parse(r.output)["misses"].get<int>(), 1) << r.output;

  // The same figures in the metrics file, rewritten every second.
  std::string text;
  for (int i = 0; i < 30; ++i) {
    text = lab_.in("hv", "cat " + metrics).output;
    if (text.find("hostlb_service_connections_refused_total{service=\"" + s10 + "\"} 1") !=
        std::string::npos)
      break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(text.find("hostlb_service_connections_opened_total{service=\"" + s10 + "\"} 3"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("hostlb_backend_connections_flushed_total{backend=\"web-1\"} 3"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("hostlb_service_connections_refused_total{service=\"" + s10 + "\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE hostlb_conntrack_event_losses_total counter"), std::string::npos);
  r = ctl("stats");
  EXPECT_NE(r.output.find("SERVICE"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("losses 0"), std::string::npos) << r.output;
}

TEST_F(LifecycleTest, ConnectionsOfOtherNetfilterUsersAreNotCounted) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(two_vips());
  // Traffic to the backend's own address: tracked by conntrack, not hostlb's.
  TcpClient direct(lab_, "c1", kVm1.ipv4, 8080);
  ASSERT_EQ(direct.read_line().rfind("vm1", 0), 0u);
  TcpClient served(lab_, "c1", kVip10, 80);
  ASSERT_EQ(served.read_line().rfind("vm1", 0), 0u);
  wait_figure("backend", "web-1", "opened", 1);
  auto r = ctl("--json stats");
  EXPECT_EQ(nlohmann::json::parse(r.output)["events"]["received"], 1) << r.output;
}

}  // namespace
}  // namespace hostlb::lab
