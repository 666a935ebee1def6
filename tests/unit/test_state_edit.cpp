#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hostlb/policies/state_edit.h"

namespace hostlb {
namespace {

using nlohmann::json;

State base() {
  return parse_state_document(R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"},
                {"name":"web-2","mac":"02:00:00:00:01:12","ipv4":"198.18.1.12","ipv6":"2001:db8:1::12","bridge":"br0"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080},{"name":"web-2","port":8080}]},
                {"vip":"203.0.113.20","port":80,"protocol":"tcp","backends":[{"name":"web-2","port":8080}]}]})");
}

ServiceKey key(const char* text) { return *parse_service_key(text); }

void expect_error(const std::function<void()>& f, const std::string& path,
                  const std::string& reason) {
  try {
    f();
    FAIL() << "no error";
  } catch (const DocumentError& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_EQ(e.reason(), reason);
  }
}

TEST(StateEdit, AddAndRemoveBackend) {
  Backend b{
      "web-3", *MacAddress::parse("02:00:00:00:01:13"), IpAddress::parse("198.18.1.13"), {}, "br0"};
  State added = add_backend(base(), b);
  EXPECT_EQ(added.backends.size(), 3u);
  expect_error([&] { add_backend(added, b); }, "name", "backend \"web-3\" already exists");

  // Removing a backend detaches it from every service.
  State removed = remove_backend(base(), "web-2");
  EXPECT_EQ(removed.backends.size(), 1u);
  EXPECT_EQ(removed.services[0].backends, (std::vector<BackendRef>{{"web-1", 8080}}));
  EXPECT_TRUE(removed.services[1].backends.empty());
  expect_error([&] { remove_backend(base(), "web-9"); }, "name", "no backend \"web-9\"");
}

TEST(StateEdit, AddAndRemoveService) {
  State added = add_service(base(), {key("203.0.113.30:53/udp"), {{"web-1", 5353}}});
  EXPECT_EQ(added.services.size(), 3u);
  expect_error(
      [&] {
        add_service(added, {key("203.0.113.30:53/udp"), {}});
      },
      "service", "service 203.0.113.30:53/udp already exists");
  EXPECT_EQ(remove_service(base(), key("203.0.113.20:80/tcp")).services.size(), 1u);
  expect_error([&] { remove_service(base(), key("203.0.113.99:80/tcp")); }, "service",
               "no service 203.0.113.99:80/tcp");
}

TEST(StateEdit, AttachAddsRepointsOrChangesNothing) {
  State attached = attach_backend(base(), key("203.0.113.20:80/tcp"), {"web-1", 9000});
  EXPECT_EQ(attached.services[1].backends.size(), 2u);
  State repointed = attach_backend(attached, key("203.0.113.20:80/tcp"), {"web-1", 9001});
  EXPECT_EQ(repointed.services[1].backends.size(), 2u);
  EXPECT_EQ(repointed.services[1].backends[1].port, 9001);
  EXPECT_EQ(attach_backend(repointed, key("203.0.113.20:80/tcp"), {"web-1", 9001}), repointed);
  expect_error(
      [&] {
        attach_backend(base(), key("203.0.113.99:80/tcp"), {"web-1", 1});
      },
      "service", "no service 203.0.113.99:80/tcp");
  expect_error(
      [&] {
        attach_backend(base(), key("203.0.113.20:80/tcp"), {"web-9", 1});
      },
      "backend", "no backend \"web-9\"");
}

TEST(StateEdit, Detach) {
  State detached = detach_backend(base(), key("203.0.113.10:80/tcp"), "web-2");
  EXPECT_EQ(detached.services[0].backends, (std::vector<BackendRef>{{"web-1", 8080}}));
  expect_error([&] { detach_backend(detached, key("203.0.113.10:80/tcp"), "web-2"); }, "backend",
               "backend \"web-2\" does not serve 203.0.113.10:80/tcp");
}

TEST(StateEdit, ValidationOfTheWholeResultStillApplies) {
  // web-1 has no IPv6 address: it cannot serve an IPv6 VIP.
  State bad = add_service(base(), {key("[2001:db8:f00::10]:443/tcp"), {{"web-1", 8443}}});
  expect_error([&] { validate_state(bad); }, "services[2].backends[0].name",
               "backend \"web-1\" has no IPv6 address for VIP 2001:db8:f00::10");
  Backend dup_mac{
      "web-3", *MacAddress::parse("02:00:00:00:01:11"), IpAddress::parse("198.18.1.13"), {}, "br0"};
  expect_error([&] { validate_state(add_backend(base(), dup_mac)); }, "backends[2].mac",
               "MAC 02:00:00:00:01:11 is already used by backends[0]");
  EXPECT_NO_THROW(validate_state(base()));
}

TEST(StateEdit, ParamParsersNameTheParameter) {
  expect_error(
      [] {
        parse_backend_object(json{{"name", "a"}, {"mac", "x"}}, "", {});
      },
      "mac", "\"x\" is not a MAC address");
  expect_error(
      [] {
        parse_backend_ref(json{{"name", "a"}, {"port", 0}}, "backends[1]");
      },
      "backends[1].port", "0 is not a port (1-65535)");
  expect_error([] { parse_service_key_param(json("203.0.113.1:80"), "service"); }, "service",
               "\"203.0.113.1:80\": expected VIP:PORT/PROTO (missing /tcp or /udp)");
  expect_error([] { parse_service_key_param(json(5), "service"); }, "service",
               "must be a string, not an integer");
}

TEST(StateEdit, DescribeChanges) {
  State after = remove_backend(base(), "web-1");
  after = add_service(after, {key("203.0.113.30:53/udp"), {{"web-2", 5353}}});
  after = attach_backend(after, key("203.0.113.20:80/tcp"), {"web-2", 9090});
  EXPECT_EQ(describe_changes(base(), after),
            (std::vector<std::string>{
                "- backend web-1 mac 02:00:00:00:01:11 ipv4 198.18.1.11 bridge br0",
                "+ service 203.0.113.30:53/udp",
                "- binding 203.0.113.10:80/tcp -> web-1:8080",
                "- binding 203.0.113.20:80/tcp -> web-2:8080",
                "+ binding 203.0.113.20:80/tcp -> web-2:9090",
                "+ binding 203.0.113.30:53/udp -> web-2:5353",
            }));
  EXPECT_TRUE(describe_changes(base(), base()).empty());
}

}  // namespace
}  // namespace hostlb
