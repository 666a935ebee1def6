#include "control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "hostlb/policies/control_protocol.h"

namespace hostlb {
namespace {

std::string errno_text() { return std::strerror(errno); }

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    throw ControlError("control socket path is too long (" + std::to_string(path.size()) +
                       " bytes, at most " + std::to_string(sizeof addr.sun_path - 1) +
                       "): " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

void make_parent_directory(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return;
  const std::string dir = path.substr(0, slash);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw ControlError("creating " + dir + ": " + errno_text());
}

PeerCredentials credentials_of(int fd) {
  PeerCredentials peer;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer.pid = cred.pid;
    peer.uid = cred.uid;
    peer.gid = cred.gid;
  } else {
    peer.uid = static_cast<uid_t>(-1);  // unknown: never authorized
    peer.gid = static_cast<gid_t>(-1);
  }
  std::vector<gid_t> groups(64);
  len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0 && errno == ERANGE) {
    groups.resize(len / sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) len = 0;
  }
  groups.resize(len / sizeof(gid_t));
  peer.groups = std::move(groups);
  return peer;
}

}  // namespace

bool peer_is_authorized(const PeerCredentials& peer, std::optional<gid_t> group_gid) {
  if (peer.uid == 0) return true;
  if (!group_gid) return false;
  if (peer.gid == *group_gid) return true;
  return std::find(peer.groups.begin(), peer.groups.end(), *group_gid) != peer.groups.end();
}

ControlServer::ControlServer(EventLoop& loop, ControlServerOptions options, Handler handler,
                             ErrorReply error_reply)
    : loop_(loop),
      expiry_(loop, [this] { expire(); }),
      options_(std::move(options)),
      handler_(std::move(handler)),
      error_reply_(std::move(error_reply)) {}

ControlServer::~ControlServer() {
  for (auto& [fd, client] : clients_) {
    loop_.unwatch(fd);
    ::close(fd);
  }
  if (listen_fd_ >= 0) {
    loop_.unwatch(listen_fd_);
    ::close(listen_fd_);
    ::unlink(options_.path.c_str());
  }
}

void ControlServer::open() {
  const sockaddr_un addr = socket_address(options_.path);
  make_parent_directory(options_.path);
  // A socket file left by a daemon that died is replaced; one that answers
  // belongs to a running daemon and is not.
  {
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      const bool alive =
          ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
      ::close(probe);
      if (alive)
        throw ControlError("control socket " + options_.path + " is in use by another hostlbd");
    }
    ::unlink(options_.path.c_str());
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) throw ControlError("creating the control socket: " + errno_text());
  const mode_t old_umask = ::umask(0117);  // the socket is born 0660
  const int rc = ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  ::umask(old_umask);
  if (rc != 0)
    throw ControlError("binding the control socket " + options_.path + ": " + errno_text());
  const group* grp = ::getgrnam(options_.group.c_str());
  if (grp && ::chown(options_.path.c_str(), 0, grp->gr_gid) != 0)
    spdlog::warn("cannot give {} to group {}: {}", options_.path, options_.group, errno_text());
  ::chmod(options_.path.c_str(), 0660);
  if (::listen(listen_fd_, 64) != 0)
    throw ControlError("listening on " + options_.path + ": " + errno_text());
  spdlog::info(
      "control socket {} (mode 0660, root{})", options_.path,
      grp ? " and group " + options_.group : std::string(" only: no group ") + options_.group);
  loop_.watch(listen_fd_, POLLIN, [this](short) { accept_clients(); });
}

void ControlServer::on_ready(int fd, short revents) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  if (revents & (POLLIN | POLLHUP | POLLERR)) on_readable(it->second);
  it = clients_.find(fd);
  if (it != clients_.end() && (revents & POLLOUT)) on_writable(it->second);
  it = clients_.find(fd);
  if (it != clients_.end()) update(it->second);
  schedule_expiry();
}

void ControlServer::update(Client& client) {
  short events = client.closing ? 0 : POLLIN;
  if (!client.out.empty() || client.stream) events |= POLLOUT;
  loop_.set_events(client.fd, events);
}

void ControlServer::accept_clients() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        spdlog::warn("accepting a control connection: {}", errno_text());
      return;
    }
    Client client;
    client.fd = fd;
    client.peer = credentials_of(fd);
    // Looked up per connection: the group may be created (or its members
    // changed) while the daemon runs. Not for root, who needs no group: the
    // NSS lookup costs more than the rest of a small request.
    const group* grp = client.peer.uid == 0 ? nullptr : ::getgrnam(options_.group.c_str());
    client.authorized =
        peer_is_authorized(client.peer, grp ? std::optional<gid_t>(grp->gr_gid) : std::nullopt);
    client.last_activity = client.request_started = loop_.clock().monotonic();
    if (clients_.size() >= options_.max_clients) {
      client.out = error_reply_(control::kInternalError,
                                "too many clients (" + std::to_string(options_.max_clients) + ")");
      client.closing = true;
      spdlog::warn("control: refused a client from pid {}: too many clients", client.peer.pid);
    } else if (!client.authorized) {
      client.out = error_reply_(control::kPermissionDenied,
                                "permission denied: uid " + std::to_string(client.peer.uid) +
                                    " is neither root nor in group " + options_.group);
      client.closing = true;
      spdlog::warn("control: refused uid {} (pid {}): neither root nor in group {}",
                   client.peer.uid, client.peer.pid, options_.group);
    }
    clients_[fd] = std::move(client);
    loop_.watch(fd, POLLIN, [this, fd](short revents) { on_ready(fd, revents); });
    on_writable(clients_[fd]);
    if (auto it = clients_.find(fd); it != clients_.end()) update(it->second);
    schedule_expiry();
  }
}

void ControlServer::on_readable(Client& client) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(client.fd, buf, sizeof buf, 0);
    if (n == 0) {
      // The client finished sending (or is gone): answer what it asked
      // completely, drop what it half-sent, and close.
      client.in.clear();
      client.scanned = 0;
      client.closing = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      drop(client.fd);
      return;
    }
    if (client.closing) continue;  // discard input after a fatal reply
    if (client.in.empty()) client.request_started = loop_.clock().monotonic();
    client.in.append(buf, static_cast<size_t>(n));
    client.last_activity = loop_.clock().monotonic();
    if (!serve_requests(client)) return;
  }
  if (!client.out.empty() || client.stream || client.closing) on_writable(client);
}

bool ControlServer::serve_requests(Client& client) {
  // Answer every complete request (its line, and the document after it if
  // it announces one) before reading more; behind a stream, wait for it.
  size_t start = 0;
  bool too_large = false;
  while (!client.stream) {
    const size_t nl = client.in.find('\n', std::max(start, client.scanned));
    if (nl == std::string::npos) {
      client.scanned = client.in.size();  // a long line is not searched again
      break;
    }
    std::string_view line(client.in.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t document = line.empty() ? 0 : control::attached_bytes(line);
    if (document > options_.max_request_bytes) {
      too_large = true;
      break;
    }
    if (client.in.size() - (nl + 1) < document) {
      client.scanned = nl;  // the rest of the document is still to come
      break;
    }
    if (!line.empty()) {
      ControlReply reply =
          handler_(client.peer, line, std::string_view(client.in.data() + nl + 1, document));
      client.out += reply.text;
      client.stream = std::move(reply.rest);
    }
    start = nl + 1 + document;
    client.scanned = start;
  }
  client.in.erase(0, start);
  client.scanned -= std::min(client.scanned, start);
  if (!client.in.empty() && start > 0) client.request_started = loop_.clock().monotonic();
  if (too_large || client.in.size() > options_.max_request_bytes) {
    client.out += error_reply_(
        control::kRequestTooLarge,
        "request larger than " + std::to_string(options_.max_request_bytes) + " bytes");
    client.in.clear();
    client.scanned = 0;
    client.stream.reset();
    client.closing = true;
  }
  if (client.out.size() > options_.max_reply_backlog) {
    spdlog::warn("control: dropping pid {}: it does not read its replies", client.peer.pid);
    drop(client.fd);
    return false;
  }
  return true;
}

void ControlServer::on_writable(Client& client) {
  // A fast reader gets a stream's parts until its socket is full, but only
  // so many per wake-up: the other clients and the daemon's timers get
  // their turn between them.
  int parts = 64;
  for (;;) {
    while (!client.out.empty()) {
      const ssize_t n = ::send(client.fd, client.out.data(), client.out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        drop(client.fd);
        return;
      }
      client.out.erase(0, static_cast<size_t>(n));
      client.last_activity = loop_.clock().monotonic();
    }
    if (!client.stream) break;
    if (parts-- == 0) return;  // still polled for writing: more next time
    // Everything before has left: the next part of the stream, and once it
    // is complete, the requests that waited behind it.
    if (!client.stream->next(client.out)) {
      client.stream.reset();
      if (!client.in.empty()) client.request_started = loop_.clock().monotonic();
      if (!serve_requests(client)) return;
    }
  }
  if (client.closing) drop(client.fd);
}

void ControlServer::expire() {
  const auto now = loop_.clock().monotonic();
  std::vector<int> stalled, idle;
  for (auto& [fd, client] : clients_) {
    if (request_pending(client) && now - client.request_started > options_.stall_timeout)
      stalled.push_back(fd);
    else if (!request_pending(client) && now - client.last_activity > options_.idle_timeout)
      idle.push_back(fd);
  }
  for (int fd : stalled) {
    Client& client = clients_[fd];
    spdlog::warn("control: pid {} did not finish its request within {} ms; disconnecting",
                 client.peer.pid, options_.stall_timeout.count());
    client.in.clear();
    client.scanned = 0;
    client.stream.reset();
    client.out += error_reply_(control::kTimeout, "request not completed in time");
    client.closing = true;
    on_writable(client);
  }
  for (int fd : idle) drop(fd);
  for (auto& [fd, client] : clients_) update(client);
  schedule_expiry();
}

// The earliest client deadline: a request to finish, or idleness.
void ControlServer::schedule_expiry() {
  if (clients_.empty()) {
    expiry_.disarm();
    return;
  }
  auto next = Clock::TimePoint::max();
  for (const auto& [fd, client] : clients_) {
    next = std::min(next, request_pending(client) ? client.request_started + options_.stall_timeout
                                                  : client.last_activity + options_.idle_timeout);
  }
  expiry_.arm_at(next + std::chrono::milliseconds(1));
}

void ControlServer::drop(int fd) {
  loop_.unwatch(fd);
  ::close(fd);
  clients_.erase(fd);
}

}  // namespace hostlb
