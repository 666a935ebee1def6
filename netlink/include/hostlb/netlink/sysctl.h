// Kernel settings the datapath depends on, read and written through
// /proc/sys of the namespace hostlbd runs in.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hostlb {

class Sysctls {
 public:
  virtual ~Sysctls() = default;
  // Keys are paths below /proc/sys ("net/ipv4/conf/br0/forwarding"), which
  // stay unambiguous for interface names with dots. nullopt if the key does
  // not exist (the module behind it is not loaded, or the device is gone).
  virtual std::optional<std::string> read(const std::string& key) = 0;
  // Throws KernelError.
  virtual void write(const std::string& key, const std::string& value) = 0;
};

std::unique_ptr<Sysctls> make_procfs_sysctls(std::string root = "/proc/sys");

// A numeric sysctl (nf_conntrack_count, ...); nullopt if missing or not a
// number.
std::optional<uint64_t> read_sysctl_number(Sysctls& sysctls, const std::string& key);

// The sysctl(8) spelling of a key: '/' and '.' swapped
// ("net.ipv4.conf.br/0.forwarding" for the bridge "br.0").
std::string sysctl_display_name(const std::string& key);

struct SysctlRequirement {
  std::string key;
  std::string value;
  std::string why;
};

// What the bridged-DNAT datapath needs for these bridges (see DESIGN.md):
// br_netfilter must hand bridged IPv4/IPv6 to the inet hooks, and each bridge
// must forward, or the DNATed frame is delivered to the bridge device itself.
// Host-wide forwarding is not needed and is left alone. Conntrack
// timestamps give connections an age.
std::vector<SysctlRequirement> datapath_sysctls(const std::vector<std::string>& bridges);

}  // namespace hostlb
