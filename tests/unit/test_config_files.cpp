// The settings file and the services.d merge: errors name the key and line,
// or both files of a conflict.
#include <gtest/gtest.h>

#include "hostlb/policies/config_files.h"

namespace hostlb {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const DocumentError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(DaemonSettings, ParsesKeysCommentsAndBlankLines) {
  const auto s = parse_daemon_settings(
      "# hostlbd settings\n\nsocket = /run/x.sock   # trailing comment\nrefuse_seconds=30\n"
      "manage_sysctls = no\ntracking = false\nmiss_policy = drop\nmetrics_file = "
      "/var/lib/node/hostlb.prom\n");
  EXPECT_EQ(s.socket, "/run/x.sock");
  EXPECT_EQ(s.refuse_seconds, 30u);
  EXPECT_EQ(s.manage_sysctls, false);
  EXPECT_EQ(s.tracking, false);
  EXPECT_EQ(s.miss_policy, "drop");
  EXPECT_EQ(s.metrics_file, "/var/lib/node/hostlb.prom");
  EXPECT_FALSE(s.state_dir);
}

TEST(DaemonSettings, AdmissionLimitsAreNumbersInTheirRanges) {
  const auto s = parse_daemon_settings(
      "embryonic_timeout = 0\nservice_new_rate = 2500\nservice_new_burst = 10\n");
  EXPECT_EQ(s.embryonic_timeout, 0u);
  EXPECT_EQ(s.service_new_rate, 2500u);
  EXPECT_EQ(s.service_new_burst, 10u);
  EXPECT_EQ(error_of([] { parse_daemon_settings("service_new_burst = 0\n"); }),
            "line 1: service_new_burst: \"0\" is not a whole number from 1 to 10000000");
  EXPECT_EQ(error_of([] { parse_daemon_settings("embryonic_timeout = 601\n"); }),
            "line 1: embryonic_timeout: \"601\" is not a whole number from 0 to 600");
}

TEST(DaemonSettings, ChainingAndTrackingSettings) {
  const auto s = parse_daemon_settings(
      "chain_uplink = up0\nchain_gateways = 02:00:00:00:0f:01, 02:00:00:00:0f:02\n"
      "chain_window = 120\ntrack_timeout = 600\ntrack_size = 65536\ndrain_warmup = 30\n"
      "gateway_datapath = nft\n"
      "host_datapath = bpf\n");
  EXPECT_EQ(s.chain_uplink, "up0");
  EXPECT_EQ(s.chain_gateways, "02:00:00:00:0f:01, 02:00:00:00:0f:02");
  EXPECT_EQ(s.chain_window, 120u);
  EXPECT_EQ(s.track_timeout, 600u);
  EXPECT_EQ(s.track_size, 65536u);
  EXPECT_EQ(s.drain_warmup, 30u);
  EXPECT_EQ(s.gateway_datapath, "nft");
  EXPECT_EQ(s.host_datapath, "bpf");
  EXPECT_EQ(error_of([] { parse_daemon_settings("gateway_datapath = xdp\n"); }),
            "line 1: gateway_datapath: \"xdp\" is not one of bpf, nft");
  EXPECT_EQ(error_of([] { parse_daemon_settings("chain_gateways = 02:00:00:00:0f:01,gw2\n"); }),
            "line 1: chain_gateways: \"gw2\" is not a MAC");
  EXPECT_EQ(error_of([] { parse_daemon_settings("track_timeout = 5\n"); }),
            "line 1: track_timeout: \"5\" is not a whole number from 10 to 86400");
}

TEST(DaemonSettings, FleetSettings) {
  const auto s = parse_daemon_settings(
      "etcd_endpoints = https://10.0.0.1:2379,https://10.0.0.2:2379\netcd_prefix = /lb/prod/\n"
      "etcd_ca_file = /etc/hostlb/etcd-ca.pem\netcd_cert_file = /etc/hostlb/etcd.pem\n"
      "etcd_key_file = /etc/hostlb/etcd-key.pem\n");
  EXPECT_EQ(s.etcd_endpoints, "https://10.0.0.1:2379,https://10.0.0.2:2379");
  EXPECT_EQ(s.etcd_prefix, "/lb/prod/");
  EXPECT_EQ(s.etcd_ca_file, "/etc/hostlb/etcd-ca.pem");
  EXPECT_EQ(s.etcd_cert_file, "/etc/hostlb/etcd.pem");
  EXPECT_EQ(s.etcd_key_file, "/etc/hostlb/etcd-key.pem");
  EXPECT_EQ(error_of([] { parse_daemon_settings("etcd_endpoints = 10.0.0.1:2379\n"); }),
            "line 1: etcd_endpoints: etcd endpoint \"10.0.0.1:2379\" must be http://HOST:PORT or "
            "https://HOST:PORT");
  EXPECT_EQ(error_of([] { parse_daemon_settings("etcd_prefix = lb\n"); }),
            "line 1: etcd_prefix: must start with '/'");
  EXPECT_EQ(error_of([] { parse_daemon_settings("etcd_ca_file = ca.pem\n"); }),
            "line 1: etcd_ca_file: \"ca.pem\" is not an absolute path");
}

TEST(DaemonSettings, ErrorsNameTheLineAndKey) {
  EXPECT_EQ(error_of([] { parse_daemon_settings("socket = /a\nsokcet = /b\n"); }),
            "line 2: sokcet: is not a known setting");
  EXPECT_EQ(error_of([] { parse_daemon_settings("refuse_seconds = 9999999\n"); }),
            "line 1: refuse_seconds: \"9999999\" is not a whole number from 0 to 86400");
  EXPECT_EQ(error_of([] { parse_daemon_settings("state_dir = relative/dir\n"); }),
            "line 1: state_dir: \"relative/dir\" is not an absolute path");
  EXPECT_EQ(error_of([] { parse_daemon_settings("refuse_policy = maybe\n"); }),
            "line 1: refuse_policy: \"maybe\" is not one of reject, drop");
  EXPECT_EQ(error_of([] { parse_daemon_settings("log_level = info\nlog_level = debug\n"); }),
            "line 2: log_level: is set twice");
  EXPECT_EQ(error_of([] { parse_daemon_settings("just words\n"); }),
            "line 1: \"just words\" is not of the form key = value");
  EXPECT_EQ(error_of([] { parse_daemon_settings("default_bridge = br;0\n"); }),
            "line 1: default_bridge: \"br;0\" is not a valid interface name");
}

const std::string kBackends = R"({"version":1,"backends":[
  {"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}]})";
const std::string kServices = R"({"version":1,"services":[
  {"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}]})";

TEST(MergeStateFiles, AServiceMayUseABackendOfAnotherFile) {
  const State s =
      merge_state_files({{"00-backends.json", kBackends}, {"10-web.json", kServices}}, {});
  ASSERT_EQ(s.backends.size(), 1u);
  ASSERT_EQ(s.services.size(), 1u);
  EXPECT_EQ(s.services[0].backends[0].name, "web-1");
}

TEST(MergeStateFiles, ConflictsNameBothFiles) {
  EXPECT_EQ(error_of([] {
              merge_state_files({{"00-backends.json", kBackends},
                                 {"10-web.json", kServices},
                                 {"20-web-again.json", kServices}},
                                {});
            }),
            "20-web-again.json: services[0]: duplicate service 203.0.113.10:80/tcp (also "
            "10-web.json: services[0])");
  EXPECT_EQ(error_of([] {
              merge_state_files({{"a.json", kBackends}, {"b.json", kBackends}}, {});
            }),
            "b.json: backends[0].name: duplicate backend name \"web-1\" (also a.json: "
            "backends[0])");
}

TEST(MergeStateFiles, ErrorsInsideAFileNameIt) {
  EXPECT_EQ(error_of([] {
              merge_state_files({{"10-web.json", kServices}}, {});
            }),
            "10-web.json: services[0].backends[0].name: unknown backend \"web-1\"");
  EXPECT_EQ(error_of([] {
              merge_state_files({{"x.json", "{\"version\":1,"}}, {});
            }).rfind("x.json: invalid JSON", 0),
            0u);
  EXPECT_EQ(error_of([] {
              merge_state_files({{"x.json", R"({"version":2})"}}, {});
            }),
            "x.json: version: must be 1");
  EXPECT_EQ(error_of([] {
              merge_state_files({{"x.json", R"({"version":1,"extra":[]})"}}, {});
            }),
            "x.json: extra: is not a known member");
}

}  // namespace
}  // namespace hostlb
