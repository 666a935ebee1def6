#include "gateway_control.h"

#include <algorithm>

#include "hostlb/policies/state_diff.h"
#include "overloaded.h"

namespace hostlb {
namespace {

using nlohmann::json;

[[noreturn]] void not_here(const char* method) {
  throw control::RequestError(
      {control::kRefused,
       std::string(method) + " is served where the backends run (a host), not by a gateway", ""});
}

[[noreturn]] void no_drain() {
  throw control::RequestError(
      {control::kInvalidParams,
       "a gateway does not drain a removal: its rows move at once (drain the binding first with "
       "`hostlbctl service drain`, or drain on the hosts)",
       "params.drain"});
}

json tracking_json(const GatewayFigures& f) {
  return {{"enabled", f.tracking},
          {"flows", f.tracked_flows},
          {"attempts", f.track_attempts},
          {"added", f.track_added},
          {"failed", f.track_failed()},
          {"tracked_rows", f.tracked_rows},
          {"tracked_row_fraction", f.tracked_row_fraction()},
          {"drains_warming", f.drains_warming},
          {"drains_moved", f.drains_moved},
          {"rows_changed_last", f.rows_changed_last}};
}

}  // namespace

GatewayControlHandler::GatewayControlHandler(GatewayAgent& agent, const GatewayConfig& config,
                                             DocumentOptions doc_options, DaemonInfo info)
    : ControlHandlerBase(std::move(doc_options), std::move(info)), agent_(agent), config_(config) {}

ControlReply GatewayControlHandler::reply(const json& id, control::TypedRequest& request) {
  return control::encode_result(id, serve(request));
}

const GatewayService& GatewayControlHandler::table_of(const ServiceKey& service) const {
  const GatewayService* s = agent_.tables().find(service);
  if (!s)
    throw control::RequestError(
        {control::kInvalidParams, "no service " + service.str(), "params.service"});
  return *s;
}

json GatewayControlHandler::changed(const GatewayReport& report, std::vector<std::string> changes) {
  return {{"changes", std::move(changes)},
          {"kernel_changed", report.rows_written > 0 || report.services_added > 0 ||
                                 report.services_removed > 0 || report.rebuilt},
          {"rows_written", report.rows_written},
          {"flushed", 0},
          {"draining", 0}};
}

json GatewayControlHandler::serve(control::TypedRequest& request) {
  using namespace control;
  const State& current = agent_.current();
  return std::visit(
      Overloaded{
          [&](const StatusRequest&) -> json {
            const GatewayFigures f = agent_.figures();
            const size_t rows = f.rows;
            json tracking = tracking_json(f);
            tracking["timeout"] = config_.track_timeout_s;
            tracking["size"] = config_.track_size;
            return {{"version", info_.version},
                    {"role", "gateway"},
                    {"uptime_seconds", uptime_seconds()},
                    {"backends", current.backends.size()},
                    {"services", current.services.size()},
                    {"bindings", rows},
                    {"rows", rows},
                    {"digest", agent_.digest()},
                    {"client_interface", config_.client_interface},
                    {"fabric_interface", config_.fabric_interface},
                    {"gateway_mac", config_.gateway_mac.str()},
                    {"datapath", engine_name(config_.engine)},
                    {"draining", json::array()},
                    {"refused_keys", 0},
                    {"repairs", f.repairs},
                    {"tracking", std::move(tracking)},
                    {"state_dir", info_.state_dir},
                    {"host", info_.host},
                    {"socket", info_.socket},
                    {"prerequisites", json::array()},
                    {"fleet", fleet_status()},
                    {"last_error", last_error()}};
          },
          [&](const GetRequest&) -> json { return state_to_json(current); },
          [&](ApplyRequest& r) -> json {
            if (r.dry_run)
              return {{"dry_run", true}, {"changes", describe_changes(current, r.document)}};
            if (r.drain_seconds != 0) no_drain();
            memory_to_return_ = true;
            auto changes = describe_changes(current, r.document);
            return changed(agent_.change(r.document), std::move(changes));
          },
          [&](const EditRequest& r) -> json {
            if (r.drain_seconds != 0) no_drain();
            try {
              check_edit(current, r.edit);
            } catch (const DocumentError& e) {
              throw RequestError(
                  {kInvalidParams, e.reason(), e.path().empty() ? "params" : "params." + e.path()});
            }
            auto changes = describe_edit(current, r.edit);
            return changed(agent_.edit(r.edit), std::move(changes));
          },
          [&](const BackendListRequest&) -> json {
            json out = json::array();
            for (const auto& b : current.backends)
              out.push_back({{"name", b.name},
                             {"mac", b.mac.str()},
                             {"ipv4", b.ipv4 ? json(b.ipv4->str()) : json()},
                             {"ipv6", b.ipv6 ? json(b.ipv6->str()) : json()},
                             {"bridge", b.bridge},
                             {"services", json::array()},
                             {"draining", json::array()}});
            return out;
          },
          [&](const ServiceListRequest&) -> json {
            json out = json::array();
            for (const auto& s : current.services) out.push_back(service_json(s));
            return out;
          },
          [&](const GatewayDigestRequest&) -> json {
            return {{"digest", agent_.digest()},
                    {"services", agent_.tables().services.size()},
                    {"rows", agent_.tables().row_count()}};
          },
          [&](const GatewayTableRequest& r) -> json {
            const GatewayService& s = table_of(r.service);
            json out = gateway_table_json(s);
            out["index"] = s.index;
            return out;
          },
          [&](const WhichRequest& r) -> json {
            const GatewayService& s = table_of(r.service);
            const auto model = choose(s, r.client, r.client_port);
            const auto kernel = agent_.kernel_row(s, model.row);
            json out = which_json(r, s, model);
            out["kernel_mac"] = kernel ? json(kernel->str()) : json();
            out["agrees"] = kernel == model.mac;
            return out;
          },
          [&](const FlushRequest&) -> json { not_here("flush"); },
          [&](const HealthRequest&) -> json { not_here("health"); },
          [&](const ConnectionsRequest&) -> json { not_here("connections"); },
          [&](const StatsRequest& r) -> json {
            const GatewayFigures f = agent_.figures();
            if (r.prometheus) return {{"text", render_gateway_prometheus(f)}};
            return {{"role", "gateway"}, {"tracking", tracking_json(f)}, {"repairs", f.repairs}};
          },
      },
      request);
}

}  // namespace hostlb
