#include "hostlb/policies/persisted_state.h"

#include <cstdint>
#include <nlohmann/json.hpp>

#include "hostlb/policies/state_document.h"

namespace hostlb {

nlohmann::json retired_to_json(const RetiredBinding& entry) {
  const Binding& b = entry.binding;
  return {
      {"service", b.key.service.str()},   {"backend", b.key.backend},          {"mac", b.mac.str()},
      {"target", b.target.str()},         {"target_port", b.target_port},      {"id", b.id},
      {"drain_until", entry.drain_until}, {"refuse_until", entry.refuse_until}};
}

RetiredBinding retired_from_json(const nlohmann::json& value, const std::string& path) {
  auto field = [&](const char* name) -> const nlohmann::json& {
    if (!value.is_object() || !value.contains(name))
      throw DocumentError(path + "." + name, "is required");
    return value[name];
  };
  try {
    RetiredBinding out;
    std::string reason;
    auto key = parse_service_key(field("service").get<std::string>(), &reason);
    if (!key) throw DocumentError(path + ".service", reason);
    auto mac = MacAddress::parse(field("mac").get<std::string>());
    if (!mac) throw DocumentError(path + ".mac", "is not a MAC address");
    auto target = IpAddress::parse(field("target").get<std::string>());
    if (!target) throw DocumentError(path + ".target", "is not an IP address");
    // A whole number in range: a float or a number too large would be
    // converted with undefined behaviour (found by fuzz_journal_record).
    auto whole = [&](const char* name, int64_t min, int64_t max) {
      const nlohmann::json& v = field(name);
      if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(max)) ||
          v.get<int64_t>() < min || v.get<int64_t>() > max)
        throw DocumentError(
            path + "." + name,
            "must be a whole number from " + std::to_string(min) + " to " + std::to_string(max));
      return v.get<int64_t>();
    };
    out.binding = {{*key, field("backend").get<std::string>()},
                   *mac,
                   *target,
                   static_cast<uint16_t>(whole("target_port", 0, 65535)),
                   static_cast<uint32_t>(whole("id", 0, UINT32_MAX))};
    out.drain_until = whole("drain_until", INT64_MIN, INT64_MAX);
    out.refuse_until = whole("refuse_until", INT64_MIN, INT64_MAX);
    return out;
  } catch (const nlohmann::json::exception& e) {
    throw DocumentError(path, std::string("has a field of the wrong type: ") + e.what());
  }
}

std::string persisted_state_to_text(const PersistedState& persisted) {
  // Written piece by piece, one object a line: a tree of the whole state
  // would cost several times the state's own memory at every snapshot.
  std::string out = "{\"format\":\"hostlbd-state\",\"version\":1,\"generation\":" +
                    std::to_string(persisted.generation) +
                    ",\n\"desired\":{\"version\":" + std::to_string(kStateDocumentVersion) +
                    ",\"backends\":[";
  auto append_list = [&out](auto begin, auto end, auto to_json) {
    for (auto it = begin; it != end; ++it) {
      out += it == begin ? "\n" : ",\n";
      out += to_json(*it).dump();
    }
  };
  const State& state = persisted.state;
  append_list(state.backends.begin(), state.backends.end(), backend_to_json);
  out += "],\"services\":[";
  append_list(state.services.begin(), state.services.end(), service_to_json);
  out += "]},\n\"binding_ids\":[";
  append_list(persisted.ids.begin(), persisted.ids.end(), [](const auto& entry) {
    return nlohmann::ordered_json{{"service", entry.first.service.str()},
                                  {"backend", entry.first.backend},
                                  {"id", entry.second}};
  });
  out += "],\n\"retired\":[";
  const auto& retired = persisted.retired.entries();
  append_list(retired.begin(), retired.end(), retired_to_json);
  out += "],\n\"gateway_indexes\":[";
  append_list(
      persisted.gateway_indexes.begin(), persisted.gateway_indexes.end(), [](const auto& entry) {
        return nlohmann::ordered_json{{"service", entry.first.str()}, {"index", entry.second}};
      });
  out += "]}\n";
  return out;
}

PersistedState persisted_state_from_text(std::string_view text) {
  nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) throw DocumentError("", "not a JSON object");
  if (doc.value("format", "") != "hostlbd-state" || doc.value("version", 0) != 1)
    throw DocumentError("format", "not a hostlbd state file of version 1");
  PersistedState out;
  out.generation = doc.value("generation", uint64_t{0});
  if (!doc.contains("desired")) throw DocumentError("desired", "is required");
  try {
    out.state = state_from_json(doc["desired"]);
  } catch (const DocumentError& e) {
    throw DocumentError("desired." + e.path(), e.reason());
  }
  const auto& ids = doc.value("binding_ids", nlohmann::json::array());
  if (!ids.is_array()) throw DocumentError("binding_ids", "must be an array");
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string path = "binding_ids[" + std::to_string(i) + "]";
    const auto& entry = ids[i];
    if (!entry.is_object() || !entry.contains("service") || !entry["service"].is_string() ||
        !entry.contains("backend") || !entry["backend"].is_string() || !entry.contains("id") ||
        !entry["id"].is_number_unsigned())
      throw DocumentError(path, "must be {\"service\": KEY, \"backend\": NAME, \"id\": N}");
    std::string reason;
    auto key = parse_service_key(entry["service"].get<std::string>(), &reason);
    if (!key) throw DocumentError(path + ".service", reason);
    out.ids[{*key, entry["backend"].get<std::string>()}] = entry["id"].get<uint32_t>();
  }
  const auto& retired = doc.value("retired", nlohmann::json::array());
  if (!retired.is_array()) throw DocumentError("retired", "must be an array");
  std::vector<RetiredBinding> entries;
  for (size_t i = 0; i < retired.size(); ++i)
    entries.push_back(retired_from_json(retired[i], "retired[" + std::to_string(i) + "]"));
  out.retired = Retirements(entries);
  const auto& indexes = doc.value("gateway_indexes", nlohmann::json::array());
  if (!indexes.is_array()) throw DocumentError("gateway_indexes", "must be an array");
  for (size_t i = 0; i < indexes.size(); ++i) {
    const std::string path = "gateway_indexes[" + std::to_string(i) + "]";
    const auto& entry = indexes[i];
    if (!entry.is_object() || !entry.contains("service") || !entry["service"].is_string() ||
        !entry.contains("index") || !entry["index"].is_number_unsigned() ||
        entry["index"].get<uint64_t>() == 0 || entry["index"].get<uint64_t>() > 65535)
      throw DocumentError(path, "must be {\"service\": KEY, \"index\": 1..65535}");
    std::string reason;
    auto key = parse_service_key(entry["service"].get<std::string>(), &reason);
    if (!key) throw DocumentError(path + ".service", reason);
    out.gateway_indexes[*key] = entry["index"].get<uint32_t>();
  }
  return out;
}

}  // namespace hostlb
