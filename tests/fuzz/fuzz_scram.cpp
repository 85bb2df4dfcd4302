// SCRAM-SHA-256 messages in both roles: a client's client-first and client-final
// against Sluice's server side, and a server's server-first and server-final
// against Sluice's client side. The input is split at the first newline.
#include <cstddef>
#include <cstdint>
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

  ScramClient client("pencil", "fixedclientnonce");
  (void)client.client_first();
  if (client.on_server_first(first)) (void)client.on_server_final(second);
  return 0;
}
