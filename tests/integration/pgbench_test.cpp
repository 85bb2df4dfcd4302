// Real PostgreSQL command-line clients through Sluice in session mode: pgbench (initialise,
// then simple, extended and prepared protocol runs with 20 clients) and psql (-c and -f);
// and pgbench through a Sluice with one worker, in transaction mode.
// The password reaches the clients as PGPASSWORD in the child's environment, as an
// operator would pass it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/harness.h"

extern char** environ;

namespace sluice::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kDb = "sluice_test";
constexpr const char* kUser = "app";
constexpr const char* kPassword = "app_pw";
constexpr int kPoolSize = 25;  // pgbench -c 20 holds 20 sessions at once in session mode

PostgresServer& pg() { return PostgresServer::shared(); }

// One Sluice for every test of a suite, started with the suite's config().
template <class Suite>
class SharedSluiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      pg();
      sluice_ = std::make_unique<SluiceProcess>(Suite::config());
    } catch (const std::exception& e) {
      error_ = e.what();
    }
  }
  static void TearDownTestSuite() { sluice_.reset(); }
  void SetUp() override {
    ASSERT_TRUE(sluice_) << "could not start PostgreSQL/Sluice: " << error_;
    ASSERT_TRUE(sluice_->running()) << "Sluice exited; log:\n" << tail_lines(sluice_->log(), 80);
  }
  void TearDown() override {
    if (HasFailure() && sluice_) {
      std::printf("---- last lines of the Sluice log ----\n%s\n--------------------------------------\n",
                  tail_lines(sluice_->log(), 80).c_str());
    }
  }

  static inline std::unique_ptr<SluiceProcess> sluice_;
  static inline std::string error_;
};

class CommandLineClientsTest : public SharedSluiceTest<CommandLineClientsTest> {
 public:
  static std::string config() { return default_config(kPoolSize); }

 protected:

  static std::vector<std::string> client_env() {
    return {std::string("PGPASSWORD=") + kPassword, "LC_ALL=C", "LANG=C", "LANGUAGE=C", "PGCONNECT_TIMEOUT=60"};
  }
  static std::vector<std::string> connection_args() {
    return {"-h", "127.0.0.1", "-p", std::to_string(sluice_->port()), "-U", kUser};
  }

  static ProcessResult pgbench(const std::vector<std::string>& options) {
    std::vector<std::string> argv = {pg_tool("pgbench")};
    for (const auto& a : connection_args()) argv.push_back(a);
    for (const auto& o : options) argv.push_back(o);
    argv.push_back(kDb);
    return run(argv, client_env());
  }

  static ProcessResult psql(const std::vector<std::string>& options) {
    std::vector<std::string> argv = {pg_tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", kDb};
    for (const auto& a : connection_args()) argv.push_back(a);
    for (const auto& o : options) argv.push_back(o);
    return run(argv, client_env());
  }

  // `pgbench -i -s 1` through Sluice, once per binary (every run test needs its tables).
  static void ensure_initialised() {
    if (initialised_) return;
    const ProcessResult r = pgbench({"-i", "-s", "1"});
    std::printf("[ INFO     ] pgbench -i -s 1 through Sluice: exit %d after %.2f s\n%s\n", r.exit_code, r.seconds,
                tail_lines(r.output, 12).c_str());
    ASSERT_FALSE(r.timed_out) << r.output;
    ASSERT_EQ(r.exit_code, 0) << r.output;
    initialised_ = true;
  }

  // A pgbench run through Sluice: exits 0, processed > 0 transactions, 0 failed.
  static void expect_clean_run(const std::vector<std::string>& options) {
    ensure_initialised();
    ASSERT_TRUE(initialised_);
    const ProcessResult r = pgbench(options);
    std::string command = "pgbench";
    for (const auto& o : options) command += " " + o;
    std::printf("[ INFO     ] %s through Sluice: exit %d after %.2f s\n%s\n", command.c_str(), r.exit_code, r.seconds,
                tail_lines(r.output, 16).c_str());
    expect_clean_pgbench_run(r);
    EXPECT_TRUE(sluice_->running());
  }

  static bool initialised_;
};
bool CommandLineClientsTest::initialised_ = false;

TEST_F(CommandLineClientsTest, PgbenchInitialise) {
  ensure_initialised();
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM pgbench_accounts"), "100000");
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM pgbench_branches"), "1");
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM pgbench_tellers"), "10");
  // Primary keys were created (the last init step), so the whole sequence ran.
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM pg_indexes WHERE indexname = 'pgbench_accounts_pkey'"), "1");
}

TEST_F(CommandLineClientsTest, PgbenchSimpleProtocolTwentyClients) {
  expect_clean_run({"-c", "20", "-j", "2", "-T", "5"});
}

TEST_F(CommandLineClientsTest, PgbenchExtendedProtocolTwentyClients) {
  expect_clean_run({"-c", "20", "-j", "2", "-T", "3", "-M", "extended"});
}

TEST_F(CommandLineClientsTest, PgbenchPreparedProtocolTwentyClients) {
  expect_clean_run({"-c", "20", "-j", "2", "-T", "3", "-M", "prepared"});
}

TEST_F(CommandLineClientsTest, PgbenchSelectOnlyWithReconnectPerTransaction) {
  // -C: a new connection per transaction, so sessions start and end through Sluice all the time.
  expect_clean_run({"-c", "10", "-j", "2", "-T", "3", "-S", "-C"});
}

TEST_F(CommandLineClientsTest, PsqlCommand) {
  const ProcessResult r = psql({"-A", "-t", "-c", "select 1"});
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "1\n");

  // An error is reported with psql's usual text and exit status 1.
  const ProcessResult bad = psql({"-A", "-t", "-c", "select * from psql_no_such_table"});
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("relation \"psql_no_such_table\" does not exist"), std::string::npos) << bad.output;
}

TEST_F(CommandLineClientsTest, PsqlScriptFile) {
  const std::string path = ::testing::TempDir() + "sluice_psql_script_" + std::to_string(::getpid()) + ".sql";
  {
    std::ofstream f(path);
    f << "CREATE TABLE psql_script_items (id int PRIMARY KEY, name text);\n"
         "INSERT INTO psql_script_items SELECT g, 'item ' || g FROM generate_series(1, 100) g;\n"
         "BEGIN;\n"
         "UPDATE psql_script_items SET name = upper(name) WHERE id <= 10;\n"
         "COMMIT;\n"
         "COPY psql_script_items (id, name) FROM STDIN;\n"
         "101\tcopied one\n"
         "102\tcopied two\n"
         "\\.\n"
         "\\set who sluice\n"
         "SELECT count(*) || '|' || sum(id) FROM psql_script_items WHERE name LIKE 'ITEM%';\n"
         "SELECT count(*) FROM psql_script_items;\n"
         "SELECT :'who' || ' script done';\n";
  }
  const ProcessResult r = psql({"-A", "-t", "-q", "-f", path});
  std::remove(path.c_str());
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "10|55\n102\nsluice script done\n");
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM psql_script_items"), "102");
}

TEST_F(CommandLineClientsTest, StillServesAfterAllOfTheAbove) {
  ASSERT_TRUE(sluice_->running());
  PgConn c = connect(sluice_->conninfo(kDb, kUser, kPassword));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  PgResult r(PQexec(c.get(), "SELECT 1"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "1");
}

// ---------------------------------------------------------------------------
// One worker: Sluice's io_context, pools and statistics then take no locks at all
// (what the benchmarks run). Transaction mode, pgbench's 20 clients on a pool of 4,
// and the server named by a host name: it is looked up on a helper thread that must
// not touch the lock-free io_context, for every new server connection and for every
// cancel request.
// ---------------------------------------------------------------------------
class OneWorkerTest : public SharedSluiceTest<OneWorkerTest> {
 public:
  static std::string config() {
    std::string toml = with_server_host(default_config(4), "localhost");
    toml.replace(toml.find("[sluice]\n"), 9, "[sluice]\nworkers = 1\n");
    toml.replace(toml.find("mode = \"session\""), 16, "mode = \"transaction\"");
    return toml;
  }

 protected:
  void SetUp() override {
    SharedSluiceTest::SetUp();
    if (HasFatalFailure()) return;
    // (Logged just after the listeners open: waited for, not assumed.)
    ASSERT_TRUE(wait_for([&] { return sluice_->log().find("running with 1 worker thread(s)") != std::string::npos; }))
        << sluice_->log();
  }

  // pgbench with a script of its own (no tables needed): exits 0, 0 failed.
  static void expect_clean_run(const std::string& protocol) {
    const std::string script = ::testing::TempDir() + "sluice_one_worker_" + std::to_string(::getpid()) + ".sql";
    {
      std::ofstream f(script);
      f << "\\set n random(1, 100000)\nSELECT :n + 1 AS next;\nBEGIN;\nSELECT :n * 2;\nCOMMIT;\n";
    }
    const ProcessResult r =
        run({pg_tool("pgbench"), "-h", "127.0.0.1", "-p", std::to_string(sluice_->port()), "-U", kUser, "-n", "-f",
             script, "-c", "20", "-j", "2", "-T", "3", "-M", protocol, kDb},
            {std::string("PGPASSWORD=") + kPassword, "LC_ALL=C", "LANG=C", "PGCONNECT_TIMEOUT=60"});
    std::remove(script.c_str());
    std::printf("[ INFO     ] pgbench -M %s, 20 clients, one worker: exit %d after %.2f s\n%s\n", protocol.c_str(),
                r.exit_code, r.seconds, tail_lines(r.output, 8).c_str());
    expect_clean_pgbench_run(r);
    EXPECT_TRUE(sluice_->running());
  }

};

TEST_F(OneWorkerTest, TwentyPgbenchClientsShareFourServersWithTheSimpleProtocol) { expect_clean_run("simple"); }

TEST_F(OneWorkerTest, TwentyPgbenchClientsShareFourServersWithTheExtendedProtocol) { expect_clean_run("extended"); }

TEST_F(OneWorkerTest, ACancelRequestReachesTheServerNamedByAHostName) {
  PgConn c = connect(sluice_->conninfo(kDb, kUser, kPassword));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  const std::string marker = "sluice_one_worker_cancel";
  ASSERT_EQ(PQsendQuery(c.get(), ("SELECT pg_sleep(60) /* " + marker + " */").c_str()), 1) << PQerrorMessage(c.get());
  const std::string active = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%" +
                             marker + " */%' AND query NOT LIKE '%pg_stat_activity%'";
  ASSERT_TRUE(wait_for([&] { return pg().query_value(active) == "1"; }, 30s)) << "pg_sleep never became active";
  std::unique_ptr<PGcancel, decltype(&PQfreeCancel)> cancel(PQgetCancel(c.get()), &PQfreeCancel);
  ASSERT_TRUE(cancel);
  char errbuf[256] = {};
  ASSERT_EQ(PQcancel(cancel.get(), errbuf, sizeof errbuf), 1) << errbuf;
  // Bounded: the query would otherwise run for 60 s.
  const auto deadline = Clock::now() + 50s;
  while (PQisBusy(c.get()) && Clock::now() < deadline) {
    pollfd pfd{PQsocket(c.get()), POLLIN, 0};
    ::poll(&pfd, 1, 200);
    if (!PQconsumeInput(c.get())) break;
  }
  ASSERT_FALSE(PQisBusy(c.get())) << "no answer within 50 s: the cancel did not reach the server";
  PgResult r(PQgetResult(c.get()));
  ASSERT_TRUE(r);
  const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(r.get());
  while (PgResult rest{PQgetResult(c.get())}) {
  }
  PgResult after(PQexec(c.get(), "SELECT 40 + 2"));
  ASSERT_EQ(PQresultStatus(after.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  EXPECT_STREQ(PQgetvalue(after.get(), 0, 0), "42");
}

}  // namespace
}  // namespace sluice::test
