#include "chainer.h"

#include <spdlog/spdlog.h>

namespace hostlb {

Chainer::Chainer(EventLoop& loop, Agent& agent, ChainDatapath& kernel, StateStore& store,
                 const Clock& clock, const std::string& host, const MacAddress& uplink_mac,
                 ChainOptions options)
    : agent_(agent),
      kernel_(kernel),
      store_(store),
      clock_(clock),
      options_(std::move(options)),
      planner_(host, options_.window),
      expiry_(loop, std::chrono::seconds(1), [this] {
        if (planner_.expire(clock_.monotonic())) write();
      }) {
  kernel_.attach(options_.uplink, uplink_mac);
  kernel_.set_gateways(options_.gateways);
  spdlog::info(
      "chaining on {}: mid-flow packets from {} gateways without a connection here go "
      "to their row's previous owner for {} s after a change",
      options_.uplink, options_.gateways.size(), options_.window.count());
  planner_.follow(agent_.current(), clock_.monotonic());
  seen_generation_ = agent_.generation();
  try {
    if (const auto saved = store_.load_chaining()) {
      planner_.restore(nlohmann::json::parse(*saved), clock_.monotonic(), clock_.unix_ms());
      if (!planner_.tables().previous.empty())
        spdlog::info(
            "chaining: {} rows of changes before the restart chain until their window "
            "ends",
            planner_.tables().previous.size());
    }
  } catch (const std::exception& e) {
    // A record that cannot be read costs the rest of a window, nothing else.
    spdlog::warn("chaining: ignoring {}: {}", store_.chaining_path(), e.what());
  }
  write();
  loop.on_prepare([this] { sync(); });
}

void Chainer::sync() {
  if (agent_.generation() == seen_generation_) return;
  seen_generation_ = agent_.generation();
  const ChainTables before = planner_.tables();
  planner_.follow(agent_.current(), clock_.monotonic());
  if (!(planner_.tables() == before)) write();
}

void Chainer::write() {
  kernel_.update(planner_.tables());
  try {
    store_.save_chaining(planner_.to_json(clock_.monotonic(), clock_.unix_ms()).dump());
  } catch (const StoreError& e) {
    spdlog::warn("chaining: {} (a restart would forget the rows that chain now)", e.what());
  }
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
