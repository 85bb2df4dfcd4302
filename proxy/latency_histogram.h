#pragma once
// A fixed-size, log-bucketed latency histogram (DDSketch-style) and the exact
// summary (count, sum, min, max, mean, stddev) that goes with it. Pure code,
// header-only, no allocation.
//
// Units: values are recorded in nanoseconds (std::uint64_t, or a
// std::chrono::duration, negative clamped to 0): that is what steady_clock gives,
// and it keeps count/sum/min/max exact integers. The buckets are defined in
// microseconds:
//
//   bucket 0          underflow: v <= 1 µs (0 included)
//   bucket k, 1..K    gamma^(k-1) < v <= gamma^k µs, k = ceil(log_gamma(v in µs))
//   bucket K+1        overflow: v > gamma^K µs (~61 minutes)
//
// with gamma = (1 + a) / (1 - a), a = 0.01 and K = 1101. Every value in bucket k
// is within a relative 1% of the bucket's representative 2 * gamma^k / (gamma + 1),
// so quantile(q) is within 1% of the exact q-quantile for every value in
// (1 µs, ~61 min] (the issue asks for 2%). Quantiles are clamped to [min, max]
// (which only brings them closer); the underflow bucket reports 1 µs clamped to
// [min, max] (absolute error < 1 µs), the overflow bucket reports max.
//
// Rank: quantile(q) is the value of rank r = quantile_rank(q, n), the smallest
// value with at least q * n values <= it (r = ceil(q * n), at least 1).
//
// Memory: (K + 2) = 1103 uint32 counts = 4412 bytes, plus a 48-byte summary:
// sizeof(LatencyHistogram) == 4464 (checked below). record() is O(1): one log(),
// one increment, a Welford update of mean and M2.
//
// Counts: a bucket holds at most 2^32 - 1. When an increment or a merge would go
// past that, every bucket is halved (rounded up), which keeps the shape of the
// distribution; count(), sum, min, max, mean and stddev stay exact, and quantile
// ranks are taken over the bucket total. (That takes 4.3 billion samples of one
// shape in one 2% band on one thread.)
//
// Stddev is the population standard deviation (as pg_stat_statements'
// stddev_*_time), kept as Welford's mean and M2 (sum of squared deviations from
// the mean) rather than a raw sum of squares, which would lose all precision to
// cancellation for narrow distributions of large values; merge() uses Chan's
// parallel formula.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace sluice::proxy {

// Exact count, sum, min, max, mean and standard deviation of nanosecond values.
class LatencySummary {
 public:
  void record(std::uint64_t ns) noexcept {
    ++count_;
    sum_ns_ += ns;
    min_ns_ = std::min(min_ns_, ns);
    max_ns_ = std::max(max_ns_, ns);
    const double x = static_cast<double>(ns);
    const double delta = x - mean_;
    mean_ += delta / static_cast<double>(count_);
    m2_ += delta * (x - mean_);
  }
  template <class Rep, class Period>
  void record(std::chrono::duration<Rep, Period> d) noexcept {
    record(to_ns(d));
  }

  void merge(const LatencySummary& other) noexcept {
    if (other.count_ == 0) return;
    if (count_ == 0) {
      *this = other;
      return;
    }
    const double na = static_cast<double>(count_);
    const double nb = static_cast<double>(other.count_);
    const double n = na + nb;
    const double delta = other.mean_ - mean_;
    mean_ += delta * nb / n;
    m2_ += other.m2_ + delta * delta * na * nb / n;
    count_ += other.count_;
    sum_ns_ += other.sum_ns_;
    min_ns_ = std::min(min_ns_, other.min_ns_);
    max_ns_ = std::max(max_ns_, other.max_ns_);
  }

  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t sum_ns() const noexcept { return sum_ns_; }
  std::uint64_t min_ns() const noexcept { return count_ == 0 ? 0 : min_ns_; }  // 0 when empty
  std::uint64_t max_ns() const noexcept { return max_ns_; }                    // 0 when empty
  double mean_ns() const noexcept { return mean_; }                            // 0 when empty
  double variance_ns2() const noexcept { return count_ == 0 ? 0.0 : std::max(0.0, m2_ / static_cast<double>(count_)); }
  double stddev_ns() const noexcept { return std::sqrt(variance_ns2()); }

  template <class Rep, class Period>
  static std::uint64_t to_ns(std::chrono::duration<Rep, Period> d) noexcept {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return ns <= 0 ? 0 : static_cast<std::uint64_t>(ns);
  }

 private:
  std::uint64_t count_ = 0;
  std::uint64_t sum_ns_ = 0;
  std::uint64_t min_ns_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max_ns_ = 0;
  double mean_ = 0;
  double m2_ = 0;
};

// The rank (1-based) of the q-quantile among n values: ceil(q * n), at least 1,
// at most n (0 when n == 0). A relative tolerance of 1e-12 absorbs the rounding
// of q * n, so that 0.95 * 100 gives 95, not 96.
inline std::uint64_t quantile_rank(double q, std::uint64_t n) noexcept {
  if (n == 0) return 0;
  if (!(q > 0)) return 1;  // also NaN
  if (q >= 1) return n;
  const double x = q * static_cast<double>(n);
  const auto r = static_cast<std::uint64_t>(std::ceil(x * (1 - 1e-12)));
  return std::clamp<std::uint64_t>(r, 1, n);
}

class LatencyHistogram {
 public:
  static constexpr double kRelativeAccuracy = 0.01;
  static constexpr double kGamma = (1 + kRelativeAccuracy) / (1 - kRelativeAccuracy);
  static constexpr std::uint64_t kMinTrackedNs = 1000;  // 1 µs: bucket 1 starts above it
  static constexpr int kRegularBuckets = 1101;          // gamma^1101 µs ~= 3.67e9 µs ~= 61 min
  static constexpr int kBuckets = kRegularBuckets + 2;  // + underflow (0) and overflow (K + 1)
  static constexpr int kUnderflow = 0;
  static constexpr int kOverflow = kRegularBuckets + 1;
  using Count = std::uint32_t;

  void record(std::uint64_t ns) noexcept {
    summary_.record(ns);
    Count& c = counts_[static_cast<std::size_t>(bucket_index(ns))];
    if (c == std::numeric_limits<Count>::max()) halve();
    ++c;
  }
  template <class Rep, class Period>
  void record(std::chrono::duration<Rep, Period> d) noexcept {
    record(LatencySummary::to_ns(d));
  }

  // Adds other's samples: afterwards *this is what one histogram fed both sets
  // of values would hold (buckets, count, sum, min, max exactly; mean and stddev
  // up to floating-point rounding).
  void merge(const LatencyHistogram& other) noexcept {
    summary_.merge(other.summary_);
    bool fits = true;
    for (int i = 0; i < kBuckets; ++i) {
      const std::uint64_t s = std::uint64_t{counts_[i]} + other.counts_[i];
      if (s > std::numeric_limits<Count>::max()) {
        fits = false;
        break;
      }
    }
    if (fits) {
      for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
      return;
    }
    // Rare: halve the sum until every bucket fits.
    std::array<std::uint64_t, kBuckets> sums;
    std::uint64_t largest = 0;
    for (int i = 0; i < kBuckets; ++i) {
      sums[i] = std::uint64_t{counts_[i]} + other.counts_[i];
      largest = std::max(largest, sums[i]);
    }
    while (largest > std::numeric_limits<Count>::max()) {
      largest = 0;
      for (auto& s : sums) {
        s = (s + 1) / 2;
        largest = std::max(largest, s);
      }
    }
    for (int i = 0; i < kBuckets; ++i) counts_[i] = static_cast<Count>(sums[i]);
  }

  void reset() noexcept { *this = LatencyHistogram{}; }

  // The q-quantile (q in [0, 1]) in nanoseconds; 0 when empty. See the header
  // comment for the accuracy and the rank definition.
  double quantile_ns(double q) const noexcept {
    if (summary_.count() == 0) return 0;
    std::uint64_t total = 0;
    for (Count c : counts_) total += c;
    const std::uint64_t rank = quantile_rank(q, total);
    const double lo = static_cast<double>(summary_.min_ns());
    const double hi = static_cast<double>(summary_.max_ns());
    if (total == summary_.count()) {  // exact at the ends when nothing was halved
      if (rank == 1) return lo;
      if (rank == total) return hi;
    }
    std::uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(representative_ns(i), lo, hi);
    }
    return hi;  // not reached
  }

  // Exact summary.
  const LatencySummary& summary() const noexcept { return summary_; }
  std::uint64_t count() const noexcept { return summary_.count(); }
  std::uint64_t sum_ns() const noexcept { return summary_.sum_ns(); }
  std::uint64_t min_ns() const noexcept { return summary_.min_ns(); }
  std::uint64_t max_ns() const noexcept { return summary_.max_ns(); }
  double mean_ns() const noexcept { return summary_.mean_ns(); }
  double stddev_ns() const noexcept { return summary_.stddev_ns(); }

  // Buckets (for display and tests).
  Count bucket_count(int index) const noexcept { return counts_[static_cast<std::size_t>(index)]; }
  static int bucket_index(std::uint64_t ns) noexcept {
    if (ns <= kMinTrackedNs) return kUnderflow;
    const double us = static_cast<double>(ns) / 1000.0;
    const double k = std::ceil(std::log(us) * inv_log_gamma());
    if (k > kRegularBuckets) return kOverflow;
    return k < 1 ? 1 : static_cast<int>(k);
  }
  // Bounds of regular bucket k in nanoseconds: (lower, upper].
  static double bucket_lower_ns(int k) noexcept { return 1000.0 * std::pow(kGamma, k - 1); }
  static double bucket_upper_ns(int k) noexcept { return 1000.0 * std::pow(kGamma, k); }
  // The value reported for a bucket (before clamping to [min, max]).
  static double representative_ns(int index) noexcept {
    if (index <= kUnderflow) return static_cast<double>(kMinTrackedNs);
    if (index >= kOverflow) return std::numeric_limits<double>::infinity();  // clamped to max
    return 1000.0 * 2.0 * std::pow(kGamma, index) / (kGamma + 1.0);
  }

 private:
  static double inv_log_gamma() noexcept {
    static const double value = 1.0 / std::log(kGamma);
    return value;
  }
  void halve() noexcept {
    for (Count& c : counts_) c = static_cast<Count>((std::uint64_t{c} + 1) / 2);
  }

  LatencySummary summary_;
  std::array<Count, kBuckets> counts_{};
};

static_assert(sizeof(LatencySummary) == 48);
static_assert(sizeof(LatencyHistogram) == 48 + 4 * LatencyHistogram::kBuckets + 4);  // 4464 bytes (4 of padding)

}  // namespace sluice::proxy
