// Chaining's plan on a host: which rows chain to which previous owner, and
// for how long.
#include <gtest/gtest.h>

#include "hostlb/policies/chaining.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

using std::chrono::seconds;
using TimePoint = ChainPlanner::TimePoint;

// vm1, vm2 (and vm5 when added) on hv1; vm3, vm4 on hv2.
State fleet(const std::string& extra_backend, const std::string& refs) {
  return parse_state_document(
      R"({"version":1,"backends":[
        {"name":"vm1","mac":"02:00:00:00:01:01","ipv4":"198.18.1.1","bridge":"br0","host":"hv1"},
        {"name":"vm2","mac":"02:00:00:00:01:02","ipv4":"198.18.1.2","bridge":"br0","host":"hv1"},
        {"name":"vm3","mac":"02:00:00:00:01:03","ipv4":"198.18.1.3","bridge":"br0","host":"hv2"},
        {"name":"vm4","mac":"02:00:00:00:01:04","ipv4":"198.18.1.4","bridge":"br0","host":"hv2"})" +
      extra_backend + R"(],
      "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","rows":1021,"backends":[)" +
      refs + "]}]}");
}
const std::string kVm5 =
    R"(,{"name":"vm5","mac":"02:00:00:00:01:05","ipv4":"198.18.1.5","bridge":"br0","host":"hv1"})";
const std::string kFour =
    R"({"name":"vm1","port":80},{"name":"vm2","port":80},{"name":"vm3","port":80},{"name":"vm4","port":80})";

GatewayService table_of(const State& s, const DrainedBindings& drained = {}) {
  return compile_gateway(s, {}, drained).services[0];
}

TEST(Chaining, RowsMovedToALocalBackendChainToTheirRemotePreviousOwner) {
  ChainPlanner planner("hv1", seconds(600));
  const TimePoint t0{};
  const State before = fleet(kVm5, kFour);
  planner.follow(before, t0);
  ASSERT_EQ(planner.tables().services.size(), 1u);
  const ChainService service = planner.tables().services.begin()->second;
  EXPECT_EQ(service.rows, 1021u);
  EXPECT_TRUE(planner.tables().previous.empty()) << "a service new here has no previous version";

  const State after = fleet(kVm5, kFour + R"(,{"name":"vm5","port":80})");
  planner.follow(after, t0 + seconds(10));
  const GatewayService was = table_of(before), now = table_of(after);
  size_t expected = 0, from_local = 0;
  for (uint32_t row = 0; row < 1021; ++row) {
    const std::string old_owner = was.backends[was.owner[row]];
    const std::string new_owner = now.backends[now.owner[row]];
    const auto it = planner.tables().previous.find(service.index << 16 | row);
    if (new_owner == "vm5" && (old_owner == "vm3" || old_owner == "vm4")) {
      ++expected;
      ASSERT_NE(it, planner.tables().previous.end()) << "row " << row;
      EXPECT_EQ(it->second, was.macs[was.owner[row]]);
    } else {
      EXPECT_EQ(it, planner.tables().previous.end()) << "row " << row;
      if (new_owner == "vm5") ++from_local;
    }
  }
  EXPECT_GT(expected, 50u);
  EXPECT_GT(from_local, 50u) << "rows vm5 took from vm1 and vm2 need no chaining";
  EXPECT_EQ(planner.tables().previous.size(), expected);

  // A change that moves no row (a health check) keeps the rows and window.
  State checked = after;
  checked.services[0].health = HealthCheck{};
  planner.follow(checked, t0 + seconds(300));
  EXPECT_EQ(planner.tables().previous.size(), expected);
  EXPECT_FALSE(planner.expire(t0 + seconds(609)));
  EXPECT_TRUE(planner.expire(t0 + seconds(610))) << "the window counts from the change";
  EXPECT_TRUE(planner.tables().previous.empty());
  EXPECT_EQ(planner.tables().services.size(), 1u);
}

TEST(Chaining, ARemoteDrainChainsItsRowsThatMoveHere) {
  ChainPlanner planner("hv1", seconds(60));
  const State all = fleet("", kFour);
  planner.follow(all, {});
  State draining = all;
  draining.services[0].backends[2].state = BindingState::kDraining;  // vm3, on hv2
  planner.follow(draining, {});
  const GatewayService was = table_of(all);
  const GatewayService now = table_of(draining, {{all.services[0].key, "vm3"}});
  const uint32_t index = planner.tables().services.begin()->second.index;
  size_t expected = 0;
  for (uint32_t row = 0; row < 1021; ++row) {
    const bool moved_here =
        was.backends[was.owner[row]] == "vm3" &&
        (now.backends[now.owner[row]] == "vm1" || now.backends[now.owner[row]] == "vm2");
    EXPECT_EQ(planner.tables().previous.count(index << 16 | row), moved_here ? 1u : 0u)
        << "row " << row;
    expected += moved_here;
  }
  EXPECT_GT(expected, 50u);
  // On hv2 (vm3's own host) nothing chains: the rows left it.
  ChainPlanner hv2("hv2", seconds(60));
  hv2.follow(all, {});
  hv2.follow(draining, {});
  for (const auto& [row, mac] : hv2.tables().previous)
    EXPECT_NE(mac, *MacAddress::parse("02:00:00:00:01:03"));
}

// Two changes of a row within its window (an update of several steps,
// applied in quick succession): the row chains to its owner from before the
// first one, whose connections are those that need a second chance. Once
// that window is over, a change chains to the owner it replaces.
TEST(Chaining, ARowChangedTwiceWithinItsWindowChainsToItsOwnerBeforeTheFirstChange) {
  const std::string two = R"({"name":"vm1","port":80},{"name":"vm3","port":80})";
  const std::string three = two + R"(,{"name":"vm4","port":80})";
  const std::string four = three + R"(,{"name":"vm5","port":80})";
  const State s0 = fleet(kVm5, two), s1 = fleet(kVm5, three), s2 = fleet(kVm5, four);
  const GatewayService t0 = table_of(s0), t1 = table_of(s1), t2 = table_of(s2);
  for (const bool within : {true, false}) {
    ChainPlanner planner("hv1", seconds(60));
    planner.follow(s0, TimePoint{});
    planner.follow(s1, TimePoint{} + seconds(10));  // vm4 (hv2) takes rows: none here
    EXPECT_TRUE(planner.tables().previous.empty());
    const TimePoint second = TimePoint{} + seconds(within ? 20 : 71);
    planner.follow(s2, second);  // vm5 (hv1) takes rows
    const uint32_t index = planner.tables().services.begin()->second.index;
    size_t twice = 0;
    for (uint32_t row = 0; row < 1021; ++row) {
      const std::string first = t0.backends[t0.owner[row]], last = t2.backends[t2.owner[row]];
      const std::string middle = t1.backends[t1.owner[row]];
      const std::string chains_to = within ? first : middle;
      const auto it = planner.tables().previous.find(index << 16 | row);
      if (last == "vm5" && chains_to != "vm1") {
        ASSERT_NE(it, planner.tables().previous.end()) << "row " << row;
        EXPECT_EQ(it->second, s2.find_backend(chains_to)->mac) << "row " << row;
        twice += first != middle;
      } else {
        EXPECT_EQ(it, planner.tables().previous.end()) << "row " << row;
      }
    }
    EXPECT_GT(twice, 5u) << "rows vm3 -> vm4 -> vm5 (or vm1 -> vm4 -> vm5)";
    EXPECT_FALSE(planner.expire(second + seconds(59)));
    EXPECT_TRUE(planner.expire(second + seconds(60))) << "the second change's window";
    EXPECT_TRUE(planner.tables().previous.empty());
  }
}

TEST(Chaining, WhatChainsOutlivesARestartUntilItsWindowEnds) {
  ChainPlanner planner("hv1", seconds(600));
  const TimePoint t0{};
  planner.follow(fleet(kVm5, kFour), t0);
  const State after = fleet(kVm5, kFour + R"(,{"name":"vm5","port":80})");
  planner.follow(after, t0);
  ASSERT_FALSE(planner.tables().previous.empty());
  // Saved 100 s into the window, at Unix time 1,000,000 s.
  const auto saved = planner.to_json(t0 + seconds(100), 1'000'000'000);
  EXPECT_EQ(saved["services"][0]["until_ms"], 1'000'500'000);

  // A new run, 50 s later on both clocks (its monotonic clock starts anew).
  ChainPlanner again("hv1", seconds(600));
  const TimePoint t1 = TimePoint{} + seconds(5);
  again.follow(after, t1);
  EXPECT_TRUE(again.tables().previous.empty()) << "a run knows no previous version of its own";
  again.restore(saved, t1, 1'000'050'000);
  EXPECT_EQ(again.tables(), planner.tables());
  EXPECT_FALSE(again.expire(t1 + seconds(449)));
  EXPECT_TRUE(again.expire(t1 + seconds(450))) << "the window ends when it would have";

  // A record past its window, or not a record: nothing restored.
  ChainPlanner late("hv1", seconds(600));
  late.follow(after, t1);
  late.restore(saved, t1, 1'000'600'000);
  EXPECT_TRUE(late.tables().previous.empty());
  auto bad = saved;
  bad["services"][0]["rows"][0] = "row";
  EXPECT_THROW(late.restore(bad, t1, 1'000'050'000), DocumentError);
  EXPECT_TRUE(late.tables().previous.empty());
}

TEST(Chaining, AServiceNoLongerServedHereIsForgotten) {
  ChainPlanner planner("hv1", seconds(60));
  planner.follow(fleet("", kFour), {});
  ASSERT_EQ(planner.tables().services.size(), 1u);
  planner.follow(fleet("", R"({"name":"vm3","port":80},{"name":"vm4","port":80})"), {});
  EXPECT_TRUE(planner.tables().services.empty());
  EXPECT_TRUE(planner.tables().previous.empty());
  EXPECT_EQ(planner.service_of(1), nullptr);
}

}  // namespace
}  // namespace hostlb
