// Journal records: both conversions, the form earlier versions wrote, and
// the pure replay.
#include <gtest/gtest.h>

#include <map>

#include "hostlb/policies/journal.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

State base() {
  return parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}]})");
}

ServiceKey key(const char* text) { return *parse_service_key(text); }

JournalRecord full_record() {
  JournalRecord r;
  r.edits.push_back(Edit::add_backend({"web-2", *MacAddress::parse("02:00:00:00:01:12"),
                                       IpAddress::parse("198.18.1.12"),
                                       IpAddress::parse("2001:db8:1::12"), "br0"}));
  r.edits.push_back(Edit::add_service({key("203.0.113.20:53/udp"), {{"web-2", 5353}}}));
  r.edits.push_back(Edit::attach(key("203.0.113.10:80/tcp"), {"web-2", 8081}));
  r.edits.push_back(Edit::detach(key("203.0.113.10:80/tcp"), "web-1"));
  r.ids[{key("203.0.113.20:53/udp"), "web-2"}] = 7;
  r.ids[{key("203.0.113.10:80/tcp"), "web-2"}] = 8;
  r.retired.push_back({{{key("203.0.113.10:80/tcp"), "web-1"},
                        *MacAddress::parse("02:00:00:00:01:11"),
                        *IpAddress::parse("198.18.1.11"),
                        8080,
                        1},
                       1'800'000'030,
                       1'800'000'090});
  r.restored.push_back({key("[2001:db8:f00::1]:443/tcp"), "web-9"});
  r.gateway_indexes[key("203.0.113.20:53/udp")] = 3;
  return r;
}

TEST(Journal, ARecordRoundTripsThroughItsLine) {
  const JournalRecord r = full_record();
  const std::string line = journal_record_to_line(r);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(journal_record_from_line(line), r);
  EXPECT_TRUE(JournalRecord{}.empty());
  EXPECT_EQ(journal_record_from_line(journal_record_to_line(JournalRecord{})), JournalRecord{});
}

TEST(Journal, RecordsWrittenByEarlierVersionsStillRead) {
  // As hostlbd 0.1.0 (before typed records) appended them.
  const auto r = journal_record_from_line(
      R"({"edits":[{"op":"service.attach","service":"203.0.113.10:80/tcp","backend":"web-1","port":8080},)"
      R"({"op":"backend.del","name":"web-3"}],)"
      R"("ids":[{"service":"203.0.113.10:80/tcp","backend":"web-1","id":4}],)"
      R"("restored":[{"service":"203.0.113.10:80/tcp","backend":"web-1"}]})");
  ASSERT_EQ(r.edits.size(), 2u);
  EXPECT_EQ(r.edits[0], Edit::attach(key("203.0.113.10:80/tcp"), {"web-1", 8080}));
  EXPECT_EQ(r.edits[1], Edit::remove_backend("web-3"));
  EXPECT_EQ(r.ids.at({key("203.0.113.10:80/tcp"), "web-1"}), 4u);
  EXPECT_TRUE(r.retired.empty());
  ASSERT_EQ(r.restored.size(), 1u);
}

TEST(Journal, ABadRecordNamesThePathAtFault) {
  auto error = [](const std::string& line) {
    try {
      journal_record_from_line(line);
    } catch (const DocumentError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("[]"), "a journal record must be a JSON object");
  EXPECT_EQ(error(R"({"ids":[]})"), "edits: is required");
  EXPECT_EQ(error(R"({"edits":[{"op":"service.del","service":"203.0.113.10:99999/tcp"}],"ids":[]})")
                .rfind("edits[0].service: ", 0),
            0u);
  EXPECT_EQ(
      error(R"({"edits":[],"ids":[{"service":"203.0.113.10:80/tcp","backend":"a","id":-1}]})"),
      "ids[0].id: must be a whole number below 2^32");
  EXPECT_EQ(error(R"({"edits":[{"op":"x"}],"ids":[]})"), "edits[0].op: unknown edit \"x\"");
  // Found by fuzz_journal_record: a missing member was read through a const
  // operator[] (undefined behaviour).
  EXPECT_EQ(error(R"({"edits":[{"op":"backend.add","bacoend":{}}],"ids":[]})"),
            "edits[0].backend: must be an object, not null");
}

TEST(Journal, ReplayAppliesEditsIdentitiesAndRetirements) {
  PersistedState p{base(), {{{key("203.0.113.10:80/tcp"), "web-1"}, 1}}, {}, 0};
  replay_journal_record(p, full_record());
  EXPECT_TRUE(p.state.find_backend("web-2"));
  ASSERT_EQ(p.state.services.size(), 2u);
  EXPECT_EQ(p.state.services[0].backends, (std::vector<BackendRef>{{"web-2", 8081}}));
  EXPECT_EQ(p.ids.at({key("203.0.113.20:53/udp"), "web-2"}), 7u);
  ASSERT_EQ(p.retired.entries().size(), 1u);
  EXPECT_TRUE(p.retired.entries()[0].draining());
  // web-1's identity is held by its drain; a binding gone without one is not.
  p.ids[{key("203.0.113.99:1/tcp"), "gone"}] = 9;
  drop_unheld_identities(p);
  EXPECT_EQ(p.ids.count({key("203.0.113.10:80/tcp"), "web-1"}), 1u);
  EXPECT_EQ(p.ids.count({key("203.0.113.99:1/tcp"), "gone"}), 0u);
  EXPECT_EQ(p.ids.size(), 3u);
}

// A gateway's record: the indexes of the services it added, and those of
// services it removed freed (an index may be given again).
TEST(Journal, ReplayGivesAGatewaysServicesTheirIndexes) {
  PersistedState p{base(), {}, {}, 0};
  p.gateway_indexes[key("203.0.113.10:80/tcp")] = 1;
  JournalRecord added;
  added.edits.push_back(Edit::add_service({key("203.0.113.20:53/udp"), {{"web-1", 53}}}));
  added.gateway_indexes[key("203.0.113.20:53/udp")] = 2;
  replay_journal_record(p, added);
  EXPECT_EQ(p.gateway_indexes, (std::map<ServiceKey, uint32_t>{{key("203.0.113.10:80/tcp"), 1},
                                                               {key("203.0.113.20:53/udp"), 2}}));
  JournalRecord swapped;
  swapped.edits.push_back(Edit::remove_service(key("203.0.113.10:80/tcp")));
  swapped.edits.push_back(Edit::add_service({key("203.0.113.30:80/tcp"), {{"web-1", 80}}}));
  swapped.gateway_indexes[key("203.0.113.30:80/tcp")] = 1;
  replay_journal_record(p, swapped);
  EXPECT_EQ(p.gateway_indexes, (std::map<ServiceKey, uint32_t>{{key("203.0.113.20:53/udp"), 2},
                                                               {key("203.0.113.30:80/tcp"), 1}}));
  EXPECT_THROW(
      journal_record_from_line(
          R"({"edits":[],"ids":[],"gateway_indexes":[{"service":"203.0.113.10:80/tcp","index":0}]})"),
      DocumentError);
}

TEST(Journal, ARecordThatDoesNotFitItsSnapshotIsRefused) {
  PersistedState p{base(), {}, {}, 0};
  JournalRecord r;
  r.edits.push_back(Edit::attach(key("203.0.113.10:80/tcp"), {"web-1", 1}));
  r.edits.push_back(Edit::remove_service(key("203.0.113.77:80/tcp")));
  try {
    replay_journal_record(p, r);
    FAIL() << "replayed an edit of a service that does not exist";
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), "edits[1].service");
  }
}

TEST(Journal, TheRecordOfAChangeHoldsWhatItAddedAndRetired) {
  Binding added{{key("203.0.113.10:80/tcp"), "web-2"},
                *MacAddress::parse("02:00:00:00:01:12"),
                *IpAddress::parse("198.18.1.12"),
                80,
                5};
  DatapathDiff diff;
  diff.bindings_added.push_back(added);
  diff.bindings_removed.push_back(added);  // removals are not identities given
  Retirements::Change change;
  change.restored.push_back(added.key);
  const auto r = journal_record_of({Edit::remove_backend("x")}, diff, change);
  EXPECT_EQ(r.ids, (BindingIds{{added.key, 5}}));
  EXPECT_EQ(r.restored, std::vector<BindingKey>{added.key});
  EXPECT_EQ(r.edits.size(), 1u);
}

}  // namespace
}  // namespace hostlb
