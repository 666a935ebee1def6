#include "control_handler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "hostlb/netlink/error.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/state_diff.h"
#include "hostlb/policies/text.h"

namespace hostlb {
namespace {

using control::Error;
using nlohmann::json;

// A request that cannot be served, with the JSON-RPC error to answer.
struct Refusal {
  Error error;
};

[[noreturn]] void refuse(int code, std::string message, std::string path = "") {
  throw Refusal{{code, std::move(message), std::move(path)}};
}

void check_params(const json& params, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : params.items()) {
    bool known = false;
    for (auto name : allowed) known = known || key == name;
    if (!known) refuse(control::kInvalidParams, "unknown parameter", "params." + key);
  }
}

const json& param(const json& params, const std::string& name) {
  auto it = params.find(name);
  if (it == params.end()) refuse(control::kInvalidParams, "is required", "params." + name);
  return *it;
}

// "drain": seconds the removed bindings' connections may continue (0 or
// absent: flushed at once).
constexpr uint32_t kMaxDrainSeconds = 7 * 24 * 3600;
uint32_t param_drain(const json& params) {
  auto it = params.find("drain");
  if (it == params.end()) return 0;
  if (!it->is_number_unsigned() || it->get<uint64_t>() > kMaxDrainSeconds)
    throw Refusal{
        {control::kInvalidParams,
         "must be a whole number of seconds from 0 to " + std::to_string(kMaxDrainSeconds),
         "params.drain"}};
  return it->get<uint32_t>();
}

std::string param_string(const json& params, const std::string& name) {
  const json& value = param(params, name);
  if (!value.is_string()) refuse(control::kInvalidParams, "must be a string", "params." + name);
  return value.get<std::string>();
}

// Runs a parse or edit whose DocumentError paths are relative to `params`.
template <typename F>
auto with_params_paths(F&& f) {
  try {
    return f();
  } catch (const DocumentError& e) {
    refuse(control::kInvalidParams, e.reason(), e.path().empty() ? "params" : "params." + e.path());
  }
}

std::string now_text() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The optional "service" and "backend" params that select bindings; each
// must name something that exists.
struct BindingFilter {
  std::optional<ServiceKey> service;
  std::optional<std::string> backend;
};

BindingFilter binding_filter(const json& p, const State& current) {
  BindingFilter filter;
  if (p.contains("service"))
    filter.service =
        with_params_paths([&] { return parse_service_key_param(param(p, "service"), "service"); });
  if (p.contains("backend")) filter.backend = param_string(p, "backend");
  if (filter.backend && !current.find_backend(*filter.backend))
    refuse(control::kInvalidParams, "no backend \"" + *filter.backend + "\"", "params.backend");
  if (filter.service && std::none_of(current.services.begin(), current.services.end(),
                                     [&](const Service& s) { return s.key == *filter.service; }))
    refuse(control::kInvalidParams, "no service " + filter.service->str(), "params.service");
  return filter;
}

json service_json(const Service& service) {
  json out = service_to_json(service);
  out["service"] = service.key.str();
  return out;
}

}  // namespace

ControlHandler::ControlHandler(Agent& agent, RouteTable& routes, Sysctls& sysctls,
                               DocumentOptions doc_options, DaemonInfo info)
    : agent_(agent),
      routes_(routes),
      sysctls_(sysctls),
      doc_options_(std::move(doc_options)),
      info_(std::move(info)) {}

void ControlHandler::note_error(const std::string& message) {
  last_error_ = std::make_pair(now_text(), message);
}

std::string ControlHandler::handle(const PeerCredentials& peer, std::string_view line,
                                   std::string_view document) {
  Error error;
  json id;
  auto request = control::decode_request(line, &error, &id);
  if (!request) return control::encode_error(id, error);
  request->document = document;
  try {
    if (request->method == "connections") return connections(*request);
    json result = dispatch(*request);
    return control::encode_result(request->id, result);
  } catch (const Refusal& r) {
    error = r.error;
  } catch (const DocumentError& e) {
    error = {control::kRefused, e.reason(), e.path()};
  } catch (const PreconditionError& e) {
    error = {control::kRefused, e.what(), ""};
  } catch (const IdSpaceExhausted& e) {
    error = {control::kRefused, e.what(), ""};
  } catch (const KernelError& e) {
    error = {control::kKernelError, e.what(), ""};
  } catch (const StoreError& e) {
    error = {control::kInternalError, std::string("applied, but not persisted: ") + e.what(), ""};
  } catch (const std::exception& e) {
    error = {control::kInternalError, e.what(), ""};
  }
  if (error.code != control::kMethodNotFound && error.code != control::kInvalidParams &&
      error.code != control::kRefused) {
    note_error(printable(request->method) + ": " + printable(error.message));
  }
  spdlog::info("control: {} from uid {} refused: {}{}", printable(request->method), peer.uid,
               error.path.empty() ? "" : printable(error.path) + ": ", printable(error.message));
  return control::encode_error(request->id, error);
}

json ControlHandler::dispatch(const control::Request& request) {
  const json& p = request.params;
  const std::string& m = request.method;
  const State& current = agent_.current();

  if (m == "status") {
    check_params(p, {});
    return status();
  }
  if (m == "get") {
    check_params(p, {});
    return state_to_json(current);
  }
  if (m == "apply") return apply(request);
  if (m == "stats") return stats(p);

  if (m == "backend.list") {
    check_params(p, {});
    json out = json::array();
    for (const auto& b : current.backends) {
      json services = json::array();
      for (const auto& s : current.services)
        for (const auto& ref : s.backends)
          if (ref.name == b.name) services.push_back(s.key.str() + ":" + std::to_string(ref.port));
      json entry = {{"name", b.name}, {"mac", b.mac.str()}};
      entry["ipv4"] = b.ipv4 ? json(b.ipv4->str()) : json();
      entry["ipv6"] = b.ipv6 ? json(b.ipv6->str()) : json();
      entry["bridge"] = b.bridge;
      entry["services"] = std::move(services);
      entry["draining"] = draining(b.name);
      out.push_back(std::move(entry));
    }
    return out;
  }
  if (m == "backend.add") {
    check_params(p, {"name", "mac", "ipv4", "ipv6", "bridge"});
    return edit(with_params_paths(
        [&] { return Edit::add_backend(parse_backend_object(p, "", doc_options_)); }));
  }
  if (m == "backend.del") {
    check_params(p, {"name", "drain"});
    return edit(Edit::remove_backend(param_string(p, "name")), param_drain(p));
  }
  if (m == "service.list") {
    check_params(p, {});
    json out = json::array();
    for (const auto& s : current.services) out.push_back(service_json(s));
    return out;
  }
  if (m == "service.add") {
    check_params(p, {"service", "backends"});
    Service service;
    service.key =
        with_params_paths([&] { return parse_service_key_param(param(p, "service"), "service"); });
    if (auto it = p.find("backends"); it != p.end()) {
      if (!it->is_array()) refuse(control::kInvalidParams, "must be an array", "params.backends");
      for (size_t i = 0; i < it->size(); ++i)
        service.backends.push_back(with_params_paths(
            [&] { return parse_backend_ref((*it)[i], "backends[" + std::to_string(i) + "]"); }));
    }
    return edit(Edit::add_service(std::move(service)));
  }
  if (m == "service.del") {
    check_params(p, {"service", "drain"});
    return edit(Edit::remove_service(with_params_paths(
                    [&] { return parse_service_key_param(param(p, "service"), "service"); })),
                param_drain(p));
  }
  if (m == "service.attach") {
    check_params(p, {"service", "backend", "port"});
    const ServiceKey key =
        with_params_paths([&] { return parse_service_key_param(param(p, "service"), "service"); });
    BackendRef ref = with_params_paths([&] {
      return parse_backend_ref(json{{"name", param(p, "backend")}, {"port", param(p, "port")}}, "");
    });
    if (auto it = p.find("backend"); it != p.end() && !it->is_string())
      refuse(control::kInvalidParams, "must be a string", "params.backend");
    return edit(Edit::attach(key, std::move(ref)));
  }
  if (m == "service.detach") {
    check_params(p, {"service", "backend", "drain"});
    const ServiceKey key =
        with_params_paths([&] { return parse_service_key_param(param(p, "service"), "service"); });
    return edit(Edit::detach(key, param_string(p, "backend")), param_drain(p));
  }
  if (m == "flush") {
    check_params(p, {"service", "backend"});
    const BindingFilter filter = binding_filter(p, current);
    return {{"flushed", agent_.flush(filter.service, filter.backend)}};
  }
  refuse(control::kMethodNotFound, "no method \"" + m + "\"");
}

std::string ControlHandler::connections(const control::Request& request) {
  const json& p = request.params;
  check_params(p, {"service", "backend", "count"});
  const BindingFilter filter = binding_filter(p, agent_.current());
  bool count_only = false;
  if (auto it = p.find("count"); it != p.end()) {
    if (!it->is_boolean()) refuse(control::kInvalidParams, "must be a boolean", "params.count");
    count_only = it->get<bool>();
  }

  // Entries go out in batches as they come from the kernel's dump: the
  // reply is text, never one tree of every connection.
  constexpr size_t kBatch = 1000;
  std::string out;
  json batch = json::array();
  auto flush_batch = [&] {
    if (batch.empty()) return;
    out += control::encode_notification("connections.batch",
                                        {{"id", request.id}, {"connections", std::move(batch)}});
    batch = json::array();
  };
  const auto now_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  auto endpoint = [](const IpAddress& a, uint16_t port) {
    return (a.is_v6() ? "[" + a.str() + "]" : a.str()) + ":" + std::to_string(port);
  };
  const size_t total = agent_.connections(
      filter.service, filter.backend, [&](const Binding& b, const ConntrackEntry& e) {
        if (count_only) return;
        json entry = {{"protocol", e.tcp ? "tcp" : "udp"},
                      {"client", endpoint(e.client, e.client_port)},
                      {"vip", endpoint(e.vip, e.vip_port)},
                      {"service", b.key.service.str()},
                      {"backend", b.key.backend},
                      {"backend_address", endpoint(e.backend, e.backend_port)},
                      {"state", e.tcp ? json(e.state) : json()},
                      {"age_seconds", e.start_ns && e.start_ns <= now_ns
                                          ? json((now_ns - e.start_ns) / 1000000000ULL)
                                          : json()}};
        batch.push_back(std::move(entry));
        if (batch.size() >= kBatch) flush_batch();
      });
  flush_batch();
  out += control::encode_result(request.id, {{"count", total}});
  return out;
}

json ControlHandler::edit(const Edit& e, uint32_t drain_seconds) {
  // Checked here too, so that parameter paths are those of the request.
  with_params_paths([&] {
    check_edit(agent_.current(), e);
    return 0;
  });
  const auto changes = describe_edit(agent_.current(), e);
  const ApplyReport report = agent_.edit(e, drain_seconds);
  return {{"changes", changes},
          {"kernel_changed", report.kernel_changed()},
          {"flushed", report.connections_flushed},
          {"draining", report.bindings_draining}};
}

json ControlHandler::apply(const control::Request& request) {
  const json& p = request.params;
  check_params(p, {"document", "document_text", "document_bytes", "dry_run", "drain"});
  const uint32_t drain_seconds = param_drain(p);
  bool dry_run = false;
  if (auto it = p.find("dry_run"); it != p.end()) {
    if (!it->is_boolean()) refuse(control::kInvalidParams, "must be a boolean", "params.dry_run");
    dry_run = it->get<bool>();
  }
  State next;
  try {
    // The document's text (after the line, or as a string in it) is parsed
    // by the document parser (duplicate keys, exact positions); document is
    // an already-parsed object.
    const int forms = static_cast<int>(p.contains("document")) +
                      static_cast<int>(p.contains("document_text")) +
                      static_cast<int>(p.contains("document_bytes"));
    if (forms > 1)
      refuse(control::kInvalidParams,
             "give one of document, document_text and document_bytes, not several", "params");
    if (auto bytes = p.find("document_bytes"); bytes != p.end()) {
      if (!bytes->is_number_unsigned() || bytes->get<size_t>() != request.document.size())
        refuse(control::kInvalidParams,
               "must be the number of bytes of the document that follows the line",
               "params.document_bytes");
      next = parse_state_document(request.document, doc_options_);
    } else if (auto text = p.find("document_text"); text != p.end()) {
      if (!text->is_string())
        refuse(control::kInvalidParams, "must be a string", "params.document_text");
      next = parse_state_document(text->get<std::string>(), doc_options_);
    } else {
      next = state_from_json(param(p, "document"), doc_options_);
    }
  } catch (const DocumentError& e) {
    refuse(control::kInvalidParams, e.reason(),
           e.path() == "document" || e.path().empty() ? "params.document"
                                                      : "params.document." + e.path());
  }
  const StateChanges parts = changed_parts(agent_.current(), next);
  auto changes = describe_changes(parts);
  if (dry_run) return {{"dry_run", true}, {"changes", std::move(changes)}};
  const ApplyReport report = agent_.change(std::move(next), parts, drain_seconds);
  memory_to_return_ = true;
  return {{"changes", changes},
          {"kernel_changed", report.kernel_changed()},
          {"flushed", report.connections_flushed},
          {"draining", report.bindings_draining}};
}

json ControlHandler::draining(const std::optional<std::string>& backend) {
  json out = json::array();
  const int64_t now = agent_.now();
  for (const auto& r : agent_.retired().entries()) {
    if (!r.draining() || (backend && r.binding.key.backend != *backend)) continue;
    json entry = {{"service", r.binding.key.service.str()},
                  {"backend", r.binding.key.backend},
                  {"remaining_seconds", std::max<int64_t>(0, r.drain_until - now)}};
    try {
      entry["connections"] = agent_.count_connections(r.binding);
    } catch (const KernelError& e) {
      entry["connections"] = json();
      spdlog::warn("{}", e.what());
    }
    out.push_back(std::move(entry));
  }
  return out;
}

json ControlHandler::stats(const json& p) {
  check_params(p, {"format"});
  std::string format = "json";
  if (auto it = p.find("format"); it != p.end()) {
    if (!it->is_string() || (*it != "json" && *it != "prometheus"))
      refuse(control::kInvalidParams, "must be \"json\" or \"prometheus\"", "params.format");
    format = it->get<std::string>();
  }
  if (!stats_) refuse(control::kRefused, "statistics are not kept by this daemon");
  const StatsReport report = stats_();
  if (format == "prometheus") return {{"text", render_prometheus(report)}};
  auto figures = [](const StatFigures& f) {
    return json{{"active", f.active},   {"opened", f.opened},   {"closed", f.closed},
                {"flushed", f.flushed}, {"refused", f.refused}, {"misses", f.misses}};
  };
  json services = json::array(), backends = json::array();
  for (const auto& [key, f] : report.services) {
    json entry = figures(f);
    entry["service"] = key;
    services.push_back(std::move(entry));
  }
  for (const auto& [name, f] : report.backends) {
    json entry = figures(f);
    entry["backend"] = name;
    backends.push_back(std::move(entry));
  }
  return {
      {"services", std::move(services)},
      {"backends", std::move(backends)},
      {"events",
       {{"received", report.events}, {"losses", report.event_losses}, {"resyncs", report.resyncs}}},
      {"guard_drops", report.guard_drops},
      {"misses", report.misses},
      {"repairs", report.repairs},
      {"conntrack",
       {{"count", report.conntrack_count},
        {"max", report.conntrack_max},
        {"full", report.conntrack_full}}}};
}

json ControlHandler::status() {
  const State& current = agent_.current();
  json checks = json::array();
  for (const auto& bridge : agent_.datapath().bridges) {
    auto link = routes_.link(bridge);
    checks.push_back({{"check", "bridge " + bridge},
                      {"ok", link && link->up},
                      {"detail", !link      ? "missing"
                                 : link->up ? "up"
                                            : "down"}});
  }
  for (const auto& req : datapath_sysctls(agent_.datapath().bridges)) {
    const auto value = sysctls_.read(req.key);
    checks.push_back({{"check", "sysctl " + sysctl_display_name(req.key)},
                      {"ok", value && *value == req.value},
                      {"detail", value ? *value : "missing"}});
  }
  const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::steady_clock::now() - info_.started)
                          .count();
  json last_error;
  if (last_error_) last_error = {{"time", last_error_->first}, {"message", last_error_->second}};
  return {{"version", info_.version},
          {"uptime_seconds", uptime},
          {"backends", current.backends.size()},
          {"services", current.services.size()},
          {"bindings", agent_.datapath().bindings.size()},
          {"draining", draining(std::nullopt)},
          {"refused_keys", agent_.datapath().refused.size()},
          {"repairs", agent_.repairs()},
          {"state_dir", info_.state_dir},
          {"socket", info_.socket},
          {"prerequisites", std::move(checks)},
          {"last_error", std::move(last_error)}};
}

}  // namespace hostlb
