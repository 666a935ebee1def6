#include <gtest/gtest.h>

#include "hostlb/policies/address.h"
#include "hostlb/policies/model.h"

namespace hostlb {
namespace {

TEST(MacAddress, ParsesAndPrintsLowerCase) {
  auto mac = MacAddress::parse("02:00:00:00:01:AA");
  ASSERT_TRUE(mac);
  EXPECT_EQ(mac->str(), "02:00:00:00:01:aa");
  EXPECT_FALSE(mac->is_multicast());
  EXPECT_FALSE(mac->is_zero());
}

TEST(MacAddress, RejectsMalformed) {
  for (const char* text :
       {"", "02:00:00:00:01", "02:00:00:00:01:zz", "02-00-00-00-01-11", "02:00:00:00:01:111",
        " 02:00:00:00:01:11", "0200.0000.0111", "02:00:00:00:01:1"}) {
    EXPECT_FALSE(MacAddress::parse(text)) << text;
  }
}

TEST(MacAddress, KnowsMulticastAndZero) {
  EXPECT_TRUE(MacAddress::parse("01:00:5e:00:00:01")->is_multicast());
  EXPECT_TRUE(MacAddress::parse("ff:ff:ff:ff:ff:ff")->is_multicast());
  EXPECT_TRUE(MacAddress::parse("00:00:00:00:00:00")->is_zero());
}

TEST(IpAddress, ParsesBothFamiliesCanonically) {
  auto v4 = IpAddress::parse("203.0.113.10");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->is_v4());
  EXPECT_EQ(v4->str(), "203.0.113.10");
  auto v6 = IpAddress::parse("2001:0db8:0f00:0000::10");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->is_v6());
  EXPECT_EQ(v6->str(), "2001:db8:f00::10");
}

TEST(IpAddress, RejectsMalformed) {
  for (const char* text : {"", "203.0.113", "203.0.113.256", "203.0.113.10 ", "1.2.3.4.5",
                           "2001:db8::g", "2001:db8:::1", "203.0.113.10/32", "[2001:db8::1]"}) {
    EXPECT_FALSE(IpAddress::parse(text)) << text;
  }
  EXPECT_FALSE(IpAddress::parse_v4("2001:db8::1"));
  EXPECT_FALSE(IpAddress::parse_v6("198.18.1.11"));
}

TEST(IpAddress, UsableUnicast) {
  for (const char* text : {"198.18.1.11", "203.0.113.10", "2001:db8:1::11"})
    EXPECT_TRUE(IpAddress::parse(text)->is_usable_unicast()) << text;
  for (const char* text : {"0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.1.1",
                           "::", "::1", "ff02::1", "fe80::1", "::ffff:198.18.1.1"})
    EXPECT_FALSE(IpAddress::parse(text)->is_usable_unicast()) << text;
}

TEST(ServiceKey, ParsesIpv4AndIpv6Forms) {
  auto key = parse_service_key("203.0.113.10:80/tcp");
  ASSERT_TRUE(key);
  EXPECT_EQ(key->vip.str(), "203.0.113.10");
  EXPECT_EQ(key->port, 80);
  EXPECT_EQ(key->protocol, Protocol::kTcp);
  EXPECT_EQ(key->str(), "203.0.113.10:80/tcp");

  auto v6 = parse_service_key("[2001:db8:f00::10]:443/udp");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->str(), "[2001:db8:f00::10]:443/udp");
  EXPECT_EQ(v6->protocol, Protocol::kUdp);
}

TEST(ServiceKey, ExplainsEachKindOfError) {
  struct Case {
    const char* text;
    const char* reason;
  };
  for (const Case& c : {
           Case{"203.0.113.10:80", "expected VIP:PORT/PROTO (missing /tcp or /udp)"},
           Case{"203.0.113.10:80/sctp", "protocol must be tcp or udp"},
           Case{"203.0.113.10/tcp", "expected VIP:PORT/PROTO (missing :PORT)"},
           Case{"2001:db8::1:80/tcp", "an IPv6 VIP is written [ADDRESS]:PORT"},
           Case{"[2001:db8::1]80/tcp", "an IPv6 VIP is written [ADDRESS]:PORT"},
           Case{"203.0.113.999:80/tcp", "\"203.0.113.999\" is not an IP address"},
           Case{"[203.0.113.1]:80/tcp", "\"203.0.113.1\" is not an IP address"},
           Case{"224.0.0.1:80/tcp", "224.0.0.1 cannot be a VIP (not a unicast address)"},
           Case{"203.0.113.10:0/tcp", "port must be between 1 and 65535"},
           Case{"203.0.113.10:65536/tcp", "port must be between 1 and 65535"},
           Case{"203.0.113.10:+80/tcp", "\"+80\" is not a port number"},
           Case{"203.0.113.10:8x/tcp", "\"8x\" is not a port number"},
           Case{"203.0.113.10:/tcp", "\"\" is not a port number"},
       }) {
    std::string reason;
    EXPECT_FALSE(parse_service_key(c.text, &reason)) << c.text;
    EXPECT_EQ(reason, c.reason) << c.text;
  }
}

}  // namespace
}  // namespace hostlb

namespace hostlb {
namespace {

TEST(Endpoint, ParsesAndPrintsBothFamilies) {
  const auto v4 = parse_endpoint("198.18.0.5:40000");
  ASSERT_TRUE(v4);
  EXPECT_EQ(endpoint_str(v4->address, v4->port), "198.18.0.5:40000");
  const auto v6 = parse_endpoint("[2001:db8::5]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(endpoint_str(v6->address, v6->port), "[2001:db8::5]:443");
  std::string reason;
  EXPECT_FALSE(parse_endpoint("2001:db8::5:443", &reason));
  EXPECT_EQ(reason, "an IPv6 address is written [ADDRESS]:PORT");
  EXPECT_FALSE(parse_endpoint("198.18.0.5", &reason));
  EXPECT_EQ(reason, "expected ADDRESS:PORT (missing :PORT)");
  EXPECT_FALSE(parse_endpoint("198.18.0.5:0", &reason));
  // A service key is an endpoint and a protocol, with the VIP's own words.
  EXPECT_FALSE(parse_service_key("2001:db8::5:443/tcp", &reason));
  EXPECT_EQ(reason, "an IPv6 VIP is written [ADDRESS]:PORT");
}

}  // namespace
}  // namespace hostlb
