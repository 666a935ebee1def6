#include "chainer.h"

#include <spdlog/spdlog.h>

namespace hostlb {

Chainer::Chainer(EventLoop& loop, Agent& agent, ChainDatapath& kernel, const Clock& clock,
                 const std::string& host, const MacAddress& uplink_mac, ChainOptions options)
    : agent_(agent),
      kernel_(kernel),
      clock_(clock),
      options_(std::move(options)),
      planner_(host, options_.window),
      expiry_(loop, std::chrono::seconds(1), [this] {
        if (planner_.expire(clock_.monotonic())) kernel_.update(planner_.tables());
      }) {
  kernel_.attach(options_.uplink, uplink_mac);
  kernel_.set_gateways(options_.gateways);
  spdlog::info(
      "chaining on {}: mid-flow packets from {} gateways without a connection here go "
      "to their row's previous owner for {} s after a change",
      options_.uplink, options_.gateways.size(), options_.window.count());
  sync();
  loop.on_prepare([this] { sync(); });
}

void Chainer::sync() {
  if (synced_ && agent_.generation() == seen_generation_) return;
  seen_generation_ = agent_.generation();
  synced_ = true;
  planner_.follow(agent_.current(), clock_.monotonic());
  kernel_.update(planner_.tables());
}

std::map<ServiceKey, uint64_t> Chainer::chained() {
  std::map<ServiceKey, uint64_t> out;
  for (const auto& [index, packets] : kernel_.chained())
    if (const ServiceKey* key = planner_.service_of(index)) out[*key] += packets;
  return out;
}

nlohmann::json Chainer::status() {
  uint64_t total = 0;
  for (const auto& [key, packets] : chained()) total += packets;
  return {{"uplink", options_.uplink},
          {"gateways", options_.gateways.size()},
          {"window", options_.window.count()},
          {"services", planner_.tables().services.size()},
          {"rows", planner_.tables().previous.size()},
          {"chained", total}};
}

}  // namespace hostlb
