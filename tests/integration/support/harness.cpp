// Integration test harness: a throwaway PostgreSQL 15 per test binary and Sluice
// processes per test. See harness.h for the contract.
#include "support/harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef SLUICE_BINARY
#error "SLUICE_BINARY must be defined by the build (path of the sluice executable)"
#endif

extern char** environ;

namespace sluice::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string pg_bindir() {
  if (const char* dir = std::getenv("SLUICE_PG_BINDIR"); dir != nullptr && *dir != '\0') return dir;
  return "/usr/lib/postgresql/15/bin";
}

// Prefix that runs a command as the `postgres` OS user (PostgreSQL refuses to run as root).
std::vector<std::string> run_as_postgres() {
  const std::string runuser = access("/usr/sbin/runuser", X_OK) == 0 ? "/usr/sbin/runuser" : "runuser";
  return {runuser, "-u", "postgres", "--"};
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_text_file(const std::string& path, const std::string& text, bool append = false) {
  std::ofstream out(path, append ? std::ios::binary | std::ios::app : std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string make_temp_dir(const std::string& prefix, const std::string& parent = "/tmp") {
  std::string pattern = parent + "/" + prefix + "-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp(" + pattern + "): " + std::strerror(errno));
  }
  return pattern;
}

void remove_dir(const std::string& dir) noexcept {
  if (dir.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// Last `max_lines` lines of `text`.
std::string tail(const std::string& text, std::size_t max_lines) {
  std::size_t pos = text.size();
  std::size_t lines = 0;
  while (pos > 0) {
    const std::size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    if (nl + 1 < text.size() && ++lines > max_lines) return "[...]\n" + text.substr(nl + 1);
    pos = nl;
  }
  return text;
}

// `value` with every ' written as '\'' (for use inside single quotes in sh).
std::string replace_all_chars(const std::string& value) {
  std::string out;
  for (char c : value) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out;
}

// A value for a libpq conninfo string, quoted.
std::string quote_conninfo(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string shell_quote(const std::string& value) { return "'" + replace_all_chars(value) + "'"; }

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

// Async-signal-safe preparation of a child between fork and exec: default signal
// dispositions and an empty signal mask (the parent may ignore or block some).
void reset_signals_in_child() {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2}) signal(s, SIG_DFL);
}

struct CommandResult {
  int status = -1;  // exit status, or -1 when killed by a signal
  std::string output;  // stdout and stderr together
};

// Runs argv (argv[0] is looked up in PATH) in `cwd` and returns its exit status and output.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& cwd) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  std::vector<char*> c_argv;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    reset_signals_in_child();
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    execvp(c_argv[0], c_argv.data());
    const char msg[] = "exec failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  close(pipe_fds[1]);
  CommandResult result;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(pipe_fds[0], buf, sizeof buf);
    if (n > 0) {
      result.output.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string describe(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

bool tcp_accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

}  // namespace

// Owns the per-binary PostgreSQL; destroyed (server stopped) at exit. Remembers a start-up
// failure so that every test fails fast with the same message instead of retrying initdb.
struct SharedPostgres {
  std::mutex mutex;
  PostgresServer* server = nullptr;
  std::string failure;
  ~SharedPostgres() { delete server; }
};

namespace {
SharedPostgres& shared_postgres() {
  static SharedPostgres holder;
  return holder;
}
SharedPostgres& secondary_postgres() {
  static SharedPostgres holder;
  return holder;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// PostgresServer

PostgresServer& PostgresServer::shared() {
  SharedPostgres& holder = shared_postgres();
  std::lock_guard lock(holder.mutex);
  if (holder.server != nullptr) return *holder.server;
  if (!holder.failure.empty()) throw std::runtime_error(holder.failure);
  try {
    holder.server = new PostgresServer();
  } catch (const std::exception& e) {
    holder.failure = std::string("PostgreSQL for the tests did not start: ") + e.what();
    throw std::runtime_error(holder.failure);
  }
  return *holder.server;
}

PostgresServer& PostgresServer::secondary() {
  SharedPostgres& holder = secondary_postgres();
  std::lock_guard lock(holder.mutex);
  if (holder.server != nullptr) return *holder.server;
  if (!holder.failure.empty()) throw std::runtime_error(holder.failure);
  try {
    holder.server = new PostgresServer();
  } catch (const std::exception& e) {
    holder.failure = std::string("the second PostgreSQL for the tests did not start: ") + e.what();
    throw std::runtime_error(holder.failure);
  }
  return *holder.server;
}

std::vector<std::string> PostgresServer::pg_ctl_command(std::vector<std::string> args) const {
  std::vector<std::string> argv;
  if (as_postgres_user_) argv = run_as_postgres();
  argv.push_back(pg_bindir() + "/pg_ctl");
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

void PostgresServer::stop_immediate() {
  if (stopped_) return;
  const auto argv = pg_ctl_command({"-D", data_dir_, "stop", "-m", "immediate", "-w", "-t", "60"});
  const auto r = run_command(argv, base_dir_);
  if (r.status != 0) throw std::runtime_error(describe(argv) + " failed:\n" + r.output);
  stopped_ = true;
}

void PostgresServer::start_again() {
  if (!stopped_) return;
  const std::string log_path = base_dir_ + "/postgres.log";
  const std::size_t log_before = read_text_file(log_path).size();
  const auto argv = pg_ctl_command(
      {"-D", data_dir_, "-l", log_path, "-w", "-t", "60", "-o", "-p " + std::to_string(port_), "start"});
  const auto r = run_command(argv, base_dir_);
  if (r.status != 0) {
    throw std::runtime_error(describe(argv) + " failed:\n" + r.output + "\npostgres.log:\n" +
                             tail(read_text_file(log_path).substr(log_before), 60));
  }
  stopped_ = false;
  // pg_ctl -w waits for the postmaster to be ready; wait (bounded) for a real password login over TCP,
  // as Sluice makes them, so that the caller measures from a server that serves clients.
  const std::string info = conninfo("postgres", "postgres", "postgres_pw");
  if (!wait_for([&] { return PQstatus(connect(info).get()) == CONNECTION_OK; }, 60s)) {
    throw std::runtime_error("PostgreSQL restarted on port " + std::to_string(port_) +
                             " but refuses logins; log:\n" + tail(read_text_file(log_path).substr(log_before), 60));
  }
}

PostgresServer::PostgresServer() {
  try {
    start();
  } catch (...) {
    stop();
    throw;
  }
}

PostgresServer::~PostgresServer() { stop(); }

void PostgresServer::start() {
  as_postgres_user_ = geteuid() == 0;
  uid_t pg_uid = 0;
  gid_t pg_gid = 0;
  if (as_postgres_user_) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      throw std::runtime_error("running as root, but there is no `postgres` OS user to run PostgreSQL as "
                               "(install postgresql-15: scripts/install-deps.sh)");
    }
    pg_uid = pw->pw_uid;
    pg_gid = pw->pw_gid;
  }
  base_dir_ = make_temp_dir("sluice-pg");
  data_dir_ = base_dir_ + "/data";
  if (as_postgres_user_ && chown(base_dir_.c_str(), pg_uid, pg_gid) != 0) {
    throw std::runtime_error("chown " + base_dir_ + ": " + std::strerror(errno));
  }
  const std::vector<std::string> as_pg = as_postgres_user_ ? run_as_postgres() : std::vector<std::string>{};
  auto pg_tool = [&](const std::string& tool, std::vector<std::string> args) {
    std::vector<std::string> argv = as_pg;
    argv.push_back(pg_bindir() + "/" + tool);
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };

  // Watchdog: a detached shell (double fork, own session, so neither Ctrl-C nor ctest's
  // process-tree kill reaches it) that waits for this process to go away. If we write "done"
  // first, everything was cleaned up; on EOF without it (crash, kill), it stops PostgreSQL and
  // removes the temp dir.
  {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
    std::string stop_cmd;
    for (const auto& a : pg_tool("pg_ctl", {"-D", data_dir_, "stop", "-m", "immediate", "-w"})) {
      stop_cmd += shell_quote(a) + " ";
    }
    const std::string script =
        "if read -r line; then exit 0; fi; " + stop_cmd + ">/dev/null 2>&1; rm -rf " + shell_quote(base_dir_);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      setsid();
      if (fork() != 0) _exit(0);
      reset_signals_in_child();
      signal(SIGINT, SIG_IGN);
      dup2(fds[0], 0);
      const int devnull = open("/dev/null", O_WRONLY);
      if (devnull >= 0) {
        dup2(devnull, 1);
        dup2(devnull, 2);
      }
      if (chdir("/") != 0) _exit(126);
      execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[0]);
    watchdog_fd_ = fds[1];
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }

  const std::string pwfile = base_dir_ + "/pwfile";
  write_text_file(pwfile, "postgres_pw\n");
  if (as_postgres_user_ && chown(pwfile.c_str(), pg_uid, pg_gid) != 0) {
    throw std::runtime_error("chown " + pwfile + ": " + std::strerror(errno));
  }
  const auto initdb = pg_tool("initdb", {"-D", data_dir_, "-U", "postgres", "--pwfile=" + pwfile,
                                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                         "--locale=C", "--no-sync"});
  if (auto r = run_command(initdb, base_dir_); r.status != 0) {
    throw std::runtime_error(describe(initdb) + " failed:\n" + r.output);
  }
  std::remove(pwfile.c_str());

  write_text_file(data_dir_ + "/postgresql.conf",
                  "\n# sluice test harness\n"
                  "listen_addresses = '127.0.0.1'\n"
                  "unix_socket_directories = '" + base_dir_ + "'\n"
                  "max_connections = 200\n"
                  "shared_buffers = 32MB\n"
                  "fsync = off\n"
                  "synchronous_commit = off\n"
                  "full_page_writes = off\n"
                  "password_encryption = 'scram-sha-256'\n"
                  "log_connections = on\n"
                  "log_disconnections = on\n"
                  "log_line_prefix = '%m [%p] %q%u@%d '\n",
                  /*append=*/true);
  // First match wins: md5user and plainuser get their own methods, everyone else SCRAM on TCP.
  // The Unix socket is trust: only the harness's own setup connections use it.
  write_text_file(data_dir_ + "/pg_hba.conf",
                  "# sluice test harness\n"
                  "local all all                       trust\n"
                  "host  all md5user   127.0.0.1/32    md5\n"
                  "host  all plainuser 127.0.0.1/32    password\n"
                  "host  all all       127.0.0.1/32    scram-sha-256\n");

  // free_port() can race with another process; retry with a new port if the bind failed.
  const std::string log_path = base_dir_ + "/postgres.log";
  for (int attempt = 1;; ++attempt) {
    port_ = free_port();
    const std::size_t log_before = read_text_file(log_path).size();
    const auto pg_ctl = pg_tool("pg_ctl", {"-D", data_dir_, "-l", log_path, "-w", "-t", "120", "-o",
                                           "-p " + std::to_string(port_), "start"});
    const auto r = run_command(pg_ctl, base_dir_);
    if (r.status == 0) break;
    const std::string new_log = read_text_file(log_path).substr(log_before);
    if (attempt < 5 && new_log.find("already in use") != std::string::npos) continue;
    throw std::runtime_error(describe(pg_ctl) + " failed:\n" + r.output + "\npostgres.log:\n" + tail(new_log, 100));
  }

  // pg_ctl -w has waited for readiness; double-check over the socket we use for setup.
  const std::string socket_conninfo =
      "host=" + quote_conninfo(base_dir_) + " port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  if (!wait_for([&] { return PQping(socket_conninfo.c_str()) == PQPING_OK; }, 60s)) {
    throw std::runtime_error("PostgreSQL does not answer on " + base_dir_ + "; log:\n" + tail(log(), 100));
  }

  exec(
      "CREATE ROLE app LOGIN PASSWORD 'app_pw';"
      "CREATE ROLE plainuser LOGIN PASSWORD 'plain_pw';"
      "CREATE ROLE trustuser LOGIN PASSWORD 'trust_pw';"
      "SET password_encryption = 'md5';"
      "CREATE ROLE md5user LOGIN PASSWORD 'md5_pw';",
      "postgres");
  exec("CREATE DATABASE sluice_test OWNER app", "postgres");
  exec("CREATE DATABASE sluice_other OWNER app", "postgres");
  if (query_value("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5user'", "postgres") != "md5") {
    throw std::runtime_error("md5user's password is not stored as md5");
  }
}

void PostgresServer::stop() noexcept {
  if (!data_dir_.empty() && port_ != 0) {
    std::vector<std::string> argv;
    if (as_postgres_user_) argv = run_as_postgres();
    argv.push_back(pg_bindir() + "/pg_ctl");
    for (const char* a : {"-D", data_dir_.c_str(), "stop", "-m", "immediate", "-w"}) argv.emplace_back(a);
    try {
      (void)run_command(argv, base_dir_);
    } catch (...) {
      // The watchdog still gets EOF below without "done" and tries again.
      remove_dir(base_dir_);
      base_dir_.clear();
    }
  }
  if (!base_dir_.empty()) {
    if (std::getenv("SLUICE_TEST_KEEP_LOGS") != nullptr) {
      std::cerr << "[harness] PostgreSQL data and log kept in " << base_dir_ << "\n";
    } else {
      remove_dir(base_dir_);
    }
  }
  if (watchdog_fd_ >= 0) {
    if (!base_dir_.empty()) (void)!write(watchdog_fd_, "done\n", 5);
    close(watchdog_fd_);
    watchdog_fd_ = -1;
  }
  port_ = 0;
}

std::string PostgresServer::log() const { return read_text_file(base_dir_ + "/postgres.log"); }

std::string PostgresServer::conninfo(const std::string& dbname, const std::string& user,
                                     const std::string& password) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + quote_conninfo(dbname) +
         " user=" + quote_conninfo(user) + " password=" + quote_conninfo(password) + " connect_timeout=60";
}

namespace {
// Superuser connection over the Unix socket (trust).
PgConn superuser_connection(const std::string& socket_dir, int port, const std::string& dbname) {
  const std::string info = "host=" + quote_conninfo(socket_dir) + " port=" + std::to_string(port) +
                           " user=postgres dbname=" + quote_conninfo(dbname) + " connect_timeout=60";
  PgConn conn = connect(info);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("superuser connection to " + dbname + " failed: " + PQerrorMessage(conn.get()));
  }
  return conn;
}
}  // namespace

void PostgresServer::exec(const std::string& sql, const std::string& dbname) const {
  PgConn conn = superuser_connection(base_dir_, port_, dbname);
  PgResult res(PQexec(conn.get(), sql.c_str()));
  const auto status = PQresultStatus(res.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY) {
    throw std::runtime_error("`" + sql + "` failed: " + PQerrorMessage(conn.get()));
  }
}

std::string PostgresServer::query_value(const std::string& sql, const std::string& dbname) const {
  PgConn conn = superuser_connection(base_dir_, port_, dbname);
  PgResult res(PQexec(conn.get(), sql.c_str()));
  if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
    throw std::runtime_error("`" + sql + "` failed: " + PQerrorMessage(conn.get()));
  }
  if (PQntuples(res.get()) < 1 || PQnfields(res.get()) < 1) {
    throw std::runtime_error("`" + sql + "` returned no value");
  }
  return PQgetvalue(res.get(), 0, 0);
}

// ---------------------------------------------------------------------------------------------
// SluiceProcess

SluiceProcess::SluiceProcess(std::string toml) { launch(toml); }

SluiceProcess::SluiceProcess(std::string toml, int listen_port) : fixed_port_(listen_port) { launch(toml); }

void SluiceProcess::launch(const std::string& toml) {
  // Inside PostgreSQL's temp dir, so that the watchdog removes it too if the test binary is
  // killed before this destructor runs.
  dir_ = make_temp_dir("sluice", PostgresServer::shared().socket_dir());
  log_path_ = dir_ + "/sluice.log";
  try {
    for (int attempt = 1;; ++attempt) {
      if (start(toml)) return;
      if (attempt == 5) throw std::runtime_error("no free port for Sluice after 5 attempts; log:\n" + log());
    }
  } catch (...) {
    if (std::getenv("SLUICE_TEST_KEEP_LOGS") != nullptr) {
      std::cerr << "[harness] Sluice config and log kept in " << dir_ << "\n";
    } else {
      remove_dir(dir_);
    }
    throw;
  }
}

bool SluiceProcess::start(const std::string& toml) {
  port_ = fixed_port_ != 0 ? fixed_port_ : free_port();
  do {
    metrics_port_ = free_port();
  } while (metrics_port_ == port_);
  const auto& pg = PostgresServer::shared();
  std::string text = replace_all(toml, "{listen_port}", std::to_string(port_));
  text = replace_all(text, "{metrics_port}", std::to_string(metrics_port_));
  text = replace_all(text, "{pg_port}", std::to_string(pg.port()));
  text = replace_all(text, "{pg_host}", pg.host());
  text = replace_all(text, "{dir}", dir_);
  write_text_file(config_path(), text);

  const std::string binary = SLUICE_BINARY;
  const std::string config = config_path();
  char* argv[] = {const_cast<char*>("sluice"), const_cast<char*>("--config"), const_cast<char*>(config.c_str()),
                  nullptr};
  const pid_t parent = getpid();
  exited_ = false;
  wait_status_ = 0;
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Killed with the test binary even if it crashes (the destructor never runs then).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    reset_signals_in_child();
    const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    const int devnull = open("/dev/null", O_RDONLY);
    if (log_fd < 0 || devnull < 0) _exit(126);
    dup2(devnull, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    if (chdir(dir_.c_str()) != 0) _exit(126);  // relative paths in the config land in dir_
    execv(binary.c_str(), argv);
    const char msg[] = "harness: exec of the sluice binary failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  pid_ = pid;

  const auto deadline = Clock::now() + 20s;
  while (Clock::now() < deadline) {
    if (reap(false)) {
      const std::string text_log = log();
      if (fixed_port_ == 0 && toml.find("{listen_port}") != std::string::npos &&
          text_log.find("already in use") != std::string::npos) {
        return false;  // lost the free-port race; the caller retries with another port
      }
      const int status = WIFEXITED(wait_status_) ? WEXITSTATUS(wait_status_) : -WTERMSIG(wait_status_);
      throw std::runtime_error("sluice exited (status " + std::to_string(status) +
                               ", negative = signal) before accepting connections on port " +
                               std::to_string(port_) + "; config " + config + "; log:\n" + tail(text_log, 200));
    }
    if (fixed_port_ != 0 ? listening() : tcp_accepts(port_)) return true;
    std::this_thread::sleep_for(20ms);
  }
  kill(pid_, SIGKILL);
  reap(true);
  throw std::runtime_error("sluice did not accept connections on port " + std::to_string(port_) +
                           " within 20 s; log:\n" + tail(log(), 200));
}

bool SluiceProcess::listening() const {
  // Inodes of sockets listening (state 0A) on 127.0.0.1:port_ or 0.0.0.0:port_, from this process's
  // network namespace; then whether one of them is among the process's open files.
  std::vector<std::string> inodes;
  for (const char* table : {"/net/tcp", "/net/tcp6"}) {
    std::ifstream in("/proc/" + std::to_string(pid_) + table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const auto colon = local.rfind(':');
      if (colon == std::string::npos || state != "0A") continue;
      if (std::stoi(local.substr(colon + 1), nullptr, 16) == port_) inodes.push_back(inode);
    }
  }
  if (inodes.empty()) return false;
  const std::string fd_dir = "/proc/" + std::to_string(pid_) + "/fd";
  DIR* dir = opendir(fd_dir.c_str());
  if (dir == nullptr) return false;
  bool found = false;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    char target[256];
    const ssize_t n = readlink((fd_dir + "/" + entry->d_name).c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    const std::string link(target, static_cast<std::size_t>(n));
    for (const auto& inode : inodes) found |= link == "socket:[" + inode + "]";
  }
  closedir(dir);
  return found;
}

bool SluiceProcess::reap(bool block) const {
  if (exited_) return true;
  if (pid_ <= 0) return true;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) {
      exited_ = true;
      wait_status_ = status;
      return true;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    exited_ = true;  // ECHILD: reaped elsewhere; status unknown
    wait_status_ = 0;
    return true;
  }
}

SluiceProcess::~SluiceProcess() {
  stop();
  // Under scripts/test.sh --sanitize or --tsan, a sanitizer report from Sluice goes to
  // its stderr (UBSan ignores log_path next to ASan): fail the test rather than delete it.
  {
    const std::string text = log();
    for (const char* marker :
         {"runtime error:", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "ThreadSanitizer"}) {
      const auto at = text.find(marker);
      if (at != std::string::npos) {
        ADD_FAILURE() << "Sluice's log has a sanitizer report:\n" << text.substr(at > 2000 ? at - 2000 : 0, 6000);
        break;
      }
    }
  }
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info != nullptr && ::testing::Test::HasFailure()) {
    std::cerr << "[harness] the test failed; Sluice's log (" << log_path_ << "), last lines:\n"
              << tail(log(), 150) << "\n";
  }
  if (std::getenv("SLUICE_TEST_KEEP_LOGS") != nullptr) {
    std::cerr << "[harness] Sluice config and log kept in " << dir_ << "\n";
  } else {
    remove_dir(dir_);
  }
}

int SluiceProcess::stop() {
  if (pid_ <= 0) return -1;
  if (!reap(false)) {
    kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + 10s;
    while (!reap(false) && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    if (!reap(false)) {
      std::cerr << "[harness] sluice (pid " << pid_ << ") ignored SIGTERM for 10 s; sending SIGKILL\n";
      // Sluice must always exit on SIGTERM: a hang here is a bug, not a test detail.
      ADD_FAILURE() << "sluice (pid " << pid_ << ") did not exit within 10 s of SIGTERM";
      kill(pid_, SIGKILL);
      reap(true);
    }
  }
  return WIFEXITED(wait_status_) ? WEXITSTATUS(wait_status_) : -1;
}

bool SluiceProcess::running() const { return pid_ > 0 && !reap(false); }

void SluiceProcess::send_signal(int signo) const {
  if (running()) kill(pid_, signo);
}

std::string SluiceProcess::log() const { return read_text_file(log_path_); }

std::string SluiceProcess::conninfo(const std::string& dbname, const std::string& user, const std::string& password,
                                    const std::string& extra) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + quote_conninfo(dbname) +
         " user=" + quote_conninfo(user) + " password=" + quote_conninfo(password) + " connect_timeout=60" +
         (extra.empty() ? "" : " " + extra);
}

// ---------------------------------------------------------------------------------------------

std::string default_config(int pool_size) {
  return R"([sluice]
listen = ["127.0.0.1:{listen_port}"]
log_level = "debug"

[pool]
mode = "session"
size = )" + std::to_string(pool_size) +
         R"(

[databases.sluice_test]
host = "{pg_host}"
port = {pg_port}

[databases.sluice_other]
host = "{pg_host}"
port = {pg_port}

[databases."*"]
host = "{pg_host}"
port = {pg_port}

[users.app]
auth = "scram-sha-256"
password = "app_pw"

[users.md5user]
auth = "md5"
password = "md5_pw"

[users.plainuser]
auth = "cleartext"
password = "plain_pw"

[users.trustuser]
auth = "trust"
server_password = "trust_pw"

[users.postgres]
auth = "scram-sha-256"
password = "postgres_pw"
)";
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    close(fd);
    throw std::runtime_error(std::string("free_port: ") + std::strerror(err));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

PgConn connect(const std::string& conninfo) { return PgConn(PQconnectdb(conninfo.c_str())); }

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

std::string pg_tool(const std::string& name) {
  const std::string versioned = "/usr/lib/postgresql/15/bin/" + name;
  return ::access(versioned.c_str(), X_OK) == 0 ? versioned : name;
}

ProcessResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                  std::chrono::milliseconds timeout) {
  ProcessResult result;
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& mine : env) overridden |= mine.substr(0, mine.find('=')) == name;
    // Settings a developer's shell may carry that would change what the clients do.
    static const char* const kDropped[] = {"PGTZ",   "PGDATESTYLE", "PGOPTIONS",  "PGSERVICE",  "PGSSLMODE", "PGHOST",
                                           "PGPORT", "PGUSER",      "PGDATABASE", "PGPASSFILE", "PGAPPNAME"};
    for (const char* d : kDropped) overridden |= name == d;
    if (!overridden) env_strings.push_back(entry);
  }
  for (const auto& mine : env) env_strings.push_back(mine);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (auto& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return result;
  const auto start = Clock::now();
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(out[0]);
    ::close(out[1]);
    return result;
  }
  if (child == 0) {
    const int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::execvpe(argp[0], argp.data(), envp.data());
    const char msg[] = "exec failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(out[1]);
  const auto deadline = start + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) {
      result.timed_out = true;
      ::kill(child, SIGKILL);
      break;
    }
    pollfd pfd{out[0], POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000))) <= 0) continue;
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n > 0) {
      result.output.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  result.seconds = seconds_since(start);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

PgConn connect_verbose(const std::string& conninfo, std::chrono::milliseconds timeout) {
  PgConn conn(PQconnectStart(conninfo.c_str()));
  if (!conn) return PgConn(PQconnectdb("host=/nonexistent-sluice-test-dir port=1"));  // BAD, never null
  PQsetErrorVerbosity(conn.get(), PQERRORS_VERBOSE);
  if (PQstatus(conn.get()) == CONNECTION_BAD) return conn;
  const auto deadline = Clock::now() + timeout;
  PostgresPollingStatusType status = PGRES_POLLING_WRITING;
  while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) break;  // still CONNECTION_STARTED/MADE/...: the caller sees it is not OK
    pollfd pfd{PQsocket(conn.get()), static_cast<short>(status == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    if (::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000))) < 0 && errno != EINTR) break;
    if (pfd.revents == 0) continue;
    status = PQconnectPoll(conn.get());
  }
  return conn;
}

std::string sqlstate_in_message(const std::string& message) {
  static const std::regex pattern(R"((?:ERROR|FATAL|PANIC):  ([0-9A-Z]{5}):)");
  std::smatch m;
  if (std::regex_search(message, m, pattern)) return m[1].str();
  return "";
}

int open_fd_count(int pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/fd";
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count;
}

long rss_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

namespace {
std::string sql_literal(const std::string& value) {
  std::string out = "'";
  for (char c : value) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string backend_filter(const std::string& user, const std::string& dbname, const std::string& state) {
  std::string where = "backend_type = 'client backend' AND pid <> pg_backend_pid()";
  if (!user.empty()) where += " AND usename = " + sql_literal(user);
  if (!dbname.empty()) where += " AND datname = " + sql_literal(dbname);
  if (!state.empty()) where += " AND state = " + sql_literal(state);
  return where;
}
}  // namespace

int backend_count(const PostgresServer& pg, const std::string& user, const std::string& dbname,
                  const std::string& state) {
  return std::stoi(pg.query_value(
      "SELECT count(*) FROM pg_stat_activity WHERE " + backend_filter(user, dbname, state), "postgres"));
}

std::vector<int> backend_pids(const PostgresServer& pg, const std::string& user, const std::string& dbname,
                              const std::string& state) {
  const std::string list = pg.query_value("SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') "
                                          "FROM pg_stat_activity WHERE " + backend_filter(user, dbname, state),
                                          "postgres");
  std::vector<int> pids;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) pids.push_back(std::stoi(item));
  }
  return pids;
}

// ---------------------------------------------------------------------------------------------
// BlackHoleListener

struct BlackHoleListener::State {
  int listen_fd = -1;
  int wake[2] = {-1, -1};
  std::atomic<int> accepted{0};
  std::vector<int> held;  // touched only by the thread until it is joined
  std::thread thread;
};

BlackHoleListener::BlackHoleListener() : state_(std::make_unique<State>()) {
  State& st = *state_;
  st.listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (st.listen_fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(st.listen_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(st.listen_fd, 128) != 0 ||
      ::getsockname(st.listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 || ::pipe2(st.wake, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(st.listen_fd);
    throw std::runtime_error(std::string("black hole listener: ") + std::strerror(err));
  }
  port_ = ntohs(addr.sin_port);
  st.thread = std::thread([&st] {
    for (;;) {
      pollfd fds[2] = {{st.listen_fd, POLLIN, 0}, {st.wake[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[1].revents != 0) return;
      if (fds[0].revents != 0) {
        const int fd = ::accept4(st.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          st.held.push_back(fd);
          st.accepted.fetch_add(1);
        }
      }
    }
  });
}

BlackHoleListener::~BlackHoleListener() {
  State& st = *state_;
  (void)!::write(st.wake[1], "x", 1);
  if (st.thread.joinable()) st.thread.join();
  for (int fd : st.held) ::close(fd);
  ::close(st.listen_fd);
  ::close(st.wake[0]);
  ::close(st.wake[1]);
}

int BlackHoleListener::accepted() const { return state_->accepted.load(); }

// ---------------------------------------------------------------------------------------------

std::string tail_lines(const std::string& text, std::size_t lines) {
  std::size_t pos = text.size();
  for (std::size_t i = 0; i <= lines && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string with_server_host(std::string toml, const std::string& host) {
  const std::string by_address = "host = \"{pg_host}\"";
  int renamed = 0;
  for (std::size_t at; (at = toml.find(by_address)) != std::string::npos; ++renamed) {
    toml.replace(at, by_address.size(), "host = \"" + host + "\"");
  }
  if (renamed == 0) throw std::logic_error("the config names no server by {pg_host}");
  return toml;
}

void expect_clean_pgbench_run(const ProcessResult& r) {
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto processed = parse_number(r.output, R"(number of transactions actually processed: (\d+))");
  const auto failed = parse_number(r.output, R"(number of failed transactions: (\d+))");
  ASSERT_TRUE(processed.has_value()) << "no 'transactions actually processed' line:\n" << r.output;
  ASSERT_TRUE(failed.has_value()) << "no 'number of failed transactions' line:\n" << r.output;
  EXPECT_GT(*processed, 0);
  EXPECT_EQ(*failed, 0) << r.output;
  EXPECT_EQ(r.output.find("aborted"), std::string::npos) << r.output;
}

std::optional<long long> parse_number(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (std::regex_search(text, m, std::regex(pattern))) return std::stoll(m[1].str());
  return std::nullopt;
}

std::string sqlstate_of(const PGresult* r) {
  const char* s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

std::string describe_result(PGconn* c, const PGresult* r) {
  std::string out = r ? PQresStatus(PQresultStatus(r)) : "no result";
  const std::string state = sqlstate_of(r);
  if (!state.empty()) out += " [" + state + "]";
  const char* msg = r ? PQresultErrorMessage(r) : nullptr;
  if (msg && *msg) {
    out += std::string(": ") + msg;
  } else if (c && PQerrorMessage(c) && *PQerrorMessage(c)) {
    out += std::string(": ") + PQerrorMessage(c);
  }
  return out;
}

}  // namespace sluice::test
