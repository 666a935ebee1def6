// The files provisioning tools write: hostlbd.conf settings and services.d
// fragments, applied at start and on SIGHUP, with errors that name the file.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;
using ConfigTest = LabTest;

std::string fragment(const std::vector<std::string>& backends,
                     const std::vector<std::string>& services) {
  auto join = [](const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) out += (out.empty() ? "" : ",") + i;
    return out;
  };
  return R"({"version":1,"backends":[)" + join(backends) + R"(],"services":[)" + join(services) +
         "]}";
}

TEST_F(ConfigTest, SettingsFileAndServicesDirAreAppliedAndReloaded) {
  BackendServer vm1(lab_, "vm1", 8080);
  lab_.gateway("c1", kVip10, kVm1.mac);
  lab_.gateway("c1", kVip20, kVm1.mac);
  const std::string dir = lab_.dir() + "/services.d";
  std::filesystem::create_directories(dir);
  write_lab_file(lab_, "services.d/00-backends.json", fragment({backend_json(kVm1, "web-1")}, {}));
  write_lab_file(lab_, "services.d/10-web.json",
                 fragment({}, {service_json(kVip10, 80, "tcp", {{"web-1", 8080}})}));
  write_lab_file(lab_, "services.d/README", "not a fragment: ignored");
  const std::string conf =
      write_lab_file(lab_, "hostlbd.conf",
                     "# as a package would install it, with the lab's paths\n"
                     "socket = " +
                         socket_path() + "\nstate_dir = " + lab_.dir() + "/state\n" +
                         "services_dir = " + dir + "\nlog_level = debug\n");
  Hostlbd daemon(lab_, {"--daemon-config", conf});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  EXPECT_NE(daemon.log().find("00-backends.json, " + dir + "/10-web.json"), std::string::npos)
      << daemon.log();
  {
    TcpClient c(lab_, "c1", kVip10, 80);
    EXPECT_EQ(c.read_line().rfind("vm1", 0), 0u);
  }

  // A provisioning tool drops another fragment and reloads.
  write_lab_file(lab_, "services.d/20-api.json",
                 fragment({}, {service_json(kVip20, 80, "tcp", {{"web-1", 8080}})}));
  daemon.signal(SIGHUP);
  ASSERT_TRUE(daemon.wait_for_log("reloaded")) << daemon.log();
  {
    TcpClient c(lab_, "c1", kVip20, 80);
    EXPECT_EQ(c.read_line().rfind("vm1", 0), 0u);
  }

  // A conflicting fragment: refused, naming both files; nothing changes.
  write_lab_file(lab_, "services.d/30-dup.json",
                 fragment({}, {service_json(kVip20, 80, "tcp", {{"web-1", 9090}})}));
  const std::string before = ruleset();
  daemon.signal(SIGHUP);
  ASSERT_TRUE(daemon.wait_for_log("reload refused")) << daemon.log();
  EXPECT_NE(daemon.log().find("30-dup.json: services[0]: duplicate service "
                              "203.0.113.20:80/tcp (also " +
                              dir + "/20-api.json: services[0])"),
            std::string::npos)
      << daemon.log();
  EXPECT_EQ(ruleset(), before);
  auto r = ctl("--json status");
  EXPECT_NE(r.output.find("30-dup.json"), std::string::npos) << r.output;
  {
    TcpClient c(lab_, "c1", kVip20, 80);
    EXPECT_EQ(c.read_line().rfind("vm1", 0), 0u);
  }
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST_F(ConfigTest, ABadSettingIsRefusedNamingItsLine) {
  const std::string conf =
      write_lab_file(lab_, "hostlbd.conf", "state_dir = " + lab_.dir() + "/state\nrefuse = 1\n");
  Hostlbd daemon(lab_, {"--daemon-config", conf, "--services-dir", ""});
  const auto r = daemon.run_to_exit();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("hostlbd.conf: line 2: refuse: is not a known setting"),
            std::string::npos)
      << r.output;
}

TEST_F(ConfigTest, UnderSystemdLinesCarryTheirPriorityAndNoTimestamp) {
  const std::string conf = write_lab_file(lab_, "hostlbd.conf", "refuse = 1\n");
  const auto r = sh("JOURNAL_STREAM=8:1234 " + std::string(HOSTLBD_PATH) + " --daemon-config " +
                    conf + " --services-dir '' 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output.rfind("<3>" + conf + ": line 1: refuse: is not a known setting", 0), 0u)
      << r.output;
}

TEST_F(ConfigTest, FlagsWinOverTheSettingsFile) {
  const std::string conf = write_lab_file(
      lab_, "hostlbd.conf", "socket = /nonexistent/dir/s.sock\nstate_dir = /nonexistent/state\n");
  const std::string doc = write_lab_file(lab_, "config.json", document({}));
  Hostlbd daemon(lab_, {"--daemon-config", conf, "--services-dir", "", "--socket", socket_path(),
                        "--state-dir", lab_.dir() + "/state", "--config", doc});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  EXPECT_EQ(ctl("status").exit_code, 0);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace hostlb::lab

namespace hostlb::lab {
namespace {

using DoctorTest = LabTest;

TEST_F(DoctorTest, ChecksTheHostAgainstTheDesiredStateWithAndWithoutTheDaemon) {
  BackendServer vm1(lab_, "vm1", 8080);
  lab_.gateway("c1", kVip10, kVm1.mac);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                                        service_json(kVip20, 80, "tcp", {{"web-2", 8080}})}));
  {
    TcpClient c(lab_, "c1", kVip10, 80);  // br0 learns vm1's MAC
    ASSERT_EQ(c.read_line().rfind("vm1", 0), 0u);
  }
  const std::string ctl_path = std::string(HOSTLBCTL_PATH) + " --socket " + socket_path();
  const std::string doctor_args = " doctor --state-dir " + lab_.dir() + "/state";
  const std::string doctor = ctl_path + doctor_args;
  auto r = lab_.in("hv", doctor);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* line :
       {"pass nf_tables: available", "pass sysctl net.bridge.bridge-nf-call-iptables: = 1",
        "pass bridge br0: up", "pass backend web-1 MAC: 02:00:00:00:01:11 learnt on a port of br0",
        "pass backend web-1 route: 198.18.1.11 dev br0",
        "pass backend web-1 neighbour: 198.18.1.11 dev br0 lladdr 02:00:00:00:01:11",
        "pass table inet hostlb: 2 bindings wanted, 2 in the table (desired state from hostlbd)",
        "pass daemon: hostlbd "})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;

  // Someone removes a route: a failure with its fix, exit 1.
  lab_.in("hv", "ip route del 198.18.1.11 dev br0 proto 213");
  r = lab_.in("hv", doctor);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("fail backend web-1 route: 198.18.1.11 dev br0 missing\n     fix: "),
            std::string::npos)
      << r.output;

  // Without the daemon: the snapshot is the desired state.
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  r = lab_.in("hv", ctl_path + " --json" + doctor_args);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const auto findings = nlohmann::json::parse(r.output);
  bool daemon_failed = false, table_checked = false;
  for (const auto& f : findings) {
    if (f["check"] == "daemon") daemon_failed = f["level"] == "fail";
    if (f["check"] == "table inet hostlb")
      table_checked = f["level"] == "pass" &&
                      f["detail"].get<std::string>().find("snapshot") != std::string::npos;
  }
  EXPECT_TRUE(daemon_failed) << r.output;
  EXPECT_TRUE(table_checked) << r.output;
}

}  // namespace
}  // namespace hostlb::lab
