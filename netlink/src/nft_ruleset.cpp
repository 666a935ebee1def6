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

std::string element_key(const Binding& binding) {
  return binding.mac.str() + " . " + binding.key.service.vip.str() + " . " +
         std::string(protocol_name(binding.key.service.protocol)) + " . " +
         std::to_string(binding.key.service.port);
}

std::string lookup_key(IpFamily family) {
  return std::string("ether daddr . ") + (family == IpFamily::kV4 ? "ip" : "ip6") +
         " daddr . meta l4proto . th dport";
}

void add_elements(std::string& out, const std::string& map, const std::vector<std::string>& items) {
  if (items.empty()) return;
  out += "add element " + table_ref() + " " + map + " {\n";
  for (size_t i = 0; i < items.size(); ++i)
    out += "  " + items[i] + (i + 1 < items.size() ? ",\n" : "\n");
  out += "}\n";
}

}  // namespace

std::string_view refuse_policy_name(RefusePolicy policy) {
  return policy == RefusePolicy::kReject ? "reject" : "drop";
}

std::optional<RefusePolicy> parse_refuse_policy(std::string_view text) {
  if (text == "reject") return RefusePolicy::kReject;
  if (text == "drop") return RefusePolicy::kDrop;
  return std::nullopt;
}

std::string_view miss_policy_name(MissPolicy policy) {
  switch (policy) {
    case MissPolicy::kReset:
      return "reset";
    case MissPolicy::kDrop:
      return "drop";
    case MissPolicy::kAccept:
      return "accept";
  }
  return "?";
}

std::optional<MissPolicy> parse_miss_policy(std::string_view text) {
  for (MissPolicy p : {MissPolicy::kReset, MissPolicy::kDrop, MissPolicy::kAccept})
    if (text == miss_policy_name(p)) return p;
  return std::nullopt;
}

std::string render_delete_ruleset() {
  // "add" first so that "delete" cannot fail on a table that is not there.
  return "add table " + table_ref() + "\ndelete table " + table_ref() + "\n";
}

std::string render_full_ruleset(const Datapath& datapath, const MarkLayout& marks,
                                RulesetPolicies policies) {
  const RefusePolicy refuse = policies.refuse;
  const std::string table = table_ref();
  std::string out = render_delete_ruleset();
  out += "add table " + table + "\n";
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const std::string addr = family == IpFamily::kV4 ? "ipv4_addr" : "ipv6_addr";
    const std::string key = "ether_addr . " + addr + " . inet_proto . inet_service";
    out += "add map " + table + " " + nft_names::targets_map(family) + " { type " + key + " : " +
           addr + " . inet_service; }\n";
    out +=
        "add map " + table + " " + nft_names::marks_map(family) + " { type " + key + " : mark; }\n";
  }
  // The guard runs before conntrack: a forged packet costs no entry.
  out += "add set " + table + " " + nft_names::kGuardMacs + " { type ether_addr; }\n";
  out += "add set " + table + " " + nft_names::guard_vips(IpFamily::kV4) + " { type ipv4_addr; }\n";
  out += "add set " + table + " " + nft_names::guard_vips(IpFamily::kV6) + " { type ipv6_addr; }\n";
  out += "add counter " + table + " guard_drops\n";
  out += "add chain " + table +
         " guard { type filter hook prerouting priority raw; policy accept; }\n";
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    out += "add rule " + table + " guard ether saddr @" + nft_names::kGuardMacs + " " +
           (family == IpFamily::kV4 ? "ip" : "ip6") + " saddr @" + nft_names::guard_vips(family) +
           " counter name guard_drops drop\n";
  }
  const AdmissionLimits& admission = policies.admission;
  // Refusal: after conntrack (only new connections) and before DNAT. Each
  // rule looks the key up once, so each refused packet is counted once.
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const std::string addr = family == IpFamily::kV4 ? "ipv4_addr" : "ipv6_addr";
    out += "add set " + table + " " + nft_names::refuse_set(family) + " { type ether_addr . " +
           addr + " . inet_proto . inet_service; counter; }\n";
  }
  out += "add chain " + table +
         " refuse { type filter hook prerouting priority mangle; policy accept; }\n";
  // Every packet of the host passes here: all but a connection's first
  // leave at the first rule instead of failing each of the others.
  out += "add rule " + table + " refuse ct state != new accept\n";
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const std::string match =
        "ct state new " + lookup_key(family) + " @" + nft_names::refuse_set(family);
    if (refuse == RefusePolicy::kDrop) {
      out += "add rule " + table + " refuse " + match + " drop\n";
    } else {
      out += "add rule " + table + " refuse meta l4proto tcp " + match + " reject with tcp reset\n";
      out += "add rule " + table + " refuse meta l4proto udp " + match +
             " reject with icmpx port-unreachable\n";
    }
  }
  // Consistency misses, in the same chain: a new conntrack entry for a TCP
  // packet that is not a SYN, for a served key. One rule counts it per key
  // (the dynamic set may be full: then that rule stops, so the verdict is
  // in a rule of its own), the next counts it in total and treats it.
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const std::string addr = family == IpFamily::kV4 ? "ipv4_addr" : "ipv6_addr";
    out += "add set " + table + " " + nft_names::miss_set(family) + " { type ether_addr . " + addr +
           " . inet_proto . inet_service; flags dynamic; size " +
           std::to_string(nft_names::kMissSetSize) + "; counter; }\n";
  }
  out += "add counter " + table + " " + nft_names::kMissCounter + "\n";
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const std::string match = "meta l4proto tcp ct state new tcp flags & (syn | rst) == 0 " +
                              lookup_key(family) + " @" + nft_names::marks_map(family);
    out += "add rule " + table + " refuse " + match + " update @" + nft_names::miss_set(family) +
           " { " + lookup_key(family) + " }\n";
    const char* verdict = policies.miss == MissPolicy::kReset  ? " reject with tcp reset"
                          : policies.miss == MissPolicy::kDrop ? " drop"
                                                               : "";
    out += "add rule " + table + " refuse " + match + " counter name " + nft_names::kMissCounter +
           verdict + "\n";
  }
  // Admission, last in the chain (refusals and misses are answered first):
  // a meter per service; over its rate, the attempt is counted per service
  // (the dynamic set may be full: the total counter still counts) and
  // dropped. The sets and counter exist even when the limit is off, so that
  // reading the counters does not depend on the setting.
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    const std::string service = std::string(family == IpFamily::kV4 ? "ipv4_addr" : "ipv6_addr") +
                                " . inet_proto . inet_service";
    const std::string size = std::to_string(nft_names::kServiceSetSize);
    out += "add set " + table + " " + nft_names::rate_set(family) + " { type " + service +
           "; flags dynamic,timeout; timeout 60s; size " + size + "; }\n";
    out += "add set " + table + " " + nft_names::limited_set(family) + " { type " + service +
           "; flags dynamic; size " + size + "; counter; }\n";
  }
  out += "add counter " + table + " " + nft_names::kLimitedCounter + "\n";
  if (admission.new_per_second > 0) {
    const std::string limit =
        " limit rate over " + std::to_string(admission.new_per_second) + "/second" +
        (admission.burst > 0 ? " burst " + std::to_string(admission.burst) + " packets" : "");
    for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
      const std::string service =
          std::string(family == IpFamily::kV4 ? "ip" : "ip6") + " daddr . meta l4proto . th dport";
      out += "add rule " + table + " refuse ct state new " + lookup_key(family) + " @" +
             nft_names::marks_map(family) + " update @" + nft_names::rate_set(family) + " { " +
             service + limit + " } update @" + nft_names::limited_set(family) + " { " + service +
             " } counter name " + nft_names::kLimitedCounter + " drop\n";
    }
  }
  // Short timeouts for VIP connections until they are answered. The
  // kernel applies a timeout policy only to an entry not yet confirmed,
  // after conntrack made it: here, to the first packet of an admitted
  // connection (a TCP SYN, since anything else new was a miss; any UDP
  // datagram).
  if (admission.embryonic_seconds > 0) {
    const std::string t = std::to_string(admission.embryonic_seconds);
    for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
      const std::string l3 = family == IpFamily::kV4 ? "ip" : "ip6";
      out += "add ct timeout " + table + " " +
             nft_names::embryonic_timeout(family, Protocol::kTcp) + " { protocol tcp; l3proto " +
             l3 + "; policy = { syn_sent: " + t + ", syn_recv: " + t + " }; }\n";
      out += "add ct timeout " + table + " " +
             nft_names::embryonic_timeout(family, Protocol::kUdp) + " { protocol udp; l3proto " +
             l3 + "; policy = { unreplied: " + t + " }; }\n";
    }
    for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
      const std::string served = lookup_key(family) + " @" + nft_names::marks_map(family);
      for (Protocol protocol : {Protocol::kTcp, Protocol::kUdp})
        out += "add rule " + table + " refuse meta l4proto " +
               std::string(protocol_name(protocol)) + " ct state new " + served +
               " ct timeout set \"" + nft_names::embryonic_timeout(family, protocol) + "\"\n";
    }
  }
  out += "add chain " + table +
         " prerouting { type nat hook prerouting priority dstnat; policy accept; }\n";
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    // The identity goes into hostlb's mark bits only if no other bits are
    // set: nft cannot merge a map value into the mark, and hostlb does not
    // clobber marks others set before dstnat (such connections stay
    // unmarked, and are found by their tuple instead).
    out += "add rule " + table + " prerouting ct mark & " + hex32(~marks.mask()) +
           " == 0x00000000 ct mark set " + lookup_key(family) + " map @" +
           nft_names::marks_map(family) + "\n";
    out += "add rule " + table + " prerouting dnat " + (family == IpFamily::kV4 ? "ip" : "ip6") +
           " to " + lookup_key(family) + " map @" + nft_names::targets_map(family) + "\n";
  }
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    std::vector<std::string> targets, identities;
    for (const auto& binding : datapath.bindings) {
      if (binding.target.family() != family || !binding.serving) continue;
      targets.push_back(element_key(binding) + " : " + binding.target.str() + " . " +
                        std::to_string(binding.target_port));
      identities.push_back(element_key(binding) + " : " + hex32(marks.mark_for(binding.id)));
    }
    add_elements(out, nft_names::targets_map(family), targets);
    add_elements(out, nft_names::marks_map(family), identities);
  }
  std::vector<std::string> macs;
  for (const auto& mac : datapath.guard_macs) macs.push_back(mac.str());
  add_elements(out, nft_names::kGuardMacs, macs);
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    std::vector<std::string> vips;
    for (const auto& vip : datapath.guard_vips)
      if (vip.family() == family) vips.push_back(vip.str());
    add_elements(out, nft_names::guard_vips(family), vips);
  }
  for (IpFamily family : {IpFamily::kV4, IpFamily::kV6}) {
    std::vector<std::string> keys;
    auto refuse_key = [&](const DeliveryKey& key) {
      if (key.service.vip.family() == family)
        keys.push_back(key.mac.str() + " . " + key.service.vip.str() + " . " +
                       std::string(protocol_name(key.service.protocol)) + " . " +
                       std::to_string(key.service.port));
    };
    for (const auto& key : datapath.refused) refuse_key(key);
    for (const auto& binding : datapath.bindings)
      if (!binding.serving) refuse_key(binding.delivery());
    add_elements(out, nft_names::refuse_set(family), keys);
  }
  return out;
}

std::map<std::string, size_t> rules_per_chain(const std::string& script) {
  std::map<std::string, size_t> out;
  const std::string prefix = std::string("add rule ") + kNftFamily + " " + kNftTable + " ";
  for (size_t at = script.find(prefix); at != std::string::npos; at = script.find(prefix, at + 1)) {
    const size_t begin = at + prefix.size();
    ++out[script.substr(begin, script.find(' ', begin) - begin)];
  }
  return out;
}

}  // namespace hostlb
