// Tests for proxy/query_stats: per-shape counting, merge across shards recorded
// from several threads, eviction at the cap, top_n ordering, and the ring of
// recent slow statements. Every time is passed in, so everything is deterministic.
#include "proxy/query_stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace sluice::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

const Clock::time_point kT0 = Clock::time_point{} + std::chrono::seconds(1'780'000'000);

QuerySample sample(std::uint64_t fingerprint, std::chrono::nanoseconds duration, Clock::time_point at,
                   std::string_view database = "app", std::string_view user = "alice") {
  QuerySample s;
  s.database = database;
  s.user = user;
  s.fingerprint = fingerprint;
  s.query = "SELECT * FROM t WHERE id = $1";
  s.duration = duration;
  s.server = duration / 2;
  s.wait = duration / 4;
  s.rows = 1;
  s.at = at;
  return s;
}

const QueryShapeStats* find(const std::vector<QueryShapeStats>& all, std::uint64_t fingerprint,
                            std::string_view user = "alice") {
  for (const auto& s : all) {
    if (s.fingerprint == fingerprint && s.user == user) return &s;
  }
  return nullptr;
}

TEST(QueryStatsTest, CountsCallsErrorsRowsAndTimes) {
  QueryStats stats;
  QueryStats::Shard& shard = stats.add_shard();
  QuerySample a = sample(1, 2ms, kT0 + 10s);
  a.rows = 5;
  shard.record(a);
  QuerySample b = sample(1, 4ms, kT0 + 20s);
  b.query = "a different text for the same shape";
  b.error = true;
  b.rows = 0;
  b.server = 3ms;
  b.wait = 0ns;
  shard.record(b);
  shard.record(sample(1, 6ms, kT0 + 5s));  // out of order: first_seen moves back

  const auto all = stats.snapshot();
  ASSERT_EQ(all.size(), 1u);
  const QueryShapeStats& s = all[0];
  EXPECT_EQ(s.database, "app");
  EXPECT_EQ(s.user, "alice");
  EXPECT_EQ(s.fingerprint, 1u);
  EXPECT_EQ(s.query, "SELECT * FROM t WHERE id = $1");  // captured at first sight
  EXPECT_EQ(s.calls, 3u);
  EXPECT_EQ(s.errors, 1u);
  EXPECT_EQ(s.rows, 6u);
  EXPECT_EQ(s.total_ns(), 12'000'000u);
  EXPECT_EQ(s.duration.min_ns(), 2'000'000u);
  EXPECT_EQ(s.duration.max_ns(), 6'000'000u);
  EXPECT_DOUBLE_EQ(s.duration.mean_ns(), 4'000'000);
  EXPECT_NEAR(s.duration.stddev_ns(), 1'632'993.16, 0.01);  // population stddev of 2, 4, 6 ms
  EXPECT_NEAR(s.duration.quantile_ns(0.5), 4'000'000, 4'000'000 * LatencyHistogram::kRelativeAccuracy);
  EXPECT_EQ(s.duration.quantile_ns(1.0), 6'000'000);
  EXPECT_EQ(s.server.sum_ns(), 1'000'000u + 3'000'000u + 3'000'000u);
  EXPECT_EQ(s.server.max_ns(), 3'000'000u);
  EXPECT_EQ(s.wait.sum_ns(), 500'000u + 0u + 1'500'000u);
  EXPECT_EQ(s.wait.min_ns(), 0u);
  EXPECT_EQ(s.first_seen, kT0 + 5s);
  EXPECT_EQ(s.last_seen, kT0 + 20s);
}

TEST(QueryStatsTest, KeyIsDatabaseUserAndFingerprint) {
  QueryStats stats;
  QueryStats::Shard& shard = stats.add_shard();
  shard.record(sample(1, 1ms, kT0, "app", "alice"));
  shard.record(sample(1, 1ms, kT0, "app", "bob"));
  shard.record(sample(1, 1ms, kT0, "other", "alice"));
  shard.record(sample(2, 1ms, kT0, "app", "alice"));
  shard.record(sample(1, 1ms, kT0, "app", "alice"));
  EXPECT_EQ(shard.size(), 4u);
  const auto all = stats.snapshot();
  ASSERT_EQ(all.size(), 4u);
  std::map<std::tuple<std::string, std::string, std::uint64_t>, std::uint64_t> calls;
  for (const auto& s : all) calls[{s.database, s.user, s.fingerprint}] = s.calls;
  EXPECT_EQ((calls[{"app", "alice", 1}]), 2u);
  EXPECT_EQ((calls[{"app", "bob", 1}]), 1u);
  EXPECT_EQ((calls[{"other", "alice", 1}]), 1u);
  EXPECT_EQ((calls[{"app", "alice", 2}]), 1u);
}

TEST(QueryStatsTest, SnapshotMergesShardsRecordedConcurrently) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  constexpr int kShapes = 10;
  QueryStats stats;
  std::vector<QueryStats::Shard*> shards;
  for (int t = 0; t < kThreads; ++t) shards.push_back(&stats.add_shard());

  // What a single histogram per shape fed everything would hold.
  struct Expected {
    LatencyHistogram duration;
    std::uint64_t errors = 0;
    std::uint64_t rows = 0;
    std::uint64_t server = 0;
    Clock::time_point first = Clock::time_point::max();
    Clock::time_point last = Clock::time_point::min();
  };
  std::vector<Expected> expected(kShapes);
  const auto make = [](int t, int i) {
    const auto duration = std::chrono::microseconds(10 + (i * 37 + t * 1009) % 50'000);
    QuerySample s = sample(static_cast<std::uint64_t>(i % kShapes) + 100, duration, kT0 + std::chrono::milliseconds(i));
    s.error = (i + t) % 13 == 0;
    s.rows = static_cast<std::uint64_t>(i % 7);
    return s;
  };
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const QuerySample s = make(t, i);
      Expected& e = expected[i % kShapes];
      e.duration.record(s.duration);
      e.errors += s.error ? 1 : 0;
      e.rows += s.rows;
      e.server += static_cast<std::uint64_t>(s.server.count());
      e.first = std::min(e.first, s.at);
      e.last = std::max(e.last, s.at);
    }
  }

  std::atomic<bool> done{false};
  std::thread reader([&] {  // reads while the recorders run
    while (!done.load()) {
      for (const auto& s : stats.snapshot()) ASSERT_LE(s.calls, std::uint64_t{kThreads} * kPerThread);
    }
  });
  std::vector<std::thread> recorders;
  for (int t = 0; t < kThreads; ++t) {
    recorders.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) shards[t]->record(make(t, i));
      // Samples that met a reader holding the shard were kept aside, not waited for.
      shards[t]->flush();
    });
  }
  for (auto& r : recorders) r.join();
  done = true;
  reader.join();

  const auto all = stats.snapshot();
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kShapes));
  for (int k = 0; k < kShapes; ++k) {
    const QueryShapeStats* s = find(all, static_cast<std::uint64_t>(k) + 100);
    ASSERT_NE(s, nullptr) << k;
    const Expected& e = expected[k];
    EXPECT_EQ(s->calls, e.duration.count()) << k;
    EXPECT_EQ(s->errors, e.errors) << k;
    EXPECT_EQ(s->rows, e.rows) << k;
    EXPECT_EQ(s->total_ns(), e.duration.sum_ns()) << k;
    EXPECT_EQ(s->duration.min_ns(), e.duration.min_ns()) << k;
    EXPECT_EQ(s->duration.max_ns(), e.duration.max_ns()) << k;
    EXPECT_NEAR(s->duration.stddev_ns(), e.duration.stddev_ns(), e.duration.stddev_ns() * 1e-9) << k;
    for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
      ASSERT_EQ(s->duration.bucket_count(b), e.duration.bucket_count(b)) << k << " bucket " << b;
    }
    EXPECT_EQ(s->server.sum_ns(), e.server) << k;
    EXPECT_EQ(s->server.count(), s->calls) << k;
    EXPECT_EQ(s->first_seen, e.first) << k;
    EXPECT_EQ(s->last_seen, e.last) << k;
  }
}

TEST(QueryStatsTest, EvictsTheLeastUsedAtTheCap) {
  QueryStats stats(4);  // 5% of 4 rounds to the minimum batch of one
  QueryStats::Shard& shard = stats.add_shard();
  const auto record = [&](std::uint64_t fp, int times, Clock::time_point at) {
    for (int i = 0; i < times; ++i) shard.record(sample(fp, 1ms, at));
  };
  record(1, 5, kT0 + 1s);
  record(2, 1, kT0 + 2s);  // fewest calls, but seen after 3
  record(3, 1, kT0 + 1s);  // fewest calls and least recently seen: evicted first
  record(4, 2, kT0 + 3s);
  EXPECT_EQ(shard.size(), 4u);
  EXPECT_EQ(stats.evictions(), 0u);

  record(5, 1, kT0 + 4s);
  EXPECT_EQ(shard.size(), 4u);
  EXPECT_EQ(stats.evictions(), 1u);
  auto all = stats.snapshot();
  EXPECT_EQ(find(all, 3), nullptr);
  ASSERT_NE(find(all, 2), nullptr);
  ASSERT_NE(find(all, 5), nullptr);

  record(6, 1, kT0 + 5s);  // 2 (1 call, seen at 2s) goes next, before 5 (1 call, 4s)
  all = stats.snapshot();
  EXPECT_EQ(find(all, 2), nullptr);
  EXPECT_NE(find(all, 5), nullptr);
  EXPECT_EQ(find(all, 1)->calls, 5u);

  record(3, 1, kT0 + 6s);  // an evicted shape comes back with fresh statistics
  all = stats.snapshot();
  ASSERT_NE(find(all, 3), nullptr);
  EXPECT_EQ(find(all, 3)->calls, 1u);
  EXPECT_EQ(find(all, 3)->first_seen, kT0 + 6s);
  EXPECT_EQ(shard.size(), 4u);
  EXPECT_EQ(stats.evictions(), 3u);
}

TEST(QueryStatsTest, ASlotHintNeverCountsASampleForAnotherShape) {
  QueryStats stats(2);
  QueryStats::Shard& shard = stats.add_shard();
  QueryStats::Shard& other = stats.add_shard();
  QuerySlotHint a;  // two recorders' hints, as two sessions hold them
  QuerySlotHint b;
  const auto record = [&](QueryStats::Shard& into, QuerySlotHint& hint, std::uint64_t fp) {
    QuerySample s = sample(fp, 1ms, kT0);
    s.hint = &hint;
    into.record(s);
  };
  record(shard, a, 10);
  record(shard, b, 20);
  record(shard, a, 10);
  record(shard, a, 10);  // through the hint
  EXPECT_EQ(find(stats.snapshot(), 10)->calls, 3u);
  record(shard, a, 30);  // another shape: evicts 20 (fewest calls) and takes its slot
  record(shard, b, 20);  // b's hint names that slot, which now holds 30: 20 is new again (30 evicted)
  auto all = stats.snapshot();
  EXPECT_EQ(find(all, 10)->calls, 3u);
  ASSERT_NE(find(all, 20), nullptr);
  EXPECT_EQ(find(all, 20)->calls, 1u);
  EXPECT_EQ(find(all, 30), nullptr);
  EXPECT_EQ(stats.evictions(), 2u);

  stats.reset();  // the slots a and b name are freed (ASan would see a use)
  record(shard, a, 10);
  record(shard, b, 20);
  record(other, a, 10);  // a names a slot of the first shard
  all = stats.snapshot();
  EXPECT_EQ(find(all, 10)->calls, 2u);
  EXPECT_EQ(find(all, 20)->calls, 1u);
  EXPECT_EQ(shard.size(), 2u);
  EXPECT_EQ(other.size(), 1u);
}

TEST(QueryStatsTest, EvictsFivePercentAtATime) {
  QueryStats stats(100);
  QueryStats::Shard& shard = stats.add_shard();
  for (std::uint64_t fp = 0; fp < 100; ++fp) {
    for (std::uint64_t i = 0; i <= fp; ++i) shard.record(sample(fp, 1ms, kT0));  // shape fp has fp + 1 calls
  }
  EXPECT_EQ(shard.size(), 100u);
  shard.record(sample(1000, 1ms, kT0));
  EXPECT_EQ(shard.size(), 96u);
  EXPECT_EQ(shard.evictions(), 5u);
  const auto all = stats.snapshot();
  for (std::uint64_t fp = 0; fp < 5; ++fp) EXPECT_EQ(find(all, fp), nullptr) << fp;
  for (std::uint64_t fp = 5; fp < 100; ++fp) EXPECT_NE(find(all, fp), nullptr) << fp;
  // The freed slots are reused before the shard grows again.
  for (std::uint64_t fp = 1001; fp < 1005; ++fp) shard.record(sample(fp, 1ms, kT0));
  EXPECT_EQ(shard.size(), 100u);
  EXPECT_EQ(shard.evictions(), 5u);
}

TEST(QueryStatsTest, TopNOrdersByTotalTimeThenByKey) {
  QueryStats stats;
  QueryStats::Shard& a = stats.add_shard();
  QueryStats::Shard& b = stats.add_shard();
  // totals: 1 -> 10 ms, 2 -> 30 ms (split over shards), 3 -> 20 ms, 4 -> 20 ms, 5 -> 1 ms
  a.record(sample(1, 10ms, kT0));
  a.record(sample(2, 10ms, kT0));
  b.record(sample(2, 20ms, kT0));
  b.record(sample(3, 5ms, kT0));
  b.record(sample(3, 15ms, kT0));
  a.record(sample(4, 20ms, kT0));
  QuerySample failing = sample(5, 1ms, kT0);
  failing.error = true;
  a.record(failing);
  b.record(failing);

  auto top = stats.top_n(3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].fingerprint, 2u);
  EXPECT_EQ(top[0].total_ns(), 30'000'000u);
  EXPECT_EQ(top[1].fingerprint, 3u);  // ties with 4 at 20 ms: lower fingerprint first
  EXPECT_EQ(top[2].fingerprint, 4u);

  EXPECT_EQ(stats.top_n(100).size(), 5u);
  EXPECT_TRUE(stats.top_n(0).empty());

  top = stats.top_n(2, QueryOrder::mean_time);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].fingerprint, 4u);  // 20 ms
  EXPECT_EQ(top[1].fingerprint, 2u);  // 15 ms

  top = stats.top_n(1, QueryOrder::calls);
  EXPECT_EQ(top[0].fingerprint, 2u);  // 2 calls, ties with 3 and 5

  top = stats.top_n(1, QueryOrder::errors);
  EXPECT_EQ(top[0].fingerprint, 5u);
  EXPECT_EQ(top[0].errors, 2u);
}

TEST(QueryStatsTest, MergedTextComesFromTheEarliestShard) {
  QueryStats stats;
  QueryStats::Shard& a = stats.add_shard();
  QueryStats::Shard& b = stats.add_shard();
  QuerySample late = sample(9, 1ms, kT0 + 10s);
  late.query = "late";
  a.record(late);
  QuerySample early = sample(9, 1ms, kT0 + 1s);
  early.query = "early";
  b.record(early);
  const auto all = stats.snapshot();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].query, "early");
  EXPECT_EQ(all[0].calls, 2u);
  EXPECT_EQ(all[0].first_seen, kT0 + 1s);
  EXPECT_EQ(all[0].last_seen, kT0 + 10s);
}

TEST(QueryStatsTest, ResetForgetsEveryShape) {
  QueryStats stats;
  QueryStats::Shard& shard = stats.add_shard();
  shard.record(sample(1, 1ms, kT0));
  stats.reset();
  EXPECT_TRUE(stats.snapshot().empty());
  EXPECT_EQ(shard.size(), 0u);
  shard.record(sample(1, 2ms, kT0));
  ASSERT_EQ(stats.snapshot().size(), 1u);
  EXPECT_EQ(stats.snapshot()[0].calls, 1u);
}

TEST(QueryStatsTest, ShapeCostsUnderFiveKilobytesPlusText) {
  EXPECT_LE(sizeof(QueryShapeStats), 4800u);  // 4704 with libstdc++ on x86-64
}

TEST(QueryStatsTest, EmptyStatsHaveNoShapes) {
  QueryStats stats;
  EXPECT_TRUE(stats.snapshot().empty());
  EXPECT_TRUE(stats.top_n(10).empty());
  stats.add_shard();
  EXPECT_TRUE(stats.snapshot().empty());
  EXPECT_EQ(stats.max_shapes(), QueryStats::kDefaultMaxShapes);
}

SlowQueryRecord slow(int n) {
  SlowQueryRecord r;
  r.ts = kT0 + std::chrono::seconds(n);
  r.duration_ms = 1000.0 + n;
  r.server_ms = 900;
  r.wait_ms = 100;
  r.database = "app";
  r.user = "alice";
  r.application_name = "api";
  r.client = "10.0.0.5:53122";
  r.backend = "127.0.0.1:5432";
  r.backend_pid = 4242;
  r.protocol = "extended";
  r.fingerprint = 0x4851b0e100123b55ull;
  r.query = "SELECT pg_sleep($1) /* " + std::to_string(n) + " */";
  r.command = "SELECT";
  r.rows = n;
  r.sqlstate = n % 2 == 0 ? "" : "57014";
  return r;
}

TEST(QueryStatsTest, RecentSlowRingKeepsTheNewestFirst) {
  RecentSlowQueries ring(3);
  EXPECT_TRUE(ring.recent().empty());
  ring.push(slow(1));
  ring.push(slow(2));
  auto recent = ring.recent();
  ASSERT_EQ(recent.size(), 2u);
  EXPECT_EQ(recent[0].rows, 2);
  EXPECT_EQ(recent[1].rows, 1);

  for (int n = 3; n <= 7; ++n) ring.push(slow(n));  // wraps more than once
  recent = ring.recent();
  ASSERT_EQ(recent.size(), 3u);
  EXPECT_EQ(recent[0].rows, 7);
  EXPECT_EQ(recent[1].rows, 6);
  EXPECT_EQ(recent[2].rows, 5);
  EXPECT_EQ(ring.pushed(), 7u);
  EXPECT_EQ(ring.capacity(), 3u);
  // Every field of the slow-query log survives.
  EXPECT_EQ(recent[0].ts, kT0 + 7s);
  EXPECT_EQ(recent[0].duration_ms, 1007.0);
  EXPECT_EQ(recent[0].query, "SELECT pg_sleep($1) /* 7 */");
  EXPECT_EQ(recent[0].sqlstate, "57014");
  EXPECT_EQ(recent[0].backend_pid, 4242);
  EXPECT_EQ(recent[1].sqlstate, "");
}

TEST(QueryStatsTest, RecentSlowRingTakesPushesFromManyThreads) {
  RecentSlowQueries ring(kDefaultRecentSlowQueries);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&ring, t] {
      for (int i = 0; i < 500; ++i) ring.push(slow(t * 1000 + i));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ring.pushed(), 2000u);
  const auto recent = ring.recent();
  ASSERT_EQ(recent.size(), kDefaultRecentSlowQueries);
  // Newest first: within each thread's pushes, descending order.
  std::map<int, std::int64_t> previous;
  for (const auto& r : recent) {
    const int thread = static_cast<int>(*r.rows / 1000);
    if (previous.count(thread) != 0) {
      EXPECT_LT(*r.rows, previous[thread]);
    }
    previous[thread] = *r.rows;
  }
}

TEST(QueryStatsTest, RecentSlowRingOfCapacityZeroHoldsOne) {
  RecentSlowQueries ring(0);
  ring.push(slow(1));
  ring.push(slow(2));
  ASSERT_EQ(ring.recent().size(), 1u);
  EXPECT_EQ(ring.recent()[0].rows, 2);
}

// One worker's shard is created without its lock (add_shard(false)): recorded,
// read, reset and recorded again on its one thread, it counts exactly as a locked
// shard does. (That it takes no lock is SwitchableMutex's test.)
TEST(QueryStatsTest, AnUnlockedShardIsRecordedAndReadOnItsOwnThread) {
  QueryStats stats;
  QueryStats::Shard& unlocked = stats.add_shard(/*locking=*/false);
  QueryStats::Shard& locked = stats.add_shard();
  unlocked.record(sample(1, 2ms, kT0));
  unlocked.record(sample(1, 4ms, kT0 + 1s));
  locked.record(sample(1, 6ms, kT0 + 2s));
  auto all = stats.snapshot();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].calls, 3u);
  EXPECT_EQ(all[0].total_ns(), 12'000'000u);
  EXPECT_EQ(unlocked.size(), 1u);
  stats.reset();
  EXPECT_TRUE(stats.snapshot().empty());
  unlocked.record(sample(2, 1ms, kT0 + 3s));
  all = stats.snapshot();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].fingerprint, 2u);
  EXPECT_EQ(all[0].calls, 1u);
}

}  // namespace
}  // namespace sluice::proxy
