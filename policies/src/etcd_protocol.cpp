#include "hostlb/policies/etcd_protocol.h"

#include <array>
#include <charconv>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace hostlb::etcd {

using nlohmann::json;

namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

[[noreturn]] void malformed(const std::string& what) { throw ProtocolError(0, "etcd: " + what); }

json parse(std::string_view body) {
  json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) malformed("a response that is not a JSON object");
  // {"error": "...", "code": N, "message": "..."} for a unary call;
  // {"error": {"grpc_code": N, "message": "..."}} inside a stream.
  if (auto it = doc.find("error"); it != doc.end()) {
    int code = 0;
    std::string message;
    const json& error = it->is_object() ? *it : doc;
    if (auto c = error.find(it->is_object() ? "grpc_code" : "code");
        c != error.end() && c->is_number_integer())
      code = c->get<int>();
    if (auto m = error.find("message"); m != error.end() && m->is_string())
      message = m->get<std::string>();
    else if (it->is_string())
      message = it->get<std::string>();
    throw ProtocolError(code, "etcd: " + (message.empty() ? std::string("an error") : message));
  }
  return doc;
}

// 64-bit numbers come as strings ("12"); absent means 0.
int64_t number(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const auto& text = it->get_ref<const std::string&>();
    int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size()) return value;
  }
  malformed(std::string("field ") + name + " is not a number");
}

bool flag(const json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

std::string bytes(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return "";
  if (!it->is_string()) malformed(std::string("field ") + name + " is not a string");
  auto decoded = base64_decode(it->get_ref<const std::string&>());
  if (!decoded) malformed(std::string("field ") + name + " is not base64");
  return *decoded;
}

int64_t header_revision(const json& doc) {
  auto it = doc.find("header");
  if (it == doc.end() || !it->is_object()) malformed("a response without its header");
  return number(*it, "revision");
}

KeyValue key_value(const json& kv) {
  if (!kv.is_object()) malformed("a key-value that is not an object");
  return {bytes(kv, "key"), bytes(kv, "value"), number(kv, "mod_revision"),
          number(kv, "create_revision"), number(kv, "lease")};
}

}  // namespace

std::vector<std::string> parse_endpoints(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string endpoint = text.substr(start, comma - start);
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    const bool http = endpoint.starts_with("http://"), https = endpoint.starts_with("https://");
    if (!http && !https)
      throw std::invalid_argument("etcd endpoint \"" + endpoint +
                                  "\" must be http://HOST:PORT or https://HOST:PORT");
    const std::string rest = endpoint.substr(http ? 7 : 8);
    if (rest.empty() || rest.find_first_of("/?# ") != std::string::npos)
      throw std::invalid_argument("etcd endpoint \"" + endpoint +
                                  "\" must name only a host and port");
    out.push_back(std::move(endpoint));
    start = comma + 1;
  }
  return out;
}

std::string base64_encode(std::string_view input) {
  std::string out;
  out.reserve((input.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < input.size(); i += 3) {
    const uint32_t n = (uint32_t(uint8_t(input[i])) << 16) |
                       (uint32_t(uint8_t(input[i + 1])) << 8) | uint8_t(input[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  if (i < input.size()) {
    uint32_t n = uint32_t(uint8_t(input[i])) << 16;
    if (i + 1 < input.size()) n |= uint32_t(uint8_t(input[i + 1])) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < input.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  static const std::array<int8_t, 256> values = [] {
    std::array<int8_t, 256> v{};
    v.fill(-1);
    for (size_t i = 0; i < kAlphabet.size(); ++i) v[uint8_t(kAlphabet[i])] = int8_t(i);
    return v;
  }();
  if (text.size() % 4 != 0) return std::nullopt;
  size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    uint32_t n = 0;
    for (size_t j = 0; j < 4; ++j) {
      const int8_t v = last && j >= 4 - padding ? 0 : values[uint8_t(text[i + j])];
      if (v < 0) return std::nullopt;
      n = (n << 6) | uint32_t(v);
    }
    out += char(n >> 16);
    if (!last || padding < 2) out += char((n >> 8) & 0xff);
    if (!last || padding < 1) out += char(n & 0xff);
  }
  return out;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (uint8_t(end.back()) < 0xff) {
      end.back() = char(uint8_t(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key: the API's "to the end"
}

std::string encode_range(const RangeRequest& request) {
  json doc{{"key", base64_encode(request.key)}};
  if (!request.range_end.empty()) doc["range_end"] = base64_encode(request.range_end);
  if (request.revision > 0) doc["revision"] = std::to_string(request.revision);
  if (request.limit > 0) doc["limit"] = std::to_string(request.limit);
  return doc.dump();
}

RangeResponse decode_range(std::string_view body) {
  const json doc = parse(body);
  RangeResponse out;
  out.revision = header_revision(doc);
  if (auto it = doc.find("kvs"); it != doc.end()) {
    if (!it->is_array()) malformed("kvs is not a list");
    out.kvs.reserve(it->size());
    for (const auto& kv : *it) out.kvs.push_back(key_value(kv));
  }
  out.more = flag(doc, "more");
  return out;
}

std::string encode_txn(const TxnRequest& request) {
  json compares = json::array();
  for (const auto& c : request.compares) {
    json compare{{"target", "MOD"},
                 {"result", "LESS"},
                 {"key", base64_encode(c.key)},
                 {"mod_revision", std::to_string(c.below)}};
    if (!c.range_end.empty()) compare["range_end"] = base64_encode(c.range_end);
    compares.push_back(std::move(compare));
  }
  json success = json::array();
  for (const auto& kv : request.puts) {
    json put{{"key", base64_encode(kv.key)}, {"value", base64_encode(kv.value)}};
    if (kv.lease != 0) put["lease"] = std::to_string(kv.lease);
    success.push_back({{"request_put", std::move(put)}});
  }
  for (const auto& key : request.deletes)
    success.push_back({{"request_delete_range", {{"key", base64_encode(key)}}}});
  return json{{"compare", std::move(compares)}, {"success", std::move(success)}}.dump();
}

TxnResponse decode_txn(std::string_view body) {
  const json doc = parse(body);
  return {header_revision(doc), flag(doc, "succeeded")};
}

std::string encode_watch(const WatchRequest& request) {
  json create{{"key", base64_encode(request.key)}};
  if (!request.range_end.empty()) create["range_end"] = base64_encode(request.range_end);
  if (request.start_revision > 0) create["start_revision"] = std::to_string(request.start_revision);
  if (request.progress_notify) create["progress_notify"] = true;
  return json{{"create_request", std::move(create)}}.dump();
}

WatchMessage decode_watch(std::string_view message) {
  const json doc = parse(message);
  auto result = doc.find("result");
  if (result == doc.end() || !result->is_object()) malformed("a watch message without its result");
  WatchMessage out;
  out.revision = header_revision(*result);
  out.created = flag(*result, "created");
  out.canceled = flag(*result, "canceled");
  out.compact_revision = number(*result, "compact_revision");
  if (auto it = result->find("cancel_reason"); it != result->end() && it->is_string())
    out.cancel_reason = it->get<std::string>();
  if (auto it = result->find("events"); it != result->end()) {
    if (!it->is_array()) malformed("events is not a list");
    for (const auto& event : *it) {
      if (!event.is_object()) malformed("an event that is not an object");
      auto kv = event.find("kv");
      if (kv == event.end()) malformed("an event without its kv");
      auto type = event.find("type");
      const bool deleted = type != event.end() && type->is_string() && *type == "DELETE";
      out.events.push_back({deleted, key_value(*kv)});
    }
  }
  return out;
}

std::vector<std::string> LineSplitter::feed(std::string_view piece) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl = piece.find('\n'); nl != std::string_view::npos; nl = piece.find('\n', start)) {
    partial_.append(piece.substr(start, nl - start));
    if (!partial_.empty() && partial_ != "\r") lines.push_back(std::move(partial_));
    partial_.clear();
    start = nl + 1;
  }
  partial_.append(piece.substr(start));
  return lines;
}

std::string encode_lease_grant(int64_t ttl_seconds) {
  return json{{"TTL", std::to_string(ttl_seconds)}}.dump();
}

LeaseGrant decode_lease_grant(std::string_view body) {
  const json doc = parse(body);
  LeaseGrant out{number(doc, "ID"), number(doc, "TTL")};
  if (out.id == 0) malformed("a lease grant without its ID");
  return out;
}

std::string encode_lease_id(int64_t id) { return json{{"ID", std::to_string(id)}}.dump(); }

int64_t decode_lease_keepalive(std::string_view body) {
  const json doc = parse(body);
  auto result = doc.find("result");
  return number(result != doc.end() && result->is_object() ? *result : doc, "TTL");
}

}  // namespace hostlb::etcd
