#pragma once
// RFC 7677's SCRAM-SHA-256 example (user "user", password "pencil") and the same
// exchange with ScramClient's empty user name: known answers for the SCRAM tests.
#include <string_view>

namespace sluice::protocol::auth::rfc7677 {

// ---- RFC 7677 section 3 ---------------------------------------------------------------
inline constexpr std::string_view kRfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
inline constexpr std::string_view kRfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
inline constexpr std::string_view kRfcSaltB64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
inline constexpr std::string_view kRfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
inline constexpr std::string_view kRfcServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
inline constexpr std::string_view kRfcClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
inline constexpr std::string_view kRfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// Keys of "pencil" with that salt, computed independently with Python's hashlib:
//   sp = hashlib.pbkdf2_hmac("sha256", b"pencil", b64decode(salt), 4096)
//   stored = sha256(hmac(sp, b"Client Key")), server = hmac(sp, b"Server Key")
inline constexpr std::string_view kRfcStoredKeyB64 = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
inline constexpr std::string_view kRfcServerKeyB64 = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
// The same exchange with ScramClient's client-first-bare "n=,r=rOprNGfwEbeRWgbNEkqO" (empty user name),
// client-final and server-final computed with Python's hashlib/hmac as above (the same script reproduces
// the RFC's own proof and verifier for "n=user").
inline constexpr std::string_view kEmptyUserClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=";
inline constexpr std::string_view kEmptyUserServerFinal = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";

}  // namespace sluice::protocol::auth::rfc7677
