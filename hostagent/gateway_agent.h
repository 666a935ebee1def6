// The gateway role's one flow: the fleet's desired state -> the gateway's
// tables (policies/gateway) -> only the rows that change -> persisted.
// A restart that finds the kernel still holding what was persisted (the
// table's stamp) leaves it alone: forwarding never stops.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clock.h"
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
  // `warmup`: how long a draining binding's rows are tracked before they
  // move to the other backends.
  GatewayAgent(GatewayRuleset& kernel, StateStore& store, GatewayConfig config, const Clock& clock,
               std::chrono::milliseconds warmup);

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
  // Bindings the fleet reports unhealthy: out of the choice as a drain
  // whose warm-up is over (their rows move, the flows they track stay),
  // from the next change on. Not persisted: the fleet says it again.
  void set_unhealthy(DrainedBindings unhealthy) { unhealthy_ = std::move(unhealthy); }

  const State& current() const;
  const GatewayDatapath& tables() const { return applied_; }

  // Ends the warm-ups that are due: those bindings' rows move (one change).
  // Returns how many ended. A drain's warm-up starts when this gateway
  // first applies it (again after a restart: tracking longer is safe).
  size_t settle_drains();
  // Status, stats and metrics: the tables, the tracking maps (read from
  // the kernel), the drains.
  GatewayFigures figures();
  std::string digest() const { return gateway_digest(applied_); }

  // What the kernel's row map holds for a row of a service's table.
  std::optional<MacAddress> kernel_row(const GatewayService& service, uint32_t row) {
    return kernel_.row(service.mark(row));
  }

  // After another process's nftables commit: if the table is gone or no
  // longer holds what was applied (its stamp), builds it again. Returns what
  // differed (empty: nothing). Throws KernelError. With the stamp right,
  // starts an audit of the rows instead (the commit may have edited some:
  // the stamp does not say), which audit_step carries out.
  std::vector<std::string> repair();
  uint64_t repairs() const { return repairs_; }

  // One step of a running audit: reads up to `parts` parts of the kernel's
  // row map and, once it was read whole, writes back the rows that differ
  // from what was applied (one transaction). An audit that a change of ours
  // or a change meanwhile (the dump says so) makes stale starts over.
  // Returns whether an audit still runs. Throws KernelError.
  bool audit_step(size_t parts);
  bool auditing() const { return scan_ != nullptr; }

  // A snapshot is written after this many journaled edits.
  static constexpr size_t kJournalLimit = 1000;
  void cleanup();

 private:
  GatewayReport apply(const State& requested, bool at_start);

  GatewayRuleset& kernel_;
  StateStore& store_;
  GatewayConfig config_;
  const Clock& clock_;
  std::chrono::milliseconds warmup_;
  std::map<BindingName, Clock::TimePoint> warming_;  // draining -> when its warm-up ends
  DrainedBindings drained_;
  DrainedBindings unhealthy_;
  size_t last_rows_changed_ = 0;
  std::optional<PersistedState> persisted_;
  void start_audit();
  bool finish_audit();

  GatewayDatapath applied_;
  uint64_t applied_generation_ = 0;  // counts changes to applied_
  uint64_t repairs_ = 0;
  std::unique_ptr<GatewayRowScan> scan_;
  std::unique_ptr<RowAudit> audit_;
  uint64_t audit_generation_ = 0;  // applied_generation_ when the audit began
  bool said_too_large_ = false;
};

}  // namespace hostlb
