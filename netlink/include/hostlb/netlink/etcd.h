// An etcd v3 client over etcd's JSON gateway (HTTP/1.1 + JSON, libcurl):
// ranges read page by page at one revision, transactions, watches, leases.
// Asynchronous: every call returns at once and its callback runs on the
// caller's event loop. Several endpoints: a request that cannot reach one
// moves to the next, and later requests start there.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "hostlb/netlink/http.h"
#include "hostlb/policies/etcd_protocol.h"

namespace hostlb {

struct EtcdSettings {
  std::vector<std::string> endpoints;  // http(s)://host:port
  TlsFiles tls;
  std::chrono::milliseconds request_timeout{5000};
};

// How a call failed. `unreachable`: no endpoint answered (or the answer was
// not etcd's); otherwise etcd answered with an error (`code`, gRPC's).
struct EtcdFailure {
  std::string message;
  bool unreachable = false;
  int code = 0;
  bool compacted() const { return code == etcd::kOutOfRange; }
};

template <typename T>
struct EtcdResult {
  std::optional<T> value;
  EtcdFailure failure;  // when there is no value
  bool ok() const { return value.has_value(); }
};

class EtcdClient {
 public:
  EtcdClient(HttpClient& http, EtcdSettings settings);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // Every key of [key, range_end) at one revision (`revision`, or the
  // newest when 0), read in pages of `page` keys.
  void read_range(std::string key, std::string range_end, int64_t revision,
                  std::function<void(EtcdResult<etcd::RangeResponse>)> done, int64_t page = 2000);
  void txn(const etcd::TxnRequest& request,
           std::function<void(EtcdResult<etcd::TxnResponse>)> done);
  void lease_grant(int64_t ttl_seconds, std::function<void(EtcdResult<etcd::LeaseGrant>)> done);
  // The TTL left (0: the lease is gone).
  void lease_keepalive(int64_t id, std::function<void(EtcdResult<int64_t>)> done);

  // A watch: `message` gets each message (events, progress, the cancel
  // with its compact revision); `ended` once the stream is over (etcd gone,
  // canceled by etcd). Only one watch at a time.
  void watch(const etcd::WatchRequest& request,
             const std::function<void(const etcd::WatchMessage&)>& message,
             const std::function<void(const EtcdFailure&)>& ended);
  void cancel_watch();
  bool watching() const { return watch_id_.has_value(); }

  // Ends every call in flight without its callback.
  void cancel_all();
  const std::string& endpoint() const { return settings_.endpoints[current_]; }

 private:
  // POSTs to `path` at the current endpoint, then the others in turn while
  // none can be reached.
  void call(const std::string& path, std::string body,
            std::function<void(EtcdFailure*, const std::string& body)> done, size_t tries = 0);

  HttpClient& http_;
  EtcdSettings settings_;
  size_t current_ = 0;
  std::vector<HttpClient::Id> calls_;
  std::optional<HttpClient::Id> watch_id_;
  std::shared_ptr<bool> alive_;
};

}  // namespace hostlb
