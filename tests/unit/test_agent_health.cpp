// Component tests: health decides which bindings serve, through the agent's
// every path (start-up, documents, edits, probe transitions), against the
// stateful kernel fakes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "agent.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_kernel.h"
#include "hostlb/netlink/nft_batch.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

using testing::FakeNft;

const char* kNoCheck = "";
const char* kClosed = R"(,"health":{"interval":1,"timeout":1})";
const char* kOpen = R"(,"health":{"interval":1,"timeout":1,"start":"up"})";

State document(const std::string& health) {
  return parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp",
                 "backends":[{"name":"web-1","port":8080},{"name":"web-2","port":8080}])" +
                              health + "}]}");
}

const ServiceKey kService = *parse_service_key("203.0.113.10:80/tcp");
const BindingKey kWeb1{kService, "web-1"};
const BindingKey kWeb2{kService, "web-2"};
const DeliveryKey kWeb1Key{*MacAddress::parse("02:00:00:00:01:11"), kService};
const DeliveryKey kWeb2Key{*MacAddress::parse("02:00:00:00:01:12"), kService};

HealthCheck check_of(const State& s) { return *s.services[0].health; }

class AgentHealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("hostlb-agent-health-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  struct Daemon {
    Daemon(FakeNft& nft, testing::FakeRoutes& routes, testing::FakeSysctls& sysctls,
           const std::string& dir, HealthBook& book)
        : store(dir),
          reconciler(nft, routes, sysctls, {MarkLayout(MarkLayout::kDefaultMask), true}),
          agent(reconciler, store, conntrack, {60, &clock}) {
      agent.load_persisted();
      agent.set_health(&book);
    }
    StateStore store;
    Reconciler reconciler;
    testing::FakeConntrack conntrack;
    testing::FakeClock clock;
    Agent agent;
  };
  // The book says `key` is up (or down), as probes would.
  void probe(const BindingKey& key, bool ok, const State& s) {
    book_.track({kWeb1, kWeb2}, 0);
    const HealthCheck c = check_of(s);
    for (uint32_t i = 0; i < std::max(c.rise, c.fall); ++i)
      book_.record(key, {ok, ok ? "connected" : "timeout", 1}, c, 0);
  }

  std::filesystem::path dir_;
  FakeNft nft_;
  testing::FakeRoutes routes_;
  testing::FakeSysctls sysctls_;
  HealthBook book_;
};

TEST_F(AgentHealthTest, ServicesWithoutACheckServeAsBefore) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  d.agent.start(document(kNoCheck));
  EXPECT_FALSE(nft_.refuses(kWeb1Key));
  EXPECT_FALSE(nft_.refuses(kWeb2Key));
  EXPECT_EQ(d.agent.follow_health({kWeb1, kWeb2}), 0u);
}

TEST_F(AgentHealthTest, ANewBindingWaitsForItsFirstSuccessThenFollowsItsHealth) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  const State s = document(kClosed);
  d.agent.start(s);
  EXPECT_TRUE(nft_.refuses(kWeb1Key)) << "fail closed: not yet checked";
  EXPECT_TRUE(nft_.refuses(kWeb2Key));
  EXPECT_EQ(nft_.difference(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask)),
            std::nullopt);

  probe(kWeb1, true, s);
  const int before = nft_.increments;
  EXPECT_EQ(d.agent.follow_health({kWeb1}), 1u);
  EXPECT_EQ(nft_.increments, before + 1) << "one kernel change for one transition";
  EXPECT_FALSE(nft_.refuses(kWeb1Key));
  EXPECT_TRUE(nft_.refuses(kWeb2Key)) << "no other binding is touched";
  EXPECT_NE(nft_.ruleset().find("02:00:00:00:01:11 . 203.0.113.10 . tcp . 80 : 198.18.1.11"),
            std::string::npos);
  EXPECT_EQ(d.agent.follow_health({kWeb1}), 0u) << "nothing to do twice";
  EXPECT_EQ(nft_.increments, before + 1);

  // Down: refused again, its identity and its connections kept.
  const uint32_t id = d.agent.datapath().bindings[0].id;
  d.conntrack.entries = {MarkLayout(MarkLayout::kDefaultMask).mark_for(id)};
  probe(kWeb1, false, s);
  EXPECT_EQ(d.agent.follow_health({kWeb1}), 1u);
  EXPECT_TRUE(nft_.refuses(kWeb1Key));
  EXPECT_EQ(d.agent.datapath().bindings[0].id, id);
  EXPECT_EQ(d.conntrack.entries.size(), 1u) << "established connections are kept";
  EXPECT_EQ(d.agent.owner(id)->backend, "web-1");
}

TEST_F(AgentHealthTest, FailOpenServesUntilProvenDown) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  const State s = document(kOpen);
  d.agent.start(s);
  EXPECT_FALSE(nft_.refuses(kWeb1Key));
  probe(kWeb1, false, s);
  d.agent.follow_health({kWeb1});
  EXPECT_TRUE(nft_.refuses(kWeb1Key));
}

TEST_F(AgentHealthTest, TheLastKnownHealthHoldsFromStartUp) {
  const State s = document(kOpen);
  probe(kWeb1, false, s);  // as the previous run left it
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  d.agent.start(s);
  EXPECT_TRUE(nft_.refuses(kWeb1Key)) << "known down, although the check starts up";
  EXPECT_FALSE(nft_.refuses(kWeb2Key));
}

TEST_F(AgentHealthTest, ADocumentAppliedAgainLeavesHealthAndKernelAlone) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  const State s = document(kOpen);
  d.agent.start(s);
  probe(kWeb1, false, s);
  d.agent.follow_health({kWeb1});
  const int before = nft_.increments;
  d.agent.change(s);
  EXPECT_EQ(nft_.increments, before) << "no churn";
  EXPECT_TRUE(nft_.refuses(kWeb1Key));
  // A re-pointed binding keeps its health.
  State moved = s;
  moved.services[0].backends[0].port = 9090;
  d.agent.change(moved);
  EXPECT_TRUE(nft_.refuses(kWeb1Key));
  EXPECT_EQ(nft_.difference(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask)),
            std::nullopt);
}

TEST_F(AgentHealthTest, AddingACheckKeepsServingRemovingItServesAgain) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  d.agent.start(document(kNoCheck));
  // A check added to a serving service: it serves on until probes say.
  d.agent.edit(Edit::set_health(kService, check_of(document(kClosed))));
  EXPECT_FALSE(nft_.refuses(kWeb1Key));
  probe(kWeb1, false, document(kClosed));
  d.agent.follow_health({kWeb1});
  EXPECT_TRUE(nft_.refuses(kWeb1Key));
  // The check removed: health no longer matters.
  d.agent.edit(Edit::set_health(kService, std::nullopt));
  EXPECT_FALSE(nft_.refuses(kWeb1Key));
  EXPECT_EQ(nft_.difference(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask)),
            std::nullopt);
}

TEST_F(AgentHealthTest, AnAttachToACheckedServiceStartsClosedAndARemovedDownBindingRetires) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  State s = document(kClosed);
  s.services[0].backends.pop_back();  // web-2 attached later
  d.agent.start(s);
  d.agent.edit(Edit::attach(kService, {"web-2", 8080, 1}));
  EXPECT_TRUE(nft_.refuses(kWeb2Key));
  // Detached while down: retired like any binding (refused for a while).
  d.agent.edit(Edit::detach(kService, "web-2"));
  EXPECT_TRUE(nft_.refuses(kWeb2Key));
  ASSERT_EQ(d.agent.retired().entries().size(), 1u);
  EXPECT_TRUE(d.agent.retired().entries()[0].binding.serving);
  EXPECT_EQ(nft_.difference(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask)),
            std::nullopt);
}

TEST_F(AgentHealthTest, ABindingBackWhileRefusedIsRefusedForItsHealthInstead) {
  Daemon d(nft_, routes_, sysctls_, dir_, book_);
  const State s = document(kClosed);
  d.agent.start(s);
  probe(kWeb2, true, s);
  d.agent.follow_health({kWeb2});
  d.agent.edit(Edit::detach(kService, "web-2"));
  ASSERT_TRUE(nft_.refuses(kWeb2Key)) << "removed: refused for a while";
  // Attached again while refused, and known down by then: the key stops
  // being refused as removed and is refused as down, in one change.
  probe(kWeb2, false, s);
  d.agent.edit(Edit::attach(kService, {"web-2", 8080, 1}));
  EXPECT_TRUE(nft_.refuses(kWeb2Key));
  EXPECT_TRUE(d.agent.retired().empty());
  EXPECT_EQ(nft_.difference(d.agent.datapath(), MarkLayout(MarkLayout::kDefaultMask)),
            std::nullopt);
  const std::string batch = describe_batch(encode_diff_batch(
      [] {
        DatapathDiff diff;
        Binding b{kWeb2, kWeb2Key.mac, *IpAddress::parse("198.18.1.12"), 8080, 2, false};
        diff.bindings_added.push_back(b);
        diff.refused_removed.push_back(kWeb2Key);
        return diff;
      }(),
      MarkLayout(MarkLayout::kDefaultMask), 1));
  EXPECT_LT(batch.find("delsetelem"), batch.find("newsetelem")) << batch;
}

}  // namespace
}  // namespace hostlb
