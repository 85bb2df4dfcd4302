// The slow-query log through a running Sluice: statements at or over the
// threshold land in it (simple and extended protocol, session and transaction
// mode) with their normalized text, fingerprint, command, rows, SQLSTATE and the
// time spent waiting for a server connection; faster ones do not.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kDb = "sluice_test";
constexpr const char* kUser = "app";
constexpr const char* kPassword = "app_pw";

// The suite's variants: a pool mode, and for "transaction_one_worker" Sluice with
// workers = 1 (an io_context, pools and a statistics shard that take no locks; the
// console reads the shard on the thread that writes it) and the server named by a
// host name ("localhost", looked up off that thread).
std::string mode_of(const std::string& variant) { return variant == "session" ? "session" : "transaction"; }

std::string config(const std::string& variant, int pool_size) {
  std::string toml = variant == "transaction_one_worker" ? with_server_host(default_config(pool_size), "localhost")
                                                        : default_config(pool_size);
  const std::string from = "mode = \"session\"";
  toml.replace(toml.find(from), from.size(), "mode = \"" + mode_of(variant) + "\"");
  std::string sluice_keys = "[sluice]\nadmin_users = [\"postgres\"]\nstats_users = [\"md5user\"]\n";
  if (variant == "transaction_one_worker") sluice_keys += "workers = 1\n";
  toml.replace(toml.find("[sluice]\n"), 9, sluice_keys);
  return toml + "\n[slow_query]\nthreshold = \"200ms\"\nlog = \"{dir}/slow.jsonl\"\n";
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The string value of "key" in a JSON line ("" when absent or null).
std::string field(const std::string& line, const std::string& key) {
  std::smatch m;
  if (std::regex_search(line, m, std::regex("\"" + key + "\":\"((?:[^\"\\\\]|\\\\.)*)\""))) return m[1].str();
  if (std::regex_search(line, m, std::regex("\"" + key + "\":([-0-9.]+)"))) return m[1].str();
  return "";
}

class SlowQueryTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    PostgresServer::shared();
    sluice_ = std::make_unique<SluiceProcess>(config(GetParam(), 1));
    log_path_ = sluice_->dir() + "/slow.jsonl";
    if (GetParam() == "transaction_one_worker") {
      // (Logged just after the listeners open: waited for, not assumed.)
      ASSERT_TRUE(wait_for([&] { return sluice_->log().find("running with 1 worker thread(s)") != std::string::npos; }))
          << sluice_->log();
    }
  }
  void TearDown() override {
    if (HasFailure() && sluice_) std::printf("---- Sluice log ----\n%s\n", tail_lines(sluice_->log(), 40).c_str());
  }
  PgConn client() {
    PgConn c = connect(sluice_->conninfo(kDb, kUser, kPassword, "application_name=slowtest"));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  // Waits (bounded) for the log to hold `count` lines and returns them.
  std::vector<std::string> lines(std::size_t count) {
    std::vector<std::string> got;
    wait_for([&] {
      got = read_lines(log_path_);
      return got.size() >= count;
    });
    return got;
  }
  static void run(PGconn* c, const char* sql) {
    PgResult r(PQexec(c, sql));
    ASSERT_TRUE(PQresultStatus(r.get()) == PGRES_TUPLES_OK || PQresultStatus(r.get()) == PGRES_COMMAND_OK)
        << PQresultErrorMessage(r.get());
  }

  std::unique_ptr<SluiceProcess> sluice_;
  std::string log_path_;
};

TEST_P(SlowQueryTest, StatementsOverTheThresholdAreLoggedNormalizedAndFastOnesAreNot) {
  PgConn c = client();
  run(c.get(), "SELECT 1");
  run(c.get(), "SELECT pg_sleep(0.3), 'secret-literal' AS s");
  run(c.get(), "SELECT 2");
  run(c.get(), "SELECT pg_sleep(0.25), 'another-literal' AS s");
  const auto got = lines(2);
  ASSERT_EQ(got.size(), 2u);
  for (const auto& line : got) {
    EXPECT_EQ(line.find("literal"), std::string::npos) << "a literal reached the log: " << line;
    EXPECT_EQ(field(line, "query"), "SELECT pg_sleep($1), $2 AS s") << line;
    EXPECT_EQ(field(line, "protocol"), "simple");
    EXPECT_EQ(field(line, "command"), "SELECT");
    EXPECT_EQ(field(line, "rows"), "1");
    EXPECT_EQ(field(line, "database"), kDb);
    EXPECT_EQ(field(line, "user"), kUser);
    EXPECT_EQ(field(line, "application_name"), "slowtest");
    EXPECT_NE(line.find("\"sqlstate\":null"), std::string::npos) << line;
    EXPECT_GE(std::stod(field(line, "duration_ms")), 200.0) << line;
    EXPECT_FALSE(field(line, "backend_pid").empty()) << line;
    EXPECT_TRUE(std::regex_search(field(line, "ts"), std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$)")))
        << line;
  }
  // Literals differ, shape is the same: one fingerprint.
  EXPECT_EQ(field(got[0], "fingerprint"), field(got[1], "fingerprint"));
  EXPECT_EQ(field(got[0], "fingerprint").size(), 16u);
}

TEST_P(SlowQueryTest, AMultiStatementQueryIsOneRecord) {
  // PostgreSQL sends the replies of all statements of one Query together at its
  // end, so their times cannot be told apart on the wire: one record, the whole
  // text, command and rows of the last statement.
  PgConn c = client();
  run(c.get(), "SELECT pg_sleep(0.25) AS a; SELECT 2 AS b FROM generate_series(1, 3)");
  const auto got = lines(1);
  ASSERT_EQ(got.size(), 1u) << ::testing::PrintToString(got);
  EXPECT_EQ(field(got[0], "query"), "SELECT pg_sleep($1) AS a; SELECT $2 AS b FROM generate_series($3, $4)");
  EXPECT_EQ(field(got[0], "rows"), "3");
}

TEST_P(SlowQueryTest, ExtendedProtocolStatementsAreAttributedToTheirText) {
  PgConn c = client();
  const char* values[] = {"0.3"};
  PgResult r(PQexecParams(c.get(), "SELECT pg_sleep($1::float8) AS slept", 1, nullptr, values, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  PgResult prepared(PQprepare(c.get(), "nap", "SELECT pg_sleep($1::float8), 42", 1, nullptr));
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK);
  PgResult fast(PQexecPrepared(c.get(), "nap", 1, std::vector<const char*>{"0"}.data(), nullptr, nullptr, 0));
  PgResult slow(PQexecPrepared(c.get(), "nap", 1, values, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(slow.get()), PGRES_TUPLES_OK);
  const auto got = lines(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(field(got[0], "query"), "SELECT pg_sleep($1::float8) AS slept");
  EXPECT_EQ(field(got[0], "protocol"), "extended");
  EXPECT_EQ(field(got[1], "query"), "SELECT pg_sleep($1::float8), $2");
  EXPECT_EQ(field(got[1], "protocol"), "extended");
  EXPECT_EQ(field(got[1], "rows"), "1");
}

TEST_P(SlowQueryTest, ErrorsCarryTheirSqlstate) {
  PgConn c = client();
  PgResult r(PQexec(c.get(),
                    "DO $$BEGIN PERFORM pg_sleep(0.3); RAISE EXCEPTION 'boom' USING ERRCODE = '22012'; END$$"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  const auto got = lines(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(field(got[0], "sqlstate"), "22012") << got[0];
  EXPECT_NE(got[0].find("\"command\":null"), std::string::npos) << got[0];
}

TEST_P(SlowQueryTest, TimeWaitingForAServerConnectionIsReportedApart) {
  // Pool of 1: `holder` keeps the only server connection inside a transaction.
  PgConn holder = client();
  run(holder.get(), "BEGIN");
  run(holder.get(), "SELECT 1");
  PgConn waiter = client();
  const bool transaction_mode = mode_of(GetParam()) == "transaction";
  // (Session mode: holder keeps its connection until it leaves.)
  ASSERT_EQ(PQsendQuery(waiter.get(), "SELECT 'waited'"), 1);
  // The waiter is held for at least this long (a lower bound we impose, not a guess).
  std::this_thread::sleep_for(400ms);
  if (transaction_mode) {
    run(holder.get(), "COMMIT");
  } else {
    holder.reset();
  }
  PgResult r(PQgetResult(waiter.get()));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  while (PgResult(PQgetResult(waiter.get()))) {
  }
  const auto got = lines(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(field(got[0], "query"), "SELECT $1");
  EXPECT_GE(std::stod(field(got[0], "wait_ms")), 350.0) << got[0];
  EXPECT_GE(std::stod(field(got[0], "duration_ms")), std::stod(field(got[0], "wait_ms"))) << got[0];
  EXPECT_LT(std::stod(field(got[0], "server_ms")), std::stod(field(got[0], "duration_ms"))) << got[0];
}

TEST_P(SlowQueryTest, AWaitForAServerIsNotChargedToALaterStatement) {
  if (mode_of(GetParam()) != "session") GTEST_SKIP() << "transaction mode times every attach afresh";
  // Session mode: the waiter's first request gets it a server, after waiting for
  // `holder`'s. That request has no statement to time (Parse, Describe, Sync), so
  // its wait belongs to nobody: the waiter's later statement, run on the server it
  // already holds, waited for nothing.
  PgConn holder = client();
  run(holder.get(), "BEGIN");
  run(holder.get(), "SELECT 1");
  PgConn waiter = client();
  ASSERT_EQ(PQsendPrepare(waiter.get(), "later", "SELECT pg_sleep(0.25), $1::int AS n", 1, nullptr), 1);
  std::this_thread::sleep_for(400ms);  // the waiter waits at least this long (imposed, not guessed)
  holder.reset();
  {
    PgResult prepared(PQgetResult(waiter.get()));
    ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(prepared.get());
    while (PgResult(PQgetResult(waiter.get()))) {
    }
  }
  const char* values[] = {"7"};
  PgResult r(PQexecPrepared(waiter.get(), "later", 1, values, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  const auto got = lines(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(field(got[0], "protocol"), "extended") << got[0];
  EXPECT_EQ(std::stod(field(got[0], "wait_ms")), 0.0) << got[0];
}

// Rows of an admin console answer as "col=value|col=value" strings.
std::vector<std::string> console_rows(PGconn* c, const char* sql) {
  PgResult r(PQexec(c, sql));
  std::vector<std::string> rows;
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    rows.push_back(std::string("ERROR ") + (state ? state : "?"));
    return rows;
  }
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::string row;
    for (int j = 0; j < PQnfields(r.get()); ++j) {
      row += (j ? "|" : "") + std::string(PQfname(r.get(), j)) + "=" +
             (PQgetisnull(r.get(), i, j) ? "NULL" : PQgetvalue(r.get(), i, j));
    }
    rows.push_back(row);
  }
  return rows;
}

TEST_P(SlowQueryTest, AdminConsoleShowsQueryShapesAndSlowStatements) {
  PgConn c = client();
  for (int i = 0; i < 5; ++i) run(c.get(), ("SELECT " + std::to_string(i) + " AS n").c_str());
  run(c.get(), "SELECT pg_sleep(0.25), 1");
  lines(1);
  for (const char* db : {"sluice", "pgbouncer"}) {
    PgConn admin = connect(sluice_->conninfo(db, "postgres", "postgres_pw"));
    ASSERT_EQ(PQstatus(admin.get()), CONNECTION_OK) << PQerrorMessage(admin.get());
    const auto queries = console_rows(admin.get(), "SHOW QUERIES");
    std::string select_n, sleep;
    for (const auto& row : queries) {
      if (row.find("|query=SELECT $1 AS n|") != std::string::npos) select_n = row;
      if (row.find("|query=SELECT pg_sleep($1), $2|") != std::string::npos) sleep = row;
    }
    ASSERT_FALSE(select_n.empty()) << ::testing::PrintToString(queries);
    EXPECT_NE(select_n.find("|calls=5|"), std::string::npos) << select_n;
    EXPECT_NE(select_n.find("|rows=5|"), std::string::npos) << select_n;
    EXPECT_NE(select_n.find("database=sluice_test|user=app|"), std::string::npos) << select_n;
    ASSERT_FALSE(sleep.empty());
    EXPECT_NE(sleep.find("|calls=1|"), std::string::npos) << sleep;
    const auto slow = console_rows(admin.get(), "show slow;");
    ASSERT_EQ(slow.size(), 1u) << ::testing::PrintToString(slow);
    EXPECT_NE(slow[0].find("|query=SELECT pg_sleep($1), $2|"), std::string::npos) << slow[0];
    EXPECT_EQ(console_rows(admin.get(), "SHOW NONSENSE"), std::vector<std::string>{"ERROR 42601"});
    EXPECT_EQ(console_rows(admin.get(), "SHOW VERSION").size(), 1u);
  }
  // stats_users may read but not act; anyone else may not connect.
  PgConn monitor = connect(sluice_->conninfo("sluice", "md5user", "md5_pw"));
  ASSERT_EQ(PQstatus(monitor.get()), CONNECTION_OK) << PQerrorMessage(monitor.get());
  EXPECT_EQ(console_rows(monitor.get(), "SHOW SLOW").size(), 1u);
  EXPECT_EQ(console_rows(monitor.get(), "SHUTDOWN"), std::vector<std::string>{"ERROR 42501"});
  PgConn stranger = connect(sluice_->conninfo("sluice", kUser, kPassword));
  EXPECT_NE(PQstatus(stranger.get()), CONNECTION_OK);
  EXPECT_NE(std::string(PQerrorMessage(stranger.get())).find("permission denied for the admin console"),
            std::string::npos)
      << PQerrorMessage(stranger.get());
}

// A session keeps the shape of each statement it prepared, so that executions need
// no fingerprint lookup: a text that changes under the same name (the unnamed
// statement, re-parsed by every PQexecParams) must still be counted as itself.
TEST_P(SlowQueryTest, ExtendedStatementsAreCountedUnderTheirOwnShapeWhenTheTextChanges) {
  PgConn c = client();
  auto exec_params = [&](const char* sql, const char* value) {
    const char* values[] = {value};
    PgResult r(PQexecParams(c.get(), sql, 1, nullptr, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  };
  const char* a = "SELECT $1::int AS shape_a";
  const char* b = "SELECT $1::int + 1 AS shape_b";
  for (int i = 0; i < 3; ++i) exec_params(a, "1");
  for (int i = 0; i < 2; ++i) exec_params(b, "2");
  exec_params(a, "3");
  PgResult prepared(PQprepare(c.get(), "named_c", "SELECT $1::int * 2 AS shape_c", 1, nullptr));
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(prepared.get());
  for (int i = 0; i < 3; ++i) {
    const char* values[] = {"4"};
    PgResult r(PQexecPrepared(c.get(), "named_c", 1, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  PgConn admin = connect(sluice_->conninfo("sluice", "postgres", "postgres_pw"));
  ASSERT_EQ(PQstatus(admin.get()), CONNECTION_OK) << PQerrorMessage(admin.get());
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"|query=SELECT $1::int AS shape_a|", "|calls=4|"},
      {"|query=SELECT $1::int + $2 AS shape_b|", "|calls=2|"},
      {"|query=SELECT $1::int * $2 AS shape_c|", "|calls=3|"}};
  std::vector<std::string> queries;
  // The first execution of a new text is recorded by the shape service's thread.
  const bool all_counted = wait_for([&] {
    queries = console_rows(admin.get(), "SHOW QUERIES");
    for (const auto& [shape, calls] : expected) {
      const auto row = std::find_if(queries.begin(), queries.end(),
                                    [&](const std::string& r) { return r.find(shape) != std::string::npos; });
      if (row == queries.end() || row->find(calls) == std::string::npos) return false;
    }
    return true;
  });
  EXPECT_TRUE(all_counted) << ::testing::PrintToString(queries);
}

TEST_P(SlowQueryTest, RunawayStatementIsVisibleWhileItRuns) {
  PgConn c = client();
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(60), 'hidden literal'"), 1);
  PgConn admin = connect(sluice_->conninfo("sluice", "postgres", "postgres_pw"));
  ASSERT_EQ(PQstatus(admin.get()), CONNECTION_OK) << PQerrorMessage(admin.get());
  std::vector<std::string> rows;
  // Seen as slow while it still runs (threshold 200ms), long before it could finish.
  const bool seen = wait_for([&] {
    rows = console_rows(admin.get(), "SHOW ACTIVE");
    return rows.size() == 1 && rows[0].find("|slow=yes|") != std::string::npos;
  });
  ASSERT_TRUE(seen) << ::testing::PrintToString(rows);
  EXPECT_NE(rows[0].find("query=SELECT pg_sleep($1), $2"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find("application_name=slowtest|"), std::string::npos) << rows[0];
  EXPECT_EQ(rows[0].find("hidden literal"), std::string::npos) << rows[0];
  // Stop it; afterwards nothing is active.
  char error[256];
  std::unique_ptr<PGcancel, void (*)(PGcancel*)> cancel(PQgetCancel(c.get()), PQfreeCancel);
  ASSERT_EQ(PQcancel(cancel.get(), error, sizeof error), 1) << error;
  while (PgResult r{PQgetResult(c.get())}) {
  }
  EXPECT_TRUE(wait_for([&] { return console_rows(admin.get(), "SHOW ACTIVE").empty(); }));
}

INSTANTIATE_TEST_SUITE_P(Modes, SlowQueryTest, ::testing::Values("session", "transaction", "transaction_one_worker"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace sluice::test
