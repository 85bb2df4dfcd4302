#pragma once
// The janitor: periodic pool upkeep off the relay path. Every tick it closes idle
// server connections past server_idle / server_lifetime, opens connections up to
// min_size, and checks hosts that are down (with backoff) so they are used again
// as soon as they answer.
#include <chrono>
#include <memory>

#include "pool/pool.h"

namespace sluice::pool {

class Janitor {
 public:
  static constexpr std::chrono::milliseconds kTick{100};

  Janitor(asio::any_io_executor executor, PoolRegistry& pools, std::chrono::milliseconds connect_timeout);
  // Starts the loop on the janitor's executor.
  void start();
  // Ends the loop (thread-safe, except with workers = 1: then from the io thread
  // only); checks in flight end by their own timeout.
  void stop();

 private:
  awaitable<void> loop();
  void tick();
  awaitable<void> check_host(std::shared_ptr<Host> host, ServerTarget target, StartupParams params);

  asio::any_io_executor executor_;
  PoolRegistry& pools_;
  const std::chrono::milliseconds connect_timeout_;
  asio::steady_timer timer_;
  bool stopped_ = false;  // on executor_ only
};

}  // namespace sluice::pool
