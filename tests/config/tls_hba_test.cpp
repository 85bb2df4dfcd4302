// Tests for [tls.client], [tls.server], databases.X.tls (with the OpenSSL contexts
// built at load time) and for [[hba]] rules and config::match_hba. The certificates
// are made here with OpenSSL's C API: an EC P-256 CA and leaves it signs, as PEM
// files in a temporary directory.
#include "config/config.h"
#include "tests/config/loading.h"
#include "config/tls.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::config {
namespace {

// ---- certificates --------------------------------------------------------------------

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

KeyPtr ec_key() { return KeyPtr(EVP_EC_gen("P-256"), EVP_PKEY_free); }

bool add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key` named `common_name`, signed by `issuer` (self-signed when null).
CertPtr make_cert(EVP_PKEY* key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key, bool ca,
                  const EVP_MD* digest, long serial) {
  CertPtr cert(X509_new(), X509_free);
  if (!cert) return cert;
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 7 * 24 * 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name), -1, -1,
                             0);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : x;
  const bool extensions =
      ca ? add_extension(x, signer, NID_basic_constraints, "critical,CA:TRUE") &&
               add_extension(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign")
         : add_extension(x, signer, NID_basic_constraints, "CA:FALSE") &&
               add_extension(x, signer, NID_subject_alt_name, "DNS:localhost");
  if (!extensions || X509_sign(x, issuer_key != nullptr ? issuer_key : key, digest) == 0) cert.reset();
  return cert;
}

bool write_cert(const std::string& path, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  const bool ok = PEM_write_X509(f, cert) == 1;
  return std::fclose(f) == 0 && ok;
}

bool write_key(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  const bool ok = PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  return std::fclose(f) == 0 && ok;
}

std::string digest_of(X509* cert, const EVP_MD* digest) {
  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_digest(cert, digest, hash, &length) != 1) return {};
  return std::string(reinterpret_cast<const char*>(hash), length);
}

// One CA and its leaves, written once for all tests in a fresh directory:
//   ca.crt            self-signed CA (SHA-256)
//   server.crt/.key   leaf signed by the CA with SHA-256
//   sha384.crt        the same key, signed with SHA-384
//   other.key         a key that matches no certificate
//   garbage.crt       not PEM at all
struct Pki {
  std::string dir;
  std::string ca, cert, key, cert384, other_key, garbage;
  std::string cert_sha256;    // SHA-256 of server.crt (DER), what tls-server-end-point must be
  std::string cert384_sha384; // SHA-384 of sha384.crt
  std::string error;          // set when making them failed
};

Pki make_pki() {
  Pki pki;
  std::string pattern = ::testing::TempDir() + "sluice_tls_test_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    pki.error = "mkdtemp failed";
    return pki;
  }
  pki.dir = pattern;
  pki.ca = pki.dir + "/ca.crt";
  pki.cert = pki.dir + "/server.crt";
  pki.key = pki.dir + "/server.key";
  pki.cert384 = pki.dir + "/sha384.crt";
  pki.other_key = pki.dir + "/other.key";
  pki.garbage = pki.dir + "/garbage.crt";

  KeyPtr ca_key = ec_key(), leaf_key = ec_key(), other_key = ec_key();
  if (!ca_key || !leaf_key || !other_key) {
    pki.error = "EVP_EC_gen failed";
    return pki;
  }
  CertPtr ca = make_cert(ca_key.get(), "Sluice Test CA", nullptr, nullptr, true, EVP_sha256(), 1);
  if (!ca) {
    pki.error = "cannot make the CA certificate";
    return pki;
  }
  CertPtr leaf = make_cert(leaf_key.get(), "localhost", ca.get(), ca_key.get(), false, EVP_sha256(), 2);
  CertPtr leaf384 = make_cert(leaf_key.get(), "localhost", ca.get(), ca_key.get(), false, EVP_sha384(), 3);
  if (!leaf || !leaf384) {
    pki.error = "cannot make the leaf certificates";
    return pki;
  }
  if (!write_cert(pki.ca, ca.get()) || !write_cert(pki.cert, leaf.get()) || !write_cert(pki.cert384, leaf384.get()) ||
      !write_key(pki.key, leaf_key.get()) || !write_key(pki.other_key, other_key.get())) {
    pki.error = "cannot write PEM files to " + pki.dir;
    return pki;
  }
  std::ofstream(pki.garbage) << "this is not a certificate\n";
  pki.cert_sha256 = digest_of(leaf.get(), EVP_sha256());
  pki.cert384_sha384 = digest_of(leaf384.get(), EVP_sha384());
  return pki;
}

// ---- loading -------------------------------------------------------------------------

using namespace sluice::config::test_support;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

constexpr std::string_view kDatabase = "[databases.app]\nhost = \"h\"\n";

class TlsConfigTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(make_pki()); }
  static void TearDownTestSuite() {
    if (!pki_->dir.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(pki_->dir, ignored);
    }
    delete pki_;
    pki_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(pki_->error.empty()) << pki_->error; }

  static const Pki& pki() { return *pki_; }
  // `"path"` as a TOML string.
  static std::string q(const std::string& path) { return "\"" + path + "\""; }
  // A [tls.client] table with our certificate and key, then `extra` lines.
  static std::string client_table(std::string_view extra = "") {
    return "[tls.client]\ncert = " + q(pki().cert) + "\nkey = " + q(pki().key) + "\n" + std::string(extra);
  }

 private:
  static Pki* pki_;
};
Pki* TlsConfigTest::pki_ = nullptr;

// ---- defaults ------------------------------------------------------------------------

TEST_F(TlsConfigTest, DefaultsWithoutATlsTable) {
  const LoadResult result = load(kDatabase);
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  // To PostgreSQL: prefer TLS without verifying, with a context built at load time.
  EXPECT_EQ(cfg.tls_server.mode, TlsMode::prefer);
  ASSERT_NE(cfg.tls_server.context, nullptr);
  EXPECT_TRUE(cfg.tls_server.enabled());
  EXPECT_EQ(SSL_CTX_get_verify_mode(cfg.tls_server.context.get()), SSL_VERIFY_NONE);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(cfg.tls_server.context.get()), TLS1_2_VERSION);
  // From clients: off unless [tls.client] exists.
  EXPECT_EQ(cfg.tls_client.mode, TlsMode::disable);
  EXPECT_EQ(cfg.tls_client.context, nullptr);
  EXPECT_FALSE(cfg.tls_client.enabled());
  EXPECT_TRUE(cfg.tls_client.end_point_hash.empty());
  // A database without its own tls table uses [tls.server] itself.
  const Database& db = cfg.databases.at("app");
  EXPECT_FALSE(db.tls.has_value());
  EXPECT_EQ(&cfg.server_tls_for(db), &cfg.tls_server);
  EXPECT_TRUE(cfg.hba.empty());
}

TEST_F(TlsConfigTest, TlsTableWithOnlyClientKeepsTheServerDefault) {
  const LoadResult result = load(client_table() + std::string(kDatabase));
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->tls_server.mode, TlsMode::prefer);
  EXPECT_NE(result.config->tls_server.context, nullptr);
}

TEST_F(TlsConfigTest, ClientTableWithoutModeIsPrefer) {
  const LoadResult result = load(client_table() + std::string(kDatabase));
  ASSERT_TRUE(result.config) << describe(result);
  const TlsSettings& tls = result.config->tls_client;
  EXPECT_EQ(tls.mode, TlsMode::prefer);
  EXPECT_EQ(tls.cert, pki().cert);
  EXPECT_EQ(tls.key, pki().key);
  ASSERT_NE(tls.context, nullptr);
  EXPECT_TRUE(tls.enabled());
  // Without a CA no client certificate is asked for.
  EXPECT_EQ(SSL_CTX_get_verify_mode(tls.context.get()), SSL_VERIFY_NONE);
  // The context carries our certificate.
  X509* loaded = SSL_CTX_get0_certificate(tls.context.get());
  ASSERT_NE(loaded, nullptr);
  EXPECT_EQ(digest_of(loaded, EVP_sha256()), pki().cert_sha256);
}

TEST_F(TlsConfigTest, EndPointHashIsTheSha256OfOurCertificate) {
  const LoadResult result = load(client_table() + std::string(kDatabase));
  ASSERT_TRUE(result.config) << describe(result);
  const std::string& hash = result.config->tls_client.end_point_hash;
  ASSERT_EQ(hash.size(), 32u);
  EXPECT_EQ(hash, pki().cert_sha256);
}

TEST_F(TlsConfigTest, EndPointHashFollowsTheSignatureDigest) {
  // RFC 5929: a certificate signed with SHA-384 is hashed with SHA-384.
  const LoadResult result =
      load("[tls.client]\ncert = " + q(pki().cert384) + "\nkey = " + q(pki().key) + "\n" + std::string(kDatabase));
  ASSERT_TRUE(result.config) << describe(result);
  const std::string& hash = result.config->tls_client.end_point_hash;
  ASSERT_EQ(hash.size(), 48u);
  EXPECT_EQ(hash, pki().cert384_sha384);
}

// ---- modes ---------------------------------------------------------------------------

TEST_F(TlsConfigTest, ClientModes) {
  struct Case {
    const char* text;
    TlsMode mode;
    bool with_ca;
    int verify;  // the context's verify mode
  };
  const Case cases[] = {
      {"allow", TlsMode::allow, false, SSL_VERIFY_NONE},
      {"prefer", TlsMode::prefer, false, SSL_VERIFY_NONE},
      {"require", TlsMode::require, false, SSL_VERIFY_NONE},
      // With a CA a certificate is asked for (for `cert` rules) but not required.
      {"require", TlsMode::require, true, SSL_VERIFY_PEER},
      {"verify-ca", TlsMode::verify_ca, true, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT},
      {"verify-full", TlsMode::verify_full, true, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.text) + (c.with_ca ? " with ca" : ""));
    const std::string extra =
        "mode = \"" + std::string(c.text) + "\"\n" + (c.with_ca ? "ca = " + q(pki().ca) + "\n" : std::string());
    const LoadResult result = load(client_table(extra) + std::string(kDatabase));
    ASSERT_TRUE(result.config) << describe(result);
    const TlsSettings& tls = result.config->tls_client;
    EXPECT_EQ(tls.mode, c.mode);
    EXPECT_STREQ(to_string(tls.mode), c.text);
    ASSERT_NE(tls.context, nullptr);
    EXPECT_TRUE(tls.enabled());
    EXPECT_EQ(SSL_CTX_get_verify_mode(tls.context.get()), c.verify);
    EXPECT_EQ(tls.end_point_hash, pki().cert_sha256);
  }
}

TEST_F(TlsConfigTest, ClientDisableBuildsNoContext) {
  const LoadResult result = load(client_table("mode = \"disable\"\n") + std::string(kDatabase));
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->tls_client.mode, TlsMode::disable);
  EXPECT_EQ(result.config->tls_client.context, nullptr);
  EXPECT_FALSE(result.config->tls_client.enabled());
  // Without a certificate either: disable needs none.
  const LoadResult bare = load("[tls.client]\nmode = \"disable\"\n" + std::string(kDatabase));
  ASSERT_TRUE(bare.config) << describe(bare);
  EXPECT_FALSE(bare.config->tls_client.enabled());
}

TEST_F(TlsConfigTest, ServerModes) {
  struct Case {
    const char* text;
    TlsMode mode;
    std::string ca;
    int verify;
  };
  const Case cases[] = {
      {"prefer", TlsMode::prefer, "", SSL_VERIFY_NONE},
      {"require", TlsMode::require, "", SSL_VERIFY_NONE},
      {"verify-ca", TlsMode::verify_ca, pki().ca, SSL_VERIFY_PEER},
      {"verify-full", TlsMode::verify_full, pki().ca, SSL_VERIFY_PEER},
      {"verify-full", TlsMode::verify_full, "system", SSL_VERIFY_PEER},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.text) + " ca=" + c.ca);
    std::string text = "[tls.server]\nmode = \"" + std::string(c.text) + "\"\n";
    if (!c.ca.empty()) text += "ca = " + q(c.ca) + "\n";
    const LoadResult result = load(text + std::string(kDatabase));
    ASSERT_TRUE(result.config) << describe(result);
    const TlsSettings& tls = result.config->tls_server;
    EXPECT_EQ(tls.mode, c.mode);
    EXPECT_EQ(tls.ca, c.ca);  // "system" stays as it is, not a path
    ASSERT_NE(tls.context, nullptr);
    EXPECT_EQ(SSL_CTX_get_verify_mode(tls.context.get()), c.verify);
  }
  const LoadResult off = load("[tls.server]\nmode = \"disable\"\n" + std::string(kDatabase));
  ASSERT_TRUE(off.config) << describe(off);
  EXPECT_EQ(off.config->tls_server.mode, TlsMode::disable);
  EXPECT_EQ(off.config->tls_server.context, nullptr);
  EXPECT_FALSE(off.config->tls_server.enabled());
}

TEST_F(TlsConfigTest, ServerSideRefusesAllow) {
  EXPECT_TRUE(OnlyError(load("[tls.server]\nmode = \"allow\"\n" + std::string(kDatabase)), 2, 8, "tls.server.mode",
                        {"invalid TLS mode \"allow\"", "expected disable, prefer, require, verify-ca or verify-full"}));
}

TEST_F(TlsConfigTest, UnknownModes) {
  EXPECT_TRUE(OnlyError(load(client_table("mode = \"on\"\n") + std::string(kDatabase)), 4, 8, "tls.client.mode",
                        {"invalid TLS mode \"on\"", "disable, allow, prefer, require, verify-ca or verify-full"}));
  EXPECT_TRUE(OnlyError(load("[tls.server]\nmode = \"verify_full\"\n" + std::string(kDatabase)), 2, 8,
                        "tls.server.mode", {"invalid TLS mode \"verify_full\""}));
  EXPECT_TRUE(OnlyError(load("[tls.server]\nmode = true\n" + std::string(kDatabase)), 2, 8, "tls.server.mode",
                        {"expected a string"}));
}

// ---- errors --------------------------------------------------------------------------

TEST_F(TlsConfigTest, ClientSideNeedsCertAndKey) {
  EXPECT_TRUE(OnlyError(load("[tls.client]\nmode = \"require\"\ncert = " + q(pki().cert) + "\n" +
                             std::string(kDatabase)),
                        1, 1, "tls.client", {"cert and key are required with mode = \"require\""}));
  EXPECT_TRUE(OnlyError(load("[tls.client]\nkey = " + q(pki().key) + "\n" + std::string(kDatabase)), 1, 1,
                        "tls.client", {"cert and key are required with mode = \"prefer\""}));
  EXPECT_TRUE(OnlyError(load("[tls.client]\n" + std::string(kDatabase)), 1, 1, "tls.client",
                        {"cert and key are required with mode = \"prefer\""}));
}

TEST_F(TlsConfigTest, VerifyModesNeedACa) {
  EXPECT_TRUE(OnlyError(load(client_table("mode = \"verify-ca\"\n") + std::string(kDatabase)), 1, 1, "tls.client.ca",
                        {"required with mode = \"verify-ca\"", "client certificates"}));
  EXPECT_TRUE(OnlyError(load(client_table("mode = \"verify-full\"\n") + std::string(kDatabase)), 1, 1,
                        "tls.client.ca", {"required with mode = \"verify-full\""}));
  EXPECT_TRUE(OnlyError(load("[tls.server]\nmode = \"verify-full\"\n" + std::string(kDatabase)), 1, 1,
                        "tls.server.ca", {"required with mode = \"verify-full\"", "or \"system\""}));
  EXPECT_TRUE(OnlyError(load("[tls.server]\nmode = \"verify-ca\"\n" + std::string(kDatabase)), 1, 1,
                        "tls.server.ca", {"required with mode = \"verify-ca\""}));
}

TEST_F(TlsConfigTest, UnknownKeys) {
  EXPECT_TRUE(OnlyError(load(client_table("certificate = \"x\"\n") + std::string(kDatabase)), 4, 1,
                        "tls.client.certificate", {"unknown key"}));
  EXPECT_TRUE(OnlyError(load("[tls.server]\nmode = \"prefer\"\nsni = true\n" + std::string(kDatabase)), 3, 1,
                        "tls.server.sni", {"unknown key"}));
  EXPECT_TRUE(OnlyError(load("[tls]\nclients = {}\n" + std::string(kDatabase)), 2, 1, "tls.clients",
                        {"unknown key", "did you mean \"client\"?"}));
  EXPECT_TRUE(OnlyError(load(std::string(kDatabase) + "tls = { mode = \"require\", verify = true }\n"), 3, 27,
                        "databases.app.tls.verify", {"unknown key"}));
}

TEST_F(TlsConfigTest, BadProtocolVersions) {
  // Refused, and named by its full key at the value, as every other bad value is.
  const LoadResult result =
      load("[tls.server]\nmode = \"require\"\nmin_protocol = \"TLSv1.1\"\n" + std::string(kDatabase));
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_FALSE(result.config);
  const ConfigError& e = result.errors.front();
  EXPECT_NE(e.message.find("must be \"TLSv1.2\" or \"TLSv1.3\""), std::string::npos) << e.to_string();
  EXPECT_EQ(e.key, "tls.server.min_protocol") << e.to_string();
  EXPECT_EQ(e.line, 3) << e.to_string();
  EXPECT_EQ(e.column, 16) << e.to_string();
}

TEST_F(TlsConfigTest, ProtocolRangeIsAppliedAndChecked) {
  const LoadResult result = load(client_table("min_protocol = \"TLSv1.3\"\n") + std::string(kDatabase));
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(result.config->tls_client.context.get()), TLS1_3_VERSION);

  const LoadResult both =
      load("[tls.server]\nmin_protocol = \"TLSv1.2\"\nmax_protocol = \"TLSv1.2\"\n" + std::string(kDatabase));
  ASSERT_TRUE(both.config) << describe(both);
  EXPECT_EQ(SSL_CTX_get_max_proto_version(both.config->tls_server.context.get()), TLS1_2_VERSION);

  const LoadResult inverted =
      load("[tls.server]\nmin_protocol = \"TLSv1.3\"\nmax_protocol = \"TLSv1.2\"\n" + std::string(kDatabase));
  ASSERT_EQ(inverted.errors.size(), 1u) << describe(inverted);
  EXPECT_EQ(inverted.errors.front().key, "tls.server.max_protocol") << describe(inverted);
  EXPECT_EQ(inverted.errors.front().line, 3) << describe(inverted);
  EXPECT_NE(inverted.errors.front().message.find("is older than min_protocol"), std::string::npos)
      << describe(inverted);
  const LoadResult bad_max = load("[tls.server]\nmax_protocol = \"SSLv3\"\n" + std::string(kDatabase));
  ASSERT_EQ(bad_max.errors.size(), 1u) << describe(bad_max);
  EXPECT_EQ(bad_max.errors.front().key, "tls.server.max_protocol") << describe(bad_max);
  EXPECT_NE(bad_max.errors.front().message.find("must be"), std::string::npos) << describe(bad_max);
}

TEST_F(TlsConfigTest, BadCipherListIsRefusedWithOpenSslsReason) {
  const LoadResult result = load(client_table("ciphers = \"NO-SUCH-CIPHER\"\n") + std::string(kDatabase));
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_EQ(result.errors.front().key, "tls.client.ciphers");
  EXPECT_NE(result.errors.front().message.find("\"NO-SUCH-CIPHER\": "), std::string::npos)
      << describe(result);
  EXPECT_NE(lower(result.errors.front().message).find("no cipher match"), std::string::npos) << describe(result);
}

TEST_F(TlsConfigTest, MissingCertificateFileNamesTheFileAndOpenSslsReason) {
  const std::string missing = pki().dir + "/no-such.crt";
  const LoadResult result =
      load("[tls.client]\ncert = " + q(missing) + "\nkey = " + q(pki().key) + "\n" + std::string(kDatabase));
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_FALSE(result.config);
  const ConfigError& e = result.errors.front();
  EXPECT_EQ(e.file, "test.toml");
  EXPECT_EQ(e.line, 2);
  EXPECT_EQ(e.key, "tls.client.cert");
  EXPECT_NE(e.message.find("cannot load certificate \"" + missing + "\": "), std::string::npos) << e.to_string();
  EXPECT_NE(lower(e.message).find("no such file"), std::string::npos) << e.to_string();
  EXPECT_EQ(e.message.find("unknown OpenSSL error"), std::string::npos) << e.to_string();
}

TEST_F(TlsConfigTest, UnreadableFilesAreRefused) {
  const LoadResult garbage =
      load("[tls.client]\ncert = " + q(pki().garbage) + "\nkey = " + q(pki().key) + "\n" + std::string(kDatabase));
  ASSERT_EQ(garbage.errors.size(), 1u) << describe(garbage);
  EXPECT_NE(garbage.errors.front().message.find("cannot load certificate \"" + pki().garbage + "\": "),
            std::string::npos)
      << describe(garbage);

  const std::string missing_key = pki().dir + "/no-such.key";
  const LoadResult key = load("[tls.client]\ncert = " + q(pki().cert) + "\nkey = " + q(missing_key) + "\n" +
                              std::string(kDatabase));
  ASSERT_EQ(key.errors.size(), 1u) << describe(key);
  EXPECT_NE(key.errors.front().message.find("cannot load private key \"" + missing_key + "\": "), std::string::npos)
      << describe(key);

  const std::string missing_ca = pki().dir + "/no-such-ca.crt";
  const LoadResult ca = load("[tls.server]\nmode = \"verify-ca\"\nca = " + q(missing_ca) + "\n" +
                             std::string(kDatabase));
  ASSERT_EQ(ca.errors.size(), 1u) << describe(ca);
  EXPECT_EQ(ca.errors.front().key, "tls.server.ca");
  EXPECT_EQ(ca.errors.front().line, 3);
  EXPECT_NE(ca.errors.front().message.find("cannot load CA file \"" + missing_ca + "\": "), std::string::npos)
      << describe(ca);
}

TEST_F(TlsConfigTest, KeyThatDoesNotMatchTheCertificate) {
  const LoadResult result = load("[tls.client]\ncert = " + q(pki().cert) + "\nkey = " + q(pki().other_key) + "\n" +
                                 std::string(kDatabase));
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_FALSE(result.config);
  const ConfigError& e = result.errors.front();
  EXPECT_EQ(e.key, "tls.client.key");
  EXPECT_EQ(e.line, 3);
  // Names the key file, and says it does not match (OpenSSL: "key values mismatch").
  EXPECT_NE(e.message.find("\"" + pki().other_key + "\""), std::string::npos) << e.to_string();
  EXPECT_NE(lower(e.message).find("mismatch"), std::string::npos) << e.to_string();

  // The same on the server side, for a client certificate Sluice presents to PostgreSQL.
  const LoadResult server = load("[tls.server]\ncert = " + q(pki().cert) + "\nkey = " + q(pki().other_key) + "\n" +
                                 std::string(kDatabase));
  ASSERT_EQ(server.errors.size(), 1u) << describe(server);
  EXPECT_EQ(server.errors.front().key, "tls.server.key");
  EXPECT_NE(lower(server.errors.front().message).find("mismatch"), std::string::npos) << describe(server);
}

TEST_F(TlsConfigTest, ServerSideCertWithoutKey) {
  // The missing key is reported at the table (there is no key to point at).
  EXPECT_TRUE(OnlyError(load("[tls.server]\ncert = " + q(pki().cert) + "\n" + std::string(kDatabase)), 1, 1,
                        "tls.server.key", {"give both cert and key"}));
}

TEST_F(TlsConfigTest, ErrorsCarryTheFileName) {
  const LoadResult result = load_string("[tls.server]\nmode = \"allow\"\n" + std::string(kDatabase), "/etc/x.toml");
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_EQ(result.errors.front().to_string().rfind("/etc/x.toml:2:8: tls.server.mode: ", 0), 0u)
      << result.errors.front().to_string();
}

// ---- relative paths ------------------------------------------------------------------

TEST_F(TlsConfigTest, RelativePathsAreRelativeToTheConfigFile) {
  const std::string path = pki().dir + "/sluice.toml";
  {
    std::ofstream out(path);
    out << "[tls.client]\nmode = \"verify-ca\"\ncert = \"server.crt\"\nkey = \"./server.key\"\nca = \"ca.crt\"\n"
           "[tls.server]\nmode = \"verify-ca\"\nca = \"ca.crt\"\n"
           "[databases.app]\nhost = \"h\"\ntls = { mode = \"verify-full\", ca = \"system\" }\n";
  }
  // Loaded from elsewhere, so that the files are found only through the config's directory.
  const LoadResult result = load_file(path);
  std::remove(path.c_str());
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.tls_client.cert, pki().dir + "/server.crt");
  EXPECT_EQ(cfg.tls_client.key, pki().dir + "/./server.key");
  EXPECT_EQ(cfg.tls_client.ca, pki().dir + "/ca.crt");
  EXPECT_TRUE(cfg.tls_client.enabled());
  EXPECT_EQ(cfg.tls_client.end_point_hash, pki().cert_sha256);
  EXPECT_EQ(cfg.tls_server.ca, pki().dir + "/ca.crt");
  EXPECT_TRUE(cfg.tls_server.enabled());
  ASSERT_TRUE(cfg.databases.at("app").tls.has_value());
  EXPECT_EQ(cfg.databases.at("app").tls->ca, "system");

  // A relative name that is not there is reported with the resolved path.
  const std::string broken = pki().dir + "/broken.toml";
  { std::ofstream(broken) << "[tls.client]\ncert = \"nope.crt\"\nkey = \"server.key\"\n[databases.app]\nhost = \"h\"\n"; }
  const LoadResult missing = load_file(broken);
  std::remove(broken.c_str());
  ASSERT_EQ(missing.errors.size(), 1u) << describe(missing);
  EXPECT_EQ(missing.errors.front().file, broken);
  EXPECT_NE(missing.errors.front().message.find("\"" + pki().dir + "/nope.crt\""), std::string::npos)
      << describe(missing);
}

// ---- databases.X.tls -----------------------------------------------------------------

TEST_F(TlsConfigTest, DatabaseTlsInheritsTheServerTable) {
  const LoadResult result = load("[tls.server]\nmode = \"verify-ca\"\nca = " + q(pki().ca) +
                                 "\nmin_protocol = \"TLSv1.3\"\nciphersuites = \"TLS_AES_128_GCM_SHA256\"\n"
                                 "[databases.app]\nhost = \"h\"\ntls = { mode = \"verify-full\" }\n"
                                 "[databases.plain]\nhost = \"h\"\n"
                                 "[databases.mtls]\nhost = \"h\"\ntls = { cert = " +
                                 q(pki().cert) + ", key = " + q(pki().key) + " }\n");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;

  const Database& app = cfg.databases.at("app");
  ASSERT_TRUE(app.tls.has_value());
  EXPECT_EQ(app.tls->mode, TlsMode::verify_full);  // its own
  EXPECT_EQ(app.tls->ca, pki().ca);                // inherited
  EXPECT_EQ(app.tls->min_protocol, "TLSv1.3");
  EXPECT_EQ(app.tls->ciphersuites, "TLS_AES_128_GCM_SHA256");
  ASSERT_NE(app.tls->context, nullptr);
  EXPECT_NE(app.tls->context, cfg.tls_server.context);  // built for this database
  EXPECT_EQ(SSL_CTX_get_min_proto_version(app.tls->context.get()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_CTX_get_verify_mode(app.tls->context.get()), SSL_VERIFY_PEER);
  EXPECT_EQ(&cfg.server_tls_for(app), &*app.tls);
  EXPECT_EQ(cfg.tls_server.mode, TlsMode::verify_ca);  // [tls.server] itself unchanged

  const Database& plain = cfg.databases.at("plain");
  EXPECT_FALSE(plain.tls.has_value());
  EXPECT_EQ(&cfg.server_tls_for(plain), &cfg.tls_server);

  const Database& mtls = cfg.databases.at("mtls");
  ASSERT_TRUE(mtls.tls.has_value());
  EXPECT_EQ(mtls.tls->mode, TlsMode::verify_ca);
  EXPECT_EQ(mtls.tls->cert, pki().cert);
  ASSERT_NE(mtls.tls->context, nullptr);
  X509* presented = SSL_CTX_get0_certificate(mtls.tls->context.get());
  ASSERT_NE(presented, nullptr);
  EXPECT_EQ(digest_of(presented, EVP_sha256()), pki().cert_sha256);
  EXPECT_EQ(SSL_CTX_get0_certificate(cfg.tls_server.context.get()), nullptr);  // not given to [tls.server]
}

TEST_F(TlsConfigTest, DatabaseTlsInheritsTheDefaultWithoutServerTable) {
  const LoadResult result = load("[databases.app]\nhost = \"h\"\ntls = { mode = \"require\" }\n");
  ASSERT_TRUE(result.config) << describe(result);
  const TlsSettings& tls = *result.config->databases.at("app").tls;
  EXPECT_EQ(tls.mode, TlsMode::require);
  EXPECT_EQ(tls.min_protocol, "TLSv1.2");
  EXPECT_TRUE(tls.enabled());
}

TEST_F(TlsConfigTest, DatabaseTlsDisable) {
  const LoadResult result = load("[databases.app]\nhost = \"h\"\ntls = { mode = \"disable\" }\n");
  ASSERT_TRUE(result.config) << describe(result);
  const TlsSettings& tls = *result.config->databases.at("app").tls;
  EXPECT_EQ(tls.mode, TlsMode::disable);
  EXPECT_FALSE(tls.enabled());
  EXPECT_TRUE(result.config->tls_server.enabled());
  // tls.h: "Built at load time; null when mode is disable."
  EXPECT_EQ(tls.context, nullptr) << "databases.app.tls keeps [tls.server]'s context";
}

TEST_F(TlsConfigTest, DatabaseTlsErrorsNameTheFullKey) {
  EXPECT_TRUE(OnlyError(load("[databases.app]\nhost = \"h\"\ntls = { mode = \"allow\" }\n"), 3, 16,
                        "databases.app.tls.mode", {"invalid TLS mode \"allow\""}));
  EXPECT_TRUE(OnlyError(load("[databases.app]\nhost = \"h\"\ntls = { mode = \"verify-ca\" }\n"), 3, 7,
                        "databases.app.tls.ca", {"required with mode = \"verify-ca\""}));
  EXPECT_TRUE(OnlyError(load("[databases.app]\nhost = \"h\"\ntls = \"require\"\n"), 3, 7, "databases.app.tls",
                        {"expected a table"}));
  // A [tls.server] ca is inherited, so verify-ca is then complete.
  const LoadResult inherited = load("[tls.server]\nca = " + q(pki().ca) +
                                    "\n[databases.app]\nhost = \"h\"\ntls = { mode = \"verify-ca\" }\n");
  ASSERT_TRUE(inherited.config) << describe(inherited);
  EXPECT_EQ(inherited.config->databases.at("app").tls->ca, pki().ca);
}

// ---- openssl_errors ------------------------------------------------------------------

TEST(TlsOpenSslErrors, FallbackWhenTheQueueIsEmpty) {
  ERR_clear_error();
  EXPECT_EQ(openssl_errors("nothing"), "nothing");
  EXPECT_EQ(openssl_errors(), "unknown OpenSSL error");
}

TEST(TlsOpenSslErrors, ReadsAndClearsTheQueue) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  ASSERT_NE(ctx, nullptr);
  EXPECT_NE(SSL_CTX_set_cipher_list(ctx, "NO-SUCH-CIPHER"), 1);
  SSL_CTX_free(ctx);
  const std::string text = openssl_errors();
  EXPECT_NE(lower(text).find("no cipher match"), std::string::npos) << text;
  EXPECT_EQ(ERR_peek_error(), 0u);
  EXPECT_EQ(openssl_errors("empty"), "empty");
}

// ---- [[hba]] parsing -----------------------------------------------------------------

std::string ip(const HbaRule& rule) {
  char text[64] = {};
  ::inet_ntop(rule.ipv6 ? AF_INET6 : AF_INET, rule.address.data(), text, sizeof text);
  return text;
}

TEST(HbaConfigTest, ParsesEveryForm) {
  const LoadResult result = load(R"(
[databases.app]
host = "h"

[[hba]]
type = "hostssl"
database = "app"
user = ["alice", "bob"]
address = "10.0.0.0/8"
method = "scram-sha-256"

[[hba]]
type = "hostnossl"
database = ["app", "all"]
user = "all"
address = "::1"
method = "password"

[[hba]]
type = "host"
database = "all"
user = "carol"
address = "192.168.1.7"
method = "md5"

[[hba]]
database = "all"
user = "all"
address = "fe80::/10"
method = "trust"

[[hba]]
type = "host"
database = "all"
user = "all"
address = "all"
method = "reject"

[[hba]]
database = "all"
user = "all"
method = "cleartext"
)");
  ASSERT_TRUE(result.config) << describe(result);
  const auto& rules = result.config->hba;
  ASSERT_EQ(rules.size(), 6u);

  EXPECT_EQ(rules[0].line, 4);
  EXPECT_EQ(rules[0].connection, HbaConnection::tls);
  EXPECT_EQ(rules[0].databases, std::vector<std::string>{"app"});
  EXPECT_EQ(rules[0].users, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_FALSE(rules[0].any_address);
  EXPECT_FALSE(rules[0].ipv6);
  EXPECT_EQ(ip(rules[0]), "10.0.0.0");
  EXPECT_EQ(rules[0].prefix, 8);
  EXPECT_EQ(rules[0].method, HbaMethod::scram_sha_256);

  EXPECT_EQ(rules[1].line, 11);
  EXPECT_EQ(rules[1].connection, HbaConnection::plain);
  EXPECT_TRUE(rules[1].databases.empty());  // "all" in a list means all
  EXPECT_TRUE(rules[1].users.empty());
  EXPECT_TRUE(rules[1].ipv6);
  EXPECT_EQ(ip(rules[1]), "::1");
  EXPECT_EQ(rules[1].prefix, 128);  // a single address
  EXPECT_EQ(rules[1].method, HbaMethod::cleartext);  // "password" is an alias

  EXPECT_EQ(rules[2].connection, HbaConnection::any);
  EXPECT_EQ(rules[2].users, std::vector<std::string>{"carol"});
  EXPECT_EQ(ip(rules[2]), "192.168.1.7");
  EXPECT_EQ(rules[2].prefix, 32);
  EXPECT_EQ(rules[2].method, HbaMethod::md5);

  EXPECT_EQ(rules[3].connection, HbaConnection::any);  // type defaults to host
  EXPECT_TRUE(rules[3].ipv6);
  EXPECT_EQ(ip(rules[3]), "fe80::");
  EXPECT_EQ(rules[3].prefix, 10);
  EXPECT_EQ(rules[3].method, HbaMethod::trust);

  EXPECT_TRUE(rules[4].any_address);
  EXPECT_EQ(rules[4].method, HbaMethod::reject);

  EXPECT_TRUE(rules[5].any_address);  // no address = all
  EXPECT_EQ(rules[5].method, HbaMethod::cleartext);
}

TEST(HbaConfigTest, MethodNames) {
  const std::pair<const char*, HbaMethod> methods[] = {
      {"trust", HbaMethod::trust},        {"cleartext", HbaMethod::cleartext},
      {"password", HbaMethod::cleartext}, {"md5", HbaMethod::md5},
      {"scram-sha-256", HbaMethod::scram_sha_256}, {"reject", HbaMethod::reject}};
  for (const auto& [name, method] : methods) {
    const LoadResult result = load(std::string(kDatabase) + "[[hba]]\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"" +
                                   name + "\"\n");
    ASSERT_TRUE(result.config) << name << describe(result);
    ASSERT_EQ(result.config->hba.size(), 1u);
    EXPECT_EQ(result.config->hba[0].method, method) << name;
  }
  EXPECT_STREQ(to_string(HbaMethod::scram_sha_256), "scram-sha-256");
  EXPECT_STREQ(to_string(HbaMethod::cleartext), "cleartext");
  EXPECT_STREQ(to_string(HbaMethod::cert), "cert");
}

// One [[hba]] rule (starting on line 3) with these lines; its errors.
LoadResult hba_rule(std::string_view lines) {
  return load(std::string(kDatabase) + "[[hba]]\n" + std::string(lines));
}

TEST(HbaConfigTest, BadAddresses) {
  struct Case {
    const char* address;
    const char* why;
  };
  const Case cases[] = {
      {"10.0.0.0/33", "the prefix length must be at most 32"},
      {"::/129", "the prefix length must be at most 128"},
      {"10.0.0.0/", "the prefix length after / must be a number"},
      {"10.0.0.0/x", "the prefix length after / must be a number"},
      {"10.0.0.0/-1", "the prefix length after / must be a number"},
      {"10.0.0.0/1000", "the prefix length after / must be a number"},
      {"10.0.0.1/8", "the address has bits set beyond the /8 prefix"},
      {"10.0.0.128/25", ""},  // fine: the boundary itself
      {"10.0.0.64/25", "the address has bits set beyond the /25 prefix"},
      {"2001:db8::1/64", "the address has bits set beyond the /64 prefix"},
      {"fe80::/9", ""},  // fine: fe80 is 1111111010...
      {"fe80::/8", "the address has bits set beyond the /8 prefix"},
      {"localhost", "not an IP address or CIDR range"},
      {"10.0.0", "not an IP address or CIDR range"},
      {"", "not an IP address or CIDR range"},
      {"/8", "not an IP address or CIDR range"},
      {"10.0.0.0/8/8", "the prefix length after / must be a number"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.address);
    const LoadResult result =
        hba_rule("database = \"all\"\nuser = \"all\"\naddress = \"" + std::string(c.address) + "\"\nmethod = \"trust\"\n");
    if (*c.why == '\0') {
      EXPECT_TRUE(result.config) << describe(result);
      continue;
    }
    EXPECT_TRUE(OnlyError(result, 6, 11, "hba[0].address",
                          {"invalid address \"" + std::string(c.address) + "\": " + c.why}));
  }
}

TEST(HbaConfigTest, BadTypesMethodsAndNames) {
  EXPECT_TRUE(OnlyError(hba_rule("type = \"local\"\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"trust\"\n"), 4, 8,
                        "hba[0].type", {"invalid type \"local\"; expected host, hostssl or hostnossl"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nuser = \"all\"\nmethod = \"peer\"\n"), 6, 10, "hba[0].method",
                        {"invalid method \"peer\""}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nuser = \"all\"\nmethod = \"SCRAM-SHA-256\"\n"), 6, 10,
                        "hba[0].method", {"invalid method"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nuser = \"all\"\n"), 3, 1, "hba[0].method", {"missing"}));
  EXPECT_TRUE(OnlyError(hba_rule("user = \"all\"\nmethod = \"trust\"\n"), 3, 1, "hba[0].database",
                        {"missing; use \"all\" for every name"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nmethod = \"trust\"\n"), 3, 1, "hba[0].user", {"missing"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = []\nuser = \"all\"\nmethod = \"trust\"\n"), 4, 12, "hba[0].database",
                        {"must not be empty"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nuser = [\"a\", 7]\nmethod = \"trust\"\n"), 5, 14,
                        "hba[0].user[1]", {"expected a string"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nuser = \"all\"\nmethod = \"trust\"\naddr = \"all\"\n"), 7, 1,
                        "hba[0].addr", {"unknown key"}));
  EXPECT_TRUE(OnlyError(hba_rule("database = \"all\"\nuser = \"all\"\naddress = 10\nmethod = \"trust\"\n"), 6, 11,
                        "hba[0].address", {"expected a string"}));
}

TEST(HbaConfigTest, ErrorsNameTheRuleIndex) {
  const LoadResult result = load(std::string(kDatabase) +
                                 "[[hba]]\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"trust\"\n"
                                 "[[hba]]\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"nope\"\n");
  EXPECT_TRUE(OnlyError(result, 10, 10, "hba[1].method", {"invalid method \"nope\""}));
}

TEST(HbaConfigTest, HbaMustBeAnArrayOfTables) {
  EXPECT_TRUE(OnlyError(load("hba = \"trust\"\n" + std::string(kDatabase)), 1, 7, "hba",
                        {"expected an array of tables ([[hba]])"}));
  EXPECT_TRUE(OnlyError(load("hba = [1]\n" + std::string(kDatabase)), 1, 8, "hba[0]", {"expected a table"}));
}

TEST(HbaConfigTest, CertMethodNeedsTlsClient) {
  EXPECT_TRUE(OnlyError(hba_rule("type = \"hostssl\"\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"cert\"\n"), 3, 1,
                        "hba[0].method", {"method \"cert\" needs [tls.client]"}));
  // [tls.client] present but disabled is the same as absent.
  EXPECT_TRUE(OnlyError(load("[tls.client]\nmode = \"disable\"\n" + std::string(kDatabase) +
                             "[[hba]]\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"cert\"\n"),
                        5, 1, "hba[0].method", {"needs [tls.client]"}));
}

TEST_F(TlsConfigTest, HbaCertMethodWithTlsClientAndCa) {
  const LoadResult result = load(client_table("mode = \"require\"\nca = " + q(pki().ca) + "\n") +
                                 std::string(kDatabase) +
                                 "[[hba]]\ntype = \"hostssl\"\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"cert\"\n");
  ASSERT_TRUE(result.config) << describe(result);
  ASSERT_EQ(result.config->hba.size(), 1u);
  EXPECT_EQ(result.config->hba[0].method, HbaMethod::cert);
}

TEST_F(TlsConfigTest, HbaCertMethodWithoutCaIsRefused) {
  // Without a ca, [tls.client] never asks for a client certificate (SSL_VERIFY_NONE),
  // so a `cert` rule could never let anyone in; the message itself says a ca is needed.
  const LoadResult result = load(client_table() + std::string(kDatabase) +
                                 "[[hba]]\ntype = \"hostssl\"\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"cert\"\n");
  EXPECT_FALSE(result.config) << "method = \"cert\" accepted with a [tls.client] that has no ca";
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_EQ(result.errors.front().key, "hba[0].method");
}

// ---- match_hba -----------------------------------------------------------------------

class HbaMatchTest : public ::testing::Test {
 protected:
  // Parses [[hba]] rules given as TOML.
  static std::vector<HbaRule> rules(std::string_view text) {
    const LoadResult result = load(std::string(kDatabase) + std::string(text));
    EXPECT_TRUE(result.config) << describe(result);
    return result.config ? result.config->hba : std::vector<HbaRule>{};
  }
  // One rule for every database and user, with this address and method trust.
  static std::vector<HbaRule> address_rule(const std::string& address, const char* type = "host") {
    return rules("[[hba]]\ntype = \"" + std::string(type) +
                 "\"\ndatabase = \"all\"\nuser = \"all\"\naddress = \"" + address + "\"\nmethod = \"trust\"\n");
  }
  static bool matches(const std::vector<HbaRule>& rules, std::string_view client, bool tls = false) {
    return match_hba(rules, "app", "alice", client, tls) != nullptr;
  }
};

TEST_F(HbaMatchTest, NoRulesOrNoMatchIsNull) {
  EXPECT_EQ(match_hba({}, "app", "alice", "127.0.0.1", false), nullptr);
  const auto r = rules("[[hba]]\ndatabase = \"other\"\nuser = \"all\"\nmethod = \"trust\"\n");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(match_hba(r, "app", "alice", "127.0.0.1", false), nullptr);
  EXPECT_EQ(match_hba(r, "other", "alice", "127.0.0.1", false), &r[0]);
}

TEST_F(HbaMatchTest, FirstMatchWins) {
  const auto r = rules(R"(
[[hba]]
database = "all"
user = "mallory"
method = "reject"
[[hba]]
database = "all"
user = "all"
address = "10.0.0.0/8"
method = "scram-sha-256"
[[hba]]
database = "all"
user = "all"
method = "md5"
[[hba]]
database = "all"
user = "all"
method = "trust"
)");
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(match_hba(r, "app", "mallory", "10.1.2.3", false), &r[0]);
  EXPECT_EQ(match_hba(r, "app", "alice", "10.1.2.3", false), &r[1]);
  EXPECT_EQ(match_hba(r, "app", "alice", "192.168.0.1", false), &r[2]);  // never r[3]
  EXPECT_EQ(match_hba(r, "app", "alice", "192.168.0.1", false)->method, HbaMethod::md5);
}

TEST_F(HbaMatchTest, Ipv4CidrBoundaries) {
  const auto r16 = address_rule("10.1.0.0/16");
  EXPECT_TRUE(matches(r16, "10.1.0.0"));
  EXPECT_TRUE(matches(r16, "10.1.255.255"));
  EXPECT_FALSE(matches(r16, "10.0.255.255"));
  EXPECT_FALSE(matches(r16, "10.2.0.0"));
  EXPECT_FALSE(matches(r16, "11.1.0.0"));

  const auto r25 = address_rule("192.168.1.128/25");
  EXPECT_TRUE(matches(r25, "192.168.1.128"));
  EXPECT_TRUE(matches(r25, "192.168.1.255"));
  EXPECT_FALSE(matches(r25, "192.168.1.127"));
  EXPECT_FALSE(matches(r25, "192.168.2.128"));

  const auto r32 = address_rule("127.0.0.1/32");
  EXPECT_TRUE(matches(r32, "127.0.0.1"));
  EXPECT_FALSE(matches(r32, "127.0.0.2"));
  const auto single = address_rule("127.0.0.1");
  EXPECT_TRUE(matches(single, "127.0.0.1"));
  EXPECT_FALSE(matches(single, "127.0.0.0"));

  const auto r31 = address_rule("10.0.0.2/31");
  EXPECT_TRUE(matches(r31, "10.0.0.2"));
  EXPECT_TRUE(matches(r31, "10.0.0.3"));
  EXPECT_FALSE(matches(r31, "10.0.0.1"));
  EXPECT_FALSE(matches(r31, "10.0.0.4"));

  const auto r0 = address_rule("0.0.0.0/0");
  EXPECT_TRUE(matches(r0, "0.0.0.0"));
  EXPECT_TRUE(matches(r0, "255.255.255.255"));
  EXPECT_FALSE(matches(r0, "::1"));  // an IPv4 rule does not match IPv6 clients
}

TEST_F(HbaMatchTest, Ipv6CidrBoundaries) {
  const auto r32 = address_rule("2001:db8::/32");
  EXPECT_TRUE(matches(r32, "2001:db8::"));
  EXPECT_TRUE(matches(r32, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(matches(r32, "2001:db9::"));
  EXPECT_FALSE(matches(r32, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"));

  const auto r10 = address_rule("fe80::/10");
  EXPECT_TRUE(matches(r10, "fe80::1"));
  EXPECT_TRUE(matches(r10, "febf:ffff::1"));
  EXPECT_FALSE(matches(r10, "fec0::"));
  EXPECT_FALSE(matches(r10, "fe7f:ffff::"));

  const auto r127 = address_rule("2001:db8::2/127");
  EXPECT_TRUE(matches(r127, "2001:db8::2"));
  EXPECT_TRUE(matches(r127, "2001:db8::3"));
  EXPECT_FALSE(matches(r127, "2001:db8::4"));
  EXPECT_FALSE(matches(r127, "2001:db8::1"));

  const auto loopback = address_rule("::1");
  EXPECT_TRUE(matches(loopback, "::1"));
  EXPECT_TRUE(matches(loopback, "0:0:0:0:0:0:0:1"));  // another spelling
  EXPECT_FALSE(matches(loopback, "::2"));
  EXPECT_FALSE(matches(loopback, "127.0.0.1"));  // an IPv6 rule does not match IPv4 clients

  const auto r0 = address_rule("::/0");
  EXPECT_TRUE(matches(r0, "::"));
  EXPECT_TRUE(matches(r0, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(matches(r0, "10.0.0.1"));
}

TEST_F(HbaMatchTest, Ipv4MappedClientsMatchIpv4Rules) {
  const auto r = address_rule("10.1.0.0/16");
  EXPECT_TRUE(matches(r, "::ffff:10.1.2.3"));
  EXPECT_TRUE(matches(r, "::ffff:a01:203"));  // the same, in hex
  EXPECT_FALSE(matches(r, "::ffff:10.2.0.0"));
  // Not mapped: ::10.1.2.3 (IPv4-compatible, deprecated) and 64:ff9b::10.1.2.3 (NAT64) are IPv6.
  EXPECT_FALSE(matches(r, "::10.1.2.3"));
  EXPECT_FALSE(matches(r, "64:ff9b::a01:203"));
  const auto single = address_rule("127.0.0.1");
  EXPECT_TRUE(matches(single, "::ffff:127.0.0.1"));
  EXPECT_FALSE(matches(single, "::ffff:127.0.0.2"));
}

TEST_F(HbaMatchTest, UnparseableClientAddressMatchesOnlyAllRules) {
  const auto r = rules(R"(
[[hba]]
database = "all"
user = "all"
address = "0.0.0.0/0"
method = "trust"
[[hba]]
database = "all"
user = "all"
address = "::/0"
method = "trust"
[[hba]]
database = "all"
user = "all"
address = "all"
method = "reject"
)");
  ASSERT_EQ(r.size(), 3u);
  for (std::string_view client : {"", "unix", "10.0.0", "fe80::1%eth0", "10.0.0.1:5432"}) {
    EXPECT_EQ(match_hba(r, "app", "alice", client, false), &r[2]) << client;
  }
}

TEST_F(HbaMatchTest, TlsTypes) {
  const auto ssl = address_rule("all", "hostssl");
  EXPECT_TRUE(matches(ssl, "10.0.0.1", true));
  EXPECT_FALSE(matches(ssl, "10.0.0.1", false));
  const auto nossl = address_rule("all", "hostnossl");
  EXPECT_FALSE(matches(nossl, "10.0.0.1", true));
  EXPECT_TRUE(matches(nossl, "10.0.0.1", false));
  const auto host = address_rule("all", "host");
  EXPECT_TRUE(matches(host, "10.0.0.1", true));
  EXPECT_TRUE(matches(host, "10.0.0.1", false));

  // A hostssl rule for a network, then a reject for everyone: plain connections are refused.
  const auto r = rules(R"(
[[hba]]
type = "hostssl"
database = "all"
user = "all"
address = "10.0.0.0/8"
method = "scram-sha-256"
[[hba]]
database = "all"
user = "all"
method = "reject"
)");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(match_hba(r, "app", "alice", "10.0.0.1", true), &r[0]);
  EXPECT_EQ(match_hba(r, "app", "alice", "10.0.0.1", false), &r[1]);
  EXPECT_EQ(match_hba(r, "app", "alice", "11.0.0.1", true), &r[1]);
}

TEST_F(HbaMatchTest, DatabaseAndUserLists) {
  const auto r = rules(R"(
[[hba]]
database = ["app", "reports"]
user = ["alice", "bob"]
method = "trust"
)");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_NE(match_hba(r, "app", "alice", "10.0.0.1", false), nullptr);
  EXPECT_NE(match_hba(r, "reports", "bob", "10.0.0.1", false), nullptr);
  EXPECT_EQ(match_hba(r, "other", "alice", "10.0.0.1", false), nullptr);
  EXPECT_EQ(match_hba(r, "app", "carol", "10.0.0.1", false), nullptr);
  EXPECT_EQ(match_hba(r, "App", "alice", "10.0.0.1", false), nullptr);  // names are case-sensitive
  EXPECT_EQ(match_hba(r, "app", "Alice", "10.0.0.1", false), nullptr);
  EXPECT_EQ(match_hba(r, "ap", "alice", "10.0.0.1", false), nullptr);   // no prefix matching
  EXPECT_EQ(match_hba(r, "app", "", "10.0.0.1", false), nullptr);

  const auto one = rules("[[hba]]\ndatabase = \"app\"\nuser = \"all\"\nmethod = \"trust\"\n");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_NE(match_hba(one, "app", "anyone", "10.0.0.1", false), nullptr);
  EXPECT_EQ(match_hba(one, "app2", "anyone", "10.0.0.1", false), nullptr);
}

}  // namespace
}  // namespace sluice::config
