// hostlbd --role gateway in a lab: the same daemon, documents, control
// socket and hostlbctl as a host's, its table built from a fleet document.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gateway_lab.h"
#include "hostlb/policies/control_protocol.h"
#include "lab.h"
#include "lab_fixture.h"

namespace hostlb {
namespace {

using lab::ControlClient;
using lab::Hostlbd;
using lab::Lab;
using lab::TcpClient;

const std::string kFleet = R"({"version":1,"backends":[
  {"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0","host":"hv1"},
  {"name":"vm2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0","host":"hv2"}],
 "services":[{"vip":"203.0.113.10","port":8080,"protocol":"tcp","rows":1021,
              "backends":[{"name":"vm1","port":8080},{"name":"vm2","port":8080}]}]})";

std::vector<std::string> gateway_args(const Lab& lab, const std::string& gw, const std::string& doc,
                                      const std::string& datapath = "nft") {
  return {"--role",
          "gateway",
          "--gateway-datapath",
          datapath,
          "--client-interface",
          "cli0",
          "--fabric-interface",
          "fab0",
          "--config",
          doc,
          "--socket",
          lab.dir() + "/" + gw + ".sock",
          "--state-dir",
          lab.dir() + "/" + gw + "-state"};
}

std::string backend_of(const std::string& banner) { return banner.substr(0, banner.find(' ')); }

TEST(GatewayDaemon, ServesTheDocumentAnswersWhichAndKeepsItsTableAcrossARestart) {
  Lab lab;
  lab::build_gateway(lab, "gw1", "cl1");
  lab::build_gateway(lab, "gw2", "cl2");
  lab::BackendServer vm1(lab, "vm1", 8080), vm2(lab, "vm2", 8080);
  const std::string doc = lab::write_lab_file(lab, "fleet.json", kFleet);
  Hostlbd gw1(lab, gateway_args(lab, "gw1", doc), "gw1");
  Hostlbd gw2(lab, gateway_args(lab, "gw2", doc), "gw2");
  ASSERT_TRUE(gw1.start()) << gw1.log();
  ASSERT_TRUE(gw2.start()) << gw2.log();
  ControlClient c1(lab.dir() + "/gw1.sock"), c2(lab.dir() + "/gw2.sock");

  // Both gateways hold the same tables.
  const auto d1 = c1.call("gateway.digest"), d2 = c2.call("gateway.digest");
  ASSERT_TRUE(d1.ok) << d1.error.message;
  EXPECT_EQ(d1.result.at("digest"), d2.result.at("digest"));
  EXPECT_EQ(d1.result.at("rows"), 1021);

  // Every flow reaches the backend `which` names, and the kernel agrees.
  std::map<std::string, int> per_backend;
  for (int port = 30000; port < 30040; ++port) {
    TcpClient client(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient,
                     port);
    const std::string reached = backend_of(client.read_line());
    const auto which =
        c1.call("which", {{"service", "203.0.113.10:8080/tcp"},
                          {"client", std::string(lab::kClient) + ":" + std::to_string(port)}});
    ASSERT_TRUE(which.ok) << which.error.message;
    EXPECT_EQ(which.result.at("backend"), reached) << "client port " << port;
    EXPECT_TRUE(which.result.at("agrees").get<bool>()) << which.result.dump();
    ++per_backend[reached];
  }
  EXPECT_GT(per_backend["vm1"], 0);
  EXPECT_GT(per_backend["vm2"], 0);
  // A flow that vm1 owns with both backends attached (so also after vm2 is
  // detached and attached again): it will live through a restart.
  int lasting_port = 0;
  for (int port = 31000; port < 31100 && lasting_port == 0; ++port) {
    const auto which =
        c1.call("which", {{"service", "203.0.113.10:8080/tcp"},
                          {"client", std::string(lab::kClient) + ":" + std::to_string(port)}});
    if (which.ok && which.result.at("backend") == "vm1") lasting_port = port;
  }
  ASSERT_NE(lasting_port, 0);

  // hostlbctl speaks to a gateway as to a host.
  const auto table = lab::sh(std::string(HOSTLBCTL_PATH) + " --socket " + lab.dir() +
                             "/gw1.sock gateway table 203.0.113.10:8080/tcp");
  EXPECT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("vm2"), std::string::npos) << table.output;
  const auto flush =
      lab::sh(std::string(HOSTLBCTL_PATH) + " --socket " + lab.dir() + "/gw1.sock flush");
  EXPECT_EQ(flush.exit_code, 1) << "refused on a gateway: " << flush.output;

  // A gateway does not drain (its rows move at once): refused, nothing changes.
  const auto drain = c1.call(
      "service.detach", {{"service", "203.0.113.10:8080/tcp"}, {"backend", "vm2"}, {"drain", 30u}});
  EXPECT_FALSE(drain.ok);
  EXPECT_EQ(drain.error.path, "params.drain");
  EXPECT_EQ(c1.call("gateway.digest").result.at("digest"), d1.result.at("digest"));

  // A detach rewrites only vm2's rows; the two gateways differ until the
  // second one is told too.
  const auto detach =
      c1.call("service.detach", {{"service", "203.0.113.10:8080/tcp"}, {"backend", "vm2"}});
  ASSERT_TRUE(detach.ok) << detach.error.message;
  EXPECT_GT(detach.result.at("rows_written").get<int>(), 0);
  EXPECT_LT(detach.result.at("rows_written").get<int>(), 1021);
  EXPECT_NE(c1.call("gateway.digest").result.at("digest"),
            c2.call("gateway.digest").result.at("digest"));
  ASSERT_TRUE(
      c2.call("service.detach", {{"service", "203.0.113.10:8080/tcp"}, {"backend", "vm2"}}).ok);
  EXPECT_EQ(c1.call("gateway.digest").result.at("digest"),
            c2.call("gateway.digest").result.at("digest"));

  // A restart finds the kernel's table stamped with what it persisted and
  // keeps it; --config (vm2 attached) then differs from the persisted state
  // (vm2 detached) and only that difference is written. A connection open
  // across the restart goes on.
  TcpClient lasting(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient,
                    lasting_port);
  EXPECT_EQ(backend_of(lasting.read_line()), "vm1");
  ASSERT_EQ(gw1.stop(SIGTERM), 0);
  Hostlbd again(lab, gateway_args(lab, "gw1", doc), "gw1");
  ASSERT_TRUE(again.start()) << again.log();
  lasting.send_all("twelve bytes");
  lasting.shutdown_write();
  EXPECT_EQ(lasting.read_line(), "bytes=12") << "the connection lived through the restart";
  EXPECT_NE(again.log().find("kept"), std::string::npos) << again.log();
  EXPECT_NE(again.log().find("rows written"), std::string::npos) << again.log();
  ControlClient c1b(lab.dir() + "/gw1.sock");
  EXPECT_EQ(c1b.call("gateway.digest").result.at("digest"), d1.result.at("digest"))
      << "--config is the document again: vm2 is back";

  // Someone deletes the gateway's table: it is built again within a second
  // or two (a foreign commit makes hostlbd look at the table's stamp).
  ASSERT_EQ(lab.in("gw1", "nft delete table netdev hostlb_gw").exit_code, 0);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool agrees = false;
  while (!agrees && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto which = c1b.call("which", {{"service", "203.0.113.10:8080/tcp"},
                                          {"client", std::string(lab::kClient) + ":40000"}});
    agrees = which.ok && which.result.at("agrees").get<bool>();
  }
  EXPECT_TRUE(agrees) << "the table is back with the same rows\n" << again.log();
  EXPECT_EQ(c1b.call("status").result.at("repairs"), 1);
  TcpClient after_repair(lab, "cl1", lab::kGatewayVip, 8080);
  EXPECT_NE(after_repair.read_line(), "");

  // Someone edits rows without touching the stamp: re-points one, deletes
  // another, adds one of their own. The commit makes hostlbd audit the
  // rows; each is put back as applied.
  const auto w = c1b.call("which", {{"service", "203.0.113.10:8080/tcp"},
                                    {"client", std::string(lab::kClient) + ":40000"}});
  ASSERT_TRUE(w.ok);
  const uint32_t row = w.result.at("row");
  const std::string mac = w.result.at("mac");
  // The only service has index 1: its rows are marked 1 << 16 | row.
  auto mark = [](uint32_t r) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", 1u << 16 | r);
    return std::string(buf);
  };
  const uint32_t other = row == 0 ? 1 : row - 1;
  const std::string rows = "netdev hostlb_gw rows";
  ASSERT_EQ(lab.in("gw1", "nft 'delete element " + rows + " { " + mark(row) + " }; add element " +
                              rows + " { " + mark(row) + " : 02:00:00:00:0e:0e }; delete element " +
                              rows + " { " + mark(other) + " }; add element " + rows + " { " +
                              mark(1030) + " : 02:00:00:00:0e:0e }'")
                .exit_code,
            0);
  auto kernel_row = [&](uint32_t r) {
    const auto got = lab.in("gw1", "nft get element " + rows + " { " + mark(r) + " } 2>&1");
    const std::string key = mark(r) + " : ";
    const size_t at = got.output.find(key);
    return got.exit_code != 0 || at == std::string::npos ? std::string()
                                                         : got.output.substr(at + key.size(), 17);
  };
  ASSERT_EQ(kernel_row(row), "02:00:00:00:0e:0e");
  const auto audited = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < audited &&
         (kernel_row(row) != mac || kernel_row(other).empty() || !kernel_row(1030).empty()))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(kernel_row(row), mac) << again.log();
  EXPECT_FALSE(kernel_row(other).empty()) << "the deleted row is back";
  EXPECT_EQ(kernel_row(1030), "") << "the foreign row is gone";
  EXPECT_EQ(c1b.call("status").result.at("repairs"), 2);
  EXPECT_NE(again.log().find("3 of the gateway's rows differ from what was applied (1 re-pointed, "
                             "1 missing, 1 not hostlbd's)"),
            std::string::npos)
      << again.log();

  // Traffic that is not for a VIP key is routed untouched.
  TcpClient direct(lab, "cl1", "198.18.1.12", 8080);
  EXPECT_EQ(backend_of(direct.read_line()), "vm2");
}

// A binding's life at a gateway through hostlbctl: a drain tracks the
// draining backend's rows for --drain-warmup, then moves them; its open
// connections carry on, new ones go elsewhere; promote brings it back, and
// the horizon tracks the flows it would win.
TEST(GatewayDaemon, DrainPromoteAndHorizonThroughHostlbctl) {
  Lab lab;
  lab::build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", 8080), vm2(lab, "vm2", 8080);
  const std::string doc = lab::write_lab_file(lab, "fleet.json", kFleet);
  auto args = gateway_args(lab, "gw1", doc);
  const std::string metrics = lab.dir() + "/gw1.prom";
  args.insert(args.end(),
              {"--drain-warmup", "2", "--metrics-file", metrics, "--metrics-interval", "1"});
  Hostlbd gw1(lab, args, "gw1");
  ASSERT_TRUE(gw1.start()) << gw1.log();
  ControlClient c1(lab.dir() + "/gw1.sock");
  const std::string ctl = std::string(HOSTLBCTL_PATH) + " --socket " + lab.dir() + "/gw1.sock ";
  const std::string service = "203.0.113.10:8080/tcp";

  std::vector<std::unique_ptr<TcpClient>> open;
  int on_vm2 = 0;
  for (int port = 32000; port < 32060; ++port) {
    open.push_back(std::make_unique<TcpClient>(lab, "cl1", lab::kGatewayVip, 8080,
                                               std::chrono::seconds(3), lab::kClient, port));
    on_vm2 += backend_of(open.back()->read_line()) == "vm2" ? 1 : 0;
  }
  ASSERT_GT(on_vm2, 10);

  const auto drain = lab::sh(ctl + "service drain " + service + " vm2");
  ASSERT_EQ(drain.exit_code, 0) << drain.output;
  auto tracking = [&] { return c1.call("status").result.at("tracking"); };
  EXPECT_EQ(tracking().at("drains_warming"), 1);
  for (auto& c : open) c->send_all("x");  // seen during the warm-up: tracked
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (tracking().at("drains_moved") != 1 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(tracking().at("drains_moved"), 1) << gw1.log();
  EXPECT_EQ(tracking().at("flows"), on_vm2) << "vm2's open flows are tracked";
  const auto table = lab::sh(ctl + "gateway table " + service);
  EXPECT_NE(table.output.find("drained"), std::string::npos) << table.output;
  int kept = 0;
  for (auto& c : open) {
    c->send_all("y");
    c->shutdown_write();
    kept += c->read_line() == "bytes=2" ? 1 : 0;
  }
  EXPECT_EQ(kept, 60) << "every connection, vm2's too, carried on";
  for (int port = 33000; port < 33030; ++port) {
    TcpClient c(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient, port);
    EXPECT_EQ(backend_of(c.read_line()), "vm1") << "port " << port;
  }

  ASSERT_EQ(lab::sh(ctl + "service promote " + service + " vm2").exit_code, 0);
  EXPECT_EQ(tracking().at("drains_moved"), 0);
  EXPECT_EQ(tracking().at("tracked_rows"), 0);
  ASSERT_EQ(lab::sh(ctl + "service horizon " + service + " vm2").exit_code, 0);
  EXPECT_GT(tracking().at("tracked_row_fraction").get<double>(), 0.3);
  const auto list = lab::sh(ctl + "service list");
  EXPECT_NE(list.output.find("vm2:8080 (horizon)"), std::string::npos) << list.output;
  const auto status = lab::sh(ctl + "status");
  EXPECT_NE(status.output.find("tracking: "), std::string::npos) << status.output;
  // The same figures in stats and in the metrics file (written every
  // second).
  const auto stats = lab::sh(ctl + "stats");
  ASSERT_EQ(stats.exit_code, 0) << stats.output;
  EXPECT_NE(stats.output.find("tracking on: "), std::string::npos) << stats.output;
  const auto text = lab::sh(ctl + "stats --prometheus");
  EXPECT_NE(text.output.find("hostlb_gateway_tracking_enabled 1\n"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("hostlb_gateway_track_added_total " + std::to_string(on_vm2) + "\n"),
            std::string::npos)
      << text.output;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const auto file = lab::sh("cat " + metrics);
  EXPECT_NE(file.output.find("hostlb_gateway_tracked_rows "), std::string::npos) << file.output;
  EXPECT_EQ(file.output.find("hostlb_gateway_tracked_rows 0\n"), std::string::npos)
      << "vm2 is in the horizon: " << file.output;
  // Someone edits the set of tracked rows: deletes one, adds a mark of no
  // service. The commit makes hostlbd audit the table; both are put back.
  const std::string track = "netdev hostlb_gw track";
  const auto listed = lab.in("gw1", "nft list set " + track);
  std::smatch first;
  ASSERT_TRUE(std::regex_search(listed.output, first, std::regex("elements = \\{ (0x[0-9a-f]+)")))
      << listed.output;
  const std::string gone = first[1];
  ASSERT_EQ(lab.in("gw1", "nft 'delete element " + track + " { " + gone + " }; add element " +
                              track + " { 0x00090001 }'")
                .exit_code,
            0);
  auto holds = [&](const std::string& mark) {
    return lab.in("gw1", "nft get element " + track + " { " + mark + " } 2>/dev/null").exit_code ==
           0;
  };
  const auto audited = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < audited && (!holds(gone) || holds("0x00090001")))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(holds(gone)) << "the tracked row is back\n" << gw1.log();
  EXPECT_FALSE(holds("0x00090001")) << "the stranger is gone";
  EXPECT_NE(gw1.log().find("set of tracked rows differs from what was applied (1 missing, 1 not "
                           "tracked rows)"),
            std::string::npos)
      << gw1.log();
  // A bad state is refused with the parameter at fault.
  const auto bad =
      c1.call("service.state", {{"service", service}, {"backend", "vm2"}, {"state", "resting"}});
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.error.path, "params.state");
}

// The BPF datapath (the default) through the daemon: a drain keeps the
// draining backend's connections, a restart keeps the maps (found through
// the program it left attached) and the connections through them, a program detached by someone is
// attached again, and a change of datapath removes what the other one left.
TEST(GatewayDaemon, TheBpfDatapathKeepsConnectionsThroughDrainRestartAndDetach) {
  Lab lab;
  lab::build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", 8080), vm2(lab, "vm2", 8080);
  const std::string doc = lab::write_lab_file(lab, "fleet.json", kFleet);
  auto args = gateway_args(lab, "gw1", doc, "bpf");
  args.insert(args.end(), {"--drain-warmup", "1"});
  auto gw1 = std::make_unique<Hostlbd>(lab, args, "gw1");
  ASSERT_TRUE(gw1->start()) << gw1->log();
  const std::string ctl = std::string(HOSTLBCTL_PATH) + " --socket " + lab.dir() + "/gw1.sock ";
  const std::string service = "203.0.113.10:8080/tcp";
  auto attached = [&] {
    return lab.in("gw1", "tc filter show dev cli0 ingress").output.find("hostlb_gw") !=
           std::string::npos;
  };
  ASSERT_TRUE(attached());
  EXPECT_NE(lab.in("gw1", "nft list table netdev hostlb_gw").exit_code, 0) << "no nft table";
  {
    ControlClient c1(lab.dir() + "/gw1.sock");
    const auto status = c1.call("status");
    EXPECT_EQ(status.result.at("datapath"), "bpf");
    for (int port = 34000; port < 34020; ++port) {
      TcpClient client(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient,
                       port);
      const std::string reached = backend_of(client.read_line());
      const auto which =
          c1.call("which", {{"service", service},
                            {"client", std::string(lab::kClient) + ":" + std::to_string(port)}});
      EXPECT_EQ(which.result.at("backend"), reached) << "client port " << port;
      EXPECT_TRUE(which.result.at("agrees").get<bool>()) << which.result.dump();
    }
  }

  // A drain: connections seen during the warm-up keep vm2.
  std::vector<std::unique_ptr<TcpClient>> open;
  int on_vm2 = 0;
  for (int port = 35000; port < 35040; ++port) {
    open.push_back(std::make_unique<TcpClient>(lab, "cl1", lab::kGatewayVip, 8080,
                                               std::chrono::seconds(3), lab::kClient, port));
    on_vm2 += backend_of(open.back()->read_line()) == "vm2" ? 1 : 0;
  }
  ASSERT_GT(on_vm2, 5);
  ASSERT_EQ(lab::sh(ctl + "service drain " + service + " vm2").exit_code, 0);
  for (auto& c : open) c->send_all("x");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // the warm-up ends
  for (int port = 36000; port < 36020; ++port) {
    TcpClient c(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient, port);
    EXPECT_EQ(backend_of(c.read_line()), "vm1") << "port " << port;
  }

  // vm2 is back; its tracked connections stay where they are.
  ASSERT_EQ(lab::sh(ctl + "service promote " + service + " vm2").exit_code, 0);

  // Services added and removed: each added one takes the lowest free table
  // index, which the journal must give it again at the restart.
  for (const std::string cmd :
       {"service add 203.0.113.11:8080/tcp --backend vm1:8080",
        "service add 203.0.113.12:8080/tcp --backend vm1:8080", "service del 203.0.113.11:8080/tcp",
        "service add 203.0.113.13:8080/tcp --backend vm2:8080"}) {
    const auto r = lab::sh(ctl + cmd);
    ASSERT_EQ(r.exit_code, 0) << cmd << ": " << r.output;
  }
  const auto digest = ControlClient(lab.dir() + "/gw1.sock").call("gateway.digest");

  // The changes were journaled (a line each), not written as snapshots.
  const auto journal = lab::sh("cat " + lab.dir() + "/gw1-state/journal-*.jsonl");
  EXPECT_NE(journal.output.find("\"state\":\"draining\""), std::string::npos) << journal.output;

  // A restart without --config replays the journal, finds the maps holding
  // what it describes (the stamp matches) and keeps them and the tracked
  // flows.
  ASSERT_EQ(gw1->stop(SIGTERM), 0);
  auto persisted_only = args;
  const auto config_flag = std::find(persisted_only.begin(), persisted_only.end(), "--config");
  ASSERT_NE(config_flag, persisted_only.end());
  persisted_only.erase(config_flag, config_flag + 2);
  gw1 = std::make_unique<Hostlbd>(lab, persisted_only, "gw1");
  ASSERT_TRUE(gw1->start()) << gw1->log();
  EXPECT_NE(gw1->log().find("kept"), std::string::npos) << gw1->log();
  for (auto& c : open) c->send_all("y");
  ControlClient c1(lab.dir() + "/gw1.sock");
  EXPECT_EQ(c1.call("gateway.digest").result.at("digest"), digest.result.at("digest"));
  EXPECT_EQ(c1.call("status").result.at("tracking").at("flows"), on_vm2);

  // Someone takes the program off the interface: it is attached again.
  ASSERT_EQ(lab.in("gw1", "tc filter del dev cli0 ingress").exit_code, 0);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!attached() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(attached()) << gw1->log();
  EXPECT_EQ(c1.call("status").result.at("repairs"), 1);
  int kept = 0;
  for (auto& c : open) {
    c->send_all("z");
    c->shutdown_write();
    kept += c->read_line() == "bytes=3" ? 1 : 0;
  }
  EXPECT_EQ(kept, 40) << "every connection, vm2's too, carried on\n" << gw1->log();

  // The nft datapath replaces it: the program goes.
  ASSERT_EQ(gw1->stop(SIGTERM), 0);
  gw1 = std::make_unique<Hostlbd>(lab, gateway_args(lab, "gw1", doc, "nft"), "gw1");
  ASSERT_TRUE(gw1->start()) << gw1->log();
  EXPECT_FALSE(attached());
  EXPECT_EQ(lab.in("gw1", "nft list table netdev hostlb_gw").exit_code, 0);
  // A new flow reaches the backend `which` names, through either datapath.
  auto predicted = [&](int port) {
    ControlClient c(lab.dir() + "/gw1.sock");
    return c
        .call("which", {{"service", service},
                        {"client", std::string(lab::kClient) + ":" + std::to_string(port)}})
        .result.at("backend")
        .get<std::string>();
  };
  TcpClient through_nft(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient,
                        37000);
  EXPECT_EQ(backend_of(through_nft.read_line()), predicted(37000));
  // And back: the nft table goes.
  ASSERT_EQ(gw1->stop(SIGTERM), 0);
  gw1 = std::make_unique<Hostlbd>(lab, args, "gw1");
  ASSERT_TRUE(gw1->start()) << gw1->log();
  EXPECT_TRUE(attached());
  EXPECT_NE(lab.in("gw1", "nft list table netdev hostlb_gw").exit_code, 0);
  TcpClient through_bpf(lab, "cl1", lab::kGatewayVip, 8080, std::chrono::seconds(3), lab::kClient,
                        37001);
  EXPECT_EQ(backend_of(through_bpf.read_line()), predicted(37001));
}

}  // namespace
}  // namespace hostlb
