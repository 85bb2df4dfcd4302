#include "pool/stream.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <boost/asio/ssl/error.hpp>
#include <cerrno>

namespace sluice::pool {

Stream::~Stream() = default;

bool Stream::start_tls(ssl_ctx_st* context, TlsRole role) {
  SSL* ssl = SSL_new(context);
  if (ssl == nullptr) return false;
  ssl_.reset(ssl);
  error_code ec;
  socket_.non_blocking(true, ec);  // OpenSSL reads and writes the socket itself, never blocking
  if (ec || SSL_set_fd(ssl, static_cast<int>(socket_.native_handle())) != 1) return false;
  // A write may end short (one record at a time) and be retried from another
  // address with the same bytes: what the relay's send-then-await does.
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (role == TlsRole::server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
  }
  return true;
}

Stream::Attempt Stream::attempt(Step step, void* data, std::size_t size, std::size_t& done, error_code& ec) {
  done = 0;
  if (!socket_.is_open()) {
    // OpenSSL still holds the old descriptor number, which the kernel may already
    // have given to another connection: never touch it after a close.
    ec = asio::error::bad_descriptor;
    return Attempt::done;
  }
  SSL* ssl = ssl_.get();
  // OpenSSL's error queue is per thread and shared by every session on it.
  ERR_clear_error();
  int rc = 0;
  switch (step) {
    case Step::read: rc = SSL_read_ex(ssl, data, size, &done); break;
    case Step::write: rc = SSL_write_ex(ssl, data, size, &done); break;
    case Step::handshake: rc = SSL_do_handshake(ssl); break;
  }
  if (rc == 1) {
    ec = {};
    return Attempt::done;
  }
  done = 0;
  const int reason = SSL_get_error(ssl, rc);
  switch (reason) {
    case SSL_ERROR_WANT_READ: return Attempt::want_read;
    case SSL_ERROR_WANT_WRITE: return Attempt::want_write;
    case SSL_ERROR_ZERO_RETURN: ec = asio::error::eof; break;
    case SSL_ERROR_SYSCALL:
      ec = errno != 0 ? error_code(errno, boost::system::system_category()) : error_code(asio::error::eof);
      break;
    default: {
      const unsigned long code = ERR_peek_error();
      // A peer that closes without close_notify (PostgreSQL clients often do): EOF.
      if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ec = asio::error::eof;
      } else {
        ec = error_code(static_cast<int>(code), asio::error::get_ssl_category());
      }
      break;
    }
  }
  return Attempt::done;
}

std::optional<std::size_t> Stream::send_now(const std::uint8_t* data, std::size_t size) {
  if (ssl_) {
    std::size_t done = 0;
    error_code ec;
    const auto outcome = attempt(Step::write, const_cast<std::uint8_t*>(data), size, done, ec);
    if (outcome != Attempt::done) return 0;
    if (ec) return std::nullopt;
    return done;
  }
  error_code ec;
  const std::size_t sent = socket_.send(asio::buffer(data, size), 0, ec);
  if (!ec) return sent;
  if (ec == asio::error::would_block || ec == asio::error::try_again) return 0;
  return std::nullopt;
}

std::optional<std::size_t> Stream::read_now(std::uint8_t* data, std::size_t size) {
  if (!ssl_) return std::nullopt;  // plain TCP is peeked at, never read here
  std::size_t done = 0;
  error_code ec;
  if (attempt(Step::read, data, size, done, ec) != Attempt::done) return 0;
  if (ec) return std::nullopt;
  return done;
}

void Stream::send_last_words(std::string_view bytes) {
  error_code ec;
  socket_.non_blocking(true, ec);
  if (ec) return;
  if (ssl_) {
    std::size_t done = 0;
    attempt(Step::write, const_cast<char*>(bytes.data()), bytes.size(), done, ec);
    return;
  }
  socket_.send(asio::buffer(bytes.data(), bytes.size()), 0, ec);
}

std::string tls_failure_reason(Stream& stream, const error_code& ec) {
  std::string reason = ec.message();
  if (SSL* ssl = stream.ssl()) {
    if (const long verify = SSL_get_verify_result(ssl); verify != X509_V_OK)
      reason += std::string(": ") + X509_verify_cert_error_string(verify);
  }
  return reason;
}

}  // namespace sluice::pool
