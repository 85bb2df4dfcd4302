#pragma once
// Statistics per query shape (database, user, fingerprint), pg_stat_statements-
// style with percentiles, and the ring of recent slow statements behind SHOW SLOW.
// Pure code: no I/O, no clock reads (the caller passes every time in), so tests
// are deterministic.
//
// Recording: each worker thread owns a QueryStats::Shard (add_shard()) and
// records into it; shards are merged only when read (snapshot(), top_n()). A
// shard has its own mutex, taken by a reader a chunk of kReadChunk (16) shapes at
// a time and released in between (measured, -O2, 5000 shapes, loaded 2-core
// machine: a chunk holds it ~13 µs on average, ~0.1 ms at most; a whole snapshot
// takes 12-21 ms). The owning thread only try_locks it in record(): when a
// reader holds it, the sample is kept aside and added at the next record() or
// flush(), so the relay does not wait for a reader; only after kMaxDeferred
// samples kept during one reader's run does it wait (one chunk) rather than drop. record()
// costs ~50 ns (lock, hash of database + user + fingerprint, histogram ~12 ns).
// A lock-free scheme (single-writer relaxed atomics for every counter) would save
// those ~20 ns but needs an atomic copy of the histogram and its own protection
// against eviction; not worth it at the statement rates of a pooler.
//
// Bounded: a shard holds at most max_shapes shapes (default 5000). A new shape
// in a full shard first evicts the least used 5% (at least one): fewest calls,
// ties broken by the least recently seen. Batching keeps the O(n) selection off
// almost every insert (pg_stat_statements also evicts 5% at a time). Evicted
// statistics are dropped and counted (evictions()). The cap is per shard, so a
// snapshot may hold up to shards * max_shapes shapes.
//
// Memory per shape and shard: sizeof(QueryShapeStats) = 4704 bytes (a 4464-byte
// duration histogram, 48-byte exact summaries of server and wait time, counters,
// three short strings) + the normalized text + a map node and slot pointer (~80
// bytes): ~4.8 KB + text. A full shard of 5000 shapes is ~24 MB (+ texts); with
// one shard per worker thread, multiply by the threads. Server and wait time have
// no histogram of their own (that would triple it), only total/min/max/mean/
// stddev. A new shape in a full shard costs ~1.5 µs amortized (eviction included).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pool/switchable_mutex.h"
#include "proxy/latency_histogram.h"
#include "proxy/slow_log.h"

namespace sluice::proxy {

struct QueryShapeStats;

// Where a recorder's last sample went: the next sample of the same shape, database
// and user skips the shard's index (three hashes and a probe). Checked against
// the slot's own key under the shard's lock, and void once the shard evicts or is
// reset, so a stale or shared hint only costs a lookup.
struct QuerySlotHint {
  const void* shard = nullptr;
  std::uint64_t epoch = 0;
  QueryShapeStats* slot = nullptr;
};

// One finished statement, as the session saw it.
struct QuerySample {
  std::string_view database;
  std::string_view user;
  std::uint64_t fingerprint = 0;
  std::string_view query;  // normalized text; copied only when the shape is new to the shard
  std::chrono::nanoseconds duration{0};  // as the client sees it inside Sluice
  std::chrono::nanoseconds server{0};    // first byte to PostgreSQL -> its reply
  std::chrono::nanoseconds wait{0};      // waiting for a server connection
  std::uint64_t rows = 0;                // from the CommandComplete tag
  bool error = false;                    // ended in an ErrorResponse
  std::chrono::system_clock::time_point at;  // when it finished
  QuerySlotHint* hint = nullptr;             // the recorder's own, owner thread only
};

// The statistics of one shape: one shard's, or all shards merged.
struct QueryShapeStats {
  std::string database;
  std::string user;
  std::uint64_t fingerprint = 0;
  std::string query;  // normalized text, from the earliest recording seen
  std::uint64_t calls = 0;
  std::uint64_t errors = 0;
  std::uint64_t rows = 0;
  LatencyHistogram duration;  // calls, total/min/max/mean/stddev and percentiles
  LatencySummary server;
  LatencySummary wait;
  std::chrono::system_clock::time_point first_seen;
  std::chrono::system_clock::time_point last_seen;

  void record(const QuerySample& sample);
  // Adds the statistics of the same shape from another shard.
  void merge(const QueryShapeStats& other);
  std::uint64_t total_ns() const { return duration.sum_ns(); }
};

enum class QueryOrder : std::uint8_t {
  total_time,  // sum of durations (SHOW QUERIES)
  mean_time,
  calls,
  errors,
};

class QueryStats {
 public:
  static constexpr std::size_t kDefaultMaxShapes = 5000;
  static constexpr std::size_t kReadChunk = 16;  // shapes merged per lock hold by a reader

  // The shard of one thread. record() is meant for its owning thread (any thread
  // may call it safely, but then the lock is contended).
  class Shard {
   public:
    // Does not wait for a reader: if one is merging this shard, the sample is kept
    // and added at the next record() or flush() of the owning thread (see above).
    void record(const QuerySample& sample);
    // Owner thread: adds kept samples, waiting for a reader if there is one.
    void flush();
    std::size_t size() const;
    std::uint64_t evictions() const;

    Shard(const Shard&) = delete;
    Shard& operator=(const Shard&) = delete;

   private:
    friend class QueryStats;
    Shard(std::size_t max_shapes, bool locking);

    struct KeyRef {  // views into the slot's own strings (slots never move)
      std::string_view database;
      std::string_view user;
      std::uint64_t fingerprint;
      bool operator==(const KeyRef&) const = default;
    };
    struct KeyHash {
      std::size_t operator()(const KeyRef& key) const noexcept;
    };

    void record_locked(const QuerySample& sample);        // mutex_ held
    void add_deferred_locked();                           // mutex_ held
    QueryShapeStats& insert(const QuerySample& sample);  // mutex_ held
    void evict();                                         // mutex_ held
    void clear();

    const std::size_t max_shapes_;
    mutable pool::SwitchableMutex mutex_;
    // Samples recorded while a reader held mutex_: the relay never waits for a
    // reader; they are added at the owner's next record(). Owner thread only.
    struct Deferred {
      std::string database, user, query;
      QuerySample sample;
    };
    static constexpr std::size_t kMaxDeferred = 4096;
    std::vector<Deferred> deferred_;
    // Slots have stable addresses: a slot is reset and reused after eviction, and
    // the index's keys view its strings. A free slot has calls == 0.
    std::vector<std::unique_ptr<QueryShapeStats>> slots_;
    std::vector<std::uint32_t> free_;
    std::unordered_map<KeyRef, std::uint32_t, KeyHash> index_;
    std::uint64_t evictions_ = 0;
    std::uint64_t epoch_ = 0;  // bumped whenever slots are reset or freed (hints go stale)
  };

  explicit QueryStats(std::size_t max_shapes = kDefaultMaxShapes);
  QueryStats(const QueryStats&) = delete;
  QueryStats& operator=(const QueryStats&) = delete;

  // A new shard, owned by this object and valid for its lifetime. Thread-safe.
  // `locking` false: the shard's owner is the only thread that ever reads this
  // object (one worker), so neither it nor the readers lock the shard.
  Shard& add_shard(bool locking = true);

  // Every shape, merged across shards, in no particular order. Thread-safe.
  std::vector<QueryShapeStats> snapshot() const;
  // The n shapes first by `order` (descending), ties by database, user, fingerprint.
  std::vector<QueryShapeStats> top_n(std::size_t n, QueryOrder order = QueryOrder::total_time) const;
  // Forgets every shape (pg_stat_statements_reset()); eviction counts stay.
  void reset();

  std::uint64_t evictions() const;  // summed over shards
  std::size_t max_shapes() const { return max_shapes_; }

 private:
  const std::size_t max_shapes_;
  mutable std::mutex shards_mutex_;  // guards shards_ (the list, not the shards)
  std::deque<std::unique_ptr<Shard>> shards_;
  std::vector<Shard*> shard_list() const;
};

// The last `capacity` slow statements, for SHOW SLOW. A mutex-protected ring:
// slow statements are rare (a percent or so), so a short push under a lock shared
// by all threads is cheap; the old record is destroyed outside the lock.
template <class Record>
class RecentRing {
 public:
  explicit RecentRing(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  void push(Record record) {
    Record old;
    {
      std::lock_guard lock(mutex_);
      ++pushed_;
      if (items_.size() < capacity_) {
        items_.push_back(std::move(record));
        return;
      }
      old = std::exchange(items_[next_], std::move(record));
      next_ = (next_ + 1) % capacity_;
    }
  }
  // The records held, newest first.
  std::vector<Record> recent() const {
    std::lock_guard lock(mutex_);
    std::vector<Record> out;
    out.reserve(items_.size());
    // next_ is the oldest once the ring is full; 0 (== size) before.
    const std::size_t n = items_.size();
    for (std::size_t i = 0; i < n; ++i) out.push_back(items_[(next_ + n - 1 - i) % n]);
    return out;
  }
  std::uint64_t pushed() const {  // ever pushed, including those overwritten
    std::lock_guard lock(mutex_);
    return pushed_;
  }
  std::size_t capacity() const { return capacity_; }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::vector<Record> items_;  // grows to capacity_, then is overwritten in place
  std::size_t next_ = 0;       // the slot the next push overwrites once full
  std::uint64_t pushed_ = 0;
};

// SHOW SLOW: the fields of the slow-query log.
using RecentSlowQueries = RecentRing<SlowQueryRecord>;
inline constexpr std::size_t kDefaultRecentSlowQueries = 100;

}  // namespace sluice::proxy
