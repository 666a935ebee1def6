// hostlbd following the fleet's desired state in etcd: one read of every
// key at one revision, applied like an `apply` (only what differs); then a
// watch from the next revision whose changes are applied as they come. A
// compacted revision means a full read again. While etcd cannot be reached
// the daemon serves what it last applied (persisted by the agent), logs
// the outage once, retries with backoff and catches up from its revision.
// It reports under a lease what it applied (revision, digest, bad keys,
// the role's own figures): a machine that dies disappears from the fleet's
// status when its lease runs out.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "event_loop.h"
#include "hostlb/netlink/etcd.h"
#include "hostlb/policies/fleet.h"

namespace hostlb {

struct FleetFollowerOptions {
  std::string prefix = "/hostlb/";
  std::string name;  // this machine, as it reports
  std::string role;  // "host" or "gateway"
  std::chrono::seconds lease_ttl{10};
  std::chrono::milliseconds retry_first{250};
  std::chrono::milliseconds retry_max{5000};
  // A report is rewritten at least this often (its figures move).
  std::chrono::seconds report_every{30};
  DocumentOptions document{};
  // Gateways: also read the machines' reports, and take the bindings the
  // hosts report down (or whose host's lease expired) out of the choice.
  bool follow_health = false;
};

// What the role does with the fleet.
struct FleetTarget {
  // Makes the machine hold `desired`, with `unhealthy` out of the choice
  // (empty unless follow_health), or throws (then it holds what it did).
  std::function<void(const State& desired, const DrainedBindings& unhealthy)> apply;
  // The role's figures for its report (health, counters); may be null.
  std::function<nlohmann::json()> figures;
};

class FleetFollower {
 public:
  FleetFollower(EventLoop& loop, EtcdClient& etcd, FleetFollowerOptions options,
                FleetTarget target);
  ~FleetFollower();

  void start();
  // For `status`: where the follower stands.
  nlohmann::json status() const;
  // The machine's figures changed (a health transition): report soon.
  void report_soon();

  int64_t applied_revision() const { return applied_revision_; }
  bool connected() const { return !outage_since_; }

 private:
  void read_all();
  void on_read(EtcdResult<etcd::RangeResponse> result);
  void watch_from(int64_t revision);
  void on_message(const etcd::WatchMessage& message);
  void on_watch_end(const EtcdFailure& failure);
  // Applies the keys as they stand at revision_ (once per loop round).
  void apply_soon();
  void apply_keys();
  // An etcd call failed: note the outage (logged once), retry later.
  void failed(const std::string& what, const EtcdFailure& failure);
  void reached();
  void retry();

  void report();
  // What was applied is reported at most once per kReportSpacing.
  void report_applied();
  void report_after(std::chrono::milliseconds delay);
  void keep_lease();
  nlohmann::json report_value() const;

  EventLoop& loop_;
  EtcdClient& etcd_;
  FleetFollowerOptions options_;
  FleetLayout layout_;
  FleetTarget target_;

  std::string range_start() const;
  std::string range_end() const;

  FleetKeys keys_;                 // the keys read and watched, as of revision_
  int64_t revision_ = 0;           // 0: never read
  uint64_t digest_ = 0;            // of the desired keys of keys_
  bool dirty_ = false;             // a desired key changed since the last apply
  bool reports_dirty_ = false;     // a report or member key did
  bool read_whole_ = false;        // keys_ was read whole since
  std::set<std::string> changed_;  // the desired keys changed since
  static constexpr size_t kReadWholeAbove = 512;
  FleetView view_;  // the desired state of keys_ as of the last apply
  DrainedBindings unhealthy_;
  bool reading_ = false;
  bool watching_ = false;

  int64_t applied_revision_ = 0;
  uint64_t applied_digest_ = 0;
  int64_t applied_at_ = 0;  // unix seconds
  std::vector<FleetKeyError> errors_;
  std::string apply_error_;

  std::optional<Clock::TimePoint> outage_since_;
  std::string outage_reason_;
  std::chrono::milliseconds retry_delay_;
  Timer apply_timer_;
  Timer retry_timer_;

  int64_t lease_ = 0;
  bool member_written_ = false;
  bool reporting_ = false;      // a report or lease call is in flight
  bool report_wanted_ = false;  // something to report since the last one
  bool report_urgent_ = false;  // a health transition among it
  Clock::TimePoint last_report_{};
  static constexpr std::chrono::milliseconds kReportSpacing{1000};
  Timer report_timer_;
  Timer lease_timer_;
  std::shared_ptr<bool> alive_;
};

}  // namespace hostlb
