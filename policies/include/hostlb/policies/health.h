// Health of the bindings whose service has a check (model.h HealthCheck):
// what probe results make of them, and which bindings take new
// connections. Pure: the agent supplies the results and the clock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/policies/datapath.h"

namespace hostlb {

enum class Health : uint8_t { kUnknown, kUp, kDown };
std::string_view health_name(Health health);
std::optional<Health> parse_health(std::string_view text);

// What one probe found.
struct ProbeResult {
  bool ok = false;
  // Why, in a few words: "connected", "timeout", "connection refused
  // (RST)", "status 503", "ICMP port unreachable".
  std::string detail{};
  uint32_t latency_ms = 0;
};

struct BindingHealth {
  Health state = Health::kUnknown;
  int64_t since_ms = 0;    // unix ms of the last transition, or of the first sight
  uint32_t successes = 0;  // in a row
  uint32_t failures = 0;   // in a row
  std::optional<ProbeResult> last{};
  int64_t last_ms = 0;  // unix ms of the last result
  uint64_t probes = 0;
  uint64_t failed_probes = 0;
  uint64_t transitions = 0;
};

struct HealthTransition {
  BindingKey key;
  Health from = Health::kUnknown;
  Health to = Health::kUnknown;
  std::string reason;  // the probe's detail
};

class HealthBook {
 public:
  // Keeps an entry for each of `checked` (the bindings whose service has a
  // check), new ones not yet checked since `now_ms`, and drops the others.
  void track(const std::vector<BindingKey>& checked, int64_t now_ms);

  // A probe's result: a success brings a binding not yet checked up at
  // once, a down one after `rise` in a row; `fall` failures in a row take
  // it down. Returns the transition, if it made one.
  std::optional<HealthTransition> record(const BindingKey& key, const ProbeResult& result,
                                         const HealthCheck& check, int64_t now_ms);

  // Whether the binding takes new connections as far as its health is
  // known: nullopt when it is not (not yet checked, or not tracked); the
  // caller then decides (see settle_serving).
  std::optional<bool> serving(const BindingKey& key) const;

  const BindingHealth* find(const BindingKey& key) const;
  const std::map<BindingKey, BindingHealth>& entries() const { return entries_; }

  // What survives a restart: each binding's last known state and since
  // when (a binding known to be down stays refused until probes say
  // otherwise). from_json skips entries it cannot read; it throws
  // DocumentError only if the whole is not such a record.
  nlohmann::json to_json() const;
  static HealthBook from_json(const nlohmann::json& value);

 private:
  std::map<BindingKey, BindingHealth> entries_;
};

// Milliseconds after the start of each interval at which a binding is
// probed: spread evenly-ish over the interval by the binding's key, so
// that many bindings do not probe in one burst, and the same on every run.
uint32_t probe_offset_ms(const BindingKey& key, uint32_t interval_ms);

// Decides the serving flag of the bindings of `next`: those `diff` adds,
// or all of them with `all`. `decide` gets the binding and the same binding
// (same identity) before the change, or nullptr for a new one. A flag that
// changes on a binding the diff does not touch is recorded as that binding
// removed and added again; a removal and an addition that end up the same
// are dropped from the diff.
void settle_serving(
    Datapath& next, DatapathDiff& diff, bool all,
    const std::function<bool(const Binding& binding, const Binding* before)>& decide);

}  // namespace hostlb
