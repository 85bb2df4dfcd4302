// Sluice microbenchmarks (Google Benchmark): the codec's hot code, in ns per message.
//
//   scan_bench.cpp      frame scanning of pgbench -S replies and requests (StreamScanner::feed,
//                       peek_message), relay of bulk DataRows (ns per DataRow, GB/s)
//   auth_bench.cpp      SCRAM-SHA-256 in both roles, make_scram_secret, MD5; per exchange
//   builders_bench.cpp  messages Sluice writes itself: ErrorResponse, a login's ParameterStatus set,
//                       ReadyForQuery
//   stats_bench.cpp     per-statement statistics: literal-blanked cache key, shape cache hit,
//                       a sample into a shard (index or slot hint); per statement
//   fixtures.h          the wire streams, and observers mirroring proxy/client_session.cpp
//
// Run (Release; the tests are not needed):
//   cmake -S . -B build-micro -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLUICE_BUILD_TESTS=OFF
//   cmake --build build-micro --target sluice_microbench
//   build-micro/bench/sluice_microbench                                  # everything, ~1.5 min
//   build-micro/bench/sluice_microbench --benchmark_filter='Scan|Relay'  # a subset (regex)
//   build-micro/bench/sluice_microbench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// On a busy 2-core machine use repetitions and read the medians.
//
// Reading the output: "Time"/"CPU" are per iteration, and an iteration is a whole stream (e.g. 1000
// pgbench transactions) or a whole exchange. The counters give the per-unit numbers:
//   t/msg  time per wire message       t/txn  time per pgbench transaction (one request or reply)
//   t/row  time per DataRow            bytes_per_second / items_per_second as usual
// For the auth and builder benchmarks one iteration is one exchange / one build, so Time is the answer.
//
// "***WARNING*** Library was built as DEBUG" comes from Debian's libbenchmark 1.7.1 package; the timed
// loops are header-inlined, so it does not affect the numbers.
//
// Results, 2026-11-25: Release, GCC 12, OpenSSL 3.0.19, 2-core AMD EPYC VM (SHA-NI) with load average
// 8-10 from parallel builds, so wall Time was 2-4x CPU; CPU time, median of 3 repetitions
// (--benchmark_repetitions=3 --benchmark_min_time=0.3):
//   StreamScanner + ServerObserver, pgbench -S replies   per msg   per txn
//     simple   (T D C Z)          whole / 16 KiB / per read   3.45 / 3.34 / 3.96 ns   13.8 / 13.4 / 15.9 ns
//     extended (1 2 T D C Z)      whole / 16 KiB / per read   3.25 / 3.20 / 3.58 ns   19.5 / 19.2 / 21.5 ns
//     prepared (2 T D C Z)        whole / 16 KiB / per read   3.25 / 3.26 / 3.67 ns   16.3 / 16.3 / 18.4 ns
//   peek_message loop, simple: + same observer 3.41 ns/msg, framing only 2.51 ns/msg
//   StreamScanner + ClientObserver, requests (whole / per read): simple Q 3.28 / 5.19 ns per msg;
//     extended P B D E S 3.15 / 3.47 ns per msg (15.8 / 17.4 ns per txn); prepared 3.26 / 3.76 ns per msg
//   Relay, DataRows in 64 KiB reads: 32 B rows 3.11 ns/row (9.6 GiB/s); 114 B rows (pgbench_accounts)
//     3.54 ns/row, 30 GiB/s, 2.0 us per 64 KiB read; 1 KiB rows 3.2 ns/row; 114 B in 8 KiB reads 3.51 ns/row.
//     Header-hopping lower bound (no state machine, no observer): 2.72 ns/row.
//   SCRAM server role (exchange, secret cached)    3.57 us   full login path 5.55 us
//     parse_scram_secret 0.24 us (done twice per login), random_nonce 0.88 us
//   SCRAM client role, 4096 iterations             1300 us   (1 iteration: 8.3 us) -> PBKDF2 is >99%
//   make_scram_secret 4096                         1413 us   PKCS5_PBKDF2_HMAC alone 1154 us (282 ns/iter)
//     PBKDF2 with precomputed HMAC pads (baseline)  446 us (109 ns/iter), same result
//   md5_response 0.41 us, md5_verify 0.46 us, md5 server login (plain password) 1.96 us
//     one MD5 via EVP per call 0.32 us vs prefetched EVP_MD 0.13 us;
//     one-shot HMAC() 1.16 us vs prefetched EVP_MAC 0.45 us
//   append_error_response 80 ns fresh string / 30 ns reused; login ParameterStatus x13 + K + Z 292 ns
//     (198 ns with reserve(512)); append_ready_for_query 9 ns
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fixtures.h"
#include "protocol/scanner.h"
#include "protocol/wire.h"

namespace sluice::bench {
namespace {

constexpr int kTransactions = 1000;
constexpr std::size_t kWhole = 0;         // the whole stream in one feed() call
constexpr std::size_t kPerTransaction = 1;  // one feed() per transaction: one read per round trip
constexpr std::uint32_t kServerMaxBody = 1u << 30;  // ClientSession::server_scanner_
constexpr std::uint32_t kClientMaxBody = 1u << 20;  // a typical max_message_size

// Splits `s` as reads would deliver it.
std::vector<Bytes> split(const Stream& s, std::size_t chunking) {
  const Bytes all = as_bytes(s.bytes);
  std::vector<Bytes> chunks;
  if (chunking == kWhole) {
    chunks.push_back(all);
  } else if (chunking == kPerTransaction) {
    for (std::size_t i = 0; i < s.starts.size(); ++i) {
      const std::size_t end = i + 1 < s.starts.size() ? s.starts[i + 1] : all.size();
      chunks.push_back(all.subspan(s.starts[i], end - s.starts[i]));
    }
  } else {
    for (std::size_t pos = 0; pos < all.size(); pos += chunking)
      chunks.push_back(all.subspan(pos, std::min(chunking, all.size() - pos)));
  }
  return chunks;
}

void report_stream(benchmark::State& state, const Stream& s, std::size_t chunks) {
  per_message(state, s.messages, static_cast<std::int64_t>(s.bytes.size()));
  per_unit(state, "t/txn", static_cast<double>(s.transactions));
  state.counters["msgs"] = static_cast<double>(s.messages);
  state.counters["chunks"] = static_cast<double>(chunks);
}

// ---- Server -> client: pgbench -S replies through the relay's scanner + ServerObserver ----

void BM_ScanReplies(benchmark::State& state, Mode mode, std::size_t chunking) {
  const Stream s = make_stream(mode, kTransactions, /*replies=*/true);
  const auto chunks = split(s, chunking);
  ServerState server_state;
  ParameterStore params;
  ServerObserver observer{server_state, &params};
  protocol::StreamScanner scanner(kServerMaxBody);
  for (auto _ : state) {
    for (Bytes chunk : chunks) {
      auto outcome = scanner.feed(chunk, observer);
      if (!outcome) state.SkipWithError("scan failed");
      benchmark::DoNotOptimize(outcome);
    }
  }
  if (!scanner.at_boundary() || server_state.transaction != 'I') state.SkipWithError("scanner lost the stream");
  report_stream(state, s, chunks.size());
}
BENCHMARK_CAPTURE(BM_ScanReplies, simple/whole, Mode::simple, kWhole);
BENCHMARK_CAPTURE(BM_ScanReplies, simple/16KiB, Mode::simple, 16 * 1024);
BENCHMARK_CAPTURE(BM_ScanReplies, simple/per_txn, Mode::simple, kPerTransaction);
BENCHMARK_CAPTURE(BM_ScanReplies, extended/whole, Mode::extended, kWhole);
BENCHMARK_CAPTURE(BM_ScanReplies, extended/16KiB, Mode::extended, 16 * 1024);
BENCHMARK_CAPTURE(BM_ScanReplies, extended/per_txn, Mode::extended, kPerTransaction);
BENCHMARK_CAPTURE(BM_ScanReplies, prepared/whole, Mode::prepared, kWhole);
BENCHMARK_CAPTURE(BM_ScanReplies, prepared/16KiB, Mode::prepared, 16 * 1024);
BENCHMARK_CAPTURE(BM_ScanReplies, prepared/per_txn, Mode::prepared, kPerTransaction);

// The same replies walked with peek_message (the login path's framing), dispatching to the same
// observer: a reference for the scanner's cost. `observe` false = framing alone.
void BM_PeekReplies(benchmark::State& state, Mode mode, bool observe) {
  const Stream s = make_stream(mode, kTransactions, /*replies=*/true);
  const Bytes all = as_bytes(s.bytes);
  ServerState server_state;
  ParameterStore params;
  ServerObserver observer{server_state, &params};
  for (auto _ : state) {
    Bytes rest = all;
    std::int64_t seen = 0;
    for (;;) {
      protocol::Message msg;
      auto n = protocol::peek_message(rest, kServerMaxBody, msg);
      if (!n) state.SkipWithError("peek failed");
      if (!n || *n == 0) break;
      if (observe && observer.inspect(msg.type)) observer.on_message(msg.type, msg.body);
      rest = rest.subspan(*n);
      ++seen;
    }
    benchmark::DoNotOptimize(seen);
    benchmark::DoNotOptimize(server_state);
  }
  report_stream(state, s, 1);
}
BENCHMARK_CAPTURE(BM_PeekReplies, simple/observer, Mode::simple, true);
BENCHMARK_CAPTURE(BM_PeekReplies, simple/framing_only, Mode::simple, false);
BENCHMARK_CAPTURE(BM_PeekReplies, extended/observer, Mode::extended, true);
BENCHMARK_CAPTURE(BM_PeekReplies, prepared/observer, Mode::prepared, true);

// ---- Client -> server: pgbench -S requests through the scanner + ClientObserver ----------------

void BM_ScanRequests(benchmark::State& state, Mode mode, std::size_t chunking) {
  const Stream s = make_stream(mode, kTransactions, /*replies=*/false);
  const auto chunks = split(s, chunking);
  ServerState server_state;
  ClientObserver observer{server_state};
  protocol::StreamScanner scanner(kClientMaxBody);
  for (auto _ : state) {
    for (Bytes chunk : chunks) {
      auto outcome = scanner.feed(chunk, observer);
      if (!outcome || outcome->stopped) state.SkipWithError("scan failed");
      benchmark::DoNotOptimize(outcome);
    }
  }
  benchmark::DoNotOptimize(server_state);
  if (!scanner.at_boundary()) state.SkipWithError("scanner lost the stream");
  report_stream(state, s, chunks.size());
}
BENCHMARK_CAPTURE(BM_ScanRequests, simple/whole, Mode::simple, kWhole);
BENCHMARK_CAPTURE(BM_ScanRequests, simple/per_txn, Mode::simple, kPerTransaction);
BENCHMARK_CAPTURE(BM_ScanRequests, extended/whole, Mode::extended, kWhole);
BENCHMARK_CAPTURE(BM_ScanRequests, extended/per_txn, Mode::extended, kPerTransaction);
BENCHMARK_CAPTURE(BM_ScanRequests, prepared/whole, Mode::prepared, kWhole);
BENCHMARK_CAPTURE(BM_ScanRequests, prepared/per_txn, Mode::prepared, kPerTransaction);

// ---- Relay of bulk results: DataRows in 64 KiB reads -------------------------------------------
// ~1 MiB of DataRows (plus CommandComplete and ReadyForQuery) fed in 64 KiB chunks, as the relay's
// reads would deliver a large SELECT: rows split across chunk boundaries are skipped by byte count.
// Arg 0: bytes per DataRow (114 = a pgbench_accounts row in text format). Arg 1: chunk size.

Stream make_row_stream(std::size_t row_bytes, std::size_t total) {
  Stream s;
  const int rows = static_cast<int>(total / row_bytes);
  s.bytes.reserve(total + 64);
  for (int i = 0; i < rows; ++i) append_data_row(s.bytes, row_bytes, i);
  MessageBuilder(s.bytes, 'C').cstr("SELECT " + std::to_string(rows)).finish();
  protocol::append_ready_for_query(s.bytes, 'I');
  s.starts.push_back(0);
  s.messages = rows + 2;
  s.transactions = rows;  // reused below as "rows"
  return s;
}

void BM_RelayDataRows(benchmark::State& state) {
  const auto row_bytes = static_cast<std::size_t>(state.range(0));
  const auto chunk = static_cast<std::size_t>(state.range(1));
  const Stream s = make_row_stream(row_bytes, 16 * 65536);
  const auto chunks = split(s, chunk);
  ServerState server_state;
  ParameterStore params;
  ServerObserver observer{server_state, &params};
  protocol::StreamScanner scanner(kServerMaxBody);
  for (auto _ : state) {
    for (Bytes c : chunks) {
      auto outcome = scanner.feed(c, observer);
      if (!outcome) state.SkipWithError("scan failed");
      benchmark::DoNotOptimize(outcome);
    }
  }
  if (!scanner.at_boundary()) state.SkipWithError("scanner lost the stream");
  per_message(state, s.messages, static_cast<std::int64_t>(s.bytes.size()));
  per_unit(state, "t/row", static_cast<double>(s.transactions));
  per_unit(state, "t/64KiB", static_cast<double>(s.bytes.size()) / 65536.0);
}
BENCHMARK(BM_RelayDataRows)
    ->ArgNames({"row_bytes", "chunk"})
    ->Args({32, 65536})
    ->Args({114, 65536})
    ->Args({1024, 65536})
    ->Args({114, 8192});

// Lower bound for the same work: hop from header to header over the whole buffer, no state machine
// and no observer. The gap to BM_RelayDataRows/114 is what the scanner's generality costs.
void BM_HopHeadersBaseline(benchmark::State& state) {
  const auto row_bytes = static_cast<std::size_t>(state.range(0));
  const Stream s = make_row_stream(row_bytes, 16 * 65536);
  const Bytes all = as_bytes(s.bytes);
  for (auto _ : state) {
    std::size_t pos = 0;
    char last = 0;
    while (pos + protocol::kHeaderSize <= all.size()) {
      last = static_cast<char>(all[pos]);
      pos += 1 + protocol::read_u32(all.data() + pos + 1);
    }
    benchmark::DoNotOptimize(last);
    benchmark::DoNotOptimize(pos);
  }
  per_message(state, s.messages, static_cast<std::int64_t>(s.bytes.size()));
  per_unit(state, "t/row", static_cast<double>(s.transactions));
}
BENCHMARK(BM_HopHeadersBaseline)->ArgName("row_bytes")->Arg(114);

}  // namespace
}  // namespace sluice::bench
