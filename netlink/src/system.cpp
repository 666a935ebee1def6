#include "hostlb/netlink/system.h"

#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "hostlb/netlink/error.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

std::string system_host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  std::string name = buf;
  name = name.substr(0, name.find('.'));
  return is_valid_host_name(name) ? name : "";
}

std::optional<MacAddress> interface_mac(const std::string& name) {
  std::ifstream in("/sys/class/net/" + name + "/address");
  std::string text;
  if (!(in >> text)) return std::nullopt;
  return MacAddress::parse(text);
}

NamespaceLock::NamespaceLock(const std::string& name) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw KernelError("making the socket for lock @" + name, errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // An abstract name: a leading NUL, no file.
  const size_t length = std::min(name.size(), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path + 1, name.data(), length);
  const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + length);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), size) != 0) {
    const int err = errno;
    ::close(fd_);
    throw KernelError("taking lock @" + name + " of this network namespace", err);
  }
}

NamespaceLock::~NamespaceLock() { ::close(fd_); }

namespace {
// libbpf takes a bare function for its messages, process-wide: where they
// go is kept beside it.
std::atomic<BpfLibraryLog>& bpf_library_log() {
  static std::atomic<BpfLibraryLog> log{nullptr};
  return log;
}

int forward_bpf_library_message(libbpf_print_level, const char* format, va_list args) {
  char line[512];
  std::vsnprintf(line, sizeof line, format, args);
  size_t n = std::strlen(line);
  while (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
  if (const BpfLibraryLog log = bpf_library_log().load(); log && n > 0) log(line);
  return 0;
}
}  // namespace

std::optional<bool> has_default_route(IpFamily family) {
  // IPv4: "Iface Destination Gateway Flags ... Mask ..." in hex; IPv6:
  // "destination prefix-length source prefix-length next-hop ... iface".
  std::ifstream in(family == IpFamily::kV4 ? "/proc/net/route" : "/proc/net/ipv6_route");
  if (!in) return std::nullopt;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::vector<std::string> w{std::istream_iterator<std::string>(words), {}};
    if (family == IpFamily::kV4) {
      if (w.size() > 7 && w[1] == "00000000" && w[7] == "00000000") return true;
    } else if (w.size() > 9 && w[0] == std::string(32, '0') && w[1] == "00" && w[9] != "lo") {
      return true;
    }
  }
  return false;
}

void send_bpf_library_messages_to(BpfLibraryLog log) {
  bpf_library_log().store(log);
  libbpf_set_print(forward_bpf_library_message);
}

}  // namespace hostlb
