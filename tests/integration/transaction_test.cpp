// Transaction and statement pooling through Sluice, with real libpq clients and pgbench
// against a real PostgreSQL 15: many clients on few server connections, transactions that
// hold their server until they end, pipelines, COPY, notices, cancel, clients that vanish
// mid-transaction, tracked parameters (TimeZone, application_name, ...) that follow a
// client from one server connection to another, and statement mode's refusal of
// transaction blocks.
//
// Every test starts its own Sluice and uses its own database (or user), so that the pool
// caps asserted through pg_stat_activity count only that test's backends. Every wait is
// bounded and polls a condition; nothing sleeps and hopes, and no test asserts a tight
// timing. Where "a client must wait" is checked, it is checked while another client's
// round trips prove that Sluice has been working in the meantime, and the waiting query's
// result must show that it ran after the transaction it waited for.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kUser = "app";
constexpr const char* kPassword = "app_pw";
// Bound for a result that should come at once (or as soon as another client lets go).
constexpr std::chrono::milliseconds kResultBound = 60s;

PostgresServer& pg() { return PostgresServer::shared(); }

// ---------------------------------------------------------------------------
// libpq helpers (all bounded: a pool that never hands out a server fails the test
// instead of hanging the binary)
// ---------------------------------------------------------------------------
// Waits (bounded) until libpq has a complete result buffered; false on timeout. A broken
// connection counts as "not busy": PQgetResult then reports it without blocking.
bool await_not_busy(PGconn* c, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (PQisBusy(c)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) return false;
    pollfd pfd{PQsocket(c), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 200)));
    if (!PQconsumeInput(c)) return true;
  }
  return true;
}

// The next result, or nullptr if none arrived within `timeout` (or there is none).
PgResult next_result_within(PGconn* c, std::chrono::milliseconds timeout = kResultBound) {
  if (!await_not_busy(c, timeout)) return nullptr;
  return PgResult(PQgetResult(c));
}

// All results of the query in flight, up to the end (bounded); nullopt on timeout.
std::optional<std::vector<PgResult>> collect(PGconn* c, std::chrono::milliseconds timeout = kResultBound) {
  std::vector<PgResult> results;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (!await_not_busy(c, std::max(left, 0ms))) return std::nullopt;
    PgResult r(PQgetResult(c));
    if (!r) return results;
    // COPY states never end by themselves; callers that expect them handle them.
    const auto status = PQresultStatus(r.get());
    results.push_back(std::move(r));
    if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH) return results;
  }
}

// Sends `sql` and returns its last result; throws on a send failure or timeout.
PgResult query(PGconn* c, const std::string& sql, std::chrono::milliseconds timeout = kResultBound) {
  if (!PQsendQuery(c, sql.c_str())) throw std::runtime_error("`" + sql + "` not sent: " + PQerrorMessage(c));
  auto results = collect(c, timeout);
  if (!results) throw std::runtime_error("`" + sql + "`: no complete answer within the bound");
  if (results->empty()) throw std::runtime_error("`" + sql + "`: no result: " + PQerrorMessage(c));
  return std::move(results->back());
}

// PQexecParams, bounded (unnamed statement, extended protocol).
PgResult query_params(PGconn* c, const std::string& sql, const std::vector<std::string>& params,
                      std::chrono::milliseconds timeout = kResultBound) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  if (!PQsendQueryParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr,
                         0)) {
    throw std::runtime_error("`" + sql + "` not sent: " + PQerrorMessage(c));
  }
  auto results = collect(c, timeout);
  if (!results) throw std::runtime_error("`" + sql + "`: no complete answer within the bound");
  if (results->empty()) throw std::runtime_error("`" + sql + "`: no result: " + PQerrorMessage(c));
  return std::move(results->back());
}

void exec_ok(PGconn* c, const std::string& sql) {
  PgResult r = query(c, sql);
  const auto status = PQresultStatus(r.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error("`" + sql + "` failed: " + describe_result(c, r.get()));
  }
}

// First column of the first row; throws unless it succeeds with at least one row.
std::string value(PGconn* c, const std::string& sql) {
  PgResult r = query(c, sql);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) < 1) {
    throw std::runtime_error("`" + sql + "` failed: " + describe_result(c, r.get()));
  }
  return PQgetvalue(r.get(), 0, 0);
}

// All columns of the first row.
std::vector<std::string> row(PGconn* c, const std::string& sql) {
  PgResult r = query(c, sql);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) < 1) {
    throw std::runtime_error("`" + sql + "` failed: " + describe_result(c, r.get()));
  }
  std::vector<std::string> out;
  for (int i = 0; i < PQnfields(r.get()); ++i) {
    out.emplace_back(PQgetisnull(r.get(), 0, i) ? "<null>" : PQgetvalue(r.get(), 0, i));
  }
  return out;
}

long long backend_pid(PGconn* c) { return std::stoll(value(c, "SELECT pg_backend_pid()")); }

PgConn connect_ok(const std::string& conninfo) {
  PgConn c = connect(conninfo);
  if (!c || PQstatus(c.get()) != CONNECTION_OK) {
    throw std::runtime_error("connection failed (" + conninfo + "): " +
                             (c ? PQerrorMessage(c.get()) : std::string("null PGconn")));
  }
  return c;
}

// Whether libpq is still waiting for the answer to what was sent (reads what arrived).
bool still_waiting(PGconn* c) {
  if (!PQconsumeInput(c)) return false;
  return PQisBusy(c) != 0;
}

// Reads until the server closes the connection (bounded).
bool wait_until_closed(PGconn* c, std::chrono::milliseconds timeout = 20s) {
  return wait_for(
      [&] {
        if (PQstatus(c) == CONNECTION_BAD) return true;
        if (!PQconsumeInput(c)) return true;
        while (!PQisBusy(c)) {  // results nobody asked for: drop them
          PgResult r(PQgetResult(c));
          if (!r) break;
        }
        return PQstatus(c) == CONNECTION_BAD;
      },
      timeout);
}

// Notices and errors that reach the client outside of a result (NOTICE, WARNING, and an
// ErrorResponse that arrives while libpq has no query in flight).
struct Message {
  std::string severity;
  std::string sqlstate;
  std::string text;
};

class NoticeLog {
 public:
  void attach(PGconn* c) { PQsetNoticeReceiver(c, &NoticeLog::receive, this); }
  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  bool contains(const std::string& sqlstate, const std::string& severity, const std::string& text) const {
    std::lock_guard lock(mutex_);
    return std::any_of(messages_.begin(), messages_.end(), [&](const Message& m) {
      return m.sqlstate == sqlstate && m.severity == severity && m.text.find(text) != std::string::npos;
    });
  }
  std::string dump() const {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& m : messages_) out += m.severity + " [" + m.sqlstate + "] " + m.text + "\n";
    return out.empty() ? "(none)" : out;
  }

 private:
  static void receive(void* arg, const PGresult* r) {
    auto* self = static_cast<NoticeLog*>(arg);
    auto field = [&](int code) {
      const char* v = PQresultErrorField(r, code);
      return std::string(v ? v : "");
    };
    std::lock_guard lock(self->mutex_);
    self->messages_.push_back(
        {field(PG_DIAG_SEVERITY_NONLOCALIZED), field(PG_DIAG_SQLSTATE), field(PG_DIAG_MESSAGE_PRIMARY)});
  }
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
};

// ---------------------------------------------------------------------------
// PostgreSQL-side helpers (superuser, direct)
// ---------------------------------------------------------------------------
long long pg_count(const std::string& sql, const std::string& db = "postgres") {
  return std::stoll(pg().query_value(sql, db));
}

// A new, empty database owned by app.
void fresh_database(const std::string& db) {
  if (pg_count("SELECT count(*) FROM pg_database WHERE datname = '" + db + "'") != 0) {
    pg().exec("DROP DATABASE " + db + " WITH (FORCE)", "postgres");
  }
  pg().exec("CREATE DATABASE " + db + " OWNER app", "postgres");
}

// A table in `db` that `user` may use.
void create_table(const std::string& db, const std::string& table, const std::string& columns,
                  const std::string& user = kUser) {
  pg().exec("CREATE TABLE " + table + " (" + columns + "); GRANT ALL ON " + table + " TO " + user, db);
}

std::string backends_where(const std::string& db, const std::string& user) {
  return " FROM pg_stat_activity WHERE datname = '" + db + "' AND usename = '" + user +
         "' AND backend_type = 'client backend'";
}

long long backend_count(const std::string& db, const std::string& user = kUser) {
  return pg_count("SELECT count(*)" + backends_where(db, user));
}

long long idle_in_transaction_count(const std::string& db, const std::string& user = kUser) {
  return pg_count("SELECT count(*)" + backends_where(db, user) + " AND state LIKE 'idle in transaction%'");
}

long long active_with_marker(const std::string& marker) {
  return pg_count("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                  "AND query LIKE '%" + marker + "%'");
}

std::string superuser_socket_conninfo() {
  return "host='" + pg().socket_dir() + "' port=" + std::to_string(pg().port()) +
         " user=postgres dbname=postgres connect_timeout=60";
}

// Samples pg_stat_activity (direct superuser connection, its own thread) for the
// backends of one database and user while it lives: the most seen at once, and every
// pid seen.
class BackendSampler {
 public:
  BackendSampler(std::string db, std::string user) : db_(std::move(db)), user_(std::move(user)) {
    conn_ = connect(superuser_socket_conninfo());
    if (PQstatus(conn_.get()) != CONNECTION_OK) {
      error_ = std::string("sampler connection failed: ") + PQerrorMessage(conn_.get());
      return;
    }
    sample();  // at least one sample before the caller goes on
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        if (!sample()) return;
        std::this_thread::sleep_for(5ms);
      }
    });
  }
  ~BackendSampler() { stop(); }
  BackendSampler(const BackendSampler&) = delete;
  BackendSampler& operator=(const BackendSampler&) = delete;

  // Stops after one more sample.
  void stop() {
    if (stop_.exchange(true)) return;
    if (thread_.joinable()) thread_.join();
    if (error_.empty()) sample();
  }
  long long max() const {
    std::lock_guard lock(mutex_);
    return max_;
  }
  long long samples() const {
    std::lock_guard lock(mutex_);
    return samples_;
  }
  std::set<long long> pids() const {
    std::lock_guard lock(mutex_);
    return pids_;
  }
  std::string error() const {
    std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  bool sample() {
    const char* params[2] = {db_.c_str(), user_.c_str()};
    PgResult r(PQexecParams(conn_.get(),
                            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND usename = $2 "
                            "AND backend_type = 'client backend'",
                            2, nullptr, params, nullptr, nullptr, 0));
    std::lock_guard lock(mutex_);
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      error_ = std::string("sampler query failed: ") + PQerrorMessage(conn_.get());
      return false;
    }
    const long long n = PQntuples(r.get());
    max_ = std::max(max_, n);
    ++samples_;
    for (int i = 0; i < n; ++i) pids_.insert(std::stoll(PQgetvalue(r.get(), i, 0)));
    return true;
  }

  const std::string db_;
  const std::string user_;
  PgConn conn_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  long long max_ = 0;
  long long samples_ = 0;
  std::set<long long> pids_;
  std::string error_;
};

// ---------------------------------------------------------------------------
// Sluice configuration
// ---------------------------------------------------------------------------
// Global [pool] with `mode` and `size`, every database name routed to the shared
// PostgreSQL, user app (SCRAM); `extra` adds sections (per-database or per-user pools).
std::string pooling_config(const std::string& mode, int size, const std::string& extra = "",
                           const std::string& log_level = "debug", const std::string& pool_extra = "") {
  return R"([sluice]
listen = ["127.0.0.1:{listen_port}"]
log_level = ")" + log_level + R"("

[pool]
mode = ")" + mode + R"("
size = )" + std::to_string(size) + "\n" + pool_extra + R"(

[databases."*"]
host = "{pg_host}"
port = {pg_port}

[users.app]
auth = "scram-sha-256"
password = "app_pw"
)" + extra;
}

class TransactionPoolingTest : public ::testing::Test {
 protected:
  // Starts Sluice with `toml`; fails the test (and returns false) if it does not start.
  bool start(const std::string& toml) {
    try {
      sluice_ = std::make_unique<SluiceProcess>(toml);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "could not start PostgreSQL/Sluice: " << e.what();
      return false;
    }
    return true;
  }

  // A fresh database `db` (with a table `table` of `columns` for app, when given) behind a new
  // Sluice in transaction mode with a pool of `size`; false (test failed) if Sluice does not start.
  bool start_on_fresh_database(const std::string& db, int size, const std::string& table = "",
                               const std::string& columns = "") {
    fresh_database(db);
    if (!table.empty()) create_table(db, table, columns);
    return start(pooling_config("transaction", size));
  }

  void TearDown() override {
    if (!sluice_) return;
    EXPECT_TRUE(sluice_->running()) << "Sluice exited during the test";
    const std::string log = sluice_->log();
    EXPECT_EQ(log.find("ended with an exception"), std::string::npos) << tail_lines(log, 60);
    sluice_.reset();  // the harness prints the log's tail if the test failed
  }

  std::string via(const std::string& db, const std::string& extra = "", const std::string& user = kUser,
                  const std::string& password = kPassword) const {
    return sluice_->conninfo(db, user, password, extra);
  }

  std::unique_ptr<SluiceProcess> sluice_;
};

// ---------------------------------------------------------------------------
// 1. pgbench: 50 clients on a pool of 5
// ---------------------------------------------------------------------------
constexpr const char* kPgbenchDb = "tx_pgbench";
constexpr int kPgbenchPool = 5;
constexpr std::chrono::milliseconds kPgbenchTimeout = 300s;  // a pgbench run is killed after this

class PgbenchPoolingTest : public TransactionPoolingTest {
 protected:
  static void SetUpTestSuite() {
    try {
      fresh_database(kPgbenchDb);
      // Initialised directly: what is tested is the run through Sluice.
      const ProcessResult r = run({pg_tool("pgbench"), "-i", "-s", "1", "-q", "-h", pg().host(), "-p",
                                   std::to_string(pg().port()), "-U", kUser, kPgbenchDb},
                                  env(), kPgbenchTimeout);
      if (r.exit_code != 0) init_error_ = "pgbench -i failed:\n" + r.output;
    } catch (const std::exception& e) {
      init_error_ = e.what();
    }
  }

  static std::vector<std::string> env() {
    return {std::string("PGPASSWORD=") + kPassword, "LC_ALL=C", "LANG=C", "LANGUAGE=C", "PGCONNECT_TIMEOUT=60"};
  }

  // pgbench through a Sluice in `mode` with a pool of 5 while pg_stat_activity is
  // sampled: exit 0, transactions processed, none failed, never more than 5 backends.
  void expect_clean_run(const std::string& mode, const std::vector<std::string>& options) {
    ASSERT_TRUE(init_error_.empty()) << init_error_;
    // info: a debug line per attach and release would slow Sluice down more than the run.
    ASSERT_TRUE(start(pooling_config(mode, kPgbenchPool, "", "info")));
    BackendSampler sampler(kPgbenchDb, kUser);
    std::vector<std::string> argv = {pg_tool("pgbench"), "-h", "127.0.0.1", "-p", std::to_string(sluice_->port()),
                                     "-U", kUser};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back(kPgbenchDb);
    const ProcessResult r = run(argv, env(), kPgbenchTimeout);
    sampler.stop();

    std::string command = "pgbench";
    for (const auto& o : options) command += " " + o;
    std::printf("[ INFO     ] %s mode, %s: exit %d after %.2f s; pg_stat_activity: at most %lld backends in %lld "
                "samples, %zu distinct pids\n%s\n",
                mode.c_str(), command.c_str(), r.exit_code, r.seconds, sampler.max(), sampler.samples(),
                sampler.pids().size(), tail_lines(r.output, 8).c_str());
    expect_clean_pgbench_run(r);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ(r.output.find("ERROR"), std::string::npos) << r.output;
    ASSERT_TRUE(sampler.error().empty()) << sampler.error();
    EXPECT_GE(sampler.max(), 1) << "the sampler never saw a backend: is it looking at the right database?";
    EXPECT_LE(sampler.max(), kPgbenchPool) << "more backends than the pool size at once";
    EXPECT_GT(sampler.samples(), 10);
    // The pool still serves a plain client afterwards.
    PgConn c = connect_ok(via(kPgbenchDb));
    EXPECT_EQ(value(c.get(), "SELECT count(*) FROM pgbench_branches"), "1");
  }

  static std::string init_error_;
};
std::string PgbenchPoolingTest::init_error_;

TEST_F(PgbenchPoolingTest, TransactionModeSelectOnlySimpleProtocol) {
  expect_clean_run("transaction", {"-c", "50", "-j", "50", "-T", "3", "-S", "-M", "simple"});
}

TEST_F(PgbenchPoolingTest, TransactionModeSelectOnlyExtendedProtocol) {
  expect_clean_run("transaction", {"-c", "50", "-j", "50", "-T", "3", "-S", "-M", "extended"});
}

TEST_F(PgbenchPoolingTest, TransactionModeTpcbSimpleProtocol) {
  expect_clean_run("transaction", {"-c", "50", "-j", "50", "-T", "3", "-M", "simple"});
}

TEST_F(PgbenchPoolingTest, TransactionModeTpcbExtendedProtocol) {
  expect_clean_run("transaction", {"-c", "50", "-j", "50", "-T", "3", "-M", "extended"});
}

TEST_F(PgbenchPoolingTest, StatementModeSelectOnlySimpleProtocol) {
  expect_clean_run("statement", {"-c", "50", "-j", "50", "-T", "3", "-S", "-M", "simple"});
}

// ---------------------------------------------------------------------------
// 2. Many clients, few servers (transaction mode set for one database only)
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, TwentyClientsShareTwoServers) {
  const std::string db = "tx_many";
  fresh_database(db);
  // Session mode everywhere but this database: were the override ignored, 18 of the
  // 20 clients would wait for a server forever and the bounded waits would fail.
  ASSERT_TRUE(start(pooling_config("session", 20,
                                   "\n[databases." + db +
                                       "]\nhost = \"{pg_host}\"\nport = {pg_port}\npool = { mode = \"transaction\", "
                                       "size = 2 }\n")));
  BackendSampler sampler(db, kUser);
  constexpr int kClients = 20;
  std::vector<PgConn> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(connect_ok(via(db)));

  // All twenty queries in flight at once.
  for (int i = 0; i < kClients; ++i) {
    const std::string sql = "SELECT pg_backend_pid(), " + std::to_string(i) + ", pg_sleep(0.02)";
    ASSERT_EQ(PQsendQuery(clients[i].get(), sql.c_str()), 1) << PQerrorMessage(clients[i].get());
  }
  std::set<std::string> pids;
  for (int i = 0; i < kClients; ++i) {
    auto results = collect(clients[i].get());
    ASSERT_TRUE(results.has_value()) << "client " << i << " got no answer within the bound";
    ASSERT_EQ(results->size(), 1u);
    const PGresult* r = results->front().get();
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << describe_result(clients[i].get(), r);
    EXPECT_EQ(std::string(PQgetvalue(r, 0, 1)), std::to_string(i));
    pids.insert(PQgetvalue(r, 0, 0));
    EXPECT_EQ(PQtransactionStatus(clients[i].get()), PQTRANS_IDLE);
  }
  // A second round over the extended protocol (unnamed statements), still all connected.
  for (int i = 0; i < kClients; ++i) {
    const std::string p = std::to_string(i);
    const char* values[1] = {p.c_str()};
    ASSERT_EQ(PQsendQueryParams(clients[i].get(), "SELECT $1::int + 1000, pg_backend_pid()", 1, nullptr, values,
                                nullptr, nullptr, 0),
              1);
  }
  for (int i = 0; i < kClients; ++i) {
    auto results = collect(clients[i].get());
    ASSERT_TRUE(results.has_value()) << "client " << i << " got no answer within the bound";
    ASSERT_EQ(results->size(), 1u);
    const PGresult* r = results->front().get();
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << describe_result(clients[i].get(), r);
    EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), std::to_string(i + 1000));
    pids.insert(PQgetvalue(r, 0, 1));
  }
  EXPECT_LE(backend_count(db), 2);
  sampler.stop();
  std::printf("[ INFO     ] 20 clients used %zu backends; at most %lld at once in %lld samples\n", pids.size(),
              sampler.max(), sampler.samples());
  ASSERT_TRUE(sampler.error().empty()) << sampler.error();
  EXPECT_LE(pids.size(), 2u);
  EXPECT_GE(sampler.max(), 1);
  EXPECT_LE(sampler.max(), 2);
}

// Clients that logged in and sent nothing must not hold a server: with a pool of 1, a
// single idle client holding the connection would starve everyone else.
TEST_F(TransactionPoolingTest, IdleClientsNeverHoldAServer) {
  const std::string db = "tx_idle";
  ASSERT_TRUE(start_on_fresh_database(db, 1));
  PgConn worker = connect_ok(via(db));
  EXPECT_EQ(value(worker.get(), "SELECT 'first'"), "first");
  constexpr int kIdle = 100;
  std::vector<PgConn> idle;
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(connect_ok(via(db)));
    // After every login: the one server must still be free for the worker.
    PgResult r;
    try {
      r = query(worker.get(), "SELECT " + std::to_string(i), 20s);
    } catch (const std::exception& e) {
      FAIL() << "after idle client " << i << " logged in (sending nothing), the worker got no server: " << e.what();
    }
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << describe_result(worker.get(), r.get());
  }
  for (int i = 0; i < kIdle; ++i) EXPECT_EQ(value(idle[i].get(), "SELECT 'idle " + std::to_string(i) + "'"),
                                            "idle " + std::to_string(i));
  EXPECT_LE(backend_count(db), 1);
}

// How many clients Sluice has logged as gone ("client ... disconnected").
std::size_t disconnect_lines(const SluiceProcess& sluice) {
  const std::string log = sluice.log();
  std::size_t count = 0;
  for (auto at = log.find("disconnected"); at != std::string::npos; at = log.find("disconnected", at + 1)) ++count;
  return count;
}

// Parked clients (no server) that leave are seen to leave at once, with or without
// a Terminate, while the only server is busy: the park's peek tells a goodbye from a
// request without taking a server.
TEST_F(TransactionPoolingTest, ParkedClientsThatLeaveNeedNoServer) {
  const std::string db = "tx_park_leave";
  ASSERT_TRUE(start_on_fresh_database(db, 1));
  PgConn holder = connect_ok(via(db));
  PgConn polite = connect_ok(via(db));
  PgConn abrupt = connect_ok(via(db));
  PgConn waiter = connect_ok(via(db));
  // Each has been served once, so each is parked after a request read, not at login.
  for (PGconn* c : {holder.get(), polite.get(), abrupt.get(), waiter.get()}) EXPECT_EQ(value(c, "SELECT 1"), "1");
  exec_ok(holder.get(), "BEGIN");  // holds the one server from here on
  ASSERT_EQ(PQsendQuery(waiter.get(), "SELECT 'waited'"), 1);

  auto disconnects = [&] { return disconnect_lines(*sluice_); };
  const std::size_t before = disconnects();
  polite.reset();  // PQfinish: a Terminate, then the close
  ::shutdown(PQsocket(abrupt.get()), SHUT_RDWR);  // no Terminate
  EXPECT_TRUE(wait_for([&] { return disconnects() >= before + 2; }, 20s))
      << "parked clients that left were not noticed while the server was busy\n" << tail_lines(sluice_->log(), 30);
  EXPECT_TRUE(still_waiting(waiter.get())) << "the waiter was served while the transaction was open";

  exec_ok(holder.get(), "COMMIT");
  auto results = collect(waiter.get());
  ASSERT_TRUE(results.has_value() && results->size() == 1) << "the waiter was not served after COMMIT";
  EXPECT_EQ(std::string(PQgetvalue(results->front().get(), 0, 0)), "waited");
  EXPECT_LE(backend_count(db), 1);
}

// Clients that close the moment their last answer arrives (no Terminate): each must
// be seen to leave, including one whose end of stream the relay's read found while the
// server was being released, just before the client would have been parked.
TEST_F(TransactionPoolingTest, ClientsClosingRightAfterTheirLastAnswerAreAllSeenToLeave) {
  const std::string db = "tx_close_after_answer";
  ASSERT_TRUE(start_on_fresh_database(db, 2));
  auto disconnects = [&] { return disconnect_lines(*sluice_); };
  const std::size_t before = disconnects();
  constexpr int kClients = 100;
  for (int i = 0; i < kClients; ++i) {
    PgConn c = connect_ok(via(db));
    PgResult r(PQexec(c.get(), "SELECT 1"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    ::shutdown(PQsocket(c.get()), SHUT_RDWR);  // at once, and without a Terminate
  }
  EXPECT_TRUE(wait_for([&] { return disconnects() >= before + kClients; }, 20s))
      << (disconnects() - before) << " of " << kClients << " clients were seen to leave\n"
      << tail_lines(sluice_->log(), 30);
}

// ---------------------------------------------------------------------------
// 3. A transaction holds the only server until it ends; others wait, not interleave
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, OpenTransactionHoldsTheOnlyServerUntilCommit) {
  const std::string db = "tx_hold";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "items", "x int"));
  BackendSampler sampler(db, kUser);

  PgConn a = connect_ok(via(db));
  constexpr int kWaiters = 3;
  std::vector<PgConn> waiters;  // logged in before A takes the server
  for (int i = 0; i < kWaiters; ++i) waiters.push_back(connect_ok(via(db)));

  for (const bool commit : {true, false}) {
    SCOPED_TRACE(commit ? "ending with COMMIT" : "ending with ROLLBACK");
    const std::string before = value(a.get(), "SELECT count(*) FROM items");
    exec_ok(a.get(), "BEGIN");
    exec_ok(a.get(), "INSERT INTO items VALUES (1)");
    const long long a_pid = backend_pid(a.get());
    const std::string a_xid = value(a.get(), "SELECT txid_current()");

    const std::string marker = std::string("tx_hold_waiter_") + (commit ? "c" : "r");
    for (int i = 0; i < kWaiters; ++i) {
      const std::string sql = "SELECT pg_backend_pid(), txid_current_if_assigned(), (SELECT count(*) FROM items), "
                              "now() = statement_timestamp() /* " + marker + " */";
      ASSERT_EQ(PQsendQuery(waiters[i].get(), sql.c_str()), 1);
    }
    // A carries on: every statement still runs in A's transaction on A's backend.
    for (int round = 0; round < 5; ++round) {
      exec_ok(a.get(), "INSERT INTO items VALUES (" + std::to_string(round + 2) + ")");
      const auto r = row(a.get(), "SELECT pg_backend_pid(), txid_current()");
      EXPECT_EQ(std::stoll(r[0]), a_pid);
      EXPECT_EQ(r[1], a_xid) << "A's statements left its transaction";
    }
    EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_INTRANS);
    // The waiters got nothing yet and none of their queries reached PostgreSQL.
    for (int i = 0; i < kWaiters; ++i) {
      EXPECT_TRUE(still_waiting(waiters[i].get())) << "waiter " << i << " was answered while A's transaction was open";
    }
    EXPECT_EQ(active_with_marker(marker), 0);
    EXPECT_EQ(backend_count(db), 1);

    exec_ok(a.get(), commit ? "COMMIT" : "ROLLBACK");
    const std::string expected = commit ? std::to_string(std::stoll(before) + 6) : before;
    for (int i = 0; i < kWaiters; ++i) {
      auto results = collect(waiters[i].get());
      ASSERT_TRUE(results.has_value()) << "waiter " << i << " not served after A's transaction ended";
      ASSERT_EQ(results->size(), 1u);
      const PGresult* r = results->front().get();
      ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << describe_result(waiters[i].get(), r);
      EXPECT_EQ(std::stoll(PQgetvalue(r, 0, 0)), a_pid) << "a pool of 1 used another backend";
      EXPECT_TRUE(PQgetisnull(r, 0, 1)) << "waiter " << i << " ran inside A's transaction (xid "
                                        << PQgetvalue(r, 0, 1) << ")";
      EXPECT_EQ(std::string(PQgetvalue(r, 0, 2)), expected) << "waiter " << i << " did not run after A's end";
      EXPECT_EQ(std::string(PQgetvalue(r, 0, 3)), "t");
    }
    EXPECT_EQ(pg().query_value("SELECT count(*) FROM items", db), expected);
    EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_IDLE);
  }
  sampler.stop();
  ASSERT_TRUE(sampler.error().empty()) << sampler.error();
  EXPECT_LE(sampler.max(), 1);
}

// ---------------------------------------------------------------------------
// 4. libpq pipeline mode
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, PipelineWithFailingSegmentThenServerGoesBackToPool) {
  const std::string db = "tx_pipeline";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "piped", "seg int, i int"));
  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));

  constexpr int kSegments = 6;
  constexpr int kPerSegment = 20;
  constexpr int kFailingSegment = 2;
  constexpr int kFailingIndex = 10;
  ASSERT_EQ(PQenterPipelineMode(a.get()), 1) << PQerrorMessage(a.get());
  for (int seg = 0; seg < kSegments; ++seg) {
    for (int i = 0; i < kPerSegment; ++i) {
      const std::string s = std::to_string(seg);
      const std::string n = std::to_string(seg * 100 + i);
      int sent = 0;
      if (seg == kFailingSegment && i == kFailingIndex) {
        const char* v[1] = {"0"};
        sent = PQsendQueryParams(a.get(), "SELECT 1 / $1::int", 1, nullptr, v, nullptr, nullptr, 0);
      } else if (i % 5 == 0) {
        const char* v[2] = {s.c_str(), n.c_str()};
        sent = PQsendQueryParams(a.get(), "INSERT INTO piped VALUES ($1::int, $2::int)", 2, nullptr, v, nullptr,
                                 nullptr, 0);
      } else {
        const char* v[1] = {n.c_str()};
        sent = PQsendQueryParams(a.get(), "SELECT $1::int * 2", 1, nullptr, v, nullptr, nullptr, 0);
      }
      ASSERT_EQ(sent, 1) << PQerrorMessage(a.get());
    }
    ASSERT_EQ(PQpipelineSync(a.get()), 1) << PQerrorMessage(a.get());
  }
  ASSERT_EQ(PQflush(a.get()), 0);

  for (int seg = 0; seg < kSegments; ++seg) {
    for (int i = 0; i < kPerSegment; ++i) {
      SCOPED_TRACE("segment " + std::to_string(seg) + ", query " + std::to_string(i));
      PgResult r = next_result_within(a.get());
      ASSERT_TRUE(r) << "no result within the bound: " << PQerrorMessage(a.get());
      if (seg == kFailingSegment && i == kFailingIndex) {
        EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << describe_result(a.get(), r.get());
        EXPECT_EQ(sqlstate_of(r.get()), "22012") << describe_result(a.get(), r.get());
      } else if (seg == kFailingSegment && i > kFailingIndex) {
        EXPECT_EQ(PQresultStatus(r.get()), PGRES_PIPELINE_ABORTED) << describe_result(a.get(), r.get());
      } else if (i % 5 == 0) {
        EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << describe_result(a.get(), r.get());
        EXPECT_STREQ(PQcmdTuples(r.get()), "1");
      } else {
        ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << describe_result(a.get(), r.get());
        EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string((seg * 100 + i) * 2));
      }
      PgResult end = next_result_within(a.get());
      EXPECT_FALSE(end) << "expected the end of query " << i << "'s results, got " << describe_result(a.get(), end.get());
    }
    PgResult sync = next_result_within(a.get());
    ASSERT_TRUE(sync) << PQerrorMessage(a.get());
    ASSERT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC) << "segment " << seg << ": "
                                                               << describe_result(a.get(), sync.get());
  }
  // The failing segment's inserts were rolled back with it; the others committed.
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM piped WHERE seg = " + std::to_string(kFailingSegment), db), "0");
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM piped", db), std::to_string((kSegments - 1) * (kPerSegment / 5)));

  // Still in pipeline mode and idle: the server is back in the pool, B can use it.
  {
    PgResult r = query(b.get(), "SELECT 'b after pipeline'");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << describe_result(b.get(), r.get());
    EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "b after pipeline");
  }
  // A pipeline segment after the server changed hands.
  {
    const char* v[1] = {"21"};
    ASSERT_EQ(PQsendQueryParams(a.get(), "SELECT $1::int * 2", 1, nullptr, v, nullptr, nullptr, 0), 1);
    ASSERT_EQ(PQsendQueryParams(a.get(), "SELECT 'second'", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
    ASSERT_EQ(PQpipelineSync(a.get()), 1);
    PgResult r1 = next_result_within(a.get());
    ASSERT_TRUE(r1);
    ASSERT_EQ(PQresultStatus(r1.get()), PGRES_TUPLES_OK) << describe_result(a.get(), r1.get());
    EXPECT_STREQ(PQgetvalue(r1.get(), 0, 0), "42");
    EXPECT_FALSE(next_result_within(a.get()));
    PgResult r2 = next_result_within(a.get());
    ASSERT_TRUE(r2);
    ASSERT_EQ(PQresultStatus(r2.get()), PGRES_TUPLES_OK) << describe_result(a.get(), r2.get());
    EXPECT_STREQ(PQgetvalue(r2.get(), 0, 0), "second");
    EXPECT_FALSE(next_result_within(a.get()));
    PgResult sync = next_result_within(a.get());
    ASSERT_TRUE(sync);
    EXPECT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC);
  }
  ASSERT_EQ(PQexitPipelineMode(a.get()), 1) << PQerrorMessage(a.get());
  EXPECT_EQ(value(a.get(), "SELECT 'a usable'"), "a usable");
  EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_IDLE);
  EXPECT_EQ(value(b.get(), "SELECT 'b again'"), "b again");
  EXPECT_LE(backend_count(db), 1);
}

// ---------------------------------------------------------------------------
// 5. Tracked parameters follow the client; others never see them
// ---------------------------------------------------------------------------
struct Held {
  PgConn conn;
  long long pid = 0;
};

// With a pool of 2: a client in an open transaction on a backend other than `target`,
// so that the next query of any other client runs on `target`.
Held hold_backend_other_than(const std::string& conninfo, long long target) {
  Held first{connect_ok(conninfo), 0};
  exec_ok(first.conn.get(), "BEGIN");
  first.pid = backend_pid(first.conn.get());
  if (first.pid != target) return first;
  Held second{connect_ok(conninfo), 0};
  exec_ok(second.conn.get(), "BEGIN");
  second.pid = backend_pid(second.conn.get());
  exec_ok(first.conn.get(), "COMMIT");
  if (second.pid == target) throw std::runtime_error("two transactions on one backend");
  return second;
}

struct Settings {
  std::string timezone;
  std::string application_name;
  std::string datestyle;
};

// Runs on the server; what the client's session really has.
std::pair<long long, Settings> server_settings(PGconn* c) {
  const auto r = row(c, "SELECT pg_backend_pid(), current_setting('TimeZone'), current_setting('application_name'), "
                        "current_setting('DateStyle')");
  return {std::stoll(r[0]), Settings{r[1], r[2], r[3]}};
}

// What a session of `db` has when it sets nothing (asked directly, not through Sluice).
Settings default_settings(const std::string& db) {
  PgConn d = connect_ok(pg().conninfo(db, kUser, kPassword));
  return server_settings(d.get()).second;
}

TEST_F(TransactionPoolingTest, TrackedParametersFollowTheClientAcrossServers) {
  const std::string db = "tx_tracked";
  ASSERT_TRUE(start_on_fresh_database(db, 2));
  const Settings defaults = default_settings(db);
  ASSERT_NE(defaults.timezone, "Asia/Tokyo");
  ASSERT_NE(defaults.application_name, "alpha");

  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));  // never SETs anything
  // Two backends: H holds one while A sets its values on the other, X.
  long long x = 0;
  long long other = 0;
  {
    Held h{connect_ok(via(db)), 0};
    exec_ok(h.conn.get(), "BEGIN");
    h.pid = backend_pid(h.conn.get());
    other = h.pid;
    exec_ok(a.get(), "SET TIME ZONE 'Asia/Tokyo'");
    exec_ok(a.get(), "SET application_name = 'alpha'");
    x = backend_pid(a.get());
    ASSERT_NE(x, other);
    exec_ok(h.conn.get(), "COMMIT");
  }
  EXPECT_STREQ(PQparameterStatus(a.get(), "TimeZone"), "Asia/Tokyo");
  EXPECT_STREQ(PQparameterStatus(a.get(), "application_name"), "alpha");
  std::printf("[ INFO     ] A set its values on backend %lld; the other backend is %lld\n", x, other);

  // The other backend first: A must move there, and take its values along.
  bool c_connected = false;
  PgConn c;
  for (const long long target : {other, x}) {
    SCOPED_TRACE("on backend " + std::to_string(target) + (target == x ? " (where A ran SET)" : " (switched)"));
    Held hold = hold_backend_other_than(via(db), target);
    {
      const auto [pid, s] = server_settings(a.get());
      EXPECT_EQ(pid, target);
      EXPECT_EQ(s.timezone, "Asia/Tokyo");
      EXPECT_EQ(s.application_name, "alpha");
      EXPECT_EQ(value(a.get(), "SHOW TimeZone"), "Asia/Tokyo");
      EXPECT_EQ(value(a.get(), "SHOW application_name"), "alpha");
      EXPECT_STREQ(PQparameterStatus(a.get(), "TimeZone"), "Asia/Tokyo");
      EXPECT_STREQ(PQparameterStatus(a.get(), "application_name"), "alpha");
    }
    // Right after A, on the backend that now has A's values: a client with its own
    // application_name in the conninfo (the first time: logging in needs a server).
    if (!c_connected) {
      c = connect_ok(via(db, "application_name=gamma"));
      c_connected = true;
    }
    {
      const auto [pid, s] = server_settings(c.get());
      EXPECT_EQ(pid, target);
      EXPECT_EQ(s.application_name, "gamma");
      EXPECT_EQ(s.timezone, defaults.timezone) << "C inherited another client's TimeZone";
      EXPECT_STREQ(PQparameterStatus(c.get(), "application_name"), "gamma");
      EXPECT_EQ(std::string(PQparameterStatus(c.get(), "TimeZone")), defaults.timezone);
    }
    // A again (the backend now has C's values), then B, who never set anything.
    {
      const auto [pid, s] = server_settings(a.get());
      EXPECT_EQ(pid, target);
      EXPECT_EQ(s.timezone, "Asia/Tokyo");
      EXPECT_EQ(s.application_name, "alpha");
    }
    {
      const auto [pid, s] = server_settings(b.get());
      EXPECT_EQ(pid, target);
      EXPECT_EQ(s.timezone, defaults.timezone) << "B sees another client's TimeZone";
      EXPECT_EQ(s.application_name, defaults.application_name) << "B sees another client's application_name";
      EXPECT_EQ(value(b.get(), "SHOW TimeZone"), defaults.timezone);
      EXPECT_EQ(value(b.get(), "SHOW application_name"), defaults.application_name);
      EXPECT_EQ(std::string(PQparameterStatus(b.get(), "TimeZone")), defaults.timezone);
      EXPECT_EQ(std::string(PQparameterStatus(b.get(), "application_name")), defaults.application_name);
    }
    exec_ok(hold.conn.get(), "COMMIT");
  }

  // A later client with C's conninfo (its login values may come from a cache) and B
  // again, each on both backends.
  PgConn d = connect_ok(via(db, "application_name=gamma"));
  for (const long long target : {other, x}) {
    SCOPED_TRACE("client D, then B, on backend " + std::to_string(target));
    Held hold = hold_backend_other_than(via(db), target);
    exec_ok(a.get(), "SELECT 1");  // A's values on the backend first
    const auto [pid, s] = server_settings(d.get());
    EXPECT_EQ(pid, target);
    EXPECT_EQ(s.application_name, "gamma");
    EXPECT_EQ(s.timezone, defaults.timezone) << "D inherited another client's TimeZone";
    EXPECT_EQ(std::string(PQparameterStatus(d.get(), "TimeZone")), defaults.timezone);
    exec_ok(a.get(), "SELECT 1");
    const auto [bpid, bs] = server_settings(b.get());
    EXPECT_EQ(bpid, target);
    EXPECT_EQ(bs.timezone, defaults.timezone);
    EXPECT_EQ(bs.application_name, defaults.application_name);
    exec_ok(hold.conn.get(), "COMMIT");
  }

  // What counts is what the server reports, not the SQL: a SET rolled back with its
  // transaction and a SET LOCAL leave A's TimeZone as it was; RESET returns to the default.
  exec_ok(a.get(), "BEGIN");
  exec_ok(a.get(), "SET TIME ZONE 'Europe/Paris'");
  exec_ok(a.get(), "ROLLBACK");
  exec_ok(a.get(), "BEGIN");
  exec_ok(a.get(), "SET LOCAL TIME ZONE 'America/New_York'");
  exec_ok(a.get(), "COMMIT");
  exec_ok(a.get(), "RESET application_name");
  for (const long long target : {other, x}) {
    SCOPED_TRACE("after ROLLBACK / SET LOCAL / RESET, on backend " + std::to_string(target));
    Held hold = hold_backend_other_than(via(db), target);
    const auto [pid, s] = server_settings(a.get());
    EXPECT_EQ(pid, target);
    EXPECT_EQ(s.timezone, "Asia/Tokyo");
    EXPECT_EQ(s.application_name, defaults.application_name);
    const auto [bpid, bs] = server_settings(b.get());
    EXPECT_EQ(bpid, target);
    EXPECT_EQ(bs.timezone, defaults.timezone);
    exec_ok(hold.conn.get(), "COMMIT");
  }
  EXPECT_LE(backend_count(db), 2);
}

// Many clients with different tracked values (and some with none) racing for two servers.
TEST_F(TransactionPoolingTest, TrackedParametersUnderConcurrentSwitching) {
  const std::string db = "tx_tracked_race";
  ASSERT_TRUE(start_on_fresh_database(db, 2));
  const Settings defaults = default_settings(db);
  const std::vector<std::string> zones = {"Asia/Tokyo", "Europe/Paris", "America/New_York", "Australia/Sydney"};
  constexpr int kClients = 8;
  constexpr int kRounds = 25;
  std::vector<PgConn> clients;
  std::vector<Settings> expected;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_ok(via(db)));
    if (i < static_cast<int>(zones.size())) {
      exec_ok(clients[i].get(), "SET TIME ZONE '" + zones[i] + "'");
      exec_ok(clients[i].get(), "SET application_name = 'client_" + std::to_string(i) + "'");
      if (i % 2 == 0) exec_ok(clients[i].get(), "SET DateStyle = 'SQL, DMY'");
      expected.push_back({zones[i], "client_" + std::to_string(i), i % 2 == 0 ? "SQL, DMY" : defaults.datestyle});
    } else {
      expected.push_back(defaults);
    }
  }
  std::mutex mutex;
  std::vector<std::string> mismatches;
  std::vector<std::set<long long>> backends(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      PGconn* c = clients[i].get();
      try {
        for (int round = 0; round < kRounds; ++round) {
          const bool in_transaction = round % 3 == 0;
          if (in_transaction) exec_ok(c, "BEGIN");
          const auto [pid, s] = server_settings(c);
          if (in_transaction) exec_ok(c, "COMMIT");
          std::lock_guard lock(mutex);
          backends[i].insert(pid);
          if (s.timezone != expected[i].timezone || s.application_name != expected[i].application_name ||
              s.datestyle != expected[i].datestyle) {
            mismatches.push_back("client " + std::to_string(i) + " round " + std::to_string(round) + " on backend " +
                                 std::to_string(pid) + ": saw (" + s.timezone + ", '" + s.application_name + "', " +
                                 s.datestyle + "), expected (" + expected[i].timezone + ", '" +
                                 expected[i].application_name + "', " + expected[i].datestyle + ")");
          }
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex);
        mismatches.push_back("client " + std::to_string(i) + ": " + e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  std::string seen;
  for (int i = 0; i < kClients; ++i) seen += " " + std::to_string(backends[i].size());
  std::printf("[ INFO     ] distinct backends per client:%s\n", seen.c_str());
  std::string all;
  for (const auto& m : mismatches) all += m + "\n";
  EXPECT_TRUE(mismatches.empty()) << mismatches.size() << " mismatches:\n" << all;
  EXPECT_LE(backend_count(db), 2);
}

// ---------------------------------------------------------------------------
// 6. Statement mode (set for one user) refuses transaction blocks
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, StatementModeRefusesTransactionBlocks) {
  const std::string db = "tx_stmt";
  const std::string user = "tx_stmt_user";
  const std::string password = "stmt_pw";
  fresh_database(db);
  if (pg_count("SELECT count(*) FROM pg_roles WHERE rolname = '" + user + "'") == 0) {
    pg().exec("CREATE ROLE " + user + " LOGIN PASSWORD '" + password + "'", "postgres");
  }
  create_table(db, "stmt_rows", "x int", user);
  create_table(db, "app_rows", "x int");
  // Transaction mode by default; statement mode (and a pool of 1) for this user only.
  ASSERT_TRUE(start(pooling_config("transaction", 5,
                                   "\n[users." + user + "]\nauth = \"scram-sha-256\"\npassword = \"" + password +
                                       "\"\npool = { mode = \"statement\", size = 1 }\n")));
  const std::string conninfo = via(db, "", user, password);

  PgConn first = connect_ok(conninfo);
  const long long pid0 = backend_pid(first.get());
  exec_ok(first.get(), "INSERT INTO stmt_rows VALUES (1)");  // autocommit statements are fine
  // A transaction that ends within one query ends idle: allowed.
  {
    PgResult r = query(first.get(), "BEGIN; INSERT INTO stmt_rows VALUES (2); COMMIT");
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << describe_result(first.get(), r.get());
  }
  EXPECT_EQ(value(first.get(), "SELECT count(*) FROM stmt_rows"), "2");

  struct Attempt {
    std::string name;
    std::function<int(PGconn*)> send;
  };
  const std::vector<Attempt> attempts = {
      {"BEGIN", [](PGconn* c) { return PQsendQuery(c, "BEGIN"); }},
      {"BEGIN; INSERT", [](PGconn* c) { return PQsendQuery(c, "BEGIN; INSERT INTO stmt_rows VALUES (100)"); }},
      {"extended BEGIN",
       [](PGconn* c) { return PQsendQueryParams(c, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0); }},
      {"START TRANSACTION after a statement",
       [](PGconn* c) { return PQsendQuery(c, "INSERT INTO stmt_rows VALUES (101); START TRANSACTION"); }},
  };
  for (const auto& attempt : attempts) {
    SCOPED_TRACE(attempt.name);
    PgConn c = connect_ok(conninfo);
    NoticeLog log;
    log.attach(c.get());
    EXPECT_EQ(value(c.get(), "SELECT 1"), "1");
    ASSERT_EQ(attempt.send(c.get()), 1) << PQerrorMessage(c.get());
    auto results = collect(c.get());
    ASSERT_TRUE(results.has_value()) << "no answer within the bound";
    bool in_result = false;
    std::string statuses;
    for (const auto& r : *results) {
      statuses += std::string(PQresStatus(PQresultStatus(r.get()))) + " ";
      const char* severity = PQresultErrorField(r.get(), PG_DIAG_SEVERITY_NONLOCALIZED);
      if (sqlstate_of(r.get()) == "0A000" && severity && std::string(severity) == "FATAL" &&
          std::string(PQresultErrorMessage(r.get())).find("transaction blocks are not allowed in statement pooling "
                                                          "mode") != std::string::npos) {
        in_result = true;
      }
    }
    EXPECT_TRUE(wait_until_closed(c.get())) << "the connection was not closed";
    const bool as_notice =
        log.contains("0A000", "FATAL", "transaction blocks are not allowed in statement pooling mode");
    std::printf("[ INFO     ] statement mode, %s: results %s; 0A000 %s\n", attempt.name.c_str(), statuses.c_str(),
                in_result ? "as the query's result" : (as_notice ? "after the query's result, while idle" : "missing"));
    EXPECT_TRUE(in_result || as_notice) << "no FATAL 0A000; results: " << statuses << "; messages: " << log.dump()
                                        << "; connection: " << PQerrorMessage(c.get());
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_BAD);
  }

  // The server connection was rolled back and is serving the next client.
  PgConn next = connect_ok(conninfo);
  const auto r = row(next.get(), "SELECT pg_backend_pid(), txid_current_if_assigned(), now() = statement_timestamp()");
  EXPECT_EQ(std::stoll(r[0]), pid0) << "the server connection was not reused";
  EXPECT_EQ(r[1], "<null>") << "the next client landed in a transaction";
  EXPECT_EQ(r[2], "t");
  EXPECT_EQ(value(next.get(), "SELECT count(*) FROM stmt_rows"), "2")
      << "rows from the refused transaction blocks were committed";
  EXPECT_TRUE(wait_for([&] { return idle_in_transaction_count(db, user) == 0; }, 20s))
      << "a backend of " << user << " is still idle in a transaction";
  EXPECT_LE(backend_count(db, user), 1);
  // Nothing holds a lock on the table.
  EXPECT_EQ(pg_count("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                     "WHERE c.relname = 'stmt_rows'",
                     db),
            0);

  // The app user, in transaction mode on the same Sluice, may use transaction blocks.
  PgConn app = connect_ok(via(db));
  exec_ok(app.get(), "BEGIN");
  exec_ok(app.get(), "INSERT INTO app_rows VALUES (1)");
  exec_ok(app.get(), "COMMIT");
  EXPECT_EQ(value(app.get(), "SELECT count(*) FROM app_rows"), "1");
}

// ---------------------------------------------------------------------------
// 7. Clients that leave in the middle of a transaction
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, ClientLeavingMidTransactionIsRolledBack) {
  const std::string db = "tx_abandon";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "abandoned", "x int"));

  enum class Ending { terminate, socket_shutdown };
  const std::vector<std::pair<Ending, std::string>> endings = {
      {Ending::terminate, "PQfinish after BEGIN + INSERT"},
      {Ending::socket_shutdown, "socket shut down after BEGIN + INSERT"},
  };
  int n = 0;
  for (const auto& [ending, name] : endings) {
    SCOPED_TRACE(name);
    ++n;
    PgConn waiter = connect_ok(via(db));
    PgConn a = connect_ok(via(db));
    exec_ok(a.get(), "BEGIN");
    exec_ok(a.get(), "INSERT INTO abandoned VALUES (" + std::to_string(n) + ")");
    const long long a_pid = backend_pid(a.get());
    // The waiter queues behind A's transaction.
    ASSERT_EQ(PQsendQuery(waiter.get(), "SELECT count(*), pg_backend_pid(), txid_current_if_assigned() FROM abandoned"),
              1);
    EXPECT_TRUE(still_waiting(waiter.get()));

    const auto start = Clock::now();
    if (ending == Ending::socket_shutdown) {
      ASSERT_EQ(::shutdown(PQsocket(a.get()), SHUT_RDWR), 0);
    }
    a.reset();

    auto results = collect(waiter.get());
    const double elapsed = seconds_since(start);
    ASSERT_TRUE(results.has_value()) << "the waiting client was not served after A left";
    ASSERT_EQ(results->size(), 1u);
    const PGresult* r = results->front().get();
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << describe_result(waiter.get(), r);
    std::printf("[ INFO     ] %s: waiter served after %.3f s on backend %s (A's was %lld)\n", name.c_str(), elapsed,
                PQgetvalue(r, 0, 1), a_pid);
    EXPECT_STREQ(PQgetvalue(r, 0, 0), "0") << "A's uncommitted INSERT is visible";
    EXPECT_TRUE(PQgetisnull(r, 0, 2)) << "the waiter ran inside A's transaction";
    // The next client, and the state of PostgreSQL.
    PgConn next = connect_ok(via(db));
    EXPECT_EQ(value(next.get(), "SELECT count(*) FROM abandoned"), "0");
    EXPECT_EQ(value(next.get(), "SELECT now() = statement_timestamp()"), "t");
    EXPECT_TRUE(wait_for([&] { return idle_in_transaction_count(db) == 0; }, 20s))
        << "a backend is still idle in a transaction";
    EXPECT_LE(backend_count(db), 1);
    exec_ok(next.get(), "SET lock_timeout = '5s'");
    exec_ok(next.get(), "BEGIN");
    exec_ok(next.get(), "LOCK TABLE abandoned IN ACCESS EXCLUSIVE MODE");
    exec_ok(next.get(), "ROLLBACK");
    exec_ok(next.get(), "RESET lock_timeout");
  }
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM abandoned", db), "0");
}

// The client leaves while its transaction runs a long query. The next client must not
// wait for it, and the abandoned query must not run on to its end outside the pool (a
// pool of 1 with two backends, the abandoned one holding its transaction's locks).
TEST_F(TransactionPoolingTest, ClientLeavingDuringQueryInTransactionStopsTheQuery) {
  const std::string db = "tx_abandon_busy";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "abandoned", "x int"));
  PgConn waiter = connect_ok(via(db));
  PgConn a = connect_ok(via(db));
  exec_ok(a.get(), "BEGIN");
  exec_ok(a.get(), "INSERT INTO abandoned VALUES (1)");
  const long long a_pid = backend_pid(a.get());
  const std::string marker = "tx_abandon_busy_sleep";
  ASSERT_EQ(PQsendQuery(a.get(), ("SELECT pg_sleep(30) /* " + marker + " */").c_str()), 1);
  ASSERT_TRUE(wait_for([&] { return active_with_marker(marker) == 1; }, 20s));
  ASSERT_EQ(PQsendQuery(waiter.get(), "SELECT count(*), pg_backend_pid(), txid_current_if_assigned() FROM abandoned"),
            1);
  EXPECT_TRUE(still_waiting(waiter.get()));

  const auto start = Clock::now();
  a.reset();  // PQfinish while pg_sleep(30) runs
  auto results = collect(waiter.get());
  const double elapsed = seconds_since(start);
  ASSERT_TRUE(results.has_value()) << "the waiting client was not served after A left";
  ASSERT_EQ(results->size(), 1u);
  const PGresult* r = results->front().get();
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << describe_result(waiter.get(), r);
  std::printf("[ INFO     ] waiter served after %.3f s on backend %s (A's was %lld)\n", elapsed, PQgetvalue(r, 0, 1),
              a_pid);
  EXPECT_LT(elapsed, 20.0) << "the waiter waited for the abandoned pg_sleep(30)";
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "0") << "A's uncommitted INSERT is visible";
  EXPECT_TRUE(PQgetisnull(r, 0, 2)) << "the waiter ran inside A's transaction";

  // 20 s: well before the abandoned sleep would end by itself.
  const bool stopped = wait_for([&] { return active_with_marker(marker) == 0; }, 20s);
  EXPECT_TRUE(stopped) << "the abandoned pg_sleep(30) still runs on backend " << a_pid << " "
                       << seconds_since(start) << " s after its client left; backends of the pool of 1: "
                       << backend_count(db);
  if (!stopped) return;
  EXPECT_TRUE(wait_for([&] { return backend_count(db) <= 1; }, 20s)) << backend_count(db) << " backends";
  EXPECT_EQ(idle_in_transaction_count(db), 0);
  PgConn next = connect_ok(via(db));
  exec_ok(next.get(), "SET lock_timeout = '5s'");
  exec_ok(next.get(), "BEGIN");
  exec_ok(next.get(), "LOCK TABLE abandoned IN ACCESS EXCLUSIVE MODE");
  exec_ok(next.get(), "ROLLBACK");
  EXPECT_EQ(value(next.get(), "SELECT count(*) FROM abandoned"), "0");
}

// Outside a transaction block a request is answered by a lone server pump (see
// ClientSession::resume), whose only eye on the client is a peek on its socket. A
// client that vanishes (no Terminate) during such a query must still be seen to go:
// its query is cancelled and the one server serves the next client.
TEST_F(TransactionPoolingTest, ClientVanishingDuringAutocommitQueryStopsTheQuery) {
  const std::string db = "tx_abandon_autocommit";
  ASSERT_TRUE(start_on_fresh_database(db, 1));
  PgConn waiter = connect_ok(via(db));
  PgConn a = connect_ok(via(db));
  EXPECT_EQ(value(a.get(), "SELECT 1"), "1");  // served once: parked after a request read
  const std::string marker = "tx_abandon_autocommit_sleep";
  ASSERT_EQ(PQsendQuery(a.get(), ("SELECT pg_sleep(30) /* " + marker + " */").c_str()), 1);
  ASSERT_TRUE(wait_for([&] { return active_with_marker(marker) == 1; }, 20s));
  ASSERT_EQ(PQsendQuery(waiter.get(), "SELECT 'served'"), 1);
  EXPECT_TRUE(still_waiting(waiter.get()));

  const auto start = Clock::now();
  ASSERT_EQ(::shutdown(PQsocket(a.get()), SHUT_RDWR), 0);  // no Terminate
  a.reset();
  // 20 s: well before the abandoned sleep would end by itself.
  EXPECT_TRUE(wait_for([&] { return active_with_marker(marker) == 0; }, 20s))
      << "the abandoned pg_sleep(30) still runs " << seconds_since(start) << " s after its client left\n"
      << tail_lines(sluice_->log(), 30);
  auto results = collect(waiter.get());
  ASSERT_TRUE(results.has_value() && results->size() == 1) << "the waiter was not served after A left";
  ASSERT_EQ(PQresultStatus(results->front().get()), PGRES_TUPLES_OK)
      << describe_result(waiter.get(), results->front().get());
  EXPECT_EQ(std::string(PQgetvalue(results->front().get(), 0, 0)), "served");
  EXPECT_LT(seconds_since(start), 20.0) << "the waiter waited for the abandoned pg_sleep(30)";
  EXPECT_TRUE(wait_for([&] { return backend_count(db) <= 1; }, 20s)) << backend_count(db) << " backends";
}

// Bytes of Sluice's end of the client connection `client_fd` that Sluice has not read
// yet (rx_queue in /proc/net/tcp); nullopt if the socket is not found.
std::optional<unsigned long> unread_at_sluice(int client_fd, int sluice_port) {
  sockaddr_in local{};
  socklen_t length = sizeof local;
  if (::getsockname(client_fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) return std::nullopt;
  char wanted_local[16];
  char wanted_remote[16];
  std::snprintf(wanted_local, sizeof wanted_local, ":%04X", static_cast<unsigned>(sluice_port));
  std::snprintf(wanted_remote, sizeof wanted_remote, ":%04X", static_cast<unsigned>(ntohs(local.sin_port)));
  std::FILE* f = std::fopen("/proc/net/tcp", "r");
  if (f == nullptr) return std::nullopt;
  std::optional<unsigned long> found;
  char line[512];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    char local_address[64];
    char remote_address[64];
    unsigned state = 0;
    unsigned long tx = 0;
    unsigned long rx = 0;
    if (std::sscanf(line, " %*d: %63s %63s %x %lx:%lx", local_address, remote_address, &state, &tx, &rx) != 5) continue;
    const std::string l = local_address;
    const std::string r = remote_address;
    if (l.size() >= 5 && r.size() >= 5 && l.compare(l.size() - 5, 5, wanted_local) == 0 &&
        r.compare(r.size() - 5, 5, wanted_remote) == 0) {
      found = rx;
    }
  }
  std::fclose(f);
  return found;
}

// A pipelining client sends its next request while the previous one is still being
// answered (it waits on a lock). The lone server pump must hand over to both pumps:
// the new request is read and sent on at once (as before, and as PgBouncer does),
// and both answers come back in order, with the server returned to the pool after.
TEST_F(TransactionPoolingTest, RequestSentWhileAnAnswerIsAwaitedIsRelayedAtOnce) {
  const std::string db = "tx_request_meanwhile";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "gate", "x int"));
  PgConn locker = connect_ok("host='" + pg().socket_dir() + "' port=" + std::to_string(pg().port()) +
                             " user=postgres dbname=" + db + " connect_timeout=60");
  exec_ok(locker.get(), "BEGIN");
  exec_ok(locker.get(), "LOCK TABLE gate IN ACCESS EXCLUSIVE MODE");
  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));
  EXPECT_EQ(value(a.get(), "SELECT 1"), "1");  // served once: parked after a request read

  const std::string marker = "tx_request_meanwhile_gate";
  ASSERT_EQ(PQenterPipelineMode(a.get()), 1) << PQerrorMessage(a.get());
  const std::string first = "SELECT count(*) FROM gate /* " + marker + " */";
  ASSERT_EQ(PQsendQueryParams(a.get(), first.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(a.get()), 1);
  ASSERT_EQ(PQflush(a.get()), 0);
  ASSERT_TRUE(wait_for([&] { return active_with_marker(marker) == 1; }, 20s)) << "the first query never started";

  const char* values[1] = {"41"};
  ASSERT_EQ(PQsendQueryParams(a.get(), "SELECT $1::int + 1", 1, nullptr, values, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(a.get()), 1);
  ASSERT_EQ(PQflush(a.get()), 0);
  // Sluice reads the second request while the first still waits on the lock.
  std::optional<unsigned long> unread;
  EXPECT_TRUE(wait_for(
      [&] {
        unread = unread_at_sluice(PQsocket(a.get()), sluice_->port());
        return unread.has_value() && *unread == 0;
      },
      20s))
      << "the request sent meanwhile was left unread by Sluice: "
      << (unread.has_value() ? std::to_string(*unread) : "(socket not found)") << " bytes";
  EXPECT_EQ(active_with_marker(marker), 1) << "the first query ended before the lock was released";

  exec_ok(locker.get(), "COMMIT");
  // One pipelined query's answer: its one-row result, the end of its results, its Sync.
  auto expect_answer = [&](const std::string& expected) {
    SCOPED_TRACE("the answer " + expected);
    PgResult r = next_result_within(a.get());
    ASSERT_TRUE(r) << PQerrorMessage(a.get());
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << describe_result(a.get(), r.get());
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), expected);
    EXPECT_FALSE(next_result_within(a.get()));
    PgResult sync = next_result_within(a.get());
    ASSERT_TRUE(sync);
    EXPECT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC);
  };
  expect_answer("0");
  if (HasFatalFailure()) return;
  expect_answer("42");
  if (HasFatalFailure()) return;
  ASSERT_EQ(PQexitPipelineMode(a.get()), 1) << PQerrorMessage(a.get());

  // The one server went back to the pool: another client is served, then A again.
  EXPECT_EQ(value(b.get(), "SELECT 'b'"), "b");
  EXPECT_EQ(value(a.get(), "SELECT 'a'"), "a");
  EXPECT_TRUE(wait_for([&] { return backend_count(db) <= 1; }, 20s)) << backend_count(db) << " backends";
}

// ---------------------------------------------------------------------------
// 8. Cancel
// ---------------------------------------------------------------------------
// PQcancel from another thread, as an application would; returns PQcancel's result.
int cancel_from_thread(PGconn* c, std::string& error) {
  std::unique_ptr<PGcancel, decltype(&PQfreeCancel)> cancel(PQgetCancel(c), &PQfreeCancel);
  if (!cancel) {
    error = "PQgetCancel returned null";
    return 0;
  }
  int sent = 0;
  std::thread t([&] {
    char errbuf[256] = {};
    sent = PQcancel(cancel.get(), errbuf, sizeof errbuf);
    error = errbuf;
  });
  t.join();
  return sent;
}

TEST_F(TransactionPoolingTest, CancelReachesTheClientsCurrentBackendOnly) {
  const std::string db = "tx_cancel";
  ASSERT_TRUE(start_on_fresh_database(db, 2));
  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));

  for (const bool in_transaction : {false, true}) {
    SCOPED_TRACE(in_transaction ? "inside a transaction" : "autocommit");
    const std::string tag = in_transaction ? "t" : "a";
    if (in_transaction) exec_ok(a.get(), "BEGIN");
    const std::string a_marker = "tx_cancel_a_" + tag;
    const std::string b_marker = "tx_cancel_b_" + tag;
    ASSERT_EQ(PQsendQuery(b.get(), ("SELECT pg_sleep(2), 'b' /* " + b_marker + " */").c_str()), 1);
    const auto start = Clock::now();
    ASSERT_EQ(PQsendQuery(a.get(), ("SELECT pg_sleep(30) /* " + a_marker + " */").c_str()), 1);
    ASSERT_TRUE(wait_for([&] { return active_with_marker(a_marker) == 1; }, 20s)) << "A's sleep never started";
    const bool b_running = active_with_marker(b_marker) == 1;
    std::string error;
    ASSERT_EQ(cancel_from_thread(a.get(), error), 1) << error;

    PgResult r = next_result_within(a.get());
    const double elapsed = seconds_since(start);
    std::printf("[ INFO     ] cancelled pg_sleep(30) ended after %.3f s (B's query %s at the cancel)\n", elapsed,
                b_running ? "running" : "not running");
    ASSERT_TRUE(r) << "no result within the bound";
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << describe_result(a.get(), r.get());
    EXPECT_EQ(sqlstate_of(r.get()), "57014") << describe_result(a.get(), r.get());
    EXPECT_LT(elapsed, 20.0) << "the sleep was not interrupted by the cancel";
    ASSERT_TRUE(collect(a.get()).has_value());

    // B, on the other backend, was not touched.
    auto b_results = collect(b.get());
    ASSERT_TRUE(b_results.has_value());
    ASSERT_EQ(b_results->size(), 1u);
    EXPECT_EQ(PQresultStatus(b_results->front().get()), PGRES_TUPLES_OK)
        << "B's query was hit: " << describe_result(b.get(), b_results->front().get());

    if (in_transaction) {
      EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_INERROR);
      exec_ok(a.get(), "ROLLBACK");
    }
    EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_IDLE);
    EXPECT_EQ(value(a.get(), "SELECT 'a after cancel'"), "a after cancel");
    EXPECT_EQ(value(b.get(), "SELECT 'b after cancel'"), "b after cancel");
  }
}

TEST_F(TransactionPoolingTest, CancelWithoutAttachedServerDoesNothing) {
  const std::string db = "tx_cancel_idle";
  ASSERT_TRUE(start_on_fresh_database(db, 1));
  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));
  // A used the only backend and let go of it; B now runs on it.
  const long long a_pid = backend_pid(a.get());
  const std::string marker = "tx_cancel_idle_b";
  ASSERT_EQ(PQsendQuery(b.get(), ("SELECT pg_sleep(2), 'b' /* " + marker + " */").c_str()), 1);
  ASSERT_TRUE(wait_for([&] { return active_with_marker(marker) == 1; }, 20s));
  EXPECT_EQ(pg_count("SELECT count(*) FROM pg_stat_activity WHERE pid = " + std::to_string(a_pid) +
                     " AND query LIKE '%" + marker + "%'"),
            1)
      << "B is not on the backend A used";
  std::string error;
  EXPECT_EQ(cancel_from_thread(a.get(), error), 1) << error;  // sent; must be dropped
  auto results = collect(b.get());
  ASSERT_TRUE(results.has_value());
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ(PQresultStatus(results->front().get()), PGRES_TUPLES_OK)
      << "idle client A's cancel hit B's query: " << describe_result(b.get(), results->front().get());
  // A, while waiting for the server B holds in a transaction, is not a target either.
  exec_ok(b.get(), "BEGIN");
  const std::string marker2 = "tx_cancel_idle_b2";
  ASSERT_EQ(PQsendQuery(b.get(), ("SELECT pg_sleep(2), 'b' /* " + marker2 + " */").c_str()), 1);
  ASSERT_TRUE(wait_for([&] { return active_with_marker(marker2) == 1; }, 20s));
  ASSERT_EQ(PQsendQuery(a.get(), "SELECT 'a queued'"), 1);
  EXPECT_TRUE(still_waiting(a.get()));
  EXPECT_EQ(cancel_from_thread(a.get(), error), 1) << error;
  auto b2 = collect(b.get());
  ASSERT_TRUE(b2.has_value());
  ASSERT_EQ(b2->size(), 1u);
  EXPECT_EQ(PQresultStatus(b2->front().get()), PGRES_TUPLES_OK)
      << "queued client A's cancel hit B's query: " << describe_result(b.get(), b2->front().get());
  exec_ok(b.get(), "COMMIT");
  auto a_results = collect(a.get());
  ASSERT_TRUE(a_results.has_value());
  ASSERT_EQ(a_results->size(), 1u);
  // Whether A's own queued query survives its cancel is up to Sluice; A stays usable.
  std::printf("[ INFO     ] A's queued query after its own cancel: %s\n",
              describe_result(a.get(), a_results->front().get()).c_str());
  EXPECT_EQ(value(a.get(), "SELECT 'a ok'"), "a ok");
  EXPECT_EQ(value(b.get(), "SELECT 'b ok'"), "b ok");
}

// ---------------------------------------------------------------------------
// 9. COPY and notices
// ---------------------------------------------------------------------------
// Sends `sql`, a COPY, and checks that its one result puts the connection in `state`
// (PGRES_COPY_IN or PGRES_COPY_OUT). Call through ASSERT_NO_FATAL_FAILURE.
void begin_copy(PGconn* c, const std::string& sql, ExecStatusType state) {
  ASSERT_EQ(PQsendQuery(c, sql.c_str()), 1);
  auto start = collect(c);
  ASSERT_TRUE(start.has_value());
  ASSERT_EQ(start->size(), 1u);
  ASSERT_EQ(PQresultStatus(start->front().get()), state) << describe_result(c, start->front().get());
}

// Sends `rows` to the COPY FROM STDIN in progress and ends it (as failed with `error`, when
// given); `end` gets the results that follow. Call through ASSERT_NO_FATAL_FAILURE.
void finish_copy_in(PGconn* c, const std::string& rows, const char* error, std::vector<PgResult>& end) {
  ASSERT_EQ(PQputCopyData(c, rows.data(), static_cast<int>(rows.size())), 1);
  ASSERT_EQ(PQputCopyEnd(c, error), 1);
  auto results = collect(c);
  ASSERT_TRUE(results.has_value());
  end = std::move(*results);
}

TEST_F(TransactionPoolingTest, CopyInAndOutAndNotices) {
  const std::string db = "tx_copy";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "copied", "id int, name text"));
  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));
  NoticeLog notices;
  notices.attach(a.get());

  constexpr int kRows = 2000;
  std::string expected;
  for (int i = 1; i <= kRows; ++i) expected += std::to_string(i) + "\tname " + std::to_string(i) + "\n";

  // COPY FROM STDIN in chunks.
  {
    ASSERT_NO_FATAL_FAILURE(begin_copy(a.get(), "COPY copied (id, name) FROM STDIN", PGRES_COPY_IN));
    for (std::size_t pos = 0; pos < expected.size(); pos += 1000) {
      const std::string chunk = expected.substr(pos, 1000);
      ASSERT_EQ(PQputCopyData(a.get(), chunk.data(), static_cast<int>(chunk.size())), 1) << PQerrorMessage(a.get());
    }
    ASSERT_EQ(PQputCopyEnd(a.get(), nullptr), 1);
    auto end = collect(a.get());
    ASSERT_TRUE(end.has_value());
    ASSERT_EQ(end->size(), 1u);
    EXPECT_EQ(PQresultStatus(end->front().get()), PGRES_COMMAND_OK) << describe_result(a.get(), end->front().get());
    EXPECT_EQ(std::string(PQcmdTuples(end->front().get())), std::to_string(kRows));
  }
  EXPECT_EQ(value(b.get(), "SELECT count(*) FROM copied"), std::to_string(kRows)) << "server not back after COPY";

  // COPY TO STDOUT.
  {
    ASSERT_NO_FATAL_FAILURE(
        begin_copy(a.get(), "COPY (SELECT id, name FROM copied ORDER BY id) TO STDOUT", PGRES_COPY_OUT));
    std::string received;
    const auto deadline = Clock::now() + kResultBound;
    for (;;) {
      char* buf = nullptr;
      const int n = PQgetCopyData(a.get(), &buf, 1);  // async: never blocks
      if (n > 0) {
        received.append(buf, static_cast<std::size_t>(n));
        PQfreemem(buf);
        continue;
      }
      if (n == -1) break;  // done
      ASSERT_NE(n, -2) << PQerrorMessage(a.get());
      ASSERT_LT(Clock::now(), deadline) << "COPY TO STDOUT did not finish within the bound";
      pollfd pfd{PQsocket(a.get()), POLLIN, 0};
      ::poll(&pfd, 1, 200);
      ASSERT_EQ(PQconsumeInput(a.get()), 1) << PQerrorMessage(a.get());
    }
    EXPECT_EQ(received, expected);
    auto end = collect(a.get());
    ASSERT_TRUE(end.has_value());
    ASSERT_EQ(end->size(), 1u);
    EXPECT_EQ(PQresultStatus(end->front().get()), PGRES_COMMAND_OK) << describe_result(a.get(), end->front().get());
  }
  EXPECT_EQ(value(b.get(), "SELECT 'b after copy out'"), "b after copy out");

  // COPY inside a transaction that is rolled back; B waits meanwhile.
  {
    exec_ok(a.get(), "BEGIN");
    ASSERT_NO_FATAL_FAILURE(begin_copy(a.get(), "COPY copied FROM STDIN", PGRES_COPY_IN));
    std::vector<PgResult> end;
    ASSERT_NO_FATAL_FAILURE(finish_copy_in(a.get(), "9001\tx\n9002\ty\n", nullptr, end));
    EXPECT_EQ(PQresultStatus(end.front().get()), PGRES_COMMAND_OK) << describe_result(a.get(), end.front().get());
    ASSERT_EQ(PQsendQuery(b.get(), "SELECT count(*) FROM copied"), 1);
    EXPECT_EQ(value(a.get(), "SELECT count(*) FROM copied"), std::to_string(kRows + 2));
    EXPECT_TRUE(still_waiting(b.get()));
    exec_ok(a.get(), "ROLLBACK");
    auto b_result = collect(b.get());
    ASSERT_TRUE(b_result.has_value());
    ASSERT_EQ(b_result->size(), 1u);
    EXPECT_STREQ(PQgetvalue(b_result->front().get(), 0, 0), std::to_string(kRows).c_str());
  }

  // Bad COPY data and a client-side COPY abort: errors, and the server stays usable.
  {
    ASSERT_NO_FATAL_FAILURE(begin_copy(a.get(), "COPY copied FROM STDIN", PGRES_COPY_IN));
    std::vector<PgResult> end;
    ASSERT_NO_FATAL_FAILURE(finish_copy_in(a.get(), "not a number\tz\n", nullptr, end));
    ASSERT_FALSE(end.empty());
    EXPECT_EQ(sqlstate_of(end.front().get()), "22P02") << describe_result(a.get(), end.front().get());
    EXPECT_EQ(value(b.get(), "SELECT 'b after bad copy'"), "b after bad copy");

    ASSERT_NO_FATAL_FAILURE(begin_copy(a.get(), "COPY copied FROM STDIN", PGRES_COPY_IN));
    ASSERT_NO_FATAL_FAILURE(finish_copy_in(a.get(), "9100\tpartial\n", "client changed its mind", end));
    ASSERT_FALSE(end.empty());
    EXPECT_EQ(sqlstate_of(end.front().get()), "57014") << describe_result(a.get(), end.front().get());
    EXPECT_EQ(value(a.get(), "SELECT count(*) FROM copied"), std::to_string(kRows));
    EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_IDLE);
    EXPECT_EQ(value(b.get(), "SELECT 'b after copy fail'"), "b after copy fail");
  }

  // Notices reach the client, in autocommit and inside a transaction.
  exec_ok(a.get(), "DO $$ BEGIN RAISE NOTICE 'tx notice %', 42; END $$");
  EXPECT_TRUE(notices.contains("00000", "NOTICE", "tx notice 42")) << notices.dump();
  exec_ok(a.get(), "BEGIN");
  exec_ok(a.get(), "DO $$ BEGIN RAISE WARNING 'tx warning %', 43; END $$");
  exec_ok(a.get(), "COMMIT");
  EXPECT_TRUE(notices.contains("01000", "WARNING", "tx warning 43")) << notices.dump();
  EXPECT_LE(backend_count(db), 1);
}

// ---------------------------------------------------------------------------
// 10. Errors
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, ErrorsInAndOutOfTransactionsKeepTheServerUsable) {
  const std::string db = "tx_error";
  ASSERT_TRUE(start_on_fresh_database(db, 1, "errs", "x int"));
  PgConn a = connect_ok(via(db));
  PgConn b = connect_ok(via(db));

  // An error inside a transaction leaves it open (aborted): A keeps the server until ROLLBACK.
  exec_ok(a.get(), "BEGIN");
  exec_ok(a.get(), "INSERT INTO errs VALUES (1)");
  {
    PgResult r = query(a.get(), "SELECT 1 / 0");
    EXPECT_EQ(sqlstate_of(r.get()), "22012") << describe_result(a.get(), r.get());
  }
  EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_INERROR);
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT count(*), txid_current_if_assigned() FROM errs"), 1);
  {
    PgResult r = query(a.get(), "SELECT 1");
    EXPECT_EQ(sqlstate_of(r.get()), "25P02") << describe_result(a.get(), r.get());
  }
  EXPECT_TRUE(still_waiting(b.get())) << "B was served while A's failed transaction was open";
  exec_ok(a.get(), "ROLLBACK");
  {
    auto results = collect(b.get());
    ASSERT_TRUE(results.has_value());
    ASSERT_EQ(results->size(), 1u);
    const PGresult* r = results->front().get();
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << describe_result(b.get(), r);
    EXPECT_STREQ(PQgetvalue(r, 0, 0), "0");
    EXPECT_TRUE(PQgetisnull(r, 0, 1));
  }
  EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_IDLE);
  EXPECT_EQ(value(a.get(), "SELECT 'a after rollback'"), "a after rollback");

  // Autocommit errors (simple and extended protocol) release the server at once.
  {
    PgResult r = query(a.get(), "SELECT * FROM no_such_table");
    EXPECT_EQ(sqlstate_of(r.get()), "42P01") << describe_result(a.get(), r.get());
    EXPECT_EQ(value(b.get(), "SELECT 'b after simple error'"), "b after simple error");
    PgResult p = query_params(a.get(), "SELECT 1 / $1::int", {"0"});
    EXPECT_EQ(sqlstate_of(p.get()), "22012") << describe_result(a.get(), p.get());
    EXPECT_EQ(value(b.get(), "SELECT 'b after extended error'"), "b after extended error");
    PgResult q = query_params(a.get(), "SELECT $1::int * 2", {"21"});
    ASSERT_EQ(PQresultStatus(q.get()), PGRES_TUPLES_OK) << describe_result(a.get(), q.get());
    EXPECT_STREQ(PQgetvalue(q.get(), 0, 0), "42");
  }

  // A savepoint recovers from the error; the transaction commits what is left.
  exec_ok(a.get(), "BEGIN");
  exec_ok(a.get(), "INSERT INTO errs VALUES (2)");
  exec_ok(a.get(), "SAVEPOINT s");
  {
    PgResult r = query(a.get(), "INSERT INTO errs VALUES (1 / 0)");
    EXPECT_EQ(sqlstate_of(r.get()), "22012") << describe_result(a.get(), r.get());
  }
  exec_ok(a.get(), "ROLLBACK TO SAVEPOINT s");
  exec_ok(a.get(), "INSERT INTO errs VALUES (3)");
  exec_ok(a.get(), "COMMIT");
  EXPECT_EQ(value(b.get(), "SELECT string_agg(x::text, ',' ORDER BY x) FROM errs"), "2,3");

  // A named prepared statement within one transaction (across transactions is not
  // supported yet), and an error in the extended protocol inside a transaction.
  exec_ok(a.get(), "BEGIN");
  {
    PgResult prep(PQprepare(a.get(), "tx_error_stmt", "SELECT $1::int * 3", 1, nullptr));
    ASSERT_EQ(PQresultStatus(prep.get()), PGRES_COMMAND_OK) << describe_result(a.get(), prep.get());
    const char* v[1] = {"14"};
    PgResult r(PQexecPrepared(a.get(), "tx_error_stmt", 1, v, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << describe_result(a.get(), r.get());
    EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "42");
    PgResult bad = query_params(a.get(), "SELECT 1 / $1::int", {"0"});
    EXPECT_EQ(sqlstate_of(bad.get()), "22012") << describe_result(a.get(), bad.get());
  }
  EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_INERROR);
  exec_ok(a.get(), "ROLLBACK");
  EXPECT_EQ(value(b.get(), "SELECT txid_current_if_assigned() IS NULL"), "t");
  EXPECT_EQ(value(a.get(), "SELECT 'a done'"), "a done");
  EXPECT_TRUE(wait_for([&] { return idle_in_transaction_count(db) == 0; }, 20s));
  EXPECT_LE(backend_count(db), 1);
}

// ---------------------------------------------------------------------------
// server_reset_query is not run in transaction mode (but still in session mode)
// ---------------------------------------------------------------------------
TEST_F(TransactionPoolingTest, ServerResetQueryOnlyInSessionMode) {
  const std::string tx_db = "tx_reset_tx";
  const std::string session_db = "tx_reset_session";
  for (const auto& db : {tx_db, session_db}) {
    fresh_database(db);
    create_table(db, "reset_log", "at timestamptz DEFAULT now()");
  }
  // The reset query leaves a trace; transaction mode globally, session mode for one database.
  ASSERT_TRUE(start(pooling_config("transaction", 1,
                                   "\n[databases." + session_db +
                                       "]\nhost = \"{pg_host}\"\nport = {pg_port}\npool = { mode = \"session\" }\n",
                                   "debug", "server_reset_query = \"INSERT INTO reset_log DEFAULT VALUES\"\n")));
  for (const auto& db : {tx_db, session_db}) {
    SCOPED_TRACE(db);
    for (int i = 0; i < 3; ++i) {
      PgConn c = connect_ok(via(db));
      EXPECT_EQ(value(c.get(), "SELECT 1"), "1");
      if (i == 2) exec_ok(c.get(), "BEGIN");  // and one that leaves inside a transaction
    }
    // With a pool of 1, a reset for the clients above would have run before this query.
    PgConn next = connect_ok(via(db));
    const std::string resets = value(next.get(), "SELECT count(*) FROM reset_log");
    std::printf("[ INFO     ] %s: %s reset queries ran\n", db.c_str(), resets.c_str());
    if (db == tx_db) {
      EXPECT_EQ(resets, "0") << "server_reset_query ran in transaction mode";
    } else {
      EXPECT_NE(resets, "0") << "control: in session mode the reset query leaves a trace";
    }
  }
}

}  // namespace
}  // namespace sluice::test
