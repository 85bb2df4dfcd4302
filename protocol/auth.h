#pragma once
// Authentication exchanges as pure code (no sockets), in both roles:
// Sluice as the server that verifies a client, and Sluice as the client that
// logs in to PostgreSQL. Cleartext needs nothing beyond a string compare; MD5 and
// SCRAM-SHA-256 (RFC 5802 / RFC 7677) live here. Crypto comes from OpenSSL.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/errc.h"

namespace sluice::protocol::auth {

// ---- MD5 (PostgreSQL's "md5" method) --------------------------------------
std::string md5_hex(std::string_view data);
// The value PostgreSQL stores in pg_authid: "md5" + md5hex(password + user).
std::string md5_password_hash(std::string_view password, std::string_view user);
// What a client sends in its PasswordMessage for AuthenticationMD5Password:
// "md5" + md5hex(md5hex(password + user) + salt). `stored_hash` is the "md5..." value.
std::string md5_response(std::string_view stored_hash, std::array<std::uint8_t, 4> salt);
// Constant-time check of a client's response against the stored hash.
bool md5_verify(std::string_view stored_hash, std::array<std::uint8_t, 4> salt, std::string_view response);
bool is_md5_hash(std::string_view password);  // "md5" followed by 32 hex digits

// ---- SCRAM-SHA-256 ----------------------------------------------------------
inline constexpr std::string_view kScramMechanism = "SCRAM-SHA-256";
// With channel binding (RFC 5802 section 6), offered over TLS.
inline constexpr std::string_view kScramPlusMechanism = "SCRAM-SHA-256-PLUS";

struct ScramSecret {
  int iterations = 4096;
  std::string salt;  // raw bytes
  std::array<std::uint8_t, 32> stored_key{};
  std::array<std::uint8_t, 32> server_key{};
};

// PostgreSQL's text form: "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
std::optional<ScramSecret> parse_scram_secret(std::string_view text);
std::string format_scram_secret(const ScramSecret& secret);
bool is_scram_secret(std::string_view password);
// Derives a secret from a plain password (SASLprep applied as PostgreSQL does).
ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations);
// Random bytes / nonce helpers (OpenSSL RAND_bytes, drawn a block at a time per thread).
void fill_random(void* out, std::size_t n);
std::string random_bytes(std::size_t n);
std::string random_nonce();  // printable, base64 of 18 random bytes

std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);

// What a SCRAM client proves and checks with, without the password (RFC 5802):
// ClientKey (whose hash is the secret's StoredKey) and ServerKey. Sluice learns the
// ClientKey from a client's successful proof and logs in to PostgreSQL with it when
// it holds only a SCRAM secret for the user (as PgBouncer does).
struct ScramKeys {
  std::array<std::uint8_t, 32> client_key{};
  std::array<std::uint8_t, 32> server_key{};
};

// The most PBKDF2 iterations Sluice computes for a server that asks (PostgreSQL's
// default is 4096; this is about a second of CPU here).
inline constexpr int kMaxScramIterations = 1'000'000;

// Sluice verifies a client that proves knowledge of `secret`.
class ScramServer {
 public:
  explicit ScramServer(ScramSecret secret, std::string server_nonce = random_nonce());
  // Over TLS: the tls-server-end-point data (hash of our certificate) that a client
  // choosing SCRAM-SHA-256-PLUS must bind to. Call before on_client_first.
  void offer_channel_binding(std::string tls_server_end_point) { binding_data_ = std::move(tls_server_end_point); }
  // client-first-message -> server-first-message. `plus` = the client selected
  // SCRAM-SHA-256-PLUS. errc::scram_channel_binding when its gs2 flag contradicts
  // what was offered (including 'y' while binding was offered: a downgrade).
  [[nodiscard]] result<std::string> on_client_first(std::string_view message, bool plus = false);
  // client-final-message -> server-final-message ("v=..."). errc::auth_failed on a wrong proof.
  [[nodiscard]] result<std::string> on_client_final(std::string_view message);
  // After a successful on_client_final: the client's ClientKey (recovered from its
  // proof) and the secret's ServerKey.
  std::optional<ScramKeys> proven_keys() const { return proven_keys_; }

 private:
  std::optional<ScramKeys> proven_keys_;
  ScramSecret secret_;
  std::string server_nonce_;
  std::string binding_data_;     // tls-server-end-point, when offered
  std::string gs2_header_b64_;  // what client-final's c= must be: base64(gs2 header [+ binding data])
  std::string client_first_bare_;
  std::string server_first_;
  std::string combined_nonce_;
  int step_ = 0;
};

// Sluice logs in to PostgreSQL with a plain password.
class ScramClient {
 public:
  explicit ScramClient(std::string password, std::string client_nonce = random_nonce());
  // Without the password: with the keys a client proved (pass-through). The server's
  // salt and iterations must be those the keys were made with, or it refuses the proof.
  explicit ScramClient(ScramKeys keys, std::string client_nonce = random_nonce());
  // client-first-message ("n,,n=,r=<nonce>"): the user name is empty, as libpq sends it.
  std::string client_first();
  // server-first-message -> client-final-message.
  [[nodiscard]] result<std::string> on_server_first(std::string_view message);
  // server-final-message: verifies the server's signature.
  [[nodiscard]] result<void> on_server_final(std::string_view message);

 private:
  std::string password_;
  std::optional<ScramKeys> keys_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::string auth_message_;
  std::array<std::uint8_t, 32> salted_password_{};
  int step_ = 0;
};

}  // namespace sluice::protocol::auth
