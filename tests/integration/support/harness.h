#pragma once
// Test harness for integration tests: a real PostgreSQL 15 started once per test
// binary, and Sluice processes started per test with a generated TOML config.
#include <libpq-fe.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sluice::test {

struct SharedPostgres;

// Roles created in the shared PostgreSQL (all LOGIN, passwords as given):
//   postgres   / "postgres_pw"  superuser, scram-sha-256
//   app        / "app_pw"       scram-sha-256 (owns database sluice_test)
//   md5user    / "md5_pw"       stored as md5, pg_hba "md5"
//   plainuser  / "plain_pw"     pg_hba "password" (cleartext)
//   trustuser  / "trust_pw"     scram-sha-256 (Sluice's "trust" user: Sluice logs in with server_password)
// Databases: sluice_test (owner app), sluice_other (owner app).
// pg_hba: TCP on 127.0.0.1 as above; the Unix socket (in the temp dir) is `trust`, used only by the
// harness itself (exec/query_value). A watchdog process stops PostgreSQL and removes the temp dir even
// when the test binary is killed or crashes.
class PostgresServer {
 public:
  // Started on first use (initdb in a temp dir, free port, as the `postgres` OS user
  // when running as root), stopped and removed when the test binary exits.
  static PostgresServer& shared();
  std::string host() const { return "127.0.0.1"; }
  int port() const { return port_; }
  // libpq conninfo for a direct connection.
  std::string conninfo(const std::string& dbname, const std::string& user, const std::string& password) const;
  // Runs SQL as the superuser on `dbname`; throws std::runtime_error with the server's message on failure.
  void exec(const std::string& sql, const std::string& dbname = "sluice_test") const;
  // Single value of the first row/column as text (superuser); throws on failure.
  std::string query_value(const std::string& sql, const std::string& dbname = "sluice_test") const;
  std::string data_dir() const { return data_dir_; }
  // Directory of the Unix socket (and of the server log, postgres.log).
  std::string socket_dir() const { return base_dir_; }
  // Everything PostgreSQL logged so far.
  std::string log() const;

  // A second, independent PostgreSQL with the same roles, passwords and databases (its own temp dir,
  // port, Unix socket and watchdog), started on first use and stopped at exit like shared(). initdb
  // costs a few seconds: only tests that need two servers should ask for it.
  static PostgresServer& secondary();

  // Fault injection. stop_immediate() is `pg_ctl stop -m immediate` (every backend killed at once, no
  // shutdown checkpoint, clients see FATAL 57P01 or a dropped connection); it throws if pg_ctl fails.
  // start_again() starts the same data directory on the same port (crash recovery) and returns once
  // PostgreSQL accepts a password login over TCP (bounded: throws after 60 s). Both are for the
  // thread that runs the tests; exec() and query_value() throw while the server is stopped.
  void stop_immediate();
  void start_again();
  bool stopped() const { return stopped_; }

 private:
  friend struct SharedPostgres;
  PostgresServer();
  ~PostgresServer();
  void start();
  void stop() noexcept;
  std::vector<std::string> pg_ctl_command(std::vector<std::string> args) const;
  bool stopped_ = false;
  int port_ = 0;
  std::string base_dir_;
  std::string data_dir_;
  bool as_postgres_user_ = false;  // running as root: PostgreSQL tools run as the `postgres` OS user
  int watchdog_fd_ = -1;           // write end of the watchdog's pipe
};

// A running Sluice process. The constructor writes `toml` to a temp file, starts the
// binary, and waits (bounded) until it accepts TCP connections; the destructor sends
// SIGTERM and waits for exit (SIGKILL after a generous bound).
class SluiceProcess {
 public:
  // `toml` may contain the placeholders {listen_port}, {pg_port}, {pg_host}, replaced before writing,
  // and also {metrics_port} (another free port) and {dir} (this process's temp dir, e.g. for log files).
  // Throws std::runtime_error (with Sluice's log) if Sluice exits or does not accept within 20 s.
  // Sluice gets PR_SET_PDEATHSIG(SIGKILL): create it on a thread that outlives it (gtest's main thread).
  explicit SluiceProcess(std::string toml);
  // Like the above, but {listen_port} is `listen_port` (e.g. another running Sluice's port, to test
  // `so_reuseport`): no retry with another port when it is taken (throws, with Sluice's log). Ready
  // once this process itself has a socket listening on 127.0.0.1:listen_port (read from /proc,
  // since another process may already accept on that port).
  SluiceProcess(std::string toml, int listen_port);
  ~SluiceProcess();
  SluiceProcess(const SluiceProcess&) = delete;
  SluiceProcess& operator=(const SluiceProcess&) = delete;

  int port() const { return port_; }
  std::string conninfo(const std::string& dbname, const std::string& user, const std::string& password,
                       const std::string& extra = "") const;
  // Everything Sluice wrote to stderr so far.
  std::string log() const;
  bool running() const;
  // Sends SIGTERM, waits for exit (SIGKILL after 10 s), returns the exit status, or -1 when Sluice
  // was ended by a signal. Idempotent: later calls return the same status.
  int stop();
  // Sends `signo` (e.g. SIGHUP for a reload) to Sluice.
  void send_signal(int signo) const;
  int pid() const { return pid_; }
  int metrics_port() const { return metrics_port_; }
  // This process's temp dir (config, log); inside PostgresServer's temp dir.
  std::string dir() const { return dir_; }
  std::string config_path() const { return dir_ + "/sluice.toml"; }

 private:
  void launch(const std::string& toml);  // the constructors' body
  bool start(const std::string& toml);  // false when the listen port was taken (caller retries)
  bool listening() const;               // this process has a listening socket on port_ (/proc)
  int fixed_port_ = 0;                  // from the (toml, listen_port) constructor; 0 = pick one
  bool reap(bool block) const;          // true once the process has exited (status recorded)
  int port_ = 0;
  int metrics_port_ = 0;
  int pid_ = -1;
  std::string dir_;
  std::string log_path_;
  mutable bool exited_ = false;
  mutable int wait_status_ = 0;
};

// A session-mode config: databases sluice_test, sluice_other (and a "*" fallback) in front of the
// shared PostgreSQL, users app (scram), md5user (md5), plainuser (cleartext), trustuser (trust,
// server_password "trust_pw") and postgres (scram), with `pool_size`. No [users."*"].
std::string default_config(int pool_size = 5);
// `toml` with every server that default_config names by address ({pg_host}) named by `host`
// instead (e.g. "localhost", to go through a name lookup). Throws if there was none to rename.
std::string with_server_host(std::string toml, const std::string& host);

// A port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, close). Another process
// may take it before it is used; PostgresServer and SluiceProcess retry with a new port if so.
int free_port();

// RAII for PGconn*.
struct PgConnDeleter { void operator()(PGconn* c) const { PQfinish(c); } };
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
struct PgResultDeleter { void operator()(PGresult* r) const { PQclear(r); } };
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

PgConn connect(const std::string& conninfo);  // may return a connection in CONNECTION_BAD state
// Polls `condition` until it holds or `timeout` passes; returns whether it held.
bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout = std::chrono::seconds(20));

// A PostgreSQL command-line tool: the version 15 binary when installed, else from PATH.
std::string pg_tool(const std::string& name);

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal or not started
  bool timed_out = false;
  std::string output;  // stdout and stderr, interleaved
  double seconds = 0;
};

// Runs argv[0] (looked up in PATH) with the parent's environment plus `env` (minus libpq
// settings a developer's shell may carry), stdout and stderr captured; killed after `timeout`.
ProcessResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                  std::chrono::milliseconds timeout = std::chrono::seconds(180));

// The checks of a pgbench run that must have gone cleanly (gtest failures, not exceptions): it
// finished in time with exit 0, processed some transactions, none failed and no client aborted.
void expect_clean_pgbench_run(const ProcessResult& r);

// Like connect(), but with libpq's error verbosity set to VERBOSE before the login starts, so that
// every error message (PQerrorMessage, PQresultErrorMessage), including one that arrives during the
// login or just before the server closes the connection (when libpq replaces the result's fields by
// the connection loss), carries its SQLSTATE: "FATAL:  08006: message\nDETAIL:  ...". Bounded by
// `timeout` (libpq's connect_timeout does not apply to this non-blocking login); never returns null.
PgConn connect_verbose(const std::string& conninfo, std::chrono::milliseconds timeout = std::chrono::seconds(60));
// The SQLSTATE of the first "ERROR:  XXXXX:" / "FATAL:  XXXXX:" / "PANIC:  XXXXX:" in a verbose error
// message (see connect_verbose); "" when there is none.
std::string sqlstate_in_message(const std::string& message);

// Per-process figures from /proc: open file descriptors (-1 when the process is gone), resident set
// size in KiB (VmRSS; -1 when unknown).
int open_fd_count(int pid);
long rss_kib(int pid);

// Client backends in `pg`'s pg_stat_activity for `user` on `dbname` (either may be "" = any), with
// `state` when it is not empty ("idle", "active", "idle in transaction"); their pids, ascending.
// Asked over a fresh superuser connection to the `postgres` database, so the asking connection is
// never counted. Throw (as query_value does) while the server is stopped.
int backend_count(const PostgresServer& pg, const std::string& user, const std::string& dbname,
                  const std::string& state = "");
std::vector<int> backend_pids(const PostgresServer& pg, const std::string& user, const std::string& dbname,
                              const std::string& state = "");

// A TCP listener on 127.0.0.1 (a free port) that accepts every connection and never sends a byte:
// a backend that hangs. Connections are held until destruction.
class BlackHoleListener {
 public:
  BlackHoleListener();
  ~BlackHoleListener();
  BlackHoleListener(const BlackHoleListener&) = delete;
  BlackHoleListener& operator=(const BlackHoleListener&) = delete;
  int port() const { return port_; }
  int accepted() const;  // connections accepted so far

 private:
  struct State;
  int port_ = 0;
  std::unique_ptr<State> state_;
};

// Small helpers the tests share.
// The last `lines` lines of `text` (all of it when it has no more than that).
std::string tail_lines(const std::string& text, std::size_t lines);
// Seconds from `start` until now.
double seconds_since(std::chrono::steady_clock::time_point start);
// The first capture group of the first match of `pattern` in `text`, as a number; nullopt without a match.
std::optional<long long> parse_number(const std::string& text, const std::string& pattern);
// The SQLSTATE of `r`; "" when `r` is null or carries none.
std::string sqlstate_of(const PGresult* r);
// "<status> [<sqlstate>]: <message>" for `r` ("no result" when null); without a message in `r`,
// the connection's error message, if any.
std::string describe_result(PGconn* c, const PGresult* r);

}  // namespace sluice::test
