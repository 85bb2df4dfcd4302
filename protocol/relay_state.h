#pragma once
// What Sluice knows about a client/server pairing from the bytes it relays:
// requests still owed a ReadyForQuery, transaction status, COPY IN, unsynced
// extended-protocol messages, FATAL. Kept by two StreamScanner observers, one per
// direction, that look only at headers and at a few small bodies. Pure code: the
// proxy, the unit tests and the microbenchmarks share it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "protocol/scanner.h"
#include "protocol/wire.h"

namespace sluice::protocol {

struct RelayState {
  // Query/Sync/FunctionCall sent whose ReadyForQuery has not come back. 64-bit and
  // never below 0: a client cannot wrap it into "nothing pending".
  std::int64_t pending = 0;
  std::int64_t syncs_since_execute = 0;  // Syncs counted since the last Execute
  char transaction = 'I';  // status of the last ReadyForQuery
  bool copy_in = false;    // server waits for CopyData from the client
  bool unsynced = false;   // extended-protocol messages sent since the last Sync
  bool fatal = false;      // server sent FATAL/PANIC: it is closing
  std::int64_t errors = 0;  // ErrorResponses seen (used while resetting)
  // ReadyForQuery messages seen, and those with status 'I' (statistics: PgBouncer
  // counts a query per ReadyForQuery and a transaction per idle one).
  std::uint64_t ready = 0;
  std::uint64_t ready_idle = 0;
};

// Whether an ErrorResponse body says FATAL or PANIC. Reads only up to the
// severity fields, so a body the scanner truncated still answers.
inline bool severity_is_fatal(Bytes body) {
  std::size_t pos = 0;
  while (pos < body.size() && body[pos] != 0) {
    const char code = static_cast<char>(body[pos++]);
    const auto* start = body.data() + pos;
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(start, 0, body.size() - pos));
    if (nul == nullptr) return false;
    std::string_view value(reinterpret_cast<const char*>(start), static_cast<std::size_t>(nul - start));
    if (code == 'V' || code == 'S') {
      if (value == "FATAL" || value == "PANIC") return true;
      if (code == 'V') return false;  // the non-localized severity is authoritative
    }
    pos += value.size() + 1;
  }
  return false;
}

// Client -> server. Counting happens at header time (inspect), so no client
// message body is ever copied; only Terminate is inspected, to stop the relay.
struct FrontendObserver {
  RelayState& state;
  bool inspect(char type) {
    switch (type) {
      case 'Q':  // Query
      case 'F':  // FunctionCall
        ++state.pending;
        return false;
      case 'S':  // Sync
        state.unsynced = false;
        // PostgreSQL ignores Sync while it is in COPY IN: no ReadyForQuery for it.
        if (state.copy_in) return false;
        ++state.pending;
        ++state.syncs_since_execute;
        return false;
      case 'E':  // Execute
        state.syncs_since_execute = 0;
        state.unsynced = true;
        return false;
      case 'P': case 'B': case 'D': case 'C': case 'H':
        state.unsynced = true;
        return false;
      case 'c':  // CopyDone
      case 'f':  // CopyFail
        state.copy_in = false;
        return false;
      case 'X':  // Terminate: the proxy ends the session itself
        return true;
      default:
        return false;
    }
  }
  ScanAction on_message(char type, Bytes) { return type == 'X' ? ScanAction::stop : ScanAction::next; }
};

// Server -> client: ReadyForQuery, errors, parameter changes, COPY. `Parameters`
// is whatever keeps the server's reported parameters (set_parameter(name, value)).
template <class Parameters>
struct BackendObserver {
  RelayState& state;
  Parameters* parameters;
  bool inspect(char type) {
    switch (type) {
      case 'Z': case 'E': case 'S':
        return true;
      case 'G':  // CopyInResponse
      case 'W':  // CopyBothResponse
        state.copy_in = true;
        // Syncs the client sent after the Execute that started this COPY reach the
        // server in COPY IN mode, which ignores them (libpq sends one right away).
        state.pending = std::max<std::int64_t>(0, state.pending - state.syncs_since_execute);
        state.syncs_since_execute = 0;
        return false;
      default:
        return false;
    }
  }
  ScanAction on_message(char type, Bytes body) {
    switch (type) {
      case 'Z':
        if (state.pending > 0) --state.pending;
        if (auto status = parse_ready_for_query(body)) state.transaction = *status;
        state.copy_in = false;
        ++state.ready;
        if (state.transaction == 'I') ++state.ready_idle;
        break;
      case 'E':
        ++state.errors;
        if (severity_is_fatal(body)) state.fatal = true;
        break;
      case 'S':
        if (auto status = parse_parameter_status(body); status && parameters)
          parameters->set_parameter(status->name, status->value);
        break;
    }
    return ScanAction::next;
  }
};

}  // namespace sluice::protocol
