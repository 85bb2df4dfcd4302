// The admin console's answers: lexing of the Query text, the commands, and the
// RowDescription/DataRow/CommandComplete bytes. See admin_console.h.
#include "proxy/admin_console.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <numeric>
#include <tuple>
#include <utility>

#include "protocol/extended.h"
#include "protocol/wire.h"

namespace sluice::proxy {
namespace {

using protocol::ErrorSpec;

// SQLSTATEs used here.
constexpr std::string_view kSyntaxError = "42601";
constexpr std::string_view kInvalidParameterValue = "22023";
constexpr std::string_view kInsufficientPrivilege = "42501";
constexpr std::string_view kFeatureNotSupported = "0A000";

constexpr std::uint32_t kTextOid = 25;
constexpr std::size_t kMaxQuotedCommand = 60;  // bytes of the statement quoted in "unrecognized" errors

// ---- text helpers ------------------------------------------------------------------------

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_upper(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_upper(x) == ascii_upper(y); });
}


// `text` with every byte that does not start a valid UTF-8 sequence replaced by U+FFFD.
std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_sequence_length(text, i);
    if (n == 0) {
      out += "\xef\xbf\xbd";
      ++i;
    } else {
      out.append(text, i, n);
      i += n;
    }
  }
  return out;
}

// The first `max_bytes` of valid UTF-8 `text` (cut at a character boundary), with
// "..." appended when something was cut.
std::string shorten(std::string text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
  text.resize(cut);
  text += "...";
  return text;
}

std::string hex16(std::uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = kHex[v & 0xf];
  return out;
}

// Exact nanoseconds as milliseconds with 3 decimals, rounded to the nearest µs.
// (Integer arithmetic: a total of months of statement time does not fit a double's
// 53 bits of nanoseconds.)
std::string ms_from_ns(std::uint64_t ns) {
  const std::uint64_t us = ns / 1000 + (ns % 1000 >= 500 ? 1 : 0);
  char fraction[4];
  std::snprintf(fraction, sizeof fraction, "%03u", static_cast<unsigned>(us % 1000));
  return std::to_string(us / 1000) + "." + fraction;
}

// A double number of milliseconds with 3 decimals; NULL when it is not finite.
std::optional<std::string> ms_text(double ms) {
  if (!std::isfinite(ms)) return std::nullopt;
  char buffer[512];  // %.3f of any finite double fits
  const int n = std::snprintf(buffer, sizeof buffer, "%.3f", ms);
  return std::string(buffer, static_cast<std::size_t>(n));
}

std::optional<std::string> ms_from_ns(double ns) { return ms_text(ns / 1e6); }

std::optional<std::string> text_or_null(std::string_view text) {
  if (text.empty()) return std::nullopt;
  return valid_utf8(text);
}

// ---- lexing ------------------------------------------------------------------------------

struct Token {
  enum Kind { word, quoted_identifier, string_literal } kind = word;
  std::string text;      // unquoted
  std::string_view raw;  // as written
};

struct Statement {
  std::vector<Token> tokens;
};

struct LexResult {
  std::vector<Statement> statements;  // empty ones left out
  std::string error;                  // non-empty: a syntax error in the whole Query
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Splits the Query text into statements of tokens, as PostgreSQL's lexer would for
// the little grammar of the console: bare words, "quoted identifiers" and 'strings'
// (a doubled quote inside stands for itself), `--` and nested `/* */` comments,
// and `;` between statements. The whole text is lexed before anything runs, so a
// syntax error anywhere means nothing runs (as in PostgreSQL).
LexResult lex(std::string_view sql) {
  LexResult result;
  Statement current;
  const auto starts = [&](std::size_t i, std::string_view what) { return sql.substr(i, what.size()) == what; };
  std::size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    if (is_space(c)) {
      ++i;
    } else if (starts(i, "--")) {
      while (i < sql.size() && sql[i] != '\n') ++i;
    } else if (starts(i, "/*")) {
      int depth = 0;
      do {
        if (starts(i, "/*")) {
          ++depth;
          i += 2;
        } else if (starts(i, "*/")) {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      } while (depth > 0 && i < sql.size());
      if (depth > 0) {
        result.error = "unterminated /* comment";
        return result;
      }
    } else if (c == ';') {
      if (!current.tokens.empty()) result.statements.push_back(std::move(current));
      current = Statement{};
      ++i;
    } else if (c == '"' || c == '\'') {
      const std::size_t begin = i;
      Token token;
      token.kind = c == '"' ? Token::quoted_identifier : Token::string_literal;
      ++i;
      bool closed = false;
      while (i < sql.size()) {
        if (sql[i] == c) {
          if (i + 1 < sql.size() && sql[i + 1] == c) {
            token.text += c;
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        token.text += sql[i++];
      }
      if (!closed) {
        result.error = c == '"' ? "unterminated quoted identifier" : "unterminated quoted string";
        return result;
      }
      token.raw = sql.substr(begin, i - begin);
      current.tokens.push_back(std::move(token));
    } else {
      const std::size_t begin = i;
      while (i < sql.size() && !is_space(sql[i]) && sql[i] != ';' && sql[i] != '"' && sql[i] != '\'' &&
             !starts(i, "--") && !starts(i, "/*")) {
        ++i;
      }
      Token token;
      token.raw = sql.substr(begin, i - begin);
      token.text = std::string(token.raw);
      current.tokens.push_back(std::move(token));
    }
  }
  if (!current.tokens.empty()) result.statements.push_back(std::move(current));
  return result;
}

bool is_keyword(const Token& token, std::string_view keyword) {
  return token.kind == Token::word && iequals(token.text, keyword);
}

// The statement as written, without comments and with whitespace collapsed, cut to
// kMaxQuotedCommand bytes: for error messages.
std::string display(const Statement& statement) {
  std::string out;
  for (const Token& token : statement.tokens) {
    if (!out.empty()) out += ' ';
    out += token.raw;
    if (out.size() > kMaxQuotedCommand) break;
  }
  return shorten(valid_utf8(out), kMaxQuotedCommand);
}

// ---- answers -----------------------------------------------------------------------------

struct Failure {
  std::string sqlstate;
  std::string message;
  std::string hint = {};
};

void append_failure(std::string& out, const Failure& failure) {
  protocol::append_error_response(out, ErrorSpec{.severity = "ERROR",
                                                 .sqlstate = failure.sqlstate,
                                                 .message = failure.message,
                                                 .hint = failure.hint});
}

Failure syntax_error_at(const Token& token, std::string hint = {}) {
  return {std::string(kSyntaxError),
          "syntax error at or near \"" + shorten(valid_utf8(token.raw), kMaxQuotedCommand) + "\"", std::move(hint)};
}

Failure syntax_error_at_end(std::string hint = {}) {
  return {std::string(kSyntaxError), "syntax error at end of input", std::move(hint)};
}

Failure unrecognized(const Statement& statement) {
  return {std::string(kSyntaxError), "unrecognized admin console command \"" + display(statement) + "\"",
          "SHOW HELP lists the commands."};
}

using Row = std::vector<std::optional<std::string>>;

void append_table(std::string& out, std::span<const std::string_view> columns, const std::vector<Row>& rows) {
  append_text_row_description(out, columns);
  for (const Row& row : rows) append_text_data_row(out, row);
  protocol::append_command_complete(out, "SHOW");
}

// The optional limit argument of SHOW QUERIES / SHOW SLOW (tokens[2]); nothing after it.
std::optional<Failure> parse_limit(const Statement& statement, std::string_view command, std::size_t& limit) {
  const auto& tokens = statement.tokens;
  const std::string usage = "usage: " + std::string(command) + " [n], n a non-negative integer";
  if (tokens.size() > 3) return syntax_error_at(tokens[3], usage);
  if (tokens.size() < 3) return std::nullopt;
  const Token& token = tokens[2];
  std::string_view digits = token.text;
  const bool negative = !digits.empty() && digits.front() == '-';
  if (negative) digits.remove_prefix(1);
  if (token.kind != Token::word || digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return syntax_error_at(token, usage);
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  (void)end;
  if (ec == std::errc::result_out_of_range || value > std::numeric_limits<std::size_t>::max()) {
    return Failure{std::string(kInvalidParameterValue),
                   std::string(command) + " limit is out of range: " + std::string(token.text), usage};
  }
  if (negative && value != 0) {
    return Failure{std::string(kInvalidParameterValue),
                   std::string(command) + " limit must not be negative: " + std::string(token.text), usage};
  }
  limit = static_cast<std::size_t>(value);
  return std::nullopt;
}

std::optional<Failure> no_arguments(const Statement& statement, std::size_t words) {
  if (statement.tokens.size() > words) return syntax_error_at(statement.tokens[words]);
  return std::nullopt;
}

constexpr std::string_view kQueryColumns[] = {
    "database", "user",      "fingerprint", "query",  "calls",  "errors",  "rows",
    "total_ms", "mean_ms",   "min_ms",      "max_ms", "stddev_ms", "p50_ms", "p95_ms",
    "p99_ms",   "p999_ms",   "server_ms",   "wait_ms", "first_seen", "last_seen",
};

void show_queries(std::string& out, std::size_t limit, const ConsoleData& data) {
  std::vector<QueryShapeStats> shapes;
  if (data.queries && limit > 0) shapes = data.queries(limit);
  // Sort indices, not the 4.7 KB shapes.
  std::vector<std::size_t> order(shapes.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    const QueryShapeStats& a = shapes[x];
    const QueryShapeStats& b = shapes[y];
    if (a.total_ns() != b.total_ns()) return a.total_ns() > b.total_ns();
    return std::tie(a.database, a.user, a.fingerprint) < std::tie(b.database, b.user, b.fingerprint);
  });
  order.resize(std::min(order.size(), limit));
  std::vector<Row> rows;
  rows.reserve(order.size());
  for (std::size_t index : order) {
    const QueryShapeStats& s = shapes[index];
    const LatencyHistogram& d = s.duration;
    rows.push_back(Row{
        valid_utf8(s.database),
        valid_utf8(s.user),
        hex16(s.fingerprint),
        valid_utf8(s.query),
        std::to_string(s.calls),
        std::to_string(s.errors),
        std::to_string(s.rows),
        ms_from_ns(d.sum_ns()),
        ms_from_ns(d.mean_ns()),
        ms_from_ns(d.min_ns()),
        ms_from_ns(d.max_ns()),
        ms_from_ns(d.stddev_ns()),
        ms_from_ns(d.quantile_ns(0.50)),
        ms_from_ns(d.quantile_ns(0.95)),
        ms_from_ns(d.quantile_ns(0.99)),
        ms_from_ns(d.quantile_ns(0.999)),
        ms_from_ns(s.server.sum_ns()),
        ms_from_ns(s.wait.sum_ns()),
        format_timestamp(s.first_seen),
        format_timestamp(s.last_seen),
    });
  }
  append_table(out, kQueryColumns, rows);
}

constexpr std::string_view kSlowColumns[] = {
    "ts",      "duration_ms", "server_ms",   "wait_ms", "database", "user",    "application_name", "client",
    "backend", "backend_pid", "protocol",    "fingerprint", "query", "command", "rows",            "sqlstate",
};

void show_slow(std::string& out, std::size_t limit, const ConsoleData& data) {
  std::vector<SlowQueryRecord> records;
  if (data.slow && limit > 0) records = data.slow(limit);
  records.resize(std::min(records.size(), limit));
  std::vector<Row> rows;
  rows.reserve(records.size());
  for (const SlowQueryRecord& r : records) {
    rows.push_back(Row{
        format_timestamp(r.ts),
        ms_text(r.duration_ms),
        ms_text(r.server_ms),
        ms_text(r.wait_ms),
        valid_utf8(r.database),
        valid_utf8(r.user),
        valid_utf8(r.application_name),
        valid_utf8(r.client),
        text_or_null(r.backend),
        r.backend_pid != 0 ? std::optional<std::string>(std::to_string(r.backend_pid)) : std::nullopt,
        valid_utf8(r.protocol),
        hex16(r.fingerprint),
        valid_utf8(r.query),
        text_or_null(r.command),
        r.rows ? std::optional<std::string>(std::to_string(*r.rows)) : std::nullopt,
        text_or_null(r.sqlstate),
    });
  }
  append_table(out, kSlowColumns, rows);
}

// ---- SHOW POOLS, STATS, STATS_TOTALS, CLIENTS, SERVERS, DATABASES, CONFIG ----------

std::string number(std::int64_t v) { return std::to_string(v); }
std::string number(std::uint64_t v) { return std::to_string(v); }
std::string number(int v) { return std::to_string(v); }

// PgBouncer's timestamp format for connect_time / request_time.
std::optional<std::string> pgbouncer_time(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point{}) return std::nullopt;
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &utc);
  return std::string(text);
}

constexpr std::string_view kPoolColumns[] = {
    "database",   "user",        "cl_active", "cl_waiting",   "cl_active_cancel_req", "cl_waiting_cancel_req",
    "sv_active",  "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested",
    "sv_login",   "maxwait",     "maxwait_us", "pool_mode",   "paused", "hosts", "hosts_down",
};

void show_pools(std::string& out, const ConsoleData& data) {
  std::vector<ConsolePool> pools;
  if (data.pools) pools = data.pools();
  std::sort(pools.begin(), pools.end(),
            [](const auto& a, const auto& b) { return std::tie(a.database, a.user) < std::tie(b.database, b.user); });
  std::vector<Row> rows;
  for (const auto& p : pools) {
    rows.push_back(Row{valid_utf8(p.database), valid_utf8(p.user), number(p.cl_active), number(p.cl_waiting), "0", "0",
                       number(p.sv_active), "0", "0", number(p.sv_idle), "0", "0", number(p.sv_login),
                       number(p.maxwait_us / 1'000'000), number(p.maxwait_us % 1'000'000), p.pool_mode,
                       p.paused ? "yes" : "no", valid_utf8(p.hosts), number(p.hosts_down)});
  }
  append_table(out, kPoolColumns, rows);
}

constexpr std::string_view kStatsColumns[] = {
    "database",        "total_xact_count", "total_query_count", "total_received", "total_sent",
    "total_xact_time", "total_query_time", "total_wait_time",   "avg_xact_count", "avg_query_count",
    "avg_recv",        "avg_sent",         "avg_xact_time",     "avg_query_time", "avg_wait_time",
};
constexpr std::string_view kStatsTotalsColumns[] = {
    "database", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
};

std::vector<ConsoleStats> sorted_stats(const ConsoleData& data) {
  std::vector<ConsoleStats> stats;
  if (data.stats) stats = data.stats();
  std::sort(stats.begin(), stats.end(),
            [](const auto& a, const auto& b) { return a.total.database < b.total.database; });
  return stats;
}

void show_stats(std::string& out, const ConsoleData& data, bool totals_only) {
  std::vector<Row> rows;
  for (const auto& s : sorted_stats(data)) {
    const auto& t = s.total;
    if (totals_only) {
      rows.push_back(Row{valid_utf8(t.database), number(t.xact_count), number(t.query_count), number(t.received),
                         number(t.sent), number(t.xact_time_us), number(t.query_time_us), number(t.wait_time_us)});
      continue;
    }
    const auto& p = s.period;
    // As PgBouncer: counts and bytes per second; times per transaction / per query.
    const auto per_second = [&](std::uint64_t v) -> std::string {
      return s.period_seconds > 0 ? number(static_cast<std::uint64_t>(static_cast<double>(v) / s.period_seconds)) : "0";
    };
    const auto per = [](std::uint64_t v, std::uint64_t n) -> std::string { return n > 0 ? number(v / n) : "0"; };
    rows.push_back(Row{valid_utf8(t.database), number(t.xact_count), number(t.query_count), number(t.received),
                       number(t.sent), number(t.xact_time_us), number(t.query_time_us), number(t.wait_time_us),
                       per_second(p.xact_count), per_second(p.query_count), per_second(p.received),
                       per_second(p.sent), per(p.xact_time_us, p.xact_count), per(p.query_time_us, p.query_count),
                       per(p.wait_time_us, p.xact_count)});
  }
  if (totals_only) {
    append_table(out, kStatsTotalsColumns, rows);
  } else {
    append_table(out, kStatsColumns, rows);
  }
}

constexpr std::string_view kConnectionColumns[] = {
    "type",  "user",    "database", "state",        "addr", "port", "local_addr", "local_port", "connect_time",
    "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls", "application_name",
};

void show_connections(std::string& out, char type, const ConsoleData& data) {
  std::vector<ConsoleConnection> connections;
  const auto& source = type == 'C' ? data.clients : data.servers;
  if (source) connections = source();
  std::sort(connections.begin(), connections.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  std::vector<Row> rows;
  for (const auto& c : connections) {
    rows.push_back(Row{std::string(1, type), valid_utf8(c.user), valid_utf8(c.database), c.state, valid_utf8(c.addr),
                       number(c.port), valid_utf8(c.local_addr), number(c.local_port), pgbouncer_time(c.connect_time),
                       pgbouncer_time(c.request_time), number(c.wait_us / 1'000'000), number(c.wait_us % 1'000'000),
                       "0", hex16(c.id), c.link ? std::optional<std::string>(hex16(c.link)) : std::nullopt,
                       number(c.remote_pid), std::nullopt, valid_utf8(c.application_name)});
  }
  append_table(out, kConnectionColumns, rows);
}

constexpr std::string_view kDatabaseColumns[] = {
    "name",      "host",         "port",      "database",        "force_user",          "pool_size", "min_pool_size",
    "reserve_pool", "pool_mode", "max_connections", "current_connections", "paused", "disabled",
};

void show_databases(std::string& out, const ConsoleData& data) {
  std::vector<ConsoleDatabase> databases;
  if (data.databases) databases = data.databases();
  std::sort(databases.begin(), databases.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<Row> rows;
  for (const auto& d : databases) {
    rows.push_back(Row{valid_utf8(d.name), valid_utf8(d.host), number(d.port), text_or_null(valid_utf8(d.database)),
                       std::nullopt, number(d.pool_size), number(d.min_pool_size), number(d.reserve_pool),
                       d.pool_mode, number(d.max_connections), number(d.current_connections),
                       d.paused ? "1" : "0", d.disabled ? "1" : "0"});
  }
  append_table(out, kDatabaseColumns, rows);
}

void show_config(std::string& out, const ConsoleData& data) {
  constexpr std::string_view columns[] = {"key", "value", "default", "changeable"};
  std::vector<ConsoleConfigItem> items;
  if (data.config) items = data.config();
  std::vector<Row> rows;
  for (const auto& item : items) {
    rows.push_back(Row{valid_utf8(item.key), valid_utf8(item.value), valid_utf8(item.default_value),
                       item.changeable ? "yes" : "no"});
  }
  append_table(out, columns, rows);
}

// What SHOW HELP lists: the commands that work in this build.
constexpr std::string_view kHelp[] = {
    "SHOW HELP | SHOW COMMANDS -- this list",
    "SHOW QUERIES [n] -- the n query shapes with the most total time (default 50)",
    "SHOW SLOW [n] -- the n most recent slow statements, newest first (default 100)",
    "SHOW POOLS -- clients and server connections per (database, user) pool",
    "SHOW STATS | SHOW STATS_TOTALS -- traffic per database (times in microseconds)",
    "SHOW CLIENTS | SHOW SERVERS -- every client and server connection",
    "SHOW DATABASES | SHOW CONFIG -- the configuration in force",
    "SHOW ACTIVE -- statements running now",
    "SHOW VERSION -- the version of Sluice",
    "PAUSE [db] | RESUME [db] -- hold new requests once transactions end, then let them go",
    "RECONNECT [db] -- replace server connections as they are released",
    "KILL db -- close every client and server connection of db (new clients wait for RESUME)",
    "RELOAD -- read the configuration file again",
    "SHUTDOWN -- stop as on SIGTERM",
};

std::optional<Failure> run_show(std::string& out, const Statement& statement, const ConsoleData& data) {
  const auto& tokens = statement.tokens;
  if (tokens.size() < 2 || tokens[1].kind != Token::word) return unrecognized(statement);
  const std::string subject = upper(tokens[1].text);
  if (subject == "QUERIES" || subject == "SLOW") {
    const bool queries = subject == "QUERIES";
    std::size_t limit = queries ? kDefaultShowQueriesLimit : kDefaultShowSlowLimit;
    if (auto failure = parse_limit(statement, queries ? "SHOW QUERIES" : "SHOW SLOW", limit)) return failure;
    if (queries) {
      show_queries(out, limit, data);
    } else {
      show_slow(out, limit, data);
    }
    return std::nullopt;
  }
  if (subject == "VERSION") {
    if (auto failure = no_arguments(statement, 2)) return failure;
    constexpr std::string_view columns[] = {"version"};
    append_table(out, columns, {Row{valid_utf8(data.version)}});
    return std::nullopt;
  }
  if (subject == "HELP" || subject == "COMMANDS") {
    if (auto failure = no_arguments(statement, 2)) return failure;
    constexpr std::string_view columns[] = {"command"};
    std::vector<Row> rows;
    for (std::string_view line : kHelp) rows.push_back(Row{std::string(line)});
    append_table(out, columns, rows);
    return std::nullopt;
  }
  if (subject == "POOLS" || subject == "STATS" || subject == "STATS_TOTALS" || subject == "CLIENTS" ||
      subject == "SERVERS" || subject == "DATABASES" || subject == "CONFIG") {
    if (auto failure = no_arguments(statement, 2)) return failure;
    if (subject == "POOLS") show_pools(out, data);
    if (subject == "STATS") show_stats(out, data, false);
    if (subject == "STATS_TOTALS") show_stats(out, data, true);
    if (subject == "CLIENTS") show_connections(out, 'C', data);
    if (subject == "SERVERS") show_connections(out, 'S', data);
    if (subject == "DATABASES") show_databases(out, data);
    if (subject == "CONFIG") show_config(out, data);
    return std::nullopt;
  }
  return unrecognized(statement);
}

// The commands that change something: name, and how many arguments (a database) they take.
struct ModifyCommand {
  std::string_view name;
  std::size_t min_args;
  std::size_t max_args;
};
constexpr ModifyCommand kModifyCommands[] = {
    {"PAUSE", 0, 1}, {"RESUME", 0, 1}, {"RECONNECT", 0, 1}, {"KILL", 1, 1}, {"RELOAD", 0, 0}, {"SHUTDOWN", 0, 0},
};

std::optional<Failure> run_modify(std::string& out, const ModifyCommand& command, const Statement& statement,
                                  bool may_modify, const ConsoleData& data) {
  const auto& tokens = statement.tokens;
  const std::string usage = command.max_args == 0   ? "usage: " + std::string(command.name)
                            : command.min_args == 0 ? "usage: " + std::string(command.name) + " [db]"
                                                    : "usage: " + std::string(command.name) + " db";
  const std::size_t args = tokens.size() - 1;
  if (args > command.max_args) return syntax_error_at(tokens[1 + command.max_args], usage);
  if (args < command.min_args) return syntax_error_at_end(usage);
  for (std::size_t i = 1; i < tokens.size(); ++i) {
    if (tokens[i].kind == Token::string_literal) return syntax_error_at(tokens[i], usage);
  }
  if (!may_modify) {
    return Failure{std::string(kInsufficientPrivilege),
                   "permission denied: only admin_users may run " + std::string(command.name),
                   "stats_users may run SHOW commands only."};
  }
  if (!data.modify) return Failure{std::string(kFeatureNotSupported), std::string(command.name) + " is not supported yet"};
  const std::string_view database = tokens.size() > 1 ? std::string_view(tokens[1].text) : std::string_view();
  if (auto failure = data.modify(command.name, database)) {
    return Failure{failure->sqlstate, failure->message, failure->hint};
  }
  protocol::append_command_complete(out, command.name);
  return std::nullopt;
}

std::optional<Failure> run(std::string& out, const Statement& statement, bool may_modify, const ConsoleData& data) {
  const Token& first = statement.tokens.front();
  if (is_keyword(first, "SHOW")) return run_show(out, statement, data);
  for (const ModifyCommand& command : kModifyCommands) {
    if (is_keyword(first, command.name)) return run_modify(out, command, statement, may_modify, data);
  }
  return unrecognized(statement);
}

}  // namespace

void append_text_row_description(std::string& out, std::span<const std::string_view> columns) {
  protocol::MessageBuilder m(out, 'T');
  m.u16(static_cast<std::uint16_t>(columns.size()));
  for (std::string_view name : columns) {
    m.cstr(name)
        .u32(0)        // table OID
        .u16(0)        // column number
        .u32(kTextOid)
        .u16(0xffff)   // typlen -1 (variable)
        .u32(0xffffffff)  // typmod -1
        .u16(0);       // format: text
  }
  m.finish();
}

void append_text_data_row(std::string& out, std::span<const std::optional<std::string>> values) {
  protocol::MessageBuilder m(out, 'D');
  m.u16(static_cast<std::uint16_t>(values.size()));
  for (const auto& value : values) {
    if (!value) {
      m.u32(0xffffffff);  // NULL
    } else {
      m.u32(static_cast<std::uint32_t>(value->size())).bytes(*value);
    }
  }
  m.finish();
}

void append_empty_query_response(std::string& out) { protocol::MessageBuilder(out, 'I').finish(); }

std::string admin_console_answer(std::string_view sql, bool may_modify, const ConsoleData& data) {
  std::string out;
  LexResult lexed = lex(sql);
  if (!lexed.error.empty()) {
    append_failure(out, Failure{std::string(kSyntaxError), lexed.error});
  } else if (lexed.statements.empty()) {
    append_empty_query_response(out);
  } else {
    for (const Statement& statement : lexed.statements) {
      if (auto failure = run(out, statement, may_modify, data)) {
        append_failure(out, *failure);
        break;
      }
    }
  }
  protocol::append_ready_for_query(out, 'I');
  return out;
}

}  // namespace sluice::proxy
