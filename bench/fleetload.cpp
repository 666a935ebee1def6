// The fleet emulation's traffic (bench/fleet.sh): long-lived TCP
// connections that exchange a heartbeat, and the backends that answer each
// one with their name.
//
//   hostlb-fleet-load serve PORT NAME
//       Listens on PORT; answers every line a connection sends with NAME.
//       Prints "listening" once it does.
//   hostlb-fleet-load client VIP PORT CONNECTIONS [--source A.B.C.D] [--sources N]
//                     [--interval MS] [--stall MS] [--seed N]
//       Opens CONNECTIONS connections to VIP:PORT from N (8) consecutive
//       source addresses starting at --source (198.18.20.1); each sends a
//       line every --interval ms (500, each at its own phase) and expects
//       the name its first answer gave. Prints "ready ..." once every
//       connection has its backend or failed to open, then takes commands
//       on stdin, one a line:
//         report        one line: violations so far (a connection counts
//                       once: its backend's name changed, it was reset or
//                       closed, or an answer took longer than --stall ms)
//                       and the live connections per backend
//         exclude NAME  leave the connections of backend NAME out of every
//                       later report (a backend that was killed)
//         quit          (or end of input) exit
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "hostlb-fleet-load: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

void set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl O_NONBLOCK");
}

// ---- serve ---------------------------------------------------------------

int serve(uint16_t port, const std::string& name) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (listener < 0) die("socket");
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(port);
  if (bind(listener, reinterpret_cast<sockaddr*>(&at), sizeof at) < 0)
    die("bind port " + std::to_string(port));
  if (listen(listener, 4096) < 0) die("listen");
  const int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0) die("epoll_ctl listener");
  std::printf("listening\n");
  std::fflush(stdout);
  const std::string answer = name + "\n";
  std::vector<epoll_event> events(256);
  char buffer[4096];
  for (;;) {
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener) {
        int c;
        while ((c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK)) >= 0) {
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) die("epoll_ctl connection");
        }
        continue;
      }
      const ssize_t got = read(fd, buffer, sizeof buffer);
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) continue;
        close(fd);  // EOF or reset: epoll forgets a closed descriptor
        continue;
      }
      std::string reply;
      for (ssize_t k = 0; k < got; ++k)
        if (buffer[k] == '\n') reply += answer;
      // A few bytes into an empty socket buffer: a short write would mean a
      // client that stopped reading, which the client side reports.
      if (!reply.empty()) (void)!write(fd, reply.data(), reply.size());
    }
  }
}

// ---- client --------------------------------------------------------------

enum class Violation { kNone, kChanged, kReset, kStalled };

struct Connection {
  int fd = -1;
  bool connected = false;
  std::string backend;  // from its first answer
  std::string partial;  // an answer not yet ended by a newline
  Clock::time_point next_beat{}, awaiting_since{};
  bool awaiting = false;
  bool failed = false;  // never opened (not a violation)
  Violation violation = Violation::kNone;
};

struct Options {
  std::string vip;
  uint16_t port = 0;
  size_t connections = 0;
  std::string source = "198.18.20.1";
  uint32_t sources = 8;
  std::chrono::milliseconds interval{500}, stall{3000};
  uint32_t seed = 1;
};

class Client {
 public:
  explicit Client(Options options) : o_(std::move(options)), rng_(o_.seed) {
    ep_ = epoll_create1(0);
    if (ep_ < 0) die("epoll_create1");
    conns_.resize(o_.connections);
  }

  int run() {
    open_all();
    std::printf("ready connections=%zu established=%zu failed=%zu\n", conns_.size(),
                conns_.size() - failed(), failed());
    std::fflush(stdout);
    set_nonblocking(STDIN_FILENO);
    watch(STDIN_FILENO, EPOLLIN, kStdin);
    std::string commands;
    for (;;) {
      poll_once(std::chrono::milliseconds(20));
      beat();
      char buffer[512];
      ssize_t got;
      while ((got = read(STDIN_FILENO, buffer, sizeof buffer)) > 0) commands.append(buffer, got);
      if (got == 0) commands += "\nquit\n";  // end of input: what came before it, then quit
      for (size_t end; (end = commands.find('\n')) != std::string::npos;) {
        const std::string line = commands.substr(0, end);
        commands.erase(0, end + 1);
        if (line == "quit") return 0;
        if (line == "report") report();
        if (line.starts_with("exclude ")) excluded_.insert(line.substr(8));
      }
    }
  }

 private:
  static constexpr uint64_t kStdin = ~0ull;

  void watch(int fd, uint32_t events, uint64_t key) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
  }

  size_t failed() const {
    size_t n = 0;
    for (const auto& c : conns_) n += c.failed ? 1 : 0;
    return n;
  }

  // At most 256 handshakes at once, so the SYNs come as a stream, not a
  // burst; done when every connection has had its first answer or failed.
  void open_all() {
    in_addr first{};
    if (inet_pton(AF_INET, o_.source.c_str(), &first) != 1) {
      std::fprintf(stderr, "hostlb-fleet-load: --source %s is not an IPv4 address\n",
                   o_.source.c_str());
      std::exit(2);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(o_.port);
    if (inet_pton(AF_INET, o_.vip.c_str(), &to.sin_addr) != 1) {
      std::fprintf(stderr, "hostlb-fleet-load: %s is not an IPv4 address\n", o_.vip.c_str());
      std::exit(2);
    }
    const auto deadline =
        Clock::now() + std::chrono::seconds(30) + std::chrono::milliseconds(20 * conns_.size());
    size_t next = 0;
    auto pending = [&] {
      size_t n = 0;
      for (size_t i = 0; i < next; ++i)
        n += (!conns_[i].failed && conns_[i].backend.empty()) ? 1 : 0;
      return n;
    };
    while (Clock::now() < deadline) {
      const size_t open = pending();
      if (open == 0 && next == conns_.size()) break;
      for (size_t k = open; k < 256 && next < conns_.size(); ++k, ++next) {
        Connection& c = conns_[next];
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c.fd < 0) die("socket");
        const int one = 1;
        setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in from{};
        from.sin_family = AF_INET;
        from.sin_addr.s_addr =
            htonl(ntohl(first.s_addr) + static_cast<uint32_t>(next % o_.sources));
        if (bind(c.fd, reinterpret_cast<sockaddr*>(&from), sizeof from) < 0) die("bind source");
        if (connect(c.fd, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0 && errno != EINPROGRESS)
          die("connect");
        watch(c.fd, EPOLLIN | EPOLLOUT, next);
      }
      poll_once(std::chrono::milliseconds(20));
    }
    // Only what happens once all are open counts: a connection that did
    // not get there whole failed to open.
    for (auto& c : conns_)
      if (!c.failed && (c.backend.empty() || c.fd < 0 || c.violation != Violation::kNone))
        fail_to_open(c);
  }

  void fail_to_open(Connection& c) {
    c.failed = true;
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
  }

  void end(Connection& c, Violation why) {
    if (!c.connected || c.backend.empty()) {
      fail_to_open(c);
      return;
    }
    if (c.violation == Violation::kNone) c.violation = why;
    close(c.fd);
    c.fd = -1;
  }

  void poll_once(std::chrono::milliseconds timeout) {
    epoll_event events[512];
    const int n = epoll_wait(ep_, events, 512, static_cast<int>(timeout.count()));
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kStdin) continue;
      Connection& c = conns_[events[i].data.u64];
      if (c.fd < 0) continue;
      if (!c.connected && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error != 0) {
          fail_to_open(c);
          continue;
        }
        c.connected = true;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u64 = events[i].data.u64;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        send_beat(c);
        std::uniform_int_distribution<int64_t> phase(0, o_.interval.count());
        c.next_beat = Clock::now() + std::chrono::milliseconds(phase(rng_));
        continue;
      }
      if (events[i].events & EPOLLIN) receive(c);
      if (c.fd >= 0 && (events[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
        end(c, Violation::kReset);
    }
  }

  void send_beat(Connection& c) {
    if (write(c.fd, "h\n", 2) != 2) {
      end(c, Violation::kReset);
      return;
    }
    c.awaiting = true;
    c.awaiting_since = Clock::now();
  }

  void receive(Connection& c) {
    char buffer[1024];
    const ssize_t got = read(c.fd, buffer, sizeof buffer);
    if (got <= 0) {
      if (got < 0 && errno == EAGAIN) return;
      end(c, Violation::kReset);
      return;
    }
    c.partial.append(buffer, got);
    for (size_t nl; (nl = c.partial.find('\n')) != std::string::npos;) {
      const std::string name = c.partial.substr(0, nl);
      c.partial.erase(0, nl + 1);
      c.awaiting = false;
      if (c.backend.empty())
        c.backend = name;
      else if (name != c.backend && c.violation == Violation::kNone)
        c.violation = Violation::kChanged;
    }
  }

  void beat() {
    const auto now = Clock::now();
    for (auto& c : conns_) {
      if (c.fd < 0 || c.backend.empty() || c.violation != Violation::kNone) continue;
      if (c.awaiting) {
        if (now - c.awaiting_since > o_.stall) c.violation = Violation::kStalled;
        continue;
      }
      if (now >= c.next_beat) {
        c.next_beat = now + o_.interval;
        send_beat(c);
      }
    }
  }

  void report() {
    size_t alive = 0, changed = 0, reset = 0, stalled = 0, excluded = 0;
    std::map<std::string, size_t> per_backend;
    for (const auto& c : conns_) {
      if (c.failed) continue;
      if (excluded_.count(c.backend)) {
        ++excluded;
        continue;
      }
      switch (c.violation) {
        case Violation::kNone:
          ++alive;
          ++per_backend[c.backend];
          break;
        case Violation::kChanged:
          ++changed;
          break;
        case Violation::kReset:
          ++reset;
          break;
        case Violation::kStalled:
          ++stalled;
          break;
      }
    }
    std::string backends;
    for (const auto& [name, n] : per_backend)
      backends += (backends.empty() ? "" : ",") + name + ":" + std::to_string(n);
    std::printf(
        "report alive=%zu violations=%zu changed=%zu reset=%zu stalled=%zu excluded=%zu "
        "backends=%s\n",
        alive, changed + reset + stalled, changed, reset, stalled, excluded,
        backends.empty() ? "-" : backends.c_str());
    std::fflush(stdout);
  }

  Options o_;
  std::mt19937 rng_;
  int ep_ = -1;
  std::vector<Connection> conns_;
  std::set<std::string> excluded_;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: hostlb-fleet-load serve PORT NAME\n"
               "       hostlb-fleet-load client VIP PORT CONNECTIONS [--source A.B.C.D] "
               "[--sources N] [--interval MS] [--stall MS] [--seed N]\n");
  std::exit(2);
}

unsigned long number(const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long v = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') usage();
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::string_view(argv[1]) == "serve")
    return serve(static_cast<uint16_t>(number(argv[2])), argv[3]);
  if (argc < 5 || std::string_view(argv[1]) != "client") usage();
  Options o;
  o.vip = argv[2];
  o.port = static_cast<uint16_t>(number(argv[3]));
  o.connections = number(argv[4]);
  for (int i = 5; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--source")
      o.source = argv[i + 1];
    else if (flag == "--sources")
      o.sources = static_cast<uint32_t>(number(argv[i + 1]));
    else if (flag == "--interval")
      o.interval = std::chrono::milliseconds(number(argv[i + 1]));
    else if (flag == "--stall")
      o.stall = std::chrono::milliseconds(number(argv[i + 1]));
    else if (flag == "--seed")
      o.seed = static_cast<uint32_t>(number(argv[i + 1]));
    else
      usage();
  }
  if (argc % 2 == 0 || o.sources == 0 || o.connections == 0 || o.interval.count() == 0) usage();
  // A descriptor a connection: the limit goes up as far as needed (root
  // may raise the hard limit too), else to the hard limit.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
    const rlim_t needed = o.connections + 64;
    if (files.rlim_cur < needed) {
      const rlimit wanted{std::max(needed, files.rlim_cur), std::max(needed, files.rlim_max)};
      if (setrlimit(RLIMIT_NOFILE, &wanted) != 0) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
      }
      getrlimit(RLIMIT_NOFILE, &files);
    }
    if (files.rlim_cur < needed) {
      std::fprintf(stderr, "hostlb-fleet-load: %zu connections need more descriptors than %llu\n",
                   o.connections, static_cast<unsigned long long>(files.rlim_cur));
      return 2;
    }
  }
  return Client(o).run();
}
