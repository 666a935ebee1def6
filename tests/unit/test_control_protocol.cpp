#include <gtest/gtest.h>

#include "hostlb/policies/control_protocol.h"

namespace hostlb::control {
namespace {

using nlohmann::json;

std::optional<Request> decode(const std::string& line, Error* error, json* id) {
  return decode_request(line, error, id);
}

TEST(ControlProtocol, DecodesARequest) {
  Error error;
  json id;
  auto request =
      decode(R"({"jsonrpc":"2.0","id":7,"method":"service.attach",)"
             R"("params":{"service":"203.0.113.10:80/tcp","backend":"web-1","port":80}})",
             &error, &id);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->id, 7);
  EXPECT_EQ(request->method, "service.attach");
  EXPECT_EQ(request->params["backend"], "web-1");
}

TEST(ControlProtocol, ParamsDefaultToAnEmptyObjectAndIdsMayBeStrings) {
  Error error;
  json id;
  auto request = decode(R"({"jsonrpc":"2.0","id":"a","method":"status"})", &error, &id);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->id, "a");
  EXPECT_TRUE(request->params.is_object());
  EXPECT_TRUE(request->params.empty());
}

TEST(ControlProtocol, EveryMalformedRequestHasItsError) {
  struct Case {
    std::string line;
    int code;
    std::string path;
    json id;
  };
  for (const Case& c : {
           Case{"{not json", kParseError, "", nullptr},
           Case{"[1,2]", kInvalidRequest, "", nullptr},
           Case{R"({"jsonrpc":"2.0","id":1})", kInvalidRequest, "method", 1},
           Case{R"({"jsonrpc":"1.0","id":1,"method":"status"})", kInvalidRequest, "jsonrpc", 1},
           Case{R"({"id":1,"method":"status"})", kInvalidRequest, "jsonrpc", 1},
           Case{R"({"jsonrpc":"2.0","id":1,"method":5})", kInvalidRequest, "method", 1},
           Case{R"({"jsonrpc":"2.0","id":{},"method":"status"})", kInvalidRequest, "id", nullptr},
           Case{R"({"jsonrpc":"2.0","id":1,"method":"status","params":[]})", kInvalidParams,
                "params", 1},
           Case{R"({"jsonrpc":"2.0","id":2,"method":"status","extra":1})", kInvalidRequest, "extra",
                2},
       }) {
    Error error;
    json id;
    EXPECT_FALSE(decode(c.line, &error, &id)) << c.line;
    EXPECT_EQ(error.code, c.code) << c.line;
    EXPECT_EQ(error.path, c.path) << c.line;
    EXPECT_EQ(id, c.id) << c.line;
  }
}

TEST(ControlProtocol, RefusesOversizedRequests) {
  Error error;
  json id;
  EXPECT_FALSE(decode(std::string(kMaxRequestBytes + 1, ' '), &error, &id));
  EXPECT_EQ(error.code, kRequestTooLarge);
}

TEST(ControlProtocol, EncodesOneLinePerMessage) {
  const std::string result = encode_result(3, {{"a", "x\ny"}});
  EXPECT_EQ(result, "{\"id\":3,\"jsonrpc\":\"2.0\",\"result\":{\"a\":\"x\\ny\"}}\n");
  const std::string error = encode_error(nullptr, {kRefused, "no service", "params.service"});
  EXPECT_EQ(error,
            "{\"error\":{\"code\":-32001,\"data\":{\"path\":\"params.service\"},\"message\":\"no "
            "service\"},\"id\":null,\"jsonrpc\":\"2.0\"}\n");
  // Invalid UTF-8 from a request never makes an invalid reply.
  const std::string replaced = encode_error(1, {kRefused, "bad \xff byte", ""});
  EXPECT_TRUE(json::accept(replaced));
}

TEST(ControlProtocol, ClientDecodesResultsAndErrors) {
  auto ok = decode_response(encode_result(1, {{"changes", json::array()}}));
  EXPECT_TRUE(ok.ok);
  EXPECT_TRUE(ok.result["changes"].empty());
  auto err = decode_response(encode_error(1, {kInvalidParams, "is required", "params.name"}));
  EXPECT_FALSE(err.ok);
  EXPECT_EQ(err.error.code, kInvalidParams);
  EXPECT_EQ(err.error.path, "params.name");
  EXPECT_THROW(decode_response("garbage"), std::runtime_error);
  EXPECT_THROW(decode_response(R"({"jsonrpc":"2.0","id":1})"), std::runtime_error);
  const std::string request = encode_request(5, "get", json::object());
  EXPECT_EQ(request.back(), '\n');
  Error error;
  json id;
  EXPECT_TRUE(decode(request.substr(0, request.size() - 1), &error, &id));
}

TEST(ControlProtocol, NotificationsCarryPartsOfALongAnswer) {
  const std::string line =
      encode_notification("connections.batch", {{"id", 4}, {"connections", json::array()}});
  EXPECT_EQ(line.back(), '\n');
  const auto message = json::parse(line);
  EXPECT_TRUE(is_notification(message));
  EXPECT_FALSE(is_notification(json::parse(encode_result(4, {{"count", 0}}))));
  EXPECT_THROW(decode_response(line), std::runtime_error) << "a notification is not the answer";
}

TEST(ControlProtocol, ALineAnnouncesTheRawBytesThatFollowIt) {
  EXPECT_EQ(attached_bytes(encode_request(1, "apply", {{"document_bytes", 1234}})), 1234u);
  EXPECT_EQ(attached_bytes(encode_request(1, "status", json::object())), 0u);
  EXPECT_EQ(attached_bytes(encode_request(1, "apply", {{"document_bytes", -5}})), 0u)
      << "a wrong count is refused with the request, and nothing is waited for";
  EXPECT_EQ(attached_bytes(encode_request(1, "apply", {{"document_bytes", "12"}})), 0u);
  EXPECT_EQ(
      attached_bytes(encode_request(1, "apply", {{"document_text", "\"document_bytes\": 9"}})), 0u)
      << "mentioned in a string, not a member of params";
  EXPECT_EQ(attached_bytes(R"({"document_bytes": 9)"), 0u) << "not JSON";
}

}  // namespace
}  // namespace hostlb::control
