#pragma once
// Query shapes: the fingerprint and the normalized text (literals -> $n) of a
// statement, for the slow-query log and the per-shape statistics.
//
// The fingerprint is libpg_query's (PostgreSQL's own parser; 64 bits, shown as 16
// hex digits), so queries that differ only in literals, whitespace, comments or
// the length of an IN list share it. Texts longer than `max_parse_bytes`, and texts
// the parser rejects, fall back to a hash of a cheap token scan that drops literals
// (see ShapeSource): such a fallback fingerprint never equals the parser's for the
// same shape, so a query is only grouped with others that took the same path.
//
// The normalized text is pg_query_normalize's, passed through the same token scan:
// comments are removed (they may carry values, e.g. sqlcommenter tags), each run of
// whitespace becomes one space, placeholders created by normalization are numbered
// in order of appearance after the statement's own parameters, and an IN list made
// only of such placeholders is shown as `IN ($3 /*, ... */)` (PostgreSQL 18's
// pg_stat_statements convention). Parameters the client wrote ($1 in an extended-
// protocol Parse) are kept as written. No literal survives in the normalized text.
//
// Cost: a miss parses the text twice (fingerprint + normalize, ~5 + 2 µs for a
// short statement, far more for long IN lists), a hit is one hash lookup; see
// tests/proxy/fingerprint_test.cpp for the measurement.
//
// Threads: a Fingerprinter is not thread-safe; give each worker thread its own, or
// use query_shape(), which keeps one per thread. pg_query_exit() is never called:
// libpg_query frees its per-thread memory context at thread exit, and calling it
// on a worker thread double-frees in this version.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <string_view>
#include <unordered_map>

namespace sluice::proxy {

enum class ShapeSource : std::uint8_t {
  parser,        // libpg_query's fingerprint and normalization
  too_long,      // longer than max_parse_bytes: token-scan fallback
  syntax_error,  // rejected by the parser: token-scan fallback
};
const char* to_string(ShapeSource source);

struct QueryShape {
  std::uint64_t fingerprint = 0;
  std::string normalized;
  ShapeSource source = ShapeSource::parser;

  std::string fingerprint_hex() const;  // 16 lower-case hex digits
};

// "4851b0e100123b55": 16 lower-case hex digits, zero-padded.
std::string format_fingerprint(std::uint64_t fingerprint);

struct FingerprintOptions {
  std::size_t max_parse_bytes = 16 * 1024;  // longer texts are not given to the parser
  std::size_t cache_entries = 4096;         // per Fingerprinter; the cache is cleared when full
  std::size_t cache_bytes = 8 * 1024 * 1024;  // text + normalized bytes held by the cache
};

// Uncached: the shape of `text` from the parser, or from the token scan when the
// text is too long or does not parse.
QueryShape compute_shape(std::string_view text, const FingerprintOptions& options = {});
// The token-scan fallback alone (exposed for tests): literals and parameters hash
// as one placeholder, unquoted words case-insensitively, comments and whitespace
// not at all; the normalized text follows the rules above.
QueryShape token_shape(std::string_view text, ShapeSource source = ShapeSource::too_long);

// The cache key (exposed for tests): the text with the contents of numeric and
// string literals replaced by '?'. Simple-protocol clients (pgbench -M simple,
// most ORMs without prepared statements) send the same statement with new
// literals every time; keyed by exact text, each would miss and pay a parse (5-20
// µs). One pass, no parse. Two texts with the same key differ only in literal
// values, so they have the same shape; collapsing less than the parser would (IN
// lists of other lengths) only costs an extra cache entry.
void literal_key(std::string_view text, std::string& key);

struct TextHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};

// Caches shapes by text with literal values blanked (see literal_key). Texts longer than max_parse_bytes are not cached
// (their token scan is linear and the key would be large).
class Fingerprinter {
 public:
  struct Stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t fallbacks = 0;  // misses that used the token scan
    std::uint64_t cache_clears = 0;
  };

  explicit Fingerprinter(FingerprintOptions options = {});

  // Never null. The shape stays valid for as long as the caller holds it.
  std::shared_ptr<const QueryShape> shape(std::string_view text);
  // The cached shape, or null: never parses.
  std::shared_ptr<const QueryShape> find(std::string_view text);
  // Caches a shape computed elsewhere (not for texts over max_parse_bytes).
  void remember(std::string_view text, std::shared_ptr<const QueryShape> shape);

  const Stats& stats() const { return stats_; }
  std::size_t cache_size() const { return cache_.size(); }
  const FingerprintOptions& options() const { return options_; }
  void clear();

 private:
  FingerprintOptions options_;
  std::unordered_map<std::string, std::shared_ptr<const QueryShape>, TextHash, std::equal_to<>> cache_;
  std::size_t cache_bytes_ = 0;
  Stats stats_;
  std::string key_;  // reused cache key (literal values blanked)
};

// Shapes for the relay without parsing on it: find() answers from the calling
// thread's cache or from the shapes the service's worker thread has published;
// on a miss the caller submit()s the text with the work to do once its shape is
// known (recording the statement), which runs on the worker. A full queue drops
// the job (counted): statistics may miss a statement, a query is never delayed.
class ShapeService {
 public:
  explicit ShapeService(std::size_t queue_capacity = 10000);
  ~ShapeService();  // runs what is queued, then stops the worker
  ShapeService(const ShapeService&) = delete;
  ShapeService& operator=(const ShapeService&) = delete;

  std::shared_ptr<const QueryShape> find(std::string_view text);
  bool submit(std::string text, std::function<void(std::shared_ptr<const QueryShape>)> work);
  std::uint64_t dropped() const;

 private:
  struct Job {
    std::string text;
    std::function<void(std::shared_ptr<const QueryShape>)> work;
  };
  static constexpr std::size_t kMaxShared = 20000;
  void run();
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::uint64_t dropped_ = 0;
  std::string key_;         // under mutex_
  std::string worker_key_;  // worker thread only
  std::unordered_map<std::string, std::shared_ptr<const QueryShape>, TextHash, std::equal_to<>> shared_;
  std::thread worker_;
};

// The calling thread's Fingerprinter (default options), created on first use.
Fingerprinter& thread_fingerprinter();
inline std::shared_ptr<const QueryShape> query_shape(std::string_view text) {
  return thread_fingerprinter().shape(text);
}

}  // namespace sluice::proxy
