// Tests for proxy/admin_console: the bytes answering one Query message of the admin
// console. Answers are split with protocol::peek_message and decoded here, by code
// independent of the builders under test; SHOW VERSION is also checked byte for byte.
#include "proxy/admin_console.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../protocol/test_messages.h"
#include "protocol/wire.h"

namespace sluice::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;
using protocol::test::be16;
using protocol::test::be32;
using protocol::test::cstr;
using protocol::test::pg_msg;

const Clock::time_point kT0 = Clock::time_point{} + std::chrono::seconds(1'780'000'000);  // 2026-05-28T20:26:40Z

struct Msg {
  char type;
  std::string body;
};

using Value = std::optional<std::string>;
using Row = std::vector<Value>;

// Splits an answer into messages; fails the test on bad framing or trailing bytes.
std::vector<Msg> split(const std::string& bytes) {
  std::vector<Msg> out;
  protocol::Bytes rest(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  while (!rest.empty()) {
    protocol::Message m;
    auto n = protocol::peek_message(rest, 1u << 30, m);
    EXPECT_TRUE(n.has_value());
    if (!n.has_value() || *n == 0) {
      ADD_FAILURE() << "incomplete message at the end of the answer";
      break;
    }
    out.push_back({m.type, std::string(reinterpret_cast<const char*>(m.body.data()), m.body.size())});
    rest = rest.subspan(*n);
  }
  return out;
}

struct Reader {
  std::string_view s;
  std::size_t pos = 0;
  std::uint32_t u32() {
    EXPECT_LE(pos + 4, s.size());
    if (pos + 4 > s.size()) return 0;
    const auto* p = reinterpret_cast<const std::uint8_t*>(s.data() + pos);
    pos += 4;
    return protocol::read_u32(p);
  }
  std::uint16_t u16() {
    EXPECT_LE(pos + 2, s.size());
    if (pos + 2 > s.size()) return 0;
    const auto* p = reinterpret_cast<const std::uint8_t*>(s.data() + pos);
    pos += 2;
    return protocol::read_u16(p);
  }
  std::string cstr() {
    const std::size_t nul = s.find('\0', pos);
    EXPECT_NE(nul, std::string_view::npos);
    if (nul == std::string_view::npos) return {};
    std::string out(s.substr(pos, nul - pos));
    pos = nul + 1;
    return out;
  }
  std::string take(std::size_t n) {
    EXPECT_LE(pos + n, s.size());
    std::string out(s.substr(pos, n));
    pos += n;
    return out;
  }
  bool done() const { return pos == s.size(); }
};

// A decoded RowDescription: column names; checks that every column is text, format 0.
std::vector<std::string> columns_of(const Msg& m) {
  EXPECT_EQ(m.type, 'T');
  Reader r{m.body};
  const std::uint16_t n = r.u16();
  std::vector<std::string> names;
  for (std::uint16_t i = 0; i < n; ++i) {
    names.push_back(r.cstr());
    EXPECT_EQ(r.u32(), 0u);            // table OID
    EXPECT_EQ(r.u16(), 0u);            // column number
    EXPECT_EQ(r.u32(), 25u);           // text
    EXPECT_EQ(r.u16(), 0xffffu);       // typlen -1
    EXPECT_EQ(r.u32(), 0xffffffffu);   // typmod -1
    EXPECT_EQ(r.u16(), 0u);            // text format
  }
  EXPECT_TRUE(r.done());
  return names;
}

Row row_of(const Msg& m) {
  EXPECT_EQ(m.type, 'D');
  Reader r{m.body};
  const std::uint16_t n = r.u16();
  Row row;
  for (std::uint16_t i = 0; i < n; ++i) {
    const std::uint32_t length = r.u32();
    if (length == 0xffffffffu) {
      row.push_back(std::nullopt);
    } else {
      row.push_back(r.take(length));
    }
  }
  EXPECT_TRUE(r.done());
  return row;
}

std::string tag_of(const Msg& m) {
  EXPECT_EQ(m.type, 'C');
  Reader r{m.body};
  std::string tag = r.cstr();
  EXPECT_TRUE(r.done());
  return tag;
}

// One statement's result table.
struct Table {
  std::vector<std::string> columns;
  std::vector<Row> rows;
  std::string tag;
  std::string value(std::size_t row, std::string_view column) const {
    for (std::size_t i = 0; i < columns.size(); ++i) {
      if (columns[i] == column) {
        if (row >= rows.size() || i >= rows[row].size()) {
          ADD_FAILURE() << "no row " << row;
          return {};
        }
        return rows[row][i].value_or("<NULL>");
      }
    }
    ADD_FAILURE() << "no column " << column;
    return {};
  }
};

struct Error {
  std::string severity;
  std::string sqlstate;
  std::string message;
};

// A decoded answer: tables, then at most one error or empty-query response, then
// ReadyForQuery('I') (checked here).
struct Answer {
  std::vector<Table> tables;
  std::optional<Error> error;
  bool empty_query = false;
  std::vector<std::string> commands;  // CommandComplete tags without a table (PAUSE, RELOAD, ...)
};

Answer decode(const std::string& bytes) {
  Answer answer;
  const std::vector<Msg> msgs = split(bytes);
  EXPECT_FALSE(msgs.empty());
  if (msgs.empty()) return answer;
  EXPECT_EQ(msgs.back().type, 'Z');
  EXPECT_EQ(msgs.back().body, "I");
  for (std::size_t i = 0; i + 1 < msgs.size(); ++i) {
    const Msg& m = msgs[i];
    EXPECT_FALSE(answer.error.has_value() || answer.empty_query) << "messages after the end of the answer";
    if (m.type == 'T') {
      Table table;
      table.columns = columns_of(m);
      for (++i; i + 1 < msgs.size() && msgs[i].type == 'D'; ++i) {
        table.rows.push_back(row_of(msgs[i]));
        EXPECT_EQ(table.rows.back().size(), table.columns.size());
      }
      EXPECT_LT(i + 1, msgs.size());
      if (i + 1 < msgs.size()) table.tag = tag_of(msgs[i]);
      answer.tables.push_back(std::move(table));
    } else if (m.type == 'E') {
      auto fields = protocol::parse_error_fields(
          protocol::Bytes(reinterpret_cast<const std::uint8_t*>(m.body.data()), m.body.size()));
      EXPECT_TRUE(fields.has_value());
      if (fields.has_value()) {
        answer.error = Error{std::string(fields->severity), std::string(fields->sqlstate), std::string(fields->message)};
      }
    } else if (m.type == 'I') {
      EXPECT_TRUE(m.body.empty());
      answer.empty_query = true;
    } else if (m.type == 'C') {
      answer.commands.push_back(tag_of(m));
    } else {
      ADD_FAILURE() << "unexpected message type " << m.type;
    }
  }
  return answer;
}

Answer ask(std::string_view sql, const ConsoleData& data = {}, bool may_modify = true) {
  return decode(admin_console_answer(sql, may_modify, data));
}

void expect_error(const Answer& answer, std::string_view sqlstate, std::string_view message_part = {}) {
  ASSERT_TRUE(answer.error.has_value());
  EXPECT_EQ(answer.error->severity, "ERROR");
  EXPECT_EQ(answer.error->sqlstate, sqlstate) << answer.error->message;
  EXPECT_NE(answer.error->message.find(message_part), std::string::npos) << answer.error->message;
}

// ---- data --------------------------------------------------------------------------------

QueryShapeStats shape(std::uint64_t fingerprint, std::vector<std::chrono::nanoseconds> durations,
                      std::string_view database = "app", std::string_view user = "alice") {
  QueryShapeStats s;  // record() counts; the identity is set by whoever creates the shape
  s.database = database;
  s.user = user;
  s.fingerprint = fingerprint;
  s.query = "SELECT * FROM t WHERE id = $1";
  Clock::time_point at = kT0;
  for (auto d : durations) {
    QuerySample q;
    q.database = database;
    q.user = user;
    q.fingerprint = fingerprint;
    q.query = "SELECT * FROM t WHERE id = $1";
    q.duration = d;
    q.server = d / 2;
    q.wait = d / 4;
    q.rows = 2;
    q.at = at;
    s.record(q);
    at += 1500ms + 123us;
  }
  return s;
}

SlowQueryRecord slow_record(std::string query, Clock::time_point ts) {
  SlowQueryRecord r;
  r.ts = ts;
  r.duration_ms = 812.4;
  r.server_ms = 800.1;
  r.wait_ms = 12.3;
  r.database = "app";
  r.user = "app";
  r.application_name = "api";
  r.client = "10.0.0.5:53122";
  r.backend = "127.0.0.1:5432";
  r.backend_pid = 12345;
  r.protocol = "extended";
  r.fingerprint = 0x4851b0e100123b55;
  r.query = std::move(query);
  r.command = "SELECT";
  r.rows = 120;
  return r;
}

// ---- tests -------------------------------------------------------------------------------

TEST(AdminConsoleTest, ShowVersionByteForByte) {
  ConsoleData data;
  data.version = "sluice 0.1.0";
  const std::string expected =
      pg_msg('T', be16(1) + cstr("version") + be32(0) + be16(0) + be32(25) + be16(0xffff) + be32(0xffffffff) +
                      be16(0)) +
      pg_msg('D', be16(1) + be32(12) + "sluice 0.1.0") + pg_msg('C', cstr("SHOW")) + pg_msg('Z', "I");
  EXPECT_EQ(admin_console_answer("SHOW VERSION", false, data), expected);
}

TEST(AdminConsoleTest, CaseWhitespaceSemicolonAndComments) {
  ConsoleData data;
  data.version = "sluice 0.1.0";
  const std::string expected = admin_console_answer("SHOW VERSION", true, data);
  for (std::string_view sql : {"show version", "Show Version;", "  \n\tSHOW   VERSION  ;  \n", "SHOW VERSION;;",
                               "-- psql\nSHOW /* inline /* nested */ */ VERSION -- trailing", "sHoW vErSiOn ;"}) {
    EXPECT_EQ(admin_console_answer(sql, true, data), expected) << sql;
  }
}

TEST(AdminConsoleTest, ShowQueriesColumnsAndValues) {
  ConsoleData data;
  std::size_t asked = 0;
  data.queries = [&](std::size_t limit) {
    asked = limit;
    return std::vector<QueryShapeStats>{shape(0xabc, {1ms, 2ms, 3ms})};
  };
  const Answer a = ask("SHOW QUERIES", data, false);
  EXPECT_EQ(asked, kDefaultShowQueriesLimit);
  ASSERT_FALSE(a.error) << a.error->message;
  ASSERT_EQ(a.tables.size(), 1u);
  const Table& t = a.tables[0];
  EXPECT_EQ(t.columns, (std::vector<std::string>{"database", "user", "fingerprint", "query", "calls", "errors",
                                                 "rows", "total_ms", "mean_ms", "min_ms", "max_ms", "stddev_ms",
                                                 "p50_ms", "p95_ms", "p99_ms", "p999_ms", "server_ms", "wait_ms",
                                                 "first_seen", "last_seen"}));
  EXPECT_EQ(t.tag, "SHOW");
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.value(0, "database"), "app");
  EXPECT_EQ(t.value(0, "user"), "alice");
  EXPECT_EQ(t.value(0, "fingerprint"), "0000000000000abc");
  EXPECT_EQ(t.value(0, "query"), "SELECT * FROM t WHERE id = $1");
  EXPECT_EQ(t.value(0, "calls"), "3");
  EXPECT_EQ(t.value(0, "errors"), "0");
  EXPECT_EQ(t.value(0, "rows"), "6");
  EXPECT_EQ(t.value(0, "total_ms"), "6.000");
  EXPECT_EQ(t.value(0, "mean_ms"), "2.000");
  EXPECT_EQ(t.value(0, "min_ms"), "1.000");
  EXPECT_EQ(t.value(0, "max_ms"), "3.000");
  EXPECT_EQ(t.value(0, "stddev_ms"), "0.816");  // population stddev of 1, 2, 3: sqrt(2/3)
  EXPECT_NEAR(std::stod(t.value(0, "p50_ms")), 2.0, 0.02);  // histogram: within 1%
  EXPECT_EQ(t.value(0, "p95_ms"), "3.000");                  // top rank: the exact max
  EXPECT_EQ(t.value(0, "p99_ms"), "3.000");
  EXPECT_EQ(t.value(0, "p999_ms"), "3.000");
  EXPECT_EQ(t.value(0, "server_ms"), "3.000");  // totals: half and a quarter of each duration
  EXPECT_EQ(t.value(0, "wait_ms"), "1.500");
  EXPECT_EQ(t.value(0, "first_seen"), "2026-05-28T20:26:40.000000Z");
  EXPECT_EQ(t.value(0, "last_seen"), "2026-05-28T20:26:43.000246Z");
}

TEST(AdminConsoleTest, ShowQueriesRoundsToMicroseconds) {
  ConsoleData data;
  data.queries = [](std::size_t) { return std::vector<QueryShapeStats>{shape(1, {1499ns, 1'000'500ns})}; };
  const Table t = ask("SHOW QUERIES", data).tables.at(0);
  EXPECT_EQ(t.value(0, "min_ms"), "0.001");
  EXPECT_EQ(t.value(0, "max_ms"), "1.001");  // 1000.5 µs rounds up
  EXPECT_EQ(t.value(0, "total_ms"), "1.002");  // 1001.999 µs
}

TEST(AdminConsoleTest, ShowQueriesSortsByTotalTimeAndHonoursTheLimit) {
  ConsoleData data;
  std::size_t asked = 0;
  data.queries = [&](std::size_t limit) {
    asked = limit;
    // More than asked for and unsorted: the answer sorts and cuts.
    return std::vector<QueryShapeStats>{shape(1, {1ms}), shape(2, {5ms}), shape(3, {2ms, 2ms}),
                                        shape(4, {3ms}, "app", "bob"), shape(4, {3ms}, "app", "alice")};
  };
  Answer a = ask("SHOW QUERIES 4", data);
  EXPECT_EQ(asked, 4u);
  ASSERT_EQ(a.tables.size(), 1u);
  const Table& t = a.tables[0];
  ASSERT_EQ(t.rows.size(), 4u);
  EXPECT_EQ(t.value(0, "fingerprint"), "0000000000000002");
  EXPECT_EQ(t.value(1, "fingerprint"), "0000000000000003");
  EXPECT_EQ(t.value(2, "user"), "alice");  // tie on total time: by database, user, fingerprint
  EXPECT_EQ(t.value(3, "user"), "bob");

  a = ask("show queries 0;", data);
  ASSERT_EQ(a.tables.size(), 1u);
  EXPECT_EQ(a.tables[0].rows.size(), 0u);
  EXPECT_EQ(a.tables[0].columns.size(), 20u);

  a = ask("SHOW QUERIES 18446744073709551615", data);  // 2^64 - 1: everything
  ASSERT_EQ(a.tables.size(), 1u);
  EXPECT_EQ(a.tables[0].rows.size(), 5u);
}

TEST(AdminConsoleTest, ShowQueriesDefaultLimitIsFifty) {
  ConsoleData data;
  data.queries = [](std::size_t) {
    std::vector<QueryShapeStats> all;
    for (std::uint64_t i = 1; i <= 60; ++i) all.push_back(shape(i, {std::chrono::microseconds(i)}));
    return all;
  };
  const Answer a = ask("SHOW QUERIES", data);
  ASSERT_EQ(a.tables.size(), 1u);
  ASSERT_EQ(a.tables[0].rows.size(), 50u);
  EXPECT_EQ(a.tables[0].value(0, "fingerprint"), "000000000000003c");  // 60 µs, the most
}

TEST(AdminConsoleTest, ShowSlowValuesNullsOrderAndLimit) {
  ConsoleData data;
  std::size_t asked = 0;
  data.slow = [&](std::size_t limit) {
    asked = limit;
    std::vector<SlowQueryRecord> records;
    records.push_back(slow_record("SELECT newest", kT0 + 2s + 7us));
    SlowQueryRecord failed = slow_record("SELECT pg_sleep($1)", kT0 + 1s);
    failed.backend.clear();   // no server connection attached
    failed.backend_pid = 0;
    failed.command.clear();   // no CommandComplete
    failed.rows.reset();
    failed.sqlstate = "57014";
    failed.application_name.clear();  // an empty string, not NULL (as in the log)
    records.push_back(failed);
    records.push_back(slow_record("SELECT oldest", kT0));
    return records;
  };
  Answer a = ask("SHOW SLOW", data, false);
  EXPECT_EQ(asked, kDefaultShowSlowLimit);
  ASSERT_FALSE(a.error) << a.error->message;
  ASSERT_EQ(a.tables.size(), 1u);
  const Table& t = a.tables[0];
  EXPECT_EQ(t.columns, (std::vector<std::string>{"ts", "duration_ms", "server_ms", "wait_ms", "database", "user",
                                                 "application_name", "client", "backend", "backend_pid", "protocol",
                                                 "fingerprint", "query", "command", "rows", "sqlstate"}));
  EXPECT_EQ(t.tag, "SHOW");
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0],
            (Row{"2026-05-28T20:26:42.000007Z", "812.400", "800.100", "12.300", "app", "app", "api",
                 "10.0.0.5:53122", "127.0.0.1:5432", "12345", "extended", "4851b0e100123b55", "SELECT newest",
                 "SELECT", "120", std::nullopt}));
  EXPECT_EQ(t.value(1, "query"), "SELECT pg_sleep($1)");
  EXPECT_EQ(t.rows[1][8], std::nullopt);  // backend
  EXPECT_EQ(t.rows[1][9], std::nullopt);  // backend_pid
  EXPECT_EQ(t.rows[1][13], std::nullopt);  // command
  EXPECT_EQ(t.rows[1][14], std::nullopt);  // rows
  EXPECT_EQ(t.value(1, "sqlstate"), "57014");
  EXPECT_EQ(t.rows[1][6], std::optional<std::string>(""));  // application_name
  EXPECT_EQ(t.value(2, "query"), "SELECT oldest");

  a = ask("SHOW SLOW 2;", data);
  EXPECT_EQ(asked, 2u);
  ASSERT_EQ(a.tables.size(), 1u);
  ASSERT_EQ(a.tables[0].rows.size(), 2u);  // the newest two, order kept
  EXPECT_EQ(a.tables[0].value(0, "query"), "SELECT newest");
  EXPECT_EQ(a.tables[0].value(1, "query"), "SELECT pg_sleep($1)");
}

TEST(AdminConsoleTest, NonFiniteSlowTimesAreNull) {
  ConsoleData data;
  data.slow = [](std::size_t) {
    SlowQueryRecord r = slow_record("SELECT 1", kT0);
    r.wait_ms = std::numeric_limits<double>::quiet_NaN();
    return std::vector<SlowQueryRecord>{r};
  };
  const Table t = ask("SHOW SLOW", data).tables.at(0);
  EXPECT_EQ(t.rows.at(0)[3], std::nullopt);
}

TEST(AdminConsoleTest, NoDataSourcesGiveEmptyTables) {
  for (std::string_view sql : {"SHOW QUERIES", "SHOW SLOW"}) {
    const Answer a = ask(sql);
    ASSERT_FALSE(a.error) << sql;
    ASSERT_EQ(a.tables.size(), 1u);
    EXPECT_FALSE(a.tables[0].columns.empty());
    EXPECT_TRUE(a.tables[0].rows.empty());
  }
}

TEST(AdminConsoleTest, InvalidUtf8IsReplaced) {
  ConsoleData data;
  data.slow = [](std::size_t) { return std::vector<SlowQueryRecord>{slow_record("SELECT '\xff' -- \xc3\xa9", kT0)}; };
  const Table t = ask("SHOW SLOW", data).tables.at(0);
  EXPECT_EQ(t.value(0, "query"), "SELECT '\xef\xbf\xbd' -- \xc3\xa9");
}

TEST(AdminConsoleTest, ShowHelpAndShowCommands) {
  const Answer help = ask("SHOW HELP", {}, false);
  ASSERT_EQ(help.tables.size(), 1u);
  EXPECT_EQ(help.tables[0].columns, std::vector<std::string>{"command"});
  EXPECT_GE(help.tables[0].rows.size(), 4u);
  bool mentions_queries = false;
  for (const Row& row : help.tables[0].rows) {
    ASSERT_TRUE(row.at(0).has_value());
    mentions_queries |= row[0]->starts_with("SHOW QUERIES");
  }
  EXPECT_TRUE(mentions_queries);
  EXPECT_EQ(admin_console_answer("show commands;", false, {}), admin_console_answer("SHOW HELP", false, {}));
}

TEST(AdminConsoleTest, SeveralStatementsInOneQuery) {
  ConsoleData data;
  data.version = "v";
  Answer a = ask("SHOW VERSION; show help", data);
  ASSERT_FALSE(a.error);
  ASSERT_EQ(a.tables.size(), 2u);
  EXPECT_EQ(a.tables[0].columns, std::vector<std::string>{"version"});
  EXPECT_EQ(a.tables[1].columns, std::vector<std::string>{"command"});

  // The first error ends the answer (ReadyForQuery checked by decode()).
  a = ask("SHOW VERSION; SELECT 1; SHOW HELP", data);
  ASSERT_EQ(a.tables.size(), 1u);
  expect_error(a, "42601", "\"SELECT 1\"");
}

TEST(AdminConsoleTest, UnrecognizedCommandsNameWhatWasSent) {
  Answer a = ask("SELECT * FROM pg_stat_activity", {}, false);
  expect_error(a, "42601", "unrecognized admin console command \"SELECT * FROM pg_stat_activity\"");
  EXPECT_TRUE(a.tables.empty());

  expect_error(ask("show  foo\n bar"), "42601", "unrecognized admin console command \"show foo bar\"");
  expect_error(ask("SHOW"), "42601", "\"SHOW\"");
  expect_error(ask("SHOW \"VERSION\""), "42601", "\"SHOW \"VERSION\"\"");  // keywords are not quoted identifiers

  // Long text is cut at 60 bytes, on a character boundary.
  const std::string long_sql = "SELECT '" + std::string(51, 'x') + "\xc3\xa9\xc3\xa9 and more'";
  a = ask(long_sql);
  ASSERT_TRUE(a.error);
  EXPECT_EQ(a.error->message,
            "unrecognized admin console command \"SELECT '" + std::string(51, 'x') + "...\"");
}

TEST(AdminConsoleTest, BadArguments) {
  expect_error(ask("SHOW QUERIES abc"), "42601", "syntax error at or near \"abc\"");
  expect_error(ask("SHOW QUERIES 10abc"), "42601", "\"10abc\"");
  expect_error(ask("SHOW QUERIES '10'"), "42601", "\"'10'\"");
  expect_error(ask("SHOW QUERIES 1.5"), "42601", "\"1.5\"");
  expect_error(ask("SHOW QUERIES 5 6"), "42601", "\"6\"");
  expect_error(ask("SHOW SLOW x"), "42601", "\"x\"");
  expect_error(ask("SHOW QUERIES -1"), "22023", "must not be negative");
  expect_error(ask("SHOW SLOW -20;"), "22023", "SHOW SLOW limit must not be negative");
  expect_error(ask("SHOW QUERIES 18446744073709551616"), "22023", "out of range");
  expect_error(ask("SHOW VERSION please"), "42601", "\"please\"");
  expect_error(ask("SHOW HELP me"), "42601", "\"me\"");
  EXPECT_FALSE(ask("SHOW QUERIES -0").error);
}

TEST(AdminConsoleTest, LexErrorsRunNothing) {
  ConsoleData data;
  bool called = false;
  data.queries = [&](std::size_t) {
    called = true;
    return std::vector<QueryShapeStats>{};
  };
  Answer a = ask("SHOW QUERIES; SHOW 'oops", data);
  expect_error(a, "42601", "unterminated quoted string");
  EXPECT_TRUE(a.tables.empty());
  EXPECT_FALSE(called);
  expect_error(ask("SHOW \"oops"), "42601", "unterminated quoted identifier");
  expect_error(ask("SHOW VERSION /* oops"), "42601", "unterminated /* comment");
}

TEST(AdminConsoleTest, EmptyQuery) {
  const std::string expected = pg_msg('I', "") + pg_msg('Z', "I");
  for (std::string_view sql : {"", "   ", ";", " ; ;\n", "-- nothing\n", "/* nothing */;"}) {
    EXPECT_EQ(admin_console_answer(sql, false, {}), expected) << sql;
  }
}

TEST(AdminConsoleTest, ModifyCommandsNeedAnAdmin) {
  for (std::string_view sql : {"PAUSE", "pause app;", "RESUME \"My Db\"", "RECONNECT app", "KILL app", "reload",
                               "SHUTDOWN"}) {
    expect_error(ask(sql, {}, false), "42501", "permission denied: only admin_users may run ");
    // Without a handler (as in a build without the pooler around it): 0A000.
    expect_error(ask(sql, {}, true), "0A000", "is not supported yet");
  }
  expect_error(ask("Kill app", {}, false), "42501", "permission denied: only admin_users may run KILL");
  // Syntax is checked first, for everyone.
  expect_error(ask("KILL", {}, false), "42601", "syntax error at end of input");
  expect_error(ask("PAUSE a b", {}, false), "42601", "\"b\"");
  expect_error(ask("RELOAD now", {}, true), "42601", "\"now\"");
  expect_error(ask("PAUSE 'app'", {}, true), "42601", "\"'app'\"");
}

TEST(AdminConsoleTest, ModifyCommandsAreHandedToTheHandler) {
  std::vector<std::pair<std::string, std::string>> calls;
  ConsoleData data;
  data.modify = [&](std::string_view command, std::string_view database) -> std::optional<ConsoleFailure> {
    calls.emplace_back(command, database);
    if (database == "nope") return ConsoleFailure{"3D000", "no such database: nope", ""};
    return std::nullopt;
  };
  Answer a = ask("pause app; RESUME; reconnect \"My Db\"; KILL app; RELOAD; SHUTDOWN", data, true);
  EXPECT_FALSE(a.error.has_value());
  EXPECT_EQ(a.commands, (std::vector<std::string>{"PAUSE", "RESUME", "RECONNECT", "KILL", "RELOAD", "SHUTDOWN"}));
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"PAUSE", "app"}, {"RESUME", ""}, {"RECONNECT", "My Db"}, {"KILL", "app"}, {"RELOAD", ""}, {"SHUTDOWN", ""}};
  EXPECT_EQ(calls, expected);
  calls.clear();
  a = ask("PAUSE nope; RESUME", data, true);
  expect_error(a, "3D000", "no such database: nope");
  EXPECT_EQ(calls.size(), 1u) << "the first error ends the answer";
  calls.clear();
  expect_error(ask("PAUSE app", data, false), "42501");
  EXPECT_TRUE(calls.empty()) << "a stats user never reaches the handler";
}

TEST(AdminConsoleTest, ShowPoolsUsesPgBouncersColumns) {
  ConsoleData data;
  data.pools = [] {
    ConsolePool b{"db2", "u", "transaction", 3, 2, 1, 4, 1, 2'500'123, true, "h:1,h:2", 1};
    ConsolePool a{"db1", "u", "session", 1, 0, 1, 0, 0, 0, false, "h:1", 0};
    return std::vector<ConsolePool>{b, a};
  };
  Answer a = ask("SHOW POOLS", data, false);
  ASSERT_EQ(a.tables.size(), 1u);
  const Table& t = a.tables[0];
  EXPECT_EQ(t.columns, (std::vector<std::string>{"database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
                                                 "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
                                                 "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                                                 "maxwait", "maxwait_us", "pool_mode", "paused", "hosts",
                                                 "hosts_down"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.value(0, "database"), "db1");  // sorted by database, user
  EXPECT_EQ(t.value(1, "cl_active"), "3");
  EXPECT_EQ(t.value(1, "cl_waiting"), "2");
  EXPECT_EQ(t.value(1, "sv_active"), "1");
  EXPECT_EQ(t.value(1, "sv_idle"), "4");
  EXPECT_EQ(t.value(1, "sv_login"), "1");
  EXPECT_EQ(t.value(1, "maxwait"), "2");
  EXPECT_EQ(t.value(1, "maxwait_us"), "500123");
  EXPECT_EQ(t.value(1, "pool_mode"), "transaction");
  EXPECT_EQ(t.value(1, "paused"), "yes");
  EXPECT_EQ(t.value(1, "hosts_down"), "1");
  EXPECT_EQ(t.tag, "SHOW");
  // Without a source: the columns and no rows.
  Answer empty = ask("show pools", {}, false);
  ASSERT_EQ(empty.tables.size(), 1u);
  EXPECT_TRUE(empty.tables[0].rows.empty());
}

TEST(AdminConsoleTest, ShowStatsTotalsAndAverages) {
  ConsoleData data;
  data.stats = [] {
    ConsoleStats s;
    s.total = ConsoleTotals{"app", 1000, 3000, 50'000, 900'000, 2'000'000, 1'500'000, 10'000};
    s.period = ConsoleTotals{"", 150, 450, 15'000, 30'000, 300'000, 90'000, 1'500};
    s.period_seconds = 15;
    ConsoleStats fresh;
    fresh.total = ConsoleTotals{"other", 1, 1, 10, 20, 30, 40, 50};
    return std::vector<ConsoleStats>{s, fresh};
  };
  Answer a = ask("SHOW STATS; SHOW STATS_TOTALS", data, false);
  ASSERT_EQ(a.tables.size(), 2u);
  const Table& stats = a.tables[0];
  ASSERT_EQ(stats.rows.size(), 2u);
  EXPECT_EQ(stats.columns.front(), "database");
  EXPECT_EQ(stats.value(0, "total_xact_count"), "1000");
  EXPECT_EQ(stats.value(0, "total_query_count"), "3000");
  EXPECT_EQ(stats.value(0, "total_received"), "50000");
  EXPECT_EQ(stats.value(0, "total_sent"), "900000");
  EXPECT_EQ(stats.value(0, "total_xact_time"), "2000000");
  EXPECT_EQ(stats.value(0, "total_query_time"), "1500000");
  EXPECT_EQ(stats.value(0, "total_wait_time"), "10000");
  EXPECT_EQ(stats.value(0, "avg_xact_count"), "10");    // 150 / 15 s
  EXPECT_EQ(stats.value(0, "avg_query_count"), "30");   // 450 / 15 s
  EXPECT_EQ(stats.value(0, "avg_recv"), "1000");        // bytes per second
  EXPECT_EQ(stats.value(0, "avg_sent"), "2000");
  EXPECT_EQ(stats.value(0, "avg_xact_time"), "2000");   // µs per transaction
  EXPECT_EQ(stats.value(0, "avg_query_time"), "200");   // µs per query
  EXPECT_EQ(stats.value(0, "avg_wait_time"), "10");
  EXPECT_EQ(stats.value(1, "avg_xact_count"), "0") << "no completed period yet";
  const Table& totals = a.tables[1];
  EXPECT_EQ(totals.columns, (std::vector<std::string>{"database", "xact_count", "query_count", "bytes_received",
                                                      "bytes_sent", "xact_time", "query_time", "wait_time"}));
  EXPECT_EQ(totals.value(1, "wait_time"), "50");
}

TEST(AdminConsoleTest, ShowClientsAndServers) {
  ConsoleData data;
  data.clients = [] {
    ConsoleConnection c;
    c.user = "app";
    c.database = "db";
    c.state = "waiting";
    c.addr = "127.0.0.1";
    c.port = 40000;
    c.local_addr = "127.0.0.1";
    c.local_port = 6432;
    c.connect_time = kT0;
    c.wait_us = 1'000'250;
    c.id = 0x2a;
    c.remote_pid = 1234;
    c.application_name = "api";
    return std::vector<ConsoleConnection>{c};
  };
  data.servers = [] {
    ConsoleConnection s;
    s.user = "app";
    s.database = "db";
    s.state = "idle";
    s.addr = "10.0.0.1";
    s.port = 5432;
    s.id = 7;
    s.link = 0x2a;
    s.remote_pid = 99;
    return std::vector<ConsoleConnection>{s};
  };
  Answer a = ask("SHOW CLIENTS; SHOW SERVERS", data, false);
  ASSERT_EQ(a.tables.size(), 2u);
  const Table& clients = a.tables[0];
  EXPECT_EQ(clients.columns, (std::vector<std::string>{"type", "user", "database", "state", "addr", "port",
                                                       "local_addr", "local_port", "connect_time", "request_time",
                                                       "wait", "wait_us", "close_needed", "ptr", "link",
                                                       "remote_pid", "tls", "application_name"}));
  EXPECT_EQ(clients.value(0, "type"), "C");
  EXPECT_EQ(clients.value(0, "state"), "waiting");
  EXPECT_EQ(clients.value(0, "port"), "40000");
  EXPECT_EQ(clients.value(0, "connect_time"), "2026-05-28 20:26:40 UTC");
  EXPECT_EQ(clients.value(0, "request_time"), "<NULL>");
  EXPECT_EQ(clients.value(0, "wait"), "1");
  EXPECT_EQ(clients.value(0, "wait_us"), "250");
  EXPECT_EQ(clients.value(0, "link"), "<NULL>");
  EXPECT_EQ(clients.value(0, "remote_pid"), "1234");
  EXPECT_EQ(clients.value(0, "application_name"), "api");
  const Table& servers = a.tables[1];
  EXPECT_EQ(servers.value(0, "type"), "S");
  EXPECT_EQ(servers.value(0, "remote_pid"), "99");
  EXPECT_EQ(servers.value(0, "link"), clients.value(0, "ptr"));
}

TEST(AdminConsoleTest, ShowDatabasesAndConfig) {
  ConsoleData data;
  data.databases = [] {
    ConsoleDatabase d{"app", "127.0.0.1", 5432, "appdb", "transaction", 20, 2, 1, 40, 3, true, false};
    ConsoleDatabase any{"*", "127.0.0.1", 5432, "", "session", 20, 0, 0, 0, 0, false, false};
    return std::vector<ConsoleDatabase>{d, any};
  };
  data.config = [] {
    return std::vector<ConsoleConfigItem>{{"pool.size", "5", "20", true}, {"sluice.listen", "127.0.0.1:6432", "x", false}};
  };
  Answer a = ask("SHOW DATABASES; SHOW CONFIG", data, false);
  ASSERT_EQ(a.tables.size(), 2u);
  const Table& dbs = a.tables[0];
  EXPECT_EQ(dbs.columns, (std::vector<std::string>{"name", "host", "port", "database", "force_user", "pool_size",
                                                   "min_pool_size", "reserve_pool", "pool_mode", "max_connections",
                                                   "current_connections", "paused", "disabled"}));
  EXPECT_EQ(dbs.value(0, "name"), "*");
  EXPECT_EQ(dbs.value(0, "database"), "<NULL>");
  EXPECT_EQ(dbs.value(1, "database"), "appdb");
  EXPECT_EQ(dbs.value(1, "pool_size"), "20");
  EXPECT_EQ(dbs.value(1, "min_pool_size"), "2");
  EXPECT_EQ(dbs.value(1, "max_connections"), "40");
  EXPECT_EQ(dbs.value(1, "paused"), "1");
  const Table& config = a.tables[1];
  EXPECT_EQ(config.columns, (std::vector<std::string>{"key", "value", "default", "changeable"}));
  EXPECT_EQ(config.value(0, "value"), "5");
  EXPECT_EQ(config.value(1, "changeable"), "no");
  expect_error(ask("SHOW POOLS now", data, false), "42601", "\"now\"");
}

}  // namespace
}  // namespace sluice::proxy
