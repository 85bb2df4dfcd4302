#pragma once
// The Sluice process: listeners that accept clients and spawn one session
// coroutine per connection, worker threads, and signal-driven shutdown.
#include <memory>
#include <vector>

#include <boost/asio/signal_set.hpp>

#include "pool/asio.h"
#include "pool/janitor.h"
#include "proxy/metrics.h"
#include "proxy/context.h"

namespace sluice::proxy {

class Server {
 public:
  explicit Server(std::shared_ptr<const config::Config> config);
  // Binds every listen address; throws std::runtime_error naming the address on failure.
  void bind();
  // Runs until SIGINT/SIGTERM (or stop()); returns the process exit status.
  int run();
  // Thread-safe, except with workers = 1 (an io_context without locks): then
  // only from the io thread (the console's SHUTDOWN).
  void stop();

 private:
  awaitable<void> accept_loop(tcp::acceptor& acceptor);
  void start_session(tcp::socket socket);
  void shutdown();
  // SIGHUP / RELOAD: reads the file again; "" when the new configuration is in
  // force, else its errors (the running configuration stays).
  std::string reload();
  void wait_for_sighup();
  awaitable<void> sample_stats();
  // Once shutting down and the last session has ended, lets io_.run() return.
  void finish_if_drained();

  std::shared_ptr<const config::Config> config_;
  int workers_;
  asio::io_context io_;
  asio::strand<asio::io_context::executor_type> control_;
  asio::signal_set signals_;
  asio::signal_set hangups_;
  asio::steady_timer stats_timer_;
  asio::steady_timer shutdown_timer_;
  std::unique_ptr<MetricsServer> metrics_;
  bool finished_ = false;
  bool single_threaded_ = false;
  Context context_;
  pool::Janitor janitor_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
};

}  // namespace sluice::proxy
