// Time, injected: the daemon uses the system's clocks, tests a simulated
// clock they move by hand, so every timer rule is tested without waiting.
#pragma once

#include <chrono>
#include <cstdint>

namespace hostlb {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  // For timers and timeouts: never jumps.
  virtual TimePoint monotonic() const = 0;
  // Unix time in milliseconds, for deadlines that outlive the process
  // (a drain persisted across a restart).
  virtual int64_t unix_ms() const = 0;
  int64_t unix_seconds() const { return unix_ms() / 1000; }
};

class SystemClock final : public Clock {
 public:
  TimePoint monotonic() const override { return std::chrono::steady_clock::now(); }
  int64_t unix_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace hostlb
