// Chaining on this host (policies/chaining.h) kept in step with the desired
// state: after every change the planner follows the agent's state and the
// uplink's program gets what differs; every second, changes older than the
// window stop chaining.
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "agent.h"
#include "clock.h"
#include "event_loop.h"
#include "hostlb/netlink/chaining.h"
#include "hostlb/policies/chaining.h"
#include "state_store.h"

namespace hostlb {

struct ChainOptions {
  std::string uplink;                // the bridge port toward the gateways
  std::set<MacAddress> gateways;     // whose frames may be chained
  std::chrono::seconds window{600};  // after a change, how long its rows chain
};

class Chainer {
 public:
  // Attaches the program (throws KernelError) and follows the agent; the
  // rows an earlier run chained (the store's record) chain on until their
  // window ends.
  Chainer(EventLoop& loop, Agent& agent, ChainDatapath& kernel, StateStore& store,
          const Clock& clock, const std::string& host, const MacAddress& uplink_mac,
          ChainOptions options);
  Chainer(const Chainer&) = delete;
  Chainer& operator=(const Chainer&) = delete;

  // Chained packets per service (since the program was loaded).
  std::map<ServiceKey, uint64_t> chained();
  // For `status`: the uplink, services and rows chaining now, packets chained.
  nlohmann::json status();

 private:
  void sync();
  // The kernel and the store follow the planner.
  void write();

  Agent& agent_;
  ChainDatapath& kernel_;
  StateStore& store_;
  const Clock& clock_;
  ChainOptions options_;
  ChainPlanner planner_;
  uint64_t seen_generation_ = 0;
  RepeatingTimer expiry_;
};

}  // namespace hostlb
