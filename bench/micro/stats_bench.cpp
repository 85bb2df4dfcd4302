// What the relay pays per statement for query statistics (proxy/fingerprint,
// proxy/query_stats), on the text pgbench -S -M simple sends: the literal-blanked
// cache key, the per-thread shape cache hit that uses it, and the sample added to
// the thread's shard (through the index, or through the session's slot hint).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "proxy/fingerprint.h"
#include "proxy/query_stats.h"

namespace sluice::bench {
namespace {

// pgbench -S -M simple: one text per transaction, each with another aid.
std::vector<std::string> pgbench_select_texts() {
  std::vector<std::string> texts;
  for (int aid = 1; aid <= 1024; ++aid) {
    texts.push_back("SELECT abalance FROM pgbench_accounts WHERE aid = " + std::to_string(aid * 977 % 1000000) + ";");
  }
  return texts;
}

void BM_LiteralKey(benchmark::State& state) {
  const auto texts = pgbench_select_texts();
  std::string key;
  std::size_t i = 0;
  for (auto _ : state) {
    proxy::literal_key(texts[i++ & 1023], key);
    benchmark::DoNotOptimize(key.data());
  }
}
BENCHMARK(BM_LiteralKey);

void BM_ShapeCacheHit(benchmark::State& state) {
  const auto texts = pgbench_select_texts();
  proxy::Fingerprinter fingerprinter;
  fingerprinter.shape(texts[0]);  // parsed once; every other text hits
  std::size_t i = 0;
  for (auto _ : state) {
    auto shape = fingerprinter.find(texts[i++ & 1023]);
    benchmark::DoNotOptimize(shape.get());
  }
  if (fingerprinter.stats().misses != 1) state.SkipWithError("expected cache hits only");
}
BENCHMARK(BM_ShapeCacheHit);

// state.range(0): 1 = with the session's slot hint, 0 = through the index.
void BM_QueryStatsRecord(benchmark::State& state) {
  proxy::QueryStats stats;
  auto& shard = stats.add_shard();
  // A shard holding other shapes as well, as a busy one does.
  for (std::uint64_t fp = 1; fp <= 200; ++fp) {
    proxy::QuerySample other;
    other.database = "bench";
    other.user = "bench";
    other.fingerprint = fp;
    other.query = "SELECT $1";
    shard.record(other);
  }
  proxy::QuerySlotHint hint;
  proxy::QuerySample sample;
  sample.database = "bench";
  sample.user = "bench";
  sample.fingerprint = 0x5e1ec7ab;
  sample.query = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
  sample.duration = std::chrono::microseconds(180);
  sample.server = std::chrono::microseconds(170);
  sample.rows = 1;
  sample.at = std::chrono::system_clock::now();
  sample.hint = state.range(0) != 0 ? &hint : nullptr;
  for (auto _ : state) {
    shard.record(sample);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_QueryStatsRecord)->ArgName("hint")->Arg(0)->Arg(1);

}  // namespace
}  // namespace sluice::bench
