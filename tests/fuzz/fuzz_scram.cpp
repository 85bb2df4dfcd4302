// SCRAM-SHA-256 messages in both roles: a client's client-first and client-final
// against Sluice's server side, and a server's server-first and server-final
// against Sluice's client side. The input is split at the first newline.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/auth.h"

using namespace sluice::protocol::auth;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Few iterations: the fuzzer is after the parsers, not PBKDF2.
  static const ScramSecret secret = make_scram_secret("pencil", "0123456789abcdef", 16);
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto newline = input.find('\n');
  const std::string_view first = input.substr(0, newline);
  const std::string_view second = newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);

  ScramServer server(secret, "fixedservernonce");
  if (server.on_client_first(first)) (void)server.on_client_final(second);

  // Over TLS: channel binding offered, the client having chosen SCRAM-SHA-256-PLUS or not.
  for (const bool plus : {true, false}) {
    ScramServer bound(secret, "fixedservernonce");
    bound.offer_channel_binding(std::string(32, '\x5a'));
    if (bound.on_client_first(first, plus)) (void)bound.on_client_final(second);
  }

  ScramClient client("pencil", "fixedclientnonce");
  (void)client.client_first();
  if (client.on_server_first(first)) (void)client.on_server_final(second);

  // Pass-through: a client built from proven keys (no PBKDF2, so no iteration cap).
  ScramClient from_keys(ScramKeys{}, "fixedclientnonce");
  (void)from_keys.client_first();
  if (from_keys.on_server_first(first)) (void)from_keys.on_server_final(second);
  return 0;
}
