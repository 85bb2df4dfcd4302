// Unit tests of pool::resolve_host: server host lookup that works on an io_context
// without locking (BOOST_ASIO_CONCURRENCY_HINT_UNSAFE, Sluice with one worker).
#include <gtest/gtest.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <optional>

#include "pool/resolver.h"

namespace sluice::pool {
namespace {

// Runs resolve_host to completion on a lock-free io_context, as one worker does.
Resolved resolve_unlocked(const std::string& host, std::uint16_t port) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  std::optional<Resolved> result;
  asio::co_spawn(io, resolve_host(host, port), [&](std::exception_ptr error, Resolved resolved) {
    if (error) std::rethrow_exception(error);
    result = std::move(resolved);
  });
  io.run();
  if (!result) throw std::runtime_error("resolve_host did not complete");
  return std::move(*result);
}

TEST(ResolveHost, AnAddressLiteralIsTheEndpoint) {
  const auto v4 = resolve_unlocked("127.0.0.1", 5432);
  ASSERT_EQ(v4.endpoints.size(), 1u) << v4.error;
  EXPECT_EQ(v4.endpoints[0], tcp::endpoint(asio::ip::make_address("127.0.0.1"), 5432));
  const auto v6 = resolve_unlocked("::1", 6432);
  ASSERT_EQ(v6.endpoints.size(), 1u) << v6.error;
  EXPECT_EQ(v6.endpoints[0], tcp::endpoint(asio::ip::make_address("::1"), 6432));
}

// The reason for resolve_host: Asio's own resolver completes from its thread
// through the scheduler's lock, and refuses to run where there is none.
TEST(ResolveHost, ANameIsLookedUpWhereAsiosResolverRefusesToWork) {
  {
    asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
    tcp::resolver resolver(io);
    error_code asio_error;
    resolver.async_resolve("localhost", "5432", [&](error_code ec, const tcp::resolver::results_type&) {
      asio_error = ec;
    });
    io.run();
    EXPECT_EQ(asio_error, asio::error::operation_not_supported);
  }
  const auto resolved = resolve_unlocked("localhost", 5433);
  ASSERT_FALSE(resolved.endpoints.empty()) << resolved.error;
  EXPECT_TRUE(resolved.error.empty()) << resolved.error;
  for (const auto& endpoint : resolved.endpoints) {
    EXPECT_TRUE(endpoint.address().is_loopback()) << endpoint.address().to_string();
    EXPECT_EQ(endpoint.port(), 5433);
  }
}

// Several lookups at once on one thread: each wakes its own waiter with its own result.
TEST(ResolveHost, ConcurrentLookupsEachGetTheirOwnResult) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  std::vector<std::optional<Resolved>> results(6);
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto port = static_cast<std::uint16_t>(7000 + i);
    asio::co_spawn(io, resolve_host("localhost", port), [&results, i](std::exception_ptr error, Resolved resolved) {
      if (error) std::rethrow_exception(error);
      results[i] = std::move(resolved);
    });
  }
  io.run();
  for (std::size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].has_value()) << "lookup " << i << " never completed";
    ASSERT_FALSE(results[i]->endpoints.empty()) << results[i]->error;
    EXPECT_EQ(results[i]->endpoints.front().port(), 7000 + i);
  }
}

// A waiter that gives up at once (cancelled, as by a connect timeout) returns
// without endpoints or with them, depending on who is first; either way nothing is
// left behind that breaks the next lookup, and its descriptors are released
// (LeakSanitizer, and the helper's late write to the abandoned lookup, under ASan).
TEST(ResolveHost, AGivenUpLookupLeavesTheNextOneWorking) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  for (int round = 0; round < 20; ++round) {
    asio::cancellation_signal cancel;
    std::optional<Resolved> given_up;
    asio::co_spawn(io, resolve_host("localhost", 5432),
                   asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr error, Resolved resolved) {
                     if (error) std::rethrow_exception(error);
                     given_up = std::move(resolved);
                   }));
    io.poll();  // runs up to the wait for the helper, or to the end if the lookup was that quick
    // Only a waiting coroutine is cancelled, as operator|| does: in Asio 1.81 a
    // cancellation emitted after a co_spawn'ed coroutine ended reaches freed memory.
    if (!given_up) cancel.emit(asio::cancellation_type::all);
    io.run();
    io.restart();
    ASSERT_TRUE(given_up.has_value());
    if (given_up->endpoints.empty()) {
      EXPECT_TRUE(given_up->cancelled) << given_up->error;
      EXPECT_EQ(given_up->error, "lookup cancelled");
    }
  }
  std::optional<Resolved> next;
  asio::co_spawn(io, resolve_host("localhost", 5433), [&](std::exception_ptr error, Resolved resolved) {
    if (error) std::rethrow_exception(error);
    next = std::move(resolved);
  });
  io.run();
  ASSERT_TRUE(next.has_value());
  ASSERT_FALSE(next->endpoints.empty()) << next->error;
  EXPECT_EQ(next->endpoints.front().port(), 5433);
}

// A name that does not exist: no endpoints, and a reason to put in the error the
// client gets (".invalid" is reserved and never resolves).
TEST(ResolveHost, AFailedLookupSaysWhy) {
  const auto resolved = resolve_unlocked("no-such-host.invalid", 5432);
  EXPECT_TRUE(resolved.endpoints.empty());
  EXPECT_FALSE(resolved.error.empty());
}

}  // namespace
}  // namespace sluice::pool
