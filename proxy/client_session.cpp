#include "proxy/client_session.h"

#include "proxy/console_data.h"

#include <openssl/crypto.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <cctype>
#include <charconv>
#include <cstring>

#include "pool/log.h"
#include "protocol/auth.h"
#include "proxy/admin_console.h"
#include "proxy/fingerprint.h"
#include "proxy/wall_clock.h"

namespace sluice::proxy {
namespace {

const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("proxy");
  return logger;
}

constexpr std::size_t kInitialRelayBuffer = 8 * 1024;
constexpr std::size_t kMaxRelayBuffer = 128 * 1024;
// Bound on returning a server connection to the pool after its client left
// (cancel, drain, rollback, reset); past it the connection is closed instead.
constexpr auto kCleanupTimeout = std::chrono::seconds(30);

bool equals_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view as_text(protocol::Bytes bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Grows a relay buffer when a read filled it: bulk transfers get bigger reads,
// idle sessions keep small buffers.
void maybe_grow(protocol::ByteBuffer& buffer, std::size_t bytes_read) {
  if (bytes_read == buffer.size() && buffer.size() < kMaxRelayBuffer) buffer.resize(buffer.size() * 2);
}

// The first byte of a TLS handshake record (direct TLS, PostgreSQL 17).
constexpr std::uint8_t kTlsHandshakeRecord = 0x16;

// What a waking TLS client's first read takes (a plain client's is peeked at only).
constexpr std::size_t kParkedTlsRead = 512;

// A write that the relay's cancellation must not cut short: a half-written
// message would leave the peer's byte stream unusable.
auto uncancellable() { return asio::bind_cancellation_slot(asio::cancellation_slot(), use_nothrow); }

// Asked as is_cancelled(co_await kCancellationState): awaiting that never
// suspends and needs no coroutine frame, which a helper coroutine did (twice
// per round trip).
constexpr asio::this_coro::cancellation_state_t kCancellationState{};
bool is_cancelled(const asio::cancellation_state& state) { return state.cancelled() != asio::cancellation_type::none; }

// A SQL string literal that means `value` whatever standard_conforming_strings is.
std::string quote_literal(std::string_view value) {
  std::string out = "E'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out.push_back(c);
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

// Reads the server's answer to a request Sluice sent on its own (not relayed):
// parameter changes are applied to the connection, the first error is kept.
struct ExchangeObserver {
  pool::ServerConnection& server;
  bool ready = false;
  std::string error_sqlstate;
  std::string error_message;
  bool inspect(char type) { return type == 'Z' || type == 'E' || type == 'S'; }
  protocol::ScanAction on_message(char type, protocol::Bytes body) {
    if (type == 'Z') {
      ready = true;
    } else if (type == 'S') {
      if (auto status = protocol::parse_parameter_status(body)) server.set_parameter(status->name, status->value);
    } else if (type == 'E' && error_sqlstate.empty()) {
      auto fields = protocol::parse_error_fields(body);
      error_sqlstate = fields ? std::string(fields->sqlstate) : "XX000";
      error_message = fields ? std::string(fields->message) : "error";
    }
    return protocol::ScanAction::next;
  }
};

}  // namespace

// What the relay learns from ParameterStatus: the connection's values, and what
// the client has been told.
struct ClientSession::ParameterSink {
  pool::ServerConnection* server;
  ClientSession* session;
  void set_parameter(std::string_view name, std::string_view value) {
    server->set_parameter(name, value);
    session->client_parameter_changed(name, value);
  }
};

ClientSession::ClientSession(tcp::socket socket, Context& context, std::uint64_t id)
    : client_(std::move(socket)),
      context_(context),
      id_(id),
      max_message_size_(context.config().max_message_size) {
  error_code ec;
  auto endpoint = client_.socket().remote_endpoint(ec);
  peer_ = ec ? "unknown" : endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  client_tls_ = &context.config().tls_client;
  client_.socket().set_option(tcp::no_delay(true), ec);
  // A client that vanishes (or half-closes and stays) is found by TCP keepalive
  // with the system's timing, as PgBouncer's tcp_keepalive default does.
  client_.socket().set_option(asio::socket_base::keep_alive(true), ec);
  // write_client and the relay send without blocking the thread; set here, it is
  // also the one FIONBIO ioctl Asio's first read would have made.
  client_.socket().non_blocking(true, ec);
}

std::string ClientSession::peer_address() const {
  // peer_ is "<address>:<port>" (IPv6 too, without brackets) or "unknown".
  const auto colon = peer_.rfind(':');
  return colon == std::string::npos ? std::string() : peer_.substr(0, colon);
}

ClientSession::~ClientSession() {
  context_.untrack(id_);
  if (key_registered_) context_.cancels().remove(client_key_.pid);
  if (counted_) context_.remove_client();
  if (counted_in_pool_) pool_->counters().clients.fetch_sub(1, std::memory_order_relaxed);
}

void ClientSession::request_close(bool tell_client) {
  asio::post(client_.get_executor(), [self = shared_from_this(), tell_client] {
    if (tell_client && self->client_.is_open() && self->logged_in_ && !self->client_write_busy_ &&
        self->client_stream_at_boundary()) {
      std::string out;
      protocol::append_error_response(out, {"FATAL", "57P01", "terminating connection due to administrator command"});
      self->client_.send_last_words(out);
    }
    error_code ec;
    self->client_.close();
    if (self->server_) self->server_->socket().close(ec);
  });
}

void ClientSession::close_client() {
  error_code ec;
  client_.socket().shutdown(tcp::socket::shutdown_both, ec);
  client_.close();
}

awaitable<bool> ClientSession::write_client(std::string_view bytes) {
  // What fits the socket's send buffer (nearly always all of it) goes out now. An
  // async_write that could complete at once would still post its completion, and
  // Asio polls the reactor before running it: an epoll_wait per login message.
  std::size_t sent = 0;
  if (!client_.is_tls() && client_.socket().non_blocking()) {
    const auto now = client_.send_now(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    if (!now) co_return false;
    sent = *now;
    if (sent == bytes.size()) co_return true;
  }
  // Marked busy like the relay's writes: a FATAL from request_close must not land
  // inside the part still going out.
  client_write_busy_ = true;
  auto [ec, n] =
      co_await asio::async_write(client_, asio::buffer(bytes.data() + sent, bytes.size() - sent), use_nothrow);
  client_write_busy_ = false;
  co_return !ec;
}

awaitable<bool> ClientSession::write_server(std::string_view bytes) {
  auto [ec, n] = co_await asio::async_write(server_->stream(), asio::buffer(bytes.data(), bytes.size()), use_nothrow);
  co_return !ec;
}

awaitable<void> ClientSession::send_fatal(std::string_view sqlstate, std::string_view message, std::string_view detail) {
  log()->info("[c{}] closing {}: {} ({})", id_, peer_, message, sqlstate);
  std::string out;
  protocol::append_error_response(out, {"FATAL", sqlstate, message, detail});
  co_await write_client(out);
  close_client();
}

awaitable<void> ClientSession::run() {
  co_await serve();
  login_timer_.reset();  // destroying a timer cancels its wait
}

awaitable<void> ClientSession::serve() {
  log()->info("[c{}] connection from {}", id_, peer_);
  const auto login_timeout = context_.config().timeouts.client_login;
  if (login_timeout.count() > 0) {
    login_timer_ = std::make_unique<asio::steady_timer>(client_.get_executor(), login_timeout);
    // A weak reference: a session that ended early must not be kept alive (nor keep
    // io_context::run busy at shutdown) by its login timer.
    login_timer_->async_wait([weak = weak_from_this()](error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;  // cancelled: login finished (or the session ended) in time
      log()->info("[c{}] closing {}: login not completed within client_login ({} ms)", self->id_, self->peer_,
                  self->context_.config().timeouts.client_login.count());
      self->close_client();
    });
  }

  if (!co_await read_startup()) co_return;
  if (!co_await check_access()) co_return;
  if (!co_await authenticate()) co_return;
  login_timer_.reset();
  if (console_) {
    co_await serve_console();
    co_return;
  }
  if (!co_await finish_login()) co_return;
  login_buffer_.release_if_empty();
  if (!server_ && login_buffer_.empty()) {
    park();
    co_return;
  }
  co_await resume({});
}

awaitable<bool> ClientSession::attach_timed() {
  const auto started = std::chrono::steady_clock::now();
  const bool attached = co_await attach_server();
  record_attach_wait(started, std::chrono::steady_clock::now());
  co_return attached;
}

void ClientSession::record_attach_wait(std::chrono::steady_clock::time_point started,
                                       std::chrono::steady_clock::time_point now) {
  const auto waited = now - started;
  const auto waited_us = std::chrono::duration_cast<std::chrono::microseconds>(waited).count();
  if (waited_us > 0) pool_->counters().wait_us.fetch_add(static_cast<std::uint64_t>(waited_us), std::memory_order_relaxed);
  if (recording_) {
    timing().attach_started = started;
    timing().attach_wait = waited;
  }
}

void ClientSession::start_waiting(std::chrono::steady_clock::time_point now) {
  waiting_for_server_ = true;
  wait_started_ = now;
  pool_->counters().waiting.fetch_add(1, std::memory_order_relaxed);
}

void ClientSession::stop_waiting() {
  pool_->counters().waiting.fetch_sub(1, std::memory_order_relaxed);
  waiting_for_server_ = false;
}

void ClientSession::wake_parked(std::shared_ptr<ClientSession> self, error_code ec) {
  try {
    if (self->exchange_without_coroutine(ec)) return;
  } catch (const std::exception& e) {
    // Attaching threw (the chain's own steps catch what they throw): as an
    // exception escaping resume() would, this ends the session.
    log()->error("[c{}] session ended with an exception: {}", self->id_, e.what());
    if (self->server_) self->server_.discard();
    self->close_client();
    return;
  }
  spawn(self, self->resume(ec));
}

void ClientSession::spawn(std::shared_ptr<ClientSession> self, awaitable<void> work) {
  // The completion handler owns the session while `work` runs.
  auto executor = self->executor();
  asio::co_spawn(executor, std::move(work), [self = std::move(self)](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      log()->error("[c{}] session ended with an exception: {}", self->id_, e.what());
    }
  });
}

// ---- The lone exchange as a chain of handlers ------------------------------------
// The usual transaction in transaction or statement mode over plain TCP, without a
// coroutine: the client watch has read a whole request (pool::StashBuffer), an idle
// server is there for it, the request goes out at once and the answer comes back
// in reads that each end in a handler. These are the steps of resume()'s lone
// exchange (pump_client_tracked(true), then pump_server_tracked(true)), the same
// member functions in the same order; whatever they cannot finish at once (a
// server to wait for or to settle, a write that would block, a stale plan to
// retry, any end but a release) is handed to the coroutines at that point.

bool ClientSession::lone_request_stashed() const {
  if (!tracking_statements_ || client_.is_tls() || login_buffer_.empty() || !client_.is_open()) return false;
  const auto stashed = login_buffer_.data();
  // Whole requests that await their answers, as pump_client_tracked(true) needs
  // them to send all at once (a Terminate first is resume()'s to see).
  return stashed[0] != 'X' && pool::is_whole_request_awaiting_answer(stashed.data(), stashed.size());
}

bool ClientSession::exchange_without_coroutine(error_code wait_error) {
  if (wait_error || server_ || !lone_request_stashed()) return false;
  disarm_idle_timer();
  switch (attach_now()) {
    case AttachNow::none:
      return wait_without_coroutine();
    case AttachNow::settle:
      spawn(shared_from_this(), [](std::shared_ptr<ClientSession> self) -> awaitable<void> {
        if (!co_await self->settle_parameters()) co_return;
        co_await self->relay(std::nullopt);
      }(shared_from_this()));
      return true;
    case AttachNow::attached:
      break;
  }
  lone_step([&] { send_lone_request(); });
  return true;
}

bool ClientSession::wait_without_coroutine() {
  if (!sent_parameters_) return false;  // logging in: attach_server's whole path
  if (!waiter_) waiter_ = pool_->make_waiter(startup_params_);
  const auto now = std::chrono::steady_clock::now();
  if (!pool_->enqueue(waiter_, shared_from_this(), executor(), id_, now)) return false;
  start_waiting(now);
  return true;
}

void ClientSession::wait_served() {
  asio::post(executor(), [self = shared_from_this()] { self->wait_done(); });
}

void ClientSession::wait_done() {
  try {
    const auto now = std::chrono::steady_clock::now();
    if (auto lease = pool_->take_served(*waiter_, now)) {
      stop_waiting();
      adopt_server(std::move(lease));
      if (parameters_known()) {
        record_attach_wait(wait_started_, now);
        if (lone_request_stashed()) {
          lone_step([&] { send_lone_request(); });
          return;
        }
        spawn(shared_from_this(), exchange_attached());
        return;
      }
      spawn(shared_from_this(), [](std::shared_ptr<ClientSession> self) -> awaitable<void> {
        // Settling is part of the attach's time, as in attach_timed.
        const bool settled = co_await self->settle_parameters();
        self->record_attach_wait(self->wait_started_, std::chrono::steady_clock::now());
        if (settled) co_await self->exchange_attached();
      }(shared_from_this()));
      return;
    }
    // Not simply handed a connection (one to open, check or not to have, a
    // timeout): what acquire() does after its wait, then what attach_timed does.
    spawn(shared_from_this(), [](std::shared_ptr<ClientSession> self) -> awaitable<void> {
      auto acquired = co_await self->pool_->acquire_served(self->waiter_, self->id_);
      self->stop_waiting();
      const bool attached = co_await self->attach_acquired(std::move(acquired));
      self->record_attach_wait(self->wait_started_, std::chrono::steady_clock::now());
      if (attached) co_await self->exchange_attached();
    }(shared_from_this()));
  } catch (const std::exception& e) {
    log()->error("[c{}] session ended with an exception: {}", id_, e.what());
    pool_->abandon_served(*waiter_);
    if (waiting_for_server_) stop_waiting();
    if (server_) server_.discard();
    close_client();
  }
}

awaitable<void> ClientSession::exchange_attached() {
  if (lone_request_stashed()) {
    lone_step([&] { send_lone_request(); });
    co_return;
  }
  co_await relay(std::nullopt);
}

template <class Step>
void ClientSession::lone_step(Step&& step) noexcept {
  try {
    step();
  } catch (const std::exception& e) {
    if (!relay_ || !server_) {
      // Released already (parking, or waking for the next request): nothing to hand over.
      log()->error("[c{}] session ended with an exception: {}", id_, e.what());
      if (server_) server_.discard();
      close_client();
      return;
    }
    try {
      relay_->protocol_error = e.what();
      hand_over(RelayEnd::internal_error);
    } catch (const std::exception&) {
      server_.discard();
      close_client();
    }
  }
}

void ClientSession::hand_over(RelayEnd end) {
  solo_server_read_ = false;
  spawn(shared_from_this(), relay(end));
}

void ClientSession::send_lone_request() {
  auto& relay = *relay_;
  {
    error_code ec;
    if (!server_->socket().non_blocking()) server_->socket().non_blocking(true, ec);
  }
  relay.server_on_session_executor = server_->socket().get_executor() == executor();
  relay.lone_wanted = kInitialRelayBuffer;
  // As pump_client_tracked(true) begins: the kept bytes are the request.
  take_kept_bytes();

  protocol::FrontendObserver observer{relay.state};
  const auto scan = scan_client_bytes(observer);
  if (scan.protocol_error) return hand_over(RelayEnd::client_protocol_error);
  const auto& out = relay.client_out;
  if (!out.empty()) {
    relay.forwarding = true;  // stays set if this write is cut short (see send_to_server)
    const auto sent = server_->stream().send_now(reinterpret_cast<const std::uint8_t*>(out.data()), out.size());
    if (!sent) return hand_over(RelayEnd::server_closed);
    if (*sent < out.size()) {
      relay.server_write_busy = true;
      spawn(shared_from_this(),
            [](std::shared_ptr<ClientSession> self, std::size_t sent, bool terminated) -> awaitable<void> {
              auto& relay = *self->relay_;
              const auto& out = relay.client_out;
              auto [ec, n] = co_await asio::async_write(self->server_->stream(),
                                                        asio::buffer(out.data() + sent, out.size() - sent),
                                                        uncancellable());
              relay.server_write_busy = false;
              if (ec) {
                co_await self->relay(RelayEnd::server_closed);
                co_return;
              }
              relay.forwarding = false;
              co_await self->relay(self->requests_sent(true, terminated).value_or(RelayEnd::needs_both));
            }(shared_from_this(), *sent, scan.terminated));
      return;
    }
    relay.forwarding = false;
  }
  const auto end = requests_sent(true, scan.terminated).value_or(RelayEnd::needs_both);
  if (end != RelayEnd::awaiting_answer) return hand_over(end);
  start_client_watch();
  read_lone_reply();
}

void ClientSession::read_lone_reply() {
  auto& relay = *relay_;
  if (client_watch_ == ClientWatch::fired) return hand_over(RelayEnd::needs_both);
  if (relay.wake_requested) return lone_reply_read({}, 0, false);
  auto space = relay.server_in.prepare(std::max<std::size_t>(relay.lone_wanted, 1024));
  solo_server_read_ = true;
  on_session_executor(
      [&](auto handler) {
        server_->stream().async_read_reply(asio::buffer(space.data(), space.size()), std::move(handler));
      },
      [self = shared_from_this()](error_code ec, std::size_t n) {
        self->solo_server_read_ = false;
        self->lone_step([&] { self->lone_reply_read(ec, n, true); });
      });
}

void ClientSession::lone_reply_read(error_code ec, std::size_t n, bool read) {
  auto& relay = *relay_;
  if (read) {
    // As pump_server_tracked(true) after its read.
    if (ec == asio::error::operation_aborted && client_watch_ == ClientWatch::fired) {
      return hand_over(RelayEnd::needs_both);  // cut short by the client watch: nothing was read
    }
    if (ec && !(ec == asio::error::operation_aborted && relay.wake_requested)) {
      return hand_over(RelayEnd::server_closed);
    }
    if (!ec) relay.server_in.commit(n);
  }
  relay.wake_requested = false;
  ParameterSink parameters{&*server_, this};
  protocol::BackendObserver<ParameterSink> observer{relay.state, &parameters};
  auto scan = scan_server_bytes(observer);
  if (scan.protocol_error) return hand_over(RelayEnd::server_protocol_error);
  relay.lone_wanted = scan.wanted;
  if (scan.retry) {
    spawn(shared_from_this(), [](std::shared_ptr<ClientSession> self, ServerScan scan) -> awaitable<void> {
      if (!co_await self->retry_stale_plan(scan.retry)) {
        co_await self->relay(RelayEnd::server_closed);
        co_return;
      }
      co_await self->finish_lone_reply(std::move(scan));
    }(shared_from_this(), std::move(scan)));
    return;
  }
  const bool released = reply_ready(scan);
  if (scan.reply_size > 0) {
    relay.bytes_out += scan.reply_size;
    const auto sent = client_.send_now(scan.reply, scan.reply_size);
    if (sent && *sent < scan.reply_size) {
      client_write_busy_ = true;  // from now: close_if_idle must not write into the remainder
      spawn(shared_from_this(),
            [](std::shared_ptr<ClientSession> self, ServerScan scan, std::size_t sent, bool released) -> awaitable<void> {
              auto [ec, n] = co_await asio::async_write(
                  self->client_, asio::buffer(scan.reply + sent, scan.reply_size - sent), uncancellable());
              self->client_write_busy_ = false;
              co_await self->lone_reply_sent(released, !ec);
            }(shared_from_this(), std::move(scan), *sent, released));
      return;
    }
    if (!sent) return lone_reply_done(reply_sent(true, released, false));
  }
  lone_reply_done(reply_sent(true, released, true));
}

awaitable<void> ClientSession::finish_lone_reply(ServerScan scan) {
  const bool released = reply_ready(scan);
  const bool sent = co_await send_to_client(scan.reply, scan.reply_size);
  co_await lone_reply_sent(released, sent);
}

awaitable<void> ClientSession::lone_reply_sent(bool released, bool sent) {
  auto end = reply_sent(true, released, sent);
  // Not over yet: the rest of the answer is read by the pump.
  if (!end) end = co_await pump_server_tracked(true);
  co_await relay(*end);
}

void ClientSession::lone_reply_done(std::optional<RelayEnd> end) {
  if (!end) return read_lone_reply();  // more of the answer to come
  // Released, with nothing else to do but wait for the client: park, or serve
  // what it sent meanwhile. Anything else is resume()'s (relay()'s) to finish.
  if (*end != RelayEnd::released || server_ || client_gone_) return hand_over(*end);
  recycle_relay(std::move(relay_));
  if (login_buffer_.empty()) return park();
  // The client spoke while its last answer went out: its bytes are the next
  // request (a watch that fired is done).
  abandon_client_watch();
  if (!exchange_without_coroutine({})) spawn(shared_from_this(), resume({}));
}


void ClientSession::park() {
  // Logged in without a server connection: nothing of this session but the object
  // itself waits for the client's next bytes (no coroutine frames, no buffers, no
  // server), as PgBouncer does, so idle clients cost little.
  release_idle_timing();
  arm_idle_timer();  // client_idle, when configured
  if (client_.has_buffered_input()) {
    // TLS: OpenSSL already holds the client's next bytes; the socket may stay quiet.
    asio::post(client_.get_executor(), [self = shared_from_this()] { wake_parked(self, {}); });
    return;
  }
  // The wait lasts as long as the client idles: a block of its own size.
  if (client_.is_tls()) {
    client_.socket().async_wait(
        tcp::socket::wait_read,
        asio::bind_allocator(ExactSizeAllocator<void>(),
                             [self = shared_from_this()](error_code ec) { wake_parked(self, ec); }));
    return;
  }
  // Plain TCP: the client watch, a read rather than a readiness wait. Asio re-arms
  // epoll (epoll_ctl) for every wait, but not for a read; after a request read that
  // left the socket drained (pool/draining_read.h) the read waits for the event
  // without a syscall, and when it completes the client's next bytes are in
  // login_buffer_, where the relay takes them from (pool::StashBuffer: no buffer is
  // held while the client idles). A watch started during the exchange just ended is
  // already that wait.
  switch (client_watch_) {
    case ClientWatch::watching:
      parked_ = true;
      return;
    case ClientWatch::fired:
      client_watch_ = ClientWatch::none;
      asio::post(client_.get_executor(), [self = shared_from_this(), failed = watch_failed_] {
        wake_parked(self, failed ? error_code(asio::error::eof) : error_code());
      });
      return;
    case ClientWatch::none:
      parked_ = true;
      start_client_watch();
      return;
  }
}

void ClientSession::start_client_watch() {
  if (client_watch_ != ClientWatch::none) return;
  client_watch_ = ClientWatch::watching;
  client_.socket().async_receive(
      pool::StashBuffer(&watched_bytes_), 0,
      asio::bind_allocator(ExactSizeAllocator<void>(),
                           [self = shared_from_this(), generation = ++watch_generation_](error_code ec, std::size_t n) {
                             self->client_watch_done(generation, ec, n);
                           }));
}

void ClientSession::client_watch_done(std::uint32_t generation, error_code ec, std::size_t) {
  // Abandoned: what it read was taken then, and the relay reads the client itself
  // (an end of stream is left for that read: pool::StashBuffer).
  if (generation != watch_generation_) return;
  take_watched_bytes();
  if (parked_) {
    parked_ = false;
    client_watch_ = ClientWatch::none;
    wake_parked(shared_from_this(), ec);
    return;
  }
  // During a lone exchange: the client spoke (or left) before its answer was all
  // out. The server pump hands over to both pumps, which relay what it sent.
  client_watch_ = ClientWatch::fired;
  watch_failed_ = static_cast<bool>(ec);
  if (solo_server_read_ && server_) {
    error_code ignored;
    server_->socket().cancel(ignored);
  }
}

void ClientSession::abandon_client_watch() {
  if (client_watch_ == ClientWatch::none) return;
  ++watch_generation_;
  if (client_watch_ == ClientWatch::watching) {
    // Nothing else is pending on the client socket here: only the peek is cancelled.
    error_code ignored;
    client_.socket().cancel(ignored);
  }
  // Cancelled, it can read no more; what it read before is the client's next bytes.
  take_watched_bytes();
  client_watch_ = ClientWatch::none;
  parked_ = false;
}

void ClientSession::take_watched_bytes() {
  if (watched_bytes_.empty()) return;
  disarm_idle_timer();  // the client spoke (as a relay read of it would tell)
  if (login_buffer_.empty()) {
    login_buffer_.adopt(std::move(watched_bytes_));
  } else {
    auto space = login_buffer_.prepare(watched_bytes_.size());
    std::memcpy(space.data(), watched_bytes_.data(), watched_bytes_.size());
    login_buffer_.commit(watched_bytes_.size());
    protocol::keep_as_spare(std::move(watched_bytes_));
  }
}

awaitable<void> ClientSession::resume(error_code wait_error) {
  disarm_idle_timer();
  if (!server_) {
    const auto readiness = wait_error ? ClientReadiness::leaving : client_readiness();
    if (readiness == ClientReadiness::leaving) {
      close_client();
      log()->info("[c{}] client {} disconnected", id_, peer_);
      co_return;
    }
    if (readiness == ClientReadiness::nothing) {
      // A readiness event with nothing to read (epoll can report one left over
      // from bytes read earlier): keep waiting rather than take a server.
      park();
      co_return;
    }
    const auto attached = attach_now();
    if (attached == AttachNow::settle) {
      if (!co_await settle_parameters()) co_return;
    } else if (attached == AttachNow::none && !co_await attach_timed()) {
      co_return;
    }
    co_await exchange_attached();
    co_return;
  }
  co_await relay(std::nullopt);
}

awaitable<void> ClientSession::relay(std::optional<RelayEnd> handed_over) {
  using namespace asio::experimental::awaitable_operators;
  RelayEnd end;
  // A lone exchange first (transaction/statement mode, plain TCP): the client's
  // request is read and sent, then only the server pump runs, with the client
  // watch as the one eye on the client, until the answer is out and the server
  // released. Most autocommit statements need nothing more, and so no `||` of two
  // pumps (two coroutine spawns, a cancellation of the client read) per
  // transaction. Anything else (the client speaks or leaves meanwhile, a
  // transaction stays open, COPY IN) hands over to both pumps at a message
  // boundary.
  bool alone = tracking_statements_ && !client_.is_tls();
  for (;;) {
    if (!handed_over) {
      // send_now relies on send() never blocking the thread. Setting it is an ioctl
      // each time, so only when it is not set yet (a new server connection; the
      // client's socket is set when the session starts).
      error_code ec;
      if (!server_->socket().non_blocking()) server_->socket().non_blocking(true, ec);
      if (relay_->client_buffer.empty() && !tracking_statements_) {
        relay_->client_buffer.resize(kInitialRelayBuffer);
        relay_->server_buffer.resize(kInitialRelayBuffer);
      }
    }
    if (alone) {
      // Handed over by the lone exchange's handler chain (see
      // exchange_without_coroutine): where it stopped, awaiting_answer when its
      // request went out by an async write.
      end = handed_over ? *handed_over : co_await pump_client_tracked(true);
      handed_over.reset();
      if (end == RelayEnd::awaiting_answer) {
        start_client_watch();
        end = co_await pump_server_tracked(true);
      }
      if (end == RelayEnd::needs_both) {
        abandon_client_watch();
        alone = false;
        continue;
      }
    } else if (!tracking_statements_ && !client_.is_tls() && !server_->stream().is_tls()) {
      end = co_await relay_plain_session();
    } else {
      auto ended = tracking_statements_ ? co_await (pump_client_tracked() || pump_server_tracked())
                                        : co_await (pump_client_to_server() || pump_server_to_client());
      end = std::visit([](auto e) { return e; }, ended);
    }
    // The client pump can finish first after the server pump released the server
    // (it stashed the client's next bytes): that is a release too.
    if (end == RelayEnd::cancelled && !server_) end = RelayEnd::released;
    // The client closed while its last answer was going out, and its read found the
    // end before the release cancelled it: it is gone, and a park would not learn it
    // (that read left Asio's reactor expecting an event that will not come).
    if (end == RelayEnd::released && client_gone_ && !server_) end = RelayEnd::client_closed;
    if (end != RelayEnd::released) break;
    if (server_ && release_due()) co_await release_server();
    if (!server_) {
      // Released. Bytes the client sent meanwhile were kept for the next server.
      recycle_relay(std::move(relay_));
      if (login_buffer_.empty()) {
        park();
        co_return;
      }
      // The client spoke while its last answer went out (a watch that fired is done).
      abandon_client_watch();
      if (client_readiness() == ClientReadiness::leaving) {  // a Terminate needs no server
        close_client();
        log()->info("[c{}] client {} disconnected", id_, peer_);
        co_return;
      }
      if (exchange_without_coroutine({})) co_return;
      const auto attached = attach_now();
      if (attached == AttachNow::settle) {
        if (!co_await settle_parameters()) co_return;
      } else if (attached == AttachNow::none && !co_await attach_timed()) {
        co_return;
      }
      alone = tracking_statements_ && !client_.is_tls();
    }
    // Otherwise the client pump relayed a new request while it was being stopped:
    // the same server carries on.
  }

  disarm_idle_timer();
  disarm_query_timer();
  flush_counters();
  cancel_slot_.set_target(std::nullopt);
  switch (end) {
    case RelayEnd::client_terminated:
    case RelayEnd::client_closed:
      close_client();
      log()->info("[c{}] client {} disconnected{}", id_, peer_,
                  end == RelayEnd::client_terminated ? "" : " without Terminate");
      co_await return_server(end == RelayEnd::client_terminated);
      break;
    case RelayEnd::client_protocol_error:
      server_.discard();  // it may have received part of a message
      co_await send_fatal("08P01", relay_->protocol_error);
      break;
    case RelayEnd::transaction_block:
      log()->info("[c{}] transaction block in statement mode; closing client {}", id_, peer_);
      co_await send_fatal("0A000", "transaction blocks are not allowed in statement pooling mode",
                          "Sluice returns the server connection after every statement; use transaction mode.");
      co_await return_server(false);
      break;
    case RelayEnd::released:
    case RelayEnd::cancelled:
    case RelayEnd::awaiting_answer:
    case RelayEnd::needs_both:
      break;  // not an end of the relay (released, the lone exchange's steps) or never first (cancelled)
    case RelayEnd::internal_error:
      log()->error("[c{}] relay of client {} failed: {}", id_, peer_, relay_->protocol_error);
      server_.discard();  // its stream may be anywhere
      if (client_stream_at_boundary()) {
        co_await send_fatal("XX000", "internal error in Sluice's relay",
                            "The connection is closed and its server connection discarded; a transaction in "
                            "progress was rolled back by PostgreSQL. Reconnect; Sluice's log has the cause.");
      } else {
        close_client();
      }
      break;
    case RelayEnd::server_closed:
    case RelayEnd::server_protocol_error:
      // Whatever the server said (FATAL included) has been relayed; the client sees
      // the close exactly as it would from PostgreSQL, with nothing of ours appended.
      log()->info("[c{}] server connection s{} closed{}; closing client", id_, server_->id(),
                  end == RelayEnd::server_protocol_error ? " after a protocol error" : "");
      if (!relay_->state.fatal && client_stream_at_boundary()) {
        // The server vanished without a word (crash, kill, network): say so rather
        // than leave the client with a bare EOF. Nothing is replayed: whatever was
        // in flight, and any open transaction, is gone (PostgreSQL rolls it back).
        std::string out;
        protocol::append_error_response(
            out, {"FATAL", "08006", "server connection lost",
                  "Sluice's connection to PostgreSQL " + server_->address +
                      " closed unexpectedly; a transaction in progress was rolled back by PostgreSQL and "
                      "nothing was retried."});
        client_.send_last_words(out);
      }
      server_.discard();
      close_client();
      break;
  }
}

// ---- Login ------------------------------------------------------------------------

awaitable<bool> ClientSession::start_client_tls(bool direct) {
  if (!client_.start_tls(client_tls_->context.get(), pool::TlsRole::server)) {
    log()->error("[c{}] could not set up TLS for {}: {}", id_, peer_, config::openssl_errors());
    close_client();
    co_return false;
  }
  auto [ec, n] = co_await client_.async_handshake(use_nothrow);
  SSL* ssl = client_.ssl();
  if (ec) {
    log()->info("[c{}] TLS handshake with {} failed: {}", id_, peer_, pool::tls_failure_reason(client_, ec));
    close_client();
    co_return false;
  }
  if (direct) {
    // As PostgreSQL 17: direct TLS must have negotiated ALPN "postgresql", so that
    // a TLS connection meant for another protocol is not taken for ours.
    const unsigned char* alpn = nullptr;
    unsigned int alpn_length = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_length);
    if (std::string_view(reinterpret_cast<const char*>(alpn), alpn == nullptr ? 0 : alpn_length) != "postgresql") {
      co_await send_fatal("08P01", "received direct SSL connection request without ALPN protocol negotiation extension");
      co_return false;
    }
  }
  log()->debug("[c{}] TLS with {}: {} {}{}", id_, peer_, SSL_get_version(ssl), SSL_get_cipher_name(ssl),
               direct ? " (direct)" : "");
  co_return true;
}

std::string ClientSession::client_certificate_name() {
  SSL* ssl = client_.ssl();
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return {};
  char name[256];
  const int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof name);
  if (length <= 0 || static_cast<std::size_t>(length) >= sizeof name) return {};
  return std::string(name, static_cast<std::size_t>(length));
}

awaitable<bool> ClientSession::check_access() {
  using config::HbaMethod;
  const bool tls = client_.is_tls();
  const auto mode = client_tls_->mode;
  const bool tls_required =
      mode == config::TlsMode::require || mode == config::TlsMode::verify_ca || mode == config::TlsMode::verify_full;
  if (tls_required && !tls) {
    co_await send_fatal("28000", "TLS is required to connect to Sluice (tls.client.mode = \"" +
                                     std::string(config::to_string(mode)) + "\"); connect with sslmode=require");
    co_return false;
  }
  if (mode == config::TlsMode::verify_full && client_certificate_name() != user_) {
    co_await refuse_login("28000", "certificate validation (tls.client.mode = \"verify-full\") failed for user \"" +
                                       user_ + "\"");
    co_return false;
  }
  const auto& config = context_.config();
  switch (user_config_->auth) {
    case config::AuthMethod::trust: login_method_ = HbaMethod::trust; break;
    case config::AuthMethod::cleartext: login_method_ = HbaMethod::cleartext; break;
    case config::AuthMethod::md5: login_method_ = HbaMethod::md5; break;
    case config::AuthMethod::scram_sha_256: login_method_ = HbaMethod::scram_sha_256; break;
  }
  if (config.hba.empty()) co_return true;
  const std::string where = "host \"" + peer_address() + "\", user \"" + user_ + "\", database \"" + database_ +
                            "\", " + (tls ? "TLS encryption" : "no encryption");
  const config::HbaRule* rule = config::match_hba(config.hba, database_, user_, peer_address(), tls);
  if (rule == nullptr) {
    co_await refuse_login("28000", "no [[hba]] rule for " + where);
    co_return false;
  }
  if (rule->method == HbaMethod::reject) {
    co_await refuse_login("28000", "[[hba]] rule at line " + std::to_string(rule->line) + " rejects connection for " + where);
    co_return false;
  }
  login_method_ = rule->method;
  if (login_method_ == HbaMethod::cert) {
    if (!tls || SSL_get0_peer_certificate(client_.ssl()) == nullptr) {
      co_await refuse_login("28000", "connection requires a valid client certificate");
      co_return false;
    }
    if (client_certificate_name() != user_) {
      co_await refuse_login("28000", "certificate authentication failed for user \"" + user_ + "\"");
      co_return false;
    }
  }
  co_return true;
}

awaitable<bool> ClientSession::read_startup() {
  if (client_tls_->enabled()) {
    // PostgreSQL 17's direct TLS starts with a TLS handshake record instead of a
    // startup packet: peek at the first byte (it stays in the socket either way).
    std::uint8_t first = 0;
    auto [ec, n] = co_await client_.socket().async_receive(asio::buffer(&first, 1), tcp::socket::message_peek,
                                                           use_nothrow);
    if (ec || n == 0) {
      log()->debug("[c{}] {} closed before sending a startup packet", id_, peer_);
      co_return false;
    }
    if (first == kTlsHandshakeRecord && !co_await start_client_tls(true)) co_return false;
  }
  for (;;) {
    protocol::StartupPacket packet;
    auto peeked = protocol::peek_startup(login_buffer_.data(), packet);
    if (!peeked) {
      const auto error = peeked.error();
      if (error == protocol::errc::unsupported_protocol) {
        const auto version = packet.protocol;
        co_await send_fatal("0A000", "unsupported frontend protocol " + std::to_string(version >> 16) + "." +
                                         std::to_string(version & 0xffff) + ": server supports 3.0 to 3.0");
      } else if (error == protocol::errc::missing_user) {
        co_await send_fatal("28000", "no PostgreSQL user name specified in startup packet");
      } else if (error == protocol::errc::startup_too_large || error == protocol::errc::bad_length) {
        co_await send_fatal("08P01", "invalid length of startup packet");
      } else {
        co_await send_fatal("08P01", "invalid startup packet layout: expected terminator as last byte");
      }
      co_return false;
    }
    if (*peeked == 0) {
      const bool at_boundary = login_buffer_.empty();
      auto space = login_buffer_.prepare(512);
      auto [ec, n] = co_await client_.async_read_client(asio::buffer(space.data(), space.size()),
                                                         pool::DrainedWhen::login_message_awaits_answer, at_boundary,
                                                         use_nothrow);
      if (ec) {
        log()->debug("[c{}] {} closed before sending a startup packet", id_, peer_);
        co_return false;
      }
      login_buffer_.commit(n);
      continue;
    }
    const std::size_t length = *peeked;
    switch (packet.kind) {
      case protocol::StartupKind::ssl_request:
      case protocol::StartupKind::gssenc_request: {
        login_buffer_.consume(length);
        if (!login_buffer_.empty()) {  // nothing may follow before our answer
          co_await send_fatal("08P01", "received unencrypted data after SSL request");
          co_return false;
        }
        if (client_.is_tls()) {
          co_await send_fatal("08P01", "SSL request received over an encrypted connection");
          co_return false;
        }
        if (packet.kind == protocol::StartupKind::ssl_request && client_tls_->enabled()) {
          if (!co_await write_client("S")) co_return false;
          if (!co_await start_client_tls(false)) co_return false;
          continue;
        }
        if (!co_await write_client("N")) co_return false;
        continue;
      }
      case protocol::StartupKind::cancel_request: {
        const protocol::BackendKey key{packet.cancel_pid, packet.cancel_secret};
        if (auto forwarded = context_.cancels().find(key)) {
          const CancelTarget& target = forwarded->target();
          log()->info("[c{}] cancel request for client pid {} forwarded to {}:{} (backend pid {})", id_, key.pid,
                      target.host, target.port, target.key.pid);
          co_await pool::send_cancel(target.host, target.port, target.key);
        } else {
          log()->debug("[c{}] cancel request with unknown key dropped", id_);
        }
        // Closed once PostgreSQL has closed the forwarded one, as PostgreSQL closes a
        // cancel connection once it has signalled the backend: a client whose
        // PQcancel returned knows the signal was sent (PostgreSQL signals the
        // backend and its process group, and a signal that lands late would hit
        // the client's next statement).
        close_client();
        co_return false;
      }
      case protocol::StartupKind::startup:
        break;
    }

    // A StartupMessage: remember what we need before its buffer is reused.
    user_ = std::string(packet.get("user"));
    database_ = std::string(packet.get("database"));
    if (database_.empty()) database_ = user_;
    std::vector<std::string_view> unrecognised;
    bool replication = false;
    for (const auto& [name, value] : packet.parameters) {
      if (name == "user" || name == "database") continue;
      if (name.starts_with("_pq_.")) {
        unrecognised.push_back(name);
        continue;
      }
      if (name == "replication") {
        replication = true;
        continue;
      }
      startup_params_.emplace_back(name, value);
    }
    startup_params_ = pool::normalize_startup_params(std::move(startup_params_));
    if ((packet.protocol & 0xffff) != 0 || !unrecognised.empty()) {
      std::string out;
      protocol::append_negotiate_protocol_version(out, 0, unrecognised);
      if (!co_await write_client(out)) co_return false;
    }
    login_buffer_.consume(length);
    if (replication) {
      co_await send_fatal("0A000", "replication connections are not supported by Sluice");
      co_return false;
    }
    break;
  }

  if (!context_.try_add_client()) {
    context_.count_refused_client();
    co_await send_fatal("53300", "sorry, too many clients already",
                        "max_client_conn (" + std::to_string(context_.config().max_client_conn) + ") reached");
    co_return false;
  }
  counted_ = true;
  // A client accepted before a shutdown began may still log in and run its first
  // transaction (see close_if_idle); the listeners are closed, so no new ones come.
  // The admin console: a virtual database, unless one of that name is configured.
  console_ = (database_ == "sluice" || database_ == "pgbouncer") && context_.config().databases.count(database_) == 0;
  if (console_) {
    user_config_ = context_.config().find_user(user_);
    if (user_config_ == nullptr) {
      co_await send_fatal("28000", "role \"" + user_ + "\" does not exist");
      co_return false;
    }
    co_return true;
  }
  database_config_ = context_.config().find_database(database_);
  if (database_config_ == nullptr) {
    co_await send_fatal("3D000", "database \"" + database_ + "\" does not exist");
    co_return false;
  }
  const auto& config = context_.config();
  if (config.auth_query.enabled() && config.users.count(user_) == 0) {
    co_return co_await look_up_user();
  }
  user_config_ = config.find_user(user_);
  if (user_config_ == nullptr) {
    co_await send_fatal("28000", "role \"" + user_ + "\" does not exist");
    co_return false;
  }
  co_return true;
}

awaitable<bool> ClientSession::look_up_user() {
  const auto& config = context_.config();
  const auto& aq = config.auth_query;
  const std::string database = aq.database.empty() ? database_ : aq.database;
  auto& cache = context_.auth_query_cache();
  auto lookup = cache.get(database, user_, std::chrono::steady_clock::now(), aq.cache);
  if (!lookup) {
    const config::User* auth_user = config.find_user(aq.user);
    const config::Database* db = aq.database.empty() ? database_config_ : config.find_database(aq.database);
    if (auth_user == nullptr || db == nullptr) {
      co_await send_fatal("08006", "could not look up user \"" + user_ + "\": auth_query.database \"" + database +
                                       "\" is not configured");
      co_return false;
    }
    auto pool = context_.pools().get_or_create(database, aq.user, server_target(*db, *auth_user, database, aq.user),
                                               servers_of(*db), pool_snapshot(config, *db, *auth_user),
                                               db->max_db_connections, auth_user->max_user_connections);
    const auto timeout = config.timeouts.client_login.count() > 0 ? config.timeouts.client_login
                                                                  : std::chrono::milliseconds(60'000);
    auto answer = co_await run_auth_query(pool, aq.query, user_, timeout, id_);
    if (auto* error = std::get_if<std::string>(&answer)) {
      log()->warn("[c{}] auth_query for user \"{}\" failed: {}", id_, user_, *error);
      co_await send_fatal("08006", "could not look up user \"" + user_ + "\": " + *error);
      co_return false;
    }
    lookup = std::get<AuthLookup>(answer);
    cache.put(database, user_, *lookup, std::chrono::steady_clock::now());
  }
  auto user = std::make_shared<config::User>();
  user->name = user_;
  if (lookup->found && lookup->secret && !lookup->secret->empty()) {
    user->password = *lookup->secret;
    user->auth = protocol::auth::is_md5_hash(user->password) ? config::AuthMethod::md5 : config::AuthMethod::scram_sha_256;
  } else {
    // No such role, no password, or an expired one: the login goes through a SCRAM
    // exchange that cannot succeed, so the client learns no more than from a wrong
    // password (as PostgreSQL does).
    if (const auto* fallback = config.find_user("*"); fallback != nullptr && !lookup->found) {
      user_config_ = fallback;
      co_return true;
    }
    log()->info("[c{}] auth_query: {}", id_,
                !lookup->found ? "no such role \"" + user_ + "\""
                               : "role \"" + user_ + "\" has no valid password (none set, or rolvaliduntil has passed)");
    protocol::auth::ScramSecret doomed;
    doomed.salt = protocol::auth::random_bytes(16);
    const auto key_bytes = protocol::auth::random_bytes(64);
    std::memcpy(doomed.stored_key.data(), key_bytes.data(), 32);
    std::memcpy(doomed.server_key.data(), key_bytes.data() + 32, 32);
    user->password = protocol::auth::format_scram_secret(doomed);
    user->auth = config::AuthMethod::scram_sha_256;
  }
  looked_up_user_ = std::move(user);
  user_config_ = looked_up_user_.get();
  co_return true;
}

awaitable<std::optional<protocol::Message>> ClientSession::read_client_message(std::size_t& consumed) {
  for (;;) {
    protocol::Message msg;
    auto peeked = protocol::peek_message(login_buffer_.data(), 64 * 1024, msg);
    if (!peeked) {
      co_await send_fatal("08P01", "invalid message length during authentication");
      co_return std::nullopt;
    }
    if (*peeked > 0) {
      consumed = *peeked;
      co_return msg;
    }
    const bool at_boundary = login_buffer_.empty();
    auto space = login_buffer_.prepare(512);
    auto [ec, n] = co_await client_.async_read_client(asio::buffer(space.data(), space.size()),
                                                       pool::DrainedWhen::login_message_awaits_answer, at_boundary,
                                                       use_nothrow);
    if (ec) {
      log()->info("[c{}] {} disconnected during authentication", id_, peer_);
      co_return std::nullopt;
    }
    login_buffer_.commit(n);
  }
}

awaitable<void> ClientSession::refuse_login(std::string_view sqlstate, std::string message) {
  const auto now = std::chrono::steady_clock::now();
  auto& throttle = context_.auth_throttle();
  throttle.record_failure(peer_address(), now);
  const auto delay = throttle.delay_for(peer_address(), now, context_.config().auth_failure_delay);
  if (delay.count() > 0) {
    // Repeated failures from one address: answer later, so guessing is slow. The
    // login timer still bounds the connection.
    log()->info("[c{}] {} failed to log in repeatedly; answering in {} ms", id_, peer_address(), delay.count());
    asio::steady_timer pause(client_.get_executor(), delay);
    co_await pause.async_wait(use_nothrow);
  }
  co_await send_fatal(sqlstate, message);
}

awaitable<bool> ClientSession::authenticate() {
  using config::HbaMethod;
  const auto& user = *user_config_;
  const std::string auth_failed = "password authentication failed for user \"" + user_ + "\"";
  std::string out;
  {
    // An address that keeps failing waits before every attempt, so that parallel
    // guesses are slowed down too.
    const auto delay = context_.auth_throttle().delay_for(peer_address(), std::chrono::steady_clock::now(),
                                                          context_.config().auth_failure_delay);
    if (delay.count() > 0 && login_method_ != HbaMethod::trust) {
      asio::steady_timer pause(client_.get_executor(), delay);
      co_await pause.async_wait(use_nothrow);
      if (!client_.is_open()) co_return false;  // the login timer expired meanwhile
    }
  }

  auto read_password_message = [&](std::size_t& consumed) -> awaitable<std::optional<protocol::Message>> {
    auto msg = co_await read_client_message(consumed);
    if (!msg) co_return std::nullopt;
    if (msg->type != 'p') {
      co_await send_fatal("08P01", std::string("expected password response, got message type ") + msg->type);
      co_return std::nullopt;
    }
    co_return msg;
  };

  const std::string& stored = user.password;
  const bool stored_scram = protocol::auth::is_scram_secret(stored);
  const bool stored_md5 = protocol::auth::is_md5_hash(stored);
  HbaMethod method = login_method_;
  // As PostgreSQL: md5 asked for a user whose password is a SCRAM secret means SCRAM.
  if (method == HbaMethod::md5 && stored_scram) method = HbaMethod::scram_sha_256;
  if ((method == HbaMethod::md5 || method == HbaMethod::scram_sha_256 || method == HbaMethod::cleartext) &&
      stored.empty()) {
    log()->info("[c{}] user \"{}\" has no password for method {}", id_, user_, config::to_string(method));
    co_await refuse_login("28P01", auth_failed);
    co_return false;
  }

  switch (method) {
    case HbaMethod::trust:
    case HbaMethod::cert:  // proven by the certificate (check_access)
      break;
    case HbaMethod::reject:
      co_await refuse_login("28000", "connection rejected");
      co_return false;
    case HbaMethod::cleartext: {
      protocol::append_auth_cleartext(out);
      if (!co_await write_client(out)) co_return false;
      std::size_t consumed = 0;
      auto msg = co_await read_password_message(consumed);
      if (!msg) co_return false;
      auto password = protocol::parse_password(msg->body);
      bool ok = false;
      if (password && stored_scram) {
        // The secret's salt and iterations turn the password into a comparable key.
        if (auto secret = protocol::auth::parse_scram_secret(stored)) {
          const auto derived = protocol::auth::make_scram_secret(*password, secret->salt, secret->iterations);
          ok = CRYPTO_memcmp(derived.stored_key.data(), secret->stored_key.data(), secret->stored_key.size()) == 0;
        }
      } else if (password && stored_md5) {
        ok = equals_constant_time(protocol::auth::md5_password_hash(*password, user_), stored);
      } else if (password) {
        ok = equals_constant_time(*password, stored);
      }
      login_buffer_.consume(consumed);
      if (!ok) {
        co_await refuse_login("28P01", auth_failed);
        co_return false;
      }
      break;
    }
    case HbaMethod::md5: {
      const std::string hash = stored_md5 ? stored : protocol::auth::md5_password_hash(stored, user_);
      std::array<std::uint8_t, 4> salt{};
      auto random = protocol::auth::random_bytes(4);
      std::memcpy(salt.data(), random.data(), std::min(random.size(), salt.size()));
      protocol::append_auth_md5(out, salt);
      if (!co_await write_client(out)) co_return false;
      std::size_t consumed = 0;
      auto msg = co_await read_password_message(consumed);
      if (!msg) co_return false;
      auto response = protocol::parse_password(msg->body);
      const bool ok = response && protocol::auth::md5_verify(hash, salt, *response);
      login_buffer_.consume(consumed);
      if (!ok) {
        co_await refuse_login("28P01", auth_failed);
        co_return false;
      }
      break;
    }
    case HbaMethod::scram_sha_256: {
      if (stored_md5) {
        // An md5 hash cannot answer a SCRAM exchange (PostgreSQL fails the same way).
        log()->info("[c{}] user \"{}\" has an md5 hash, which cannot verify SCRAM", id_, user_);
        co_await refuse_login("28P01", auth_failed);
        co_return false;
      }
      protocol::auth::ScramSecret secret;
      if (stored_scram) {
        auto parsed = protocol::auth::parse_scram_secret(stored);
        if (!parsed) {
          co_await refuse_login("28P01", auth_failed);
          co_return false;
        }
        secret = *parsed;
      } else {
        secret = context_.scram_secret_for(user);
      }
      // Over TLS, SCRAM-SHA-256-PLUS binds the exchange to this TLS connection
      // (tls-server-end-point): a man in the middle with another certificate fails.
      const std::string& binding = client_.is_tls() ? client_tls_->end_point_hash : std::string();
      protocol::auth::ScramServer scram(secret);
      if (!binding.empty()) scram.offer_channel_binding(binding);
      std::vector<std::string_view> mechanisms;
      if (!binding.empty()) mechanisms.push_back(protocol::auth::kScramPlusMechanism);
      mechanisms.push_back(protocol::auth::kScramMechanism);
      protocol::append_auth_sasl(out, mechanisms);
      if (!co_await write_client(out)) co_return false;

      std::size_t consumed = 0;
      auto first = co_await read_password_message(consumed);
      if (!first) co_return false;
      auto initial = protocol::parse_sasl_initial_response(first->body);
      const bool known = initial && std::find(mechanisms.begin(), mechanisms.end(), initial->mechanism) != mechanisms.end();
      if (!known) {
        co_await send_fatal("28000", "client selected an invalid SASL authentication mechanism");
        co_return false;
      }
      auto server_first = scram.on_client_first(initial->data, initial->mechanism == protocol::auth::kScramPlusMechanism);
      login_buffer_.consume(consumed);
      if (!server_first) {
        if (server_first.error() == protocol::errc::scram_channel_binding) {
          co_await send_fatal("28000", "SCRAM channel binding negotiation error",
                              "The client's channel binding choice does not match what Sluice offered.");
        } else {
          co_await send_fatal("08P01", "malformed SCRAM message");
        }
        co_return false;
      }
      out.clear();
      protocol::append_auth_sasl_continue(out, *server_first);
      if (!co_await write_client(out)) co_return false;

      auto final_msg = co_await read_password_message(consumed);
      if (!final_msg) co_return false;
      auto server_final = scram.on_client_final(as_text(final_msg->body));
      login_buffer_.consume(consumed);
      if (!server_final) {
        if (server_final.error() == protocol::errc::auth_failed) {
          co_await refuse_login("28P01", auth_failed);
        } else if (server_final.error() == protocol::errc::scram_channel_binding) {
          co_await refuse_login("28000", "SCRAM channel binding check failed");
        } else {
          co_await send_fatal("08P01", "malformed SCRAM message");
        }
        co_return false;
      }
      if (auto keys = scram.proven_keys(); keys && stored_scram && user.server_password.empty())
        proven_keys_ = std::make_unique<protocol::auth::ScramKeys>(*keys);
      out.clear();
      protocol::append_auth_sasl_final(out, *server_final);
      if (!co_await write_client(out)) co_return false;
      break;
    }
  }
  out.clear();
  protocol::append_auth_ok(out);
  co_return co_await write_client(out);
}

std::shared_ptr<pool::Pool> ClientSession::find_pool() {
  const auto& config = context_.config();
  const auto& db = *database_config_;
  const auto& user = *user_config_;
  const auto slow = config.slow_query_for(db, user);
  recording_ = slow.record;
  slow_threshold_ = slow.threshold;
  log_parameters_ = slow.log_parameters;
  const auto settings = config.pool_for(db, user);
  auto pool = context_.pools().get_or_create(database_, user_, server_target(db, user, database_, user_),
                                             servers_of(db), pool_snapshot(config, db, user),
                                             db.max_db_connections, user.max_user_connections);
  if (proven_keys_) {
    pool->remember_scram_keys(*proven_keys_);
    proven_keys_.reset();  // the pool logs in with them from now on
  }
  // The pool's mode, which a RELOAD does not change for a pool that exists.
  pool_mode_ = pool->mode() == "transaction" ? config::PoolMode::transaction
               : pool->mode() == "statement" ? config::PoolMode::statement
                                             : config::PoolMode::session;
  tracking_statements_ = pool_mode_ != config::PoolMode::session && settings.max_prepared_statements > 0;
  max_prepared_statements_ = static_cast<std::size_t>(settings.max_prepared_statements);
  return pool;
}

ClientSession::ClientReadiness ClientSession::client_readiness() {
  // Bytes kept from earlier start at a message boundary (a release happens only
  // there): a Terminate first needs no server, as on the socket below.
  if (!login_buffer_.empty()) {
    return login_buffer_.data()[0] == 'X' ? ClientReadiness::leaving : ClientReadiness::has_bytes;
  }
  if (client_.is_tls()) {
    // The socket holds TLS records: decrypt what is there into the buffer the next
    // server gets first (a Terminate or a close needs no server).
    auto space = login_buffer_.prepare(kParkedTlsRead);
    const auto n = client_.read_now(space.data(), space.size());
    if (!n) return ClientReadiness::leaving;
    if (*n == 0) {
      login_buffer_.release_if_empty();
      return ClientReadiness::nothing;
    }
    login_buffer_.commit(*n);
    return login_buffer_.data()[0] == 'X' ? ClientReadiness::leaving : ClientReadiness::has_bytes;
  }
  // Closed since the park's wait completed (client_idle, a shutdown).
  if (!client_.is_open()) return ClientReadiness::leaving;
  // Peek without consuming: EOF, or a Terminate as the first message, needs no server.
  std::uint8_t first = 0;
  const ssize_t n = ::recv(client_.socket().native_handle(), &first, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return ClientReadiness::leaving;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return ClientReadiness::nothing;
    return ClientReadiness::leaving;
  }
  return first == 'X' ? ClientReadiness::leaving : ClientReadiness::has_bytes;
}

awaitable<bool> ClientSession::finish_login() {
  pool_ = find_pool();
  // A client of the pool from here on (SHOW POOLS counts one waiting at login too).
  pool_->counters().clients.fetch_add(1, std::memory_order_relaxed);
  counted_in_pool_ = true;
  client_key_ = context_.cancels().add(std::shared_ptr<CancelSlot>(shared_from_this(), &cancel_slot_));
  key_registered_ = true;
  std::string out;
  if (auto cached = pool_->cached_parameters(startup_params_)) {
    // A connection opened with these startup parameters has told us what the
    // server reports; the client can start now and get a server on first use.
    sent_parameters_ = std::move(cached);
  } else {
    if (!co_await attach_server()) co_return false;
    sent_parameters_ = std::make_shared<const pool::ParameterList>(server_->parameters);
    // The next client with these startup values logs in without a server. (In
    // session mode the pool learns them from the connections it opens: an idle one
    // may carry the last client's settings when there is no server_reset_query.)
    if (pool_mode_ != config::PoolMode::session) pool_->remember_parameters(startup_params_, sent_parameters_);
    // Nothing ran on it: back to the pool, in session mode too (a server is given at
    // the client's first request, as PgBouncer does). Otherwise clients logging in
    // together on a cold pool would each hold one while idle, and those beyond the
    // pool size would wait for a server just to log in.
    co_await release_server();
  }
  for (const auto& [name, value] : *sent_parameters_) protocol::append_parameter_status(out, name, value);
  protocol::append_backend_key(out, client_key_);
  protocol::append_ready_for_query(out, 'I');
  logged_in_ = true;
  log()->info("[c{}] login db={} user={}", id_, database_, user_);
  co_return co_await write_client(out);
}

awaitable<bool> ClientSession::attach_server() {
  start_waiting(std::chrono::steady_clock::now());
  auto acquired = co_await pool_->acquire(startup_params_, id_);
  stop_waiting();
  co_return co_await attach_acquired(std::move(acquired));
}

awaitable<bool> ClientSession::attach_acquired(pool::AcquireResult acquired) {
  if (!acquired.lease) {
    if (!acquired.failure.server_error.empty()) {
      // PostgreSQL's own refusal, relayed as it was sent.
      log()->info("[c{}] closing {}: server refused login: {} ({})", id_, peer_, acquired.failure.reason,
                  acquired.failure.sqlstate);
      co_await write_client(acquired.failure.server_error);
      close_client();
    } else {
      // Computed outside the co_await: g++ 12 mishandles temporaries with destructors
      // (here a std::string from the conditional) inside co_await expressions.
      const std::string_view sqlstate =
          acquired.failure.sqlstate.empty() ? std::string_view("08006") : std::string_view(acquired.failure.sqlstate);
      co_await send_fatal(sqlstate, acquired.failure.reason);
    }
    co_return false;
  }
  adopt_server(std::move(acquired.lease));
  if (parameters_known()) co_return true;
  co_return co_await settle_parameters();
}

void ClientSession::adopt_server(pool::Lease lease) {
  server_ = std::move(lease);
  relay_ = take_relay(max_message_size_);
  cancel_slot_.set_target(CancelTarget{server_->host, server_->port, server_->backend_key});
  log()->debug("[c{}] attached server connection s{} (backend pid {})", id_, server_->id(), server_->backend_key.pid);
}

bool ClientSession::parameters_known() {
  if (!sent_parameters_) return false;
  if (sent_parameters_ == server_->reports_as) return true;  // the usual case
  if (*sent_parameters_ == server_->parameters) {
    server_->reports_as = sent_parameters_;  // the next client told the same list compares pointers
    return true;
  }
  return false;
}

ClientSession::AttachNow ClientSession::attach_now() {
  // Logging in (nothing told yet) takes attach_server's whole path.
  if (!sent_parameters_) return AttachNow::none;
  const auto now = std::chrono::steady_clock::now();  // one clock reading for both
  auto lease = pool_->try_acquire_idle(startup_params_, now);
  if (!lease) return AttachNow::none;
  if (recording_) {
    timing().attach_started = now;  // no wait to charge
    timing().attach_wait = {};
  }
  adopt_server(std::move(lease));
  return parameters_known() ? AttachNow::attached : AttachNow::settle;
}

awaitable<bool> ClientSession::settle_parameters() {
  if (pool_mode_ != config::PoolMode::session) {
    // The connection may have served clients with other tracked values. At login
    // the client's wishes are its startup values, unless the connection was opened
    // with exactly those.
    if (sent_parameters_) {
      if (!co_await sync_parameters(*sent_parameters_)) co_return false;
    } else {
      // Logging in: the server's defaults (what the connection reported at its own
      // login, opened without tracked parameters), with the client's startup values
      // on top; the connection may still carry another client's settings.
      pool::ParameterList wanted;
      for (const auto& [name, value] : server_->initial_parameters)
        if (pool::is_tracked_parameter(name)) wanted.emplace_back(name, value);
      for (const auto& [name, value] : startup_params_) {
        if (!pool::is_tracked_parameter(name)) continue;
        auto known = std::find_if(wanted.begin(), wanted.end(), [&](const auto& p) { return iequals(p.first, name); });
        if (known != wanted.end()) {
          known->second = value;
        } else {
          wanted.emplace_back(name, value);
        }
      }
      if (!co_await sync_parameters(wanted)) co_return false;
    }
  }
  if (!sent_parameters_) co_return true;  // still logging in: the caller sends them
  // Tell the client about any reported parameter that differs from what it knows
  // (for example after ALTER ROLE ... SET on the server, or server_version on
  // another connection).
  std::string out;
  for (const auto& [name, value] : server_->parameters) {
    auto known = std::find_if(sent_parameters_->begin(), sent_parameters_->end(),
                              [&](const auto& p) { return p.first == name; });
    if (known == sent_parameters_->end() || known->second != value) {
      protocol::append_parameter_status(out, name, value);
    }
  }
  if (out.empty()) co_return true;
  sent_parameters_ = std::make_shared<const pool::ParameterList>(server_->parameters);
  server_->reports_as = sent_parameters_;
  co_return co_await write_client(out);
}

awaitable<bool> ClientSession::sync_parameters(const pool::ParameterList& wanted) {
  std::string sql;
  for (const auto& [name, value] : wanted) {
    if (!pool::is_tracked_parameter(name)) continue;
    auto current = std::find_if(server_->parameters.begin(), server_->parameters.end(),
                                [&](const auto& p) { return iequals(p.first, name); });
    if (current != server_->parameters.end() && current->second == value) continue;
    // `name` is one of the tracked names, so it is safe to write as is.
    sql += "SET " + name + " TO " + quote_literal(value) + ";";
  }
  if (sql.empty()) co_return true;
  log()->debug("[c{}] setting tracked parameters on s{}: {}", id_, server_->id(), sql);
  std::string out;
  protocol::append_query(out, sql);
  bool ok = co_await write_server(out);
  ExchangeObserver observer{*server_, false, {}, {}};
  relay_->server_buffer.resize(kInitialRelayBuffer);
  while (ok && !(observer.ready && relay_->server_scanner.at_boundary())) {
    auto [ec, n] = co_await server_->stream().async_read_some(asio::buffer(relay_->server_buffer), use_nothrow);
    ok = !ec && relay_->server_scanner.feed(protocol::Bytes(relay_->server_buffer.data(), n), observer).has_value();
  }
  if (!ok) {
    log()->info("[c{}] server connection s{} failed while setting parameters; closing it", id_, server_->id());
    server_.discard();
    co_await send_fatal("08006", "server connection lost while setting the client's parameters");
    co_return false;
  }
  if (!observer.error_sqlstate.empty()) {
    // PostgreSQL would have refused such a value at login; so does Sluice.
    server_.release_clean();
    co_await send_fatal(observer.error_sqlstate, observer.error_message);
    co_return false;
  }
  co_return true;
}

void ClientSession::client_parameter_changed(std::string_view name, std::string_view value) {
  if (sent_parameters_) {
    auto known = std::find_if(sent_parameters_->begin(), sent_parameters_->end(),
                              [&](const auto& p) { return p.first == name; });
    if (known != sent_parameters_->end() && known->second == value) return;
  }
  auto changed = sent_parameters_ ? std::make_shared<pool::ParameterList>(*sent_parameters_)
                                  : std::make_shared<pool::ParameterList>();
  auto entry = std::find_if(changed->begin(), changed->end(), [&](const auto& p) { return p.first == name; });
  if (entry != changed->end()) {
    entry->second.assign(value);
  } else {
    changed->emplace_back(name, value);
  }
  sent_parameters_ = std::move(changed);
}

namespace {
constexpr std::size_t kRecycledRelaysPerThread = 64;
// Buffers that grew past this (a bulk transfer) are not kept in the cache.
constexpr std::size_t kLargestRecycledBuffer = 64 * 1024;
}  // namespace

void ClientSession::Relay::reset(std::uint32_t max_message_size) {
  state = {};
  client_scanner = protocol::StreamScanner(max_message_size);
  server_scanner = protocol::StreamScanner(1u << 30);
  server_stream_broken = false;
  forwarding = false;
  requests.clear();
  client_in.consume(client_in.size());
  server_in.consume(server_in.size());
  client_out.clear();
  server_out.clear();
  client_passing = server_passing = 0;
  wake_requested = discard_on_release = server_write_busy = skipping_to_sync = false;
  batch.clear();
  batch_complete = true;
  batch_replayable = batch_executed = batch_retried = false;
  batch_binds_answered = 0;
  bytes_in = bytes_out = ready_flushed = ready_idle_flushed = 0;
  busy = in_transaction = false;
  protocol_error.clear();
}

namespace {
// Objects of one kind kept per thread for reuse, with their buffers' memory: the
// relays and timing state of transaction pooling are not allocated per transaction,
// and idle clients hold none.
template <class T>
std::vector<std::unique_ptr<T>>& recycled() {
  thread_local std::vector<std::unique_ptr<T>> cache;
  return cache;
}
}  // namespace

std::unique_ptr<ClientSession::Relay> ClientSession::take_relay(std::uint32_t max_message_size) {
  auto& cache = recycled<Relay>();
  if (cache.empty()) return std::make_unique<Relay>(max_message_size);
  auto relay = std::move(cache.back());
  cache.pop_back();
  relay->reset(max_message_size);
  return relay;
}

void ClientSession::recycle_relay(std::unique_ptr<Relay> relay) {
  if (!relay) return;
  auto& cache = recycled<Relay>();
  if (cache.size() >= kRecycledRelaysPerThread || relay->client_buffer.size() > kLargestRecycledBuffer ||
      relay->server_buffer.size() > kLargestRecycledBuffer || relay->client_in.capacity() > kLargestRecycledBuffer ||
      relay->server_in.capacity() > kLargestRecycledBuffer || relay->batch.capacity() > kLargestRecycledBuffer) {
    return;  // freed
  }
  cache.push_back(std::move(relay));
}

namespace {
constexpr std::size_t kRecycledTimingsPerThread = 64;
constexpr std::size_t kLargestRecycledInFlight = 16;  // statements in flight, kept as capacity
constexpr std::size_t kLargestRecycledTable = 64;     // buckets of the (emptied) text maps
constexpr std::size_t kLargestKeptUnnamedText = 2048;  // bytes of previous_unnamed_statement
}  // namespace

ClientSession::StatementTiming::TimedText& ClientSession::StatementTiming::statement_slot(std::string_view name) {
  return name.empty() ? unnamed_statement : statement_texts[std::string(name)];
}

ClientSession::StatementTiming::TimedText& ClientSession::StatementTiming::portal_slot(std::string_view name) {
  return name.empty() ? unnamed_portal : portal_texts[std::string(name)];
}

ClientSession::StatementTiming::TimedText* ClientSession::StatementTiming::find_statement(std::string_view name) {
  if (name.empty()) return unnamed_statement.text ? &unnamed_statement : nullptr;
  const auto it = statement_texts.find(std::string(name));
  return it == statement_texts.end() ? nullptr : &it->second;
}

ClientSession::StatementTiming::TimedText* ClientSession::StatementTiming::find_portal(std::string_view name) {
  if (name.empty()) return &unnamed_portal;  // unbound: empty, which Execute treats as unknown
  const auto it = portal_texts.find(std::string(name));
  return it == portal_texts.end() ? nullptr : &it->second;
}

std::unique_ptr<ClientSession::StatementTiming> ClientSession::take_timing() {
  auto& cache = recycled<StatementTiming>();
  if (cache.empty()) return std::make_unique<StatementTiming>();
  auto timing = std::move(cache.back());
  cache.pop_back();
  return timing;
}

void ClientSession::release_idle_timing() {
  if (!timing_ || !timing_->in_flight.empty() || timing_->attach_started) return;
  // Parked after a release, so the transaction is over, and with it every portal.
  // The unnamed statement is the next server's business (a client that binds it
  // again without a Parse gets no text in the slow-query log).
  timing_->portal_texts.clear();
  timing_->unnamed_portal = {};
  if (timing_->unnamed_statement.text && timing_->unnamed_statement.text->size() <= kLargestKeptUnnamedText) {
    timing_->previous_unnamed_statement = std::move(timing_->unnamed_statement);
  }
  timing_->unnamed_statement = {};
  if (!timing_->statement_texts.empty()) return;  // named statements keep their texts
  auto& cache = recycled<StatementTiming>();
  if (cache.size() < kRecycledTimingsPerThread && timing_->in_flight.capacity() <= kLargestRecycledInFlight &&
      timing_->statement_texts.bucket_count() <= kLargestRecycledTable &&
      timing_->portal_texts.bucket_count() <= kLargestRecycledTable) {
    timing_->attach_wait = {};
    cache.push_back(std::move(timing_));
  }
  timing_.reset();
}

bool ClientSession::release_due() const {
  if (pool_mode_ == config::PoolMode::session || !relay_ || !server_) return false;
  const auto& state = relay_->state;
  return state.pending == 0 && !state.unsynced && !state.copy_in && state.transaction == 'I' && !state.fatal &&
         client_side_at_boundary() && server_side_at_boundary() && !relay_->forwarding &&
         !relay_->server_stream_broken;
}

awaitable<void> ClientSession::wait_for_cancels_in_flight() {
  // A CancelRequest this client sent may still be on its way to the backend; let
  // it land (send_cancel is bounded) before the connection can serve anyone else.
  if (cancel_slot_.in_flight.load() == 0) co_return;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer tick(executor);
  while (cancel_slot_.in_flight.load() > 0) {
    tick.expires_after(std::chrono::milliseconds(2));
    co_await tick.async_wait(use_nothrow);
  }
}

void ClientSession::request_graceful_close() {
  asio::post(client_.get_executor(), [self = shared_from_this()] {
    self->closing_gracefully_ = true;
    self->close_if_idle();
  });
}

void ClientSession::close_if_idle() {
  if (!client_.is_open()) return;
  if (console_) {
    close_client();  // an admin: nothing to finish
    return;
  }
  // A client still logging in, or logged in without having had an answer yet, has
  // just arrived to do something (pgbench -C during a restart): it may finish its
  // first transaction (bounded by shutdown_timeout) rather than fail at once.
  if (!logged_in_ || !answered_once_) return;
  // Nothing being written to the client (the last reply may still be going out
  // after its server was released); the relay calls again when it is out.
  if (client_write_busy_) return;
  if (server_) {
    // Attached: only between transactions, with nothing owed.
    if (!relay_) return;
    const auto& state = relay_->state;
    if (state.pending != 0 || state.unsynced || state.copy_in || state.transaction != 'I') return;
  }
  std::string out;
  protocol::append_error_response(out, {"FATAL", "57P01", "terminating connection due to administrator command",
                                        "Sluice is shutting down."});
  client_.send_last_words(out);
  log()->info("[c{}] closing {}: shutting down", id_, peer_);
  close_client();  // a parked client's wait ends; an attached one's relay ends and its server is reset
}

void ClientSession::arm_idle_timer() {
  if (closing_gracefully_) {
    close_if_idle();
    if (!client_.is_open()) return;
  }
  const auto& timeouts = context_.config().timeouts;
  if (timeouts.idle_transaction.count() == 0 && timeouts.client_idle.count() == 0) return;
  std::chrono::milliseconds limit{0};
  if (relay_ && server_) {
    const auto& state = relay_->state;
    if (state.pending != 0 || state.unsynced || state.copy_in) return;
    if (state.transaction != 'I') limit = timeouts.idle_transaction;
    if (timeouts.client_idle.count() > 0 && (limit.count() == 0 || timeouts.client_idle < limit)) {
      limit = timeouts.client_idle;
    }
  } else {
    limit = timeouts.client_idle;  // parked: no server, no transaction
  }
  if (limit.count() == 0) return;
  if (!idle_timer_) idle_timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  idle_timer_->expires_after(limit);
  idle_timer_->async_wait([weak = weak_from_this(), generation = ++idle_timer_generation_](error_code ec) {
    if (ec) return;  // cancelled: the client spoke, or the session ended
    auto self = weak.lock();
    if (self && self->idle_timer_generation_ == generation) self->idle_timer_expired();
  });
}

void ClientSession::idle_timer_expired() {
  const auto& timeouts = context_.config().timeouts;
  const bool attached = relay_ && server_;
  // Still idle? (The timer may have fired as bytes arrived.)
  if (attached && (relay_->state.pending != 0 || relay_->state.unsynced || relay_->state.copy_in)) return;
  if (!attached && !login_buffer_.empty()) return;
  const bool in_transaction = attached && relay_->state.transaction != 'I';
  const bool transaction_limit = in_transaction && timeouts.idle_transaction.count() > 0 &&
                                 (timeouts.client_idle.count() == 0 || timeouts.idle_transaction <= timeouts.client_idle);
  std::string out;
  if (transaction_limit) {
    log()->info("[c{}] closing {}: idle in transaction for idle_transaction ({} ms); rolling back", id_, peer_,
                timeouts.idle_transaction.count());
    const std::string detail =
        "Sluice's [timeouts] idle_transaction is " + std::to_string(timeouts.idle_transaction.count()) + " ms.";
    protocol::append_error_response(
        out, {"FATAL", "25P03", "terminating connection due to idle-in-transaction timeout", detail});
  } else {
    log()->info("[c{}] closing {}: idle for client_idle ({} ms){}", id_, peer_, timeouts.client_idle.count(),
                in_transaction ? "; rolling back" : "");
    const std::string detail =
        "Sluice's [timeouts] client_idle is " + std::to_string(timeouts.client_idle.count()) + " ms.";
    protocol::append_error_response(out, {"FATAL", "57P05", "terminating connection due to idle-session timeout", detail});
  }
  // Between replies the client's stream is on a message boundary.
  client_.send_last_words(out);
  // The relay ends as if the client had left; the server is rolled back and reused
  // (a parked client's readiness wait ends and it is closed).
  close_client();
}

void ClientSession::arm_query_timer() {
  const auto limit = context_.config().timeouts.query;
  if (limit.count() == 0 || query_timer_armed_) return;
  if (!query_timer_) query_timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  query_timer_armed_ = true;
  query_timer_->expires_after(limit);
  query_timer_->async_wait([weak = weak_from_this(), generation = ++query_timer_generation_](error_code ec) {
    if (ec) return;
    auto self = weak.lock();
    if (self && self->query_timer_generation_ == generation) self->query_timer_expired();
  });
}

void ClientSession::query_timer_expired() {
  if (!query_timer_armed_) return;
  query_timer_armed_ = false;
  if (!server_ || !relay_ || relay_->state.pending == 0) return;
  const auto limit = context_.config().timeouts.query;
  log()->info("[c{}] statement running longer than query ({} ms); cancelling it on s{} (backend pid {})", id_,
              limit.count(), server_->id(), server_->backend_key.pid);
  // Counted like a client's own cancel: the server is not released (nor reset)
  // until the CancelRequest has landed, so it cannot hit another client's query.
  cancel_slot_.in_flight.fetch_add(1);
  asio::co_spawn(
      client_.get_executor(),
      [](std::string host, std::uint16_t port, protocol::BackendKey key, CancelsInFlight counter) -> awaitable<void> {
        co_await pool::send_cancel(std::move(host), port, key);
        counter->fetch_sub(1);
      }(server_->host, server_->port, server_->backend_key, cancel_counter()),
      asio::detached);
}

void ClientSession::request_sent() {
  arm_query_timer();
  if (relay_->busy) return;
  relay_->busy = true;
  relay_->busy_since = std::chrono::steady_clock::now();
  last_request_ = relay_->busy_since;
  if (!relay_->in_transaction && relay_->state.transaction == 'I') {
    relay_->in_transaction = true;
    relay_->transaction_since = relay_->busy_since;
  }
}

void ClientSession::round_trip_done() {
  answered_once_ = true;
  disarm_query_timer();
  if (!relay_->busy) return;
  relay_->busy = false;
  const auto now = std::chrono::steady_clock::now();
  auto& counters = pool_->counters();
  using std::chrono::microseconds;
  counters.query_us.fetch_add(
      static_cast<std::uint64_t>(std::chrono::duration_cast<microseconds>(now - relay_->busy_since).count()),
      std::memory_order_relaxed);
  if (relay_->in_transaction && relay_->state.transaction == 'I') {
    relay_->in_transaction = false;
    counters.transaction_us.fetch_add(
        static_cast<std::uint64_t>(std::chrono::duration_cast<microseconds>(now - relay_->transaction_since).count()),
        std::memory_order_relaxed);
  }
  flush_counters();
}

void ClientSession::flush_counters() {
  if (!relay_ || !pool_) return;
  auto& counters = pool_->counters();
  auto& relay = *relay_;
  const auto add = [](std::atomic<std::uint64_t>& counter, std::uint64_t delta) {
    if (delta != 0) counter.fetch_add(delta, std::memory_order_relaxed);
  };
  add(counters.queries, relay.state.ready - relay.ready_flushed);
  add(counters.transactions, relay.state.ready_idle - relay.ready_idle_flushed);
  add(counters.bytes_received, relay.bytes_in);
  add(counters.bytes_sent, relay.bytes_out);
  relay.ready_flushed = relay.state.ready;
  relay.ready_idle_flushed = relay.state.ready_idle;
  relay.bytes_in = relay.bytes_out = 0;
}

bool ClientSession::client_stream_at_boundary() const {
  if (!relay_) return true;
  if (!tracking_statements_) return relay_->server_scanner.at_boundary();
  return relay_->server_passing == 0;  // bytes held in server_in were not sent on yet
}

bool ClientSession::release_now() {
  // Done before the pumps stop, so that the connection is back in the pool
  // before this client (or any other) can send its next request.
  if (cancel_slot_.in_flight.load() > 0) return false;
  cancel_slot_.set_target(std::nullopt);
  disarm_query_timer();
  flush_counters();
  // A cancel counted just before the target went: release_server waits for it.
  if (cancel_slot_.in_flight.load() > 0) return false;
  log()->debug("[c{}] released server connection s{}", id_, server_->id());
  if (relay_->discard_on_release) {
    server_.discard();
  } else {
    server_.release_clean();
  }
  return true;
}

awaitable<void> ClientSession::release_server() {
  cancel_slot_.set_target(std::nullopt);
  disarm_query_timer();
  flush_counters();
  co_await wait_for_cancels_in_flight();
  log()->debug("[c{}] released server connection s{}", id_, server_->id());
  const bool trusted = !relay_->discard_on_release;
  recycle_relay(std::move(relay_));
  if (trusted) {
    server_.release_clean();
  } else {
    server_.discard();
  }
}

// ---- Admin console --------------------------------------------------------------

namespace {
std::string_view first_cstr(protocol::Bytes body) {
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(body.data(), 0, body.size()));
  const std::size_t length = nul ? static_cast<std::size_t>(nul - body.data()) : body.size();
  return {reinterpret_cast<const char*>(body.data()), length};
}
}  // namespace


awaitable<void> ClientSession::serve_console() {
  const auto& config = context_.config();
  auto listed = [&](const std::vector<std::string>& users) {
    return std::find(users.begin(), users.end(), user_) != users.end();
  };
  const bool admin = listed(config.admin_users);
  if (!admin && !listed(config.stats_users)) {
    co_await send_fatal("42501", "permission denied for the admin console",
                        "Only users listed in [sluice] admin_users or stats_users may connect to \"" + database_ +
                            "\".");
    co_return;
  }
  log()->info("[c{}] admin console login user={} ({})", id_, user_, admin ? "admin" : "stats");
  std::string out;
  const std::pair<const char*, const char*> parameters[] = {
      {"server_version", "15.0 (sluice " SLUICE_VERSION ")"},
      {"server_encoding", "UTF8"},
      {"client_encoding", "UTF8"},
      {"DateStyle", "ISO, MDY"},
      {"TimeZone", "UTC"},
      {"integer_datetimes", "on"},
      {"standard_conforming_strings", "on"},
  };
  for (const auto& [name, value] : parameters) protocol::append_parameter_status(out, name, value);
  protocol::append_backend_key(out, client_key_);  // not registered: a cancel here is dropped
  protocol::append_ready_for_query(out, 'I');
  if (!co_await write_client(out)) co_return;

  ConsoleData data;
  data.queries = [this](std::size_t limit) { return context_.query_stats().top_n(limit); };
  data.slow = [this](std::size_t) { return context_.recent_slow().recent(); };
  data.version = std::string("sluice ") + SLUICE_VERSION;
  data.pools = [this] { return console_pools(context_); };
  data.stats = [this] { return console_stats(context_); };
  data.databases = [this] { return console_databases(context_); };
  data.config = [this] { return console_config(context_.config()); };
  std::vector<ConsoleConnection> clients, servers;
  data.clients = [&] { return clients; };
  data.servers = [&] { return servers; };
  // Side effects of modify commands that need waiting or other sessions' executors,
  // carried out before the answer is sent (as PgBouncer answers PAUSE once paused).
  std::vector<std::string> pausing;   // databases ("" = all) whose server connections must come back
  std::vector<std::string> killing;   // databases whose clients are closed
  bool shutdown_requested = false;
  data.modify = [&](std::string_view command, std::string_view db) -> std::optional<ConsoleFailure> {
    const std::string database(db);
    if (!database.empty() && context_.config().databases.count(database) == 0) {
      const auto pools = context_.pools().all();
      const bool has_pool = std::any_of(pools.begin(), pools.end(), [&](const auto& p) { return p->database() == database; });
      if (!has_pool) return ConsoleFailure{"3D000", "no such database: " + database, "SHOW DATABASES lists them."};
    }
    auto each_pool = [&](auto action) {
      for (const auto& pool : context_.pools().all())
        if (database.empty() || pool->database() == database) action(*pool);
    };
    log()->info("[c{}] admin console: {} {}", id_, command, database);
    if (command == "PAUSE") {
      context_.pools().pause(database);
      pausing.push_back(database);
    } else if (command == "RESUME") {
      context_.pools().resume(database);
    } else if (command == "RECONNECT") {
      each_pool([](pool::Pool& pool) { pool.reconnect(); });
    } else if (command == "KILL") {
      context_.pools().pause(database);
      each_pool([](pool::Pool& pool) { pool.close_idle(); });
      killing.push_back(database);
    } else if (command == "RELOAD") {
      if (!context_.reload) return ConsoleFailure{"0A000", "RELOAD is not available", ""};
      const std::string errors = context_.reload();
      if (!errors.empty()) {
        return ConsoleFailure{"F0000", "configuration file not reloaded; the running configuration stays", errors};
      }
    } else if (command == "SHUTDOWN") {
      if (!context_.shutdown) return ConsoleFailure{"0A000", "SHUTDOWN is not available", ""};
      shutdown_requested = true;
    }
    return std::nullopt;
  };
  for (;;) {
    std::size_t consumed = 0;
    auto message = co_await read_client_message(consumed);
    if (!message) co_return;
    if (message->type == 'X') break;
    if (message->type != 'Q') {
      co_await send_fatal("08P01", "the admin console supports the simple query protocol only");
      co_return;
    }
    const std::string_view sql = first_cstr(message->body);
    std::string answer;
    if (is_show_active(sql)) {
      answer = co_await show_active();
    } else {
      const std::string upper_sql = [&] {
        std::string u(sql);
        for (char& ch : u) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        return u;
      }();
      clients.clear();
      servers.clear();
      if (upper_sql.find("CLIENTS") != std::string::npos || upper_sql.find("SERVERS") != std::string::npos) {
        for (auto& rows : co_await gather_connection_rows()) {
          clients.push_back(std::move(rows.client));
          if (rows.server) servers.push_back(std::move(*rows.server));
        }
        for (auto& idle : console_idle_servers(context_)) servers.push_back(std::move(idle));
      }
      pausing.clear();
      killing.clear();
      shutdown_requested = false;
      answer = admin_console_answer(sql, admin, data);
      for (const auto& database : killing) co_await close_sessions_of(database);
      if (!pausing.empty()) {
        // PAUSE answers once every server connection of those pools is back.
        auto executor = co_await asio::this_coro::executor;
        asio::steady_timer tick(executor);
        auto busy = [&] {
          for (const auto& pool : context_.pools().all()) {
            const bool matches = std::any_of(pausing.begin(), pausing.end(), [&](const std::string& db) {
              return db.empty() || pool->database() == db;
            });
            if (matches && pool->open_connections() > pool->counts().idle) return true;
          }
          return false;
        };
        while (busy()) {
          tick.expires_after(std::chrono::milliseconds(10));
          co_await tick.async_wait(use_nothrow);
        }
      }
      if (shutdown_requested) context_.shutdown();
    }
    login_buffer_.consume(consumed);
    if (!co_await write_client(answer)) co_return;
  }
  close_client();
}

bool ClientSession::is_show_active(std::string_view sql) {
  std::string words;
  for (char c : sql) {
    if (c == ';') break;
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!words.empty() && words.back() != ' ') words.push_back(' ');
    } else {
      words.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  while (!words.empty() && words.back() == ' ') words.pop_back();
  return words == "show active";
}

std::optional<ClientSession::ActiveStatement> ClientSession::active_statement() const {
  if (!timing_ || timing_->in_flight.empty() || !server_) return std::nullopt;
  const auto& statement = timing_->in_flight.front();
  ActiveStatement active;
  active.database = database_;
  active.user = user_;
  if (sent_parameters_) {
    for (const auto& [name, value] : *sent_parameters_)
      if (name == "application_name") active.application_name = value;
  }
  active.client = peer_;
  active.protocol = statement.kind == 'Q' ? "simple" : "extended";
  if (statement.shape) {
    active.query = statement.shape->normalized;
  } else if (statement.text) {
    if (log_parameters_) {
      active.query = *statement.text;
    } else if (auto shape = context_.shapes().find(*statement.text)) {
      active.query = shape->normalized;
    } else {
      active.query = token_shape(*statement.text).normalized;  // not parsed yet: the token scan's text
    }
  }
  active.backend_pid = static_cast<std::int32_t>(server_->backend_key.pid);
  active.running = std::chrono::steady_clock::now() - statement.start;
  active.slow = active.running >= slow_threshold_;
  return active;
}

awaitable<std::string> ClientSession::show_active() {
  // Each session's state is read on its own executor (strand), one after another,
  // so no lock is shared with any relay.
  std::vector<ActiveStatement> running;
  const auto home = co_await asio::this_coro::executor;
  for (auto& session : context_.sessions()) {
    if (session.get() == this) continue;
    auto to_session = asio::post(session->executor(), asio::use_awaitable);
    co_await std::move(to_session);
    if (auto active = session->active_statement()) running.push_back(std::move(*active));
  }
  auto back_home = asio::post(home, asio::use_awaitable);
  co_await std::move(back_home);
  std::sort(running.begin(), running.end(), [](const auto& a, const auto& b) { return a.running > b.running; });
  std::string out;
  const std::string_view columns[] = {"database", "user",        "application_name", "client", "backend_pid",
                                      "protocol", "running_ms", "slow",             "query"};
  append_text_row_description(out, columns);
  char ms[32];
  for (const auto& active : running) {
    std::snprintf(ms, sizeof ms, "%.3f", std::chrono::duration<double, std::milli>(active.running).count());
    const std::optional<std::string> row[] = {active.database, active.user, active.application_name, active.client,
                                              std::to_string(active.backend_pid), active.protocol, std::string(ms),
                                              std::string(active.slow ? "yes" : "no"), active.query};
    append_text_data_row(out, row);
  }
  protocol::append_command_complete(out, "SHOW");
  protocol::append_ready_for_query(out, 'I');
  co_return out;
}

std::optional<ClientSession::ConnectionRows> ClientSession::connection_rows() const {
  if (!logged_in_ && !console_) return std::nullopt;
  if (user_.empty()) return std::nullopt;
  const auto steady_now = std::chrono::steady_clock::now();
  const auto system_now = std::chrono::system_clock::now();
  const auto to_system = [&](std::chrono::steady_clock::time_point t) -> std::chrono::system_clock::time_point {
    if (t == std::chrono::steady_clock::time_point{}) return {};
    return system_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(steady_now - t);
  };
  ConnectionRows rows;
  auto& c = rows.client;
  c.user = user_;
  c.database = database_;
  c.state = waiting_for_server_ ? "waiting" : "active";
  const auto colon = peer_.rfind(':');
  c.addr = peer_.substr(0, colon);
  c.port = colon == std::string::npos ? 0 : std::atoi(peer_.c_str() + colon + 1);
  error_code ec;
  if (auto local = client_.socket().local_endpoint(ec); !ec) {
    c.local_addr = local.address().to_string();
    c.local_port = local.port();
  }
  c.connect_time = connected_at_;
  c.request_time = to_system(last_request_);
  if (waiting_for_server_) {
    c.wait_us = std::chrono::duration_cast<std::chrono::microseconds>(steady_now - wait_started_).count();
  }
  c.id = id_;
  c.remote_pid = client_key_.pid;
  if (sent_parameters_) {
    for (const auto& [name, value] : *sent_parameters_)
      if (name == "application_name") c.application_name = value;
  }
  if (server_) {
    c.link = server_->id();
    ConsoleConnection& s = rows.server.emplace();
    s.user = user_;
    s.database = database_;
    s.state = "active";
    s.addr = server_->host;
    s.port = server_->port;
    if (auto local = server_->socket().local_endpoint(ec); !ec) {
      s.local_addr = local.address().to_string();
      s.local_port = local.port();
    }
    s.connect_time = to_system(server_->created_at);
    s.request_time = c.request_time;
    s.id = server_->id();
    s.link = id_;
    s.remote_pid = server_->backend_key.pid;
    s.application_name = c.application_name;
  }
  return rows;
}

awaitable<std::vector<ClientSession::ConnectionRows>> ClientSession::gather_connection_rows() {
  std::vector<ConnectionRows> all;
  const auto home = co_await asio::this_coro::executor;
  for (auto& session : context_.sessions()) {
    if (session.get() != this) {
      auto to_session = asio::post(session->executor(), asio::use_awaitable);
      co_await std::move(to_session);
    } else {
      auto back = asio::post(home, asio::use_awaitable);
      co_await std::move(back);
    }
    if (auto rows = session->connection_rows()) all.push_back(std::move(*rows));
  }
  auto back_home = asio::post(home, asio::use_awaitable);
  co_await std::move(back_home);
  co_return all;
}

awaitable<void> ClientSession::close_sessions_of(std::string database) {
  const auto home = co_await asio::this_coro::executor;
  int closed = 0;
  for (auto& session : context_.sessions()) {
    if (session.get() == this) continue;
    auto to_session = asio::post(session->executor(), asio::use_awaitable);
    co_await std::move(to_session);
    if (session->logged_in_ && session->database_ == database) {
      ++closed;
      session->request_close(true);
    }
  }
  auto back_home = asio::post(home, asio::use_awaitable);
  co_await std::move(back_home);
  log()->info("[c{}] KILL {}: closed {} client connection(s)", id_, database, closed);
}

// ---- Statement timing (slow-query log) ---------------------------------------------

// Observers that also time statements: the client's Query/Parse/Bind/Execute and
// the server's CommandComplete/EmptyQuery/PortalSuspended/ErrorResponse/ReadyForQuery
// bodies are looked at only when a slow-query log is configured.
template <class Base>
struct ClientSession::RecordingFrontend {
  Base base;
  ClientSession* session;  // null: not recording
  bool inspect(char type) {
    if (base.inspect(type)) return true;
    return session && (type == 'Q' || type == 'P' || type == 'B' || type == 'E' || type == 'C');
  }
  protocol::ScanAction on_message(char type, protocol::Bytes body) {
    if (type == 'X') return base.on_message(type, body);
    session->note_client_message(type, body);
    return protocol::ScanAction::next;
  }
};

template <class Base>
struct ClientSession::RecordingBackend {
  Base base;
  ClientSession* session;
  bool inspect(char type) {
    const bool wanted = base.inspect(type);
    return wanted || (session && (type == 'C' || type == 'I' || type == 's'));
  }
  protocol::ScanAction on_message(char type, protocol::Bytes body) {
    if (type == 'Z' || type == 'E' || type == 'S') base.on_message(type, body);
    if (session) session->note_server_message(type, body);
    return protocol::ScanAction::next;
  }
};


void ClientSession::note_client_message(char type, protocol::Bytes body) {
  auto& timing = this->timing();
  auto start_statement = [&](char kind, std::shared_ptr<const std::string> text,
                             std::shared_ptr<const QueryShape> shape = nullptr) {
    InFlightStatement statement;
    statement.kind = kind;
    if (timing.attach_started) {
      // This request waited for a server connection before any byte of it was
      // read (or was attached at once, without a wait, as it arrived).
      statement.start = *timing.attach_started;
      statement.wait = timing.attach_wait;
      timing.attach_started.reset();
    } else {
      statement.start = std::chrono::steady_clock::now();
    }
    statement.text = std::move(text);
    statement.shape = std::move(shape);
    // A devector's pop_front never moves its start back: emptied by pops, it would
    // take the slow path (moving its start) at every push once its end is reached.
    if (timing.in_flight.empty()) timing.in_flight.clear();
    timing.in_flight.push_back(std::move(statement));
  };
  switch (type) {
    case 'Q': {
      // A known shape is all the statement needs: the text is copied only when it
      // is new (parsed off the relay path later) or is to be logged as sent.
      const std::string_view sql = first_cstr(body);
      auto shape = log_parameters_ ? nullptr : context_.shapes().find(sql);
      if (shape) {
        start_statement('Q', nullptr, std::move(shape));
      } else {
        start_statement('Q', std::make_shared<const std::string>(sql));
      }
      break;
    }
    case 'P':
      if (auto parse = protocol::parse_parse(body)) {
        // Drivers parse the unnamed statement again for every execution, mostly
        // with the same text: keep the text (and its shape) then.
        const std::string_view sql = first_cstr(parse->tail);
        auto& entry = timing.statement_slot(parse->name);
        if (entry.text && *entry.text == sql) break;
        const auto& previous = timing.previous_unnamed_statement;
        if (parse->name.empty() && previous.text && *previous.text == sql) {
          entry = previous;
        } else {
          entry = {std::make_shared<const std::string>(sql), nullptr};
        }
      }
      break;
    case 'B':
      if (auto bind = protocol::parse_bind(body)) {
        auto& portal = timing.portal_slot(bind->portal);
        auto* statement = timing.find_statement(bind->statement);
        if (statement == nullptr) {
          portal = {};
          break;
        }
        // The shape, once the shape service knows it (it learns it from the first
        // execution's finish_statement); until then finish_statement looks it up.
        auto& known = *statement;
        if (!known.shape && known.text) known.shape = context_.shapes().find(*known.text);
        portal = known;
      }
      break;
    case 'E': {
      auto* portal = timing.find_portal(first_cstr(body));
      if (portal == nullptr) {
        start_statement('E', nullptr);
      } else {
        start_statement('E', portal->text, portal->shape);
      }
      break;
    }
    case 'C':
      // Close: the text is not needed any more (drivers that cache statements
      // close the ones they evict, so the texts kept stay bounded).
      if (auto target = protocol::parse_target(body)) {
        if (target->kind == 'S') {
          if (target->name.empty()) {
            timing.unnamed_statement = {};
          } else {
            timing.statement_texts.erase(std::string(target->name));
          }
        } else if (target->name.empty()) {
          timing.unnamed_portal = {};
        } else {
          timing.portal_texts.erase(std::string(target->name));
        }
      }
      break;
  }
}

void ClientSession::note_server_message(char type, protocol::Bytes body) {
  if (!timing_) return;  // nothing was sent that is timed
  auto& in_flight = timing_->in_flight;
  switch (type) {
    case 'C': {
      if (in_flight.empty()) return;
      auto& statement = in_flight.front();
      const std::string_view tag = first_cstr(body);
      statement.command = std::string(tag.substr(0, tag.find(' ')));
      const auto last_space = tag.rfind(' ');
      if (last_space != std::string_view::npos) {
        std::int64_t rows = 0;
        const auto digits = tag.substr(last_space + 1);
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), rows);
        if (ec == std::errc() && end == digits.data() + digits.size()) statement.rows = rows;
      }
      if (statement.kind == 'E') {
        finish_statement(statement);
        in_flight.pop_front();
      }
      break;
    }
    case 'I':
    case 's':
      if (!in_flight.empty() && in_flight.front().kind == 'E') {
        finish_statement(in_flight.front());
        in_flight.pop_front();
      }
      break;
    case 'E': {
      if (in_flight.empty()) return;
      auto& statement = in_flight.front();
      if (statement.sqlstate.empty()) {
        auto fields = protocol::parse_error_fields(body);
        statement.sqlstate = fields ? std::string(fields->sqlstate) : "XX000";
      }
      if (statement.kind == 'E') {
        finish_statement(statement);
        in_flight.pop_front();
        // PostgreSQL skips the batch's other Executes: they end at ReadyForQuery.
        while (!in_flight.empty() && in_flight.front().kind == 'E') in_flight.pop_front();
      }
      break;
    }
    case 'Z':
      // A request with no Query or Execute (say, Parse/Describe/Sync) did not use
      // the wait for a server: it must not be charged to a later statement.
      timing_->attach_started.reset();
      while (!in_flight.empty() && in_flight.front().kind == 'E') in_flight.pop_front();
      if (!in_flight.empty()) {
        finish_statement(in_flight.front());
        in_flight.pop_front();
      }
      break;
  }
}

namespace {
void record_shape_sample(Context& context, std::string_view database, std::string_view user, const QueryShape& shape,
                         std::chrono::nanoseconds duration, std::chrono::nanoseconds wait,
                         std::optional<std::int64_t> rows, bool error, std::chrono::system_clock::time_point at,
                         QuerySlotHint* hint = nullptr) {
  QuerySample sample;
  sample.database = database;
  sample.user = user;
  sample.fingerprint = shape.fingerprint;
  sample.query = shape.normalized;
  sample.duration = duration;
  sample.wait = wait;
  sample.server = duration - wait;
  sample.rows = rows ? static_cast<std::uint64_t>(std::max<std::int64_t>(0, *rows)) : 0;
  sample.error = error;
  sample.at = at;
  sample.hint = hint;
  context.query_stats_shard().record(sample);
}

void publish_slow(Context& context, SlowQueryRecord record, const QueryShape* shape, const std::string& text,
                  bool log_parameters) {
  if (shape) {
    record.fingerprint = shape->fingerprint;
    record.query = log_parameters ? text : shape->normalized;
  }
  if (auto* slow_log = context.slow_log()) {
    context.recent_slow().push(record);
    slow_log->submit(std::move(record));
  } else {
    context.recent_slow().push(std::move(record));
  }
}
}  // namespace

void ClientSession::finish_statement(InFlightStatement& statement) {
  if (!statement.sqlstate.empty() && pool_) pool_->counters().add_error(statement.sqlstate);
  const auto now = std::chrono::steady_clock::now();
  const auto duration = std::chrono::duration_cast<std::chrono::nanoseconds>(now - statement.start);
  const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(statement.wait);
  const auto at = wall_time_of(now);
  std::optional<SlowQueryRecord> slow;
  if (duration >= slow_threshold_) {
    using Ms = std::chrono::duration<double, std::milli>;
    SlowQueryRecord& record = slow.emplace();
    record.ts = at;
    record.duration_ms = Ms(duration).count();
    record.wait_ms = Ms(wait).count();
    record.server_ms = Ms(duration - wait).count();
    record.database = database_;
    record.user = user_;
    if (sent_parameters_) {
      for (const auto& [name, value] : *sent_parameters_)
        if (name == "application_name") record.application_name = value;
    }
    record.client = peer_;
    if (server_) {
      record.backend = server_->address;
      record.backend_pid = static_cast<std::int32_t>(server_->backend_key.pid);
    }
    record.protocol = statement.kind == 'Q' ? "simple" : "extended";
    record.command = statement.command;
    record.rows = statement.rows;
    record.sqlstate = statement.sqlstate;
  }
  const bool error = !statement.sqlstate.empty();
  static const std::string kNoText;
  const std::string& text = statement.text ? *statement.text : kNoText;
  // The shape: found when the statement started, or a per-thread cache hit for any
  // statement seen before (literal values aside), or one the shape service published.
  std::shared_ptr<const QueryShape> found;
  if (!statement.shape && statement.text) found = context_.shapes().find(text);
  const auto& shape = statement.shape ? statement.shape : found;
  if (shape) {
    record_shape_sample(context_, database_, user_, *shape, duration, wait, statement.rows, error, at,
                        timing_ ? &timing_->stats_hint : nullptr);
    if (slow) publish_slow(context_, std::move(*slow), shape.get(), text, log_parameters_);
    return;
  }
  if (!statement.text) {
    if (slow) publish_slow(context_, std::move(*slow), nullptr, {}, false);
    return;
  }
  // New to this thread: parse (5-20 µs, up to ms for huge texts) and record on the
  // shape service's thread, never on the relay path.
  context_.shapes().submit(
      *statement.text,
      [context = &context_, database = database_, user = user_, duration, wait, rows = statement.rows, error, at,
       slow = std::move(slow), text = log_parameters_ ? *statement.text : std::string(),
       log_parameters = log_parameters_](std::shared_ptr<const QueryShape> shape) mutable {
        record_shape_sample(*context, database, user, *shape, duration, wait, rows, error, at);
        if (slow) publish_slow(*context, std::move(*slow), shape.get(), text, log_parameters);
      });
}

// ---- Relay ------------------------------------------------------------------------

std::string ClientSession::client_length_error(bool too_large) const {
  if (!too_large) return "invalid message length";
  return "message length exceeds max_message_size (" + std::to_string(context_.config().max_message_size) +
         " bytes)";
}

// Bytes of a scanned client chunk to pass on. Terminate is the last thing a
// client sends and is not forwarded; everything before it is. If the Terminate's
// first bytes already went out with an earlier chunk, the server holds part of a
// message and the connection must not be reused.
std::size_t ClientSession::forward_length(const protocol::StreamScanner::Outcome& outcome, std::size_t size) {
  if (!outcome.stopped) return size;
  if (outcome.stop_message_begin == protocol::StreamScanner::npos) {
    relay_->server_stream_broken = true;
    return 0;
  }
  return outcome.stop_message_begin;
}

awaitable<ClientSession::RelayEnd> ClientSession::pump_client_to_server() {
  // Stopped (when the server pump ends first) only while waiting to read; a read
  // that completed anyway is still relayed, and writes always finish.
  co_await asio::this_coro::throw_if_cancelled(false);
  RecordingFrontend<protocol::FrontendObserver> observer{{relay_->state}, recording_ ? this : nullptr};
  // Bytes that arrived with the last login message belong to the relay: they go
  // through the same path as the first read.
  std::size_t carried = login_buffer_.size();
  relay_->bytes_in += carried;  // read earlier (at login, or while the last server was being released)
  if (carried > 0) {
    if (relay_->client_buffer.size() < carried) relay_->client_buffer.resize(carried);
    std::memcpy(relay_->client_buffer.data(), login_buffer_.data().data(), carried);
    login_buffer_.consume(carried);
  }
  for (;;) {
    std::size_t n = carried;
    carried = 0;
    if (n == 0) {
      auto [ec, read] = co_await client_.async_read_client(asio::buffer(relay_->client_buffer),
                                                            pool::DrainedWhen::request_awaits_answer,
                                                            relay_->client_scanner.at_boundary(), use_nothrow);
      if (ec == asio::error::operation_aborted && is_cancelled(co_await kCancellationState))
        co_return RelayEnd::cancelled;
      if (ec) {
        client_gone_ = true;
        co_return RelayEnd::client_closed;
      }
      n = read;
      relay_->bytes_in += n;
      disarm_idle_timer();
      if (!server_) {
        // The server pump released the server while this read completed: the bytes
        // are the client's next request, for the next server (and counted there).
        relay_->bytes_in -= n;
        auto space = login_buffer_.prepare(n);
        std::memcpy(space.data(), relay_->client_buffer.data(), n);
        login_buffer_.commit(n);
        co_return RelayEnd::cancelled;
      }
    }
    auto outcome = relay_->client_scanner.feed(protocol::Bytes(relay_->client_buffer.data(), n), observer);
    if (!outcome) {
      relay_->protocol_error = client_length_error(outcome.error() == protocol::errc::message_too_large);
      co_return RelayEnd::client_protocol_error;
    }
    const std::size_t forward = forward_length(*outcome, n);
    if (forward > 0) {
      relay_->forwarding = true;  // stays set if this write is cut short
      auto sent = server_->stream().send_now(relay_->client_buffer.data(), forward);
      if (!sent) co_return RelayEnd::server_closed;
      if (*sent < forward) {
        auto token = uncancellable();
        auto [wec, written] = co_await asio::async_write(
            server_->stream(), asio::buffer(relay_->client_buffer.data() + *sent, forward - *sent), token);
        if (wec) co_return RelayEnd::server_closed;
        relay_->forwarding = false;
        // The server may have answered everything while this write was finishing.
        if (release_due()) co_return RelayEnd::released;
      }
      relay_->forwarding = false;
    }
    if (relay_->state.pending > 0) request_sent();
    if (outcome->stopped) co_return RelayEnd::client_terminated;
    if (is_cancelled(co_await kCancellationState)) co_return RelayEnd::cancelled;
    maybe_grow(relay_->client_buffer, n);
  }
}

awaitable<ClientSession::RelayEnd> ClientSession::pump_server_to_client() {
  co_await asio::this_coro::throw_if_cancelled(false);  // as in pump_client_to_server
  ParameterSink parameters{&*server_, this};
  RecordingBackend<protocol::BackendObserver<ParameterSink>> observer{{relay_->state, &parameters},
                                                                  recording_ ? this : nullptr};
  for (;;) {
    auto [ec, n] = co_await server_->stream().async_read_reply(asio::buffer(relay_->server_buffer), use_nothrow);
    if (ec == asio::error::operation_aborted && is_cancelled(co_await kCancellationState))
      co_return RelayEnd::cancelled;
    if (ec) co_return RelayEnd::server_closed;
    relay_->bytes_out += n;
    auto outcome = relay_->server_scanner.feed(protocol::Bytes(relay_->server_buffer.data(), n), observer);
    // Back to the pool before the client sees the reply that ends its transaction:
    // once it has it, it (or anyone) may ask for a server again at once.
    const bool released = outcome && release_due() && release_now();
    auto sent = client_.send_now(relay_->server_buffer.data(), n);
    if (sent && *sent < n) {
      auto token = uncancellable();
      client_write_busy_ = true;
      auto [wec, written] =
          co_await asio::async_write(client_, asio::buffer(relay_->server_buffer.data() + *sent, n - *sent), token);
      client_write_busy_ = false;
      if (wec) sent.reset();
    }
    if (!outcome) co_return RelayEnd::server_protocol_error;
    if (!sent) co_return RelayEnd::client_closed;
    if (relay_->state.pending == 0) round_trip_done();
    if (!released) arm_idle_timer();
    if (pool_mode_ != config::PoolMode::session) {
      if (released || release_due()) co_return RelayEnd::released;  // resume() waits for cancels in flight
      if (pool_mode_ == config::PoolMode::statement && relay_->state.pending == 0 && !relay_->state.unsynced &&
          relay_->state.transaction != 'I') {
        co_return RelayEnd::transaction_block;
      }
    }
    if (is_cancelled(co_await kCancellationState)) co_return RelayEnd::cancelled;
    maybe_grow(relay_->server_buffer, n);
  }
}

// ---- Session mode over plain TCP: the pumps as handler chains ----------------------
// What pump_client_to_server and pump_server_to_client do, step for step, with a
// completion handler where they co_await. Resuming a coroutine in a `||` group
// costs several hundred instructions per read (its frame, executor and
// cancellation slot bookkeeping); calling a handler costs a call. The chains run
// on the session's executor, one step at a time, like the two pumps did.

template <class Initiate, class Handler>
void ClientSession::on_session_executor(Initiate&& initiate, Handler&& handler) {
  if (relay_->server_on_session_executor) {
    initiate(std::forward<Handler>(handler));
  } else {
    initiate(asio::bind_executor(executor(), std::forward<Handler>(handler)));
  }
}

template <class Step>
void ClientSession::plain_step(Step&& step) noexcept {
  try {
    step();
  } catch (const std::exception& e) {
    try {
      relay_->protocol_error = e.what();
    } catch (const std::exception&) {
      // Out of memory for the text: the end matters more than its explanation.
    }
    plain_direction_done(RelayEnd::internal_error);
  }
}

awaitable<ClientSession::RelayEnd> ClientSession::relay_plain_session() {
  auto& relay = *relay_;
  relay.plain_end.reset();
  relay.plain_stopping = false;
  relay.client_reading = relay.server_reading = false;
  relay.server_on_session_executor = server_->socket().get_executor() == executor();
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(RelayEnd)>(
      [this](auto waiter) {
        auto& relay = *relay_;
        struct Waiter final : RelayWaiter {
          explicit Waiter(decltype(waiter) w) : handler(std::move(w)) {}
          void complete(RelayEnd end) override { std::move(handler)(end); }
          decltype(waiter) handler;
        };
        relay.plain_waiter = std::make_unique<Waiter>(std::move(waiter));
        relay.plain_running = 2;
        plain_step([&] { read_server_plain(); });
        // Bytes that arrived with the last login message belong to the relay.
        const std::size_t carried = login_buffer_.size();
        plain_step([&] {
          if (carried == 0) return read_client_plain();
          relay.bytes_in += carried;
          if (relay.client_buffer.size() < carried) relay.client_buffer.resize(carried);
          std::memcpy(relay.client_buffer.data(), login_buffer_.data().data(), carried);
          login_buffer_.consume(carried);
          relay_client_plain(carried);
        });
      },
      asio::use_awaitable);
}

void ClientSession::plain_direction_done(RelayEnd end) {
  auto& relay = *relay_;
  if (!relay.plain_end) {
    // The first end is the relay's; the other direction stops at its next read (a
    // write under way finishes first, as in the `||` of the pumps).
    relay.plain_end = end;
    relay.plain_stopping = true;
    error_code ignored;
    if (relay.client_reading) client_.socket().cancel(ignored);
    if (relay.server_reading && server_) server_->socket().cancel(ignored);
  }
  if (--relay.plain_running > 0) return;
  // Posted: the last stop may come inside relay_plain_session's initiation.
  asio::post(executor(), [waiter = std::move(relay.plain_waiter), end = *relay.plain_end] { waiter->complete(end); });
}

void ClientSession::read_client_plain() {
  auto& relay = *relay_;
  if (relay.plain_stopping) return plain_direction_done(RelayEnd::cancelled);
  relay.client_reading = true;
  // The client socket's executor is the session's.
  client_.async_read_client(asio::buffer(relay.client_buffer), pool::DrainedWhen::request_awaits_answer,
                            relay.client_scanner.at_boundary(), [this](error_code ec, std::size_t n) {
                              relay_->client_reading = false;
                              if (ec == asio::error::operation_aborted && relay_->plain_stopping)
                                return plain_direction_done(RelayEnd::cancelled);
                              if (ec) {
                                client_gone_ = true;
                                return plain_direction_done(RelayEnd::client_closed);
                              }
                              relay_->bytes_in += n;
                              plain_step([&] {
                                disarm_idle_timer();
                                relay_client_plain(n);
                              });
                            });
}

void ClientSession::relay_client_plain(std::size_t n) {
  auto& relay = *relay_;
  RecordingFrontend<protocol::FrontendObserver> observer{{relay.state}, recording_ ? this : nullptr};
  auto outcome = relay.client_scanner.feed(protocol::Bytes(relay.client_buffer.data(), n), observer);
  if (!outcome) {
    relay.protocol_error = client_length_error(outcome.error() == protocol::errc::message_too_large);
    return plain_direction_done(RelayEnd::client_protocol_error);
  }
  const std::size_t forward = forward_length(*outcome, n);
  const bool terminated = outcome->stopped;
  if (forward > 0) {
    relay.forwarding = true;  // stays set if this write is cut short
    auto sent = server_->stream().send_now(relay.client_buffer.data(), forward);
    if (!sent) return plain_direction_done(RelayEnd::server_closed);
    if (*sent < forward) {
      on_session_executor(
          [&](auto handler) {
            asio::async_write(server_->stream(),
                              asio::buffer(relay.client_buffer.data() + *sent, forward - *sent), std::move(handler));
          },
          [this, n, terminated](error_code ec, std::size_t) {
            if (ec) return plain_direction_done(RelayEnd::server_closed);
            relay_->forwarding = false;
            plain_step([&] { client_plain_relayed(n, terminated); });
          });
      return;
    }
    relay.forwarding = false;
  }
  client_plain_relayed(n, terminated);
}

void ClientSession::client_plain_relayed(std::size_t n, bool terminated) {
  if (relay_->state.pending > 0) request_sent();
  if (terminated) return plain_direction_done(RelayEnd::client_terminated);
  maybe_grow(relay_->client_buffer, n);
  read_client_plain();
}

void ClientSession::read_server_plain() {
  auto& relay = *relay_;
  if (relay.plain_stopping) return plain_direction_done(RelayEnd::cancelled);
  relay.server_reading = true;
  on_session_executor(
      [&](auto handler) { server_->stream().async_read_reply(asio::buffer(relay.server_buffer), std::move(handler)); },
      [this](error_code ec, std::size_t n) {
        relay_->server_reading = false;
        plain_step([&] { relay_server_plain(ec, n); });
      });
}

void ClientSession::relay_server_plain(error_code ec, std::size_t n) {
  auto& relay = *relay_;
  if (ec == asio::error::operation_aborted && relay.plain_stopping) return plain_direction_done(RelayEnd::cancelled);
  if (ec) return plain_direction_done(RelayEnd::server_closed);
  relay.bytes_out += n;
  ParameterSink parameters{&*server_, this};
  RecordingBackend<protocol::BackendObserver<ParameterSink>> observer{{relay.state, &parameters},
                                                                  recording_ ? this : nullptr};
  const bool scanned = relay.server_scanner.feed(protocol::Bytes(relay.server_buffer.data(), n), observer).has_value();
  auto sent = client_.send_now(relay.server_buffer.data(), n);
  if (sent && *sent < n) {
    client_write_busy_ = true;
    asio::async_write(client_, asio::buffer(relay.server_buffer.data() + *sent, n - *sent),
                      [this, n, scanned](error_code wec, std::size_t) {
                        client_write_busy_ = false;
                        plain_step([&] { server_plain_relayed(n, scanned, !wec); });
                      });
    return;
  }
  server_plain_relayed(n, scanned, sent.has_value());
}

void ClientSession::server_plain_relayed(std::size_t n, bool scanned, bool delivered) {
  if (!scanned) return plain_direction_done(RelayEnd::server_protocol_error);
  if (!delivered) return plain_direction_done(RelayEnd::client_closed);
  if (relay_->state.pending == 0) round_trip_done();
  arm_idle_timer();
  maybe_grow(relay_->server_buffer, n);
  read_server_plain();
}

// ---- Relay with shared prepared statements (transaction/statement mode) ----------------

namespace {
// A message longer than this is streamed through instead of being held whole; only
// small messages are ever rewritten, dropped or answered here.
constexpr std::size_t kLargestHeldMessage = 256 * 1024;
// Requests in flight (sent or answered here) past which a client is not read.
constexpr std::size_t kMaxQueuedRequests = 100000;
// Batches larger than this are not kept for a retry after a stale plan.
constexpr std::size_t kMaxReplayedBatch = 64 * 1024;

}  // namespace

bool ClientSession::client_side_at_boundary() const {
  if (!tracking_statements_) return relay_->client_scanner.at_boundary();
  return relay_->client_in.empty() && relay_->client_passing == 0;
}

bool ClientSession::server_side_at_boundary() const {
  if (!tracking_statements_) return relay_->server_scanner.at_boundary();
  return relay_->server_in.empty() && relay_->server_passing == 0 && relay_->requests.empty();
}

awaitable<bool> ClientSession::send_to_server(const std::uint8_t* data, std::size_t size) {
  if (size == 0) co_return true;
  if (relay_->server_write_busy) {
    // The other pump is finishing a write (only a retried batch does this): wait
    // for it, so that messages never interleave.
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer tick(executor);
    while (relay_->server_write_busy) {
      tick.expires_after(std::chrono::milliseconds(1));
      auto token = uncancellable();
      co_await tick.async_wait(token);
    }
    if (!server_) co_return false;  // released meanwhile
  }
  relay_->forwarding = true;  // stays set if this write is cut short
  auto sent = server_->stream().send_now(data, size);
  if (!sent) co_return false;
  if (*sent < size) {
    relay_->server_write_busy = true;
    auto token = uncancellable();
    auto [ec, written] = co_await asio::async_write(server_->stream(), asio::buffer(data + *sent, size - *sent), token);
    relay_->server_write_busy = false;
    if (ec) co_return false;
  }
  relay_->forwarding = false;
  co_return true;
}

void ClientSession::record_batch(char type, protocol::Bytes raw) {
  auto& relay = *relay_;
  if (relay.batch_complete) {
    relay.batch.clear();
    relay.batch_complete = false;
    relay.batch_replayable = relay.state.transaction == 'I' && relay.state.pending == 0 && relay.requests.empty();
    relay.batch_executed = false;
    relay.batch_retried = false;
    relay.batch_binds_answered = 0;
  }
  if (type == 'S') relay.batch_complete = true;
  const bool extended = type == 'P' || type == 'B' || type == 'D' || type == 'E' || type == 'C' || type == 'H' ||
                        type == 'S';
  if (!extended || relay.batch.size() + raw.size() > kMaxReplayedBatch) relay.batch_replayable = false;
  if (relay.batch_replayable) relay.batch.append(as_text(raw));
}

bool ClientSession::stale_plan_retryable(protocol::Bytes error_body) const {
  const auto& relay = *relay_;
  if (!relay.batch_replayable || !relay.batch_complete || relay.batch_executed || relay.batch_retried ||
      relay.requests.empty() || relay.requests.back().type != 'S' || relay.forwarding) {
    return false;
  }
  // Exactly one Sync queued (the batch's own): nothing was sent after it.
  if (std::count_if(relay.requests.begin(), relay.requests.end(), [](const auto& r) { return r.type == 'S'; }) != 1) {
    return false;
  }
  auto fields = protocol::parse_error_fields(error_body);
  if (!fields || fields->sqlstate != "0A000") return false;
  // Only when the client asks for the portal's description after the failing
  // Bind: a client that decodes rows with a description cached from before would
  // misread the new ones (asyncpg, pgx, pgjdbc re-prepare on this very error).
  bool describes_portal = false;
  std::int64_t binds = 0;
  protocol::Bytes rest(reinterpret_cast<const std::uint8_t*>(relay.batch.data()), relay.batch.size());
  while (rest.size() >= protocol::kHeaderSize) {
    const std::size_t total = std::size_t{protocol::read_u32(rest.data() + 1)} + 1;
    if (total > rest.size()) break;
    const char type = static_cast<char>(rest[0]);
    if (type == 'B') ++binds;
    if (type == 'D' && binds > relay.batch_binds_answered && total > protocol::kHeaderSize &&
        rest[protocol::kHeaderSize] == 'P') {
      describes_portal = true;
    }
    rest = rest.subspan(total);
  }
  if (!describes_portal) return false;
  // The routine name is never translated; the message is, with lc_messages.
  return fields->message == "cached plan must not change result type" ||
         fields->routine == "RevalidateCachedQuery";
}

awaitable<bool> ClientSession::retry_stale_plan(pool::StatementPtr stale) {
  auto& relay = *relay_;
  auto fresh = context_.statements().renew(stale);
  if (client_statements_) {
    for (auto& [name, statement] : *client_statements_)
      if (statement == stale) statement = fresh;
  }
  std::string batch = std::move(relay.batch);
  relay.batch.clear();
  relay.batch_retried = true;
  const std::int64_t binds_before = relay.batch_binds_answered;
  // The client's own Parses of this batch register again (with the new names).
  auto each_message = [&](auto&& visit) {
    protocol::Bytes rest(reinterpret_cast<const std::uint8_t*>(batch.data()), batch.size());
    while (rest.size() >= protocol::kHeaderSize) {
      const std::size_t total = std::size_t{protocol::read_u32(rest.data() + 1)} + 1;
      visit(static_cast<char>(rest[0]), rest.subspan(protocol::kHeaderSize, total - protocol::kHeaderSize),
            rest.first(total));
      rest = rest.subspan(total);
    }
  };
  each_message([&](char type, protocol::Bytes body, protocol::Bytes) {
    if (type != 'P') return;
    if (auto parse = protocol::parse_parse(body); parse && !parse->name.empty()) {
      forget_client_statement(std::string(parse->name));
    }
  });
  std::string out;
  protocol::FrontendObserver observer{relay.state};
  std::int64_t binds_seen = 0;
  each_message([&](char type, protocol::Bytes body, protocol::Bytes raw) {
    if (type == 'B') ++binds_seen;
    // Answers the client already has (everything before the failed Bind) are not
    // given twice.
    const bool answered = binds_seen <= binds_before && type != 'S' && type != 'E';
    const std::size_t queued = relay.requests.size();
    observer.inspect(type);
    relay_client_message(type, body, raw, out);
    if (!answered) return;
    for (std::size_t i = queued; i < relay.requests.size();) {
      auto& request = relay.requests[i];
      if (request.answer == PendingRequest::Answer::relay) {
        request.answer = PendingRequest::Answer::hide;
        ++i;
      } else if (request.answer == PendingRequest::Answer::hide) {
        ++i;
      } else {
        relay.requests.erase(relay.requests.begin() + static_cast<std::ptrdiff_t>(i));  // made here: already sent
      }
    }
  });
  relay.batch = std::move(batch);
  relay.batch_complete = true;
  co_return co_await send_to_server(reinterpret_cast<const std::uint8_t*>(out.data()), out.size());
}

awaitable<bool> ClientSession::send_to_client(const std::uint8_t* data, std::size_t size) {
  if (size == 0) co_return true;
  if (relay_) relay_->bytes_out += size;
  auto sent = client_.send_now(data, size);
  if (!sent) co_return false;
  if (*sent < size) {
    auto token = uncancellable();
    client_write_busy_ = true;
    auto [ec, written] = co_await asio::async_write(client_, asio::buffer(data + *sent, size - *sent), token);
    client_write_busy_ = false;
    if (ec) co_return false;
  }
  co_return true;
}

void ClientSession::ensure_prepared(const pool::StatementPtr& statement, std::string& out) {
  if (server_->statements.use(statement->id)) return;
  if (auto victim = server_->statements.add(statement, max_prepared_statements_)) {
    protocol::append_close(out, 'S', victim->server_name);
    relay_->requests.emplace_back('C', PendingRequest::Answer::hide);
  }
  protocol::append_parse(out, statement->server_name,
                         protocol::Bytes(reinterpret_cast<const std::uint8_t*>(statement->tail.data()),
                                         statement->tail.size()));
  relay_->requests.emplace_back('P', PendingRequest::Answer::hide);
  relay_->requests.back().registers = statement;
}

bool ClientSession::relay_client_message(char type, protocol::Bytes body, protocol::Bytes raw, std::string& out) {
  using Answer = PendingRequest::Answer;
  auto& requests = relay_->requests;
  if (relay_->skipping_to_sync && type != 'S' && type != 'X') {
    // The server is discarding messages until Sync after an error: pass them on
    // with no answer expected and no effect here, as PostgreSQL ignores them.
    out.append(as_text(raw));
    return true;
  }
  if (type == 'S') relay_->skipping_to_sync = false;
  auto pass = [&](bool expects_answer) {
    out.append(as_text(raw));
    if (expects_answer) requests.emplace_back(type, Answer::relay);
  };
  switch (type) {
    case 'X':
      return false;
    case 'P': {
      auto parse = protocol::parse_parse(body);
      if (!parse || parse->name.empty()) {
        pass(true);  // the unnamed statement lives only until the next Parse: nothing to share
        break;
      }
      std::string name(parse->name);
      if (const auto* existing = known_statement(name)) {
        // PostgreSQL refuses to redefine a name (42P05) and skips to Sync: have the
        // server refuse it, naming the statement the client already has under it.
        ensure_prepared(*existing, out);
        protocol::append_parse(out, (*existing)->server_name, parse->tail);
        requests.emplace_back('P', Answer::relay);
        break;
      }
      auto statement = context_.statements().intern(parse->tail);
      client_statements()[name] = statement;
      if (server_->statements.use(statement->id)) {
        requests.emplace_back('P', Answer::parse_complete);
        break;
      }
      if (auto victim = server_->statements.add(statement, max_prepared_statements_)) {
        protocol::append_close(out, 'S', victim->server_name);
        requests.emplace_back('C', Answer::hide);
      }
      protocol::append_parse(out, statement->server_name, parse->tail);
      requests.emplace_back('P', Answer::relay);
      requests.back().registers = statement;
      requests.back().client_name = std::move(name);
      break;
    }
    case 'B': {
      auto bind = protocol::parse_bind(body);
      const auto* known = bind ? known_statement(bind->statement) : nullptr;
      if (!known) {
        pass(true);  // unnamed, or unknown: the server answers as PostgreSQL would
        break;
      }
      ensure_prepared(*known, out);
      protocol::append_bind(out, bind->portal, (*known)->server_name, bind->tail);
      requests.emplace_back('B', Answer::relay);
      requests.back().uses = *known;
      break;
    }
    case 'D': {
      auto target = protocol::parse_target(body);
      const auto* known = target && target->kind == 'S' ? known_statement(target->name) : nullptr;
      if (!known) {
        pass(true);
        break;
      }
      ensure_prepared(*known, out);
      protocol::append_describe(out, 'S', (*known)->server_name);
      requests.emplace_back('D', Answer::relay);
      break;
    }
    case 'C': {
      auto target = protocol::parse_target(body);
      if (!target || target->kind != 'S' || target->name.empty()) {
        pass(true);
        break;
      }
      // The server keeps the statement for other clients. Closing a name that does
      // not exist is not an error in PostgreSQL either.
      forget_client_statement(std::string(target->name));
      requests.emplace_back('C', Answer::close_complete);
      break;
    }
    case 'Q': {
      // Cheap test first: only DEALLOCATE and DISCARD are of interest.
      std::size_t first = 0;
      while (first < body.size() && std::isspace(body[first])) ++first;
      const char initial = first < body.size() ? static_cast<char>(std::tolower(body[first])) : 0;
      if (initial != 'd' || body.empty()) {
        pass(true);
        break;
      }
      const std::string_view sql = as_text(body.first(body.size() - 1));  // without the NUL
      auto command = protocol::classify_statement_command(sql);
      if (command.kind == protocol::StatementCommand::deallocate && client_statements_ &&
          client_statements_->erase(command.name) > 0) {
        requests.emplace_back('Q', Answer::deallocate);
        break;
      }
      pass(true);
      if (command.kind == protocol::StatementCommand::deallocate_all ||
          command.kind == protocol::StatementCommand::discard_all) {
        if (client_statements_) client_statements_->clear();
        requests.back().clears_statements = true;
      }
      break;
    }
    case 'E':
    case 'S':
    case 'F':
      pass(true);
      break;
    default:  // Flush, CopyData, CopyDone, CopyFail: no answer of their own
      pass(false);
      break;
  }
  return true;
}

awaitable<ClientSession::RelayEnd> ClientSession::pump_client_tracked(bool one_request) {
  co_await asio::this_coro::throw_if_cancelled(false);  // as in pump_client_to_server
  protocol::FrontendObserver observer{relay_->state};
  auto& in = relay_->client_in;
  const auto& out = relay_->client_out;
  if (!login_buffer_.empty()) {
    take_kept_bytes();
  }
  std::size_t wanted = in.empty() ? kInitialRelayBuffer : 0;  // room to read into
  for (;;) {
    // Back-pressure for requests answered here (Close, known Parse): while the
    // client does not read its answers, stop reading its requests.
    if (relay_->requests.size() > kMaxQueuedRequests) {
      auto executor = co_await asio::this_coro::executor;
      asio::steady_timer tick(executor);
      while (relay_->requests.size() > kMaxQueuedRequests / 2) {
        tick.expires_after(std::chrono::milliseconds(1));
        co_await tick.async_wait(use_nothrow);
        if (is_cancelled(co_await kCancellationState)) co_return RelayEnd::cancelled;
      }
    }
    if (in.empty() || wanted > 0) {
      auto space = in.prepare(std::max<std::size_t>(wanted, 1024));
      const bool from_boundary = client_side_at_boundary();
      auto [ec, n] = co_await client_.async_read_client(asio::buffer(space.data(), space.size()),
                                                         pool::DrainedWhen::request_awaits_answer, from_boundary,
                                                         use_nothrow);
      if (ec == asio::error::operation_aborted && is_cancelled(co_await kCancellationState))
        co_return RelayEnd::cancelled;
      if (ec) {
        client_gone_ = true;
        co_return RelayEnd::client_closed;
      }
      in.commit(n);
      relay_->bytes_in += n;
      disarm_idle_timer();
      if (!server_) {  // released meanwhile (see pump_client_to_server)
        relay_->bytes_in -= n;
        auto pending = in.data();
        auto stash = login_buffer_.prepare(pending.size());
        std::memcpy(stash.data(), pending.data(), pending.size());
        login_buffer_.commit(pending.size());
        in.consume(pending.size());
        co_return RelayEnd::cancelled;
      }
    }
    const auto scan = scan_client_bytes(observer);
    if (scan.protocol_error) co_return RelayEnd::client_protocol_error;
    wanted = scan.wanted;
    if (!co_await send_to_server(reinterpret_cast<const std::uint8_t*>(out.data()), out.size())) {
      co_return RelayEnd::server_closed;
    }
    if (auto end = requests_sent(one_request, scan.terminated)) co_return *end;
    if (is_cancelled(co_await kCancellationState)) co_return RelayEnd::cancelled;
  }
}

void ClientSession::take_kept_bytes() {
  auto& in = relay_->client_in;
  relay_->bytes_in += login_buffer_.size();  // read earlier (see pump_client_to_server)
  auto space = in.prepare(login_buffer_.size());
  std::memcpy(space.data(), login_buffer_.data().data(), login_buffer_.size());
  in.commit(login_buffer_.size());
  login_buffer_.consume(login_buffer_.size());
  login_buffer_.release_if_empty();  // a parked client holds no buffer
}

ClientSession::ClientScan ClientSession::scan_client_bytes(protocol::FrontendObserver& observer) {
  auto& in = relay_->client_in;
  auto& out = relay_->client_out;
  ClientScan scan;
  out.clear();
  while (!in.empty() && !scan.terminated) {
    auto data = in.data();
    if (relay_->client_passing > 0) {
      const std::size_t take = std::min<std::uint64_t>(relay_->client_passing, data.size());
      out.append(as_text(data.first(take)));
      relay_->client_passing -= take;
      in.consume(take);
      continue;
    }
    if (data.size() < protocol::kHeaderSize) {
      scan.wanted = protocol::kHeaderSize;
      break;
    }
    const char type = static_cast<char>(data[0]);
    const std::uint32_t length = protocol::read_u32(data.data() + 1);
    if (length < 4 || length - 4 > max_message_size_) {
      relay_->protocol_error = client_length_error(length >= 4);
      scan.protocol_error = true;
      return scan;
    }
    const std::size_t total = std::size_t{length} + 1;
    if (data.size() < total) {
      if (type == 'd' && total > kLargestHeldMessage) {
        // Bulk COPY data: streamed, never rewritten.
        record_batch(type, {});
        observer.inspect(type);
        out.append(as_text(data));
        relay_->client_passing = total - data.size();
        in.consume(data.size());
        continue;
      }
      scan.wanted = total - data.size();
      break;
    }
    record_batch(type, data.first(total));
    const bool inspected = observer.inspect(type);
    if (inspected) observer.on_message(type, data.subspan(protocol::kHeaderSize, total - protocol::kHeaderSize));
    if (recording_) note_client_message(type, data.subspan(protocol::kHeaderSize, total - protocol::kHeaderSize));
    scan.terminated = !relay_client_message(type, data.subspan(protocol::kHeaderSize, total - protocol::kHeaderSize),
                                            data.first(total), out);
    in.consume(total);
  }
  return scan;
}

std::optional<ClientSession::RelayEnd> ClientSession::requests_sent(bool one_request, bool terminated) {
  auto& in = relay_->client_in;
  if (relay_->state.pending > 0) request_sent();
  if (terminated) {
    relay_->server_stream_broken = relay_->server_stream_broken || !in.empty();
    return RelayEnd::client_terminated;
  }
  if (!relay_->requests.empty() && relay_->requests.front().answer != PendingRequest::Answer::relay &&
      relay_->requests.front().answer != PendingRequest::Answer::hide) {
    // Answers made here with nothing from the server to carry them: wake the
    // server pump (it alone writes to the client) to send them.
    relay_->wake_requested = true;
    // A write in progress (a retried batch) must not be cut: the pump looks at
    // the flag before its next read anyway.
    if (!relay_->server_write_busy) {
      error_code ec;
      server_->socket().cancel(ec);
    }
  }
  if (release_due()) return RelayEnd::released;
  if (one_request) {
    const auto& state = relay_->state;
    const bool whole_requests_out =
        in.empty() && relay_->client_passing == 0 && state.pending > 0 && !state.unsynced && !state.copy_in;
    return whole_requests_out ? RelayEnd::awaiting_answer : RelayEnd::needs_both;
  }
  return std::nullopt;
}

void ClientSession::note_statement_drop(protocol::Bytes command_complete) {
  // DISCARD ALL or DEALLOCATE that Sluice did not answer itself (sent with the
  // extended protocol, inside a longer Query, in a function...): the server's
  // statements are gone, or one of them is and it is not known which.
  if (command_complete.empty() || command_complete[0] != 'D') return;
  const std::string_view tag = first_cstr(command_complete);
  if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") {
    server_->statements.clear();
    if (client_statements_) client_statements_->clear();
  } else if (tag == "DEALLOCATE") {
    relay_->discard_on_release = true;  // its cache can no longer be trusted
  }
}

void ClientSession::forget_request_effects(const PendingRequest& request) {
  if (request.registers) {
    // The Parse did not happen: the server lacks the statement, and a client's
    // name is free again, as in PostgreSQL.
    server_->statements.erase(request.registers->id);
    if (!request.client_name.empty() && client_statements_) {
      auto it = client_statements_->find(request.client_name);
      if (it != client_statements_->end() && it->second == request.registers) client_statements_->erase(it);
    }
  }
  if (request.type == 'C' && request.answer == PendingRequest::Answer::hide) {
    relay_->discard_on_release = true;  // an eviction that did not happen: the cache is off
  }
}

void ClientSession::append_local_answers(std::string& out) {
  using Answer = PendingRequest::Answer;
  auto& requests = relay_->requests;
  while (!requests.empty()) {
    const auto answer = requests.front().answer;
    if (answer == Answer::parse_complete) {
      protocol::append_parse_complete(out);
    } else if (answer == Answer::close_complete) {
      protocol::append_close_complete(out);
    } else if (answer == Answer::deallocate) {
      protocol::append_command_complete(out, "DEALLOCATE");
      protocol::append_ready_for_query(out, relay_->state.transaction);
      if (relay_->state.pending > 0) --relay_->state.pending;
    } else {
      return;
    }
    requests.pop_front();
  }
}

awaitable<ClientSession::RelayEnd> ClientSession::pump_server_tracked(bool solo) {
  co_await asio::this_coro::throw_if_cancelled(false);  // as in pump_client_to_server
  ParameterSink parameters{&*server_, this};
  protocol::BackendObserver<ParameterSink> observer{relay_->state, &parameters};
  auto& in = relay_->server_in;
  std::size_t wanted = kInitialRelayBuffer;
  for (;;) {
    if (solo && client_watch_ == ClientWatch::fired) co_return RelayEnd::needs_both;
    if (!relay_->wake_requested) {
      auto space = in.prepare(std::max<std::size_t>(wanted, 1024));
      solo_server_read_ = solo;
      auto [ec, n] =
          co_await server_->stream().async_read_reply(asio::buffer(space.data(), space.size()), use_nothrow);
      solo_server_read_ = false;
      if (solo && ec == asio::error::operation_aborted && client_watch_ == ClientWatch::fired) {
        co_return RelayEnd::needs_both;  // cut short by the client watch: nothing was read
      }
      if (ec == asio::error::operation_aborted && is_cancelled(co_await kCancellationState))
        co_return RelayEnd::cancelled;
      if (ec && !(ec == asio::error::operation_aborted && relay_->wake_requested)) co_return RelayEnd::server_closed;
      if (!ec) in.commit(n);
    }
    relay_->wake_requested = false;

    auto scan = scan_server_bytes(observer);
    if (scan.protocol_error) co_return RelayEnd::server_protocol_error;
    wanted = scan.wanted;
    if (scan.retry && !co_await retry_stale_plan(scan.retry)) co_return RelayEnd::server_closed;
    const bool released = reply_ready(scan);
    const bool sent = co_await send_to_client(scan.reply, scan.reply_size);
    if (auto end = reply_sent(solo, released, sent)) co_return *end;
    if (is_cancelled(co_await kCancellationState)) co_return RelayEnd::cancelled;
  }
}

ClientSession::ServerScan ClientSession::scan_server_bytes(protocol::BackendObserver<ParameterSink>& observer) {
  using Answer = PendingRequest::Answer;
  auto& in = relay_->server_in;
  auto& out = relay_->server_out;
  auto& requests = relay_->requests;
  ServerScan scan;
  // Relayed bytes are sent straight from the read buffer; `out` is only used
  // once something is dropped or added.
  out.clear();
  auto data = in.data();
  std::size_t pos = 0;
  std::size_t flushed = 0;   // bytes of data[0, pos) already accounted for in out
  bool rewritten = false;
  auto splice = [&](std::size_t upto) {
    out.append(as_text(data.subspan(flushed, upto - flushed)));
    flushed = upto;
    rewritten = true;
  };
  if (!requests.empty() && requests.front().answer != Answer::relay && requests.front().answer != Answer::hide) {
    splice(0);
    append_local_answers(out);
  }
  while (pos < data.size()) {
    if (relay_->server_passing > 0) {
      const std::size_t take = std::min<std::uint64_t>(relay_->server_passing, data.size() - pos);
      relay_->server_passing -= take;
      pos += take;
      continue;
    }
    if (data.size() - pos < protocol::kHeaderSize) {
      scan.wanted = protocol::kHeaderSize;
      break;
    }
    const char type = static_cast<char>(data[pos]);
    const std::uint32_t length = protocol::read_u32(data.data() + pos + 1);
    if (length < 4) {
      scan.protocol_error = true;
      return scan;
    }
    const std::size_t total = std::size_t{length} + 1;
    const bool whole = data.size() - pos >= total;
    if (!whole && total <= kLargestHeldMessage) {
      scan.wanted = total - (data.size() - pos);
      break;
    }
    // A whole message, or the start of a large one (streamed; its first bytes
    // hold the fields that are read).
    const std::size_t available = std::min(total, data.size() - pos);
    const auto body = data.subspan(pos + protocol::kHeaderSize, available - protocol::kHeaderSize);
    if (observer.inspect(type)) observer.on_message(type, body);
    if (recording_) note_server_message(type, body);
    if (type == 'C' && (requests.empty() || !requests.front().clears_statements)) note_statement_drop(body);
    bool relay_it = true;
    bool popped = false;
    if (!requests.empty()) {
      PendingRequest& head = requests.front();
      // Only the answer itself is hidden; a notice or notification passes.
      if (head.answer == Answer::hide && whole &&
          (protocol::ends_response(head.type, type) || (head.type == 'D' && type == 't'))) {
        relay_it = false;
      }
      if (type == 'E' && head.type == 'B' && head.uses && whole && stale_plan_retryable(body)) {
        // The statement was prepared (for someone) before DDL changed its result:
        // a direct connection that prepared it now would not fail. Run the batch
        // again under a new server-side name; the client sees none of this.
        log()->info("[c{}] shared statement {} has a stale plan on s{}; preparing it again", id_,
                    head.uses->server_name, server_->id());
        scan.retry = head.uses;
        relay_it = false;
        requests.pop_front();
        while (requests.front().type != 'S') {
          forget_request_effects(requests.front());
          requests.pop_front();
        }
        requests.front().answer = Answer::hide;  // its ReadyForQuery too
        popped = true;
      } else if (type == 'E' && protocol::is_extended_request(head.type)) {
        // The server skips to the next Sync: so do the requests waiting behind it.
        forget_request_effects(head);
        requests.pop_front();
        while (!requests.empty() && requests.front().type != 'S') {
          forget_request_effects(requests.front());
          // A skipped Query or FunctionCall gets no ReadyForQuery of its own.
          if ((requests.front().type == 'Q' || requests.front().type == 'F') && relay_->state.pending > 0) {
            --relay_->state.pending;
          }
          requests.pop_front();
        }
        // If that Sync is not sent yet, what the client sends until it is skipped too.
        relay_->skipping_to_sync = requests.empty();
        popped = true;
      } else if (type == 'E') {
        head.failed = true;
      } else if ((type == 'G' || type == 'W') && head.type == 'E') {
        // COPY IN through Execute: the Syncs already queued behind it are ignored
        // by the server (see BackendObserver).
        while (requests.size() > 1 && requests[1].type == 'S') requests.erase(requests.begin() + 1);
      } else if (protocol::ends_response(head.type, type)) {
        if (head.type == 'E') relay_->batch_executed = true;
        if (head.type == 'B' && head.answer == Answer::relay) ++relay_->batch_binds_answered;
        if (head.clears_statements) {
          if (head.failed) {
            relay_->discard_on_release = true;
          } else {
            server_->statements.clear();
          }
        }
        requests.pop_front();
        popped = true;
      }
    }
    if (!relay_it) splice(pos);
    pos += available;
    if (!whole) relay_->server_passing = total - available;
    if (!relay_it) flushed = pos;
    if (popped && !requests.empty() && requests.front().answer != Answer::relay &&
        requests.front().answer != Answer::hide) {
      splice(pos);
      append_local_answers(out);
    }
  }
  scan.data = data.data();
  scan.pos = pos;
  scan.flushed = flushed;
  scan.rewritten = rewritten;
  return scan;
}

bool ClientSession::reply_ready(ServerScan& scan) {
  auto& out = relay_->server_out;
  if (scan.rewritten) {
    out.append(as_text(protocol::Bytes(scan.data + scan.flushed, scan.pos - scan.flushed)));
    scan.reply = reinterpret_cast<const std::uint8_t*>(out.data());
    scan.reply_size = out.size();
  } else {
    scan.reply = scan.data;
    scan.reply_size = scan.pos;
  }
  relay_->server_in.consume(scan.pos);  // the bytes stay valid until the next prepare()
  return release_due() && release_now();  // before the client has the reply (see pump_server_tracked)
}

std::optional<ClientSession::RelayEnd> ClientSession::reply_sent(bool solo, bool released, bool sent) {
  if (!sent) return RelayEnd::client_closed;
  if (relay_->state.pending == 0) round_trip_done();
  if (released || release_due()) return RelayEnd::released;
  arm_idle_timer();
  if (pool_mode_ == config::PoolMode::statement && relay_->state.pending == 0 && !relay_->state.unsynced &&
      relay_->state.transaction != 'I') {
    return RelayEnd::transaction_block;
  }
  // Alone, the client must be read once it owes the next move: all answers are
  // in (a transaction stays open), or the server waits for COPY data.
  if (solo && (relay_->state.pending == 0 || relay_->state.copy_in)) return RelayEnd::needs_both;
  return std::nullopt;
}

// ---- Returning the server connection -------------------------------------------------

awaitable<bool> ClientSession::drain_server() {
  protocol::BackendObserver<pool::ServerConnection> observer{relay_->state, &*server_};
  if (relay_->server_buffer.empty()) relay_->server_buffer.resize(kInitialRelayBuffer);  // tracked mode has none
  while (relay_->state.pending > 0) {
    auto [ec, n] = co_await server_->stream().async_read_reply(asio::buffer(relay_->server_buffer), use_nothrow);
    if (ec) co_return false;
    auto outcome = relay_->server_scanner.feed(protocol::Bytes(relay_->server_buffer.data(), n), observer);
    if (!outcome || relay_->state.fatal) co_return false;
  }
  co_return true;
}

awaitable<bool> ClientSession::reset_server() {
  co_await wait_for_cancels_in_flight();
  std::string out;
  if (relay_->state.copy_in) {
    protocol::append_copy_fail(out, "client disconnected");
    relay_->state.copy_in = false;
  }
  if (relay_->state.unsynced) {
    protocol::append_sync(out);
    ++relay_->state.pending;
    relay_->state.unsynced = false;
  }
  if (!out.empty() && !co_await write_server(out)) co_return false;
  if (relay_->state.pending > 0 && client_said_goodbye_) {
    // The client sent Terminate with a request still running. PostgreSQL would
    // finish that work (it may commit) and then close; closing our side does the
    // same without making the next client wait for it. Inside a transaction block
    // nothing of it can commit any more, so the work is cancelled first rather
    // than left to hold its locks.
    if (relay_->state.transaction != 'I') {
      co_await pool::send_cancel(server_->host, server_->port, server_->backend_key);
    }
    co_return false;
  }
  if (relay_->state.pending > 0) {
    // The client vanished while the server was still working for it: stop the
    // work, then read until the server is idle again.
    log()->info("[c{}] client left with a request in flight; cancelling on s{} (backend pid {})", id_,
                server_->id(), server_->backend_key.pid);
    co_await pool::send_cancel(server_->host, server_->port, server_->backend_key);
    if (!co_await drain_server()) co_return false;
  }
  if (relay_->state.transaction != 'I') {
    out.clear();
    protocol::append_query(out, "ROLLBACK");
    ++relay_->state.pending;
    if (!co_await write_server(out) || !co_await drain_server()) co_return false;
  }
  // In transaction and statement mode connections are shared while their clients
  // stay connected, so a leaving client's end is no occasion to reset (as PgBouncer).
  const auto reset_query = pool_mode_ == config::PoolMode::session
                               ? context_.config().pool_for(*database_config_, *user_config_).server_reset_query
                               : std::string();
  if (!reset_query.empty()) {
    out.clear();
    protocol::append_query(out, reset_query);
    ++relay_->state.pending;
    const int errors_before = relay_->state.errors;
    if (!co_await write_server(out) || !co_await drain_server()) co_return false;
    if (relay_->state.errors != errors_before) co_return false;
  }
  co_return relay_->state.transaction == 'I' && relay_->server_scanner.at_boundary();
}

awaitable<void> ClientSession::return_server(bool client_said_goodbye) {
  if (!server_) co_return;
  // A connection whose byte stream we cannot vouch for is closed, never reset:
  // the server holds part of a message (a Terminate split across reads, a client
  // that left mid-message, a write cut short), or it is going away. During a
  // shutdown it is reset and returned too: another client may still need it.
  if (relay_->state.fatal || relay_->server_stream_broken || relay_->forwarding || !client_side_at_boundary() ||
      (tracking_statements_ && (!relay_->server_in.empty() || relay_->server_passing > 0)) ||
      relay_->discard_on_release) {
    log()->info("[c{}] server connection s{} left in an unknown state; closing it", id_, server_->id());
    server_.discard();
    co_return;
  }
  client_said_goodbye_ = client_said_goodbye;
  using namespace asio::experimental::awaitable_operators;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer deadline(executor, kCleanupTimeout);
  auto outcome = co_await (reset_server() || deadline.async_wait(use_nothrow));
  // Nothing may be left unread: every reply must have been accounted for.
  const bool clean = outcome.index() == 0 && std::get<0>(outcome) && server_->idle_and_clean();
  if (clean) {
    log()->debug("[c{}] server connection s{} reset and returned to the pool", id_, server_->id());
    server_.release_clean();
  } else {
    log()->info("[c{}] server connection s{} could not be reset; closing it", id_, server_->id());
    server_.discard();
  }
}

}  // namespace sluice::proxy
