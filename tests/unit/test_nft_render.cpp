// Golden tests for the nft text hostlbd sends. The integration tests prove
// the kernel accepts it and that packets follow it; these pin its exact
// shape. Regenerate with HOSTLB_UPDATE_GOLDEN=1 after an intended change.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "hostlb/netlink/gateway.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/nft_batch.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

std::string golden_path(const std::string& name) {
  return std::string(HOSTLB_GOLDEN_DIR) + "/" + name;
}

void expect_golden(const std::string& name, const std::string& actual) {
  const std::string path = golden_path(name);
  if (std::getenv("HOSTLB_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(path) << actual;
    GTEST_SKIP() << "golden file rewritten: " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing golden file " << path;
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(actual, expected.str()) << "differs from " << path;
}

TEST(NftRender, FullRulesetGolden) {
  State state = parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080},{"name":"web-2","port":8080}]},
                {"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]},
                {"vip":"203.0.113.10","port":53,"protocol":"udp","backends":[{"name":"web-1","port":5353}]},
                {"vip":"2001:db8:f00::10","port":443,"protocol":"tcp","backends":[{"name":"web-1","port":8443}]}]})");
  const MarkLayout marks(MarkLayout::kDefaultMask);
  Datapath datapath = compile_datapath(state, {}, marks);
  // A backend that left two services: its keys are refused for a while.
  const auto mac = *MacAddress::parse("02:00:00:00:01:13");
  datapath.refused = {{mac, *parse_service_key("203.0.113.10:80/tcp")},
                      {mac, *parse_service_key("[2001:db8:f00::10]:443/tcp")}};
  expect_golden("ruleset_full.nft", render_full_ruleset(datapath, marks));
}

TEST(NftRender, DropPolicyDropsRefusedConnectionsInsteadOfAnswering) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  const std::string text =
      render_full_ruleset(Datapath{}, marks, {RefusePolicy::kDrop, MissPolicy::kDrop});
  EXPECT_NE(text.find("add rule inet hostlb refuse ct state new ether daddr . ip daddr . meta "
                      "l4proto . th dport @refuse4 drop\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("reject"), std::string::npos) << text;
}

TEST(NftRender, MissesAreCountedPerKeyThenTreatedByPolicy) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  const std::string match =
      "add rule inet hostlb refuse meta l4proto tcp ct state new tcp flags & (syn | rst) == 0 "
      "ether daddr . ip daddr . meta l4proto . th dport @marks4";
  const std::string reset = render_full_ruleset(Datapath{}, marks);
  EXPECT_NE(reset.find(match +
                       " update @misses4 { ether daddr . ip daddr . meta l4proto . th "
                       "dport }\n" +
                       match + " counter name misses reject with tcp reset\n"),
            std::string::npos)
      << reset;
  const std::string accept =
      render_full_ruleset(Datapath{}, marks, {RefusePolicy::kReject, MissPolicy::kAccept});
  EXPECT_NE(accept.find(match + " counter name misses\n"), std::string::npos) << accept;
}

TEST(NftRender, AdmissionLimitsAreSettingsAndZeroTurnsThemOff) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  RulesetPolicies policies;
  policies.admission = {3, 500, 100};
  const std::string on = render_full_ruleset(Datapath{}, marks, policies);
  EXPECT_NE(on.find("add ct timeout inet hostlb embryonic_tcp4 { protocol tcp; l3proto ip; "
                    "policy = { syn_sent: 3, syn_recv: 3 }; }\n"),
            std::string::npos)
      << on;
  EXPECT_NE(on.find("update @new_rate6 { ip6 daddr . meta l4proto . th dport limit rate over "
                    "500/second burst 100 packets } update @limited6 { ip6 daddr . meta l4proto "
                    ". th dport } counter name limited drop\n"),
            std::string::npos)
      << on;
  EXPECT_NE(on.find("add rule inet hostlb refuse meta l4proto udp ct state new ether daddr . ip6 "
                    "daddr . meta l4proto . th dport @marks6 ct timeout set \"embryonic_udp6\"\n"),
            std::string::npos)
      << on;

  policies.admission = {0, 0, 100};
  const std::string off = render_full_ruleset(Datapath{}, marks, policies);
  EXPECT_EQ(off.find("ct timeout"), std::string::npos) << off;
  EXPECT_EQ(off.find("limit rate"), std::string::npos) << off;
  EXPECT_EQ(rules_per_chain(off).at("refuse"), rules_per_chain(on).at("refuse") - 6)
      << "two rate rules and four timeout rules fewer";
  // The counted sets stay, so that reading the counters does not depend on
  // the setting.
  EXPECT_NE(off.find("add set inet hostlb limited4 "), std::string::npos) << off;
  EXPECT_NE(off.find("add counter inet hostlb limited\n"), std::string::npos) << off;
}

TEST(NftRender, EmptyStateStillOwnsItsTable) {
  const MarkLayout marks(0x0000ff00);
  expect_golden("ruleset_empty.nft", render_full_ruleset(Datapath{}, marks));
}

TEST(NftRender, TheIdentityGoesIntoTheMaskBitsOnlyWhenNoOtherBitsAreSet) {
  State state = parse_state_document(R"({"version":1,
    "backends":[{"name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"a","port":80}]}]})");
  const MarkLayout marks(0x0000ff00);
  const std::string text = render_full_ruleset(compile_datapath(state, {}, marks), marks);
  EXPECT_NE(text.find("prerouting ct mark & 0xffff00ff == 0x00000000 ct mark set ether daddr . "
                      "ip daddr . meta l4proto . th dport map @marks4\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("02:00:00:00:01:11 . 203.0.113.10 . tcp . 80 : 0x00000100\n"),
            std::string::npos)
      << text;
}

TEST(NftRender, DeleteIsIdempotent) {
  EXPECT_EQ(render_delete_ruleset(), "add table inet hostlb\ndelete table inet hostlb\n");
}

}  // namespace
}  // namespace hostlb

namespace hostlb {
namespace {

// The batch for a change: one binding removed (and refused), one whose
// target port and MAC changed, one added. Pins the messages and expressions the kernel
// receives; the integration tests prove they build the same table as the
// text path.
TEST(NftBatch, ChangeBatchGolden) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  State before = parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080},{"name":"web-2","port":8080}]},
                {"vip":"203.0.113.20","port":53,"protocol":"udp","backends":[{"name":"web-2","port":5353}]}]})");
  State after = before;
  after.services[0].backends.pop_back();                            // 10:80 -> web-2 goes
  after.services[1].backends[0].port = 5354;                        // 20:53 -> web-2 changes port
  after.backends[1].mac = *MacAddress::parse("02:00:00:00:01:13");  // and web-2 its MAC
  after.services.push_back({*parse_service_key("[2001:db8:f00::10]:443/tcp"), {{"web-1", 8443}}});
  Datapath old_dp = compile_datapath(before, {}, marks);
  Datapath new_dp = compile_datapath(after, old_dp.ids(), marks);
  // The binding that goes is refused for a while.
  new_dp.refused = {{*MacAddress::parse("02:00:00:00:01:12"), after.services[0].key}};
  NftBatch batch = encode_diff_batch(diff_datapath(old_dp, new_dp), marks, 100);
  EXPECT_EQ(batch.first_seq, 100u);
  EXPECT_EQ(batch.operations.size(), batch.messages);
  EXPECT_EQ(batch.operations.at(batch.last_seq),
            "adding 203.0.113.10:80/tcp via 02:00:00:00:01:12 to refuse4");
  expect_golden("batch_change.txt", describe_batch(batch));
}

TEST(NftBatch, EmptyDiffIsAnEmptyBatch) {
  NftBatch batch = encode_diff_batch(DatapathDiff{}, MarkLayout(MarkLayout::kDefaultMask), 1);
  EXPECT_EQ(batch.messages, 0u);
  EXPECT_EQ(describe_batch(batch), "batch begin\nbatch end\n");
}

// The gateway's table: one verdict map lookup to the service's chain, the
// row by jhash into the shared row map, eth.dst/eth.src rewritten, out of
// the fabric port; rows as element batches.
TEST(GatewayRender, SkeletonAndRowsGolden) {
  State state = parse_state_document(R"({"version":1,
    "backends":[{"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":"br0","host":"hv1"},
                {"name":"vm2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0","host":"hv2"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","rows":7,"backends":[{"name":"vm1","port":8080},{"name":"vm2","port":8080}]},
                {"vip":"2001:db8:f00::10","port":443,"protocol":"tcp","rows":3,"backends":[{"name":"vm1","port":8443}]}]})");
  const GatewayDatapath g = compile_gateway(state, {});
  const GatewayConfig config{"cli0", "fab0", *MacAddress::parse("02:00:00:00:0f:01")};
  expect_golden("gateway_skeleton.nft",
                render_gateway_skeleton(g, config) + render_gateway_entries(g.services, true));
  const auto batches = encode_gateway_rows(rows_of(g.services, true), 10);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].messages, 1u) << "10 rows fit one message";
  // A change: vm2 leaves the first service; its rows are deleted and added
  // again with vm1's MAC, in one batch.
  State fewer = state;
  fewer.services[0].backends.pop_back();
  const GatewayDiff diff = diff_gateway(g, compile_gateway(fewer, indexes_of(g)));
  const auto change = encode_gateway_rows(diff.rows, 100);
  ASSERT_EQ(change.size(), 1u);
  expect_golden("gateway_rows_change.txt", describe_batch(change[0]));
  EXPECT_EQ(encode_gateway_rows(diff.rows, 100, 1).size(), diff.rows.size())
      << "per_batch bounds the rows of one transaction";
}

}  // namespace
}  // namespace hostlb
