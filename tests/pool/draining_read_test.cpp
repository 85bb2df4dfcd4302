// Relay reads (pool/draining_read.h): a short server read that ends with
// ReadyForQuery, or a short client read of whole requests the client waits on,
// tells Asio's reactor that the socket is empty, no byte that arrives afterwards is
// missed, and a read that may have an end of stream queued behind it is never taken
// as the end. Over a real loopback TCP connection.
#include "pool/draining_read.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "pool/stream.h"
#include "protocol/extended.h"
#include "protocol/wire.h"

namespace sluice::pool {
namespace {

using boost::asio::detail::reactive_socket_recv_op_base;
using boost::asio::detail::reactor_op;

struct Connected {
  asio::io_context context{1};
  tcp::socket near{context};
  tcp::socket far{context};

  Connected() {
    tcp::acceptor acceptor(context, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    near.connect(acceptor.local_endpoint());
    acceptor.accept(far);
    far.set_option(tcp::no_delay(true));
    near.non_blocking(true);
  }
  void send_from_far(const std::string& bytes) { asio::write(far, asio::buffer(bytes)); }
};

// The perform step alone, as the reactor calls it.
reactor_op::status perform(tcp::socket& socket, void* data, std::size_t size, int flags, std::size_t& got,
                           error_code& ec, DrainedWhen when = DrainedWhen::reply_ends_with_ready_for_query) {
  reactive_socket_recv_op_base<DrainingBuffer> op(error_code(), socket.native_handle(),
                                                  boost::asio::detail::socket_ops::stream_oriented,
                                                  DrainingBuffer(asio::buffer(data, size), when), flags, nullptr);
  const auto status = reactive_socket_recv_op_base<DrainingBuffer>::do_perform(&op);
  got = op.bytes_transferred_;
  ec = op.ec_;
  return status;
}

// Waits (bounded) until the socket has `n` bytes queued, so that a read sees them all.
void wait_until_readable(tcp::socket& socket, std::size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (socket.available() < n) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "bytes never arrived";
    std::this_thread::yield();
  }
}

// Server messages, built as Sluice builds them.
std::string ready_for_query(char status) {
  std::string out;
  protocol::append_ready_for_query(out, status);
  return out;
}
std::string command_complete() {
  std::string out;
  protocol::append_command_complete(out, "SELECT 1");
  return out;
}
std::string notice() {
  std::string out;
  protocol::append_notice_response(out, {"WARNING", "01000", "warn"});
  return out;
}

// What one reactor perform step says after `bytes` arrived, reading into a buffer
// of `buffer_size`; `got` is what it read.
struct Performed {
  reactor_op::status status;
  std::string got;
};
Performed perform_after(const std::string& bytes, std::size_t buffer_size,
                        DrainedWhen when = DrainedWhen::reply_ends_with_ready_for_query) {
  Connected c;
  c.send_from_far(bytes);
  wait_until_readable(c.near, bytes.size());
  std::string buffer(buffer_size, '\0');
  std::size_t got = 0;
  error_code ec;
  const auto status = perform(c.near, buffer.data(), buffer.size(), 0, got, ec, when);
  EXPECT_FALSE(ec) << ec.message();
  return {status, buffer.substr(0, got)};
}

TEST(ServerReplyReadTest, RecognizesAWholeReadyForQueryAtTheEnd) {
  for (char status : {'I', 'T', 'E'}) {
    const std::string bytes = command_complete() + ready_for_query(status);
    EXPECT_TRUE(ends_with_ready_for_query(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size())) << status;
  }
  const std::string bad_status = ready_for_query('X');
  const std::string cut = ready_for_query('I').substr(0, 5);
  const std::string wrong_length = std::string("Z\0\0\0\6", 5) + "I";
  const std::string not_last = ready_for_query('I') + notice();
  for (const std::string* bytes : {&bad_status, &cut, &wrong_length, &not_last})
    EXPECT_FALSE(ends_with_ready_for_query(reinterpret_cast<const std::uint8_t*>(bytes->data()), bytes->size()));
}

// Runs the context until `done` holds (bounded).
template <class Done>
void run_until(asio::io_context& context, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the read never completed";
    context.restart();  // a context that ran out of work stays stopped until restarted
    context.run_one_for(std::chrono::milliseconds(100));
  }
}

// Runs what is ready now (the reactor included) without waiting.
// Work is held meanwhile: a context without work returns before asking epoll.
void poll(asio::io_context& context) {
  auto work = asio::make_work_guard(context);
  context.restart();
  context.poll();
}

// Client messages, built as a client sends them.
std::string query(std::string_view sql) {
  std::string out;
  protocol::append_query(out, sql);
  return out;
}
std::string sync() {
  std::string out;
  protocol::append_sync(out);
  return out;
}
std::string terminate() {
  std::string out;
  protocol::append_terminate(out);
  return out;
}
// Parse, Bind, Execute of one unnamed statement, as pgbench -M extended sends it (without the Sync).
std::string parse_bind_execute() {
  std::string out;
  protocol::append_parse(out, "", protocol::Bytes(reinterpret_cast<const std::uint8_t*>("SELECT 1\0\0\0"), 11));
  protocol::append_bind(out, "", "", protocol::Bytes(reinterpret_cast<const std::uint8_t*>("\0\0\0\0\0\0"), 6));
  out += std::string("E\0\0\0\x09\0\0\0\0\0", 10);
  return out;
}
bool awaits_answer(const std::string& bytes) {
  return is_whole_request_awaiting_answer(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

TEST(ClientRequestReadTest, RecognizesWholeRequestsTheClientWaitsOn) {
  EXPECT_TRUE(awaits_answer(query("SELECT 1")));
  EXPECT_TRUE(awaits_answer(parse_bind_execute() + sync()));
  EXPECT_TRUE(awaits_answer(query("SELECT 1") + query("SELECT 2")));
  EXPECT_TRUE(awaits_answer(std::string("c\0\0\0\4", 5)));  // CopyDone
  EXPECT_TRUE(awaits_answer(std::string("f\0\0\0\5x", 6)));  // CopyFail "x" (no terminator needed here)
  const std::string q = query("SELECT 1");
  EXPECT_FALSE(awaits_answer(""));
  EXPECT_FALSE(awaits_answer(parse_bind_execute()));           // no Sync yet: more is coming
  EXPECT_FALSE(awaits_answer(q.substr(0, q.size() - 1)));      // cut short
  EXPECT_FALSE(awaits_answer(q + q.substr(0, 3)));             // a request, then the start of another
  EXPECT_FALSE(awaits_answer(q + std::string("d\0\0\0\5x", 6)));  // ends with CopyData
  EXPECT_FALSE(awaits_answer(terminate()));                    // the client is leaving
  EXPECT_FALSE(awaits_answer(std::string("Q\0\0\0\3", 5)));   // length below 4
}

TEST(ClientRequestReadTest, ShortReadOfAWholeQueryIsExhausted) {
  const std::string request = query("SELECT 1");
  const auto read = perform_after(request, 64, DrainedWhen::request_awaits_answer);
  EXPECT_EQ(read.status, reactor_op::done_and_exhausted);
  EXPECT_EQ(read.got, request);
  const std::string batch = parse_bind_execute() + sync();
  EXPECT_EQ(perform_after(batch, 256, DrainedWhen::request_awaits_answer).status, reactor_op::done_and_exhausted);
}

TEST(ClientRequestReadTest, ReadsThatMayHaveMoreComingAreNotExhausted) {
  EXPECT_EQ(perform_after(parse_bind_execute(), 256, DrainedWhen::request_awaits_answer).status, reactor_op::done);
  EXPECT_EQ(perform_after(query("SELECT 1"), 4, DrainedWhen::request_awaits_answer).status, reactor_op::done);
  EXPECT_EQ(perform_after(terminate(), 64, DrainedWhen::request_awaits_answer).status, reactor_op::done);
}

// A client read through Stream::async_read_client, as the relay or a login reads it.
struct ClientReads {
  Connected c;
  Stream stream{std::move(c.near)};
  std::array<char, 512> buffer{};
  std::optional<std::string> got;

  void read(DrainedWhen when, bool from_boundary = true) {
    got.reset();
    stream.async_read_client(asio::buffer(buffer), when, from_boundary, [this](error_code ec, std::size_t n) {
      got = ec ? "error: " + ec.message() : std::string(buffer.data(), n);
    });
  }
  std::string next_read(DrainedWhen when, bool from_boundary = true) {
    read(when, from_boundary);
    run_until(c.context, [this] { return got.has_value(); });
    return got.value_or("no read");
  }

  // `first` is read whole, which marks the socket drained; then `next`, the client's
  // answer, is read both when the read is queued before it arrives and when its event
  // was handled while no read was queued (a pipelining client).
  void expect_no_byte_missed(DrainedWhen when, const std::string& first, const std::string& next) {
    c.send_from_far(first);
    wait_until_readable(stream.socket(), first.size());
    EXPECT_EQ(next_read(when), first);

    read(when);
    poll(c.context);
    EXPECT_FALSE(got.has_value());
    c.send_from_far(next);
    run_until(c.context, [this] { return got.has_value(); });
    EXPECT_EQ(got.value_or("no read"), next);

    c.send_from_far(next);
    wait_until_readable(stream.socket(), next.size());
    for (int i = 0; i < 5; ++i) poll(c.context);
    EXPECT_EQ(next_read(when), next);
  }
};

TEST(ClientRequestReadTest, NoByteIsMissedAfterAnExhaustedRead) {
  ClientReads reads;
  const std::string request = query("SELECT 1");
  reads.expect_no_byte_missed(DrainedWhen::request_awaits_answer, request, request);

  // A read that starts inside a message (the relay's scanner is mid-message) never
  // marks the socket drained: the bytes after it are read at once.
  const std::string second = request.substr(4);
  reads.c.send_from_far(second);
  wait_until_readable(reads.stream.socket(), second.size());
  EXPECT_EQ(reads.next_read(DrainedWhen::request_awaits_answer, false), second);
}

// A client that closes right after a request whose end of stream was queued behind
// it: the read of the request takes the socket as drained, and the relay learns of
// the close when it writes the answer (the closed socket answers with a reset).
TEST(ClientRequestReadTest, AClientThatClosedIsFoundWhenItsAnswerIsWritten) {
  Connected c;
  Stream stream(std::move(c.near));
  const std::string request = query("SELECT 1");
  c.send_from_far(request);
  c.far.close();
  wait_until_readable(stream.socket(), request.size());
  for (int i = 0; i < 5; ++i) poll(c.context);
  std::array<char, 64> buffer{};
  std::optional<error_code> first_ec, second_ec;
  stream.async_read_client(asio::buffer(buffer), DrainedWhen::request_awaits_answer, true,
                           [&](error_code ec, std::size_t) { first_ec = ec; });
  run_until(c.context, [&] { return first_ec.has_value(); });
  EXPECT_FALSE(*first_ec);
  stream.async_read_client(asio::buffer(buffer), DrainedWhen::request_awaits_answer, true,
                           [&](error_code ec, std::size_t) { second_ec = ec; });
  const std::string answer = command_complete() + ready_for_query('I');
  error_code write_error;
  asio::write(stream.socket(), asio::buffer(answer), write_error);
  run_until(c.context, [&] { return second_ec.has_value(); });
  EXPECT_TRUE(*second_ec == asio::error::eof || *second_ec == asio::error::connection_reset) << second_ec->message();
}

bool login_awaits_answer(const std::string& bytes) {
  return is_login_message_awaiting_answer(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

TEST(ClientLoginReadTest, RecognizesOneWholeLoginMessage) {
  std::string startup, ssl, password, sasl;
  const std::pair<std::string, std::string> parameters[] = {{"user", "bench"}, {"database", "bench"}};
  protocol::append_startup_message(startup, parameters);
  protocol::append_ssl_request(ssl);
  protocol::append_password_message(password, "secret");
  protocol::append_sasl_initial_response(sasl, "SCRAM-SHA-256", "n,,n=,r=abc");
  EXPECT_TRUE(login_awaits_answer(startup));
  EXPECT_TRUE(login_awaits_answer(ssl));
  EXPECT_TRUE(login_awaits_answer(password));
  EXPECT_TRUE(login_awaits_answer(sasl));
  EXPECT_FALSE(login_awaits_answer(""));
  EXPECT_FALSE(login_awaits_answer(startup.substr(0, startup.size() - 1)));  // cut short
  EXPECT_FALSE(login_awaits_answer(startup + password));                     // more than one message
  EXPECT_FALSE(login_awaits_answer(password.substr(0, 4)));
  EXPECT_FALSE(login_awaits_answer(password + "p"));
  EXPECT_FALSE(login_awaits_answer(query("SELECT 1")));  // not a login message: no promise of silence
  EXPECT_FALSE(login_awaits_answer(std::string("\0\0\0\4", 4)));  // a length below a startup packet's
}

TEST(ClientLoginReadTest, ShortReadOfOneWholeLoginMessageIsExhausted) {
  std::string password;
  protocol::append_password_message(password, "secret");
  EXPECT_EQ(perform_after(password, 512, DrainedWhen::login_message_awaits_answer).status,
            reactor_op::done_and_exhausted);
  EXPECT_EQ(perform_after(password, 4, DrainedWhen::login_message_awaits_answer).status, reactor_op::done);
  EXPECT_EQ(perform_after(password + password, 512, DrainedWhen::login_message_awaits_answer).status,
            reactor_op::done);
}

// As a login reads a client: after an exhausted read of one login message the next
// read waits for the client's answer and gets it.
TEST(ClientLoginReadTest, NoByteIsMissedAfterAnExhaustedRead) {
  std::string startup, password;
  const std::pair<std::string, std::string> parameters[] = {{"user", "bench"}};
  protocol::append_startup_message(startup, parameters);
  protocol::append_password_message(password, "secret");
  ClientReads reads;
  reads.expect_no_byte_missed(DrainedWhen::login_message_awaits_answer, startup, password);
}

// A waiting client's read (StashBuffer), as the park and the client watch start it.
struct StashRead {
  protocol::ByteBuffer into;
  std::optional<error_code> ec;
  std::size_t n = 0;
  void start(Stream& stream) {
    ec.reset();
    stream.socket().async_receive(StashBuffer(&into), 0, [this](error_code e, std::size_t got) {
      ec = e;
      n = got;
    });
  }
  std::string bytes() const { return std::string(into.begin(), into.end()); }
};

// The wait's read is the request's read: the bytes land in the session's buffer,
// not much larger than what came, and a whole request the client waits on drains
// the socket without a byte after it being missed.
TEST(ClientStashTest, TheRequestLandsWholeAndNothingAfterItIsMissed) {
  Connected c;
  Stream stream(std::move(c.near));
  StashRead wait;
  wait.start(stream);
  poll(c.context);
  ASSERT_FALSE(wait.ec.has_value()) << "the wait completed with nothing sent";
  const std::string request = query("SELECT 1");
  c.send_from_far(request);
  run_until(c.context, [&] { return wait.ec.has_value(); });
  ASSERT_FALSE(*wait.ec) << wait.ec->message();
  EXPECT_EQ(wait.n, request.size());
  EXPECT_EQ(wait.bytes(), request);
  EXPECT_GE(wait.into.capacity(), request.size());
  EXPECT_LE(wait.into.capacity(), request.size() + protocol::kMaxSpareSlack)
      << "the buffer is much larger than what came";

  // Drained: the next wait is queued without a read, and still sees the next request.
  wait.into.clear();
  wait.start(stream);
  poll(c.context);
  ASSERT_FALSE(wait.ec.has_value());
  c.send_from_far(request + request);
  run_until(c.context, [&] { return wait.ec.has_value(); });
  ASSERT_FALSE(*wait.ec);
  EXPECT_EQ(wait.bytes(), request + request);
}

// One perform step of a waiting client's read, after `bytes` arrived whole: its
// verdict and what it stored.
struct StashPerformed {
  reactor_op::status status;
  protocol::ByteBuffer into;
};
StashPerformed perform_stash_read(const std::string& bytes) {
  Connected c;
  c.send_from_far(bytes);
  wait_until_readable(c.near, bytes.size());
  StashPerformed performed;
  reactive_socket_recv_op_base<StashBuffer> op(error_code(), c.near.native_handle(),
                                               boost::asio::detail::socket_ops::stream_oriented,
                                               StashBuffer(&performed.into), 0, nullptr);
  performed.status = reactive_socket_recv_op_base<StashBuffer>::do_perform(&op);
  EXPECT_EQ(std::string(performed.into.begin(), performed.into.end()), bytes);
  return performed;
}

// With a spare buffer on the thread (what the relay gave back after the last
// request), the read's bytes land in its memory: no allocation per request. A
// spare much larger than the request is left alone: a client waiting for a server
// would hold it.
TEST(ClientStashTest, TheReadTakesTheThreadsSpareBufferWhenItFits) {
  const std::string request = query("SELECT 1");
  const auto read_request = [&] {
    auto performed = perform_stash_read(request);
    EXPECT_EQ(performed.status, reactor_op::done_and_exhausted);
    return std::move(performed.into);
  };
  protocol::ByteBuffer fitting(request.size() + 100);
  const auto* memory = fitting.data();
  protocol::keep_as_spare(std::move(fitting));
  EXPECT_EQ(read_request().data(), memory) << "the bytes are not in the spare's memory";
  EXPECT_EQ(protocol::take_spare_buffer(request.size()).capacity(), 0u) << "the spare was not taken";

  protocol::ByteBuffer large(request.size() + protocol::kMaxSpareSlack + 1);
  const auto* large_memory = large.data();
  protocol::keep_as_spare(std::move(large));
  const auto read = read_request();
  EXPECT_NE(read.data(), large_memory) << "a spare much larger than the request was taken";
  EXPECT_GE(read.capacity(), request.size());
  EXPECT_LE(read.capacity(), request.size() + protocol::kMaxSpareSlack);
  EXPECT_EQ(protocol::take_spare_buffer(request.size() + protocol::kMaxSpareSlack).data(), large_memory)
      << "the large spare should have stayed";
}

// What the perform step says: a short read of whole requests the client waits on
// is the end for now; a request cut short, or one that needs more, is not.
TEST(ClientStashTest, OnlyAWholeRequestTheClientWaitsOnDrainsTheSocket) {
  const auto status_after = [](const std::string& bytes) { return perform_stash_read(bytes).status; };
  const std::string request = query("SELECT 1");
  EXPECT_EQ(status_after(request), reactor_op::done_and_exhausted);
  EXPECT_EQ(status_after(parse_bind_execute() + sync()), reactor_op::done_and_exhausted);
  EXPECT_EQ(status_after(parse_bind_execute()), reactor_op::done);
  EXPECT_EQ(status_after(request.substr(0, 5)), reactor_op::done);
  EXPECT_EQ(status_after(terminate()), reactor_op::done);
  // More than one read takes: the rest is still in the socket.
  const std::string large = query(std::string(kStashReadSize, 'x'));
  Connected c;
  std::thread writer([&] { c.send_from_far(large); });
  wait_until_readable(c.near, kStashReadSize);
  protocol::ByteBuffer into;
  reactive_socket_recv_op_base<StashBuffer> op(error_code(), c.near.native_handle(),
                                               boost::asio::detail::socket_ops::stream_oriented, StashBuffer(&into),
                                               0, nullptr);
  EXPECT_EQ(reactive_socket_recv_op_base<StashBuffer>::do_perform(&op), reactor_op::done);
  EXPECT_EQ(into.size(), kStashReadSize);
  std::string rest(large.size() - kStashReadSize, '\0');
  asio::read(c.near, asio::buffer(rest));
  writer.join();
  EXPECT_EQ(std::string(into.begin(), into.end()) + rest, large);
}

// A wait that finds the end of stream, queued after a drained request read and
// woken by the FIN's event: the read that follows must find the end at once. (Had
// the wait counted the socket drained, as Asio does at an end of stream, that read
// would wait for ever: no event is left to come.)
TEST(ClientStashTest, AReadAfterAWaitThatFoundTheEndFindsItToo) {
  Connected c;
  Stream stream(std::move(c.near));
  const std::string request = query("SELECT 1");
  c.send_from_far(request);
  wait_until_readable(stream.socket(), request.size());
  std::array<char, 64> buffer{};
  std::optional<error_code> read_ec;
  stream.async_read_client(asio::buffer(buffer), DrainedWhen::request_awaits_answer, true,
                           [&](error_code ec, std::size_t) { read_ec = ec; });
  run_until(c.context, [&] { return read_ec.has_value(); });
  ASSERT_FALSE(*read_ec);

  StashRead wait;
  wait.start(stream);
  poll(c.context);
  ASSERT_FALSE(wait.ec.has_value()) << "the wait completed with nothing sent";
  c.far.close();
  run_until(c.context, [&] { return wait.ec.has_value(); });
  EXPECT_EQ(*wait.ec, asio::error::eof) << wait.ec->message();
  EXPECT_TRUE(wait.into.empty());

  std::optional<error_code> after_ec;
  stream.async_read_client(asio::buffer(buffer), DrainedWhen::request_awaits_answer, true,
                           [&](error_code ec, std::size_t) { after_ec = ec; });
  run_until(c.context, [&] { return after_ec.has_value(); });
  EXPECT_EQ(*after_ec, asio::error::eof) << after_ec->message();
}

TEST(ServerReplyReadTest, ShortReplyEndingWithReadyForQueryIsExhausted) {
  const std::string reply = command_complete() + ready_for_query('I');
  const auto read = perform_after(reply, 64);
  EXPECT_EQ(read.status, reactor_op::done_and_exhausted);
  EXPECT_EQ(read.got, reply);
}

TEST(ServerReplyReadTest, ShortReadThatIsNotTheEndOfAReplyIsNotExhausted) {
  const std::string partial = command_complete() + notice();
  const auto read = perform_after(partial, 64);
  EXPECT_EQ(read.status, reactor_op::done);
  EXPECT_EQ(read.got, partial);
}

TEST(ServerReplyReadTest, FullReadMayHaveLeftBytesBehind) {
  const auto read = perform_after(command_complete() + ready_for_query('I'), 4);
  EXPECT_EQ(read.status, reactor_op::done);
  EXPECT_EQ(read.got.size(), 4u);
}

TEST(ServerReplyReadTest, EmptySocketIsNotDoneAndPeekLeavesBytes) {
  Connected c;
  std::array<char, 8> buffer{};
  std::size_t got = 0;
  error_code ec;
  EXPECT_EQ(perform(c.near, buffer.data(), buffer.size(), 0, got, ec), reactor_op::not_done);
  c.send_from_far(ready_for_query('I'));
  wait_until_readable(c.near, 6);
  // A peek leaves the bytes there: never "exhausted".
  EXPECT_EQ(perform(c.near, buffer.data(), buffer.size(), MSG_PEEK, got, ec), reactor_op::done);
  EXPECT_EQ(got, 6u);
  EXPECT_EQ(c.near.available(), 6u);
}

TEST(ServerReplyReadTest, EndOfStreamIsExhaustedWithEof) {
  Connected c;
  c.far.close();
  std::array<char, 8> buffer{};
  std::size_t got = 0;
  error_code ec;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  reactor_op::status status;
  while ((status = perform(c.near, buffer.data(), buffer.size(), 0, got, ec)) == reactor_op::not_done)
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
  EXPECT_EQ(status, reactor_op::done_and_exhausted);
  EXPECT_EQ(ec, asio::error::eof);
}

// Through Stream::async_read_reply, as the relay reads: after a reply ends with
// ReadyForQuery the next read is queued without trying recv(); bytes that arrive
// later complete it, both when the read was queued first and when the bytes'
// epoll event came first.
TEST(ServerReplyReadTest, NoByteIsMissedAfterAnExhaustedRead) {
  Connected c;
  Stream stream(std::move(c.near));
  std::array<char, 64> buffer{};
  std::optional<std::string> got;
  auto read = [&] {
    got.reset();
    stream.async_read_reply(asio::buffer(buffer), [&](error_code ec, std::size_t n) {
      got = ec ? "error: " + ec.message() : std::string(buffer.data(), n);
    });
  };
  const std::string reply = command_complete() + ready_for_query('I');

  c.send_from_far(reply);
  wait_until_readable(stream.socket(), reply.size());
  read();
  run_until(c.context, [&] { return got.has_value(); });
  EXPECT_EQ(*got, reply);  // the socket is now marked drained

  // Queued first, bytes later.
  read();
  poll(c.context);
  EXPECT_FALSE(got.has_value());
  c.send_from_far(reply);
  run_until(c.context, [&] { return got.has_value(); });
  EXPECT_EQ(*got, reply);

  // Bytes first, and their readiness event handled by the reactor while no read
  // was queued; the next read must still find them.
  c.send_from_far(notice());
  wait_until_readable(stream.socket(), notice().size());
  for (int i = 0; i < 5; ++i) poll(c.context);
  read();
  run_until(c.context, [&] { return got.has_value(); });
  EXPECT_EQ(*got, notice());

  // A reply larger than the buffer: the next read takes the rest at once.
  const std::string big = std::string(100, 'x') + ready_for_query('I');
  c.send_from_far(big);
  wait_until_readable(stream.socket(), big.size());
  read();
  run_until(c.context, [&] { return got.has_value(); });
  EXPECT_EQ(got->size(), buffer.size());
  read();
  run_until(c.context, [&] { return got.has_value(); });
  EXPECT_EQ(got->size(), big.size() - buffer.size());
}

// The case that hung the relay when every short read counted as "drained": the
// server sends a last message and closes, both queued before the read. The end of
// stream must reach the next read.
TEST(ServerReplyReadTest, AMessageFollowedByCloseStillEndsTheStream) {
  Connected c;
  Stream stream(std::move(c.near));
  c.send_from_far(notice());
  c.far.shutdown(tcp::socket::shutdown_send);
  // Both the notice and the FIN are in: the socket is readable, and a peek past
  // the notice would see the end.
  wait_until_readable(stream.socket(), notice().size());
  // Their readiness event is consumed now, as when the relay's read was already
  // waiting for them: no other event is coming.
  for (int i = 0; i < 5; ++i) poll(c.context);
  std::array<char, 64> buffer{};
  std::optional<error_code> first_ec, second_ec;
  std::size_t first_n = 0;
  stream.async_read_reply(asio::buffer(buffer), [&](error_code ec, std::size_t n) {
    first_ec = ec;
    first_n = n;
  });
  run_until(c.context, [&] { return first_ec.has_value(); });
  EXPECT_FALSE(*first_ec);
  EXPECT_EQ(first_n, notice().size());
  stream.async_read_reply(asio::buffer(buffer), [&](error_code ec, std::size_t) { second_ec = ec; });
  run_until(c.context, [&] { return second_ec.has_value(); });
  EXPECT_EQ(*second_ec, asio::error::eof);
}

}  // namespace
}  // namespace sluice::pool
