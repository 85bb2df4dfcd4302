// Tests for proxy/latency_histogram.h: percentiles against the exact percentiles
// of known distributions (same rank definition), bucket bounds, merge, the exact
// summary, and halving on count overflow.
//
// Random values come from std::mt19937_64 with fixed seeds, turned into uniform
// and normal variates here (the standard fixes the engine's output, not that of
// std::*_distribution), so every platform sees the same values.
#include "proxy/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace sluice::proxy {
namespace {

constexpr double kMaxRelativeError = 0.02;  // the bound; the design gives 1%
const double kQuantiles[] = {0.5, 0.95, 0.99, 0.999};

class Values {
 public:
  explicit Values(std::uint64_t seed) : rng_(seed) {}
  double uniform01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
  double normal() {  // Box-Muller
    const double u1 = 1.0 - uniform01();  // (0, 1]
    const double u2 = uniform01();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  std::uint64_t uniform_ns(std::uint64_t lo, std::uint64_t hi) {
    return lo + static_cast<std::uint64_t>(uniform01() * static_cast<double>(hi - lo));
  }
  // Log-normal: exp(mu + sigma * N(0,1)), mu and sigma of ln(ns).
  std::uint64_t lognormal_ns(double median_ns, double sigma) {
    return static_cast<std::uint64_t>(median_ns * std::exp(sigma * normal()));
  }

 private:
  std::mt19937_64 rng_;
};

// The exact q-quantile: the smallest value with at least q * n values <= it.
std::uint64_t exact_quantile(const std::vector<std::uint64_t>& sorted, double q) {
  return sorted[quantile_rank(q, sorted.size()) - 1];
}

double relative_error(double got, double want) { return want == 0 ? std::abs(got) : std::abs(got - want) / want; }

// Feeds `values` to a histogram, checks p50/p95/p99/p99.9 and the exact summary,
// and returns the largest relative error over a sweep of quantiles.
double check_distribution(const std::string& name, std::vector<std::uint64_t> values) {
  LatencyHistogram h;
  for (std::uint64_t v : values) h.record(v);
  std::sort(values.begin(), values.end());
  EXPECT_EQ(h.count(), values.size()) << name;
  EXPECT_EQ(h.min_ns(), values.front()) << name;
  EXPECT_EQ(h.max_ns(), values.back()) << name;
  for (double q : kQuantiles) {
    const double want = static_cast<double>(exact_quantile(values, q));
    const double got = h.quantile_ns(q);
    EXPECT_LE(relative_error(got, want), kMaxRelativeError) << name << " q=" << q << " got " << got << " want " << want;
  }
  double worst = 0;
  for (int i = 0; i <= 1000; ++i) {
    const double q = i / 1000.0;
    const double want = static_cast<double>(exact_quantile(values, q));
    worst = std::max(worst, relative_error(h.quantile_ns(q), want));
  }
  EXPECT_LE(worst, LatencyHistogram::kRelativeAccuracy + 1e-9) << name;
  std::cout << "[ accuracy ] " << name << ": n=" << values.size() << ", worst relative error over q=0..1 step 0.001: "
            << worst * 100 << "%\n";
  return worst;
}

TEST(LatencyHistogramTest, QuantileRankIsTheSmallestValueWithAtLeastQnAtOrBelow) {
  EXPECT_EQ(quantile_rank(0.5, 0), 0u);
  EXPECT_EQ(quantile_rank(0.95, 100), 95u);  // 0.95 * 100 is 95.00000000000001 in double
  EXPECT_EQ(quantile_rank(0.99, 100), 99u);
  EXPECT_EQ(quantile_rank(0.999, 1000), 999u);
  EXPECT_EQ(quantile_rank(0.999, 1001), 1000u);
  EXPECT_EQ(quantile_rank(0.5, 1), 1u);
  EXPECT_EQ(quantile_rank(0.5, 3), 2u);
  EXPECT_EQ(quantile_rank(0.5, 4), 2u);
  EXPECT_EQ(quantile_rank(0, 10), 1u);
  EXPECT_EQ(quantile_rank(1, 10), 10u);
  EXPECT_EQ(quantile_rank(0.001, 10), 1u);
}

TEST(LatencyHistogramTest, BucketsCoverOneMicrosecondToAnHourWithinOnePercent) {
  EXPECT_EQ(LatencyHistogram::bucket_index(0), LatencyHistogram::kUnderflow);
  EXPECT_EQ(LatencyHistogram::bucket_index(1000), LatencyHistogram::kUnderflow);
  EXPECT_EQ(LatencyHistogram::bucket_index(1001), 1);
  const std::uint64_t hour_ns = 3600ull * 1'000'000'000;
  EXPECT_LT(LatencyHistogram::bucket_index(hour_ns), LatencyHistogram::kOverflow);
  EXPECT_GE(LatencyHistogram::bucket_upper_ns(LatencyHistogram::kRegularBuckets), static_cast<double>(hour_ns));
  EXPECT_EQ(LatencyHistogram::bucket_index(2 * hour_ns), LatencyHistogram::kOverflow);
  EXPECT_EQ(LatencyHistogram::bucket_index(UINT64_MAX), LatencyHistogram::kOverflow);

  // Every value lies in its bucket's bounds, within 1% of its representative.
  Values rng(1);
  for (int i = 0; i < 200000; ++i) {
    const std::uint64_t v = 1001 + static_cast<std::uint64_t>(std::exp(rng.uniform01() * std::log(3.6e12)));
    const int k = LatencyHistogram::bucket_index(v);
    if (k == LatencyHistogram::kOverflow) continue;
    ASSERT_GE(k, 1);
    const double x = static_cast<double>(v);
    ASSERT_GT(x, LatencyHistogram::bucket_lower_ns(k) * (1 - 1e-12)) << v;
    ASSERT_LE(x, LatencyHistogram::bucket_upper_ns(k) * (1 + 1e-12)) << v;
    ASSERT_LE(relative_error(LatencyHistogram::representative_ns(k), x), LatencyHistogram::kRelativeAccuracy + 1e-12)
        << v;
  }
}

TEST(LatencyHistogramTest, CostsUnderFiveKilobytes) {
  EXPECT_EQ(LatencyHistogram::kBuckets, 1103);
  EXPECT_EQ(sizeof(LatencyHistogram), 4464u);
}

TEST(LatencyHistogramTest, EmptyHistogramReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min_ns(), 0u);
  EXPECT_EQ(h.max_ns(), 0u);
  EXPECT_EQ(h.mean_ns(), 0);
  EXPECT_EQ(h.stddev_ns(), 0);
  EXPECT_EQ(h.quantile_ns(0.5), 0);
}

TEST(LatencyHistogramTest, UniformPercentilesWithinTwoPercent) {
  Values rng(42);
  std::vector<std::uint64_t> values(200000);
  for (auto& v : values) v = rng.uniform_ns(1'000, 100'000'000);  // 1 µs .. 100 ms
  check_distribution("uniform 1us..100ms", std::move(values));
}

TEST(LatencyHistogramTest, LogNormalPercentilesWithinTwoPercent) {
  Values rng(7);
  std::vector<std::uint64_t> values(200000);
  for (auto& v : values) v = rng.lognormal_ns(500'000, 1.0);  // median 500 µs
  check_distribution("log-normal median 500us sigma 1", std::move(values));
}

TEST(LatencyHistogramTest, BimodalPercentilesWithinTwoPercent) {
  Values rng(11);
  std::vector<std::uint64_t> values(200000);
  for (auto& v : values) {
    // 90% cache hits around 200 µs, 10% slow path around 50 ms.
    v = rng.uniform01() < 0.9 ? rng.lognormal_ns(200'000, 0.2) : rng.lognormal_ns(50'000'000, 0.3);
  }
  check_distribution("bimodal 200us/50ms", std::move(values));
}

TEST(LatencyHistogramTest, ConstantIsExact) {
  LatencyHistogram h;
  for (int i = 0; i < 10000; ++i) h.record(std::chrono::microseconds(1234));
  for (double q : {0.0, 0.5, 0.95, 0.99, 0.999, 1.0}) EXPECT_EQ(h.quantile_ns(q), 1'234'000) << q;
  EXPECT_EQ(h.mean_ns(), 1'234'000);
  EXPECT_EQ(h.stddev_ns(), 0);
  EXPECT_EQ(h.sum_ns(), 10000ull * 1'234'000);
}

TEST(LatencyHistogramTest, SingleValueIsExact) {
  LatencyHistogram h;
  h.record(std::chrono::milliseconds(250));
  for (double q : kQuantiles) EXPECT_EQ(h.quantile_ns(q), 250'000'000) << q;
  EXPECT_EQ(h.min_ns(), 250'000'000u);
  EXPECT_EQ(h.max_ns(), 250'000'000u);
  EXPECT_EQ(h.mean_ns(), 250'000'000);
  EXPECT_EQ(h.stddev_ns(), 0);
}

TEST(LatencyHistogramTest, OneMillionLogNormalValuesWithinTwoPercent) {
  Values rng(20261125);
  std::vector<std::uint64_t> values(1'000'000);
  for (auto& v : values) v = rng.lognormal_ns(2'000'000, 1.5);  // median 2 ms, long tail
  check_distribution("1M log-normal median 2ms sigma 1.5", std::move(values));
}

TEST(LatencyHistogramTest, SubMicrosecondAndOverflowValuesAreClamped) {
  LatencyHistogram low;
  for (std::uint64_t v : {0ull, 200ull, 700ull}) low.record(v);
  EXPECT_EQ(low.quantile_ns(0.5), 700);  // 1 µs representative, clamped to max
  EXPECT_EQ(low.quantile_ns(0), 0);
  EXPECT_EQ(low.bucket_count(LatencyHistogram::kUnderflow), 3u);

  LatencyHistogram high;
  const std::uint64_t two_hours = 7200ull * 1'000'000'000;
  high.record(std::chrono::milliseconds(10));
  high.record(two_hours);
  high.record(two_hours + 5);
  EXPECT_EQ(high.bucket_count(LatencyHistogram::kOverflow), 2u);
  EXPECT_EQ(high.quantile_ns(0.5), static_cast<double>(two_hours + 5));  // overflow reports max
  EXPECT_EQ(high.quantile_ns(0.0), 10'000'000);

  LatencyHistogram negative;
  negative.record(std::chrono::nanoseconds(-5));
  EXPECT_EQ(negative.max_ns(), 0u);
}

TEST(LatencyHistogramTest, MinMaxMeanStddevAreExact) {
  Values rng(3);
  std::vector<std::uint64_t> values(100000);
  for (auto& v : values) v = rng.lognormal_ns(1'000'000, 0.8);
  LatencyHistogram h;
  for (std::uint64_t v : values) h.record(v);

  std::uint64_t sum = 0;
  for (std::uint64_t v : values) sum += v;
  const long double mean = static_cast<long double>(sum) / values.size();
  long double squares = 0;
  for (std::uint64_t v : values) squares += (v - mean) * (v - mean);
  const double stddev = static_cast<double>(std::sqrt(squares / values.size()));

  EXPECT_EQ(h.sum_ns(), sum);
  EXPECT_EQ(h.min_ns(), *std::min_element(values.begin(), values.end()));
  EXPECT_EQ(h.max_ns(), *std::max_element(values.begin(), values.end()));
  EXPECT_NEAR(h.mean_ns(), static_cast<double>(mean), static_cast<double>(mean) * 1e-12);
  EXPECT_NEAR(h.stddev_ns(), stddev, stddev * 1e-9);
}

TEST(LatencyHistogramTest, StddevSurvivesLargeValuesWithSmallSpread) {
  // 1 hour +- 1 ns: a raw sum of squares (~1.3e25 per value) would cancel to noise.
  LatencyHistogram h;
  const std::uint64_t base = 3600ull * 1'000'000'000;
  for (int i = 0; i < 1000; ++i) h.record(base + (i % 2 == 0 ? 1 : -1));
  EXPECT_NEAR(h.stddev_ns(), 1.0, 1e-3);
  EXPECT_NEAR(h.mean_ns(), static_cast<double>(base), 1.0);
}

TEST(LatencyHistogramTest, MergeOfShardsEqualsOneHistogramFedEverything) {
  Values rng(99);
  LatencyHistogram all;
  LatencyHistogram shards[4];
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t v = rng.uniform01() < 0.5 ? rng.lognormal_ns(300'000, 0.5) : rng.uniform_ns(0, 5'000'000'000);
    all.record(v);
    shards[(i * 7 + i / 3) % 4].record(v);
  }
  LatencyHistogram merged;
  for (const auto& shard : shards) merged.merge(shard);
  merged.merge(LatencyHistogram{});  // an empty shard changes nothing

  for (int i = 0; i < LatencyHistogram::kBuckets; ++i) ASSERT_EQ(merged.bucket_count(i), all.bucket_count(i)) << i;
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.sum_ns(), all.sum_ns());
  EXPECT_EQ(merged.min_ns(), all.min_ns());
  EXPECT_EQ(merged.max_ns(), all.max_ns());
  EXPECT_NEAR(merged.mean_ns(), all.mean_ns(), all.mean_ns() * 1e-12);
  EXPECT_NEAR(merged.stddev_ns(), all.stddev_ns(), all.stddev_ns() * 1e-9);
  for (double q : kQuantiles) EXPECT_EQ(merged.quantile_ns(q), all.quantile_ns(q)) << q;
}

TEST(LatencyHistogramTest, CountsAreHalvedRatherThanOverflowing) {
  // Doubling by self-merge reaches 2^32 per bucket without 4 billion records.
  LatencyHistogram h;
  for (int i = 0; i < 3; ++i) h.record(std::chrono::microseconds(100));
  h.record(std::chrono::milliseconds(10));
  for (int i = 0; i < 31; ++i) {
    const LatencyHistogram copy = h;
    h.merge(copy);
  }
  const int small = LatencyHistogram::bucket_index(100'000);
  const int large = LatencyHistogram::bucket_index(10'000'000);
  EXPECT_EQ(h.count(), 4ull << 31);  // exact
  EXPECT_EQ(h.bucket_count(small), 3ull << 30);  // 3 * 2^31 did not fit: halved once
  EXPECT_EQ(h.bucket_count(large), 1ull << 30);
  h.record(std::chrono::milliseconds(10));
  EXPECT_EQ(h.bucket_count(large), (1ull << 30) + 1);
  // The distribution keeps its shape: p50 in the 100 µs band, p99 in the 10 ms band.
  EXPECT_LE(relative_error(h.quantile_ns(0.5), 100'000), 0.01);
  EXPECT_LE(relative_error(h.quantile_ns(0.99), 10'000'000), 0.01);
  EXPECT_EQ(h.min_ns(), 100'000u);
  EXPECT_EQ(h.max_ns(), 10'000'000u);
}

}  // namespace
}  // namespace sluice::proxy
