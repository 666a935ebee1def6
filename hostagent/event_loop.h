// hostlbd's one event loop. Components register what they wait for — file
// descriptors, timers, signals — and get called back; nothing blocks. Time
// comes from the injected Clock, so timer rules run under a simulated clock
// in tests (run_due_timers) exactly as they do in the daemon.
#pragma once

#include <poll.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "clock.h"

namespace hostlb {

class Timer;

class EventLoop {
 public:
  using Duration = std::chrono::milliseconds;
  using FdCallback = std::function<void(short revents)>;

  explicit EventLoop(Clock& clock);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  Clock& clock() const { return clock_; }

  // Calls `callback` with poll's revents whenever `fd` is ready for
  // `events` (POLLIN, POLLOUT; errors and hang-ups always wake it). One
  // watch per fd; unwatch() before closing it.
  void watch(int fd, short events, FdCallback callback);
  void set_events(int fd, short events);
  void unwatch(int fd);

  // Blocks `signo` and delivers it through a signalfd as a callback.
  // Throws std::system_error if the kernel refuses.
  void on_signal(int signo, std::function<void()> callback);

  // Called before every wait: for components whose next timer depends on
  // state that requests change (a drain's end, memory to give back).
  void on_prepare(std::function<void()> callback);

  // Runs until stop(); returns the code given to stop().
  int run();
  void stop(int code) { exit_code_ = code; }
  bool stopped() const { return exit_code_.has_value(); }

  // One round: prepare callbacks, a wait of at most `max_wait` (and not
  // past the next timer), the ready fds' callbacks, then the due timers.
  // Throws std::system_error if poll fails other than by EINTR.
  void run_once(std::optional<Duration> max_wait = std::nullopt);
  // Runs the prepare callbacks and every timer due at the clock's now, as
  // often as they fall due (a timer re-armed for now runs in the next
  // call). For tests on a simulated clock; the daemon uses run().
  void run_due_timers();

  std::optional<Clock::TimePoint> next_timer() const;

 private:
  friend class Timer;
  using TimerQueue = std::multimap<Clock::TimePoint, Timer*>;
  TimerQueue::iterator schedule(Clock::TimePoint due, Timer* timer);
  void cancel(TimerQueue::iterator it) { timers_.erase(it); }
  void read_signals();
  void fire_due_timers();

  struct Watch {
    short events;
    FdCallback callback;
  };
  Clock& clock_;
  std::map<int, Watch> watches_;
  TimerQueue timers_;
  std::vector<std::function<void()>> prepare_;
  std::map<int, std::function<void()>> signals_;
  int signal_fd_ = -1;
  std::optional<int> exit_code_;
  std::vector<pollfd> pollfds_;  // reused between rounds
  std::vector<Timer*> firing_;   // the due timers of this round
};

// A one-shot timer owned by the component that arms it; re-arming moves it,
// destroying it cancels it. A repeating job re-arms from its callback. The
// loop outlives its timers.
class Timer {
 public:
  Timer(EventLoop& loop, std::function<void()> callback);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm_in(EventLoop::Duration delay);
  void arm_at(Clock::TimePoint due);
  // Arms it unless it is armed for an earlier time already.
  void arm_no_later_than(Clock::TimePoint due);
  void disarm();
  bool armed() const { return armed_; }
  std::optional<Clock::TimePoint> due() const;

 private:
  friend class EventLoop;

  EventLoop& loop_;
  std::function<void()> callback_;
  bool armed_ = false;
  EventLoop::TimerQueue::iterator position_;
};

// Calls `callback` every `period`, the first time after `first_delay`.
class RepeatingTimer {
 public:
  RepeatingTimer(EventLoop& loop, EventLoop::Duration period, std::function<void()> callback,
                 EventLoop::Duration first_delay);
  RepeatingTimer(EventLoop& loop, EventLoop::Duration period, std::function<void()> callback)
      : RepeatingTimer(loop, period, std::move(callback), period) {}

 private:
  EventLoop::Duration period_;
  std::function<void()> callback_;
  Timer timer_;
};

}  // namespace hostlb
