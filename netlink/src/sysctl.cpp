#include "hostlb/netlink/sysctl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "hostlb/netlink/error.h"

namespace hostlb {
namespace {

class ProcfsSysctls final : public Sysctls {
 public:
  explicit ProcfsSysctls(std::string root) : root_(std::move(root)) {}

  std::optional<std::string> read(const std::string& key) override {
    const std::string path = path_of(key);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return std::nullopt;
      throw KernelError("reading sysctl " + sysctl_display_name(key), errno);
    }
    char buf[256];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    const int saved = errno;
    ::close(fd);
    if (n < 0) throw KernelError("reading sysctl " + sysctl_display_name(key), saved);
    std::string value(buf, static_cast<size_t>(n));
    while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) value.pop_back();
    return value;
  }

  void write(const std::string& key, const std::string& value) override {
    const std::string path = path_of(key);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
      throw KernelError("setting sysctl " + sysctl_display_name(key) + "=" + value, errno);
    const std::string line = value + "\n";
    const ssize_t n = ::write(fd, line.data(), line.size());
    const int saved = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(line.size()))
      throw KernelError("setting sysctl " + sysctl_display_name(key) + "=" + value,
                        n < 0 ? saved : EIO);
  }

 private:
  std::string path_of(const std::string& key) const { return root_ + "/" + key; }

  std::string root_;
};

}  // namespace

std::unique_ptr<Sysctls> make_procfs_sysctls(std::string root) {
  return std::make_unique<ProcfsSysctls>(std::move(root));
}

std::optional<uint64_t> read_sysctl_number(Sysctls& sysctls, const std::string& key) {
  const auto text = sysctls.read(key);
  if (!text || text->empty()) return std::nullopt;
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
  return value;
}

std::string sysctl_display_name(const std::string& key) {
  std::string out = key;
  for (char& c : out) {
    if (c == '/')
      c = '.';
    else if (c == '.')
      c = '/';
  }
  return out;
}

std::vector<SysctlRequirement> datapath_sysctls(const std::vector<std::string>& bridges) {
  std::vector<SysctlRequirement> out = {
      {"net/bridge/bridge-nf-call-iptables", "1",
       "bridged IPv4 frames must pass the inet hooks for DNAT"},
      {"net/bridge/bridge-nf-call-ip6tables", "1",
       "bridged IPv6 frames must pass the inet hooks for DNAT"},
      {"net/netfilter/nf_conntrack_timestamp", "1",
       "connections record their start, for their age in hostlbctl connections"},
  };
  for (const auto& bridge : bridges) {
    out.push_back({"net/ipv4/conf/" + bridge + "/forwarding", "1",
                   "br_netfilter hands DNATed IPv4 back to the bridge only if it forwards"});
    out.push_back({"net/ipv6/conf/" + bridge + "/forwarding", "1",
                   "br_netfilter hands DNATed IPv6 back to the bridge only if it forwards"});
  }
  return out;
}

}  // namespace hostlb
