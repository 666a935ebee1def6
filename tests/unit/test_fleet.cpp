// The fleet's keys in a store: a state written as keys reads back as the
// same state; a bad key is reported and left out, the rest is read; a
// write plan touches only the keys that differ.
#include <gtest/gtest.h>

#include <random>

#include "hostlb/policies/fleet.h"

namespace hostlb {
namespace {

const FleetLayout kLayout("/hostlb/fleet");

State fleet() {
  return parse_state_document(R"({"version":1,"backends":[
    {"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","ipv6":"2001:db8:1::11","bridge":"br0","host":"hv1"},
    {"name":"vm2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","bridge":"br0","host":"hv2"}],
   "services":[
    {"vip":"203.0.113.10","port":80,"protocol":"tcp","rows":1021,
     "backends":[{"name":"vm1","port":8080},{"name":"vm2","port":8080,"weight":2}]},
    {"vip":"2001:db8:f00::10","port":53,"protocol":"udp","backends":[{"name":"vm1","port":53}]}]})");
}

TEST(Fleet, KeysAreOnePerBackendAndServiceUnderThePrefix) {
  EXPECT_EQ(kLayout.prefix(), "/hostlb/fleet/");
  EXPECT_EQ(FleetLayout("/x/").prefix(), "/x/");
  EXPECT_THROW(FleetLayout("hostlb"), DocumentError);
  EXPECT_THROW(FleetLayout(""), DocumentError);
  const FleetKeys keys = fleet_keys(kLayout, fleet());
  std::vector<std::string> names;
  for (const auto& [key, value] : keys) names.push_back(key);
  EXPECT_EQ(names,
            (std::vector<std::string>{"/hostlb/fleet/backends/vm1", "/hostlb/fleet/backends/vm2",
                                      "/hostlb/fleet/services/203.0.113.10:80/tcp",
                                      "/hostlb/fleet/services/[2001:db8:f00::10]:53/udp"}));
}

TEST(Fleet, AStateWrittenAsKeysReadsBackTheSame) {
  FleetKeys keys = fleet_keys(kLayout, fleet());
  keys["/hostlb/fleet/reports/hv1"] = "not a fleet key: ignored";
  keys["/hostlb/other/backends/vm9"] = "another prefix: ignored";
  const FleetRead read = read_fleet(kLayout, keys);
  EXPECT_TRUE(read.errors.empty());
  EXPECT_EQ(state_to_json(read.state), state_to_json(fleet()));
}

TEST(Fleet, ABadKeyIsReportedAndTheRestIsRead) {
  FleetKeys keys = fleet_keys(kLayout, fleet());
  keys["/hostlb/fleet/backends/vm2"] = R"({"name":"vm2","mac":"not a mac","bridge":"br0"})";
  keys["/hostlb/fleet/backends/vm3"] =
      R"({"name":"vm4","mac":"02:00:00:00:01:14","ipv4":"198.18.1.14","bridge":"br0"})";
  keys["/hostlb/fleet/services/203.0.113.20:80/tcp"] =
      R"({"vip":"203.0.113.21","port":80,"protocol":"tcp","backends":[]})";
  keys["/hostlb/fleet/services/nonsense"] = "{}";
  const FleetRead read = read_fleet(kLayout, keys);
  ASSERT_EQ(read.errors.size(), 5u);
  EXPECT_EQ(read.errors[0].key, "/hostlb/fleet/backends/vm2");
  EXPECT_NE(read.errors[0].reason.find("mac"), std::string::npos) << read.errors[0].reason;
  EXPECT_EQ(read.errors[1].key, "/hostlb/fleet/backends/vm3");
  EXPECT_NE(read.errors[1].reason.find("not the key's name"), std::string::npos);
  // The service that names vm2 cannot be read without it.
  EXPECT_EQ(read.errors[2].key, "/hostlb/fleet/services/203.0.113.10:80/tcp");
  EXPECT_NE(read.errors[2].reason.find("unknown backend"), std::string::npos)
      << read.errors[2].reason;
  EXPECT_EQ(read.errors[3].key, "/hostlb/fleet/services/203.0.113.20:80/tcp");
  EXPECT_EQ(read.errors[4].key, "/hostlb/fleet/services/nonsense");
  // What is valid is there, whole.
  ASSERT_EQ(read.state.backends.size(), 1u);
  EXPECT_EQ(read.state.backends[0].name, "vm1");
  ASSERT_EQ(read.state.services.size(), 1u);
  EXPECT_EQ(read.state.services[0].key.str(), "[2001:db8:f00::10]:53/udp");
}

TEST(Fleet, AWritePlanTouchesOnlyTheKeysThatDiffer) {
  const FleetKeys current = fleet_keys(kLayout, fleet());
  EXPECT_TRUE(plan_fleet_write(kLayout, current, fleet()).empty());
  State changed = fleet();
  changed.services[0].backends.pop_back();  // vm2 leaves 203.0.113.10:80/tcp
  changed.services.pop_back();              // the UDP service goes
  FleetKeys with_report = current;
  with_report["/hostlb/fleet/reports/hv1"] = "{}";
  const FleetWrite write = plan_fleet_write(kLayout, with_report, changed);
  ASSERT_EQ(write.puts.size(), 1u);
  EXPECT_EQ(write.puts.begin()->first, "/hostlb/fleet/services/203.0.113.10:80/tcp");
  EXPECT_EQ(write.deletes,
            (std::vector<std::string>{"/hostlb/fleet/services/[2001:db8:f00::10]:53/udp"}))
      << "reports are not the plan's to delete";
  // Applied to the keys, the plan gives the keys of the new state.
  FleetKeys after = current;
  for (const auto& [key, value] : write.puts) after[key] = value;
  for (const auto& key : write.deletes) after.erase(key);
  EXPECT_EQ(after, fleet_keys(kLayout, changed));
}

TEST(Fleet, TheDigestIsTheSameWhateverTheOrderAndSeesEveryDesiredKey) {
  const FleetKeys keys = fleet_keys(kLayout, fleet());
  const uint64_t digest = fleet_digest(kLayout, keys);
  // Built key by key as a watch would, in another order: the same.
  uint64_t incremental = 0;
  for (auto it = keys.rbegin(); it != keys.rend(); ++it)
    incremental ^= fleet_key_hash(it->first, it->second);
  EXPECT_EQ(incremental, digest);
  FleetKeys more = keys;
  more["/hostlb/fleet/status/host/hv1"] = "{}";  // reports are not the desired state
  EXPECT_EQ(fleet_digest(kLayout, more), digest);
  more.begin()->second += " ";  // any change of a value
  EXPECT_NE(fleet_digest(kLayout, more), digest);
  FleetKeys fewer = keys;
  fewer.erase(std::prev(fewer.end()));
  EXPECT_NE(fleet_digest(kLayout, fewer), digest);
  EXPECT_EQ(digest_text(0x0123456789abcdefULL), "0123456789abcdef");
  EXPECT_EQ(kLayout.status_key("host", "hv1"), "/hostlb/fleet/status/host/hv1");
  EXPECT_TRUE(kLayout.is_desired("/hostlb/fleet/services/x"));
  EXPECT_FALSE(kLayout.is_desired("/hostlb/fleet/status/host/hv1"));
  // The desired range holds backends and services, not the reports.
  EXPECT_LT(kLayout.services() + "\xff", kLayout.desired_end());
  EXPECT_LT(kLayout.desired_end(), kLayout.status());
  EXPECT_LT(kLayout.desired_end(), kLayout.watchers());
}

TEST(Fleet, GatewaysTakeOutWhatHostsReportDownAndTheBackendsOfExpiredHosts) {
  FleetKeys keys = fleet_keys(kLayout, fleet());
  const ServiceKey web = *parse_service_key("203.0.113.10:80/tcp");
  auto report = [](const std::string& down) {
    return R"({"name":"x","figures":{"down":[)" + down + "]}}";
  };
  EXPECT_TRUE(fleet_unhealthy(kLayout, fleet(), keys).empty());
  // hv1 says vm1 does not serve web; hv2 says so too, but vm1 is not its own.
  keys["/hostlb/fleet/status/host/hv1"] =
      report(R"({"service":"203.0.113.10:80/tcp","backend":"vm1"})");
  keys["/hostlb/fleet/status/host/hv2"] = report(
      R"({"service":"[2001:db8:f00::10]:53/udp","backend":"vm1"},{"service":"bad key","backend":"vm2"},7)");
  keys["/hostlb/fleet/watchers/host/hv1"] = "{}";
  keys["/hostlb/fleet/watchers/host/hv2"] = "{}";
  EXPECT_EQ(fleet_unhealthy(kLayout, fleet(), keys), (DrainedBindings{{web, "vm1"}}));
  // hv2's lease expires: every binding of its backend goes.
  keys.erase("/hostlb/fleet/status/host/hv2");
  EXPECT_EQ(fleet_unhealthy(kLayout, fleet(), keys), (DrainedBindings{{web, "vm1"}, {web, "vm2"}}));
  // A host that never followed the fleet (no member key) is not judged.
  keys.erase("/hostlb/fleet/watchers/host/hv2");
  EXPECT_EQ(fleet_unhealthy(kLayout, fleet(), keys), (DrainedBindings{{web, "vm1"}}));
  // A report that cannot be read says nothing is down.
  keys["/hostlb/fleet/status/host/hv1"] = "not json";
  EXPECT_TRUE(fleet_unhealthy(kLayout, fleet(), keys).empty());
}

TEST(Fleet, AViewKeptKeyByKeyAlwaysReadsWhatAWholeReadReads) {
  std::mt19937 random(7);
  auto pick = [&](size_t n) { return static_cast<size_t>(random() % n); };
  FleetKeys keys = fleet_keys(kLayout, fleet());
  FleetView view(kLayout, {});
  view.reset(keys);
  const std::vector<std::string> vips = {"203.0.113.1", "203.0.113.2", "203.0.113.3",
                                         "198.51.100.7", "2001:db8::5"};
  const std::vector<std::string> names = {"vm1", "vm2", "vm3"};
  for (int step = 0; step < 2000; ++step) {
    std::string key;
    const size_t what = pick(10);
    if (what < 6) {  // a service put, valid or not
      const std::string vip = vips[pick(vips.size())];
      const std::string proto = pick(2) ? "tcp" : "udp";
      const int port = 80 + static_cast<int>(pick(3));
      const ServiceKey service_key =
          *parse_service_key((vip.find(':') != std::string::npos ? "[" + vip + "]" : vip) + ":" +
                             std::to_string(port) + "/" + proto);
      key = kLayout.service_key(service_key);
      const size_t kind = pick(8);
      keys[key] = kind == 0   ? "not json"
                  : kind == 1 ? R"({"vip":"192.0.2.1","port":1,"protocol":"tcp","backends":[]})"
                              : R"({"vip":")" + vip + R"(","port":)" + std::to_string(port) +
                                    R"(,"protocol":")" + proto + R"(","backends":[{"name":")" +
                                    names[pick(names.size())] + R"(","port":8080}]})";
    } else if (what < 8) {  // a service deleted
      std::vector<std::string> services;
      for (const auto& [k, v] : keys)
        if (k.starts_with(kLayout.services())) services.push_back(k);
      if (services.empty()) continue;
      key = services[pick(services.size())];
      keys.erase(key);
    } else {  // a backend put, moved or deleted
      const std::string name = names[pick(names.size())];
      key = kLayout.backend_key(name);
      if (pick(3) == 0)
        keys.erase(key);
      else
        keys[key] = R"({"name":")" + name + R"(","mac":"02:00:00:00:01:1)" +
                    std::to_string(pick(3)) + R"(","bridge":"br0"})";
    }
    view.update(keys, key);
    const FleetRead whole = read_fleet(kLayout, keys);
    ASSERT_EQ(view.state(), whole.state) << "step " << step << " " << key;
    ASSERT_EQ(view.errors(), whole.errors) << "step " << step << " " << key;
  }
}

}  // namespace
}  // namespace hostlb
