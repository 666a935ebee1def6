// What a gateway holds: for every service, a table of rows, each owned by
// one backend (by rendezvous hashing, selection.h). The gateway's kernel
// table computes a flow's row with nft's jhash and looks its owner's MAC up
// in one map shared by all services, each service's rows offset by its
// index << 16. Pure: compiled from the fleet's state, diffed, digested.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "hostlb/policies/model.h"

namespace hostlb {

struct GatewayService {
  ServiceKey key;
  uint32_t index = 0;  // 1..kMaxGatewayServices; rows are marked index << 16 | row
  uint32_t rows = 0;
  std::vector<std::string> backends;  // sorted by name
  std::vector<MacAddress> macs;       // of `backends`
  std::vector<uint32_t> weights;      // of `backends`
  std::vector<BindingState> states;   // of `backends`
  std::vector<bool> drained;          // of `backends`: draining, its warm-up over
  // Per row: an index into `backends`, the winner among the active and the
  // warming draining ones; empty: no such backend.
  std::vector<uint16_t> owner;
  // Rows (ascending) whose winner among the active, horizon and warming
  // draining backends is not active: the flows of these rows are the only
  // ones a promotion or the end of a warm-up can move, so the gateways track
  // them (JET). Empty when `owner` is.
  std::vector<uint32_t> tracked;
  uint64_t rows_hash = 0;  // of every row's MAC and the tracked rows

  uint32_t mark(uint32_t row) const { return index << 16 | row; }
  bool operator==(const GatewayService&) const = default;
};

inline constexpr uint32_t kMaxGatewayServices = 65535;

struct GatewayDatapath {
  std::vector<GatewayService> services;  // sorted by key
  const GatewayService* find(const ServiceKey& key) const;
  size_t row_count() const;  // rows that have an owner, all services
  bool operator==(const GatewayDatapath&) const = default;
};

using ServiceIndexes = std::map<ServiceKey, uint32_t>;
ServiceIndexes indexes_of(const GatewayDatapath& datapath);

// A binding: a service and one of its backends.
using BindingName = std::pair<ServiceKey, std::string>;
// Draining bindings whose warm-up is over (the gateway times it): their
// rows move to the other backends, their tracked flows stay.
using DrainedBindings = std::set<BindingName>;

class GatewayIndexExhausted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Every service of the fleet state with its rows filled from all of its
// backends, whatever host they run on. A service keeps the index it has in
// `previous`; a new one takes the lowest free index. Throws
// GatewayIndexExhausted past kMaxGatewayServices services.
GatewayDatapath compile_gateway(const State& state, const ServiceIndexes& previous,
                                const DrainedBindings& drained = {});
// The same, taking from `applied` the rows of every service whose row
// count, backends, weights, states and MACs are unchanged: a change costs
// the services it touches, not the whole fleet.
GatewayDatapath recompile_gateway(const State& state, const GatewayDatapath& applied,
                                  const DrainedBindings& drained = {});

// The table of one service of `state` (for `which` on a host, which keeps
// the whole fleet state but no gateway table). nullopt: no such service.
std::optional<GatewayService> compile_gateway_service(const State& state, const ServiceKey& key,
                                                      const DrainedBindings& drained = {});

// The backend a flow gets from a service's table: the row, and the owner
// (none when the service has no backend).
struct FlowChoice {
  uint32_t row = 0;
  std::optional<std::string> backend;
  std::optional<MacAddress> mac;
  bool tracked = false;  // a gateway tracks the flow from its first packet on
};
FlowChoice choose(const GatewayService& service, const IpAddress& client, uint16_t client_port);

// What a change does at a gateway. A service whose row count changes is
// removed and added again (its chain computes rows with another modulus).
struct GatewayDiff {
  std::vector<GatewayService> services_added;
  std::vector<GatewayService> services_removed;
  struct Row {
    uint32_t mark = 0;
    std::optional<MacAddress> before, after;  // none: no element
    bool operator==(const Row&) const = default;
  };
  // Rows of services in both whose owner's MAC changes: only those.
  std::vector<Row> rows;
  // Marks of rows of services in both that become tracked, or no longer.
  std::vector<uint32_t> track_added, track_removed;
  bool empty() const {
    return services_added.empty() && services_removed.empty() && rows.empty() &&
           track_added.empty() && track_removed.empty();
  }
};
GatewayDiff diff_gateway(const GatewayDatapath& before, const GatewayDatapath& after);

// Compares the kernel's row map, read in parts, with what was applied:
// the rows to put right, as a diff's rows (`before` what the kernel holds,
// `after` what was applied): re-pointed rows, missing rows, and rows in
// hostlb's map that no applied service has. Memory: a bit a row.
class RowAudit {
 public:
  explicit RowAudit(const GatewayDatapath& applied);
  // One element of the kernel's map.
  void saw(uint32_t mark, const MacAddress& mac);
  // Once the whole map was seen.
  std::vector<GatewayDiff::Row> finish() const;
  size_t rows_seen() const { return seen_count_; }

 private:
  const GatewayService* service_of(uint32_t mark) const;

  const GatewayDatapath& applied_;
  std::map<uint32_t, size_t> by_index_;   // service index -> position in applied_.services
  std::vector<std::vector<bool>> seen_;   // per service, per row
  std::vector<GatewayDiff::Row> differ_;  // re-pointed and foreign rows, as seen
  size_t seen_count_ = 0;
};

// What an audit's rows are: re-pointed (a MAC on both sides), missing (only
// the applied one), foreign (only the kernel's).
struct RowDifferences {
  size_t repointed = 0, missing = 0, foreign = 0;
};
RowDifferences count_differences(const std::vector<GatewayDiff::Row>& rows);

// The marks of the tracked rows of `services`.
std::vector<uint32_t> tracked_marks(const std::vector<GatewayService>& services);

// The draining bindings of `state` (to time their warm-ups).
std::vector<BindingName> draining_bindings(const State& state);

// The fleet state as a gateway without tracking compiles it (plain
// stateless selection, what OVN's stateless load balancer does): horizon
// bindings take no part, draining ones own no rows.
State without_tracking(const State& state);

// A gateway's figures, as its status, stats and metrics file show them.
struct GatewayFigures {
  bool tracking = true;                          // --no-tracking: false
  uint64_t rows = 0, tracked_rows = 0;           // of the table, all services
  uint64_t tracked_flows = 0;                    // in the tracking maps now
  uint64_t track_attempts = 0, track_added = 0;  // the difference: a full map
  uint64_t rows_changed_last = 0;                // by the last change
  uint64_t drains_warming = 0, drains_moved = 0;
  uint64_t repairs = 0;  // tables built again after another process's commit
  uint64_t track_failed() const { return track_attempts - std::min(track_attempts, track_added); }
  // The share of rows tracked: the share of flows a gateway is expected to
  // track (it sees no untracked flow to count).
  double tracked_row_fraction() const {
    return rows == 0 ? 0.0 : static_cast<double>(tracked_rows) / static_cast<double>(rows);
  }
};
// The Prometheus text format of `f` (hostlb_gateway_*).
std::string render_gateway_prometheus(const GatewayFigures& f);

// A digest of what the kernel of any gateway that applied `datapath` holds
// (service keys, indexes, row counts, every row's MAC and which rows are
// tracked): equal digests,
// equal choices. 16 hex digits.
std::string gateway_digest(const GatewayDatapath& datapath);

}  // namespace hostlb
