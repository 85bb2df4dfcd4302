#pragma once
// Server host lookup that never completes through the io_context from another thread.
//
// Asio's resolver runs getaddrinfo on a thread of its own and hands the result back
// through the scheduler's lock. With one worker the io_context runs without any
// locking (BOOST_ASIO_CONCURRENCY_HINT_UNSAFE), and there Asio's resolver refuses to
// work. So: an address literal needs no lookup at all; a name is looked up on a
// helper thread, which wakes the waiting coroutine through an eventfd that the
// reactor watches like any socket.
#include <cstdint>
#include <string>
#include <vector>

#include "pool/asio.h"

namespace sluice::pool {

struct Resolved {
  std::vector<tcp::endpoint> endpoints;  // in getaddrinfo's order; empty on failure
  std::string error;                     // why there are none (getaddrinfo's text, say)
  bool cancelled = false;                // the wait was cancelled (a caller's timeout, say)
};

// Cancellable (per-operation cancellation, e.g. from operator||): the coroutine
// then returns at once with an error; the lookup itself finishes in the background.
awaitable<Resolved> resolve_host(std::string host, std::uint16_t port);

}  // namespace sluice::pool
