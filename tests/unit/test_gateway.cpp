// The gateway's tables from the fleet state: stable indexes, minimal
// diffs, digests that do not depend on how the document was written.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "hostlb/policies/gateway.h"
#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

State fleet(int backends, const std::string& extra_service = "") {
  std::string doc = R"({"version":1,"backends":[)";
  for (int i = 1; i <= backends; ++i)
    doc += std::string(i > 1 ? "," : "") + R"({"name":"vm)" + std::to_string(i) +
           R"(","mac":"02:00:00:00:01:)" + (i < 10 ? "0" : "") + std::to_string(i) +
           R"(","ipv4":"198.18.1.)" + std::to_string(10 + i) + R"(","bridge":"br0","host":"hv)" +
           std::to_string(1 + i % 2) + R"("})";
  doc +=
      R"(],"services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","rows":1021,"backends":[)";
  for (int i = 1; i <= backends; ++i)
    doc += std::string(i > 1 ? "," : "") + R"({"name":"vm)" + std::to_string(i) + R"(","port":80})";
  doc += "]}" + extra_service + "]}";
  return parse_state_document(doc);
}

const std::string kSecond =
    R"(,{"vip":"203.0.113.20","port":53,"protocol":"udp","backends":[{"name":"vm1","port":53}]})";

TEST(Gateway, EveryBackendOfTheFleetOwnsRowsWhateverItsHost) {
  const GatewayDatapath g = compile_gateway(fleet(8), {});
  ASSERT_EQ(g.services.size(), 1u);
  const GatewayService& s = g.services[0];
  EXPECT_EQ(s.rows, 1021u);
  EXPECT_EQ(s.index, 1u);
  EXPECT_EQ(s.owner.size(), 1021u);
  std::vector<size_t> count(s.backends.size());
  for (auto o : s.owner) ++count[o];
  EXPECT_EQ(std::count(count.begin(), count.end(), 0u), 0) << "all 8 own rows";
  EXPECT_EQ(s.mark(5), (1u << 16) | 5);
  EXPECT_EQ(
      compile_gateway(fleet(1, kSecond), {}).find(*parse_service_key("203.0.113.20:53/udp"))->rows,
      kDefaultRows);
}

TEST(Gateway, ARowAuditFindsRepointedMissingAndForeignRowsOnly) {
  const GatewayDatapath g = compile_gateway(fleet(4), {});
  const GatewayService& s = g.services[0];
  const MacAddress stranger = *MacAddress::parse("02:00:00:00:0e:0e");
  RowAudit audit(g);
  for (uint32_t row = 0; row < s.rows; ++row) {
    if (row == 7) continue;                                              // missing
    audit.saw(s.mark(row), row == 3 ? stranger : s.macs[s.owner[row]]);  // 3 re-pointed
  }
  audit.saw(s.mark(s.rows + 5), stranger);          // past the service's rows
  audit.saw((s.index + 100) << 16 | 1, s.macs[0]);  // no such service
  const auto rows = audit.finish();
  ASSERT_EQ(rows.size(), 4u);
  std::map<uint32_t, GatewayDiff::Row> by_mark;
  for (const auto& r : rows) by_mark[r.mark] = r;
  EXPECT_EQ(by_mark.at(s.mark(3)).before, stranger);
  EXPECT_EQ(by_mark.at(s.mark(3)).after, s.macs[s.owner[3]]);
  EXPECT_EQ(by_mark.at(s.mark(7)).before, std::nullopt);
  EXPECT_EQ(by_mark.at(s.mark(7)).after, s.macs[s.owner[7]]);
  EXPECT_EQ(by_mark.at(s.mark(s.rows + 5)).after, std::nullopt) << "not hostlbd's: deleted";
  EXPECT_EQ(by_mark.at((s.index + 100) << 16 | 1).after, std::nullopt);
  EXPECT_EQ(audit.rows_seen(), s.rows + 1);
  const RowDifferences differ = count_differences(rows);
  EXPECT_EQ(differ.repointed, 1u);
  EXPECT_EQ(differ.missing, 1u);
  EXPECT_EQ(differ.foreign, 2u);

  RowAudit clean(g);
  for (uint32_t row = 0; row < s.rows; ++row) clean.saw(s.mark(row), s.macs[s.owner[row]]);
  EXPECT_TRUE(clean.finish().empty());
}

TEST(Gateway, IndexesStayWithTheirServices) {
  const GatewayDatapath one = compile_gateway(fleet(2, kSecond), {});
  const auto first = indexes_of(one);
  EXPECT_EQ(first.size(), 2u);
  // Without the first service, the second keeps its index; a new one takes
  // the lowest free.
  State without = fleet(2, kSecond);
  without.services.erase(without.services.begin());
  const GatewayDatapath two = compile_gateway(without, first);
  EXPECT_EQ(two.services[0].index, first.at(two.services[0].key));
  const GatewayDatapath three = compile_gateway(fleet(2, kSecond), indexes_of(two));
  EXPECT_EQ(indexes_of(three), first);
}

TEST(Gateway, RemovingABackendRewritesOnlyItsRows) {
  const GatewayDatapath before = compile_gateway(fleet(8), {});
  State fewer = fleet(8);
  fewer.services[0].backends.erase(fewer.services[0].backends.begin() + 3);  // vm4
  const GatewayDatapath after = compile_gateway(fewer, indexes_of(before));
  const GatewayDiff diff = diff_gateway(before, after);
  EXPECT_TRUE(diff.services_added.empty());
  EXPECT_TRUE(diff.services_removed.empty());
  const MacAddress vm4 = *MacAddress::parse("02:00:00:00:01:04");
  size_t vm4_rows = 0;
  for (auto o : before.services[0].owner) vm4_rows += before.services[0].macs[o] == vm4;
  EXPECT_EQ(diff.rows.size(), vm4_rows) << "exactly the rows vm4 owned";
  for (const auto& r : diff.rows) {
    EXPECT_EQ(r.before, vm4);
    ASSERT_TRUE(r.after);
    EXPECT_NE(*r.after, vm4);
  }
  // Adding it back moves exactly those rows back.
  EXPECT_EQ(diff_gateway(after, before).rows.size(), vm4_rows);
}

TEST(Gateway, ARowCountChangeReplacesTheService) {
  const GatewayDatapath before = compile_gateway(fleet(3), {});
  State more = fleet(3);
  more.services[0].rows = 2039;
  const GatewayDiff diff = diff_gateway(before, compile_gateway(more, indexes_of(before)));
  EXPECT_EQ(diff.services_removed.size(), 1u);
  EXPECT_EQ(diff.services_added.size(), 1u);
  EXPECT_TRUE(diff.rows.empty());
}

TEST(Gateway, AServiceWithoutBackendsHasNoRows) {
  State empty = fleet(2);
  const GatewayDatapath before = compile_gateway(empty, {});
  empty.services[0].backends.clear();
  const GatewayDatapath after = compile_gateway(empty, indexes_of(before));
  EXPECT_TRUE(after.services[0].owner.empty());
  const GatewayDiff diff = diff_gateway(before, after);
  EXPECT_EQ(diff.rows.size(), 1021u);
  EXPECT_FALSE(diff.rows[0].after) << "rows deleted, the chain drops what has no row";
}

TEST(Gateway, TheDigestDependsOnTheTableNotOnTheDocumentsOrder) {
  State a = fleet(6, kSecond);
  State b = a;
  std::mt19937 rng(7);
  std::shuffle(b.backends.begin(), b.backends.end(), rng);
  std::shuffle(b.services.begin(), b.services.end(), rng);
  for (auto& s : b.services) std::shuffle(s.backends.begin(), s.backends.end(), rng);
  const auto ga = compile_gateway(a, {});
  const auto gb = compile_gateway(b, indexes_of(ga));
  EXPECT_EQ(gateway_digest(ga), gateway_digest(gb));
  EXPECT_EQ(ga, gb);
  State c = a;
  c.services[0].backends[0].weight = 2;
  EXPECT_NE(gateway_digest(compile_gateway(c, indexes_of(ga))), gateway_digest(ga));
  EXPECT_EQ(gateway_digest(ga).size(), 16u);
}

// Recompiling from the applied tables gives what compiling everything gives.
TEST(Gateway, RecompilingOnlyChangedServicesEqualsCompilingAll) {
  std::mt19937 rng(11);
  State state = fleet(8, kSecond);
  GatewayDatapath applied = compile_gateway(state, {});
  for (int round = 0; round < 50; ++round) {
    Service& s = state.services[rng() % state.services.size()];
    switch (rng() % 4) {
      case 0:
        if (!s.backends.empty()) s.backends.erase(s.backends.begin() + rng() % s.backends.size());
        break;
      case 1:
        s.backends.push_back({"vm" + std::to_string(1 + rng() % 8), 80, 1});
        std::sort(s.backends.begin(), s.backends.end(),
                  [](const auto& a, const auto& b) { return a.name < b.name; });
        s.backends.erase(std::unique(s.backends.begin(), s.backends.end(),
                                     [](const auto& a, const auto& b) { return a.name == b.name; }),
                         s.backends.end());
        break;
      case 2:
        if (!s.backends.empty()) s.backends[0].weight = 1 + rng() % 4;
        break;
      default:
        state.backends[rng() % state.backends.size()].mac =
            *MacAddress::parse("02:00:00:00:02:" + std::to_string(10 + round));
    }
    GatewayDatapath again = recompile_gateway(state, applied);
    EXPECT_EQ(again, compile_gateway(state, indexes_of(applied))) << "round " << round;
    applied = std::move(again);
  }
}

}  // namespace
}  // namespace hostlb
