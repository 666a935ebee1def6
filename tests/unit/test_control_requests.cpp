// Control requests decoded into typed requests, before the daemon sees them.
#include <gtest/gtest.h>

#include <set>

#include "hostlb/policies/control_requests.h"

namespace hostlb::control {
namespace {

using nlohmann::json;

Request request(std::string method, json params, std::string_view document = {}) {
  return {1, std::move(method), std::move(params), document};
}

Error error_of(const Request& r) {
  try {
    decode_params(r, {"br0"});
  } catch (const RequestError& e) {
    return e.error();
  }
  return {0, "no error", ""};
}

TEST(ControlRequests, EveryMethodIsInTheTableOnce) {
  std::set<std::string_view> names;
  for (const auto& m : methods()) EXPECT_TRUE(names.insert(m.name).second) << m.name;
  EXPECT_EQ(names, (std::set<std::string_view>{
                       "status",        "get",         "apply",          "stats",
                       "backend.list",  "backend.add", "backend.del",    "service.list",
                       "service.add",   "service.del", "service.attach", "service.detach",
                       "connections",   "flush",       "which",          "gateway.digest",
                       "gateway.table", "health",      "service.health", "service.state"}));
}

TEST(ControlRequests, EditsCarryTheirEditAndDrain) {
  auto typed = decode_params(
      request("service.detach",
              {{"service", "203.0.113.10:80/tcp"}, {"backend", "web-1"}, {"drain", 30u}}),
      {});
  const auto& e = std::get<EditRequest>(typed);
  EXPECT_EQ(e.edit, Edit::detach(*parse_service_key("203.0.113.10:80/tcp"), "web-1"));
  EXPECT_EQ(e.drain_seconds, 30u);

  typed = decode_params(
      request("backend.add",
              {{"name", "web-2"}, {"mac", "02:00:00:00:01:12"}, {"ipv4", "198.18.1.12"}}),
      {"br1"});
  EXPECT_EQ(std::get<EditRequest>(typed).edit.backend.bridge, "br1") << "the default bridge";
}

TEST(ControlRequests, FiltersAndFlags) {
  auto typed = decode_params(request("connections", {{"backend", "web-1"}, {"count", true}}), {});
  const auto& c = std::get<ConnectionsRequest>(typed);
  EXPECT_EQ(c.filter.backend, "web-1");
  EXPECT_FALSE(c.filter.service);
  EXPECT_TRUE(c.count_only);
  EXPECT_TRUE(
      std::get<StatsRequest>(decode_params(request("stats", {{"format", "prometheus"}}), {}))
          .prometheus);
}

TEST(ControlRequests, ApplyTakesTheDocumentThatFollowsTheLine) {
  const std::string doc = R"({"version":1,"backends":[],"services":[]})";
  auto typed =
      decode_params(request("apply", {{"document_bytes", doc.size()}, {"dry_run", true}}, doc), {});
  const auto& a = std::get<ApplyRequest>(typed);
  EXPECT_TRUE(a.dry_run);
  EXPECT_TRUE(a.document.services.empty());
  EXPECT_EQ(error_of(request("apply", {{"document_bytes", doc.size() + 1}}, doc)).path,
            "params.document_bytes");
}

TEST(ControlRequests, RefusalsNameTheParameter) {
  EXPECT_EQ(error_of(request("nope", json::object())).code, kMethodNotFound);
  auto e = error_of(request("status", {{"verbose", true}}));
  EXPECT_EQ(e.code, kInvalidParams);
  EXPECT_EQ(e.path, "params.verbose");
  EXPECT_EQ(error_of(request("backend.del", {{"drain", 1}})).path, "params.name");
  EXPECT_EQ(error_of(request("backend.del", {{"name", "x"}, {"drain", -1}})).path, "params.drain");
  EXPECT_EQ(error_of(request("service.add", {{"service", "203.0.113.10:80/tcp"},
                                             {"backends", {{{"name", "w"}, {"port", 0}}}}}))
                .path,
            "params.backends[0].port");
  EXPECT_EQ(error_of(request("connections", {{"count", "yes"}})).path, "params.count");
  EXPECT_EQ(error_of(request("stats", {{"format", "xml"}})).path, "params.format");
}

TEST(ControlRequests, AFilterMustNameWhatExists) {
  State state;
  state.backends.push_back({"web-1", {}, {}, {}, "br0"});
  check_filter({std::nullopt, "web-1"}, state);
  try {
    check_filter({std::nullopt, "web-9"}, state);
    FAIL();
  } catch (const RequestError& e) {
    EXPECT_EQ(e.error().path, "params.backend");
  }
  try {
    check_filter({parse_service_key("203.0.113.10:80/tcp"), std::nullopt}, state);
    FAIL();
  } catch (const RequestError& e) {
    EXPECT_EQ(e.error().message, "no service 203.0.113.10:80/tcp");
  }
}

}  // namespace
}  // namespace hostlb::control
