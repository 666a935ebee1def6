#include <cstdio>

#include "hostlb/netlink/nft.h"
#include "nft_names.h"

namespace hostlb {
namespace {

std::string hex32(uint32_t value) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", value);
  return buf;
}

std::string table_ref() { return std::string(kNftFamily) + " " + kNftTable; }

std::string chain_name(const Binding& binding) { return nft_names::chain(binding.id); }

std::string map_name(IpFamily family) { return nft_names::map(family); }

std::string element_key(const Binding& binding) {
  return binding.mac.str() + " . " + binding.key.service.vip.str() + " . " +
         std::string(protocol_name(binding.key.service.protocol)) + " . " +
         std::to_string(binding.key.service.port);
}

std::string dnat_target(const Binding& binding) {
  if (binding.target.is_v4())
    return "dnat ip to " + binding.target.str() + ":" + std::to_string(binding.target_port);
  return "dnat ip6 to [" + binding.target.str() + "]:" + std::to_string(binding.target_port);
}

void render_binding(std::string& out, const Binding& binding, const MarkLayout& marks) {
  const std::string table = table_ref();
  const std::string chain = chain_name(binding);
  // The comment carries only validated text (addresses, ports, backend names
  // of [A-Za-z0-9._-]), so it needs no escaping.
  out += "add chain " + table + " " + chain + " { comment \"" + nft_names::comment(binding) +
         "\"; }\n";
  out += "add rule " + table + " " + chain + " meta l4proto " +
         std::string(protocol_name(binding.key.service.protocol)) + " ct mark set ct mark & " +
         hex32(~marks.mask()) + " | " + hex32(marks.mark_for(binding.id)) + " " +
         dnat_target(binding) + "\n";
}

}  // namespace

std::string render_delete_ruleset() {
  // "add" first so that "delete" cannot fail on a table that is not there.
  return "add table " + table_ref() + "\ndelete table " + table_ref() + "\n";
}

std::string render_full_ruleset(const Datapath& datapath, const MarkLayout& marks) {
  const std::string table = table_ref();
  std::string out = render_delete_ruleset();
  out += "add table " + table + "\n";
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const char* addr_type = family == IpFamily::kV4 ? "ipv4_addr" : "ipv6_addr";
    out += "add map " + table + " " + map_name(family) + " { type ether_addr . " + addr_type +
           " . inet_proto . inet_service : verdict; }\n";
  }
  out += "add chain " + table +
         " prerouting { type nat hook prerouting priority dstnat; policy accept; }\n";
  out += "add rule " + table +
         " prerouting ether daddr . ip daddr . meta l4proto . th dport vmap @bindings4\n";
  out += "add rule " + table +
         " prerouting ether daddr . ip6 daddr . meta l4proto . th dport vmap @bindings6\n";
  for (const auto& binding : datapath.bindings) render_binding(out, binding, marks);
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    std::string elements;
    for (const auto& binding : datapath.bindings) {
      if (binding.target.family() != family) continue;
      if (!elements.empty()) elements += ",\n  ";
      elements += element_key(binding) + " : goto " + chain_name(binding);
    }
    if (!elements.empty())
      out += "add element " + table + " " + map_name(family) + " {\n  " + elements + "\n}\n";
  }
  return out;
}

}  // namespace hostlb
