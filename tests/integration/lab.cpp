#include "lab.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace hostlb::lab {
namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

sockaddr_storage make_addr(const std::string& ip, int port, socklen_t* len) {
  sockaddr_storage ss{};
  if (ip.find(':') != std::string::npos) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr) != 1)
      throw std::runtime_error("bad address " + ip);
    *len = sizeof(sockaddr_in6);
  } else {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) != 1)
      throw std::runtime_error("bad address " + ip);
    *len = sizeof(sockaddr_in);
  }
  return ss;
}

// Waits for `fd` to be readable; false on timeout or when `stop_fd` fires.
bool wait_readable(int fd, std::chrono::milliseconds timeout, int stop_fd = -1) {
  pollfd pfds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
  const int n = ::poll(pfds, stop_fd >= 0 ? 2 : 1, static_cast<int>(timeout.count()));
  if (n <= 0) return false;
  if (stop_fd >= 0 && (pfds[1].revents & POLLIN)) return false;
  return true;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

CommandResult sh(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) throw std::runtime_error(errno_text("popen " + command));
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) result.output.append(buf, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string endpoint_of(const void* addr) {
  const auto* sa = static_cast<const sockaddr*>(addr);
  char buf[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET6) {
    const auto* sin6 = static_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6->sin6_port));
  }
  const auto* sin = static_cast<const sockaddr_in*>(addr);
  inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
}

Lab::Lab(Topology topology)
    : script_(topology == Topology::kHost ? HOSTLB_LAB_SCRIPT
                                          : HOSTLB_SOURCE_DIR "/scripts/fleet-lab.sh") {
  if (::geteuid() != 0)
    throw std::runtime_error("integration tests need root (network namespaces)");
  prefix_ = "hlt" + std::to_string(::getpid());
  dir_ = "/tmp/" + prefix_;
  sh("rm -rf " + dir_);
  if (::mkdir(dir_.c_str(), 0700) != 0) throw std::runtime_error(errno_text("mkdir " + dir_));
  sh(script_ + " down " + prefix_);  // leftovers of a reused pid
  auto up = sh(script_ + " up " + prefix_);
  if (up.exit_code != 0) {
    sh(script_ + " down " + prefix_);
    throw std::runtime_error("lab up failed: " + up.output);
  }
}

Lab::~Lab() {
  sh(script_ + " down " + prefix_);
  sh("rm -rf " + dir_);
}

CommandResult Lab::in(const std::string& role, const std::string& command) const {
  return sh("ip netns exec " + ns(role) + " " + command);
}

void Lab::gateway(const std::string& client, const std::string& vip, const std::string& mac) const {
  auto r = sh(std::string(HOSTLB_LAB_SCRIPT) + " gateway " + prefix_ + " " + client + " " + vip +
              " " + mac);
  if (r.exit_code != 0) throw std::runtime_error("gateway setup failed: " + r.output);
}

int Lab::socket_in(const std::string& role, int domain, int type) const {
  Entered in_role(*this, role);
  const int fd = ::socket(domain, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errno_text("socket"));
  return fd;  // the socket stays in the role's namespace; the thread leaves it
}

Lab::Entered::Entered(const Lab& lab, const std::string& role) {
  Fd target(::open(("/run/netns/" + lab.ns(role)).c_str(), O_RDONLY | O_CLOEXEC));
  Fd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (target.get() < 0 || self.get() < 0) throw std::runtime_error(errno_text("open netns"));
  if (::setns(target.get(), CLONE_NEWNET) != 0) throw std::runtime_error(errno_text("setns"));
  self_ = self.release();
}

Lab::Entered::~Entered() {
  if (::setns(self_, CLONE_NEWNET) != 0) std::abort();  // the test thread must not stay
  ::close(self_);
}

BackendServer::BackendServer(const Lab& lab, const std::string& role, int port, bool ipv6)
    : name_(role) {
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) throw std::runtime_error(errno_text("pipe"));
  const int domain = ipv6 ? AF_INET6 : AF_INET;
  socklen_t len = 0;
  sockaddr_storage any = make_addr(ipv6 ? "::" : "0.0.0.0", port, &len);
  const int one = 1;
  tcp_fd_ = lab.socket_in(role, domain, SOCK_STREAM);
  udp_fd_ = lab.socket_in(role, domain, SOCK_DGRAM);
  for (int fd : {tcp_fd_, udp_fd_}) {
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ipv6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&any), len) != 0)
      throw std::runtime_error(errno_text("bind server port " + std::to_string(port)));
  }
  if (::listen(tcp_fd_, 128) != 0) throw std::runtime_error(errno_text("listen"));
  tcp_thread_ = std::thread([this] { tcp_loop(); });
  udp_thread_ = std::thread([this] { udp_loop(); });
}

BackendServer::~BackendServer() {
  (void)!::write(stop_pipe_[1], "x", 1);
  tcp_thread_.join();
  udp_thread_.join();
  {
    std::lock_guard lock(mu_);
    for (auto& t : conns_) t.join();
  }
  for (int fd : {tcp_fd_, udp_fd_, stop_pipe_[0], stop_pipe_[1]}) ::close(fd);
}

void BackendServer::tcp_loop() {
  while (wait_readable(tcp_fd_, std::chrono::hours(1), stop_pipe_[0])) {
    const int fd = ::accept4(tcp_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard lock(mu_);
    conns_.emplace_back([this, fd] { serve(fd); });
  }
}

void BackendServer::serve(int fd) {
  sockaddr_storage local{}, peer{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  len = sizeof peer;
  ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
  const std::string banner =
      name_ + " local=" + endpoint_of(&local) + " peer=" + endpoint_of(&peer) + "\n";
  (void)!::send(fd, banner.data(), banner.size(), MSG_NOSIGNAL);
  uint64_t total = 0;
  char buf[65536];
  // Bounded: a client that goes silent for 20 s is given up on.
  while (wait_readable(fd, std::chrono::seconds(20), stop_pipe_[0])) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    total += static_cast<uint64_t>(n);
  }
  const std::string answer = "bytes=" + std::to_string(total) + "\n";
  (void)!::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
  ::close(fd);
}

void BackendServer::udp_loop() {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  ::getsockname(udp_fd_, reinterpret_cast<sockaddr*>(&local), &len);
  while (wait_readable(udp_fd_, std::chrono::hours(1), stop_pipe_[0])) {
    char buf[2048];
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    const ssize_t n =
        ::recvfrom(udp_fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer), &peer_len);
    if (n < 0) continue;
    // The local address of an unconnected UDP socket is the wildcard; the
    // port is what shows the DNAT reached it.
    const std::string reply =
        name_ + " local=" + endpoint_of(&local) + " peer=" + endpoint_of(&peer);
    ::sendto(udp_fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&peer), peer_len);
  }
}

TcpClient::TcpClient(const Lab& lab, const std::string& role, const std::string& ip, int port,
                     std::chrono::milliseconds timeout, const std::string& source_ip,
                     int source_port) {
  socklen_t len = 0;
  sockaddr_storage dst = make_addr(ip, port, &len);
  fd_ = lab.socket_in(role, dst.ss_family, SOCK_STREAM);
  if (source_port != 0 || !source_ip.empty()) {
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t src_len = 0;
    sockaddr_storage src = make_addr(source_ip, source_port, &src_len);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&src), src_len) != 0) {
      ::close(fd_);
      throw std::runtime_error(errno_text("bind client " + source_ip));
    }
  }
  const int flags = ::fcntl(fd_, F_GETFL);
  ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  int rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&dst), len);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd pfd{fd_, POLLOUT, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t err_len = sizeof err;
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &err_len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    } else {
      errno = ETIMEDOUT;
    }
  }
  if (rc != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd_);
    throw std::runtime_error("connect to " + ip + ":" + std::to_string(port) + " from " + role +
                             ": " + why);
  }
  ::fcntl(fd_, F_SETFL, flags);
}

TcpClient::~TcpClient() {
  if (fd_ >= 0) ::close(fd_);
}

std::string TcpClient::read_line(std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char c;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!wait_readable(fd_, left)) break;
    if (::recv(fd_, &c, 1, 0) != 1) break;
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

void TcpClient::send_all(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0) throw std::runtime_error(errno_text("send"));
    done += static_cast<size_t>(n);
  }
}

void TcpClient::shutdown_write() { ::shutdown(fd_, SHUT_WR); }

std::string TcpClient::peer() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  return endpoint_of(&ss);
}

std::string TcpClient::local() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  return endpoint_of(&ss);
}

int TcpClient::local_port() const {
  const std::string l = local();
  return std::stoi(l.substr(l.rfind(':') + 1));
}

std::string udp_exchange(const Lab& lab, const std::string& role, const std::string& ip, int port,
                         std::chrono::milliseconds timeout) {
  socklen_t len = 0;
  sockaddr_storage dst = make_addr(ip, port, &len);
  Fd fd(lab.socket_in(role, dst.ss_family, SOCK_DGRAM));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&dst), len) != 0)
    throw std::runtime_error(errno_text("udp connect"));
  if (::send(fd.get(), "ping", 4, 0) != 4) throw std::runtime_error(errno_text("udp send"));
  if (!wait_readable(fd.get(), timeout)) return "";
  char buf[2048];
  const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

ControlClient::ControlClient(const std::string& path) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error(errno_text("connect " + path));
}

ControlClient::~ControlClient() { ::close(fd_); }

control::Response ControlClient::call(const std::string& method, const nlohmann::json& params) {
  const std::string request = control::encode_request(++id_, method, params);
  if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    throw std::runtime_error(errno_text("send"));
  while (buffer_.find('\n') == std::string::npos) {
    if (!wait_readable(fd_, std::chrono::seconds(30))) throw std::runtime_error("no reply");
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) throw std::runtime_error("connection closed");
    buffer_.append(buf, static_cast<size_t>(n));
  }
  const auto nl = buffer_.find('\n');
  const std::string line = buffer_.substr(0, nl);
  buffer_.erase(0, nl + 1);
  return control::decode_response(line);
}

std::string write_lab_file(const Lab& lab, const std::string& name, const std::string& text) {
  const std::string path = lab.dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

Hostlbd::Hostlbd(const Lab& lab, std::vector<std::string> args, std::string role)
    : lab_(lab), args_(std::move(args)), role_(std::move(role)) {
  // The machine's own /etc/hostlb (if a package is installed) stays out of
  // the tests unless a test names files itself.
  auto given = [&](const std::string& flag) {
    return std::find(args_.begin(), args_.end(), flag) != args_.end();
  };
  if (!given("--daemon-config")) {
    args_.insert(args_.begin(), {"--daemon-config", ""});
    if (!given("--services-dir")) args_.insert(args_.begin(), {"--services-dir", ""});
  }
  static int counter = 0;
  ++counter;
  log_path_ = lab.dir() + "/hostlbd-" + std::to_string(counter) + ".log";
  notify_path_ = lab.dir() + "/notify-" + std::to_string(counter) + ".sock";
}

Hostlbd::~Hostlbd() {
  if (pid_ > 0) stop(SIGKILL);
}

void Hostlbd::spawn() {
  std::vector<std::string> argv = {"ip", "netns", "exec", lab_.ns(role_), HOSTLBD_PATH};
  argv.insert(argv.end(), args_.begin(), args_.end());
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(errno_text("fork"));
  if (pid_ == 0) {
    const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::setenv("NOTIFY_SOCKET", notify_path_.c_str(), 1);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execvp("ip", cargv.data());
    ::_exit(127);
  }
}

bool Hostlbd::start(std::chrono::milliseconds timeout) {
  ::unlink(notify_path_.c_str());
  Fd notify(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", notify_path_.c_str());
  if (::bind(notify.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0)
    throw std::runtime_error(errno_text("bind notify socket"));
  spawn();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (wait_readable(notify.get(), std::chrono::milliseconds(50))) {
      char buf[512];
      const ssize_t n = ::recv(notify.get(), buf, sizeof buf, 0);
      if (n > 0 && std::string(buf, static_cast<size_t>(n)).find("READY=1") != std::string::npos)
        return true;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
  }
  return false;
}

int Hostlbd::stop(int signal) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  const int rc = wait_exit(pid_, std::chrono::seconds(10));
  pid_ = -1;
  return rc;
}

CommandResult Hostlbd::run_to_exit(std::chrono::milliseconds timeout) {
  spawn();
  CommandResult result;
  result.exit_code = wait_exit(pid_, timeout);
  pid_ = -1;
  result.output = log();
  return result;
}

std::string Hostlbd::log() const { return read_text_file(log_path_); }

void Hostlbd::signal(int signo) const {
  if (pid_ > 0) ::kill(pid_, signo);
}

bool Hostlbd::wait_for_log(const std::string& needle, int count,
                           std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string text = log();
    int found = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
      ++found;
    if (found >= count) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace hostlb::lab
