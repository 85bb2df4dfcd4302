#pragma once
// Common Asio aliases for the I/O shell (pool/ and proxy/).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstddef>
#include <memory>

namespace sluice {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
template <class T = void>
using awaitable = asio::awaitable<T>;
// Completion token that returns (error_code, ...) as a tuple instead of throwing:
// EOF and resets are expected, not exceptional.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// Plain operator new/delete, which Asio does not swap for its per-thread recycling
// cache (as it does std::allocator). For operations that may wait for hours, such
// as a parked client's read wait: the cache would hand them any larger block it
// holds (an accept operation's, say), kept for as long as the wait lasts.
template <class T>
struct UncachedAllocator {
  using value_type = T;
  UncachedAllocator() = default;
  template <class U>
  UncachedAllocator(const UncachedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
  template <class U>
  bool operator==(const UncachedAllocator<U>&) const noexcept {
    return true;
  }
};
}  // namespace sluice
