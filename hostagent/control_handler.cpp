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
#include "overloaded.h"

namespace hostlb {
namespace {

using control::Error;
using nlohmann::json;

[[noreturn]] void refuse(int code, std::string message, std::string path = "") {
  throw control::RequestError({code, std::move(message), std::move(path)});
}

// Runs a check whose DocumentError paths are relative to `params`.
template <typename F>
void with_params_paths(F&& f) {
  try {
    f();
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

}  // namespace

json service_json(const Service& service) {
  json out = service_to_json(service);
  out["service"] = service.key.str();
  return out;
}

json gateway_table_json(const GatewayService& service) {
  std::vector<size_t> rows(service.backends.size()), tracked(service.backends.size());
  for (auto o : service.owner) ++rows[o];
  for (auto row : service.tracked) ++tracked[service.owner[row]];
  json backends = json::array();
  for (size_t i = 0; i < service.backends.size(); ++i)
    backends.push_back(
        {{"name", service.backends[i]},
         {"mac", service.macs[i].str()},
         {"weight", service.weights[i]},
         {"state", service.drained[i] ? std::string("drained")
                                      : std::string(binding_state_name(service.states[i]))},
         {"rows", rows[i]},
         {"tracked_rows", tracked[i]}});
  return {{"service", service.key.str()},
          {"rows", service.rows},
          {"tracked_rows", service.tracked.size()},
          {"backends", backends}};
}

json which_json(const control::WhichRequest& request, const GatewayService& service,
                const FlowChoice& choice) {
  return {{"service", service.key.str()},
          {"client", endpoint_str(request.client, request.client_port)},
          {"row", choice.row},
          {"rows", service.rows},
          {"backend", choice.backend ? json(*choice.backend) : json()},
          {"mac", choice.mac ? json(choice.mac->str()) : json()},
          {"tracked", choice.tracked}};
}

ControlHandlerBase::ControlHandlerBase(DocumentOptions doc_options, DaemonInfo info)
    : doc_options_(std::move(doc_options)), info_(std::move(info)) {}

ControlHandler::ControlHandler(Agent& agent, RouteTable& routes, Sysctls& sysctls,
                               DocumentOptions doc_options, DaemonInfo info)
    : ControlHandlerBase(std::move(doc_options), std::move(info)),
      agent_(agent),
      routes_(routes),
      sysctls_(sysctls) {}

void ControlHandlerBase::note_error(const std::string& message) {
  last_error_ = std::make_pair(now_text(), message);
}

json ControlHandlerBase::last_error() const {
  if (!last_error_) return nullptr;
  return {{"time", last_error_->first}, {"message", last_error_->second}};
}

json ControlHandlerBase::uptime_seconds() const {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                          info_.started)
      .count();
}

ControlReply ControlHandler::reply(const json& id, control::TypedRequest& typed) {
  if (const auto* c = std::get_if<control::ConnectionsRequest>(&typed)) return connections(id, *c);
  return control::encode_result(id, serve(typed));
}

ControlReply ControlHandlerBase::handle(const PeerCredentials& peer, std::string_view line,
                                        std::string_view document) {
  Error error;
  json id;
  auto request = control::decode_request(line, &error, &id);
  if (!request) return control::encode_error(id, error);
  request->document = document;
  try {
    control::TypedRequest typed = control::decode_params(*request, doc_options_);
    if (fleet_ && (std::holds_alternative<control::ApplyRequest>(typed) ||
                   std::holds_alternative<control::EditRequest>(typed)))
      throw control::RequestError(
          {control::kRefused,
           "this hostlbd follows the fleet in etcd: change the fleet instead (hostlbctl fleet "
           "apply), local changes would be undone by it",
           ""});
    return reply(request->id, typed);
  } catch (const control::RequestError& r) {
    error = r.error();
  } catch (const DocumentError& e) {
    error = {control::kRefused, e.reason(), e.path()};
  } catch (const PreconditionError& e) {
    error = {control::kRefused, e.what(), ""};
  } catch (const IdSpaceExhausted& e) {
    error = {control::kRefused, e.what(), ""};
  } catch (const GatewayIndexExhausted& e) {
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

json ControlHandler::serve(control::TypedRequest& request) {
  using namespace control;
  const State& current = agent_.current();
  return std::visit(
      Overloaded{
          [&](const StatusRequest&) { return status(); },
          [&](const GetRequest&) { return json(state_to_json(current)); },
          [&](ApplyRequest& r) { return apply(r); },
          [&](const StatsRequest& r) { return stats(r); },
          [&](const BackendListRequest&) { return backend_list(); },
          [&](const ServiceListRequest&) {
            json out = json::array();
            for (const auto& s : current.services) out.push_back(service_json(s));
            return out;
          },
          [&](const EditRequest& r) { return edit(r.edit, r.drain_seconds); },
          [&](const FlushRequest& r) {
            check_filter(r.filter, current);
            return json{{"flushed", agent_.flush(r.filter.service, r.filter.backend)}};
          },
          [&](const ConnectionsRequest&) -> json {
            refuse(kInternalError, "connections is answered as a stream");
          },
          [&](const WhichRequest& r) {
            // From the model: a host keeps the whole fleet state.
            const auto service = compile_gateway_service(current, r.service);
            if (!service) refuse(kInvalidParams, "no service " + r.service.str(), "params.service");
            return which_json(r, *service, choose(*service, r.client, r.client_port));
          },
          [&](const GatewayTableRequest& r) {
            const auto service = compile_gateway_service(current, r.service);
            if (!service) refuse(kInvalidParams, "no service " + r.service.str(), "params.service");
            return gateway_table_json(*service);
          },
          [&](const HealthRequest&) -> json {
            if (!health_) return {{"bindings", json::array()}};
            return health_->report();
          },
          [&](const GatewayDigestRequest&) -> json {
            refuse(kRefused,
                   "this hostlbd is a host: the digest is a gateway's (hostlbd --role gateway)");
          },
      },
      request);
}

json ControlHandler::backend_list() {
  const State& current = agent_.current();
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

namespace {

json connection_json(const Binding& b, const ConntrackEntry& e, uint64_t now_ns) {
  return {
      {"protocol", e.tcp ? "tcp" : "udp"},
      {"client", endpoint_str(e.client, e.client_port)},
      {"vip", endpoint_str(e.vip, e.vip_port)},
      {"service", b.key.service.str()},
      {"backend", b.key.backend},
      {"backend_address", endpoint_str(e.backend, e.backend_port)},
      {"state", e.tcp ? json(e.state) : json()},
      {"age_seconds",
       e.start_ns && e.start_ns <= now_ns ? json((now_ns - e.start_ns) / 1000000000ULL) : json()}};
}

// Batches of at least 1,000 entries (as the kernel's parts come), each read
// from the kernel only when the client has taken the one before: hostlbd
// holds one batch, whatever the size of the table.
class ConnectionsStream final : public ReplyStream {
 public:
  ConnectionsStream(json id, std::unique_ptr<Agent::ConnectionCursor> cursor, bool count_only,
                    std::function<void(const std::string&)> note_error)
      : id_(std::move(id)),
        cursor_(std::move(cursor)),
        count_only_(count_only),
        note_error_(std::move(note_error)),
        now_ns_(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count())) {}

  bool next(std::string& out) override {
    if (done_) return false;
    try {
      json batch = json::array();
      bool more = true;
      while (more && batch.size() < kBatch)
        more = cursor_->next([&](const Binding& b, const ConntrackEntry& e) {
          if (!count_only_) batch.push_back(connection_json(b, e, now_ns_));
        });
      if (!batch.empty())
        out += control::encode_notification("connections.batch",
                                            {{"id", id_}, {"connections", std::move(batch)}});
      if (more) return true;
      out += control::encode_result(id_, {{"count", cursor_->count()}});
    } catch (const KernelError& e) {
      out += control::encode_error(id_, {control::kKernelError, e.what(), ""});
      note_error_(std::string("connections: ") + e.what());
    }
    done_ = true;
    return false;
  }

 private:
  static constexpr size_t kBatch = 1000;
  json id_;
  std::unique_ptr<Agent::ConnectionCursor> cursor_;
  bool count_only_;
  std::function<void(const std::string&)> note_error_;
  uint64_t now_ns_;
  bool done_ = false;
};

}  // namespace

ControlReply ControlHandler::connections(const json& id,
                                         const control::ConnectionsRequest& request) {
  const control::BindingFilter& filter = request.filter;
  control::check_filter(filter, agent_.current());
  return {"", std::make_unique<ConnectionsStream>(
                  id, agent_.open_connections(filter.service, filter.backend), request.count_only,
                  [this](const std::string& m) { note_error(m); })};
}

json ControlHandler::edit(const Edit& e, uint32_t drain_seconds) {
  // Checked here too, so that parameter paths are those of the request.
  with_params_paths([&] { check_edit(agent_.current(), e); });
  const auto changes = describe_edit(agent_.current(), e);
  const ApplyReport report = agent_.edit(e, drain_seconds);
  return {{"changes", changes},
          {"kernel_changed", report.kernel_changed()},
          {"flushed", report.connections_flushed},
          {"draining", report.bindings_draining}};
}

json ControlHandler::apply(control::ApplyRequest& request) {
  State& next = request.document;
  const StateChanges parts = changed_parts(agent_.current(), next);
  auto changes = describe_changes(parts);
  if (request.dry_run) return {{"dry_run", true}, {"changes", std::move(changes)}};
  const ApplyReport report = agent_.change(std::move(next), parts, request.drain_seconds);
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

json ControlHandler::stats(const control::StatsRequest& request) {
  if (!stats_) refuse(control::kRefused, "statistics are not kept by this daemon");
  const StatsReport report = stats_();
  if (request.prometheus) return {{"text", render_prometheus(report)}};
  auto figures = [](const StatFigures& f) {
    return json{{"active", f.active},   {"opened", f.opened},   {"closed", f.closed},
                {"flushed", f.flushed}, {"refused", f.refused}, {"unhealthy", f.unhealthy},
                {"misses", f.misses}};
  };
  json services = json::array(), backends = json::array();
  for (const auto& [key, f] : report.services) {
    json entry = figures(f);
    entry["limited"] = f.limited;
    entry["chained"] = f.chained;
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
      {"limited", report.limited},
      {"repairs", report.repairs},
      {"health",
       {{"probes", report.health_probes}, {"failed_probes", report.health_probes_failed}}},
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
  if (info_.datapath == HostDatapathKind::kBpf) {
    const auto problems = bpf_datapath_problems(sysctls_, agent_.datapath().bridges);
    checks.push_back({{"check", "br_netfilter off for the bridges"},
                      {"ok", problems.empty()},
                      {"detail", problems.empty() ? "off" : problems.front()}});
  } else {
    for (const auto& req : datapath_sysctls(agent_.datapath().bridges)) {
      const auto value = sysctls_.read(req.key);
      checks.push_back({{"check", "sysctl " + sysctl_display_name(req.key)},
                        {"ok", value && *value == req.value},
                        {"detail", value ? *value : "missing"}});
    }
  }
  size_t not_serving = 0;
  for (const auto& b : agent_.datapath().bindings) not_serving += b.serving ? 0 : 1;
  json health = {{"checked", 0}, {"up", 0}, {"down", 0}, {"unknown", 0}};
  if (health_) {
    const json report = health_->report();
    health["checked"] = report["bindings"].size();
    for (const auto& b : report["bindings"])
      health[b["state"].get<std::string>()] = health[b["state"].get<std::string>()].get<int>() + 1;
  }
  health["not_serving"] = not_serving;
  return {{"version", info_.version},
          {"role", "host"},
          {"uptime_seconds", uptime_seconds()},
          {"backends", current.backends.size()},
          {"services", current.services.size()},
          {"bindings", agent_.datapath().bindings.size()},
          {"draining", draining(std::nullopt)},
          {"refused_keys", agent_.datapath().refused.size()},
          {"health", std::move(health)},
          {"chaining", chainer_ ? chainer_->status() : json()},
          {"repairs", agent_.repairs()},
          {"state_dir", info_.state_dir},
          {"host", info_.host},
          {"socket", info_.socket},
          {"prerequisites", std::move(checks)},
          {"datapath", host_datapath_name(info_.datapath)},
          {"admission",
           {{"embryonic_timeout", info_.admission.embryonic_seconds},
            {"service_new_rate", info_.admission.new_per_second},
            {"service_new_burst", info_.admission.burst}}},
          {"fleet", fleet_status()},
          {"last_error", last_error()}};
}

}  // namespace hostlb
