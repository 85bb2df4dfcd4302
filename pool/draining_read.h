#pragma once
// Relay reads that tell Asio's reactor when the peer has said all it will say for
// now, so that the next read waits for readiness instead of trying a recv() that
// fails with EAGAIN.
//
// Asio's epoll reactor tries every read once before waiting ("speculative" read),
// unless the last read on that descriptor reported itself exhausted, and a stream
// read counts as exhausted only at EOF. The relay reads a reply, passes it on and
// reads again before the server has anything more to say, and likewise reads a
// request, passes it on and reads the client again before the client has seen the
// answer; so two recv() calls per round trip failed with EAGAIN (strace, pgbench -S).
//
// When is a short read really the end? Any byte that arrives after it raises a new
// edge-triggered epoll event, which makes the reactor try again and perform queued
// reads, so nothing arriving later is missed. What a short read cannot tell is a FIN
// (or RST) that came together with the data: the kernel hands out the data, keeps
// the end of stream for the next recv(), and raises no new event for it. A server
// that sends a WARNING or FATAL and closes (immediate shutdown, terminated backend)
// does exactly that, and a relay that took that read as "drained" would wait for
// ever (resilience_test caught it). So a read counts as exhausted only when it is
// short and ends where the peer must wait for the other side:
// - a server reply that ends with a ReadyForQuery: the server is idle and owes
//   nothing, and a server that dies after that gives an event of its own, unless its
//   FIN was already queued behind the ReadyForQuery when it was read (a backend
//   killed within those microseconds). That end is then found at the connection's
//   next use: the pool's checkout probe sees it, and in session mode the client's
//   next request meets the reset and gets 08006, the same answer it gets for a
//   server that died while idle. The check looks at the last six bytes only, so a
//   large row whose data happens to end in those bytes can pass for a
//   ReadyForQuery; the cost is the same rare delay.
// - a client's login message read from a message boundary, whole: a startup packet
//   or a password / SASL message ('p'); the client then waits for the next step of
//   the login. A client that closed right after it is found when the next login
//   message meets its reset. One that only half-closed (shutdown of its sending
//   side, socket kept open) is found at client_login during the login, or, once
//   logged in (trust), at client_idle, as an idle client that says nothing would be.
// - a client request read from a message boundary that is whole messages, the last
//   one a Query, Sync, FunctionCall, CopyDone or CopyFail: the client now waits for
//   the answer. A client's FIN can ride on such a request only if it half-closes
//   right after a request its kernel had not sent yet; the relay then learns of the
//   end when it writes the answer (a closed client answers with a reset, an event)
//   or, for a client that half-closed and keeps its socket open, from TCP
//   keepalive (every relay socket has SO_KEEPALIVE) or client_idle.
//
// Asio picks the operation's perform step by the buffer type, so the behaviour is
// selected by passing a DrainingBuffer; everything else about the read (handler,
// cancellation, completion) is Asio's own. This specializes a detail template of the
// Boost 1.81 headers the project builds with (Debian 12); draining_read_test checks
// the behaviour it relies on, so a Boost that changes it fails a test, not a relay.
#include <cstdint>
#include <cstring>
#include <new>

// The socket headers first: the detail header relies on what they include before it.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/detail/reactive_socket_recv_op.hpp>

#include "protocol/read_buffer.h"
#include "protocol/wire.h"

namespace sluice::pool {

// What a read holds, and so when it is the end of what the peer says for now.
enum class DrainedWhen {
  reply_ends_with_ready_for_query,  // a server's replies
  request_awaits_answer,            // a client's requests, read from a message boundary
  login_message_awaits_answer,      // a client's login messages, read from a message boundary
};

// One contiguous buffer for a relay read (see above).
struct DrainingBuffer : boost::asio::mutable_buffer {
  DrainingBuffer(boost::asio::mutable_buffer buffer, DrainedWhen when)
      : boost::asio::mutable_buffer(buffer), drained_when(when) {}
  DrainedWhen drained_when;
};

// True when `data` ends with a whole ReadyForQuery message ('Z', length 5, status).
inline bool ends_with_ready_for_query(const std::uint8_t* data, std::size_t size) {
  static constexpr std::uint8_t kHeader[5] = {'Z', 0, 0, 0, 5};
  if (size < 6) return false;
  const std::uint8_t status = data[size - 1];
  return std::memcmp(data + size - 6, kHeader, sizeof kHeader) == 0 &&
         (status == 'I' || status == 'T' || status == 'E');
}

// True when `data` is whole frontend messages, the last of them one after which a
// client waits for the server: Query, Sync, FunctionCall, CopyDone or CopyFail.
inline bool is_whole_request_awaiting_answer(const std::uint8_t* data, std::size_t size) {
  std::size_t at = 0;
  std::uint8_t last = 0;
  while (size - at >= 5) {
    const std::uint32_t length = protocol::read_u32(data + at + 1);
    if (length < 4 || length > size - at - 1) return false;
    last = data[at];
    at += 1 + length;
  }
  return at == size && (last == 'Q' || last == 'S' || last == 'F' || last == 'c' || last == 'f');
}

// True when `data` is one whole login message after which a client waits for the
// server: a startup packet (StartupMessage, SSLRequest, GSSENCRequest: no type byte,
// the length counts itself) or a PasswordMessage / SASL message ('p'). A client
// sends nothing more until it has the answer (the same reasoning as a request's).
inline bool is_login_message_awaiting_answer(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return false;
  if (data[0] == 'p') return protocol::read_u32(data + 1) == size - 1;
  return size >= 8 && protocol::read_u32(data) == size;
}

// Whether a short read of `size` bytes is all the peer has to say for now.
inline bool is_drained(DrainedWhen when, const std::uint8_t* data, std::size_t size) {
  switch (when) {
    case DrainedWhen::reply_ends_with_ready_for_query:
      return ends_with_ready_for_query(data, size);
    case DrainedWhen::request_awaits_answer:
      return is_whole_request_awaiting_answer(data, size);
    case DrainedWhen::login_message_awaits_answer:
      return is_login_message_awaiting_answer(data, size);
  }
  return false;
}

// How much a waiting client's read (StashBuffer) takes at once.
inline constexpr std::size_t kStashReadSize = 16 * 1024;

// A client's read while it waits to be served (a parked client, the client watch of
// a lone exchange): what arrives is stored in `into`, which holds no memory until
// then, so an idle client holds no read buffer. The memory is the thread's spare
// buffer when that fits what came (protocol::take_spare_buffer; the relay gives it
// back once it has taken the bytes), else a block of what came rounded up to 64
// bytes. The reactor's perform step reads into
// a per-thread block and copies it out, which makes the wait's read the request's
// read too: one recv() where a one-byte peek and then the relay's read took two.
// `into` is the waiting session's, touched by nothing else until the completion
// handler runs (the perform step happens before it) or the wait is cancelled.
// A client waits only at a message boundary, so a short read of whole requests it
// waits on exhausts the socket as a relay read does. An end of stream does not:
// Asio would count it as exhausting, and the relay's read after it would then wait
// for an event that has come already; left alone, that read finds the end too.
struct StashBuffer : boost::asio::mutable_buffer {
  explicit StashBuffer(protocol::ByteBuffer* into) : boost::asio::mutable_buffer(&unused_byte, 1), into(into) {}
  protocol::ByteBuffer* into;
  // Never written: Asio completes a zero-length stream read without waiting.
  static inline std::uint8_t unused_byte = 0;
};

// Whether a completed receive tells the reactor that the socket is empty for now.
inline bool exhausts(const DrainingBuffer& buffer, bool stream, bool peek, std::size_t n) {
  if (n == 0) return true;  // EOF or an error, as Asio's own read
  return stream && !peek && n < buffer.size() &&
         is_drained(buffer.drained_when, static_cast<const std::uint8_t*>(buffer.data()), n);
}

}  // namespace sluice::pool

namespace boost::asio::detail {

// Asio's receive operation with its perform step's verdict taken from
// sluice::pool::exhausts for the buffer type.
template <class Buffer>
class sluice_recv_op_base : public reactor_op {
 public:
  sluice_recv_op_base(const boost::system::error_code& success_ec, socket_type socket, socket_ops::state_type state,
                      const Buffer& buffer, socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &sluice_recv_op_base::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffer_(buffer),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* op = static_cast<sluice_recv_op_base*>(base);
    const bool stream = (op->state_ & socket_ops::stream_oriented) != 0;
    if (!socket_ops::non_blocking_recv1(op->socket_, op->buffer_.data(), op->buffer_.size(), op->flags_, stream,
                                        op->ec_, op->bytes_transferred_))
      return not_done;  // EAGAIN: queued until epoll reports the socket readable
    const bool peek = (op->flags_ & socket_base::message_peek) != 0;
    return sluice::pool::exhausts(op->buffer_, stream, peek, op->bytes_transferred_) ? done_and_exhausted : done;
  }

 private:
  socket_type socket_;
  socket_ops::state_type state_;
  Buffer buffer_;
  socket_base::message_flags flags_;
};

template <>
class reactive_socket_recv_op_base<sluice::pool::DrainingBuffer>
    : public sluice_recv_op_base<sluice::pool::DrainingBuffer> {
 public:
  using sluice_recv_op_base::sluice_recv_op_base;
};

// Asio's receive operation for a waiting client (sluice::pool::StashBuffer).
template <>
class reactive_socket_recv_op_base<sluice::pool::StashBuffer> : public reactor_op {
 public:
  reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                               socket_ops::state_type state, const sluice::pool::StashBuffer& buffer,
                               socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffer_(buffer),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* op = static_cast<reactive_socket_recv_op_base*>(base);
    thread_local std::uint8_t block[sluice::pool::kStashReadSize];
    const bool stream = (op->state_ & socket_ops::stream_oriented) != 0;
    if (!socket_ops::non_blocking_recv1(op->socket_, block, sizeof block, op->flags_, stream, op->ec_,
                                        op->bytes_transferred_))
      return not_done;  // EAGAIN: queued until epoll reports the socket readable
    const std::size_t n = op->bytes_transferred_;
    if (n == 0) return done;  // the end of stream or an error: the next read finds it too (see above)
    try {
      auto& into = *op->buffer_.into;
      if (into.capacity() == 0) {
        into = sluice::protocol::take_spare_buffer(n);
        // Rounded up, so that the next request of about the same size fits it.
        if (into.capacity() == 0) into.reserve((n + 63) / 64 * 64);
      }
      into.assign(block, block + n);
    } catch (const std::bad_alloc&) {
      // Out of memory: the wait fails (its session closes the client) rather than
      // the exception leaving the reactor and the worker thread.
      op->ec_ = boost::asio::error::no_memory;
      op->bytes_transferred_ = 0;
      return done;
    }
    return stream && n < sizeof block && sluice::pool::is_whole_request_awaiting_answer(block, n)
               ? done_and_exhausted
               : done;
  }

 private:
  socket_type socket_;
  socket_ops::state_type state_;
  sluice::pool::StashBuffer buffer_;
  socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail
