// Component tests: the agent's apply path against stateful kernel fakes and
// a real state directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_kernel.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

using testing::FakeNft;
using testing::FakeRoutes;
using testing::FakeSysctls;

State example(const std::string& bridge = "br0") {
  return parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":")" +
                              bridge + R"("}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]},
                {"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}]})");
}

// The message of the PreconditionError that starting with `state` raises,
// or "(started)" if it did not raise one.
std::string precondition_refused(Agent& agent, const State& state) {
  try {
    agent.start(state);
  } catch (const PreconditionError& e) {
    return e.what();
  }
  return "(started)";
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("hostlb-agent-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  struct Daemon {
    Daemon(FakeNft& nft, FakeRoutes& routes, FakeSysctls& sysctls, const std::string& dir,
           bool manage_sysctls = true)
        : store(dir),
          reconciler(nft, routes, sysctls, {MarkLayout(MarkLayout::kDefaultMask), manage_sysctls}),
          agent(reconciler, store, conntrack, {60, &clock}) {
      agent.load_persisted();
    }
    StateStore store;
    Reconciler reconciler;
    testing::FakeConntrack conntrack;
    testing::FakeClock clock;
    Agent agent;
  };

  std::filesystem::path dir_;
  FakeNft nft_;
  FakeRoutes routes_;
  FakeSysctls sysctls_;
};

TEST_F(AgentTest, AppliesRulesetHostEntriesAndSysctlsThenPersists) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  EXPECT_NE(nft_.ruleset().find("02:00:00:00:01:11 . 203.0.113.10 . tcp . 80 : 198.18.1.11 . 8080"),
            std::string::npos);
  EXPECT_EQ(routes_.routes.size(), 2u);  // IPv4 and IPv6 host routes
  EXPECT_EQ(routes_.neighbours.size(), 2u);
  EXPECT_EQ(sysctls_.values["net/ipv4/conf/br0/forwarding"], "1");
  EXPECT_EQ(sysctls_.values["net/ipv6/conf/br0/forwarding"], "1");
  EXPECT_EQ(sysctls_.values["net/bridge/bridge-nf-call-ip6tables"], "1");
  EXPECT_EQ(sysctls_.values["net/ipv4/conf/br1/forwarding"], "0") << "unused bridge untouched";
  EXPECT_TRUE(std::filesystem::exists(dir_ / "state.json"));
}

TEST_F(AgentTest, RestartRestoresTheSameRulesetAndIdentities) {
  {
    Daemon d(nft_, routes_, sysctls_, dir_);
    d.agent.start(example());
  }
  const std::string before = nft_.ruleset();
  FakeNft fresh;
  Daemon d(fresh, routes_, sysctls_, dir_);
  ASSERT_TRUE(d.agent.has_persisted());
  d.agent.start(std::nullopt);
  EXPECT_EQ(fresh.ruleset(), before);
}

TEST_F(AgentTest, IdentitiesSurviveARestartWithAChangedConfig) {
  {
    Daemon d(nft_, routes_, sysctls_, dir_);
    d.agent.start(example());
  }
  Daemon d(nft_, routes_, sysctls_, dir_);
  State changed = example();
  changed.services.erase(changed.services.begin());  // 203.0.113.10 goes
  d.agent.start(changed);
  // 203.0.113.20 keeps identity 2 although it is now the only binding.
  EXPECT_NE(nft_.ruleset().find("203.0.113.20 . tcp . 80 : 0x00002000"), std::string::npos)
      << nft_.ruleset();
}

TEST_F(AgentTest, MissingBridgeChangesNothing) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  EXPECT_THROW(d.agent.start(example("br9")), PreconditionError);
  EXPECT_EQ(nft_.transactions, 0);
  EXPECT_TRUE(routes_.routes.empty());
  EXPECT_EQ(sysctls_.writes, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "state.json"));
}

TEST_F(AgentTest, BridgeThatIsDownChangesNothing) {
  routes_.down.insert("br0");
  Daemon d(nft_, routes_, sysctls_, dir_);
  EXPECT_EQ(precondition_refused(d.agent, example()), "bridge br0 is down");
  EXPECT_EQ(nft_.transactions, 0);
  EXPECT_TRUE(routes_.routes.empty());
}

TEST_F(AgentTest, MissingBrNetfilterIsAPreconditionError) {
  sysctls_.values.erase("net/bridge/bridge-nf-call-iptables");
  Daemon d(nft_, routes_, sysctls_, dir_);
  EXPECT_NE(precondition_refused(d.agent, example()).find("br_netfilter is not loaded"),
            std::string::npos);
  EXPECT_EQ(nft_.transactions, 0);
}

TEST_F(AgentTest, UnmanagedSysctlsAreReportedNotSet) {
  Daemon d(nft_, routes_, sysctls_, dir_, /*manage_sysctls=*/false);
  EXPECT_EQ(precondition_refused(d.agent, example()),
            "sysctl net.bridge.bridge-nf-call-ip6tables is 0, the datapath needs 1 (bridged "
            "IPv6 frames must pass the inet hooks for DNAT)");
  EXPECT_EQ(sysctls_.writes, 0);
  EXPECT_EQ(nft_.transactions, 0);
}

TEST_F(AgentTest, FailedTransactionRollsBackNewHostEntriesAndKeepsOldState) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const std::string ruleset = nft_.ruleset();
  const auto routes = routes_.routes;

  State more = example();
  more.backends.push_back({"web-2",
                           *MacAddress::parse("02:00:00:00:01:12"),
                           IpAddress::parse("198.18.1.12"),
                           {},
                           "br1"});
  more.services[0].backends.push_back({"web-2", 8080});
  nft_.failures_to_inject = 2;  // the change, and the whole-table fallback
  EXPECT_THROW(d.agent.change(more), KernelError);
  EXPECT_EQ(nft_.ruleset(), ruleset);
  EXPECT_EQ(routes_.routes, routes) << "the new backend's route was rolled back";
  EXPECT_EQ(d.agent.current(), example());
  EXPECT_EQ(persisted_state_from_text(read_file((dir_ / "state.json").string())).state, example())
      << "the persisted state is still the last one applied";
}

TEST_F(AgentTest, RemovedBackendLosesItsHostEntriesAndStaleRoutesGo) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  // A route of ours the state does not know about (e.g. a lost state dir).
  routes_.routes.insert({10, *IpAddress::parse("198.18.9.9")});
  d.agent.start(State{});
  EXPECT_TRUE(routes_.routes.empty());
  EXPECT_TRUE(routes_.neighbours.empty());
  for (const char* map : {"targets4", "marks4", "targets6", "marks6", "guard_macs", "guard_vips4"})
    EXPECT_EQ(nft_.ruleset().find(std::string("add element inet hostlb ") + map), std::string::npos)
        << map;
  // Gateways may still send to the removed bindings for a while: refused.
  EXPECT_NE(nft_.ruleset().find("add element inet hostlb refuse4"), std::string::npos);
}

TEST_F(AgentTest, AChangeTouchesOnlyWhatDiffers) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const auto routes_before = routes_.routes;
  State more = example();
  more.services.push_back({*parse_service_key("203.0.113.30:443/tcp"), {{"web-1", 8443}}});
  const ApplyReport report = d.agent.change(more);
  EXPECT_EQ(report.bindings_added, 1u);
  EXPECT_EQ(report.bindings_removed, 0u);
  EXPECT_FALSE(report.replaced_table);
  EXPECT_EQ(nft_.replacements, 1) << "only the start-up rebuilt the table";
  EXPECT_EQ(nft_.increments, 1);
  EXPECT_EQ(routes_.routes, routes_before);
  // The result is what a fresh start with the new state would build.
  FakeNft fresh;
  fresh.replace(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask));
  EXPECT_EQ(nft_.ruleset(), fresh.ruleset());
}

TEST_F(AgentTest, TheSameStateTwiceChangesNothingInTheKernel) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const int transactions = nft_.transactions;
  const auto mtime = std::filesystem::last_write_time(dir_ / "state.json");
  const ApplyReport report = d.agent.change(example());
  EXPECT_FALSE(report.kernel_changed());
  EXPECT_EQ(nft_.transactions, transactions);
  EXPECT_EQ(std::filesystem::last_write_time(dir_ / "state.json"), mtime);
}

TEST_F(AgentTest, AKernelThatDisagreesIsRebuiltWhole) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  nft_.drop_binding(1);  // someone deleted a binding behind hostlbd's back
  State fewer = example();
  fewer.services.erase(fewer.services.begin());  // removes binding 1: ENOENT
  const ApplyReport report = d.agent.change(fewer);
  EXPECT_TRUE(report.replaced_table);
  FakeNft fresh;
  fresh.replace(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask));
  EXPECT_EQ(nft_.ruleset(), fresh.ruleset());
}

TEST_F(AgentTest, RemovingABackendOnlyRemovesItsHostEntries) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  State two = example();
  two.backends.push_back({"web-2",
                          *MacAddress::parse("02:00:00:00:01:12"),
                          IpAddress::parse("198.18.1.12"),
                          {},
                          "br0"});
  d.agent.start(two);
  ASSERT_EQ(routes_.routes.size(), 3u);
  d.agent.change(example());
  EXPECT_EQ(routes_.routes.size(), 2u);
  EXPECT_FALSE(routes_.routes.count({10, *IpAddress::parse("198.18.1.12")}));
}

TEST_F(AgentTest, EditsAreJournaledAndReplayedAfterARestart) {
  std::string ruleset;
  State expected;
  {
    Daemon d(nft_, routes_, sysctls_, dir_);
    d.agent.start(example());
    d.agent.edit(Edit::add_service({*parse_service_key("203.0.113.30:53/udp"), {{"web-1", 5353}}}));
    d.agent.edit(Edit::attach(*parse_service_key("203.0.113.10:80/tcp"), {"web-1", 9090}));
    d.agent.edit(Edit::remove_service(*parse_service_key("203.0.113.20:80/tcp")));
    EXPECT_EQ(d.store.journal_length(), 3u);
    ruleset = nft_.ruleset();
    expected = d.agent.current();
  }
  FakeNft fresh;
  Daemon d(fresh, routes_, sysctls_, dir_);
  EXPECT_EQ(d.agent.current(), expected);
  d.agent.start(std::nullopt);
  EXPECT_EQ(fresh.ruleset(), ruleset) << "same bindings with the same identities";
  EXPECT_EQ(d.store.journal_length(), 0u) << "the start folded the journal into a snapshot";
}

TEST_F(AgentTest, ADocumentAppliedWhileRunningIsJournaledAsItsEdits) {
  std::string ruleset;
  State changed = example();
  changed.services[0].backends[0].port = 9090;
  changed.services.push_back({*parse_service_key("203.0.113.30:53/udp"), {{"web-1", 53}}});
  {
    Daemon d(nft_, routes_, sysctls_, dir_);
    d.agent.start(example());
    d.agent.change(changed);
    EXPECT_EQ(d.store.journal_length(), 1u) << "one record, not a new snapshot";
    ruleset = nft_.ruleset();
  }
  FakeNft fresh;
  Daemon d(fresh, routes_, sysctls_, dir_);
  EXPECT_EQ(d.agent.current(), changed);
  d.agent.start(std::nullopt);
  EXPECT_EQ(fresh.ruleset(), ruleset);
}

TEST_F(AgentTest, ATornLastJournalRecordIsDropped) {
  State expected;
  {
    Daemon d(nft_, routes_, sysctls_, dir_);
    d.agent.start(example());
    d.agent.edit(Edit::detach(*parse_service_key("203.0.113.20:80/tcp"), "web-1"));
    expected = d.agent.current();
  }
  std::string journal;
  for (const auto& entry : std::filesystem::directory_iterator(dir_))
    if (entry.path().filename().string().rfind("journal-", 0) == 0) journal = entry.path();
  ASSERT_FALSE(journal.empty());
  std::ofstream(journal, std::ios::app) << R"({"edits":[{"op":"service.del","serv)";
  Daemon d(nft_, routes_, sysctls_, dir_);
  EXPECT_EQ(d.agent.current(), expected);
}

TEST_F(AgentTest, TheJournalIsFoldedIntoASnapshotWhenLong) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const auto key = *parse_service_key("203.0.113.20:80/tcp");
  for (size_t i = 0; i < Agent::kJournalLimit + 10; ++i)
    d.agent.edit(Edit::attach(key, {"web-1", static_cast<uint16_t>(1000 + i % 2)}));
  EXPECT_LT(d.store.journal_length(), 20u);
}

TEST_F(AgentTest, RemovingABindingFlushesExactlyItsConnections) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());  // 10:80 -> web-1 is identity 1, 20:80 -> web-1 is 2
  d.conntrack.entries = {marks.mark_for(1), marks.mark_for(1) | 0x7, marks.mark_for(2), 0x5, 0};
  auto report = d.agent.edit(Edit::detach(*parse_service_key("203.0.113.10:80/tcp"), "web-1"));
  EXPECT_EQ(report.connections_flushed, 2u);
  EXPECT_EQ(d.conntrack.entries, (std::vector<uint32_t>{marks.mark_for(2), 0x5, 0}));

  // Re-pointing a binding keeps its connections (they go where they went).
  report = d.agent.edit(Edit::attach(*parse_service_key("203.0.113.20:80/tcp"), {"web-1", 9090}));
  EXPECT_EQ(report.connections_flushed, 0u);
  EXPECT_EQ(d.conntrack.entries.size(), 3u);

  // Removing the backend flushes all of its bindings; others' entries stay.
  report = d.agent.edit(Edit::remove_backend("web-1"));
  EXPECT_EQ(report.connections_flushed, 1u);
  EXPECT_EQ(d.conntrack.entries, (std::vector<uint32_t>{0x5, 0}));
}

TEST_F(AgentTest, ADocumentThatDropsABindingFlushesItsConnections) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  d.conntrack.entries = {marks.mark_for(1), marks.mark_for(2)};
  State fewer = example();
  fewer.services.erase(fewer.services.begin() + 1);  // 20:80 goes
  EXPECT_EQ(d.agent.change(fewer).connections_flushed, 1u);
  EXPECT_EQ(d.conntrack.entries, (std::vector<uint32_t>{marks.mark_for(1)}));
  EXPECT_EQ(d.agent.flush(std::nullopt, std::string("web-1")), 1u);
  EXPECT_TRUE(d.conntrack.entries.empty());
}

TEST_F(AgentTest, CleanupRemovesTableAndHostEntries) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  d.agent.cleanup();
  EXPECT_EQ(nft_.ruleset(), "");
  EXPECT_TRUE(routes_.routes.empty());
  EXPECT_TRUE(routes_.neighbours.empty());
  EXPECT_EQ(d.agent.current(), State{});
}

TEST_F(AgentTest, SecondDaemonOnTheSameStateDirIsRefused) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  EXPECT_THROW(StateStore second(dir_), StoreError);
}

TEST_F(AgentTest, CorruptStateFileIsAnErrorNotAGuess) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "state.json") << "{not json";
  StateStore store(dir_);
  EXPECT_THROW(store.load(), StoreError);
}

const MarkLayout kMarks(MarkLayout::kDefaultMask);

uint32_t id_of(const Agent& agent, const std::string& service) {
  for (const auto& b : agent.datapath().bindings)
    if (b.key.service.str() == service) return b.id;
  return 0;
}

DeliveryKey delivery_key(const std::string& service) {
  return {*MacAddress::parse("02:00:00:00:01:11"), *parse_service_key(service)};
}

TEST_F(AgentTest, ADrainKeepsConnectionsAndIdentityRefusesNewOnesThenFlushes) {
  auto owner = std::make_unique<Daemon>(nft_, routes_, sysctls_, dir_);
  Daemon& d = *owner;
  d.agent.start(example());
  const uint32_t id = id_of(d.agent, "203.0.113.10:80/tcp");
  const uint32_t other = id_of(d.agent, "203.0.113.20:80/tcp");
  d.conntrack.entries = {kMarks.mark_for(id), kMarks.mark_for(id), kMarks.mark_for(other)};

  const ApplyReport report =
      d.agent.edit(Edit::remove_service(*parse_service_key("203.0.113.10:80/tcp")), 30);
  EXPECT_EQ(report.bindings_draining, 1u);
  EXPECT_EQ(report.connections_flushed, 0u);
  EXPECT_EQ(d.conntrack.entries.size(), 3u) << "established connections continue";
  EXPECT_TRUE(nft_.refuses(delivery_key("203.0.113.10:80/tcp"))) << "new ones are refused";
  EXPECT_EQ(nft_.ruleset().find("203.0.113.10 . tcp . 80 :"), std::string::npos)
      << "and not DNATed any more";
  ASSERT_EQ(d.agent.next_deadline(), d.clock.unix_seconds() + 30);

  // The draining binding's identity is not handed to a newcomer.
  d.agent.edit(Edit::add_service({*parse_service_key("203.0.113.30:80/tcp"), {{"web-1", 80}}}));
  EXPECT_NE(id_of(d.agent, "203.0.113.30:80/tcp"), id);

  // Nothing is due before the drain ends.
  d.clock.advance(std::chrono::seconds(29));
  EXPECT_EQ(d.agent.expire(), 0u);
  EXPECT_EQ(d.conntrack.entries.size(), 3u);

  // A restart in the middle of the drain keeps it (journal replay).
  const int64_t stopped_at = d.clock.unix_seconds();
  const auto entries = d.conntrack.entries;
  owner.reset();
  Daemon restarted(nft_, routes_, sysctls_, dir_);
  restarted.clock.set_unix_seconds(stopped_at + 1);
  restarted.conntrack.entries = entries;
  restarted.agent.start(std::nullopt);
  ASSERT_EQ(restarted.agent.retired().entries().size(), 1u);
  EXPECT_TRUE(nft_.refuses(delivery_key("203.0.113.10:80/tcp"))) << "still refused after restart";

  // The drain ends: what is left is flushed, the other VIP's connection
  // stays, the key is refused for refuse_seconds more.
  EXPECT_EQ(restarted.agent.expire(), 2u);
  EXPECT_EQ(restarted.conntrack.entries, std::vector<uint32_t>{kMarks.mark_for(other)});
  EXPECT_TRUE(nft_.refuses(delivery_key("203.0.113.10:80/tcp")));
  ASSERT_EQ(restarted.agent.next_deadline(), restarted.clock.unix_seconds() + 60);
  restarted.clock.advance(std::chrono::seconds(60));
  restarted.agent.expire();
  EXPECT_FALSE(nft_.refuses(delivery_key("203.0.113.10:80/tcp")));
  EXPECT_TRUE(restarted.agent.retired().empty());
  EXPECT_FALSE(restarted.agent.next_deadline());

  // The identity is free once its connections are gone.
  restarted.agent.edit(
      Edit::add_service({*parse_service_key("203.0.113.40:80/tcp"), {{"web-1", 80}}}));
  EXPECT_EQ(id_of(restarted.agent, "203.0.113.40:80/tcp"), id);
}

TEST_F(AgentTest, ABindingThatComesBackDuringItsDrainKeepsItsConnections) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const ServiceKey key = *parse_service_key("203.0.113.10:80/tcp");
  const uint32_t id = id_of(d.agent, key.str());
  d.conntrack.entries = {kMarks.mark_for(id)};
  d.agent.edit(Edit::detach(key, "web-1"), 30);
  ASSERT_TRUE(nft_.refuses(delivery_key(key.str())));
  d.agent.edit(Edit::attach(key, {"web-1", 8080}));
  EXPECT_EQ(id_of(d.agent, key.str()), id) << "same identity: its connections are its own";
  EXPECT_FALSE(nft_.refuses(delivery_key(key.str())));
  EXPECT_TRUE(d.agent.retired().empty());
  d.clock.advance(std::chrono::seconds(100));
  d.agent.expire();
  EXPECT_EQ(d.conntrack.entries.size(), 1u) << "nothing flushed";
}

TEST_F(AgentTest, RemovalWithoutDrainFlushesAtOnceAndRefusesForAWhile) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const uint32_t id = id_of(d.agent, "203.0.113.10:80/tcp");
  d.conntrack.entries = {kMarks.mark_for(id)};
  State next = example();
  next.services.erase(next.services.begin());
  const ApplyReport report = d.agent.change(next);
  EXPECT_EQ(report.connections_flushed, 1u);
  EXPECT_TRUE(d.conntrack.entries.empty());
  EXPECT_TRUE(nft_.refuses(delivery_key("203.0.113.10:80/tcp")));
  // A packet is refused and counted until the refusal ends.
  EXPECT_TRUE(nft_.refuse_packet(delivery_key("203.0.113.10:80/tcp")));
  EXPECT_EQ(nft_.counters().refused.at(delivery_key("203.0.113.10:80/tcp")), 1u);
  d.clock.advance(std::chrono::seconds(60));
  d.agent.expire();
  EXPECT_FALSE(nft_.refuses(delivery_key("203.0.113.10:80/tcp")));
}

// Whatever another process changes in hostlb's table — an element of a map
// or set, or a rule — the drift check sees it and the repair restores the
// table hostlbd applied, as the real check does (the fake compares the same
// parts).
TEST_F(AgentTest, RepairRestoresAnyPartOfTheTableEditedByOthers) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  State next = example();
  next.services.erase(next.services.begin());
  d.agent.change(next, 30);  // a draining key sits in the refuse set
  const std::string applied = nft_.ruleset();
  EXPECT_TRUE(d.agent.repair(true, true).empty()) << "nothing differs yet";
  EXPECT_FALSE(nft_.changed_by_others());

  const std::vector<std::function<void()>> edits = {
      [&] { nft_.drop_binding(id_of(d.agent, "203.0.113.20:80/tcp")); },
      [&] { nft_.drop_refused(delivery_key("203.0.113.10:80/tcp")); },
      [&] { nft_.drop_guard_mac(*MacAddress::parse("02:00:00:00:01:11")); },
      [&] { nft_.drop_rule("refuse"); },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    edits[i]();
    EXPECT_TRUE(nft_.changed_by_others()) << "edit " << i;
    const int replaced = nft_.replacements;
    EXPECT_EQ(d.agent.repair(true, false).size(), 1u) << "edit " << i << " seen";
    EXPECT_EQ(nft_.replacements, replaced + 1) << "edit " << i;
    EXPECT_EQ(nft_.ruleset(), applied) << "edit " << i << " undone";
    EXPECT_TRUE(d.agent.repair(true, false).empty()) << "edit " << i;
  }
  EXPECT_EQ(d.agent.repairs(), edits.size());
}

TEST_F(AgentTest, IdentitiesFreedInTheJournalAreFreeAfterARestart) {
  uint32_t freed = 0;
  {
    Daemon d(nft_, routes_, sysctls_, dir_);
    d.agent.start(example());
    freed = id_of(d.agent, "203.0.113.10:80/tcp");
    d.agent.edit(Edit::remove_service(*parse_service_key("203.0.113.10:80/tcp")));  // journaled
  }
  Daemon restarted(nft_, routes_, sysctls_, dir_);
  restarted.agent.start(std::nullopt);
  restarted.agent.edit(
      Edit::add_service({*parse_service_key("203.0.113.30:80/tcp"), {{"web-1", 80}}}));
  EXPECT_EQ(id_of(restarted.agent, "203.0.113.30:80/tcp"), freed)
      << "the replayed removal freed it (its connections were flushed then)";
}

TEST_F(AgentTest, AFailedDrainChangesNothing) {
  Daemon d(nft_, routes_, sysctls_, dir_);
  d.agent.start(example());
  const std::string before = nft_.ruleset();
  nft_.failures_to_inject = 2;  // the change and the fallback rebuild
  EXPECT_THROW(d.agent.edit(Edit::remove_service(*parse_service_key("203.0.113.10:80/tcp")), 30),
               KernelError);
  EXPECT_TRUE(d.agent.retired().empty());
  EXPECT_EQ(nft_.ruleset(), before);
  EXPECT_EQ(d.agent.current(), example());
}

}  // namespace
}  // namespace hostlb
