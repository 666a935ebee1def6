#include "hostlb/policies/config_files.h"

#include <charconv>
#include <map>
#include <regex>
#include <set>

#include "hostlb/policies/etcd_protocol.h"
#include "hostlb/policies/text.h"

namespace hostlb {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

uint32_t parse_number(std::string_view value, uint32_t low, uint32_t high,
                      const std::string& path) {
  uint32_t out = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || end != value.data() + value.size() || out < low || out > high)
    throw DocumentError(path, "\"" + printable(value) + "\" is not a whole number from " +
                                  std::to_string(low) + " to " + std::to_string(high));
  return out;
}

bool parse_bool(std::string_view value, const std::string& path) {
  if (value == "true" || value == "yes") return true;
  if (value == "false" || value == "no") return false;
  throw DocumentError(path, "\"" + printable(value) + "\" is not true or false");
}

std::string one_of(std::string_view value, std::initializer_list<std::string_view> allowed,
                   const std::string& path) {
  std::string list;
  for (auto a : allowed) {
    if (value == a) return std::string(value);
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw DocumentError(path, "\"" + printable(value) + "\" is not one of " + list);
}

std::string absolute_path(std::string_view value, const std::string& path) {
  if (value.empty() || value.front() != '/' || value.find('\0') != std::string_view::npos)
    throw DocumentError(path, "\"" + printable(value) + "\" is not an absolute path");
  return std::string(value);
}

}  // namespace

std::set<MacAddress> parse_mac_list(std::string_view text, const std::string& path) {
  std::set<MacAddress> out;
  std::string_view rest = text;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = trim(rest.substr(0, comma));
    const auto mac = MacAddress::parse(item);
    if (!mac) throw DocumentError(path, "\"" + printable(item) + "\" is not a MAC");
    out.insert(*mac);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return out;
}

DaemonSettings parse_daemon_settings(std::string_view text) {
  DaemonSettings out;
  std::set<std::string> seen;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++line_no;
    if (const size_t hash = line.find('#'); hash != std::string_view::npos)
      line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    const std::string where = "line " + std::to_string(line_no);
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      throw DocumentError(where, "\"" + printable(line) + "\" is not of the form key = value");
    const std::string key(trim(line.substr(0, eq)));
    const std::string_view value = trim(line.substr(eq + 1));
    const std::string path = where + ": " + printable(key);
    if (!seen.insert(key).second) throw DocumentError(path, "is set twice");
    if (value.empty()) throw DocumentError(path, "has no value");
    if (key == "config") {
      out.config = absolute_path(value, path);
    } else if (key == "services_dir") {
      out.services_dir = absolute_path(value, path);
    } else if (key == "socket") {
      out.socket = absolute_path(value, path);
    } else if (key == "socket_group") {
      if (!is_valid_backend_name(value)) throw DocumentError(path, "is not a valid group name");
      out.socket_group = std::string(value);
    } else if (key == "state_dir") {
      out.state_dir = absolute_path(value, path);
    } else if (key == "log_level") {
      out.log_level =
          one_of(value, {"trace", "debug", "info", "warn", "error", "critical", "off"}, path);
    } else if (key == "default_bridge") {
      if (!is_valid_interface_name(value))
        throw DocumentError(path, "\"" + printable(value) + "\" is not a valid interface name");
      out.default_bridge = std::string(value);
    } else if (key == "gateway_datapath") {
      out.gateway_datapath = one_of(value, {"bpf", "nft"}, path);
    } else if (key == "host_datapath") {
      out.host_datapath = one_of(value, {"nft", "bpf"}, path);
    } else if (key == "role") {
      out.role = one_of(value, {"host", "gateway"}, path);
    } else if (key == "client_interface" || key == "fabric_interface") {
      if (!is_valid_interface_name(value))
        throw DocumentError(path, "\"" + printable(value) + "\" is not a valid interface name");
      (key == "client_interface" ? out.client_interface : out.fabric_interface) =
          std::string(value);
    } else if (key == "gateway_mac") {
      if (!MacAddress::parse(value))
        throw DocumentError(path, "\"" + printable(value) + "\" is not a MAC address");
      out.gateway_mac = std::string(value);
    } else if (key == "host_name") {
      if (!is_valid_host_name(value))
        throw DocumentError(path, "\"" + printable(value) + "\" is not a valid host name");
      out.host_name = std::string(value);
    } else if (key == "ct_mark_mask") {
      out.ct_mark_mask = std::string(value);  // checked as a mark layout by the daemon
    } else if (key == "refuse_policy") {
      out.refuse_policy = one_of(value, {"reject", "drop"}, path);
    } else if (key == "track_timeout") {
      out.track_timeout = parse_number(value, 10, 86400, path);
    } else if (key == "track_size") {
      out.track_size = parse_number(value, 1024, 1u << 24, path);
    } else if (key == "chain_uplink") {
      if (!is_valid_interface_name(value))
        throw DocumentError(path, "\"" + printable(value) + "\" is not an interface name");
      out.chain_uplink = std::string(value);
    } else if (key == "chain_gateways") {
      parse_mac_list(value, path);
      out.chain_gateways = std::string(value);
    } else if (key == "chain_window") {
      out.chain_window = parse_number(value, 1, 86400, path);
    } else if (key == "drain_warmup") {
      out.drain_warmup = parse_number(value, 0, 86400, path);
    } else if (key == "refuse_seconds") {
      out.refuse_seconds = parse_number(value, 0, 86400, path);
    } else if (key == "embryonic_timeout") {
      out.embryonic_timeout = parse_number(value, 0, 600, path);
    } else if (key == "service_new_rate") {
      out.service_new_rate = parse_number(value, 0, 10000000, path);
    } else if (key == "service_new_burst") {
      out.service_new_burst = parse_number(value, 1, 10000000, path);
    } else if (key == "miss_policy") {
      out.miss_policy = one_of(value, {"reset", "drop", "accept"}, path);
    } else if (key == "metrics_file") {
      out.metrics_file = absolute_path(value, path);
    } else if (key == "metrics_interval") {
      out.metrics_interval = parse_number(value, 1, 3600, path);
    } else if (key == "event_queue_kb") {
      out.event_queue_kb = parse_number(value, 4, 1u << 20, path);
    } else if (key == "manage_sysctls") {
      out.manage_sysctls = parse_bool(value, path);
    } else if (key == "tracking") {
      out.tracking = parse_bool(value, path);
    } else if (key == "health_source_ipv4" || key == "health_source_ipv6") {
      const bool v4 = key == "health_source_ipv4";
      const auto address = v4 ? IpAddress::parse_v4(value) : IpAddress::parse_v6(value);
      if (!address || !address->is_usable_unicast())
        throw DocumentError(path, "\"" + printable(value) + "\" is not a unicast " +
                                      (v4 ? "IPv4" : "IPv6") + " address");
      (v4 ? out.health_source_ipv4 : out.health_source_ipv6) = address->str();
    } else if (key == "etcd_endpoints") {
      try {
        etcd::parse_endpoints(std::string(value));
      } catch (const std::invalid_argument& e) {
        throw DocumentError(path, e.what());
      }
      out.etcd_endpoints = std::string(value);
    } else if (key == "etcd_prefix") {
      if (value.front() != '/') throw DocumentError(path, "must start with '/'");
      out.etcd_prefix = std::string(value);
    } else if (key == "etcd_ca_file") {
      out.etcd_ca_file = absolute_path(value, path);
    } else if (key == "etcd_cert_file") {
      out.etcd_cert_file = absolute_path(value, path);
    } else if (key == "etcd_key_file") {
      out.etcd_key_file = absolute_path(value, path);
    } else {
      throw DocumentError(path, "is not a known setting");
    }
  }
  return out;
}

State merge_state_files(const std::vector<SourceFile>& files, const DocumentOptions& options) {
  // One document of all files' elements, and where each element came from.
  nlohmann::json merged = {{"version", kStateDocumentVersion},
                           {"backends", nlohmann::json::array()},
                           {"services", nlohmann::json::array()}};
  std::map<std::string, std::vector<std::pair<size_t, size_t>>> origin;  // list -> (file, index)
  for (size_t f = 0; f < files.size(); ++f) {
    nlohmann::json doc;
    try {
      doc = parse_json_strict(files[f].text);
    } catch (const DocumentError& e) {
      throw DocumentError(files[f].name, e.reason());
    }
    if (!doc.is_object()) throw DocumentError(files[f].name, "is not a JSON object");
    for (const auto& [key, value] : doc.items()) {
      if (key != "version" && key != "backends" && key != "services")
        throw DocumentError(files[f].name + ": " + printable(key), "is not a known member");
    }
    if (!doc.contains("version") || doc["version"] != kStateDocumentVersion)
      throw DocumentError(files[f].name + ": version",
                          "must be " + std::to_string(kStateDocumentVersion));
    for (const char* list : {"backends", "services"}) {
      if (!doc.contains(list)) continue;
      if (!doc[list].is_array())
        throw DocumentError(files[f].name + ": " + list, "must be an array");
      for (size_t i = 0; i < doc[list].size(); ++i) {
        merged[list].push_back(std::move(doc[list][i]));
        origin[list].emplace_back(f, i);
      }
    }
  }
  try {
    return state_from_json(merged, options);
  } catch (const DocumentError& e) {
    // Paths and messages name elements of the merged document; name the
    // file and the element's place in it instead.
    static const std::regex element_ref(R"((backends|services)\[(\d+)\])");
    auto locate = [&](const std::string& text, bool with_file) {
      std::string out;
      auto begin = std::sregex_iterator(text.begin(), text.end(), element_ref);
      size_t last = 0;
      for (auto it = begin; it != std::sregex_iterator(); ++it) {
        const auto& m = *it;
        const auto& list = origin[m[1].str()];
        const size_t index = std::stoul(m[2].str());
        out += text.substr(last, static_cast<size_t>(m.position()) - last);
        if (index < list.size()) {
          const auto& [file, local] = list[index];
          out += (with_file ? files[file].name + ": " : "") + m[1].str() + "[" +
                 std::to_string(local) + "]";
        } else {
          out += m.str();
        }
        last = static_cast<size_t>(m.position() + m.length());
      }
      return out + text.substr(last);
    };
    std::string path = locate(e.path(), true);
    if (path.empty()) path = files.empty() ? "" : files.front().name;
    throw DocumentError(path, locate(e.reason(), true));
  }
}

}  // namespace hostlb
