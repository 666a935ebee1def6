// A clock that moves only when a test moves it: wall and monotonic time
// advance together.
#pragma once

#include <chrono>

#include "clock.h"

namespace hostlb::testing {

class FakeClock final : public Clock {
 public:
  TimePoint monotonic() const override { return TimePoint(monotonic_); }
  int64_t unix_ms() const override { return unix_ms_; }

  void advance(std::chrono::milliseconds by) {
    monotonic_ += by;
    unix_ms_ += by.count();
  }
  // Sets the wall clock only (as an operator or NTP would).
  void set_unix_seconds(int64_t seconds) { unix_ms_ = seconds * 1000; }

 private:
  std::chrono::milliseconds monotonic_{1'000'000};
  int64_t unix_ms_ = int64_t{1'800'000'000} * 1000;
};

}  // namespace hostlb::testing
