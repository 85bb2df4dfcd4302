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

#include "protocol/per_thread.h"

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
// Up to kMaxKept freed blocks, each given out again only for its own size.
class ExactSizeBlocks {
 public:
  static constexpr std::size_t kMaxKept = 8;
  ExactSizeBlocks() = default;
  ExactSizeBlocks(const ExactSizeBlocks&) = delete;
  ExactSizeBlocks& operator=(const ExactSizeBlocks&) = delete;
  ~ExactSizeBlocks() {
    for (std::size_t i = 0; i < count_; ++i) ::operator delete(kept_[i].block);
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
    if (count_ < kMaxKept) {
      kept_[count_++] = {block, size};
      return;
    }
    // Full: the block replaces a kept one (in turn), so that blocks of sizes a
    // thread no longer asks for do not stay for ever.
    ::operator delete(kept_[replace_next_].block);
    kept_[replace_next_] = {block, size};
    replace_next_ = (replace_next_ + 1) % kMaxKept;
  }
  std::size_t kept() const noexcept { return count_; }

 private:
  struct Kept {
    void* block;
    std::size_t size;
  };
  Kept kept_[kMaxKept] = {};
  std::size_t count_ = 0;
  std::size_t replace_next_ = 0;
};

// This thread's blocks, or null once they were destroyed (at thread exit: what is
// freed after that goes straight back to the heap).
inline ExactSizeBlocks* exact_size_blocks_of_this_thread() noexcept {
  return protocol::this_thread_object<ExactSizeBlocks>();
}
}  // namespace detail

template <class T>
struct ExactSizeAllocator {
  using value_type = T;
  ExactSizeAllocator() = default;
  template <class U>
  ExactSizeAllocator(const ExactSizeAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "blocks come from plain operator new");
    auto* blocks = detail::exact_size_blocks_of_this_thread();
    return static_cast<T*>(blocks != nullptr ? blocks->take(n * sizeof(T)) : ::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (auto* blocks = detail::exact_size_blocks_of_this_thread()) return blocks->give(p, n * sizeof(T));
    ::operator delete(p);
  }
  template <class U>
  bool operator==(const ExactSizeAllocator<U>&) const noexcept {
    return true;
  }
};
}  // namespace sluice
