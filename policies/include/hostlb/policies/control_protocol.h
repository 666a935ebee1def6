// The control protocol between hostlbctl (or any client) and hostlbd:
// JSON-RPC 2.0 over a Unix stream socket, one message per line (UTF-8 JSON
// with no raw newline inside). A request whose params hold
// "document_bytes": N is followed by exactly N raw bytes, a document that
// needs neither escaping nor a second parse. Pure encoding and decoding;
// see hostlbctl(8).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace hostlb::control {

inline constexpr size_t kMaxRequestBytes = size_t{16} << 20;

// JSON-RPC 2.0 codes, and hostlb's own in the range the spec leaves to
// servers.
enum ErrorCode : int {
  kParseError = -32700,
  kInvalidRequest = -32600,
  kMethodNotFound = -32601,
  kInvalidParams = -32602,
  kInternalError = -32603,
  kRefused = -32001,           // valid request, but the resulting state is not (or no such object)
  kKernelError = -32002,       // the kernel refused; nothing changed
  kPermissionDenied = -32003,  // neither root nor in group hostlb
  kRequestTooLarge = -32004,
  kTimeout = -32005,  // the client stalled in the middle of a request
};

struct Error {
  int code = kInternalError;
  std::string message;
  std::string path;  // the JSON path at fault, if any ("params.mac")
};

struct Request {
  nlohmann::json id;  // number or string; null for none
  std::string method;
  nlohmann::json params;      // always an object (empty if absent)
  std::string_view document;  // the raw bytes after the line (params.document_bytes)
};

// How many raw bytes follow this request line: params.document_bytes when
// it is a non-negative integer, else 0 (a wrong value is then refused with
// the request itself). Cheap for lines that do not mention it.
size_t attached_bytes(std::string_view line);

// Decodes one line. On failure returns the error to answer with, and sets
// `id` to the request's id when it could be read.
std::optional<Request> decode_request(std::string_view line, Error* error, nlohmann::json* id);

std::string encode_result(const nlohmann::json& id, const nlohmann::json& result);
std::string encode_error(const nlohmann::json& id, const Error& error);
// A notification (no id): used to stream parts of a long answer before its
// result; params name the request they belong to.
std::string encode_notification(const std::string& method, const nlohmann::json& params);

// Client side.
std::string encode_request(int id, const std::string& method, const nlohmann::json& params);

struct Response {
  bool ok = false;
  nlohmann::json result;
  Error error;
};
// Throws std::runtime_error for a reply that is not a JSON-RPC response.
Response decode_response(std::string_view line);
// True for a notification line (a "method" and no "id").
bool is_notification(const nlohmann::json& message);

}  // namespace hostlb::control
