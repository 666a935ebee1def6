// Faults on the real kernel with real traffic, each bounded in time. Every
// test prints one line
//   RESULT|fault|load held|connections lost|time to recover
// that scripts/chaos.sh gathers into the results table of the README.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ChaosTest : public LabTest {
 protected:
  void SetUp() override { lab_.gateway("c1", kVip10, kVm1.mac); }

  static void result(const std::string& fault, const std::string& load, const std::string& lost,
                     const std::string& recovery) {
    std::printf("RESULT|%s|%s|%s|%s\n", fault.c_str(), load.c_str(), lost.c_str(),
                recovery.c_str());
    std::fflush(stdout);
  }

  // Polls `ok` every 20 ms until it holds or `limit` passes; the time it took.
  static std::optional<std::chrono::milliseconds> time_until(const std::function<bool()>& ok,
                                                             std::chrono::milliseconds limit) {
    const auto start = Clock::now();
    while (Clock::now() - start < limit) {
      if (ok()) return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      std::this_thread::sleep_for(20ms);
    }
    return std::nullopt;
  }

  bool served() {
    try {
      TcpClient c(lab_, "c1", kVip10, 80, 500ms);
      return c.read_line(500ms).rfind("vm1", 0) == 0;
    } catch (const std::exception&) {
      return false;
    }
  }

  std::string one_vip() { return document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}); }
};

// Long-lived transfers send a line every 20 ms while hostlbd is restarted
// 30 times with SIGTERM and 30 times with SIGKILL; short connections are
// opened all along. Nothing may break: the datapath stays in the kernel.
TEST_F(ChaosTest, SixtyRestartsUnderLoadLoseNothing) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_vip());
  constexpr int kLong = 20;
  std::atomic<bool> stop{false};
  std::atomic<int> short_ok{0}, short_failed{0}, long_broken{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kLong; ++i) {
    threads.emplace_back([&] {
      try {
        TcpClient c(lab_, "c1", kVip10, 80, 3000ms);
        if (c.read_line().rfind("vm1", 0) != 0) throw std::runtime_error("no banner");
        uint64_t sent = 0;
        const std::string line(100, 'x');
        while (!stop) {
          c.send_all(line);
          sent += line.size();
          std::this_thread::sleep_for(20ms);
        }
        c.shutdown_write();
        if (c.read_line(5000ms) != "bytes=" + std::to_string(sent)) ++long_broken;
      } catch (const std::exception&) {
        ++long_broken;
      }
    });
  }
  threads.emplace_back([&] {
    while (!stop) {
      try {
        TcpClient c(lab_, "c1", kVip10, 80, 2000ms);
        c.shutdown_write();
        if (c.read_line(2000ms).rfind("vm1", 0) == 0)
          ++short_ok;
        else
          ++short_failed;
      } catch (const std::exception&) {
        ++short_failed;
      }
      std::this_thread::sleep_for(5ms);
    }
  });
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  for (int signal : {SIGTERM, SIGKILL}) {
    for (int i = 0; i < 30; ++i) {
      const int rc = daemon->stop(signal);
      EXPECT_EQ(rc, signal == SIGTERM ? 0 : 128 + SIGKILL);
      daemon = start_hostlbd(one_vip());
    }
  }
  const auto seconds =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() / 1000.0;
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(long_broken, 0);
  EXPECT_EQ(short_failed, 0);
  EXPECT_GT(short_ok, 100);
  result("30 SIGTERM + 30 SIGKILL restarts of hostlbd in " + std::to_string(seconds).substr(0, 4) +
             " s",
         std::to_string(kLong) + " long transfers, " + std::to_string(short_ok + short_failed) +
             " short connections",
         std::to_string(long_broken) + " long, " + std::to_string(short_failed) + " short",
         "none needed (datapath stays in the kernel)");
}

// Someone deletes hostb's table, then points one of its map elements
// elsewhere: hostlbd notices the foreign nftables commit and rebuilds.
TEST_F(ChaosTest, ATableDeletedOrEditedBehindHostlbdsBackIsRestoredWithinTwoSeconds) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_vip());
  ASSERT_TRUE(served());
  TcpClient established(lab_, "c1", kVip10, 80);
  ASSERT_EQ(established.read_line().rfind("vm1", 0), 0u);

  // hostlbd's own commits, and another table's, are not mistaken for edits.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(ctl("service attach 203.0.113.10:80/tcp web-2:8080").exit_code, 0);
    ASSERT_EQ(ctl("service detach 203.0.113.10:80/tcp web-2").exit_code, 0);
  }
  ASSERT_EQ(lab_.in("hv", "nft add table inet somebody-else").exit_code, 0);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(nlohmann::json::parse(ctl("--json stats").output)["repairs"], 0);
  lab_.in("hv", "nft delete table inet somebody-else");

  lab_.in("hv", "nft delete table inet hostlb");
  const auto deleted = time_until(
      [&] { return ruleset().find("table inet hostlb") != std::string::npos && served(); }, 5s);
  ASSERT_TRUE(deleted) << daemon->log();
  EXPECT_LT(*deleted, 2000ms);

  const std::string script = write_lab_file(
      lab_, "edit.nft",
      "delete element inet hostlb targets4 { 02:00:00:00:01:11 . 203.0.113.10 . tcp . 80 }\n"
      "add element inet hostlb targets4 { 02:00:00:00:01:11 . 203.0.113.10 . tcp . 80 : "
      "198.18.1.12 . 8080 }\n");
  const auto edit = lab_.in("hv", "nft -f " + script);
  ASSERT_EQ(edit.exit_code, 0) << edit.output;
  const auto edited = time_until(
      [&] { return ruleset().find("tcp . 80 : 198.18.1.11 . 8080") != std::string::npos; }, 5s);
  ASSERT_TRUE(edited) << daemon->log();
  EXPECT_LT(*edited, 2000ms);
  EXPECT_TRUE(served());
  established.send_all("still");
  established.shutdown_write();
  EXPECT_EQ(established.read_line(), "bytes=5") << "the established connection lived on";
  auto r = ctl("--json stats");
  EXPECT_EQ(nlohmann::json::parse(r.output)["repairs"], 2) << r.output;
  EXPECT_TRUE(daemon->wait_for_log("rebuilding", 2)) << daemon->log();
  result("nft table deleted; a map element re-pointed", "1 established connection",
         "0 (it completed)",
         std::to_string(deleted->count()) + " ms; " + std::to_string(edited->count()) + " ms");
}

// The backend's route is deleted, then the bridge itself is deleted and
// created again (its ports re-attached): hostlbd re-installs its routes,
// neighbours and sysctls once the bridge is back.
TEST_F(ChaosTest, RoutesAndNeighboursComeBackAfterTheBridgeIsRecreated) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_vip());
  ASSERT_TRUE(served());
  auto has_route = [&] {
    return lab_.in("hv", "ip route show proto 213").output.find("198.18.1.11") != std::string::npos;
  };
  lab_.in("hv", "ip route del 198.18.1.11 dev br0 proto 213");
  const auto route = time_until([&] { return has_route() && served(); }, 5s);
  ASSERT_TRUE(route) << daemon->log();
  EXPECT_LT(*route, 2000ms);

  lab_.in("hv", "ip link del br0");
  std::this_thread::sleep_for(1500ms);  // hostlbd sees it gone, and says so once
  const auto recreated_at = Clock::now();
  const auto made =
      lab_.in("hv",
              "sh -c 'ip link add br0 type bridge && sysctl -qw net.ipv6.conf.br0.accept_dad=0 && "
              "ip link set br0 up && for p in vm1 vm2 c1 c2; do ip link set $p master br0; done'");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const auto back = time_until([&] { return has_route() && served(); }, 10s);
  ASSERT_TRUE(back) << daemon->log();
  const auto total =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - recreated_at);
  EXPECT_LT(total, 3000ms) << "within the 1 s check, plus the bridge's own start";
  EXPECT_TRUE(daemon->wait_for_log("cannot repair the datapath yet: bridge br0")) << daemon->log();
  result("host route deleted; the bridge deleted and recreated", "new connections",
         "0 after recovery",
         std::to_string(route->count()) + " ms; " + std::to_string(total.count()) +
             " ms after the bridge came back");
}

// The event socket overflows under a burst of connections (a tiny queue):
// hostlbd resyncs from a dump, and the counts converge to conntrack's.
TEST_F(ChaosTest, AnEventStormOverflowsTheQueueAndTheCountsConverge) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_vip(), {"--event-queue-kb", "4"});
  std::atomic<int> made{0};
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<TcpClient>> kept;
  std::mutex mu;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 150; ++i) {
        try {
          auto c = std::make_unique<TcpClient>(lab_, "c1", kVip10, 80, 2000ms);
          ++made;
          if (i % 10 == t) {  // some stay open
            std::lock_guard lock(mu);
            kept.push_back(std::move(c));
          }
        } catch (const std::exception&) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  nlohmann::json stats;
  const auto converged = time_until(
      [&] {
        stats = nlohmann::json::parse(ctl("--json stats").output);
        const auto live =
            lab_.in("hv", "conntrack -L --mark 0x1000/0xfffff000 2>/dev/null | grep -c .").output;
        if (stats["services"].empty()) return false;
        return std::to_string(stats["services"][0]["active"].get<int>()) + "\n" == live;
      },
      20s);
  EXPECT_TRUE(converged) << stats.dump();
  EXPECT_GE(stats["events"]["losses"].get<int>(), 1) << "the queue did overflow";
  EXPECT_EQ(stats["events"]["resyncs"], stats["events"]["losses"]);
  result("conntrack event queue overflow (4 KiB queue)",
         std::to_string(made) + " connections in a burst",
         "0 (" + std::to_string(stats["events"]["losses"].get<int>()) + " losses, each resynced)",
         converged ? std::to_string(converged->count()) + " ms to match conntrack" : "never");
}

// Sets a host-wide sysctl for a test's duration and puts it back.
class SysctlFor {
 public:
  SysctlFor(std::string path, const std::string& value) : path_(std::move(path)) {
    std::ifstream in(path_);
    std::getline(in, before_);
    write(value);
  }
  ~SysctlFor() { write(before_); }
  SysctlFor(const SysctlFor&) = delete;
  SysctlFor& operator=(const SysctlFor&) = delete;

 private:
  void write(const std::string& value) {
    std::ofstream out(path_);
    out << value << "\n";
  }
  std::string path_, before_;
};

class FloodTest : public ChaosTest {
 protected:
  static constexpr int kMax = 16384;  // nf_conntrack_max for the test
  void SetUp() override {
    ChaosTest::SetUp();
    lab_.gateway("c2", kVip20, kVm2.mac);
    // vm1 drops its answers to the spoofed sources at once (no ARP storm):
    // their entries on the host stay unanswered.
    lab_.in("vm1", "ip route add blackhole 198.19.128.0/17");
  }
  std::string two_vips() {
    return document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                     service_json(kVip20, 80, "tcp", {{"web-2", 8080}})});
  }
  uint64_t conntrack_count() {
    return std::stoull(lab_.in("hv", "cat /proc/sys/net/netfilter/nf_conntrack_count").output);
  }
  // Opens `n` connections to VIP 20 one after another; how many got vm2's
  // banner, and the rate of them. One at a time, the rate is bound by
  // wake-up latencies: on an idle machine it can be lower than during a
  // flood that keeps both cores busy.
  std::pair<int, double> open_to_vip20(int n) {
    int ok = 0;
    const auto start = Clock::now();
    for (int i = 0; i < n; ++i) {
      try {
        TcpClient c(lab_, "c2", kVip20, 80, 2000ms);
        if (c.read_line(2000ms).rfind("vm2", 0) == 0) ++ok;
      } catch (const std::exception&) {
      }
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    return {ok, ok / secs};
  }
  // Starts a flood of spoofed SYNs at VIP 10 from c1 for `seconds`.
  std::thread flood(int seconds, std::string* out) {
    return std::thread([this, seconds, out] {
      *out = lab_.in("c1", std::string(HOSTLB_SYNFLOOD_PATH) + " " + kVip10 +
                               " 80 198.19.128.0 17 " + std::to_string(seconds) + " 1")
                 .output;
    });
  }
  // A flood at VIP 10 with the admission limits on, on `datapath` (hostlbd
  // started with `extra` too).
  void flood_with_limits(const std::string& datapath, std::vector<std::string> extra);
  SysctlFor max_{"/proc/sys/net/netfilter/nf_conntrack_max", std::to_string(kMax)};
};

// A SYN flood at VIP 10 with the admission limits on (a rate per service,
// short timeouts for unanswered entries): the table stays far from full,
// VIP 20 keeps opening connections, an established connection to VIP 10
// carries on, and the drops are counted for VIP 10 alone.
TEST_F(FloodTest, ASynFloodAtOneVipFillsNeitherTheTableNorStarvesAnotherVip) {
  flood_with_limits("nft", {});
}

// The same on the BPF host datapath: its meter and embryonic timeouts are
// the program's, its entries the kernel's table's.
TEST_F(FloodTest, OnTheBpfDatapathTooASynFloodFillsNeitherTheTableNorStarvesAnotherVip) {
  ASSERT_EQ(lab_.in("hv",
                    "sysctl -qw net.bridge.bridge-nf-call-iptables=0 "
                    "net.bridge.bridge-nf-call-ip6tables=0")
                .exit_code,
            0);
  flood_with_limits("bpf", {"--host-datapath", "bpf"});
}

void FloodTest::flood_with_limits(const std::string& datapath, std::vector<std::string> extra) {
  BackendServer vm1(lab_, "vm1", 8080), vm2(lab_, "vm2", 8080);
  std::vector<std::string> args = {"--service-new-rate",  "1000", "--service-new-burst", "200",
                                   "--embryonic-timeout", "3"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto daemon = start_hostlbd(two_vips(), args);
  TcpClient established(lab_, "c1", kVip10, 80, 2000ms);
  ASSERT_EQ(established.read_line().substr(0, 3), "vm1");
  open_to_vip20(50);  // warm-up (neighbours, caches): the figure below is the steady rate
  const auto [normal_ok, normal_rate] = open_to_vip20(200);
  ASSERT_EQ(normal_ok, 200);

  std::string flood_out;
  std::thread flooder = flood(6, &flood_out);
  std::this_thread::sleep_for(1500ms);
  const auto [during_ok, during_rate] = open_to_vip20(200);
  uint64_t peak = 0;
  for (int i = 0; i < 10; ++i) {
    peak = std::max(peak, conntrack_count());
    std::this_thread::sleep_for(100ms);
  }
  established.send_all("still there\n");
  flooder.join();
  ASSERT_NE(flood_out.find("sent="), std::string::npos) << flood_out;
  const uint64_t sent = std::stoull(flood_out.substr(flood_out.find("sent=") + 5));

  EXPECT_GT(sent, 30000u) << "a flood, not a trickle: " << flood_out;
  EXPECT_EQ(during_ok, 200) << "every connection to the other VIP succeeded during the flood";
  EXPECT_GE(during_rate, 0.5 * normal_rate)
      << "normal " << normal_rate << "/s, during the flood " << during_rate << "/s";
  EXPECT_LT(peak, kMax / 2u) << "conntrack entries at the peak of the flood";
  established.shutdown_write();
  EXPECT_EQ(established.read_line(3000ms), "bytes=12") << "the established connection carried on";

  const auto stats = nlohmann::json::parse(ctl("--json stats").output);
  std::map<std::string, uint64_t> limited;
  for (const auto& s : stats["services"])
    limited[s["service"].get<std::string>()] = s["limited"].get<uint64_t>();
  EXPECT_GT(limited["203.0.113.10:80/tcp"], sent / 2) << stats.dump();
  EXPECT_EQ(limited["203.0.113.20:80/tcp"], 0u) << stats.dump();
  // The total is a named counter, the per-service figure an element's
  // counter in a dynamic set; under a flood on both cores they have once
  // differed by one packet (1,761,737 against 1,761,736, in CI), so the
  // total may be ahead by a packet or two, never behind.
  const uint64_t total = stats["limited"].get<uint64_t>();
  EXPECT_GE(total, limited["203.0.113.10:80/tcp"]) << stats.dump();
  EXPECT_LE(total, limited["203.0.113.10:80/tcp"] + 2) << stats.dump();
  EXPECT_NE(ctl("stats --prometheus")
                .output.find("hostlb_service_connections_limited_total{service=\"203.0.113.10:80/"
                             "tcp\"}"),
            std::string::npos);

  // The flood's admitted entries time out within the embryonic timeout
  // (counted by a listing: nf_conntrack_count also counts timed-out
  // entries the kernel's garbage collector has not freed yet).
  auto live = [&] {
    return std::stoull(lab_.in("hv", "conntrack -L 2>/dev/null | grep -c .").output);
  };
  const auto drained = time_until([&] { return live() < 300; }, 10s);
  EXPECT_TRUE(drained) << live() << " entries left";
  result("SYN flood at one VIP (" + datapath + ", nf_conntrack_max " + std::to_string(kMax) +
             ", rate 1000/s, embryonic 3 s)",
         std::to_string(sent / 6) + " SYNs/s; other VIP at " +
             std::to_string(static_cast<int>(100 * during_rate / normal_rate)) +
             "% of its rate, 200/200 opened",
         "0 (table peak " + std::to_string(peak) + " of " + std::to_string(kMax) + ")",
         drained ? std::to_string(drained->count()) + " ms to drain" : "never");
}

// The same flood without the rate limit fills the table: the kernel drops
// new connections, hostlbd reports the table full, the established
// connection carries on, and within the embryonic timeout of the flood's
// end the table has room again and new connections succeed.
TEST_F(FloodTest, AFullTableIsReportedSparesEstablishedConnectionsAndRecovers) {
  BackendServer vm1(lab_, "vm1", 8080), vm2(lab_, "vm2", 8080);
  auto daemon = start_hostlbd(two_vips(), {"--service-new-rate", "0", "--embryonic-timeout", "3",
                                           "--metrics-interval", "1"});
  TcpClient established(lab_, "c1", kVip10, 80, 2000ms);
  ASSERT_EQ(established.read_line().substr(0, 3), "vm1");

  std::string flood_out;
  std::thread flooder = flood(4, &flood_out);
  const auto full = time_until([&] { return conntrack_count() >= kMax * 99 / 100; }, 3s);
  nlohmann::json during;
  if (full) during = nlohmann::json::parse(ctl("--json stats").output);
  established.send_all("still there\n");
  flooder.join();
  const auto flood_end = Clock::now();

  ASSERT_TRUE(full) << "the flood did not fill the table: " << conntrack_count();
  EXPECT_TRUE(during["conntrack"]["full"].get<bool>()) << during.dump();
  EXPECT_EQ(during["conntrack"]["max"].get<uint64_t>(), static_cast<uint64_t>(kMax));
  EXPECT_EQ(during["limited"].get<uint64_t>(), 0u) << "no limit set";
  established.shutdown_write();
  EXPECT_EQ(established.read_line(3000ms), "bytes=12") << "the established connection carried on";

  const auto recovered = time_until([&] { return open_to_vip20(1).first == 1; }, 10s);
  EXPECT_TRUE(recovered) << "new connections after the flood";
  const auto reported = time_until(
      [&] {
        return !nlohmann::json::parse(ctl("--json stats").output)["conntrack"]["full"].get<bool>();
      },
      10s);
  EXPECT_TRUE(reported) << "the table is no longer reported full: " << conntrack_count()
                        << " entries\n"
                        << lab_.in("hv",
                                   "conntrack -L 2>/dev/null | awk '{print $4, $3}' | sort | "
                                   "uniq -c | sort -rn | head")
                               .output;
  const auto since_end =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - flood_end);
  result("conntrack table full (flood without rate limit, nf_conntrack_max " +
             std::to_string(kMax) + ")",
         "established connection", "0", std::to_string(since_end.count()) + " ms to have room");
}

// hostlbd is killed (SIGKILL) while it applies a 10,000-service document
// that keeps the served VIP: the next start converges to what was
// persisted (the old state or the new, whole), and the established
// connection to the unchanged service lives on.
TEST_F(ChaosTest, KilledInTheMiddleOfALargeApplyTheNextStartConverges) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_vip());
  TcpClient established(lab_, "c1", kVip10, 80);
  ASSERT_EQ(established.read_line().rfind("vm1", 0), 0u);
  const std::string big = lab_.dir() + "/big.json";
  ASSERT_EQ(sh(std::string(HOSTLB_SOURCE_DIR) + "/bench/gen-doc.sh 10000 >" + big).exit_code, 0);
  // The bench document's backend is web-1 = vm1 and its last service is the
  // served VIP:80, so that service is unchanged.
  const auto t0 = Clock::now();
  sh(std::string(HOSTLBCTL_PATH) + " --socket " + socket_path() + " apply -f " + big +
     " >/dev/null 2>&1 &");
  std::this_thread::sleep_for(40ms);
  EXPECT_EQ(daemon->stop(SIGKILL), 128 + SIGKILL);
  const auto killed_after =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  // Restarted without --config: what was persisted is what it restores.
  Hostlbd restarted(lab_, {"--state-dir", lab_.dir() + "/state", "--socket", socket_path()});
  ASSERT_TRUE(restarted.start()) << restarted.log();
  const auto doc = nlohmann::json::parse(ctl("get").output);
  const size_t services = doc["services"].size();
  EXPECT_TRUE(services == 1 || services == 10000) << services;
  const auto table = lab_.in("hv", "nft list map inet hostlb targets4").output;
  EXPECT_NE(table.find("203.0.113.10 . tcp . 80 : 198.18.1.11 . 8080"), std::string::npos);
  auto r = lab_.in("hv", std::string(HOSTLBCTL_PATH) + " --socket " + socket_path() +
                             " doctor --state-dir " + lab_.dir() + "/state");
  EXPECT_NE(r.output.find("pass table inet hostlb: " + std::to_string(services) +
                          " bindings wanted, " + std::to_string(services) + " in the table"),
            std::string::npos)
      << r.output;
  established.send_all("after");
  established.shutdown_write();
  EXPECT_EQ(established.read_line(), "bytes=5");
  result("SIGKILL " + std::to_string(killed_after) + " ms into a 10,000-service apply",
         "1 established connection", "0",
         "next start restored " + std::to_string(services) + " services, table matching");
}

// Names and values with quotes, newlines, nft syntax, very long strings and
// bytes that are not UTF-8, through every parameter that reaches the kernel:
// each is refused with an error, the daemon stays up, the kernel unchanged.
TEST_F(ChaosTest, HostileControlInputIsRefusedAndNeverReachesTheKernel) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_vip());
  const std::string before = ruleset();
  const std::string routes_before = lab_.in("hv", "ip route; ip -6 route; ip neigh").output;
  const std::vector<std::string> hostile = {
      "web\"; flush ruleset; \"",
      "web\nadd table inet evil",
      "br0; nft flush ruleset",
      "$(reboot)",
      "`id`",
      "web' || true",
      "{ 1.2.3.4 }",
      "@targets4",
      std::string(100000, 'a'),
      "web\u0000null",
      "../../etc/passwd",
      "eth0 ",
      "",
  };
  ControlClient client(socket_path());
  int tried = 0, refused = 0;
  auto expect_refused = [&](const std::string& method, const nlohmann::json& params) {
    ++tried;
    const auto r = client.call(method, params);
    if (!r.ok) ++refused;
    EXPECT_FALSE(r.ok) << method << " " << params.dump().substr(0, 200);
  };
  for (const auto& bad : hostile) {
    expect_refused("backend.add",
                   {{"name", bad}, {"mac", kVm2.mac}, {"ipv4", kVm2.ipv4}, {"bridge", "br0"}});
    expect_refused("backend.add",
                   {{"name", "web-9"}, {"mac", kVm2.mac}, {"ipv4", kVm2.ipv4}, {"bridge", bad}});
    expect_refused("backend.add",
                   {{"name", "web-9"}, {"mac", bad}, {"ipv4", kVm2.ipv4}, {"bridge", "br0"}});
    expect_refused("backend.add",
                   {{"name", "web-9"}, {"mac", kVm2.mac}, {"ipv4", bad}, {"bridge", "br0"}});
    expect_refused("service.add", {{"service", bad}});
    expect_refused("service.attach",
                   {{"service", "203.0.113.10:80/tcp"}, {"backend", bad}, {"port", 80}});
    expect_refused("flush", {{"service", bad}});
  }
  // Not UTF-8, and not JSON at all, straight on the socket.
  for (const char* raw : {"\\xff\\xfe{\\x22jsonrpc\\x22}",
                          "{\\x22jsonrpc\\x22:\\x222.0\\x22,"
                          "\\x22id\\x22:1,\\x22method\\x22:"
                          "\\x22backend.del\\x22,\\x22params"
                          "\\x22:{\\x22name\\x22:\\x22\\xc3"
                          "\\x28\\x22}}"}) {
    ++tried;
    const auto r =
        sh("printf '" + std::string(raw) + "\\n' | socat -t 2 - UNIX-CONNECT:" + socket_path());
    if (r.output.find("\"error\"") != std::string::npos) ++refused;
    EXPECT_NE(r.output.find("\"error\""), std::string::npos) << r.output;
  }
  EXPECT_EQ(ruleset(), before);
  EXPECT_EQ(lab_.in("hv", "ip route; ip -6 route; ip neigh").output, routes_before);
  EXPECT_TRUE(served()) << "the daemon and the datapath are as they were";
  EXPECT_EQ(ctl("status").exit_code, 0);
  result("hostile control input (quotes, newlines, nft syntax, 100 kB strings, non-UTF-8)",
         std::to_string(tried) + " bad inputs tried",
         std::to_string(tried - refused) + " accepted; kernel unchanged",
         "no recovery needed (daemon stayed up)");
}

// hostlbd with only CAP_NET_ADMIN and CAP_CHOWN (what its unit grants):
// it starts, applies, serves and answers; its effective set is exactly those.
TEST_F(ChaosTest, TheUnitsTwoCapabilitiesAreEnough) {
  BackendServer vm1(lab_, "vm1", 8080);
  const std::string config = write_lab_file(lab_, "config.json", one_vip());
  const std::string pidfile = lab_.dir() + "/capped.pid";
  const auto started = lab_.in(
      "hv", "sh -c 'setpriv --bounding-set -all,+net_admin,+chown " + std::string(HOSTLBD_PATH) +
                " --daemon-config \"\" --services-dir \"\" --config " + config + " --state-dir " +
                lab_.dir() + "/state --socket " + socket_path() + " >" + lab_.dir() +
                "/capped.log 2>&1 & echo $! >" + pidfile + "'");
  ASSERT_EQ(started.exit_code, 0) << started.output;
  const auto ready = time_until([&] { return ctl("status").exit_code == 0; }, 5s);
  const std::string pid = sh("cat " + pidfile).output;
  ASSERT_TRUE(ready) << sh("cat " + lab_.dir() + "/capped.log").output;
  EXPECT_TRUE(served());
  EXPECT_EQ(ctl("service attach 203.0.113.10:80/tcp web-2:8080").exit_code, 0);
  const std::string caps =
      sh("grep CapEff /proc/" + pid.substr(0, pid.find('\n')) + "/status").output;
  // CAP_CHOWN is bit 0, CAP_NET_ADMIN bit 12.
  EXPECT_NE(caps.find("0000000000001001"), std::string::npos) << caps;
  sh("kill " + pid);
  result("hostlbd with only CAP_NET_ADMIN + CAP_CHOWN", "apply, a change, traffic", "0", "n/a");
}

}  // namespace
}  // namespace hostlb::lab
