// Protocol-level prepared statements through Sluice in transaction and statement
// mode: clients' statement names map to shared server-side statements, a server
// that lacks one gets it prepared first, Close and SQL DEALLOCATE are answered by
// Sluice, and everything a client sees is what PostgreSQL itself would show it.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kDb = "sluice_test";
constexpr const char* kUser = "app";
constexpr const char* kPassword = "app_pw";

PostgresServer& pg() { return PostgresServer::shared(); }

std::string config(const std::string& mode, int pool_size, int max_prepared = 200) {
  std::string toml = default_config(pool_size);
  const std::string from = "mode = \"session\"";
  toml.replace(toml.find(from), from.size(),
               "mode = \"" + mode + "\"\nmax_prepared_statements = " + std::to_string(max_prepared));
  return toml;
}

class PreparedTest : public ::testing::Test {
 protected:
  void start(const std::string& mode, int pool_size, int max_prepared = 200) {
    pg();
    sluice_ = std::make_unique<SluiceProcess>(config(mode, pool_size, max_prepared));
  }
  void TearDown() override {
    if (HasFailure() && sluice_) {
      std::printf("---- last lines of the Sluice log ----\n%s\n", tail_lines(sluice_->log(), 60).c_str());
    }
  }
  PgConn client() {
    PgConn c = connect(sluice_->conninfo(kDb, kUser, kPassword));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }

  std::unique_ptr<SluiceProcess> sluice_;
};

// The single value of a prepared statement's result, or "ERROR <sqlstate>".
std::string exec_prepared(PGconn* c, const char* name, std::vector<std::string> params = {}) {
  std::vector<const char*> values;
  for (auto& p : params) values.push_back(p.c_str());
  PgResult r(PQexecPrepared(c, name, static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) == 1) return PQgetvalue(r.get(), 0, 0);
  if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) return "OK";
  const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
  return std::string("ERROR ") + (state ? state : "?") + " " + PQresultErrorMessage(r.get());
}

std::string prepare(PGconn* c, const char* name, const char* sql, int nparams = 0) {
  PgResult r(PQprepare(c, name, sql, nparams, nullptr));
  if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) return "OK";
  const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
  return std::string("ERROR ") + (state ? state : "?");
}

std::string value(PGconn* c, const char* sql) {
  PgResult r(PQexec(c, sql));
  if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) == 1) return PQgetvalue(r.get(), 0, 0);
  if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) return PQcmdStatus(r.get());
  const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
  return std::string("ERROR ") + (state ? state : "?");
}

TEST_F(PreparedTest, SameNameDifferentTextsOnOneServerStayApart) {
  start("transaction", 1);
  PgConn a = client();
  PgConn b = client();
  ASSERT_EQ(prepare(a.get(), "s", "SELECT 'from a'::text"), "OK");
  ASSERT_EQ(prepare(b.get(), "s", "SELECT 'from b'::text || $1", 1), "OK");
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(exec_prepared(a.get(), "s"), "from a");
    EXPECT_EQ(exec_prepared(b.get(), "s", {std::to_string(i)}), "from b" + std::to_string(i));
  }
  // One backend (pool of 1) served both.
  EXPECT_EQ(value(a.get(), "SELECT pg_backend_pid()"), value(b.get(), "SELECT pg_backend_pid()"));
  // The server holds each text once, under Sluice's name, not the clients'.
  EXPECT_EQ(value(a.get(), "SELECT count(*) FROM pg_prepared_statements WHERE name = 's'"), "0");
  EXPECT_EQ(value(a.get(), "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT ''from %'"),
            "2");
}

TEST_F(PreparedTest, ClientsPreparingTheSameTextShareOneServerStatement) {
  start("transaction", 1);
  std::vector<PgConn> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(client());
    ASSERT_EQ(prepare(clients.back().get(), ("q" + std::to_string(i)).c_str(), "SELECT 40 + $1::int", 1), "OK");
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(exec_prepared(clients[i].get(), ("q" + std::to_string(i)).c_str(), {"2"}), "42");
  EXPECT_EQ(value(clients[0].get(), "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT 40 + $1::int'"),
            "1");
}

TEST_F(PreparedTest, ServerWithoutTheStatementGetsItPreparedFirst) {
  start("transaction", 2);
  PgConn a = client();
  PgConn holder = client();
  ASSERT_EQ(prepare(a.get(), "add", "SELECT $1::int + $2::int", 2), "OK");
  const std::string first_pid = value(a.get(), "SELECT pg_backend_pid()");
  // The most recently used idle connection is handed out first: `holder` takes the one
  // `a` just used and keeps it inside a transaction, so `a` must move to the other.
  ASSERT_EQ(value(holder.get(), "BEGIN"), "BEGIN");
  ASSERT_EQ(value(holder.get(), "SELECT pg_backend_pid()"), first_pid);
  EXPECT_NE(value(a.get(), "SELECT pg_backend_pid()"), first_pid);
  EXPECT_EQ(exec_prepared(a.get(), "add", {"40", "2"}), "42");
  // Describe on a server that lacks it works too.
  PgResult described(PQdescribePrepared(a.get(), "add"));
  ASSERT_EQ(PQresultStatus(described.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(described.get());
  EXPECT_EQ(PQnparams(described.get()), 2);
  EXPECT_EQ(PQnfields(described.get()), 1);
  ASSERT_EQ(value(holder.get(), "COMMIT"), "COMMIT");
  EXPECT_EQ(exec_prepared(a.get(), "add", {"1", "2"}), "3");
}

TEST_F(PreparedTest, EvictedStatementStillRunsForItsClient) {
  start("transaction", 1, /*max_prepared=*/2);
  PgConn c = client();
  for (int i = 0; i < 5; ++i) {
    const std::string sql = "SELECT " + std::to_string(i) + " + $1::int";
    ASSERT_EQ(prepare(c.get(), ("e" + std::to_string(i)).c_str(), sql.c_str(), 1), "OK");
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(exec_prepared(c.get(), ("e" + std::to_string(i)).c_str(), {"100"}), std::to_string(100 + i));
    }
  }
  // The server never holds more than the cap.
  const int held = std::stoi(value(c.get(), "SELECT count(*) FROM pg_prepared_statements"));
  EXPECT_LE(held, 2);
}

TEST_F(PreparedTest, SqlDeallocateOfAProtocolStatementBehavesAsInPostgres) {
  start("transaction", 1);
  PgConn c = client();
  ASSERT_EQ(prepare(c.get(), "_pg3_0", "SELECT 1"), "OK");
  EXPECT_EQ(exec_prepared(c.get(), "_pg3_0"), "1");
  // psycopg 3 evicts its cache this way.
  EXPECT_EQ(value(c.get(), "DEALLOCATE _pg3_0"), "DEALLOCATE");
  EXPECT_EQ(exec_prepared(c.get(), "_pg3_0").substr(0, 11), "ERROR 26000");
  // The name is free again, for another text.
  ASSERT_EQ(prepare(c.get(), "_pg3_0", "SELECT 2"), "OK");
  EXPECT_EQ(exec_prepared(c.get(), "_pg3_0"), "2");
  // Inside a transaction block, and quoted.
  ASSERT_EQ(value(c.get(), "BEGIN"), "BEGIN");
  EXPECT_EQ(value(c.get(), "deallocate prepare \"_pg3_0\" ;"), "DEALLOCATE");
  EXPECT_EQ(value(c.get(), "SELECT 'still in the transaction'"), "still in the transaction");
  ASSERT_EQ(value(c.get(), "COMMIT"), "COMMIT");
  EXPECT_EQ(exec_prepared(c.get(), "_pg3_0").substr(0, 11), "ERROR 26000");
  // DEALLOCATE of a name nobody prepared is PostgreSQL's error.
  EXPECT_EQ(value(c.get(), "DEALLOCATE nosuch"), "ERROR 26000");
}

TEST_F(PreparedTest, DeallocateAllAndDiscardAllForgetTheClientsStatementsOnly) {
  start("transaction", 1);
  PgConn a = client();
  PgConn b = client();
  ASSERT_EQ(prepare(a.get(), "mine", "SELECT 'a'"), "OK");
  ASSERT_EQ(prepare(b.get(), "theirs", "SELECT 'b'"), "OK");
  EXPECT_EQ(value(a.get(), "DEALLOCATE ALL"), "DEALLOCATE ALL");
  EXPECT_EQ(exec_prepared(a.get(), "mine").substr(0, 11), "ERROR 26000");
  // b's statement is re-prepared on the server for it.
  EXPECT_EQ(exec_prepared(b.get(), "theirs"), "b");
  ASSERT_EQ(prepare(a.get(), "mine", "SELECT 'a again'"), "OK");
  EXPECT_EQ(value(a.get(), "DISCARD ALL"), "DISCARD ALL");
  EXPECT_EQ(exec_prepared(a.get(), "mine").substr(0, 11), "ERROR 26000");
  EXPECT_EQ(exec_prepared(b.get(), "theirs"), "b");
}

TEST_F(PreparedTest, FailedParseLeavesTheNameFree) {
  start("transaction", 1);
  PgConn c = client();
  EXPECT_EQ(prepare(c.get(), "broken", "SELEC 1"), "ERROR 42601");
  EXPECT_EQ(exec_prepared(c.get(), "broken").substr(0, 11), "ERROR 26000");
  ASSERT_EQ(prepare(c.get(), "broken", "SELECT 'fixed'"), "OK");
  EXPECT_EQ(exec_prepared(c.get(), "broken"), "fixed");
  // A statement on a table that does not exist yet fails, then works once it does.
  EXPECT_EQ(prepare(c.get(), "later", "SELECT count(*) FROM prepared_test_later"), "ERROR 42P01");
  pg().exec("DROP TABLE IF EXISTS prepared_test_later; CREATE TABLE prepared_test_later (x int)");
  pg().exec("GRANT ALL ON prepared_test_later TO app");
  ASSERT_EQ(prepare(c.get(), "later", "SELECT count(*) FROM prepared_test_later"), "OK");
  EXPECT_EQ(exec_prepared(c.get(), "later"), "0");
  pg().exec("DROP TABLE prepared_test_later");
}

TEST_F(PreparedTest, RedefiningANameIsRefusedAsInPostgres) {
  start("transaction", 2);
  PgConn c = client();
  PgConn holder = client();
  ASSERT_EQ(prepare(c.get(), "dup", "SELECT 'first'"), "OK");
  EXPECT_EQ(prepare(c.get(), "dup", "SELECT 'second'"), "ERROR 42P05");
  EXPECT_EQ(exec_prepared(c.get(), "dup"), "first");
  // Also on a server that does not hold the statement yet (see ServerWithoutTheStatement...).
  ASSERT_EQ(value(holder.get(), "BEGIN"), "BEGIN");
  EXPECT_EQ(prepare(c.get(), "dup", "SELECT 'third'"), "ERROR 42P05");
  EXPECT_EQ(exec_prepared(c.get(), "dup"), "first");
  ASSERT_EQ(value(holder.get(), "COMMIT"), "COMMIT");
}

// Columns of a prepared statement's one-row result, as "v1,v2,...", or "ERROR <sqlstate>".
std::string row_of(PGconn* c, const char* name) {
  PgResult r(PQexecPrepared(c, name, 0, nullptr, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    return std::string("ERROR ") + (state ? state : "?");
  }
  std::string out;
  for (int i = 0; i < PQnfields(r.get()); ++i) out += (i ? "," : "") + std::string(PQgetvalue(r.get(), 0, i));
  return out;
}

TEST_F(PreparedTest, StalePlanOfAStatementSharedWithAnotherClientIsPreparedAgain) {
  pg().exec("DROP TABLE IF EXISTS plan_t; CREATE TABLE plan_t (a int); INSERT INTO plan_t VALUES (1); "
            "GRANT ALL ON plan_t TO app");
  start("transaction", 1);
  PgConn a = client();
  ASSERT_EQ(prepare(a.get(), "s", "SELECT * FROM plan_t"), "OK");
  ASSERT_EQ(row_of(a.get(), "s"), "1");
  pg().exec("ALTER TABLE plan_t ADD COLUMN b int DEFAULT 7");
  // b prepares the same text after the DDL: directly, that works. Through Sluice the
  // server already holds a's statement, whose plan no longer fits.
  PgConn b = client();
  ASSERT_EQ(prepare(b.get(), "t", "SELECT * FROM plan_t"), "OK");
  EXPECT_EQ(row_of(b.get(), "t"), "1,7");
  EXPECT_EQ(row_of(b.get(), "t"), "1,7");

  // Parse, Bind, Describe, Execute and Sync in one batch (pipeline mode).
  pg().exec("ALTER TABLE plan_t ADD COLUMN c text DEFAULT 'x'");
  PgConn c = client();
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  ASSERT_EQ(PQsendPrepare(c.get(), "u", "SELECT * FROM plan_t", 0, nullptr), 1);
  ASSERT_EQ(PQsendQueryPrepared(c.get(), "u", 0, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  std::vector<std::string> seen;
  for (int results = 0; results < 3;) {
    PgResult r(PQgetResult(c.get()));
    if (!r) continue;
    ++results;
    const auto status = PQresultStatus(r.get());
    if (status == PGRES_TUPLES_OK) {
      std::string row;
      for (int i = 0; i < PQnfields(r.get()); ++i) row += (i ? "," : "") + std::string(PQgetvalue(r.get(), 0, i));
      seen.push_back(row);
    } else {
      seen.push_back(PQresStatus(status));
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"PGRES_COMMAND_OK", "1,7,x", "PGRES_PIPELINE_SYNC"}));
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);

  // Inside a transaction block the failed Bind has already aborted the transaction,
  // so Sluice passes PostgreSQL's error on (documented).
  pg().exec("ALTER TABLE plan_t ADD COLUMN d int DEFAULT 9");
  PgConn d = client();
  ASSERT_EQ(prepare(d.get(), "v", "SELECT * FROM plan_t"), "OK");
  ASSERT_EQ(value(d.get(), "BEGIN"), "BEGIN");
  EXPECT_EQ(row_of(d.get(), "v"), "ERROR 0A000");
  ASSERT_EQ(value(d.get(), "ROLLBACK"), "ROLLBACK");
  EXPECT_EQ(row_of(d.get(), "v"), "1,7,x,9");
  pg().exec("DROP TABLE plan_t");
}

TEST_F(PreparedTest, StatementsDroppedByCommandsSluiceDoesNotAnswerAreNoticed) {
  start("transaction", 1);
  PgConn a = client();
  PgConn b = client();
  ASSERT_EQ(prepare(a.get(), "s", "SELECT 42"), "OK");
  // DEALLOCATE ALL through the extended protocol (as Npgsql sends it), and inside a
  // multi-statement Query: the server's statements are gone either way.
  PgResult extended(PQexecParams(a.get(), "DEALLOCATE ALL", 0, nullptr, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(extended.get()), PGRES_COMMAND_OK) << PQerrorMessage(a.get());
  ASSERT_EQ(prepare(b.get(), "t", "SELECT 42"), "OK");
  EXPECT_EQ(exec_prepared(b.get(), "t"), "42");
  EXPECT_EQ(exec_prepared(a.get(), "s").substr(0, 11), "ERROR 26000");  // as in PostgreSQL
  ASSERT_EQ(value(a.get(), "SELECT 1; DEALLOCATE ALL"), "DEALLOCATE ALL");
  ASSERT_EQ(prepare(a.get(), "u", "SELECT 42"), "OK");
  EXPECT_EQ(exec_prepared(a.get(), "u"), "42");
  EXPECT_EQ(exec_prepared(b.get(), "t"), "42");
}

TEST_F(PreparedTest, MessagesSentAfterAnErrorAndBeforeSyncAreSkippedAsInPostgres) {
  start("transaction", 1);
  PgConn a = client();
  PgConn b = client();
  ASSERT_EQ(PQenterPipelineMode(a.get()), 1);
  ASSERT_EQ(PQsendQueryParams(a.get(), "SELECT 1/0", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQsendFlushRequest(a.get()), 1);
  ASSERT_EQ(PQflush(a.get()), 0);
  {
    PgResult failed(PQgetResult(a.get()));  // the error arrives without a Sync
    ASSERT_EQ(PQresultStatus(failed.get()), PGRES_FATAL_ERROR);
    EXPECT_EQ(PQgetResult(a.get()), nullptr);
  }
  // Sent after the error, before the Sync: PostgreSQL skips it.
  ASSERT_EQ(PQsendQueryParams(a.get(), "SELECT 2", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(a.get()), 1);
  {
    PgResult skipped(PQgetResult(a.get()));
    EXPECT_EQ(PQresultStatus(skipped.get()), PGRES_PIPELINE_ABORTED);
    EXPECT_EQ(PQgetResult(a.get()), nullptr);
    PgResult synced(PQgetResult(a.get()));
    EXPECT_EQ(PQresultStatus(synced.get()), PGRES_PIPELINE_SYNC);
  }
  ASSERT_EQ(PQexitPipelineMode(a.get()), 1);
  // The only server connection went back to the pool: b is served (bounded wait).
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT 'b'"), 1);
  EXPECT_TRUE(wait_for([&] { return PQconsumeInput(b.get()) == 1 && PQisBusy(b.get()) == 0; }))
      << "the server stayed with a";
  PgResult served(PQgetResult(b.get()));
  EXPECT_EQ(PQresultStatus(served.get()), PGRES_TUPLES_OK);
  while (PgResult more{PQgetResult(b.get())}) {
  }
  // And a's answers are in step: a locally answered Parse, then its execution.
  ASSERT_EQ(prepare(b.get(), "shared", "SELECT 5"), "OK");
  ASSERT_EQ(prepare(a.get(), "x", "SELECT 5"), "OK");
  EXPECT_EQ(exec_prepared(a.get(), "x"), "5");
}

TEST_F(PreparedTest, PipelineAcrossSyncsWithAFailureKeepsClientAndServerInStep) {
  start("transaction", 1);
  PgConn c = client();
  PgConn other = client();
  ASSERT_EQ(prepare(c.get(), "div", "SELECT 100 / $1::int", 1), "OK");
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  // 4 segments of 30 executions each; segment 2 divides by zero at its 10th.
  for (int segment = 0; segment < 4; ++segment) {
    for (int i = 0; i < 30; ++i) {
      const std::string divisor = (segment == 2 && i == 10) ? "0" : "1";
      const char* values[] = {divisor.c_str()};
      ASSERT_EQ(PQsendQueryPrepared(c.get(), "div", 1, values, nullptr, nullptr, 0), 1);
    }
    ASSERT_EQ(PQpipelineSync(c.get()), 1);
  }
  int ok = 0, failed = 0, aborted = 0, syncs = 0;
  while (syncs < 4) {
    PgResult r(PQgetResult(c.get()));
    if (!r) continue;  // end of one query's results
    switch (PQresultStatus(r.get())) {
      case PGRES_TUPLES_OK: EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "100"); ++ok; break;
      case PGRES_FATAL_ERROR: EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "22012"); ++failed; break;
      case PGRES_PIPELINE_ABORTED: ++aborted; break;
      case PGRES_PIPELINE_SYNC: ++syncs; break;
      default: ADD_FAILURE() << PQresStatus(PQresultStatus(r.get())); syncs = 4; break;
    }
  }
  EXPECT_EQ(ok, 90 + 10);
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(aborted, 19);
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);
  EXPECT_EQ(exec_prepared(c.get(), "div", {"4"}), "25");
  // The only server went back to the pool.
  EXPECT_EQ(value(other.get(), "SELECT 'other'"), "other");
}

TEST_F(PreparedTest, PgbenchPreparedInTransactionModeOnASmallPool) {
  start("transaction", 5);
  const std::vector<std::string> env = {std::string("PGPASSWORD=") + kPassword, "LC_ALL=C"};
  const std::vector<std::string> where = {"-h", "127.0.0.1", "-p", std::to_string(sluice_->port()), "-U", kUser};
  auto pgbench = [&](std::vector<std::string> options) {
    std::vector<std::string> argv = {pg_tool("pgbench")};
    argv.insert(argv.end(), where.begin(), where.end());
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("sluice_prepared");
    return run(argv, env);
  };
  // A database of its own: other test binaries may run pgbench on sluice_test at the same time.
  if (pg().query_value("SELECT count(*) FROM pg_database WHERE datname = 'sluice_prepared'", "postgres") == "0") {
    pg().exec("CREATE DATABASE sluice_prepared OWNER app", "postgres");
  }
  const auto init = pgbench({"-i", "-s", "1", "-q"});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  // One thread per client: pgbench prepares with a blocking call (see the issue).
  const auto bench = pgbench({"-M", "prepared", "-c", "50", "-j", "50", "-t", "40", "-n"});
  ASSERT_EQ(bench.exit_code, 0) << tail_lines(bench.output, 20);
  EXPECT_NE(bench.output.find("number of transactions actually processed: 2000/2000"), std::string::npos)
      << tail_lines(bench.output, 20);
  EXPECT_NE(bench.output.find("number of failed transactions: 0"), std::string::npos) << tail_lines(bench.output, 20);
}

// The protocol's FunctionCall message (libpq PQfn), which ends with its own ReadyForQuery.
int call_abs(PGconn* c, int argument) {
  const Oid int4abs = static_cast<Oid>(std::stoul(value(c, "SELECT 'int4abs'::regproc::oid")));
  PQArgBlock arg{};
  arg.len = 4;
  arg.isint = 1;
  arg.u.integer = argument;
  int result = 0, length = 0;
  PgResult r(PQfn(c, int4abs, &result, &length, 1, &arg, 1));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c);
  return result;
}

TEST_F(PreparedTest, FunctionCallsWorkInTransactionAndStatementMode) {
  for (const char* mode : {"transaction", "statement"}) {
    start(mode, 1);
    PgConn a = client();
    PgConn b = client();
    for (int i = 1; i <= 5; ++i) {
      EXPECT_EQ(call_abs(a.get(), -i), i) << mode;
      EXPECT_EQ(call_abs(b.get(), -10 * i), 10 * i) << mode;
    }
    EXPECT_EQ(value(a.get(), "SELECT 'after'"), "after") << mode;
  }
}

TEST_F(PreparedTest, StatementModeRunsPreparedStatements) {
  start("statement", 2);
  PgConn a = client();
  PgConn b = client();
  ASSERT_EQ(prepare(a.get(), "s", "SELECT $1::int * 2", 1), "OK");
  ASSERT_EQ(prepare(b.get(), "s", "SELECT $1::int * 3", 1), "OK");
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(exec_prepared(a.get(), "s", {std::to_string(i)}), std::to_string(i * 2));
    EXPECT_EQ(exec_prepared(b.get(), "s", {std::to_string(i)}), std::to_string(i * 3));
  }
}

}  // namespace
}  // namespace sluice::test
