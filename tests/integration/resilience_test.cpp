// Resilience (issue 5): faults injected into a real PostgreSQL 15 while real clients (libpq,
// pgbench) go through Sluice. PostgreSQL stopped and restarted under load, backends terminated
// (idle, busy) or killed, a backend that never answers, statements past [timeouts] query,
// clients past query_wait / idle_transaction / client_idle / client_login / max_client_conn,
// server connections recycled by server_lifetime / server_idle, pool.min_size and reserve,
// max_db_connections across two users' pools, two hosts with one stopped and restarted, and
// health checks of pooled connections.
//
// After each fault the test waits (bounded) until Sluice's open file descriptors are back to
// what it had before any client plus one per server connection still open, and until the
// pool's backends are within the pool's bounds: nothing leaks.
//
// This binary owns its PostgreSQL (PostgresServer::shared() is per binary), so it may stop and
// restart it; the fixture restarts it after a test that failed while it was down. Every wait
// polls a condition with a generous bound; timings are printed, never asserted. A watchdog
// fails a test that runs past kTestLimit and kills its Sluice, so that a client blocked on a
// missing behaviour fails the test instead of hanging the binary. Errors are read from libpq's
// VERBOSE messages ("FATAL:  08006: ..."), because libpq replaces the SQLSTATE of an error that
// is followed by the connection's close with the connection loss.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/clients.h"
#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kDb = "sluice_test";
constexpr auto kTestLimit = 100s;  // per test; the whole binary is meant to take well under 2 min
constexpr int kFdMargin = 4;        // Sluice's fds may exceed baseline + server connections by this

PostgresServer& pg() { return PostgresServer::shared(); }

// ---------------------------------------------------------------------------------------------
// Configuration

// default_config() with `mode` and `size` for every pool.
std::string config(const std::string& mode, int size) {
  std::string toml = default_config(size);
  const std::string session = "mode = \"session\"";
  toml.replace(toml.find(session), session.size(), "mode = \"" + mode + "\"");
  return toml;
}




// Replaces the body (host and port) of [databases.sluice_test] with `body`.
std::string set_sluice_test_database(std::string toml, const std::string& body) {
  const std::string old = "[databases.sluice_test]\nhost = \"{pg_host}\"\nport = {pg_port}\n";
  const auto at = toml.find(old);
  if (at == std::string::npos) throw std::logic_error("default_config changed: no [databases.sluice_test]");
  toml.replace(at, old.size(), "[databases.sluice_test]\n" + body + "\n");
  return toml;
}

// ---------------------------------------------------------------------------------------------
// Clients

std::string pg_address(const PostgresServer& server) { return "127.0.0.1:" + std::to_string(server.port()); }
















bool command_ok(PGconn* conn, const std::string& sql) {
  PgResult r(PQexec(conn, sql.c_str()));
  return PQresultStatus(r.get()) == PGRES_COMMAND_OK || PQresultStatus(r.get()) == PGRES_TUPLES_OK;
}

// Reads every pending result of `conn`; their error messages, concatenated, with libpq's.
std::string drain_errors(PGconn* conn) {
  std::string errors;
  while (PGresult* r = PQgetResult(conn)) {
    if (PQresultStatus(r) == PGRES_FATAL_ERROR || PQresultStatus(r) == PGRES_NONFATAL_ERROR) {
      errors += PQresultErrorMessage(r);
    }
    PQclear(r);
  }
  return errors + PQerrorMessage(conn);
}







// The pid of the backend running exactly `query` (state active); 0 while there is none.
int active_backend_running(const PostgresServer& server, const std::string& query) {
  try {
    std::string quoted;
    for (char c : query) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    return std::stoi(server.query_value(
        "SELECT coalesce(min(pid), 0) FROM pg_stat_activity WHERE state = 'active' AND query = '" + quoted + "'",
        "postgres"));
  } catch (const std::exception&) {
    return 0;
  }
}

// Backends a Sluice has open on `server`: TCP clients other than the superuser (the harness's own
// connections use the Unix socket, or log in as postgres).
int sluice_backends(const PostgresServer& server) {
  return std::stoi(server.query_value(
      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND client_addr IS NOT NULL "
      "AND usename <> 'postgres'",
      "postgres"));
}

// backend_count/backend_pids that answer -1 / {} instead of throwing (PostgreSQL down or restarting).
int try_backend_count(const PostgresServer& server, const std::string& user, const std::string& state = "") {
  try {
    return backend_count(server, user, kDb, state);
  } catch (const std::exception&) {
    return -1;
  }
}










// ---------------------------------------------------------------------------------------------
// Fixture


// A client of check_shared_cap.
struct CapClient {
  std::string database, user, password;
};

class ResilienceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_THROW(pg()) << "PostgreSQL did not start";
    // The previous test's Sluice has gone; wait for PostgreSQL to have ended its backends, so that
    // this test's counts are its own.
    ASSERT_TRUE(wait_for([] { return sluice_backends(pg()) == 0; }, 30s))
        << "backends of an earlier test are still open";
    watchdog_ = std::make_unique<Watchdog>(std::chrono::duration_cast<std::chrono::seconds>(kTestLimit), [this] {
      if (const int pid = pid_.load(); pid > 0) ::kill(pid, SIGKILL);  // Sluice
    });
  }

  void TearDown() override {
    watchdog_.reset();  // first: it must not signal a pid that SluiceProcess has reaped
    pid_ = -1;
    sluice_.reset();  // SIGTERM (SIGKILL after 10 s); prints Sluice's log when the test failed
    // A test that failed while a PostgreSQL was stopped must not take the next tests with it.
    for (PostgresServer* server : servers_used_) {
      if (server->stopped()) {
        try {
          server->start_again();
        } catch (const std::exception& e) {
          ADD_FAILURE() << "restarting PostgreSQL after the test: " << e.what();
        }
      }
    }
  }

  // Starts Sluice with `toml`; false (and the test failed) when it does not start, e.g. while it
  // rejects a configuration key it does not know yet (exit 2). Records the fd baseline.
  bool start(const std::string& toml) {
    try {
      sluice_ = std::make_unique<SluiceProcess>(toml);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "Sluice did not start (does it know every key of this config yet?):\n" << e.what();
      return false;
    }
    pid_ = sluice_->pid();
    baseline_fds_ = open_fd_count(sluice_->pid());
    return true;
  }

  std::string conninfo(const std::string& user = "app", const std::string& password = "app_pw") const {
    return sluice_->conninfo(kDb, user, password);
  }

  std::string log_tail() const {
    return sluice_ ? "\n---- Sluice log, last lines ----\n" + tail_lines(sluice_->log(), 40) : std::string();
  }

  // Stops `server` the way a crash would; start_again() is guaranteed by TearDown.
  void stop_immediate(PostgresServer& server) {
    if (std::find(servers_used_.begin(), servers_used_.end(), &server) == servers_used_.end()) {
      servers_used_.push_back(&server);
    }
    server.stop_immediate();
  }

  // After a fault: Sluice is alive, its fds come back to the baseline plus one per server
  // connection, and `user`'s backends on sluice_test are within [0, max_backends].
  // See check_shared_cap below the fixture's tests.
  void check_shared_cap(const std::string& what, const std::string& backends_where,
                        const std::vector<CapClient>& specs);

  void expect_settled(const std::vector<std::string>& users, int max_backends,
                      std::vector<const PostgresServer*> servers = {}) {
    ASSERT_TRUE(sluice_);
    ASSERT_TRUE(sluice_->running()) << "Sluice exited" << log_tail();
    if (servers.empty()) servers.push_back(&pg());
    int fds = -1;
    int server_connections = -1;
    int pool_backends = -1;
    const bool settled = wait_for(
        [&] {
          try {
            server_connections = 0;
            pool_backends = 0;
            for (const auto* server : servers) {
              server_connections += sluice_backends(*server);
              for (const auto& user : users) pool_backends += backend_count(*server, user, kDb);
            }
          } catch (const std::exception&) {
            return false;
          }
          fds = open_fd_count(sluice_->pid());
          return fds >= 0 && fds <= baseline_fds_ + server_connections + kFdMargin && pool_backends <= max_backends;
        },
        30s);
    EXPECT_TRUE(settled) << "Sluice has " << fds << " fds open, " << baseline_fds_
                         << " before any client, with " << server_connections
                         << " server connections (margin " << kFdMargin << "); the pool's backends: "
                         << pool_backends << " (at most " << max_backends << " expected)" << log_tail();
    std::printf("[ INFO     ] settled: %d fds (baseline %d), %d server connections, RSS %ld KiB\n", fds,
                baseline_fds_, server_connections, rss_kib(sluice_->pid()));
  }

  std::unique_ptr<SluiceProcess> sluice_;
  int baseline_fds_ = -1;

 private:
  std::atomic<int> pid_{-1};
  std::unique_ptr<Watchdog> watchdog_;
  std::vector<PostgresServer*> servers_used_;
};

class ModeTest : public ResilienceTest, public ::testing::WithParamInterface<std::string> {};

std::string mode_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

// ---------------------------------------------------------------------------------------------
// 1. PostgreSQL stopped (immediate) under pgbench, then started again

void ensure_pgbench_tables() {
  static bool done = false;
  if (done) return;
  const ProcessResult r = run({pg_tool("pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p",
                               std::to_string(pg().port()), "-U", "app", kDb},
                              {"PGPASSWORD=app_pw", "LC_ALL=C", "PGCONNECT_TIMEOUT=60"}, 120s);
  ASSERT_FALSE(r.timed_out) << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;
  pg().exec("CHECKPOINT");  // durable before the immediate stop (synchronous_commit is off)
  done = true;
}

TEST_P(ModeTest, PostgresStoppedUnderPgbenchIsReportedAsDownThenUsedAgainOnceBack) {
  ASSERT_NO_FATAL_FAILURE(ensure_pgbench_tables());
  ASSERT_TRUE(start(config(GetParam(), 25)));  // session mode: 20 pgbench sessions at once
  const int pid = sluice_->pid();
  const long rss_before = rss_kib(pid);

  // pgbench 15 has no option to go on after a connection error: each client that meets one
  // aborts, and pgbench reports it (and may then idle until -T is over, which bounds the run).
  auto bench = std::async(std::launch::async, [port = sluice_->port()] {
    return run({pg_tool("pgbench"), "-h", "127.0.0.1", "-p", std::to_string(port), "-U", "app", "-c", "20", "-j",
                "2", "-T", "8", "-S", "-n", kDb},
               {"PGPASSWORD=app_pw", "LC_ALL=C", "PGCONNECT_TIMEOUT=60"}, 90s);
  });
  // pgbench's transactions flow through at least two backends.
  const bool flowing = wait_for(
      [&] {
        try {
          return std::stoi(pg().query_value("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND "
                                            "query LIKE 'SELECT abalance FROM pgbench_accounts%'",
                                            "postgres")) >= 2;
        } catch (const std::exception&) {
          return false;
        }
      },
      30s);
  if (!flowing) {
    const ProcessResult r = bench.get();
    FAIL() << "pgbench's traffic never showed up in pg_stat_activity; pgbench:\n" << r.output << log_tail();
  }

  stop_immediate(pg());
  const auto stopped_at = Clock::now();
  std::printf("[ INFO     ] PostgreSQL stopped (immediate) under pgbench -c 20 -S (%s mode)\n", GetParam().c_str());

  // A new client while PostgreSQL is down: a clean 08006 naming the host.
  const Probe first = probe(conninfo());
  std::printf("[ INFO     ] first new client after the stop: error after %.3f s (%.3f s after the stop): %s\n",
              first.seconds, seconds_since(stopped_at), first.error.c_str());
  EXPECT_FALSE(first.ok) << "served while PostgreSQL is down: " << first.value;
  EXPECT_EQ(sqlstate_in_message(first.error), "08006") << first.error << log_tail();
  EXPECT_TRUE(contains(first.error, pg_address(pg()))) << first.error << log_tail();
  // By now the host is known to be down: the refusal is prompt and says so.
  const Probe second = probe(conninfo());
  std::printf("[ INFO     ] next new client while down: error after %.3f s: %s\n", second.seconds,
              second.error.c_str());
  EXPECT_FALSE(second.ok);
  EXPECT_EQ(sqlstate_in_message(second.error), "08006") << second.error << log_tail();
  EXPECT_TRUE(contains(second.error, pg_address(pg()))) << second.error << log_tail();
  EXPECT_TRUE(contains(second.error, "is down")) << second.error << log_tail();
  EXPECT_TRUE(sluice_->running()) << log_tail();

  pg().start_again();
  const auto up_at = Clock::now();
  Probe last;
  int attempts = 0;
  const bool recovered = wait_for(
      [&] {
        ++attempts;
        last = probe(conninfo(), "SELECT 1", 30s);
        return last.ok && last.value == "1";
      },
      60s);
  std::printf("[ INFO     ] PostgreSQL accepted logins again; SELECT 1 through Sluice works %.3f s later (%d tries)\n",
              seconds_since(up_at), attempts);
  EXPECT_TRUE(recovered) << "Sluice never used PostgreSQL again; last error: " << last.error << log_tail();

  const ProcessResult r = bench.get();
  std::printf("[ INFO     ] pgbench: exit %d after %.2f s\n%s\n", r.exit_code, r.seconds,
              tail_lines(r.output, 12).c_str());
  EXPECT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(sluice_->running()) << log_tail();
  EXPECT_EQ(sluice_->pid(), pid);
  std::printf("[ INFO     ] Sluice RSS: %ld KiB before, %ld KiB after\n", rss_before, rss_kib(pid));
  // After recovery, the pool serves pgbench-like traffic again.
  for (int i = 0; i < 5; ++i) {
    const Probe p = probe(conninfo(), "SELECT count(*) FROM pgbench_branches");
    EXPECT_TRUE(p.ok) << p.error << log_tail();
  }
  expect_settled({"app"}, 25);
}

// ---------------------------------------------------------------------------------------------
// 2. pg_terminate_backend on pooled connections: idle ones are replaced unnoticed, a busy one
//    fails only its own client (with PostgreSQL's own 57P01).

TEST_P(ModeTest, TerminatedIdlePooledBackendsAreReplacedWithoutAnyClientNoticing) {
  ASSERT_TRUE(start(config(GetParam(), 3)));
  // Three server connections, then all idle in the pool.
  {
    std::vector<PgConn> holders;
    for (int i = 0; i < 3; ++i) {
      holders.push_back(connect_verbose(conninfo()));
      ASSERT_EQ(PQstatus(holders.back().get()), CONNECTION_OK) << login_error(holders.back().get());
      ASSERT_TRUE(command_ok(holders.back().get(), "BEGIN"));
      ASSERT_EQ(value_of(holders.back().get(), "SELECT 1"), "1");
    }
    for (auto& h : holders) ASSERT_TRUE(command_ok(h.get(), "COMMIT"));
  }
  ASSERT_TRUE(wait_for([] { return try_backend_count(pg(), "app", "idle") == 3; }))
      << try_backend_count(pg(), "app") << " backends" << log_tail();
  const std::vector<int> old_pids = backend_pids(pg(), "app", kDb, "idle");
  pg().exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND datname = '" +
                std::string(kDb) + "' AND state = 'idle'",
            "postgres");
  ASSERT_TRUE(wait_for([] { return try_backend_count(pg(), "app") == 0; })) << "terminated backends still there";
  std::printf("[ INFO     ] terminated idle pooled backends %s\n", join(old_pids).c_str());

  // Three clients at once (each takes one of the dead connections), then more one after another.
  std::vector<PgConn> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_verbose(conninfo()));
    PGconn* c = clients.back().get();
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << login_error(c) << log_tail();
    ASSERT_TRUE(command_ok(c, "BEGIN")) << PQerrorMessage(c) << log_tail();
    const std::string backend = value_of(c, "SELECT pg_backend_pid()");
    ASSERT_EQ(backend.find("<error"), std::string::npos) << "client " << i << ": " << backend << log_tail();
    EXPECT_EQ(std::count(old_pids.begin(), old_pids.end(), std::stoi(backend)), 0)
        << "got a terminated backend " << backend;
  }
  for (auto& c : clients) EXPECT_TRUE(command_ok(c.get(), "COMMIT")) << PQerrorMessage(c.get());
  clients.clear();
  for (int i = 0; i < 6; ++i) {
    const Probe p = probe(conninfo());
    EXPECT_TRUE(p.ok) << "client " << i << ": " << p.error << log_tail();
  }
  expect_settled({"app"}, 3);
}

// Transaction mode: a connected client whose pooled server was terminated while idle between
// its transactions. Its next statement takes the idle connection without a coroutine
// (Pool::try_acquire_idle), whose probe finds the close: that connection is dropped and the
// statement runs on a new one, with nothing for the client to notice.
TEST_P(ModeTest, TerminatedIdleServerIsSkippedByTheNextTransactionOfAConnectedClient) {
  if (std::string(GetParam()) != "transaction") GTEST_SKIP() << "a session-mode client keeps its server";
  ASSERT_TRUE(start(config(GetParam(), 3)));
  PgConn client = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(client.get()), CONNECTION_OK) << login_error(client.get());
  const std::string first = value_of(client.get(), "SELECT pg_backend_pid()");
  ASSERT_EQ(first.find("<error"), std::string::npos) << first << log_tail();
  ASSERT_TRUE(wait_for([] { return try_backend_count(pg(), "app", "idle") >= 1; })) << log_tail();
  pg().exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND datname = '" +
                std::string(kDb) + "'",
            "postgres");
  ASSERT_TRUE(wait_for([] { return try_backend_count(pg(), "app") == 0; })) << "terminated backends still there";

  for (int i = 0; i < 3; ++i) {
    const std::string next = value_of(client.get(), "SELECT pg_backend_pid()");
    ASSERT_EQ(next.find("<error"), std::string::npos) << "statement " << i << ": " << next << log_tail();
    EXPECT_NE(next, first) << "ran on the terminated backend";
  }
  EXPECT_EQ(PQstatus(client.get()), CONNECTION_OK);
  client.reset();
  expect_settled({"app"}, 3);
}

TEST_P(ModeTest, TerminatedBusyBackendFailsOnlyItsClientWithPostgresError) {
  ASSERT_TRUE(start(config(GetParam(), 3)));
  PgConn other = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(other.get()), CONNECTION_OK) << login_error(other.get());
  ASSERT_EQ(value_of(other.get(), "SELECT 1"), "1");

  PgConn busy = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(busy.get()), CONNECTION_OK) << login_error(busy.get());
  const std::string sleeper = "SELECT pg_sleep(30) /* busy */";
  ASSERT_EQ(PQsendQuery(busy.get(), sleeper.c_str()), 1);
  int backend = 0;
  ASSERT_TRUE(wait_for([&] { return (backend = active_backend_running(pg(), sleeper)) != 0; })) << log_tail();
  // The other client works while the sleeper runs...
  EXPECT_EQ(value_of(other.get(), "SELECT 2"), "2") << log_tail();
  pg().exec("SELECT pg_terminate_backend(" + std::to_string(backend) + ")", "postgres");

  ASSERT_TRUE(await_not_busy(busy.get())) << log_tail();
  const std::string errors = drain_errors(busy.get());
  std::printf("[ INFO     ] the busy client got: %s\n", errors.c_str());
  EXPECT_EQ(sqlstate_in_message(errors), "57P01") << errors << log_tail();
  EXPECT_TRUE(contains(errors, "terminating connection due to administrator command")) << errors;
  EXPECT_TRUE(await_closed(busy.get())) << "the busy client's connection was not closed" << log_tail();

  // ...and after.
  EXPECT_EQ(value_of(other.get(), "SELECT 3"), "3") << log_tail();
  const Probe next = probe(conninfo());
  EXPECT_TRUE(next.ok) << next.error << log_tail();
  other.reset();
  expect_settled({"app"}, 3);
}

// A backend that vanishes without a word (SIGKILL; PostgreSQL then restarts every backend): its
// client gets 08006 "server connection lost" and the close; nothing is replayed; Sluice serves
// new clients once PostgreSQL is back.
TEST_P(ModeTest, BackendKilledMidQueryGivesServerConnectionLost) {
  ASSERT_TRUE(start(config(GetParam(), 3)));
  // synchronous_commit is off in the test PostgreSQL: without it, the crash restart below could lose
  // this table's commit record still in WAL buffers.
  pg().exec("SET synchronous_commit = on; DROP TABLE IF EXISTS resilience_replay; "
            "CREATE TABLE resilience_replay (x int); GRANT ALL ON resilience_replay TO app");
  PgConn victim = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(victim.get()), CONNECTION_OK) << login_error(victim.get());
  const std::string sleeper = "INSERT INTO resilience_replay SELECT 1 FROM pg_sleep(30)";
  ASSERT_EQ(PQsendQuery(victim.get(), sleeper.c_str()), 1);
  int backend = 0;
  ASSERT_TRUE(wait_for([&] { return (backend = active_backend_running(pg(), sleeper)) != 0; })) << log_tail();
  ASSERT_EQ(::kill(backend, SIGKILL), 0) << std::strerror(errno);

  ASSERT_TRUE(await_not_busy(victim.get())) << log_tail();
  const std::string errors = drain_errors(victim.get());
  std::printf("[ INFO     ] the client of the killed backend got: %s\n", errors.c_str());
  EXPECT_EQ(sqlstate_in_message(errors), "08006") << errors << log_tail();
  EXPECT_TRUE(contains(errors, "server connection lost")) << errors << log_tail();
  EXPECT_TRUE(await_closed(victim.get())) << log_tail();

  // PostgreSQL restarts its backends after the crash; Sluice serves again without a restart.
  Probe last;
  EXPECT_TRUE(wait_for([&] { return (last = probe(conninfo(), "SELECT 1", 30s)).ok; }, 60s))
      << last.error << log_tail();
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM resilience_replay"), "0") << "the statement was replayed";
  pg().exec("DROP TABLE resilience_replay");
  expect_settled({"app"}, 3);
}

// ---------------------------------------------------------------------------------------------
// 3. A backend that accepts and never answers: server_connect bounds the login.

TEST_P(ModeTest, BackendThatNeverAnswersFailsTheLoginAfterServerConnect) {
  BlackHoleListener hole;
  std::string toml = set_sluice_test_database(config(GetParam(), 2),
                                              "host = \"127.0.0.1\"\nport = " + std::to_string(hole.port()));
  toml += "\n[timeouts]\nserver_connect = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  const Probe p = probe(conninfo(), "SELECT 1", 90s);
  std::printf("[ INFO     ] client refused after %.3f s: %s\n", p.seconds, p.error.c_str());
  EXPECT_FALSE(p.ok);
  EXPECT_EQ(sqlstate_in_message(p.error), "08006") << p.error << log_tail();
  EXPECT_TRUE(contains(p.error, "server_connect")) << p.error << log_tail();
  EXPECT_TRUE(contains(p.error, "timed out")) << p.error << log_tail();
  EXPECT_TRUE(contains(p.error, "127.0.0.1:" + std::to_string(hole.port()))) << p.error << log_tail();
  EXPECT_GE(hole.accepted(), 1);
  // A database with a working backend is unaffected.
  const Probe other = probe(sluice_->conninfo("sluice_other", "app", "app_pw"));
  EXPECT_TRUE(other.ok) << other.error << log_tail();
  expect_settled({"app"}, 0);
}

// ---------------------------------------------------------------------------------------------
// 4. [timeouts] query: the statement is cancelled (PostgreSQL's 57014), the connection stays usable.

TEST_P(ModeTest, StatementPastQueryTimeoutIsCancelledAndTheConnectionStaysUsable) {
  std::string toml = config(GetParam(), 2);
  toml += "\n[timeouts]\nquery = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  PgConn conn = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << login_error(conn.get());
  EXPECT_EQ(value_of(conn.get(), "SELECT count(*) FROM pg_sleep(0.2)"), "1") << "a short statement was touched";
  const auto start_time = Clock::now();
  PgResult r(PQexec(conn.get(), "SELECT pg_sleep(10)"));
  std::printf("[ INFO     ] pg_sleep(10) ended after %.3f s: %s\n", seconds_since(start_time),
              describe_result(conn.get(), r.get()).c_str());
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << log_tail();
  EXPECT_EQ(sqlstate_of(r.get()), "57014") << describe_result(conn.get(), r.get()) << log_tail();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << login_error(conn.get());
  EXPECT_EQ(value_of(conn.get(), "SELECT 1"), "1") << log_tail();
  EXPECT_EQ(value_of(conn.get(), "SELECT 'still in step'"), "still in step") << log_tail();
  conn.reset();
  expect_settled({"app"}, 2);
}

// ---------------------------------------------------------------------------------------------
// 5. query_wait while the pool's only connection runs a long statement (transaction mode; the
//    session-mode and BEGIN-held variants are in relay_safety_test).

TEST_F(ResilienceTest, QueryWaitWhileTheOnlyConnectionRunsALongStatement) {
  std::string toml = config("transaction", 1);
  toml += "\n[timeouts]\nquery_wait = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  PgConn holder = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK) << login_error(holder.get());
  const std::string sleeper = "SELECT pg_sleep(30) /* holder */";
  ASSERT_EQ(PQsendQuery(holder.get(), sleeper.c_str()), 1);
  ASSERT_TRUE(wait_for([&] { return active_backend_running(pg(), sleeper) != 0; })) << log_tail();

  const Probe waiter = probe(conninfo());
  std::printf("[ INFO     ] waiter refused after %.3f s: %s\n", waiter.seconds, waiter.error.c_str());
  EXPECT_FALSE(waiter.ok);
  EXPECT_EQ(sqlstate_in_message(waiter.error), "57014") << waiter.error << log_tail();
  EXPECT_TRUE(contains(waiter.error, "no server connection available for sluice_test/app within query_wait (1s)"))
      << waiter.error;

  // The holder's statement is cancelled through Sluice; then the pool serves again.
  char errbuf[256];
  std::unique_ptr<PGcancel, void (*)(PGcancel*)> cancel(PQgetCancel(holder.get()), PQfreeCancel);
  ASSERT_EQ(PQcancel(cancel.get(), errbuf, sizeof errbuf), 1) << errbuf;
  ASSERT_TRUE(await_not_busy(holder.get())) << log_tail();
  PgResult cancelled(PQgetResult(holder.get()));
  EXPECT_EQ(sqlstate_of(cancelled.get()), "57014") << describe_result(holder.get(), cancelled.get());
  while (PGresult* extra = PQgetResult(holder.get())) PQclear(extra);
  EXPECT_EQ(value_of(holder.get(), "SELECT 1"), "1") << log_tail();
  const Probe next = probe(conninfo());
  EXPECT_TRUE(next.ok) << next.error << log_tail();
  holder.reset();
  expect_settled({"app"}, 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Clients: idle_transaction, client_idle, client_login, max_client_conn.

TEST_P(ModeTest, ClientIdleInATransactionGets25P03AndItsServerIsReused) {
  std::string toml = config(GetParam(), 1);
  toml += "\n[timeouts]\nidle_transaction = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  PgConn idle = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(idle.get()), CONNECTION_OK) << login_error(idle.get());
  std::string notices;
  collect_notices(idle.get(), &notices);
  ASSERT_TRUE(command_ok(idle.get(), "BEGIN"));
  ASSERT_EQ(value_of(idle.get(), "SELECT 1"), "1");
  ASSERT_TRUE(await_closed(idle.get())) << log_tail();
  const std::string told = notices + PQerrorMessage(idle.get());
  EXPECT_EQ(sqlstate_in_message(told), "25P03") << told << log_tail();
  EXPECT_TRUE(contains(told, "idle_transaction")) << told;
  const Probe next = probe(conninfo());
  EXPECT_TRUE(next.ok) << next.error << log_tail();
  EXPECT_EQ(try_backend_count(pg(), "app", "idle in transaction"), 0);
  idle.reset();
  expect_settled({"app"}, 1);
}

// Transaction mode: a parked client (no server); session mode: a client holding its server outside
// a transaction. A statement running longer than client_idle is not idleness.
TEST_P(ModeTest, ClientIdlePastClientIdleGets57P05AndIsClosed) {
  std::string toml = config(GetParam(), 2);
  toml += "\n[timeouts]\nclient_idle = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  PgConn client = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(client.get()), CONNECTION_OK) << login_error(client.get()) << log_tail();
  std::string notices;
  collect_notices(client.get(), &notices);
  EXPECT_EQ(value_of(client.get(), "SELECT count(*) FROM pg_sleep(1.5)"), "1")
      << "a statement in flight counted as idleness" << log_tail();
  const auto idle_since = Clock::now();
  ASSERT_TRUE(await_closed(client.get())) << "not closed while idle" << log_tail();
  std::printf("[ INFO     ] idle client closed %.3f s after its last statement\n", seconds_since(idle_since));
  const std::string told = notices + PQerrorMessage(client.get());
  EXPECT_EQ(sqlstate_in_message(told), "57P05") << told << log_tail();
  EXPECT_TRUE(contains(told, "terminating connection due to idle-session timeout")) << told;
  EXPECT_TRUE(contains(told, "client_idle")) << told;
  // Its server connection (session mode) went back to the pool or was closed: either way the
  // next client is served and nothing is left behind.
  const Probe next = probe(conninfo());
  EXPECT_TRUE(next.ok) << next.error << log_tail();
  client.reset();
  expect_settled({"app"}, 2);
}

TEST_F(ResilienceTest, ClientThatNeverFinishesItsStartupPacketIsClosedAfterClientLogin) {
  std::string toml = config("session", 1);
  toml += "\n[timeouts]\nclient_login = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  const int fd = raw_connect(sluice_->port());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  // The first 6 bytes of a 41-byte StartupMessage, then nothing.
  const unsigned char half[] = {0, 0, 0, 41, 0, 3};
  ASSERT_EQ(::send(fd, half, sizeof half, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof half));
  const auto sent_at = Clock::now();
  ssize_t got = -1;
  const bool closed = wait_for(
      [&] {
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, 100) <= 0) return false;
        char byte;
        got = ::recv(fd, &byte, 1, MSG_DONTWAIT);
        return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
      },
      30s);
  std::printf("[ INFO     ] half a startup packet: closed after %.3f s\n", seconds_since(sent_at));
  ::close(fd);
  EXPECT_TRUE(closed) << "Sluice kept the half-logged-in connection open" << log_tail();
  EXPECT_LE(got, 0) << "Sluice sent bytes to a client that has not finished its startup packet";
  const Probe next = probe(conninfo());
  EXPECT_TRUE(next.ok) << next.error << log_tail();
  expect_settled({"app"}, 1);
}

TEST_F(ResilienceTest, ClientBeyondMaxClientConnGets53300) {
  std::string toml = add_to(config("transaction", 2), "[sluice]", "max_client_conn = 2");
  ASSERT_TRUE(start(toml));
  std::vector<PgConn> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(connect_verbose(conninfo()));
    ASSERT_EQ(PQstatus(clients.back().get()), CONNECTION_OK) << login_error(clients.back().get());
    ASSERT_EQ(value_of(clients.back().get(), "SELECT 1"), "1");
  }
  const Probe third = probe(conninfo());
  EXPECT_FALSE(third.ok);
  EXPECT_EQ(sqlstate_in_message(third.error), "53300") << third.error << log_tail();
  EXPECT_TRUE(contains(third.error, "sorry, too many clients already")) << third.error;
  for (auto& c : clients) EXPECT_EQ(value_of(c.get(), "SELECT 2"), "2") << "an admitted client was disturbed";
  clients.pop_back();
  Probe again;
  EXPECT_TRUE(wait_for([&] { return (again = probe(conninfo())).ok; })) << again.error << log_tail();
  clients.clear();
  expect_settled({"app"}, 2);
}

// ---------------------------------------------------------------------------------------------
// 7. server_lifetime / server_idle: backends are recycled.

TEST_P(ModeTest, ServerLifetimeRecyclesBackendsButNeverWhileInUse) {
  std::string toml = config(GetParam(), 2);
  toml += "\n[timeouts]\nserver_lifetime = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  PgConn client = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(client.get()), CONNECTION_OK) << login_error(client.get());
  // In use (a transaction; in session mode the whole session) past its lifetime: kept.
  ASSERT_TRUE(command_ok(client.get(), "BEGIN"));
  const std::string first = value_of(client.get(), "SELECT pg_backend_pid()");
  ASSERT_EQ(first.find("<error"), std::string::npos) << first;
  EXPECT_EQ(value_of(client.get(), "SELECT count(*) FROM pg_sleep(1.5)"), "1") << log_tail();
  EXPECT_EQ(value_of(client.get(), "SELECT pg_backend_pid()"), first) << "closed while in use" << log_tail();
  EXPECT_TRUE(command_ok(client.get(), "COMMIT")) << PQerrorMessage(client.get());
  client.reset();  // released: now it must go
  const int old_pid = std::stoi(first);
  EXPECT_TRUE(wait_for([&] {
    const auto pids = backend_pids(pg(), "app", kDb);
    return std::find(pids.begin(), pids.end(), old_pid) == pids.end();
  })) << "backend " << old_pid << " outlived server_lifetime" << log_tail();
  const Probe next = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(next.ok) << next.error << log_tail();
  EXPECT_NE(next.value, first);
  expect_settled({"app"}, 2);
}

TEST_P(ModeTest, ServerIdleClosesIdleBackends) {
  std::string toml = config(GetParam(), 2);
  toml += "\n[timeouts]\nserver_idle = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  const Probe first = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(first.ok) << first.error << log_tail();
  const int old_pid = std::stoi(first.value);
  EXPECT_TRUE(wait_for([&] {
    const auto pids = backend_pids(pg(), "app", kDb);
    return std::find(pids.begin(), pids.end(), old_pid) == pids.end();
  })) << "idle backend " << old_pid << " outlived server_idle" << log_tail();
  EXPECT_EQ(try_backend_count(pg(), "app"), 0);
  const Probe next = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(next.ok) << next.error << log_tail();
  EXPECT_NE(next.value, first.value);
  expect_settled({"app"}, 2);
}

// ---------------------------------------------------------------------------------------------
// 8. pool.min_size, reserve_size / reserve_timeout.

TEST_P(ModeTest, MinSizeConnectionsAreOpenedAndKeptPastServerIdle) {
  std::string toml = add_to(config(GetParam(), 5), "[pool]", "min_size = 3");
  toml += "\n[timeouts]\nserver_idle = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  const Probe first = probe(conninfo());  // creates the pool
  ASSERT_TRUE(first.ok) << first.error << log_tail();
  int count = -1;
  EXPECT_TRUE(wait_for([&] { return (count = try_backend_count(pg(), "app")) >= 3; }))
      << count << " backends; min_size is 3" << log_tail();
  // Five at once, then idle: server_idle closes them down to min_size, not below.
  {
    std::vector<PgConn> holders;
    for (int i = 0; i < 5; ++i) {
      holders.push_back(connect_verbose(conninfo()));
      ASSERT_EQ(PQstatus(holders.back().get()), CONNECTION_OK) << login_error(holders.back().get());
      ASSERT_TRUE(command_ok(holders.back().get(), "BEGIN"));
      ASSERT_EQ(value_of(holders.back().get(), "SELECT 1"), "1") << log_tail();
    }
    EXPECT_EQ(try_backend_count(pg(), "app"), 5);
    for (auto& h : holders) EXPECT_TRUE(command_ok(h.get(), "COMMIT"));
  }
  EXPECT_TRUE(wait_for([&] { return (count = try_backend_count(pg(), "app")) == 3; }))
      << count << " backends after server_idle; expected min_size (3)" << log_tail();
  // And it stays there (the janitor neither closes below min_size nor opens more): checked
  // across another server_idle period, measured by a statement that takes that long.
  const Probe later = probe(conninfo(), "SELECT count(*) FROM pg_sleep(1.5)");
  EXPECT_TRUE(later.ok) << later.error;
  EXPECT_TRUE(wait_for([&] { return (count = try_backend_count(pg(), "app")) == 3; }))
      << count << " backends; expected min_size (3)" << log_tail();
  expect_settled({"app"}, 5);
}

TEST_P(ModeTest, ClientWaitingReserveTimeoutGetsAReserveConnection) {
  std::string toml = add_to(config(GetParam(), 1), "[pool]", "reserve_size = 1\nreserve_timeout = \"500ms\"");
  toml += "\n[timeouts]\nquery_wait = \"10s\"\n";
  ASSERT_TRUE(start(toml));
  PgConn holder = connect_verbose(conninfo());
  ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK) << login_error(holder.get());
  ASSERT_TRUE(command_ok(holder.get(), "BEGIN"));  // holds the pool's only connection
  const std::string held = value_of(holder.get(), "SELECT pg_backend_pid()");
  const Probe waiter = probe(conninfo(), "SELECT pg_backend_pid()");
  std::printf("[ INFO     ] waiter served after %.3f s (reserve_timeout 500ms)\n", waiter.seconds);
  ASSERT_TRUE(waiter.ok) << waiter.error << log_tail();
  EXPECT_NE(waiter.value, held) << "served by the held connection?";
  EXPECT_TRUE(command_ok(holder.get(), "COMMIT"));
  holder.reset();
  expect_settled({"app"}, 2);
}

// ---------------------------------------------------------------------------------------------
// 9. max_db_connections across two users' pools.

// Six clients over two pools under a shared cap of 2 (max_db_connections or
// max_user_connections): never more than 2 backends, and every client finishes.
// `backends_where` selects the capped backends in pg_stat_activity; each client is
// (database, user, password).
void ResilienceTest::check_shared_cap(const std::string& what, const std::string& backends_where,
                                      const std::vector<CapClient>& specs) {
  std::atomic<bool> done{false};
  int max_active = 0;
  int max_lasting = 0;  // more than 2 backends that are all still there 200 ms later
  std::string worst;
  std::thread sampler([&] {
    const std::string sql =
        "SELECT coalesce(string_agg(pid || ':' || coalesce(state, ''), ',' ORDER BY pid), '') FROM pg_stat_activity "
        "WHERE " + backends_where + " AND backend_type = 'client backend'";
    auto sample = [&](std::set<int>& pids, int& active) {
      pids.clear();
      active = 0;
      std::stringstream in(pg().query_value(sql, "postgres"));
      for (std::string item; std::getline(in, item, ',');) {
        const auto colon = item.find(':');
        if (colon == std::string::npos) continue;
        pids.insert(std::stoi(item.substr(0, colon)));
        if (item.substr(colon + 1) == "active") ++active;
      }
    };
    while (!done) {
      try {
        std::set<int> pids;
        int active = 0;
        sample(pids, active);
        max_active = std::max(max_active, active);
        if (pids.size() > 2) {
          // A backend Sluice has just closed may still be listed for a moment: count only those
          // still there a little later.
          std::this_thread::sleep_for(200ms);
          std::set<int> later;
          int ignored = 0;
          sample(later, ignored);
          int lasting = 0;
          for (int pid : pids) lasting += later.count(pid) ? 1 : 0;
          if (lasting > max_lasting) {
            max_lasting = lasting;
            worst = std::to_string(pids.size()) + " backends, " + std::to_string(lasting) + " still there 200 ms later";
          }
        }
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(10ms);
    }
  });

  std::vector<std::string> errors(specs.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const std::string info = sluice_->conninfo(specs[i].database, specs[i].user, specs[i].password);
    clients.emplace_back([&errors, i, info] {
      PgConn c = connect_verbose(info, 30s);
      if (PQstatus(c.get()) != CONNECTION_OK) {
        errors[i] = login_error(c.get());
        return;
      }
      for (int round = 0; round < 2; ++round) {
        const std::string v = value_of(c.get(), "SELECT count(*) FROM pg_sleep(0.3)");
        if (v != "1") {
          errors[i] = v;
          return;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  done = true;
  sampler.join();
  std::printf("[ INFO     ] %s = 2: at most %d backends running a statement at once; %s\n", what.c_str(), max_active,
              worst.empty() ? "never more than 2 backends" : worst.c_str());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(errors[i], "") << specs[i].database << "/" << specs[i].user << log_tail();
  }
  EXPECT_LE(max_active, 2) << log_tail();
  EXPECT_LE(max_lasting, 2) << worst << log_tail();
  EXPECT_GE(max_active, 1);
}

TEST_F(ResilienceTest, MaxDbConnectionsCapsBackendsAcrossUsersPools) {
  std::string toml = set_sluice_test_database(config("transaction", 5),
                                              "host = \"{pg_host}\"\nport = {pg_port}\nmax_db_connections = 2");
  toml += "\n[timeouts]\nquery_wait = \"20s\"\n";
  ASSERT_TRUE(start(toml));
  std::vector<CapClient> specs;
  for (int i = 0; i < 6; ++i) {
    specs.push_back(i % 2 == 0 ? CapClient{kDb, "app", "app_pw"} : CapClient{kDb, "md5user", "md5_pw"});
  }
  check_shared_cap("max_db_connections", "datname = 'sluice_test' AND usename IN ('app', 'md5user')", specs);
  expect_settled({"app", "md5user"}, 2);
}

TEST_F(ResilienceTest, MaxUserConnectionsCapsBackendsAcrossDatabasesPools) {
  std::string toml = add_to(config("transaction", 5), "[users.app]", "max_user_connections = 2");
  toml += "\n[timeouts]\nquery_wait = \"20s\"\n";
  ASSERT_TRUE(start(toml));
  std::vector<CapClient> specs;
  for (int i = 0; i < 6; ++i) {
    specs.push_back(CapClient{i % 2 == 0 ? "sluice_test" : "sluice_other", "app", "app_pw"});
  }
  check_shared_cap("max_user_connections", "usename = 'app' AND datname IN ('sluice_test', 'sluice_other')", specs);
  expect_settled({"app"}, 2);
}

// ---------------------------------------------------------------------------------------------
// 10. Two hosts: traffic spreads; one stopped, the other takes everything; back, used again.

TEST_F(ResilienceTest, TwoHostsSpreadFailOverAndComeBack) {
  PostgresServer* second = nullptr;
  ASSERT_NO_THROW(second = &PostgresServer::secondary());
  ASSERT_TRUE(wait_for([&] { return sluice_backends(*second) == 0; }, 30s));
  const std::string first_port = std::to_string(pg().port());
  const std::string second_port = std::to_string(second->port());
  std::string toml = set_sluice_test_database(
      config("transaction", 4), "hosts = [\"127.0.0.1:" + first_port + "\", \"127.0.0.1:" + second_port + "\"]");
  // Connections are recycled after a second, so that new ones are opened all along and the
  // round-robin has a chance to pick the host that comes back.
  toml += "\n[timeouts]\nserver_lifetime = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  const std::vector<const PostgresServer*> both = {&pg(), second};

  // Four transactions at once hold four connections: both hosts get some.
  auto concurrent_ports = [&](int n, std::string& error) {
    std::vector<PgConn> holders;
    std::set<std::string> ports;
    for (int i = 0; i < n; ++i) {
      holders.push_back(connect_verbose(conninfo()));
      PGconn* c = holders.back().get();
      if (PQstatus(c) != CONNECTION_OK) {
        error += login_error(c);
        continue;
      }
      if (!command_ok(c, "BEGIN")) {
        error += PQerrorMessage(c);
        continue;
      }
      const std::string port = value_of(c, "SELECT inet_server_port()");
      if (port.find("<error") != std::string::npos) {
        error += port;
        continue;
      }
      ports.insert(port);
    }
    for (auto& h : holders) {
      if (PQstatus(h.get()) == CONNECTION_OK) command_ok(h.get(), "COMMIT");
    }
    return ports;
  };
  std::string error;
  const auto spread = concurrent_ports(4, error);
  EXPECT_EQ(error, "") << log_tail();
  EXPECT_EQ(spread.count(first_port), 1u) << "no transaction on " << first_port << log_tail();
  EXPECT_EQ(spread.count(second_port), 1u) << "no transaction on " << second_port << log_tail();

  stop_immediate(*second);
  const auto stopped_at = Clock::now();
  // Until Sluice has noticed, a client may fail (it may have been on the stopped host).
  int failures_before_detection = 0;
  Probe last;
  EXPECT_TRUE(wait_for(
      [&] {
        last = probe(conninfo(), "SELECT inet_server_port()", 30s);
        if (!last.ok) ++failures_before_detection;
        return last.ok;
      },
      60s))
      << last.error << log_tail();
  std::printf("[ INFO     ] second host stopped: first success %.3f s later, after %d failed clients%s%s\n",
              seconds_since(stopped_at), failures_before_detection, failures_before_detection ? "; last: " : "",
              failures_before_detection ? last.error.c_str() : "");
  // From then on no new client sees an error, and everything runs on the first host.
  for (int i = 0; i < 20; ++i) {
    const Probe p = probe(conninfo(), "SELECT inet_server_port()", 30s);
    EXPECT_TRUE(p.ok) << "client " << i << " after failover: " << p.error << log_tail();
    if (p.ok) {
      EXPECT_EQ(p.value, first_port);
    }
  }
  error.clear();
  const auto during = concurrent_ports(4, error);
  EXPECT_EQ(error, "") << log_tail();
  EXPECT_EQ(during, std::set<std::string>{first_port}) << log_tail();

  second->start_again();
  const auto up_at = Clock::now();
  int rounds = 0;
  std::string recovery_errors;
  const bool back = wait_for(
      [&] {
        ++rounds;
        std::string e;
        const auto ports = concurrent_ports(4, e);
        recovery_errors += e;
        return ports.count(second_port) == 1;
      },
      60s);
  std::printf("[ INFO     ] second host accepted logins again; used again %.3f s later (%d rounds)\n",
              seconds_since(up_at), rounds);
  EXPECT_TRUE(back) << "the second host was not used again" << log_tail();
  EXPECT_EQ(recovery_errors, "") << log_tail();
  expect_settled({"app"}, 4, both);
}

// A client queued for the pool's only connection, which its holder keeps in a transaction.
// Its request is sent at once, and it is queued once Sluice says so. In transaction mode
// this is the lone exchange's wait without a coroutine (Pool::enqueue), whose outcomes
// other than a released connection go through Pool::acquire_served.
struct QueuedBehindHolder {
  PgConn holder;
  std::string held_pid;
  PgConn waiter;
};

void queue_behind_holder(QueuedBehindHolder& q, const std::string& conninfo, const SluiceProcess& sluice) {
  q.holder = connect_verbose(conninfo);
  ASSERT_EQ(PQstatus(q.holder.get()), CONNECTION_OK) << login_error(q.holder.get());
  ASSERT_TRUE(command_ok(q.holder.get(), "BEGIN"));
  q.held_pid = value_of(q.holder.get(), "SELECT pg_backend_pid()");
  q.waiter = connect_verbose(conninfo);
  ASSERT_EQ(PQstatus(q.waiter.get()), CONNECTION_OK) << login_error(q.waiter.get());
  const auto logged = sluice.log().size();
  ASSERT_EQ(PQsendQuery(q.waiter.get(), "SELECT pg_backend_pid()"), 1);
  ASSERT_TRUE(wait_for([&] { return sluice.log().find("waiting for a server connection", logged) != std::string::npos; }))
      << tail_lines(sluice.log(), 40);
}

bool is_number(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The waiter's answer: the backend pid that served it, or the error.
std::string waiter_answer(PGconn* waiter) {
  if (!await_not_busy(waiter)) return "still busy";
  PgResult r(PQgetResult(waiter));
  std::string answer = PQresultStatus(r.get()) == PGRES_TUPLES_OK ? PQgetvalue(r.get(), 0, 0)
                                                                   : describe_result(waiter, r.get());
  while (PGresult* extra = PQgetResult(waiter)) PQclear(extra);
  return answer;
}

TEST_P(ModeTest, AQueuedClientGetsANewConnectionWhenTheHeldOneDies) {
  std::string toml = config(GetParam(), 1);
  toml += "\n[timeouts]\nquery_wait = \"20s\"\n";
  ASSERT_TRUE(start(toml));
  QueuedBehindHolder q;
  queue_behind_holder(q, conninfo(), *sluice_);
  if (HasFatalFailure()) return;
  // The slot of the connection that dies goes to the waiter, which opens another.
  pg().exec("SELECT pg_terminate_backend(" + q.held_pid + ")", "postgres");
  const std::string answer = waiter_answer(q.waiter.get());
  EXPECT_TRUE(is_number(answer)) << answer << log_tail();
  EXPECT_NE(answer, q.held_pid);
  EXPECT_EQ(value_of(q.waiter.get(), "SELECT 'next'"), "next") << log_tail();
  q.holder.reset();
  q.waiter.reset();
  expect_settled({"app"}, 1);
}

TEST_P(ModeTest, AConnectionReleasedToAQueuedClientIsCheckedPastCheckDelay) {
  std::string toml = config(GetParam(), 1);
  // Every checkout is due for a check, which fails: the released connection is closed
  // rather than handed to the waiter, which gets a new one. (A connection just opened
  // is not checked, so the holder gets one.)
  toml += "\n[health]\ncheck_query = \"SELECT 1/0\"\ncheck_delay = \"0s\"\n";
  toml += "\n[timeouts]\nquery_wait = \"20s\"\n";
  ASSERT_TRUE(start(toml));
  QueuedBehindHolder q;
  queue_behind_holder(q, conninfo(), *sluice_);
  if (HasFatalFailure()) return;
  const auto logged = sluice_->log().size();
  if (GetParam() == "transaction") {
    ASSERT_TRUE(command_ok(q.holder.get(), "COMMIT"));  // released, clean
  } else {
    q.holder.reset();  // a session's server is released when it ends
  }
  const std::string answer = waiter_answer(q.waiter.get());
  EXPECT_TRUE(is_number(answer)) << answer << log_tail();
  EXPECT_NE(answer, q.held_pid) << "handed the released connection without its check" << log_tail();
  EXPECT_NE(sluice_->log().find("failed its health check", logged), std::string::npos) << log_tail();
  q.holder.reset();
  q.waiter.reset();
  expect_settled({"app"}, 1);
}

// ---------------------------------------------------------------------------------------------
// 11. Health check of a pooled connection idle past check_delay.

TEST_P(ModeTest, HealthCheckDiscardsADeadPooledConnectionAndKeepsALiveOne) {
  std::string toml = config(GetParam(), 1);
  toml += "\n[health]\ncheck_query = \"SELECT 1\"\ncheck_delay = \"100ms\"\n";
  ASSERT_TRUE(start(toml));
  const Probe first = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(first.ok) << first.error << log_tail();
  ASSERT_TRUE(wait_for([&] { return try_backend_count(pg(), "app", "idle") == 1; })) << log_tail();
  pg().exec("SELECT pg_terminate_backend(" + first.value + ")", "postgres");
  ASSERT_TRUE(wait_for([&] { return try_backend_count(pg(), "app") == 0; }));
  const auto dead_at = Clock::now();
  // The pooled connection has been idle past check_delay (a precondition, not a hope).
  ASSERT_TRUE(wait_for([&] { return seconds_since(dead_at) > 0.3; }));
  const Probe second = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(second.ok) << "the client saw the dead connection: " << second.error << log_tail();
  EXPECT_NE(second.value, first.value);
  // A live connection idle past check_delay passes its check and is handed out (pool of one).
  ASSERT_TRUE(wait_for([&] { return try_backend_count(pg(), "app", "idle") == 1; })) << log_tail();
  const auto idle_at = Clock::now();
  ASSERT_TRUE(wait_for([&] { return seconds_since(idle_at) > 0.3; }));
  const Probe third = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(third.ok) << third.error << log_tail();
  EXPECT_EQ(third.value, second.value) << "a healthy connection was discarded";
  expect_settled({"app"}, 1);
}

// A backend that hangs (SIGSTOP: its socket stays open and silent, so a peek at checkout sees
// nothing wrong): the check_query of a connection idle past check_delay gets no answer within
// server_connect, the connection is discarded and the client is served by a new one.
TEST_P(ModeTest, HealthCheckDiscardsAHungPooledConnection) {
  std::string toml = config(GetParam(), 1);
  toml += "\n[health]\ncheck_delay = \"100ms\"\n[timeouts]\nserver_connect = \"1s\"\n";
  ASSERT_TRUE(start(toml));
  const Probe first = probe(conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(first.ok) << first.error << log_tail();
  ASSERT_TRUE(wait_for([&] { return try_backend_count(pg(), "app", "idle") == 1; })) << log_tail();
  const int hung = std::stoi(first.value);
  struct Resume {  // the backend is let go (and ends: Sluice closed its socket) whatever happens
    int pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{hung};
  ASSERT_EQ(::kill(hung, SIGSTOP), 0) << std::strerror(errno);
  const auto stopped_at = Clock::now();
  ASSERT_TRUE(wait_for([&] { return seconds_since(stopped_at) > 0.3; }));  // idle past check_delay
  const Probe second = probe(conninfo(), "SELECT pg_backend_pid()", 30s);
  std::printf("[ INFO     ] served %.3f s after asking (the check waits up to server_connect, 1s)\n", second.seconds);
  ASSERT_TRUE(second.ok) << "the client got the hung connection: " << second.error << log_tail();
  EXPECT_NE(std::stoi(second.value), hung);
  ::kill(hung, SIGCONT);
  EXPECT_TRUE(wait_for([&] {
    const auto pids = backend_pids(pg(), "app", kDb);
    return std::find(pids.begin(), pids.end(), hung) == pids.end();
  })) << "Sluice kept the hung backend's connection open" << log_tail();
  expect_settled({"app"}, 1);
}

INSTANTIATE_TEST_SUITE_P(Modes, ModeTest, ::testing::Values("session", "transaction"), mode_name);

}  // namespace
}  // namespace sluice::test
