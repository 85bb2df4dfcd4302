// Tests for proxy/auth_throttle: the delay an address earns with failed logins.
// Time is injected as steady_clock time points; nothing sleeps.
#include "proxy/auth_throttle.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace sluice::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = AuthThrottle::Clock;
using std::chrono::milliseconds;

constexpr milliseconds kMax = 5s;  // the configured default (auth_failure_delay)
const Clock::time_point t0 = Clock::time_point{} + 1000h;

// `n` failures from `address`, one millisecond apart from `start`; returns the last time.
Clock::time_point fail(AuthThrottle& throttle, const std::string& address, int n, Clock::time_point start = t0) {
  Clock::time_point now = start;
  for (int i = 0; i < n; ++i) {
    now = start + milliseconds(i);
    throttle.record_failure(address, now);
  }
  return now;
}

TEST(AuthThrottleTest, UnknownAddressesWait0) {
  AuthThrottle throttle;
  EXPECT_EQ(throttle.delay_for("10.0.0.1", t0, kMax), 0ms);
  EXPECT_EQ(throttle.tracked(), 0u);
}

TEST(AuthThrottleTest, NoDelayUpToTheFreeFailures) {
  AuthThrottle throttle;
  for (int i = 1; i <= AuthThrottle::kFreeFailures; ++i) {
    throttle.record_failure("10.0.0.1", t0 + milliseconds(i));
    EXPECT_EQ(throttle.delay_for("10.0.0.1", t0 + milliseconds(i), kMax), 0ms) << i << " failures";
  }
  EXPECT_EQ(throttle.tracked(), 1u);
}

TEST(AuthThrottleTest, FirstDelayThenDoubling) {
  static_assert(AuthThrottle::kFirstDelay == 100ms);
  AuthThrottle throttle;
  const auto last = fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures);
  const milliseconds expected[] = {100ms, 200ms, 400ms, 800ms, 1600ms, 3200ms};
  Clock::time_point now = last;
  for (const milliseconds want : expected) {
    now += 1s;
    throttle.record_failure("10.0.0.1", now);
    EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 1h), want);
    // Asking again changes nothing: only failures count.
    EXPECT_EQ(throttle.delay_for("10.0.0.1", now + 10ms, 1h), want);
  }
}

TEST(AuthThrottleTest, CappedAtTheMaximum) {
  AuthThrottle throttle;
  const auto now = fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures + 7);  // 100ms << 6 = 6.4s
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, kMax), 5s);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 6400ms), 6400ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 6401ms), 6400ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 250ms), 250ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 1ms), 1ms);
}

TEST(AuthThrottleTest, ManyFailuresDoNotOverflow) {
  AuthThrottle throttle;
  // Within kForgetAfter, so that they all count.
  Clock::time_point now = t0;
  for (int i = 0; i < 1000; ++i) {
    now = t0 + milliseconds(i * 10);
    throttle.record_failure("10.0.0.1", now);
  }
  // The doubling stops at 100ms << 20 (about 29 hours): positive and bounded.
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 1000h), milliseconds(100LL << 20));
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, kMax), kMax);
}

TEST(AuthThrottleTest, ZeroMaximumDisables) {
  AuthThrottle throttle;
  const auto now = fail(throttle, "10.0.0.1", 20);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, 0ms), 0ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, -5ms), 0ms);
  // Disabled is not forgotten: the failures still count when a maximum is set again.
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, kMax), kMax);
}

TEST(AuthThrottleTest, EmptyAddressIsIgnored) {
  AuthThrottle throttle;
  const auto now = fail(throttle, "", 10);
  EXPECT_EQ(throttle.tracked(), 0u);
  EXPECT_EQ(throttle.delay_for("", now, kMax), 0ms);
}

TEST(AuthThrottleTest, ForgetsAfterQuietPeriod) {
  AuthThrottle throttle;
  const auto last = fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures + 2);  // 200ms
  EXPECT_EQ(throttle.delay_for("10.0.0.1", last + AuthThrottle::kForgetAfter, kMax), 200ms);  // not yet
  EXPECT_EQ(throttle.delay_for("10.0.0.1", last + AuthThrottle::kForgetAfter + 1ms, kMax), 0ms);
  EXPECT_EQ(throttle.tracked(), 0u);  // the stale entry is dropped
  // Afresh: the free failures are free again.
  const auto later = fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures, last + 2min);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", later, kMax), 0ms);
  throttle.record_failure("10.0.0.1", later + 1ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", later + 1ms, kMax), 100ms);
}

TEST(AuthThrottleTest, AFailureAfterTheQuietPeriodStartsAfresh) {
  // The stale entry is still in the map (nobody asked for its delay): a new failure
  // must count as the first, not the sixth.
  AuthThrottle throttle;
  const auto last = fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures + 2);
  const auto now = last + AuthThrottle::kForgetAfter + 1s;
  throttle.record_failure("10.0.0.1", now);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, kMax), 0ms);
  fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures - 1, now + 1ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now + 1s, kMax), 0ms);
  throttle.record_failure("10.0.0.1", now + 2s);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now + 2s, kMax), 100ms);
}

TEST(AuthThrottleTest, SteadyFailuresKeepTheAddressRemembered) {
  // One failure every 50s never reaches kForgetAfter, so they accumulate.
  AuthThrottle throttle;
  Clock::time_point now = t0;
  for (int i = 0; i < AuthThrottle::kFreeFailures + 3; ++i) {
    now = t0 + std::chrono::seconds(50 * i);
    throttle.record_failure("10.0.0.1", now);
  }
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, kMax), 400ms);
}

TEST(AuthThrottleTest, AddressesAreIndependent) {
  AuthThrottle throttle;
  const auto now = fail(throttle, "10.0.0.1", AuthThrottle::kFreeFailures + 3);
  fail(throttle, "10.0.0.2", AuthThrottle::kFreeFailures);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now, kMax), 400ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.2", now, kMax), 0ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.3", now, kMax), 0ms);
  EXPECT_EQ(throttle.delay_for("::ffff:10.0.0.1", now, kMax), 0ms);  // exact text, no normalisation
  EXPECT_EQ(throttle.tracked(), 2u);
  throttle.record_failure("10.0.0.2", now + 1ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.2", now + 1ms, kMax), 100ms);
  EXPECT_EQ(throttle.delay_for("10.0.0.1", now + 1ms, kMax), 400ms);  // unchanged
}

TEST(AuthThrottleTest, MapIsBoundedAndForgetsTheOldestFirst) {
  AuthThrottle throttle;
  const int slowed = AuthThrottle::kFreeFailures + 1;  // enough for a 100ms delay
  const auto at = [](std::size_t i) { return t0 + std::chrono::microseconds(i); };
  for (std::size_t i = 0; i < AuthThrottle::kMaxAddresses; ++i) {
    for (int k = 0; k < slowed; ++k) throttle.record_failure("a" + std::to_string(i), at(i));
  }
  ASSERT_EQ(throttle.tracked(), AuthThrottle::kMaxAddresses);
  // a0 failed longest ago: a newcomer replaces it, and only it.
  const auto now = at(AuthThrottle::kMaxAddresses) + 1ms;
  throttle.record_failure("newcomer", now);
  EXPECT_EQ(throttle.tracked(), AuthThrottle::kMaxAddresses);
  EXPECT_EQ(throttle.delay_for("a0", now, kMax), 0ms);
  EXPECT_EQ(throttle.delay_for("a1", now, kMax), 100ms);
  EXPECT_EQ(throttle.delay_for("a" + std::to_string(AuthThrottle::kMaxAddresses - 1), now, kMax), 100ms);
  // Another failure from a known address evicts nothing.
  throttle.record_failure("a1", now);
  EXPECT_EQ(throttle.tracked(), AuthThrottle::kMaxAddresses);
  EXPECT_EQ(throttle.delay_for("a2", now, kMax), 100ms);
  EXPECT_EQ(throttle.delay_for("a1", now, kMax), 200ms);
  // The next newcomer evicts a2 (a1 has just failed again).
  throttle.record_failure("newcomer2", now);
  EXPECT_EQ(throttle.tracked(), AuthThrottle::kMaxAddresses);
  EXPECT_EQ(throttle.delay_for("a2", now, kMax), 0ms);
  EXPECT_EQ(throttle.delay_for("a1", now, kMax), 200ms);
  EXPECT_EQ(throttle.delay_for("a3", now, kMax), 100ms);
}

TEST(AuthThrottleTest, FullMapDropsStaleAddressesFirst) {
  AuthThrottle throttle;
  for (std::size_t i = 0; i < AuthThrottle::kMaxAddresses; ++i)
    throttle.record_failure("a" + std::to_string(i), t0 + std::chrono::microseconds(i));
  ASSERT_EQ(throttle.tracked(), AuthThrottle::kMaxAddresses);
  // Much later everyone is stale: a newcomer clears them all.
  throttle.record_failure("newcomer", t0 + AuthThrottle::kForgetAfter + 1s);
  EXPECT_EQ(throttle.tracked(), 1u);
}

}  // namespace
}  // namespace sluice::proxy
