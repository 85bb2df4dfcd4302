#include "proxy/server.h"

#include <boost/asio/signal_set.hpp>
#include <stdexcept>
#include <thread>

#include "pool/log.h"
#include "proxy/client_session.h"

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

// With one worker the io_context is told so: one thread, and no locking of
// per-socket reactor state (only that thread ever touches it).
Server::Server(std::shared_ptr<const config::Config> config)
    : config_(config),
      workers_(worker_count(*config)),
      io_(workers_ == 1 ? BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO : BOOST_ASIO_CONCURRENCY_HINT_DEFAULT),
      control_(asio::make_strand(io_)),
      signals_(control_, SIGINT, SIGTERM),
      context_(config),
      janitor_(asio::make_strand(io_), context_.pools(), config->timeouts.server_connect) {
  context_.on_last_session_gone([this] { finish_if_drained(); });
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
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw std::runtime_error("could not listen on " + listen.host + ":" + std::to_string(listen.port) + ": " +
                               ec.message());
    }
    log()->info("listening on {}:{}", listen.host, listen.port);
    acceptors_.push_back(std::move(acceptor));
  }
}

awaitable<void> Server::accept_loop(tcp::acceptor& acceptor) {
  static std::atomic<std::uint64_t> next_client_id{0};
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
}

void Server::shutdown() {
  if (context_.shutting_down()) return;
  log()->info("shutting down: closing listeners and {} client connection(s)", context_.client_count());
  context_.begin_shutdown();
  janitor_.stop();
  for (auto& acceptor : acceptors_) {
    error_code ec;
    acceptor->close(ec);
  }
  for (auto& pool : context_.pools().all()) pool->close();
  context_.close_all_sessions();
  finish_if_drained();
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
  log()->info("running with {} worker thread(s)", workers);
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
    for (auto& pool : context_.pools().all()) pool->close_idle();
    error_code ec;
    signals_.cancel(ec);  // the last thing keeping io_.run() busy
  });
}

}  // namespace sluice::proxy
