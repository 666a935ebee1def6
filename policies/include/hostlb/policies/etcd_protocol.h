// etcd's v3 API as its JSON gateway speaks it (POST /v3/kv/range, /v3/kv/txn,
// /v3/watch, /v3/lease/...): requests encoded, responses decoded, nothing
// sent. Keys and values travel base64-encoded, 64-bit numbers as strings.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hostlb::etcd {

// A response that is not what the API defines, or an error etcd returned
// ({"error": ..., "code": N}). `code` is the gRPC status code (0 when the
// response could not be read at all).
class ProtocolError : public std::runtime_error {
 public:
  ProtocolError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// gRPC codes etcd uses for what callers must tell apart.
constexpr int kOutOfRange = 11;  // "required revision has been compacted"
constexpr int kNotFound = 5;     // e.g. "requested lease not found"

// Parses "http://a:2379,https://b:2379"; throws std::invalid_argument
// naming what is wrong.
std::vector<std::string> parse_endpoints(const std::string& text);

std::string base64_encode(std::string_view bytes);
// nullopt if `text` is not base64.
std::optional<std::string> base64_decode(std::string_view text);

// The range_end that makes a range cover every key starting with `prefix`.
std::string prefix_end(std::string_view prefix);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t create_revision = 0;
  int64_t lease = 0;
  bool operator==(const KeyValue&) const = default;
};

struct RangeRequest {
  std::string key;
  std::string range_end;  // empty: the one key
  int64_t revision = 0;   // 0: the newest
  int64_t limit = 0;      // 0: no limit
};
std::string encode_range(const RangeRequest& request);

struct RangeResponse {
  int64_t revision = 0;  // the store's revision the range was read at
  std::vector<KeyValue> kvs;
  bool more = false;  // `limit` cut it short
};
RangeResponse decode_range(std::string_view body);

// A transaction: if every compare holds, the puts and deletes happen at
// one revision; otherwise nothing does.
struct TxnRequest {
  // Each: the newest mod_revision among the keys of [key, range_end) is
  // below `below` (a key created or changed since a read fails it).
  struct ModifiedBefore {
    std::string key, range_end;
    int64_t below = 0;
  };
  std::vector<ModifiedBefore> compares;
  std::vector<KeyValue> puts;  // key, value and lease (0: none)
  std::vector<std::string> deletes;
};
std::string encode_txn(const TxnRequest& request);

struct TxnResponse {
  int64_t revision = 0;
  bool succeeded = false;
};
TxnResponse decode_txn(std::string_view body);

struct WatchRequest {
  std::string key, range_end;
  int64_t start_revision = 0;
  bool progress_notify = true;
};
std::string encode_watch(const WatchRequest& request);

struct WatchEvent {
  bool deleted = false;  // a DELETE; a PUT otherwise
  KeyValue kv;           // a delete's value is empty
  bool operator==(const WatchEvent&) const = default;
};

// One message of a watch stream.
struct WatchMessage {
  int64_t revision = 0;  // the header's: everything up to it was sent
  bool created = false;
  bool canceled = false;
  int64_t compact_revision = 0;  // canceled because the start was compacted
  std::string cancel_reason;
  std::vector<WatchEvent> events;
};
WatchMessage decode_watch(std::string_view message);

// The JSON gateway sends a watch as one JSON object per line; pieces of
// the HTTP body arrive cut anywhere.
class LineSplitter {
 public:
  // Appends `piece`; returns the complete lines it finished.
  std::vector<std::string> feed(std::string_view piece);
  size_t pending() const { return partial_.size(); }

 private:
  std::string partial_;
};

std::string encode_lease_grant(int64_t ttl_seconds);
struct LeaseGrant {
  int64_t id = 0;
  int64_t ttl = 0;
};
LeaseGrant decode_lease_grant(std::string_view body);

std::string encode_lease_id(int64_t id);
// The TTL left after a keep-alive; 0 means the lease is gone.
int64_t decode_lease_keepalive(std::string_view body);

}  // namespace hostlb::etcd
