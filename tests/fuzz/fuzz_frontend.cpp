// Client -> Sluice messages after login: the relay's scanner and observer fed in
// chunks whose sizes come from the input, and every message body Sluice parses
// (Parse, Bind, Describe/Close targets, passwords, SASL responses).
#include <cstddef>
#include <cstdint>

#include "protocol/extended.h"
#include "protocol/relay_state.h"
#include "protocol/scanner.h"
#include "protocol/wire.h"

using namespace sluice::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t chunk = 1 + data[0] % 64;
  Bytes input(data + 1, size - 1);

  RelayState state;
  FrontendObserver observer{state};
  StreamScanner scanner(64 * 1024);
  for (std::size_t at = 0; at < input.size(); at += chunk) {
    auto outcome = scanner.feed(input.subspan(at, std::min(chunk, input.size() - at)), observer);
    if (!outcome || outcome->stopped) break;
  }
  if (state.pending < 0) __builtin_trap();

  Bytes rest = input;
  while (!rest.empty()) {
    Message message;
    auto peeked = peek_message(rest, 64 * 1024, message);
    if (!peeked || *peeked == 0) break;
    switch (message.type) {
      case 'P': (void)parse_parse(message.body); break;
      case 'B': (void)parse_bind(message.body); break;
      case 'D': case 'C': (void)parse_target(message.body); break;
      case 'p':
        (void)parse_password(message.body);
        (void)parse_sasl_initial_response(message.body);
        break;
      default: break;
    }
    rest = rest.subspan(*peeked);
  }
  return 0;
}
