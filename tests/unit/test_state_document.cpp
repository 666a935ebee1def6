#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

constexpr const char* kExample = R"({"version": 1,
 "backends": [{"name": "web-1", "mac": "02:00:00:00:01:11",
               "ipv4": "198.18.1.11", "ipv6": "2001:db8:1::11", "bridge": "br0"}],
 "services": [{"vip": "203.0.113.10", "port": 80, "protocol": "tcp",
               "backends": [{"name": "web-1", "port": 8080}]}]})";

TEST(StateDocument, ParsesTheDocumentedExample) {
  State state = parse_state_document(kExample);
  ASSERT_EQ(state.backends.size(), 1u);
  EXPECT_EQ(state.backends[0].name, "web-1");
  EXPECT_EQ(state.backends[0].mac.str(), "02:00:00:00:01:11");
  EXPECT_EQ(state.backends[0].ipv4->str(), "198.18.1.11");
  EXPECT_EQ(state.backends[0].ipv6->str(), "2001:db8:1::11");
  EXPECT_EQ(state.backends[0].bridge, "br0");
  ASSERT_EQ(state.services.size(), 1u);
  EXPECT_EQ(state.services[0].key.str(), "203.0.113.10:80/tcp");
  ASSERT_EQ(state.services[0].backends.size(), 1u);
  EXPECT_EQ(state.services[0].backends[0], (BackendRef{"web-1", 8080}));
}

TEST(StateDocument, RoundTripsThroughCanonicalJson) {
  State state = parse_state_document(kExample);
  const std::string canonical = state_to_json(state).dump();
  EXPECT_EQ(parse_state_document(canonical), state);
  EXPECT_EQ(canonical, R"({"version":1,"backends":[{"name":"web-1","mac":"02:00:00:00:01:11",)"
                       R"("ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":"br0"}],)"
                       R"("services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp",)"
                       R"("backends":[{"name":"web-1","port":8080}]}]})");
}

// The fast path reads plain documents itself and leaves everything else
// to the strict path, which alone explains errors; both read a document the
// same way (the fuzz target checks this on arbitrary input).
TEST(StateDocument, TheFastPathReadsPlainDocumentsAsTheStrictPathDoes) {
  const auto fast = parse_state_document_fast(kExample);
  ASSERT_TRUE(fast);
  EXPECT_EQ(*fast, state_from_json(parse_json_strict(kExample)));
  const auto defaulted = parse_state_document_fast(
      R"({"version":1,"backends":[{"name":"a","mac":"02:00:00:00:01:11","ipv6":"2001:db8:1::11"}]})",
      {"br9"});
  ASSERT_TRUE(defaulted);
  EXPECT_EQ(defaulted->backends[0].bridge, "br9");
  EXPECT_TRUE(parse_state_document_fast(std::string(" \t\r\n") + kExample + "\n"))
      << "white space is plain";
}

TEST(StateDocument, TheFastPathLeavesAnythingUnusualToTheStrictPath) {
  const std::string backend =
      R"({"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"})";
  const std::string service = R"({"vip":"203.0.113.10","port":80,"protocol":"tcp"})";
  auto doc = [&](const std::string& backends, const std::string& services) {
    return R"({"version":1,"backends":[)" + backends + R"(],"services":[)" + services + "]}";
  };
  // Valid, but not plain: the strict path reads them.
  for (
      const std::string& text :
      {doc(R"({"name":"w\u0065b-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"})",
           service),
       R"({"services":[)" + service + R"(],"version":1,"backends":[)" + backend + "]}",
       "\xEF\xBB\xBF" + doc(backend, service)}) {  // a UTF-8 byte order mark
    EXPECT_FALSE(parse_state_document_fast(text)) << text;
    EXPECT_NO_THROW(parse_state_document(text)) << text;
  }
  // Invalid: the strict path says why.
  const std::vector<std::pair<std::string, std::string>> invalid = {
      {doc(backend, R"({"vip":"203.0.113.10","port":80.0,"protocol":"tcp"})"),
       "services[0].port: must be an integer port number, not a number with a fraction"},
      {doc(backend, R"({"vip":"203.0.113.10","port":80,"port":81,"protocol":"tcp"})"),
       "invalid JSON: key \"port\" appears twice in one object"},
      {doc(backend, R"({"vip":"198.18.1.11","port":80,"protocol":"tcp"})"),
       "services[0].vip: 198.18.1.11 is the address of backend \"web-1\"; a VIP must not be a "
       "backend's own address"},
      {doc(backend + "," + backend, ""),
       "backends[1].name: duplicate backend name \"web-1\" (also backends[0])"},
      {doc(backend, service + "," + service),
       "services[1]: duplicate service 203.0.113.10:80/tcp (also services[0])"},
      {doc(backend,
           R"({"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-2","port":1}]})"),
       "services[0].backends[0].name: unknown backend \"web-2\""},
  };
  for (const auto& [text, message] : invalid) {
    EXPECT_FALSE(parse_state_document_fast(text)) << text;
    try {
      parse_state_document(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const DocumentError& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  }
}

// A fleet document: backends name their hypervisor, services their row
// count, bindings their weight; every gateway and host reads the same one.
TEST(StateDocument, FleetFieldsRoundTripOnBothPaths) {
  const std::string doc = R"({"version":1,"backends":[
    {"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0","host":"hv1"},
    {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0"}],
   "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","rows":2039,
                "backends":[{"name":"web-1","port":8080,"weight":3},{"name":"web-2","port":8080}]}]})";
  const State state = state_from_json(parse_json_strict(doc));
  EXPECT_EQ(state.backends[0].host, "hv1");
  EXPECT_EQ(state.backends[1].host, "");
  EXPECT_EQ(state.services[0].rows, 2039u);
  EXPECT_EQ(state.services[0].backends[0].weight, 3u);
  EXPECT_EQ(state.services[0].backends[1].weight, 1u);
  EXPECT_EQ(parse_state_document_fast(doc, {}), state) << "the fast path reads them alike";
  const std::string canonical = state_to_json(state).dump();
  EXPECT_EQ(parse_state_document_fast(canonical, {}), state);
  EXPECT_EQ(canonical.find("\"weight\":1"), std::string::npos) << "the default is not written";
  EXPECT_TRUE(state.backends[0].is_on("hv1"));
  EXPECT_FALSE(state.backends[0].is_on("hv2"));
  EXPECT_TRUE(state.backends[1].is_on("hv2")) << "no host: whoever reads it";
}

TEST(StateDocument, EmptyDocumentIsValid) {
  State state = parse_state_document(R"({"version": 1})");
  EXPECT_TRUE(state.backends.empty());
  EXPECT_TRUE(state.services.empty());
}

TEST(StateDocument, BridgeDefaultsFromOptions) {
  const char* doc =
      R"({"version":1,"backends":[{"name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11"}]})";
  EXPECT_EQ(parse_state_document(doc, {"br-vms"}).backends[0].bridge, "br-vms");
}

TEST(StateDocument, OneBackendServesManyVips) {
  State state = parse_state_document(R"({"version":1,
    "backends":[{"name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"a","port":8080}]},
                {"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"a","port":8080}]},
                {"vip":"203.0.113.10","port":80,"protocol":"udp","backends":[{"name":"a","port":8080}]}]})");
  EXPECT_EQ(state.services.size(), 3u);
}

// Every way a document can be wrong, with the exact message the operator sees.
struct BadDocument {
  const char* name;
  std::string document;
  std::string error;
};

std::string with_backend(const std::string& backend_fields) {
  return R"({"version":1,"backends":[{)" + backend_fields + "}]}";
}

const std::string kBackend =
    R"({"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"})";

std::string with_service(const std::string& service_fields) {
  return R"({"version":1,"backends":[)" + kBackend + R"(],"services":[{)" + service_fields + "}]}";
}

class StateDocumentErrors : public testing::TestWithParam<BadDocument> {};

TEST_P(StateDocumentErrors, NamesThePathAndTheReason) {
  const auto& param = GetParam();
  try {
    parse_state_document(param.document);
    FAIL() << "accepted: " << param.document;
  } catch (const DocumentError& e) {
    EXPECT_EQ(std::string(e.what()), param.error);
  }
}

const std::string kMacIp = R"("mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0")";

INSTANTIATE_TEST_SUITE_P(
    All, StateDocumentErrors,
    testing::Values(
        BadDocument{"NotJson", "{",
                    "invalid JSON: parse error at line 1, column 2: syntax error while parsing "
                    "object key - unexpected end of input; expected string literal"},
        BadDocument{"TrailingGarbage", R"({"version":1} x)",
                    "invalid JSON: parse error at line 1, column 15: syntax error while parsing "
                    "value - invalid literal; last read: '1} x'; expected end of input"},
        BadDocument{"DuplicateKey", R"({"version":1,"version":1})",
                    "invalid JSON: key \"version\" appears twice in one object"},
        BadDocument{"NotObject", "[]", "document: must be an object, not an array"},
        BadDocument{"MissingVersion", "{}", "version: is required"},
        BadDocument{"WrongVersion", R"({"version":2})",
                    "version: 2 is not a supported version (expected 1)"},
        BadDocument{"StringVersion", R"({"version":"1"})",
                    "version: \"1\" is not a supported version (expected 1)"},
        BadDocument{"UnknownTopField", R"({"version":1,"extra":true})", "extra: unknown field"},
        BadDocument{"BackendsNotArray", R"({"version":1,"backends":{}})",
                    "backends: must be an array, not an object"},
        BadDocument{"BackendNotObject", R"({"version":1,"backends":[1]})",
                    "backends[0]: must be an object, not an integer"},
        BadDocument{"UnknownBackendField", with_backend(R"("name":"a",)" + kMacIp + R"(,"vlan":3)"),
                    "backends[0].vlan: unknown field"},
        BadDocument{"MissingName", with_backend(kMacIp), "backends[0].name: is required"},
        BadDocument{"NameNotString", with_backend(R"("name":5,)" + kMacIp),
                    "backends[0].name: must be a string, not an integer"},
        BadDocument{"BadName", with_backend(R"("name":"a b",)" + kMacIp),
                    "backends[0].name: \"a b\" is not a valid name (1-63 characters: letters, "
                    "digits, '.', '_', '-'; starting with a letter or digit)"},
        BadDocument{"NameWithQuote", with_backend(R"("name":"a\"; flush ruleset",)" + kMacIp),
                    "backends[0].name: \"a\\\"; flush ruleset\" is not a valid name (1-63 "
                    "characters: letters, digits, '.', '_', '-'; starting with a letter or digit)"},
        BadDocument{"MissingMac", with_backend(R"("name":"a","ipv4":"198.18.1.11","bridge":"br0")"),
                    "backends[0].mac: is required"},
        BadDocument{"BadMac",
                    with_backend(R"("name":"a","mac":"02:00:00:00:01:zz","ipv4":"198.18.1.11")"),
                    "backends[0].mac: \"02:00:00:00:01:zz\" is not a MAC address"},
        BadDocument{"MulticastMac",
                    with_backend(R"("name":"a","mac":"01:00:5e:00:00:01","ipv4":"198.18.1.11")"),
                    "backends[0].mac: 01:00:5e:00:00:01 is not a unicast MAC address"},
        BadDocument{"BadIpv4",
                    with_backend(R"("name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.256")"),
                    "backends[0].ipv4: \"198.18.1.256\" is not an IPv4 address"},
        BadDocument{"Ipv6InIpv4",
                    with_backend(R"("name":"a","mac":"02:00:00:00:01:11","ipv4":"2001:db8::1")"),
                    "backends[0].ipv4: \"2001:db8::1\" is not an IPv4 address"},
        BadDocument{"LoopbackIpv4",
                    with_backend(R"("name":"a","mac":"02:00:00:00:01:11","ipv4":"127.0.0.1")"),
                    "backends[0].ipv4: 127.0.0.1 is not a usable unicast address"},
        BadDocument{"BadIpv6",
                    with_backend(R"("name":"a","mac":"02:00:00:00:01:11","ipv6":"2001:db8::zz")"),
                    "backends[0].ipv6: \"2001:db8::zz\" is not an IPv6 address"},
        BadDocument{"NoAddress", with_backend(R"("name":"a","mac":"02:00:00:00:01:11")"),
                    "backends[0]: needs an \"ipv4\" or an \"ipv6\" address (or both)"},
        BadDocument{"NoBridge",
                    with_backend(R"("name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11")"),
                    "backends[0].bridge: is required (no default bridge is configured)"},
        BadDocument{
            "BadBridge",
            with_backend(
                R"("name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br/0")"),
            "backends[0].bridge: \"br/0\" is not a valid interface name"},
        BadDocument{
            "LongBridge",
            with_backend(
                R"("name":"a","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"bridge-name-too-long")"),
            "backends[0].bridge: \"bridge-name-too-long\" is not a valid interface name"},
        BadDocument{
            "DuplicateName",
            R"({"version":1,"backends":[)" + kBackend +
                R"(,{"name":"web-1","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0"}]})",
            "backends[1].name: duplicate backend name \"web-1\" (also backends[0])"},
        BadDocument{
            "DuplicateMac",
            R"({"version":1,"backends":[)" + kBackend +
                R"(,{"name":"web-2","mac":"02:00:00:00:01:11","ipv4":"198.18.1.12","bridge":"br0"}]})",
            "backends[1].mac: MAC 02:00:00:00:01:11 is already used by backends[0]"},
        BadDocument{
            "DuplicateAddress",
            R"({"version":1,"backends":[)" + kBackend +
                R"(,{"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.11","bridge":"br0"}]})",
            "backends[1].ipv4: address 198.18.1.11 is already used by backends[0]"},
        BadDocument{"ServicesNotArray", R"({"version":1,"services":"x"})",
                    "services: must be an array, not a string"},
        BadDocument{"UnknownServiceField",
                    with_service(R"("vip":"203.0.113.10","port":80,"protocol":"tcp","weight":1)"),
                    "services[0].weight: unknown field"},
        BadDocument{"MissingVip", with_service(R"("port":80,"protocol":"tcp")"),
                    "services[0].vip: is required"},
        BadDocument{"BadVip", with_service(R"("vip":"203.0.113","port":80,"protocol":"tcp")"),
                    "services[0].vip: \"203.0.113\" is not an IP address"},
        BadDocument{"MulticastVip", with_service(R"("vip":"239.1.1.1","port":80,"protocol":"tcp")"),
                    "services[0].vip: 239.1.1.1 cannot be a VIP (not a unicast address)"},
        BadDocument{"VipIsBackendAddress",
                    with_service(R"("vip":"198.18.1.11","port":80,"protocol":"tcp")"),
                    "services[0].vip: 198.18.1.11 is the address of backend \"web-1\"; a VIP must "
                    "not be a backend's own address"},
        BadDocument{"MissingPort", with_service(R"("vip":"203.0.113.10","protocol":"tcp")"),
                    "services[0].port: is required"},
        BadDocument{"PortZero", with_service(R"("vip":"203.0.113.10","port":0,"protocol":"tcp")"),
                    "services[0].port: 0 is not a port (1-65535)"},
        BadDocument{"PortTooBig",
                    with_service(R"("vip":"203.0.113.10","port":65536,"protocol":"tcp")"),
                    "services[0].port: 65536 is not a port (1-65535)"},
        BadDocument{"PortNegative",
                    with_service(R"("vip":"203.0.113.10","port":-80,"protocol":"tcp")"),
                    "services[0].port: -80 is not a port (1-65535)"},
        BadDocument{"PortFloat",
                    with_service(R"("vip":"203.0.113.10","port":80.5,"protocol":"tcp")"),
                    "services[0].port: must be an integer port number, not a number with a "
                    "fraction"},
        BadDocument{"PortString",
                    with_service(R"("vip":"203.0.113.10","port":"80","protocol":"tcp")"),
                    "services[0].port: must be an integer port number, not a string"},
        BadDocument{"BadProtocol",
                    with_service(R"("vip":"203.0.113.10","port":80,"protocol":"sctp")"),
                    "services[0].protocol: \"sctp\" is not tcp or udp"},
        BadDocument{"UpperCaseProtocol",
                    with_service(R"("vip":"203.0.113.10","port":80,"protocol":"TCP")"),
                    "services[0].protocol: \"TCP\" is not tcp or udp"},
        BadDocument{
            "RefsNotArray",
            with_service(R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":{})"),
            "services[0].backends: must be an array, not an object"},
        BadDocument{
            "UnknownBackend",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-9","port":8080}])"),
            "services[0].backends[0].name: unknown backend \"web-9\""},
        BadDocument{
            "RefMissingPort",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1"}])"),
            "services[0].backends[0].port: is required"},
        BadDocument{
            "RefPortZero",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":0}])"),
            "services[0].backends[0].port: 0 is not a port (1-65535)"},
        BadDocument{
            "RefUnknownField",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":1,"x":1}])"),
            "services[0].backends[0].x: unknown field"},
        BadDocument{
            "FamilyMismatch",
            with_service(
                R"("vip":"2001:db8:f00::10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}])"),
            "services[0].backends[0].name: backend \"web-1\" has no IPv6 address for VIP "
            "2001:db8:f00::10"},
        BadDocument{
            "BackendTwice",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":1},{"name":"web-1","port":2}])"),
            "services[0].backends[1].name: backend \"web-1\" is listed twice (also "
            "services[0].backends[0])"},
        BadDocument{"DuplicateService",
                    R"({"version":1,"services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp"},)"
                    R"({"vip":"203.0.113.10","port":80,"protocol":"tcp"}]})",
                    "services[1]: duplicate service 203.0.113.10:80/tcp (also services[0])"},
        BadDocument{
            "DuplicateServiceV6Spelling",
            R"({"version":1,"services":[{"vip":"2001:db8:f00::10","port":80,"protocol":"tcp"},)"
            R"({"vip":"2001:0db8:0f00::0010","port":80,"protocol":"tcp"}]})",
            "services[1]: duplicate service [2001:db8:f00::10]:80/tcp (also services[0])"},
        BadDocument{"BadHost", with_backend(R"("name":"a",)" + kMacIp + R"(,"host":"hv 1")"),
                    "backends[0].host: \"hv 1\" is not a valid host name (1-63 characters: "
                    "letters, digits, '.', '_', '-'; starting with a letter or digit)"},
        BadDocument{"HostNotAString", with_backend(R"("name":"a",)" + kMacIp + R"(,"host":7)"),
                    "backends[0].host: must be a string, not an integer"},
        BadDocument{"ZeroRows",
                    with_service(R"("vip":"203.0.113.10","port":80,"protocol":"tcp","rows":0)"),
                    "services[0].rows: 0 is not a whole number from 1 to 65521"},
        BadDocument{"TooManyRows",
                    with_service(R"("vip":"203.0.113.10","port":80,"protocol":"tcp","rows":65536)"),
                    "services[0].rows: 65536 is not a whole number from 1 to 65521"},
        BadDocument{
            "RowsAsText",
            with_service(R"("vip":"203.0.113.10","port":80,"protocol":"tcp","rows":"4093")"),
            "services[0].rows: must be a whole number, not a string"},
        BadDocument{
            "ZeroWeight",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":1,"weight":0}])"),
            "services[0].backends[0].weight: 0 is not a whole number from 1 to 100"},
        BadDocument{
            "HeavyWeight",
            with_service(
                R"("vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":1,"weight":101}])"),
            "services[0].backends[0].weight: 101 is not a whole number from 1 to 100"},
        BadDocument{"NonUtf8Name", with_backend("\"name\":\"a\xff\"," + kMacIp),
                    "invalid JSON: parse error at line 1, column 36: syntax error while parsing "
                    "value - invalid string: ill-formed UTF-8 byte; last read: '\"a\\xFF'"}),
    [](const testing::TestParamInfo<BadDocument>& p) { return p.param.name; });

TEST(StateDocument, ErrorKeepsPathAndReasonApart) {
  try {
    parse_state_document(
        with_backend(R"("name":"a","mac":"02:00:00:00:01:zz","ipv4":"198.18.1.11")"));
    FAIL();
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), "backends[0].mac");
    EXPECT_EQ(e.reason(), "\"02:00:00:00:01:zz\" is not a MAC address");
  }
}

TEST(StateDocument, LongValuesAreShortenedInMessages) {
  const std::string long_name(500, 'x');
  try {
    parse_state_document(with_backend(R"("name":")" + long_name + "\"," + kMacIp));
    FAIL();
  } catch (const DocumentError& e) {
    EXPECT_LT(std::string(e.what()).size(), 250u);
    EXPECT_EQ(e.path(), "backends[0].name");
  }
}

}  // namespace
}  // namespace hostlb
