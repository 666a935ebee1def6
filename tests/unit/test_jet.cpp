// Binding lifecycle and JET ("just enough tracking") in the gateway's
// tables: which rows are tracked, and that promotions and drains move only
// flows of tracked rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "hostlb/policies/edit.h"
#include "hostlb/policies/gateway.h"
#include "hostlb/policies/journal.h"
#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_diff.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

// A service of `active` + `horizon` backends (vm1.. first the active ones).
State pool(int active, int horizon, uint32_t rows = kDefaultRows) {
  State s;
  Service service;
  service.key = *parse_service_key("203.0.113.10:80/tcp");
  service.rows = rows;
  for (int i = 1; i <= active + horizon; ++i) {
    Backend b;
    b.name = "vm" + std::to_string(i);
    b.mac = *MacAddress::parse("02:00:00:00:" + std::to_string(10 + i / 100) + ":" +
                               std::to_string(10 + i % 90));
    b.ipv4 =
        IpAddress::parse("198.18." + std::to_string(i / 200) + "." + std::to_string(1 + i % 200));
    b.bridge = "br0";
    s.backends.push_back(b);
    BackendRef ref{b.name, 80};
    if (i > active) ref.state = BindingState::kHorizon;
    service.backends.push_back(ref);
  }
  s.services.push_back(service);
  return s;
}

BackendRef& ref_of(State& s, const std::string& name) {
  for (auto& r : s.services[0].backends)
    if (r.name == name) return r;
  throw std::runtime_error("no " + name);
}

std::string owner_name(const GatewayService& g, uint32_t row) { return g.backends[g.owner[row]]; }

TEST(Jet, AHorizonBackendOwnsNoRowAndTheRowsItWouldWinAreTracked) {
  for (const auto& [active, horizon] : {std::pair{10, 1}, std::pair{20, 2}, std::pair{100, 10}}) {
    const GatewayService g = compile_gateway(pool(active, horizon), {}).services[0];
    for (uint32_t row = 0; row < g.rows; ++row)
      ASSERT_EQ(g.states[g.owner[row]], BindingState::kActive) << "row " << row;
    // JET: the tracked fraction is about H/(N+H).
    const double expected = static_cast<double>(horizon) / (active + horizon);
    const double got = static_cast<double>(g.tracked.size()) / g.rows;
    EXPECT_NEAR(got, expected, 0.25 * expected) << active << "+" << horizon;
    EXPECT_TRUE(std::is_sorted(g.tracked.begin(), g.tracked.end()));
  }
  // All active: nothing tracked.
  EXPECT_TRUE(compile_gateway(pool(8, 0), {}).services[0].tracked.empty());
  // Only horizon backends: no owner, so no row and nothing tracked.
  const GatewayService none = compile_gateway(pool(0, 3), {}).services[0];
  EXPECT_TRUE(none.owner.empty());
  EXPECT_TRUE(none.tracked.empty());
}

TEST(Jet, PromotingAHorizonBackendMovesOnlyTrackedRowsAndAllOfThemToIt) {
  State s = pool(12, 3);
  const GatewayDatapath before = compile_gateway(s, {});
  ref_of(s, "vm14").state = BindingState::kActive;
  const GatewayDatapath after = compile_gateway(s, indexes_of(before));
  const GatewayService &b = before.services[0], &a = after.services[0];
  size_t moved = 0;
  for (uint32_t row = 0; row < b.rows; ++row) {
    if (owner_name(a, row) == owner_name(b, row)) continue;
    ++moved;
    EXPECT_EQ(owner_name(a, row), "vm14");
    EXPECT_TRUE(std::binary_search(b.tracked.begin(), b.tracked.end(), row)) << "row " << row;
  }
  EXPECT_GT(moved, b.rows / 20);
  // The diff: those rows; the rows vm14 won over every other backend leave
  // the track set (those that vm13 or vm15 would take stay tracked).
  const GatewayDiff diff = diff_gateway(before, after);
  EXPECT_EQ(diff.rows.size(), moved);
  EXPECT_TRUE(diff.track_added.empty());
  EXPECT_GT(diff.track_removed.size(), 0u);
  for (uint32_t mark : diff.track_removed) EXPECT_EQ(owner_name(a, mark & 0xffff), "vm14");
  EXPECT_EQ(a.tracked.size(), b.tracked.size() - diff.track_removed.size());
}

TEST(Jet, ADrainTracksItsRowsDuringTheWarmUpThenMovesOnlyThem) {
  State s = pool(6, 0);
  const GatewayDatapath all = compile_gateway(s, {});
  ref_of(s, "vm3").state = BindingState::kDraining;
  const GatewayDatapath warming = compile_gateway(s, indexes_of(all));
  const GatewayService &g0 = all.services[0], &g1 = warming.services[0];
  EXPECT_EQ(g1.owner, g0.owner) << "during the warm-up nothing moves";
  std::vector<uint32_t> vm3_rows;
  for (uint32_t row = 0; row < g0.rows; ++row)
    if (owner_name(g0, row) == "vm3") vm3_rows.push_back(row);
  EXPECT_EQ(g1.tracked, vm3_rows) << "exactly the draining backend's rows are tracked";
  const GatewayDiff warm = diff_gateway(all, warming);
  EXPECT_TRUE(warm.rows.empty());
  EXPECT_EQ(warm.track_added.size(), vm3_rows.size());

  const GatewayDatapath drained = compile_gateway(s, indexes_of(all), {{g0.key, "vm3"}});
  const GatewayService& g2 = drained.services[0];
  EXPECT_TRUE(g2.tracked.empty());
  for (uint32_t row = 0; row < g0.rows; ++row) {
    if (owner_name(g0, row) == "vm3")
      EXPECT_NE(owner_name(g2, row), "vm3");
    else
      EXPECT_EQ(owner_name(g2, row), owner_name(g0, row)) << "row " << row;
  }
  const GatewayDiff move = diff_gateway(warming, drained);
  EXPECT_EQ(move.rows.size(), vm3_rows.size());
  EXPECT_EQ(move.track_removed.size(), vm3_rows.size());
  // The flows' choice says whether a gateway tracks them.
  const auto flow = choose(g1, *IpAddress::parse("198.51.100.7"), 40000);
  EXPECT_EQ(flow.tracked, std::binary_search(vm3_rows.begin(), vm3_rows.end(), flow.row));
}

// A gateway without tracking (--no-tracking) compiles the plain
// stateless table: the one of the active bindings alone.
TEST(Jet, WithoutTrackingOnlyActiveBindingsShapeTheTable) {
  State s = pool(8, 2);
  ref_of(s, "vm3").state = BindingState::kDraining;
  const State view = without_tracking(s);
  ASSERT_EQ(view.services[0].backends.size(), 7u);
  for (const auto& ref : view.services[0].backends)
    EXPECT_EQ(ref.state, BindingState::kActive) << ref.name;
  EXPECT_EQ(view.backends, s.backends) << "backends stay known";
  const GatewayService g = compile_gateway(view, {}).services[0];
  EXPECT_TRUE(g.tracked.empty());
  State active_only = pool(8, 0);
  std::erase_if(active_only.services[0].backends,
                [](const BackendRef& r) { return r.name == "vm3"; });
  EXPECT_EQ(g.owner.size(), g.rows);
  const GatewayService plain = compile_gateway(active_only, {}).services[0];
  for (uint32_t row = 0; row < g.rows; ++row)
    ASSERT_EQ(owner_name(g, row), owner_name(plain, row)) << "row " << row;
}

TEST(Jet, TheGatewayMetricsSayWhatIsTrackedAndWhatAFullMapRefused) {
  GatewayFigures f;
  f.rows = 4000;
  f.tracked_rows = 1000;
  f.tracked_flows = 37;
  f.track_attempts = 50;
  f.track_added = 45;
  f.repairs = 2;
  EXPECT_EQ(f.track_failed(), 5u);
  EXPECT_DOUBLE_EQ(f.tracked_row_fraction(), 0.25);
  const std::string text = render_gateway_prometheus(f);
  for (const char* line :
       {"hostlb_gateway_tracking_enabled 1\n", "hostlb_gateway_rows 4000\n",
        "hostlb_gateway_tracked_row_ratio 0.25\n", "hostlb_gateway_tracked_flows 37\n",
        "hostlb_gateway_track_attempts_total 50\n", "hostlb_gateway_track_failed_total 5\n",
        "# TYPE hostlb_gateway_track_added_total counter\n", "hostlb_gateway_repairs_total 2\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  f.tracking = false;
  f.track_added = 60;  // never more failed than attempted
  EXPECT_EQ(f.track_failed(), 0u);
  EXPECT_NE(render_gateway_prometheus(f).find("hostlb_gateway_tracking_enabled 0\n"),
            std::string::npos);
  EXPECT_DOUBLE_EQ(GatewayFigures{}.tracked_row_fraction(), 0.0);
}

TEST(Jet, TheTableDoesNotDependOnOrderAndTheDigestSeesTracking) {
  State s = pool(5, 2);
  State shuffled = s;
  std::mt19937 rng(7);
  std::shuffle(shuffled.services[0].backends.begin(), shuffled.services[0].backends.end(), rng);
  const GatewayDatapath a = compile_gateway(s, {}), b = compile_gateway(shuffled, {});
  EXPECT_EQ(a, b);
  State promoted = s;
  ref_of(promoted, "vm6").state = BindingState::kActive;
  ref_of(promoted, "vm7").state = BindingState::kActive;
  State all_active = pool(7, 0);
  // The same rows and no tracking: equal to a pool that was always active.
  EXPECT_EQ(gateway_digest(compile_gateway(promoted, {})),
            gateway_digest(compile_gateway(all_active, {})));
  EXPECT_NE(gateway_digest(a), gateway_digest(compile_gateway(promoted, {})));
  // Recompiling reuses an unchanged service's table, and a state change is
  // a change.
  EXPECT_EQ(recompile_gateway(promoted, a), compile_gateway(promoted, indexes_of(a)));
}

TEST(Jet, TheBindingStateIsPartOfTheDocumentEditsAndJournal) {
  const State s = parse_state_document(
      R"({"version":1,"backends":[{"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11",
          "bridge":"br0"}],"services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp",
          "backends":[{"name":"vm1","port":80,"state":"horizon"}]}]})");
  EXPECT_EQ(s.services[0].backends[0].state, BindingState::kHorizon);
  EXPECT_EQ(service_to_json(s.services[0])["backends"][0]["state"], "horizon");
  try {
    parse_state_document(
        R"({"version":1,"backends":[{"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11",
            "bridge":"br0"}],"services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp",
            "backends":[{"name":"vm1","port":80,"state":"resting"}]}]})");
    FAIL() << "a state that is not one was taken";
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), "services[0].backends[0].state");
  }
  const Edit promote = Edit::set_state(s.services[0].key, "vm1", BindingState::kActive);
  const State promoted = edited(s, promote);
  EXPECT_EQ(promoted.services[0].backends[0].state, BindingState::kActive);
  EXPECT_EQ(promoted.services[0].backends[0].port, 80);
  EXPECT_THROW(edited(s, Edit::set_state(s.services[0].key, "vm9", BindingState::kDraining)),
               DocumentError);
  EXPECT_EQ(edit_from_json(edit_to_json(promote)), promote);
  BackendRef horizon{"vm1", 81, 3, BindingState::kHorizon};
  const Edit attach = Edit::attach(s.services[0].key, horizon);
  EXPECT_EQ(edit_from_json(edit_to_json(attach)), attach);
  // A document that changes a state only says so.
  const auto lines = describe_changes(promoted, s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "+ binding 203.0.113.10:80/tcp -> vm1:80 horizon");
}

}  // namespace
}  // namespace hostlb
