// Authentication exchanges, per exchange (one iteration = one exchange). See scan_bench.cpp's header
// for how to run and read these.
// The PBKDF2 baseline below uses the low-level SHA256_* API (deprecated in OpenSSL 3, still shipped) to
// show what precomputed HMAC pads would save; silence the deprecation for this file only.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <benchmark/benchmark.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/sha.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "fixtures.h"
#include "protocol/auth.h"
#include "protocol/wire.h"

namespace sluice::bench {
namespace {

namespace auth = protocol::auth;

constexpr std::string_view kPassword = "pgbench-secret-pw";
constexpr std::string_view kUser = "pgbench";
constexpr std::string_view kClientNonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF";
constexpr std::string_view kServerNonce = "3rfcNHYJY1ZVvWVs7j";
constexpr std::array<std::uint8_t, 4> kMd5Salt{0x5a, 0x17, 0xc3, 0x09};

// A complete, valid SCRAM-SHA-256 conversation with fixed nonces, recorded once.
struct ScramTranscript {
  auth::ScramSecret secret;
  std::string secret_text;   // as in pg_authid / the users file
  std::string client_first;  // SASLInitialResponse data
  std::string server_first;
  std::string client_final;
  std::string server_final;
};

ScramTranscript record_scram(int iterations) {
  ScramTranscript t;
  t.secret = auth::make_scram_secret(kPassword, "0123456789abcdef", iterations);
  t.secret_text = auth::format_scram_secret(t.secret);
  auth::ScramClient client{std::string(kPassword), std::string(kClientNonce)};
  auth::ScramServer server{t.secret, std::string(kServerNonce)};
  t.client_first = client.client_first();
  t.server_first = server.on_client_first(t.client_first).value();
  t.client_final = client.on_server_first(t.server_first).value();
  t.server_final = server.on_client_final(t.client_final).value();
  if (!client.on_server_final(t.server_final)) throw std::runtime_error("recorded SCRAM exchange does not verify");
  return t;
}

const ScramTranscript& transcript(int iterations) {
  static const ScramTranscript t4096 = record_scram(4096);
  static const ScramTranscript t1 = record_scram(1);
  return iterations == 1 ? t1 : t4096;
}

// ---- SCRAM, server role: Sluice verifies a client (secret cached, no PBKDF2) -----------------

// ScramServer construction (copies the secret, as ClientSession does) + on_client_first + on_client_final.
void BM_ScramServerExchange(benchmark::State& state) {
  const auto& t = transcript(4096);
  for (auto _ : state) {
    auth::ScramServer server{t.secret, std::string(kServerNonce)};
    auto first = server.on_client_first(t.client_first);
    auto final = server.on_client_final(t.client_final);
    if (!first || !final) state.SkipWithError("exchange failed");
    benchmark::DoNotOptimize(final);
  }
  per_unit(state, "t/exchange", 1);
}
BENCHMARK(BM_ScramServerExchange);

// Everything ClientSession::authenticate + attach_server do for a SCRAM login whose users-file entry is
// a SCRAM secret: parse the secret (twice: authenticate and attach_server's is_scram_secret), draw the
// server nonce, build AuthenticationSASL, parse SASLInitialResponse, the two steps, SASLContinue,
// SASLFinal, AuthenticationOk. (The nonce is drawn but a fixed one is used so the recorded proof verifies.)
void BM_ScramServerLogin(benchmark::State& state) {
  const auto& t = transcript(4096);
  std::string initial_msg;
  protocol::append_sasl_initial_response(initial_msg, auth::kScramMechanism, t.client_first);
  const Bytes initial_body = as_bytes(initial_msg).subspan(protocol::kHeaderSize);
  for (auto _ : state) {
    auto secret = auth::parse_scram_secret(t.secret_text);
    const bool is_secret = auth::is_scram_secret(t.secret_text);
    auto nonce = auth::random_nonce();
    benchmark::DoNotOptimize(nonce);
    auth::ScramServer server{*secret, std::string(kServerNonce)};
    std::string out;
    const std::string_view mechanisms[] = {auth::kScramMechanism};
    protocol::append_auth_sasl(out, mechanisms);
    auto initial = protocol::parse_sasl_initial_response(initial_body);
    auto first = server.on_client_first(initial->data);
    out.clear();
    protocol::append_auth_sasl_continue(out, *first);
    auto final = server.on_client_final(t.client_final);
    out.clear();
    protocol::append_auth_sasl_final(out, *final);
    out.clear();
    protocol::append_auth_ok(out);
    if (!secret || !is_secret || !first || !final) state.SkipWithError("login failed");
    benchmark::DoNotOptimize(out);
  }
  per_unit(state, "t/login", 1);
}
BENCHMARK(BM_ScramServerLogin);

void BM_ParseScramSecret(benchmark::State& state) {
  const auto& t = transcript(4096);
  for (auto _ : state) {
    auto secret = auth::parse_scram_secret(t.secret_text);
    benchmark::DoNotOptimize(secret);
  }
}
BENCHMARK(BM_ParseScramSecret);

void BM_RandomNonce(benchmark::State& state) {
  for (auto _ : state) {
    auto nonce = auth::random_nonce();
    benchmark::DoNotOptimize(nonce);
  }
}
BENCHMARK(BM_RandomNonce);

// ---- SCRAM, client role: Sluice logs in to PostgreSQL with a plain password -------------------
// client_first + on_server_first (PBKDF2 with the server's iteration count) + on_server_final.
// Arg: iterations. 4096 is PostgreSQL's default (scram_iterations); 1 isolates everything but PBKDF2.
void BM_ScramClientExchange(benchmark::State& state) {
  const auto& t = transcript(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auth::ScramClient client{std::string(kPassword), std::string(kClientNonce)};
    auto first = client.client_first();
    auto final = client.on_server_first(t.server_first);
    auto verified = client.on_server_final(t.server_final);
    if (!final || !verified) state.SkipWithError("exchange failed");
    benchmark::DoNotOptimize(first);
    benchmark::DoNotOptimize(final);
  }
  per_unit(state, "t/exchange", 1);
}
BENCHMARK(BM_ScramClientExchange)->ArgName("iterations")->Arg(4096)->Arg(1)->Unit(benchmark::kMicrosecond);

// make_scram_secret: what Context::scram_secret_for pays once per user with a plain password.
void BM_MakeScramSecret(benchmark::State& state) {
  const int iterations = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto secret = auth::make_scram_secret(kPassword, "0123456789abcdef", iterations);
    benchmark::DoNotOptimize(secret);
  }
}
BENCHMARK(BM_MakeScramSecret)->ArgName("iterations")->Arg(4096)->Unit(benchmark::kMicrosecond);

// OpenSSL's PBKDF2-HMAC-SHA-256 alone: the floor for the client role and make_scram_secret.
void BM_Pbkdf2Sha256(benchmark::State& state) {
  const int iterations = static_cast<int>(state.range(0));
  std::array<unsigned char, 32> out{};
  const std::string salt = "0123456789abcdef";
  for (auto _ : state) {
    PKCS5_PBKDF2_HMAC(kPassword.data(), static_cast<int>(kPassword.size()),
                      reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()), iterations,
                      EVP_sha256(), static_cast<int>(out.size()), out.data());
    benchmark::DoNotOptimize(out);
  }
  per_unit(state, "t/iteration", static_cast<double>(iterations));
}
BENCHMARK(BM_Pbkdf2Sha256)->ArgName("iterations")->Arg(4096)->Unit(benchmark::kMicrosecond);

// PBKDF2-HMAC-SHA-256 (one 32-byte block, key <= 64 bytes) with the HMAC inner and outer pads hashed
// once and the SHA-256 states copied per iteration: 2 compressions per iteration and no EVP dispatch.
// Checked against OpenSSL's result before timing.
std::array<unsigned char, 32> pbkdf2_precomputed_pads(std::string_view password, std::string_view salt,
                                                      int iterations) {
  std::array<unsigned char, 64> ipad{}, opad{};
  std::memcpy(ipad.data(), password.data(), password.size());
  std::memcpy(opad.data(), password.data(), password.size());
  for (std::size_t i = 0; i < 64; ++i) {
    ipad[i] ^= 0x36;
    opad[i] ^= 0x5c;
  }
  SHA256_CTX inner0, outer0;
  SHA256_Init(&inner0);
  SHA256_Update(&inner0, ipad.data(), ipad.size());
  SHA256_Init(&outer0);
  SHA256_Update(&outer0, opad.data(), opad.size());
  std::array<unsigned char, 32> u{}, t{}, h{};
  SHA256_CTX c = inner0;
  SHA256_Update(&c, salt.data(), salt.size());
  const unsigned char block_index[4] = {0, 0, 0, 1};
  SHA256_Update(&c, block_index, 4);
  SHA256_Final(h.data(), &c);
  c = outer0;
  SHA256_Update(&c, h.data(), h.size());
  SHA256_Final(u.data(), &c);
  t = u;
  for (int i = 1; i < iterations; ++i) {
    c = inner0;
    SHA256_Update(&c, u.data(), u.size());
    SHA256_Final(h.data(), &c);
    c = outer0;
    SHA256_Update(&c, h.data(), h.size());
    SHA256_Final(u.data(), &c);
    for (std::size_t j = 0; j < t.size(); ++j) t[j] ^= u[j];
  }
  return t;
}

void BM_Baseline_Pbkdf2_PrecomputedPads(benchmark::State& state) {
  const int iterations = static_cast<int>(state.range(0));
  const std::string salt = "0123456789abcdef";
  std::array<unsigned char, 32> expected{};
  PKCS5_PBKDF2_HMAC(kPassword.data(), static_cast<int>(kPassword.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()), iterations,
                    EVP_sha256(), static_cast<int>(expected.size()), expected.data());
  if (pbkdf2_precomputed_pads(kPassword, salt, iterations) != expected) state.SkipWithError("PBKDF2 mismatch");
  for (auto _ : state) {
    auto out = pbkdf2_precomputed_pads(kPassword, salt, iterations);
    benchmark::DoNotOptimize(out);
  }
  per_unit(state, "t/iteration", static_cast<double>(iterations));
}
BENCHMARK(BM_Baseline_Pbkdf2_PrecomputedPads)->ArgName("iterations")->Arg(4096)->Unit(benchmark::kMicrosecond);

// ---- MD5 ---------------------------------------------------------------------------------

void BM_Md5Response(benchmark::State& state) {  // client role: answer AuthenticationMD5Password
  const std::string stored = auth::md5_password_hash(kPassword, kUser);
  for (auto _ : state) {
    auto response = auth::md5_response(stored, kMd5Salt);
    benchmark::DoNotOptimize(response);
  }
  per_unit(state, "t/exchange", 1);
}
BENCHMARK(BM_Md5Response);

void BM_Md5Verify(benchmark::State& state) {  // server role, stored "md5..." hash
  const std::string stored = auth::md5_password_hash(kPassword, kUser);
  const std::string response = auth::md5_response(stored, kMd5Salt);
  for (auto _ : state) {
    const bool ok = auth::md5_verify(stored, kMd5Salt, response);
    if (!ok) state.SkipWithError("md5 verify failed");
    benchmark::DoNotOptimize(ok);
  }
  per_unit(state, "t/exchange", 1);
}
BENCHMARK(BM_Md5Verify);

// ClientSession::authenticate's md5 case with a plain password in the users file: hash it (every
// login), draw a salt, build AuthenticationMD5Password, verify the response.
void BM_Md5ServerLogin(benchmark::State& state) {
  const std::string response = auth::md5_response(auth::md5_password_hash(kPassword, kUser), kMd5Salt);
  for (auto _ : state) {
    const std::string stored = auth::md5_password_hash(kPassword, kUser);
    auto random = auth::random_bytes(4);
    benchmark::DoNotOptimize(random);
    std::string out;
    protocol::append_auth_md5(out, kMd5Salt);
    const bool ok = auth::md5_verify(stored, kMd5Salt, response);
    if (!ok) state.SkipWithError("md5 verify failed");
    benchmark::DoNotOptimize(out);
  }
  per_unit(state, "t/login", 1);
}
BENCHMARK(BM_Md5ServerLogin);

// ---- Baselines: the same primitives with the OpenSSL 3 algorithm fetched once -----------------
// auth.cpp uses EVP_md5()/EVP_sha256() with a new context per call (MD5) and one-shot HMAC(), which in
// OpenSSL 3 look the algorithm up in the provider store and allocate contexts on every call.

void BM_Baseline_Md5Hex_EvpPerCall(benchmark::State& state) {  // what md5_hex_of does
  const std::string data = "0123456789abcdef0123456789abcdef\x5a\x17\xc3\x09";
  for (auto _ : state) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_md5(), nullptr);
    EVP_DigestUpdate(ctx, data.data(), data.size());
    EVP_DigestFinal_ex(ctx, digest.data(), &len);
    EVP_MD_CTX_free(ctx);
    benchmark::DoNotOptimize(digest);
  }
}
BENCHMARK(BM_Baseline_Md5Hex_EvpPerCall);

void BM_Baseline_Md5_Prefetched(benchmark::State& state) {
  const std::string data = "0123456789abcdef0123456789abcdef\x5a\x17\xc3\x09";
  EVP_MD* md5 = EVP_MD_fetch(nullptr, "MD5", nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  for (auto _ : state) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    EVP_DigestInit_ex2(ctx, md5, nullptr);
    EVP_DigestUpdate(ctx, data.data(), data.size());
    EVP_DigestFinal_ex(ctx, digest.data(), &len);
    benchmark::DoNotOptimize(digest);
  }
  EVP_MD_CTX_free(ctx);
  EVP_MD_free(md5);
}
BENCHMARK(BM_Baseline_Md5_Prefetched);

void BM_Baseline_HmacSha256_OneShot(benchmark::State& state) {  // what hmac_sha256 does
  const std::array<unsigned char, 32> key{1, 2, 3};
  const std::string data(180, 'a');  // about an AuthMessage
  for (auto _ : state) {
    std::array<unsigned char, 32> out{};
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
         data.size(), out.data(), &len);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_Baseline_HmacSha256_OneShot);

void BM_Baseline_HmacSha256_Prefetched(benchmark::State& state) {
  const std::array<unsigned char, 32> key{1, 2, 3};
  const std::string data(180, 'a');
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                               OSSL_PARAM_construct_end()};
  EVP_MAC_init(ctx, key.data(), key.size(), params);  // fetches SHA256 once
  for (auto _ : state) {
    std::array<unsigned char, 32> out{};
    std::size_t len = 0;
    EVP_MAC_init(ctx, key.data(), key.size(), nullptr);
    EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size());
    EVP_MAC_final(ctx, out.data(), &len, out.size());
    benchmark::DoNotOptimize(out);
  }
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
}
BENCHMARK(BM_Baseline_HmacSha256_Prefetched);

}  // namespace
}  // namespace sluice::bench
