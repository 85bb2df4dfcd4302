#include "protocol/auth.h"
#include "tests/protocol/scram_rfc7677.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sluice::protocol::auth {
namespace {

// ---- Values computed by PostgreSQL 15 itself ----------------------------------------
// Obtained from a throwaway PostgreSQL 15.x server (initdb into a temp dir, pg_ctl start) with:
//   SET password_encryption='md5';           CREATE ROLE alice LOGIN PASSWORD 'wonderland';
//   SET password_encryption='scram-sha-256'; CREATE ROLE bob LOGIN PASSWORD 'builder';
//   SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('alice', 'bob');
// and the MD5 challenge responses with
//   SELECT 'md5' || md5(convert_to(substr(rolpassword, 4), 'UTF8') || '\x01020304'::bytea)
//   FROM pg_authid WHERE rolname = 'alice';   -- likewise for '\x9cff00a7'
// With an md5 (alice) and scram-sha-256 (bob) pg_hba line, that server also accepted logins driven by
// md5_response() and by ScramClient (whose on_server_final() accepted the server's signature).
constexpr std::string_view kPgMd5Hash = "md56b765adf84f3c4341e8aab77ceda3bf1";  // alice / wonderland
constexpr std::string_view kPgMd5Response01020304 = "md5370dfac54ebb2bdeedf68eab452ffd72";
constexpr std::string_view kPgMd5Response9cff00a7 = "md55e7c4a6398af8240586d51b048171598";
constexpr std::string_view kPgScramSecret =  // bob / builder
    "SCRAM-SHA-256$4096:EUbSraiL3QwIdYx7zlqmBw==$uco7DrbD0sIlvFWKf0YiOgtxxRch2FNGd5cnWhyXTlI=:"
    "iQlgnZ0O5p1znyLpmKuXkkl1Z1b4hZYMHbo+5KcIV+I=";

using namespace rfc7677;

std::string rfc_salt() { return base64_decode(kRfcSaltB64).value(); }

ScramSecret pencil_secret() { return make_scram_secret("pencil", rfc_salt(), 4096); }

std::string key_b64(const std::array<std::uint8_t, 32>& key) {
  return base64_encode({reinterpret_cast<const char*>(key.data()), key.size()});
}

// A client proof computed straight from OpenSSL, independently of auth.cpp, for messages that
// ScramClient does not produce (gs2 flag 'y', extensions).
std::string independent_proof(std::string_view password, std::string_view salt, int iterations,
                              std::string_view auth_message) {
  std::array<unsigned char, 32> salted{}, client_key{}, stored_key{}, signature{}, proof{};
  unsigned int len = 0;
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()), iterations,
                    EVP_sha256(), 32, salted.data());
  HMAC(EVP_sha256(), salted.data(), 32, reinterpret_cast<const unsigned char*>("Client Key"), 10, client_key.data(),
       &len);
  SHA256(client_key.data(), 32, stored_key.data());
  HMAC(EVP_sha256(), stored_key.data(), 32, reinterpret_cast<const unsigned char*>(auth_message.data()),
       auth_message.size(), signature.data(), &len);
  for (std::size_t i = 0; i < 32; ++i) proof[i] = client_key[i] ^ signature[i];
  return base64_encode({reinterpret_cast<const char*>(proof.data()), proof.size()});
}

// ---- MD5 ------------------------------------------------------------------------------

TEST(Md5Auth, HexMatchesKnownDigests) {
  EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
}

TEST(Md5Auth, PasswordHashMatchesPostgres) {
  EXPECT_EQ(md5_password_hash("wonderland", "alice"), kPgMd5Hash);
  EXPECT_TRUE(is_md5_hash(md5_password_hash("", "")));
}

TEST(Md5Auth, ResponseMatchesPostgres) {
  EXPECT_EQ(md5_response(kPgMd5Hash, {0x01, 0x02, 0x03, 0x04}), kPgMd5Response01020304);
  // Salt bytes above 0x7f and a NUL are hashed as raw bytes.
  EXPECT_EQ(md5_response(kPgMd5Hash, {0x9c, 0xff, 0x00, 0xa7}), kPgMd5Response9cff00a7);
}

TEST(Md5Auth, VerifyAcceptsOnlyTheRightResponse) {
  const std::array<std::uint8_t, 4> salt{0x01, 0x02, 0x03, 0x04};
  EXPECT_TRUE(md5_verify(kPgMd5Hash, salt, kPgMd5Response01020304));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, {0x01, 0x02, 0x03, 0x05}, kPgMd5Response01020304));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, salt, kPgMd5Response9cff00a7));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, salt, kPgMd5Response01020304.substr(0, 34)));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, salt, std::string(kPgMd5Response01020304) + "0"));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, salt, ""));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, salt, "wonderland"));
  EXPECT_FALSE(md5_verify(kPgMd5Hash, salt, "MD5370DFAC54EBB2BDEEDF68EAB452FFD72"));
  // A stored value that is not an MD5 hash never verifies.
  EXPECT_FALSE(md5_verify("wonderland", salt, md5_response("wonderland", salt)));
  EXPECT_FALSE(md5_verify("", salt, md5_response("", salt)));
}

TEST(Md5Auth, RecognisesHashes) {
  EXPECT_TRUE(is_md5_hash(kPgMd5Hash));
  EXPECT_FALSE(is_md5_hash(""));
  EXPECT_FALSE(is_md5_hash("md5"));
  EXPECT_FALSE(is_md5_hash(kPgMd5Hash.substr(0, 34)));
  EXPECT_FALSE(is_md5_hash(std::string(kPgMd5Hash) + "0"));
  EXPECT_FALSE(is_md5_hash("MD56b765adf84f3c4341e8aab77ceda3bf1"));
  EXPECT_FALSE(is_md5_hash("md56B765ADF84F3C4341E8AAB77CEDA3BF1"));  // PostgreSQL wants lowercase
  EXPECT_FALSE(is_md5_hash("md56b765adf84f3c4341e8aab77ceda3bfg"));
  EXPECT_FALSE(is_md5_hash(kPgScramSecret));
}

// ---- base64 ---------------------------------------------------------------------------

TEST(ScramBase64, Rfc4648Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [raw, text] : vectors) {
    EXPECT_EQ(base64_encode(raw), text);
    EXPECT_EQ(base64_decode(text), std::string(raw)) << text;
  }
}

TEST(ScramBase64, RoundTripsEveryByteAndLength) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  for (std::size_t n = 0; n <= all.size(); ++n) {
    const std::string raw = all.substr(all.size() - n);
    ASSERT_EQ(base64_decode(base64_encode(raw)), raw) << n;
  }
}

TEST(ScramBase64, RejectsMalformedText) {
  for (std::string_view bad : {"Zg", "Zg=", "Z", "Z===", "====", "=Zg=", "Zg==Zg==", "Zm9vYg=a", "Zg= ", " Zg=",
                               "Zg\n==", "Z!==", "Zm9vY===",
                               // Non-zero unused bits: rejected so that each value has one encoding.
                               "Zh==", "Zm9="}) {
    EXPECT_FALSE(base64_decode(bad).has_value()) << bad;
  }
  EXPECT_FALSE(base64_decode(std::string_view("Zm9v\0Zm9", 8)).has_value());
  // Bytes outside ASCII are not base64 either (the decoder's table covers all 256 values).
  EXPECT_FALSE(base64_decode("Zm\xc3\xa9").has_value());
  EXPECT_FALSE(base64_decode("Zm9\xff").has_value());
}

// ---- SCRAM secrets ---------------------------------------------------------------------

TEST(ScramSecretFormat, PostgresSecretParsesAndFormatsBack) {
  const auto secret = parse_scram_secret(kPgScramSecret);
  ASSERT_TRUE(secret.has_value());
  EXPECT_EQ(secret->iterations, 4096);
  EXPECT_EQ(secret->salt, base64_decode("EUbSraiL3QwIdYx7zlqmBw=="));
  EXPECT_EQ(key_b64(secret->stored_key), "uco7DrbD0sIlvFWKf0YiOgtxxRch2FNGd5cnWhyXTlI=");
  EXPECT_EQ(key_b64(secret->server_key), "iQlgnZ0O5p1znyLpmKuXkkl1Z1b4hZYMHbo+5KcIV+I=");
  EXPECT_EQ(format_scram_secret(*secret), kPgScramSecret);
  EXPECT_TRUE(is_scram_secret(kPgScramSecret));
}

TEST(ScramSecretFormat, MakeMatchesPostgres) {
  const auto parsed = parse_scram_secret(kPgScramSecret);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(format_scram_secret(make_scram_secret("builder", parsed->salt, 4096)), kPgScramSecret);
  EXPECT_NE(format_scram_secret(make_scram_secret("Builder", parsed->salt, 4096)), kPgScramSecret);
}

// SHA-256 and HMAC reuse one OpenSSL context per thread: every I/O thread (workers) must get the
// same keys, also while the others are deriving theirs (one iteration, so that the threads spend
// their time in those contexts rather than in PBKDF2).
TEST(ScramSecretFormat, EveryThreadDerivesTheSameKeys) {
  const std::string expected = format_scram_secret(make_scram_secret("builder", "0123456789abcdef", 1));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (auto& count : mismatches)
    threads.emplace_back([&count, &expected] {
      for (int i = 0; i < 5000; ++i)
        if (format_scram_secret(make_scram_secret("builder", "0123456789abcdef", 1)) != expected) ++count;
    });
  for (auto& t : threads) t.join();
  for (int count : mismatches) EXPECT_EQ(count, 0);
}

TEST(ScramSecretFormat, MakeMatchesRfc7677Keys) {
  const ScramSecret secret = pencil_secret();
  EXPECT_EQ(secret.iterations, 4096);
  EXPECT_EQ(secret.salt, rfc_salt());
  EXPECT_EQ(key_b64(secret.stored_key), kRfcStoredKeyB64);
  EXPECT_EQ(key_b64(secret.server_key), kRfcServerKeyB64);
}

TEST(ScramSecretFormat, RoundTrip) {
  for (int iterations : {1, 4096, 2147483647}) {
    ScramSecret secret;
    secret.iterations = iterations;
    secret.salt = random_bytes(16);
    const std::string keys = random_bytes(64);
    std::copy(keys.begin(), keys.begin() + 32, secret.stored_key.begin());
    std::copy(keys.begin() + 32, keys.end(), secret.server_key.begin());
    const std::string text = format_scram_secret(secret);
    const auto parsed = parse_scram_secret(text);
    ASSERT_TRUE(parsed.has_value()) << text;
    EXPECT_EQ(parsed->iterations, secret.iterations);
    EXPECT_EQ(parsed->salt, secret.salt);
    EXPECT_EQ(parsed->stored_key, secret.stored_key);
    EXPECT_EQ(parsed->server_key, secret.server_key);
    EXPECT_EQ(format_scram_secret(*parsed), text);
  }
  const ScramSecret made = make_scram_secret("s3cret", random_bytes(16), 4096);
  const auto reparsed = parse_scram_secret(format_scram_secret(made));
  ASSERT_TRUE(reparsed.has_value());
  EXPECT_EQ(reparsed->stored_key, made.stored_key);
  EXPECT_EQ(reparsed->server_key, made.server_key);
}

TEST(ScramSecretFormat, ParseRejectsMalformed) {
  const std::string salt = "EUbSraiL3QwIdYx7zlqmBw==";
  const std::string stored = "uco7DrbD0sIlvFWKf0YiOgtxxRch2FNGd5cnWhyXTlI=";
  const std::string server = "iQlgnZ0O5p1znyLpmKuXkkl1Z1b4hZYMHbo+5KcIV+I=";
  const auto make = [&](std::string_view prefix, std::string_view it, std::string_view sa, std::string_view st,
                        std::string_view sv) {
    return std::string(prefix) + std::string(it) + ":" + std::string(sa) + "$" + std::string(st) + ":" +
           std::string(sv);
  };
  ASSERT_TRUE(parse_scram_secret(make("SCRAM-SHA-256$", "4096", salt, stored, server)));
  const std::vector<std::string> bad = {
      "",
      "wonderland",
      std::string(kPgMd5Hash),
      "SCRAM-SHA-256",
      "SCRAM-SHA-256$",
      "SCRAM-SHA-256$4096:" + salt,
      "SCRAM-SHA-256$4096:" + salt + "$" + stored,
      "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":",
      make("scram-sha-256$", "4096", salt, stored, server),
      make("SCRAM-SHA-1$", "4096", salt, stored, server),
      make(" SCRAM-SHA-256$", "4096", salt, stored, server),
      make("SCRAM-SHA-256$", "0", salt, stored, server),
      make("SCRAM-SHA-256$", "-1", salt, stored, server),
      make("SCRAM-SHA-256$", "+4096", salt, stored, server),
      make("SCRAM-SHA-256$", "04096", salt, stored, server),
      make("SCRAM-SHA-256$", "4096x", salt, stored, server),
      make("SCRAM-SHA-256$", " 4096", salt, stored, server),
      make("SCRAM-SHA-256$", "", salt, stored, server),
      make("SCRAM-SHA-256$", "2147483648", salt, stored, server),
      make("SCRAM-SHA-256$", "99999999999999999999", salt, stored, server),
      make("SCRAM-SHA-256$", "4096", "", stored, server),
      make("SCRAM-SHA-256$", "4096", "EUbSraiL3QwIdYx7zlqmBw=", stored, server),
      make("SCRAM-SHA-256$", "4096", "EUbSraiL3QwIdYx7zlqm!w==", stored, server),
      make("SCRAM-SHA-256$", "4096", salt, "", server),
      make("SCRAM-SHA-256$", "4096", salt, stored, ""),
      make("SCRAM-SHA-256$", "4096", salt, "uco7DrbD0sIlvFWKf0YiOgtxxRch2FNGd5cnWhyXTg==", server),  // 31 bytes
      make("SCRAM-SHA-256$", "4096", salt, stored, server + "AAAA"),                                // 35 bytes
      make("SCRAM-SHA-256$", "4096", salt, stored, server) + "$",
      make("SCRAM-SHA-256$", "4096", salt, stored, server) + ":",
      make("SCRAM-SHA-256$", "4096", salt, stored, server) + " ",
      make("SCRAM-SHA-256$", "4096:4096", salt, stored, server),
      make("SCRAM-SHA-256$", "4096", salt + "$" + salt, stored, server),
      make("SCRAM-SHA-256$", "4096", salt, stored, stored + ":" + server),
  };
  for (const std::string& text : bad) {
    EXPECT_FALSE(parse_scram_secret(text).has_value()) << text;
    EXPECT_FALSE(is_scram_secret(text)) << text;
  }
}

TEST(ScramSecretFormat, EveryPrefixOfASecretIsRejected) {
  for (std::size_t n = 0; n < kPgScramSecret.size(); ++n)
    EXPECT_FALSE(parse_scram_secret(kPgScramSecret.substr(0, n)).has_value()) << n;
}

TEST(ScramNonce, IsPrintableAndFresh) {
  const std::string a = random_nonce(), b = random_nonce();
  EXPECT_EQ(a.size(), 24u);
  EXPECT_NE(a, b);
  for (char c : a) EXPECT_TRUE(c > 0x20 && c < 0x7f && c != ',') << c;
  EXPECT_EQ(random_bytes(0), "");
  EXPECT_EQ(random_bytes(33).size(), 33u);
}

// random_bytes hands out a per-thread block drawn from OpenSSL and wipes what it gave:
// draws that cross blocks, or are larger than one, must still be fresh random bytes
// (a wiped byte handed out would show as a run of zeros).
TEST(RandomBytes, DrawsAcrossAndBeyondBlocksAreFresh) {
  std::set<std::string> draws;
  for (int i = 0; i < 200; ++i) draws.insert(random_bytes(26));
  EXPECT_EQ(draws.size(), 200u);
  const std::string big = random_bytes(1000), other = random_bytes(1000);
  EXPECT_NE(big, other);
  for (const std::string& bytes : {big, other})
    EXPECT_EQ(bytes.find(std::string(16, '\0')), std::string::npos) << "a run of zeros: wiped bytes handed out";
  std::uint32_t values[2] = {0, 0};
  fill_random(values, sizeof values);
  EXPECT_FALSE(values[0] == 0 && values[1] == 0);
}

// ---- RFC 7677 exchange ----------------------------------------------------------------

TEST(ScramRfc7677, ServerReproducesTheExchangeByteForByte) {
  ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
  const auto server_first = server.on_client_first(kRfcClientFirst);
  ASSERT_TRUE(server_first.has_value()) << server_first.error().message();
  EXPECT_EQ(*server_first, kRfcServerFirst);
  const auto server_final = server.on_client_final(kRfcClientFinal);
  ASSERT_TRUE(server_final.has_value()) << server_final.error().message();
  EXPECT_EQ(*server_final, kRfcServerFinal);
}

TEST(ScramRfc7677, ServerWithIndependentKeysReproducesTheExchange) {
  // Keys taken from the independent computation, not from make_scram_secret.
  ScramSecret secret;
  secret.salt = rfc_salt();
  const std::string stored = base64_decode(kRfcStoredKeyB64).value();
  const std::string server_key = base64_decode(kRfcServerKeyB64).value();
  std::copy(stored.begin(), stored.end(), secret.stored_key.begin());
  std::copy(server_key.begin(), server_key.end(), secret.server_key.begin());
  ScramServer server(secret, std::string(kRfcServerNonce));
  ASSERT_EQ(server.on_client_first(kRfcClientFirst).value(), kRfcServerFirst);
  EXPECT_EQ(server.on_client_final(kRfcClientFinal).value(), kRfcServerFinal);
}

TEST(ScramRfc7677, ClientProducesTheExpectedProof) {
  ScramClient client("pencil", std::string(kRfcClientNonce));
  EXPECT_EQ(client.client_first(), "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
  const auto client_final = client.on_server_first(kRfcServerFirst);
  ASSERT_TRUE(client_final.has_value()) << client_final.error().message();
  EXPECT_EQ(*client_final, kEmptyUserClientFinal);
  EXPECT_TRUE(client.on_server_final(kEmptyUserServerFinal).has_value());
}

TEST(ScramRfc7677, ClientAndServerCompleteTheExchange) {
  ScramClient client("pencil", std::string(kRfcClientNonce));
  ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
  const auto server_first = server.on_client_first(client.client_first());
  ASSERT_TRUE(server_first.has_value());
  EXPECT_EQ(*server_first, kRfcServerFirst);  // the user name does not enter server-first
  const auto client_final = client.on_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  const auto server_final = server.on_client_final(*client_final);
  ASSERT_TRUE(server_final.has_value()) << server_final.error().message();
  EXPECT_EQ(*server_final, kEmptyUserServerFinal);
  EXPECT_TRUE(client.on_server_final(*server_final).has_value());
}

// ---- Exchanges between ScramClient and ScramServer ---------------------------------------

struct Outcome {
  boost::system::error_code server_first, client_final, server_final, client_done;
};

// Runs a whole exchange with random nonces; stops at the first error.
Outcome exchange(const ScramSecret& secret, std::string password) {
  Outcome out;
  ScramClient client(std::move(password));
  ScramServer server(secret);
  const auto server_first = server.on_client_first(client.client_first());
  if (!server_first) {
    out.server_first = server_first.error();
    return out;
  }
  const auto client_final = client.on_server_first(*server_first);
  if (!client_final) {
    out.client_final = client_final.error();
    return out;
  }
  const auto server_final = server.on_client_final(*client_final);
  if (!server_final) {
    out.server_final = server_final.error();
    return out;
  }
  const auto done = client.on_server_final(*server_final);
  if (!done) out.client_done = done.error();
  return out;
}

TEST(ScramExchange, RightPasswordSucceeds) {
  const Outcome out = exchange(make_scram_secret("correct horse", random_bytes(16), 4096), "correct horse");
  EXPECT_FALSE(out.server_first);
  EXPECT_FALSE(out.client_final);
  EXPECT_FALSE(out.server_final);
  EXPECT_FALSE(out.client_done);
}

TEST(ScramExchange, WrongPasswordFailsAtTheServer) {
  const ScramSecret secret = make_scram_secret("correct horse", random_bytes(16), 4096);
  EXPECT_EQ(exchange(secret, "correct horsf").server_final, errc::auth_failed);
  EXPECT_EQ(exchange(secret, "").server_final, errc::auth_failed);
  EXPECT_EQ(exchange(secret, "correct horse ").server_final, errc::auth_failed);
}

TEST(ScramExchange, EmptyAndNonAsciiPasswords) {
  EXPECT_FALSE(exchange(make_scram_secret("", random_bytes(16), 4096), "").server_final);
  EXPECT_FALSE(exchange(make_scram_secret("p\xc3\xa4ss", random_bytes(16), 4096), "p\xc3\xa4ss").server_final);
}

TEST(ScramExchange, ServerRoleAcceptsGs2FlagYAndExtensions) {
  const ScramSecret secret = pencil_secret();
  ScramServer server(secret, std::string(kRfcServerNonce));
  // 'y': the client supports channel binding but believes we do not, which is the truth without TLS.
  const std::string bare = "n=user,r=rOprNGfwEbeRWgbNEkqO,x=ignored";
  ASSERT_EQ(server.on_client_first("y,," + bare).value(), kRfcServerFirst);
  const std::string without_proof = "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,z=ext";
  const std::string auth_message = bare + "," + std::string(kRfcServerFirst) + "," + without_proof;
  const std::string proof = independent_proof("pencil", rfc_salt(), 4096, auth_message);
  const auto server_final = server.on_client_final(without_proof + ",p=" + proof);
  ASSERT_TRUE(server_final.has_value()) << server_final.error().message();
  EXPECT_TRUE(server_final->starts_with("v="));
}

TEST(ScramExchange, ServerRoleRejectsChannelBindingItCannotDo) {
  // Without TLS no channel binding is offered: a client that binds anyway contradicts the offer.
  for (std::string_view first : {"p=tls-server-end-point,,n=,r=abc", "p=tls-unique,,n=,r=abc"}) {
    ScramServer server(pencil_secret());
    EXPECT_EQ(server.on_client_first(first).error(), errc::scram_channel_binding) << first;
  }
  ScramServer authzid(pencil_secret());
  EXPECT_EQ(authzid.on_client_first("n,a=admin,n=,r=abc").error(), errc::auth_unsupported);
  ScramServer mandatory(pencil_secret());
  EXPECT_EQ(mandatory.on_client_first("n,,m=must,n=,r=abc").error(), errc::auth_unsupported);
}

TEST(ScramExchange, ServerRoleChecksChannelBindingAttribute) {
  // client-first said "n,,", client-final claims "y,," (eSws) or something else.
  for (std::string_view cbind : {"eSws", "biwsbiws", "", "bixhPWFkbWluLA=="}) {
    ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
    ASSERT_TRUE(server.on_client_first(kRfcClientFirst));
    std::string final_message(kRfcClientFinal);
    final_message.replace(2, 4, cbind);
    EXPECT_EQ(server.on_client_final(final_message).error(), errc::auth_failed) << cbind;
  }
  // And the reverse: "y,," first, "n,," (biws) final.
  ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
  ASSERT_TRUE(server.on_client_first("y,,n=user,r=rOprNGfwEbeRWgbNEkqO"));
  EXPECT_EQ(server.on_client_final(kRfcClientFinal).error(), errc::auth_failed);
}

TEST(ScramExchange, ServerRoleRejectsTamperedNonce) {
  const std::string combined = std::string(kRfcClientNonce) + std::string(kRfcServerNonce);
  for (const std::string& nonce :
       {std::string(kRfcClientNonce), combined.substr(0, combined.size() - 1), combined + "x",
        "x" + combined.substr(1), combined.substr(0, 5) + "X" + combined.substr(6)}) {
    ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
    ASSERT_TRUE(server.on_client_first(kRfcClientFirst));
    std::string final_message(kRfcClientFinal);
    final_message.replace(9, combined.size(), nonce);
    EXPECT_EQ(server.on_client_final(final_message).error(), errc::scram_nonce_mismatch) << nonce;
  }
}

TEST(ScramExchange, ServerRoleRejectsWrongProof) {
  ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
  ASSERT_TRUE(server.on_client_first(kRfcClientFirst));
  // The RFC proof, one bit flipped ('d' -> 'e' in the first base64 character's group).
  std::string final_message(kRfcClientFinal);
  final_message[final_message.find(",p=") + 3] = 'e';
  EXPECT_EQ(server.on_client_final(final_message).error(), errc::auth_failed);
}

TEST(ScramExchange, ServerRoleRejectsMalformedClientFirst) {
  const std::vector<std::string> bad = {
      "",
      "n",
      "n,",
      "n,,",
      ",,n=,r=abc",
      "x,,n=,r=abc",
      "nn,,n=,r=abc",
      "n,x,n=,r=abc",
      "n,,r=abc",
      "n,,n=",
      "n,,n=,",
      "n,,n=,r=",
      "n,,n=,r=abc,",
      "n,,n=,r=abc,x",
      "n,,n=,r=abc,x=",
      "n,,n=,r=abc,1=ext",
      "n,,n=,r=ab c",
      "n,,n=,r=ab\x7f",
      "n,,n=,r=ab\xc3\xa4",
      std::string("n,,n=,r=abc\0", 12),
      std::string("n,,n=\0,r=abc", 12),
      "n,,n=,s=abc",
      "n,,r=abc,n=",
      "n,,N=,r=abc",
  };
  for (const std::string& message : bad) {
    ScramServer server(pencil_secret());
    const auto r = server.on_client_first(message);
    ASSERT_FALSE(r.has_value()) << message;
    EXPECT_EQ(r.error(), errc::scram_invalid_message) << message;
  }
}

TEST(ScramExchange, ServerRoleRejectsMalformedClientFinal) {
  const std::string nonce = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  const std::string proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  const std::vector<std::string> bad = {
      "",
      ",",
      nonce + "," + proof,                            // no c=
      "c=biws," + proof,                              // no r=
      "c=biws," + nonce,                              // no p=
      "c=biws," + nonce + ",",                        //
      "r=x,c=biws," + nonce + "," + proof,            // wrong order
      "c=biw," + nonce + "," + proof,                 // bad base64
      "c=bi!s," + nonce + "," + proof,                //
      "c=biws," + nonce + "," + proof + ",x=after",   // proof not last
      "c=biws," + nonce + "," + proof + ",",          //
      "c=biws," + nonce + ",p=",                      // empty proof
      "c=biws," + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",   // unpadded
      "c=biws," + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ==", // bad padding
      "c=biws," + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7An",      // 30 bytes
      "c=biws," + nonce + ",p=" + base64_encode(std::string(33, 'x')),          // 33 bytes
      "c=biws," + nonce + ",x," + proof,              // bad extension
      "c=biws," + nonce + ",," + proof,               //
      std::string("c=biws,") + nonce + "," + proof + std::string(1, '\0'),
  };
  for (const std::string& message : bad) {
    ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
    ASSERT_TRUE(server.on_client_first(kRfcClientFirst));
    const auto r = server.on_client_final(message);
    ASSERT_FALSE(r.has_value()) << message;
    EXPECT_EQ(r.error(), errc::scram_invalid_message) << message;
  }
}

TEST(ScramExchange, ServerRoleEnforcesOrderAndStopsAfterAFailure) {
  ScramServer early(pencil_secret());
  EXPECT_EQ(early.on_client_final(kRfcClientFinal).error(), errc::unexpected_message);

  ScramServer failed(pencil_secret(), std::string(kRfcServerNonce));
  EXPECT_TRUE(failed.on_client_first("garbage").has_error());
  EXPECT_EQ(failed.on_client_first(kRfcClientFirst).error(), errc::unexpected_message);
  EXPECT_EQ(failed.on_client_final(kRfcClientFinal).error(), errc::unexpected_message);

  ScramServer twice(pencil_secret(), std::string(kRfcServerNonce));
  ASSERT_TRUE(twice.on_client_first(kRfcClientFirst));
  EXPECT_EQ(twice.on_client_first(kRfcClientFirst).error(), errc::unexpected_message);

  ScramServer done(pencil_secret(), std::string(kRfcServerNonce));
  ASSERT_TRUE(done.on_client_first(kRfcClientFirst));
  ASSERT_TRUE(done.on_client_final(kRfcClientFinal));
  EXPECT_EQ(done.on_client_final(kRfcClientFinal).error(), errc::unexpected_message);
}

TEST(ScramExchange, ClientRoleRejectsNonceThatDoesNotExtendOurs) {
  for (std::string_view server_first :
       {"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                          // not extended
        "r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                           // shortened
        "r=xOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // altered
        "r=%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"}) {
    ScramClient client("pencil", std::string(kRfcClientNonce));
    client.client_first();
    EXPECT_EQ(client.on_server_first(server_first).error(), errc::scram_nonce_mismatch) << server_first;
  }
}

TEST(ScramExchange, ClientRoleRejectsMalformedServerFirst) {
  const std::string r = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  const std::string s = "s=W22ZaJ0SNY7soEsUEjb6gQ==";
  const std::vector<std::string> bad = {
      "",
      ",",
      r,
      r + "," + s,
      r + "," + s + ",",
      r + "," + s + ",i=",
      r + "," + s + ",i=0",
      r + "," + s + ",i=-1",
      r + "," + s + ",i=+1",
      r + "," + s + ",i=04096",
      r + "," + s + ",i=4096x",
      r + "," + s + ",i=2147483648",
      r + "," + s + ",i=2147483647",  // above kMaxScramIterations: refused before any PBKDF2
      r + "," + s + ",i=1000001",
      r + "," + s + ",i=99999999999999999999",
      r + "," + s + ",i=4096,",
      r + "," + s + ",i=4096,x",
      r + ",s=,i=4096",                              // empty salt
      r + ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",       // bad base64
      r + ",s=W22ZaJ0SNY7soEsUEjb6g!==,i=4096",      //
      r + ",i=4096," + s,                            // wrong order
      s + "," + r + ",i=4096",                       //
      "r=rOprNGfwEbeRWgbNEkqO ab," + s + ",i=4096",  // non-printable nonce
      "r=," + s + ",i=4096",
      r + "," + s + ",i=4096" + std::string(1, '\0'),
  };
  for (const std::string& message : bad) {
    ScramClient client("pencil", std::string(kRfcClientNonce));
    client.client_first();
    const auto result = client.on_server_first(message);
    ASSERT_FALSE(result.has_value()) << message;
    EXPECT_EQ(result.error(), errc::scram_invalid_message) << message;
  }
  ScramClient mandatory("pencil", std::string(kRfcClientNonce));
  mandatory.client_first();
  EXPECT_EQ(mandatory.on_server_first("m=must," + std::string(kRfcServerFirst)).error(), errc::auth_unsupported);
}

TEST(ScramExchange, ClientRoleAcceptsServerFirstExtensions) {
  ScramClient client("pencil", std::string(kRfcClientNonce));
  client.client_first();
  EXPECT_TRUE(client.on_server_first(std::string(kRfcServerFirst) + ",x=future").has_value());
}

TEST(ScramExchange, ClientRoleChecksServerFinal) {
  const auto ready_client = [] {
    ScramClient client("pencil", std::string(kRfcClientNonce));
    client.client_first();
    EXPECT_TRUE(client.on_server_first(kRfcServerFirst).has_value());
    return client;
  };
  {
    auto client = ready_client();
    EXPECT_EQ(client.on_server_final("e=invalid-proof").error(), errc::auth_failed);
  }
  {
    auto client = ready_client();
    EXPECT_EQ(client.on_server_final("e=other-error,x=ext").error(), errc::auth_failed);
  }
  {
    // The RFC's verifier belongs to the "n=user" exchange, not ours.
    auto client = ready_client();
    EXPECT_EQ(client.on_server_final(kRfcServerFinal).error(), errc::scram_server_signature);
  }
  {
    auto client = ready_client();
    EXPECT_TRUE(client.on_server_final(std::string(kEmptyUserServerFinal) + ",x=ext").has_value());
  }
  for (std::string_view bad : {"", "v=", "x=1", "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg",
                               "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=,",
                               "V=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=",
                               "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=AAAA"}) {
    auto client = ready_client();
    EXPECT_EQ(client.on_server_final(bad).error(), errc::scram_invalid_message) << bad;
  }
}

TEST(ScramExchange, ClientRoleEnforcesOrder) {
  ScramClient early("pencil", std::string(kRfcClientNonce));
  EXPECT_EQ(early.on_server_first(kRfcServerFirst).error(), errc::unexpected_message);
  ScramClient no_first("pencil", std::string(kRfcClientNonce));
  EXPECT_EQ(no_first.on_server_final(kEmptyUserServerFinal).error(), errc::unexpected_message);

  ScramClient client("pencil", std::string(kRfcClientNonce));
  client.client_first();
  ASSERT_TRUE(client.on_server_first(kRfcServerFirst));
  EXPECT_EQ(client.on_server_first(kRfcServerFirst).error(), errc::unexpected_message);
  ASSERT_TRUE(client.on_server_final(kEmptyUserServerFinal));
  EXPECT_EQ(client.on_server_final(kEmptyUserServerFinal).error(), errc::unexpected_message);
}

// ---- A real PostgreSQL secret --------------------------------------------------------------

TEST(ScramPostgres, SecretVerifiesScramClientProof) {
  const auto secret = parse_scram_secret(kPgScramSecret);
  ASSERT_TRUE(secret.has_value());
  const Outcome right = exchange(*secret, "builder");
  EXPECT_FALSE(right.server_first);
  EXPECT_FALSE(right.client_final);
  EXPECT_FALSE(right.server_final);
  EXPECT_FALSE(right.client_done);  // our client also accepts the server signature made from ServerKey
  EXPECT_EQ(exchange(*secret, "Builder").server_final, errc::auth_failed);
}

// ---- Truncation: every prefix of a valid message -----------------------------------------

TEST(ScramTruncation, ClientFirstPrefixes) {
  const std::string message = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
  const std::size_t nonce_start = message.find("r=") + 2;
  for (std::size_t n = 0; n <= message.size(); ++n) {
    ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
    const auto r = server.on_client_first(std::string_view(message).substr(0, n));
    // A prefix that ends inside the nonce (at least one character of it) is itself a complete,
    // valid client-first-message with a shorter nonce; every other prefix must be an error.
    if (n > nonce_start) {
      EXPECT_TRUE(r.has_value()) << n;
    } else {
      EXPECT_EQ(r.error(), errc::scram_invalid_message) << n;
    }
  }
}

TEST(ScramTruncation, ClientFinalPrefixes) {
  for (std::size_t n = 0; n < kRfcClientFinal.size(); ++n) {
    ScramServer server(pencil_secret(), std::string(kRfcServerNonce));
    ASSERT_TRUE(server.on_client_first(kRfcClientFirst));
    const auto r = server.on_client_final(kRfcClientFinal.substr(0, n));
    EXPECT_TRUE(r.has_error()) << n;
  }
}

TEST(ScramTruncation, ServerFirstPrefixes) {
  const std::size_t iterations_start = kRfcServerFirst.find(",i=") + 3;
  for (std::size_t n = 0; n < kRfcServerFirst.size(); ++n) {
    ScramClient client("pencil", std::string(kRfcClientNonce));
    client.client_first();
    const auto r = client.on_server_first(kRfcServerFirst.substr(0, n));
    // "i=4", "i=40", "i=409" are complete messages with fewer iterations; every other prefix is an error.
    if (n > iterations_start) {
      EXPECT_TRUE(r.has_value()) << n;
    } else {
      EXPECT_TRUE(r.has_error()) << n;
    }
  }
}

TEST(ScramTruncation, ServerFinalPrefixes) {
  for (std::size_t n = 0; n < kEmptyUserServerFinal.size(); ++n) {
    ScramClient client("pencil", std::string(kRfcClientNonce));
    client.client_first();
    ASSERT_TRUE(client.on_server_first(kRfcServerFirst));
    const auto r = client.on_server_final(kEmptyUserServerFinal.substr(0, n));
    EXPECT_TRUE(r.has_error()) << n;
  }
}

}  // namespace
}  // namespace sluice::protocol::auth
