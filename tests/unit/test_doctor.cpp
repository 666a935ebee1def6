// diagnose() on hand-made facts: each verdict and its fix.
#include <gtest/gtest.h>

#include "doctor.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

Datapath one_backend() {
  const State s = parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}]})");
  return compile_datapath(s, {}, MarkLayout(MarkLayout::kDefaultMask));
}

// All well, as gather_facts would find it.
HostFacts healthy(const Datapath& d) {
  HostFacts f;
  f.conntrack_available = true;
  f.conntrack_count = 10;
  f.conntrack_max = 1000;
  for (const auto& req : datapath_sysctls(d.bridges)) f.sysctls[req.key] = req.value;
  f.bridges["br0"] = LinkState{10, true};
  f.learnt["br0"] = {d.hosts[0].mac};
  for (const auto& h : d.hosts) {
    f.routes.insert({h.bridge, h.address});
    f.neighbours[{h.bridge, h.address}] = h.mac;
  }
  f.table.table = true;
  for (const auto& b : d.bindings) {
    f.table.targets.insert({b.mac, b.key.service});
    f.table.identities.insert({b.mac, b.key.service});
  }
  f.default_route_v4 = true;
  f.default_route_v6 = true;
  f.daemon_reachable = true;
  f.daemon_detail = "hostlbd 0.1.0";
  f.desired_source = "test";
  return f;
}

const Finding* find(const std::vector<Finding>& all, const std::string& check) {
  for (const auto& f : all)
    if (f.check == check) return &f;
  return nullptr;
}

TEST(Doctor, AHealthyHostPassesEveryCheck) {
  const Datapath d = one_backend();
  for (const auto& f : diagnose(d, healthy(d)))
    EXPECT_EQ(f.level, Finding::Level::kPass) << f.check << ": " << f.detail;
}

TEST(Doctor, ConntrackHeadroomWarnsAt80AndFailsAt95Percent) {
  const Datapath d = one_backend();
  HostFacts f = healthy(d);
  f.conntrack_count = 850;
  const auto warned = diagnose(d, f);
  EXPECT_EQ(find(warned, "conntrack headroom")->level, Finding::Level::kWarn);
  f.conntrack_count = 960;
  const auto failed = diagnose(d, f);
  const auto* finding = find(failed, "conntrack headroom");
  EXPECT_EQ(finding->level, Finding::Level::kFail);
  EXPECT_NE(finding->fix.find("nf_conntrack_max"), std::string::npos);
}

TEST(Doctor, FloodHeadroomComparesWhatAFloodedServiceHoldsWithTheTable) {
  const Datapath d = one_backend();
  HostFacts f = healthy(d);
  f.conntrack_max = 262144;
  EXPECT_EQ(find(diagnose(d, f), "flood headroom"), nullptr) << "no daemon, no limits known";
  f.admission = AdmissionLimits{};  // the defaults: 10000/s for 5 s, burst 2000
  const auto defaults = diagnose(d, f);
  const Finding* pass = find(defaults, "flood headroom");
  ASSERT_NE(pass, nullptr);
  EXPECT_EQ(pass->level, Finding::Level::kPass) << pass->detail;
  EXPECT_NE(pass->detail.find("52000 unanswered entries"), std::string::npos) << pass->detail;
  EXPECT_NE(pass->detail.find("19% of nf_conntrack_max"), std::string::npos) << pass->detail;

  f.conntrack_max = 65536;  // a small table: one flood could take most of it
  const auto small = diagnose(d, f);
  EXPECT_EQ(find(small, "flood headroom")->level, Finding::Level::kWarn);
  EXPECT_NE(find(small, "flood headroom")->fix.find("service_new_rate"), std::string::npos);

  f.conntrack_max = 262144;
  f.admission->new_per_second = 0;
  const auto unlimited = diagnose(d, f);
  const Finding* off = find(unlimited, "flood headroom");
  EXPECT_EQ(off->level, Finding::Level::kWarn);
  EXPECT_NE(off->detail.find("no rate limit"), std::string::npos) << off->detail;
}

TEST(Doctor, EachBrokenPieceIsNamedWithItsFix) {
  const Datapath d = one_backend();
  HostFacts f = healthy(d);
  f.sysctls["net/bridge/bridge-nf-call-iptables"] = std::nullopt;
  f.bridges["br0"] = LinkState{10, false};
  f.learnt["br0"].clear();
  f.neighbours.clear();
  f.table.targets.clear();
  f.daemon_reachable = false;
  const auto all = diagnose(d, f);
  auto level = [&](const std::string& check) { return find(all, check)->level; };
  EXPECT_EQ(level("sysctl net.bridge.bridge-nf-call-iptables"), Finding::Level::kFail);
  EXPECT_NE(find(all, "sysctl net.bridge.bridge-nf-call-iptables")->fix.find("br_netfilter"),
            std::string::npos);
  EXPECT_EQ(level("bridge br0"), Finding::Level::kFail);
  EXPECT_EQ(find(all, "bridge br0")->fix, "ip link set br0 up");
  EXPECT_EQ(level("backend web-1 MAC"), Finding::Level::kWarn);
  EXPECT_EQ(level("backend web-1 neighbour"), Finding::Level::kFail);
  EXPECT_EQ(level("table inet hostlb"), Finding::Level::kFail);
  EXPECT_NE(find(all, "table inet hostlb")->detail.find("1 missing"), std::string::npos);
  EXPECT_EQ(level("daemon"), Finding::Level::kFail);
}

// The datapath's choice: what doctor found and what it recommends.
TEST(Doctor, TheDatapathFindingSaysWhoElseUsesConntrackAndWhatSuits) {
  const Datapath d = one_backend();
  HostFacts f = healthy(d);
  const auto first = diagnose(d, f);
  const auto* alone = find(first, "datapath nft");
  ASSERT_NE(alone, nullptr);
  EXPECT_EQ(alone->level, Finding::Level::kPass);
  EXPECT_NE(alone->detail.find("--host-datapath bpf would"), std::string::npos) << alone->detail;

  f.conntrack_users = {"inet filter (ct state)"};
  const auto second = diagnose(d, f);
  const auto* shared = find(second, "datapath nft");
  EXPECT_NE(shared->detail.find("inet filter (ct state)): keep nft"), std::string::npos)
      << shared->detail;

  // On bpf, another user is a warning: it no longer sees bridged frames.
  f.datapath = HostDatapathKind::kBpf;
  f.ports_without_program["br0"] = {};
  const auto all = diagnose(d, f);
  EXPECT_EQ(find(all, "datapath bpf")->level, Finding::Level::kWarn);
  EXPECT_NE(find(all, "datapath bpf")->fix.find("--host-datapath nft"), std::string::npos);
  EXPECT_EQ(find(all, "br_netfilter")->level, Finding::Level::kPass);
  EXPECT_EQ(find(all, "host program on br0")->level, Finding::Level::kPass);
  EXPECT_EQ(find(all, "table inet hostlb"), nullptr) << "no nftables table on bpf";
  EXPECT_EQ(find(all, "sysctl net.bridge.bridge-nf-call-iptables"), nullptr);
}

TEST(Doctor, WithoutADefaultRouteNftsRefusalsAreOnlyDroppedAndBpfIsSuggested) {
  const Datapath d = one_backend();
  HostFacts f = healthy(d);
  f.default_route_v6 = false;
  const auto findings = diagnose(d, f);
  const auto* refusals = find(findings, "refusals");
  ASSERT_NE(refusals, nullptr);
  EXPECT_EQ(refusals->level, Finding::Level::kWarn);
  EXPECT_NE(refusals->detail.find("no default route for IPv6"), std::string::npos);
  EXPECT_NE(refusals->fix.find("--host-datapath bpf"), std::string::npos);
  f.datapath = HostDatapathKind::kBpf;
  EXPECT_EQ(find(diagnose(d, f), "refusals")->level, Finding::Level::kPass);
}

TEST(Doctor, OnBpfBrNetfilterOnAndAPortWithoutTheProgramFail) {
  const Datapath d = one_backend();
  HostFacts f = healthy(d);
  f.datapath = HostDatapathKind::kBpf;
  f.bpf_problems = {"sysctl net.bridge.bridge-nf-call-iptables is 1: ..."};
  f.ports_without_program["br0"] = {"vm3", "vm4"};
  const auto all = diagnose(d, f);
  EXPECT_EQ(find(all, "br_netfilter")->level, Finding::Level::kFail);
  EXPECT_NE(find(all, "br_netfilter")->fix.find("--host-datapath nft"), std::string::npos);
  EXPECT_EQ(find(all, "host program on br0")->level, Finding::Level::kFail);
  EXPECT_EQ(find(all, "host program on br0")->detail, "missing on vm3, vm4");
  EXPECT_EQ(find(all, "datapath bpf")->level, Finding::Level::kPass);
}

TEST(TablesUsingConntrack, FindsTablesOfBridgedFamiliesThatUseItAndSkipsHostlbs) {
  const std::string listing = R"(table inet hostlb {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
	}
}
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
	}
}
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		masquerade
	}
}
table ip stateless {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept
	}
}
table netdev edge {
	chain ingress {
		type filter hook ingress device "eth0" priority 0; policy accept;
		ct state new counter
	}
}
table ip legacy_xt {
	chain FORWARD {
		xt match "conntrack" counter accept
	}
}
)";
  EXPECT_EQ(tables_using_conntrack(listing),
            (std::vector<std::string>{"inet filter (ct state)", "ip nat (type nat hook)",
                                      "ip legacy_xt (xt match \"conntrack\")"}));
}

}  // namespace
}  // namespace hostlb
