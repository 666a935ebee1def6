#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "hostlb/netlink/probe.h"

namespace hostlb {
namespace {

socklen_t to_sockaddr(const IpAddress& address, uint16_t port, sockaddr_storage& out) {
  std::memset(&out, 0, sizeof out);
  if (address.is_v6()) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
    std::memcpy(&sa->sin6_addr, address.bytes().data(), 16);
    return sizeof *sa;
  }
  auto* sa = reinterpret_cast<sockaddr_in*>(&out);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(port);
  std::memcpy(&sa->sin_addr, address.bytes().data(), 4);
  return sizeof *sa;
}

// A failed connect or send, in the words of the health log.
std::string describe_error(int err, HealthKind kind) {
  switch (err) {
    case ECONNREFUSED:
      return kind == HealthKind::kUdp ? "ICMP port unreachable" : "connection refused (RST)";
    case ECONNRESET:
      return "connection reset";
    case ETIMEDOUT:
      return "timeout";
    case EHOSTUNREACH:
      return "host unreachable";
    case ENETUNREACH:
      return "network unreachable";
    default:
      return std::strerror(err);
  }
}

class SocketProbe final : public Probe {
 public:
  explicit SocketProbe(const ProbeSpec& spec) : spec_(spec) {
    const int family = spec.target.is_v6() ? AF_INET6 : AF_INET;
    const int type = spec.check.kind == HealthKind::kUdp ? SOCK_DGRAM : SOCK_STREAM;
    fd_ = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      fail("making a socket: " + std::string(std::strerror(errno)));
      return;
    }
    if (type == SOCK_STREAM) {
      // Closed with a reset: a probe leaves no TIME_WAIT behind.
      const linger reset{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    }
    sockaddr_storage addr;
    if (spec.source) {
      const socklen_t len = to_sockaddr(*spec.source, 0, addr);
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
        fail("binding to " + spec.source->str() + ": " + std::strerror(errno));
        return;
      }
    }
    const socklen_t len = to_sockaddr(spec.target, spec.port, addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 && errno != EINPROGRESS) {
      fail(describe_error(errno, spec.check.kind));
      return;
    }
    if (spec.check.kind == HealthKind::kUdp) {
      static constexpr char kPayload[] = "hostlb health probe\n";
      if (::send(fd_, kPayload, sizeof kPayload - 1, 0) < 0) {
        fail(describe_error(errno, spec.check.kind));
        return;
      }
      phase_ = Phase::kAwaitingAnswer;
    }
  }
  ~SocketProbe() override {
    if (fd_ >= 0) ::close(fd_);
  }

  std::optional<ProbeOutcome> finished() const override { return finished_; }
  int fd() const override { return fd_; }
  short events() const override {
    return phase_ == Phase::kConnecting || phase_ == Phase::kSending ? POLLOUT : POLLIN;
  }

  std::optional<ProbeOutcome> on_ready(short revents) override {
    switch (phase_) {
      case Phase::kConnecting: {
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err != 0) return ProbeOutcome{false, describe_error(err, spec_.check.kind)};
        if ((revents & POLLOUT) == 0) return std::nullopt;
        if (spec_.check.kind == HealthKind::kTcp) return ProbeOutcome{true, "connected"};
        request_ = "GET " + spec_.check.path +
                   " HTTP/1.0\r\nHost: " + endpoint_str(spec_.target, spec_.port) +
                   "\r\nUser-Agent: hostlb-health\r\nConnection: close\r\n\r\n";
        phase_ = Phase::kSending;
        [[fallthrough]];
      }
      case Phase::kSending: {
        while (sent_ < request_.size()) {
          const ssize_t n =
              ::send(fd_, request_.data() + sent_, request_.size() - sent_, MSG_NOSIGNAL);
          if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
            return ProbeOutcome{false, describe_error(errno, spec_.check.kind)};
          }
          sent_ += static_cast<size_t>(n);
        }
        phase_ = Phase::kReading;
        return std::nullopt;
      }
      case Phase::kReading:
        return read_status();
      case Phase::kAwaitingAnswer: {
        char buf[512];
        if (::recv(fd_, buf, sizeof buf, 0) >= 0) return ProbeOutcome{true, "answered"};
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
        return ProbeOutcome{false, describe_error(errno, spec_.check.kind)};
      }
    }
    return std::nullopt;
  }

  ProbeOutcome on_timeout() override {
    switch (phase_) {
      case Phase::kAwaitingAnswer:
        return {true, "no ICMP error"};
      case Phase::kConnecting:
        return {false, "timeout"};
      default:
        return {false, "timeout waiting for the HTTP status"};
    }
  }

 private:
  enum class Phase { kConnecting, kSending, kReading, kAwaitingAnswer };

  void fail(std::string detail) { finished_ = ProbeOutcome{false, std::move(detail)}; }

  // The status line is all a check needs: "HTTP/1.1 503 Service Unavailable".
  std::optional<ProbeOutcome> read_status() {
    char buf[1024];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
      return ProbeOutcome{false, describe_error(errno, spec_.check.kind)};
    }
    response_.append(buf, static_cast<size_t>(n));
    const size_t eol = response_.find("\r\n");
    if (eol == std::string::npos) {
      if (n == 0) return ProbeOutcome{false, "closed before an HTTP status line"};
      if (response_.size() > 4096) return ProbeOutcome{false, "no HTTP status line"};
      return std::nullopt;
    }
    const std::string line = response_.substr(0, eol);
    unsigned status = 0;
    if (line.rfind("HTTP/", 0) != 0 || std::sscanf(line.c_str(), "HTTP/%*s %3u", &status) != 1)
      return ProbeOutcome{false, "not an HTTP status line"};
    const bool ok = status >= spec_.check.status_min && status <= spec_.check.status_max;
    return ProbeOutcome{ok, "status " + std::to_string(status)};
  }

  ProbeSpec spec_;
  int fd_ = -1;
  Phase phase_ = Phase::kConnecting;
  std::optional<ProbeOutcome> finished_;
  std::string request_;
  size_t sent_ = 0;
  std::string response_;
};

class SocketProber final : public Prober {
 public:
  std::unique_ptr<Probe> start(const ProbeSpec& spec) override {
    return std::make_unique<SocketProbe>(spec);
  }
};

}  // namespace

std::unique_ptr<Prober> make_socket_prober() { return std::make_unique<SocketProber>(); }

}  // namespace hostlb
