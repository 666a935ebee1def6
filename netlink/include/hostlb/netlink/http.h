// HTTP POSTs over libcurl's multi interface, driven by the caller's event
// loop: nothing blocks, many requests (and long streams, such as an etcd
// watch) share one thread. The loop tells the client when its sockets are
// ready or its timer is due; the client tells the loop what to wait for
// through IoDriver.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace hostlb {

// What the caller's event loop does for the client.
class IoDriver {
 public:
  virtual ~IoDriver() = default;
  // Wait for `fd` (POLLIN and/or POLLOUT in `events`; 0 stops waiting for
  // it); call HttpClient::on_socket when it is ready.
  virtual void watch_socket(int fd, short events) = 0;
  // Call HttpClient::on_timer after `delay` (nullopt: not at all). One timer.
  virtual void set_timer(std::optional<std::chrono::milliseconds> delay) = 0;
};

// TLS client settings; empty fields use libcurl's defaults (the system's
// CA store, no client certificate).
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

struct HttpResponse {
  // Empty when the exchange completed (whatever its status); otherwise
  // what went wrong (connection refused, timed out, TLS, ...).
  std::string transport_error;
  long status = 0;
  std::string body;  // a stream's pieces went to its callback instead
};

class HttpClient {
 public:
  using Id = uint64_t;
  using Done = std::function<void(HttpResponse)>;
  using Piece = std::function<void(std::string_view)>;

  // Throws std::runtime_error if libcurl cannot be set up.
  HttpClient(IoDriver& io, TlsFiles tls);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POSTs `body` (JSON) to `url`; `done` gets the response once it is
  // complete, or the failure; a request takes at most `timeout` (connecting
  // at most `connect_timeout` of it).
  Id post(const std::string& url, const std::string& body, std::chrono::milliseconds timeout,
          Done done);
  // The same for a response that streams: `piece` gets the body as it
  // arrives, `done` gets the end. Without a timeout; a connection that
  // goes quiet is found by TCP keep-alives.
  Id stream(const std::string& url, const std::string& body, Piece piece, Done done);
  // Ends a request without calling its `done`. Safe from its callbacks.
  void cancel(Id id);

  void on_socket(int fd, short revents);
  void on_timer();

  static constexpr std::chrono::milliseconds kConnectTimeout{2000};

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hostlb
