#pragma once
// Error codes of the protocol layer. Expected failures (malformed input, failed
// authentication) are values, never exceptions.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace sluice::protocol {

enum class errc {
  ok = 0,
  message_too_large,        // length field above the configured cap
  bad_length,               // length field smaller than the header itself
  startup_too_large,        // startup packet above 10000 bytes
  unsupported_protocol,     // protocol version other than 3.0
  malformed_message,        // body does not match the message's layout
  missing_user,             // StartupMessage without "user"
  unexpected_message,       // message not allowed in the current state
  auth_failed,              // wrong password / proof
  auth_unsupported,         // mechanism or request we do not implement
  scram_invalid_message,    // SCRAM message that does not follow RFC 5802
  scram_nonce_mismatch,     // server nonce does not extend ours / client nonce altered
  scram_server_signature,   // server proof does not verify
  scram_channel_binding,    // channel binding flag or data that does not match what was offered
};

const boost::system::error_category& protocol_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), protocol_category()};
}

template <class T>
using result = boost::system::result<T, boost::system::error_code>;

}  // namespace sluice::protocol

namespace boost::system {
template <>
struct is_error_code_enum<sluice::protocol::errc> : std::true_type {};
}  // namespace boost::system
