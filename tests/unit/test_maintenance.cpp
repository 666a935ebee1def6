// The maintenance jobs' timer rules on a simulated clock.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "fakes/fake_clock.h"
#include "maintenance.h"

namespace hostlb {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;

// Moves the clock in steps, running what falls due at each.
void run_for(FakeClock& clock, EventLoop& loop, std::chrono::milliseconds total,
             std::chrono::milliseconds step = 10ms) {
  for (auto t = 0ms; t < total; t += step) {
    clock.advance(step);
    loop.run_due_timers();
  }
}

TEST(FailureStreak, SaysAFailureOncePerReasonAndItsEndOnce) {
  FailureStreak s;
  EXPECT_FALSE(s.succeeded());
  EXPECT_TRUE(s.failed("no bridge"));
  EXPECT_FALSE(s.failed("no bridge"));
  EXPECT_TRUE(s.failed("no route")) << "a new reason is news";
  EXPECT_TRUE(s.failing());
  EXPECT_EQ(s.succeeded(), "no route");
  EXPECT_FALSE(s.succeeded());
  EXPECT_TRUE(s.failed("no route")) << "a new streak";
}

struct ExpiryFixture {
  FakeClock clock;
  EventLoop loop{clock};
  std::optional<int64_t> deadline;
  int expired = 0;
  bool fail = false;
  std::vector<std::string> errors;
  ExpiryJob job{loop,
                {[this] { return deadline; },
                 [this] {
                   if (fail) throw std::runtime_error("kernel said no");
                   ++expired;
                   deadline.reset();
                 },
                 [this](const std::string& e) { errors.push_back(e); }}};
};

TEST(ExpiryJob, EndsADrainAtItsDeadlineNotBefore) {
  ExpiryFixture f;
  f.loop.run_due_timers();
  EXPECT_EQ(f.expired, 0) << "nothing draining";
  f.deadline = f.clock.unix_seconds() + 30;  // a request started a drain
  run_for(f.clock, f.loop, 29'990ms);
  EXPECT_EQ(f.expired, 0);
  run_for(f.clock, f.loop, 20ms);
  EXPECT_EQ(f.expired, 1);
  run_for(f.clock, f.loop, 60s, 1s);
  EXPECT_EQ(f.expired, 1);
}

TEST(ExpiryJob, AnEarlierDeadlineSetByARequestIsFollowed) {
  ExpiryFixture f;
  f.deadline = f.clock.unix_seconds() + 600;
  f.loop.run_due_timers();
  f.deadline = f.clock.unix_seconds() + 1;
  run_for(f.clock, f.loop, 1010ms);
  EXPECT_EQ(f.expired, 1);
}

TEST(ExpiryJob, AFailureIsRetriedEveryFiveSecondsAndSaidOnce) {
  ExpiryFixture f;
  f.deadline = f.clock.unix_seconds();
  f.fail = true;
  f.loop.run_due_timers();
  EXPECT_EQ(f.errors.size(), 1u);
  run_for(f.clock, f.loop, 4990ms);
  EXPECT_EQ(f.errors.size(), 1u) << "no retry before 5 s";
  run_for(f.clock, f.loop, 20ms);
  EXPECT_EQ(f.errors.size(), 2u) << "retried after 5 s";
  f.fail = false;
  run_for(f.clock, f.loop, 5s);
  EXPECT_EQ(f.expired, 1);
  EXPECT_EQ(f.errors[0], "drain end: kernel said no");
}

TEST(ExpiryJob, AWallClockStepDoesNotEndADrainEarly) {
  ExpiryFixture f;
  f.deadline = f.clock.unix_seconds() + 60;
  f.loop.run_due_timers();
  f.clock.set_unix_seconds(f.clock.unix_seconds() - 3600);  // the clock went back
  run_for(f.clock, f.loop, 61s, 1s);
  EXPECT_EQ(f.expired, 0) << "the deadline is wall time";
  f.clock.set_unix_seconds(*f.deadline);
  run_for(f.clock, f.loop, 1s);
  EXPECT_EQ(f.expired, 1);
}

TEST(MetricsJob, WritesAtOnceThenEveryIntervalAndSaysAFailureOnce) {
  FakeClock clock;
  EventLoop loop(clock);
  int writes = 0;
  bool fail = false;
  MetricsJob job(loop, 15s, [&] {
    ++writes;
    if (fail) throw std::runtime_error("disk full");
  });
  loop.run_due_timers();
  EXPECT_EQ(writes, 1);
  run_for(clock, loop, 14s, 1s);
  EXPECT_EQ(writes, 1);
  run_for(clock, loop, 1s, 1s);
  EXPECT_EQ(writes, 2);
  fail = true;
  run_for(clock, loop, 45s, 1s);
  EXPECT_EQ(writes, 5) << "failures do not stop the schedule";
}

TEST(SteppedJob, StepsAPeriodApartUntilDoneAndAFailureEndsTheRunOnce) {
  FakeClock clock;
  EventLoop loop(clock);
  int steps = 0, left = 3;
  bool fail = false;
  std::vector<std::string> noted;
  SteppedJob job(
      loop, 50ms,
      [&] {
        ++steps;
        if (fail) throw std::runtime_error("reading the gateway's rows: EIO");
        return --left > 0;
      },
      [&](const std::string& e) { noted.push_back(e); });
  run_for(clock, loop, 1s);
  EXPECT_EQ(steps, 0) << "nothing until started";
  job.start();
  job.start();  // a run under way is not started twice
  loop.run_due_timers();
  EXPECT_EQ(steps, 1) << "the first step at once";
  run_for(clock, loop, 40ms);
  EXPECT_EQ(steps, 1);
  run_for(clock, loop, 10ms);
  EXPECT_EQ(steps, 2);
  run_for(clock, loop, 1s);
  EXPECT_EQ(steps, 3) << "the third step said it was the last";
  EXPECT_FALSE(job.running());

  fail = true;
  job.start();
  run_for(clock, loop, 1s);
  EXPECT_EQ(steps, 4) << "a failing step ends the run";
  EXPECT_EQ(noted, std::vector<std::string>{"reading the gateway's rows: EIO"});
  EXPECT_FALSE(job.running());
}

TEST(TrimJob, TrimsHalfASecondAfterTheLastLargeRequest) {
  FakeClock clock;
  EventLoop loop(clock);
  bool large = false;
  int trims = 0;
  TrimJob job(
      loop, [&] { return std::exchange(large, false); }, [&] { ++trims; });
  run_for(clock, loop, 2s);
  EXPECT_EQ(trims, 0) << "nothing freed, nothing trimmed";
  large = true;
  run_for(clock, loop, 300ms);
  large = true;  // another one: the trim waits for it
  run_for(clock, loop, 400ms);
  EXPECT_EQ(trims, 0);
  run_for(clock, loop, 200ms);
  EXPECT_EQ(trims, 1);
  run_for(clock, loop, 5s);
  EXPECT_EQ(trims, 1);
}

struct RepairFixture {
  FakeClock clock;
  EventLoop loop{clock};
  int generation_looks = 0, seconds = 0;
  bool others = false, fail = false, generation_fails = false;
  std::vector<std::pair<bool, bool>> repairs;  // (table, hosts)
  std::vector<std::string> errors;
  RepairJob job{loop,
                {[this] {
                   ++generation_looks;
                   if (generation_fails) throw std::runtime_error("EPERM");
                   return std::exchange(others, false);
                 },
                 [this](bool table, bool hosts) {
                   repairs.emplace_back(table, hosts);
                   if (fail) throw std::runtime_error("bridge br0 is gone");
                 },
                 [this] { ++seconds; }, [this](const std::string& e) { errors.push_back(e); }}};
};

TEST(RepairJob, LooksAtTheGenerationFiveTimesASecondAndAtHostsOnce) {
  RepairFixture f;
  f.loop.run_due_timers();  // the first look of each
  run_for(f.clock, f.loop, 2s);
  EXPECT_EQ(f.generation_looks, 11);
  EXPECT_EQ(f.seconds, 3);
  ASSERT_EQ(f.repairs.size(), 3u);
  for (auto [table, hosts] : f.repairs) {
    EXPECT_FALSE(table) << "nobody else committed";
    EXPECT_TRUE(hosts);
  }
}

TEST(RepairJob, ACommitByOthersChecksTheTableAtOnce) {
  RepairFixture f;
  f.loop.run_due_timers();
  f.repairs.clear();
  run_for(f.clock, f.loop, 500ms);
  f.others = true;
  run_for(f.clock, f.loop, 200ms);
  ASSERT_EQ(f.repairs.size(), 1u);
  EXPECT_TRUE(f.repairs[0].first);
  EXPECT_FALSE(f.repairs[0].second);
  f.repairs.clear();
  // The generation cannot be read: the table itself is looked at.
  f.generation_fails = true;
  run_for(f.clock, f.loop, 200ms);
  ASSERT_FALSE(f.repairs.empty());
  EXPECT_TRUE(f.repairs[0].first);
}

TEST(RepairJob, AFailedRepairIsRetriedEverySecondAndEachReasonSaidOnce) {
  RepairFixture f;
  f.fail = true;
  f.others = true;
  f.loop.run_due_timers();
  EXPECT_EQ(f.errors, std::vector<std::string>{"repair: bridge br0 is gone"});
  f.repairs.clear();
  run_for(f.clock, f.loop, 3s);
  EXPECT_EQ(f.errors.size(), 1u) << "the same reason is not said again";
  size_t table_checks = 0;
  for (auto [table, hosts] : f.repairs) table_checks += table;
  EXPECT_EQ(table_checks, 3u) << "the table is retried every second";
  f.fail = false;
  run_for(f.clock, f.loop, 1s);
  f.repairs.clear();
  run_for(f.clock, f.loop, 3s);
  for (auto [table, hosts] : f.repairs) EXPECT_FALSE(table) << "repaired: no more table retries";
}

}  // namespace
}  // namespace hostlb
