// hostlbctl's fleet commands: a fleet document written to etcd as one
// transaction (checked whole first, as a local apply is), what it would
// change, and where every machine stands.
#pragma once

#include <string>

#include "hostlb/netlink/etcd.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

struct FleetCommandSettings {
  EtcdSettings etcd;
  std::string prefix = "/hostlb/";
  DocumentOptions document{};
  bool as_json = false;
};

// Exit codes as hostlbctl's: 0 done, 1 refused (the document, or the
// fleet changed meanwhile), 3 etcd unreachable.
// apply: writes `document` unless `dry_run` (which prints what would change).
int fleet_apply(const FleetCommandSettings& settings, const std::string& document, bool dry_run);
// diff: prints every key the document would put or delete.
int fleet_diff(const FleetCommandSettings& settings, const std::string& document);
// status: the fleet's revision and digest, then every machine's report:
// what it applied, whether that is the fleet as it is now (converged).
int fleet_status(const FleetCommandSettings& settings);

}  // namespace hostlb
