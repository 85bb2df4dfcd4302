#pragma once
// The admin console: the virtual database `sluice` (alias `pgbouncer`), spoken to
// over the simple query protocol. This is the pure part: one Query message's SQL
// text in, the complete backend answer out (bytes ready to write to the client).
// No I/O, no clock reads, no locks of its own: everything the answer shows comes
// from ConsoleData, gathered by the caller (the session), which also decides who
// may connect at all (admin_users and stats_users; anyone else gets 42501 at login).
//
// Grammar (keywords case-insensitive; whitespace, `--` and `/* */` comments ignored):
//
//   SHOW QUERIES [n]     top n query shapes by total time (default 50)
//   SHOW SLOW [n]        the n most recent slow statements, newest first (default 100)
//   SHOW VERSION         one column `version`
//   SHOW POOLS | STATS | STATS_TOTALS | CLIENTS | SERVERS | DATABASES | CONFIG
//                        PgBouncer's columns (and units) where PgBouncer shows the
//                        same thing, then Sluice's own (see the k*Columns tables)
//   SHOW HELP | SHOW COMMANDS
//   PAUSE [db] | RESUME [db] | RECONNECT [db] | KILL db | RELOAD | SHUTDOWN
//                        (admin_users only; carried out by ConsoleData::modify)
//
// A Query may hold several commands separated by `;` (as psql -c "SHOW VERSION; SHOW
// SLOW" sends them); like PostgreSQL, each gets its own RowDescription + DataRows +
// CommandComplete, the first error ends the answer, and one ReadyForQuery('I') closes
// it. A string of only whitespace, comments and semicolons gets EmptyQueryResponse.
//
// Every column is text (type OID 25, format 0); a NULL is sent as length -1.
// Times are milliseconds with 3 decimals (µs resolution), timestamps RFC 3339 UTC
// with µs (format_timestamp). Text values that are not valid UTF-8 have the bad
// bytes replaced by U+FFFD, so a UTF-8 client can always decode the answer.
// CommandComplete tag: "SHOW".
//
// Errors (ErrorResponse, severity ERROR, then ReadyForQuery('I')):
//   42601 syntax_error           unknown command: `unrecognized admin console command "<text>"`
//                                (the statement, whitespace collapsed, cut to 60 bytes + "...");
//                                extra or malformed arguments: `syntax error at or near "<tok>"`;
//                                unterminated quote or comment
//   22023 invalid_parameter_value  a limit that is an integer but negative or above 2^64-1
//   42501 insufficient_privilege   a modify command from a stats user (may_modify = false)
//   0A000 feature_not_supported    a modify command when no ConsoleData::modify is given
//   others                       whatever ConsoleData::modify reports (e.g. 3D000 for
//                                an unknown database)
// The syntax of a command is checked before the permission (as PostgreSQL does).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/query_stats.h"
#include "proxy/slow_log.h"

namespace sluice::proxy {

inline constexpr std::size_t kDefaultShowQueriesLimit = 50;
inline constexpr std::size_t kDefaultShowSlowLimit = 100;

// Rows of the SHOW commands that describe the running pooler; the caller fills them.
struct ConsolePool {
  std::string database, user, pool_mode;
  int cl_active = 0, cl_waiting = 0;
  int sv_active = 0, sv_idle = 0, sv_login = 0;
  std::int64_t maxwait_us = 0;  // longest current wait, shown as maxwait (s) + maxwait_us (the µs part)
  bool paused = false;
  std::string hosts;  // "a:5432,b:5432"
  int hosts_down = 0;
};
struct ConsoleTotals {
  std::string database;
  std::uint64_t xact_count = 0, query_count = 0, received = 0, sent = 0;
  std::uint64_t xact_time_us = 0, query_time_us = 0, wait_time_us = 0;
};
// SHOW STATS: totals since start and per-second averages over the last stats period.
struct ConsoleStats {
  ConsoleTotals total;
  ConsoleTotals period;  // increase over the last period (database unused)
  double period_seconds = 0;  // 0 when no period has completed yet: averages are 0
};
struct ConsoleConnection {  // SHOW CLIENTS ('C') and SHOW SERVERS ('S')
  std::string user, database, state, addr;
  int port = 0;
  std::string local_addr;
  int local_port = 0;
  std::chrono::system_clock::time_point connect_time{}, request_time{};
  std::int64_t wait_us = 0;
  std::uint64_t id = 0;    // shown as ptr
  std::uint64_t link = 0;  // the peer's id (server for a client, client for a server); 0 = none
  std::int64_t remote_pid = 0;  // clients: the Sluice-issued pid; servers: the backend pid
  std::string application_name;
};
struct ConsoleDatabase {
  std::string name, host;
  int port = 0;
  std::string database, pool_mode;
  int pool_size = 0, min_pool_size = 0, reserve_pool = 0, max_connections = 0, current_connections = 0;
  bool paused = false, disabled = false;
};
struct ConsoleConfigItem {
  std::string key, value, default_value;
  bool changeable = true;  // takes effect on RELOAD
};
// Outcome of a modify command: nullopt = done (CommandComplete with its name).
struct ConsoleFailure {
  std::string sqlstate, message, hint;
};

// What the answers need, gathered by the caller. Each source is called at most once
// per command that needs it, on the calling thread; an empty std::function counts as
// "nothing recorded" (the SHOW answers with its columns and no rows).
struct ConsoleData {
  // The (at most) `limit` shapes with the largest total time, e.g.
  //   [&](std::size_t n) { return stats.top_n(n); }
  // The answer re-sorts (total time descending, ties by database, user, fingerprint,
  // as QueryStats::top_n) and cuts to `limit`, so returning more, or unsorted, is fine.
  std::function<std::vector<QueryShapeStats>(std::size_t limit)> queries;
  // The (at most) `limit` most recent slow statements, NEWEST FIRST, e.g.
  //   [&](std::size_t) { return recent_slow.recent(); }
  // The answer keeps the order given and cuts to `limit`.
  std::function<std::vector<SlowQueryRecord>(std::size_t limit)> slow;
  // SHOW VERSION's value, e.g. "sluice 0.1.0".
  std::string version;
  std::function<std::vector<ConsolePool>()> pools;
  std::function<std::vector<ConsoleStats>()> stats;  // also SHOW STATS_TOTALS (total only)
  std::function<std::vector<ConsoleConnection>()> clients;
  std::function<std::vector<ConsoleConnection>()> servers;
  std::function<std::vector<ConsoleDatabase>()> databases;
  std::function<std::vector<ConsoleConfigItem>()> config;
  // PAUSE, RESUME, RECONNECT, KILL, RELOAD, SHUTDOWN (upper case) with its database
  // argument (empty = all), for an admin, after the syntax was checked.
  std::function<std::optional<ConsoleFailure>(std::string_view command, std::string_view database)> modify;
};

// The whole answer to one Query message whose text is `sql` (without the terminating
// NUL): see the header comment. `may_modify` is true for admin_users, false for
// stats_users. Always ends with ReadyForQuery('I') (the console has no transactions).
std::string admin_console_answer(std::string_view sql, bool may_modify, const ConsoleData& data);

// ---- Builders, for answers added later (SHOW POOLS, ...) -----------------------------

// RowDescription ('T') of text columns (type OID 25, typlen -1, typmod -1, format 0).
void append_text_row_description(std::string& out, std::span<const std::string_view> columns);
// DataRow ('D'); std::nullopt is NULL (length -1). Values are sent as given.
void append_text_data_row(std::string& out, std::span<const std::optional<std::string>> values);
// EmptyQueryResponse ('I').
void append_empty_query_response(std::string& out);

}  // namespace sluice::proxy
