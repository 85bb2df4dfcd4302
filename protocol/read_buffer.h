#pragma once
// A growable read buffer for message-at-a-time reading (the size of a message is
// capped by peek_message's max_body, which the caller checks before reading more),
// used during login and connection set-up (the relay path uses StreamScanner instead).
// Contract: prepare() returns writable space, commit(n) publishes n bytes read
// into it, data() is the unconsumed bytes, consume(n) drops them. Views into
// data() stay valid until the next prepare().
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace sluice::protocol {

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
  bool empty() const noexcept { return begin_ == end_; }
  // Gives the memory back while nothing is buffered (an idle client keeps none).
  void release_if_empty() {
    if (begin_ != end_) return;
    std::vector<std::uint8_t>().swap(storage_);
    begin_ = end_ = 0;
  }

 private:
  std::vector<std::uint8_t> storage_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace sluice::protocol
