#include <gtest/gtest.h>

#include "hostlb/policies/datapath.h"
#include "hostlb/policies/persisted_state.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

State two_backends() {
  return parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br1"}],
    "services":[{"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]},
                {"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-2","port":8080},{"name":"web-1","port":8080}]},
                {"vip":"2001:db8:f00::10","port":443,"protocol":"tcp","backends":[{"name":"web-1","port":8443}]}]})");
}

TEST(MarkLayout, AcceptsOneRunOfBits) {
  MarkLayout layout(0xfffff000);
  EXPECT_EQ(layout.max_id(), 0xfffffu);
  EXPECT_EQ(layout.mark_for(1), 0x1000u);
  EXPECT_EQ(layout.id_from_mark(0x00003abc), 3u);
  EXPECT_EQ(MarkLayout(0x000000ff).max_id(), 255u);
  EXPECT_EQ(MarkLayout(0xffffffff).max_id(), 0xffffffffu);
}

TEST(MarkLayout, RejectsEmptyOrSplitMasks) {
  EXPECT_THROW(MarkLayout(0), std::invalid_argument);
  EXPECT_THROW(MarkLayout(0xff00ff00), std::invalid_argument);
  EXPECT_THROW(MarkLayout(0x5), std::invalid_argument);
}

TEST(CompileDatapath, OneBindingPerServiceAndBackendSortedWithIds) {
  Datapath dp = compile_datapath(two_backends(), {}, MarkLayout(MarkLayout::kDefaultMask));
  ASSERT_EQ(dp.bindings.size(), 4u);
  EXPECT_EQ(dp.bindings[0].key.str(), "203.0.113.10:80/tcp -> web-1");
  EXPECT_EQ(dp.bindings[1].key.str(), "203.0.113.10:80/tcp -> web-2");
  EXPECT_EQ(dp.bindings[2].key.str(), "203.0.113.20:80/tcp -> web-1");
  EXPECT_EQ(dp.bindings[3].key.str(), "[2001:db8:f00::10]:443/tcp -> web-1");
  EXPECT_EQ(dp.bindings[1].target.str(), "198.18.1.12");
  EXPECT_EQ(dp.bindings[1].mac.str(), "02:00:00:00:01:12");
  EXPECT_EQ(dp.bindings[3].target.str(), "2001:db8:1::11");
  EXPECT_EQ(dp.bindings[3].target_port, 8443);
  for (size_t i = 0; i < dp.bindings.size(); ++i) EXPECT_EQ(dp.bindings[i].id, i + 1);

  ASSERT_EQ(dp.hosts.size(), 3u);
  EXPECT_EQ(dp.bridges, (std::vector<std::string>{"br0", "br1"}));
}

TEST(CompileDatapath, KeepsIdentitiesAndNeverReusesOneFreedByTheSameChange) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  State state = two_backends();
  Datapath first = compile_datapath(state, {}, marks);

  // Drop web-2 from 203.0.113.10 and add a new service: the survivors keep
  // their identities; the newcomer does not take the one just freed (its
  // connections still carry that mark), but the next change may.
  state.services[1].backends = {{"web-1", 8080}};
  state.services.push_back({*parse_service_key("203.0.113.30:80/udp"), {{"web-2", 53}}});
  Datapath second = compile_datapath(state, first.ids(), marks);
  auto id_of = [&](const Datapath& dp, const std::string& key) {
    for (const auto& b : dp.bindings)
      if (b.key.str() == key) return b.id;
    return 0u;
  };
  for (const char* key : {"203.0.113.10:80/tcp -> web-1", "203.0.113.20:80/tcp -> web-1",
                          "[2001:db8:f00::10]:443/tcp -> web-1"})
    EXPECT_EQ(id_of(second, key), id_of(first, key)) << key;
  EXPECT_EQ(id_of(second, "203.0.113.30:80/udp -> web-2"), 5u);

  state.services.push_back({*parse_service_key("203.0.113.40:80/udp"), {{"web-2", 53}}});
  Datapath third = compile_datapath(state, second.ids(), marks);
  EXPECT_EQ(id_of(third, "203.0.113.40:80/udp -> web-2"),
            id_of(first, "203.0.113.10:80/tcp -> web-2"));
}

TEST(CompileDatapath, RefusesMoreBindingsThanTheMaskCanNumber) {
  State state = two_backends();
  EXPECT_THROW(compile_datapath(state, {}, MarkLayout(0x3)), IdSpaceExhausted);
  EXPECT_NO_THROW(compile_datapath(state, {}, MarkLayout(0x7)));
  // Identities freed by a change count until the next one.
  Datapath full = compile_datapath(state, {}, MarkLayout(0x7));
  State other = state;
  for (auto& service : other.services) service.key.port += 1;
  EXPECT_THROW(compile_datapath(other, full.ids(), MarkLayout(0x7)), IdSpaceExhausted);
  EXPECT_NO_THROW(compile_datapath(other, {}, MarkLayout(0x7)));
}

TEST(CompileDatapath, IgnoresPersistedIdsOutsideTheMaskOrTakenTwice) {
  State state = two_backends();
  BindingIds bogus;
  Datapath plain = compile_datapath(state, {}, MarkLayout(0x7));
  bogus[plain.bindings[0].key] = 100;  // outside a 3-bit mask
  bogus[plain.bindings[1].key] = 2;
  bogus[plain.bindings[2].key] = 2;  // duplicate
  Datapath dp = compile_datapath(state, bogus, MarkLayout(0x7));
  std::set<uint32_t> ids;
  for (const auto& b : dp.bindings) {
    EXPECT_GE(b.id, 1u);
    EXPECT_LE(b.id, 7u);
    ids.insert(b.id);
  }
  EXPECT_EQ(ids.size(), dp.bindings.size());
  EXPECT_EQ(dp.bindings[1].id, 2u);
}

TEST(DiffDatapath, ReportsAddedRemovedAndChanged) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  State state = two_backends();
  Datapath before = compile_datapath(state, {}, marks);
  EXPECT_TRUE(diff_datapath(before, before).empty());

  state.services[0].backends[0].port = 9090;                  // changed target port
  state.backends[1].ipv4 = *IpAddress::parse("198.18.1.13");  // web-2 moves
  Datapath after = compile_datapath(state, before.ids(), marks);
  DatapathDiff diff = diff_datapath(before, after);
  ASSERT_EQ(diff.bindings_removed.size(), 2u);
  ASSERT_EQ(diff.bindings_added.size(), 2u);
  EXPECT_EQ(diff.bindings_added[0].key.str(), "203.0.113.10:80/tcp -> web-2");
  EXPECT_EQ(diff.bindings_added[0].target.str(), "198.18.1.13");
  EXPECT_EQ(diff.bindings_added[1].target_port, 9090);
  ASSERT_EQ(diff.hosts_removed.size(), 1u);
  EXPECT_EQ(diff.hosts_removed[0].address.str(), "198.18.1.12");
  ASSERT_EQ(diff.hosts_added.size(), 1u);
  EXPECT_EQ(diff.hosts_added[0].address.str(), "198.18.1.13");
}

TEST(PatchDatapath, AppliesADiffBackToTheSameDatapath) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  State state = two_backends();
  const Datapath empty;
  const Datapath first = compile_datapath(state, {}, marks);
  EXPECT_EQ(patch_datapath(empty, diff_datapath(empty, first)), first);
  EXPECT_EQ(patch_datapath(first, diff_datapath(first, empty)), empty);

  state.services[0].backends[0].port = 9090;
  state.backends[1].ipv4 = *IpAddress::parse("198.18.1.13");
  state.services.pop_back();  // the IPv6 VIP goes
  Datapath second = compile_datapath(state, first.ids(), marks);
  second.refused.push_back({first.bindings[3].mac, first.bindings[3].key.service});
  second.bindings[1].serving = false;
  const Datapath patched = patch_datapath(first, diff_datapath(first, second));
  EXPECT_EQ(patched, second);
  EXPECT_EQ(patched.bridges, (std::vector<std::string>{"br0", "br1"}));
}

TEST(PersistedState, RoundTripsStateAndIds) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  const Datapath datapath = compile_datapath(two_backends(), {}, marks);
  PersistedState persisted{two_backends(), datapath.ids(), {}, 7};
  // A draining binding and one only refused, as a drain leaves them.
  persisted.retired = Retirements(
      {{datapath.bindings[0], 1800000030, 1800000090}, {datapath.bindings[1], 0, 1800000060}});
  PersistedState back = persisted_state_from_text(persisted_state_to_text(persisted));
  EXPECT_EQ(back.state, persisted.state);
  EXPECT_EQ(back.ids, persisted.ids);
  EXPECT_EQ(back.retired, persisted.retired);
  EXPECT_EQ(back.generation, 7u);
}

TEST(PersistedState, RejectsForeignOrCorruptFiles) {
  EXPECT_THROW(persisted_state_from_text("garbage"), DocumentError);
  EXPECT_THROW(persisted_state_from_text(R"({"version":1})"), DocumentError);
  EXPECT_THROW(
      persisted_state_from_text(
          R"({"format":"hostlbd-state","version":1,"desired":{"version":1},"binding_ids":[{"service":"x","backend":"a","id":1}]})"),
      DocumentError);
  try {
    persisted_state_from_text(
        R"({"format":"hostlbd-state","version":1,"desired":{"version":1,"backends":[{"name":"a"}]}})");
    FAIL();
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), "desired.backends[0].mac");
  }
}

}  // namespace
}  // namespace hostlb

namespace hostlb {
namespace {

TEST(SelectBindings, ByServiceByBackendOrAll) {
  Datapath dp = compile_datapath(two_backends(), {}, MarkLayout(MarkLayout::kDefaultMask));
  auto keys = [](const std::vector<const Binding*>& bindings) {
    std::vector<std::string> out;
    for (const Binding* b : bindings) out.push_back(b->key.str());
    return out;
  };
  const auto ten = parse_service_key("203.0.113.10:80/tcp");
  EXPECT_EQ(
      keys(select_bindings(dp, ten, std::nullopt)),
      (std::vector<std::string>{"203.0.113.10:80/tcp -> web-1", "203.0.113.10:80/tcp -> web-2"}));
  EXPECT_EQ(keys(select_bindings(dp, std::nullopt, std::string("web-2"))),
            (std::vector<std::string>{"203.0.113.10:80/tcp -> web-2"}));
  EXPECT_EQ(keys(select_bindings(dp, ten, std::string("web-1"))),
            (std::vector<std::string>{"203.0.113.10:80/tcp -> web-1"}));
  EXPECT_EQ(select_bindings(dp, std::nullopt, std::nullopt).size(), dp.bindings.size());
}

TEST(BindingsGone, RemovedButNotRewritten) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  State state = two_backends();
  Datapath before = compile_datapath(state, {}, marks);
  state.services[0].backends[0].port = 9090;  // 20:80 -> web-1 re-pointed: keeps its connections
  state.services[1].backends.pop_back();      // 10:80 -> web-1 goes
  Datapath after = compile_datapath(state, before.ids(), marks);
  const auto gone = bindings_gone(diff_datapath(before, after));
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].key.str(), "203.0.113.10:80/tcp -> web-1");
}

}  // namespace
}  // namespace hostlb

namespace hostlb {
namespace {

// One fleet document on every host: each serves only its own backends.
TEST(Datapath, AHostCompilesOnlyItsOwnBackends) {
  const State fleet = parse_state_document(R"({"version":1,"backends":[
    {"name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0","host":"hv1"},
    {"name":"b","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br1","host":"hv2"},
    {"name":"c","mac":"02:00:00:00:01:13","ipv4":"198.18.1.13","bridge":"br0"}],
   "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[
     {"name":"a","port":8080},{"name":"b","port":8080},{"name":"c","port":8080}]},
               {"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"b","port":80}]}]})");
  const MarkLayout marks(MarkLayout::kDefaultMask);
  const Datapath hv1 = compile_datapath(fleet, {}, marks, "hv1");
  std::vector<std::string> served;
  for (const auto& b : hv1.bindings) served.push_back(b.key.backend);
  EXPECT_EQ(served, (std::vector<std::string>{"a", "c"})) << "b runs on hv2";
  ASSERT_EQ(hv1.hosts.size(), 2u);
  EXPECT_EQ(hv1.bridges, std::vector<std::string>{"br0"}) << "br1 is hv2's";
  EXPECT_EQ(hv1.guard_macs.size(), 2u);
  EXPECT_EQ(hv1.guard_vips.size(), 2u) << "every VIP is guarded, served here or not";
  const Datapath hv2 = compile_datapath(fleet, {}, marks, "hv2");
  served.clear();
  for (const auto& b : hv2.bindings) served.push_back(b.key.backend);
  EXPECT_EQ(served, (std::vector<std::string>{"b", "c", "b"}));
}

}  // namespace
}  // namespace hostlb
