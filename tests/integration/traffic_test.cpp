// Traffic through Sluice in session mode: every kind of message flow a libpq client produces
// (simple and extended query, pipelining, COPY both ways, large results and rows, notices,
// notifications, errors inside transactions).
//
// Every test runs twice, against a direct connection to PostgreSQL and through Sluice, and
// checks exact results, so both routes must behave identically; the direct run proves that the
// expectations themselves are PostgreSQL's behaviour.
#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/clients.h"
#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;

enum class Route { kDirect, kSluice };

std::string route_name(Route route) { return route == Route::kDirect ? "direct" : "sluice"; }
void PrintTo(Route route, std::ostream* os) { *os << route_name(route); }

// Unique per process, route and call, so tests never share a table or channel.
std::string unique_name(const std::string& prefix, Route route) {
  static std::atomic<int> counter{0};
  return prefix + "_" + route_name(route) + "_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
}

// 64-bit FNV-1a: a cheap client-side checksum for comparing large byte streams.
std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// Describes where two large strings first differ, without printing megabytes.
std::string first_difference(const std::string& actual, const std::string& expected) {
  if (actual == expected) return "equal";
  std::size_t i = 0;
  while (i < actual.size() && i < expected.size() && actual[i] == expected[i]) ++i;
  auto excerpt = [i](const std::string& s) {
    std::size_t from = i >= 40 ? i - 40 : 0;
    return s.substr(from, 80);
  };
  return "sizes " + std::to_string(actual.size()) + " vs " + std::to_string(expected.size()) +
         ", first difference at byte " + std::to_string(i) + ": actual \"" + excerpt(actual) +
         "\" expected \"" + excerpt(expected) + "\"";
}

std::string result_error(const PGresult* res) {
  if (res == nullptr) return "(null result)";
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  return std::string(PQresStatus(PQresultStatus(res))) + " " + (state ? state : "-") + " " +
         PQresultErrorMessage(res);
}

std::string sqlstate(const PGresult* res) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  return state ? state : "";
}

PgResult exec(PGconn* conn, const std::string& sql) { return PgResult(PQexec(conn, sql.c_str())); }

// Runs a command that must succeed with PGRES_COMMAND_OK or PGRES_TUPLES_OK.
void exec_ok(PGconn* conn, const std::string& sql) {
  PgResult res = exec(conn, sql);
  auto status = PQresultStatus(res.get());
  EXPECT_TRUE(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
      << sql << " -> " << result_error(res.get()) << " / " << PQerrorMessage(conn);
}

// The first value of the single result row as text; an "<error ...>" marker on failure.
std::string scalar(PGconn* conn, const std::string& sql) {
  PgResult res = exec(conn, sql);
  if (PQresultStatus(res.get()) != PGRES_TUPLES_OK || PQntuples(res.get()) != 1) {
    ADD_FAILURE() << sql << " -> " << result_error(res.get()) << " rows="
                  << (res ? PQntuples(res.get()) : -1) << " / " << PQerrorMessage(conn);
    return "<error>";
  }
  if (PQgetisnull(res.get(), 0, 0)) return "<null>";
  return std::string(PQgetvalue(res.get(), 0, 0), PQgetlength(res.get(), 0, 0));
}

// Waits (bounded) for a notification: polls the socket, consumes input, checks the queue.
std::unique_ptr<PGnotify, void (*)(void*)> wait_notification(PGconn* conn, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (PQconsumeInput(conn) == 0) return {nullptr, PQfreemem};
    if (PGnotify* n = PQnotifies(conn)) return {n, PQfreemem};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) return {nullptr, PQfreemem};
    pollfd pfd{PQsocket(conn), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(std::min<std::chrono::milliseconds>(left, 1000ms).count()));
  }
}


class TrafficTest : public ::testing::TestWithParam<Route> {
 protected:
  static void SetUpTestSuite() {
    PostgresServer::shared();
    start_sluice();
  }
  static void TearDownTestSuite() {
    delete sluice_;
    sluice_ = nullptr;
  }
  static void start_sluice() {
    delete sluice_;
    sluice_ = nullptr;
    try {
      sluice_ = new SluiceProcess(default_config());
      sluice_error_.clear();
    } catch (const std::exception& e) {
      sluice_error_ = e.what();
    }
  }

  void SetUp() override {
    if (GetParam() == Route::kSluice) {
      if (sluice_ == nullptr || !sluice_->running()) {
        if (sluice_ != nullptr) {
          std::fprintf(stderr, "Sluice is not running any more; its log:\n%s\n", sluice_->log().c_str());
        }
        start_sluice();
      }
      ASSERT_NE(sluice_, nullptr) << "Sluice did not start: " << sluice_error_;
    }
    SluiceProcess* sluice = GetParam() == Route::kSluice ? sluice_ : nullptr;
    watchdog_ = std::make_unique<Watchdog>(180s, [sluice] {
      if (sluice != nullptr) {
        std::fprintf(stderr, "---- Sluice log (watchdog) ----\n%s\n----\n", sluice->log().c_str());
        ::kill(sluice->pid(), SIGKILL);
      }
      try {
        PostgresServer::shared().exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND pid <> pg_backend_pid()");
      } catch (const std::exception& e) {
        std::fprintf(stderr, "watchdog: terminating backends failed: %s\n", e.what());
      }
    });
  }

  void TearDown() override {
    watchdog_.reset();
    if (HasFailure() && GetParam() == Route::kSluice && sluice_ != nullptr) {
      std::string log = sluice_->log();
      if (log.size() > 16000) log = "...\n" + log.substr(log.size() - 16000);
      std::fprintf(stderr, "---- Sluice log (tail) ----\n%s\n----\n", log.c_str());
    }
  }

  Route route() const { return GetParam(); }

  static std::string direct_conninfo() {
    return PostgresServer::shared().conninfo("sluice_test", "app", "app_pw");
  }
  std::string conninfo() const {
    return route() == Route::kDirect ? direct_conninfo() : sluice_->conninfo("sluice_test", "app", "app_pw");
  }

  // Connects over the route under test; ASSERTs the connection is usable.
  void open(PgConn& out) { open_to(conninfo(), out); }
  static void open_direct(PgConn& out) { open_to(direct_conninfo(), out); }
  static void open_to(const std::string& info, PgConn& out) {
    out = connect(info);
    ASSERT_TRUE(out) << "connect returned null for " << info;
    ASSERT_EQ(PQstatus(out.get()), CONNECTION_OK) << info << ": " << PQerrorMessage(out.get());
  }

  std::string table(const std::string& prefix) const { return unique_name(prefix, route()); }

  static inline SluiceProcess* sluice_ = nullptr;
  static inline std::string sluice_error_;
  std::unique_ptr<Watchdog> watchdog_;
};

// ---------------------------------------------------------------------------------------------
// Simple query protocol

TEST_P(TrafficTest, SimpleQueriesReturnExactValuesAndCommandTags) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();

  PgResult res = exec(c, "SELECT 1 AS one, 'two'::text AS two, NULL::int AS three, 4.5::numeric AS four");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
  ASSERT_EQ(PQntuples(res.get()), 1);
  ASSERT_EQ(PQnfields(res.get()), 4);
  EXPECT_STREQ(PQfname(res.get(), 0), "one");
  EXPECT_STREQ(PQfname(res.get(), 3), "four");
  EXPECT_EQ(PQftype(res.get(), 0), 23u);    // int4
  EXPECT_EQ(PQftype(res.get(), 1), 25u);    // text
  EXPECT_EQ(PQftype(res.get(), 3), 1700u);  // numeric
  EXPECT_STREQ(PQgetvalue(res.get(), 0, 0), "1");
  EXPECT_STREQ(PQgetvalue(res.get(), 0, 1), "two");
  EXPECT_TRUE(PQgetisnull(res.get(), 0, 2));
  EXPECT_STREQ(PQgetvalue(res.get(), 0, 3), "4.5");
  EXPECT_STREQ(PQcmdStatus(res.get()), "SELECT 1");

  const std::string t = table("simple");
  res = exec(c, "CREATE TABLE " + t + " (id int PRIMARY KEY, v text)");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  EXPECT_STREQ(PQcmdStatus(res.get()), "CREATE TABLE");

  res = exec(c, "INSERT INTO " + t + " VALUES (1, 'a'), (2, 'b'), (3, NULL)");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  EXPECT_STREQ(PQcmdStatus(res.get()), "INSERT 0 3");
  EXPECT_STREQ(PQcmdTuples(res.get()), "3");

  res = exec(c, "UPDATE " + t + " SET v = 'z' WHERE id >= 2");
  EXPECT_STREQ(PQcmdStatus(res.get()), "UPDATE 2");

  res = exec(c, "SELECT id, v FROM " + t + " ORDER BY id");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
  ASSERT_EQ(PQntuples(res.get()), 3);
  EXPECT_STREQ(PQgetvalue(res.get(), 0, 1), "a");
  EXPECT_STREQ(PQgetvalue(res.get(), 1, 1), "z");
  EXPECT_STREQ(PQgetvalue(res.get(), 2, 1), "z");

  res = exec(c, "DELETE FROM " + t);
  EXPECT_STREQ(PQcmdStatus(res.get()), "DELETE 3");

  // An empty query string gets EmptyQueryResponse; the connection stays usable.
  res = exec(c, "");
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_EMPTY_QUERY) << result_error(res.get());

  // Unicode round-trips byte for byte.
  EXPECT_EQ(scalar(c, "SELECT 'Grüße, 世界 🚀'"), "Grüße, 世界 🚀");

  // A syntax error reports SQLSTATE 42601 and the next query works.
  res = exec(c, "SELEC 1");
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(res.get()), "42601") << result_error(res.get());
  EXPECT_EQ(scalar(c, "SELECT 41 + 1"), "42");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);

  exec_ok(c, "DROP TABLE " + t);
}

TEST_P(TrafficTest, MultiStatementSimpleQueryReturnsEveryResult) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();

  ASSERT_EQ(PQsendQuery(c, "SELECT 1; SELECT 2; SELECT 3"), 1) << PQerrorMessage(c);
  std::vector<std::string> values;
  while (PGresult* raw = PQgetResult(c)) {
    PgResult res(raw);
    ASSERT_EQ(PQresultStatus(raw), PGRES_TUPLES_OK) << result_error(raw);
    ASSERT_EQ(PQntuples(raw), 1);
    values.emplace_back(PQgetvalue(raw, 0, 0));
  }
  EXPECT_EQ(values, (std::vector<std::string>{"1", "2", "3"}));

  // Mixed commands: each produces its own result with its own tag.
  const std::string t = table("multi");
  ASSERT_EQ(PQsendQuery(c, ("CREATE TABLE " + t + " (id int); INSERT INTO " + t + " VALUES (1), (2); SELECT count(*) FROM " + t + "; DROP TABLE " + t).c_str()), 1);
  std::vector<std::string> tags;
  while (PGresult* raw = PQgetResult(c)) {
    PgResult res(raw);
    auto status = PQresultStatus(raw);
    ASSERT_TRUE(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) << result_error(raw);
    tags.emplace_back(PQcmdStatus(raw));
    if (status == PGRES_TUPLES_OK) {
      EXPECT_STREQ(PQgetvalue(raw, 0, 0), "2");
    }
  }
  EXPECT_EQ(tags, (std::vector<std::string>{"CREATE TABLE", "INSERT 0 2", "SELECT 1", "DROP TABLE"}));

  // An error in the middle stops the rest, and the implicit transaction is rolled back.
  const std::string u = table("multi_err");
  exec_ok(c, "CREATE TABLE " + u + " (id int)");
  ASSERT_EQ(PQsendQuery(c, ("INSERT INTO " + u + " VALUES (1); SELECT 1/0; INSERT INTO " + u + " VALUES (2)").c_str()), 1);
  std::vector<std::string> outcome;
  while (PGresult* raw = PQgetResult(c)) {
    PgResult res(raw);
    outcome.push_back(std::string(PQresStatus(PQresultStatus(raw))) + ":" + sqlstate(raw));
  }
  EXPECT_EQ(outcome, (std::vector<std::string>{"PGRES_COMMAND_OK:", "PGRES_FATAL_ERROR:22012"}));
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM " + u), "0");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  exec_ok(c, "DROP TABLE " + u);
}

TEST_P(TrafficTest, ParameterStatusMatchesPostgresAndFollowsSet) {
  PgConn conn, direct;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  ASSERT_NO_FATAL_FAILURE(open_direct(direct));
  for (const char* name : {"server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
                           "integer_datetimes", "standard_conforming_strings", "IntervalStyle", "is_superuser",
                           "session_authorization"}) {
    const char* got = PQparameterStatus(conn.get(), name);
    const char* want = PQparameterStatus(direct.get(), name);
    ASSERT_NE(want, nullptr) << name;
    ASSERT_NE(got, nullptr) << name;
    EXPECT_STREQ(got, want) << name;
  }
  EXPECT_EQ(PQserverVersion(conn.get()), PQserverVersion(direct.get()));

  // A SET of a reported parameter sends ParameterStatus mid-session; the client must see it.
  exec_ok(conn.get(), "SET application_name = 'traffic_probe'");
  ASSERT_NE(PQparameterStatus(conn.get(), "application_name"), nullptr);
  EXPECT_STREQ(PQparameterStatus(conn.get(), "application_name"), "traffic_probe");
  exec_ok(conn.get(), "SET TimeZone = 'Asia/Kathmandu'");
  EXPECT_STREQ(PQparameterStatus(conn.get(), "TimeZone"), "Asia/Kathmandu");
  EXPECT_EQ(scalar(conn.get(), "SHOW TimeZone"), "Asia/Kathmandu");
}

// ---------------------------------------------------------------------------------------------
// Extended query protocol

TEST_P(TrafficTest, ExecParamsWithTextAndBinaryParametersAndResults) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();

  // Text parameters, text results; a NULL parameter.
  {
    const char* values[3] = {"40", "hello", nullptr};
    PgResult res(PQexecParams(c, "SELECT $1::int + 2, upper($2::text), $3::text IS NULL", 3, nullptr, values,
                              nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
    EXPECT_STREQ(PQgetvalue(res.get(), 0, 0), "42");
    EXPECT_STREQ(PQgetvalue(res.get(), 0, 1), "HELLO");
    EXPECT_STREQ(PQgetvalue(res.get(), 0, 2), "t");
  }

  // Binary parameters (int4, int8, bytea with NULs) and binary results.
  {
    const std::uint32_t i4 = htonl(static_cast<std::uint32_t>(-123456));
    const std::uint64_t v8 = 0x0102030405060708ULL;
    unsigned char i8[8];
    for (int k = 0; k < 8; ++k) i8[k] = static_cast<unsigned char>(v8 >> (56 - 8 * k));
    std::string blob;
    for (int k = 0; k < 256; ++k) blob.push_back(static_cast<char>(k));
    blob += std::string("\0\0\xff\0", 4);
    const Oid types[3] = {23, 20, 17};
    const char* values[3] = {reinterpret_cast<const char*>(&i4), reinterpret_cast<const char*>(i8), blob.data()};
    const int lengths[3] = {4, 8, static_cast<int>(blob.size())};
    const int formats[3] = {1, 1, 1};
    PgResult res(PQexecParams(c, "SELECT $1::int4 - 1, $2::int8 + 1, $3::bytea, length($3::bytea)", 3, types,
                              values, lengths, formats, 1));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
    ASSERT_EQ(PQnfields(res.get()), 4);
    for (int f = 0; f < 4; ++f) EXPECT_EQ(PQfformat(res.get(), f), 1) << f;

    ASSERT_EQ(PQgetlength(res.get(), 0, 0), 4);
    std::uint32_t out4;
    std::memcpy(&out4, PQgetvalue(res.get(), 0, 0), 4);
    EXPECT_EQ(static_cast<std::int32_t>(ntohl(out4)), -123457);

    ASSERT_EQ(PQgetlength(res.get(), 0, 1), 8);
    const auto* p8 = reinterpret_cast<const unsigned char*>(PQgetvalue(res.get(), 0, 1));
    std::uint64_t out8 = 0;
    for (int k = 0; k < 8; ++k) out8 = (out8 << 8) | p8[k];
    EXPECT_EQ(out8, v8 + 1);

    ASSERT_EQ(PQgetlength(res.get(), 0, 2), static_cast<int>(blob.size()));
    EXPECT_EQ(std::string(PQgetvalue(res.get(), 0, 2), PQgetlength(res.get(), 0, 2)), blob);

    std::uint32_t len;
    std::memcpy(&len, PQgetvalue(res.get(), 0, 3), 4);
    EXPECT_EQ(ntohl(len), blob.size());
  }

  // Parameters into a table and back, mixing formats per column.
  const std::string t = table("params");
  exec_ok(c, "CREATE TABLE " + t + " (id int PRIMARY KEY, name text, data bytea)");
  for (int i = 1; i <= 20; ++i) {
    const std::uint32_t id = htonl(static_cast<std::uint32_t>(i));
    const std::string name = "name-" + std::to_string(i);
    const std::string data(static_cast<std::size_t>(i), static_cast<char>(i));
    const Oid types[3] = {23, 25, 17};
    const char* values[3] = {reinterpret_cast<const char*>(&id), name.c_str(), data.data()};
    const int lengths[3] = {4, 0, static_cast<int>(data.size())};
    const int formats[3] = {1, 0, 1};
    PgResult res(PQexecParams(c, ("INSERT INTO " + t + " VALUES ($1, $2, $3)").c_str(), 3, types, values, lengths,
                              formats, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
    EXPECT_STREQ(PQcmdTuples(res.get()), "1");
  }
  EXPECT_EQ(scalar(c, "SELECT count(*) || ':' || sum(id) || ':' || sum(length(data)) FROM " + t), "20:210:210");
  EXPECT_EQ(scalar(c, "SELECT encode(data, 'hex') FROM " + t + " WHERE id = 3"), "030303");

  // An error in an extended-protocol query leaves the connection usable.
  {
    const char* values[1] = {"not a number"};
    PgResult res(PQexecParams(c, "SELECT $1::int", 1, nullptr, values, nullptr, nullptr, 0));
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
    EXPECT_EQ(sqlstate(res.get()), "22P02") << result_error(res.get());
  }
  EXPECT_EQ(scalar(c, "SELECT 'still fine'"), "still fine");
  exec_ok(c, "DROP TABLE " + t);
}

TEST_P(TrafficTest, PreparedStatementsRunRepeatedlyAndDescribe) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  const std::string t = table("prep");
  exec_ok(c, "CREATE TABLE " + t + " (id int PRIMARY KEY, label text NOT NULL)");

  PgResult res(PQprepare(c, "ins", ("INSERT INTO " + t + " (id, label) VALUES ($1, $2)").c_str(), 2, nullptr));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  const Oid sel_types[1] = {23};
  res.reset(PQprepare(c, "sel", ("SELECT id, label, length(label) AS len FROM " + t + " WHERE id = $1").c_str(), 1,
                      sel_types));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());

  for (int i = 1; i <= 200; ++i) {
    const std::string id = std::to_string(i);
    const std::string label = "label-" + std::to_string(i * 7);
    const char* values[2] = {id.c_str(), label.c_str()};
    res.reset(PQexecPrepared(c, "ins", 2, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << i << ": " << result_error(res.get());
    ASSERT_STREQ(PQcmdStatus(res.get()), "INSERT 0 1");
  }
  for (int i = 1; i <= 200; i += 3) {
    const std::string id = std::to_string(i);
    const char* values[1] = {id.c_str()};
    res.reset(PQexecPrepared(c, "sel", 1, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << i << ": " << result_error(res.get());
    ASSERT_EQ(PQntuples(res.get()), 1);
    const std::string label = "label-" + std::to_string(i * 7);
    EXPECT_EQ(PQgetvalue(res.get(), 0, 1), label);
    EXPECT_EQ(PQgetvalue(res.get(), 0, 2), std::to_string(label.size()));
  }
  // A constraint violation from a prepared statement: 23505, and the statement stays usable.
  {
    const char* values[2] = {"1", "dup"};
    res.reset(PQexecPrepared(c, "ins", 2, values, nullptr, nullptr, 0));
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
    EXPECT_EQ(sqlstate(res.get()), "23505") << result_error(res.get());
    const char* more[2] = {"201", "after-error"};
    res.reset(PQexecPrepared(c, "ins", 2, more, nullptr, nullptr, 0));
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  }

  // Describe: parameter types and result columns.
  res.reset(PQdescribePrepared(c, "sel"));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  ASSERT_EQ(PQnparams(res.get()), 1);
  EXPECT_EQ(PQparamtype(res.get(), 0), 23u);
  ASSERT_EQ(PQnfields(res.get()), 3);
  EXPECT_STREQ(PQfname(res.get(), 0), "id");
  EXPECT_STREQ(PQfname(res.get(), 1), "label");
  EXPECT_STREQ(PQfname(res.get(), 2), "len");
  EXPECT_EQ(PQftype(res.get(), 0), 23u);
  EXPECT_EQ(PQftype(res.get(), 1), 25u);
  EXPECT_EQ(PQftype(res.get(), 2), 23u);

  res.reset(PQdescribePrepared(c, "ins"));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  ASSERT_EQ(PQnparams(res.get()), 2);
  EXPECT_EQ(PQparamtype(res.get(), 0), 23u);
  EXPECT_EQ(PQparamtype(res.get(), 1), 25u);
  EXPECT_EQ(PQnfields(res.get()), 0);

  // The unnamed statement, and errors for unknown or duplicate names (26000, 42P05).
  res.reset(PQprepare(c, "", "SELECT $1::text || '!'", 1, nullptr));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  {
    const char* values[1] = {"unnamed"};
    res.reset(PQexecPrepared(c, "", 1, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
    EXPECT_STREQ(PQgetvalue(res.get(), 0, 0), "unnamed!");
  }
  res.reset(PQdescribePrepared(c, "no_such_statement"));
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(res.get()), "26000") << result_error(res.get());
  res.reset(PQprepare(c, "sel", "SELECT 1", 0, nullptr));
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(res.get()), "42P05") << result_error(res.get());

  // SQL-level PREPARE/EXECUTE shares the namespace with protocol-level statements.
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM pg_prepared_statements WHERE name IN ('ins', 'sel')"), "2");
  exec_ok(c, "DEALLOCATE ins");
  exec_ok(c, "PREPARE sq(int) AS SELECT $1 * $1");
  EXPECT_EQ(scalar(c, "EXECUTE sq(12)"), "144");
  EXPECT_EQ(scalar(c, "SELECT count(*) || ':' || sum(id) FROM " + t), "201:20301");
  exec_ok(c, "DROP TABLE " + t);
}

TEST_P(TrafficTest, SingleRowModeStreamsEveryRow) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  ASSERT_EQ(PQsendQuery(c, "SELECT i FROM generate_series(1, 5000) i"), 1);
  ASSERT_EQ(PQsetSingleRowMode(c), 1);
  long long rows = 0, sum = 0;
  bool finished = false;
  while (PGresult* raw = PQgetResult(c)) {
    PgResult res(raw);
    if (PQresultStatus(raw) == PGRES_SINGLE_TUPLE) {
      ASSERT_FALSE(finished);
      ++rows;
      sum += std::atoll(PQgetvalue(raw, 0, 0));
    } else {
      ASSERT_EQ(PQresultStatus(raw), PGRES_TUPLES_OK) << result_error(raw);
      EXPECT_EQ(PQntuples(raw), 0);
      finished = true;
    }
  }
  EXPECT_TRUE(finished);
  EXPECT_EQ(rows, 5000);
  EXPECT_EQ(sum, 5000LL * 5001 / 2);
}

// ---------------------------------------------------------------------------------------------
// Pipeline mode

// Reads the next result of a pipeline and describes it as "STATUS:SQLSTATE:first value".
std::string next_pipeline_result(PGconn* c) {
  PgResult res(PQgetResult(c));
  if (!res) return "NULL";
  std::string out = std::string(PQresStatus(PQresultStatus(res.get()))) + ":" + sqlstate(res.get());
  if (PQresultStatus(res.get()) == PGRES_TUPLES_OK && PQntuples(res.get()) > 0) {
    out += std::string(":") + PQgetvalue(res.get(), 0, 0);
  } else if (PQresultStatus(res.get()) == PGRES_COMMAND_OK) {
    out += std::string(":") + PQcmdStatus(res.get());
  }
  return out;
}

// Reads one query's results in pipeline mode: its result then the NULL that ends it.
std::string pipeline_query_result(PGconn* c) {
  std::string first = next_pipeline_result(c);
  std::string end = next_pipeline_result(c);
  if (end != "NULL") return first + " (then " + end + " instead of NULL)";
  return first;
}

TEST_P(TrafficTest, PipelineModeWithAnErrorAbortsTheRestOfThatSync) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  const std::string t = table("pipe");
  exec_ok(c, "CREATE TABLE " + t + " (id int PRIMARY KEY, v text)");
  const std::string insert = "INSERT INTO " + t + " (id, v) VALUES ($1::int, $2::text)";
  const std::string count = "SELECT count(*) FROM " + t;

  ASSERT_EQ(PQenterPipelineMode(c), 1) << PQerrorMessage(c);
  ASSERT_EQ(PQpipelineStatus(c), PQ_PIPELINE_ON);

  auto send_insert = [&](int id) {
    const std::string sid = std::to_string(id), v = "v" + sid;
    const char* values[2] = {sid.c_str(), v.c_str()};
    return PQsendQueryParams(c, insert.c_str(), 2, nullptr, values, nullptr, nullptr, 0);
  };
  auto send_plain = [&](const std::string& sql) {
    return PQsendQueryParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0);
  };

  // Sync 1: three inserts and a count.
  ASSERT_EQ(send_insert(1), 1) << PQerrorMessage(c);
  ASSERT_EQ(send_insert(2), 1);
  ASSERT_EQ(send_insert(3), 1);
  ASSERT_EQ(send_plain(count), 1);
  ASSERT_EQ(PQpipelineSync(c), 1);
  // Sync 2 queued before reading sync 1: insert, division by zero, insert, count.
  ASSERT_EQ(send_insert(4), 1);
  ASSERT_EQ(send_plain("SELECT 1/0"), 1);
  ASSERT_EQ(send_insert(5), 1);
  ASSERT_EQ(send_plain(count), 1);
  ASSERT_EQ(PQpipelineSync(c), 1);
  // Sync 3: prepare, execute and describe in the pipeline.
  ASSERT_EQ(PQsendPrepare(c, "pipe_stmt", ("SELECT v FROM " + t + " WHERE id = $1").c_str(), 1, nullptr), 1);
  {
    const char* values[1] = {"2"};
    ASSERT_EQ(PQsendQueryPrepared(c, "pipe_stmt", 1, values, nullptr, nullptr, 0), 1);
  }
  ASSERT_EQ(PQsendDescribePrepared(c, "pipe_stmt"), 1);
  ASSERT_EQ(send_plain(count), 1);
  ASSERT_EQ(PQpipelineSync(c), 1);

  EXPECT_EQ(pipeline_query_result(c), "PGRES_COMMAND_OK::INSERT 0 1");
  EXPECT_EQ(pipeline_query_result(c), "PGRES_COMMAND_OK::INSERT 0 1");
  EXPECT_EQ(pipeline_query_result(c), "PGRES_COMMAND_OK::INSERT 0 1");
  EXPECT_EQ(pipeline_query_result(c), "PGRES_TUPLES_OK::3");
  EXPECT_EQ(next_pipeline_result(c), "PGRES_PIPELINE_SYNC:");

  EXPECT_EQ(pipeline_query_result(c), "PGRES_COMMAND_OK::INSERT 0 1");
  EXPECT_EQ(pipeline_query_result(c), "PGRES_FATAL_ERROR:22012");
  EXPECT_EQ(PQpipelineStatus(c), PQ_PIPELINE_ABORTED);
  EXPECT_EQ(pipeline_query_result(c), "PGRES_PIPELINE_ABORTED:");
  EXPECT_EQ(pipeline_query_result(c), "PGRES_PIPELINE_ABORTED:");
  EXPECT_EQ(next_pipeline_result(c), "PGRES_PIPELINE_SYNC:");
  EXPECT_EQ(PQpipelineStatus(c), PQ_PIPELINE_ON);

  // The aborted sync was one implicit transaction: insert 4 was rolled back.
  EXPECT_EQ(pipeline_query_result(c), "PGRES_COMMAND_OK::");  // Prepare
  EXPECT_EQ(pipeline_query_result(c), "PGRES_TUPLES_OK::v2");
  {
    PgResult described(PQgetResult(c));
    ASSERT_TRUE(described);
    EXPECT_EQ(PQresultStatus(described.get()), PGRES_COMMAND_OK) << result_error(described.get());
    EXPECT_EQ(PQnparams(described.get()), 1);
    EXPECT_EQ(PQnfields(described.get()), 1);
    EXPECT_EQ(PQgetResult(c), nullptr);
  }
  EXPECT_EQ(pipeline_query_result(c), "PGRES_TUPLES_OK::3");
  EXPECT_EQ(next_pipeline_result(c), "PGRES_PIPELINE_SYNC:");

  // Many small queries in one sync, read after the sync.
  constexpr int kMany = 300;
  for (int i = 0; i < kMany; ++i) {
    const std::string s = std::to_string(i);
    const char* values[1] = {s.c_str()};
    ASSERT_EQ(PQsendQueryParams(c, "SELECT $1::int * 2", 1, nullptr, values, nullptr, nullptr, 0), 1);
  }
  ASSERT_EQ(PQpipelineSync(c), 1);
  for (int i = 0; i < kMany; ++i) {
    ASSERT_EQ(pipeline_query_result(c), "PGRES_TUPLES_OK::" + std::to_string(i * 2)) << i;
  }
  EXPECT_EQ(next_pipeline_result(c), "PGRES_PIPELINE_SYNC:");

  ASSERT_EQ(PQexitPipelineMode(c), 1) << PQerrorMessage(c);
  EXPECT_EQ(PQpipelineStatus(c), PQ_PIPELINE_OFF);
  EXPECT_EQ(scalar(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM " + t), "1,2,3");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  exec_ok(c, "DROP TABLE " + t);
}

// A non-blocking pipeline that keeps both directions busy at once: megabytes of queries go out
// while megabytes of results come back, more than socket buffers hold. A relay that does not
// pump both directions independently deadlocks here.
TEST_P(TrafficTest, NonBlockingPipelineWithBothDirectionsSaturated) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  ASSERT_EQ(PQsetnonblocking(c, 1), 0) << PQerrorMessage(c);
  ASSERT_EQ(PQenterPipelineMode(c), 1) << PQerrorMessage(c);

  constexpr int kQueries = 2000;
  constexpr int kPerSync = 50;
  const std::string filler(4000, 'p');
  const std::string sql = "SELECT $1::int, length($2::text), repeat('r', 6000)";
  int sent = 0, sent_syncs = 0, received = 0, received_syncs = 0;
  bool expect_null = false;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (received < kQueries || received_syncs < kQueries / kPerSync) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "pipeline stalled: sent " << sent << " received " << received << " syncs " << received_syncs;
    // Queue more work while libpq's output buffer is drained.
    int flush = PQflush(c);
    ASSERT_GE(flush, 0) << PQerrorMessage(c);
    for (int k = 0; flush == 0 && k < kPerSync && sent < kQueries; ++k) {
      const std::string id = std::to_string(sent);
      const char* values[2] = {id.c_str(), filler.c_str()};
      ASSERT_EQ(PQsendQueryParams(c, sql.c_str(), 2, nullptr, values, nullptr, nullptr, 0), 1) << PQerrorMessage(c);
      if (++sent % kPerSync == 0) {
        ASSERT_EQ(PQpipelineSync(c), 1) << PQerrorMessage(c);
        ++sent_syncs;
      }
    }
    flush = PQflush(c);
    ASSERT_GE(flush, 0) << PQerrorMessage(c);

    pollfd pfd{PQsocket(c), static_cast<short>(POLLIN | (flush == 1 ? POLLOUT : 0)), 0};
    ::poll(&pfd, 1, 1000);
    ASSERT_EQ(PQconsumeInput(c), 1) << PQerrorMessage(c);
    while (received + received_syncs < sent + sent_syncs && !PQisBusy(c)) {
      PgResult res(PQgetResult(c));
      if (expect_null) {
        ASSERT_FALSE(res) << "expected the end of query " << received - 1 << ", got " << result_error(res.get());
        expect_null = false;
        continue;
      }
      ASSERT_TRUE(res) << "unexpected NULL result after " << received << " results";
      if (PQresultStatus(res.get()) == PGRES_PIPELINE_SYNC) {
        ASSERT_EQ(received % kPerSync, 0) << "sync after " << received << " results";
        ++received_syncs;
        continue;
      }
      ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << received << ": " << result_error(res.get());
      ASSERT_EQ(std::string(PQgetvalue(res.get(), 0, 0)), std::to_string(received));
      ASSERT_STREQ(PQgetvalue(res.get(), 0, 1), "4000");
      ASSERT_EQ(PQgetlength(res.get(), 0, 2), 6000);
      ++received;
      expect_null = true;
    }
  }
  if (expect_null) {
    EXPECT_EQ(PQgetResult(c), nullptr);
  }
  EXPECT_EQ(received, kQueries);
  EXPECT_EQ(received_syncs, kQueries / kPerSync);
  ASSERT_EQ(PQexitPipelineMode(c), 1) << PQerrorMessage(c);
  ASSERT_EQ(PQsetnonblocking(c, 0), 0);
  EXPECT_EQ(scalar(c, "SELECT 'after pipeline'"), "after pipeline");
}

// ---------------------------------------------------------------------------------------------
// COPY

// Row i of the COPY FROM data set: "i\trow-i-<100 letters>\n".
std::string copy_payload(long i) { return "row-" + std::to_string(i) + "-" + std::string(100, static_cast<char>('a' + i % 26)); }
constexpr const char* kCopyPayloadSql = "'row-' || i || '-' || repeat(chr(97 + i % 26), 100)";

TEST_P(TrafficTest, CopyFromStdinOfMoreThanTenMegabytes) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  const std::string t = table("copy_in");
  exec_ok(c, "CREATE TABLE " + t + " (id int, payload text)");

  constexpr long kRows = 100000;
  std::string data;
  data.reserve(13 << 20);
  long long payload_bytes = 0;
  for (long i = 1; i <= kRows; ++i) {
    std::string p = copy_payload(i);
    payload_bytes += static_cast<long long>(p.size());
    data += std::to_string(i);
    data += '\t';
    data += p;
    data += '\n';
  }
  ASSERT_GE(data.size(), 10u << 20);

  PgResult res = exec(c, "COPY " + t + " (id, payload) FROM STDIN");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COPY_IN) << result_error(res.get());
  // Chunks of an odd size, so rows and CopyData messages never line up.
  constexpr std::size_t kChunk = 65521;
  for (std::size_t off = 0; off < data.size(); off += kChunk) {
    const std::size_t n = std::min(kChunk, data.size() - off);
    ASSERT_EQ(PQputCopyData(c, data.data() + off, static_cast<int>(n)), 1) << PQerrorMessage(c);
  }
  ASSERT_EQ(PQputCopyEnd(c, nullptr), 1) << PQerrorMessage(c);
  res.reset(PQgetResult(c));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  EXPECT_STREQ(PQcmdStatus(res.get()), "COPY 100000");
  EXPECT_EQ(PQgetResult(c), nullptr);

  const std::string expected_md5 = scalar(
      c, std::string("SELECT md5(string_agg(") + kCopyPayloadSql + ", '' ORDER BY i)) FROM generate_series(1, " +
             std::to_string(kRows) + ") i");
  const std::string check = "SELECT count(*) || ':' || sum(id) || ':' || sum(length(payload)) || ':' || "
                            "md5(string_agg(payload, '' ORDER BY id)) FROM " + t;
  const std::string want = std::to_string(kRows) + ":" + std::to_string(kRows * (kRows + 1) / 2) + ":" +
                           std::to_string(payload_bytes) + ":" + expected_md5;
  EXPECT_EQ(scalar(c, check), want);
  // And the same as PostgreSQL sees it over its own connection.
  EXPECT_EQ(PostgresServer::shared().query_value(check), want);
  exec_ok(c, "DROP TABLE " + t);
}

TEST_P(TrafficTest, CopyFromStdinErrorsLeaveTheConnectionUsable) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  const std::string t = table("copy_err");
  exec_ok(c, "CREATE TABLE " + t + " (id int, v text)");

  // Bad data in the middle: 22P02, nothing is inserted.
  PgResult res = exec(c, "COPY " + t + " FROM STDIN");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COPY_IN) << result_error(res.get());
  std::string rows;
  for (int i = 1; i <= 1000; ++i) rows += std::to_string(i) + "\tok\n";
  rows += "oops\tbad\n";
  for (int i = 1001; i <= 2000; ++i) rows += std::to_string(i) + "\tok\n";
  ASSERT_EQ(PQputCopyData(c, rows.data(), static_cast<int>(rows.size())), 1) << PQerrorMessage(c);
  ASSERT_EQ(PQputCopyEnd(c, nullptr), 1) << PQerrorMessage(c);
  res.reset(PQgetResult(c));
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(res.get()), "22P02") << result_error(res.get());
  EXPECT_EQ(PQgetResult(c), nullptr);
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM " + t), "0");

  // The client aborts the copy (CopyFail): 57014 with the client's message.
  res = exec(c, "COPY " + t + " FROM STDIN");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COPY_IN) << result_error(res.get());
  ASSERT_EQ(PQputCopyData(c, "1\tx\n", 4), 1);
  ASSERT_EQ(PQputCopyEnd(c, "client changed its mind"), 1);
  res.reset(PQgetResult(c));
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(res.get()), "57014") << result_error(res.get());
  EXPECT_NE(std::string(PQresultErrorMessage(res.get())).find("client changed its mind"), std::string::npos)
      << result_error(res.get());
  EXPECT_EQ(PQgetResult(c), nullptr);

  // A small good copy afterwards works.
  res = exec(c, "COPY " + t + " FROM STDIN");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COPY_IN) << result_error(res.get());
  ASSERT_EQ(PQputCopyData(c, "7\tseven\n8\t\\N\n", 13), 1);
  ASSERT_EQ(PQputCopyEnd(c, nullptr), 1);
  res.reset(PQgetResult(c));
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  EXPECT_STREQ(PQcmdStatus(res.get()), "COPY 2");
  EXPECT_EQ(PQgetResult(c), nullptr);
  EXPECT_EQ(scalar(c, "SELECT string_agg(id || '=' || coalesce(v, 'NULL'), ',' ORDER BY id) FROM " + t),
            "7=seven,8=NULL");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  exec_ok(c, "DROP TABLE " + t);
}

// Runs COPY ... TO STDOUT and returns everything received; ADD_FAILUREs on protocol trouble.
std::string copy_out(PGconn* c, const std::string& sql, std::string* tag) {
  PgResult res = exec(c, sql);
  if (PQresultStatus(res.get()) != PGRES_COPY_OUT) {
    ADD_FAILURE() << sql << " -> " << result_error(res.get());
    return {};
  }
  std::string out;
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(c, &buf, 0);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
      PQfreemem(buf);
      continue;
    }
    if (n == -2) ADD_FAILURE() << "PQgetCopyData: " << PQerrorMessage(c);
    break;
  }
  res.reset(PQgetResult(c));
  EXPECT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  if (tag != nullptr && res) *tag = PQcmdStatus(res.get());
  EXPECT_EQ(PQgetResult(c), nullptr);
  return out;
}

TEST_P(TrafficTest, CopyToStdoutOfMoreThanTenMegabytes) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  constexpr long kRows = 120000;
  const std::string sql = "COPY (SELECT i, repeat(chr(97 + i % 26), 100) FROM generate_series(1, " +
                          std::to_string(kRows) + ") i) TO STDOUT";
  std::string tag;
  const std::string got = copy_out(conn.get(), sql, &tag);
  EXPECT_EQ(tag, "COPY " + std::to_string(kRows));
  ASSERT_GE(got.size(), 10u << 20);

  std::string expected;
  expected.reserve(got.size());
  for (long i = 1; i <= kRows; ++i) {
    expected += std::to_string(i);
    expected += '\t';
    expected.append(100, static_cast<char>('a' + i % 26));
    expected += '\n';
  }
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected) << first_difference(got, expected);

  // Byte count and checksum equal to what a direct connection receives.
  PgConn direct;
  ASSERT_NO_FATAL_FAILURE(open_direct(direct));
  const std::string reference = copy_out(direct.get(), sql, nullptr);
  EXPECT_EQ(got.size(), reference.size());
  EXPECT_EQ(fnv1a(got), fnv1a(reference));

  // Binary COPY of a table, too.
  const std::string t = table("copy_out");
  exec_ok(conn.get(), "CREATE TABLE " + t + " AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 20000) i");
  const std::string bsql = "COPY " + t + " TO STDOUT (FORMAT binary)";
  const std::string bgot = copy_out(conn.get(), bsql, &tag);
  EXPECT_EQ(tag, "COPY 20000");
  const std::string bref = copy_out(direct.get(), bsql, nullptr);
  EXPECT_EQ(bgot.size(), bref.size());
  EXPECT_EQ(fnv1a(bgot), fnv1a(bref));
  EXPECT_EQ(bgot.substr(0, 11), std::string("PGCOPY\n\xff\r\n\0", 11));
  exec_ok(conn.get(), "DROP TABLE " + t);
  EXPECT_EQ(scalar(conn.get(), "SELECT 'after copy'"), "after copy");
}

// ---------------------------------------------------------------------------------------------
// Large results

TEST_P(TrafficTest, ResultOfMoreThanOneHundredThousandRows) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  constexpr int kRows = 150000;
  PgResult res = exec(conn.get(), "SELECT i, 'value-' || i, i % 7 = 0, md5(i::text) FROM generate_series(1, " +
                                      std::to_string(kRows) + ") i");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
  ASSERT_EQ(PQntuples(res.get()), kRows);
  ASSERT_EQ(PQnfields(res.get()), 4);
  EXPECT_STREQ(PQcmdStatus(res.get()), "SELECT 150000");
  long long sum = 0;
  int sevens = 0;
  std::string md5s;
  for (int r = 0; r < kRows; ++r) {
    const int i = r + 1;
    ASSERT_EQ(std::atoi(PQgetvalue(res.get(), r, 0)), i) << r;
    ASSERT_EQ(std::string(PQgetvalue(res.get(), r, 1)), "value-" + std::to_string(i)) << r;
    ASSERT_STREQ(PQgetvalue(res.get(), r, 2), i % 7 == 0 ? "t" : "f") << r;
    sum += i;
    sevens += (i % 7 == 0);
    md5s += PQgetvalue(res.get(), r, 3);
  }
  EXPECT_EQ(sum, 1LL * kRows * (kRows + 1) / 2);
  EXPECT_EQ(sevens, kRows / 7);
  // The md5 column, concatenated client-side, checked against the server's own computation.
  const std::string want = scalar(conn.get(), "SELECT md5(string_agg(md5(i::text), '' ORDER BY i)) FROM generate_series(1, " +
                                                  std::to_string(kRows) + ") i");
  const std::string md5_literal = "'" + md5s + "'";
  EXPECT_EQ(scalar(conn.get(), "SELECT md5(" + md5_literal + ")"), want);
}

TEST_P(TrafficTest, LargeSingleRowRoundTrips) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  constexpr std::size_t kSize = 20u << 20;

  // A server-generated 20 MB value.
  {
    PgResult res = exec(c, "SELECT repeat('ab', " + std::to_string(kSize / 2) + ")");
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
    ASSERT_EQ(static_cast<std::size_t>(PQgetlength(res.get(), 0, 0)), kSize);
    const char* v = PQgetvalue(res.get(), 0, 0);
    bool ok = true;
    for (std::size_t k = 0; k < kSize && ok; ++k) ok = v[k] == (k % 2 == 0 ? 'a' : 'b');
    EXPECT_TRUE(ok);
  }

  // A client-generated 20 MB text value up (as a parameter) and back down.
  std::string text(kSize, ' ');
  for (std::size_t k = 0; k < kSize; ++k) text[k] = static_cast<char>('a' + (k * 7 + k / 1000) % 26);
  const std::string t = table("big_row");
  exec_ok(c, "CREATE TABLE " + t + " (id int, v text, b bytea)");
  std::string blob(kSize, '\0');
  for (std::size_t k = 0; k < kSize; ++k) blob[k] = static_cast<char>((k * 131 + k / 4096) & 0xff);
  {
    const Oid types[2] = {25, 17};
    const char* values[2] = {text.data(), blob.data()};
    const int lengths[2] = {static_cast<int>(text.size()), static_cast<int>(blob.size())};
    const int formats[2] = {0, 1};
    PgResult res(PQexecParams(c, ("INSERT INTO " + t + " VALUES (1, $1, $2)").c_str(), 2, types, values, lengths,
                              formats, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  }
  EXPECT_EQ(scalar(c, "SELECT length(v) || ':' || length(b) FROM " + t),
            std::to_string(kSize) + ":" + std::to_string(kSize));
  {
    PgResult res(PQexecParams(c, ("SELECT v, b FROM " + t).c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
    ASSERT_EQ(PQntuples(res.get()), 1);
    const std::string v(PQgetvalue(res.get(), 0, 0), PQgetlength(res.get(), 0, 0));
    const std::string b(PQgetvalue(res.get(), 0, 1), PQgetlength(res.get(), 0, 1));
    EXPECT_TRUE(v == text) << first_difference(v, text);
    EXPECT_TRUE(b == blob) << "bytea differs: " << b.size() << " bytes vs " << blob.size();
  }
  // The text value through the simple protocol as well.
  {
    PgResult res = exec(c, "SELECT v FROM " + t);
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
    const std::string v(PQgetvalue(res.get(), 0, 0), PQgetlength(res.get(), 0, 0));
    EXPECT_TRUE(v == text) << first_difference(v, text);
  }
  EXPECT_EQ(scalar(c, "SELECT 'after big row'"), "after big row");
  exec_ok(c, "DROP TABLE " + t);
}

// ---------------------------------------------------------------------------------------------
// Notices and notifications

struct NoticeLog {
  std::vector<std::string> entries;  // "SEVERITY|SQLSTATE|message"
};

void record_notice(void* arg, const PGresult* res) {
  auto* log = static_cast<NoticeLog*>(arg);
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char* message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  log->entries.push_back(std::string(severity ? severity : "?") + "|" + (state ? state : "?") + "|" +
                         (message ? message : "?"));
}

TEST_P(TrafficTest, NoticesReachTheClient) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  NoticeLog log;
  PQsetNoticeReceiver(c, record_notice, &log);

  PgResult res = exec(c, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  EXPECT_STREQ(PQcmdStatus(res.get()), "DO");
  EXPECT_EQ(log.entries, (std::vector<std::string>{"NOTICE|00000|hello 42"}));

  // Several notices of different levels and a custom SQLSTATE, interleaved with rows.
  log.entries.clear();
  exec_ok(c, "SET client_min_messages = debug1");
  res = exec(c,
             "DO $$ BEGIN RAISE WARNING 'careful'; RAISE NOTICE 'n1'; "
             "RAISE NOTICE USING MESSAGE = 'custom', ERRCODE = 'P0042'; END $$");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
  exec_ok(c, "RESET client_min_messages");
  std::vector<std::string> got;
  for (const auto& e : log.entries) {
    if (e.rfind("DEBUG", 0) != 0) got.push_back(e);  // debug1 may add server debug lines; ignore those
  }
  EXPECT_EQ(got, (std::vector<std::string>{"WARNING|01000|careful", "NOTICE|00000|n1", "NOTICE|P0042|custom"}));

  // A notice from a function called per row.
  log.entries.clear();
  exec_ok(c, "CREATE FUNCTION pg_temp.noisy(i int) RETURNS int LANGUAGE plpgsql AS "
             "$$ BEGIN RAISE NOTICE 'row %', i; RETURN i; END $$");
  res = exec(c, "SELECT pg_temp.noisy(i) FROM generate_series(1, 3) i");
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());
  EXPECT_EQ(PQntuples(res.get()), 3);
  EXPECT_EQ(log.entries,
            (std::vector<std::string>{"NOTICE|00000|row 1", "NOTICE|00000|row 2", "NOTICE|00000|row 3"}));
}

TEST_P(TrafficTest, ListenNotifyDeliversPayloads) {
  PgConn listener, notifier_same_route, notifier_direct;
  ASSERT_NO_FATAL_FAILURE(open(listener));
  ASSERT_NO_FATAL_FAILURE(open(notifier_same_route));
  ASSERT_NO_FATAL_FAILURE(open_direct(notifier_direct));
  const std::string channel = unique_name("chan", route());
  exec_ok(listener.get(), "LISTEN " + channel);

  struct Case {
    PGconn* notifier;
    std::string payload;
  };
  const std::vector<Case> cases = {
      {notifier_direct.get(), "payload from a direct connection"},
      {notifier_same_route.get(), "payload through the same route: ünïcödé"},
      {notifier_direct.get(), ""},
  };
  for (const auto& tc : cases) {
    const std::string pid = scalar(tc.notifier, "SELECT pg_backend_pid()");
    const char* values[2] = {channel.c_str(), tc.payload.c_str()};
    PgResult res(PQexecParams(tc.notifier, "SELECT pg_notify($1, $2)", 2, nullptr, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << result_error(res.get());

    // The listener is idle: the notification arrives asynchronously on its socket.
    auto n = wait_notification(listener.get(), 20s);
    ASSERT_TRUE(n) << "no notification for payload \"" << tc.payload << "\": " << PQerrorMessage(listener.get());
    EXPECT_EQ(std::string(n->relname), channel);
    EXPECT_EQ(std::string(n->extra), tc.payload);
    EXPECT_EQ(std::to_string(n->be_pid), pid);
  }

  // NOTIFY inside a transaction is delivered at commit, and never if rolled back.
  exec_ok(notifier_direct.get(), "BEGIN");
  exec_ok(notifier_direct.get(), "NOTIFY " + channel + ", 'rolled back'");
  exec_ok(notifier_direct.get(), "ROLLBACK");
  exec_ok(notifier_direct.get(), "BEGIN");
  exec_ok(notifier_direct.get(), "NOTIFY " + channel + ", 'committed'");
  exec_ok(notifier_direct.get(), "COMMIT");
  {
    auto n = wait_notification(listener.get(), 20s);
    ASSERT_TRUE(n);
    EXPECT_EQ(std::string(n->extra), "committed");
  }

  // A notification that arrives while the listener runs a query comes along with its results.
  exec_ok(notifier_direct.get(), "NOTIFY " + channel + ", 'during query'");
  // It may reach the listener before or while libpq reads this query's results; either way
  // libpq queues it and it must be there afterwards.
  EXPECT_EQ(scalar(listener.get(), "SELECT 'busy'"), "busy");
  {
    auto n = wait_notification(listener.get(), 20s);
    ASSERT_TRUE(n);
    EXPECT_EQ(std::string(n->extra), "during query");
  }

  // The listener's own NOTIFY comes back to it.
  exec_ok(listener.get(), "NOTIFY " + channel + ", 'self'");
  {
    auto n = wait_notification(listener.get(), 20s);
    ASSERT_TRUE(n);
    EXPECT_EQ(std::string(n->extra), "self");
  }

  // After UNLISTEN nothing more arrives; a later query proves the stream is in sync.
  exec_ok(listener.get(), "UNLISTEN " + channel);
  exec_ok(notifier_direct.get(), "NOTIFY " + channel + ", 'not for you'");
  EXPECT_EQ(scalar(listener.get(), "SELECT 'synced'"), "synced");
  PQconsumeInput(listener.get());
  std::unique_ptr<PGnotify, void (*)(void*)> stray(PQnotifies(listener.get()), PQfreemem);
  EXPECT_FALSE(stray) << "unexpected notification: " << stray->extra;
}

// ---------------------------------------------------------------------------------------------
// Errors inside transactions

TEST_P(TrafficTest, ErrorInsideTransactionThenRollback) {
  PgConn conn;
  ASSERT_NO_FATAL_FAILURE(open(conn));
  PGconn* c = conn.get();
  const std::string t = table("txn");
  exec_ok(c, "CREATE TABLE " + t + " (id int)");

  for (const std::string& bad : {"SELECT * FROM no_such_table_" + t, std::string("SELECT 1/0")}) {
    const std::string want_state = bad.rfind("SELECT 1/0", 0) == 0 ? "22012" : "42P01";
    PgResult res = exec(c, "BEGIN");
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
    EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INTRANS);
    exec_ok(c, "INSERT INTO " + t + " VALUES (1)");

    res = exec(c, bad);
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
    EXPECT_EQ(sqlstate(res.get()), want_state) << result_error(res.get());
    EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INERROR);

    res = exec(c, "SELECT 1");
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_FATAL_ERROR);
    EXPECT_EQ(sqlstate(res.get()), "25P02") << result_error(res.get());
    EXPECT_NE(std::string(PQresultErrorMessage(res.get())).find("current transaction is aborted"),
              std::string::npos)
        << result_error(res.get());
    EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INERROR);

    // Extended protocol inside the failed transaction gets the same answer.
    res.reset(PQexecParams(c, "SELECT $1::int", 1, nullptr, std::array<const char*, 1>{"5"}.data(), nullptr,
                           nullptr, 0));
    EXPECT_EQ(sqlstate(res.get()), "25P02") << result_error(res.get());

    res = exec(c, "ROLLBACK");
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
    EXPECT_STREQ(PQcmdStatus(res.get()), "ROLLBACK");
    EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
    EXPECT_EQ(scalar(c, "SELECT count(*) FROM " + t), "0");
    EXPECT_EQ(scalar(c, "SELECT 'works again'"), "works again");
  }

  // COMMIT of a failed transaction reports ROLLBACK; a savepoint recovers from an error.
  exec_ok(c, "BEGIN");
  exec(c, "SELECT 1/0");
  {
    PgResult res = exec(c, "COMMIT");
    EXPECT_EQ(PQresultStatus(res.get()), PGRES_COMMAND_OK) << result_error(res.get());
    EXPECT_STREQ(PQcmdStatus(res.get()), "ROLLBACK");
  }
  exec_ok(c, "BEGIN");
  exec_ok(c, "INSERT INTO " + t + " VALUES (1)");
  exec_ok(c, "SAVEPOINT s1");
  {
    PgResult res = exec(c, "INSERT INTO " + t + " VALUES ('x')");
    EXPECT_EQ(sqlstate(res.get()), "22P02") << result_error(res.get());
  }
  exec_ok(c, "ROLLBACK TO SAVEPOINT s1");
  exec_ok(c, "INSERT INTO " + t + " VALUES (2)");
  exec_ok(c, "COMMIT");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  EXPECT_EQ(scalar(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM " + t), "1,2");
  exec_ok(c, "DROP TABLE " + t);
}

INSTANTIATE_TEST_SUITE_P(Routes, TrafficTest, ::testing::Values(Route::kDirect, Route::kSluice),
                         [](const ::testing::TestParamInfo<Route>& info) { return route_name(info.param); });

}  // namespace
}  // namespace sluice::test
