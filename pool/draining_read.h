#pragma once
// A read of a server's replies that tells Asio's reactor when the server has said
// all it will say for now, so that the next read waits for readiness instead of
// trying a recv() that fails with EAGAIN.
//
// Asio's epoll reactor tries every read once before waiting ("speculative" read),
// unless the last read on that descriptor reported itself exhausted, and a stream
// read counts as exhausted only at EOF. The relay reads a reply, passes it on and
// reads again before the server has anything more to say, so one recv() per round
// trip failed with EAGAIN (strace, pgbench -S).
//
// When is a short read really the end? Any byte that arrives after it raises a new
// edge-triggered epoll event, which makes the reactor try again and perform queued
// reads, so nothing arriving later is missed. What a short read cannot tell is a FIN
// (or RST) that came together with the data: the kernel hands out the data, keeps
// the end of stream for the next recv(), and raises no new event for it. A server
// that sends a WARNING or FATAL and closes (immediate shutdown, terminated backend)
// does exactly that, and a relay that took that read as "drained" would wait for
// ever (resilience_test caught it). So a read counts as exhausted only when it is
// short and ends with a ReadyForQuery: the server is idle and owes nothing, and a
// server that dies after that gives an event of its own, unless its FIN was already
// queued behind the ReadyForQuery when it was read (a backend killed within those
// microseconds). That end is then found at the connection's next use: the pool's
// checkout probe sees it, and in session mode the client's next request meets the
// reset and gets 08006, the same answer it gets for a server that died while idle.
// The check looks at the last six bytes only, so a large row whose data happens to
// end in those bytes can pass for a ReadyForQuery; the cost is the same rare delay.
//
// Asio picks the operation's perform step by the buffer type, so the behaviour is
// selected by passing a ServerReplyBuffer; everything else about the read (handler,
// cancellation, completion) is Asio's own. This specializes a detail template of the
// Boost 1.81 headers the project builds with (Debian 12); draining_read_test checks
// the behaviour it relies on, so a Boost that changes it fails a test, not a relay.
#include <cstdint>
#include <cstring>

// The socket headers first: the detail header relies on what they include before it.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/detail/reactive_socket_recv_op.hpp>

namespace sluice::pool {

// One contiguous buffer for reads of server replies (see above).
struct ServerReplyBuffer : boost::asio::mutable_buffer {
  explicit ServerReplyBuffer(boost::asio::mutable_buffer buffer) : boost::asio::mutable_buffer(buffer) {}
};

// True when `data` ends with a whole ReadyForQuery message ('Z', length 5, status).
inline bool ends_with_ready_for_query(const std::uint8_t* data, std::size_t size) {
  static constexpr std::uint8_t kHeader[5] = {'Z', 0, 0, 0, 5};
  if (size < 6) return false;
  const std::uint8_t status = data[size - 1];
  return std::memcmp(data + size - 6, kHeader, sizeof kHeader) == 0 &&
         (status == 'I' || status == 'T' || status == 'E');
}

}  // namespace sluice::pool

namespace boost::asio::detail {

template <>
class reactive_socket_recv_op_base<sluice::pool::ServerReplyBuffer> : public reactor_op {
 public:
  reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                               socket_ops::state_type state, const sluice::pool::ServerReplyBuffer& buffer,
                               socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffer_(buffer),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* op = static_cast<reactive_socket_recv_op_base*>(base);
    const bool stream = (op->state_ & socket_ops::stream_oriented) != 0;
    if (!socket_ops::non_blocking_recv1(op->socket_, op->buffer_.data(), op->buffer_.size(), op->flags_, stream,
                                        op->ec_, op->bytes_transferred_))
      return not_done;  // EAGAIN: queued until epoll reports the socket readable
    const std::size_t n = op->bytes_transferred_;
    if (n == 0) return done_and_exhausted;  // EOF or an error, as Asio's own read
    const bool peek = (op->flags_ & socket_base::message_peek) != 0;
    if (stream && !peek && n < op->buffer_.size() &&
        sluice::pool::ends_with_ready_for_query(static_cast<const std::uint8_t*>(op->buffer_.data()), n))
      return done_and_exhausted;
    return done;
  }

 private:
  socket_type socket_;
  socket_ops::state_type state_;
  sluice::pool::ServerReplyBuffer buffer_;
  socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail
