// The event loop's own rules: timers in order on a simulated clock, fds,
// signals, prepare callbacks.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "event_loop.h"
#include "fakes/fake_clock.h"

namespace hostlb {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;

TEST(EventLoop, TimersFireInTheOrderOfTheirTimesAndNotBefore) {
  FakeClock clock;
  EventLoop loop(clock);
  std::vector<int> fired;
  Timer a(loop, [&] { fired.push_back(1); });
  Timer b(loop, [&] { fired.push_back(2); });
  b.arm_in(100ms);
  a.arm_in(300ms);
  loop.run_due_timers();
  EXPECT_TRUE(fired.empty());
  clock.advance(99ms);
  loop.run_due_timers();
  EXPECT_TRUE(fired.empty());
  clock.advance(1ms);
  loop.run_due_timers();
  EXPECT_EQ(fired, std::vector<int>{2});
  EXPECT_FALSE(b.armed()) << "one-shot";
  clock.advance(1s);
  loop.run_due_timers();
  EXPECT_EQ(fired, (std::vector<int>{2, 1}));
  loop.run_due_timers();
  EXPECT_EQ(fired.size(), 2u) << "nothing fires twice";
}

TEST(EventLoop, RearmingMovesATimerAndDisarmingOrDestroyingCancelsIt) {
  FakeClock clock;
  EventLoop loop(clock);
  int fired = 0;
  Timer t(loop, [&] { ++fired; });
  t.arm_in(100ms);
  t.arm_in(500ms);
  EXPECT_EQ(t.due(), clock.monotonic() + 500ms);
  clock.advance(200ms);
  loop.run_due_timers();
  EXPECT_EQ(fired, 0) << "the earlier time was replaced";
  t.arm_no_later_than(clock.monotonic() + 1h);
  EXPECT_EQ(t.due(), clock.monotonic() + 300ms) << "an earlier time is kept";
  t.arm_no_later_than(clock.monotonic() + 10ms);
  EXPECT_EQ(t.due(), clock.monotonic() + 10ms);
  t.disarm();
  clock.advance(1s);
  loop.run_due_timers();
  EXPECT_EQ(fired, 0);
  {
    Timer gone(loop, [&] { ++fired; });
    gone.arm_in(1ms);
  }
  clock.advance(1s);
  loop.run_due_timers();
  EXPECT_EQ(fired, 0);
  EXPECT_FALSE(loop.next_timer());
}

TEST(EventLoop, ACallbackMayDestroyOrRearmAnotherDueTimer) {
  FakeClock clock;
  EventLoop loop(clock);
  int second_fired = 0;
  auto second = std::make_unique<Timer>(loop, [&] { ++second_fired; });
  Timer first(loop, [&] { second.reset(); });
  first.arm_in(1ms);
  second->arm_in(2ms);
  clock.advance(5ms);
  loop.run_due_timers();
  EXPECT_EQ(second_fired, 0);

  int third_fired = 0;
  Timer third(loop, [&] { ++third_fired; });
  Timer mover(loop, [&] { third.arm_in(1s); });
  mover.arm_in(1ms);
  third.arm_in(2ms);
  clock.advance(5ms);
  loop.run_due_timers();
  EXPECT_EQ(third_fired, 0) << "re-armed for later by an earlier callback";
  clock.advance(1s);
  loop.run_due_timers();
  EXPECT_EQ(third_fired, 1);
}

TEST(EventLoop, ATimerRearmedForNowRunsInTheNextRoundNotInALoop) {
  FakeClock clock;
  EventLoop loop(clock);
  int fired = 0;
  Timer t(loop, [&] {
    ++fired;
    t.arm_in(0ms);
  });
  t.arm_in(0ms);
  loop.run_due_timers();
  EXPECT_EQ(fired, 1);
  loop.run_due_timers();
  EXPECT_EQ(fired, 2);
}

TEST(EventLoop, RepeatingTimerKeepsItsPeriod) {
  FakeClock clock;
  EventLoop loop(clock);
  int fired = 0;
  RepeatingTimer every(
      loop, 200ms, [&] { ++fired; }, 0ms);
  loop.run_due_timers();
  EXPECT_EQ(fired, 1) << "first run after first_delay (0)";
  for (int i = 0; i < 10; ++i) {
    clock.advance(100ms);
    loop.run_due_timers();
  }
  EXPECT_EQ(fired, 6);
}

TEST(EventLoop, PrepareCallbacksRunBeforeEveryRound) {
  FakeClock clock;
  EventLoop loop(clock);
  int prepared = 0;
  loop.on_prepare([&] { ++prepared; });
  loop.run_due_timers();
  loop.run_once(0ms);
  EXPECT_EQ(prepared, 2);
}

TEST(EventLoop, ReadableFdCallsItsCallbackUntilUnwatched) {
  SystemClock clock;
  EventLoop loop(clock);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  int calls = 0;
  loop.watch(fds[0], POLLIN, [&](short revents) {
    EXPECT_TRUE(revents & POLLIN);
    char c;
    ASSERT_EQ(::read(fds[0], &c, 1), 1);
    ++calls;
  });
  loop.run_once(0ms);
  EXPECT_EQ(calls, 0);
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  loop.run_once(1000ms);
  EXPECT_EQ(calls, 1);
  loop.unwatch(fds[0]);
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  loop.run_once(0ms);
  EXPECT_EQ(calls, 1);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(EventLoop, WaitEndsAtTheNextTimer) {
  SystemClock clock;
  EventLoop loop(clock);
  bool fired = false;
  Timer t(loop, [&] { fired = true; });
  t.arm_in(20ms);
  const auto start = clock.monotonic();
  while (!fired && clock.monotonic() - start < 5s) loop.run_once();
  EXPECT_TRUE(fired) << "run_once without a limit still wakes for the timer";
}

TEST(EventLoop, SignalsArriveAsCallbacksAndRunStopsWithTheGivenCode) {
  SystemClock clock;
  EventLoop loop(clock);
  int hups = 0;
  loop.on_signal(SIGUSR1, [&] { ++hups; });
  loop.on_signal(SIGUSR2, [&] { loop.stop(7); });
  ASSERT_EQ(::kill(::getpid(), SIGUSR1), 0);
  ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
  EXPECT_EQ(loop.run(), 7);
  EXPECT_EQ(hups, 1);
}

}  // namespace
}  // namespace hostlb
