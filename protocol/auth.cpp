#include "protocol/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <span>
#include <stdexcept>

namespace sluice::protocol::auth {
namespace {

using Key = std::array<std::uint8_t, 32>;

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
std::string_view as_text(std::span<const std::uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// ---- hashing ----------------------------------------------------------------

std::string to_hex(std::span<const std::uint8_t> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(b.size() * 2);
  for (std::uint8_t c : b) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

// MD5 over the concatenation of `parts`, as lowercase hex.
std::string md5_hex_of(std::initializer_list<std::string_view> parts) {
  std::array<std::uint8_t, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_md5(), nullptr) == 1;
  for (std::string_view p : parts) ok = ok && EVP_DigestUpdate(ctx, p.data(), p.size()) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx, digest.data(), &len) == 1;
  EVP_MD_CTX_free(ctx);
  // Only an allocation failure or a provider without MD5 gets here; nothing sane to return.
  if (!ok) throw std::runtime_error("OpenSSL MD5 failed");
  return to_hex(std::span(digest.data(), len));
}

// OpenSSL 3's one-shot SHA256() and HMAC() look the algorithm up by name in the provider store on
// every call (EVP_Q_mac, EVP_MD_fetch): about 24,000 instructions per HMAC, most of a SCRAM login's
// verification. So each thread fetches SHA-256 and HMAC once and reuses one context of each:
// EVP_DigestInit_ex2 and EVP_MAC_init restart a context (the MAC with a new key) without a lookup.
class Sha256Contexts {
 public:
  Sha256Contexts() {
    md_ = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    digest_ = EVP_MD_CTX_new();
    mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac_ != nullptr) hmac_ = EVP_MAC_CTX_new(mac_);
    char name[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name, 0),
                                 OSSL_PARAM_construct_end()};
    ready_ = md_ != nullptr && digest_ != nullptr && hmac_ != nullptr && EVP_MAC_CTX_set_params(hmac_, params) == 1;
  }
  ~Sha256Contexts() {
    EVP_MAC_CTX_free(hmac_);
    EVP_MAC_free(mac_);
    EVP_MD_CTX_free(digest_);
    EVP_MD_free(md_);
  }
  Sha256Contexts(const Sha256Contexts&) = delete;
  Sha256Contexts& operator=(const Sha256Contexts&) = delete;

  static Sha256Contexts& for_this_thread() {
    thread_local Sha256Contexts contexts;
    return contexts;
  }

  Key digest(std::span<const std::uint8_t> data) {
    Key out{};
    unsigned int len = 0;
    if (!ready_ || EVP_DigestInit_ex2(digest_, md_, nullptr) != 1 ||
        EVP_DigestUpdate(digest_, data.data(), data.size()) != 1 ||
        EVP_DigestFinal_ex(digest_, out.data(), &len) != 1 || len != out.size())
      throw std::runtime_error("OpenSSL SHA-256 failed");
    return out;
  }

  Key hmac(std::span<const std::uint8_t> key, std::string_view data) {
    Key out{};
    std::size_t len = 0;
    // EVP_MAC_init with a null key restarts with the previous key; an empty key must
    // still be a key (every caller passes 32 bytes today).
    static constexpr std::uint8_t kNoKeyBytes = 0;
    const std::uint8_t* key_data = key.empty() ? &kNoKeyBytes : key.data();
    if (!ready_ || EVP_MAC_init(hmac_, key_data, key.size(), nullptr) != 1 ||
        EVP_MAC_update(hmac_, bytes(data), data.size()) != 1 ||
        EVP_MAC_final(hmac_, out.data(), &len, out.size()) != 1 || len != out.size())
      throw std::runtime_error("OpenSSL HMAC-SHA-256 failed");
    return out;
  }

 private:
  EVP_MD* md_ = nullptr;
  EVP_MD_CTX* digest_ = nullptr;
  EVP_MAC* mac_ = nullptr;
  EVP_MAC_CTX* hmac_ = nullptr;
  bool ready_ = false;
};

Key sha256(std::span<const std::uint8_t> data) { return Sha256Contexts::for_this_thread().digest(data); }

Key hmac_sha256(std::span<const std::uint8_t> key, std::string_view data) {
  return Sha256Contexts::for_this_thread().hmac(key, data);
}

bool equal_ct(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// PostgreSQL runs SASLprep (RFC 4013) on the password and, if that fails, uses the raw bytes
// (pg_saslprep / scram_SaltedPassword). An ASCII password comes out of SASLprep unchanged, or makes it
// fail (control characters), so the bytes are the raw bytes either way.
// Simplification: a non-ASCII password is also used as raw bytes. PostgreSQL would map it (non-ASCII
// spaces to U+0020, "commonly mapped to nothing" characters dropped) and NFKC-normalise it, so a
// non-ASCII password that is not already in that form derives a different key here than in PostgreSQL.
std::string_view saslprep(std::string_view password) { return password; }

// SaltedPassword := Hi(Normalize(password), salt, i). Zeroes on failure (e.g. iterations < 1): the
// resulting keys then match no proof, which fails closed.
Key salted_password(std::string_view password, std::string_view salt, int iterations) {
  Key out{};
  const std::string_view prepped = saslprep(password);
  if (PKCS5_PBKDF2_HMAC(prepped.data(), static_cast<int>(prepped.size()), bytes(salt), static_cast<int>(salt.size()),
                        iterations, EVP_sha256(), static_cast<int>(out.size()), out.data()) != 1)
    out.fill(0);
  return out;
}

Key xor_keys(const Key& a, const Key& b) {
  Key out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = a[i] ^ b[i];
  return out;
}

// ---- SCRAM message syntax (RFC 5802 section 7) --------------------------------

// The comma-separated fields of a SCRAM message, one at a time.
class Fields {
 public:
  explicit Fields(std::string_view text) : rest_(text) {}
  // The next field, or nullopt after the last one. "a," has two fields: "a" and "".
  std::optional<std::string_view> next() {
    if (done_) return std::nullopt;
    const auto comma = rest_.find(',');
    if (comma == std::string_view::npos) {
      done_ = true;
      return rest_;
    }
    std::string_view field = rest_.substr(0, comma);
    rest_.remove_prefix(comma + 1);
    return field;
  }
  bool done() const { return done_; }
  std::string_view rest() const { return done_ ? std::string_view{} : rest_; }

 private:
  std::string_view rest_;
  bool done_ = false;
};

// "<name>=<value>" -> value.
std::optional<std::string_view> attribute(std::optional<std::string_view> field, char name) {
  if (!field || field->size() < 2 || (*field)[0] != name || (*field)[1] != '=') return std::nullopt;
  return field->substr(2);
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// attr-val = ALPHA "=" value, value = 1*value-char. Unknown optional extensions are ignored.
bool is_extension(std::string_view field) { return field.size() >= 3 && is_alpha(field[0]) && field[1] == '='; }

// printable = %x21-2B / %x2D-7E; nonce = "r=" c-nonce [s-nonce], at least one character.
bool is_printable_nonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce)
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  return true;
}

// posit-number = %x31-39 *DIGIT, and it must fit an int.
std::optional<int> parse_positive_int(std::string_view text) {
  if (text.empty() || text.size() > 10 || text[0] < '1' || text[0] > '9') return std::nullopt;
  long long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > INT_MAX) return std::nullopt;
  return static_cast<int>(value);
}

bool has_nul(std::string_view message) { return message.find('\0') != std::string_view::npos; }

// Decodes a base64 attribute that must hold exactly one 32-byte key (proof or signature).
std::optional<Key> decode_key(std::string_view text) {
  const auto raw = base64_decode(text);
  if (!raw || raw->size() != Key{}.size()) return std::nullopt;
  Key out{};
  std::copy(raw->begin(), raw->end(), out.begin());
  return out;
}

// The value of each base64 character, -1 for any other byte: one load per character on the
// login path (a SCRAM login decodes about 160 characters).
constexpr std::array<std::int8_t, 256> kBase64Values = [] {
  std::array<std::int8_t, 256> values{};
  values.fill(-1);
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < kAlphabet.size(); ++i)
    values[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::int8_t>(i);
  return values;
}();

int base64_value(char c) { return kBase64Values[static_cast<unsigned char>(c)]; }

constexpr int kStepFailed = -1;

}  // namespace

// ---- MD5 ----------------------------------------------------------------------

std::string md5_hex(std::string_view data) { return md5_hex_of({data}); }

std::string md5_password_hash(std::string_view password, std::string_view user) {
  return "md5" + md5_hex_of({password, user});
}

std::string md5_response(std::string_view stored_hash, std::array<std::uint8_t, 4> salt) {
  // Precondition: is_md5_hash(stored_hash). The hex digits after "md5" are what gets hashed.
  const std::string_view hex = stored_hash.substr(std::min<std::size_t>(3, stored_hash.size()));
  return "md5" + md5_hex_of({hex, as_text(salt)});
}

bool md5_verify(std::string_view stored_hash, std::array<std::uint8_t, 4> salt, std::string_view response) {
  if (!is_md5_hash(stored_hash)) return false;
  const std::string expected = md5_response(stored_hash, salt);
  return response.size() == expected.size() && CRYPTO_memcmp(response.data(), expected.data(), expected.size()) == 0;
}

bool is_md5_hash(std::string_view password) {
  // As PostgreSQL's get_password_type(): "md5" and exactly 32 lowercase hex digits.
  if (password.size() != 35 || !password.starts_with("md5")) return false;
  for (char c : password.substr(3))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// ---- base64 (RFC 4648, standard alphabet, padded) -------------------------------

std::string base64_encode(std::string_view raw) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= raw.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(raw[i])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(raw[i + 1])} << 8) |
                            std::uint32_t{static_cast<unsigned char>(raw[i + 2])};
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  const std::size_t left = raw.size() - i;
  if (left > 0) {
    std::uint32_t v = std::uint32_t{static_cast<unsigned char>(raw[i])} << 16;
    if (left == 2) v |= std::uint32_t{static_cast<unsigned char>(raw[i + 1])} << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(left == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// Strict: whole 4-character groups, padding only at the end, no whitespace, and unused bits of the
// last group zero, so that every byte string has exactly one accepted encoding.
std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;
  const std::size_t data_chars = text.size() - pad;
  std::string out(text.size() / 4 * 3 - pad, '\0');
  std::size_t written = 0;
  for (std::size_t i = 0; i < text.size(); i += 4) {
    std::uint32_t v = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      int d = 0;
      if (i + j < data_chars) {
        d = base64_value(text[i + j]);
        if (d < 0) return std::nullopt;
      }
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    const bool last = i + 4 == text.size();
    const std::size_t n = last ? 3 - pad : 3;
    if (last && pad == 1 && (v & 0xff) != 0) return std::nullopt;
    if (last && pad == 2 && (v & 0xffff) != 0) return std::nullopt;
    const char group[3] = {static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
    for (std::size_t k = 0; k < n; ++k) out[written++] = group[k];
  }
  return out;
}

// ---- SCRAM secrets --------------------------------------------------------------

std::optional<ScramSecret> parse_scram_secret(std::string_view text) {
  static constexpr std::string_view kPrefix = "SCRAM-SHA-256$";
  if (!text.starts_with(kPrefix)) return std::nullopt;
  text.remove_prefix(kPrefix.size());
  const auto dollar = text.find('$');
  if (dollar == std::string_view::npos) return std::nullopt;
  const std::string_view params = text.substr(0, dollar);
  const std::string_view keys = text.substr(dollar + 1);
  const auto colon1 = params.find(':');
  const auto colon2 = keys.find(':');
  if (colon1 == std::string_view::npos || colon2 == std::string_view::npos) return std::nullopt;

  // base64 has no ':' or '$', so any extra separator makes a decode below fail.
  const auto iterations = parse_positive_int(params.substr(0, colon1));
  auto salt = base64_decode(params.substr(colon1 + 1));
  const auto stored_key = decode_key(keys.substr(0, colon2));
  const auto server_key = decode_key(keys.substr(colon2 + 1));
  if (!iterations || !salt || salt->empty() || !stored_key || !server_key) return std::nullopt;
  return ScramSecret{*iterations, std::move(*salt), *stored_key, *server_key};
}

std::string format_scram_secret(const ScramSecret& secret) {
  return "SCRAM-SHA-256$" + std::to_string(secret.iterations) + ":" + base64_encode(secret.salt) + "$" +
         base64_encode(as_text(secret.stored_key)) + ":" + base64_encode(as_text(secret.server_key));
}

bool is_scram_secret(std::string_view password) { return parse_scram_secret(password).has_value(); }

ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations) {
  Key salted = salted_password(password, salt, iterations);
  ScramSecret secret;
  secret.iterations = iterations;
  secret.salt = std::string(salt);
  secret.stored_key = sha256(hmac_sha256(salted, "Client Key"));
  secret.server_key = hmac_sha256(salted, "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  return secret;
}

namespace {
// Each RAND_bytes call goes through OpenSSL's DRBG machinery (about 6,000
// instructions, and a getpid for its fork check) however few bytes it gives, and a
// login wants 26 (the SCRAM nonce, the cancel key). So each thread draws a block at
// a time and hands it out; bytes handed out are wiped from the block. Sluice never
// forks, so no two processes can share a block.
class RandomBlock {
 public:
  ~RandomBlock() { OPENSSL_cleanse(block_.data(), block_.size()); }
  void fill(std::uint8_t* out, std::size_t n) {
    while (n > 0) {
      if (used_ == block_.size()) {
        if (RAND_bytes(block_.data(), static_cast<int>(block_.size())) != 1)
          throw std::runtime_error("OpenSSL RAND_bytes failed");
        used_ = 0;
      }
      const std::size_t take = std::min(n, block_.size() - used_);
      std::memcpy(out, block_.data() + used_, take);
      OPENSSL_cleanse(block_.data() + used_, take);
      used_ += take;
      out += take;
      n -= take;
    }
  }

 private:
  std::array<std::uint8_t, 256> block_{};
  std::size_t used_ = block_.size();
};
}  // namespace

void fill_random(void* out, std::size_t n) {
  thread_local RandomBlock block;
  block.fill(static_cast<std::uint8_t*>(out), n);
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  fill_random(out.data(), n);
  return out;
}

std::string random_nonce() { return base64_encode(random_bytes(18)); }

// ---- ScramServer ------------------------------------------------------------------

ScramServer::ScramServer(ScramSecret secret, std::string server_nonce)
    : secret_(std::move(secret)), server_nonce_(std::move(server_nonce)) {}

// client-first-message = gs2-header client-first-message-bare
//   gs2-header = gs2-cbind-flag "," [ authzid ] ","
//   client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
result<std::string> ScramServer::on_client_first(std::string_view message, bool plus) {
  if (step_ != 0) return errc::unexpected_message;
  step_ = kStepFailed;
  if (has_nul(message)) return errc::scram_invalid_message;

  Fields fields(message);
  const auto cbind_flag = fields.next();
  const bool offered = !binding_data_.empty();
  bool bound = false;
  if (cbind_flag->starts_with("p=")) {
    // Only with SCRAM-SHA-256-PLUS, and only the type we offer.
    if (!plus || !offered) return errc::scram_channel_binding;
    if (*cbind_flag != "p=tls-server-end-point") return errc::auth_unsupported;
    bound = true;
  } else if (*cbind_flag == "n" || *cbind_flag == "y") {
    if (plus) return errc::scram_channel_binding;
    // 'y': the client can bind but believes we cannot. Right when we offered no
    // PLUS; when we did, someone removed it on the way (RFC 5802's downgrade check).
    if (*cbind_flag == "y" && offered) return errc::scram_channel_binding;
  } else {
    return errc::scram_invalid_message;
  }
  const auto authzid = fields.next();
  if (!authzid || fields.done()) return errc::scram_invalid_message;
  if (authzid->starts_with("a=")) return errc::auth_unsupported;  // as PostgreSQL: no authorization identity
  if (!authzid->empty()) return errc::scram_invalid_message;
  const std::string_view gs2_header = message.substr(0, message.size() - fields.rest().size());
  const std::string_view bare = fields.rest();

  auto field = fields.next();
  if (field->starts_with("m=")) return errc::auth_unsupported;  // mandatory extension we do not know
  // The user name is ignored, as PostgreSQL does: the startup packet named the role.
  if (!attribute(field, 'n')) return errc::scram_invalid_message;
  const auto client_nonce = attribute(fields.next(), 'r');
  if (!client_nonce || !is_printable_nonce(*client_nonce)) return errc::scram_invalid_message;
  while (const auto ext = fields.next())
    if (!is_extension(*ext)) return errc::scram_invalid_message;

  gs2_header_b64_ = base64_encode(bound ? std::string(gs2_header) + binding_data_ : std::string(gs2_header));
  client_first_bare_ = std::string(bare);
  combined_nonce_ = std::string(*client_nonce) + server_nonce_;
  server_first_ = "r=" + combined_nonce_ + ",s=" + base64_encode(secret_.salt) + ",i=" +
                  std::to_string(secret_.iterations);
  step_ = 1;
  return server_first_;
}

// client-final-message = channel-binding "," nonce ["," extensions] "," proof
result<std::string> ScramServer::on_client_final(std::string_view message) {
  if (step_ != 1) return errc::unexpected_message;
  step_ = kStepFailed;
  if (has_nul(message)) return errc::scram_invalid_message;

  // Syntax first, then the checks.
  Fields fields(message);
  const auto channel_binding = attribute(fields.next(), 'c');
  if (!channel_binding || !base64_decode(*channel_binding)) return errc::scram_invalid_message;
  const auto nonce = attribute(fields.next(), 'r');
  if (!nonce) return errc::scram_invalid_message;
  std::optional<std::string_view> proof_text;
  while (const auto field = fields.next()) {
    if ((proof_text = attribute(field, 'p'))) break;
    if (!is_extension(*field)) return errc::scram_invalid_message;
  }
  if (!proof_text || !fields.done()) return errc::scram_invalid_message;  // the proof comes last
  const auto proof = decode_key(*proof_text);
  if (!proof) return errc::scram_invalid_message;

  // c= is the gs2 header of client-first ("biws" for "n,,"), followed by the channel
  // binding data when the client bound. Base64 is canonical under our strict decoder,
  // so comparing the text compares the bytes.
  if (*channel_binding != gs2_header_b64_) return binding_data_.empty() ? errc::auth_failed : errc::scram_channel_binding;
  if (*nonce != combined_nonce_) return errc::scram_nonce_mismatch;

  const std::string_view without_proof = message.substr(0, message.size() - proof_text->size() - 3);
  const std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the client knows the password iff
  // H(ClientKey) == StoredKey.
  Key client_key = xor_keys(*proof, hmac_sha256(secret_.stored_key, auth_message));
  const bool ok = equal_ct(sha256(client_key), secret_.stored_key);
  if (ok) proven_keys_ = ScramKeys{client_key, secret_.server_key};
  OPENSSL_cleanse(client_key.data(), client_key.size());
  if (!ok) return errc::auth_failed;

  step_ = 2;
  return "v=" + base64_encode(as_text(hmac_sha256(secret_.server_key, auth_message)));
}

// ---- ScramClient --------------------------------------------------------------------

ScramClient::ScramClient(std::string password, std::string client_nonce)
    : password_(std::move(password)), client_nonce_(std::move(client_nonce)) {}

ScramClient::ScramClient(ScramKeys keys, std::string client_nonce)
    : keys_(keys), client_nonce_(std::move(client_nonce)) {}

std::string ScramClient::client_first() {
  client_first_bare_ = "n=,r=" + client_nonce_;
  if (step_ == 0) step_ = 1;
  return "n,," + client_first_bare_;
}

// server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
result<std::string> ScramClient::on_server_first(std::string_view message) {
  if (step_ != 1) return errc::unexpected_message;
  step_ = kStepFailed;
  if (has_nul(message)) return errc::scram_invalid_message;

  Fields fields(message);
  auto field = fields.next();
  if (field->starts_with("m=")) return errc::auth_unsupported;
  const auto nonce = attribute(field, 'r');
  if (!nonce || !is_printable_nonce(*nonce)) return errc::scram_invalid_message;
  const auto salt_text = attribute(fields.next(), 's');
  const auto salt = salt_text ? base64_decode(*salt_text) : std::nullopt;
  if (!salt || salt->empty()) return errc::scram_invalid_message;
  const auto iterations_text = attribute(fields.next(), 'i');
  const auto iterations = iterations_text ? parse_positive_int(*iterations_text) : std::nullopt;
  if (!iterations) return errc::scram_invalid_message;
  // PBKDF2 runs on the I/O thread: a server (or anything answering at its address)
  // asking for 2^31 iterations would hold a worker for minutes. Found by fuzz_scram.
  // (With pass-through keys nothing is derived.)
  if (!keys_ && *iterations > kMaxScramIterations) return errc::scram_invalid_message;
  while (const auto ext = fields.next())
    if (!is_extension(*ext)) return errc::scram_invalid_message;
  // The server must extend our nonce with its own.
  if (nonce->size() <= client_nonce_.size() || !nonce->starts_with(client_nonce_))
    return errc::scram_nonce_mismatch;

  if (!keys_) {
    salted_password_ = salted_password(password_, *salt, *iterations);
    OPENSSL_cleanse(password_.data(), password_.size());
    password_.clear();
  }

  const std::string without_proof = "c=biws,r=" + std::string(*nonce);  // biws = base64("n,,")
  auth_message_ = client_first_bare_ + "," + std::string(message) + "," + without_proof;
  Key client_key = keys_ ? keys_->client_key : hmac_sha256(salted_password_, "Client Key");
  const Key proof = xor_keys(client_key, hmac_sha256(sha256(client_key), auth_message_));
  OPENSSL_cleanse(client_key.data(), client_key.size());
  step_ = 2;
  return without_proof + ",p=" + base64_encode(as_text(proof));
}

// server-final-message = (server-error / verifier) ["," extensions]
result<void> ScramClient::on_server_final(std::string_view message) {
  if (step_ != 2) return errc::unexpected_message;
  step_ = kStepFailed;
  if (has_nul(message)) return errc::scram_invalid_message;

  Fields fields(message);
  const auto field = fields.next();
  if (attribute(field, 'e')) return errc::auth_failed;  // e.g. "e=invalid-proof"
  const auto signature_text = attribute(field, 'v');
  const auto signature = signature_text ? decode_key(*signature_text) : std::nullopt;
  if (!signature) return errc::scram_invalid_message;
  while (const auto ext = fields.next())
    if (!is_extension(*ext)) return errc::scram_invalid_message;

  Key server_key = keys_ ? keys_->server_key : hmac_sha256(salted_password_, "Server Key");
  const bool ok = equal_ct(*signature, hmac_sha256(server_key, auth_message_));
  OPENSSL_cleanse(server_key.data(), server_key.size());
  OPENSSL_cleanse(salted_password_.data(), salted_password_.size());
  if (!ok) return errc::scram_server_signature;
  step_ = 3;
  return {};
}

}  // namespace sluice::protocol::auth
