// Chaining on a host (second chance, after Beamer and GLB): every host
// knows each service it serves (a service with a backend here) as the
// gateways fill its table, and the version before the last change. A
// mid-flow packet that reaches a local backend's row without a connection
// here belonged to the row's previous owner: it is sent there once. This
// is what JET alone cannot cover (a flow that ECMP moves to another
// gateway, gateways applying an update at different moments or restarting).
// Pure: which rows chain where, and for how long.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "hostlb/policies/gateway.h"
#include "hostlb/policies/model.h"

namespace hostlb {

struct ChainService {
  uint32_t index = 0;  // this host's own: rows are keyed index << 16 | row
  uint32_t rows = 0;
  bool operator==(const ChainService&) const = default;
};

// What the host's chaining program holds.
struct ChainTables {
  std::map<ServiceKey, ChainService> services;
  // Row key -> the previous owner's MAC: rows whose owner changed in their
  // service's last change, owned now by a backend of this host and before
  // by one elsewhere.
  std::map<uint32_t, MacAddress> previous;
  bool operator==(const ChainTables&) const = default;
};

class ChainPlanner {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // `window`: how long after a change its rows chain.
  ChainPlanner(std::string host, std::chrono::seconds window)
      : host_(std::move(host)), window_(window) {}

  // Follows a new desired state: a row that changed owner (new owner here,
  // old one elsewhere) chains until `now` + window. A row that changes
  // again within its window keeps its owner from before the first change
  // (the connections that need a second chance are the older ones; those
  // opened in between are JET's to keep) and its window starts again. The
  // table is the one the gateways hold once every drain's warm-up is over
  // (a draining backend's rows have moved).
  void follow(const State& state, TimePoint now);
  // Drops the rows whose window is over. Returns whether any chained.
  bool expire(TimePoint now);

  const ChainTables& tables() const { return tables_; }

  // What chains now, to keep across a restart: per service, its rows (by
  // row number: indexes are this run's) and when their window ends, in
  // Unix time (`now_unix_ms` is `now` on that clock).
  nlohmann::json to_json(TimePoint now, int64_t now_unix_ms) const;
  // After the first follow() of a run: the rows an earlier run kept, of
  // services still served whose window is not over. Throws DocumentError
  // for a record that is not one (nothing restored then).
  void restore(const nlohmann::json& saved, TimePoint now, int64_t now_unix_ms);
  // The service a row key belongs to (for per-service counts).
  const ServiceKey* service_of(uint32_t index) const;

 private:
  // A row whose owner changed within its window (wherever it is owned).
  struct Moved {
    std::string backend;  // its owner before the first of those changes
    MacAddress mac;       // that owner's (it may be gone from the state)
    TimePoint until{};
    bool chains = false;  // owned here now, and that owner is elsewhere
  };
  struct Followed {
    Service service;                     // as last followed
    std::vector<MacAddress> macs;        // of its backends, as last followed
    GatewayService table;                // its rows
    std::map<uint32_t, Moved> moved;     // by row
    std::vector<uint32_t> chained_rows;  // keys in tables_.previous
  };
  void forget_rows(Followed& f);
  // tables_.previous from f.moved.
  void publish(Followed& f, uint32_t index);

  std::string host_;
  std::chrono::seconds window_;
  std::map<ServiceKey, Followed> followed_;
  std::map<uint32_t, ServiceKey> by_index_;
  ChainTables tables_;
};

}  // namespace hostlb
