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
//   SHOW HELP | SHOW COMMANDS
//   PAUSE [db] | RESUME [db] | RECONNECT [db] | KILL db | RELOAD | SHUTDOWN
//                        (modify; recognised but not implemented yet)
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
//   0A000 feature_not_supported    a modify command from an admin, or a SHOW that
//                                PRODUCT.md lists but this build does not have yet
//                                (POOLS, STATS, STATS_TOTALS, CLIENTS, SERVERS, DATABASES, CONFIG)
// The syntax of a command is checked before the permission (as PostgreSQL does).
#include <cstddef>
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
