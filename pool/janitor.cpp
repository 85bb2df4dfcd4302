#include "pool/janitor.h"

#include "pool/log.h"

namespace sluice::pool {
namespace {
const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("pool");
  return logger;
}

void log_exception(std::exception_ptr error) {
  if (!error) return;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    log()->error("janitor task ended with an exception: {}", e.what());
  }
}
}  // namespace

Janitor::Janitor(asio::any_io_executor executor, PoolRegistry& pools, std::chrono::milliseconds connect_timeout)
    : executor_(executor),
      pools_(pools),
      // A check must end even when server_connect is off: a host that swallows
      // packets would otherwise hold its check (and the host's recovery) for ever.
      connect_timeout_(connect_timeout.count() > 0 ? connect_timeout : std::chrono::milliseconds(5000)),
      timer_(executor) {}

void Janitor::start() { asio::co_spawn(executor_, loop(), log_exception); }

void Janitor::stop() {
  asio::post(executor_, [this] {
    stopped_ = true;
    timer_.cancel();
  });
}

awaitable<void> Janitor::loop() {
  while (!stopped_) {
    tick();
    timer_.expires_after(kTick);
    co_await timer_.async_wait(use_nothrow);
  }
}

void Janitor::tick() {
  const auto now = Clock::now();
  for (auto& pool : pools_.all()) {
    pool->expire_idle(now);
    if (pool->wants_top_up()) asio::co_spawn(executor_, pool->top_up(), log_exception);
  }
  for (auto& host : pools_.hosts().all()) {
    ServerTarget target;
    StartupParams params;
    if (host->claim_check(now, target, params)) {
      asio::co_spawn(executor_, check_host(host, std::move(target), std::move(params)), log_exception);
    }
  }
}

awaitable<void> Janitor::check_host(std::shared_ptr<Host> host, ServerTarget target, StartupParams params) {
  // A full login, as a client's would be: a server that accepts TCP but cannot
  // serve (starting up, out of connections for this role) is not up yet.
  target.host = host->host();
  target.port = host->port();
  auto result = co_await connect_server(target, params, connect_timeout_, next_server_id());
  if (auto* conn = std::get_if<std::unique_ptr<ServerConnection>>(&result)) {
    (*conn)->close();
    host->check_done(true, {});
    co_return;
  }
  const auto& failure = std::get<ConnectFailure>(result);
  if (!is_host_failure(failure)) {
    // The host answered (this role or database is refused): it is up.
    host->check_done(true, {});
    co_return;
  }
  host->check_done(false, failure.reason);
}

}  // namespace sluice::pool
