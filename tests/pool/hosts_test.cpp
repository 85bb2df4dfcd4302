// Host health, backoff and shared connection limits (pool/hosts.h): the state
// machines only, no sockets.
#include "pool/hosts.h"

#include <gtest/gtest.h>

namespace sluice::pool {
namespace {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

TEST(BackoffTest, StartsAtInitialDoublesAndCaps) {
  // random = 0.999.. gives the top of the jittered range, 0 the bottom (half).
  EXPECT_EQ(next_backoff(0ms, 100ms, 1000ms, 0.0), 50ms);
  EXPECT_EQ(next_backoff(0ms, 100ms, 1000ms, 0.9999), 99ms);
  EXPECT_EQ(next_backoff(100ms, 100ms, 1000ms, 0.0), 100ms);   // doubled to 200, jittered to [100, 200]
  EXPECT_EQ(next_backoff(400ms, 100ms, 1000ms, 0.0), 400ms);   // 800 -> [400, 800]
  EXPECT_EQ(next_backoff(800ms, 100ms, 1000ms, 0.0), 500ms);   // capped at 1000 -> [500, 1000]
  EXPECT_EQ(next_backoff(5000ms, 100ms, 1000ms, 0.9999), 999ms);
}

TEST(BackoffTest, JitterStaysWithinHalfToFull) {
  milliseconds previous{0};
  for (int i = 0; i < 50; ++i) {
    const double random = (i * 37 % 100) / 100.0;
    const auto next = next_backoff(previous, 100ms, 1000ms, random);
    const auto full = std::min<milliseconds>(previous.count() == 0 ? 100ms : previous * 2, 1000ms);
    EXPECT_GE(next, full / 2) << i;
    EXPECT_LE(next, full) << i;
    previous = next;
  }
}

TEST(BackoffTest, NeverZero) { EXPECT_EQ(next_backoff(0ms, 1ms, 1ms, 0.0), 1ms); }

ConnectFailure ours(std::string reason) { return ConnectFailure{std::move(reason), {}, "08006", true}; }
ConnectFailure role(std::string reason) { return ConnectFailure{std::move(reason), {}, "08006", false}; }
ConnectFailure postgres(std::string sqlstate) { return ConnectFailure{"refused", "E....", std::move(sqlstate)}; }

TEST(HostFailureTest, TransportAndShutdownAreTheHostsPasswordsAreNot) {
  EXPECT_TRUE(is_host_failure(ours("connection refused")));
  EXPECT_TRUE(is_host_failure(postgres("57P03")));  // the database system is starting up
  EXPECT_TRUE(is_host_failure(postgres("57P01")));  // terminating connection due to administrator command
  EXPECT_FALSE(is_host_failure(postgres("28P01")));  // password authentication failed
  EXPECT_FALSE(is_host_failure(postgres("3D000")));  // database does not exist
  EXPECT_FALSE(is_host_failure(postgres("53300")));  // too many connections for role
  // Sluice's own failures that are about the role's authentication setup.
  EXPECT_FALSE(is_host_failure(role("server asked for a password for user \"x\" but none is configured")));
}

HostPolicy policy() { return HostPolicy{30'000ms, 100ms, 1000ms}; }

TEST(HostTest, DownAfterAFailureUpAfterASuccess) {
  Host host("127.0.0.1", 5432, policy());
  EXPECT_EQ(host.address(), "127.0.0.1:5432");
  const auto now = Clock::now();
  EXPECT_TRUE(host.usable(now));
  EXPECT_FALSE(host.down());
  host.record_failure("could not connect: Connection refused", ServerTarget{}, {});
  EXPECT_TRUE(host.down());
  EXPECT_FALSE(host.usable(Clock::now()));
  const auto status = host.status();
  EXPECT_TRUE(status.down);
  EXPECT_EQ(status.last_failure, "could not connect: Connection refused");
  EXPECT_EQ(status.failures, 1);
  host.record_success();
  EXPECT_FALSE(host.down());
  EXPECT_TRUE(host.usable(Clock::now()));
  EXPECT_EQ(host.status().failures, 0);
}

TEST(HostTest, UsableAgainAfterBanTimeWithoutACheck) {
  Host host("db", 5432, policy());
  host.record_failure("timed out", ServerTarget{}, {});
  EXPECT_FALSE(host.usable(Clock::now() + 29s));
  EXPECT_TRUE(host.usable(Clock::now() + 31s));
  EXPECT_TRUE(host.down());  // still down until something succeeds
}

TEST(HostTest, ChecksAreDueAfterBackoffAndOneAtATime) {
  Host host("db", 5432, policy());
  ServerTarget target;
  StartupParams params;
  EXPECT_FALSE(host.claim_check(Clock::now() + 1h, target, params)) << "an up host is never checked";
  ServerTarget failing;
  failing.user = "app";
  failing.dbname = "appdb";
  host.record_failure("refused", failing, {{"application_name", "x"}});
  const auto failed_at = Clock::now();
  EXPECT_FALSE(host.claim_check(failed_at, target, params)) << "not before backoff_initial";
  ASSERT_TRUE(host.claim_check(failed_at + 100ms, target, params));
  EXPECT_EQ(target.user, "app");
  EXPECT_EQ(target.dbname, "appdb");
  ASSERT_EQ(params.size(), 1u);
  EXPECT_FALSE(host.claim_check(failed_at + 10s, target, params)) << "one check at a time";
  host.check_done(false, "still refused");
  EXPECT_TRUE(host.down());
  EXPECT_EQ(host.status().last_failure, "still refused");
  EXPECT_EQ(host.status().failures, 2);
  // The next check waits at least backoff_initial / 2 (jitter) and at most backoff_max.
  const auto after = Clock::now();
  EXPECT_FALSE(host.claim_check(after, target, params));
  ASSERT_TRUE(host.claim_check(after + 1000ms, target, params));
  host.check_done(true, {});
  EXPECT_FALSE(host.down());
  EXPECT_TRUE(host.usable(Clock::now()));
}

TEST(HostTest, CheckBackoffNeverExceedsBackoffMax) {
  Host host("db", 5432, policy());
  ServerTarget target;
  StartupParams params;
  host.record_failure("refused", target, params);
  auto at = Clock::now() + 100ms;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(host.claim_check(at, target, params)) << i;
    host.check_done(false, "refused");
    at = Clock::now() + 1000ms;  // backoff_max
  }
}

TEST(HostRegistryTest, OneHostPerAddress) {
  HostRegistry registry(policy());
  auto a = registry.get("127.0.0.1", 5432);
  auto b = registry.get("127.0.0.1", 5432);
  auto c = registry.get("127.0.0.1", 5433);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(registry.all().size(), 2u);
  a->record_failure("refused", ServerTarget{}, {});
  EXPECT_TRUE(b->down()) << "every pool in front of a server sees its health";
}

TEST(ConnectionLimitTest, TokensUpToMax) {
  ConnectionLimit limit("database app", 2);
  EXPECT_TRUE(limit.try_take());
  EXPECT_TRUE(limit.try_take());
  EXPECT_FALSE(limit.try_take());
  EXPECT_EQ(limit.open(), 2);
  limit.give_back();
  EXPECT_EQ(limit.open(), 1);
  EXPECT_TRUE(limit.try_take());
  limit.give_back();
  limit.give_back();
  EXPECT_EQ(limit.open(), 0);
  limit.give_back();  // never below zero
  EXPECT_EQ(limit.open(), 0);
  EXPECT_FALSE(limit.others_waiting(nullptr)) << "no members";
}

TEST(ConnectionLimitTest, BothOrNeither) {
  ConnectionLimit database("database app", 2);
  ConnectionLimit user("user app", 1);
  EXPECT_TRUE(ConnectionLimit::try_take_both(&database, &user));
  EXPECT_FALSE(ConnectionLimit::try_take_both(&database, &user)) << "user full";
  EXPECT_EQ(database.open(), 1) << "nothing taken from the other limit";
  EXPECT_TRUE(ConnectionLimit::try_take_both(&database, nullptr));
  EXPECT_FALSE(ConnectionLimit::try_take_both(nullptr, &database));
  EXPECT_TRUE(ConnectionLimit::try_take_both(nullptr, nullptr));
  EXPECT_EQ(database.open(), 2);
  EXPECT_EQ(user.open(), 1);
}

}  // namespace
}  // namespace sluice::pool
