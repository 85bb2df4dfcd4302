// Tests for SCRAM-SHA-256-PLUS in the server role (ScramServer::offer_channel_binding
// and on_client_first(message, plus)). The client side is built here by hand, with
// OpenSSL's PBKDF2/HMAC/SHA-256, independently of auth.cpp's own client.
#include "protocol/auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <array>
#include <string>
#include <string_view>

#include "tests/protocol/test_messages.h"

namespace sluice::protocol::auth {
namespace {

using test::status;

constexpr std::string_view kPassword = "pencil";
constexpr std::string_view kClientNonce = "fyko+d2lbbFgONRv9qkxdawL";
constexpr std::string_view kServerNonce = "3rfcNHYJY1ZVvWVs7j";
constexpr int kIterations = 4096;
constexpr std::string_view kPlusHeader = "p=tls-server-end-point,,";

// tls-server-end-point data as a server would have it: 32 bytes (a SHA-256), some of
// them zero and some above 0x7f, so that nothing treats it as text.
std::string binding_data() {
  std::string data(32, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 37 + (i % 3 == 0 ? 0 : 0x80));
  return data;
}

std::string salt() { return std::string("\x41\x25\xc2\x47\xe4\x3a\xb1\xe9\x3c\x6d\xff\x76", 12); }

ScramSecret secret() { return make_scram_secret(kPassword, salt(), kIterations); }

using Key = std::array<unsigned char, 32>;

Key salted_password(std::string_view password) {
  Key salted{};
  const std::string s = salt();
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), reinterpret_cast<const unsigned char*>(s.data()),
                    static_cast<int>(s.size()), kIterations, EVP_sha256(), 32, salted.data());
  return salted;
}

Key hmac(const Key& key, std::string_view data) {
  Key out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out.data(), &len);
  return out;
}

std::string b64(const Key& key) { return base64_encode({reinterpret_cast<const char*>(key.data()), key.size()}); }

// A SCRAM client written out step by step (RFC 5802 section 3).
struct HandClient {
  std::string gs2_header;   // "p=tls-server-end-point,," / "n,," / "y,,"
  std::string cbind_data;   // appended to the gs2 header in client-final's c=
  std::string password = std::string(kPassword);

  std::string bare() const { return "n=,r=" + std::string(kClientNonce); }
  std::string first() const { return gs2_header + bare(); }

  // client-final for `server_first`; `auth_message` is set for checking the server's answer.
  std::string final_message(std::string_view server_first, std::string* auth_message = nullptr) const {
    const auto r = server_first.substr(2, server_first.find(',') - 2);
    const std::string without_proof = "c=" + base64_encode(gs2_header + cbind_data) + ",r=" + std::string(r);
    const std::string message = bare() + "," + std::string(server_first) + "," + without_proof;
    if (auth_message != nullptr) *auth_message = message;
    const Key salted = salted_password(password);
    const Key client_key = hmac(salted, "Client Key");
    Key stored_key{};
    SHA256(client_key.data(), client_key.size(), stored_key.data());
    const Key signature = hmac(stored_key, message);
    Key proof{};
    for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = client_key[i] ^ signature[i];
    return without_proof + ",p=" + b64(proof);
  }
  // What server-final must be: "v=" + base64(HMAC(ServerKey, AuthMessage)).
  std::string expected_server_final(std::string_view auth_message) const {
    return "v=" + b64(hmac(hmac(salted_password(password), "Server Key"), auth_message));
  }
};

HandClient plus_client() { return HandClient{std::string(kPlusHeader), binding_data()}; }

ScramServer offering_server() {
  ScramServer server(secret(), std::string(kServerNonce));
  server.offer_channel_binding(binding_data());
  return server;
}

const std::string kServerFirst =
    "r=" + std::string(kClientNonce) + std::string(kServerNonce) + ",s=" + base64_encode(salt()) + ",i=4096";

// ---- successful exchanges ------------------------------------------------------------

TEST(ScramPlusTest, BoundExchangeSucceeds) {
  ScramServer server = offering_server();
  const HandClient client = plus_client();
  const auto server_first = server.on_client_first(client.first(), true);
  ASSERT_EQ(status(server_first), "ok");
  EXPECT_EQ(*server_first, kServerFirst);
  std::string auth_message;
  const std::string final_message = client.final_message(*server_first, &auth_message);
  // c= carries the gs2 header and then the binding data.
  EXPECT_EQ(final_message.substr(0, final_message.find(',')), "c=" + base64_encode(std::string(kPlusHeader) + binding_data()));
  const auto server_final = server.on_client_final(final_message);
  ASSERT_EQ(status(server_final), "ok");
  EXPECT_EQ(*server_final, client.expected_server_final(auth_message));
}

TEST(ScramPlusTest, PlainExchangeStillWorksWhenBindingIsOffered) {
  // A client over TLS that cannot bind (libpq before 14, JDBC) picks SCRAM-SHA-256 with 'n'.
  ScramServer server = offering_server();
  const HandClient client{"n,,", ""};
  const auto server_first = server.on_client_first(client.first(), false);
  ASSERT_EQ(status(server_first), "ok");
  std::string auth_message;
  const std::string final_message = client.final_message(*server_first, &auth_message);
  EXPECT_TRUE(final_message.starts_with("c=biws,"));
  const auto server_final = server.on_client_final(final_message);
  ASSERT_EQ(status(server_final), "ok");
  EXPECT_EQ(*server_final, client.expected_server_final(auth_message));
}

TEST(ScramPlusTest, FlagYWithoutOfferIsAccepted) {
  // 'y' = "I can bind, but I think you cannot": true without TLS.
  ScramServer server(secret(), std::string(kServerNonce));
  const HandClient client{"y,,", ""};
  const auto server_first = server.on_client_first(client.first(), false);
  ASSERT_EQ(status(server_first), "ok");
  std::string auth_message;
  const std::string final_message = client.final_message(*server_first, &auth_message);
  EXPECT_TRUE(final_message.starts_with("c=eSws,"));
  const auto server_final = server.on_client_final(final_message);
  ASSERT_EQ(status(server_final), "ok");
  EXPECT_EQ(*server_final, client.expected_server_final(auth_message));
}

TEST(ScramPlusTest, WrongPasswordWithBindingIsAuthFailed) {
  ScramServer server = offering_server();
  HandClient client = plus_client();
  client.password = "pencil2";
  const auto server_first = server.on_client_first(client.first(), true);
  ASSERT_EQ(status(server_first), "ok");
  EXPECT_EQ(status(server.on_client_final(client.final_message(*server_first))), "auth_failed");
}

// ---- channel binding data ------------------------------------------------------------

TEST(ScramPlusTest, WrongBindingDataIsRefused) {
  std::string last_byte = binding_data();
  last_byte.back() = static_cast<char>(last_byte.back() ^ 1);
  std::string other(32, 'x');
  const std::string cases[] = {
      last_byte,                          // another certificate's hash, one bit off
      other,                              // another certificate's hash
      binding_data().substr(0, 31),       // truncated
      binding_data() + '\0',              // extended
      "",                                 // the header alone, as if not bound
  };
  for (const std::string& data : cases) {
    ScramServer server = offering_server();
    HandClient client = plus_client();
    const auto server_first = server.on_client_first(client.first(), true);
    ASSERT_EQ(status(server_first), "ok");
    client.cbind_data = data;  // the proof is right for what the client sends
    EXPECT_EQ(status(server.on_client_final(client.final_message(*server_first))), "scram_channel_binding")
        << data.size();
  }
}

TEST(ScramPlusTest, BindingDataWithAnotherHeaderIsRefused) {
  // c= must repeat client-first's gs2 header: here the data with "n,," in front.
  ScramServer server = offering_server();
  HandClient client = plus_client();
  const auto server_first = server.on_client_first(client.first(), true);
  ASSERT_EQ(status(server_first), "ok");
  client.gs2_header = "n,,";
  EXPECT_EQ(status(server.on_client_final(client.final_message(*server_first))), "scram_channel_binding");
}

TEST(ScramPlusTest, PlainClientSendingBindingDataIsRefused) {
  // 'n' in client-first, but c= with binding data: a mismatch with the header it sent.
  ScramServer server = offering_server();
  HandClient client{"n,,", ""};
  const auto server_first = server.on_client_first(client.first(), false);
  ASSERT_EQ(status(server_first), "ok");
  client.cbind_data = binding_data();
  EXPECT_EQ(status(server.on_client_final(client.final_message(*server_first))), "scram_channel_binding");
}

TEST(ScramPlusTest, AFailureEndsTheExchange) {
  ScramServer server = offering_server();
  HandClient client = plus_client();
  const auto server_first = server.on_client_first(client.first(), true);
  ASSERT_EQ(status(server_first), "ok");
  client.cbind_data = std::string(32, 'x');
  const std::string bad = client.final_message(*server_first);
  EXPECT_EQ(status(server.on_client_final(bad)), "scram_channel_binding");
  // No second try on the same exchange, even with the right data.
  EXPECT_EQ(status(server.on_client_final(plus_client().final_message(*server_first))), "unexpected_message");
}

// ---- gs2 flags against what was offered and selected ---------------------------------

TEST(ScramPlusTest, FlagYWhileBindingIsOfferedIsADowngrade) {
  ScramServer server = offering_server();
  EXPECT_EQ(status(server.on_client_first(HandClient{"y,,", ""}.first(), false)), "scram_channel_binding");
  // And the exchange is over.
  EXPECT_EQ(status(server.on_client_first(HandClient{"n,,", ""}.first(), false)), "unexpected_message");
}

TEST(ScramPlusTest, BindingWithoutSelectingPlusIsRefused) {
  // 'p=' with SCRAM-SHA-256 (not -PLUS) selected, whether binding was offered or not.
  ScramServer offered = offering_server();
  EXPECT_EQ(status(offered.on_client_first(plus_client().first(), false)), "scram_channel_binding");
  ScramServer not_offered(secret(), std::string(kServerNonce));
  EXPECT_EQ(status(not_offered.on_client_first(plus_client().first(), false)), "scram_channel_binding");
}

TEST(ScramPlusTest, PlusSelectedWithoutBindingFlagIsRefused) {
  for (const char* header : {"n,,", "y,,"}) {
    ScramServer offered = offering_server();
    EXPECT_EQ(status(offered.on_client_first(HandClient{header, ""}.first(), true)), "scram_channel_binding")
        << header;
  }
}

TEST(ScramPlusTest, PlusSelectedButNotOfferedIsRefused) {
  // Without TLS there is nothing to bind to, even if the client claims to have selected PLUS.
  ScramServer server(secret(), std::string(kServerNonce));
  EXPECT_EQ(status(server.on_client_first(plus_client().first(), true)), "scram_channel_binding");
}

TEST(ScramPlusTest, OtherBindingTypesAreUnsupported) {
  for (const char* header : {"p=tls-unique,,", "p=tls-exporter,,", "p=,,", "p=tls-server-end-point2,,"}) {
    ScramServer server = offering_server();
    EXPECT_EQ(status(server.on_client_first(header + HandClient{}.bare(), true)), "auth_unsupported") << header;
  }
}

TEST(ScramPlusTest, BoundClientFirstStillFollowsTheGrammar) {
  // An authorization identity is refused as without binding; a bad bare message is malformed.
  ScramServer authzid = offering_server();
  EXPECT_EQ(status(authzid.on_client_first("p=tls-server-end-point,a=admin,n=,r=abc", true)), "auth_unsupported");
  ScramServer no_nonce = offering_server();
  EXPECT_EQ(status(no_nonce.on_client_first("p=tls-server-end-point,,n=", true)), "scram_invalid_message");
  ScramServer truncated = offering_server();
  EXPECT_EQ(status(truncated.on_client_first("p=tls-server-end-point", true)), "scram_invalid_message");
  ScramServer flag = offering_server();
  EXPECT_EQ(status(flag.on_client_first("P=tls-server-end-point,,n=,r=abc", true)), "scram_invalid_message");
}

}  // namespace
}  // namespace sluice::protocol::auth
