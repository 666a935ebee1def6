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

// An interface's MAC address (sysfs); nullopt if there is no such interface.
std::optional<MacAddress> interface_mac(const std::string& name);

}  // namespace hostlb
