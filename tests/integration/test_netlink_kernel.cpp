// hostlb's netlink classes used directly in a lab namespace: what the
// daemon-level tests cannot see from outside.
#include <gtest/gtest.h>

#include "hostlb/netlink/nft.h"
#include "hostlb/policies/datapath.h"
#include "hostlb/policies/state_document.h"
#include "lab_fixture.h"

namespace hostlb {
namespace {

using lab::Lab;

State services(int count) {
  std::string doc =
      R"({"version":1,"backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],"services":[)";
  for (int i = 0; i < count; ++i)
    doc += std::string(i ? "," : "") + R"({"vip":"203.0.113.10","port":)" +
           std::to_string(1000 + i) +
           R"(,"protocol":"tcp","backends":[{"name":"web-1","port":80}]})";
  return parse_state_document(doc + "]}");
}

// The daemon checks its table only when someone else committed: its own
// changes must not count, anyone else's commit (any table) must.
TEST(NetlinkKernel, OnlyOtherProcessesCommitsCountAsChangesByOthers) {
  Lab lab;
  Lab::Entered in_hv(lab, "hv");
  const MarkLayout marks(MarkLayout::kDefaultMask);
  auto ruleset = make_kernel_ruleset();
  Datapath before = compile_datapath(services(1), {}, marks);
  ruleset->replace(before, marks);
  EXPECT_FALSE(ruleset->changed_by_others()) << "its own whole-table replacement";

  for (int n = 2; n <= 6; ++n) {
    Datapath after = compile_datapath(services(n), before.ids(), marks);
    ruleset->apply(diff_datapath(before, after), marks);
    before = std::move(after);
  }
  EXPECT_FALSE(ruleset->changed_by_others()) << "five changes of its own";

  ASSERT_EQ(lab.in("hv", "nft add table inet somebody-else").exit_code, 0);
  EXPECT_TRUE(ruleset->changed_by_others()) << "another process's commit";
  EXPECT_FALSE(ruleset->changed_by_others()) << "seen once";

  // Interleaved: one own change, one foreign commit, one own change.
  Datapath after = compile_datapath(services(7), before.ids(), marks);
  ruleset->apply(diff_datapath(before, after), marks);
  ASSERT_EQ(lab.in("hv", "nft delete table inet somebody-else").exit_code, 0);
  ruleset->apply(diff_datapath(after, before), marks);
  EXPECT_TRUE(ruleset->changed_by_others());

  EXPECT_FALSE(ruleset->difference(before, marks)) << "the table is what it applied";
  ruleset->remove();
  EXPECT_FALSE(ruleset->changed_by_others()) << "its own removal";
}

}  // namespace
}  // namespace hostlb
