#include "hostlb/policies/state_document.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "hostlb/policies/selection.h"
#include "hostlb/policies/text.h"

namespace hostlb {
namespace {

using nlohmann::json;

std::string shown(const json& value) {
  // dump() escapes control characters and replaces invalid UTF-8, so the
  // message is always printable whatever the input held.
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  constexpr size_t kMax = 80;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

std::string type_name(const json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number_float()) return "a number with a fraction";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_null()) return "null";
  if (value.is_array()) return "an array";
  return "an object";
}

std::string member(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string element(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

void require_object(const json& value, const std::string& path,
                    std::initializer_list<std::string_view> allowed) {
  if (!value.is_object())
    throw DocumentError(path.empty() ? "document" : path,
                        "must be an object, not " + type_name(value));
  for (const auto& [key, unused] : value.items()) {
    bool known = false;
    for (auto name : allowed) known = known || key == name;
    if (!known) throw DocumentError(member(path, key), "unknown field");
  }
}

const std::string& require_string(const json& value, const std::string& path) {
  if (!value.is_string()) throw DocumentError(path, "must be a string, not " + type_name(value));
  return value.get_ref<const std::string&>();
}

uint16_t require_port(const json& value, const std::string& path) {
  if (!value.is_number_integer())
    throw DocumentError(path, "must be an integer port number, not " + type_name(value));
  if (value.is_number_unsigned()) {
    const auto port = value.get<uint64_t>();
    if (port >= 1 && port <= 65535) return static_cast<uint16_t>(port);
  }
  throw DocumentError(path, shown(value) + " is not a port (1-65535)");
}

uint32_t require_whole_number(const json& value, const std::string& path, uint32_t min,
                              uint32_t max) {
  if (!value.is_number_integer())
    throw DocumentError(path, "must be a whole number, not " + type_name(value));
  if (value.is_number_unsigned()) {
    const auto n = value.get<uint64_t>();
    if (n >= min && n <= max) return static_cast<uint32_t>(n);
  }
  throw DocumentError(path, shown(value) + " is not a whole number from " + std::to_string(min) +
                                " to " + std::to_string(max));
}

const json* optional_member(const json& object, std::string_view key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const json& required_member(const json& object, const std::string& path, std::string_view key) {
  const json* value = optional_member(object, key);
  if (value == nullptr) throw DocumentError(member(path, key), "is required");
  return *value;
}

IpAddress parse_host_address(const json& value, const std::string& path, IpFamily family) {
  const std::string& text = require_string(value, path);
  auto addr = family == IpFamily::kV4 ? IpAddress::parse_v4(text) : IpAddress::parse_v6(text);
  if (!addr)
    throw DocumentError(
        path, shown(value) + " is not an " + std::string(family_name(family)) + " address");
  if (!addr->is_usable_unicast())
    throw DocumentError(path, addr->str() + " is not a usable unicast address");
  return *addr;
}

}  // namespace

namespace {

// Seconds as a JSON number (whole or not, 0.1 to 3600), in milliseconds.
uint32_t require_seconds(const json& value, const std::string& path) {
  if (!value.is_number())
    throw DocumentError(path, "must be a number of seconds, not " + type_name(value));
  const double ms = value.get<double>() * 1000.0;
  if (!(ms >= 99.5 && ms <= 3600.0 * 1000 + 0.5))
    throw DocumentError(path, shown(value) + " is not a number of seconds from 0.1 to 3600");
  return static_cast<uint32_t>(std::lround(ms));
}

// A UDP service takes a udp check; a TCP service a tcp or http one.
void require_check_fits(HealthKind kind, Protocol protocol, const std::string& path) {
  const bool fits =
      protocol == Protocol::kUdp ? kind == HealthKind::kUdp : kind != HealthKind::kUdp;
  if (!fits)
    throw DocumentError(path, "a " + std::string(protocol_name(protocol)) +
                                  " service cannot have a " + std::string(health_kind_name(kind)) +
                                  " check");
}

bool is_http_path(std::string_view path) {
  if (path.empty() || path.front() != '/' || path.size() > 1024) return false;
  for (char c : path)
    if (c <= ' ' || c > '~') return false;
  return true;
}

}  // namespace

HealthCheck parse_health_check(const json& value, const std::string& path, Protocol protocol) {
  require_object(
      value, path,
      {"kind", "interval", "timeout", "rise", "fall", "path", "status", "start", "established"});
  HealthCheck check;
  check.kind = protocol == Protocol::kTcp ? HealthKind::kTcp : HealthKind::kUdp;
  if (const json* kind = optional_member(value, "kind")) {
    const auto kind_path = member(path, "kind");
    auto parsed = parse_health_kind(require_string(*kind, kind_path));
    if (!parsed) throw DocumentError(kind_path, shown(*kind) + " is not tcp, http or udp");
    require_check_fits(*parsed, protocol, kind_path);
    check.kind = *parsed;
  }
  if (const json* interval = optional_member(value, "interval"))
    check.interval_ms = require_seconds(*interval, member(path, "interval"));
  if (const json* timeout = optional_member(value, "timeout"))
    check.timeout_ms = require_seconds(*timeout, member(path, "timeout"));
  else
    check.timeout_ms = std::min(check.timeout_ms, check.interval_ms);
  if (check.timeout_ms > check.interval_ms)
    throw DocumentError(member(path, "timeout"),
                        "must not be longer than the interval (one probe at a time)");
  if (const json* rise = optional_member(value, "rise"))
    check.rise = require_whole_number(*rise, member(path, "rise"), 1, 100);
  if (const json* fall = optional_member(value, "fall"))
    check.fall = require_whole_number(*fall, member(path, "fall"), 1, 100);
  const json* http_path = optional_member(value, "path");
  const json* status = optional_member(value, "status");
  if (check.kind != HealthKind::kHttp) {
    if (http_path) throw DocumentError(member(path, "path"), "is only for http checks");
    if (status) throw DocumentError(member(path, "status"), "is only for http checks");
  }
  if (http_path) {
    const auto path_path = member(path, "path");
    check.path = require_string(*http_path, path_path);
    if (!is_http_path(check.path))
      throw DocumentError(path_path, shown(*http_path) +
                                         " is not an HTTP path (starting with '/', printable, "
                                         "no spaces, at most 1024 characters)");
  }
  if (status) {
    const auto status_path = member(path, "status");
    if (status->is_number_integer()) {
      check.status_min = check.status_max =
          static_cast<uint16_t>(require_whole_number(*status, status_path, 100, 599));
    } else {
      const std::string& text = require_string(*status, status_path);
      unsigned lo = 0, hi = 0;
      char tail = 0;
      const int n = std::sscanf(text.c_str(), "%3u-%3u%c", &lo, &hi, &tail);
      if (n == 1 && text.size() == 3) hi = lo;
      if (!((n == 2 && text.size() == 7) || (n == 1 && text.size() == 3)) || lo < 100 || hi > 599 ||
          lo > hi)
        throw DocumentError(status_path, shown(*status) +
                                             " is not a status or range of statuses (\"200\", "
                                             "\"200-399\") from 100 to 599");
      check.status_min = static_cast<uint16_t>(lo);
      check.status_max = static_cast<uint16_t>(hi);
    }
  }
  if (const json* start = optional_member(value, "start")) {
    const auto start_path = member(path, "start");
    const std::string& text = require_string(*start, start_path);
    if (text != "up" && text != "down")
      throw DocumentError(start_path, shown(*start) + " is not up or down");
    check.start_up = text == "up";
  }
  if (const json* established = optional_member(value, "established")) {
    const auto established_path = member(path, "established");
    const std::string& text = require_string(*established, established_path);
    if (text != "keep" && text != "flush")
      throw DocumentError(established_path, shown(*established) + " is not keep or flush");
    check.flush_on_down = text == "flush";
  }
  return check;
}

void check_health_check(const HealthCheck& check, const std::string& path, Protocol protocol) {
  require_check_fits(check.kind, protocol, member(path, "kind"));
  if (check.interval_ms < 100 || check.interval_ms > 3600 * 1000)
    throw DocumentError(member(path, "interval"), "is not a number of seconds from 0.1 to 3600");
  if (check.timeout_ms < 100 || check.timeout_ms > check.interval_ms)
    throw DocumentError(member(path, "timeout"),
                        "must be from 0.1 seconds to the interval (one probe at a time)");
  if (check.rise < 1 || check.rise > 100)
    throw DocumentError(member(path, "rise"), "is not a whole number from 1 to 100");
  if (check.fall < 1 || check.fall > 100)
    throw DocumentError(member(path, "fall"), "is not a whole number from 1 to 100");
  if (!is_http_path(check.path)) throw DocumentError(member(path, "path"), "is not an HTTP path");
  if (check.status_min < 100 || check.status_max > 599 || check.status_min > check.status_max)
    throw DocumentError(member(path, "status"), "is not a range of statuses from 100 to 599");
}

Backend parse_backend_object(const json& value, const std::string& path,
                             const DocumentOptions& options) {
  require_object(value, path, {"name", "mac", "ipv4", "ipv6", "bridge", "host"});
  Backend backend;

  const auto name_path = member(path, "name");
  backend.name = require_string(required_member(value, path, "name"), name_path);
  if (!is_valid_backend_name(backend.name))
    throw DocumentError(name_path, shown(backend.name) +
                                       " is not a valid name (1-63 characters: letters, digits, "
                                       "'.', '_', '-'; starting with a letter or digit)");

  const auto mac_path = member(path, "mac");
  const json& mac_value = required_member(value, path, "mac");
  auto mac = MacAddress::parse(require_string(mac_value, mac_path));
  if (!mac) throw DocumentError(mac_path, shown(mac_value) + " is not a MAC address");
  if (mac->is_multicast() || mac->is_zero())
    throw DocumentError(mac_path, mac->str() + " is not a unicast MAC address");
  backend.mac = *mac;

  if (const json* v4 = optional_member(value, "ipv4"))
    backend.ipv4 = parse_host_address(*v4, member(path, "ipv4"), IpFamily::kV4);
  if (const json* v6 = optional_member(value, "ipv6"))
    backend.ipv6 = parse_host_address(*v6, member(path, "ipv6"), IpFamily::kV6);
  if (!backend.ipv4 && !backend.ipv6)
    throw DocumentError(path, "needs an \"ipv4\" or an \"ipv6\" address (or both)");

  const auto bridge_path = member(path, "bridge");
  if (const json* bridge = optional_member(value, "bridge")) {
    backend.bridge = require_string(*bridge, bridge_path);
  } else if (!options.default_bridge.empty()) {
    backend.bridge = options.default_bridge;
  } else {
    throw DocumentError(bridge_path, "is required (no default bridge is configured)");
  }
  if (!is_valid_interface_name(backend.bridge))
    throw DocumentError(bridge_path, shown(backend.bridge) + " is not a valid interface name");
  if (const json* host = optional_member(value, "host")) {
    const auto host_path = member(path, "host");
    backend.host = require_string(*host, host_path);
    if (!is_valid_host_name(backend.host))
      throw DocumentError(host_path, shown(backend.host) +
                                         " is not a valid host name (1-63 characters: letters, "
                                         "digits, '.', '_', '-'; starting with a letter or digit)");
  }
  return backend;
}

BackendRef parse_backend_ref(const json& value, const std::string& path) {
  require_object(value, path, {"name", "port", "weight", "state"});
  BackendRef ref;
  ref.name = require_string(required_member(value, path, "name"), member(path, "name"));
  ref.port = require_port(required_member(value, path, "port"), member(path, "port"));
  if (const json* weight = optional_member(value, "weight"))
    ref.weight = require_whole_number(*weight, member(path, "weight"), 1, kMaxWeight);
  if (const json* state = optional_member(value, "state")) {
    const std::string state_path = member(path, "state");
    auto parsed = parse_binding_state(require_string(*state, state_path));
    if (!parsed)
      throw DocumentError(state_path,
                          shown(*state) + " is not a binding state (active, horizon or draining)");
    ref.state = *parsed;
  }
  return ref;
}

ServiceKey parse_service_key_param(const json& value, const std::string& path) {
  std::string reason;
  auto key = parse_service_key(require_string(value, path), &reason);
  if (!key) throw DocumentError(path, shown(value) + ": " + reason);
  return *key;
}

namespace {

Service parse_service(const json& value, const std::string& path, const State& state) {
  require_object(value, path, {"vip", "port", "protocol", "backends", "rows", "health"});
  Service service;

  const auto vip_path = member(path, "vip");
  const json& vip_value = required_member(value, path, "vip");
  auto vip = IpAddress::parse(require_string(vip_value, vip_path));
  if (!vip) throw DocumentError(vip_path, shown(vip_value) + " is not an IP address");
  if (!vip->is_usable_unicast())
    throw DocumentError(vip_path, vip->str() + " cannot be a VIP (not a unicast address)");
  service.key.vip = *vip;

  service.key.port = require_port(required_member(value, path, "port"), member(path, "port"));

  const auto proto_path = member(path, "protocol");
  const json& proto_value = required_member(value, path, "protocol");
  auto protocol = parse_protocol(require_string(proto_value, proto_path));
  if (!protocol) throw DocumentError(proto_path, shown(proto_value) + " is not tcp or udp");
  service.key.protocol = *protocol;

  if (const json* rows = optional_member(value, "rows"))
    service.rows = require_whole_number(*rows, member(path, "rows"), kMinRows, kMaxRows);

  if (const json* health = optional_member(value, "health"))
    service.health = parse_health_check(*health, member(path, "health"), service.key.protocol);

  for (const auto& backend : state.backends) {
    if (backend.address_for(vip->family()) == *vip)
      throw DocumentError(vip_path, vip->str() + " is the address of backend \"" + backend.name +
                                        "\"; a VIP must not be a backend's own address");
  }

  const auto refs_path = member(path, "backends");
  const json* refs = optional_member(value, "backends");
  if (refs == nullptr) return service;
  if (!refs->is_array())
    throw DocumentError(refs_path, "must be an array, not " + type_name(*refs));
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < refs->size(); ++i) {
    const auto ref_path = element(refs_path, i);
    BackendRef ref = parse_backend_ref((*refs)[i], ref_path);
    const auto name_path = member(ref_path, "name");
    const Backend* backend = state.find_backend(ref.name);
    if (backend == nullptr) throw DocumentError(name_path, "unknown backend " + shown(ref.name));
    if (!backend->address_for(vip->family()))
      throw DocumentError(name_path, "backend \"" + ref.name + "\" has no " +
                                         std::string(family_name(vip->family())) +
                                         " address for VIP " + vip->str());
    auto [it, inserted] = seen.emplace(ref.name, i);
    if (!inserted)
      throw DocumentError(name_path, "backend \"" + ref.name + "\" is listed twice (also " +
                                         element(refs_path, it->second) + ")");
    service.backends.push_back(std::move(ref));
  }
  return service;
}

}  // namespace

Service parse_service_object(const json& value, const std::string& path, const State& state) {
  return parse_service(value, path, state);
}

namespace {

// Builds the document tree like nlohmann's own parser, but refuses a key that
// appears twice in one object (nlohmann would keep the last silently). A SAX
// handler rather than a parse callback: the callback parser is several
// times slower on large documents.
class StrictTreeBuilder {
 public:
  explicit StrictTreeBuilder(json& root) : root_(root) {}

  bool null() { return put(nullptr); }
  bool boolean(bool value) { return put(value); }
  bool number_integer(json::number_integer_t value) { return put(value); }
  bool number_unsigned(json::number_unsigned_t value) { return put(value); }
  bool number_float(json::number_float_t value, const std::string&) { return put(value); }
  bool string(std::string& value) { return put(std::move(value)); }
  bool binary(json::binary_t& value) { return put(std::move(value)); }
  bool start_object(std::size_t) {
    put(json::object());
    stack_.push_back(last_);
    return true;
  }
  bool key(std::string& key) {
    json& object = *stack_.back();
    if (object.contains(key))
      throw DocumentError("", "invalid JSON: key \"" + key + "\" appears twice in one object");
    slot_ = &object[key];
    return true;
  }
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    put(json::array());
    stack_.push_back(last_);
    return true;
  }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& error) {
    if (const auto* parse = dynamic_cast<const json::parse_error*>(&error)) throw *parse;
    throw DocumentError("", std::string("invalid JSON: ") + error.what());
  }

 private:
  template <typename Value>
  bool put(Value&& value) {
    if (stack_.empty()) {
      root_ = json(std::forward<Value>(value));
      last_ = &root_;
    } else if (stack_.back()->is_array()) {
      stack_.back()->emplace_back(std::forward<Value>(value));
      last_ = &stack_.back()->back();
    } else {
      *slot_ = json(std::forward<Value>(value));
      last_ = slot_;
    }
    return true;
  }

  json& root_;
  std::vector<json*> stack_;
  json* slot_ = nullptr;
  json* last_ = nullptr;
};

}  // namespace

bool is_valid_backend_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name.front())) return false;
  for (char c : name)
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

bool is_valid_host_name(std::string_view name) { return is_valid_backend_name(name); }

bool is_valid_interface_name(std::string_view name) {
  // The kernel allows more (IFNAMSIZ-1 bytes, anything but '/', ':' and
  // white space); hostlb accepts the conservative subset every tool prints.
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

State parse_state_document(std::string_view text, const DocumentOptions& options) {
  if (auto state = parse_state_document_fast(text, options)) return std::move(*state);
  return state_from_json(parse_json_strict(text), options);
}

json parse_json_strict(std::string_view text) {
  json document;
  try {
    StrictTreeBuilder builder(document);
    json::sax_parse(text.begin(), text.end(), &builder);
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line
    // 1, column 2: ..."; keep the part after the library's tag.
    std::string detail = e.what();
    if (auto pos = detail.find("] "); pos != std::string::npos) detail = detail.substr(pos + 2);
    throw DocumentError("", "invalid JSON: " + printable(detail));
  }
  return document;
}

State state_from_json(const json& document, const DocumentOptions& options) {
  require_object(document, "", {"version", "backends", "services"});
  const json& version = required_member(document, "", "version");
  if (!version.is_number_integer() || version.get<int64_t>() != kStateDocumentVersion)
    throw DocumentError("version", shown(version) + " is not a supported version (expected " +
                                       std::to_string(kStateDocumentVersion) + ")");

  State state;
  std::map<std::string, size_t> names;
  std::map<MacAddress, size_t> macs;
  std::map<IpAddress, size_t> addresses;
  if (const json* backends = optional_member(document, "backends")) {
    if (!backends->is_array())
      throw DocumentError("backends", "must be an array, not " + type_name(*backends));
    for (size_t i = 0; i < backends->size(); ++i) {
      const auto path = element("backends", i);
      Backend backend = parse_backend_object((*backends)[i], path, options);
      if (auto [it, ok] = names.emplace(backend.name, i); !ok)
        throw DocumentError(member(path, "name"), "duplicate backend name \"" + backend.name +
                                                      "\" (also " +
                                                      element("backends", it->second) + ")");
      if (auto [it, ok] = macs.emplace(backend.mac, i); !ok)
        throw DocumentError(
            member(path, "mac"),
            "MAC " + backend.mac.str() + " is already used by " + element("backends", it->second));
      for (const auto* addr : {&backend.ipv4, &backend.ipv6}) {
        if (!*addr) continue;
        if (auto [it, ok] = addresses.emplace(**addr, i); !ok)
          throw DocumentError(member(path, (*addr)->is_v4() ? "ipv4" : "ipv6"),
                              "address " + (*addr)->str() + " is already used by " +
                                  element("backends", it->second));
      }
      state.backends.push_back(std::move(backend));
    }
  }

  std::map<ServiceKey, size_t> keys;
  if (const json* services = optional_member(document, "services")) {
    if (!services->is_array())
      throw DocumentError("services", "must be an array, not " + type_name(*services));
    for (size_t i = 0; i < services->size(); ++i) {
      const auto path = element("services", i);
      Service service = parse_service((*services)[i], path, state);
      if (auto [it, ok] = keys.emplace(service.key, i); !ok)
        throw DocumentError(path, "duplicate service " + service.key.str() + " (also " +
                                      element("services", it->second) + ")");
      state.services.push_back(std::move(service));
    }
  }
  return state;
}

nlohmann::ordered_json backend_to_json(const Backend& backend) {
  nlohmann::ordered_json object = {{"name", backend.name}, {"mac", backend.mac.str()}};
  if (backend.ipv4) object["ipv4"] = backend.ipv4->str();
  if (backend.ipv6) object["ipv6"] = backend.ipv6->str();
  object["bridge"] = backend.bridge;
  if (!backend.host.empty()) object["host"] = backend.host;
  return object;
}

nlohmann::ordered_json health_check_to_json(const HealthCheck& check) {
  auto seconds = [](uint32_t ms) -> nlohmann::ordered_json {
    if (ms % 1000 == 0) return ms / 1000;
    return ms / 1000.0;
  };
  nlohmann::ordered_json out = {{"kind", health_kind_name(check.kind)},
                                {"interval", seconds(check.interval_ms)},
                                {"timeout", seconds(check.timeout_ms)},
                                {"rise", check.rise},
                                {"fall", check.fall}};
  if (check.kind == HealthKind::kHttp) {
    out["path"] = check.path;
    out["status"] = check.status_min == check.status_max
                        ? std::to_string(check.status_min)
                        : std::to_string(check.status_min) + "-" + std::to_string(check.status_max);
  }
  out["start"] = check.start_up ? "up" : "down";
  out["established"] = check.flush_on_down ? "flush" : "keep";
  return out;
}

nlohmann::ordered_json service_to_json(const Service& service) {
  nlohmann::ordered_json refs = nlohmann::ordered_json::array();
  for (const auto& ref : service.backends) {
    nlohmann::ordered_json entry = {{"name", ref.name}, {"port", ref.port}};
    if (ref.weight != 1) entry["weight"] = ref.weight;
    if (ref.state != BindingState::kActive) entry["state"] = binding_state_name(ref.state);
    refs.push_back(std::move(entry));
  }
  nlohmann::ordered_json out = {{"vip", service.key.vip.str()},
                                {"port", service.key.port},
                                {"protocol", protocol_name(service.key.protocol)}};
  if (service.rows) out["rows"] = *service.rows;
  if (service.health) out["health"] = health_check_to_json(*service.health);
  out["backends"] = std::move(refs);
  return out;
}

nlohmann::ordered_json state_to_json(const State& state) {
  nlohmann::ordered_json backends = nlohmann::ordered_json::array();
  for (const auto& backend : state.backends) backends.push_back(backend_to_json(backend));
  nlohmann::ordered_json services = nlohmann::ordered_json::array();
  for (const auto& service : state.services) services.push_back(service_to_json(service));
  return {{"version", kStateDocumentVersion},
          {"backends", std::move(backends)},
          {"services", std::move(services)}};
}

}  // namespace hostlb
