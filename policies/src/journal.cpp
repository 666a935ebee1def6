#include "hostlb/policies/journal.h"

#include <set>

#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

JournalRecord journal_record_of(std::vector<Edit> edits, const DatapathDiff& diff,
                                const Retirements::Change& retirement) {
  JournalRecord out;
  out.edits = std::move(edits);
  for (const auto& b : diff.bindings_added) out.ids[b.key] = b.id;
  out.retired = retirement.retired;
  out.restored = retirement.restored;
  return out;
}

nlohmann::json edit_to_json(const Edit& edit) {
  using nlohmann::json;
  const std::string key = edit.service.key.str();
  switch (edit.kind) {
    case Edit::Kind::kAddBackend:
      return {{"op", "backend.add"}, {"backend", backend_to_json(edit.backend)}};
    case Edit::Kind::kRemoveBackend:
      return {{"op", "backend.del"}, {"name", edit.ref.name}};
    case Edit::Kind::kAddService: {
      json refs = json::array();
      for (const auto& r : edit.service.backends) {
        json ref = {{"name", r.name}, {"port", r.port}};
        if (r.weight != 1) ref["weight"] = r.weight;
        if (r.state != BindingState::kActive) ref["state"] = binding_state_name(r.state);
        refs.push_back(std::move(ref));
      }
      json out = {{"op", "service.add"}, {"service", key}, {"backends", refs}};
      if (edit.service.rows) out["rows"] = *edit.service.rows;
      if (edit.service.health) out["health"] = health_check_to_json(*edit.service.health);
      return out;
    }
    case Edit::Kind::kRemoveService:
      return {{"op", "service.del"}, {"service", key}};
    case Edit::Kind::kAttach: {
      json out = {{"op", "service.attach"},
                  {"service", key},
                  {"backend", edit.ref.name},
                  {"port", edit.ref.port}};
      if (edit.ref.weight != 1) out["weight"] = edit.ref.weight;
      if (edit.ref.state != BindingState::kActive)
        out["state"] = binding_state_name(edit.ref.state);
      return out;
    }
    case Edit::Kind::kSetState:
      return {{"op", "service.state"},
              {"service", key},
              {"backend", edit.ref.name},
              {"state", binding_state_name(edit.ref.state)}};
    case Edit::Kind::kDetach:
      return {{"op", "service.detach"}, {"service", key}, {"backend", edit.ref.name}};
    case Edit::Kind::kSetRows:
      return {{"op", "service.rows"},
              {"service", key},
              {"rows", edit.service.rows ? json(*edit.service.rows) : json()}};
    case Edit::Kind::kSetHealth:
      return {{"op", "service.health"},
              {"service", key},
              {"health",
               edit.service.health ? json(health_check_to_json(*edit.service.health)) : json()}};
  }
  return {};
}

Edit edit_from_json(const nlohmann::json& value) {
  if (!value.is_object() || !value.contains("op") || !value["op"].is_string())
    throw DocumentError("op", "is required");
  const std::string op = value["op"];
  auto name = [&](const char* field) {
    if (!value.contains(field) || !value[field].is_string())
      throw DocumentError(field, "must be a string");
    return value[field].get<std::string>();
  };
  if (op == "backend.add")
    // (value() rather than [] on a const object: a missing member is not UB.)
    return Edit::add_backend(
        parse_backend_object(value.value("backend", nlohmann::json()), "backend", {}));
  if (op == "backend.del") return Edit::remove_backend(name("name"));
  if (op != "service.add" && op != "service.del" && op != "service.attach" &&
      op != "service.detach" && op != "service.rows" && op != "service.health" &&
      op != "service.state")
    throw DocumentError("op", "unknown edit \"" + op + "\"");
  const ServiceKey key =
      parse_service_key_param(value.value("service", nlohmann::json()), "service");
  if (op == "service.add") {
    Service service{key, {}, {}};
    for (const auto& r : value.value("backends", nlohmann::json::array()))
      service.backends.push_back(parse_backend_ref(r, "backends"));
    if (const auto& rows = value.value("rows", nlohmann::json()); !rows.is_null()) {
      if (!rows.is_number_unsigned() || rows.get<uint64_t>() < kMinRows ||
          rows.get<uint64_t>() > kMaxRows)
        throw DocumentError("rows", "must be a whole number from " + std::to_string(kMinRows) +
                                        " to " + std::to_string(kMaxRows));
      service.rows = rows.get<uint32_t>();
    }
    if (const auto& health = value.value("health", nlohmann::json()); !health.is_null())
      service.health = parse_health_check(health, "health", key.protocol);
    return Edit::add_service(std::move(service));
  }
  if (op == "service.del") return Edit::remove_service(key);
  if (op == "service.attach") {
    nlohmann::json ref = {{"name", value.value("backend", nlohmann::json())},
                          {"port", value.value("port", nlohmann::json())}};
    if (value.contains("weight")) ref["weight"] = value["weight"];
    if (value.contains("state")) ref["state"] = value["state"];
    return Edit::attach(key, parse_backend_ref(ref, ""));
  }
  if (op == "service.state") {
    const auto parsed = parse_binding_state(name("state"));
    if (!parsed) throw DocumentError("state", "must be active, horizon or draining");
    return Edit::set_state(key, name("backend"), *parsed);
  }
  if (op == "service.health") {
    const auto& health = value.value("health", nlohmann::json());
    if (health.is_null()) return Edit::set_health(key, std::nullopt);
    return Edit::set_health(key, parse_health_check(health, "health", key.protocol));
  }
  if (op == "service.rows") {
    const auto& rows = value.value("rows", nlohmann::json());
    if (rows.is_null()) return Edit::set_rows(key, std::nullopt);
    if (!rows.is_number_unsigned() || rows.get<uint64_t>() < kMinRows ||
        rows.get<uint64_t>() > kMaxRows)
      throw DocumentError("rows", "must be null or a whole number from " +
                                      std::to_string(kMinRows) + " to " + std::to_string(kMaxRows));
    return Edit::set_rows(key, rows.get<uint32_t>());
  }
  return Edit::detach(key, name("backend"));
}

namespace {

nlohmann::json binding_key_to_json(const BindingKey& key) {
  return {{"service", key.service.str()}, {"backend", key.backend}};
}

BindingKey binding_key_from_json(const nlohmann::json& value, const std::string& path) {
  if (!value.is_object()) throw DocumentError(path, "must be an object");
  const ServiceKey service =
      parse_service_key_param(value.value("service", nlohmann::json()), path + ".service");
  if (!value.contains("backend") || !value["backend"].is_string())
    throw DocumentError(path + ".backend", "must be a string");
  return {service, value["backend"].get<std::string>()};
}

const nlohmann::json& list(const nlohmann::json& record, const char* name, bool required) {
  static const nlohmann::json kEmpty = nlohmann::json::array();
  if (!record.contains(name)) {
    if (required) throw DocumentError(name, "is required");
    return kEmpty;
  }
  if (!record[name].is_array()) throw DocumentError(name, "must be an array");
  return record[name];
}

std::string at(const char* name, size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

}  // namespace

std::string journal_record_to_line(const JournalRecord& record) {
  nlohmann::json out = {{"edits", nlohmann::json::array()}, {"ids", nlohmann::json::array()}};
  for (const auto& e : record.edits) out["edits"].push_back(edit_to_json(e));
  for (const auto& [key, id] : record.ids) {
    auto entry = binding_key_to_json(key);
    entry["id"] = id;
    out["ids"].push_back(std::move(entry));
  }
  if (!record.retired.empty()) {
    auto& retired = out["retired"] = nlohmann::json::array();
    for (const auto& r : record.retired) retired.push_back(retired_to_json(r));
  }
  if (!record.restored.empty()) {
    auto& restored = out["restored"] = nlohmann::json::array();
    for (const auto& k : record.restored) restored.push_back(binding_key_to_json(k));
  }
  if (!record.gateway_indexes.empty()) {
    auto& indexes = out["gateway_indexes"] = nlohmann::json::array();
    for (const auto& [key, index] : record.gateway_indexes)
      indexes.push_back({{"service", key.str()}, {"index", index}});
  }
  return out.dump();
}

JournalRecord journal_record_from_line(std::string_view line) {
  const nlohmann::json doc = parse_json_strict(line);
  if (!doc.is_object()) throw DocumentError("", "a journal record must be a JSON object");
  JournalRecord out;
  const auto& edits = list(doc, "edits", true);
  for (size_t i = 0; i < edits.size(); ++i) {
    try {
      out.edits.push_back(edit_from_json(edits[i]));
    } catch (const DocumentError& e) {
      throw DocumentError(at("edits", i) + "." + e.path(), e.reason());
    }
  }
  const auto& ids = list(doc, "ids", true);
  for (size_t i = 0; i < ids.size(); ++i) {
    const BindingKey key = binding_key_from_json(ids[i], at("ids", i));
    const auto& id = ids[i].value("id", nlohmann::json());
    if (!id.is_number_unsigned() || id.get<uint64_t>() > UINT32_MAX)
      throw DocumentError(at("ids", i) + ".id", "must be a whole number below 2^32");
    if (!out.ids.emplace(key, id.get<uint32_t>()).second)
      throw DocumentError(at("ids", i), "names a binding twice");
  }
  const auto& retired = list(doc, "retired", false);
  for (size_t i = 0; i < retired.size(); ++i)
    out.retired.push_back(retired_from_json(retired[i], at("retired", i)));
  const auto& restored = list(doc, "restored", false);
  for (size_t i = 0; i < restored.size(); ++i)
    out.restored.push_back(binding_key_from_json(restored[i], at("restored", i)));
  const auto& indexes = list(doc, "gateway_indexes", false);
  for (size_t i = 0; i < indexes.size(); ++i) {
    const auto& entry = indexes[i];
    if (!entry.is_object() || !entry.contains("service") || !entry["service"].is_string() ||
        !entry.contains("index") || !entry["index"].is_number_unsigned() ||
        entry["index"].get<uint64_t>() == 0 || entry["index"].get<uint64_t>() > 65535)
      throw DocumentError(at("gateway_indexes", i),
                          "must be {\"service\": KEY, \"index\": 1..65535}");
    std::string reason;
    const auto key = parse_service_key(entry["service"].get<std::string>(), &reason);
    if (!key) throw DocumentError(at("gateway_indexes", i) + ".service", reason);
    if (!out.gateway_indexes.emplace(*key, entry["index"].get<uint32_t>()).second)
      throw DocumentError(at("gateway_indexes", i), "names a service twice");
  }
  return out;
}

void replay_journal_record(PersistedState& persisted, const JournalRecord& record) {
  for (size_t i = 0; i < record.edits.size(); ++i) {
    try {
      check_edit(persisted.state, record.edits[i]);
    } catch (const DocumentError& e) {
      throw DocumentError(at("edits", i) + (e.path().empty() ? "" : "." + e.path()), e.reason());
    }
    apply_edit(persisted.state, record.edits[i]);
  }
  for (const auto& [key, id] : record.ids) persisted.ids[key] = id;
  persisted.retired.replay({record.retired, record.restored, {}});
  if (!record.gateway_indexes.empty() || !persisted.gateway_indexes.empty()) {
    // A gateway's indexes: those of services gone are free again.
    std::set<ServiceKey> present;
    for (const auto& s : persisted.state.services) present.insert(s.key);
    std::erase_if(persisted.gateway_indexes,
                  [&](const auto& entry) { return !present.count(entry.first); });
    for (const auto& [key, index] : record.gateway_indexes) persisted.gateway_indexes[key] = index;
  }
}

void drop_unheld_identities(PersistedState& persisted) {
  const BindingIds reserved = persisted.retired.reserved_ids();
  std::set<BindingKey> bound;
  for (const auto& s : persisted.state.services)
    for (const auto& r : s.backends) bound.insert({s.key, r.name});
  std::erase_if(persisted.ids, [&](const auto& entry) {
    return !reserved.count(entry.first) && !bound.count(entry.first);
  });
}

}  // namespace hostlb
