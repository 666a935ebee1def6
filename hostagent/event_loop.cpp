#include "event_loop.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace hostlb {

EventLoop::EventLoop(Clock& clock) : clock_(clock) {}

EventLoop::~EventLoop() {
  if (signal_fd_ >= 0) ::close(signal_fd_);
}

void EventLoop::watch(int fd, short events, FdCallback callback) {
  watches_[fd] = Watch{events, std::move(callback)};
}

void EventLoop::set_events(int fd, short events) {
  auto it = watches_.find(fd);
  if (it != watches_.end()) it->second.events = events;
}

void EventLoop::unwatch(int fd) { watches_.erase(fd); }

void EventLoop::on_signal(int signo, std::function<void()> callback) {
  signals_[signo] = std::move(callback);
  sigset_t mask;
  sigemptyset(&mask);
  for (const auto& [s, cb] : signals_) sigaddset(&mask, s);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0)
    throw std::system_error(errno, std::generic_category(), "blocking signals for the event loop");
  const int fd = ::signalfd(signal_fd_, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
  if (signal_fd_ < 0) {
    signal_fd_ = fd;
    watch(signal_fd_, POLLIN, [this](short) { read_signals(); });
  }
}

void EventLoop::read_signals() {
  signalfd_siginfo info{};
  while (::read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    auto it = signals_.find(static_cast<int>(info.ssi_signo));
    if (it != signals_.end()) it->second();
  }
}

void EventLoop::on_prepare(std::function<void()> callback) {
  prepare_.push_back(std::move(callback));
}

std::optional<Clock::TimePoint> EventLoop::next_timer() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

EventLoop::TimerQueue::iterator EventLoop::schedule(Clock::TimePoint due, Timer* timer) {
  return timers_.emplace(due, timer);
}

int EventLoop::run() {
  while (!exit_code_) run_once();
  return *exit_code_;
}

void EventLoop::run_once(std::optional<Duration> max_wait) {
  for (auto& prepare : prepare_) prepare();
  int timeout_ms = max_wait ? static_cast<int>(max_wait->count()) : -1;
  if (auto next = next_timer()) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(*next - clock_.monotonic()).count();
    const int until_timer = static_cast<int>(std::clamp<int64_t>(left, 0, int64_t{3600} * 1000));
    timeout_ms = timeout_ms < 0 ? until_timer : std::min(timeout_ms, until_timer);
  }
  pollfds_.clear();
  for (const auto& [fd, w] : watches_) pollfds_.push_back({fd, w.events, 0});
  const int n = ::poll(pollfds_.data(), pollfds_.size(), timeout_ms);
  if (n < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
  for (const auto& p : pollfds_) {
    if (n <= 0 || p.revents == 0) continue;
    // An earlier callback of this round may have unwatched it.
    auto it = watches_.find(p.fd);
    if (it == watches_.end()) continue;
    const FdCallback callback = it->second.callback;  // it may unwatch itself
    callback(p.revents);
    if (exit_code_) return;
  }
  fire_due_timers();
}

void EventLoop::run_due_timers() {
  for (auto& prepare : prepare_) prepare();
  fire_due_timers();
}

void EventLoop::fire_due_timers() {
  const auto now = clock_.monotonic();
  // Taken first: a callback that re-arms for now runs next round, not in
  // an endless loop here.
  firing_.clear();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    Timer* timer = timers_.begin()->second;
    timers_.erase(timers_.begin());
    timer->armed_ = false;
    firing_.push_back(timer);
  }
  for (size_t i = 0; i < firing_.size(); ++i) {
    // An earlier callback may have destroyed a later timer (~Timer blanks
    // it here) or re-armed it (it then waits for its new time).
    Timer* timer = firing_[i];
    if (timer == nullptr || timer->armed_) continue;
    timer->callback_();
  }
  firing_.clear();
}

Timer::Timer(EventLoop& loop, std::function<void()> callback)
    : loop_(loop), callback_(std::move(callback)) {}

Timer::~Timer() {
  disarm();
  std::replace(loop_.firing_.begin(), loop_.firing_.end(), this, static_cast<Timer*>(nullptr));
}

void Timer::arm_in(EventLoop::Duration delay) { arm_at(loop_.clock().monotonic() + delay); }

void Timer::arm_at(Clock::TimePoint due) {
  disarm();
  position_ = loop_.schedule(due, this);
  armed_ = true;
}

void Timer::arm_no_later_than(Clock::TimePoint due) {
  if (armed_ && position_->first <= due) return;
  arm_at(due);
}

void Timer::disarm() {
  if (!armed_) return;
  loop_.cancel(position_);
  armed_ = false;
}

std::optional<Clock::TimePoint> Timer::due() const {
  if (!armed_) return std::nullopt;
  return position_->first;
}

RepeatingTimer::RepeatingTimer(EventLoop& loop, EventLoop::Duration period,
                               std::function<void()> callback, EventLoop::Duration first_delay)
    : period_(period), callback_(std::move(callback)), timer_(loop, [this] {
        timer_.arm_in(period_);
        callback_();
      }) {
  timer_.arm_in(first_delay);
}

}  // namespace hostlb
