// PostgreSQL -> Sluice messages: the relay's scanner and observer in chunks, and
// every server message body Sluice parses (errors, authentication requests,
// parameter statuses, backend keys, ReadyForQuery). A server is trusted less than
// it seems: a proxy in between, or a wrong port, can send anything.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "protocol/relay_state.h"
#include "protocol/scanner.h"
#include "protocol/wire.h"

using namespace sluice::protocol;

namespace {
struct Parameters {
  void set_parameter(std::string_view, std::string_view) {}
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t chunk = 1 + data[0] % 64;
  Bytes input(data + 1, size - 1);

  RelayState state;
  state.pending = 3;
  Parameters parameters;
  BackendObserver<Parameters> observer{state, &parameters};
  StreamScanner scanner(1u << 20);
  for (std::size_t at = 0; at < input.size(); at += chunk) {
    if (!scanner.feed(input.subspan(at, std::min(chunk, input.size() - at)), observer)) break;
  }
  if (state.pending < 0) __builtin_trap();

  Bytes rest = input;
  while (!rest.empty()) {
    Message message;
    auto peeked = peek_message(rest, 1u << 20, message);
    if (!peeked || *peeked == 0) break;
    switch (message.type) {
      case 'E': case 'N':
        (void)parse_error_fields(message.body);
        (void)severity_is_fatal(message.body);
        break;
      case 'R': (void)parse_auth_request(message.body); break;
      case 'S': (void)parse_parameter_status(message.body); break;
      case 'K': (void)parse_backend_key(message.body); break;
      case 'Z': (void)parse_ready_for_query(message.body); break;
      case 'D': (void)parse_data_row(message.body); break;  // [auth_query] answers
      default: break;
    }
    rest = rest.subspan(*peeked);
  }
  return 0;
}
