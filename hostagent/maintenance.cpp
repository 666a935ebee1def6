#include "maintenance.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "state_store.h"

namespace hostlb {

void write_metrics_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw StoreError("writing metrics to " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      throw StoreError("writing metrics to " + tmp + ": " + std::strerror(saved));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw StoreError("renaming " + tmp + " to " + path + ": " + std::strerror(errno));
}

bool FailureStreak::failed(const std::string& reason) {
  const bool say = !failing_ || reason != reason_;
  failing_ = true;
  reason_ = reason;
  return say;
}

std::optional<std::string> FailureStreak::succeeded() {
  if (!failing_) return std::nullopt;
  failing_ = false;
  return std::exchange(reason_, {});
}

ExpiryJob::ExpiryJob(EventLoop& loop, Actions actions)
    : loop_(loop), actions_(std::move(actions)), timer_(loop, [this] { run(); }) {
  // Requests add drains between two rounds: the timer follows the
  // earliest deadline before every wait.
  loop.on_prepare([this] { schedule(); });
}

void ExpiryJob::schedule() {
  const auto deadline = actions_.next_deadline();
  if (!deadline) {
    timer_.disarm();
    return;
  }
  const Clock& clock = loop_.clock();
  const int64_t in_ms =
      std::clamp<int64_t>(*deadline * 1000 - clock.unix_ms(), 0, int64_t{3600} * 1000);
  Clock::TimePoint due = clock.monotonic() + std::chrono::milliseconds(in_ms);
  if (retry_at_) due = std::max(due, *retry_at_);
  if (timer_.due() != due) timer_.arm_at(due);
}

void ExpiryJob::run() {
  const Clock& clock = loop_.clock();
  if (retry_at_ && clock.monotonic() < *retry_at_) return;
  const auto deadline = actions_.next_deadline();
  if (!deadline || *deadline * 1000 > clock.unix_ms()) return;
  try {
    actions_.expire();
    retry_at_.reset();
    if (streak_.succeeded()) spdlog::info("drains and refusals end again");
  } catch (const std::exception& e) {
    if (streak_.failed(e.what()))
      spdlog::error("ending drains and refusals failed, retrying every {} s: {}",
                    kRetry.count() / 1000, e.what());
    actions_.note_error(std::string("drain end: ") + e.what());
    retry_at_ = clock.monotonic() + kRetry;
  }
}

MetricsJob::MetricsJob(EventLoop& loop, EventLoop::Duration interval, std::function<void()> write)
    : write_(std::move(write)),
      timer_(
          loop, interval, [this] { run(); }, EventLoop::Duration{0}) {}

void MetricsJob::run() {
  try {
    write_();
  } catch (const std::exception& e) {
    // The file system stays as it is until someone fixes it.
    if (streak_.failed(e.what())) spdlog::error("{}", e.what());
    return;
  }
  if (streak_.succeeded()) spdlog::info("metrics file written again");
}

SteppedJob::SteppedJob(EventLoop& loop, EventLoop::Duration period, std::function<bool()> step,
                       ErrorNote note_error)
    : period_(period),
      step_(std::move(step)),
      note_error_(std::move(note_error)),
      timer_(loop, [this] { run(); }) {}

void SteppedJob::start() {
  if (!timer_.armed()) timer_.arm_in(EventLoop::Duration{0});
}

void SteppedJob::run() {
  try {
    if (step_()) timer_.arm_in(period_);
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
    note_error_(e.what());
  }
}

TrimJob::TrimJob(EventLoop& loop, std::function<bool()> take_request, std::function<void()> trim)
    : take_request_(std::move(take_request)),
      trim_(std::move(trim)),
      timer_(loop, [this] { trim_(); }) {
  loop.on_prepare([this] {
    if (take_request_()) timer_.arm_in(kDelay);
  });
}

RepairJob::RepairJob(EventLoop& loop, Actions actions)
    : loop_(loop),
      actions_(std::move(actions)),
      timer_(loop, [this] { run(); }),
      generation_due_(loop.clock().monotonic()),
      hosts_due_(loop.clock().monotonic()) {
  timer_.arm_at(generation_due_);
}

void RepairJob::run() {
  const auto now = loop_.clock().monotonic();
  if (now >= generation_due_) {
    generation_due_ = now + kGenerationPeriod;
    try {
      if (actions_.changed_by_others() && !table_due_) table_due_ = now;
    } catch (const std::exception& e) {
      spdlog::debug("{}", e.what());  // then look at the table itself
      if (!table_due_) table_due_ = now;
    }
  }
  const bool table = table_due_ && now >= *table_due_;
  const bool hosts = now >= hosts_due_;
  if (table) table_due_.reset();
  if (hosts) {
    hosts_due_ = now + kHostPeriod;
    actions_.every_second();
  }
  if (table || hosts) {
    try {
      actions_.repair(table, hosts);
      if (auto after = streak_.succeeded()) spdlog::info("datapath repaired after: {}", *after);
    } catch (const std::exception& e) {
      // A bridge that is gone cannot be repaired until it is back: each
      // new reason is said once, then retried quietly.
      if (streak_.failed(e.what())) {
        spdlog::error("cannot repair the datapath yet: {}", e.what());
        actions_.note_error(std::string("repair: ") + e.what());
      } else {
        spdlog::debug("cannot repair the datapath yet: {}", e.what());
      }
      table_due_ = now + kRetry;
    }
  }
  Clock::TimePoint next = std::min(generation_due_, hosts_due_);
  if (table_due_) next = std::min(next, *table_due_);
  timer_.arm_at(next);
}

}  // namespace hostlb
