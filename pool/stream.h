#pragma once
// A connection's byte stream: plain TCP, or TLS over it once a handshake was
// agreed. Both ends of the relay read and write through this type, so the relay
// does not know which it has; plain TCP pays one predictable branch per call.
//
// TLS is OpenSSL reading and writing the socket itself (SSL_set_fd, non-blocking),
// driven by readiness waits: no buffers of our own per connection (asio::ssl::stream
// keeps two 17 KiB ones), and a relayed chunk is written in place (SSL_write) as a
// plain one is with send(), awaiting only what does not fit.
#include <openssl/ssl.h>

#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <memory>
#include <optional>
#include <string_view>

#include "pool/asio.h"
#include "pool/draining_read.h"

namespace sluice::pool {

enum class TlsRole { client, server };

class Stream {
 public:
  using executor_type = tcp::socket::executor_type;

  explicit Stream(tcp::socket socket) : socket_(std::move(socket)) {}
  Stream(Stream&&) noexcept = default;
  Stream& operator=(Stream&&) noexcept = default;
  ~Stream();

  // The TCP connection under it (options, addresses, readiness, close).
  tcp::socket& socket() { return socket_; }
  const tcp::socket& socket() const { return socket_; }
  executor_type get_executor() { return socket_.get_executor(); }
  bool is_open() const { return socket_.is_open(); }

  bool is_tls() const { return ssl_ != nullptr; }
  SSL* ssl() { return ssl_.get(); }

  // Puts TLS under `context` on the connection (the handshake is async_handshake's).
  // False when OpenSSL cannot (out of memory).
  bool start_tls(ssl_ctx_st* context, TlsRole role);

  // AsyncReadStream / AsyncWriteStream, so asio::async_read/async_write work on it.
  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    if (!ssl_) return socket_.async_read_some(buffers, std::forward<Token>(token));
    const asio::mutable_buffer first = *asio::buffer_sequence_begin(buffers);
    return asio::async_compose<Token, void(error_code, std::size_t)>(TlsOp{this, Step::read, first.data(), first.size()},
                                                                     token, socket_);
  }
  // The relay's read of a server's replies: over plain TCP, a short read that ends
  // with ReadyForQuery makes the next read wait for readiness without trying recv()
  // first (pool/draining_read.h). Over TLS, as async_read_some.
  template <class Token>
  auto async_read_reply(asio::mutable_buffer buffer, Token&& token) {
    if (!ssl_)
      return socket_.async_read_some(DrainingBuffer(buffer, DrainedWhen::reply_ends_with_ready_for_query),
                                     std::forward<Token>(token));
    return asio::async_compose<Token, void(error_code, std::size_t)>(
        TlsOp{this, Step::read, buffer.data(), buffer.size()}, token, socket_);
  }
  // A read of a client: its requests (relay) or its login messages. Over plain TCP
  // and when the last read ended at a message boundary, a short read that `when`
  // takes as the end (whole requests ending with one the client waits on, or one
  // whole login message) makes the next read wait for readiness
  // (pool/draining_read.h). Otherwise as async_read_some.
  template <class Token>
  auto async_read_client(asio::mutable_buffer buffer, DrainedWhen when, bool from_message_boundary, Token&& token) {
    if (!ssl_ && from_message_boundary)
      return socket_.async_read_some(DrainingBuffer(buffer, when), std::forward<Token>(token));
    return async_read_some(buffer, std::forward<Token>(token));
  }
  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    if (!ssl_) return socket_.async_write_some(buffers, std::forward<Token>(token));
    const asio::const_buffer first = *asio::buffer_sequence_begin(buffers);
    return asio::async_compose<Token, void(error_code, std::size_t)>(
        TlsOp{this, Step::write, const_cast<void*>(first.data()), first.size()}, token, socket_);
  }
  // The TLS handshake (after start_tls); completes with (error_code, 0).
  template <class Token>
  auto async_handshake(Token&& token) {
    return asio::async_compose<Token, void(error_code, std::size_t)>(TlsOp{this, Step::handshake, nullptr, 0}, token,
                                                                     socket_);
  }

  // Sends what fits without blocking; nullopt on a hard error. Over TLS the bytes
  // are taken by SSL_write (whole records); 0 when the socket is full, and the
  // caller then writes the same bytes asynchronously (OpenSSL wants them again).
  std::optional<std::size_t> send_now(const std::uint8_t* data, std::size_t size);

  // A message sent just before closing (a FATAL error), best effort, never blocking.
  void send_last_words(std::string_view bytes);

  // Over TLS: decrypted bytes OpenSSL holds that the socket's readiness says
  // nothing about (read them before waiting for the socket).
  bool has_buffered_input() const { return ssl_ && SSL_has_pending(ssl_.get()) == 1; }
  // TLS only: decrypts what is there now without waiting: > 0 bytes, 0 = nothing
  // yet, nullopt = closed or failed.
  std::optional<std::size_t> read_now(std::uint8_t* data, std::size_t size);

  void close() {
    error_code ec;
    socket_.close(ec);
  }

 private:
  enum class Step { read, write, handshake };
  // One TLS read, write or handshake: try OpenSSL, wait for the readiness it asks
  // for, try again. A result in the very first try is delivered through a post, so
  // that the completion never runs inside the initiating call.
  struct TlsOp {
    Stream* stream;
    Step step;
    void* data;
    std::size_t size;
    bool posted = false;
    error_code result_error{};
    std::size_t result_size = 0;
    bool started = false;

    template <class Self>
    void operator()(Self& self, error_code ec = {}) {
      if (posted) {
        self.complete(result_error, result_size);
        return;
      }
      const bool first = !started;
      started = true;
      if (ec) {
        self.complete(ec, 0);
        return;
      }
      std::size_t done = 0;
      const auto outcome = stream->attempt(step, data, size, done, ec);
      if (outcome == Attempt::done) {
        if (!first) {
          self.complete(ec, done);
          return;
        }
        posted = true;
        result_error = ec;
        result_size = done;
        asio::post(stream->socket_.get_executor(), std::move(self));
        return;
      }
      stream->socket_.async_wait(outcome == Attempt::want_read ? tcp::socket::wait_read : tcp::socket::wait_write,
                                 std::move(self));
    }
  };
  enum class Attempt { done, want_read, want_write };
  Attempt attempt(Step step, void* data, std::size_t size, std::size_t& done, error_code& ec);

  struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
  };
  tcp::socket socket_;
  std::unique_ptr<SSL, SslFree> ssl_;
};

// The error of a failed TLS operation: OpenSSL's reason (and the certificate
// verification result when that failed), for logs and client messages.
std::string tls_failure_reason(Stream& stream, const error_code& ec);

}  // namespace sluice::pool
