#pragma once
// Client-side helpers shared by the fault-injection and operations tests: bounded
// logins and queries through libpq, raw sockets, small text helpers.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/harness.h"

namespace sluice::test {

using namespace std::chrono_literals;

struct Probe {
  bool ok = false;
  std::string value;  // first column of the first row
  std::string error;  // verbose libpq message(s) when !ok
  double seconds = 0;
};

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Adds `lines` at the top of the table `header` (e.g. "[pool]", "[users.app]"), which must exist.
inline std::string add_to(std::string toml, const std::string& header, const std::string& lines) {
  const auto at = toml.find(header + "\n");
  if (at == std::string::npos) throw std::logic_error("no " + header + " in the config");
  toml.insert(at + header.size() + 1, lines + "\n");
  return toml;
}

// Why `conn` is not logged in: libpq's message, or that the login was still in progress when the
// caller's bound ran out (Sluice never answered).
inline std::string login_error(PGconn* conn) {
  if (PQstatus(conn) == CONNECTION_BAD) {
    const std::string message = PQerrorMessage(conn);
    return message.empty() ? "login failed without a message" : message;
  }
  return "login still in progress when the test's bound ran out (Sluice never finished it)";
}

// Waits (bounded) until a query sent with PQsendQuery has its result buffered, or the connection broke.
inline bool await_not_busy(PGconn* conn, std::chrono::milliseconds limit = 60s) {
  return wait_for(
      [&] {
        if (PQconsumeInput(conn) == 0) return true;
        return PQisBusy(conn) == 0;
      },
      limit);
}

// A new client: logs in and runs `sql` (in transaction mode the login may succeed without a
// server, so a refusal can come at the query). The login and the query are each bounded by `limit`.
inline Probe probe(const std::string& conninfo, const std::string& sql = "SELECT 1", std::chrono::milliseconds limit = 60s) {
  const auto start = std::chrono::steady_clock::now();
  Probe p;
  PgConn conn = connect_verbose(conninfo, limit);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    p.error = login_error(conn.get());
  } else if (PQsendQuery(conn.get(), sql.c_str()) != 1) {
    p.error = PQerrorMessage(conn.get());
  } else if (!await_not_busy(conn.get(), limit)) {
    p.error = "no answer to `" + sql + "` within " + std::to_string(limit.count()) + " ms";
  } else {
    PgResult r(PQgetResult(conn.get()));
    if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) > 0) {
      p.ok = true;
      p.value = PQgetvalue(r.get(), 0, 0);
    } else {
      p.error = std::string(PQresultErrorMessage(r.get())) + " | " + PQerrorMessage(conn.get());
    }
    if (p.ok) {
      while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
    }
  }
  p.seconds = seconds_since(start);
  return p;
}

// Runs `sql` on `conn` and returns the first value, or "<error: ...>".
inline std::string value_of(PGconn* conn, const std::string& sql) {
  PgResult r(PQexec(conn, sql.c_str()));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) < 1) {
    return "<error: " + describe_result(conn, r.get()) + ">";
  }
  return PQgetvalue(r.get(), 0, 0);
}

// Collects what arrives while libpq is idle (a FATAL sent before a close goes to the notice processor).
inline void collect_notices(PGconn* conn, std::string* into) {
  PQsetNoticeProcessor(
      conn, [](void* out, const char* message) { static_cast<std::string*>(out)->append(message); }, into);
}

// Waits (bounded) until Sluice has closed an idle connection: reads what it sent, sees the EOF.
inline bool await_closed(PGconn* conn, std::chrono::milliseconds limit = 30s) {
  return wait_for(
      [&] {
        PQconsumeInput(conn);
        PQisBusy(conn);  // parses what arrived (the FATAL) before the close is noticed
        return PQstatus(conn) == CONNECTION_BAD;
      },
      limit);
}

// Raw TCP connection to 127.0.0.1:port; -1 on failure.
inline int raw_connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline std::string join(const std::vector<int>& values) {
  std::string out;
  for (int v : values) out += (out.empty() ? "" : ",") + std::to_string(v);
  return out;
}

// Fails the test and runs `on_expiry` (kill Sluice, terminate backends, ...) when
// the test is still running after `limit`, so that a client blocked on a missing
// behaviour fails one test instead of hanging the binary.
class Watchdog {
 public:
  Watchdog(std::chrono::seconds limit, std::function<void()> on_expiry)
      : thread_([this, limit, on_expiry = std::move(on_expiry)] {
          std::unique_lock lock(mutex_);
          if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
          ADD_FAILURE() << "watchdog: test still running after " << limit.count() << " s";
          on_expiry();
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace sluice::test
