// The gateway role's control methods: the same socket, protocol and
// hostlbctl as a host's; the methods that only make sense where backends
// run (connections, flush, stats) are refused with a word on why.
#pragma once

#include "control_handler.h"
#include "gateway_agent.h"

namespace hostlb {

class GatewayControlHandler final : public ControlHandlerBase {
 public:
  GatewayControlHandler(GatewayAgent& agent, const GatewayConfig& config,
                        DocumentOptions doc_options, DaemonInfo info);

 private:
  ControlReply reply(const nlohmann::json& id, control::TypedRequest& request) override;
  nlohmann::json serve(control::TypedRequest& request);
  // The answer to a change, with its description taken before it.
  nlohmann::json changed(const GatewayReport& report, std::vector<std::string> changes);
  // The table of a service this gateway has; RequestError otherwise.
  const GatewayService& table_of(const ServiceKey& service) const;

  GatewayAgent& agent_;
  GatewayConfig config_;
};

}  // namespace hostlb
