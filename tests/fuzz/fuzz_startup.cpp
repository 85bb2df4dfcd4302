// The first bytes a client sends: StartupMessage, SSLRequest, GSSENCRequest,
// CancelRequest (protocol::peek_startup), as the session reads them.
#include <cstddef>
#include <cstdint>

#include "protocol/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sluice::protocol::StartupPacket packet;
  auto peeked = sluice::protocol::peek_startup(sluice::protocol::Bytes(data, size), packet);
  if (peeked && *peeked > 0) {
    (void)packet.get("user");
    (void)packet.get("database");
    for (const auto& [name, value] : packet.parameters) {
      if (name.size() + value.size() > size) __builtin_trap();  // views must stay inside the input
    }
  }
  return 0;
}
