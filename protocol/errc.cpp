#include "protocol/errc.h"

namespace sluice::protocol {
namespace {
class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "sluice.protocol"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok: return "ok";
      case errc::message_too_large: return "message length exceeds the configured maximum";
      case errc::bad_length: return "invalid message length";
      case errc::startup_too_large: return "startup packet exceeds 10000 bytes";
      case errc::unsupported_protocol: return "unsupported frontend protocol";
      case errc::malformed_message: return "malformed message";
      case errc::missing_user: return "no PostgreSQL user name specified in startup packet";
      case errc::unexpected_message: return "unexpected message";
      case errc::auth_failed: return "authentication failed";
      case errc::auth_unsupported: return "unsupported authentication method";
      case errc::scram_invalid_message: return "malformed SCRAM message";
      case errc::scram_nonce_mismatch: return "SCRAM nonce mismatch";
      case errc::scram_channel_binding: return "SCRAM channel binding mismatch";
      case errc::scram_server_signature: return "SCRAM server signature is invalid";
    }
    return "unknown protocol error";
  }
};
}  // namespace

const boost::system::error_category& protocol_category() noexcept {
  static const category instance;
  return instance;
}
}  // namespace sluice::protocol
