#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "hostlb/netlink/nft.h"
#include "hostlb/policies/datapath.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/health.h"
#include "hostlb/policies/journal.h"
#include "hostlb/policies/state_diff.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

std::string doc_with_service(const std::string& service) {
  return R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0"}],
    "services":[)" +
         service + "]}";
}

std::string service_with_health(const std::string& health, const std::string& proto = "tcp") {
  return R"({"vip":"203.0.113.10","port":80,"protocol":")" + proto +
         R"(","backends":[{"name":"web-1","port":8080},{"name":"web-2","port":8080}],"health":)" +
         health + "}";
}

void expect_document_error(const std::string& text, const std::string& path,
                           const std::string& reason_part) {
  try {
    parse_state_document(text);
    FAIL() << "accepted: " << text;
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), path) << e.what();
    EXPECT_NE(e.reason().find(reason_part), std::string::npos) << e.what();
  }
}

TEST(HealthDocument, AServiceWithoutACheckHasNone) {
  const State s =
      parse_state_document(doc_with_service(R"({"vip":"203.0.113.10","port":80,"protocol":"tcp",
      "backends":[{"name":"web-1","port":8080}]})"));
  EXPECT_FALSE(s.services[0].health.has_value());
  EXPECT_FALSE(state_to_json(s)["services"][0].contains("health"));
}

TEST(HealthDocument, DefaultsFollowTheProtocolAndFailClosed) {
  const State tcp = parse_state_document(doc_with_service(service_with_health("{}")));
  ASSERT_TRUE(tcp.services[0].health);
  const HealthCheck& c = *tcp.services[0].health;
  EXPECT_EQ(c.kind, HealthKind::kTcp);
  EXPECT_EQ(c.interval_ms, 5000u);
  EXPECT_EQ(c.timeout_ms, 2000u);
  EXPECT_EQ(c.rise, 2u);
  EXPECT_EQ(c.fall, 3u);
  EXPECT_FALSE(c.start_up);
  EXPECT_FALSE(c.flush_on_down);
  const State udp = parse_state_document(doc_with_service(service_with_health("{}", "udp")));
  EXPECT_EQ(udp.services[0].health->kind, HealthKind::kUdp);
  // A short interval without a timeout gets a timeout that fits in it.
  const State fast =
      parse_state_document(doc_with_service(service_with_health(R"({"interval":0.5})")));
  EXPECT_EQ(fast.services[0].health->interval_ms, 500u);
  EXPECT_EQ(fast.services[0].health->timeout_ms, 500u);
}

TEST(HealthDocument, AnHttpCheckRoundTripsThroughTheCanonicalForm) {
  const State s = parse_state_document(doc_with_service(service_with_health(
      R"({"kind":"http","interval":1.5,"timeout":1,"rise":1,"fall":2,"path":"/healthz",
          "status":"200-299","start":"up","established":"flush"})")));
  const HealthCheck& c = *s.services[0].health;
  EXPECT_EQ(c.kind, HealthKind::kHttp);
  EXPECT_EQ(c.interval_ms, 1500u);
  EXPECT_EQ(c.timeout_ms, 1000u);
  EXPECT_EQ(c.path, "/healthz");
  EXPECT_EQ(c.status_min, 200);
  EXPECT_EQ(c.status_max, 299);
  EXPECT_TRUE(c.start_up);
  EXPECT_TRUE(c.flush_on_down);
  const auto text = nlohmann::json(state_to_json(s)).dump();
  EXPECT_EQ(parse_state_document(text), s) << text;
  EXPECT_EQ(state_to_json(s)["services"][0]["health"]["status"], "200-299");
  const State one = parse_state_document(
      doc_with_service(service_with_health(R"({"kind":"http","status":204})")));
  EXPECT_EQ(one.services[0].health->status_min, 204);
  EXPECT_EQ(one.services[0].health->status_max, 204);
}

TEST(HealthDocument, BadChecksAreRefusedWithThePathAtFault) {
  const std::string at = "services[0].health";
  expect_document_error(doc_with_service(service_with_health(R"({"kind":"icmp"})")), at + ".kind",
                        "is not tcp, http or udp");
  expect_document_error(doc_with_service(service_with_health(R"({"kind":"udp"})")), at + ".kind",
                        "a tcp service cannot have a udp check");
  expect_document_error(doc_with_service(service_with_health(R"({"kind":"http"})", "udp")),
                        at + ".kind", "a udp service cannot have a http check");
  expect_document_error(doc_with_service(service_with_health(R"({"interval":0})")),
                        at + ".interval", "from 0.1 to 3600");
  expect_document_error(doc_with_service(service_with_health(R"({"interval":"5s"})")),
                        at + ".interval", "must be a number of seconds");
  expect_document_error(doc_with_service(service_with_health(R"({"interval":1,"timeout":2})")),
                        at + ".timeout", "must not be longer than the interval");
  expect_document_error(doc_with_service(service_with_health(R"({"rise":0})")), at + ".rise",
                        "from 1 to 100");
  expect_document_error(doc_with_service(service_with_health(R"({"fall":101})")), at + ".fall",
                        "from 1 to 100");
  expect_document_error(doc_with_service(service_with_health(R"({"path":"/"})")), at + ".path",
                        "is only for http checks");
  expect_document_error(
      doc_with_service(service_with_health(R"({"kind":"http","path":"healthz"})")), at + ".path",
      "is not an HTTP path");
  expect_document_error(
      doc_with_service(service_with_health(R"({"kind":"http","status":"399-200"})")),
      at + ".status", "is not a status or range");
  expect_document_error(doc_with_service(service_with_health(R"({"kind":"http","status":700})")),
                        at + ".status", "from 100 to 599");
  expect_document_error(doc_with_service(service_with_health(R"({"start":"maybe"})")),
                        at + ".start", "is not up or down");
  expect_document_error(doc_with_service(service_with_health(R"({"established":"drop"})")),
                        at + ".established", "is not keep or flush");
  expect_document_error(doc_with_service(service_with_health(R"({"intervall":1})")),
                        at + ".intervall", "unknown field");
  expect_document_error(doc_with_service(service_with_health("[]")), at, "must be an object");
}

TEST(HealthEdit, SettingACheckIsCheckedJournaledAndDescribed) {
  const State before =
      parse_state_document(doc_with_service(R"({"vip":"203.0.113.10","port":80,"protocol":"tcp",
      "backends":[{"name":"web-1","port":8080}]})"));
  HealthCheck check;
  check.kind = HealthKind::kHttp;
  check.path = "/ready";
  const ServiceKey key = before.services[0].key;
  const Edit e = Edit::set_health(key, check);
  const State after = edited(before, e);
  ASSERT_TRUE(after.services[0].health);
  EXPECT_EQ(after.services[0].health->path, "/ready");
  EXPECT_EQ(edit_from_json(edit_to_json(e)), e);
  const Edit off = Edit::set_health(key, std::nullopt);
  EXPECT_EQ(edit_from_json(edit_to_json(off)), off);
  // A document that only changes the check becomes that one edit.
  const auto edits = edits_between(before, after);
  ASSERT_EQ(edits.size(), 1u);
  EXPECT_EQ(edits[0], e);
  const auto lines = describe_changes(before, after);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].rfind("~ service 203.0.113.10:80/tcp health none -> {", 0), 0u) << lines[0];

  HealthCheck udp;
  udp.kind = HealthKind::kUdp;
  try {
    edited(before, Edit::set_health(key, udp));
    FAIL() << "a udp check on a tcp service was accepted";
  } catch (const DocumentError& err) {
    EXPECT_EQ(err.path(), "health.kind");
  }
  // A service added with a check keeps it through the journal.
  Service added = before.services[0];
  added.key.port = 81;
  added.health = check;
  const Edit add = Edit::add_service(added);
  EXPECT_EQ(edit_from_json(edit_to_json(add)), add);
}

HealthCheck check_with(uint32_t rise, uint32_t fall) {
  HealthCheck c;
  c.rise = rise;
  c.fall = fall;
  return c;
}

const BindingKey kKey{*parse_service_key("203.0.113.10:80/tcp"), "web-1"};
const ProbeResult kOk{true, "connected", 1};
const ProbeResult kRst{false, "connection refused (RST)", 1};

TEST(HealthBook, AFirstSuccessBringsANewBindingUpAndFallFailuresTakeItDown) {
  HealthBook book;
  book.track({kKey}, 1000);
  EXPECT_EQ(book.serving(kKey), std::nullopt) << "not yet checked: the caller decides";
  const HealthCheck c = check_with(2, 3);
  auto t = book.record(kKey, kOk, c, 2000);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->from, Health::kUnknown);
  EXPECT_EQ(t->to, Health::kUp);
  EXPECT_EQ(book.serving(kKey), true);
  EXPECT_FALSE(book.record(kKey, kRst, c, 3000));
  EXPECT_FALSE(book.record(kKey, kRst, c, 4000));
  EXPECT_FALSE(book.record(kKey, kOk, c, 5000)) << "a success in between starts the count again";
  EXPECT_FALSE(book.record(kKey, kRst, c, 6000));
  EXPECT_FALSE(book.record(kKey, kRst, c, 7000));
  t = book.record(kKey, kRst, c, 8000);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, Health::kDown);
  EXPECT_EQ(t->reason, "connection refused (RST)");
  EXPECT_EQ(book.serving(kKey), false);
  EXPECT_EQ(book.find(kKey)->since_ms, 8000);
  // Down, it needs `rise` successes in a row.
  EXPECT_FALSE(book.record(kKey, kOk, c, 9000));
  EXPECT_FALSE(book.record(kKey, kRst, c, 10000));
  EXPECT_FALSE(book.record(kKey, kOk, c, 11000));
  t = book.record(kKey, kOk, c, 12000);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, Health::kUp);
  const BindingHealth* h = book.find(kKey);
  EXPECT_EQ(h->transitions, 3u);
  EXPECT_EQ(h->probes, 11u);
  EXPECT_EQ(h->failed_probes, 6u);
  EXPECT_EQ(h->last->detail, "connected");
}

TEST(HealthBook, FlappingMakesOneTransitionPerChangeNotPerProbe) {
  HealthBook book;
  book.track({kKey}, 0);
  const HealthCheck c = check_with(1, 1);
  int transitions = 0;
  for (int i = 0; i < 100; ++i)
    transitions += book.record(kKey, i % 4 < 2 ? kOk : kRst, c, i).has_value();
  // up, up, down, down, ...: 50 changes of state.
  EXPECT_EQ(transitions, 50);
}

TEST(HealthBook, ANewBindingThatNeverAnswersGoesDownAfterFallFailures) {
  HealthBook book;
  book.track({kKey}, 0);
  const HealthCheck c = check_with(2, 2);
  EXPECT_FALSE(book.record(kKey, {false, "timeout", 0}, c, 1));
  auto t = book.record(kKey, {false, "timeout", 0}, c, 2);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->from, Health::kUnknown);
  EXPECT_EQ(t->to, Health::kDown);
}

TEST(HealthBook, TrackingKeepsKnownBindingsAndForgetsGoneOnes) {
  const BindingKey other{kKey.service, "web-2"};
  HealthBook book;
  book.track({kKey, other}, 0);
  book.record(kKey, kOk, check_with(1, 1), 5);
  book.track({kKey}, 10);
  EXPECT_EQ(book.serving(kKey), true);
  EXPECT_EQ(book.find(other), nullptr);
  book.track({kKey, other}, 20);
  EXPECT_EQ(book.find(other)->since_ms, 20);
  EXPECT_EQ(book.serving(other), std::nullopt);
  // Probe results for bindings not tracked are ignored.
  HealthBook empty;
  EXPECT_FALSE(empty.record(kKey, kOk, check_with(1, 1), 0));
}

TEST(HealthBook, KnownStatesSurviveARestartUnknownOnesDoNot) {
  const BindingKey other{kKey.service, "web-2"};
  const BindingKey third{*parse_service_key("[2001:db8:f00::10]:443/tcp"), "web-3"};
  HealthBook book;
  book.track({kKey, other, third}, 0);
  book.record(kKey, kRst, check_with(1, 1), 7);
  book.record(third, kOk, check_with(1, 1), 9);
  const HealthBook loaded = HealthBook::from_json(nlohmann::json::parse(book.to_json().dump()));
  EXPECT_EQ(loaded.serving(kKey), false);
  EXPECT_EQ(loaded.find(kKey)->since_ms, 7);
  EXPECT_EQ(loaded.serving(third), true);
  EXPECT_EQ(loaded.find(other), nullptr);
  // Entries it cannot read are skipped; a record of another kind is refused.
  auto j = book.to_json();
  j["bindings"].push_back({{"service", "nonsense"}, {"backend", "x"}, {"state", "up"}});
  j["bindings"].push_back({{"service", "203.0.113.10:80/tcp"}, {"backend", "x"}, {"state", "?"}});
  EXPECT_EQ(HealthBook::from_json(j).entries().size(), 2u);
  EXPECT_THROW(HealthBook::from_json(nlohmann::json::array()), DocumentError);
}

TEST(HealthSchedule, OffsetsSpreadOverTheIntervalAndStayTheSame) {
  std::set<uint32_t> buckets;
  for (int i = 0; i < 1000; ++i) {
    const BindingKey key{kKey.service, "web-" + std::to_string(i)};
    const uint32_t offset = probe_offset_ms(key, 1000);
    ASSERT_LT(offset, 1000u);
    EXPECT_EQ(offset, probe_offset_ms(key, 1000));
    buckets.insert(offset / 100);
  }
  EXPECT_EQ(buckets.size(), 10u) << "every tenth of the interval has some";
}

Datapath two_bindings() {
  const State s = parse_state_document(doc_with_service(service_with_health("{}")));
  return compile_datapath(s, {}, MarkLayout(MarkLayout::kDefaultMask));
}

TEST(SettleServing, OnlyTheAddedBindingsAreDecidedUnlessAll) {
  const Datapath before = two_bindings();
  Datapath next = before;
  DatapathDiff diff;
  int asked = 0;
  auto down = [&](const Binding&, const Binding*) {
    ++asked;
    return false;
  };
  settle_serving(next, diff, false, down);
  EXPECT_EQ(asked, 0);
  EXPECT_TRUE(diff.bindings_added.empty());
  settle_serving(next, diff, true, down);
  EXPECT_EQ(asked, 2);
  ASSERT_EQ(diff.bindings_added.size(), 2u);
  ASSERT_EQ(diff.bindings_removed.size(), 2u);
  EXPECT_FALSE(diff.bindings_added[0].serving);
  EXPECT_TRUE(diff.bindings_removed[0].serving);
  EXPECT_EQ(diff.bindings_added[0].id, diff.bindings_removed[0].id);
  EXPECT_FALSE(next.bindings[0].serving);
  EXPECT_FALSE(next.bindings[1].serving);
  EXPECT_TRUE(bindings_gone(diff).empty()) << "down is not gone: nothing is flushed";
}

TEST(SettleServing, ARewriteThatEndsAsItWasLeavesNoChange) {
  Datapath before = two_bindings();
  before.bindings[0].serving = false;
  // A whole compile again gives every binding the default flag ...
  Datapath next = two_bindings();
  DatapathDiff diff = diff_datapath(before, next);
  ASSERT_EQ(diff.bindings_added.size(), 1u);
  // ... which the health decision puts back as it was.
  settle_serving(next, diff, false, [](const Binding& b, const Binding* was) {
    return was ? was->serving : b.serving;
  });
  EXPECT_TRUE(diff.bindings_added.empty());
  EXPECT_TRUE(diff.bindings_removed.empty());
  EXPECT_FALSE(next.bindings[0].serving);
  // A new binding gets what the decision says for new ones.
  Datapath empty;
  Datapath fresh = two_bindings();
  DatapathDiff all_new = diff_datapath(empty, fresh);
  settle_serving(fresh, all_new, false,
                 [](const Binding&, const Binding* was) { return was != nullptr; });
  ASSERT_EQ(all_new.bindings_added.size(), 2u);
  EXPECT_FALSE(all_new.bindings_added[0].serving);
  EXPECT_FALSE(fresh.bindings[1].serving);
}

TEST(SettleServing, ABindingThatDoesNotServeIsRenderedAsRefused) {
  Datapath d = two_bindings();
  d.bindings[0].serving = false;
  const std::string text = render_full_ruleset(d, MarkLayout(MarkLayout::kDefaultMask));
  // web-1's key is in the refuse set, not in the maps; web-2's in the maps.
  const auto refuse_at = text.find("add element inet hostlb refuse4 {");
  ASSERT_NE(refuse_at, std::string::npos) << text;
  EXPECT_NE(text.find("02:00:00:00:01:11 . 203.0.113.10 . tcp . 80", refuse_at), std::string::npos);
  const auto targets_at = text.find("add element inet hostlb targets4 {");
  ASSERT_NE(targets_at, std::string::npos);
  const std::string targets = text.substr(targets_at, text.find('}', targets_at) - targets_at);
  EXPECT_EQ(targets.find("02:00:00:00:01:11"), std::string::npos) << targets;
  EXPECT_NE(targets.find("02:00:00:00:01:12"), std::string::npos) << targets;
}

}  // namespace
}  // namespace hostlb
