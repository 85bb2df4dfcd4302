#pragma once
// Helpers for building PostgreSQL wire messages in tests, independent of the
// builders under test (like Envoy's createPostgresMsg(buf, "Q", "SELECT 1")):
//   pg_msg('Q', cstr("SELECT 1"))             typed message: type, int32 length, body
//   startup_pkt(kProtocolV3, cstr("user") + cstr("bob") + nul())   untyped packet
// plus views, exact-size heap copies (so AddressSanitizer catches any read past
// the end) and a hex dump for readable assertion failures.
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "protocol/wire.h"

namespace sluice::protocol::test {

// Big-endian int32 / int16, as on the wire.
inline std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
inline std::string be16(std::uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }

// A NUL-terminated string, and a lone NUL (list terminator).
inline std::string cstr(std::string_view s) {
  std::string out(s);
  out.push_back('\0');
  return out;
}
inline std::string nul() { return std::string(1, '\0'); }

// A typed message: type byte, int32 length (body + 4), body.
inline std::string pg_msg(char type, std::string_view body) {
  std::string out(1, type);
  out += be32(static_cast<std::uint32_t>(body.size() + 4));
  out.append(body);
  return out;
}
// A typed message whose length field says `length` whatever the body (for bad lengths).
inline std::string pg_msg_with_length(char type, std::uint32_t length, std::string_view body = {}) {
  std::string out(1, type);
  out += be32(length);
  out.append(body);
  return out;
}

// An untyped startup-family packet: int32 length (body + 8), int32 code, body.
inline std::string startup_pkt(std::uint32_t code, std::string_view body = {}) {
  return be32(static_cast<std::uint32_t>(body.size() + 8)) + be32(code) + std::string(body);
}
inline std::string startup_pkt_with_length(std::uint32_t length, std::uint32_t code, std::string_view body = {}) {
  return be32(length) + be32(code) + std::string(body);
}

// A StartupMessage (protocol 3.0 unless told) with the given name/value pairs and terminator.
inline std::string startup_msg(std::initializer_list<std::pair<std::string_view, std::string_view>> params,
                               std::uint32_t protocol = kProtocolV3) {
  std::string body;
  for (const auto& [k, v] : params) body += cstr(k) + cstr(v);
  body += nul();
  return startup_pkt(protocol, body);
}

inline Bytes as_bytes(std::string_view s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }
inline std::string_view as_sv(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
inline std::string as_string(Bytes b) { return std::string(as_sv(b)); }

// A heap copy of exactly `s.size()` bytes: a read one past the end is a heap-buffer-overflow
// under AddressSanitizer (std::string would hide it behind its capacity and NUL terminator).
class ExactCopy {
 public:
  explicit ExactCopy(std::string_view s) : size_(s.size()), data_(new std::uint8_t[s.size()]) {
    if (size_ != 0) std::memcpy(data_.get(), s.data(), size_);
  }
  Bytes bytes() const noexcept { return {data_.get(), size_}; }

 private:
  std::size_t size_;
  std::unique_ptr<std::uint8_t[]> data_;
};

// "51 00 00 00 0d 53 45 ..." for assertion messages.
inline std::string hex(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i != 0) out.push_back(' ');
    const auto c = static_cast<unsigned char>(s[i]);
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0xf]);
  }
  return out;
}
inline std::string hex(Bytes b) { return hex(as_sv(b)); }

// Readable outcomes for assertions: "ok", or the errc name ("bad_length", ...).
inline std::string errc_name(const boost::system::error_code& ec) {
  if (ec.category() != protocol_category()) return ec.to_string();
  switch (static_cast<errc>(ec.value())) {
    case errc::ok: return "ok";
    case errc::message_too_large: return "message_too_large";
    case errc::bad_length: return "bad_length";
    case errc::startup_too_large: return "startup_too_large";
    case errc::unsupported_protocol: return "unsupported_protocol";
    case errc::malformed_message: return "malformed_message";
    case errc::missing_user: return "missing_user";
    case errc::unexpected_message: return "unexpected_message";
    case errc::auth_failed: return "auth_failed";
    case errc::auth_unsupported: return "auth_unsupported";
    case errc::scram_invalid_message: return "scram_invalid_message";
    case errc::scram_nonce_mismatch: return "scram_nonce_mismatch";
    case errc::scram_server_signature: return "scram_server_signature";
    case errc::scram_channel_binding: return "scram_channel_binding";
  }
  return ec.to_string();
}
template <class T>
std::string status(const result<T>& r) {
  return r.has_value() ? "ok" : errc_name(r.error());
}
// For peek_message / peek_startup: "need more", "size N" or the errc name.
inline std::string peeked(const result<std::size_t>& r) {
  if (!r.has_value()) return errc_name(r.error());
  return *r == 0 ? "need more" : "size " + std::to_string(*r);
}
inline std::string size_str(std::size_t n) { return "size " + std::to_string(n); }

}  // namespace sluice::protocol::test
