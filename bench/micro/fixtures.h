#pragma once
// Shared pieces of the microbenchmarks: realistic wire streams (what pgbench -S
// and bulk SELECTs put on the wire) and observers with the same semantics as
// proxy/client_session.cpp's ClientObserver / ServerObserver (copied here so the
// benchmarks need no sockets and no proxy headers; keep them in step).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/relay_state.h"
#include "protocol/scanner.h"
#include "protocol/wire.h"

namespace sluice::bench {

using protocol::Bytes;
using protocol::MessageBuilder;
using protocol::ScanAction;

inline Bytes as_bytes(std::string_view s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

// ---- Reporting ---------------------------------------------------------------------
// "t/<what>" prints the time per unit (e.g. "12.3ns"): an iteration-invariant rate,
// inverted. `items_processed` is set too, so the default items/s column agrees.
inline void per_unit(benchmark::State& state, const char* name, double units_per_iteration) {
  state.counters[name] = benchmark::Counter(
      units_per_iteration, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
inline void per_message(benchmark::State& state, std::int64_t messages_per_iteration,
                        std::int64_t bytes_per_iteration = 0) {
  state.SetItemsProcessed(state.iterations() * messages_per_iteration);
  if (bytes_per_iteration > 0) state.SetBytesProcessed(state.iterations() * bytes_per_iteration);
  per_unit(state, "t/msg", static_cast<double>(messages_per_iteration));
}

// ---- Observers ----------------------------------------------------------------------

using ServerState = protocol::RelayState;

// pool::ServerConnection's parameter list and set_parameter (linear search, assign).
struct ParameterStore {
  std::vector<std::pair<std::string, std::string>> parameters;
  void set_parameter(std::string_view name, std::string_view value) {
    for (auto& [k, v] : parameters) {
      if (k == name) {
        v.assign(value);
        return;
      }
    }
    parameters.emplace_back(name, value);
  }
};

// The relay's own observers (protocol/relay_state.h), as the proxy uses them.
using ClientObserver = protocol::FrontendObserver;
using ServerObserver = protocol::BackendObserver<ParameterStore>;

// ---- pgbench -S traffic ------------------------------------------------------------------
// pgbench's select-only script: SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
// -M simple: Query. -M extended: libpq PQexecParams = Parse/Bind/Describe(portal)/Execute/Sync.
// -M prepared: PQexecPrepared = Bind/Describe(portal)/Execute/Sync (Parse once per connection).

enum class Mode { simple = 0, extended = 1, prepared = 2 };
inline const char* mode_name(Mode m) {
  return m == Mode::simple ? "simple" : m == Mode::extended ? "extended" : "prepared";
}

inline std::string aid_text(int i) { return std::to_string(1 + (i * 7919) % 100000); }

// One transaction's request, as the client writes it.
inline void append_request(std::string& out, Mode mode, int i) {
  const std::string aid = aid_text(i);
  if (mode == Mode::simple) {
    protocol::append_query(out, "SELECT abalance FROM pgbench_accounts WHERE aid = " + aid + ";");
    return;
  }
  if (mode == Mode::extended)
    MessageBuilder(out, 'P').cstr("").cstr("SELECT abalance FROM pgbench_accounts WHERE aid = $1;").u16(0).finish();
  MessageBuilder(out, 'B')
      .cstr("")
      .cstr(mode == Mode::prepared ? "P0_1" : "")
      .u16(0)  // parameter formats: all text
      .u16(1)
      .u32(static_cast<std::uint32_t>(aid.size()))
      .bytes(aid)
      .u16(1)
      .u16(0)  // result format: text
      .finish();
  MessageBuilder(out, 'D').u8('P').cstr("").finish();
  MessageBuilder(out, 'E').cstr("").u32(0).finish();
  protocol::append_sync(out);
}
inline int request_messages(Mode mode) { return mode == Mode::simple ? 1 : mode == Mode::extended ? 5 : 4; }

// One transaction's reply, as PostgreSQL writes it.
inline void append_reply(std::string& out, Mode mode, int i) {
  if (mode == Mode::extended) MessageBuilder(out, '1').finish();  // ParseComplete
  if (mode != Mode::simple) MessageBuilder(out, '2').finish();    // BindComplete
  // RowDescription: one int4 column "abalance" of pgbench_accounts.
  MessageBuilder(out, 'T')
      .u16(1)
      .cstr("abalance")
      .u32(16397)  // table OID
      .u16(3)      // column number
      .u32(23)     // int4
      .u16(4)
      .u32(0xffffffffu)  // typmod -1
      .u16(0)
      .finish();
  const std::string balance = std::to_string((i * 31) % 5000 - 2500);
  MessageBuilder(out, 'D').u16(1).u32(static_cast<std::uint32_t>(balance.size())).bytes(balance).finish();
  MessageBuilder(out, 'C').cstr("SELECT 1").finish();
  protocol::append_ready_for_query(out, 'I');
}
inline int reply_messages(Mode mode) { return mode == Mode::simple ? 4 : mode == Mode::extended ? 6 : 5; }

// A stream of `transactions` requests or replies, plus the offset where each transaction starts.
struct Stream {
  std::string bytes;
  std::vector<std::size_t> starts;
  std::int64_t messages = 0;
  std::int64_t transactions = 0;
};
inline Stream make_stream(Mode mode, int transactions, bool replies) {
  Stream s;
  for (int i = 0; i < transactions; ++i) {
    s.starts.push_back(s.bytes.size());
    replies ? append_reply(s.bytes, mode, i) : append_request(s.bytes, mode, i);
  }
  s.transactions = transactions;
  s.messages = std::int64_t{transactions} * (replies ? reply_messages(mode) : request_messages(mode));
  return s;
}

// ---- Bulk results --------------------------------------------------------------------------
// A DataRow of exactly `total` bytes (header included, total >= 32) shaped like a pgbench_accounts
// row in text format: aid, bid, abalance, and a blank-padded filler taking the rest (114 bytes is the
// real row: filler is char(84)).
inline void append_data_row(std::string& out, std::size_t total, int i) {
  std::string aid = std::to_string(1 + i % 100000);
  aid.resize(6, '0');
  const std::size_t fixed = protocol::kHeaderSize + 2 + (4 + 6) + (4 + 1) + (4 + 1) + 4;
  const std::string filler(total - fixed, ' ');
  MessageBuilder(out, 'D')
      .u16(4)
      .u32(6)
      .bytes(aid)
      .u32(1)
      .bytes("1")
      .u32(1)
      .bytes("0")
      .u32(static_cast<std::uint32_t>(filler.size()))
      .bytes(filler)
      .finish();
}

}  // namespace sluice::bench
