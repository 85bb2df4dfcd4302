#include "proxy/server.h"

#include <boost/asio/signal_set.hpp>
#include <stdexcept>
#include <thread>

#include "pool/log.h"
#include "proxy/client_session.h"
#include "proxy/console_data.h"

#include <sys/socket.h>

namespace sluice::proxy {
namespace {
const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("proxy");
  return logger;
}
}  // namespace

namespace {
int worker_count(const config::Config& config) {
  int workers = config.workers > 0 ? config.workers : static_cast<int>(std::thread::hardware_concurrency());
  return workers > 0 ? workers : 1;
}
}  // namespace

// With one worker the io_context is told so, and takes no locks at all: that
// thread is the only one that ever touches it. (Nothing else posts to it: server
// host names are looked up by pool::resolve_host, not by Asio's resolver, whose
// thread would complete through the scheduler's lock. Pools skip their locks too.)
Server::Server(std::shared_ptr<const config::Config> config)
    : config_(config),
      workers_(worker_count(*config)),
      io_(workers_ == 1 ? BOOST_ASIO_CONCURRENCY_HINT_UNSAFE : BOOST_ASIO_CONCURRENCY_HINT_DEFAULT),
      control_(asio::make_strand(io_)),
      signals_(control_, SIGINT, SIGTERM),
      hangups_(control_, SIGHUP),
      stats_timer_(control_),
      shutdown_timer_(control_),
      context_(config),
      janitor_(asio::make_strand(io_), context_.pools(), config->timeouts.server_connect) {
  context_.pools().set_single_threaded(workers_ == 1);
  context_.on_last_session_gone([this] { finish_if_drained(); });
  context_.reload = [this] { return reload(); };
  context_.shutdown = [this] { stop(); };
  if (!config->slow_query.log.empty()) {
    SlowLogOptions options;
    options.path = config->slow_query.log;
    options.max_size = config->slow_query.max_size;
    options.keep = config->slow_query.keep;
    options.on_error = [](const std::string& message) { log()->warn("slow-query log: {}", message); };
    auto opened = SlowLog::open(std::move(options));
    if (!opened.log) throw std::runtime_error(opened.error);
    log()->info("slow-query log {}", opened.log->path());
    context_.set_slow_log(std::move(opened.log));
  }
}

void Server::bind() {
  for (const auto& listen : config_->listen) {
    error_code ec;
    auto address = asio::ip::make_address(listen.host, ec);
    if (ec) throw std::runtime_error("invalid listen address " + listen.host + ": " + ec.message());
    tcp::endpoint endpoint(address, listen.port);
    auto acceptor = std::make_unique<tcp::acceptor>(io_);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && config_->so_reuseport) {
      // A new Sluice can listen on the same port while this one drains.
      const int on = 1;
      if (::setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
        ec = error_code(errno, boost::system::system_category());
      }
    }
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw std::runtime_error("could not listen on " + listen.host + ":" + std::to_string(listen.port) + ": " +
                               ec.message());
    }
    log()->info("listening on {}:{}", listen.host, listen.port);
    acceptors_.push_back(std::move(acceptor));
  }
  if (!config_->metrics_listen.empty()) {
    const auto& address = config_->metrics_listen;
    const auto colon = address.rfind(':');
    std::string host = address.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    const auto port = static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)));
    MetricsServer::Handlers handlers;
    handlers.snapshot = [this] { return metrics_snapshot(context_); };
    handlers.not_ready_reason = [this]() -> std::string {
      if (context_.shutting_down()) return "shutting down";
      // Ready when some backend host answers: one that is not marked down. A host
      // no connection has tried yet counts as reachable until one fails.
      const auto hosts = context_.pools().hosts().all();
      if (hosts.empty()) return {};
      for (const auto& host : hosts)
        if (!host->down()) return {};
      std::string reason = "no backend host reachable:";
      for (const auto& host : hosts) reason += " " + host->address() + " (" + host->status().last_failure + ")";
      return reason;
    };
    metrics_ = std::make_unique<MetricsServer>(io_, host, port, std::move(handlers));
    log()->info("metrics on http://{}/metrics", address);
  }
}

awaitable<void> Server::accept_loop(tcp::acceptor& acceptor) {
  for (;;) {
    // With one worker thread every session already runs serially: no strand needed.
    asio::any_io_executor executor = io_.get_executor();
    if (!single_threaded_) executor = asio::make_strand(io_);
    auto [ec, socket] = co_await acceptor.async_accept(executor, use_nothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      // Out of file descriptors and the like: log, back off briefly, keep serving.
      log()->warn("accept failed: {}", ec.message());
      asio::steady_timer pause(io_, std::chrono::milliseconds(50));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    start_session(std::move(socket));
  }
}

void Server::start_session(tcp::socket socket) {
  static std::atomic<std::uint64_t> next_client_id{0};
  const auto id = ++next_client_id;
  auto session = std::make_shared<ClientSession>(std::move(socket), context_, id);
  context_.track(id, session);
  // The handler owns the session until run() ends; a parked session is then owned by its wait.
  asio::co_spawn(session->executor(), session->run(), [id, session](std::exception_ptr error) {
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        log()->error("[c{}] session ended with an exception: {}", id, e.what());
      }
    }
  });
}

void Server::shutdown() {
  if (context_.shutting_down()) return;
  const auto limit = config_->shutdown_timeout;
  log()->info("shutting down: listeners closed; {} client connection(s) close as their transactions end "
              "(shutdown_timeout {} ms)",
              context_.client_count(), limit.count());
  context_.begin_shutdown();
  janitor_.stop();
  stats_timer_.cancel();
  error_code ignored;
  hangups_.cancel(ignored);
  for (auto& acceptor : acceptors_) {
    // Connections the kernel already completed would be reset by the close: take
    // them first (during a so_reuseport restart they are clients like any other).
    error_code ec;
    acceptor->non_blocking(true, ec);
    for (int taken = 0; !ec && taken < 10000; ++taken) {
      asio::any_io_executor executor = io_.get_executor();
      if (!single_threaded_) executor = asio::make_strand(io_);
      tcp::socket socket(executor);
      acceptor->accept(socket, ec);
      if (!ec) start_session(std::move(socket));
    }
    acceptor->close(ec);
  }
  // Pools keep serving the clients that finish their transactions; idle server
  // connections are closed once the last client has gone.
  for (auto& session : context_.sessions()) session->request_graceful_close();
  if (limit.count() > 0) {
    shutdown_timer_.expires_after(limit);
    shutdown_timer_.async_wait([this, limit](error_code ec) {
      if (ec) return;
      log()->warn("shutdown_timeout ({} ms) reached: closing {} remaining client connection(s)", limit.count(),
                  context_.live_sessions());
      context_.close_all_sessions();
    });
  } else {
    context_.close_all_sessions();
  }
  finish_if_drained();
}

std::string Server::reload() {
  const std::string path = context_.config().source_file;
  auto loaded = config::load_file(path);
  if (!loaded.config) {
    std::string errors;
    for (const auto& error : loaded.errors) {
      log()->error("reload: {}", error.to_string());
      if (!errors.empty()) errors += '\n';
      errors += error.to_string();
    }
    log()->error("reload: {} rejected; the running configuration stays", path);
    return errors;
  }
  auto fresh = std::make_shared<const config::Config>(std::move(*loaded.config));
  const auto& old = context_.config();
  auto warn_restart = [](const char* key) {
    log()->warn("reload: {} changed; it takes effect after a restart", key);
  };
  if (fresh->listen.size() != old.listen.size() ||
      !std::equal(fresh->listen.begin(), fresh->listen.end(), old.listen.begin(),
                  [](const auto& a, const auto& b) { return a.host == b.host && a.port == b.port; })) {
    warn_restart("sluice.listen");
  }
  if (fresh->workers != old.workers) warn_restart("sluice.workers");
  if (fresh->metrics_listen != old.metrics_listen) warn_restart("sluice.metrics_listen");
  if (fresh->so_reuseport != old.so_reuseport) warn_restart("sluice.so_reuseport");
  if (fresh->slow_query.log != old.slow_query.log) warn_restart("slow_query.log");
  context_.replace_config(fresh);
  spdlog::set_level(spdlog::level::from_str(fresh->log_level));
  // Existing pools take the new sizes, timeouts and servers; pools of a database
  // or user that is gone keep serving the clients they have.
  int updated = 0;
  for (const auto& pool : context_.pools().all()) {
    const auto* db = fresh->find_database(pool->database());
    const auto* user = fresh->find_user(pool->user());
    if (db == nullptr || user == nullptr) continue;
    std::vector<std::shared_ptr<pool::Host>> hosts;
    for (const auto& host : db->hosts) hosts.push_back(context_.pools().hosts().get(host.host, host.port));
    pool->reconfigure(pool_snapshot(*fresh, *db, *user), std::move(hosts));
    ++updated;
  }
  log()->info("reload: {} in force ({} pool(s) updated)", path, updated);
  return {};
}

void Server::wait_for_sighup() {
  hangups_.async_wait([this](error_code ec, int) {
    if (ec) return;
    log()->info("received SIGHUP: reloading the configuration");
    reload();
    wait_for_sighup();
  });
}

awaitable<void> Server::sample_stats() {
  // SHOW STATS averages are over this period (PgBouncer's stats_period is 60s).
  constexpr auto kStatsPeriod = std::chrono::seconds(15);
  for (;;) {
    Context::StatsSample sample;
    sample.at = std::chrono::steady_clock::now();
    for (const auto& totals : database_totals(context_)) {
      sample.totals[totals.database] = {totals.xact_count,   totals.query_count,   totals.received, totals.sent,
                                        totals.xact_time_us, totals.query_time_us, totals.wait_time_us};
    }
    context_.record_stats_sample(std::move(sample));
    stats_timer_.expires_after(kStatsPeriod);
    auto [ec] = co_await stats_timer_.async_wait(use_nothrow);
    if (ec || context_.shutting_down()) co_return;
  }
}

void Server::stop() {
  asio::post(control_, [this] { shutdown(); });
}

int Server::run() {
  // Signal handling, shutdown and the final cancel all run on control_, so the
  // signal_set is never touched from two threads at once.
  signals_.async_wait([this](error_code ec, int signo) {
    if (ec) return;
    log()->info("received signal {}", signo);
    // A second signal while sessions are still closing: exit at once.
    signals_.async_wait([](error_code ec2, int signo2) {
      if (ec2) return;
      log()->warn("received signal {} again; exiting without waiting for clients", signo2);
      std::_Exit(0);
    });
    shutdown();
  });
  const int workers = workers_;
  single_threaded_ = workers == 1;
  for (auto& acceptor : acceptors_) {
    // On control_ as well: shutdown closes the acceptors from there.
    asio::co_spawn(control_, accept_loop(*acceptor), [](std::exception_ptr error) {
      if (error) std::rethrow_exception(error);
    });
  }
  janitor_.start();
  wait_for_sighup();
  asio::co_spawn(control_, sample_stats(), asio::detached);
  if (metrics_) metrics_->start();
  log()->info("running with {} worker thread(s)", workers);
  if (single_threaded_) context_.take_unlocked_stats_shard();
  std::vector<std::thread> threads;
  for (int i = 1; i < workers; ++i) threads.emplace_back([this] { io_.run(); });
  io_.run();
  for (auto& t : threads) t.join();
  log()->info("stopped");
  return 0;
}

void Server::finish_if_drained() {
  if (!context_.shutting_down() || context_.live_sessions() > 0) return;
  asio::post(control_, [this] {
    if (finished_) return;
    finished_ = true;
    for (auto& pool : context_.pools().all()) pool->close();
    error_code ec;
    shutdown_timer_.cancel();
    if (metrics_) metrics_->stop();
    signals_.cancel(ec);  // the last thing keeping io_.run() busy
  });
}

}  // namespace sluice::proxy
