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

// Blocks for operations that may wait for hours, such as a parked client's read
// wait. Asio's own per-thread recycling cache (what std::allocator gets) hands out
// any larger block it holds (an accept operation's, say), which such a wait would
// keep for as long as it lasts. These blocks are reused only for a request of the
// same size, so a wait holds what it asked for; and since a transaction-mode client
// starts one such wait per transaction, a few freed blocks are kept per thread
// instead of a malloc and a free every time.
namespace detail {
class ExactSizeBlocks {
 public:
  ExactSizeBlocks() = default;
  ExactSizeBlocks(const ExactSizeBlocks&) = delete;
  ExactSizeBlocks& operator=(const ExactSizeBlocks&) = delete;
  ~ExactSizeBlocks() {
    for (std::size_t i = 0; i < count_; ++i) ::operator delete(kept_[i].block);
    count_ = 0;
  }
  void* take(std::size_t size) {
    for (std::size_t i = count_; i-- > 0;) {
      if (kept_[i].size != size) continue;
      void* block = kept_[i].block;
      kept_[i] = kept_[--count_];
      return block;
    }
    return ::operator new(size);
  }
  void give(void* block, std::size_t size) noexcept {
    if (count_ == kKept) {
      ::operator delete(block);
      return;
    }
    kept_[count_++] = {block, size};
  }
  std::size_t kept() const noexcept { return count_; }
  static constexpr std::size_t max_kept() noexcept { return kKept; }
  static ExactSizeBlocks& of_this_thread() {
    thread_local ExactSizeBlocks blocks;
    return blocks;
  }

 private:
  static constexpr std::size_t kKept = 8;
  struct Kept {
    void* block;
    std::size_t size;
  };
  Kept kept_[kKept] = {};
  std::size_t count_ = 0;
};
}  // namespace detail

template <class T>
struct ExactSizeAllocator {
  using value_type = T;
  ExactSizeAllocator() = default;
  template <class U>
  ExactSizeAllocator(const ExactSizeAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "blocks come from plain operator new");
    return static_cast<T*>(detail::ExactSizeBlocks::of_this_thread().take(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { detail::ExactSizeBlocks::of_this_thread().give(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const ExactSizeAllocator<U>&) const noexcept {
    return true;
  }
};
}  // namespace sluice
