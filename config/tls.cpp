#include "config/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>

namespace sluice::config {
namespace {

constexpr unsigned char kAlpnPostgres[] = "postgresql";

// ALPN: PostgreSQL 17 clients offer "postgresql" (and require it for direct TLS);
// older clients offer nothing, which is fine for TLS negotiated with SSLRequest.
int select_alpn(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in, unsigned int in_len,
                void*) {
  for (unsigned int i = 0; i < in_len;) {
    const unsigned int len = in[i];
    if (i + 1 + len > in_len) break;
    if (len == sizeof kAlpnPostgres - 1 && std::memcmp(in + i + 1, kAlpnPostgres, len) == 0) {
      *out = in + i + 1;
      *out_len = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

int protocol_version(const std::string& name) {
  if (name == "TLSv1.2") return TLS1_2_VERSION;
  if (name == "TLSv1.3") return TLS1_3_VERSION;
  return -1;
}

std::shared_ptr<ssl_ctx_st> new_context(const SSL_METHOD* method) {
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (ctx == nullptr) return nullptr;
  return std::shared_ptr<ssl_ctx_st>(ctx, SSL_CTX_free);
}

TlsError apply_common(SSL_CTX* ctx, const TlsSettings& settings) {
  const int min = protocol_version(settings.min_protocol);
  if (min < 0) return {"min_protocol", "must be \"TLSv1.2\" or \"TLSv1.3\""};
  if (SSL_CTX_set_min_proto_version(ctx, min) != 1) return {"min_protocol", openssl_errors("cannot be set")};
  if (!settings.max_protocol.empty()) {
    const int max = protocol_version(settings.max_protocol);
    if (max < 0) return {"max_protocol", "must be \"TLSv1.2\" or \"TLSv1.3\""};
    if (max < min) return {"max_protocol", "is older than min_protocol"};
    if (SSL_CTX_set_max_proto_version(ctx, max) != 1) return {"max_protocol", openssl_errors("cannot be set")};
  }
  if (!settings.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, settings.ciphers.c_str()) != 1)
    return {"ciphers", "\"" + settings.ciphers + "\": " + openssl_errors("no usable cipher")};
  if (!settings.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx, settings.ciphersuites.c_str()) != 1)
    return {"ciphersuites", "\"" + settings.ciphersuites + "\": " + openssl_errors("no usable cipher suite")};
  // Renegotiation is a denial-of-service lever and PostgreSQL does not use it.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  // Not SSL_MODE_RELEASE_BUFFERS: it would free OpenSSL's record buffers whenever a
  // connection goes idle, but re-allocating them costs ~8 µs per pgbench -S
  // transaction here (measured: 36-38 vs 45-47 µs of Sluice CPU per transaction).
  return {};
}

// What both sides start with: a fresh context with the protocol range and ciphers.
TlsError start_context(const SSL_METHOD* method, const TlsSettings& settings, std::shared_ptr<ssl_ctx_st>& context) {
  ERR_clear_error();
  context = new_context(method);
  if (!context) return {"", openssl_errors("cannot create a TLS context")};
  return apply_common(context.get(), settings);
}

// What both sides share: protocol range and ciphers.
TlsError load_certificate(SSL_CTX* ctx, const TlsSettings& settings) {
  if (SSL_CTX_use_certificate_chain_file(ctx, settings.cert.c_str()) != 1)
    return {"cert", "cannot load certificate \"" + settings.cert + "\": " + openssl_errors()};
  if (SSL_CTX_use_PrivateKey_file(ctx, settings.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return {"key", "cannot load private key \"" + settings.key + "\": " + openssl_errors()};
  if (SSL_CTX_check_private_key(ctx) != 1)
    return {"key", "private key \"" + settings.key + "\" does not match certificate \"" + settings.cert +
                       "\": " + openssl_errors()};
  return {};
}

// RFC 5929 tls-server-end-point: the certificate's hash with its signature's
// digest (SHA-256 when that is MD5 or SHA-1).
std::string end_point_hash(SSL_CTX* ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (cert == nullptr) return {};
  int digest_nid = NID_undef;
  if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &digest_nid, nullptr) != 1) return {};
  if (digest_nid == NID_md5 || digest_nid == NID_sha1) digest_nid = NID_sha256;
  const EVP_MD* digest = EVP_get_digestbynid(digest_nid);
  if (digest == nullptr) return {};
  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_digest(cert, digest, hash, &length) != 1) return {};
  return std::string(reinterpret_cast<const char*>(hash), length);
}

}  // namespace

const char* to_string(TlsMode mode) {
  switch (mode) {
    case TlsMode::disable: return "disable";
    case TlsMode::allow: return "allow";
    case TlsMode::prefer: return "prefer";
    case TlsMode::require: return "require";
    case TlsMode::verify_ca: return "verify-ca";
    case TlsMode::verify_full: return "verify-full";
  }
  return "unknown";
}

std::string openssl_errors(std::string_view fallback) {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    const char* reason = ERR_reason_error_string(code);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : text;
  }
  return out.empty() ? std::string(fallback) : out;
}

TlsError build_acceptor_context(TlsSettings& settings) {
  settings.context.reset();
  if (settings.mode == TlsMode::disable) return {};
  std::shared_ptr<ssl_ctx_st> context;
  if (auto error = start_context(TLS_server_method(), settings, context); !error.ok()) return error;
  SSL_CTX* ctx = context.get();
  if (auto error = load_certificate(ctx, settings); !error.ok()) return error;
  if (!settings.ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, settings.ca.c_str(), nullptr) != 1)
      return {"ca", "cannot load CA file \"" + settings.ca + "\": " + openssl_errors()};
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(settings.ca.c_str())) {
      SSL_CTX_set_client_CA_list(ctx, names);
    }
    ERR_clear_error();
  }
  const bool verify = settings.mode == TlsMode::verify_ca || settings.mode == TlsMode::verify_full;
  // verify-*: a valid client certificate is required. Otherwise, with a CA, one is
  // asked for (for `cert` rules) and must be valid when given, as PostgreSQL does
  // when ssl_ca_file is set.
  const int verify_mode = verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                          : settings.ca.empty() ? SSL_VERIFY_NONE
                                                : SSL_VERIFY_PEER;
  SSL_CTX_set_verify(ctx, verify_mode, nullptr);
  static const unsigned char kSessionContext[] = "sluice";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  // As PostgreSQL: no session resumption (libpq never resumes), so no tickets to
  // encrypt and send after every handshake, and no session cache to fill.
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, nullptr);
  settings.end_point_hash = end_point_hash(ctx);
  settings.context = std::move(context);
  return {};
}

TlsError build_connector_context(TlsSettings& settings) {
  settings.context.reset();
  if (settings.mode == TlsMode::disable) return {};
  std::shared_ptr<ssl_ctx_st> context;
  if (auto error = start_context(TLS_client_method(), settings, context); !error.ok()) return error;
  SSL_CTX* ctx = context.get();
  if (!settings.cert.empty() || !settings.key.empty()) {
    if (settings.cert.empty() || settings.key.empty()) return {settings.cert.empty() ? "cert" : "key", "give both cert and key for a client certificate"};
    if (auto error = load_certificate(ctx, settings); !error.ok()) return error;
  }
  if (settings.ca == "system") {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) return {"ca", "cannot load the system's CA store: " + openssl_errors()};
  } else if (!settings.ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, settings.ca.c_str(), nullptr) != 1)
      return {"ca", "cannot load CA file \"" + settings.ca + "\": " + openssl_errors()};
  }
  const bool verify = settings.mode == TlsMode::verify_ca || settings.mode == TlsMode::verify_full;
  SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  static const unsigned char kAlpn[] = "\x0apostgresql";
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn - 1);
  settings.context = std::move(context);
  return {};
}

}  // namespace sluice::config
