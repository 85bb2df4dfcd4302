#pragma once
// StreamScanner follows message boundaries in a relayed byte stream without
// owning or copying it: the relay reads a chunk, lets the scanner walk it, and
// forwards the very same bytes. Only the bodies of messages the observer asks to
// inspect (small ones: ReadyForQuery, ErrorResponse, ParameterStatus, ...) are
// handed over, as a view into the chunk, or from a small reusable stash when the
// body is split across reads. Large messages (DataRow, CopyData) are skipped by
// byte count, so a 100 MB result streams through with bounded memory.
#include <cstdint>
#include <string>

#include "protocol/wire.h"

namespace sluice::protocol {

// What the observer wants after seeing a message.
enum class ScanAction { next, stop };

// Observer concept:
//   bool inspect(char type);                          // true: deliver the body of this type
//   ScanAction on_message(char type, Bytes body);     // called for inspected types, when complete
// (Types not inspected are skipped without a call.)
class StreamScanner {
 public:
  explicit StreamScanner(std::uint32_t max_body) : max_body_(max_body) {}

  struct Outcome {
    std::size_t consumed = 0;  // bytes of the chunk walked (all, unless the observer stopped)
    bool stopped = false;      // the observer returned ScanAction::stop for a message ending at `consumed`
    // When stopped: where the stopping message's header began in this chunk, or
    // npos when it began in an earlier chunk (so part of it was already passed on).
    std::size_t stop_message_begin = 0;
  };
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  // Inspected bodies longer than this are delivered truncated to their first
  // kMaxInspected bytes: the fields Sluice reads (severity, SQLSTATE, status) come
  // first, and a 300 MB ErrorResponse must not be held in memory.
  static constexpr std::size_t kMaxInspected = 64 * 1024;

  // Walks `chunk`. Errors (bad length, oversized message) leave the scanner unusable.
  template <class Observer>
  [[nodiscard]] result<Outcome> feed(Bytes chunk, Observer& observer);

  // True when the scanner sits exactly on a message boundary.
  bool at_boundary() const noexcept { return header_len_ == 0 && !in_body_; }
  void set_max_body(std::uint32_t max_body) noexcept { max_body_ = max_body; }

 private:
  static constexpr std::size_t kMaxKeptStash = 16 * 1024;
  std::uint32_t max_body_;
  std::uint8_t header_[kHeaderSize]{};
  std::size_t header_len_ = 0;
  bool in_body_ = false;
  bool inspecting_ = false;
  char type_ = 0;
  std::uint32_t remaining_ = 0;
  std::uint32_t body_length_ = 0;
  bool began_in_this_chunk_ = false;
  std::size_t message_begin_ = 0;
  std::string stash_;  // body of an inspected message split across chunks; capacity is reused
};

template <class Observer>
result<StreamScanner::Outcome> StreamScanner::feed(Bytes chunk, Observer& observer) {
  std::size_t pos = 0;
  const std::size_t size = chunk.size();
  while (pos < size) {
    if (!in_body_) {
      // Collect the 5-byte header; the common case has it whole in the chunk.
      if (header_len_ == 0 && size - pos >= kHeaderSize) {
        began_in_this_chunk_ = true;
        message_begin_ = pos;
        type_ = static_cast<char>(chunk[pos]);
        remaining_ = read_u32(chunk.data() + pos + 1);
        pos += kHeaderSize;
      } else {
        if (header_len_ == 0) {
          began_in_this_chunk_ = true;
          message_begin_ = pos;
        }
        while (header_len_ < kHeaderSize && pos < size) header_[header_len_++] = chunk[pos++];
        if (header_len_ < kHeaderSize) {
          began_in_this_chunk_ = false;  // the next chunk continues this header
          break;
        }
        type_ = static_cast<char>(header_[0]);
        remaining_ = read_u32(header_ + 1);
        header_len_ = 0;
      }
      if (remaining_ < 4) return errc::bad_length;
      remaining_ -= 4;
      if (remaining_ > max_body_) return errc::message_too_large;
      body_length_ = remaining_;
      in_body_ = true;
      inspecting_ = observer.inspect(type_);
      stash_.clear();
    }
    const std::size_t take = std::min<std::size_t>(remaining_, size - pos);
    Bytes body;
    if (inspecting_) {
      if (stash_.empty() && take == remaining_ && body_length_ == remaining_) {
        // Whole body in this chunk: a view, no copy (capped like a stashed one).
        body = chunk.subspan(pos, std::min<std::size_t>(take, kMaxInspected));
      } else {
        const std::size_t room = kMaxInspected > stash_.size() ? kMaxInspected - stash_.size() : 0;
        stash_.append(reinterpret_cast<const char*>(chunk.data() + pos), std::min(take, room));
        body = Bytes(reinterpret_cast<const std::uint8_t*>(stash_.data()), stash_.size());
      }
    }
    pos += take;
    remaining_ -= static_cast<std::uint32_t>(take);
    if (remaining_ != 0) {
      began_in_this_chunk_ = false;  // the next chunk continues this body
      break;                         // chunk exhausted mid-body
    }
    in_body_ = false;
    if (inspecting_) {
      const ScanAction action = observer.on_message(type_, body);
      // An unusually large inspected message must not pin its memory for the rest
      // of the connection.
      if (stash_.capacity() > kMaxKeptStash) std::string().swap(stash_);
      if (action == ScanAction::stop) return Outcome{pos, true, began_in_this_chunk_ ? message_begin_ : npos};
    }
  }
  return Outcome{pos, false, 0};
}

}  // namespace sluice::protocol
