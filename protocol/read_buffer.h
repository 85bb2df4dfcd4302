#pragma once
// A growable read buffer for message-at-a-time reading (the size of a message is
// capped by peek_message's max_body, which the caller checks before reading more),
// used during login and connection set-up (the relay path uses StreamScanner instead).
// Contract: prepare() returns writable space, commit(n) publishes n bytes read
// into it, data() is the unconsumed bytes, consume(n) drops them. Views into
// data() stay valid until the next prepare().
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "protocol/per_thread.h"

namespace sluice::protocol {

// Leaves bytes uninitialised when a vector grows: I/O buffers are always
// written by a read before they are looked at, and zeroing two 8 KiB buffers per
// transaction was the largest single cost of transaction pooling.
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using ByteBuffer = std::vector<std::uint8_t, DefaultInitAllocator<std::uint8_t>>;

// One emptied buffer kept per thread, for bytes on their way to the relay: a
// waiting client's request, read by its watch (pool::StashBuffer) and copied into
// the relay once a server is attached, was a malloc and a free per transaction.
// The spare is the buffer given back last (one larger than kMaxSpareBytes is freed
// instead), and it is handed out only for bytes that nearly fill it, so a client
// that waits for a server holds at most kMaxSpareSlack bytes more than its request.
inline constexpr std::size_t kMaxSpareBytes = 16 * 1024;
inline constexpr std::size_t kMaxSpareSlack = 256;
namespace detail {
struct SpareBuffer {
  ByteBuffer buffer;
};
// This thread's spare, or null once it was destroyed (at thread exit).
inline ByteBuffer* spare_buffer_of_this_thread() noexcept {
  SpareBuffer* spare = this_thread_object<SpareBuffer>();
  return spare != nullptr ? &spare->buffer : nullptr;
}
}  // namespace detail
// The thread's spare when it holds `size` bytes with at most kMaxSpareSlack left
// over, else an empty buffer (the spare stays).
inline ByteBuffer take_spare_buffer(std::size_t size) noexcept {
  ByteBuffer* spare = detail::spare_buffer_of_this_thread();
  if (spare == nullptr || spare->capacity() < size || spare->capacity() - size > kMaxSpareSlack) return {};
  return std::move(*spare);
}
// Takes `buffer`'s memory (leaving it with none) as the thread's spare, in place of
// the old one; or frees it when it is larger than kMaxSpareBytes.
inline void keep_as_spare(ByteBuffer&& buffer) noexcept {
  ByteBuffer kept = std::move(buffer);
  ByteBuffer* spare = detail::spare_buffer_of_this_thread();
  if (spare == nullptr || kept.capacity() == 0 || kept.capacity() > kMaxSpareBytes) return;  // freed with `kept`
  kept.clear();
  spare->swap(kept);  // the old spare is freed with `kept`
}

class ReadBuffer {
 public:
  explicit ReadBuffer(std::size_t initial = 4096) : storage_(initial) {}

  std::span<std::uint8_t> prepare(std::size_t min_free = 1024) {
    if (begin_ == end_) begin_ = end_ = 0;
    if (storage_.size() - end_ < min_free) {
      if (begin_ > 0) {  // compact before growing
        std::memmove(storage_.data(), storage_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (storage_.size() - end_ < min_free) storage_.resize(end_ + std::max(min_free, storage_.size()));
    }
    return {storage_.data() + end_, storage_.size() - end_};
  }
  void commit(std::size_t n) noexcept { end_ += n; }
  std::span<const std::uint8_t> data() const noexcept { return {storage_.data() + begin_, end_ - begin_}; }
  void consume(std::size_t n) noexcept { begin_ += n; }
  std::size_t size() const noexcept { return end_ - begin_; }
  std::size_t capacity() const noexcept { return storage_.size(); }
  bool empty() const noexcept { return begin_ == end_; }
  // Takes `bytes` as what is buffered, without a copy; the buffer must be empty.
  void adopt(ByteBuffer&& bytes) noexcept {
    storage_ = std::move(bytes);
    begin_ = 0;
    end_ = storage_.size();
  }
  // Gives the memory back while nothing is buffered (an idle client keeps none):
  // to this thread's spare (see keep_as_spare).
  void release_if_empty() noexcept {
    if (begin_ != end_) return;
    keep_as_spare(std::move(storage_));  // leaves storage_ without memory
    begin_ = end_ = 0;
  }

 private:
  ByteBuffer storage_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace sluice::protocol
