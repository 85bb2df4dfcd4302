#pragma once
// A first-in first-out queue that keeps its storage. std::deque frees a block each
// time its front leaves one and allocates another as its back enters the next: with
// the relay's queue of pending requests (five per extended-protocol transaction, seven
// to a block) that is a malloc and a free every other transaction. Here the elements
// live in a vector read from `head_`; the vector is cleared (its capacity kept) when
// the queue empties, and its dead front is dropped once that is half of it, so a queue
// that never empties (a client that keeps pipelining) stays bounded by what it holds.
#include <cstddef>
#include <utility>
#include <vector>

namespace sluice::proxy {

template <class T>
class ReusedFifo {
 public:
  using iterator = typename std::vector<T>::iterator;
  using const_iterator = typename std::vector<T>::const_iterator;

  bool empty() const { return head_ == items_.size(); }
  std::size_t size() const { return items_.size() - head_; }
  T& front() { return items_[head_]; }
  const T& front() const { return items_[head_]; }
  T& back() { return items_.back(); }
  const T& back() const { return items_.back(); }
  T& operator[](std::size_t i) { return items_[head_ + i]; }
  const T& operator[](std::size_t i) const { return items_[head_ + i]; }
  iterator begin() { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  iterator end() { return items_.end(); }
  const_iterator begin() const { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  const_iterator end() const { return items_.end(); }

  // Like std::vector's, these invalidate references to the elements (std::deque's do not).
  template <class... Args>
  T& emplace_back(Args&&... args) {
    if (head_ >= 16 && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), begin());
      head_ = 0;
    }
    return items_.emplace_back(std::forward<Args>(args)...);
  }
  void push_back(T value) { emplace_back(std::move(value)); }
  // The element is destroyed when the queue empties or its dead front is dropped,
  // not now: what it holds (strings, shared pointers) lives until then.
  void pop_front() {
    if (++head_ == items_.size()) clear();
  }
  iterator erase(iterator at) { return items_.erase(at); }
  void clear() {
    items_.clear();
    head_ = 0;
  }
  std::size_t capacity() const { return items_.capacity(); }

 private:
  std::vector<T> items_;
  std::size_t head_ = 0;  // items_[0, head_) are popped
};

}  // namespace sluice::proxy
