// hostlbctl against a live hostlbd on the real kernel: every command, with
// traffic proving what the kernel does after it.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "lab_fixture.h"

namespace hostlb::lab {
namespace {

using namespace std::chrono_literals;
using ControlTest = LabTest;

const std::string kVip30 = "203.0.113.30";

std::string one_service() {
  return document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                   service_json(kVip20, 80, "tcp", {{"web-1", 8080}})});
}

TEST_F(ControlTest, EveryCommandAgainstALiveDaemon) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm2(lab_, "vm2", 8080);
  // Start with web-1 only; web-2 comes through hostlbctl.
  auto daemon = start_hostlbd(R"({"version":1,"backends":[)" + backend_json(kVm1, "web-1") +
                              R"(],"services":[)" +
                              service_json(kVip10, 80, "tcp", {{"web-1", 8080}}) + "]}");
  lab_.gateway("c1", kVip30, kVm1.mac);
  lab_.gateway("c2", kVip30, kVm2.mac);

  auto r = ctl("backend add web-2 --mac 02:00:00:00:01:12 --ipv4 198.18.1.12 --bridge br0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "+ backend web-2 mac 02:00:00:00:01:12 ipv4 198.18.1.12 bridge br0\n");
  r = ctl("service add 203.0.113.30:80/tcp --backend web-2:8080");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output,
            "+ service 203.0.113.30:80/tcp\n+ binding 203.0.113.30:80/tcp -> web-2:8080\n");
  {
    TcpClient to2(lab_, "c2", kVip30, 80);
    EXPECT_EQ(to2.read_line(), "vm2 local=198.18.1.12:8080 peer=" + to2.local());
  }
  r = ctl("service attach 203.0.113.30:80/tcp web-1:8080");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    TcpClient to1(lab_, "c1", kVip30, 80);
    EXPECT_EQ(to1.read_line(), "vm1 local=198.18.1.11:8080 peer=" + to1.local());
  }
  r = ctl("service list");
  EXPECT_EQ(r.output,
            "SERVICE              BACKENDS\n"
            "203.0.113.10:80/tcp  web-1:8080\n"
            "203.0.113.30:80/tcp  web-2:8080,web-1:8080\n");
  r = ctl("backend list");
  EXPECT_NE(r.output.find("web-2  02:00:00:00:01:12  198.18.1.12  -               br0     "
                          "203.0.113.30:80/tcp:8080"),
            std::string::npos)
      << r.output;
  r = ctl("--json service list");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(r.output)[1]["backends"][1]["name"], "web-1");

  r = ctl("service detach 203.0.113.30:80/tcp web-2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THROW(TcpClient(lab_, "c2", kVip30, 80, 1000ms), std::runtime_error)
      << "web-2 was detached";
  r = ctl("backend del web-2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(lab_.in("hv", "ip route show proto 213").output.find("198.18.1.12"), std::string::npos);
  r = ctl("service del 203.0.113.30:80/tcp");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ruleset().find("203.0.113.30 . tcp . 80 :"), std::string::npos)
      << "in no map any more (only refused for a while)";

  r = ctl("get");
  ASSERT_EQ(r.exit_code, 0);
  const auto doc = nlohmann::json::parse(r.output);
  EXPECT_EQ(doc["backends"].size(), 1u);
  EXPECT_EQ(doc["services"].size(), 1u);
  r = ctl("status");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("backends 1, services 1, bindings 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ok   sysctl net.ipv4.conf.br0.forwarding: 1"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("last error: none"), std::string::npos) << r.output;
}

TEST_F(ControlTest, ExitCodesAndBadInputLeaveTheDaemonAndKernelAsTheyWere) {
  auto daemon = start_hostlbd(one_service());
  const std::string before = ruleset();
  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  for (const Case& c : {
           Case{"backend add x --mac 02:00:00:00:01:zz --ipv4 198.18.1.99", 1,
                "backend.add: params.mac: \"02:00:00:00:01:zz\" is not a MAC address"},
           Case{"backend add 'a\"; flush ruleset' --mac 02:00:00:00:01:20 --ipv4 198.18.1.99", 1,
                "is not a valid name"},
           Case{"backend add web-1 --mac 02:00:00:00:01:20 --ipv4 198.18.1.99 --bridge br0", 1,
                "backend \"web-1\" already exists"},
           Case{"backend add x --mac 02:00:00:00:01:20 --ipv4 198.18.1.99 --bridge nosuchbr", 1,
                "bridge nosuchbr does not exist on this host"},
           Case{"service add 203.0.113.10:80/tcp", 1, "service 203.0.113.10:80/tcp already exists"},
           Case{"service add 203.0.113.10:0/tcp", 1, "port must be between 1 and 65535"},
           Case{"service add 203.0.113.40:80/sctp", 1, "protocol must be tcp or udp"},
           Case{"service attach 203.0.113.10:80/tcp web-9:80", 1, "no backend \"web-9\""},
           Case{"service attach 203.0.113.10:80/tcp web-1:70000", 1, "70000 is not a port"},
           Case{"service detach 203.0.113.99:80/tcp web-1", 1, "no service 203.0.113.99:80/tcp"},
           Case{"backend del nobody", 1, "no backend \"nobody\""},
           Case{"apply -f /dev/null", 1, "invalid JSON"},
           Case{"service attach 203.0.113.10:80/tcp web-1", 2, "expected NAME:PORT"},
           Case{"backend add", 2, "name is required"},
           Case{"frobnicate", 2, ""},
       }) {
    const auto r = ctl(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  const auto unreachable = sh(std::string(HOSTLBCTL_PATH) + " --socket /nonexistent/x.sock status");
  EXPECT_EQ(unreachable.exit_code, 3) << unreachable.output;
  EXPECT_NE(unreachable.output.find("cannot reach hostlbd at /nonexistent/x.sock"),
            std::string::npos);
  EXPECT_EQ(ruleset(), before) << "no refused command changed the kernel";
  EXPECT_EQ(ctl("status").exit_code, 0) << "the daemon is still up";
}

TEST_F(ControlTest, ApplyIsIdempotentAndDryRunChangesNothing) {
  auto daemon = start_hostlbd(one_service());
  const std::string file =
      write_lab_file(lab_, "next.json",
                     document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}, {"web-2", 8080}}),
                               service_json(kVip30, 80, "tcp", {{"web-2", 8080}})}));
  const std::string before = ruleset();
  auto r = ctl("apply --dry-run -f " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output,
            "- service 203.0.113.20:80/tcp\n"
            "+ service 203.0.113.30:80/tcp\n"
            "- binding 203.0.113.20:80/tcp -> web-1:8080\n"
            "+ binding 203.0.113.10:80/tcp -> web-2:8080\n"
            "+ binding 203.0.113.30:80/tcp -> web-2:8080\n"
            "(dry run: nothing was changed)\n");
  EXPECT_EQ(ruleset(), before);

  r = ctl("apply -f " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string after = ruleset();
  EXPECT_NE(after, before);
  const std::string log_before = daemon->log();
  r = ctl("apply -f - < " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "no change\n");
  EXPECT_EQ(ruleset(), after) << "applying the same file twice changes nothing";
  EXPECT_EQ(daemon->log().substr(log_before.size()).find("datapath applied"), std::string::npos);
}

TEST_F(ControlTest, DetachFlushesThatServicesConnectionsAndNothingElse) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm1_dns(lab_, "vm1", 5353);
  auto daemon = start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}}),
                                        service_json(kVip20, 80, "tcp", {{"web-1", 8080}}),
                                        service_json(kVip10, 53, "udp", {{"web-1", 5353}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);
  lab_.gateway("c1", kVip20, kVm1.mac);
  TcpClient detached(lab_, "c1", kVip10, 80);
  TcpClient kept(lab_, "c1", kVip20, 80);
  TcpClient direct(lab_, "c1", kVm1.ipv4, 8080);  // not hostlb's: mark 0
  for (TcpClient* c : {&detached, &kept, &direct}) ASSERT_FALSE(c->read_line().empty());
  ASSERT_FALSE(udp_exchange(lab_, "c1", kVip10, 53).empty());
  detached.send_all(std::string(1000, 'a'));
  kept.send_all(std::string(1000, 'b'));

  auto r = ctl("service detach 203.0.113.10:80/tcp web-1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("flushed 1 connection\n"), std::string::npos) << r.output;
  const std::string tcp = conntrack("-p tcp");
  EXPECT_EQ(tcp.find("dst=" + kVip10 + " "), std::string::npos)
      << "the detached VIP's entry is gone:\n"
      << tcp;
  EXPECT_NE(tcp.find("dst=" + kVip20 + " "), std::string::npos) << tcp;
  EXPECT_NE(tcp.find("dport=8080 src=198.18.1.11"), std::string::npos) << "the direct one stays:\n"
                                                                       << tcp;
  EXPECT_NE(conntrack("-p udp").find("dport=53"), std::string::npos)
      << "another binding's UDP entry stays";

  // The detached transfer stops; the other one completes.
  detached.send_all(std::string(1000, 'a'));
  detached.shutdown_write();
  EXPECT_EQ(detached.read_line(1500ms), "") << "no answer through a detached binding";
  kept.send_all(std::string(1000, 'b'));
  kept.shutdown_write();
  EXPECT_EQ(kept.read_line(), "bytes=2000");

  // Removing the UDP service flushes its entry.
  r = ctl("service del 203.0.113.10:53/udp");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("flushed 1 connection\n"), std::string::npos) << r.output;
  EXPECT_EQ(conntrack("-p udp").find("dport=53"), std::string::npos);

  // An explicit flush of a backend: hostlb's entries go, the direct one stays.
  TcpClient again(lab_, "c1", kVip20, 80);
  ASSERT_FALSE(again.read_line().empty());
  r = ctl("flush --backend web-1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("flushed "), std::string::npos) << r.output;
  EXPECT_EQ(conntrack("-p tcp").find("dst=" + kVip20 + " "), std::string::npos);
  EXPECT_NE(conntrack("-p tcp").find("dport=8080 src=198.18.1.11"), std::string::npos);
  EXPECT_EQ(ctl("flush --backend nobody").exit_code, 1);
}

TEST_F(ControlTest, ConnectionsListsExactlyTheLiveFlowsAndAgreesWithConntrack) {
  BackendServer vm1(lab_, "vm1", 8080);
  BackendServer vm2(lab_, "vm2", 8080);
  auto daemon =
      start_hostlbd(document({service_json(kVip10, 80, "tcp", {{"web-1", 8080}, {"web-2", 8080}}),
                              service_json(kVip20, 80, "tcp", {{"web-1", 8080}}),
                              service_json(kVip10, 53, "udp", {{"web-1", 8080}})}));
  lab_.gateway("c1", kVip10, kVm1.mac);
  lab_.gateway("c1", kVip20, kVm1.mac);
  lab_.gateway("c2", kVip10, kVm2.mac);
  TcpClient a(lab_, "c1", kVip10, 80);
  TcpClient b(lab_, "c1", kVip20, 80);
  TcpClient c(lab_, "c2", kVip10, 80);
  TcpClient direct(lab_, "c1", kVm1.ipv4, 8080);  // not hostlb's
  for (TcpClient* t : {&a, &b, &c, &direct}) ASSERT_FALSE(t->read_line().empty());
  ASSERT_FALSE(udp_exchange(lab_, "c1", kVip10, 53).empty());

  auto r = ctl("--json connections");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, nlohmann::json> by_client;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    const auto entry = nlohmann::json::parse(line);
    by_client[entry["protocol"].get<std::string>() + " " + entry["client"].get<std::string>()] =
        entry;
  }
  ASSERT_EQ(by_client.size(), 4u) << r.output;  // three TCP through VIPs, one UDP
  const auto& ea = by_client.at("tcp " + a.local());
  EXPECT_EQ(ea["vip"], kVip10 + ":80");
  EXPECT_EQ(ea["service"], "203.0.113.10:80/tcp");
  EXPECT_EQ(ea["backend"], "web-1");
  EXPECT_EQ(ea["backend_address"], "198.18.1.11:8080");
  EXPECT_EQ(ea["state"], "ESTABLISHED");
  EXPECT_TRUE(ea["age_seconds"].is_number()) << ea.dump();
  EXPECT_EQ(by_client.at("tcp " + b.local())["service"], "203.0.113.20:80/tcp");
  EXPECT_EQ(by_client.at("tcp " + c.local())["backend"], "web-2");
  EXPECT_EQ(by_client.at("tcp " + c.local())["backend_address"], "198.18.1.12:8080");

  // conntrack-tools sees the same: every entry with hostlb's mark bits set.
  const std::string listing = conntrack("");
  size_t marked = 0;
  std::istringstream ct(listing);
  for (std::string line; std::getline(ct, line);) {
    const auto at = line.find(" mark=");
    if (at != std::string::npos && (std::stoul(line.substr(at + 6)) & 0xfffff000u) != 0) ++marked;
  }
  EXPECT_EQ(marked, by_client.size()) << listing;

  r = ctl("connections --count");
  EXPECT_EQ(r.output, "4 connections\n");
  r = ctl("connections --service 203.0.113.10:80/tcp --count");
  EXPECT_EQ(r.output, "2 connections\n");
  r = ctl("connections --backend web-2");
  EXPECT_NE(r.output.find(c.local()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 connection\n"), std::string::npos) << r.output;
  EXPECT_EQ(ctl("connections --service 203.0.113.99:80/tcp").exit_code, 1);
}

TEST_F(ControlTest, ATableEditedBehindHostlbdsBackIsRebuiltOnTheNextChange) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_service());
  // Someone deletes an element hostlbd owns: the next change that touches it
  // fails in the kernel (ENOENT), and hostlbd rebuilds the table whole.
  ASSERT_EQ(lab_.in("hv",
                    "nft delete element inet hostlb targets4 '{ 02:00:00:00:01:11 . "
                    "203.0.113.20 . tcp . 80 }'")
                .exit_code,
            0);
  auto r = ctl("service detach 203.0.113.20:80/tcp web-1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(daemon->wait_for_log("incremental nftables change failed")) << daemon->log();
  EXPECT_NE(daemon->log().find("deleting element 203.0.113.20:80/tcp -> web-1 from targets4: "
                               "No such file or directory"),
            std::string::npos)
      << daemon->log();
  // The rebuilt table is the one a fresh start builds, and it serves.
  const std::string rebuilt = lab_.in("hv", "nft list table inet hostlb").output;
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  Hostlbd again(lab_, {"--state-dir", lab_.dir() + "/state", "--socket", socket_path()});
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(lab_.in("hv", "nft list table inet hostlb").output, rebuilt);
  lab_.gateway("c1", kVip10, kVm1.mac);
  TcpClient client(lab_, "c1", kVip10, 80);
  EXPECT_EQ(client.read_line(), "vm1 local=198.18.1.11:8080 peer=" + client.local());
}

TEST_F(ControlTest, ChangesSurviveARestartAndAReboot) {
  BackendServer vm2(lab_, "vm2", 8080);
  auto daemon = start_hostlbd(one_service());
  ASSERT_EQ(ctl("service add 203.0.113.30:80/tcp --backend web-2:8080").exit_code, 0);
  ASSERT_EQ(daemon->stop(SIGTERM), 0);
  // A reboot: the kernel forgets, the state directory does not.
  ASSERT_EQ(lab_.in("hv", "nft delete table inet hostlb").exit_code, 0);
  Hostlbd again(lab_, {"--state-dir", lab_.dir() + "/state", "--socket", socket_path()});
  ASSERT_TRUE(again.start()) << again.log();
  lab_.gateway("c2", kVip30, kVm2.mac);
  TcpClient client(lab_, "c2", kVip30, 80);
  EXPECT_EQ(client.read_line(), "vm2 local=198.18.1.12:8080 peer=" + client.local());
  EXPECT_NE(ctl("service list").output.find("203.0.113.30:80/tcp  web-2:8080"), std::string::npos);
}

TEST_F(ControlTest, KilledBetweenApplyingAndPersistingTheNextStartConverges) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_service());
  lab_.gateway("c1", kVip20, kVm1.mac);
  TcpClient live(lab_, "c1", kVip20, 80);  // a connection of a service that does not change
  ASSERT_EQ(live.read_line(), "vm1 local=198.18.1.11:8080 peer=" + live.local());
  const std::string sport = std::to_string(live.local_port());
  const std::string id_before =
      ct_field(conntrack("-p tcp --sport " + sport + " -o id"), "dport=80", "id");

  const std::string state = lab_.dir() + "/state";
  ASSERT_EQ(sh("cp -a " + state + " " + state + ".before").exit_code, 0);
  ASSERT_EQ(ctl("service add 203.0.113.30:80/tcp --backend web-2:8080").exit_code, 0);
  ASSERT_NE(ruleset().find("203.0.113.30"), std::string::npos);
  // As if SIGKILL had struck after the kernel changed but before the change
  // reached the state directory.
  EXPECT_EQ(daemon->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_EQ(sh("rm -rf " + state + " && mv " + state + ".before " + state).exit_code, 0);

  Hostlbd again(lab_, {"--state-dir", lab_.dir() + "/state", "--socket", socket_path()});
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(ruleset().find("203.0.113.30"), std::string::npos)
      << "converged to the persisted state";
  live.send_all("still here");
  live.shutdown_write();
  EXPECT_EQ(live.read_line(), "bytes=10");
  EXPECT_EQ(ct_field(conntrack("-p tcp --sport " + sport + " -o id"), "dport=80", "id"), id_before);
}

TEST_F(ControlTest, OnlyRootOrTheGroupMayUseTheSocket) {
  const std::string group = "hlt" + std::to_string(::getpid());
  ASSERT_EQ(sh("groupadd " + group).exit_code, 0);
  struct GroupGuard {
    std::string name;
    ~GroupGuard() { sh("groupdel " + name); }
  } guard{group};
  auto daemon = start_hostlbd(one_service(), {"--socket-group", group});
  ::chmod(lab_.dir().c_str(), 0755);  // let others reach the socket file itself
  struct stat st {};
  ASSERT_EQ(::stat(socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, ::getgrnam(group.c_str())->gr_gid);

  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  auto r = sh(as_nobody + HOSTLBCTL_PATH + " --socket " + socket_path() + " status");
  EXPECT_EQ(r.exit_code, 3) << r.output;  // the file mode stops it
  ::chmod(socket_path().c_str(), 0666);   // past the file mode, the daemon checks the peer
  r = sh(as_nobody + HOSTLBCTL_PATH + " --socket " + socket_path() + " status");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("permission denied: uid 65534 is neither root nor in group " + group),
            std::string::npos)
      << r.output;
  const std::string gid = std::to_string(::getgrnam(group.c_str())->gr_gid);
  r = sh("setpriv --reuid=65534 --regid=65534 --groups=" + gid + " " + HOSTLBCTL_PATH +
         " --socket " + socket_path() + " status");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ctl("status").exit_code, 0);
}

TEST_F(ControlTest, ATransferThroughAnUnrelatedVipSurvivesAThousandChanges) {
  BackendServer vm1(lab_, "vm1", 8080);
  auto daemon = start_hostlbd(one_service());
  lab_.gateway("c1", kVip20, kVm1.mac);
  TcpClient transfer(lab_, "c1", kVip20, 80);
  ASSERT_EQ(transfer.read_line(), "vm1 local=198.18.1.11:8080 peer=" + transfer.local());

  std::atomic<bool> done{false};
  std::atomic<uint64_t> sent{0};
  std::string error;
  std::thread sender([&] {
    const std::string chunk(16 * 1024, 't');
    try {
      while (!done) {  // bounded by the change loop below
        transfer.send_all(chunk);
        sent += chunk.size();
        std::this_thread::sleep_for(5ms);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  });

  // 1,000 changes to other services over one connection: 500 attach, 500 detach.
  ControlClient client(socket_path());
  ASSERT_TRUE(client.call("service.add", {{"service", "203.0.113.30:80/tcp"}}).ok);
  int failures = 0;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 500; ++i) {
    const int port = 8000 + i % 50;
    failures +=
        !client
             .call("service.attach",
                   {{"service", "203.0.113.30:80/tcp"}, {"backend", "web-2"}, {"port", port}})
             .ok;
    failures +=
        !client.call("service.detach", {{"service", "203.0.113.30:80/tcp"}, {"backend", "web-2"}})
             .ok;
  }
  const auto took = std::chrono::steady_clock::now() - started;
  done = true;
  sender.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(error, "") << "the transfer saw an error (reset?)";
  transfer.shutdown_write();
  EXPECT_EQ(transfer.read_line(10s), "bytes=" + std::to_string(sent.load()));
  std::printf(
      "1000 changes in %lld ms while %llu bytes went through %s\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
      static_cast<unsigned long long>(sent.load()), kVip20.c_str());
}

}  // namespace
}  // namespace hostlb::lab
