#include "protocol/wire.h"

#include <algorithm>

namespace sluice::protocol {
namespace {

// Reads a NUL-terminated string at `pos`, advancing it; nullopt when there is no NUL.
std::optional<std::string_view> read_cstr(Bytes body, std::size_t& pos) noexcept {
  if (pos >= body.size()) return std::nullopt;
  const auto* begin = body.data() + pos;
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(begin, 0, body.size() - pos));
  if (nul == nullptr) return std::nullopt;
  std::string_view s(reinterpret_cast<const char*>(begin), static_cast<std::size_t>(nul - begin));
  pos += s.size() + 1;
  return s;
}

}  // namespace

result<std::size_t> peek_message(Bytes buffer, std::uint32_t max_body, Message& out) noexcept {
  if (buffer.size() < kHeaderSize) return std::size_t{0};
  const std::uint32_t length = read_u32(buffer.data() + 1);
  if (length < 4) return errc::bad_length;
  if (length - 4 > max_body) return errc::message_too_large;
  const std::size_t total = std::size_t{length} + 1;
  if (buffer.size() < total) return std::size_t{0};
  out.type = static_cast<char>(buffer[0]);
  out.body = buffer.subspan(kHeaderSize, length - 4);
  return total;
}

std::string_view StartupPacket::get(std::string_view name) const noexcept {
  for (const auto& [k, v] : parameters)
    if (k == name) return v;
  return {};
}

result<std::size_t> peek_startup(Bytes buffer, StartupPacket& out) {
  if (buffer.size() < 4) return std::size_t{0};
  const std::uint32_t length = read_u32(buffer.data());
  if (length < 8) return errc::bad_length;
  if (length > kMaxStartupPacket) return errc::startup_too_large;
  if (buffer.size() < 8) return std::size_t{0};
  // The code is checked before the whole packet arrives so a client speaking another
  // protocol gets its answer without us waiting for bytes that may never come.
  const std::uint32_t code = read_u32(buffer.data() + 4);
  out = StartupPacket{};
  out.protocol = code;
  if (code == kSslRequestCode || code == kGssEncRequestCode) {
    if (length != 8) return errc::bad_length;
    out.kind = code == kSslRequestCode ? StartupKind::ssl_request : StartupKind::gssenc_request;
    return std::size_t{8};
  }
  if (code == kCancelRequestCode) {
    if (length != 16) return errc::bad_length;
    if (buffer.size() < 16) return std::size_t{0};
    out.kind = StartupKind::cancel_request;
    out.cancel_pid = read_u32(buffer.data() + 8);
    out.cancel_secret = read_u32(buffer.data() + 12);
    return std::size_t{16};
  }
  if ((code >> 16) != 3) return errc::unsupported_protocol;
  if (buffer.size() < length) return std::size_t{0};
  out.kind = StartupKind::startup;
  // Name/value pairs, terminated by an empty name.
  Bytes body = buffer.subspan(8, length - 8);
  std::size_t pos = 0;
  for (;;) {
    auto name = read_cstr(body, pos);
    if (!name) return errc::malformed_message;
    if (name->empty()) break;
    auto value = read_cstr(body, pos);
    if (!value) return errc::malformed_message;
    out.parameters.emplace_back(*name, *value);
  }
  if (pos != body.size()) return errc::malformed_message;
  if (out.get("user").empty()) return errc::missing_user;
  return std::size_t{length};
}

bool ErrorFields::is_fatal() const noexcept {
  std::string_view s = severity_v.empty() ? severity : severity_v;
  return s == "FATAL" || s == "PANIC";
}

result<ErrorFields> parse_error_fields(Bytes body) noexcept {
  ErrorFields fields;
  std::size_t pos = 0;
  for (;;) {
    if (pos >= body.size()) return errc::malformed_message;
    const char code = static_cast<char>(body[pos++]);
    if (code == 0) break;
    auto value = read_cstr(body, pos);
    if (!value) return errc::malformed_message;
    switch (code) {
      case 'S': fields.severity = *value; break;
      case 'V': fields.severity_v = *value; break;
      case 'C': fields.sqlstate = *value; break;
      case 'M': fields.message = *value; break;
      case 'R': fields.routine = *value; break;
      default: break;
    }
  }
  if (pos != body.size()) return errc::malformed_message;
  return fields;
}

result<AuthRequest> parse_auth_request(Bytes body) {
  if (body.size() < 4) return errc::malformed_message;
  AuthRequest req;
  req.code = read_u32(body.data());
  Bytes rest = body.subspan(4);
  switch (req.code) {
    case kAuthOk:
    case kAuthCleartext:
      if (!rest.empty()) return errc::malformed_message;
      break;
    case kAuthMd5:
      if (rest.size() != 4) return errc::malformed_message;
      std::copy(rest.begin(), rest.end(), req.md5_salt.begin());
      break;
    case kAuthSasl: {
      std::size_t pos = 0;
      for (;;) {
        auto mech = read_cstr(rest, pos);
        if (!mech) return errc::malformed_message;
        if (mech->empty()) break;
        req.sasl_mechanisms.push_back(*mech);
      }
      if (pos != rest.size()) return errc::malformed_message;
      break;
    }
    case kAuthSaslContinue:
    case kAuthSaslFinal:
      req.sasl_data = std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size());
      break;
    default:
      return errc::auth_unsupported;
  }
  return req;
}

result<ParameterStatusView> parse_parameter_status(Bytes body) noexcept {
  std::size_t pos = 0;
  auto name = read_cstr(body, pos);
  if (!name) return errc::malformed_message;
  auto value = read_cstr(body, pos);
  if (!value || pos != body.size()) return errc::malformed_message;
  return ParameterStatusView{*name, *value};
}

result<std::vector<std::optional<std::string_view>>> parse_data_row(Bytes body) {
  if (body.size() < 2) return errc::malformed_message;
  const std::size_t count = (std::size_t(body[0]) << 8) | body[1];
  std::vector<std::optional<std::string_view>> columns;
  columns.reserve(count);
  std::size_t pos = 2;
  for (std::size_t i = 0; i < count; ++i) {
    if (body.size() - pos < 4) return errc::malformed_message;
    const std::uint32_t length = read_u32(body.data() + pos);
    pos += 4;
    if (length == 0xffffffffu) {
      columns.emplace_back(std::nullopt);
      continue;
    }
    if (body.size() - pos < length) return errc::malformed_message;
    columns.emplace_back(std::string_view(reinterpret_cast<const char*>(body.data() + pos), length));
    pos += length;
  }
  if (pos != body.size()) return errc::malformed_message;
  return columns;
}

result<BackendKey> parse_backend_key(Bytes body) noexcept {
  if (body.size() != 8) return errc::malformed_message;
  return BackendKey{read_u32(body.data()), read_u32(body.data() + 4)};
}

result<char> parse_ready_for_query(Bytes body) noexcept {
  if (body.size() != 1) return errc::malformed_message;
  const char status = static_cast<char>(body[0]);
  if (status != 'I' && status != 'T' && status != 'E') return errc::malformed_message;
  return status;
}

result<std::string_view> parse_password(Bytes body) noexcept {
  std::size_t pos = 0;
  auto password = read_cstr(body, pos);
  if (!password || pos != body.size()) return errc::malformed_message;
  return *password;
}

result<SaslInitialResponse> parse_sasl_initial_response(Bytes body) noexcept {
  std::size_t pos = 0;
  auto mechanism = read_cstr(body, pos);
  if (!mechanism || body.size() - pos < 4) return errc::malformed_message;
  const auto length = static_cast<std::int32_t>(read_u32(body.data() + pos));
  pos += 4;
  SaslInitialResponse out{*mechanism, {}};
  if (length == -1) {
    if (pos != body.size()) return errc::malformed_message;
    return out;
  }
  if (length < 0 || static_cast<std::size_t>(length) != body.size() - pos) return errc::malformed_message;
  out.data = std::string_view(reinterpret_cast<const char*>(body.data() + pos), static_cast<std::size_t>(length));
  return out;
}

// ---- Builders -----------------------------------------------------------------

MessageBuilder::MessageBuilder(std::string& out, char type) : out_(out), start_(out.size()) {
  if (type != 0) out_.push_back(type);
  length_at_ = out_.size();
  out_.append(4, '\0');
}
MessageBuilder& MessageBuilder::u8(std::uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}
MessageBuilder& MessageBuilder::u16(std::uint16_t v) {
  out_.push_back(static_cast<char>(v >> 8));
  out_.push_back(static_cast<char>(v));
  return *this;
}
MessageBuilder& MessageBuilder::u32(std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out_.push_back(static_cast<char>(v >> shift));
  return *this;
}
MessageBuilder& MessageBuilder::bytes(std::string_view v) {
  out_.append(v);
  return *this;
}
MessageBuilder& MessageBuilder::cstr(std::string_view v) {
  out_.append(v);
  out_.push_back('\0');
  return *this;
}
void MessageBuilder::finish() {
  const auto length = static_cast<std::uint32_t>(out_.size() - length_at_);
  for (int i = 0; i < 4; ++i) out_[length_at_ + i] = static_cast<char>(length >> (24 - 8 * i));
  finished_ = true;
}

namespace {
void append_error_like(std::string& out, char type, const ErrorSpec& e) {
  MessageBuilder m(out, type);
  m.u8('S').cstr(e.severity).u8('V').cstr(e.severity).u8('C').cstr(e.sqlstate).u8('M').cstr(e.message);
  if (!e.detail.empty()) m.u8('D').cstr(e.detail);
  if (!e.hint.empty()) m.u8('H').cstr(e.hint);
  m.u8(0).finish();
}
}  // namespace

void append_error_response(std::string& out, const ErrorSpec& error) { append_error_like(out, 'E', error); }
void append_notice_response(std::string& out, const ErrorSpec& notice) { append_error_like(out, 'N', notice); }
void append_auth_ok(std::string& out) { MessageBuilder(out, 'R').u32(kAuthOk).finish(); }
void append_auth_cleartext(std::string& out) { MessageBuilder(out, 'R').u32(kAuthCleartext).finish(); }
void append_auth_md5(std::string& out, std::array<std::uint8_t, 4> salt) {
  MessageBuilder m(out, 'R');
  m.u32(kAuthMd5);
  for (auto b : salt) m.u8(b);
  m.finish();
}
void append_auth_sasl(std::string& out, std::span<const std::string_view> mechanisms) {
  MessageBuilder m(out, 'R');
  m.u32(kAuthSasl);
  for (auto mech : mechanisms) m.cstr(mech);
  m.u8(0).finish();
}
void append_auth_sasl_continue(std::string& out, std::string_view data) {
  MessageBuilder(out, 'R').u32(kAuthSaslContinue).bytes(data).finish();
}
void append_auth_sasl_final(std::string& out, std::string_view data) {
  MessageBuilder(out, 'R').u32(kAuthSaslFinal).bytes(data).finish();
}
void append_parameter_status(std::string& out, std::string_view name, std::string_view value) {
  MessageBuilder(out, 'S').cstr(name).cstr(value).finish();
}
void append_backend_key(std::string& out, BackendKey key) {
  MessageBuilder(out, 'K').u32(key.pid).u32(key.secret).finish();
}
void append_ready_for_query(std::string& out, char status) {
  MessageBuilder(out, 'Z').u8(static_cast<std::uint8_t>(status)).finish();
}
void append_query(std::string& out, std::string_view sql) { MessageBuilder(out, 'Q').cstr(sql).finish(); }
void append_terminate(std::string& out) { MessageBuilder(out, 'X').finish(); }
void append_sync(std::string& out) { MessageBuilder(out, 'S').finish(); }
void append_extended_query(std::string& out, std::string_view sql, std::span<const std::string_view> parameters) {
  MessageBuilder(out, 'P').cstr("").cstr(sql).u16(0).finish();
  MessageBuilder bind(out, 'B');
  bind.cstr("").cstr("").u16(0).u16(static_cast<std::uint16_t>(parameters.size()));
  for (const auto value : parameters) bind.u32(static_cast<std::uint32_t>(value.size())).bytes(value);
  bind.u16(0).finish();
  MessageBuilder(out, 'E').cstr("").u32(0).finish();
  append_sync(out);
}
void append_copy_fail(std::string& out, std::string_view reason) { MessageBuilder(out, 'f').cstr(reason).finish(); }
void append_startup_message(std::string& out, std::span<const std::pair<std::string, std::string>> parameters) {
  MessageBuilder m(out, 0);
  m.u32(kProtocolV3);
  for (const auto& [name, value] : parameters) m.cstr(name).cstr(value);
  m.u8(0).finish();
}
void append_password_message(std::string& out, std::string_view password) {
  MessageBuilder(out, 'p').cstr(password).finish();
}
void append_sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data) {
  MessageBuilder(out, 'p').cstr(mechanism).u32(static_cast<std::uint32_t>(data.size())).bytes(data).finish();
}
void append_sasl_response(std::string& out, std::string_view data) { MessageBuilder(out, 'p').bytes(data).finish(); }
void append_cancel_request(std::string& out, BackendKey key) {
  MessageBuilder(out, 0).u32(kCancelRequestCode).u32(key.pid).u32(key.secret).finish();
}
void append_ssl_request(std::string& out) { MessageBuilder(out, 0).u32(kSslRequestCode).finish(); }
void append_negotiate_protocol_version(std::string& out, std::uint32_t newest_minor,
                                      std::span<const std::string_view> unrecognised_options) {
  MessageBuilder m(out, 'v');
  m.u32((3u << 16) | newest_minor).u32(static_cast<std::uint32_t>(unrecognised_options.size()));
  for (auto option : unrecognised_options) m.cstr(option);
  m.finish();
}

}  // namespace sluice::protocol
