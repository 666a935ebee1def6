#include "doctor.h"

#include <exception>

#include "hostlb/netlink/system.h"

namespace hostlb {

HostFacts gather_facts(const Datapath& desired, RouteTable& routes, Sysctls& sysctls,
                       NftRuleset& nft) {
  HostFacts facts;
  try {
    facts.table = nft.inventory();
  } catch (const std::exception& e) {
    facts.nftables_error = e.what();
  }
  facts.conntrack_max = read_sysctl_number(sysctls, "net/netfilter/nf_conntrack_max");
  facts.conntrack_count = read_sysctl_number(sysctls, "net/netfilter/nf_conntrack_count");
  facts.conntrack_available = facts.conntrack_max.has_value();
  for (const auto& req : datapath_sysctls(desired.bridges))
    facts.sysctls[req.key] = sysctls.read(req.key);
  try {
    facts.conntrack_users = other_conntrack_users();
  } catch (const std::exception& e) {
    facts.conntrack_users_error = e.what();
  }
  facts.bpf_problems = bpf_datapath_problems(sysctls, desired.bridges);
  facts.default_route_v4 = has_default_route(IpFamily::kV4);
  facts.default_route_v6 = has_default_route(IpFamily::kV6);
  for (const auto& bridge : desired.bridges)
    facts.ports_without_program[bridge] = ports_without_host_program(bridge);
  std::map<int, std::string> names;
  for (const auto& bridge : desired.bridges) {
    try {
      facts.bridges[bridge] = routes.link(bridge);
      if (facts.bridges[bridge]) names[facts.bridges[bridge]->ifindex] = bridge;
    } catch (const std::exception&) {
      facts.bridges[bridge] = std::nullopt;
    }
    if (!facts.bridges[bridge]) continue;
    try {
      const auto macs = bridge_learnt_macs(bridge);
      facts.learnt[bridge] = {macs.begin(), macs.end()};
    } catch (const std::exception& e) {
      facts.fdb_errors[bridge] = e.what();
    }
  }
  try {
    for (const auto& r : routes.list_host_routes())
      if (names.count(r.ifindex)) facts.routes.insert({names[r.ifindex], r.address});
    for (const auto& n : routes.list_permanent_neighbours())
      if (names.count(n.ifindex)) facts.neighbours[{names[n.ifindex], n.address}] = n.mac;
  } catch (const std::exception&) {
    // Reported as missing entries by diagnose.
  }
  return facts;
}

std::vector<Finding> diagnose(const Datapath& desired, const HostFacts& facts) {
  using Level = Finding::Level;
  std::vector<Finding> out;
  auto add = [&](Level level, std::string check, std::string detail, std::string fix = "") {
    out.push_back({level, std::move(check), std::move(detail), std::move(fix)});
  };

  if (facts.nftables_error)
    add(Level::kFail, "nf_tables", *facts.nftables_error,
        "load nf_tables (modprobe nf_tables) or use a kernel with it; hostlbd needs "
        "CAP_NET_ADMIN, so run doctor as root");
  else
    add(Level::kPass, "nf_tables", "available");

  if (!facts.conntrack_available) {
    add(Level::kFail, "conntrack", "net.netfilter.nf_conntrack_max is missing",
        "load nf_conntrack (modprobe nf_conntrack)");
  } else {
    const uint64_t count = facts.conntrack_count.value_or(0), max = *facts.conntrack_max;
    const std::string detail =
        std::to_string(count) + " of " + std::to_string(max) + " entries in use";
    const std::string fix = "raise net.netfilter.nf_conntrack_max (sysctl -w)";
    if (max > 0 && count * 100 >= max * 95)
      add(Level::kFail, "conntrack headroom", detail + ": new connections are being dropped", fix);
    else if (max > 0 && count * 100 >= max * 80)
      add(Level::kWarn, "conntrack headroom", detail, fix);
    else
      add(Level::kPass, "conntrack headroom", detail);
  }

  // How much of the table a flood at one VIP could take: its unanswered
  // entries live the embryonic timeout, at the service's rate at most.
  if (facts.admission && facts.conntrack_max && *facts.conntrack_max > 0) {
    const AdmissionLimits& a = *facts.admission;
    const uint64_t max = *facts.conntrack_max;
    const std::string fix =
        "set service_new_rate and embryonic_timeout in /etc/hostlb/hostlbd.conf (lower), or "
        "raise net.netfilter.nf_conntrack_max";
    if (a.new_per_second == 0 || a.embryonic_seconds == 0) {
      add(Level::kWarn, "flood headroom",
          std::string(a.new_per_second == 0 ? "no rate limit per service"
                                            : "no short timeout for unanswered VIP entries") +
              ": a flood at one VIP can fill the conntrack table that every conntrack user of "
              "this host shares",
          fix);
    } else {
      const uint64_t bound = uint64_t{a.new_per_second} * a.embryonic_seconds + a.burst;
      const std::string detail = "a flood at one VIP holds at most about " + std::to_string(bound) +
                                 " unanswered entries (" + std::to_string(a.new_per_second) +
                                 "/s for " + std::to_string(a.embryonic_seconds) + " s, burst " +
                                 std::to_string(a.burst) + "), " +
                                 std::to_string(bound * 100 / max) + "% of nf_conntrack_max";
      if (bound * 2 > max)
        add(Level::kWarn, "flood headroom", detail, fix);
      else
        add(Level::kPass, "flood headroom", detail);
    }
  }

  const bool bpf = facts.datapath == HostDatapathKind::kBpf;
  // The datapath's choice: other conntrack users of bridged traffic need
  // br_netfilter, which the BPF datapath needs off.
  std::string users;
  for (const auto& u : facts.conntrack_users) users += (users.empty() ? "" : ", ") + u;
  if (facts.conntrack_users_error) {
    add(Level::kWarn, "other conntrack users",
        "cannot list the nftables ruleset: " + *facts.conntrack_users_error);
  } else if (!bpf) {
    add(Level::kPass, "datapath nft",
        users.empty() ? "no other conntrack user found on this host: --host-datapath bpf would "
                        "take traffic hostlb does not balance out of netfilter and conntrack "
                        "(needs br_netfilter off; see hostlbd(8))"
                      : "other conntrack users found (" + users +
                            "): keep nft, the BPF datapath needs br_netfilter off");
  } else if (users.empty()) {
    add(Level::kPass, "datapath bpf", "no other conntrack user found on this host");
  } else {
    add(Level::kWarn, "datapath bpf",
        "other conntrack users found (" + users +
            "); with br_netfilter off they no longer see bridged frames",
        "if they filter the VMs' traffic, run hostlbd with --host-datapath nft");
  }
  // Refusals: nft's reset needs some route toward the client, its ICMP
  // error a route to the client through the bridge; the program answers
  // out of the ingress port whatever the routes.
  if (bpf) {
    add(Level::kPass, "refusals", "answered by the program out of the port they came in by");
  } else if (!desired.bindings.empty()) {
    std::string without;
    for (auto [family, has] :
         {std::pair{"IPv4", facts.default_route_v4}, std::pair{"IPv6", facts.default_route_v6}})
      if (has && !*has) without += std::string(without.empty() ? "" : " and ") + family;
    if (without.empty())
      add(Level::kPass, "refusals", "a default route for resets and ICMP errors");
    else
      add(Level::kWarn, "refusals",
          "no default route for " + without +
              ": a refused connection from a client no route reaches is dropped, not reset "
              "(an ICMP error needs a route to the client through the bridge)",
          "add a default route, or run hostlbd with --host-datapath bpf (it answers out of the "
          "bridge port)");
  }
  if (bpf) {
    if (facts.bpf_problems.empty())
      add(Level::kPass, "br_netfilter", "off for the bridges");
    else
      add(Level::kFail, "br_netfilter", facts.bpf_problems.front(),
          "turn it off if nothing else needs it (sysctl -w "
          "net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0), or run "
          "--host-datapath nft");
  }
  for (const auto& req :
       bpf ? std::vector<SysctlRequirement>{} : datapath_sysctls(desired.bridges)) {
    auto it = facts.sysctls.find(req.key);
    const std::optional<std::string> value = it == facts.sysctls.end() ? std::nullopt : it->second;
    const std::string name = sysctl_display_name(req.key);
    if (value && *value == req.value) {
      add(Level::kPass, "sysctl " + name, "= " + *value);
    } else {
      std::string fix = "sysctl -w " + name + "=" + req.value;
      if (!value && req.key.rfind("net/bridge/", 0) == 0)
        fix = "load br_netfilter (modprobe br_netfilter), then " + fix;
      add(Level::kFail, "sysctl " + name, value ? "= " + *value + " (" + req.why + ")" : "missing",
          fix + " (hostlbd sets it itself unless manage_sysctls = false)");
    }
  }

  for (const auto& bridge : desired.bridges) {
    auto it = facts.bridges.find(bridge);
    if (it == facts.bridges.end() || !it->second)
      add(Level::kFail, "bridge " + bridge, "missing", "create it, or fix the backends' bridge");
    else if (!it->second->up)
      add(Level::kFail, "bridge " + bridge, "down", "ip link set " + bridge + " up");
    else
      add(Level::kPass, "bridge " + bridge, "up");
  }

  // Each backend: its MAC learnt on a port of its bridge, its route and
  // neighbour in place.
  std::map<std::string, std::vector<const HostEntry*>> by_backend;
  for (const auto& h : desired.hosts) by_backend[h.backend].push_back(&h);
  for (const auto& [backend, hosts] : by_backend) {
    const HostEntry& first = *hosts.front();
    const std::string check = "backend " + backend;
    if (auto err = facts.fdb_errors.find(first.bridge); err != facts.fdb_errors.end()) {
      add(Level::kWarn, check + " MAC", "cannot read the forwarding database: " + err->second);
    } else if (auto fdb = facts.learnt.find(first.bridge);
               fdb != facts.learnt.end() && fdb->second.count(first.mac)) {
      add(Level::kPass, check + " MAC", first.mac.str() + " learnt on a port of " + first.bridge);
    } else if (facts.bridges.count(first.bridge) && facts.bridges.at(first.bridge)) {
      add(Level::kWarn, check + " MAC",
          first.mac.str() + " not learnt on " + first.bridge + " (VM down, or not sending yet)",
          "check that the VM runs and its interface is a port of " + first.bridge);
    }
    for (const HostEntry* h : hosts) {
      const std::string what = h->address.str() + " dev " + h->bridge;
      if (facts.routes.count({h->bridge, h->address}))
        add(Level::kPass, check + " route", what);
      else
        add(Level::kFail, check + " route", what + " missing",
            "restart or reload hostlbd (it installs it)");
      auto n = facts.neighbours.find({h->bridge, h->address});
      if (n != facts.neighbours.end() && n->second == h->mac)
        add(Level::kPass, check + " neighbour", what + " lladdr " + h->mac.str());
      else
        add(Level::kFail, check + " neighbour",
            what + (n == facts.neighbours.end() ? " missing" : " has lladdr " + n->second.str()),
            "restart or reload hostlbd (it installs it)");
    }
  }

  if (bpf) {
    for (const auto& bridge : desired.bridges) {
      auto it = facts.ports_without_program.find(bridge);
      if (it == facts.ports_without_program.end() || it->second.empty()) {
        add(Level::kPass, "host program on " + bridge, "attached to every port");
        continue;
      }
      std::string ports;
      for (const auto& p : it->second) ports += (ports.empty() ? "" : ", ") + p;
      add(Level::kFail, "host program on " + bridge, "missing on " + ports,
          "restart hostlbd (it attaches to every port of the bridges it serves)");
    }
  } else if (!facts.nftables_error) {
    if (!facts.table.table) {
      add(desired.bindings.empty() ? Level::kWarn : Level::kFail, "table inet hostlb", "missing",
          "start hostlbd");
    } else {
      std::set<DeliveryKey> want;
      for (const auto& b : desired.bindings) want.insert({b.mac, b.key.service});
      // A binding that does not serve (its health check says down, or has
      // not said yet) is in the refuse set instead of the maps.
      size_t missing = 0, extra = 0, not_serving = 0;
      for (const auto& k : want) {
        const bool in_maps = facts.table.targets.count(k) && facts.table.identities.count(k);
        not_serving += !in_maps && facts.table.refused.count(k);
        missing += !in_maps && !facts.table.refused.count(k);
      }
      for (const auto& k : facts.table.targets) extra += !want.count(k);
      const std::string detail =
          std::to_string(want.size()) + " bindings wanted, " +
          std::to_string(facts.table.targets.size()) + " in the table" +
          (not_serving ? ", " + std::to_string(not_serving) + " refused while down" : "");
      if (missing == 0 && extra == 0)
        add(Level::kPass, "table inet hostlb", detail + " (" + facts.desired_source + ")");
      else
        add(Level::kFail, "table inet hostlb",
            detail + ": " + std::to_string(missing) + " missing, " + std::to_string(extra) +
                " not wanted (" + facts.desired_source + ")",
            "hostlbd rebuilds it on its next change or restart: systemctl restart hostlbd");
    }
  }

  if (facts.daemon_reachable)
    add(Level::kPass, "daemon", facts.daemon_detail);
  else
    add(Level::kFail, "daemon", facts.daemon_detail, "systemctl start hostlbd");
  return out;
}

}  // namespace hostlb
