// Client authentication and login errors through Sluice, and malformed input on raw sockets.
//
// libpq covers the happy paths and the messages users see; a small raw-socket client
// checks exact SQLSTATEs and what happens on the wire for input libpq would never send.
// The PostgresReference tests run the same raw exchanges against PostgreSQL directly: they
// check the raw client itself and record what PostgreSQL does, which Sluice imitates.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;

constexpr std::int32_t kProtocol3 = 196608;  // 3.0
constexpr std::int32_t kProtocol2 = 131072;  // 2.0
constexpr std::int32_t kSslRequestCode = 80877103;
constexpr std::int32_t kGssEncRequestCode = 80877104;
constexpr int kReadTimeoutMs = 20'000;  // generous: only reached when something is broken

// ------------------------------------------------------------------------------------------
// Building messages

void put_int32(std::string& out, std::int32_t v) {
  const std::uint32_t n = htonl(static_cast<std::uint32_t>(v));
  out.append(reinterpret_cast<const char*>(&n), 4);
}

std::int32_t get_int32(std::string_view in, std::size_t at) {
  std::uint32_t n = 0;
  std::memcpy(&n, in.data() + at, 4);
  return static_cast<std::int32_t>(ntohl(n));
}

// A startup-family packet: int32 length (including itself), int32 code, body.
std::string startup_packet(std::int32_t code, const std::string& body) {
  std::string out;
  put_int32(out, static_cast<std::int32_t>(8 + body.size()));
  put_int32(out, code);
  return out + body;
}

std::string startup_message(const std::string& user, const std::string& database,
                            std::int32_t version = kProtocol3) {
  std::string body;
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{{"user", user}, {"database", database}}) {
    body += k;
    body += '\0';
    body += v;
    body += '\0';
  }
  body += '\0';
  return startup_packet(version, body);
}

// A regular message: type byte, int32 length (including itself), body.
std::string message(char type, const std::string& body) {
  std::string out(1, type);
  put_int32(out, static_cast<std::int32_t>(4 + body.size()));
  return out + body;
}

std::string cstr(const std::string& s) { return s + '\0'; }

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const std::uint32_t v = (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8) | std::uint8_t(in[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(v >> shift) & 63];
  }
  if (i + 1 == in.size()) {
    const std::uint32_t v = std::uint8_t(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const std::uint32_t v = (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// A raw protocol client. Every read is bounded (kReadTimeoutMs) so a broken server fails
// the test instead of hanging it.

struct Message {
  char type = 0;
  std::string body;
};

enum class ReadStatus { message, closed, timeout, malformed };

struct ReadResult {
  ReadStatus status = ReadStatus::closed;
  Message msg;
};

std::string describe(const ReadResult& r) {
  switch (r.status) {
    case ReadStatus::closed: return "connection closed";
    case ReadStatus::timeout: return "timeout waiting for the server";
    case ReadStatus::malformed: return "malformed message from the server";
    case ReadStatus::message: break;
  }
  std::string s = std::string("message '") + r.msg.type + "' (" + std::to_string(r.msg.body.size()) + " bytes)";
  if (r.msg.type == 'E' || r.msg.type == 'N') {
    for (std::size_t pos = 0; pos < r.msg.body.size() && r.msg.body[pos] != '\0';) {
      const std::size_t end = r.msg.body.find('\0', pos + 1);
      if (end == std::string::npos) break;
      s += std::string(" ") + r.msg.body[pos] + "=" + r.msg.body.substr(pos + 1, end - pos - 1);
      pos = end + 1;
    }
  }
  return s;
}

// Fields of an ErrorResponse/NoticeResponse body, keyed by field type ('S', 'C', 'M', ...).
std::map<char, std::string> error_fields(const std::string& body) {
  std::map<char, std::string> fields;
  std::size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    const std::size_t end = body.find('\0', pos + 1);
    if (end == std::string::npos) break;
    fields[body[pos]] = body.substr(pos + 1, end - pos - 1);
    pos = end + 1;
  }
  return fields;
}

class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    const int one = 1;
    if (connected_) setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }

  // False if the peer has already closed (EPIPE/ECONNRESET).
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads exactly n bytes; ReadStatus::message with the bytes in msg.body on success.
  ReadResult read_exact(std::size_t n) {
    ReadResult r;
    while (buffer_.size() < n) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = poll(&p, 1, kReadTimeoutMs);
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) {
        r.status = ReadStatus::timeout;
        return r;
      }
      char buf[65536];
      const ssize_t got = recv(fd_, buf, sizeof buf, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {  // EOF or reset: both mean closed
        r.status = ReadStatus::closed;
        return r;
      }
      buffer_.append(buf, static_cast<std::size_t>(got));
    }
    r.status = ReadStatus::message;
    r.msg.body = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return r;
  }

  ReadResult read_message() {
    ReadResult header = read_exact(5);
    if (header.status != ReadStatus::message) return header;
    const char type = header.msg.body[0];
    const std::int32_t len = get_int32(header.msg.body, 1);
    if (len < 4 || len > 64 * 1024 * 1024) {
      header.status = ReadStatus::malformed;
      header.msg.type = type;
      return header;
    }
    ReadResult body = read_exact(static_cast<std::size_t>(len - 4));
    if (body.status != ReadStatus::message) return body;
    body.msg.type = type;
    return body;
  }

  // Reads until the server closes the connection; returns the messages seen on the way.
  // `closed` is false if the connection is still open after kReadTimeoutMs.
  std::vector<Message> read_until_closed(bool& closed) {
    std::vector<Message> seen;
    for (;;) {
      ReadResult r = read_message();
      if (r.status == ReadStatus::message) {
        seen.push_back(std::move(r.msg));
        continue;
      }
      closed = r.status == ReadStatus::closed || r.status == ReadStatus::malformed;
      return seen;
    }
  }

  // Raw bytes left to read before EOF (for the protocol-2.0 reply, which has no length word).
  std::string read_all_until_closed(bool& closed) {
    std::string all;
    for (;;) {
      ReadResult r = read_exact(buffer_.empty() ? 1 : buffer_.size());
      if (r.status != ReadStatus::message) {
        closed = r.status == ReadStatus::closed;
        return all;
      }
      all += r.msg.body;
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

// Reads messages up to the first ErrorResponse or ReadyForQuery (login done).
std::vector<Message> read_until_error_or_ready(RawClient& c, ReadResult& last) {
  std::vector<Message> seen;
  for (;;) {
    last = c.read_message();
    if (last.status != ReadStatus::message) return seen;
    seen.push_back(last.msg);
    if (last.msg.type == 'E' || last.msg.type == 'Z') return seen;
  }
}

// Authentication request code of an 'R' message, or -1.
std::int32_t auth_code(const ReadResult& r) {
  if (r.status != ReadStatus::message || r.msg.type != 'R' || r.msg.body.size() < 4) return -1;
  return get_int32(r.msg.body, 0);
}

// Asserts that the next thing the server sends is an ErrorResponse with `sqlstate` (severity
// FATAL, a message), and that the server then closes the connection without sending more.
void expect_fatal_then_close(RawClient& c, const std::string& sqlstate, const std::string& message_part = "") {
  const ReadResult r = c.read_message();
  ASSERT_EQ(r.status, ReadStatus::message) << "expected ErrorResponse " << sqlstate << ", got " << describe(r);
  ASSERT_EQ(r.msg.type, 'E') << "expected ErrorResponse " << sqlstate << ", got " << describe(r);
  const auto fields = error_fields(r.msg.body);
  EXPECT_EQ(fields.count('C') ? fields.at('C') : "<none>", sqlstate) << describe(r);
  EXPECT_EQ(fields.count('S') ? fields.at('S') : "<none>", "FATAL") << describe(r);
  EXPECT_FALSE(fields.count('M') == 0 || fields.at('M').empty()) << "ErrorResponse without a message: " << describe(r);
  if (!message_part.empty() && fields.count('M')) {
    EXPECT_NE(fields.at('M').find(message_part), std::string::npos) << describe(r);
  }
  bool closed = false;
  const auto more = c.read_until_closed(closed);
  EXPECT_TRUE(closed) << "connection still open " << kReadTimeoutMs << " ms after the FATAL error";
  for (const auto& m : more) ADD_FAILURE() << "unexpected message '" << m.type << "' after the FATAL error";
}

// Logs in on a raw socket as a user whose client auth in Sluice is "trust"; asserts ReadyForQuery.
void raw_trust_login(RawClient& c, const std::string& user, const std::string& database) {
  ASSERT_TRUE(c.send(startup_message(user, database)));
  ReadResult last;
  const auto seen = read_until_error_or_ready(c, last);
  ASSERT_EQ(last.status, ReadStatus::message) << describe(last);
  ASSERT_EQ(last.msg.type, 'Z') << "login did not reach ReadyForQuery: " << describe(last);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front().type, 'R');
  bool saw_key = false;
  bool saw_server_version = false;
  for (const auto& m : seen) {
    saw_key |= m.type == 'K';
    saw_server_version |= m.type == 'S' && m.body.rfind("server_version", 0) == 0;
  }
  EXPECT_TRUE(saw_key) << "no BackendKeyData during login";
  EXPECT_TRUE(saw_server_version) << "no ParameterStatus server_version during login";
}

// Runs a simple query on a logged-in raw connection and returns the first column of the first row.
std::string raw_query_value(RawClient& c, const std::string& sql) {
  EXPECT_TRUE(c.send(message('Q', cstr(sql))));
  std::string value = "<no row>";
  for (;;) {
    const ReadResult r = c.read_message();
    if (r.status != ReadStatus::message) {
      ADD_FAILURE() << "query `" << sql << "`: " << describe(r);
      return value;
    }
    if (r.msg.type == 'D' && value == "<no row>" && r.msg.body.size() >= 6) {
      const std::int32_t len = get_int32(r.msg.body, 2);
      value = len < 0 ? "<null>" : r.msg.body.substr(6, static_cast<std::size_t>(len));
    } else if (r.msg.type == 'E') {
      ADD_FAILURE() << "query `" << sql << "`: " << describe(r);
    } else if (r.msg.type == 'Z') {
      return value;
    }
  }
}

// The client side of the three password exchanges with a wrong password, on a raw socket.
// Sends the startup message and answers whatever auth request comes with a wrong secret.
// Returns the first message after the last answer (expected: ErrorResponse 28P01).
void send_wrong_password(RawClient& c, const std::string& user, const std::string& database,
                         std::int32_t expected_auth_code) {
  ASSERT_TRUE(c.send(startup_message(user, database)));
  const ReadResult request = c.read_message();
  ASSERT_EQ(auth_code(request), expected_auth_code) << "auth request for " << user << ": " << describe(request);
  switch (expected_auth_code) {
    case 3:  // AuthenticationCleartextPassword
      ASSERT_TRUE(c.send(message('p', cstr("wrong_pw"))));
      break;
    case 5:  // AuthenticationMD5Password: "md5" + 32 hex digits that match nothing
      ASSERT_TRUE(c.send(message('p', cstr("md5" + std::string(32, '0')))));
      break;
    case 10: {  // AuthenticationSASL: a SCRAM-SHA-256 exchange with a proof that cannot be right
      ASSERT_NE(request.msg.body.find("SCRAM-SHA-256"), std::string::npos) << describe(request);
      const std::string client_nonce = "rOprNGfwEbeRWgbNEkqO";
      const std::string client_first = "n,,n=,r=" + client_nonce;
      std::string initial = cstr("SCRAM-SHA-256");
      put_int32(initial, static_cast<std::int32_t>(client_first.size()));
      initial += client_first;
      ASSERT_TRUE(c.send(message('p', initial)));
      const ReadResult server_first = c.read_message();
      ASSERT_EQ(auth_code(server_first), 11) << "expected SASLContinue: " << describe(server_first);
      const std::string text = server_first.msg.body.substr(4);
      ASSERT_EQ(text.rfind("r=" + client_nonce, 0), 0u) << "server-first-message: " << text;
      const std::string nonce = text.substr(2, text.find(',') - 2);
      const std::string client_final = "c=biws,r=" + nonce + ",p=" + base64(std::string(32, '\0'));
      ASSERT_TRUE(c.send(message('p', client_final)));
      break;
    }
    default:
      FAIL() << "unexpected auth code " << expected_auth_code;
  }
}

std::string error_of(const PgConn& conn) { return PQerrorMessage(conn.get()); }

std::string current_user_of(const PgConn& conn) {
  PgResult res(PQexec(conn.get(), "SELECT current_user"));
  if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) return std::string("<error: ") + error_of(conn) + ">";
  return PQgetvalue(res.get(), 0, 0);
}

// default_config() without the [databases."*"] table.
std::string config_without_database_wildcard() {
  std::string toml = default_config();
  const std::string table = "[databases.\"*\"]\nhost = \"{pg_host}\"\nport = {pg_port}\n";
  const auto pos = toml.find(table);
  if (pos == std::string::npos) throw std::runtime_error("default_config() changed shape");
  return toml.erase(pos, table.size());
}

// default_config() with extra lines at the end of the [sluice] table.
std::string config_with_sluice_keys(const std::string& lines) {
  std::string toml = default_config();
  const auto pos = toml.find("\n[pool]");
  if (pos == std::string::npos) throw std::runtime_error("default_config() changed shape");
  return toml.insert(pos, "\n" + lines);
}

// ------------------------------------------------------------------------------------------
// One Sluice with default_config() for the whole suite; tests that need another config
// start their own.

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { sluice_ = std::make_unique<SluiceProcess>(default_config()); }
  static void TearDownTestSuite() { sluice_.reset(); }

  void SetUp() override {
    ASSERT_TRUE(sluice_) << "Sluice did not start (see SetUpTestSuite's error)";
    if (!sluice_->running() && !reported_exit_) {
      reported_exit_ = true;  // show the log once, not in every following test
      FAIL() << "Sluice exited (status " << sluice_->stop() << ", -1 = killed by a signal); its log:\n"
             << sluice_->log();
    }
    ASSERT_TRUE(sluice_->running()) << "Sluice is not running (it exited during an earlier test)";
  }

  static SluiceProcess& sluice() { return *sluice_; }

  // After a malformed-input test: Sluice still runs and serves a normal libpq client.
  static void expect_still_serving() {
    ASSERT_TRUE(sluice_->running()) << "Sluice exited; log:\n" << sluice_->log();
    PgConn conn = connect(sluice_->conninfo("sluice_test", "app", "app_pw"));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
    EXPECT_EQ(current_user_of(conn), "app");
  }

  static std::unique_ptr<SluiceProcess> sluice_;
  static bool reported_exit_;
};
std::unique_ptr<SluiceProcess> AuthTest::sluice_;
bool AuthTest::reported_exit_ = false;

// --- each client auth method, right password ---------------------------------------------

struct Credentials {
  const char* user;
  const char* password;
  std::int32_t auth_code;  // what Sluice must ask the client for: 10 SASL, 5 MD5, 3 cleartext, 0 ok
};

class AuthMethodTest : public AuthTest, public ::testing::WithParamInterface<Credentials> {};

TEST_P(AuthMethodTest, RightPasswordLogsIn) {
  const Credentials cred = GetParam();
  PgConn conn = connect(sluice().conninfo("sluice_test", cred.user, cred.password));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  EXPECT_EQ(current_user_of(conn), cred.user);
  EXPECT_EQ(PQparameterStatus(conn.get(), "server_version") != nullptr, true) << "no server_version";
  EXPECT_NE(PQbackendPID(conn.get()), 0) << "no BackendKeyData";
}

TEST_P(AuthMethodTest, SluiceAsksForTheConfiguredMethod) {
  const Credentials cred = GetParam();
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_message(cred.user, "sluice_test")));
  const ReadResult r = c.read_message();
  EXPECT_EQ(auth_code(r), cred.auth_code) << describe(r);
}

INSTANTIATE_TEST_SUITE_P(Methods, AuthMethodTest,
                         ::testing::Values(Credentials{"app", "app_pw", 10}, Credentials{"md5user", "md5_pw", 5},
                                           Credentials{"plainuser", "plain_pw", 3},
                                           Credentials{"trustuser", "anything", 0}),
                         [](const auto& info) { return std::string(info.param.user); });

TEST_F(AuthTest, TrustUserIgnoresTheClientPasswordAndUsesServerPassword) {
  PgConn conn = connect(sluice().conninfo("sluice_test", "trustuser", ""));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  EXPECT_EQ(current_user_of(conn), "trustuser");
}

TEST_F(AuthTest, RawTrustLoginRunsAQuery) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  raw_trust_login(c, "trustuser", "sluice_test");
  EXPECT_EQ(raw_query_value(c, "SELECT current_user"), "trustuser");
  EXPECT_TRUE(c.send(message('X', "")));
}

TEST_F(AuthTest, SecondDatabaseAndSuperuserLogIn) {
  PgConn conn = connect(sluice().conninfo("sluice_other", "postgres", "postgres_pw"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  PgResult res(PQexec(conn.get(), "SELECT current_database()"));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << error_of(conn);
  EXPECT_STREQ(PQgetvalue(res.get(), 0, 0), "sluice_other");
}

// --- wrong passwords: 28P01 -------------------------------------------------------------------

class WrongPasswordTest : public AuthTest, public ::testing::WithParamInterface<Credentials> {};

TEST_P(WrongPasswordTest, LibpqSeesPostgresText) {
  const Credentials cred = GetParam();
  PgConn conn = connect(sluice().conninfo("sluice_test", cred.user, "wrong_pw"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
  EXPECT_NE(error_of(conn).find(std::string("password authentication failed for user \"") + cred.user + "\""),
            std::string::npos)
      << error_of(conn);
}

TEST_P(WrongPasswordTest, RawClientGets28P01AndClose) {
  const Credentials cred = GetParam();
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_NO_FATAL_FAILURE(send_wrong_password(c, cred.user, "sluice_test", cred.auth_code));
  expect_fatal_then_close(c, "28P01", std::string("password authentication failed for user \"") + cred.user + "\"");
}

TEST_P(WrongPasswordTest, EmptyPasswordIsRejected) {
  const Credentials cred = GetParam();
  PgConn conn = connect(sluice().conninfo("sluice_test", cred.user, ""));
  EXPECT_EQ(PQstatus(conn.get()), CONNECTION_BAD) << "logged in without a password";
}

INSTANTIATE_TEST_SUITE_P(Methods, WrongPasswordTest,
                         ::testing::Values(Credentials{"app", "app_pw", 10}, Credentials{"md5user", "md5_pw", 5},
                                           Credentials{"plainuser", "plain_pw", 3}),
                         [](const auto& info) { return std::string(info.param.user); });

// --- unknown user: 28000 ---------------------------------------------------------------------

TEST_F(AuthTest, UnknownUserLibpq) {
  PgConn conn = connect(sluice().conninfo("sluice_test", "ghost", "ghost_pw"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
  EXPECT_NE(error_of(conn).find("role \"ghost\" does not exist"), std::string::npos) << error_of(conn);
}

TEST_F(AuthTest, UnknownUserRawGets28000AndClose) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_message("ghost", "sluice_test")));
  expect_fatal_then_close(c, "28000", "role \"ghost\" does not exist");
}

TEST_F(AuthTest, StartupWithoutUserGets28000) {
  // PostgreSQL: FATAL 28000 "no PostgreSQL user name specified in startup packet".
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_packet(kProtocol3, cstr("database") + cstr("sluice_test") + '\0')));
  expect_fatal_then_close(c, "28000");
  expect_still_serving();
}

// --- unknown database: 3D000 ------------------------------------------------------------------

// With [databases."*"], an unknown name goes to PostgreSQL, which answers 3D000 itself.
TEST_F(AuthTest, UnknownDatabaseViaWildcardLibpq) {
  PgConn conn = connect(sluice().conninfo("nope", "app", "app_pw"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
  EXPECT_NE(error_of(conn).find("database \"nope\" does not exist"), std::string::npos) << error_of(conn);
}

TEST_F(AuthTest, UnknownDatabaseViaWildcardRawGets3D000AndClose) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_message("trustuser", "nope")));
  // Sluice may accept the client (trust) before it asks PostgreSQL; skip the auth request.
  ReadResult r = c.read_message();
  ASSERT_EQ(r.status, ReadStatus::message) << describe(r);
  if (r.msg.type == 'R') {
    ASSERT_EQ(auth_code(r), 0) << describe(r);
  } else {
    ASSERT_EQ(r.msg.type, 'E') << describe(r);
    EXPECT_EQ(error_fields(r.msg.body)['C'], "3D000") << describe(r);
    return;
  }
  expect_fatal_then_close(c, "3D000", "database \"nope\" does not exist");
  expect_still_serving();
}

TEST(AuthNoWildcardTest, UnknownDatabaseAnsweredBySluice) {
  SluiceProcess sluice(config_without_database_wildcard());
  {
    PgConn conn = connect(sluice.conninfo("sluice_test", "app", "app_pw"));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  }
  {
    // A database PostgreSQL has but Sluice does not route is unknown too.
    PgConn conn = connect(sluice.conninfo("postgres", "app", "app_pw"));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
    EXPECT_NE(error_of(conn).find("database \"postgres\" does not exist"), std::string::npos) << error_of(conn);
  }
  {
    PgConn conn = connect(sluice.conninfo("nope", "app", "app_pw"));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
    EXPECT_NE(error_of(conn).find("database \"nope\" does not exist"), std::string::npos) << error_of(conn);
  }
  RawClient c(sluice.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_message("trustuser", "nope")));
  ReadResult r = c.read_message();
  ASSERT_EQ(r.status, ReadStatus::message) << describe(r);
  if (r.msg.type == 'R') {  // accepted the client first (trust): the error must follow
    ASSERT_EQ(auth_code(r), 0) << describe(r);
    expect_fatal_then_close(c, "3D000", "database \"nope\" does not exist");
  } else {
    ASSERT_EQ(r.msg.type, 'E') << describe(r);
    const auto fields = error_fields(r.msg.body);
    EXPECT_EQ(fields.count('C') ? fields.at('C') : "", "3D000") << describe(r);
    EXPECT_EQ(fields.count('S') ? fields.at('S') : "", "FATAL") << describe(r);
    bool closed = false;
    c.read_until_closed(closed);
    EXPECT_TRUE(closed);
  }
}

// --- SSLRequest / GSSENCRequest: 'N', then a plain startup on the same connection -----------

TEST_F(AuthTest, LibpqSslModePreferFallsBackToPlain) {
  PgConn conn = connect(sluice().conninfo("sluice_test", "app", "app_pw", "sslmode=prefer"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  EXPECT_EQ(PQsslInUse(conn.get()), 0);
  EXPECT_EQ(current_user_of(conn), "app");
}

TEST_F(AuthTest, LibpqSslModeDisable) {
  PgConn conn = connect(sluice().conninfo("sluice_test", "app", "app_pw", "sslmode=disable"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  EXPECT_EQ(current_user_of(conn), "app");
}

class EncryptionRequestTest : public AuthTest, public ::testing::WithParamInterface<std::int32_t> {};

TEST_P(EncryptionRequestTest, AnsweredNThenPlainStartupWorks) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_packet(GetParam(), "")));
  const ReadResult answer = c.read_exact(1);
  ASSERT_EQ(answer.status, ReadStatus::message) << describe(answer);
  ASSERT_EQ(answer.msg.body, "N");
  raw_trust_login(c, "trustuser", "sluice_test");
  EXPECT_EQ(raw_query_value(c, "SELECT current_user"), "trustuser");
}

INSTANTIATE_TEST_SUITE_P(Requests, EncryptionRequestTest, ::testing::Values(kSslRequestCode, kGssEncRequestCode),
                         [](const auto& info) { return info.param == kSslRequestCode ? "SSL" : "GSSENC"; });

// --- malformed input before login: ErrorResponse 08P01, close, Sluice keeps serving ---------

TEST_F(AuthTest, StartupLengthBelowFour) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  std::string bytes;
  put_int32(bytes, 3);
  ASSERT_TRUE(c.send(bytes));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

TEST_F(AuthTest, StartupLengthTooShortForAVersion) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  std::string bytes;
  put_int32(bytes, 6);
  ASSERT_TRUE(c.send(bytes + "ab"));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

TEST_F(AuthTest, NegativeStartupLength) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  std::string bytes;
  put_int32(bytes, -8);
  ASSERT_TRUE(c.send(bytes + "abcd"));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

// The length word alone says the packet is over the 10000-byte cap: rejected without
// waiting for (or buffering) the rest.
TEST_F(AuthTest, OversizedStartupPacketRejectedFromItsHeader) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  std::string bytes;
  put_int32(bytes, 20000);
  put_int32(bytes, kProtocol3);
  ASSERT_TRUE(c.send(bytes + cstr("user") + cstr("app")));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

// A complete, well-formed startup packet of 20000 bytes. The server may close before reading
// it all, in which case the kernel may turn the close into a reset that overtakes the
// ErrorResponse; so only "closed, and if anything came, it is 08P01" is asserted.
TEST_F(AuthTest, OversizedStartupPacketFullySent) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  std::string body = cstr("user") + cstr("app") + cstr("database") + cstr("sluice_test") +
                     cstr("application_name") + cstr(std::string(20000, 'x')) + '\0';
  const std::string packet = startup_packet(kProtocol3, body);
  ASSERT_GT(packet.size(), 10000u);
  (void)c.send(packet);  // may fail with a reset once the server has closed
  bool closed = false;
  const auto seen = c.read_until_closed(closed);
  EXPECT_TRUE(closed) << "oversized startup packet: connection still open";
  for (const auto& m : seen) {
    EXPECT_EQ(m.type, 'E');
    if (m.type == 'E') {
      EXPECT_EQ(error_fields(m.body)['C'], "08P01");
    }
  }
  expect_still_serving();
}

TEST_F(AuthTest, GarbageBytes) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: sluice\r\n\r\n"));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

TEST_F(AuthTest, StartupWithoutTerminator) {
  // PostgreSQL: FATAL 08P01 "invalid startup packet layout: expected terminator as last byte".
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_packet(kProtocol3, cstr("user") + "app")));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

// PostgreSQL 15 answers a 2.0 startup in the 2.0 format: 'E', then the NUL-terminated text
// "FATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n" (no length word, no
// SQLSTATE field; 0A000 internally), then closes. A protocol-3 ErrorResponse with 0A000 is
// accepted too.
TEST_F(AuthTest, Protocol2StartupRejected) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_message("app", "sluice_test", kProtocol2)));
  bool closed = false;
  const std::string reply = c.read_all_until_closed(closed);
  EXPECT_TRUE(closed) << "connection still open after a protocol 2.0 startup";
  ASSERT_FALSE(reply.empty()) << "no error for a protocol 2.0 startup";
  ASSERT_EQ(reply[0], 'E') << reply;
  if (reply.find("FATAL:") == 1) {  // 2.0 format, as PostgreSQL
    EXPECT_NE(reply.find("unsupported frontend protocol 2.0"), std::string::npos) << reply;
    EXPECT_EQ(reply.back(), '\0') << "2.0-format error must be NUL-terminated";
  } else {  // one protocol-3 ErrorResponse
    ASSERT_GE(reply.size(), 5u);
    const std::int32_t len = get_int32(reply, 1);
    ASSERT_EQ(static_cast<std::size_t>(len) + 1, reply.size()) << "one ErrorResponse, then close";
    const auto fields = error_fields(reply.substr(5));
    EXPECT_EQ(fields.count('C') ? fields.at('C') : "", "0A000");
    EXPECT_NE(fields.count('M') ? fields.at('M').find("2.0") : std::string::npos, std::string::npos)
        << "message should name the protocol version";
  }
  expect_still_serving();
}

TEST_F(AuthTest, Protocol4StartupRejectedWith0A000) {
  // PostgreSQL: FATAL 0A000 "unsupported frontend protocol 4.0: server supports 3.0 to 3.0".
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(startup_message("app", "sluice_test", 4 << 16)));
  expect_fatal_then_close(c, "0A000", "unsupported frontend protocol");
  expect_still_serving();
}

// --- malformed input after login ---------------------------------------------------------------

TEST_F(AuthTest, MessageLengthBelowFourAfterLogin) {
  RawClient c(sluice().port());
  ASSERT_TRUE(c.connected());
  ASSERT_NO_FATAL_FAILURE(raw_trust_login(c, "trustuser", "sluice_test"));
  std::string bytes = "Q";
  put_int32(bytes, 2);
  ASSERT_TRUE(c.send(bytes));
  expect_fatal_then_close(c, "08P01");
  expect_still_serving();
}

TEST(AuthMaxMessageSizeTest, HugeMessageAfterLoginRejected) {
  SluiceProcess sluice(config_with_sluice_keys("max_message_size = \"1MB\""));
  {
    // Under the cap: a ~512 kB query goes through.
    PgConn conn = connect(sluice.conninfo("sluice_test", "app", "app_pw"));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
    const std::string sql = "SELECT length('" + std::string(512 * 1024, 'a') + "')";
    PgResult res(PQexec(conn.get(), sql.c_str()));
    ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << error_of(conn);
    EXPECT_STREQ(PQgetvalue(res.get(), 0, 0), "524288");
  }
  {
    // Over the cap: the length word alone (2 MB) is rejected; the body is never sent, so the
    // server must not wait for it.
    RawClient c(sluice.port());
    ASSERT_TRUE(c.connected());
    ASSERT_NO_FATAL_FAILURE(raw_trust_login(c, "trustuser", "sluice_test"));
    std::string bytes = "Q";
    put_int32(bytes, 2 * 1024 * 1024);
    ASSERT_TRUE(c.send(bytes + "SELECT "));
    expect_fatal_then_close(c, "08P01");
  }
  {
    // Over the default 64 MB cap too: a length of ~2 GB.
    RawClient c(sluice.port());
    ASSERT_TRUE(c.connected());
    ASSERT_NO_FATAL_FAILURE(raw_trust_login(c, "trustuser", "sluice_test"));
    std::string bytes = "Q";
    put_int32(bytes, 0x7ffffff0);
    ASSERT_TRUE(c.send(bytes));
    expect_fatal_then_close(c, "08P01");
  }
  ASSERT_TRUE(sluice.running()) << sluice.log();
  PgConn conn = connect(sluice.conninfo("sluice_test", "app", "app_pw"));
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  EXPECT_EQ(current_user_of(conn), "app");
}

// Many bad clients at once, then good ones: nothing leaks into the good sessions.
TEST_F(AuthTest, ManyMalformedClientsThenNormalClients) {
  std::vector<std::unique_ptr<RawClient>> bad;
  for (int i = 0; i < 20; ++i) {
    bad.push_back(std::make_unique<RawClient>(sluice().port()));
    ASSERT_TRUE(bad.back()->connected());
    ASSERT_TRUE(bad.back()->send(i % 2 == 0 ? std::string("\xff\xff\xff\xff garbage") : std::string("GET / HTTP/1.0\r\n\r\n")));
  }
  for (auto& c : bad) {
    bool closed = false;
    c->read_until_closed(closed);
    EXPECT_TRUE(closed);
  }
  for (int i = 0; i < 3; ++i) expect_still_serving();
}

// Sessions that ended in login errors or protocol violations leave nothing behind that keeps
// Sluice from a clean shutdown: SIGTERM → exit 0 (the harness SIGKILLs after 10 s, giving -1).
TEST(AuthShutdownTest, SigtermAfterFailedLoginsExitsZero) {
  SluiceProcess sluice(default_config());
  {
    RawClient c(sluice.port());
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\n\r\n"));
    expect_fatal_then_close(c, "08P01");
  }
  {
    PgConn conn = connect(sluice.conninfo("sluice_test", "app", "wrong_pw"));
    EXPECT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
  }
  {
    PgConn conn = connect(sluice.conninfo("sluice_test", "ghost", "x"));
    EXPECT_EQ(PQstatus(conn.get()), CONNECTION_BAD);
  }
  {
    PgConn conn = connect(sluice.conninfo("sluice_test", "app", "app_pw"));
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << error_of(conn);
  }
  EXPECT_EQ(sluice.stop(), 0) << "Sluice did not exit with status 0 within 10 s of SIGTERM";
}

// --- the raw client against PostgreSQL itself --------------------------------------------------
// These pin down PostgreSQL's own behaviour that the Sluice tests above imitate, and check
// the raw client's exchanges (a wrong SCRAM proof, a wrong MD5 hash) are well-formed.

TEST(PostgresReference, WrongPasswordsGet28P01) {
  auto& pg = PostgresServer::shared();
  for (const auto& [user, code] : std::vector<std::pair<std::string, std::int32_t>>{
           {"app", 10}, {"md5user", 5}, {"plainuser", 3}}) {
    SCOPED_TRACE(user);
    RawClient c(pg.port());
    ASSERT_TRUE(c.connected());
    ASSERT_NO_FATAL_FAILURE(send_wrong_password(c, user, "sluice_test", code));
    expect_fatal_then_close(c, "28P01", "password authentication failed for user \"" + user + "\"");
  }
}

TEST(PostgresReference, StartupErrors) {
  auto& pg = PostgresServer::shared();
  {
    RawClient c(pg.port());
    ASSERT_TRUE(c.send(startup_packet(kProtocol3, cstr("user") + "app")));
    expect_fatal_then_close(c, "08P01", "invalid startup packet layout");
  }
  {
    RawClient c(pg.port());
    ASSERT_TRUE(c.send(startup_message("app", "sluice_test", 4 << 16)));
    expect_fatal_then_close(c, "0A000", "unsupported frontend protocol 4.0");
  }
  {
    RawClient c(pg.port());
    ASSERT_TRUE(c.send(startup_packet(kProtocol3, cstr("database") + cstr("sluice_test") + '\0')));
    expect_fatal_then_close(c, "28000", "no PostgreSQL user name specified");
  }
  {
    RawClient c(pg.port());
    ASSERT_TRUE(c.send(startup_message("app", "sluice_test", kProtocol2)));
    bool closed = false;
    const std::string reply = c.read_all_until_closed(closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(reply, std::string("EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n") + '\0');
  }
  {
    RawClient c(pg.port());
    ASSERT_TRUE(c.send(startup_packet(kSslRequestCode, "")));
    const ReadResult answer = c.read_exact(1);
    ASSERT_EQ(answer.status, ReadStatus::message);
    EXPECT_EQ(answer.msg.body, "N");  // the harness's PostgreSQL has no TLS
  }
}

}  // namespace
}  // namespace sluice::test
