#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "hostlb/policies/datapath_change.h"
#include "hostlb/policies/journal.h"
#include "hostlb/policies/state_diff.h"

namespace hostlb {
namespace {

using nlohmann::json;

State base() {
  return parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","ipv6":"2001:db8:1::12","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080},{"name":"web-2","port":8080}]},
                {"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"web-2","port":8080}]}]})");
}

ServiceKey key(const char* text) { return *parse_service_key(text); }

// The reference the edits are checked against: the whole-document validator
// run on the edited state. Throws DocumentError.
void validate_state(const State& state) { state_from_json(nlohmann::json(state_to_json(state))); }

void expect_error(const std::function<void()>& f, const std::string& path,
                  const std::string& reason) {
  try {
    f();
    FAIL() << "no error";
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_EQ(e.reason(), reason);
  }
}

TEST(StateEdit, AddAndRemoveBackend) {
  Backend b{
      "web-3", *MacAddress::parse("02:00:00:00:01:13"), IpAddress::parse("198.18.1.13"), {}, "br0"};
  State added = edited(base(), Edit::add_backend(b));
  EXPECT_EQ(added.backends.size(), 3u);
  expect_error([&] { edited(added, Edit::add_backend(b)); }, "name",
               "backend \"web-3\" already exists");

  // Removing a backend detaches it from every service.
  State removed = edited(base(), Edit::remove_backend("web-2"));
  EXPECT_EQ(removed.backends.size(), 1u);
  EXPECT_EQ(removed.services[0].backends, (std::vector<BackendRef>{{"web-1", 8080}}));
  EXPECT_TRUE(removed.services[1].backends.empty());
  expect_error([&] { edited(base(), Edit::remove_backend("web-9")); }, "name",
               "no backend \"web-9\"");
}

TEST(StateEdit, AddAndRemoveService) {
  State added = edited(base(), Edit::add_service({key("203.0.113.30:53/udp"), {{"web-1", 5353}}}));
  EXPECT_EQ(added.services.size(), 3u);
  expect_error(
      [&] {
        edited(added, Edit::add_service({key("203.0.113.30:53/udp"), {}}));
      },
      "service", "service 203.0.113.30:53/udp already exists");
  EXPECT_EQ(edited(base(), Edit::remove_service(key("203.0.113.20:80/tcp"))).services.size(), 1u);
  expect_error([&] { edited(base(), Edit::remove_service(key("203.0.113.99:80/tcp"))); }, "service",
               "no service 203.0.113.99:80/tcp");
}

TEST(StateEdit, AttachAddsRepointsOrChangesNothing) {
  State attached = edited(base(), Edit::attach(key("203.0.113.20:80/tcp"), {"web-1", 9000}));
  EXPECT_EQ(attached.services[1].backends.size(), 2u);
  State repointed = edited(attached, Edit::attach(key("203.0.113.20:80/tcp"), {"web-1", 9001}));
  EXPECT_EQ(repointed.services[1].backends.size(), 2u);
  EXPECT_EQ(repointed.services[1].backends[1].port, 9001);
  EXPECT_EQ(edited(repointed, Edit::attach(key("203.0.113.20:80/tcp"), {"web-1", 9001})),
            repointed);
  expect_error(
      [&] {
        edited(base(), Edit::attach(key("203.0.113.99:80/tcp"), {"web-1", 1}));
      },
      "service", "no service 203.0.113.99:80/tcp");
  expect_error(
      [&] {
        edited(base(), Edit::attach(key("203.0.113.20:80/tcp"), {"web-9", 1}));
      },
      "backend", "no backend \"web-9\"");
}

TEST(StateEdit, Detach) {
  State detached = edited(base(), Edit::detach(key("203.0.113.10:80/tcp"), "web-2"));
  EXPECT_EQ(detached.services[0].backends, (std::vector<BackendRef>{{"web-1", 8080}}));
  expect_error([&] { edited(detached, Edit::detach(key("203.0.113.10:80/tcp"), "web-2")); },
               "backend", "backend \"web-2\" does not serve 203.0.113.10:80/tcp");
}

TEST(StateEdit, CrossObjectRulesOfTheDocumentHold) {
  // web-1 has no IPv6 address: it cannot serve an IPv6 VIP.
  expect_error(
      [&] {
        edited(base(), Edit::add_service({key("[2001:db8:f00::10]:443/tcp"), {{"web-1", 8443}}}));
      },
      "backends[0].name", "backend \"web-1\" has no IPv6 address for VIP 2001:db8:f00::10");
  State v6 = edited(base(), Edit::add_service({key("[2001:db8:f00::10]:443/tcp"), {}}));
  expect_error(
      [&] {
        edited(v6, Edit::attach(key("[2001:db8:f00::10]:443/tcp"), {"web-1", 1}));
      },
      "backend", "backend \"web-1\" has no IPv6 address for VIP 2001:db8:f00::10");
  Backend dup_mac{
      "web-3", *MacAddress::parse("02:00:00:00:01:11"), IpAddress::parse("198.18.1.13"), {}, "br0"};
  expect_error([&] { edited(base(), Edit::add_backend(dup_mac)); }, "mac",
               "MAC 02:00:00:00:01:11 is already used by backend \"web-1\"");
  Backend dup_addr{
      "web-3", *MacAddress::parse("02:00:00:00:01:13"), IpAddress::parse("198.18.1.12"), {}, "br0"};
  expect_error([&] { edited(base(), Edit::add_backend(dup_addr)); }, "ipv4",
               "address 198.18.1.12 is already used by backend \"web-2\"");
  Backend on_vip{"web-3",
                 *MacAddress::parse("02:00:00:00:01:13"),
                 IpAddress::parse("203.0.113.10"),
                 {},
                 "br0"};
  expect_error([&] { edited(base(), Edit::add_backend(on_vip)); }, "ipv4",
               "203.0.113.10 is the VIP of 203.0.113.10:80/tcp; a VIP must not be a backend's own "
               "address");
  expect_error(
      [&] {
        edited(base(), Edit::add_service({key("198.18.1.11:80/tcp"), {}}));
      },
      "service",
      "198.18.1.11 is the address of backend \"web-1\"; a VIP must not be a backend's own "
      "address");
  expect_error(
      [&] {
        edited(base(),
               Edit::add_service({key("203.0.113.40:80/tcp"), {{"web-1", 1}, {"web-1", 2}}}));
      },
      "backends[1].name", "backend \"web-1\" is listed twice (also backends[0])");
  EXPECT_NO_THROW(validate_state(base()));
}

// Property: an edit is accepted exactly when the whole-document validator
// accepts its result, and its datapath change equals compiling the result.
TEST(StateEdit, EditsAgreeWithTheDocumentValidatorAndTheCompiler) {
  const MarkLayout marks(MarkLayout::kDefaultMask);
  std::vector<Edit> edits;
  for (const char* name : {"web-1", "web-2", "web-3"}) {
    edits.push_back(Edit::remove_backend(name));
    for (const char* svc : {"203.0.113.10:80/tcp", "203.0.113.20:80/tcp", "198.18.1.11:80/tcp",
                            "[2001:db8:f00::10]:443/tcp"}) {
      edits.push_back(Edit::attach(key(svc), {name, 9000}));
      edits.push_back(Edit::attach(key(svc), {name, 8080}));
      edits.push_back(Edit::detach(key(svc), name));
      edits.push_back(Edit::add_service({key(svc), {{name, 80}}}));
      edits.push_back(Edit::remove_service(key(svc)));
    }
  }
  edits.push_back(Edit::add_backend({"web-3", *MacAddress::parse("02:00:00:00:01:13"),
                                     IpAddress::parse("198.18.1.13"),
                                     IpAddress::parse("2001:db8:1::13"), "br1"}));
  edits.push_back(Edit::add_backend({"web-4",
                                     *MacAddress::parse("02:00:00:00:01:11"),
                                     IpAddress::parse("198.18.1.14"),
                                     {},
                                     "br0"}));
  // Backends of the fleet: one on another hypervisor (no binding here), one
  // that names this one.
  const std::string here = "hv1";
  edits.push_back(Edit::add_backend({"web-5",
                                     *MacAddress::parse("02:00:00:00:01:15"),
                                     IpAddress::parse("198.18.1.15"),
                                     {},
                                     "br2",
                                     "hv2"}));
  edits.push_back(Edit::add_backend({"web-6",
                                     *MacAddress::parse("02:00:00:00:01:16"),
                                     IpAddress::parse("198.18.1.16"),
                                     {},
                                     "br2",
                                     here}));
  for (const char* name : {"web-5", "web-6"}) {
    edits.push_back(Edit::remove_backend(name));
    for (const char* svc : {"203.0.113.10:80/tcp", "203.0.113.20:80/tcp"}) {
      edits.push_back(Edit::attach(key(svc), {name, 9000, 3}));
      edits.push_back(Edit::detach(key(svc), name));
      edits.push_back(Edit::add_service({key(svc), {{name, 80}, {"web-1", 80, 2}}, 2039}));
    }
  }
  edits.push_back(Edit::attach(key("203.0.113.10:80/tcp"), {"web-1", 8080, 5}));  // re-weighted
  edits.push_back(Edit::set_rows(key("203.0.113.10:80/tcp"), 8191));
  edits.push_back(Edit::set_rows(key("203.0.113.10:80/tcp"), std::nullopt));
  // Apply them in sequence from the base, checking each step.
  State state = base();
  Datapath applied = compile_datapath(state, {}, marks, here);
  size_t accepted = 0;
  std::mt19937 random(12345);  // fixed: the same sequence every run
  size_t remote_attached = 0;
  for (int round = 0; round < 40; ++round) {
    std::shuffle(edits.begin(), edits.end(), random);
    for (const Edit& e : edits) {
      bool document_ok = true;
      try {
        check_edit(state, e);
      } catch (const DocumentError&) {
        document_ok = false;
      }
      if (!document_ok) continue;
      State candidate = state;
      apply_edit(candidate, e);
      bool validator_ok = true;
      try {
        validate_state(candidate);
      } catch (const DocumentError&) {
        validator_ok = false;
      }
      ASSERT_TRUE(validator_ok) << edit_to_json(e).dump();
      ++accepted;
      remote_attached += e.kind == Edit::Kind::kAttach && e.ref.name == "web-5";
      DatapathChange change = change_datapath(state, e, applied, marks, {}, here);
      Datapath compiled = compile_datapath(candidate, applied.ids(), marks, here);
      for (const auto& b : compiled.bindings) EXPECT_NE(b.key.backend, "web-5") << "not here";
      // Identities may differ for new bindings (the compiler keeps freed
      // ones of the whole previous state out); everything else must match.
      auto strip = [](Datapath d) {
        for (auto& b : d.bindings) b.id = 0;
        return d;
      };
      EXPECT_EQ(strip(change.next).bindings, strip(compiled).bindings) << edit_to_json(e).dump();
      EXPECT_EQ(change.next.hosts, compiled.hosts) << edit_to_json(e).dump();
      EXPECT_EQ(change.next.bridges, compiled.bridges) << edit_to_json(e).dump();
      EXPECT_EQ(change.next.guard_macs, compiled.guard_macs) << edit_to_json(e).dump();
      EXPECT_EQ(change.next.guard_vips, compiled.guard_vips) << edit_to_json(e).dump();
      DatapathDiff diff = diff_datapath(applied, change.next);
      EXPECT_EQ(diff.guard_macs_added, change.diff.guard_macs_added) << edit_to_json(e).dump();
      EXPECT_EQ(diff.guard_macs_removed, change.diff.guard_macs_removed) << edit_to_json(e).dump();
      EXPECT_EQ(diff.guard_vips_added, change.diff.guard_vips_added) << edit_to_json(e).dump();
      EXPECT_EQ(diff.guard_vips_removed, change.diff.guard_vips_removed) << edit_to_json(e).dump();
      EXPECT_EQ(diff.bindings_added, change.diff.bindings_added) << edit_to_json(e).dump();
      EXPECT_EQ(diff.bindings_removed, change.diff.bindings_removed) << edit_to_json(e).dump();
      state = candidate;
      applied = change.next;
      EXPECT_EQ(edit_from_json(edit_to_json(e)), e);
    }
  }
  EXPECT_GT(accepted, 20u);
  EXPECT_GT(remote_attached, 0u) << "a backend of another host was attached at least once";
}

TEST(StateEdit, ParamParsersNameTheParameter) {
  expect_error(
      [] {
        parse_backend_object(json{{"name", "a"}, {"mac", "x"}}, "", {});
      },
      "mac", "\"x\" is not a MAC address");
  expect_error(
      [] {
        parse_backend_ref(json{{"name", "a"}, {"port", 0}}, "backends[1]");
      },
      "backends[1].port", "0 is not a port (1-65535)");
  expect_error([] { parse_service_key_param(json("203.0.113.1:80"), "service"); }, "service",
               "\"203.0.113.1:80\": expected VIP:PORT/PROTO (missing /tcp or /udp)");
  expect_error([] { parse_service_key_param(json(5), "service"); }, "service",
               "must be a string, not an integer");
}

TEST(StateEdit, DescribeChanges) {
  State after = edited(base(), Edit::remove_backend("web-1"));
  after = edited(after, Edit::add_service({key("203.0.113.30:53/udp"), {{"web-2", 5353}}}));
  after = edited(after, Edit::attach(key("203.0.113.20:80/tcp"), {"web-2", 9090}));
  EXPECT_EQ(describe_changes(base(), after),
            (std::vector<std::string>{
                "- backend web-1 mac 02:00:00:00:01:11 ipv4 198.18.1.11 bridge br0",
                "+ service 203.0.113.30:53/udp",
                "- binding 203.0.113.10:80/tcp -> web-1:8080",
                "- binding 203.0.113.20:80/tcp -> web-2:8080",
                "+ binding 203.0.113.20:80/tcp -> web-2:9090",
                "+ binding 203.0.113.30:53/udp -> web-2:5353",
            }));
  EXPECT_TRUE(describe_changes(base(), base()).empty());
}

}  // namespace
}  // namespace hostlb

namespace hostlb {
namespace {

// Sorted copies, so that states that differ only in list order compare equal.
State canonical(State state) {
  std::sort(state.backends.begin(), state.backends.end(),
            [](const Backend& a, const Backend& b) { return a.name < b.name; });
  std::sort(state.services.begin(), state.services.end(),
            [](const Service& a, const Service& b) { return a.key < b.key; });
  for (auto& s : state.services)
    std::sort(s.backends.begin(), s.backends.end(),
              [](const BackendRef& a, const BackendRef& b) { return a.name < b.name; });
  return state;
}

TEST(StateEdit, EditsBetweenTwoStatesReplayToTheSecond) {
  State after = parse_state_document(R"({"version":1,
    "backends":[{"name":"web-2","mac":"02:00:00:00:01:22","ipv4":"198.18.1.12","bridge":"br1"},
                {"name":"web-3","mac":"02:00:00:00:01:13","ipv4":"198.18.1.13","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-2","port":9000},{"name":"web-3","port":8080}]},
                {"vip":"203.0.113.30","port":53,"protocol":"udp","backends":[{"name":"web-3","port":5353}]}]})");
  for (const auto& [from, to] : std::vector<std::pair<State, State>>{{base(), after},
                                                                     {after, base()},
                                                                     {State{}, base()},
                                                                     {base(), State{}},
                                                                     {base(), base()}}) {
    State replayed = from;
    for (const Edit& e : edits_between(from, to)) {
      ASSERT_NO_THROW(check_edit(replayed, e)) << edit_to_json(e).dump();
      apply_edit(replayed, e);
    }
    EXPECT_EQ(canonical(replayed), canonical(to));
  }
  EXPECT_TRUE(edits_between(base(), base()).empty());
}

// Most of a re-applied document is unchanged and skipped; a service that
// is unchanged but uses a changed backend is not: its binding changes too.
TEST(StateEdit, AnUnchangedServiceOfAChangedBackendIsStillRebound) {
  State moved = base();
  moved.backends[1].mac = *MacAddress::parse("02:00:00:00:01:99");
  moved.services.push_back({key("203.0.113.30:53/udp"), {{"web-1", 53}}});
  const auto edits = edits_between(base(), moved);
  State replayed = base();
  for (const Edit& e : edits) apply_edit(replayed, e);
  EXPECT_EQ(canonical(replayed), canonical(moved));
  const auto attaches = std::count_if(edits.begin(), edits.end(), [](const Edit& e) {
    return e.kind == Edit::Kind::kAttach && e.ref.name == "web-2";
  });
  EXPECT_EQ(attaches, 2) << "both services of web-2, neither of them changed itself";
  EXPECT_EQ(describe_changes(base(), moved),
            (std::vector<std::string>{"- backend web-2 mac 02:00:00:00:01:12 ipv4 198.18.1.12 ipv6 "
                                      "2001:db8:1::12 bridge br0",
                                      "+ backend web-2 mac 02:00:00:00:01:99 ipv4 198.18.1.12 ipv6 "
                                      "2001:db8:1::12 bridge br0",
                                      "+ service 203.0.113.30:53/udp",
                                      "+ binding 203.0.113.30:53/udp -> web-1:53"}));
}

// Random pairs of states: compiling only what changed gives what compiling
// everything gives, identities included.
TEST(StateEdit, CompilingAndEditingOnlyTheChangedPartsEqualsDoingAll) {
  std::mt19937 random(20261123);
  auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
  int round_counter = 0;
  auto random_state = [&] {
    State state;
    const char* macs[] = {"02:00:00:00:01:11", "02:00:00:00:01:21"};
    for (int b = 0; b < 3; ++b) {
      if (pick(4) == 0) continue;
      Backend backend{
          "web-" + std::to_string(b),
          *MacAddress::parse(std::string(macs[pick(2)]).replace(13, 1, std::to_string(b))),
          IpAddress::parse("198.18.1." + std::to_string(11 + b)),
          {},
          pick(2) ? "br0" : "br1"};
      const char* hosts[] = {"", "hv1", "hv2"};
      backend.host = hosts[pick(3)];
      if (pick(2)) backend.ipv6 = IpAddress::parse("2001:db8:1::" + std::to_string(11 + b));
      state.backends.push_back(backend);
    }
    for (int v = 0; v < 6; ++v) {
      for (int port : {80, 443}) {
        if (pick(3) == 0) continue;
        Service service{*parse_service_key("203.0.113." + std::to_string(10 + v) + ":" +
                                           std::to_string(port) + "/tcp"),
                        {}};
        for (const auto& backend : state.backends)
          if (pick(2))
            service.backends.push_back({backend.name, static_cast<uint16_t>(8000 + pick(3)),
                                        static_cast<uint32_t>(1 + pick(3))});
        if (pick(3) == 0) service.rows = pick(2) ? 1021 : 2039;
        state.services.push_back(service);
      }
    }
    std::shuffle(state.services.begin(), state.services.end(), random);
    return state;
  };
  const MarkLayout marks(MarkLayout::kDefaultMask);
  int differing = 0;
  // Half the pairs are unrelated; in the other half the second is the first
  // with one service dropped, moved to another port or its backends
  // reshuffled, in the same order (a document applied again with a change).
  auto changed_a_little = [&](State state) {
    if (state.services.empty()) return state;
    const size_t i = static_cast<size_t>(pick(static_cast<int>(state.services.size())));
    switch (pick(6)) {
      case 0:
        state.services.erase(state.services.begin() + static_cast<long>(i));
        break;
      case 1:
        state.services[i].key.port = static_cast<uint16_t>(9000 + round_counter++);
        break;
      case 2:
        state.services[i].rows = state.services[i].rows ? std::nullopt : std::optional(4093u);
        break;
      case 3:
        for (auto& ref : state.services[i].backends) ref.weight = ref.weight % 3 + 1;
        break;
      case 4:
        if (!state.backends.empty())
          state.backends[0].host = state.backends[0].host == "hv1" ? "hv2" : "hv1";
        break;
      default:
        std::reverse(state.services[i].backends.begin(), state.services[i].backends.end());
    }
    return state;
  };
  for (int round = 0; round < 400; ++round) {
    const State before = random_state();
    const State after = round % 2 ? random_state() : changed_a_little(before);
    validate_state(before);
    validate_state(after);
    const Datapath applied = compile_datapath(before, {}, marks, "hv1");
    const BindingIds previous = applied.ids();
    const Datapath whole = compile_datapath(after, previous, marks, "hv1");
    const Datapath parts = compile_changed_datapath(applied, changed_parts(before, after), after,
                                                    previous, marks, "hv1");
    ASSERT_EQ(parts.bindings, whole.bindings) << "round " << round;
    ASSERT_EQ(parts.hosts, whole.hosts);
    ASSERT_EQ(parts.bridges, whole.bridges);
    ASSERT_EQ(parts.guard_macs, whole.guard_macs);
    ASSERT_EQ(parts.guard_vips, whole.guard_vips);
    differing += whole.bindings != applied.bindings;
    State replayed = before;  // and the edits found through the parts lead there
    for (const Edit& e : edits_between(before, after)) apply_edit(replayed, e);
    ASSERT_EQ(canonical(replayed), canonical(after)) << "round " << round;
  }
  EXPECT_GT(differing, 200) << "the pairs must mostly differ for this to prove anything";
}

TEST(StateEdit, DescribeEditMatchesDescribeChanges) {
  for (const Edit& e : {Edit::remove_backend("web-2"),
                        Edit::add_service({key("203.0.113.30:53/udp"), {{"web-2", 5353}}}),
                        Edit::attach(key("203.0.113.20:80/tcp"), {"web-2", 9090}),
                        Edit::attach(key("203.0.113.20:80/tcp"), {"web-1", 80}),
                        Edit::detach(key("203.0.113.10:80/tcp"), "web-1"),
                        Edit::remove_service(key("203.0.113.10:80/tcp"))}) {
    EXPECT_EQ(describe_edit(base(), e), describe_changes(base(), edited(base(), e)))
        << edit_to_json(e).dump();
  }
}

}  // namespace
}  // namespace hostlb
