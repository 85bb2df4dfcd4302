#include "pool/server_connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <cctype>

#include "pool/log.h"
#include "pool/resolver.h"
#include "protocol/auth.h"
#include "protocol/read_buffer.h"

namespace sluice::pool {
namespace {

const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("pool");
  return logger;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

ConnectFailure transport_failure(std::string reason) {
  return ConnectFailure{std::move(reason), {}, "08006", true};
}
// A failure that is about this role's authentication, not the host.
ConnectFailure role_failure(std::string reason) { return ConnectFailure{std::move(reason), {}, "08006", false}; }

// Login protocol with the server after the TCP connection is up.
awaitable<ConnectResult> login(Stream stream, const ServerTarget& target, const StartupParams& params,
                               std::uint64_t id) {
  std::vector<std::pair<std::string, std::string>> startup;
  startup.reserve(params.size() + 2);
  startup.emplace_back("user", target.user);
  startup.emplace_back("database", target.dbname);
  for (const auto& p : params) startup.push_back(p);
  std::string out;
  protocol::append_startup_message(out, startup);
  if (auto [ec, n] = co_await asio::async_write(stream, asio::buffer(out), use_nothrow); ec)
    co_return transport_failure("write to server failed: " + ec.message());

  auto conn = std::make_unique<ServerConnection>(std::move(stream), id);
  conn->address = target.address();
  conn->startup_params = params;
  protocol::ReadBuffer buffer;
  std::optional<protocol::auth::ScramClient> scram;
  constexpr std::uint32_t kMaxLoginMessage = 1 << 20;

  for (;;) {
    protocol::Message msg;
    auto peeked = protocol::peek_message(buffer.data(), kMaxLoginMessage, msg);
    if (!peeked) co_return transport_failure("invalid message from server during login: " + peeked.error().message());
    if (*peeked == 0) {
      auto space = buffer.prepare();
      auto [ec, n] = co_await conn->stream().async_read_some(asio::buffer(space.data(), space.size()), use_nothrow);
      if (ec) co_return transport_failure("server closed the connection during login: " + ec.message());
      buffer.commit(n);
      continue;
    }
    const std::size_t total = *peeked;
    out.clear();
    switch (msg.type) {
      case 'R': {
        auto req = protocol::parse_auth_request(msg.body);
        if (!req) co_return role_failure("unsupported authentication request from server");
        switch (req->code) {
          case protocol::kAuthOk:
            break;
          case protocol::kAuthCleartext:
            if (target.credential.plain.empty())
              co_return role_failure("server asked for a password for user \"" + target.user +
                                          "\" but none is configured");
            protocol::append_password_message(out, target.credential.plain);
            break;
          case protocol::kAuthMd5: {
            std::string hash = !target.credential.md5_hash.empty()
                                   ? target.credential.md5_hash
                                   : protocol::auth::md5_password_hash(target.credential.plain, target.user);
            if (target.credential.empty())
              co_return role_failure("server asked for a password for user \"" + target.user +
                                          "\" but none is configured");
            protocol::append_password_message(out, protocol::auth::md5_response(hash, req->md5_salt));
            break;
          }
          case protocol::kAuthSasl: {
            bool offered = std::find(req->sasl_mechanisms.begin(), req->sasl_mechanisms.end(),
                                     protocol::auth::kScramMechanism) != req->sasl_mechanisms.end();
            if (!offered) co_return role_failure("server offers no supported SASL mechanism");
            if (!target.credential.plain.empty()) {
              scram.emplace(target.credential.plain);
            } else if (target.credential.scram_keys) {
              scram.emplace(*target.credential.scram_keys);  // what a client proved (pass-through)
            } else {
              co_return role_failure("server asked for SCRAM authentication for user \"" + target.user +
                                     "\" but no plain password is configured, and no client has logged in with "
                                     "SCRAM yet to lend its keys");
            }
            protocol::append_sasl_initial_response(out, protocol::auth::kScramMechanism, scram->client_first());
            break;
          }
          case protocol::kAuthSaslContinue: {
            if (!scram) co_return transport_failure("unexpected SASLContinue from server");
            auto reply = scram->on_server_first(req->sasl_data);
            if (!reply) co_return role_failure("SCRAM exchange with server failed: " + reply.error().message());
            protocol::append_sasl_response(out, *reply);
            break;
          }
          case protocol::kAuthSaslFinal: {
            if (!scram) co_return transport_failure("unexpected SASLFinal from server");
            if (auto ok = scram->on_server_final(req->sasl_data); !ok)
              co_return role_failure("SCRAM exchange with server failed: " + ok.error().message());
            break;
          }
          default:
            co_return role_failure("unsupported authentication request from server");
        }
        break;
      }
      case 'E': {
        ConnectFailure failure;
        failure.server_error.assign(reinterpret_cast<const char*>(buffer.data().data()), total);
        auto fields = protocol::parse_error_fields(msg.body);
        failure.sqlstate = fields ? std::string(fields->sqlstate) : "08006";
        failure.reason = fields ? std::string(fields->message) : "server sent a malformed error";
        co_return failure;
      }
      case 'S': {
        auto status = protocol::parse_parameter_status(msg.body);
        if (!status) co_return transport_failure("malformed ParameterStatus from server");
        conn->set_parameter(status->name, status->value);
        break;
      }
      case 'K': {
        auto key = protocol::parse_backend_key(msg.body);
        if (!key) co_return transport_failure("malformed BackendKeyData from server");
        conn->backend_key = *key;
        break;
      }
      case 'Z':
        buffer.consume(total);
        if (!buffer.empty()) co_return transport_failure("server sent data after ReadyForQuery during login");
        conn->initial_parameters = conn->parameters;
        co_return std::move(conn);
      case 'N':  // notices during login are not forwarded
      case 'v':  // NegotiateProtocolVersion: we asked for 3.0 and no options
        break;
      default:
        co_return transport_failure(std::string("unexpected message '") + msg.type + "' from server during login");
    }
    buffer.consume(total);
    if (!out.empty()) {
      if (auto [ec, n] = co_await asio::async_write(conn->stream(), asio::buffer(out), use_nothrow); ec)
        co_return transport_failure("write to server failed: " + ec.message());
    }
  }
}

// SSLRequest, then the TLS handshake when the server agrees. Nothing: go on with
// the login (over TLS, or plain TCP when the mode allows it); otherwise why not.
awaitable<std::optional<ConnectFailure>> negotiate_tls(Stream& stream, const ServerTarget& target, std::uint64_t id) {
  const config::TlsSettings& tls = *target.tls;
  std::string out;
  protocol::append_ssl_request(out);
  if (auto [ec, n] = co_await asio::async_write(stream, asio::buffer(out), use_nothrow); ec)
    co_return transport_failure("write to server failed: " + ec.message());
  char answer = 0;
  // Exactly one byte: anything after 'S' belongs to the TLS handshake.
  if (auto [ec, n] = co_await asio::async_read(stream, asio::buffer(&answer, 1), use_nothrow); ec)
    co_return transport_failure("server " + target.address() + " closed the connection after SSLRequest: " + ec.message());
  if (answer == 'N') {
    if (tls.mode == config::TlsMode::prefer) co_return std::nullopt;
    co_return role_failure("server " + target.address() + " does not support TLS (tls.server.mode = \"" +
                           config::to_string(tls.mode) + "\")");
  }
  if (answer != 'S')
    co_return transport_failure("server " + target.address() + " answered SSLRequest with an unexpected byte");

  if (!stream.start_tls(tls.context.get(), TlsRole::client))
    co_return transport_failure("could not set up TLS to server " + target.address() + ": " + config::openssl_errors());
  SSL* ssl = stream.ssl();
  error_code parse_error;
  asio::ip::make_address(target.host, parse_error);
  const bool ip_literal = !parse_error;
  if (!ip_literal) SSL_set_tlsext_host_name(ssl, target.host.c_str());  // SNI, as libpq sends it
  if (tls.mode == config::TlsMode::verify_full) {
    // The server's certificate must name the host we connected to (DNS name or IP address).
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    const int ok = ip_literal ? X509_VERIFY_PARAM_set1_ip_asc(param, target.host.c_str())
                              : X509_VERIFY_PARAM_set1_host(param, target.host.c_str(), target.host.size());
    if (ok != 1) co_return role_failure("cannot check the certificate of " + target.address() + " against its name");
  }
  if (auto [ec, n] = co_await stream.async_handshake(use_nothrow); ec) {
    const std::string reason = tls_failure_reason(stream, ec);
    log()->warn("[s{}] TLS handshake with {} failed: {}", id, target.address(), reason);
    co_return role_failure("TLS handshake with server " + target.address() + " failed: " + reason);
  }
  log()->debug("[s{}] TLS to {}: {} {}", id, target.address(), SSL_get_version(ssl), SSL_get_cipher_name(ssl));
  co_return std::nullopt;
}

awaitable<ConnectResult> connect_and_login(ServerTarget target, StartupParams params, std::uint64_t id) {
  auto executor = co_await asio::this_coro::executor;
  auto resolved = co_await resolve_host(target.host, target.port);
  if (resolved.endpoints.empty()) {
    co_return transport_failure("could not resolve \"" + target.host + "\": " + resolved.error);
  }
  tcp::socket socket(executor);
  auto [cec, endpoint] = co_await asio::async_connect(socket, resolved.endpoints, use_nothrow);
  if (cec) co_return transport_failure("could not connect to server " + target.address() + ": " + cec.message());
  error_code option_error;
  socket.set_option(tcp::no_delay(true), option_error);  // best effort; never throw here
  socket.set_option(asio::socket_base::keep_alive(true), option_error);  // finds a server host that vanished
  // The connect registered the socket for EPOLLOUT with the reactor, so every
  // send would later wake the reactor again and spoil its "the last read
  // drained the socket" bookkeeping (an extra EAGAIN read per response).
  // Re-registering the descriptor drops that interest; writes that never block
  // never bring it back.
  error_code ec;
  const auto protocol = endpoint.protocol();
  const auto fd = socket.release(ec);
  if (ec) co_return transport_failure("could not set up the server socket: " + ec.message());
  tcp::socket fresh(executor);
  fresh.assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    co_return transport_failure("could not set up the server socket: " + ec.message());
  }
  Stream stream(std::move(fresh));
  if (target.tls != nullptr && target.tls->enabled()) {
    if (auto failure = co_await negotiate_tls(stream, target, id)) co_return std::move(*failure);
  }
  co_return co_await login(std::move(stream), target, params, id);
}

// Wrapped so that operator|| does not flatten ConnectResult's own alternatives
// into its result variant.
struct Attempt {
  ConnectResult result;
};

awaitable<Attempt> attempt_connect(ServerTarget target, StartupParams params, std::uint64_t id) {
  // (Not `co_return Attempt{co_await ...}`: g++ 12 mishandles co_await inside braced initialisers.)
  auto result = co_await connect_and_login(std::move(target), std::move(params), id);
  co_return Attempt{std::move(result)};
}

}  // namespace

StartupParams normalize_startup_params(StartupParams params) {
  std::stable_sort(params.begin(), params.end(),
                   [](const auto& a, const auto& b) { return lower(a.first) < lower(b.first); });
  return params;
}

bool is_tracked_parameter(std::string_view name) {
  static constexpr std::string_view kTracked[] = {"application_name", "client_encoding",  "datestyle",
                                                  "intervalstyle",    "timezone",         "standard_conforming_strings",
                                                  "default_transaction_read_only"};
  // Called for every startup and reported parameter on every attach in transaction
  // mode: no allocation, and an ASCII fold rather than the locale's tolower() call.
  return std::any_of(std::begin(kTracked), std::end(kTracked), [&](std::string_view tracked) {
    return tracked.size() == name.size() && std::equal(tracked.begin(), tracked.end(), name.begin(), [](char a, char b) {
             return a == ((b >= 'A' && b <= 'Z') ? static_cast<char>(b - 'A' + 'a') : b);
           });
  });
}

StartupParams sharing_key(const StartupParams& params) {
  StartupParams key;
  for (const auto& param : params)
    if (!is_tracked_parameter(param.first)) key.push_back(param);
  return key;
}

void ServerConnection::set_parameter(std::string_view name, std::string_view value) {
  for (auto& [k, v] : parameters) {
    if (k == name) {
      if (v != value) {
        v.assign(value);
        reports_as.reset();
      }
      return;
    }
  }
  parameters.emplace_back(name, value);
  reports_as.reset();
}

bool ServerConnection::idle_and_clean() {
  auto& socket_ = stream_.socket();
  if (!socket_.is_open()) return false;
  if (stream_.has_buffered_input()) return false;  // TLS: bytes already read and decrypted
  std::uint8_t probe;
  const ssize_t n = ::recv(socket_.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  return false;  // 0 = closed by the server, > 0 = unsolicited bytes, < 0 = error
}

void ServerConnection::close() {
  if (!stream_.is_open()) return;
  error_code ec;
  // A best-effort Terminate in plain TCP; over TLS it would have to go through the
  // engine, and PostgreSQL treats a closed connection the same way.
  if (!stream_.is_tls()) {
    std::string terminate;
    protocol::append_terminate(terminate);
    stream_.socket().non_blocking(true, ec);
    if (!ec) stream_.socket().send(asio::buffer(terminate), 0, ec);
  }
  stream_.close();
}

awaitable<ConnectResult> connect_server(const ServerTarget& target, const StartupParams& params,
                                        std::chrono::milliseconds timeout, std::uint64_t id) {
  using namespace asio::experimental::awaitable_operators;
  if (timeout.count() <= 0) co_return co_await connect_and_login(target, params, id);
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, timeout);
  auto outcome = co_await (attempt_connect(target, params, id) || timer.async_wait(use_nothrow));
  if (auto* finished = std::get_if<Attempt>(&outcome)) co_return std::move(finished->result);
  log()->warn("[s{}] connecting to {} timed out after {} ms", id, target.address(), timeout.count());
  co_return transport_failure("connection to server " + target.address() + " timed out (server_connect " +
                              std::to_string(timeout.count()) + "ms)");
}

namespace {
struct CheckOutcome {
  bool ok = false;
};

awaitable<CheckOutcome> run_check(ServerConnection& conn, const std::string& query) {
  std::string out;
  protocol::append_query(out, query);
  bool failed = false;
  auto outcome = co_await exchange(conn, out, [&](const protocol::Message& msg) { failed = failed || msg.type == 'E'; });
  co_return CheckOutcome{outcome && outcome->idle && !failed};
}
}  // namespace

awaitable<std::optional<ReadyOutcome>> exchange(ServerConnection& conn, std::string_view request,
                                                const std::function<void(const protocol::Message&)>& on_message) {
  if (auto [ec, n] = co_await asio::async_write(conn.stream(), asio::buffer(request.data(), request.size()), use_nothrow);
      ec) {
    co_return std::nullopt;
  }
  protocol::ReadBuffer buffer;
  for (;;) {
    protocol::Message msg;
    auto peeked = protocol::peek_message(buffer.data(), 1u << 20, msg);
    if (!peeked) co_return std::nullopt;
    if (*peeked == 0) {
      auto space = buffer.prepare();
      auto [ec, n] = co_await conn.stream().async_read_some(asio::buffer(space.data(), space.size()), use_nothrow);
      if (ec) co_return std::nullopt;
      buffer.commit(n);
      continue;
    }
    if (msg.type == 'S') {
      if (auto status = protocol::parse_parameter_status(msg.body)) conn.set_parameter(status->name, status->value);
    } else if (msg.type == 'Z') {
      const bool idle = msg.body.size() == 1 && msg.body[0] == 'I';
      buffer.consume(*peeked);
      // Anything after the ReadyForQuery would be read by the next client.
      co_return ReadyOutcome{idle && buffer.empty()};
    } else {
      on_message(msg);
    }
    buffer.consume(*peeked);
  }
}

awaitable<bool> check_server(ServerConnection& conn, const std::string& query, std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  if (!conn.idle_and_clean()) co_return false;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, timeout);
  auto outcome = co_await (run_check(conn, query) || timer.async_wait(use_nothrow));
  if (auto* finished = std::get_if<CheckOutcome>(&outcome)) co_return finished->ok;
  log()->warn("[s{}] health check timed out after {} ms", conn.id(), timeout.count());
  co_return false;
}

namespace {
awaitable<void> send_cancel_unbounded(std::string host, std::uint16_t port, protocol::BackendKey key) {
  auto executor = co_await asio::this_coro::executor;
  auto resolved = co_await resolve_host(host, port);
  if (resolved.endpoints.empty()) {
    // (Cancelled: the caller's time limit, which says so itself.)
    if (!resolved.cancelled) {
      log()->warn("cancel request to {}:{} failed: could not resolve the host: {}", host, port, resolved.error);
    }
    co_return;
  }
  tcp::socket socket(executor);
  auto [cec, endpoint] = co_await asio::async_connect(socket, resolved.endpoints, use_nothrow);
  if (cec) {
    log()->warn("cancel request to {}:{} failed: {}", host, port, cec.message());
    co_return;
  }
  std::string out;
  protocol::append_cancel_request(out, key);
  if (auto [ec, n] = co_await asio::async_write(socket, asio::buffer(out), use_nothrow); ec) co_return;
  // PostgreSQL closes the connection once it has signalled the backend.
  std::uint8_t sink[64];
  for (;;) {
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(sink), use_nothrow);
    if (ec) break;
  }
}
}  // namespace

awaitable<void> send_cancel(std::string host, std::uint16_t port, protocol::BackendKey key) {
  using namespace asio::experimental::awaitable_operators;
  // Bounded: a backend host that drops packets must not pin a session (or shutdown).
  constexpr auto kCancelTimeout = std::chrono::seconds(5);
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, kCancelTimeout);
  auto outcome = co_await (send_cancel_unbounded(host, port, key) || timer.async_wait(use_nothrow));
  if (outcome.index() == 1) log()->warn("cancel request to {}:{} timed out", host, port);
}

}  // namespace sluice::pool
