#include "hostlb/policies/control_protocol.h"

#include <stdexcept>

namespace hostlb::control {
namespace {

using nlohmann::json;

std::string dump(const json& value) {
  // replace: a reply must be valid UTF-8 whatever the request held.
  return value.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace

size_t attached_bytes(std::string_view line) {
  if (line.find("\"document_bytes\"") == std::string_view::npos) return 0;
  const json message = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (!message.is_object()) return 0;
  const auto params = message.find("params");
  if (params == message.end() || !params->is_object()) return 0;
  const auto bytes = params->find("document_bytes");
  if (bytes == params->end() || !bytes->is_number_unsigned()) return 0;
  return bytes->get<size_t>();
}

std::optional<Request> decode_request(std::string_view line, Error* error, json* id) {
  *id = nullptr;
  if (line.size() > kMaxRequestBytes) {
    *error = {kRequestTooLarge,
              "request larger than " + std::to_string(kMaxRequestBytes) + " bytes", ""};
    return std::nullopt;
  }
  json message = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (message.is_discarded()) {
    *error = {kParseError, "not valid JSON", ""};
    return std::nullopt;
  }
  if (!message.is_object()) {
    *error = {kInvalidRequest, "a request is a JSON object", ""};
    return std::nullopt;
  }
  if (auto it = message.find("id"); it != message.end()) {
    if (it->is_number_integer() || it->is_string() || it->is_null()) *id = *it;
  }
  for (const auto& [key, value] : message.items()) {
    if (key != "jsonrpc" && key != "id" && key != "method" && key != "params") {
      *error = {kInvalidRequest, "unknown member", key};
      return std::nullopt;
    }
  }
  if (message.value("jsonrpc", json()) != "2.0") {
    *error = {kInvalidRequest, "\"jsonrpc\" must be \"2.0\"", "jsonrpc"};
    return std::nullopt;
  }
  if (auto it = message.find("id");
      it != message.end() && !(it->is_number_integer() || it->is_string() || it->is_null())) {
    *error = {kInvalidRequest, "\"id\" must be an integer or a string", "id"};
    return std::nullopt;
  }
  auto method = message.find("method");
  if (method == message.end() || !method->is_string()) {
    *error = {kInvalidRequest, "\"method\" must be a string", "method"};
    return std::nullopt;
  }
  Request request;
  request.id = *id;
  request.method = method->get<std::string>();
  auto params = message.find("params");
  if (params == message.end() || params->is_null()) {
    request.params = json::object();
  } else if (params->is_object()) {
    request.params = *params;
  } else {
    *error = {kInvalidParams, "\"params\" must be an object", "params"};
    return std::nullopt;
  }
  return request;
}

std::string encode_result(const json& id, const json& result) {
  return dump({{"jsonrpc", "2.0"}, {"id", id}, {"result", result}});
}

std::string encode_error(const json& id, const Error& error) {
  json err = {{"code", error.code}, {"message", error.message}};
  if (!error.path.empty()) err["data"] = {{"path", error.path}};
  return dump({{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(err)}});
}

std::string encode_notification(const std::string& method, const json& params) {
  return dump({{"jsonrpc", "2.0"}, {"method", method}, {"params", params}});
}

bool is_notification(const json& message) {
  return message.is_object() && message.contains("method") && !message.contains("id");
}

std::string encode_request(int id, const std::string& method, const json& params) {
  return dump({{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}});
}

Response decode_response(std::string_view line) {
  json message = json::parse(line.begin(), line.end(), nullptr, false);
  if (message.is_discarded() || !message.is_object() || message.value("jsonrpc", "") != "2.0")
    throw std::runtime_error("the daemon's reply is not a JSON-RPC 2.0 response");
  Response response;
  if (auto it = message.find("result"); it != message.end()) {
    response.ok = true;
    response.result = *it;
    return response;
  }
  auto err = message.find("error");
  if (err == message.end() || !err->is_object())
    throw std::runtime_error("the daemon's reply has neither result nor error");
  response.error.code = err->value("code", static_cast<int>(kInternalError));
  response.error.message = err->value("message", "");
  if (auto data = err->find("data"); data != err->end() && data->is_object())
    response.error.path = data->value("path", "");
  return response;
}

}  // namespace hostlb::control
