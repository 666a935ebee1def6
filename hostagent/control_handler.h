// The control methods: a request line is decoded into a typed request by
// policies/ (control_requests.h), served by the Agent, and its reply
// encoded. Methods are documented in hostlbctl(8).
#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "agent.h"
#include "chainer.h"
#include "control_server.h"
#include "health_monitor.h"
#include "hostlb/netlink/host_bpf.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/routes.h"
#include "hostlb/netlink/sysctl.h"
#include "hostlb/policies/connection_stats.h"
#include "hostlb/policies/control_protocol.h"
#include "hostlb/policies/control_requests.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/gateway.h"
#include "hostlb/policies/state_diff.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

struct DaemonInfo {
  std::string version;
  std::string state_dir;
  std::string socket;
  std::string host;             // this hypervisor's name in fleet documents
  AdmissionLimits admission{};  // what the host's ruleset applies (status shows it)
  HostDatapathKind datapath = HostDatapathKind::kNft;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// What every role's handler shares: a request line is decoded and its
// parameters typed once; the role serves it; failures become JSON-RPC errors
// and the ones worth an operator's look are kept for `status`.
class ControlHandlerBase {
 public:
  ControlHandlerBase(DocumentOptions doc_options, DaemonInfo info);
  virtual ~ControlHandlerBase() = default;

  // One request line (and the raw document that followed it, if any) in,
  // the reply (one line, or notifications and then the result) out.
  ControlReply handle(const PeerCredentials& peer, std::string_view line,
                      std::string_view document = {});

  // Remembers a failure for `status` (a refused request, a failed reload).
  void note_error(const std::string& message);
  // The daemon follows the fleet in etcd: `status` tells where it stands
  // (shown in `status` as "fleet"), and local changes of the state (apply,
  // edits) are refused: the two sources are not mixed on one machine.
  void follow_fleet(std::function<nlohmann::json()> status) { fleet_ = std::move(status); }
  // True once after a request left megabytes freed (a whole document
  // replaced the state): the event loop gives them back to the system when
  // idle, not in the middle of a request.
  bool take_memory_to_return() { return std::exchange(memory_to_return_, false); }

 protected:
  // The encoded reply to a decoded request. Throws control::RequestError,
  // DocumentError, KernelError, StoreError, ...
  virtual ControlReply reply(const nlohmann::json& id, control::TypedRequest& request) = 0;
  nlohmann::json last_error() const;
  nlohmann::json uptime_seconds() const;
  nlohmann::json fleet_status() const { return fleet_ ? fleet_() : nlohmann::json(nullptr); }

  DocumentOptions doc_options_;
  DaemonInfo info_;
  bool memory_to_return_ = false;

 private:
  std::optional<std::pair<std::string, std::string>> last_error_;  // (time, message)
  std::function<nlohmann::json()> fleet_;
};

// The host role: serves the Agent.
class ControlHandler final : public ControlHandlerBase {
 public:
  ControlHandler(Agent& agent, RouteTable& routes, Sysctls& sysctls, DocumentOptions doc_options,
                 DaemonInfo info);

  // Where `stats` gets its figures (unset: `stats` is refused).
  void set_stats_source(std::function<StatsReport()> source) { stats_ = std::move(source); }
  // Where `health` and the health parts of `status` and `stats` come from
  // (unset: no checks run).
  void set_health_monitor(const HealthMonitor* monitor) { health_ = monitor; }
  void set_chainer(Chainer* chainer) { chainer_ = chainer; }

 private:
  ControlReply reply(const nlohmann::json& id, control::TypedRequest& request) override;
  // The result of every method but connections.
  // (Taken by reference: a document is moved on, not copied.)
  nlohmann::json serve(control::TypedRequest& request);
  // The reply to "connections": a stream of batches as notifications, each
  // made when the client has read the one before, then the result.
  ControlReply connections(const nlohmann::json& id, const control::ConnectionsRequest& request);
  nlohmann::json status();
  nlohmann::json stats(const control::StatsRequest& request);
  nlohmann::json backend_list();
  nlohmann::json edit(const Edit& edit, uint32_t drain_seconds = 0);
  // Draining bindings (of one backend), with their time and connections left.
  nlohmann::json draining(const std::optional<std::string>& backend);
  nlohmann::json apply(control::ApplyRequest& request);

  Agent& agent_;
  RouteTable& routes_;
  Sysctls& sysctls_;
  std::function<StatsReport()> stats_;
  const HealthMonitor* health_ = nullptr;
  Chainer* chainer_ = nullptr;
};

// Views shared by both roles.
nlohmann::json service_json(const Service& service);
// gateway.table: rows per backend of one service's table.
nlohmann::json gateway_table_json(const GatewayService& service);
// which: the row and backend of a flow (and what a gateway's kernel holds).
nlohmann::json which_json(const control::WhichRequest& request, const GatewayService& service,
                          const FlowChoice& choice);

}  // namespace hostlb
