// SCRAM pass-through (ScramServer::proven_keys, ScramClient from keys) and the wire pieces
// [auth_query] uses (append_extended_query, parse_data_row), byte by byte.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <string>
#include <string_view>

#include "protocol/auth.h"
#include "protocol/wire.h"
#include "tests/protocol/scram_rfc7677.h"
#include "tests/protocol/test_messages.h"

namespace sluice::protocol {
namespace {

using namespace std::string_literals;
using auth::ScramClient;
using auth::ScramKeys;
using auth::ScramServer;

using namespace auth::rfc7677;
constexpr std::string_view kClientNonce = kRfcClientNonce;
constexpr std::string_view kServerNonce = kRfcServerNonce;
constexpr std::string_view kSaltB64 = kRfcSaltB64;
constexpr std::string_view kServerFirst = kRfcServerFirst;
constexpr std::string_view kServerKeyB64 = kRfcServerKeyB64;

std::string salt() { return auth::base64_decode(kSaltB64).value(); }

// ClientKey of "pencil", straight from OpenSSL.
std::array<std::uint8_t, 32> pencil_client_key() {
  std::array<unsigned char, 32> salted{};
  std::array<std::uint8_t, 32> key{};
  const std::string s = salt();
  PKCS5_PBKDF2_HMAC("pencil", 6, reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()), 4096,
                    EVP_sha256(), 32, salted.data());
  unsigned int length = 0;
  HMAC(EVP_sha256(), salted.data(), 32, reinterpret_cast<const unsigned char*>("Client Key"), 10, key.data(), &length);
  return key;
}

ScramKeys pencil_keys() {
  ScramKeys keys;
  keys.client_key = pencil_client_key();
  const std::string server_key = auth::base64_decode(kServerKeyB64).value();
  std::copy(server_key.begin(), server_key.end(), keys.server_key.begin());
  return keys;
}

TEST(ScramPassThrough, ServerRecoversTheClientKeyFromTheRfcProof) {
  ScramServer server(auth::make_scram_secret("pencil", salt(), 4096), std::string(kServerNonce));
  EXPECT_FALSE(server.proven_keys().has_value());
  ASSERT_TRUE(server.on_client_first("n,,n=user,r="s + std::string(kClientNonce)).has_value());
  ASSERT_TRUE(server.on_client_final(kRfcClientFinal).has_value());
  const auto keys = server.proven_keys();
  ASSERT_TRUE(keys.has_value());
  EXPECT_EQ(keys->client_key, pencil_keys().client_key);
  EXPECT_EQ(keys->server_key, pencil_keys().server_key);
}

TEST(ScramPassThrough, NoKeysFromAFailedProof) {
  ScramServer server(auth::make_scram_secret("not pencil", salt(), 4096), std::string(kServerNonce));
  ASSERT_TRUE(server.on_client_first("n,,n=user,r="s + std::string(kClientNonce)).has_value());
  EXPECT_EQ(server.on_client_final(kRfcClientFinal).error(), errc::auth_failed);
  EXPECT_FALSE(server.proven_keys().has_value());
}

TEST(ScramPassThrough, ClientFromKeysSendsTheSameProofAsFromThePassword) {
  ScramClient client(pencil_keys(), std::string(kClientNonce));
  EXPECT_EQ(client.client_first(), "n,,n=,r="s + std::string(kClientNonce));
  const auto final_message = client.on_server_first(kServerFirst);
  ASSERT_TRUE(final_message.has_value()) << final_message.error().message();
  EXPECT_EQ(*final_message, kEmptyUserClientFinal);
  EXPECT_TRUE(client.on_server_final(kEmptyUserServerFinal).has_value());
}

TEST(ScramPassThrough, ClientFromKeysChecksTheServerSignature) {
  ScramClient client(pencil_keys(), std::string(kClientNonce));
  client.client_first();
  ASSERT_TRUE(client.on_server_first(kServerFirst).has_value());
  EXPECT_EQ(client.on_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").error(),
            errc::scram_server_signature);
}

TEST(ScramPassThrough, KeysFromOneClientLogInThroughAnotherServerExchange) {
  // Sluice's two roles end to end: a client proves "pencil" to Sluice (ScramServer), Sluice logs in
  // to a server holding the same secret with the proven keys (ScramClient), fresh nonces each time.
  const auto secret = auth::make_scram_secret("pencil", salt(), 4096);
  ScramServer sluice(secret);
  ScramClient app("pencil");
  const auto server_first = sluice.on_client_first(app.client_first());
  ASSERT_TRUE(server_first.has_value());
  const auto client_final = app.on_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  ASSERT_TRUE(sluice.on_client_final(*client_final).has_value());
  const auto keys = sluice.proven_keys();
  ASSERT_TRUE(keys.has_value());

  ScramServer postgres(secret);
  ScramClient pooled(*keys);
  const auto first = postgres.on_client_first(pooled.client_first());
  ASSERT_TRUE(first.has_value());
  const auto proof = pooled.on_server_first(*first);
  ASSERT_TRUE(proof.has_value());
  const auto verifier = postgres.on_client_final(*proof);
  ASSERT_TRUE(verifier.has_value());
  EXPECT_TRUE(pooled.on_server_final(*verifier).has_value());

  // A server with another salt for the same password refuses the proof.
  ScramServer resalted(auth::make_scram_secret("pencil", "another salt", 4096));
  ScramClient stale(*keys);
  const auto resalted_first = resalted.on_client_first(stale.client_first());
  ASSERT_TRUE(resalted_first.has_value());
  const auto stale_proof = stale.on_server_first(*resalted_first);
  ASSERT_TRUE(stale_proof.has_value());
  EXPECT_EQ(resalted.on_client_final(*stale_proof).error(), errc::auth_failed);
}

TEST(ScramPassThrough, NoIterationCapWithoutDerivation) {
  // With keys nothing is derived, so a high iteration count costs nothing and is accepted; with a
  // password it is refused (PBKDF2 on an I/O thread).
  const std::string server_first = "r="s + std::string(kClientNonce) + "xyz,s=" + std::string(kSaltB64) + ",i=2000000";
  ScramClient from_keys(pencil_keys(), std::string(kClientNonce));
  from_keys.client_first();
  EXPECT_TRUE(from_keys.on_server_first(server_first).has_value());
  ScramClient from_password("pencil", std::string(kClientNonce));
  from_password.client_first();
  EXPECT_EQ(from_password.on_server_first(server_first).error(), errc::scram_invalid_message);
}

// ---- append_extended_query, parse_data_row --------------------------------------------------

TEST(ExtendedQueryBuilder, ParseBindExecuteSyncByteByByte) {
  std::string out;
  const std::string_view parameters[] = {"bob", ""};
  append_extended_query(out, "SELECT $1, $2", parameters);
  const std::string expected =
      // Parse: unnamed statement, text, no parameter types
      "P"s + std::string("\0\0\0\x15", 4) + std::string("\0", 1) + "SELECT $1, $2" + std::string("\0", 1) +
      std::string("\0\0", 2) +
      // Bind: unnamed portal and statement, no format codes, 2 parameters, no result format codes
      "B" + std::string("\0\0\0\x17", 4) + std::string("\0\0", 2) + std::string("\0\0", 2) +
      std::string("\0\x02", 2) + std::string("\0\0\0\x03", 4) + "bob" + std::string("\0\0\0\0", 4) +
      std::string("\0\0", 2) +
      // Execute: unnamed portal, all rows
      "E" + std::string("\0\0\0\x09", 4) + std::string("\0", 1) + std::string("\0\0\0\0", 4) +
      // Sync
      "S" + std::string("\0\0\0\x04", 4);
  EXPECT_EQ(out, expected);
}

TEST(DataRowParser, ValuesAndNulls) {
  const std::string body = std::string("\0\x03", 2) + std::string("\0\0\0\x02", 4) + "ab" +
                           std::string("\xff\xff\xff\xff", 4) + std::string("\0\0\0\0", 4);
  const auto row = parse_data_row(test::as_bytes(body));
  ASSERT_TRUE(row.has_value());
  ASSERT_EQ(row->size(), 3u);
  EXPECT_EQ((*row)[0], std::optional<std::string_view>("ab"));
  EXPECT_EQ((*row)[1], std::nullopt);
  EXPECT_EQ((*row)[2], std::optional<std::string_view>(""));
}

TEST(DataRowParser, MalformedBodiesAreRefused) {
  const std::string truncated_value = std::string("\0\x01", 2) + std::string("\0\0\0\x05", 4) + "abc";
  const std::string missing_column = std::string("\0\x02", 2) + std::string("\0\0\0\x01", 4) + "a";
  const std::string trailing = std::string("\0\x01", 2) + std::string("\0\0\0\x01", 4) + "ab";
  const std::string short_length = std::string("\0\x01", 2) + std::string("\0\0", 2);
  for (const std::string& body : {std::string(), std::string("\0", 1), truncated_value, missing_column, trailing,
                                  short_length}) {
    EXPECT_EQ(parse_data_row(test::as_bytes(body)).error(), errc::malformed_message) << test::hex(body);
  }
  EXPECT_TRUE(parse_data_row(test::as_bytes(std::string("\0\0", 2)))->empty());
}

}  // namespace
}  // namespace sluice::protocol
