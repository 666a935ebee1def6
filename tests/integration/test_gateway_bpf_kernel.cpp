// The gateway's BPF program against the model: the kernel runs the loaded
// program (BPF_PROG_TEST_RUN) on 10,000 random frames per family, and each
// must leave for the MAC of the backend that owns the row flow_row()
// computes, with the gateway's MAC as its source; frames that are not for
// a VIP key pass unchanged.
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "gateway_lab.h"
#include "hostlb/netlink/gateway.h"
#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"
#include "lab.h"

namespace hostlb {
namespace {

using lab::Lab;

const MacAddress kGatewayMac = *MacAddress::parse("02:00:00:00:0f:01");

State eight_backends() {
  std::string backends, refs;
  for (int b = 1; b <= 8; ++b) {
    const std::string n = std::to_string(b);
    backends += std::string(b > 1 ? "," : "") + R"({"name":"vm)" + n +
                R"(","mac":"02:00:00:00:02:0)" + n + R"(","ipv4":"198.18.3.)" + n +
                R"(","ipv6":"2001:db8:3::)" + n + R"(","bridge":"br0","host":"hv1"})";
    refs += std::string(b > 1 ? "," : "") + R"({"name":"vm)" + n + R"(","port":8080})";
  }
  return parse_state_document(R"({"version":1,"backends":[)" + backends + R"(],"services":[
      {"vip":"203.0.113.10","port":8080,"protocol":"tcp","backends":[)" +
                              refs + R"(]},
      {"vip":"203.0.113.10","port":53,"protocol":"udp","rows":1021,"backends":[)" +
                              refs + R"(]},
      {"vip":"2001:db8:f00::10","port":8080,"protocol":"tcp","backends":[)" +
                              refs + "]}]}");
}

// An Ethernet frame of one flow: IPv4 or IPv6, TCP (SYN) or UDP.
std::vector<uint8_t> frame(const Flow& flow, bool udp) {
  std::vector<uint8_t> out(14, 0);
  const bool v6 = !flow.vip.is_v4();
  out[12] = v6 ? 0x86 : 0x08;
  out[13] = v6 ? 0xdd : 0x00;
  const size_t l4_size = udp ? 8 : 20;
  const uint8_t proto = udp ? 17 : 6;
  const auto src = flow.client.bytes(), dst = flow.vip.bytes();
  if (v6) {
    std::array<uint8_t, 40> ip{};
    ip[0] = 0x60;
    ip[4] = 0;
    ip[5] = static_cast<uint8_t>(l4_size);
    ip[6] = proto;
    ip[7] = 64;
    std::memcpy(&ip[8], src.data(), 16);
    std::memcpy(&ip[24], dst.data(), 16);
    out.insert(out.end(), ip.begin(), ip.end());
  } else {
    std::array<uint8_t, 20> ip{};
    ip[0] = 0x45;
    ip[3] = static_cast<uint8_t>(20 + l4_size);
    ip[8] = 64;
    ip[9] = proto;
    std::memcpy(&ip[12], src.data(), 4);
    std::memcpy(&ip[16], dst.data(), 4);
    out.insert(out.end(), ip.begin(), ip.end());
  }
  std::vector<uint8_t> l4(l4_size, 0);
  l4[0] = static_cast<uint8_t>(flow.client_port >> 8);
  l4[1] = static_cast<uint8_t>(flow.client_port);
  l4[2] = static_cast<uint8_t>(flow.vip_port >> 8);
  l4[3] = static_cast<uint8_t>(flow.vip_port);
  if (!udp) {
    l4[12] = 5 << 4;
    l4[13] = 0x02;  // SYN
  }
  out.insert(out.end(), l4.begin(), l4.end());
  out.resize(std::max<size_t>(out.size(), 64), 0);
  return out;
}

struct ProgramRun {
  int verdict = -1;
  std::vector<uint8_t> out;
};

ProgramRun run_program(int program, const std::vector<uint8_t>& in) {
  ProgramRun r;
  r.out.resize(in.size() + 64);
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_out = r.out.data(),
              .data_size_in = static_cast<__u32>(in.size()),
              .data_size_out = static_cast<__u32>(r.out.size()), .repeat = 1);
  EXPECT_EQ(bpf_prog_test_run_opts(program, &opts), 0) << std::strerror(errno);
  r.verdict = static_cast<int>(opts.retval);
  r.out.resize(opts.data_size_out);
  return r;
}

MacAddress mac_at(const std::vector<uint8_t>& bytes, size_t at) {
  std::array<uint8_t, 6> mac{};
  std::memcpy(mac.data(), bytes.data() + at, 6);
  return MacAddress(mac);
}

TEST(GatewayBpfProgram, SendsEveryFlowToTheOwnerOfTheRowTheModelComputes) {
  Lab lab;
  lab::build_gateway(lab, "gw1", "cl1");
  const GatewayDatapath datapath = compile_gateway(eight_backends(), {});
  ASSERT_EQ(datapath.services.size(), 3u);
  GatewayConfig config{"cli0", "fab0", kGatewayMac};
  config.engine = GatewayEngine::kBpf;
  {
    Lab::Entered in_gw(lab, "gw1");
    make_gateway(config)->replace(datapath, config);
  }
  const std::string filters = lab.in("gw1", "tc filter show dev cli0 ingress").output;
  std::smatch id;
  ASSERT_TRUE(std::regex_search(filters, id, std::regex("hostlb_gw.* id ([0-9]+)"))) << filters;
  const int program = bpf_prog_get_fd_by_id(static_cast<__u32>(std::stoul(id[1])));
  ASSERT_GE(program, 0) << std::strerror(errno);

  std::mt19937 rng(20261206);
  for (const GatewayService& s : datapath.services) {
    const bool udp = s.key.protocol == Protocol::kUdp;
    std::map<std::string, int> per_backend;
    for (int i = 0; i < 10000; ++i) {
      Flow flow;
      if (s.key.vip.is_v4()) {
        const auto a = static_cast<uint32_t>(rng());
        flow.client =
            *IpAddress::parse(std::to_string(a >> 24) + "." + std::to_string(a >> 16 & 255) + "." +
                              std::to_string(a >> 8 & 255) + "." + std::to_string(a & 255));
      } else {
        char text[64];
        auto word = [&] { return static_cast<unsigned>(rng() & 0xffff); };
        std::snprintf(text, sizeof text, "2001:db8:%x:%x:%x:%x:%x:%x", word(), word(), word(),
                      word(), word(), word());
        flow.client = *IpAddress::parse(text);
      }
      flow.client_port = static_cast<uint16_t>(1 + rng() % 65535);
      flow.vip = s.key.vip;
      flow.vip_port = s.key.port;
      const uint32_t row = flow_row(flow, s.rows);
      const ProgramRun r = run_program(program, frame(flow, udp));
      ASSERT_EQ(r.verdict, TC_ACT_REDIRECT) << s.key.str() << " flow " << i;
      ASSERT_EQ(mac_at(r.out, 0), s.macs[s.owner[row]])
          << s.key.str() << " row " << row << " flow " << i;
      ASSERT_EQ(mac_at(r.out, 6), kGatewayMac);
      ++per_backend[s.backends[s.owner[row]]];
    }
    EXPECT_EQ(per_backend.size(), 8u) << s.key.str() << ": every backend takes flows";
  }

  // Not for a VIP key (another port, another protocol, another address):
  // passed on unchanged.
  for (auto [vip, port, udp] :
       {std::tuple{"203.0.113.10", 8081, false}, std::tuple{"203.0.113.10", 8080, true},
        std::tuple{"203.0.113.11", 8080, false}, std::tuple{"2001:db8:f00::11", 8080, false}}) {
    const IpAddress to = *IpAddress::parse(vip);
    const Flow flow{*IpAddress::parse(to.is_v4() ? lab::kClient : "2001:db8:2::1"), 40000, to,
                    static_cast<uint16_t>(port)};
    const std::vector<uint8_t> in = frame(flow, udp);
    const ProgramRun r = run_program(program, in);
    EXPECT_EQ(r.verdict, TC_ACT_OK) << vip << ":" << port;
    EXPECT_EQ(r.out, in) << vip << ":" << port;
  }
  // IPv6 extension headers before TCP (hop-by-hop, destination options,
  // a first fragment) are skipped as nft skips them; a later fragment has
  // no ports: it passes.
  const GatewayService& v6 = datapath.services[2];
  ASSERT_FALSE(v6.key.vip.is_v4());
  const Flow flow{*IpAddress::parse("2001:db8:2::1"), 40000, v6.key.vip, v6.key.port};
  const MacAddress owner = v6.macs[v6.owner[flow_row(flow, v6.rows)]];
  auto with_extensions = [&](const std::vector<std::pair<uint8_t, std::vector<uint8_t>>>& exts) {
    std::vector<uint8_t> plain = frame(flow, false);
    const size_t l4_at = 14 + 40;
    std::vector<uint8_t> out(plain.begin(), plain.begin() + l4_at);
    out[14 + 6] = exts.front().first;  // the IPv6 header's next header
    size_t length = 20;
    for (size_t i = 0; i < exts.size(); ++i) {
      std::vector<uint8_t> ext = exts[i].second;
      ext[0] = i + 1 < exts.size() ? exts[i + 1].first : 6;  // then TCP
      out.insert(out.end(), ext.begin(), ext.end());
      length += ext.size();
    }
    out[14 + 4] = 0;
    out[14 + 5] = static_cast<uint8_t>(length);
    out.insert(out.end(), plain.begin() + l4_at, plain.begin() + l4_at + 20);
    return out;
  };
  const std::vector<uint8_t> hop(8, 0), dest = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<uint8_t> first_fragment = {0, 0, 0x00, 0x01, 0, 0, 0, 7};
  const std::vector<uint8_t> later_fragment = {0, 0, 0x00, 0x09, 0, 0, 0, 7};  // offset 8
  for (const auto& exts : std::vector<std::vector<std::pair<uint8_t, std::vector<uint8_t>>>>{
           {{0, hop}}, {{0, hop}, {60, dest}}, {{44, first_fragment}}}) {
    const ProgramRun r = run_program(program, with_extensions(exts));
    EXPECT_EQ(r.verdict, TC_ACT_REDIRECT) << exts.size() << " extension headers";
    EXPECT_EQ(mac_at(r.out, 0), owner);
  }
  const std::vector<uint8_t> later = with_extensions({{44, later_fragment}});
  const ProgramRun r = run_program(program, later);
  EXPECT_EQ(r.verdict, TC_ACT_OK) << "a later fragment";
  EXPECT_EQ(r.out, later);
  ::close(program);
}

}  // namespace
}  // namespace hostlb
