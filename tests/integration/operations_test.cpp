// Operations (issue 7) through a running Sluice, with real clients (libpq, psql, pgbench, promtool):
//  - the admin console (database `sluice`, alias `pgbouncer`): SHOW POOLS / STATS / STATS_TOTALS /
//    CLIENTS / SERVERS / DATABASES / CONFIG with PgBouncer's columns, checked against what the
//    clients do and against pg_stat_activity; PAUSE / RESUME / RECONNECT / KILL / RELOAD / SHUTDOWN,
//    and what stats users and unknown commands get;
//  - Prometheus metrics (`metrics_listen`): /metrics scraped during a pgbench run passes
//    `promtool check metrics` and its counters move; /healthz; /readyz while PostgreSQL is up and down;
//  - reload (SIGHUP or RELOAD): pool size and timeouts change under running clients, an invalid file
//    is refused (file:line and key logged) and the old configuration keeps serving, databases added
//    and removed, a changed backend address (idle connections to the old server close at once, lent
//    ones when released, transactions on it finish undisturbed);
//  - graceful shutdown (SIGTERM, shutdown_timeout, a second SIGTERM);
//  - a restart without refused clients: a second Sluice on the same port (so_reuseport) under
//    `pgbench -C`, then SIGTERM to the first.
//
// Every wait polls a condition with a generous bound; timings are printed, never asserted. A
// watchdog fails a test that runs past kTestLimit and kills its Sluice, so that a client blocked
// on a missing behaviour fails the test instead of hanging the binary. This binary owns its
// PostgreSQL (one per binary), so the /readyz test may stop and restart it.
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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
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
constexpr const char* kOtherDb = "sluice_other";
constexpr auto kTestLimit = 90s;  // per test; the whole binary is meant to take about a minute

PostgresServer& pg() { return PostgresServer::shared(); }




// ---------------------------------------------------------------------------------------------
// Configuration




// default_config(size) in `mode`, with the console's users (postgres: admin, app: stats) and
// `sluice_lines` added to [sluice].
std::string config(const std::string& mode, int size, const std::string& sluice_lines = "") {
  std::string toml = default_config(size);
  const std::string session = "mode = \"session\"";
  toml.replace(toml.find(session), session.size(), "mode = \"" + mode + "\"");
  std::string lines = "admin_users = [\"postgres\"]\nstats_users = [\"app\"]";
  if (!sluice_lines.empty()) lines += "\n" + sluice_lines;
  return add_to(toml, "[sluice]", lines);
}

// Removes the [databases."*"] fallback (so that a database missing from the file is unknown).
std::string without_fallback(std::string toml) {
  const std::string block = "[databases.\"*\"]\nhost = \"{pg_host}\"\nport = {pg_port}\n";
  const auto at = toml.find(block);
  if (at == std::string::npos) throw std::logic_error("default_config changed: no [databases.\"*\"]");
  toml.erase(at, block.size());
  return toml;
}

// Removes the [databases.<name>] table written by default_config.
std::string without_database(std::string toml, const std::string& name) {
  const std::string block = "[databases." + name + "]\nhost = \"{pg_host}\"\nport = {pg_port}\n";
  const auto at = toml.find(block);
  if (at == std::string::npos) throw std::logic_error("default_config changed: no [databases." + name + "]");
  toml.erase(at, block.size());
  return toml;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

// 1-based line of the first occurrence of `needle` in `text` (0 when absent).
int line_of(const std::string& text, const std::string& needle) {
  const auto at = text.find(needle);
  if (at == std::string::npos) return 0;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(at), '\n'));
}

// ---------------------------------------------------------------------------------------------
// Clients







// Still waiting for the answer to a query sent with PQsendQuery (reads what has arrived first).
bool still_busy(PGconn* conn) { return PQconsumeInput(conn) == 1 && PQisBusy(conn) == 1; }










// "" when `sql` succeeded, else a description of the failure.
std::string exec_error(PGconn* conn, const std::string& sql) {
  PgResult r(PQexec(conn, sql.c_str()));
  const auto status = PQresultStatus(r.get());
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return "";
  return describe_result(conn, r.get());
}

// The result of a query sent earlier with PQsendQuery (after await_not_busy): first value or error.
Probe result_of(PGconn* conn) {
  Probe p;
  PgResult r(PQgetResult(conn));
  if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) > 0) {
    p.ok = true;
    p.value = PQgetvalue(r.get(), 0, 0);
  } else if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
    p.ok = true;
  } else {
    p.error = describe_result(conn, r.get());
  }
  while (PGresult* extra = PQgetResult(conn)) {
    if (PQresultStatus(extra) == PGRES_FATAL_ERROR) {
      p.ok = false;
      p.error += PQresultErrorMessage(extra);
    }
    PQclear(extra);
  }
  return p;
}










bool accepts_tcp(int port) {
  const int fd = raw_connect(port);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// The local port of a libpq connection's socket (what Sluice sees as the client's port).
int local_port_of(PGconn* conn) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(PQsocket(conn), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  return ntohs(addr.sin_port);
}

// Backends of `user` on `dbname`; -1 while PostgreSQL does not answer.
int try_backend_count(const std::string& user, const std::string& dbname, const std::string& state = "") {
  try {
    return backend_count(pg(), user, dbname, state);
  } catch (const std::exception&) {
    return -1;
  }
}




// ---------------------------------------------------------------------------------------------
// Admin console answers

struct Table {
  bool ok = false;
  std::string sqlstate;
  std::string error;
  std::vector<std::string> columns;
  std::vector<std::map<std::string, std::string>> rows;

  // Rows whose columns have the given values.
  std::vector<const std::map<std::string, std::string>*> where(
      const std::map<std::string, std::string>& match) const {
    std::vector<const std::map<std::string, std::string>*> out;
    for (const auto& row : rows) {
      bool all = true;
      for (const auto& [key, value] : match) {
        const auto it = row.find(key);
        all &= it != row.end() && it->second == value;
      }
      if (all) out.push_back(&row);
    }
    return out;
  }
  const std::map<std::string, std::string>* first(const std::map<std::string, std::string>& match) const {
    const auto found = where(match);
    return found.empty() ? nullptr : found.front();
  }
  std::string text() const {
    if (!ok) return "ERROR " + sqlstate + ": " + error;
    std::string out;
    for (const auto& c : columns) out += (out.empty() ? "" : "|") + c;
    for (const auto& row : rows) {
      out += "\n";
      bool first_column = true;
      for (const auto& c : columns) {
        const auto it = row.find(c);
        out += (first_column ? "" : "|") + (it == row.end() ? std::string("?") : it->second);
        first_column = false;
      }
    }
    return out;
  }
};

Table table_of(PGconn* conn, const std::string& sql) {
  Table t;
  PgResult r(PQexec(conn, sql.c_str()));
  const auto status = PQresultStatus(r.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    t.sqlstate = sqlstate_of(r.get());
    t.error = describe_result(conn, r.get());
    return t;
  }
  t.ok = true;
  for (int j = 0; j < PQnfields(r.get()); ++j) t.columns.emplace_back(PQfname(r.get(), j));
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::map<std::string, std::string> row;
    for (int j = 0; j < PQnfields(r.get()); ++j) {
      row[t.columns[static_cast<std::size_t>(j)]] = PQgetisnull(r.get(), i, j) ? "NULL" : PQgetvalue(r.get(), i, j);
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

// A number from a console row; -1 when the column is missing or not a number.
long long number(const std::map<std::string, std::string>* row, const std::string& column) {
  if (row == nullptr) return -1;
  const auto it = row->find(column);
  if (it == row->end() || it->second.empty()) return -1;
  try {
    std::size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    return used == it->second.size() ? v : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

std::string field(const std::map<std::string, std::string>* row, const std::string& column) {
  if (row == nullptr) return "<no row>";
  const auto it = row->find(column);
  return it == row->end() ? "<no column " + column + ">" : it->second;
}

// ---------------------------------------------------------------------------------------------
// HTTP (metrics)

struct Http {
  int status = -1;
  std::string headers;
  std::string body;
  std::string error;
};

// GET http://127.0.0.1:port/path (HTTP/1.1, Connection: close); bounded by 15 s.
Http http_get(int port, const std::string& path) {
  Http out;
  const int fd = raw_connect(port);
  if (fd < 0) {
    out.error = std::string("connect: ") + std::strerror(errno);
    return out;
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                              "\r\nUser-Agent: sluice-operations-test\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    out.error = std::string("send: ") + std::strerror(errno);
    ::close(fd);
    return out;
  }
  std::string data;
  const auto deadline = Clock::now() + 15s;
  std::size_t header_end = std::string::npos;
  long long content_length = -1;
  bool chunked = false;
  auto complete = [&] {
    if (header_end == std::string::npos) return false;
    const std::string body = data.substr(header_end + 4);
    if (content_length >= 0) return static_cast<long long>(body.size()) >= content_length;
    if (chunked) return contains(body, "\r\n0\r\n\r\n") || body.rfind("0\r\n\r\n", 0) == 0;
    return false;
  };
  char buf[16384];
  for (;;) {
    if (complete()) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) {
      out.error = "no complete answer within 15 s; got " + std::to_string(data.size()) + " bytes";
      break;
    }
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (header_end == std::string::npos && (header_end = data.find("\r\n\r\n")) != std::string::npos) {
      std::string lower = data.substr(0, header_end);
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (auto cl = parse_number(lower, R"(content-length:\s*(\d+))")) content_length = *cl;
      chunked = contains(lower, "transfer-encoding: chunked");
    }
  }
  ::close(fd);
  if (header_end == std::string::npos) {
    if (out.error.empty()) out.error = "no HTTP header in the answer: " + data.substr(0, 200);
    return out;
  }
  out.headers = data.substr(0, header_end);
  if (auto status = parse_number(out.headers, R"(^HTTP/1\.[01] (\d{3}))")) out.status = static_cast<int>(*status);
  std::string body = data.substr(header_end + 4);
  if (chunked) {
    std::string plain;
    std::size_t pos = 0;
    while (pos < body.size()) {
      const auto eol = body.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const std::size_t size = std::strtoul(body.substr(pos, eol - pos).c_str(), nullptr, 16);
      if (size == 0) break;
      plain += body.substr(eol + 2, size);
      pos = eol + 2 + size + 2;
    }
    body = plain;
  }
  out.body = body;
  return out;
}

// Prometheus samples: "name{labels}" -> value.
std::map<std::string, double> parse_samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::size_t key_end = 0;
    if (const auto brace = line.find('{'); brace != std::string::npos && brace < line.find(' ')) {
      key_end = line.rfind('}') + 1;
    } else {
      key_end = line.find(' ');
    }
    if (key_end == 0 || key_end == std::string::npos || key_end >= line.size()) continue;
    std::istringstream value(line.substr(key_end));
    std::string token;
    value >> token;
    out[line.substr(0, key_end)] = std::strtod(token.c_str(), nullptr);
  }
  return out;
}

// The sum of the samples of `name` whose labels contain every one of `labels` (e.g. database="x");
// -1 when there is none.
double sample(const std::map<std::string, double>& samples, const std::string& name,
              const std::vector<std::string>& labels = {}) {
  double sum = 0;
  bool found = false;
  for (const auto& [key, value] : samples) {
    if (key != name && key.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const auto& l : labels) all &= contains(key, l);
    if (!all) continue;
    sum += value;
    found = true;
  }
  return found ? sum : -1;
}

// ---------------------------------------------------------------------------------------------
// pgbench

void ensure_pgbench_tables() {
  static bool done = false;
  if (done) return;
  const ProcessResult r = run({pg_tool("pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p",
                               std::to_string(pg().port()), "-U", "app", kDb},
                              {"PGPASSWORD=app_pw", "LC_ALL=C", "PGCONNECT_TIMEOUT=60"}, 120s);
  ASSERT_FALSE(r.timed_out) << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;
  done = true;
}

// Backends of app that ran pgbench's -S statement.
int pgbench_backends() {
  try {
    return std::stoi(pg().query_value("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND "
                                      "query LIKE 'SELECT abalance FROM pgbench_accounts%'",
                                      "postgres"));
  } catch (const std::exception&) {
    return -1;
  }
}

// ---------------------------------------------------------------------------------------------
// Fixture


class OperationsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_THROW(pg()) << "PostgreSQL did not start";
    // The previous test's Sluice has gone; wait for PostgreSQL to have ended its backends, so that
    // this test's counts are its own.
    ASSERT_TRUE(wait_for([] { return try_backend_count("app", "") == 0; }, 30s))
        << "backends of an earlier test are still open";
    watchdog_ = std::make_unique<Watchdog>(std::chrono::duration_cast<std::chrono::seconds>(kTestLimit), [this] {
      for (auto& pid : pids_) {  // every Sluice of the test
        if (const int p = pid.load(); p > 0) ::kill(p, SIGKILL);
      }
    });
  }

  void TearDown() override {
    watchdog_.reset();  // first: it must not signal a pid that SluiceProcess has reaped
    for (auto& p : pids_) p = -1;
    admin_.reset();
    second_.reset();
    sluice_.reset();  // SIGTERM (SIGKILL after 10 s); prints Sluice's log when the test failed
    if (pg().stopped()) {
      try {
        pg().start_again();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "restarting PostgreSQL after the test: " << e.what();
      }
    }
  }

  // Starts Sluice with `toml`; false (and the test failed) when it does not start, e.g. while it
  // rejects a configuration key it does not know yet (exit 2).
  bool start(const std::string& toml) {
    try {
      sluice_ = std::make_unique<SluiceProcess>(toml);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "Sluice did not start (does it know every key of this config yet?):\n" << e.what();
      return false;
    }
    pids_[0] = sluice_->pid();
    return true;
  }

  std::string conninfo(const std::string& db = kDb, const std::string& extra = "") const {
    return sluice_->conninfo(db, "app", "app_pw", extra);
  }
  std::string admin_conninfo(const std::string& db = "sluice") const {
    return sluice_->conninfo(db, "postgres", "postgres_pw");
  }

  std::string log_tail() const {
    std::string out;
    if (sluice_) out += "\n---- Sluice log, last lines ----\n" + tail_lines(sluice_->log(), 40);
    if (second_) out += "\n---- second Sluice's log, last lines ----\n" + tail_lines(second_->log(), 40);
    return out;
  }

  // A logged-in client of Sluice as app; the test fails (not fatally) when the login does.
  PgConn client(const std::string& db = kDb, const std::string& application_name = "opstest") {
    PgConn c = connect_verbose(conninfo(db, "application_name=" + application_name));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << login_error(c.get()) << log_tail();
    return c;
  }

  // The admin console connection (postgres, database sluice), opened on first use and again after a loss.
  PGconn* admin() {
    if (!admin_ || PQstatus(admin_.get()) != CONNECTION_OK) admin_ = connect_verbose(admin_conninfo());
    return admin_.get();
  }
  Table show(const std::string& sql) {
    PGconn* c = admin();
    if (PQstatus(c) != CONNECTION_OK) {
      Table t;
      t.error = "console login failed: " + login_error(c);
      return t;
    }
    return table_of(c, sql);
  }
  // SHOW POOLS' row of (db, app); nullptr when there is none (kept in `pools_`).
  const std::map<std::string, std::string>* pool_row(const std::string& db = kDb) {
    pools_ = show("SHOW POOLS");
    return pools_.first({{"database", db}, {"user", "app"}});
  }

  // wait_for(condition), but gives up as soon as Sluice has exited (the test then fails once,
  // saying so, instead of waiting out every bound).
  bool live_wait(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 20s) {
    bool held = false;
    wait_for(
        [&] {
          held = condition();
          return held || !sluice_ || !sluice_->running();
        },
        timeout);
    if (!held && sluice_ && !sluice_->running() && !reported_exit_) {
      reported_exit_ = true;
      ADD_FAILURE() << "Sluice exited unexpectedly (status " << sluice_->stop() << ")" << log_tail();
    }
    return held;
  }

  // Writes `toml` (placeholders filled in with this Sluice's values) over the config file.
  void rewrite_config(const std::string& toml) const {
    std::string text = replace_all(toml, "{listen_port}", std::to_string(sluice_->port()));
    text = replace_all(text, "{metrics_port}", std::to_string(sluice_->metrics_port()));
    text = replace_all(text, "{pg_port}", std::to_string(pg().port()));
    text = replace_all(text, "{pg_host}", pg().host());
    text = replace_all(text, "{dir}", sluice_->dir());
    const std::string tmp = sluice_->config_path() + ".new";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << text;
      if (!out) throw std::runtime_error("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), sluice_->config_path().c_str()) != 0) {
      throw std::runtime_error("cannot rename " + tmp + ": " + std::strerror(errno));
    }
  }

  std::unique_ptr<SluiceProcess> sluice_;
  std::unique_ptr<SluiceProcess> second_;
  std::vector<std::atomic<int>> pids_ = std::vector<std::atomic<int>>(2);
  Table pools_;

 private:
  bool reported_exit_ = false;
  PgConn admin_;
  std::unique_ptr<Watchdog> watchdog_;
};

// ---------------------------------------------------------------------------------------------
// 1. The console's SHOW commands

const std::vector<std::string> kPoolsColumns = {
    "database",   "user",         "cl_active",    "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
    "sv_active",  "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
    "maxwait",    "maxwait_us",   "pool_mode",    "paused",     "hosts",                "hosts_down"};
const std::vector<std::string> kStatsColumns = {
    "database",        "total_xact_count", "total_query_count", "total_received", "total_sent",
    "total_xact_time", "total_query_time", "total_wait_time",   "avg_xact_count", "avg_query_count",
    "avg_recv",        "avg_sent",         "avg_xact_time",     "avg_query_time", "avg_wait_time"};
const std::vector<std::string> kStatsTotalsColumns = {"database",  "xact_count", "query_count", "bytes_received",
                                                      "bytes_sent", "xact_time",  "query_time",  "wait_time"};
const std::vector<std::string> kClientsColumns = {
    "type",         "user",    "database",   "state",      "addr",         "port",
    "local_addr",   "local_port", "connect_time", "request_time", "wait",    "wait_us",
    "close_needed", "ptr",     "link",       "remote_pid", "tls",          "application_name"};
const std::vector<std::string> kDatabasesColumns = {
    "name",         "host",      "port",          "database",           "force_user",
    "pool_size",    "min_pool_size", "reserve_pool", "pool_mode",        "max_connections",
    "current_connections", "paused", "disabled"};
const std::vector<std::string> kConfigColumns = {"key", "value", "default", "changeable"};

TEST_F(OperationsTest, ShowPoolsClientsAndServersFollowWhatClientsDo) {
  ASSERT_TRUE(start(config("transaction", 2)));
  // Three logged-in clients; two hold the pool's two server connections inside a transaction, the
  // third asks for one and waits.
  PgConn a = client(kDb, "ops_a");
  PgConn b = client(kDb, "ops_b");
  PgConn c = client(kDb, "ops_c");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(exec_error(a.get(), "BEGIN"), "");
  ASSERT_EQ(exec_error(b.get(), "BEGIN"), "");
  const std::string pid_a = value_of(a.get(), "SELECT pg_backend_pid()");
  const std::string pid_b = value_of(b.get(), "SELECT pg_backend_pid()");
  ASSERT_EQ(pid_a.find("<error"), std::string::npos) << pid_a << log_tail();
  ASSERT_EQ(pid_b.find("<error"), std::string::npos) << pid_b << log_tail();
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT 'c waited'"), 1);

  const std::map<std::string, std::string>* pool = nullptr;
  const bool waiting = live_wait([&] {
    pool = pool_row();
    return number(pool, "cl_waiting") == 1;
  });
  ASSERT_TRUE(waiting) << "SHOW POOLS never showed the waiting client:\n" << pools_.text() << log_tail();
  EXPECT_EQ(pools_.columns, kPoolsColumns) << pools_.text();
  EXPECT_EQ(number(pool, "cl_active"), 2) << pools_.text();
  EXPECT_EQ(number(pool, "sv_active"), 2) << pools_.text();
  EXPECT_EQ(number(pool, "sv_idle"), 0) << pools_.text();
  EXPECT_EQ(number(pool, "sv_login"), 0) << pools_.text();
  EXPECT_EQ(field(pool, "pool_mode"), "transaction") << pools_.text();
  // The longest wait grows while the client waits.
  const bool wait_shown = live_wait([&] {
    pool = pool_row();
    return number(pool, "maxwait") * 1000000 + number(pool, "maxwait_us") > 0;
  });
  EXPECT_TRUE(wait_shown) << "maxwait/maxwait_us stay 0 while a client waits:\n" << pools_.text() << log_tail();
  std::printf("[ INFO     ] SHOW POOLS with 2 clients in a transaction and 1 waiting:\n%s\n", pools_.text().c_str());

  // SHOW CLIENTS: the three clients (two active, one waiting) with their ports and names, and the console.
  const Table clients = show("SHOW CLIENTS");
  ASSERT_TRUE(clients.ok) << clients.text() << log_tail();
  EXPECT_EQ(clients.columns, kClientsColumns) << clients.text();
  const auto app_clients = clients.where({{"database", kDb}, {"user", "app"}});
  EXPECT_EQ(app_clients.size(), 3u) << clients.text();
  EXPECT_EQ(clients.where({{"database", kDb}, {"state", "active"}}).size(), 2u) << clients.text();
  const auto* waiter = clients.first({{"database", kDb}, {"state", "waiting"}});
  ASSERT_NE(waiter, nullptr) << clients.text();
  EXPECT_EQ(field(waiter, "application_name"), "ops_c") << clients.text();
  EXPECT_EQ(number(waiter, "port"), local_port_of(c.get())) << clients.text();
  std::set<long long> seen_ports, our_ports;
  for (const auto* row : app_clients) {
    seen_ports.insert(number(row, "port"));
    EXPECT_EQ(field(row, "type"), "C") << clients.text();
    EXPECT_EQ(field(row, "addr"), "127.0.0.1") << clients.text();
    EXPECT_EQ(number(row, "local_port"), sluice_->port()) << clients.text();
  }
  for (PGconn* conn : {a.get(), b.get(), c.get()}) our_ports.insert(local_port_of(conn));
  EXPECT_EQ(seen_ports, our_ports) << clients.text();
  EXPECT_NE(clients.first({{"database", "sluice"}, {"user", "postgres"}}), nullptr)
      << "the console's own connection is not listed:\n" << clients.text();

  // SHOW SERVERS: the two backends, active, with PostgreSQL's pids.
  const Table servers = show("SHOW SERVERS");
  ASSERT_TRUE(servers.ok) << servers.text() << log_tail();
  EXPECT_EQ(servers.columns, kClientsColumns) << servers.text();
  const auto app_servers = servers.where({{"database", kDb}, {"user", "app"}});
  std::set<std::string> server_pids;
  for (const auto* row : app_servers) {
    server_pids.insert(field(row, "remote_pid"));
    EXPECT_EQ(field(row, "type"), "S") << servers.text();
    EXPECT_EQ(field(row, "state"), "active") << servers.text();
    EXPECT_EQ(field(row, "addr"), "127.0.0.1") << servers.text();
    EXPECT_EQ(number(row, "port"), pg().port()) << servers.text();
  }
  EXPECT_EQ(server_pids, (std::set<std::string>{pid_a, pid_b})) << servers.text();
  std::set<std::string> activity;
  for (int pid : backend_pids(pg(), "app", kDb)) activity.insert(std::to_string(pid));
  EXPECT_EQ(server_pids, activity) << "pg_stat_activity has " << join(backend_pids(pg(), "app", kDb)) << "\n"
                                   << servers.text();
  std::printf("[ INFO     ] SHOW CLIENTS:\n%s\n[ INFO     ] SHOW SERVERS:\n%s\n", clients.text().c_str(),
              servers.text().c_str());

  // a commits: c gets the server; then everything goes idle.
  ASSERT_EQ(exec_error(a.get(), "COMMIT"), "") << log_tail();
  ASSERT_TRUE(await_not_busy(c.get(), 30s)) << "c still waits after a's COMMIT" << log_tail();
  const Probe got = result_of(c.get());
  EXPECT_TRUE(got.ok && got.value == "c waited") << got.error << log_tail();
  ASSERT_EQ(exec_error(b.get(), "COMMIT"), "") << log_tail();
  const bool idle = live_wait([&] {
    pool = pool_row();
    return number(pool, "sv_idle") == 2 && number(pool, "sv_active") == 0 && number(pool, "cl_waiting") == 0;
  });
  EXPECT_TRUE(idle) << pools_.text() << log_tail();
  EXPECT_EQ(number(pool, "cl_active"), 3) << pools_.text();
  const Table idle_servers = show("SHOW SERVERS");
  EXPECT_EQ(idle_servers.where({{"database", kDb}, {"state", "idle"}}).size(), 2u) << idle_servers.text();

  // psql through the alias `pgbouncer` sees the same.
  const ProcessResult r =
      run({pg_tool("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", std::to_string(sluice_->port()), "-U",
           "postgres", "-d", "pgbouncer", "-c", "SHOW POOLS"},
          {"PGPASSWORD=postgres_pw", "LC_ALL=C", "PGCONNECT_TIMEOUT=30"}, 60s);
  EXPECT_EQ(r.exit_code, 0) << r.output << log_tail();
  EXPECT_TRUE(contains(r.output, "sluice_test|app|3|0|")) << r.output;
}

TEST_F(OperationsTest, ShowPoolsCountsServerConnectionsBeingOpened) {
  // A database whose server accepts TCP connections and never answers: the connection Sluice opens
  // for the first client stays in login (until server_connect).
  BlackHoleListener black_hole;
  const std::string toml = config("transaction", 2) + "\n[timeouts]\nserver_connect = \"10s\"\n" +
                           "\n[databases.ops_silent]\nhost = \"127.0.0.1\"\nport = " +
                           std::to_string(black_hole.port()) + "\ndbname = \"sluice_test\"\n";
  ASSERT_TRUE(start(toml));
  // The client's login, driven without blocking (it waits for that server connection).
  PgConn login(PQconnectStart(conninfo("ops_silent").c_str()));
  ASSERT_NE(PQstatus(login.get()), CONNECTION_BAD) << PQerrorMessage(login.get());
  PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
  auto pump = [&] {
    if (polling == PGRES_POLLING_OK || polling == PGRES_POLLING_FAILED) return;
    pollfd pfd{PQsocket(login.get()), static_cast<short>(polling == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    if (::poll(&pfd, 1, 0) > 0) polling = PQconnectPoll(login.get());
  };
  const std::map<std::string, std::string>* pool = nullptr;
  const bool opening = live_wait([&] {
    pump();
    pool = pool_row("ops_silent");
    return number(pool, "sv_login") == 1;
  });
  EXPECT_TRUE(opening) << "SHOW POOLS does not show the server connection being opened (sv_login):\n"
                       << pools_.text() << "\nthe black hole accepted " << black_hole.accepted()
                       << " connection(s); the client's login: " << PQerrorMessage(login.get()) << log_tail();
  EXPECT_EQ(number(pool, "sv_active"), 0) << pools_.text();
  EXPECT_EQ(number(pool, "sv_idle"), 0) << pools_.text();
  // The client whose login waits for that connection waits for a server (PgBouncer counts such a
  // client, in its waiting-login state, in cl_waiting too).
  EXPECT_EQ(number(pool, "cl_waiting"), 1) << "the client waiting (at login) for the server connection is not "
                                              "counted as waiting:\n"
                                           << pools_.text();
  std::printf("[ INFO     ] SHOW POOLS while a server connection is being opened:\n%s\n", pools_.text().c_str());
  login.reset();  // the client gives up
}

TEST_F(OperationsTest, StatsCountTransactionsQueriesBytesAndTimes) {
  ASSERT_TRUE(start(config("transaction", 2)));
  PgConn c = client();
  ASSERT_FALSE(HasFailure());
  auto totals = [&] {
    const Table t = show("SHOW STATS_TOTALS");
    std::map<std::string, long long> out;
    const auto* row = t.first({{"database", kDb}});
    for (const char* k : {"xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time", "query_time",
                          "wait_time"}) {
      out[k] = row ? number(row, k) : 0;
    }
    return out;
  };
  const Table first = show("SHOW STATS_TOTALS");
  ASSERT_TRUE(first.ok) << first.text() << log_tail();
  EXPECT_EQ(first.columns, kStatsTotalsColumns) << first.text();
  const auto before = totals();

  for (int i = 0; i < 10; ++i) ASSERT_EQ(value_of(c.get(), "SELECT 1"), "1") << log_tail();
  std::map<std::string, long long> after;
  const bool counted = live_wait([&] {
    after = totals();
    return after["xact_count"] >= before.at("xact_count") + 10 &&
           after["query_count"] >= before.at("query_count") + 10 &&
           after["bytes_received"] >= before.at("bytes_received") + 140;
  });
  EXPECT_TRUE(counted) << "after 10 SELECT 1: xact_count " << before.at("xact_count") << " -> "
                       << after["xact_count"] << ", query_count " << before.at("query_count") << " -> "
                       << after["query_count"] << ", bytes_received " << before.at("bytes_received") << " -> "
                       << after["bytes_received"] << " (10 Query messages of 14 bytes)\n"
                       << show("SHOW STATS_TOTALS").text() << log_tail();
  // Each Query message "SELECT 1" is 14 bytes on the wire.
  EXPECT_GE(after["bytes_received"] - before.at("bytes_received"), 140) << show("SHOW STATS_TOTALS").text();
  EXPECT_GT(after["bytes_sent"], before.at("bytes_sent")) << show("SHOW STATS_TOTALS").text();

  // One transaction block of four statements: one transaction, four ReadyForQuery.
  for (const char* sql : {"BEGIN", "SELECT 1", "SELECT 2", "COMMIT"}) ASSERT_EQ(exec_error(c.get(), sql), "");
  std::map<std::string, long long> block;
  live_wait([&] {
    block = totals();
    return block["xact_count"] >= after["xact_count"] + 1 && block["query_count"] >= after["query_count"] + 4;
  });
  EXPECT_EQ(block["xact_count"] - after["xact_count"], 1) << show("SHOW STATS_TOTALS").text();
  EXPECT_EQ(block["query_count"] - after["query_count"], 4) << show("SHOW STATS_TOTALS").text();

  // A statement that takes at least 200 ms adds at least that much query and transaction time.
  ASSERT_EQ(exec_error(c.get(), "SELECT pg_sleep(0.2)"), "");
  std::map<std::string, long long> slept;
  const bool timed = live_wait([&] {
    slept = totals();
    return slept["query_time"] - block["query_time"] >= 200000 && slept["xact_time"] - block["xact_time"] >= 200000;
  });
  EXPECT_TRUE(timed) << "after pg_sleep(0.2): query_time +" << slept["query_time"] - block["query_time"]
                     << " us, xact_time +" << slept["xact_time"] - block["xact_time"] << " us\n"
                     << show("SHOW STATS_TOTALS").text();
  std::printf("[ INFO     ] SHOW STATS_TOTALS:\n%s\n", show("SHOW STATS_TOTALS").text().c_str());

  const Table stats = show("SHOW STATS");
  ASSERT_TRUE(stats.ok) << stats.text() << log_tail();
  EXPECT_EQ(stats.columns, kStatsColumns) << stats.text();
  const auto* row = stats.first({{"database", kDb}});
  ASSERT_NE(row, nullptr) << stats.text();
  EXPECT_GE(number(row, "total_xact_count"), slept["xact_count"]) << stats.text();
  EXPECT_GE(number(row, "total_query_count"), slept["query_count"]) << stats.text();
  EXPECT_GE(number(row, "total_query_time"), 200000) << stats.text();
  for (const auto& column : kStatsColumns) {
    if (column != "database") {
      EXPECT_GE(number(row, column), 0) << column << " is not a number:\n" << stats.text();
    }
  }
  std::printf("[ INFO     ] SHOW STATS:\n%s\n", stats.text().c_str());
}

TEST_F(OperationsTest, ShowDatabasesAndConfigAndNoPasswordAnywhere) {
  ASSERT_TRUE(start(config("session", 5)));
  PgConn c = client();
  ASSERT_EQ(value_of(c.get(), "SELECT 1"), "1");

  const Table databases = show("SHOW DATABASES");
  ASSERT_TRUE(databases.ok) << databases.text() << log_tail();
  EXPECT_EQ(databases.columns, kDatabasesColumns) << databases.text();
  for (const char* name : {kDb, kOtherDb, "*"}) {
    const auto* row = databases.first({{"name", name}});
    ASSERT_NE(row, nullptr) << name << ":\n" << databases.text();
    EXPECT_EQ(field(row, "host"), "127.0.0.1") << databases.text();
    EXPECT_EQ(number(row, "port"), pg().port()) << databases.text();
    EXPECT_EQ(number(row, "pool_size"), 5) << databases.text();
    EXPECT_EQ(field(row, "pool_mode"), "session") << databases.text();
  }
  EXPECT_EQ(field(databases.first({{"name", kDb}}), "database"), kDb) << databases.text();
  EXPECT_EQ(number(databases.first({{"name", kDb}}), "current_connections"), 1) << databases.text();
  std::printf("[ INFO     ] SHOW DATABASES:\n%s\n", databases.text().c_str());

  const Table cfg = show("SHOW CONFIG");
  ASSERT_TRUE(cfg.ok) << cfg.text() << log_tail();
  EXPECT_EQ(cfg.columns, kConfigColumns) << cfg.text();
  EXPECT_EQ(field(cfg.first({{"key", "pool.size"}}), "value"), "5") << cfg.text();
  EXPECT_EQ(field(cfg.first({{"key", "pool.mode"}}), "value"), "session") << cfg.text();

  // No password, in any answer, to an admin or to a stats user.
  PgConn stats_user = connect_verbose(sluice_->conninfo("sluice", "app", "app_pw"));
  ASSERT_EQ(PQstatus(stats_user.get()), CONNECTION_OK) << login_error(stats_user.get()) << log_tail();
  for (const char* sql : {"SHOW POOLS", "SHOW STATS", "SHOW STATS_TOTALS", "SHOW CLIENTS", "SHOW SERVERS",
                          "SHOW DATABASES", "SHOW CONFIG"}) {
    for (PGconn* conn : {admin(), stats_user.get()}) {
      const Table t = table_of(conn, sql);
      EXPECT_TRUE(t.ok) << sql << ": " << t.text() << log_tail();
      for (const char* secret : {"app_pw", "postgres_pw", "md5_pw", "plain_pw", "trust_pw"}) {
        EXPECT_FALSE(contains(t.text(), secret)) << sql << " shows a password:\n" << t.text();
      }
    }
  }
}

TEST_F(OperationsTest, StatsUsersMayNotActAndUnknownCommandsAreSyntaxErrors) {
  ASSERT_TRUE(start(config("transaction", 2)));
  PgConn stats_user = connect_verbose(sluice_->conninfo("pgbouncer", "app", "app_pw"));
  ASSERT_EQ(PQstatus(stats_user.get()), CONNECTION_OK) << login_error(stats_user.get()) << log_tail();
  for (const char* sql : {"PAUSE", "PAUSE sluice_test", "RESUME", "RESUME sluice_test", "RECONNECT",
                          "RECONNECT sluice_test", "KILL sluice_test", "RELOAD", "SHUTDOWN"}) {
    const Table t = table_of(stats_user.get(), sql);
    EXPECT_FALSE(t.ok) << sql << " from a stats user: " << t.text();
    EXPECT_EQ(t.sqlstate, "42501") << sql << ": " << t.text();
  }
  EXPECT_TRUE(sluice_->running()) << log_tail();
  const Table pools = table_of(stats_user.get(), "SHOW POOLS");
  EXPECT_TRUE(pools.ok) << pools.text();
  for (PGconn* conn : {stats_user.get(), admin()}) {
    const Table t = table_of(conn, "FROBNICATE everything");
    EXPECT_EQ(t.sqlstate, "42601") << t.text();
    EXPECT_TRUE(contains(t.error, "FROBNICATE")) << t.text();
  }
  // Probes still work: nothing was paused or killed.
  const Probe p = probe(conninfo());
  EXPECT_TRUE(p.ok) << p.error << log_tail();
}

// ---------------------------------------------------------------------------------------------
// 2. PAUSE, RESUME, RECONNECT, KILL

TEST_F(OperationsTest, PauseWaitsForServersThenHoldsNewRequestsUntilResume) {
  ASSERT_TRUE(start(config("transaction", 2)));
  PgConn a = client(kDb, "ops_a");
  PgConn b = client(kDb, "ops_b");
  PgConn other = client(kOtherDb, "ops_other");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(value_of(other.get(), "SELECT 1"), "1");
  ASSERT_EQ(exec_error(a.get(), "BEGIN"), "");
  ASSERT_EQ(value_of(a.get(), "SELECT 1"), "1");

  // PAUSE sluice_test waits for a's server connection to come back.
  PgConn pauser = connect_verbose(admin_conninfo());
  ASSERT_EQ(PQstatus(pauser.get()), CONNECTION_OK) << login_error(pauser.get());
  const auto pause_sent = Clock::now();
  ASSERT_EQ(PQsendQuery(pauser.get(), "PAUSE sluice_test"), 1);
  // a's transaction goes on meanwhile, and PAUSE has not returned while a holds its server.
  EXPECT_EQ(value_of(a.get(), "SELECT 2"), "2") << log_tail();
  const Table databases_pausing = show("SHOW DATABASES");  // the console answers while a PAUSE is pending
  EXPECT_TRUE(databases_pausing.ok) << databases_pausing.text() << log_tail();
  EXPECT_TRUE(still_busy(pauser.get())) << "PAUSE returned while a client still held a server connection: "
                                        << result_of(pauser.get()).error << log_tail();
  // Meanwhile a new request (b's) waits, though the pool has an idle connection (the one b logged in with).
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT 'b after resume'"), 1);
  const bool b_held = live_wait([&] { return number(pool_row(), "cl_waiting") == 1 || !still_busy(b.get()); });
  EXPECT_TRUE(b_held) << "b is not shown as waiting while PAUSE is pending:\n" << pools_.text() << log_tail();
  EXPECT_TRUE(still_busy(b.get())) << "b was served while PAUSE was pending: " << result_of(b.get()).value
                                   << log_tail();
  EXPECT_TRUE(still_busy(pauser.get())) << log_tail();
  ASSERT_EQ(exec_error(a.get(), "COMMIT"), "") << log_tail();
  ASSERT_TRUE(await_not_busy(pauser.get(), 30s)) << "PAUSE did not return once the server was back" << log_tail();
  const Probe paused = result_of(pauser.get());
  EXPECT_TRUE(paused.ok) << paused.error << log_tail();
  std::printf("[ INFO     ] PAUSE sluice_test returned %.3f s after it was sent (after the COMMIT)\n",
              seconds_since(pause_sent));

  // While paused, requests wait (b's query, a new client's), other databases are served.
  const Table databases = show("SHOW DATABASES");
  EXPECT_NE(field(databases.first({{"name", kDb}}), "paused"), field(databases.first({{"name", kOtherDb}}), "paused"))
      << "SHOW DATABASES does not tell the paused database from the other one:\n"
      << databases.text();
  std::printf("[ INFO     ] SHOW DATABASES while sluice_test is paused:\n%s\n", databases.text().c_str());
  auto newcomer = std::async(std::launch::async, [info = conninfo()] { return probe(info, "SELECT 'new'"); });
  const bool held = live_wait([&] {
    const auto* pool = pool_row();
    return number(pool, "cl_waiting") >= 2 ||
           newcomer.wait_for(0s) == std::future_status::ready;
  });
  ASSERT_NE(newcomer.wait_for(0s), std::future_status::ready)
      << "a new client of the paused database did not wait: " << newcomer.get().error << log_tail();
  EXPECT_TRUE(held) << "SHOW POOLS does not show 2 waiting clients:\n" << pools_.text() << log_tail();
  const std::string paused_value = field(pool_row(), "paused");
  EXPECT_TRUE(still_busy(b.get())) << "b was served while paused: " << result_of(b.get()).value << log_tail();
  EXPECT_EQ(value_of(other.get(), "SELECT 'other db'"), "other db") << log_tail();
  const Probe other_new = probe(conninfo(kOtherDb));
  EXPECT_TRUE(other_new.ok) << other_new.error << log_tail();

  // RESUME: both get their answers, without an error.
  EXPECT_TRUE(table_of(admin(), "RESUME sluice_test").ok) << log_tail();
  ASSERT_TRUE(await_not_busy(b.get(), 30s)) << "b still waits after RESUME" << log_tail();
  const Probe got_b = result_of(b.get());
  EXPECT_TRUE(got_b.ok && got_b.value == "b after resume") << got_b.error << log_tail();
  const Probe got_new = newcomer.get();
  EXPECT_TRUE(got_new.ok && got_new.value == "new") << got_new.error << log_tail();
  EXPECT_NE(field(pool_row(), "paused"), paused_value)
      << "SHOW POOLS' paused column is the same while paused and after RESUME:\n" << pools_.text();
  const Table resumed = show("SHOW DATABASES");
  EXPECT_EQ(field(resumed.first({{"name", kDb}}), "paused"), field(resumed.first({{"name", kOtherDb}}), "paused"))
      << resumed.text();

  // PAUSE without a database, with nothing lent out: returns, and holds every database.
  const Table all = table_of(admin(), "PAUSE");
  EXPECT_TRUE(all.ok) << all.text() << log_tail();
  ASSERT_EQ(PQsendQuery(other.get(), "SELECT 'other after resume'"), 1);
  const bool other_held = live_wait([&] {
    const auto* pool = pool_row(kOtherDb);
    return number(pool, "cl_waiting") == 1;
  });
  EXPECT_TRUE(other_held) << pools_.text() << log_tail();
  EXPECT_TRUE(still_busy(other.get())) << log_tail();
  EXPECT_TRUE(table_of(admin(), "RESUME").ok) << log_tail();
  ASSERT_TRUE(await_not_busy(other.get(), 30s)) << log_tail();
  const Probe got_other = result_of(other.get());
  EXPECT_TRUE(got_other.ok && got_other.value == "other after resume") << got_other.error << log_tail();
}

TEST_F(OperationsTest, ReconnectReplacesServerConnectionsAsTheyAreReleased) {
  ASSERT_TRUE(start(config("transaction", 2)));
  PgConn idle = client(kDb, "ops_idle");
  PgConn busy = client(kDb, "ops_busy");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(exec_error(busy.get(), "BEGIN"), "");
  const std::string busy_pid = value_of(busy.get(), "SELECT pg_backend_pid()");
  const std::string idle_pid = value_of(idle.get(), "SELECT pg_backend_pid()");  // back in the pool after
  ASSERT_EQ(busy_pid.find("<error"), std::string::npos) << busy_pid << log_tail();
  ASSERT_EQ(idle_pid.find("<error"), std::string::npos) << idle_pid << log_tail();
  ASSERT_NE(busy_pid, idle_pid);
  ASSERT_TRUE(live_wait([&] { return try_backend_count("app", kDb, "idle") == 1; })) << log_tail();

  const Table r = table_of(admin(), "RECONNECT sluice_test");
  EXPECT_TRUE(r.ok) << r.text() << log_tail();
  // The idle one is closed at once; the lent one stays until its transaction ends.
  const bool idle_closed = live_wait([&] {
    const auto pids = backend_pids(pg(), "app", kDb);
    return std::find(pids.begin(), pids.end(), std::stoi(idle_pid)) == pids.end();
  });
  EXPECT_TRUE(idle_closed) << "the idle backend " << idle_pid << " is still open: "
                           << join(backend_pids(pg(), "app", kDb)) << log_tail();
  EXPECT_EQ(value_of(busy.get(), "SELECT pg_backend_pid()"), busy_pid) << log_tail();
  EXPECT_EQ(exec_error(busy.get(), "COMMIT"), "") << log_tail();
  const bool busy_closed = live_wait([&] {
    const auto pids = backend_pids(pg(), "app", kDb);
    return std::find(pids.begin(), pids.end(), std::stoi(busy_pid)) == pids.end();
  });
  EXPECT_TRUE(busy_closed) << "the backend " << busy_pid << " was not closed when released: "
                           << join(backend_pids(pg(), "app", kDb)) << log_tail();
  // Later requests get new backends; no client noticed.
  for (PGconn* conn : {idle.get(), busy.get()}) {
    const std::string pid = value_of(conn, "SELECT pg_backend_pid()");
    EXPECT_EQ(pid.find("<error"), std::string::npos) << pid << log_tail();
    EXPECT_NE(pid, idle_pid);
    EXPECT_NE(pid, busy_pid);
  }
  const Probe p = probe(conninfo(), "SELECT pg_backend_pid()::text");
  EXPECT_TRUE(p.ok) << p.error << log_tail();
  EXPECT_NE(p.value, idle_pid);
  EXPECT_NE(p.value, busy_pid);
}

TEST_F(OperationsTest, KillClosesADatabasesClientsAndServersAndNewClientsWaitForResume) {
  ASSERT_TRUE(start(config("transaction", 2)));
  PgConn in_tx = client(kDb, "ops_in_tx");
  PgConn parked = client(kDb, "ops_parked");
  PgConn other = client(kOtherDb, "ops_other");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(exec_error(in_tx.get(), "BEGIN"), "");
  ASSERT_EQ(value_of(in_tx.get(), "SELECT 1"), "1");
  ASSERT_EQ(value_of(parked.get(), "SELECT 1"), "1");
  ASSERT_EQ(value_of(other.get(), "SELECT 1"), "1");
  std::string notices_in_tx, notices_parked;
  collect_notices(in_tx.get(), &notices_in_tx);
  collect_notices(parked.get(), &notices_parked);

  const auto killed_at = Clock::now();
  const Table k = table_of(admin(), "KILL sluice_test");
  EXPECT_TRUE(k.ok) << k.text() << log_tail();
  EXPECT_TRUE(await_closed(in_tx.get())) << "the client inside a transaction was not closed" << log_tail();
  EXPECT_TRUE(await_closed(parked.get())) << "the idle client was not closed" << log_tail();
  EXPECT_TRUE(live_wait([] { return try_backend_count("app", kDb) == 0; }))
      << "sluice_test's backends are still open: " << join(backend_pids(pg(), "app", kDb)) << log_tail();
  std::printf("[ INFO     ] KILL: clients and backends gone %.3f s after the command; the clients read: %s | %s\n",
              seconds_since(killed_at), (notices_in_tx + PQerrorMessage(in_tx.get())).c_str(),
              (notices_parked + PQerrorMessage(parked.get())).c_str());
  EXPECT_EQ(value_of(other.get(), "SELECT 'still here'"), "still here") << log_tail();

  // A new client of the killed database waits until RESUME.
  auto newcomer = std::async(std::launch::async, [info = conninfo()] { return probe(info, "SELECT 'after resume'"); });
  Table clients;
  const bool shown = live_wait([&] {
    if (newcomer.wait_for(0s) == std::future_status::ready) return true;
    clients = show("SHOW CLIENTS");
    return number(pool_row(), "cl_waiting") >= 1 || !clients.where({{"database", kDb}, {"state", "waiting"}}).empty();
  });
  ASSERT_NE(newcomer.wait_for(0s), std::future_status::ready)
      << "a new client of the killed database did not wait: " << newcomer.get().error << log_tail();
  EXPECT_TRUE(shown) << "the new client is not shown as waiting:\n"
                     << pools_.text() << "\n"
                     << clients.text() << log_tail();
  EXPECT_TRUE(table_of(admin(), "RESUME sluice_test").ok) << log_tail();
  const Probe got = newcomer.get();
  EXPECT_TRUE(got.ok && got.value == "after resume") << got.error << log_tail();
}

// ---------------------------------------------------------------------------------------------
// 3. Metrics

TEST_F(OperationsTest, MetricsDuringPgbenchPassPromtoolAndCountersIncrease) {
  ASSERT_NO_FATAL_FAILURE(ensure_pgbench_tables());
  ASSERT_TRUE(start(config("transaction", 5, "metrics_listen = \"127.0.0.1:{metrics_port}\"")));
  const int port = sluice_->metrics_port();

  Http health;
  const bool serving = live_wait([&] {
    health = http_get(port, "/healthz");
    return health.status != -1;
  });
  ASSERT_TRUE(serving) << "nothing answers on metrics_listen 127.0.0.1:" << port << ": " << health.error
                       << log_tail();
  EXPECT_EQ(health.status, 200) << health.error << health.headers << log_tail();
  const Http ready = http_get(port, "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.error << ready.headers << "\n" << ready.body << log_tail();

  const std::vector<std::string> ours = {"database=\"sluice_test\""};
  // Before any client: the pool of sluice_test may not exist yet (no series: counted as 0).
  const double baseline =
      std::max(0.0, sample(parse_samples(http_get(port, "/metrics").body), "sluice_pool_transactions_total", ours));
  auto bench = std::async(std::launch::async, [p = sluice_->port()] {
    return run({pg_tool("pgbench"), "-h", "127.0.0.1", "-p", std::to_string(p), "-U", "app", "-c", "4", "-j", "2",
                "-T", "5", "-S", "-n", kDb},
               {"PGPASSWORD=app_pw", "LC_ALL=C", "PGCONNECT_TIMEOUT=60"}, 90s);
  });
  Http first;
  std::map<std::string, double> one;
  // More than pgbench's own set-up queries: its transactions are being counted.
  const bool flowing = live_wait([&] {
    first = http_get(port, "/metrics");
    one = parse_samples(first.body);
    return first.status == 200 && sample(one, "sluice_pool_transactions_total", ours) > baseline + 20;
  });
  EXPECT_TRUE(flowing) << "sluice_pool_transactions_total{database=\"sluice_test\"} never passed " << baseline + 20
                       << " during pgbench; "
                       << first.status << " " << first.error << "\n"
                       << first.headers << "\n"
                       << first.body.substr(0, 4000) << log_tail();
  Http second;
  std::map<std::string, double> two;
  const bool moved = live_wait([&] {
    second = http_get(port, "/metrics");
    two = parse_samples(second.body);
    return sample(two, "sluice_pool_transactions_total", ours) > sample(one, "sluice_pool_transactions_total", ours);
  });
  EXPECT_TRUE(moved) << "transactions did not increase between two scrapes" << log_tail();
  EXPECT_TRUE(contains(second.headers, "text/plain")) << second.headers;
  std::printf("[ INFO     ] two scrapes during pgbench: transactions %.0f -> %.0f, queries %.0f -> %.0f\n",
              sample(one, "sluice_pool_transactions_total", ours), sample(two, "sluice_pool_transactions_total", ours),
              sample(one, "sluice_pool_queries_total", ours), sample(two, "sluice_pool_queries_total", ours));

  // The families the dashboards use.
  EXPECT_GT(sample(two, "sluice_pool_queries_total", ours), sample(one, "sluice_pool_queries_total", ours))
      << second.body;
  EXPECT_GE(sample(two, "sluice_pool_queries_total", ours), sample(two, "sluice_pool_transactions_total", ours));
  EXPECT_GE(sample(two, "sluice_pool_clients", {"database=\"sluice_test\"", "state=\""}), 0) << second.body;
  EXPECT_GE(sample(two, "sluice_pool_servers", {"database=\"sluice_test\"", "state=\""}), 1) << second.body;
  EXPECT_EQ(sample(two, "sluice_host_up", {"address=\"127.0.0.1:" + std::to_string(pg().port()) + "\""}), 1)
      << second.body;
  EXPECT_GE(sample(two, "sluice_clients"), 4) << second.body;
  // No counter went down between the scrapes.
  for (const auto& [key, value] : one) {
    const std::string name = key.substr(0, key.find('{'));
    if (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0) continue;
    const auto it = two.find(key);
    if (it == two.end()) continue;
    EXPECT_GE(it->second, value) << key << " went down between two scrapes";
  }

  // promtool's linter on a scrape taken under load.
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    std::printf("[ INFO     ] /usr/bin/promtool is missing (Debian package prometheus)\n");
  } else {
    const std::string file = sluice_->dir() + "/scrape.txt";
    {
      std::ofstream out(file, std::ios::binary);
      out << second.body;
    }
    const ProcessResult check = run({"sh", "-c", "/usr/bin/promtool check metrics < '" + file + "'"}, {}, 60s);
    EXPECT_EQ(check.exit_code, 0) << "promtool check metrics:\n"
                                  << check.output << "\n---- the scrape ----\n"
                                  << second.body.substr(0, 8000);
    std::printf("[ INFO     ] promtool check metrics: exit %d %s\n", check.exit_code, check.output.c_str());
  }
  const ProcessResult r = bench.get();
  std::printf("[ INFO     ] pgbench: exit %d after %.2f s\n%s\n", r.exit_code, r.seconds,
              tail_lines(r.output, 8).c_str());
  EXPECT_EQ(r.exit_code, 0) << r.output << log_tail();
  // Every transaction pgbench made was counted (each ends with a ReadyForQuery 'I').
  const auto processed = parse_number(r.output, R"(number of transactions actually processed: (\d+))");
  ASSERT_TRUE(processed.has_value()) << r.output;
  std::map<std::string, double> last;
  const bool all_counted = live_wait([&] {
    last = parse_samples(http_get(port, "/metrics").body);
    return sample(last, "sluice_pool_transactions_total", ours) >= baseline + static_cast<double>(*processed);
  });
  EXPECT_TRUE(all_counted) << "pgbench made " << *processed << " transactions; sluice_pool_transactions_total went "
                           << baseline << " -> " << sample(last, "sluice_pool_transactions_total", ours)
                           << log_tail();
  const Table totals = show("SHOW STATS_TOTALS");
  EXPECT_GE(number(totals.first({{"database", kDb}}), "xact_count"), *processed) << totals.text();
  if (::access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool missing: the scrape was not linted";
}

TEST_F(OperationsTest, ReadyzIs503WhilePostgresIsDownAnd200OnceItIsBack) {
  ASSERT_TRUE(start(config("transaction", 2, "metrics_listen = \"127.0.0.1:{metrics_port}\"")));
  const int port = sluice_->metrics_port();
  const Probe before = probe(conninfo());
  ASSERT_TRUE(before.ok) << before.error << log_tail();
  Http ready;
  live_wait([&] {
    ready = http_get(port, "/readyz");
    return ready.status != -1;
  });
  ASSERT_EQ(ready.status, 200) << ready.error << ready.body << log_tail();

  pg().stop_immediate();
  const auto stopped_at = Clock::now();
  // A client tries, fails (08006), and the host is marked down.
  const Probe down = probe(conninfo());
  EXPECT_FALSE(down.ok);
  std::printf("[ INFO     ] client while PostgreSQL is down: %s\n", down.error.c_str());
  const bool not_ready = live_wait([&] {
    ready = http_get(port, "/readyz");
    return ready.status == 503;
  });
  EXPECT_TRUE(not_ready) << "/readyz: " << ready.status << " " << ready.error << "\n" << ready.body << log_tail();
  std::printf("[ INFO     ] /readyz 503 %.3f s after the stop: %s\n", seconds_since(stopped_at), ready.body.c_str());
  const Http health = http_get(port, "/healthz");
  EXPECT_EQ(health.status, 200) << health.error << health.body;
  const Http metrics = http_get(port, "/metrics");
  EXPECT_EQ(sample(parse_samples(metrics.body), "sluice_host_up",
                   {"address=\"127.0.0.1:" + std::to_string(pg().port()) + "\""}),
            0)
      << metrics.body;

  pg().start_again();
  const auto up_at = Clock::now();
  Probe last;
  const bool back = live_wait(
      [&] {
        last = probe(conninfo(), "SELECT 1", 10s);
        ready = http_get(port, "/readyz");
        return last.ok && ready.status == 200;
      },
      60s);
  EXPECT_TRUE(back) << "/readyz: " << ready.status << " " << ready.body << "; last client: " << last.error
                    << log_tail();
  std::printf("[ INFO     ] /readyz 200 again %.3f s after PostgreSQL was back\n", seconds_since(up_at));
}

// ---------------------------------------------------------------------------------------------
// 4. Reload

TEST_F(OperationsTest, ReloadGrowsThePoolUnderWaitingClientsAndAppliesTimeouts) {
  const std::string base = config("transaction", 2) + "\n[timeouts]\nquery = \"0s\"\n";
  ASSERT_TRUE(start(base));
  PgConn bystander = client(kDb, "ops_bystander");
  ASSERT_EQ(value_of(bystander.get(), "SELECT 1"), "1");
  // The test holds an advisory lock; four clients ask for it (shared) and block inside PostgreSQL.
  PgConn holder = connect(pg().conninfo(kDb, "postgres", "postgres_pw"));
  ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK) << PQerrorMessage(holder.get());
  ASSERT_EQ(exec_error(holder.get(), "SELECT pg_advisory_lock(7001)"), "");
  std::vector<PgConn> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(client(kDb, "ops_blocked" + std::to_string(i)));
  ASSERT_FALSE(HasFailure());
  for (auto& c : clients) ASSERT_EQ(PQsendQuery(c.get(), "SELECT 'got', pg_advisory_xact_lock_shared(7001)"), 1);
  ASSERT_TRUE(live_wait([] { return try_backend_count("app", kDb, "active") == 2; }))
      << try_backend_count("app", kDb, "active") << " active backends (pool size 2)" << log_tail();

  rewrite_config(config("transaction", 4) + "\n[timeouts]\nquery = \"0s\"\n");
  const auto reload_at = Clock::now();
  sluice_->send_signal(SIGHUP);
  const bool grown = live_wait([] { return try_backend_count("app", kDb, "active") == 4; });
  EXPECT_TRUE(grown) << try_backend_count("app", kDb, "active") << " active backends after the reload to size 4"
                     << log_tail();
  std::printf("[ INFO     ] pool size 2 -> 4: four backends %.3f s after SIGHUP\n", seconds_since(reload_at));
  ASSERT_EQ(exec_error(holder.get(), "SELECT pg_advisory_unlock(7001)"), "");
  for (auto& c : clients) {
    ASSERT_TRUE(await_not_busy(c.get(), 30s)) << log_tail();
    const Probe got = result_of(c.get());
    EXPECT_TRUE(got.ok) << got.error << log_tail();
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK);
  }
  EXPECT_EQ(value_of(bystander.get(), "SELECT 'still here'"), "still here") << log_tail();
  EXPECT_EQ(field(show("SHOW CONFIG").first({{"key", "pool.size"}}), "value"), "4") << show("SHOW CONFIG").text();

  // A statement timeout set by a reload applies to a client that was already connected.
  rewrite_config(config("transaction", 4) + "\n[timeouts]\nquery = \"300ms\"\n");
  sluice_->send_signal(SIGHUP);
  int attempts = 0;
  std::string last;
  const bool cancelled = live_wait(
      [&] {
        ++attempts;
        PgResult r(PQexec(bystander.get(), "SELECT pg_sleep(5)"));
        last = describe_result(bystander.get(), r.get());
        return sqlstate_of(r.get()) == "57014";
      },
      40s);
  EXPECT_TRUE(cancelled) << "pg_sleep(5) was not cancelled after query = \"300ms\" was loaded: " << last
                         << log_tail();
  std::printf("[ INFO     ] query timeout reloaded: cancelled after %d attempt(s): %s\n", attempts, last.c_str());
  EXPECT_EQ(value_of(bystander.get(), "SELECT 'after cancel'"), "after cancel") << log_tail();
  for (auto& c : clients) EXPECT_EQ(value_of(c.get(), "SELECT 1"), "1") << log_tail();
}

// A reload that changes a user's plain-text password: SCRAM logins must check the new
// one at once (the secret derived from the old one is not kept), and the old one fails.
TEST_F(OperationsTest, ReloadWithANewPasswordTakesEffectForScramLogins) {
  const std::string user_block = "[users.app]\nauth = \"scram-sha-256\"\npassword = \"app_pw\"";
  // PostgreSQL keeps app's password: Sluice logs in to it with server_password.
  auto with_password = [&](const std::string& password) {
    std::string toml = config("transaction", 2);
    const auto at = toml.find(user_block);
    if (at == std::string::npos) throw std::logic_error("default_config changed: no scram [users.app] block");
    toml.replace(at, user_block.size(),
                 "[users.app]\nauth = \"scram-sha-256\"\npassword = \"" + password +
                     "\"\nserver_password = \"app_pw\"");
    return toml;
  };
  ASSERT_TRUE(start(with_password("app_pw")));
  const Probe before = probe(sluice_->conninfo(kDb, "app", "app_pw"));
  ASSERT_TRUE(before.ok) << before.error << log_tail();  // the derived secret is cached from here on

  rewrite_config(with_password("app_pw_new"));
  sluice_->send_signal(SIGHUP);
  ASSERT_TRUE(live_wait([&] { return contains(sluice_->log(), "in force"); })) << log_tail();
  const Probe fresh = probe(sluice_->conninfo(kDb, "app", "app_pw_new"));
  EXPECT_TRUE(fresh.ok) << "the new password was refused after the reload: " << fresh.error << log_tail();
  const Probe old = probe(sluice_->conninfo(kDb, "app", "app_pw"));
  EXPECT_FALSE(old.ok) << "the old password still logs in after the reload" << log_tail();
  EXPECT_EQ(sqlstate_in_message(old.error), "28P01") << old.error;
}

TEST_F(OperationsTest, InvalidConfigOnReloadIsRefusedAndTheOldOneKeepsServing) {
  ASSERT_TRUE(start(config("transaction", 3)));
  PgConn existing = client(kDb, "ops_existing");
  ASSERT_EQ(value_of(existing.get(), "SELECT 1"), "1");
  std::string bad = config("transaction", 3);
  const std::string size = "size = 3";
  bad.replace(bad.find(size), size.size(), "size = \"x\"");
  const int line = line_of(bad, "size = \"x\"");
  rewrite_config(bad);
  sluice_->send_signal(SIGHUP);
  const std::string where = "sluice.toml:" + std::to_string(line);
  const bool logged = live_wait([&] {
    const std::string text = sluice_->log();
    return contains(text, where) && contains(text, "pool.size");
  });
  EXPECT_TRUE(logged) << "the log does not name " << where << " and pool.size" << log_tail();
  ASSERT_TRUE(sluice_->running()) << log_tail();
  EXPECT_EQ(value_of(existing.get(), "SELECT 'existing'"), "existing") << log_tail();
  const Probe fresh = probe(conninfo(), "SELECT 'fresh'");
  EXPECT_TRUE(fresh.ok && fresh.value == "fresh") << fresh.error << log_tail();
  EXPECT_EQ(field(show("SHOW CONFIG").first({{"key", "pool.size"}}), "value"), "3") << show("SHOW CONFIG").text();
  // RELOAD from the console with the same file: refused too, Sluice keeps serving.
  const Table reload = table_of(admin(), "RELOAD");
  std::printf("[ INFO     ] RELOAD with an invalid file answers: %s\n", reload.text().c_str());
  ASSERT_TRUE(sluice_->running()) << log_tail();
  const Probe again = probe(conninfo(), "SELECT 'again'");
  EXPECT_TRUE(again.ok) << again.error << log_tail();
}

TEST_F(OperationsTest, ReloadAddsAndRemovesDatabases) {
  const std::string base = without_fallback(config("transaction", 3));
  ASSERT_TRUE(start(base));
  PgConn existing = client(kOtherDb, "ops_existing_other");
  ASSERT_EQ(value_of(existing.get(), "SELECT current_database()"), kOtherDb);
  const Probe unknown = probe(conninfo("ops_added"));
  EXPECT_FALSE(unknown.ok);
  EXPECT_EQ(sqlstate_in_message(unknown.error), "3D000") << unknown.error << log_tail();

  rewrite_config(without_database(base, kOtherDb) +
                 "\n[databases.ops_added]\nhost = \"{pg_host}\"\nport = {pg_port}\ndbname = \"sluice_other\"\n");
  const Table reload = table_of(admin(), "RELOAD");
  EXPECT_TRUE(reload.ok) << reload.text() << log_tail();
  Probe added;
  const bool reachable = live_wait([&] {
    added = probe(conninfo("ops_added"), "SELECT current_database()");
    return added.ok;
  });
  EXPECT_TRUE(reachable) << "the added database is not reachable: " << added.error << log_tail();
  EXPECT_EQ(added.value, kOtherDb);
  Probe removed;
  const bool gone = live_wait([&] {
    removed = probe(conninfo(kOtherDb));
    return !removed.ok && sqlstate_in_message(removed.error) == "3D000";
  });
  EXPECT_TRUE(gone) << "a new client of the removed database: " << (removed.ok ? "served" : removed.error)
                    << log_tail();
  // The client that was connected to it goes on (in transaction mode: a server for each transaction).
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(value_of(existing.get(), "SELECT current_database()"), kOtherDb) << log_tail();
  }
  EXPECT_EQ(exec_error(existing.get(), "BEGIN"), "") << log_tail();
  EXPECT_EQ(value_of(existing.get(), "SELECT 'in a transaction'"), "in a transaction") << log_tail();
  EXPECT_EQ(exec_error(existing.get(), "COMMIT"), "") << log_tail();
  const Table databases = show("SHOW DATABASES");
  EXPECT_NE(databases.first({{"name", "ops_added"}}), nullptr) << databases.text();
  EXPECT_EQ(databases.first({{"name", kOtherDb}}), nullptr) << databases.text();
}

TEST_F(OperationsTest, ReloadWithAChangedBackendAddressDrainsTheOldServerConnections) {
  // The second PostgreSQL (same roles and databases) is the new address of [databases.sluice_test].
  PostgresServer* secondary = nullptr;
  try {
    secondary = &PostgresServer::secondary();
  } catch (const std::exception& e) {
    FAIL() << "the second PostgreSQL did not start: " << e.what();
  }
  const std::string old_port = std::to_string(pg().port());
  const std::string new_port = std::to_string(secondary->port());
  ASSERT_NE(old_port, new_port);
  // Backends of app on sluice_test on `server` ("<error: ...>" in `failure` while it does not answer).
  std::string failure;
  auto pids_on = [&failure](const PostgresServer& server, const std::string& state = "") {
    try {
      return backend_pids(server, "app", kDb, state);
    } catch (const std::exception& e) {
      failure = e.what();
      return std::vector<int>{-1};
    }
  };
  auto has = [](const std::vector<int>& pids, int pid) { return std::find(pids.begin(), pids.end(), pid) != pids.end(); };

  const std::string base = config("transaction", 3);
  ASSERT_TRUE(start(base));
  PgConn in_tx = client(kDb, "ops_in_tx");
  PgConn idler = client(kDb, "ops_idler");
  ASSERT_FALSE(HasFailure());
  std::string tx_notices, idler_notices;
  collect_notices(in_tx.get(), &tx_notices);
  collect_notices(idler.get(), &idler_notices);

  // in_tx holds a server connection inside a transaction; then idler runs a query on another one,
  // which goes back to the pool idle.
  ASSERT_EQ(exec_error(in_tx.get(), "BEGIN"), "") << log_tail();
  ASSERT_EQ(value_of(in_tx.get(), "SELECT 1"), "1") << log_tail();
  const std::string tx_pid_text = value_of(in_tx.get(), "SELECT pg_backend_pid()");
  ASSERT_EQ(tx_pid_text.find("<error"), std::string::npos) << tx_pid_text << log_tail();
  ASSERT_EQ(value_of(in_tx.get(), "SELECT inet_server_port()"), old_port) << log_tail();
  const std::string idle_pid_text = value_of(idler.get(), "SELECT pg_backend_pid()");
  ASSERT_EQ(idle_pid_text.find("<error"), std::string::npos) << idle_pid_text << log_tail();
  const int tx_pid = std::stoi(tx_pid_text);
  const int idle_pid = std::stoi(idle_pid_text);
  ASSERT_NE(tx_pid, idle_pid) << "the client inside a transaction and the other one share a server connection"
                              << log_tail();
  ASSERT_TRUE(live_wait([&] { return has(pids_on(pg(), "idle"), idle_pid); }))
      << "backend " << idle_pid << " is not idle on the shared PostgreSQL; idle: " << join(pids_on(pg(), "idle"))
      << " " << failure << log_tail();
  ASSERT_TRUE(live_wait([&] { return has(pids_on(pg(), "idle in transaction"), tx_pid); }))
      << "backend " << tx_pid << " is not idle in transaction on the shared PostgreSQL; all: "
      << join(pids_on(pg())) << " " << failure << log_tail();

  // [databases.sluice_test] now points at the second PostgreSQL.
  const std::string block = "[databases.sluice_test]\nhost = \"{pg_host}\"\nport = {pg_port}\n";
  std::string moved = base;
  const auto at = moved.find(block);
  ASSERT_NE(at, std::string::npos) << "default_config changed: no [databases.sluice_test]";
  moved.replace(at, block.size(),
                "[databases.sluice_test]\nhost = \"" + secondary->host() + "\"\nport = " + new_port + "\n");
  rewrite_config(moved);
  const auto reload_at = Clock::now();
  sluice_->send_signal(SIGHUP);
  const bool reloaded = live_wait(
      [&] {
        std::istringstream in(sluice_->log());
        for (std::string line; std::getline(in, line);) {
          if (contains(line, "reload: ") && contains(line, " in force")) return true;
        }
        return false;
      },
      30s);
  ASSERT_TRUE(reloaded) << "no \"reload: ... in force\" in the log after SIGHUP" << log_tail();

  // (1) The idle connection to the old server closes at once.
  const bool idle_gone = live_wait([&] { return !has(pids_on(pg()), idle_pid); }, 30s);
  EXPECT_TRUE(idle_gone) << "the idle backend " << idle_pid << " is still open on the old server; backends: "
                         << join(pids_on(pg())) << " " << failure << log_tail();
  std::printf("[ INFO     ] idle backend on the old server gone %.3f s after SIGHUP\n", seconds_since(reload_at));
  EXPECT_TRUE(has(pids_on(pg()), tx_pid)) << "the backend lent to the client inside a transaction was closed"
                                          << log_tail();

  // (2) The transaction goes on, on the old server, and commits; then its connection closes.
  EXPECT_EQ(value_of(in_tx.get(), "SELECT inet_server_port()"), old_port) << log_tail();
  EXPECT_EQ(value_of(in_tx.get(), "SELECT pg_backend_pid()"), tx_pid_text) << log_tail();
  EXPECT_EQ(value_of(in_tx.get(), "SELECT 'still in the transaction'"), "still in the transaction") << log_tail();
  EXPECT_EQ(exec_error(in_tx.get(), "COMMIT"), "") << log_tail();
  const auto commit_at = Clock::now();
  const bool released_gone = live_wait([&] { return !has(pids_on(pg()), tx_pid); }, 30s);
  EXPECT_TRUE(released_gone) << "the backend " << tx_pid << " released after COMMIT is still open on the old server; "
                             << "backends: " << join(pids_on(pg())) << " " << failure << log_tail();
  std::printf("[ INFO     ] released backend on the old server gone %.3f s after COMMIT\n", seconds_since(commit_at));

  // (3) The old clients' next transactions and new clients run on the new server.
  EXPECT_EQ(value_of(in_tx.get(), "SELECT inet_server_port()"), new_port) << log_tail();
  EXPECT_EQ(exec_error(in_tx.get(), "BEGIN"), "") << log_tail();
  EXPECT_EQ(value_of(in_tx.get(), "SELECT inet_server_port()"), new_port) << log_tail();
  EXPECT_EQ(exec_error(in_tx.get(), "COMMIT"), "") << log_tail();
  EXPECT_EQ(value_of(idler.get(), "SELECT inet_server_port()"), new_port) << log_tail();
  for (int i = 0; i < 3; ++i) {
    const Probe fresh = probe(conninfo(kDb, "application_name=ops_fresh"), "SELECT inet_server_port()");
    EXPECT_TRUE(fresh.ok) << fresh.error << log_tail();
    EXPECT_EQ(fresh.value, new_port) << log_tail();
  }
  EXPECT_FALSE(pids_on(*secondary).empty()) << "no backend of app on the second PostgreSQL " << failure
                                            << log_tail();
  // Nothing of this pool is left on the old server.
  EXPECT_TRUE(live_wait([&] { return pids_on(pg()).empty(); }, 30s))
      << "backends still open on the old server: " << join(pids_on(pg())) << " " << failure << log_tail();

  // (4) No client was told anything, and both are still connected.
  EXPECT_EQ(PQstatus(in_tx.get()), CONNECTION_OK) << PQerrorMessage(in_tx.get()) << log_tail();
  EXPECT_EQ(PQstatus(idler.get()), CONNECTION_OK) << PQerrorMessage(idler.get()) << log_tail();
  EXPECT_EQ(tx_notices, "") << log_tail();
  EXPECT_EQ(idler_notices, "") << log_tail();
}

// ---------------------------------------------------------------------------------------------
// 5. Shutdown

class ShutdownTest : public OperationsTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(ShutdownTest, SigtermClosesIdleClientsAndLetsOpenTransactionsFinish) {
  const std::string table = "ops_shutdown_" + GetParam();
  pg().exec("CREATE TABLE " + table + " (n int); ALTER TABLE " + table + " OWNER TO app");
  ASSERT_TRUE(start(config(GetParam(), 4, "shutdown_timeout = \"30s\"")));
  PgConn idle = client(kDb, "ops_idle");
  PgConn in_tx = client(kDb, "ops_in_tx");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(value_of(idle.get(), "SELECT 1"), "1");
  ASSERT_EQ(exec_error(in_tx.get(), "BEGIN"), "");
  ASSERT_EQ(exec_error(in_tx.get(), "INSERT INTO " + table + " VALUES (1)"), "") << log_tail();
  std::string idle_notices, tx_notices;
  collect_notices(idle.get(), &idle_notices);
  collect_notices(in_tx.get(), &tx_notices);

  const auto term_at = Clock::now();
  sluice_->send_signal(SIGTERM);
  // Stops accepting; the idle client is closed with 57P01.
  EXPECT_TRUE(wait_for([&] { return !accepts_tcp(sluice_->port()); }))
      << "Sluice still accepts connections after SIGTERM" << log_tail();
  const double refused_after = seconds_since(term_at);
  EXPECT_TRUE(await_closed(idle.get())) << "the idle client was not closed" << log_tail();
  const std::string idle_read = idle_notices + PQerrorMessage(idle.get());
  EXPECT_EQ(sqlstate_in_message(idle_read), "57P01") << idle_read << log_tail();
  const double idle_closed_after = seconds_since(term_at);

  // The transaction goes on and commits; then its client is closed with 57P01 too.
  EXPECT_EQ(exec_error(in_tx.get(), "INSERT INTO " + table + " VALUES (2)"), "") << log_tail();
  EXPECT_EQ(value_of(in_tx.get(), "SELECT count(*) FROM " + table), "2") << log_tail();
  EXPECT_EQ(exec_error(in_tx.get(), "COMMIT"), "") << log_tail();
  EXPECT_TRUE(await_closed(in_tx.get())) << "the client was not closed after its COMMIT" << log_tail();
  const std::string tx_read = tx_notices + PQerrorMessage(in_tx.get());
  EXPECT_EQ(sqlstate_in_message(tx_read), "57P01") << tx_read << log_tail();
  EXPECT_EQ(pg().query_value("SELECT count(*) FROM " + table), "2");

  // No client left: Sluice exits 0.
  EXPECT_TRUE(wait_for([&] { return !sluice_->running(); }, 20s)) << "Sluice still runs with no client" << log_tail();
  std::printf("[ INFO     ] SIGTERM (%s): refusing after %.3f s, idle client closed after %.3f s, exit after %.3f s\n",
              GetParam().c_str(), refused_after, idle_closed_after, seconds_since(term_at));
  EXPECT_EQ(sluice_->stop(), 0) << log_tail();
  EXPECT_TRUE(wait_for([] { return try_backend_count("app", kDb) == 0; })) << "backends left open";
}

INSTANTIATE_TEST_SUITE_P(Modes, ShutdownTest, ::testing::Values("session", "transaction"),
                         [](const auto& info) { return info.param; });

TEST_F(OperationsTest, ShutdownTimeoutClosesTransactionsThatDoNotEnd) {
  ASSERT_TRUE(start(config("transaction", 2, "shutdown_timeout = \"1s\"")));
  PgConn in_tx = client(kDb, "ops_forever");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(exec_error(in_tx.get(), "BEGIN"), "");
  ASSERT_EQ(value_of(in_tx.get(), "SELECT 1"), "1");
  std::string notices;
  collect_notices(in_tx.get(), &notices);
  const auto term_at = Clock::now();
  sluice_->send_signal(SIGTERM);
  EXPECT_TRUE(wait_for([&] { return !sluice_->running(); }, 30s))
      << "Sluice still runs well past shutdown_timeout = 1s" << log_tail();
  std::printf("[ INFO     ] shutdown_timeout 1s: exit %.3f s after SIGTERM\n", seconds_since(term_at));
  EXPECT_EQ(sluice_->stop(), 0) << log_tail();
  EXPECT_TRUE(await_closed(in_tx.get(), 10s));
  const std::string read = notices + PQerrorMessage(in_tx.get());
  std::printf("[ INFO     ] the client in a transaction read: %s\n", read.c_str());
  // The spec says only "closing the rest"; PRODUCT.md's error table has 57P01 for an admin shutdown, and
  // PostgreSQL's own fast shutdown tells a client inside a transaction so.
  EXPECT_EQ(sqlstate_in_message(read), "57P01")
      << "a client closed at shutdown_timeout is not told why (expected FATAL 57P01): " << read;
  EXPECT_TRUE(wait_for([] { return try_backend_count("app", kDb) == 0; })) << "backends left open";
}

TEST_F(OperationsTest, SecondSigtermClosesEverythingAtOnce) {
  ASSERT_TRUE(start(config("session", 2, "shutdown_timeout = \"120s\"")));
  PgConn in_tx = client(kDb, "ops_in_tx");
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(exec_error(in_tx.get(), "BEGIN"), "");
  ASSERT_EQ(value_of(in_tx.get(), "SELECT 1"), "1");
  sluice_->send_signal(SIGTERM);
  ASSERT_TRUE(wait_for([&] { return !accepts_tcp(sluice_->port()); })) << log_tail();
  EXPECT_TRUE(sluice_->running()) << "Sluice exited with a client still inside a transaction" << log_tail();
  const auto second_at = Clock::now();
  sluice_->send_signal(SIGTERM);
  EXPECT_TRUE(wait_for([&] { return !sluice_->running(); }, 30s))
      << "Sluice did not exit after a second SIGTERM (shutdown_timeout is 120s)" << log_tail();
  const int status = sluice_->stop();
  std::printf("[ INFO     ] second SIGTERM: exit status %d after %.3f s\n", status, seconds_since(second_at));
  EXPECT_TRUE(await_closed(in_tx.get(), 10s));
}

TEST_F(OperationsTest, ShutdownCommandStopsSluiceAsSigtermDoes) {
  ASSERT_TRUE(start(config("transaction", 2)));
  PgConn c = client();
  ASSERT_EQ(value_of(c.get(), "SELECT 1"), "1");
  std::string notices;
  collect_notices(c.get(), &notices);
  PgConn console = connect_verbose(admin_conninfo("pgbouncer"));
  ASSERT_EQ(PQstatus(console.get()), CONNECTION_OK) << login_error(console.get()) << log_tail();
  ASSERT_EQ(PQsendQuery(console.get(), "SHUTDOWN"), 1);
  EXPECT_TRUE(wait_for([&] { return !sluice_->running(); }, 30s)) << "Sluice still runs after SHUTDOWN" << log_tail();
  EXPECT_EQ(sluice_->stop(), 0) << log_tail();
  EXPECT_TRUE(await_closed(c.get(), 10s));
  const std::string read = notices + PQerrorMessage(c.get());
  EXPECT_EQ(sqlstate_in_message(read), "57P01") << read;
}

// ---------------------------------------------------------------------------------------------
// 6. Restart without refusing clients: so_reuseport

TEST_F(OperationsTest, SecondSluiceOnTheSamePortTakesOverWithoutFailedTransactions) {
  ASSERT_NO_FATAL_FAILURE(ensure_pgbench_tables());
  const std::string toml = config("transaction", 5, "so_reuseport = true\nshutdown_timeout = \"30s\"");
  ASSERT_TRUE(start(toml));
  const int port = sluice_->port();
  const auto bench_started = Clock::now();
  auto bench = std::async(std::launch::async, [port] {
    return run({pg_tool("pgbench"), "-h", "127.0.0.1", "-p", std::to_string(port), "-U", "app", "-C", "-c", "4",
                "-j", "2", "-T", "8", "-S", "-n", kDb},
               {"PGPASSWORD=app_pw", "LC_ALL=C", "PGCONNECT_TIMEOUT=60"}, 90s);
  });
  const bool flowing = wait_for([] { return pgbench_backends() >= 1; }, 30s);
  if (!flowing) {
    const ProcessResult r = bench.get();
    FAIL() << "pgbench's traffic never showed up in pg_stat_activity; pgbench:\n" << r.output << log_tail();
  }
  try {
    second_ = std::make_unique<SluiceProcess>(toml, port);
  } catch (const std::exception& e) {
    const ProcessResult r = bench.get();
    FAIL() << "the second Sluice did not start on port " << port << ":\n" << e.what() << "\npgbench:\n" << r.output;
  }
  pids_[1] = second_->pid();
  const auto term_at = Clock::now();
  std::printf("[ INFO     ] second Sluice listening on %d %.3f s into pgbench; SIGTERM to the first\n", port,
              seconds_since(bench_started));
  sluice_->send_signal(SIGTERM);
  EXPECT_TRUE(wait_for([&] { return !sluice_->running(); }, 40s)) << "the first Sluice did not exit" << log_tail();
  const double exited_after = seconds_since(term_at);
  const bool bench_done_before = bench.wait_for(0s) == std::future_status::ready;
  EXPECT_EQ(sluice_->stop(), 0) << log_tail();
  std::printf("[ INFO     ] first Sluice exited %.3f s after SIGTERM%s\n", exited_after,
              bench_done_before ? " (WARNING: pgbench had already finished: the handover was not under load)" : "");
  EXPECT_TRUE(second_->running()) << log_tail();

  const ProcessResult r = bench.get();
  std::printf("[ INFO     ] pgbench -C: exit %d after %.2f s\n%s\n", r.exit_code, r.seconds,
              tail_lines(r.output, 12).c_str());
  EXPECT_FALSE(r.timed_out) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output << log_tail();
  EXPECT_TRUE(contains(r.output, "number of failed transactions: 0 ")) << r.output << log_tail();
  EXPECT_FALSE(contains(r.output, "error")) << r.output << log_tail();

  // The second one served (only it listens now).
  PgConn console = connect_verbose(second_->conninfo("sluice", "postgres", "postgres_pw"));
  ASSERT_EQ(PQstatus(console.get()), CONNECTION_OK) << login_error(console.get()) << log_tail();
  const Table totals = table_of(console.get(), "SHOW STATS_TOTALS");
  EXPECT_GT(number(totals.first({{"database", kDb}}), "xact_count"), 0)
      << "the second Sluice served no transaction:\n" << totals.text() << log_tail();
  std::printf("[ INFO     ] second Sluice's SHOW STATS_TOTALS:\n%s\n", totals.text().c_str());
}

}  // namespace
}  // namespace sluice::test
