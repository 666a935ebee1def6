#include <memory>
#include <stdexcept>

#include "hostlb/netlink/etcd.h"

namespace hostlb {

namespace {

// A reply that says the endpoint cannot serve (no leader, no quorum, a
// proxy's error) is treated like one that cannot be reached: the next
// endpoint may do better. gRPC's Unavailable and DeadlineExceeded come as
// 503 and 504.
bool endpoint_unusable(const HttpResponse& response) {
  return !response.transport_error.empty() || response.status >= 500 || response.status == 0;
}

template <typename T, typename Decode>
std::function<void(EtcdFailure*, const std::string&)> decoded(
    std::function<void(EtcdResult<T>)> done, Decode decode) {
  return [done = std::move(done), decode](EtcdFailure* failure, const std::string& body) {
    EtcdResult<T> result;
    if (failure != nullptr) {
      result.failure = *failure;
    } else {
      try {
        result.value = decode(body);
      } catch (const etcd::ProtocolError& e) {
        result.failure = {e.what(), e.code() == 0, e.code()};
      }
    }
    done(std::move(result));
  };
}

}  // namespace

EtcdClient::EtcdClient(HttpClient& http, EtcdSettings settings)
    : http_(http), settings_(std::move(settings)), alive_(std::make_shared<bool>(true)) {
  if (settings_.endpoints.empty()) throw std::invalid_argument("no etcd endpoint");
}

EtcdClient::~EtcdClient() {
  *alive_ = false;
  cancel_all();
}

void EtcdClient::cancel_all() {
  for (auto id : calls_) http_.cancel(id);
  calls_.clear();
  cancel_watch();
}

void EtcdClient::call(const std::string& path, std::string body,
                      std::function<void(EtcdFailure*, const std::string& body)> done,
                      size_t tries) {
  auto id = std::make_shared<HttpClient::Id>(0);
  const std::string url = endpoint() + path;
  const std::string request = body;  // `body` moves into the callback, for a retry
  *id = http_.post(
      url, request, settings_.request_timeout,
      [this, alive = alive_, id, path, body = std::move(body), done = std::move(done), tries,
       url](const HttpResponse& response) mutable {
        if (!*alive) return;
        std::erase(calls_, *id);
        if (endpoint_unusable(response)) {
          if (tries + 1 < settings_.endpoints.size()) {
            current_ = (current_ + 1) % settings_.endpoints.size();
            call(path, std::move(body), std::move(done), tries + 1);
            return;
          }
          // What etcd said, if it said anything (no leader, ...).
          const std::string said = response.body.empty() ? "" : ": " + response.body.substr(0, 200);
          EtcdFailure failure{url + ": " +
                                  (response.transport_error.empty()
                                       ? "HTTP status " + std::to_string(response.status) + said
                                       : response.transport_error),
                              true, 0};
          current_ = (current_ + 1) % settings_.endpoints.size();
          done(&failure, "");
          return;
        }
        done(nullptr, response.body);
      });
  calls_.push_back(*id);
}

namespace {

// Page after page of one range at the revision of the first page.
struct RangeReader : std::enable_shared_from_this<RangeReader> {
  std::function<void(const std::string&, std::string,
                     std::function<void(EtcdFailure*, const std::string&)>)>
      post;
  std::string range_end;
  int64_t page = 0;
  etcd::RangeResponse whole;
  std::function<void(EtcdResult<etcd::RangeResponse>)> done;

  void read(std::string from, int64_t revision) {
    etcd::RangeRequest request{std::move(from), range_end, revision, page};
    post("/v3/kv/range", etcd::encode_range(request),
         [self = shared_from_this()](EtcdFailure* failure, const std::string& body) {
           self->on_page(failure, body);
         });
  }

  void on_page(EtcdFailure* failure, const std::string& body) {
    EtcdResult<etcd::RangeResponse> result;
    if (failure != nullptr) {
      result.failure = *failure;
      done(std::move(result));
      return;
    }
    etcd::RangeResponse part;
    try {
      part = etcd::decode_range(body);
    } catch (const etcd::ProtocolError& e) {
      result.failure = {e.what(), e.code() == 0, e.code()};
      done(std::move(result));
      return;
    }
    if (whole.revision == 0) whole.revision = part.revision;
    for (auto& kv : part.kvs) whole.kvs.push_back(std::move(kv));
    if (part.more && !whole.kvs.empty()) {
      read(whole.kvs.back().key + '\0', whole.revision);
      return;
    }
    result.value = std::move(whole);
    done(std::move(result));
  }
};

}  // namespace

void EtcdClient::read_range(std::string key, std::string range_end, int64_t revision,
                            std::function<void(EtcdResult<etcd::RangeResponse>)> done,
                            int64_t page) {
  auto reader = std::make_shared<RangeReader>();
  reader->post = [this](const std::string& path, std::string body,
                        std::function<void(EtcdFailure*, const std::string&)> cb) {
    call(path, std::move(body), std::move(cb));
  };
  reader->range_end = std::move(range_end);
  reader->page = page;
  reader->done = std::move(done);
  reader->read(std::move(key), revision);
}

void EtcdClient::txn(const etcd::TxnRequest& request,
                     std::function<void(EtcdResult<etcd::TxnResponse>)> done) {
  call("/v3/kv/txn", etcd::encode_txn(request),
       decoded<etcd::TxnResponse>(std::move(done),
                                  [](const std::string& body) { return etcd::decode_txn(body); }));
}

void EtcdClient::lease_grant(int64_t ttl_seconds,
                             std::function<void(EtcdResult<etcd::LeaseGrant>)> done) {
  call("/v3/lease/grant", etcd::encode_lease_grant(ttl_seconds),
       decoded<etcd::LeaseGrant>(std::move(done), [](const std::string& body) {
         return etcd::decode_lease_grant(body);
       }));
}

void EtcdClient::lease_keepalive(int64_t id, std::function<void(EtcdResult<int64_t>)> done) {
  call("/v3/lease/keepalive", etcd::encode_lease_id(id),
       decoded<int64_t>(std::move(done), [](const std::string& body) {
         return etcd::decode_lease_keepalive(body);
       }));
}

void EtcdClient::watch(const etcd::WatchRequest& request,
                       const std::function<void(const etcd::WatchMessage&)>& message,
                       const std::function<void(const EtcdFailure&)>& ended) {
  cancel_watch();
  auto splitter = std::make_shared<etcd::LineSplitter>();
  auto id = std::make_shared<HttpClient::Id>(0);
  const std::string url = endpoint() + "/v3/watch";
  *id = http_.stream(
      url, etcd::encode_watch(request),
      [this, splitter, id, message, ended](std::string_view piece) {
        for (const auto& line : splitter->feed(piece)) {
          if (watch_id_ != *id) return;  // canceled by an earlier message
          try {
            message(etcd::decode_watch(line));
          } catch (const etcd::ProtocolError& e) {
            cancel_watch();
            ended({e.what(), e.code() == 0, e.code()});
            return;
          }
        }
      },
      [this, alive = alive_, id, url, ended](const HttpResponse& response) {
        if (!*alive || watch_id_ != *id) return;
        watch_id_.reset();
        EtcdFailure failure{
            url + ": " +
                (response.transport_error.empty()
                     ? "the watch ended (HTTP status " + std::to_string(response.status) + ")"
                     : response.transport_error),
            true, 0};
        if (endpoint_unusable(response)) current_ = (current_ + 1) % settings_.endpoints.size();
        ended(failure);
      });
  watch_id_ = *id;
}

void EtcdClient::cancel_watch() {
  if (!watch_id_) return;
  http_.cancel(*watch_id_);
  watch_id_.reset();
}

}  // namespace hostlb
