// Messages Sluice writes itself (protocol/wire.h builders). One iteration = one build. See
// scan_bench.cpp's header for how to run and read these.
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fixtures.h"
#include "protocol/wire.h"

namespace sluice::bench {
namespace {

// What PostgreSQL 15 reports at login (GUC_REPORT), as ClientSession::attach_server replays it.
const std::vector<std::pair<std::string, std::string>>& login_parameters() {
  static const std::vector<std::pair<std::string, std::string>> params = {
      {"application_name", "pgbench"},
      {"client_encoding", "UTF8"},
      {"DateStyle", "ISO, MDY"},
      {"default_transaction_read_only", "off"},
      {"in_hot_standby", "off"},
      {"integer_datetimes", "on"},
      {"IntervalStyle", "postgres"},
      {"is_superuser", "on"},
      {"server_encoding", "UTF8"},
      {"server_version", "15.10 (Debian 15.10-0+deb12u1)"},
      {"session_authorization", "postgres"},
      {"standard_conforming_strings", "on"},
      {"TimeZone", "Etc/UTC"},
  };
  return params;
}

// send_fatal: a fresh string each time, so the allocation is part of it.
void BM_AppendErrorResponse_Fresh(benchmark::State& state) {
  for (auto _ : state) {
    std::string out;
    protocol::append_error_response(out, {"FATAL", "28P01", "password authentication failed for user \"pgbench\""});
    benchmark::DoNotOptimize(out);
  }
  per_message(state, 1);
}
BENCHMARK(BM_AppendErrorResponse_Fresh);

// Into a reused buffer: the builder alone.
void BM_AppendErrorResponse_Reused(benchmark::State& state) {
  std::string out;
  for (auto _ : state) {
    out.clear();
    protocol::append_error_response(out, {"ERROR", "53300", "sorry, too many clients already",
                                          "max_client_conn (5000) reached"});
    benchmark::DoNotOptimize(out);
  }
  per_message(state, 1);
}
BENCHMARK(BM_AppendErrorResponse_Reused);

// attach_server's login tail: every ParameterStatus, BackendKeyData, ReadyForQuery, into a fresh string.
void BM_AppendLoginParameters(benchmark::State& state) {
  const auto& params = login_parameters();
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string out;
    for (const auto& [name, value] : params) protocol::append_parameter_status(out, name, value);
    protocol::append_backend_key(out, {12345, 0x5eed5eed});
    protocol::append_ready_for_query(out, 'I');
    bytes = out.size();
    benchmark::DoNotOptimize(out);
  }
  per_message(state, static_cast<std::int64_t>(params.size()) + 2, static_cast<std::int64_t>(bytes));
  per_unit(state, "t/login", 1);
}
BENCHMARK(BM_AppendLoginParameters);

// The same with the buffer reserved up front: the cost of growing the string while appending.
void BM_AppendLoginParameters_Reserved(benchmark::State& state) {
  const auto& params = login_parameters();
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string out;
    out.reserve(512);
    for (const auto& [name, value] : params) protocol::append_parameter_status(out, name, value);
    protocol::append_backend_key(out, {12345, 0x5eed5eed});
    protocol::append_ready_for_query(out, 'I');
    bytes = out.size();
    benchmark::DoNotOptimize(out);
  }
  per_message(state, static_cast<std::int64_t>(params.size()) + 2, static_cast<std::int64_t>(bytes));
  per_unit(state, "t/login", 1);
}
BENCHMARK(BM_AppendLoginParameters_Reserved);

void BM_AppendReadyForQuery(benchmark::State& state) {
  std::string out;
  for (auto _ : state) {
    out.clear();
    protocol::append_ready_for_query(out, 'I');
    benchmark::DoNotOptimize(out);
  }
  per_message(state, 1);
}
BENCHMARK(BM_AppendReadyForQuery);

}  // namespace
}  // namespace sluice::bench
