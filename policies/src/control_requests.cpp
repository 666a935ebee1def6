#include "hostlb/policies/control_requests.h"

#include <algorithm>
#include <functional>

namespace hostlb::control {
namespace {

using nlohmann::json;

[[noreturn]] void refuse(int code, std::string message, std::string path = "") {
  throw RequestError({code, std::move(message), std::move(path)});
}

const json& param(const json& params, const std::string& name) {
  auto it = params.find(name);
  if (it == params.end()) refuse(kInvalidParams, "is required", "params." + name);
  return *it;
}

std::string param_string(const json& params, const std::string& name) {
  const json& value = param(params, name);
  if (!value.is_string()) refuse(kInvalidParams, "must be a string", "params." + name);
  return value.get<std::string>();
}

bool param_bool(const json& params, const std::string& name) {
  auto it = params.find(name);
  if (it == params.end()) return false;
  if (!it->is_boolean()) refuse(kInvalidParams, "must be a boolean", "params." + name);
  return it->get<bool>();
}

// "drain": seconds the removed bindings' connections may continue (0 or
// absent: flushed at once).
uint32_t param_drain(const json& params) {
  auto it = params.find("drain");
  if (it == params.end()) return 0;
  if (!it->is_number_unsigned() || it->get<uint64_t>() > kMaxDrainSeconds)
    refuse(kInvalidParams,
           "must be a whole number of seconds from 0 to " + std::to_string(kMaxDrainSeconds),
           "params.drain");
  return it->get<uint32_t>();
}

// Runs a parse whose DocumentError paths are relative to `params`.
template <typename F>
auto with_params_paths(F&& f) {
  try {
    return f();
  } catch (const DocumentError& e) {
    refuse(kInvalidParams, e.reason(), e.path().empty() ? "params" : "params." + e.path());
  }
}

ServiceKey param_service(const json& p) {
  return with_params_paths([&] { return parse_service_key_param(param(p, "service"), "service"); });
}

BindingFilter param_filter(const json& p) {
  BindingFilter filter;
  if (p.contains("service")) filter.service = param_service(p);
  if (p.contains("backend")) filter.backend = param_string(p, "backend");
  return filter;
}

// apply's document: its text after the line or as a string (parsed by the
// document parser: duplicate keys, exact positions), or an object.
State apply_document(const Request& request, const DocumentOptions& options) {
  const json& p = request.params;
  try {
    const int forms = static_cast<int>(p.contains("document")) +
                      static_cast<int>(p.contains("document_text")) +
                      static_cast<int>(p.contains("document_bytes"));
    if (forms > 1)
      refuse(kInvalidParams, "give one of document, document_text and document_bytes, not several",
             "params");
    if (auto bytes = p.find("document_bytes"); bytes != p.end()) {
      if (!bytes->is_number_unsigned() || bytes->get<size_t>() != request.document.size())
        refuse(kInvalidParams, "must be the number of bytes of the document that follows the line",
               "params.document_bytes");
      return parse_state_document(request.document, options);
    }
    if (auto text = p.find("document_text"); text != p.end()) {
      if (!text->is_string()) refuse(kInvalidParams, "must be a string", "params.document_text");
      return parse_state_document(text->get<std::string>(), options);
    }
    return state_from_json(param(p, "document"), options);
  } catch (const DocumentError& e) {
    refuse(kInvalidParams, e.reason(),
           e.path() == "document" || e.path().empty() ? "params.document"
                                                      : "params.document." + e.path());
  }
}

using Decoder = std::function<TypedRequest(const Request&, const DocumentOptions&)>;

struct Method {
  MethodInfo info;
  Decoder decode;
};

const std::vector<Method>& table() {
  static const std::vector<Method> kTable = {
      {{"status", {}}, [](const Request&, const DocumentOptions&) { return StatusRequest{}; }},
      {{"get", {}}, [](const Request&, const DocumentOptions&) { return GetRequest{}; }},
      {{"apply", {"document", "document_text", "document_bytes", "dry_run", "drain"}},
       [](const Request& r, const DocumentOptions& options) -> TypedRequest {
         const uint32_t drain = param_drain(r.params);
         const bool dry_run = param_bool(r.params, "dry_run");
         return ApplyRequest{apply_document(r, options), dry_run, drain};
       }},
      {{"stats", {"format"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         auto it = r.params.find("format");
         if (it == r.params.end()) return StatsRequest{};
         if (!it->is_string() || (*it != "json" && *it != "prometheus"))
           refuse(kInvalidParams, "must be \"json\" or \"prometheus\"", "params.format");
         return StatsRequest{*it == "prometheus"};
       }},
      {{"health", {}}, [](const Request&, const DocumentOptions&) { return HealthRequest{}; }},
      {{"backend.list", {}},
       [](const Request&, const DocumentOptions&) { return BackendListRequest{}; }},
      {{"backend.add", {"name", "mac", "ipv4", "ipv6", "bridge", "host"}},
       [](const Request& r, const DocumentOptions& options) -> TypedRequest {
         return EditRequest{with_params_paths(
             [&] { return Edit::add_backend(parse_backend_object(r.params, "", options)); })};
       }},
      {{"backend.del", {"name", "drain"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         return EditRequest{Edit::remove_backend(param_string(r.params, "name")),
                            param_drain(r.params)};
       }},
      {{"service.list", {}},
       [](const Request&, const DocumentOptions&) { return ServiceListRequest{}; }},
      {{"service.add", {"service", "backends"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         Service service{param_service(r.params), {}};
         if (auto it = r.params.find("backends"); it != r.params.end()) {
           if (!it->is_array()) refuse(kInvalidParams, "must be an array", "params.backends");
           for (size_t i = 0; i < it->size(); ++i)
             service.backends.push_back(with_params_paths([&] {
               return parse_backend_ref((*it)[i], "backends[" + std::to_string(i) + "]");
             }));
         }
         return EditRequest{Edit::add_service(std::move(service))};
       }},
      {{"service.del", {"service", "drain"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         return EditRequest{Edit::remove_service(param_service(r.params)), param_drain(r.params)};
       }},
      {{"service.attach", {"service", "backend", "port", "weight", "state"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         const ServiceKey key = param_service(r.params);
         BackendRef ref = with_params_paths([&] {
           json fields = {{"name", param(r.params, "backend")}, {"port", param(r.params, "port")}};
           if (r.params.contains("weight")) fields["weight"] = r.params["weight"];
           if (r.params.contains("state")) fields["state"] = r.params["state"];
           return parse_backend_ref(fields, "");
         });
         if (!r.params["backend"].is_string())
           refuse(kInvalidParams, "must be a string", "params.backend");
         return EditRequest{Edit::attach(key, std::move(ref))};
       }},
      {{"service.health", {"service", "health"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         const ServiceKey key = param_service(r.params);
         const json& health = param(r.params, "health");
         if (health.is_null()) return EditRequest{Edit::set_health(key, std::nullopt)};
         return EditRequest{Edit::set_health(key, with_params_paths([&] {
                                               return parse_health_check(health, "health",
                                                                         key.protocol);
                                             }))};
       }},
      {{"service.detach", {"service", "backend", "drain"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         const ServiceKey key = param_service(r.params);
         return EditRequest{Edit::detach(key, param_string(r.params, "backend")),
                            param_drain(r.params)};
       }},
      {{"service.state", {"service", "backend", "state"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         const ServiceKey key = param_service(r.params);
         const std::string state = param_string(r.params, "state");
         const auto parsed = parse_binding_state(state);
         if (!parsed)
           refuse(kInvalidParams, "\"" + state + "\" is not active, horizon or draining",
                  "params.state");
         return EditRequest{Edit::set_state(key, param_string(r.params, "backend"), *parsed)};
       }},
      {{"connections", {"service", "backend", "count"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         BindingFilter filter = param_filter(r.params);
         return ConnectionsRequest{std::move(filter), param_bool(r.params, "count")};
       }},
      {{"flush", {"service", "backend"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         return FlushRequest{param_filter(r.params)};
       }},
      {{"which", {"service", "client"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         const ServiceKey service = param_service(r.params);
         const std::string client = param_string(r.params, "client");
         std::string reason;
         const auto parsed = parse_endpoint(client, &reason);
         if (!parsed) refuse(kInvalidParams, "\"" + client + "\": " + reason, "params.client");
         if (parsed->address.family() != service.vip.family())
           refuse(kInvalidParams, "the client's address family is not the VIP's", "params.client");
         return WhichRequest{service, parsed->address, parsed->port};
       }},
      {{"gateway.digest", {}},
       [](const Request&, const DocumentOptions&) { return GatewayDigestRequest{}; }},
      {{"gateway.table", {"service"}},
       [](const Request& r, const DocumentOptions&) -> TypedRequest {
         return GatewayTableRequest{param_service(r.params)};
       }},
  };
  return kTable;
}

}  // namespace

const std::vector<MethodInfo>& methods() {
  static const std::vector<MethodInfo> kMethods = [] {
    std::vector<MethodInfo> out;
    for (const auto& m : table()) out.push_back(m.info);
    return out;
  }();
  return kMethods;
}

TypedRequest decode_params(const Request& request, const DocumentOptions& options) {
  const auto& all = table();
  auto method = std::find_if(all.begin(), all.end(),
                             [&](const Method& m) { return m.info.name == request.method; });
  if (method == all.end()) refuse(kMethodNotFound, "no method \"" + request.method + "\"");
  for (const auto& [key, value] : request.params.items()) {
    const auto& allowed = method->info.params;
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      refuse(kInvalidParams, "unknown parameter", "params." + key);
  }
  return method->decode(request, options);
}

void check_filter(const BindingFilter& filter, const State& state) {
  if (filter.backend && !state.find_backend(*filter.backend))
    refuse(kInvalidParams, "no backend \"" + *filter.backend + "\"", "params.backend");
  if (filter.service && std::none_of(state.services.begin(), state.services.end(),
                                     [&](const Service& s) { return s.key == *filter.service; }))
    refuse(kInvalidParams, "no service " + filter.service->str(), "params.service");
}

}  // namespace hostlb::control
