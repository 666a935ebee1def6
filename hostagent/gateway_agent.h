// The gateway role's one flow: the fleet's desired state -> the gateway's
// tables (policies/gateway) -> only the rows that change -> persisted.
// A restart that finds the kernel still holding what was persisted (the
// table's stamp) leaves it alone: forwarding never stops.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hostlb/netlink/gateway.h"
#include "hostlb/policies/edit.h"
#include "hostlb/policies/gateway.h"
#include "hostlb/policies/selection.h"
#include "state_store.h"

namespace hostlb {

struct GatewayReport {
  size_t rows_written = 0;
  size_t services_added = 0, services_removed = 0;
  bool rebuilt = false;  // the whole table was built (start-up, no usable table)
};

class GatewayAgent {
 public:
  GatewayAgent(GatewayRuleset& kernel, StateStore& store, GatewayConfig config);

  void load_persisted();
  bool has_persisted() const { return persisted_.has_value(); }

  // Start-up: with the kernel's stamp equal to the persisted table's, only
  // the difference to `desired` is applied; otherwise the table is built.
  GatewayReport start(const std::optional<State>& desired);
  // A change while running: rows that change owner, in one transaction for
  // a change of one service's backends. On failure nothing is persisted
  // and the current state stays.
  GatewayReport change(const State& desired);
  GatewayReport edit(const Edit& edit);

  const State& current() const;
  const GatewayDatapath& tables() const { return applied_; }
  std::string digest() const { return gateway_digest(applied_); }

  // What the kernel's row map holds for a row of a service's table.
  std::optional<MacAddress> kernel_row(const GatewayService& service, uint32_t row) {
    return kernel_.row(service.mark(row));
  }

  // After another process's nftables commit: if the table is gone or no
  // longer holds what was applied (its stamp), builds it again. Returns what
  // differed (empty: nothing). Throws KernelError. Edits of single rows by
  // others are not seen: only the stamp is compared, not 4 million rows.
  std::vector<std::string> repair();
  uint64_t repairs() const { return repairs_; }

  void cleanup();

 private:
  GatewayReport apply(const State& desired, bool at_start);

  GatewayRuleset& kernel_;
  StateStore& store_;
  GatewayConfig config_;
  std::optional<PersistedState> persisted_;
  GatewayDatapath applied_;
  uint64_t repairs_ = 0;
};

}  // namespace hostlb
