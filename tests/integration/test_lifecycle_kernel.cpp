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

}  // namespace
}  // namespace hostlb::lab
