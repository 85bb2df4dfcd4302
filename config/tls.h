#pragma once
// TLS settings ([tls.client], [tls.server], databases.X.tls) and the OpenSSL
// contexts built from them when the configuration is loaded, so that a bad
// certificate or key is a configuration error (with OpenSSL's reason) and a
// RELOAD picks up renewed files while sessions keep the context they began with.
#include <memory>
#include <string>
#include <string_view>

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace sluice::config {

// Client side (clients -> Sluice): disable | allow | prefer | require | verify-ca | verify-full.
// Server side (Sluice -> PostgreSQL): disable | prefer | require | verify-ca | verify-full.
enum class TlsMode { disable, allow, prefer, require, verify_ca, verify_full };
const char* to_string(TlsMode mode);

struct TlsSettings {
  TlsMode mode = TlsMode::disable;
  std::string cert;           // PEM certificate chain (ours); client side: required unless disabled
  std::string key;            // PEM private key for `cert`
  std::string ca;             // PEM CA bundle: client certificates (client side) or the server's (server side);
                              // server side also "system" for the system's trust store
  std::string ciphers;        // OpenSSL cipher list for TLS 1.2; empty = OpenSSL's default
  std::string ciphersuites;   // TLS 1.3 suites; empty = OpenSSL's default
  std::string min_protocol = "TLSv1.2";  // TLSv1.2 | TLSv1.3
  std::string max_protocol;              // empty = the newest OpenSSL knows

  // Built at load time; null when mode is disable.
  std::shared_ptr<ssl_ctx_st> context;
  // Client side: tls-server-end-point channel binding data for SCRAM-SHA-256-PLUS (the hash of
  // our certificate as RFC 5929 defines it); empty when it cannot be computed.
  std::string end_point_hash;

  bool enabled() const { return mode != TlsMode::disable && context != nullptr; }
};

// [tls.server]'s default: TLS when PostgreSQL offers it, unverified (libpq's and PgBouncer's default).
inline TlsSettings prefer_tls() {
  TlsSettings settings;
  settings.mode = TlsMode::prefer;
  return settings;
}

// Why a TLS context could not be built: the key at fault ("cert", "min_protocol", ...;
// empty when none is) and the reason, naming the file and OpenSSL's error.
struct TlsError {
  std::string key;
  std::string message;
  bool ok() const { return message.empty(); }
};

// Builds the context that accepts TLS from clients (client side).
TlsError build_acceptor_context(TlsSettings& settings);
// Builds the context that opens TLS to PostgreSQL (server side).
TlsError build_connector_context(TlsSettings& settings);

// OpenSSL's error queue as text ("reason; reason"), cleared; `fallback` when empty.
std::string openssl_errors(std::string_view fallback = "unknown OpenSSL error");

}  // namespace sluice::config
