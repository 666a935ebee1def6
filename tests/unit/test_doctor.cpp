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

}  // namespace
}  // namespace hostlb
