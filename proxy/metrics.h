#pragma once
// Prometheus metrics and health endpoints. Two parts:
//  - render_prometheus: a MetricsSnapshot (plain values gathered by the caller,
//    off the relay path) in the Prometheus text exposition format 0.0.4; pure code.
//  - MetricsServer: HTTP/1.1 with Boost.Beast on `metrics_listen`, serving
//    GET /metrics, /healthz (the process is alive: always 200 "ok") and /readyz
//    (200 "ready" when the handler says so, else 503 with the reason); anything
//    else 404, other methods 405. One coroutine per HTTP connection, keep-alive,
//    bounded request size and an idle timeout, so a scraper cannot pin memory.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pool/asio.h"

namespace sluice::proxy {

// One (database, user) pool.
struct PoolMetrics {
  std::string database;
  std::string user;
  std::string mode;            // session | transaction | statement
  int clients_active = 0;      // logged in and not waiting for a server connection
  int clients_waiting = 0;     // waiting for a server connection
  int servers_active = 0;      // lent to a client
  int servers_idle = 0;        // in the pool
  int servers_connecting = 0;  // being opened
  double max_wait_seconds = 0;  // the longest wait of a client waiting now
  // Counters since start (monotonic).
  std::uint64_t transactions = 0;  // ReadyForQuery 'I' relayed (as PgBouncer counts them)
  std::uint64_t queries = 0;       // simple Query messages and Executes
  std::uint64_t bytes_received = 0;  // from clients
  std::uint64_t bytes_sent = 0;      // to clients
  double transaction_seconds = 0;  // time inside transactions
  double query_seconds = 0;        // time inside statements
  double wait_seconds = 0;         // time clients waited for a server connection
  std::uint64_t server_connections_opened = 0;
  std::uint64_t server_connect_failures = 0;
  // ErrorResponses relayed to clients, by SQLSTATE class (the first two characters, e.g. "57").
  std::vector<std::pair<std::string, std::uint64_t>> errors_by_class;
};

// One PostgreSQL server address.
struct HostMetrics {
  std::string address;  // "host:port"
  bool up = true;
  int consecutive_failures = 0;
  std::uint64_t times_down = 0;  // how often it was marked down since start
};

struct MetricsSnapshot {
  std::string version;  // e.g. "0.1.0"
  double uptime_seconds = 0;
  int clients = 0;          // client connections open (all states, console included)
  int max_clients = 0;      // max_client_conn
  std::uint64_t clients_refused = 0;  // turned away by max_client_conn (53300) since start
  std::vector<PoolMetrics> pools;
  std::vector<HostMetrics> hosts;
};

// The whole /metrics body. Metric names start with "sluice_"; counters end in
// "_total"; times are in seconds; every family has # HELP and # TYPE lines; label
// values are escaped (\\, \", \n) as the format requires. Must pass
// `promtool check metrics`.
std::string render_prometheus(const MetricsSnapshot& snapshot);

class MetricsServer {
 public:
  struct Handlers {
    std::function<MetricsSnapshot()> snapshot;  // called for each GET /metrics
    // /readyz: empty string = ready; otherwise the reason it is not (503 body).
    std::function<std::string()> not_ready_reason;
  };
  // Throws std::runtime_error naming the address when it cannot listen.
  MetricsServer(asio::io_context& io, const std::string& host, std::uint16_t port, Handlers handlers);
  ~MetricsServer();
  void start();
  // Closes the listener and every open HTTP connection. Thread-safe, except with
  // workers = 1 (an io_context without locks): then only from the io thread.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace sluice::proxy
