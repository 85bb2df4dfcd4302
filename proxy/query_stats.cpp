#include "proxy/query_stats.h"

#include <algorithm>
#include <functional>
#include <iterator>
#include <tuple>

namespace sluice::proxy {

void QueryShapeStats::record(const QuerySample& sample) {
  if (calls == 0) {
    first_seen = sample.at;
    last_seen = sample.at;
  } else {
    first_seen = std::min(first_seen, sample.at);
    last_seen = std::max(last_seen, sample.at);
  }
  ++calls;
  if (sample.error) ++errors;
  rows += sample.rows;
  duration.record(sample.duration);
  server.record(sample.server);
  wait.record(sample.wait);
}

void QueryShapeStats::merge(const QueryShapeStats& other) {
  if (other.calls == 0) return;
  if (calls == 0) {
    *this = other;
    return;
  }
  if (query.empty() || (other.first_seen < first_seen && !other.query.empty())) query = other.query;
  first_seen = std::min(first_seen, other.first_seen);
  last_seen = std::max(last_seen, other.last_seen);
  calls += other.calls;
  errors += other.errors;
  rows += other.rows;
  duration.merge(other.duration);
  server.merge(other.server);
  wait.merge(other.wait);
}

// --- Shard ---

std::size_t QueryStats::Shard::KeyHash::operator()(const KeyRef& key) const noexcept {
  std::size_t h = std::hash<std::string_view>{}(key.database);
  const auto mix = [&h](std::size_t v) { h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
  mix(std::hash<std::string_view>{}(key.user));
  mix(static_cast<std::size_t>(key.fingerprint));
  return h;
}

QueryStats::Shard::Shard(std::size_t max_shapes, bool locking)
    : max_shapes_(std::max<std::size_t>(1, max_shapes)), mutex_(locking) {}

void QueryStats::Shard::record(const QuerySample& sample) {
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) {
    if (deferred_.size() < kMaxDeferred) {
      // A reader is merging this shard: keep the sample instead of waiting for it.
      Deferred& kept = deferred_.emplace_back();
      kept.database = sample.database;
      kept.user = sample.user;
      kept.query = sample.query;
      kept.sample = sample;
      kept.sample.hint = nullptr;  // added later, maybe after its owner is gone
      return;
    }
    // A reader has held on through kMaxDeferred samples: wait for its chunk
    // (~13 µs) rather than lose statistics.
    lock.lock();
  }
  add_deferred_locked();
  record_locked(sample);
}

void QueryStats::Shard::flush() {
  std::lock_guard lock(mutex_);
  add_deferred_locked();
}

void QueryStats::Shard::add_deferred_locked() {
  for (auto& kept : deferred_) {
    kept.sample.database = kept.database;
    kept.sample.user = kept.user;
    kept.sample.query = kept.query;
    record_locked(kept.sample);
  }
  deferred_.clear();
}

void QueryStats::Shard::record_locked(const QuerySample& sample) {
  QuerySlotHint* hint = sample.hint;
  if (hint != nullptr && hint->shard == this && hint->epoch == epoch_) {
    QueryShapeStats& hinted = *hint->slot;
    if (hinted.fingerprint == sample.fingerprint && hinted.database == sample.database &&
        hinted.user == sample.user) {
      hinted.record(sample);
      return;
    }
  }
  const auto it = index_.find(KeyRef{sample.database, sample.user, sample.fingerprint});
  QueryShapeStats& stats = it != index_.end() ? *slots_[it->second] : insert(sample);
  if (hint != nullptr) *hint = {this, epoch_, &stats};
  stats.record(sample);
}

QueryShapeStats& QueryStats::Shard::insert(const QuerySample& sample) {
  if (index_.size() >= max_shapes_) evict();
  std::uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.push_back(std::make_unique<QueryShapeStats>());
  }
  QueryShapeStats& stats = *slots_[slot];
  stats.database = sample.database;
  stats.user = sample.user;
  stats.fingerprint = sample.fingerprint;
  stats.query = sample.query;
  index_.emplace(KeyRef{stats.database, stats.user, stats.fingerprint}, slot);
  return stats;
}

void QueryStats::Shard::evict() {
  ++epoch_;
  std::vector<std::uint32_t> live;
  live.reserve(index_.size());
  for (const auto& entry : index_) live.push_back(entry.second);
  const std::size_t batch = std::min(live.size(), std::max<std::size_t>(1, max_shapes_ / 20));
  const auto less_used = [this](std::uint32_t a, std::uint32_t b) {
    const QueryShapeStats& x = *slots_[a];
    const QueryShapeStats& y = *slots_[b];
    return std::tie(x.calls, x.last_seen, a) < std::tie(y.calls, y.last_seen, b);
  };
  std::nth_element(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(batch - 1), live.end(), less_used);
  // nth_element leaves the batch - 1 smallest before the nth, in any order.
  for (std::size_t i = 0; i < batch; ++i) {
    QueryShapeStats& stats = *slots_[live[i]];
    index_.erase(KeyRef{stats.database, stats.user, stats.fingerprint});
    stats = QueryShapeStats{};
    free_.push_back(live[i]);
    ++evictions_;
  }
}

void QueryStats::Shard::clear() {
  std::lock_guard lock(mutex_);
  ++epoch_;
  index_.clear();
  slots_.clear();
  free_.clear();
}

std::size_t QueryStats::Shard::size() const {
  std::lock_guard lock(mutex_);
  return index_.size();
}

std::uint64_t QueryStats::Shard::evictions() const {
  std::lock_guard lock(mutex_);
  return evictions_;
}

// --- QueryStats ---

QueryStats::QueryStats(std::size_t max_shapes) : max_shapes_(std::max<std::size_t>(1, max_shapes)) {}

QueryStats::Shard& QueryStats::add_shard(bool locking) {
  std::lock_guard lock(shards_mutex_);
  shards_.push_back(std::unique_ptr<Shard>(new Shard(max_shapes_, locking)));
  return *shards_.back();
}

std::vector<QueryStats::Shard*> QueryStats::shard_list() const {
  std::lock_guard lock(shards_mutex_);
  std::vector<Shard*> out;
  out.reserve(shards_.size());
  for (const auto& shard : shards_) out.push_back(shard.get());
  return out;
}

std::vector<QueryShapeStats> QueryStats::snapshot() const {
  using KeyRef = Shard::KeyRef;
  std::deque<QueryShapeStats> merged;  // a deque: elements never move, so `where` may view their strings
  std::unordered_map<KeyRef, std::size_t, Shard::KeyHash> where;
  for (Shard* shard : shard_list()) {
    for (std::size_t begin = 0;; begin += kReadChunk) {
      std::lock_guard lock(shard->mutex_);
      const std::size_t end = std::min(begin + kReadChunk, shard->slots_.size());
      if (begin >= end) break;
      for (std::size_t i = begin; i < end; ++i) {
        const QueryShapeStats& stats = *shard->slots_[i];
        if (stats.calls == 0) continue;  // a free slot
        const auto it = where.find(KeyRef{stats.database, stats.user, stats.fingerprint});
        if (it != where.end()) {
          merged[it->second].merge(stats);
          continue;
        }
        const QueryShapeStats& copy = merged.emplace_back(stats);
        where.emplace(KeyRef{copy.database, copy.user, copy.fingerprint}, merged.size() - 1);
      }
    }
  }
  where.clear();
  return {std::make_move_iterator(merged.begin()), std::make_move_iterator(merged.end())};
}

std::vector<QueryShapeStats> QueryStats::top_n(std::size_t n, QueryOrder order) const {
  std::vector<QueryShapeStats> all = snapshot();
  // long double holds every uint64 exactly (64-bit mantissa on x86-64) and the mean.
  const auto metric = [order](const QueryShapeStats& s) -> long double {
    switch (order) {
      case QueryOrder::total_time: return static_cast<long double>(s.duration.sum_ns());
      case QueryOrder::mean_time: return s.duration.mean_ns();
      case QueryOrder::calls: return static_cast<long double>(s.calls);
      case QueryOrder::errors: return static_cast<long double>(s.errors);
    }
    return 0;
  };
  const auto first = [&metric](const QueryShapeStats& a, const QueryShapeStats& b) {
    const long double ma = metric(a);
    const long double mb = metric(b);
    if (ma != mb) return ma > mb;
    return std::tie(a.database, a.user, a.fingerprint) < std::tie(b.database, b.user, b.fingerprint);
  };
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n), all.end(), first);
  all.resize(n);
  return all;
}

void QueryStats::reset() {
  for (Shard* shard : shard_list()) shard->clear();
}

std::uint64_t QueryStats::evictions() const {
  std::uint64_t total = 0;
  for (Shard* shard : shard_list()) total += shard->evictions();
  return total;
}

}  // namespace sluice::proxy
