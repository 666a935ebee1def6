// The gateway's kernel table in a lab: a client namespace sends to VIPs
// through a gateway namespace (its table built by hostlb's GatewayRuleset),
// whose fabric port is on the lab's bridge with the backend VMs. The VMs
// hold the VIP themselves and answer with their name (no hostlbd here:
// this tests the gateway's choice alone), replies going back through the
// gateway's plain routing.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "gateway_lab.h"
#include "hostlb/netlink/error.h"
#include "hostlb/netlink/gateway.h"
#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"
#include "lab.h"

namespace hostlb {
namespace {

using lab::Lab;
using lab::TcpClient;

using lab::build_gateway;
using lab::kClient;
using lab::kGatewayVip;
constexpr const char* kVip = kGatewayVip;
constexpr int kPort = 8080;

State fleet(const std::vector<std::pair<std::string, uint32_t>>& backends) {
  std::string refs;
  for (const auto& [name, weight] : backends)
    refs += std::string(refs.empty() ? "" : ",") + R"({"name":")" + name +
            R"(","port":8080,"weight":)" + std::to_string(weight) + "}";
  return parse_state_document(
      R"({"version":1,"backends":[
        {"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0","host":"hv1"},
        {"name":"vm2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0","host":"hv2"}],
      "services":[{"vip":"203.0.113.10","port":8080,"protocol":"tcp","rows":1021,"backends":[)" +
      refs + "]}]}");
}

// Every test runs on both datapaths (the nft table, the BPF program): they
// must make the same choice and keep the same flows.
class GatewayKernel : public ::testing::TestWithParam<GatewayEngine> {
 protected:
  GatewayConfig config_ = [this] {
    GatewayConfig c{"cli0", "fab0", *MacAddress::parse("02:00:00:00:0f:01")};
    c.engine = GetParam();
    return c;
  }();
  std::unique_ptr<GatewayRuleset> make() const { return make_gateway(config_); }
};

// The backend each source port's connection reached, by its banner.
std::map<int, std::string> connect_all(const Lab& lab, int first_port, int count) {
  std::map<int, std::string> out;
  for (int port = first_port; port < first_port + count; ++port) {
    TcpClient client(lab, "cl1", kVip, kPort, std::chrono::seconds(3), kClient, port);
    const std::string banner = client.read_line();
    out[port] = banner.substr(0, banner.find(' '));
  }
  return out;
}

std::string model_choice(const GatewayService& s, int client_port) {
  const Flow flow{*IpAddress::parse(kClient), static_cast<uint16_t>(client_port),
                  *IpAddress::parse(kVip), static_cast<uint16_t>(kPort)};
  return s.backends[s.owner[flow_row(flow, s.rows)]];
}

TEST_P(GatewayKernel, FlowsReachTheBackendTheModelChoosesAndOnlyMovedRowsMove) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", kPort), vm2(lab, "vm2", kPort);
  const GatewayDatapath both = compile_gateway(fleet({{"vm1", 1}, {"vm2", 1}}), {});
  std::unique_ptr<GatewayRuleset> gw;
  {
    Lab::Entered in_gw(lab, "gw1");
    gw = make();
    EXPECT_FALSE(gw->stamp()) << "no table yet";
    gw->replace(both, config_);
    EXPECT_EQ(gw->stamp(), gateway_stamp(both));
  }
  const auto reached = connect_all(lab, 20000, 120);
  std::map<std::string, int> per_backend;
  for (const auto& [port, backend] : reached) {
    EXPECT_EQ(backend, model_choice(both.services[0], port)) << "client port " << port;
    ++per_backend[backend];
  }
  EXPECT_GT(per_backend["vm1"], 20);
  EXPECT_GT(per_backend["vm2"], 20);

  // vm2 weighs 3: a diff rewrites only the rows that change owner, in one
  // batch, and only flows of those rows move.
  const GatewayDatapath weighted =
      compile_gateway(fleet({{"vm1", 1}, {"vm2", 3}}), indexes_of(both));
  const GatewayDiff diff = diff_gateway(both, weighted);
  ASSERT_TRUE(diff.services_added.empty());
  ASSERT_FALSE(diff.rows.empty());
  {
    Lab::Entered in_gw(lab, "gw1");
    gw->apply(diff, config_, gateway_stamp(weighted));
    for (const auto& r : diff.rows) EXPECT_EQ(gw->row(r.mark), r.after) << "row " << r.mark;
  }
  const auto after = connect_all(lab, 20000, 120);
  size_t moved = 0;
  for (const auto& [port, backend] : after) {
    EXPECT_EQ(backend, model_choice(weighted.services[0], port)) << "client port " << port;
    if (backend != reached.at(port)) {
      ++moved;
      EXPECT_EQ(backend, "vm2") << "weight moves rows only toward vm2";
    }
  }
  EXPECT_GT(moved, 0u);

  // Traffic that is not for a VIP key passes the gateway untouched (routed).
  TcpClient direct(lab, "cl1", "198.18.1.11", kPort);
  EXPECT_EQ(direct.read_line().substr(0, 3), "vm1");

  // A service with no backend: its rows are gone and its frames dropped.
  State empty = fleet({});
  const GatewayDatapath none = compile_gateway(empty, indexes_of(weighted));
  {
    Lab::Entered in_gw(lab, "gw1");
    gw->apply(diff_gateway(weighted, none), config_, gateway_stamp(none));
    EXPECT_EQ(gw->stamp(), gateway_stamp(none)) << "the stamp says what the table holds";
    EXPECT_FALSE(gw->row(none.services[0].mark(0)));
  }
  EXPECT_THROW(TcpClient(lab, "cl1", kVip, kPort, std::chrono::milliseconds(500)),
               std::runtime_error);
}

// Two gateways given the same document hold the same rows: any gateway may
// take any flow.
TEST_P(GatewayKernel, TwoGatewaysWithTheSameDocumentHoldTheSameRows) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  build_gateway(lab, "gw2", "cl2");
  const State doc = fleet({{"vm1", 2}, {"vm2", 1}});
  State shuffled = doc;
  std::swap(shuffled.backends[0], shuffled.backends[1]);
  std::reverse(shuffled.services[0].backends.begin(), shuffled.services[0].backends.end());
  const GatewayDatapath a = compile_gateway(doc, {}), b = compile_gateway(shuffled, {});
  EXPECT_EQ(gateway_digest(a), gateway_digest(b));
  std::map<uint32_t, std::optional<MacAddress>> rows[2];
  int i = 0;
  for (const auto& [role, datapath] : {std::pair{"gw1", &a}, std::pair{"gw2", &b}}) {
    Lab::Entered in_gw(lab, role);
    auto gw = make();
    gw->replace(*datapath, config_);
    for (uint32_t row = 0; row < datapath->services[0].rows; ++row)
      rows[i][row] = gw->row(datapath->services[0].mark(row));
    ++i;
  }
  EXPECT_EQ(rows[0], rows[1]);
  EXPECT_EQ(rows[0].size(), 1021u);
}

// IPv6: the same choice, the same forwarding, through services6.
TEST_P(GatewayKernel, Ipv6FlowsReachTheBackendTheModelChooses) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  constexpr const char* kVip6 = "2001:db8:f00::10";
  constexpr const char* kClient6 = "2001:db8:2::1";
  const std::string g = lab.ns("gw1"), c = lab.ns("cl1");
  for (const std::string& cmd : {
           "ip netns exec " + g + " sysctl -qw net.ipv6.conf.all.forwarding=1",
           "ip -n " + g + " addr add 2001:db8:2::fe/64 dev cli0 nodad",
           "ip -n " + g + " addr add 2001:db8:1::fe/64 dev fab0 nodad",
           "ip -n " + c + " addr add " + std::string(kClient6) + "/64 dev eth0 nodad",
           "ip -n " + c + " -6 route add default via 2001:db8:2::fe",
       })
    ASSERT_EQ(lab::sh(cmd).exit_code, 0) << cmd;
  for (const char* vm : {"vm1", "vm2"}) {
    lab.in(vm, "ip addr add " + std::string(kVip6) + "/128 dev lo");
    lab.in(vm, "ip -6 route replace 2001:db8:2::/64 via 2001:db8:1::fe");
  }
  lab::BackendServer vm1(lab, "vm1", kPort, true), vm2(lab, "vm2", kPort, true);
  const State doc = parse_state_document(
      R"({"version":1,"backends":[
        {"name":"vm1","mac":"02:00:00:00:01:11","ipv6":"2001:db8:1::11","bridge":"br0","host":"hv1"},
        {"name":"vm2","mac":"02:00:00:00:01:12","ipv6":"2001:db8:1::12","bridge":"br0","host":"hv2"}],
      "services":[{"vip":"2001:db8:f00::10","port":8080,"protocol":"tcp","rows":509,
                   "backends":[{"name":"vm1","port":8080},{"name":"vm2","port":8080}]}]})");
  const GatewayDatapath datapath = compile_gateway(doc, {});
  {
    Lab::Entered in_gw(lab, "gw1");
    make()->replace(datapath, config_);
  }
  std::map<std::string, int> per_backend;
  const GatewayService& service = datapath.services[0];
  for (int port = 21000; port < 21080; ++port) {
    TcpClient client(lab, "cl1", kVip6, kPort, std::chrono::seconds(3), kClient6, port);
    const std::string banner = client.read_line();
    const std::string backend = banner.substr(0, banner.find(' '));
    const Flow flow{*IpAddress::parse(kClient6), static_cast<uint16_t>(port),
                    *IpAddress::parse(kVip6), static_cast<uint16_t>(kPort)};
    EXPECT_EQ(backend, service.backends[service.owner[flow_row(flow, service.rows)]])
        << "client port " << port;
    ++per_backend[backend];
  }
  EXPECT_GT(per_backend["vm1"], 10);
  EXPECT_GT(per_backend["vm2"], 10);
  // Not a VIP key: routed by the gateway as before, untouched.
  TcpClient direct(lab, "cl1", "2001:db8:1::12", kPort, std::chrono::seconds(3), kClient6);
  EXPECT_EQ(direct.read_line().substr(0, 3), "vm2");

  // JET for IPv6 (flows keyed by their ports and a hash of their
  // addresses): vm2 in the horizon, its would-be flows tracked on vm1 and
  // kept there when it is promoted.
  State horizon_doc = doc;
  horizon_doc.services[0].backends[1].state = BindingState::kHorizon;
  const GatewayDatapath horizon = compile_gateway(horizon_doc, indexes_of(datapath));
  std::unique_ptr<GatewayRuleset> gw;
  {
    Lab::Entered in_gw(lab, "gw1");
    gw = make();
    gw->replace(horizon, config_);
  }
  std::vector<std::unique_ptr<TcpClient>> open;
  int tracked = 0;
  for (int port = 21100; port < 21160; ++port) {
    open.push_back(std::make_unique<TcpClient>(lab, "cl1", kVip6, kPort, std::chrono::seconds(3),
                                               kClient6, port));
    EXPECT_EQ(open.back()->read_line().substr(0, 3), "vm1");
    tracked += choose(horizon.services[0], *IpAddress::parse(kClient6), static_cast<uint16_t>(port))
                       .tracked
                   ? 1
                   : 0;
  }
  ASSERT_GT(tracked, 10);
  const GatewayDatapath promoted = compile_gateway(doc, indexes_of(horizon));
  {
    Lab::Entered in_gw(lab, "gw1");
    EXPECT_EQ(gw->track_stats().entries, static_cast<uint64_t>(tracked));
    gw->apply(diff_gateway(horizon, promoted), config_, gateway_stamp(promoted));
  }
  int kept = 0;
  for (auto& client : open) {
    client->send_all("v6");
    client->shutdown_write();
    kept += client->read_line() == "bytes=2" ? 1 : 0;
  }
  EXPECT_EQ(kept, 60) << "no tracked IPv6 flow moved";
}

State fleet_with_states(const std::string& vm1_state, const std::string& vm2_state) {
  return parse_state_document(
      R"({"version":1,"backends":[
        {"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0","host":"hv1"},
        {"name":"vm2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0","host":"hv2"}],
      "services":[{"vip":"203.0.113.10","port":8080,"protocol":"tcp","rows":1021,"backends":[
        {"name":"vm1","port":8080,"state":")" +
      vm1_state + R"("},{"name":"vm2","port":8080,"state":")" + vm2_state + R"("}]}]})");
}

FlowChoice model_flow(const GatewayService& s, int client_port) {
  return choose(s, *IpAddress::parse(kClient), static_cast<uint16_t>(client_port));
}

// Connections held open; each says which backend took it, and later proves
// it still reaches that backend (the server counts the bytes it got: a
// packet sent to another VM would meet a reset there).
struct OpenConnections {
  std::map<int, std::unique_ptr<TcpClient>> clients;
  std::map<int, std::string> backend;

  OpenConnections(const Lab& lab, int first_port, int count) {
    for (int port = first_port; port < first_port + count; ++port) {
      auto c = std::make_unique<TcpClient>(lab, "cl1", kVip, kPort, std::chrono::seconds(3),
                                           kClient, port);
      const std::string banner = c->read_line();
      backend[port] = banner.substr(0, banner.find(' '));
      clients[port] = std::move(c);
    }
  }
  // A packet of every connection (tracked ones refresh their entry).
  void touch() {
    for (auto& [port, c] : clients) c->send_all("x");
  }
  // How many end cleanly: the server got all bytes (`sent` each).
  int finish(int sent) {
    int ok = 0;
    for (auto& [port, c] : clients) {
      try {
        c->send_all("y");
        c->shutdown_write();
        if (c->read_line() == "bytes=" + std::to_string(sent + 1)) ++ok;
      } catch (const std::exception&) {
      }
    }
    return ok;
  }
};

// JET: a horizon backend takes no new flows, the flows it would win are
// tracked from their first packet, and promoting it moves none of them;
// rebuilding the table keeps them too.
TEST_P(GatewayKernel, FlowsTrackedForAHorizonBackendKeepTheirBackendWhenItIsPromoted) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", kPort), vm2(lab, "vm2", kPort);
  const GatewayDatapath horizon = compile_gateway(fleet_with_states("active", "horizon"), {});
  const GatewayService& h = horizon.services[0];
  ASSERT_FALSE(h.tracked.empty());
  std::unique_ptr<GatewayRuleset> gw;
  {
    Lab::Entered in_gw(lab, "gw1");
    gw = make();
    gw->replace(horizon, config_);
  }
  OpenConnections open(lab, 22000, 150);
  int tracked = 0;
  for (const auto& [port, backend] : open.backend) {
    EXPECT_EQ(backend, "vm1") << "a horizon backend takes no new flow (port " << port << ")";
    tracked += model_flow(h, port).tracked ? 1 : 0;
  }
  ASSERT_GT(tracked, 20) << "vm2 wins about half of the rows over vm1 and vm2";
  {
    Lab::Entered in_gw(lab, "gw1");
    const TrackStats stats = gw->track_stats();
    EXPECT_EQ(stats.entries, static_cast<uint64_t>(tracked)) << "exactly the model's flows";
    EXPECT_EQ(stats.added, static_cast<uint64_t>(tracked)) << "each flow added once";
    EXPECT_EQ(stats.attempts, stats.added) << "the map was never full";
    // A rebuild (what drift repair does) keeps the tracked flows.
    gw->replace(horizon, config_);
    EXPECT_EQ(gw->track_stats().entries, static_cast<uint64_t>(tracked));
  }
  open.touch();

  // Promote vm2: its rows change owner; the tracked flows stay on vm1.
  const GatewayDatapath promoted =
      compile_gateway(fleet_with_states("active", "active"), indexes_of(horizon));
  const GatewayDiff diff = diff_gateway(horizon, promoted);
  EXPECT_FALSE(diff.rows.empty());
  EXPECT_EQ(diff.track_removed.size(), h.tracked.size()) << "nothing is tracked any more";
  for (const auto& r : diff.rows)
    EXPECT_TRUE(std::binary_search(h.tracked.begin(), h.tracked.end(), r.mark & 0xffff))
        << "only tracked rows change owner";
  {
    Lab::Entered in_gw(lab, "gw1");
    gw->apply(diff, config_, gateway_stamp(promoted));
    EXPECT_EQ(gw->sweep_tracked(), 0u) << "no tracked flow's time is up";
  }
  EXPECT_EQ(open.finish(1), 150) << "every connection kept its backend";
  // New flows follow the new table: vm2 takes its share.
  const auto after = connect_all(lab, 23000, 80);
  int to_vm2 = 0;
  for (const auto& [port, backend] : after) {
    EXPECT_EQ(backend, *model_flow(promoted.services[0], port).backend) << "port " << port;
    to_vm2 += backend == "vm2" ? 1 : 0;
  }
  EXPECT_GT(to_vm2, 15);
}

// A tracked flow is forgotten when its time is up (here 1 s without a
// packet): after a promotion it follows its row like any other flow.
TEST_P(GatewayKernel, TrackedFlowsAreForgottenWhenTheirTimeIsUp) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", kPort), vm2(lab, "vm2", kPort);
  config_.track_timeout_s = 1;
  const GatewayDatapath horizon = compile_gateway(fleet_with_states("active", "horizon"), {});
  std::unique_ptr<GatewayRuleset> gw;
  {
    Lab::Entered in_gw(lab, "gw1");
    gw = make();
    gw->replace(horizon, config_);
  }
  OpenConnections open(lab, 27000, 60);
  int tracked = 0;
  for (const auto& [port, backend] : open.backend)
    tracked += model_flow(horizon.services[0], port).tracked ? 1 : 0;
  ASSERT_GT(tracked, 5);
  {
    Lab::Entered in_gw(lab, "gw1");
    EXPECT_EQ(gw->track_stats().entries, static_cast<uint64_t>(tracked));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const GatewayDatapath promoted =
      compile_gateway(fleet_with_states("active", "active"), indexes_of(horizon));
  {
    Lab::Entered in_gw(lab, "gw1");
    gw->sweep_tracked();
    EXPECT_EQ(gw->track_stats().entries, 0u);
    gw->apply(diff_gateway(horizon, promoted), config_, gateway_stamp(promoted));
  }
  EXPECT_EQ(open.finish(0), 60 - tracked) << "the forgotten flows moved to vm2 (and were reset)";
}

// A new --track-size keeps the flows tracked so far (the BPF datapath makes
// its maps anew and copies them over; nft resizes its maps).
TEST_P(GatewayKernel, TrackedFlowsStayTrackedWhenTheTrackingMapsAreResized) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", kPort), vm2(lab, "vm2", kPort);
  config_.track_size = 2048;
  const GatewayDatapath horizon = compile_gateway(fleet_with_states("active", "horizon"), {});
  {
    Lab::Entered in_gw(lab, "gw1");
    make()->replace(horizon, config_);
  }
  OpenConnections open(lab, 28000, 60);
  int tracked = 0;
  for (const auto& [port, backend] : open.backend)
    tracked += model_flow(horizon.services[0], port).tracked ? 1 : 0;
  ASSERT_GT(tracked, 5);
  config_.track_size = 4096;
  const GatewayDatapath promoted =
      compile_gateway(fleet_with_states("active", "active"), indexes_of(horizon));
  {
    Lab::Entered in_gw(lab, "gw1");
    auto resized = make();  // as a restart with the new size
    resized->replace(horizon, config_);
    EXPECT_EQ(resized->track_stats().entries, static_cast<uint64_t>(tracked));
    resized->apply(diff_gateway(horizon, promoted), config_, gateway_stamp(promoted));
  }
  EXPECT_EQ(open.finish(0), 60) << "every connection kept its backend";
}

// A drain: first its rows are tracked (warm-up: flows already open are
// caught by their next packet), then they move; tracked flows stay on the
// draining backend, new flows go to the others. Without the warm-up, the
// same move breaks the draining backend's connections (what a stateless
// gateway does).
TEST_P(GatewayKernel, ADrainAfterItsWarmUpKeepsTheDrainingBackendsConnections) {
  Lab lab;
  build_gateway(lab, "gw1", "cl1");
  lab::BackendServer vm1(lab, "vm1", kPort), vm2(lab, "vm2", kPort);
  const GatewayDatapath both = compile_gateway(fleet_with_states("active", "active"), {});
  std::unique_ptr<GatewayRuleset> gw;
  {
    Lab::Entered in_gw(lab, "gw1");
    gw = make();
    gw->replace(both, config_);
  }
  OpenConnections warmed(lab, 24000, 100), cold(lab, 25000, 100);
  int warmed_on_vm2 = 0, cold_on_vm2 = 0;
  for (const auto& [port, backend] : warmed.backend) warmed_on_vm2 += backend == "vm2" ? 1 : 0;
  for (const auto& [port, backend] : cold.backend) cold_on_vm2 += backend == "vm2" ? 1 : 0;
  ASSERT_GT(warmed_on_vm2, 15);
  ASSERT_GT(cold_on_vm2, 15);

  const State draining = fleet_with_states("active", "draining");
  const GatewayDatapath warming = compile_gateway(draining, indexes_of(both));
  {
    Lab::Entered in_gw(lab, "gw1");
    const GatewayDiff diff = diff_gateway(both, warming);
    EXPECT_TRUE(diff.rows.empty()) << "during the warm-up no row moves";
    gw->apply(diff, config_, gateway_stamp(warming));
  }
  warmed.touch();  // the warm-up sees a packet of each of these flows
  {
    Lab::Entered in_gw(lab, "gw1");
    EXPECT_EQ(gw->track_stats().entries, static_cast<uint64_t>(warmed_on_vm2));
  }
  const GatewayDatapath drained =
      compile_gateway(draining, indexes_of(both), {{warming.services[0].key, "vm2"}});
  {
    Lab::Entered in_gw(lab, "gw1");
    gw->apply(diff_gateway(warming, drained), config_, gateway_stamp(drained));
  }
  EXPECT_EQ(warmed.finish(1), 100) << "flows seen during the warm-up keep vm2";
  EXPECT_EQ(cold.finish(0), 100 - cold_on_vm2)
      << "vm2's flows that sent nothing during the warm-up moved (and were reset)";
  for (const auto& [port, backend] : connect_all(lab, 26000, 40))
    EXPECT_EQ(backend, "vm1") << "no new flow for a drained backend (port " << port << ")";
}

INSTANTIATE_TEST_SUITE_P(Datapaths, GatewayKernel,
                         ::testing::Values(GatewayEngine::kNft, GatewayEngine::kBpf),
                         [](const auto& param_info) {
                           return std::string(engine_name(param_info.param));
                         });

}  // namespace
}  // namespace hostlb
