#include "hostlb/netlink/system.h"

#include <unistd.h>

#include <fstream>

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

}  // namespace hostlb
