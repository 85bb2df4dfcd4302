#pragma once
// PostgreSQL wire protocol v3: framing, typed views of the messages Sluice
// inspects (pointing into the caller's buffer, valid as long as it is), and
// builders for the messages Sluice sends. No sockets here.
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/errc.h"

namespace sluice::protocol {

using Bytes = std::span<const std::uint8_t>;

inline constexpr std::uint32_t kProtocolV3 = 196608;            // 3.0
inline constexpr std::uint32_t kCancelRequestCode = 80877102;    // 1234.5678
inline constexpr std::uint32_t kSslRequestCode = 80877103;       // 1234.5679
inline constexpr std::uint32_t kGssEncRequestCode = 80877104;    // 1234.5680
inline constexpr std::uint32_t kMaxStartupPacket = 10000;        // as PostgreSQL's MAX_STARTUP_PACKET_LENGTH
inline constexpr std::size_t kHeaderSize = 5;                    // type byte + int32 length

inline std::uint32_t read_u32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
inline std::uint16_t read_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

// ---- Framing -----------------------------------------------------------------

// A typed message: the type byte and a view of its body (the bytes after the length).
struct Message {
  char type = 0;
  Bytes body;
};

// Peeks one typed message at the front of `buffer` without consuming it.
// Returns the number of bytes the whole message takes (header included) when it
// is complete, 0 when more bytes are needed, or an error for an invalid length.
// The length is validated as soon as the 5-byte header is there, so an oversized
// message is refused before any of its body is buffered.
[[nodiscard]] result<std::size_t> peek_message(Bytes buffer, std::uint32_t max_body, Message& out) noexcept;

// The untyped startup-family packets (first packet on a connection).
enum class StartupKind { startup, ssl_request, gssenc_request, cancel_request };

struct StartupPacket {
  StartupKind kind = StartupKind::startup;
  std::uint32_t protocol = 0;
  // For StartupMessage: name/value pairs in order, views into the buffer.
  std::vector<std::pair<std::string_view, std::string_view>> parameters;
  // For CancelRequest:
  std::uint32_t cancel_pid = 0;
  std::uint32_t cancel_secret = 0;

  std::string_view get(std::string_view name) const noexcept;
};

// Peeks a startup-family packet. 0 = need more bytes; errors: bad_length,
// startup_too_large, unsupported_protocol (major version other than 3, or 3.x with
// x > 0 is accepted as 3.0 like PostgreSQL does with NegotiateProtocolVersion — we
// simply accept minor versions > 0 as 3.0), malformed_message, missing_user.
[[nodiscard]] result<std::size_t> peek_startup(Bytes buffer, StartupPacket& out);

// ---- Views of messages Sluice inspects ---------------------------------------

// ErrorResponse / NoticeResponse fields.
struct ErrorFields {
  std::string_view severity;      // 'S' (localized) or 'V'
  std::string_view severity_v;    // 'V' (never localized), empty when absent
  std::string_view sqlstate;      // 'C'
  std::string_view message;       // 'M'
  std::string_view routine;       // 'R': the server function that raised it (never translated)
  bool is_fatal() const noexcept;  // FATAL or PANIC
};
[[nodiscard]] result<ErrorFields> parse_error_fields(Bytes body) noexcept;

// Authentication request from the server ('R').
struct AuthRequest {
  std::uint32_t code = 0;  // 0 ok, 3 cleartext, 5 md5, 10 SASL, 11 SASLContinue, 12 SASLFinal
  std::array<std::uint8_t, 4> md5_salt{};
  std::vector<std::string_view> sasl_mechanisms;  // for code 10
  std::string_view sasl_data;                     // for codes 11 and 12
};
inline constexpr std::uint32_t kAuthOk = 0, kAuthCleartext = 3, kAuthMd5 = 5, kAuthSasl = 10,
                               kAuthSaslContinue = 11, kAuthSaslFinal = 12;
[[nodiscard]] result<AuthRequest> parse_auth_request(Bytes body);

struct ParameterStatusView {
  std::string_view name;
  std::string_view value;
};
[[nodiscard]] result<ParameterStatusView> parse_parameter_status(Bytes body) noexcept;

struct BackendKey {
  std::uint32_t pid = 0;
  std::uint32_t secret = 0;
  friend bool operator==(const BackendKey&, const BackendKey&) = default;
};
[[nodiscard]] result<BackendKey> parse_backend_key(Bytes body) noexcept;

// ReadyForQuery: 'I' idle, 'T' in a transaction block, 'E' in a failed transaction block.
[[nodiscard]] result<char> parse_ready_for_query(Bytes body) noexcept;

// Client's PasswordMessage ('p'): a NUL-terminated string.
[[nodiscard]] result<std::string_view> parse_password(Bytes body) noexcept;
// Client's SASLInitialResponse ('p' after AuthenticationSASL).
struct SaslInitialResponse {
  std::string_view mechanism;
  std::string_view data;  // empty when the length was -1
};
[[nodiscard]] result<SaslInitialResponse> parse_sasl_initial_response(Bytes body) noexcept;

// DataRow: the column values (text or binary as sent); nullopt for SQL NULL.
[[nodiscard]] result<std::vector<std::optional<std::string_view>>> parse_data_row(Bytes body);

// ---- Builders (append to `out`; used off the relay path) ------------------------

class MessageBuilder {
 public:
  explicit MessageBuilder(std::string& out, char type);  // type 0 = untyped (startup family)
  MessageBuilder& u8(std::uint8_t v);
  MessageBuilder& u16(std::uint16_t v);
  MessageBuilder& u32(std::uint32_t v);
  MessageBuilder& bytes(std::string_view v);
  MessageBuilder& cstr(std::string_view v);  // appends v and a NUL
  void finish();                             // writes the length

 private:
  std::string& out_;
  std::size_t start_;
  std::size_t length_at_;
  bool finished_ = false;
};

struct ErrorSpec {
  std::string_view severity = "ERROR";  // ERROR | FATAL | PANIC | WARNING | NOTICE ...
  std::string_view sqlstate;
  std::string_view message;
  std::string_view detail = {};
  std::string_view hint = {};
};
void append_error_response(std::string& out, const ErrorSpec& error);
void append_notice_response(std::string& out, const ErrorSpec& notice);
void append_auth_ok(std::string& out);
void append_auth_cleartext(std::string& out);
void append_auth_md5(std::string& out, std::array<std::uint8_t, 4> salt);
void append_auth_sasl(std::string& out, std::span<const std::string_view> mechanisms);
void append_auth_sasl_continue(std::string& out, std::string_view data);
void append_auth_sasl_final(std::string& out, std::string_view data);
void append_parameter_status(std::string& out, std::string_view name, std::string_view value);
void append_backend_key(std::string& out, BackendKey key);
void append_ready_for_query(std::string& out, char status);
void append_query(std::string& out, std::string_view sql);
void append_terminate(std::string& out);
void append_sync(std::string& out);
// One statement with text parameters through the extended protocol: Parse (unnamed,
// parameter types left to the server), Bind (text in, text out), Execute, Sync.
void append_extended_query(std::string& out, std::string_view sql, std::span<const std::string_view> parameters);
void append_copy_fail(std::string& out, std::string_view reason);
// Frontend messages Sluice sends to PostgreSQL as a client.
void append_startup_message(std::string& out, std::span<const std::pair<std::string, std::string>> parameters);
void append_password_message(std::string& out, std::string_view password);
void append_sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data);
void append_sasl_response(std::string& out, std::string_view data);
void append_cancel_request(std::string& out, BackendKey key);
void append_ssl_request(std::string& out);
// NegotiateProtocolVersion: the newest minor version we support (0) and the options we did not recognise.
void append_negotiate_protocol_version(std::string& out, std::uint32_t newest_minor,
                                      std::span<const std::string_view> unrecognised_options);

}  // namespace sluice::protocol
