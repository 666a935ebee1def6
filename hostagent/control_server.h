// The control socket: a Unix stream socket, one JSON-RPC request per line.
// Single-threaded and non-blocking, driven by the daemon's event loop, so
// requests from any number of clients are handled one at a time, each
// completely. Bounded: request size, clients, time to finish a request,
// unread replies. A client that misbehaves is disconnected; the daemon goes
// on.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "event_loop.h"

namespace hostlb {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups of the peer process
};

struct ControlServerOptions {
  std::string path;
  std::string group = "hostlb";  // may use the socket besides root, if it exists
  size_t max_request_bytes = size_t{16} << 20;
  size_t max_reply_backlog = size_t{64} << 20;
  size_t max_clients = 64;
  std::chrono::milliseconds stall_timeout{5000};  // to finish a request once begun
  std::chrono::milliseconds idle_timeout{300000};
};

class ControlError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Who may talk to hostlbd: root, or a member of `group_gid` (primary or
// supplementary). Pure, for tests.
bool peer_is_authorized(const PeerCredentials& peer, std::optional<gid_t> group_gid);

// The rest of a long reply, produced as the client reads it: the next part
// is asked for only once everything before it has been sent, so a slow
// reader makes hostlbd wait, never hold more than about one part.
class ReplyStream {
 public:
  virtual ~ReplyStream() = default;
  // Appends the next part to `out`; false once the reply is complete (the
  // last part appended). Errors are the stream's to encode: it must not
  // throw.
  virtual bool next(std::string& out) = 0;
};

// What a request gets: its reply text, and, for a long one, the stream of
// the rest (requests the client sent after it wait until it is complete).
struct ControlReply {
  ControlReply(std::string reply = {}) : text(std::move(reply)) {}  // NOLINT: most replies are text
  ControlReply(std::string first, std::unique_ptr<ReplyStream> stream)
      : text(std::move(first)), rest(std::move(stream)) {}
  std::string text;
  std::unique_ptr<ReplyStream> rest;
};

class ControlServer {
 public:
  // Returns the reply for one request line of an authorized peer, and
  // the raw document that followed the line (empty if none; see
  // control::attached_bytes).
  using Handler =
      std::function<ControlReply(const PeerCredentials&, std::string_view, std::string_view)>;
  // Replies for problems found before a request reaches the handler.
  using ErrorReply = std::function<std::string(int code, const std::string& message)>;

  ControlServer(EventLoop& loop, ControlServerOptions options, Handler handler,
                ErrorReply error_reply);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket (mode 0660, group `options.group` if it exists) and
  // starts serving it on the loop. Throws ControlError if the path is in
  // use by a live daemon or cannot be created.
  void open();

  size_t client_count() const { return clients_.size(); }

 private:
  struct Client {
    int fd = -1;
    PeerCredentials peer;
    bool authorized = false;
    std::string in;
    size_t scanned = 0;  // `in` holds no newline before this offset
    std::string out;
    std::unique_ptr<ReplyStream> stream;  // the rest of the reply being sent
    bool closing = false;                 // close once `out` (and `stream`) is written
    Clock::TimePoint last_activity;
    Clock::TimePoint request_started;
  };

  void accept_clients();
  void on_readable(Client& client);
  // Answers the complete requests in `client.in`, in order, until one
  // answers with a stream. False if the client was dropped.
  bool serve_requests(Client& client);
  // Whether a request has begun and not been answered yet (not counting
  // requests queued behind a stream, which wait for it, not for the client).
  static bool request_pending(const Client& client) { return !client.in.empty() && !client.stream; }
  void on_writable(Client& client);
  void on_ready(int fd, short revents);
  // Polls for writing only while a reply waits, then sets the deadline timer.
  void update(Client& client);
  void expire();
  void schedule_expiry();
  void drop(int fd);

  EventLoop& loop_;
  Timer expiry_;
  ControlServerOptions options_;
  Handler handler_;
  ErrorReply error_reply_;
  int listen_fd_ = -1;
  std::map<int, Client> clients_;
};

}  // namespace hostlb
