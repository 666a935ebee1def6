// Facts of this machine that hostlbd and hostlbctl both read.
#pragma once

#include <optional>
#include <string>

#include "hostlb/policies/address.h"

namespace hostlb {

// The system's host name as fleet documents write a hypervisor's: its first
// label; "" when no document could name it (then only backends without a
// host are this machine's).
std::string system_host_name();

// Whether this network namespace's main routing table has a default route
// of the family (procfs); nullopt if it cannot be read.
std::optional<bool> has_default_route(IpFamily family);

// An interface's MAC address (sysfs); nullopt if there is no such interface.
std::optional<MacAddress> interface_mac(const std::string& name);

// Held by one process per network namespace and name while it lives: an
// abstract Unix socket, which belongs to the namespace it was made in and
// goes away with the process however it ends.
class NamespaceLock {
 public:
  // Throws KernelError naming `name`: EADDRINUSE when another process of
  // this network namespace holds it.
  explicit NamespaceLock(const std::string& name);
  ~NamespaceLock();
  NamespaceLock(const NamespaceLock&) = delete;
  NamespaceLock& operator=(const NamespaceLock&) = delete;

 private:
  int fd_ = -1;
};

// libbpf's own messages (it prints the kernel's extended ACK of a tc
// request that hostlb expects to fail, such as creating a clsact qdisc that
// is there already) go to `log` instead of stderr; hostlb reports every
// failure that matters itself. `log` gets whole lines, without the newline.
using BpfLibraryLog = void (*)(const char* line);
void send_bpf_library_messages_to(BpfLibraryLog log);

}  // namespace hostlb
