#include "pool/stream.h"

namespace sluice::pool {

void Stream::start_tls(ssl_ctx_st* context) {
  // asio's stream takes a context wrapper; the SSL object it creates holds its
  // own reference to the SSL_CTX, so the wrapper may go once the stream exists.
  SSL_CTX_up_ref(context);
  asio::ssl::context wrapper(context);
  tls_ = std::make_unique<Tls>(std::move(socket_), wrapper);
}

std::optional<std::size_t> Stream::send_now(const std::uint8_t* data, std::size_t size) {
  if (tls_) return 0;
  error_code ec;
  const std::size_t sent = socket_.send(asio::buffer(data, size), 0, ec);
  if (!ec) return sent;
  if (ec == asio::error::would_block || ec == asio::error::try_again) return 0;
  return std::nullopt;
}

void Stream::send_last_words(std::string_view bytes) {
  error_code ec;
  socket().non_blocking(true, ec);
  if (ec) return;
  if (!tls_) {
    socket_.send(asio::buffer(bytes.data(), bytes.size()), 0, ec);
    return;
  }
  tls_->write_some(asio::buffer(bytes.data(), bytes.size()), ec);
}

}  // namespace sluice::pool
