// AuthQueryCache: answers of [auth_query] reused for `cache`, per (database, user).
#include "proxy/auth_query.h"

#include <gtest/gtest.h>

namespace sluice::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = AuthQueryCache::Clock;

TEST(AuthQueryCache, AnswersLiveForTheirTtlPerDatabaseAndUser) {
  AuthQueryCache cache;
  const Clock::time_point t0{};
  cache.put("app", "alice", AuthLookup{true, "SCRAM-SHA-256$secret"}, t0);
  cache.put("app", "ghost", AuthLookup{false, std::nullopt}, t0);

  auto hit = cache.get("app", "alice", t0 + 999ms, 1s);
  ASSERT_TRUE(hit.has_value());
  EXPECT_TRUE(hit->found);
  EXPECT_EQ(hit->secret, std::optional<std::string>("SCRAM-SHA-256$secret"));
  // A role that does not exist is remembered too (a flood of unknown names asks once per ttl).
  auto negative = cache.get("app", "ghost", t0 + 1s, 1s);
  ASSERT_TRUE(negative.has_value());
  EXPECT_FALSE(negative->found);
  // Another database is another question.
  EXPECT_FALSE(cache.get("other", "alice", t0, 1s).has_value());
  // Past the ttl: gone (and asked again).
  EXPECT_FALSE(cache.get("app", "alice", t0 + 1001ms, 1s).has_value());
  EXPECT_FALSE(cache.get("app", "alice", t0, 1s).has_value()) << "the expired entry was removed";
}

TEST(AuthQueryCache, ZeroTtlNeverAnswers) {
  AuthQueryCache cache;
  const Clock::time_point t0{};
  cache.put("app", "alice", AuthLookup{true, "md5abc"}, t0);
  EXPECT_FALSE(cache.get("app", "alice", t0, 0ms).has_value());
}

TEST(AuthQueryCache, LaterAnswerReplacesTheEarlier) {
  AuthQueryCache cache;
  const Clock::time_point t0{};
  cache.put("app", "alice", AuthLookup{true, "old"}, t0);
  cache.put("app", "alice", AuthLookup{true, std::nullopt}, t0 + 5s);  // password removed / expired
  auto hit = cache.get("app", "alice", t0 + 5s, 1s);
  ASSERT_TRUE(hit.has_value());
  EXPECT_TRUE(hit->found);
  EXPECT_FALSE(hit->secret.has_value());
}

}  // namespace
}  // namespace sluice::proxy
