// hostlbd following the fleet in a real etcd: writes reach the kernel, bad
// keys are left out alone, local changes are refused, and the daemon keeps
// serving through etcd outages, a compaction past its revision and a
// restart while etcd is down.
#include <nlohmann/json.hpp>
#include <regex>

#include "etcd_server.h"
#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;

class FleetEtcdTest : public LabTest {
 protected:
  FleetEtcdTest() : etcd_(lab_, "hv", 23790, 23800) {}

  void SetUp() override {
    etcd_.also_listen_on("127.0.0.2");
    ASSERT_TRUE(etcd_.start()) << etcd_.ctl("endpoint health").output;
    lab_.gateway("c1", kVip10, kVm1.mac);
    lab_.gateway("c1", kVip20, kVm1.mac);
  }

  // hostlbctl fleet, inside the namespace etcd listens in.
  CommandResult fleet(const std::string& args, const std::string& global = "") {
    return lab_.in("hv", std::string(HOSTLBCTL_PATH) + " " + global +
                             " fleet --daemon-config '' --etcd-endpoints " + etcd_.endpoint() +
                             " " + args);
  }
  // `fleet status` once it matches `pattern` (reports follow changes).
  std::string status_matching(const std::string& pattern) {
    std::string out;
    for (int i = 0; i < 100; ++i) {
      out = fleet("status").output;
      if (std::regex_search(out, std::regex(pattern))) return out;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "no match for " << pattern << " in:\n" << out;
    return out;
  }
  // Writes a document to the fleet; returns the revision it was written at.
  int64_t write(const std::string& doc) {
    const std::string file = write_lab_file(lab_, "fleet.json", doc);
    const auto r = fleet("apply -f " + file);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::smatch m;
    if (!std::regex_search(r.output, m, std::regex("written at revision ([0-9]+)"))) {
      ADD_FAILURE() << r.output;
      return 0;
    }
    return std::stoll(m[1]);
  }

  std::unique_ptr<Hostlbd> start_follower(std::string endpoint = "") {
    if (endpoint.empty()) endpoint = etcd_.endpoint();
    auto daemon = std::make_unique<Hostlbd>(
        lab_, std::vector<std::string>{"--etcd-endpoints", endpoint, "--state-dir",
                                       lab_.dir() + "/state", "--socket", socket_path(),
                                       "--log-level", "debug", "--host-name", "hv1"});
    EXPECT_TRUE(daemon->start()) << daemon->log();
    return daemon;
  }

  // Whether a new connection to `vip` reaches vm1 within `timeout`.
  bool served(const std::string& vip, std::chrono::milliseconds timeout = 8s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        TcpClient c(lab_, "c1", vip, 80, 500ms);
        if (c.read_line(1s).rfind("vm1", 0) == 0) return true;
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  // Whether new connections to `vip` stop being served within `timeout`.
  bool refused(const std::string& vip, std::chrono::milliseconds timeout = 8s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        TcpClient c(lab_, "c1", vip, 80, 500ms);
        (void)c.read_line(1s);
      } catch (const std::exception&) {
        return true;
      }
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  int64_t applied_revision() {
    const auto r = ctl("--json status");
    const auto status = nlohmann::json::parse(r.output, nullptr, false);
    if (status.is_discarded() || !status.contains("fleet") || status["fleet"].is_null()) return -1;
    return status["fleet"].value("applied_revision", int64_t{-1});
  }
  bool applied(int64_t revision, std::chrono::milliseconds timeout = 8s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (applied_revision() >= revision) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  const std::string kOne = document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})});
  const std::string kTwo = document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                                     service_json(kVip20, 80, "tcp", {{"web-1", 8080}})});
  EtcdServer etcd_;
};

TEST_F(FleetEtcdTest, WritesReachTheKernelBadKeysAreLeftOutAndLocalChangesAreRefused) {
  BackendServer vm1(lab_, "vm1", 8080);
  // The document is checked whole before anything is written.
  const auto bad = fleet("apply -f " + write_lab_file(lab_, "bad.json", R"({"version":1,
      "backends":[],"services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp",
      "backends":[{"name":"nobody","port":1}]}]})"));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("nothing was written"), std::string::npos) << bad.output;
  EXPECT_EQ(etcd_.ctl("get /hostlb/ --prefix --keys-only").output, "");

  const int64_t first = write(kOne);
  auto daemon = start_follower();
  ASSERT_TRUE(served(kVip10)) << daemon->log();
  EXPECT_TRUE(applied(first)) << daemon->log();

  // A dry run lists what it would write and writes nothing.
  const auto dry = fleet("apply --dry-run -f " + write_lab_file(lab_, "two.json", kTwo));
  EXPECT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("+ /hostlb/services/203.0.113.20:80/tcp"), std::string::npos)
      << dry.output;
  EXPECT_EQ(etcd_.ctl("get /hostlb/services/203.0.113.20:80/tcp").output, "");

  const int64_t second = write(kTwo);
  EXPECT_TRUE(served(kVip20)) << daemon->log();
  EXPECT_TRUE(applied(second));

  // A value written by hand that is not valid: reported, left out, the
  // rest of the fleet is served.
  const std::string bad_key = "/hostlb/services/203.0.113.30:80/tcp";
  ASSERT_EQ(
      etcd_
          .ctl(
              "put " + bad_key +
              R"( '{"vip":"203.0.113.30","port":80,"protocol":"tcp","backends":[{"name":"nobody","port":1}]}')")
          .exit_code,
      0);
  ASSERT_TRUE(daemon->wait_for_log("fleet key " + bad_key + " left out")) << daemon->log();
  EXPECT_TRUE(served(kVip10));
  EXPECT_TRUE(served(kVip20));
  const std::string status = status_matching("host +hv1 +[0-9]+ +yes +.* 1 ");
  EXPECT_NE(status.find("bad key " + bad_key + ": backends[0].name: unknown backend \"nobody\""),
            std::string::npos)
      << status;

  // Local changes would be undone by the fleet: refused.
  const auto local = ctl("apply -f " + write_lab_file(lab_, "local.json", kOne));
  EXPECT_EQ(local.exit_code, 1) << local.output;
  EXPECT_NE(local.output.find("follows the fleet in etcd"), std::string::npos) << local.output;
  EXPECT_TRUE(served(kVip20));

  // The document again: VIP 20 and the bad key go, in one transaction.
  const auto diff = fleet("diff -f " + write_lab_file(lab_, "one.json", kOne));
  EXPECT_NE(diff.output.find("- /hostlb/services/203.0.113.20:80/tcp"), std::string::npos)
      << diff.output;
  EXPECT_NE(diff.output.find("- " + bad_key), std::string::npos) << diff.output;
  const auto one = fleet("apply -f " + write_lab_file(lab_, "one.json", kOne));
  // One transaction: one revision for both deletes.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(one.output, m,
                                std::regex("written at revision ([0-9]+): 0 keys put, 2 deleted")))
      << one.output;
  const int64_t third = std::stoll(m[1]);
  EXPECT_TRUE(refused(kVip20)) << daemon->log();
  EXPECT_TRUE(served(kVip10));
  ASSERT_TRUE(applied(third));
  status_matching("host +hv1 +[0-9]+ +yes +[0-9]+s ago +0 ");
  const auto json_status = fleet("status", "--json");
  const auto doc = nlohmann::json::parse(json_status.output, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << json_status.output;
  EXPECT_GE(doc["revision"].get<int64_t>(), third);  // and the report written since
  EXPECT_TRUE(doc["bad_keys"].empty());
  ASSERT_EQ(doc["machines"].size(), 1u) << json_status.output;
  EXPECT_EQ(doc["machines"][0]["name"], "hv1");
  EXPECT_EQ(doc["machines"][0]["revision"], third);
  EXPECT_EQ(doc["machines"][0]["converged"], true);
  // Its report carries its figures: the connections made above, the
  // bindings none of which is down.
  const auto& figures = doc["machines"][0]["figures"];
  EXPECT_GT(figures["connections"]["opened"].get<int>(), 0) << json_status.output;
  EXPECT_EQ(figures["bindings"], 1) << json_status.output;
  EXPECT_TRUE(figures["down"].empty()) << json_status.output;
  EXPECT_EQ(daemon->stop(SIGTERM), 0);
}

TEST_F(FleetEtcdTest, FilesAndEtcdAreNotMixedOnOneMachine) {
  Hostlbd daemon(lab_, {"--etcd-endpoints", etcd_.endpoint(), "--config",
                        write_lab_file(lab_, "config.json", kOne), "--state-dir",
                        lab_.dir() + "/state", "--socket", socket_path()});
  const auto r = daemon.run_to_exit();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("are not mixed on one machine"), std::string::npos) << r.output;
  EXPECT_EQ(etcd_.ctl("get /hostlb/ --prefix --keys-only").output, "");
}

TEST_F(FleetEtcdTest, ServesThroughAnOutageACompactionAndARestartWithoutEtcd) {
  BackendServer vm1(lab_, "vm1", 8080);
  write(kOne);
  // The daemon reaches etcd at 127.0.0.2, the writers at 127.0.0.1: an
  // outage for the daemon alone is a cut of the one address.
  auto daemon = start_follower(etcd_.endpoint("127.0.0.2"));
  ASSERT_TRUE(served(kVip10)) << daemon->log();
  TcpClient established(lab_, "c1", kVip10, 80);
  ASSERT_EQ(established.read_line().rfind("vm1", 0), 0u);

  // etcd out of reach for 30 s while the fleet changes: the kernel serves
  // on, the outage is logged once, the change waits.
  const std::string cut =
      write_lab_file(lab_, "cut.nft",
                     "table inet etcd_cut {\n"
                     "  chain out {\n"
                     "    type filter hook output priority 0;\n"
                     "    ip daddr 127.0.0.2 tcp dport 23790 reject with tcp reset\n"
                     "    ip saddr 127.0.0.2 tcp sport 23790 drop\n"
                     "  }\n"
                     "}\n");
  ASSERT_EQ(lab_.in("hv", "nft -f " + cut).exit_code, 0);
  const int64_t before = applied_revision();
  int64_t second = 0;
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(5s);
    if (i == 0) second = write(kTwo);
    established.send_all("still here\n");
    EXPECT_TRUE(served(kVip10, 2s)) << "after " << (i + 1) * 5 << " s";
  }
  EXPECT_EQ(applied_revision(), before);
  EXPECT_TRUE(refused(kVip20, 1s));
  EXPECT_TRUE(daemon->wait_for_log("serving what revision", 1, 1s)) << daemon->log();
  EXPECT_FALSE(daemon->wait_for_log("serving what revision", 2, 100ms)) << daemon->log();
  // Back: it catches up with what was written meanwhile.
  ASSERT_EQ(lab_.in("hv", "nft delete table inet etcd_cut").exit_code, 0);
  ASSERT_TRUE(daemon->wait_for_log("etcd answers again", 1, 15s)) << daemon->log();
  EXPECT_TRUE(served(kVip20)) << daemon->log();
  EXPECT_TRUE(applied(second));

  // History compacted past the daemon's revision while it was not looking:
  // it reads the whole fleet again.
  daemon->signal(SIGSTOP);
  etcd_.stop();  // its watch is gone when it wakes up
  ASSERT_TRUE(etcd_.start());
  const int64_t third = write(kOne);
  ASSERT_EQ(etcd_.ctl("compact " + std::to_string(third)).exit_code, 0);
  daemon->signal(SIGCONT);
  ASSERT_TRUE(daemon->wait_for_log("etcd compacted its history past revision", 1, 20s))
      << daemon->log();
  EXPECT_TRUE(refused(kVip20)) << daemon->log();
  EXPECT_TRUE(applied(third));

  // A restart while etcd is down serves what was persisted, then catches up.
  EXPECT_EQ(daemon->stop(SIGTERM), 0);
  etcd_.stop();
  daemon = start_follower();
  EXPECT_TRUE(served(kVip10)) << daemon->log();
  EXPECT_TRUE(refused(kVip20, 2s));
  EXPECT_TRUE(daemon->wait_for_log("serving what revision", 1, 5s)) << daemon->log();
  ASSERT_TRUE(etcd_.start());
  const int64_t fourth = write(kTwo);
  EXPECT_TRUE(served(kVip20)) << daemon->log();
  EXPECT_TRUE(applied(fourth));

  established.shutdown_write();
  EXPECT_EQ(established.read_line(), "bytes=" + std::to_string(6 * 11));
  EXPECT_EQ(daemon->stop(SIGTERM), 0);
}

TEST_F(FleetEtcdTest, TenThousandServicesFromAnEmptyFleet) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_follower();
  std::string services;
  for (int i = 0; i < 10000; ++i) {
    const std::string vip =
        i == 0 ? kVip10 : "100.64." + std::to_string(i / 250) + "." + std::to_string(1 + i % 250);
    services += (services.empty() ? "" : ",") + service_json(vip, 80, "tcp", {{"web-1", 8080}});
  }
  const auto started = std::chrono::steady_clock::now();
  const int64_t revision = write(R"({"version":1,"backends":[)" + backend_json(kVm1, "web-1") +
                                 R"(],"services":[)" + services + "]}");
  ASSERT_GT(revision, 0);
  ASSERT_TRUE(applied(revision, 60s)) << daemon->log();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  std::printf("10,000 services: written and in the kernel in %lld ms\n",
              static_cast<long long>(took.count()));
  const auto status = nlohmann::json::parse(ctl("--json status").output);
  EXPECT_EQ(status["services"], 10000);
  EXPECT_TRUE(served(kVip10));
  EXPECT_NE(lab_.in("hv", "nft list ruleset").output.find("100.64.39.250"), std::string::npos);
  EXPECT_EQ(daemon->stop(SIGTERM), 0);
}

TEST_F(FleetEtcdTest, AThreeMemberClusterLosingTheMemberTheDaemonUses) {
  etcd_.stop();
  const std::string cluster =
      "m1=http://127.0.0.1:23810,m2=http://127.0.0.1:23811,"
      "m3=http://127.0.0.1:23812";
  std::vector<std::unique_ptr<EtcdServer>> members;
  for (int i = 0; i < 3; ++i)
    members.push_back(std::make_unique<EtcdServer>(lab_, "hv", 23794 + i, 23810 + i,
                                                   "m" + std::to_string(i + 1), cluster));
  for (auto& m : members) ASSERT_TRUE(m->start(false));
  for (auto& m : members)
    ASSERT_TRUE(m->wait_healthy()) << sh("grep -v info " + lab_.dir() + "/etcd-m*.log").output;
  const std::string all =
      members[0]->endpoint() + "," + members[1]->endpoint() + "," + members[2]->endpoint();
  auto fleet_at = [&](const std::string& endpoints, const std::string& doc) {
    const auto r =
        lab_.in("hv", std::string(HOSTLBCTL_PATH) + " fleet --daemon-config '' --etcd-endpoints " +
                          endpoints + " apply -f " + write_lab_file(lab_, "fleet.json", doc));
    std::smatch m;
    EXPECT_TRUE(std::regex_search(r.output, m, std::regex("written at revision ([0-9]+)")))
        << r.output;
    return m.empty() ? int64_t{0} : std::stoll(m[1]);
  };
  BackendServer vm1(lab_, "vm1", 8080);
  fleet_at(all, kOne);
  auto daemon = std::make_unique<Hostlbd>(
      lab_, std::vector<std::string>{"--etcd-endpoints", all, "--state-dir", lab_.dir() + "/state",
                                     "--socket", socket_path(), "--log-level", "debug",
                                     "--host-name", "hv1"});
  ASSERT_TRUE(daemon->start()) << daemon->log();
  ASSERT_TRUE(served(kVip10)) << daemon->log();

  // The member it talks to dies; it goes on with the next one.
  const std::string used =
      nlohmann::json::parse(ctl("--json status").output)["fleet"]["endpoint"].get<std::string>();
  size_t dead = 0;
  while (members[dead]->endpoint() != used) ++dead;
  members[dead]->stop(SIGKILL);
  std::string others;
  for (size_t i = 0; i < 3; ++i)
    if (i != dead) others += (others.empty() ? "" : ",") + members[i]->endpoint();
  const int64_t revision = fleet_at(others, kTwo);
  EXPECT_TRUE(served(kVip20)) << daemon->log();
  EXPECT_TRUE(applied(revision)) << daemon->log();
  const std::string now_used =
      nlohmann::json::parse(ctl("--json status").output)["fleet"]["endpoint"].get<std::string>();
  EXPECT_NE(now_used, used);
  EXPECT_EQ(daemon->stop(SIGTERM), 0);
}

// A CA, etcd's certificate for 127.0.0.1 and a client's, in `dir`.
void make_certificates(const std::string& dir) {
  const std::string script = R"(set -e
cd "$1"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=hostlb-test-ca \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout "$who-key.pem" -out "$who.csr" \
    2>/dev/null
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 \
    -extfile "$who.ext" -out "$who.pem" 2>/dev/null
done
)";
  std::FILE* f = std::fopen((dir + "/make.sh").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(script.c_str(), f);
  std::fclose(f);
  const auto r = sh("sh " + dir + "/make.sh " + dir + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

TEST(FleetEtcdTls, FollowsAnEtcdThatWantsClientCertificates) {
  Lab lab;
  const std::string certs = lab.dir() + "/certs";
  ASSERT_EQ(sh("mkdir -p " + certs).exit_code, 0);
  make_certificates(certs);
  EtcdServer etcd(lab, "hv", 23797, 23807, "t1");
  etcd.use_tls(certs);
  ASSERT_TRUE(etcd.start()) << etcd.ctl("endpoint health").output;
  lab.gateway("c1", kVip10, kVm1.mac);
  BackendServer vm1(lab, "vm1", 8080);
  const std::string tls = " --etcd-ca-file " + certs + "/ca.pem --etcd-cert-file " + certs +
                          "/client.pem --etcd-key-file " + certs + "/client-key.pem";
  const std::string doc = write_lab_file(
      lab, "fleet.json", document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  auto fleet = [&](const std::string& options) {
    return lab.in("hv", std::string(HOSTLBCTL_PATH) +
                            " fleet --daemon-config '' --etcd-endpoints " + etcd.endpoint() +
                            options + " apply -f " + doc + " 2>&1");
  };
  // Without a client certificate etcd does not talk: unreachable, exit 3.
  const auto refused = fleet(" --etcd-ca-file " + certs + "/ca.pem");
  EXPECT_EQ(refused.exit_code, 3) << refused.output;
  const auto written = fleet(tls);
  ASSERT_EQ(written.exit_code, 0) << written.output;
  Hostlbd daemon(lab, {"--etcd-endpoints", etcd.endpoint(), "--etcd-ca-file", certs + "/ca.pem",
                       "--etcd-cert-file", certs + "/client.pem", "--etcd-key-file",
                       certs + "/client-key.pem", "--state-dir", lab.dir() + "/state", "--socket",
                       lab.dir() + "/hostlbd.sock", "--host-name", "hv1"});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  bool served = false;
  for (int i = 0; i < 80 && !served; ++i) {
    try {
      TcpClient c(lab, "c1", kVip10, 80, 500ms);
      served = c.read_line(1s).rfind("vm1", 0) == 0;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(100ms);
    }
  }
  EXPECT_TRUE(served) << daemon.log();
  EXPECT_NE(etcd.ctl("get /hostlb/status/host/hv1").output.find("\"revision\""), std::string::npos);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace hostlb::lab

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;

// The fleet lab (two gateways behind an ECMP router, two hypervisors with
// two VMs each), every daemon following one etcd in the router's namespace
// over a management link of its own.
class FleetEtcdLab : public ::testing::Test {
 protected:
  static constexpr const char* kRoles[] = {"gw1", "gw2", "hv1", "hv2"};

  FleetEtcdLab() : lab_(Lab::Topology::kFleet), etcd_(lab_, "rt", 23790, 23800) {}

  void SetUp() override {
    int k = 1;
    for (const std::string role : kRoles) {
      const std::string net = "10.250." + std::to_string(k++) + ".";
      for (const std::string& cmd :
           {"ip link add m-" + role + " netns " + lab_.ns("rt") +
                " type veth peer name mgmt0 netns " + lab_.ns(role),
            "ip -n " + lab_.ns("rt") + " addr add " + net + "1/30 dev m-" + role,
            "ip -n " + lab_.ns("rt") + " link set m-" + role + " up",
            "ip -n " + lab_.ns(role) + " addr add " + net + "2/30 dev mgmt0",
            "ip -n " + lab_.ns(role) + " link set mgmt0 up"})
        ASSERT_EQ(sh(cmd).exit_code, 0) << cmd;
      endpoints_[role] = "http://" + net + "1:23790";
    }
    // The hosts' health probes leave from an address on their bridge.
    for (const std::string hv : {"hv1", "hv2"})
      ASSERT_EQ(lab_.in(hv, "ip addr add " + probe_source(hv) + "/32 dev br0").exit_code, 0);
    etcd_.listen_on_every_address();
    ASSERT_TRUE(etcd_.start()) << etcd_.ctl("endpoint health").output;
  }

  static std::string probe_source(const std::string& hv) {
    return hv == "hv1" ? "198.18.10.251" : "198.18.10.252";
  }

  std::unique_ptr<Hostlbd> start_daemon(const std::string& role) {
    std::vector<std::string> args = {"--etcd-endpoints", endpoints_[role],
                                     "--socket",         lab_.dir() + "/" + role + ".sock",
                                     "--state-dir",      lab_.dir() + "/" + role,
                                     "--host-name",      role,
                                     "--log-level",      "debug"};
    if (role.starts_with("gw"))
      args.insert(args.end(), {"--role", "gateway", "--client-interface", "cli0",
                               "--fabric-interface", "fab0", "--drain-warmup", "30"});
    else
      args.insert(args.end(), {"--health-source-ipv4", probe_source(role)});
    auto daemon = std::make_unique<Hostlbd>(lab_, args, role);
    EXPECT_TRUE(daemon->start()) << role << ": " << daemon->log();
    return daemon;
  }

  CommandResult fleet(const std::string& args, const std::string& global = "") {
    return lab_.in("rt", std::string(HOSTLBCTL_PATH) + " " + global +
                             " fleet --daemon-config '' --etcd-endpoints " + etcd_.endpoint() +
                             " " + args);
  }
  int64_t write(const std::string& doc) {
    const auto r = fleet("apply -f " + write_lab_file(lab_, "fleet.json", doc));
    std::smatch m;
    if (r.exit_code != 0 ||
        !std::regex_search(r.output, m, std::regex("written at revision ([0-9]+)"))) {
      ADD_FAILURE() << r.output;
      return 0;
    }
    return std::stoll(m[1]);
  }
  // Every machine reports the fleet as it is now.
  bool converged(size_t machines, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto doc = nlohmann::json::parse(fleet("status", "--json").output, nullptr, false);
      size_t n = 0;
      if (!doc.is_discarded())
        for (const auto& m : doc["machines"]) n += m.value("converged", false) ? 1 : 0;
      if (n == machines) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  nlohmann::json ctl(const std::string& role, const std::string& args) {
    const auto r = sh(std::string(HOSTLBCTL_PATH) + " --json --socket " + lab_.dir() + "/" + role +
                      ".sock " + args);
    return nlohmann::json::parse(r.output, nullptr, false);
  }
  size_t rows_of(const std::string& gw, const std::string& service, const std::string& backend) {
    const auto table = ctl(gw, "gateway table " + service);
    if (table.is_discarded()) return 0;
    for (const auto& b : table["backends"])
      if (b["name"] == backend) return b["rows"].get<size_t>();
    return 0;
  }
  // The backends new connections from the client's eight addresses reach.
  std::map<std::string, int> reached(const std::string& vip, int count) {
    std::map<std::string, int> out;
    for (int i = 0; i < count; ++i) {
      try {
        TcpClient c(lab_, "cl", vip, 80, 1s, "198.18.20." + std::to_string(1 + i % 8),
                    43000 + (port_++ % 20000));
        const std::string banner = c.read_line(1s);
        ++out[banner.substr(0, banner.find(' '))];
      } catch (const std::exception&) {
        ++out["(failed)"];
      }
    }
    return out;
  }

  static std::string fleet_document(const std::string& services) {
    return R"({"version":1,"backends":[
      {"name":"vm1","mac":"02:00:00:00:0a:11","ipv4":"198.18.10.11","bridge":"br0","host":"hv1"},
      {"name":"vm2","mac":"02:00:00:00:0a:12","ipv4":"198.18.10.12","bridge":"br0","host":"hv1"},
      {"name":"vm3","mac":"02:00:00:00:0a:13","ipv4":"198.18.10.13","bridge":"br0","host":"hv2"},
      {"name":"vm4","mac":"02:00:00:00:0a:14","ipv4":"198.18.10.14","bridge":"br0","host":"hv2"}],
      "services":[)" +
           services + "]}";
  }
  static constexpr const char* kWeb = R"({"vip":"203.0.113.10","port":80,"protocol":"tcp",
      "rows":1021,"backends":[{"name":"vm1","port":8080},{"name":"vm3","port":8080}],
      "health":{"interval":0.5,"timeout":0.4,"rise":2,"fall":2}})";
  static constexpr const char* kApi = R"({"vip":"203.0.113.20","port":80,"protocol":"tcp",
      "rows":1021,"backends":[{"name":"vm2","port":8080},{"name":"vm4","port":8080}]})";

  Lab lab_;
  EtcdServer etcd_;
  std::map<std::string, std::string> endpoints_;
  int port_ = 0;
};

TEST_F(FleetEtcdLab, OneWriteReachesEveryKernelAndHostsHealthSteersTheGateways) {
  auto vm1 = std::make_unique<BackendServer>(lab_, "vm1", 8080);
  auto vm2 = std::make_unique<BackendServer>(lab_, "vm2", 8080);
  auto vm3 = std::make_unique<BackendServer>(lab_, "vm3", 8080);
  auto vm4 = std::make_unique<BackendServer>(lab_, "vm4", 8080);
  write(fleet_document(kWeb));
  std::map<std::string, std::unique_ptr<Hostlbd>> daemons;
  for (const std::string role : kRoles) daemons[role] = start_daemon(role);
  ASSERT_TRUE(converged(4)) << fleet("status").output;
  // Checked bindings serve once their check says so.
  for (const std::string hv : {"hv1", "hv2"}) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (ctl(hv, "status")["health"]["up"] != 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
    ASSERT_EQ(ctl(hv, "status")["health"]["up"], 1) << daemons[hv]->log();
  }
  auto web = reached("203.0.113.10", 32);
  EXPECT_GT(web["vm1"], 0) << web.size();
  EXPECT_GT(web["vm3"], 0);
  EXPECT_EQ(web["(failed)"], 0);

  // One write: every host's and gateway's kernel has the new service.
  const int64_t revision = write(fleet_document(std::string(kWeb) + "," + kApi));
  ASSERT_TRUE(converged(4)) << fleet("status").output;
  for (const std::string role : kRoles)
    EXPECT_GE(ctl(role, "status")["fleet"]["applied_revision"].get<int64_t>(), revision) << role;
  auto api = reached("203.0.113.20", 32);
  EXPECT_GT(api["vm2"], 0);
  EXPECT_GT(api["vm4"], 0);
  EXPECT_EQ(api["(failed)"], 0);
  EXPECT_EQ(ctl("gw1", "gateway digest"), ctl("gw2", "gateway digest"));

  // vm3's listener stops: hv2's check finds it down (2 probes of 0.5 s),
  // its report says so, and both gateways move vm3's rows to vm1.
  ASSERT_GT(rows_of("gw1", "203.0.113.10:80/tcp", "vm3"), 0u);
  const auto stopped = std::chrono::steady_clock::now();
  vm3.reset();
  auto out_of_choice = [&](bool out, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if ((rows_of("gw1", "203.0.113.10:80/tcp", "vm3") == 0) == out &&
          (rows_of("gw2", "203.0.113.10:80/tcp", "vm3") == 0) == out)
        return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  };
  ASSERT_TRUE(out_of_choice(true)) << etcd_.ctl("get --prefix /hostlb/status/").output;
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - stopped);
  // Detection: fall x interval + timeout = 1.4 s at most; propagation
  // through etcd: a report and a watch event.
  EXPECT_LT(took, 3s) << took.count() << " ms";
  std::printf("vm3 out of both gateways' choice %lld ms after its listener stopped\n",
              static_cast<long long>(took.count()));
  web = reached("203.0.113.10", 32);
  EXPECT_EQ(web["vm1"], 32) << "every new flow goes to vm1";
  EXPECT_EQ(ctl("gw1", "gateway digest"), ctl("gw2", "gateway digest"));

  // Back: its rows come back to it.
  vm3 = std::make_unique<BackendServer>(lab_, "vm3", 8080);
  ASSERT_TRUE(out_of_choice(false)) << daemons["hv2"]->log();
  web = reached("203.0.113.10", 32);
  EXPECT_GT(web["vm3"], 0);
  EXPECT_EQ(web["(failed)"], 0);

  // hv2 dies: when its lease expires, the gateways count its backends out.
  daemons["hv2"]->stop(SIGKILL);
  ASSERT_TRUE(out_of_choice(true, 25s)) << "after hv2's lease (10 s) expired";
  const auto status = fleet("status");
  EXPECT_TRUE(std::regex_search(status.output, std::regex("host +hv2 .*expired"))) << status.output;
}

}  // namespace
}  // namespace hostlb::lab
