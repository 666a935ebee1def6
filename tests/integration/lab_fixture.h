// What the integration tests share: documents for the lab's backends, a
// fixture that owns a lab and starts hostlbd in it, and readers of kernel
// state.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lab.h"

namespace hostlb::lab {

inline const std::string kVip10 = "203.0.113.10";
inline const std::string kVip20 = "203.0.113.20";
inline const std::string kVip6 = "2001:db8:f00::10";

inline std::string backend_json(const VmInfo& vm, const std::string& name) {
  return R"({"name":")" + name + R"(","mac":")" + vm.mac + R"(","ipv4":")" + vm.ipv4 +
         R"(","ipv6":")" + vm.ipv6 + R"(","bridge":"br0"})";
}

inline std::string service_json(const std::string& vip, int port, const std::string& proto,
                                const std::vector<std::pair<std::string, int>>& backends) {
  std::string refs;
  for (const auto& [name, p] : backends) {
    if (!refs.empty()) refs += ",";
    refs += R"({"name":")" + name + R"(","port":)" + std::to_string(p) + "}";
  }
  return R"({"vip":")" + vip + R"(","port":)" + std::to_string(port) + R"(,"protocol":")" + proto +
         R"(","backends":[)" + refs + "]}";
}

inline std::string document(const std::vector<std::string>& services) {
  std::string joined;
  for (const auto& s : services) joined += (joined.empty() ? "" : ",") + s;
  return R"({"version":1,"backends":[)" + backend_json(kVm1, "web-1") + "," +
         backend_json(kVm2, "web-2") + R"(],"services":[)" + joined + "]}";
}

// A listing without the admission meters' elements: they are traffic's
// state (one for each service that had new connections, with its expiry),
// not what hostlbd configured.
inline std::string without_meter_state(const std::string& listing) {
  static const std::regex meter_elements("\t*elements = \\{[^}]*limit rate over[^}]*\\}\n");
  return std::regex_replace(listing, meter_elements, "");
}

class LabTest : public ::testing::Test {
 protected:
  std::unique_ptr<Hostlbd> start_hostlbd(const std::string& doc,
                                         std::vector<std::string> extra = {}) {
    const std::string config = write_lab_file(lab_, "config.json", doc);
    std::vector<std::string> args = {"--config",    config,
                                     "--state-dir", lab_.dir() + "/state",
                                     "--socket",    lab_.dir() + "/hostlbd.sock",
                                     "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto daemon = std::make_unique<Hostlbd>(lab_, args);
    EXPECT_TRUE(daemon->start()) << daemon->log();
    return daemon;
  }

  std::string ruleset() { return without_meter_state(lab_.in("hv", "nft list ruleset").output); }
  std::string socket_path() const { return lab_.dir() + "/hostlbd.sock"; }
  // hostlbctl against this lab's daemon (a Unix socket: reachable from any
  // network namespace).
  CommandResult ctl(const std::string& args) {
    return sh(std::string(HOSTLBCTL_PATH) + " --socket " + socket_path() + " " + args);
  }
  std::string conntrack(const std::string& filter) {
    return lab_.in("hv", "conntrack -L " + filter).output;
  }

  Lab lab_;
};

// Extracts "key=value" fields of the first conntrack line containing `needle`.
inline std::string ct_field(const std::string& listing, const std::string& needle,
                            const std::string& key, int occurrence = 0) {
  std::istringstream lines(listing);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find(needle) == std::string::npos) continue;
    size_t pos = 0;
    for (int i = 0; i <= occurrence; ++i) {
      pos = line.find(" " + key + "=", pos);
      if (pos == std::string::npos) return "";
      pos += key.size() + 2;
    }
    return line.substr(pos, line.find(' ', pos) - pos);
  }
  return "";
}

}  // namespace hostlb::lab
