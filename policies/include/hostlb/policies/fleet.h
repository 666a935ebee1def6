// The fleet's desired state as keys of a store (etcd): one key per backend
// and one per service under a prefix, each value the JSON object a state
// document holds for it, so that a change to one service is one small
// write, and a fleet-wide change one transaction of the keys that differ.
//
//   PREFIX backends/NAME               {"name": NAME, "mac": ..., ...}
//   PREFIX services/VIP:PORT/PROTO     {"vip": ..., "port": ..., "protocol": ..., ...}
//
// Reading is per key: a key whose value is not valid (or names a backend
// that is not there) is reported with its reason and left out; the rest of
// the fleet is read.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/policies/gateway.h"
#include "hostlb/policies/model.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

class FleetLayout {
 public:
  // `prefix` ends with '/' (one is added if not). Throws DocumentError if it
  // is empty or does not start with '/'.
  explicit FleetLayout(std::string prefix);

  const std::string& prefix() const { return prefix_; }
  std::string backends() const { return prefix_ + "backends/"; }
  std::string services() const { return prefix_ + "services/"; }
  std::string backend_key(std::string_view name) const;
  std::string service_key(const ServiceKey& key) const;
  // The desired state's keys are those of [backends(), desired_end()):
  // "backends/" and "services/" sort next to each other, machines'
  // reports ("status/") after them.
  std::string desired_end() const { return prefix_ + "services0"; }
  bool is_desired(std::string_view key) const;
  // Where a machine of `role` ("host", "gateway") named `name` reports,
  // under a lease: the key is gone when the machine is.
  std::string status() const { return prefix_ + "status/"; }
  std::string status_key(std::string_view role, std::string_view name) const;
  // Written once, without a lease, by a machine that follows the fleet: a
  // watcher without a report is one whose lease expired. (Sorted after the
  // desired keys: registering is no change of the desired state.)
  std::string watchers() const { return prefix_ + "watchers/"; }
  std::string watcher_key(std::string_view role, std::string_view name) const;

 private:
  std::string prefix_;
};

// Keys and values as read from the store at one revision, by key.
using FleetKeys = std::map<std::string, std::string>;

struct FleetKeyError {
  std::string key;
  std::string reason;
  bool operator==(const FleetKeyError&) const = default;
};

struct FleetRead {
  State state;
  std::vector<FleetKeyError> errors;  // in key order
};

// The state the fleet's keys describe. Keys under the prefix that are
// neither a backend's nor a service's are ignored (machines' reports live
// there too).
FleetRead read_fleet(const FleetLayout& layout, const FleetKeys& keys,
                     const DocumentOptions& options = {});

// read_fleet kept up to date key by key, as a watch delivers them: a
// service's key is read alone (services do not depend on each other), a
// backend's key makes it read everything again (services name backends).
// Always what read_fleet would read from the same keys.
class FleetView {
 public:
  FleetView(FleetLayout layout, DocumentOptions options);
  void reset(const FleetKeys& keys);
  // `key` was put or deleted; `keys` holds it as it is now.
  void update(const FleetKeys& keys, const std::string& key);
  const State& state() const { return state_; }
  std::vector<FleetKeyError> errors() const;  // in key order

 private:
  FleetLayout layout_;
  DocumentOptions options_;
  State state_;
  std::map<std::string, std::string> errors_;  // key -> reason
};

// The keys a state is written as (canonical JSON values).
FleetKeys fleet_keys(const FleetLayout& layout, const State& state);

// What makes the store hold `desired`: the keys to put (new or different)
// and the backend and service keys to delete. Nothing else is touched.
struct FleetWrite {
  FleetKeys puts;
  std::vector<std::string> deletes;
  bool empty() const { return puts.empty() && deletes.empty(); }
};
FleetWrite plan_fleet_write(const FleetLayout& layout, const FleetKeys& current,
                            const State& desired);

// The bindings the gateways take out of their choice, as a drain whose
// warm-up is over (their rows move, the flows they track stay): those whose
// backend's host reports them down (figures.down of its report), and every
// binding of a backend whose host is a member without a report (its lease
// expired). A backend that names no host is judged by any host's report.
// Every gateway reading the same keys decides the same.
DrainedBindings fleet_unhealthy(const FleetLayout& layout, const State& state,
                                const FleetKeys& keys);

// A digest of the desired keys (backends and services, values included)
// that every reader of the same keys computes alike, whatever the order it
// learnt them in: machines report the digest of what they applied, and
// `hostlbctl fleet status` compares it with its own read. It is the XOR of
// one hash per key, so a watch event updates it in O(1).
uint64_t fleet_key_hash(std::string_view key, std::string_view value);
uint64_t fleet_digest(const FleetLayout& layout, const FleetKeys& keys);
std::string digest_text(uint64_t digest);  // 16 hex digits

}  // namespace hostlb
