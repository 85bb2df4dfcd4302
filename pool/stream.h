#pragma once
// A connection's byte stream: plain TCP, or TLS over it once a handshake was
// agreed. Both ends of the relay read and write through this type, so the relay
// does not know which it has; plain TCP pays one predictable branch per call.
#include <openssl/ssl.h>

#include <boost/asio/ssl/stream.hpp>
#include <memory>
#include <optional>
#include <string_view>

#include "pool/asio.h"

namespace sluice::pool {

class Stream {
 public:
  using Tls = asio::ssl::stream<tcp::socket>;
  using executor_type = tcp::socket::executor_type;

  explicit Stream(tcp::socket socket) : socket_(std::move(socket)) {}

  // The TCP connection under it (options, addresses, readiness, close).
  tcp::socket& socket() { return tls_ ? tls_->next_layer() : socket_; }
  const tcp::socket& socket() const { return tls_ ? tls_->next_layer() : socket_; }
  executor_type get_executor() { return socket().get_executor(); }
  bool is_open() const { return socket().is_open(); }

  bool is_tls() const { return tls_ != nullptr; }
  Tls& tls() { return *tls_; }
  SSL* ssl() { return tls_ ? tls_->native_handle() : nullptr; }

  // Wraps the TCP connection in TLS under `context` (the handshake is the caller's).
  void start_tls(ssl_ctx_st* context);

  // AsyncReadStream / AsyncWriteStream, so asio::async_read/async_write work on it.
  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return tls_ ? tls_->async_read_some(buffers, std::forward<Token>(token))
                : socket_.async_read_some(buffers, std::forward<Token>(token));
  }
  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return tls_ ? tls_->async_write_some(buffers, std::forward<Token>(token))
                : socket_.async_write_some(buffers, std::forward<Token>(token));
  }

  // Sends what fits without blocking; nullopt on a hard error. Over TLS nothing is
  // sent here (a record must go out whole, through the TLS engine): returns 0 and
  // the caller writes asynchronously.
  std::optional<std::size_t> send_now(const std::uint8_t* data, std::size_t size);


  // A message sent just before closing (a FATAL error), best effort and never
  // blocking. Over TLS it is written as one record through the engine, which is
  // safe only because nothing else will be written after it.
  void send_last_words(std::string_view bytes);

  void close() {
    error_code ec;
    socket().close(ec);
  }

 private:
  tcp::socket socket_;         // plain TCP, or moved-from once TLS starts
  std::unique_ptr<Tls> tls_;
};

}  // namespace sluice::pool
