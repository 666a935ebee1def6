// etcd's JSON gateway as hostlbd speaks it: requests encoded as the API
// defines them, responses (as etcd 3.4 sends them, copied from a real one)
// decoded, errors told apart, a watch stream cut anywhere reassembled.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hostlb/policies/etcd_protocol.h"

namespace hostlb::etcd {
namespace {

using nlohmann::json;

TEST(EtcdProtocol, Base64RoundTripsEveryLengthAndRefusesWhatIsNotBase64) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("/hostlb/"), "L2hvc3RsYi8=");
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes += static_cast<char>(i * 7);
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes) << i;
  }
  EXPECT_FALSE(base64_decode("Zg="));       // not a multiple of 4
  EXPECT_FALSE(base64_decode("Z!=="));      // not the alphabet
  EXPECT_FALSE(base64_decode("Zg==Zg=="));  // padding in the middle
  EXPECT_FALSE(base64_decode("===="));
}

TEST(EtcdProtocol, APrefixRangeEndsAfterEveryKeyWithThePrefix) {
  EXPECT_EQ(prefix_end("/hostlb/"), "/hostlb0");
  EXPECT_EQ(prefix_end("a\xff"), "b");
  EXPECT_EQ(prefix_end("\xff\xff"), std::string(1, '\0'));
}

TEST(EtcdProtocol, EndpointsAreUrlsOfAHostAndPort) {
  EXPECT_EQ(parse_endpoints("http://127.0.0.1:2379,https://etcd-2:2379/"),
            (std::vector<std::string>{"http://127.0.0.1:2379", "https://etcd-2:2379"}));
  EXPECT_THROW(parse_endpoints(""), std::invalid_argument);
  EXPECT_THROW(parse_endpoints("127.0.0.1:2379"), std::invalid_argument);
  EXPECT_THROW(parse_endpoints("http://a:1,"), std::invalid_argument);
  EXPECT_THROW(parse_endpoints("http://a:1/v3"), std::invalid_argument);
}

TEST(EtcdProtocol, RequestsAreEncodedAsTheGatewayExpects) {
  EXPECT_EQ(json::parse(encode_range({"/a/", "/a0", 41, 1000})),
            json::parse(R"({"key":"L2Ev","range_end":"L2Ew","revision":"41","limit":"1000"})"));
  EXPECT_EQ(json::parse(encode_range({"k", "", 0, 0})), json::parse(R"({"key":"aw=="})"));
  TxnRequest txn;
  txn.compares.push_back({"/a/", "/a0", 42});
  txn.puts.push_back({"k", "v", 0, 0, 7});
  txn.deletes.push_back("d");
  EXPECT_EQ(json::parse(encode_txn(txn)), json::parse(R"({
    "compare":[{"target":"MOD","result":"LESS","key":"L2Ev","range_end":"L2Ew","mod_revision":"42"}],
    "success":[{"request_put":{"key":"aw==","value":"dg==","lease":"7"}},
               {"request_delete_range":{"key":"ZA=="}}]})"));
  EXPECT_EQ(json::parse(encode_watch({"/a/", "/a0", 43, true})), json::parse(R"({
    "create_request":{"key":"L2Ev","range_end":"L2Ew","start_revision":"43","progress_notify":true}})"));
  EXPECT_EQ(json::parse(encode_lease_grant(10)), json::parse(R"({"TTL":"10"})"));
  EXPECT_EQ(json::parse(encode_lease_id(12345)), json::parse(R"({"ID":"12345"})"));
}

TEST(EtcdProtocol, ResponsesAreDecoded) {
  const auto range = decode_range(
      R"({"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"2"},
          "kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],
          "more":true,"count":"2"})");
  EXPECT_EQ(range.revision, 3);
  EXPECT_TRUE(range.more);
  ASSERT_EQ(range.kvs.size(), 1u);
  EXPECT_EQ(range.kvs[0], (KeyValue{"foo", "baz", 3, 2, 0}));
  // Nothing found: no kvs, no count.
  EXPECT_TRUE(decode_range(R"({"header":{"revision":"3"}})").kvs.empty());

  EXPECT_TRUE(
      decode_txn(R"({"header":{"revision":"3"},"succeeded":true,"responses":[]})").succeeded);
  const auto failed = decode_txn(R"({"header":{"revision":"3"}})");  // a compare failed
  EXPECT_FALSE(failed.succeeded);
  EXPECT_EQ(failed.revision, 3);

  EXPECT_EQ(
      decode_lease_grant(R"({"header":{"revision":"2"},"ID":"4111120471412275465","TTL":"5"})").id,
      4111120471412275465);
  EXPECT_EQ(decode_lease_keepalive(R"({"result":{"header":{"revision":"2"},"ID":"1","TTL":"5"}})"),
            5);
  EXPECT_EQ(decode_lease_keepalive(R"({"result":{"header":{"revision":"2"},"ID":"12345"}})"), 0);
}

TEST(EtcdProtocol, ErrorsCarryTheirCodeAndMalformedAnswersAreRefused) {
  try {
    decode_range(R"({"error":"etcdserver: mvcc: required revision has been compacted",
                     "message":"etcdserver: mvcc: required revision has been compacted","code":11})");
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_EQ(e.code(), kOutOfRange);
    EXPECT_NE(std::string(e.what()).find("compacted"), std::string::npos);
  }
  try {
    decode_watch(
        R"({"error":{"grpc_code":14,"http_code":503,"message":"no leader","http_status":"Service Unavailable"}})");
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_EQ(e.code(), 14);
    EXPECT_NE(std::string(e.what()).find("no leader"), std::string::npos);
  }
  for (const char* bad : {"", "[]", "not json", R"({"kvs":[]})", R"({"header":{"revision":"x"}})",
                          R"({"header":{"revision":"1"},"kvs":[{"key":"!!"}]})",
                          R"({"header":{"revision":"1"},"kvs":{}})"}) {
    try {
      decode_range(bad);
      ADD_FAILURE() << bad;
    } catch (const ProtocolError& e) {
      EXPECT_EQ(e.code(), 0) << bad;
    }
  }
}

TEST(EtcdProtocol, WatchMessagesAreDecoded) {
  const auto created = decode_watch(
      R"({"result":{"header":{"cluster_id":"1","member_id":"2","revision":"2","raft_term":"2"},"created":true}})");
  EXPECT_TRUE(created.created);
  EXPECT_TRUE(created.events.empty());
  const auto events = decode_watch(R"({"result":{"header":{"revision":"5"},"events":[
      {"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"4","version":"1","value":"YmFy"}},
      {"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"5"}}]}})");
  ASSERT_EQ(events.events.size(), 2u);
  EXPECT_FALSE(events.events[0].deleted);
  EXPECT_EQ(events.events[0].kv, (KeyValue{"foo", "bar", 4, 2, 0}));
  EXPECT_TRUE(events.events[1].deleted);
  EXPECT_EQ(events.events[1].kv.mod_revision, 5);
  const auto compacted = decode_watch(
      R"({"result":{"header":{"revision":"2"},"canceled":true,"compact_revision":"2"}})");
  EXPECT_TRUE(compacted.canceled);
  EXPECT_EQ(compacted.compact_revision, 2);
}

TEST(EtcdProtocol, AWatchStreamCutAnywhereGivesWholeLines) {
  const std::string stream = "{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}\n";
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    LineSplitter splitter;
    auto lines = splitter.feed(stream.substr(0, cut));
    for (auto& l : splitter.feed(stream.substr(cut))) lines.push_back(l);
    ASSERT_EQ(lines.size(), 3u) << cut;
    EXPECT_EQ(lines[0], "{\"a\":1}");
    EXPECT_EQ(lines[1].substr(0, 7), "{\"b\":2}");
    EXPECT_EQ(lines[2], "{\"c\":3}");
    EXPECT_EQ(splitter.pending(), 0u);
  }
}

}  // namespace
}  // namespace hostlb::etcd
