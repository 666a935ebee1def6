// The daemon's maintenance jobs, each a component on the event loop with
// its own timer rules: ending drains, writing metrics, giving memory back,
// keeping the kernel as hostlbd applied it. They act through callbacks, so
// their rules are tested on a simulated clock without a kernel.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "event_loop.h"

namespace hostlb {

// A failure that repeats is said once: the first time, and again only when
// its reason changes; its end is said once too.
class FailureStreak {
 public:
  // Whether this failure should be logged.
  bool failed(const std::string& reason);
  // The last reason of the streak this success ends, if one was going on.
  std::optional<std::string> succeeded();
  bool failing() const { return failing_; }

 private:
  bool failing_ = false;
  std::string reason_;
};

// Reports a failure where the operator looks (hostlbctl status's last error).
using ErrorNote = std::function<void(const std::string&)>;

// Ends drains and refusals when they are due (deadlines are unix seconds:
// they outlive restarts). A failure (the kernel refused the change) is
// retried 5 s later, not in a busy loop.
class ExpiryJob {
 public:
  struct Actions {
    std::function<std::optional<int64_t>()> next_deadline;
    std::function<void()> expire;
    ErrorNote note_error;
  };
  static constexpr EventLoop::Duration kRetry{5000};

  ExpiryJob(EventLoop& loop, Actions actions);

 private:
  void schedule();
  void run();

  EventLoop& loop_;
  Actions actions_;
  Timer timer_;
  FailureStreak streak_;
  std::optional<Clock::TimePoint> retry_at_;
};

// Writes `text` to `path` whole: a temporary file, then renamed over it
// (node_exporter reads the file at any time: it must see the old or the new
// one whole, never a part). Throws StoreError.
void write_metrics_file(const std::string& path, const std::string& text);

// Writes the metrics file every interval, the first time at once.
class MetricsJob {
 public:
  MetricsJob(EventLoop& loop, EventLoop::Duration interval, std::function<void()> write);

 private:
  void run();

  std::function<void()> write_;
  FailureStreak streak_;
  RepeatingTimer timer_;
};

// Gives freed heap back to the system half a second after a request that
// freed much of it (a whole document), outside any request's time.
class TrimJob {
 public:
  static constexpr EventLoop::Duration kDelay{500};
  // `take_request` says (once) that a request freed much memory.
  TrimJob(EventLoop& loop, std::function<bool()> take_request, std::function<void()> trim);

 private:
  std::function<bool()> take_request_;
  std::function<void()> trim_;
  Timer timer_;
};

// Carries a long piece of work out a step at a time, `period` apart, so
// that the loop serves everything else between steps (the gateway's row
// audit). `step` returns whether work is left; a step that throws ends the
// run (noted).
class SteppedJob {
 public:
  SteppedJob(EventLoop& loop, EventLoop::Duration period, std::function<bool()> step,
             ErrorNote note_error);
  // The first step at once, unless a run is under way.
  void start();
  bool running() const { return timer_.armed(); }

 private:
  void run();

  EventLoop::Duration period_;
  std::function<bool()> step_;
  ErrorNote note_error_;
  Timer timer_;
};

// Keeps the kernel as hostlbd applied it: the table is checked when another
// process has committed an nftables transaction (nftables' generation,
// looked at five times a second), host routes and neighbours every second
// (a bridge recreated, a link flapped, a route deleted); what differs is
// rebuilt. A repair that fails is retried every second.
//
// Polled rather than subscribed to: a listener on nftables' notification
// group makes the kernel build a notification for every element of every
// commit, which more than doubled the cost of large changes.
class RepairJob {
 public:
  struct Actions {
    std::function<bool()> changed_by_others;
    std::function<void(bool table, bool host_entries)> repair;
    std::function<void()> every_second;  // rides on the same once-a-second look
    ErrorNote note_error;
  };
  static constexpr EventLoop::Duration kGenerationPeriod{200};
  static constexpr EventLoop::Duration kHostPeriod{1000};
  static constexpr EventLoop::Duration kRetry{1000};

  RepairJob(EventLoop& loop, Actions actions);

 private:
  void run();

  EventLoop& loop_;
  Actions actions_;
  Timer timer_;
  FailureStreak streak_;
  Clock::TimePoint generation_due_, hosts_due_;
  std::optional<Clock::TimePoint> table_due_;
};

}  // namespace hostlb
