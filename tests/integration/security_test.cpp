// TLS on both sides of Sluice, [[hba]] access rules, [auth_query] and SCRAM secrets (pass-through),
// and the auth-failure throttle, with real
// clients (libpq, psql, pgbench, a raw OpenSSL client for PostgreSQL 17's direct TLS) and the
// shared PostgreSQL 15 switched to ssl = on with a role that may only log in over TLS.
//
// Certificates are made per test binary with the `openssl` command: a test CA, a second CA
// nobody trusts, a server certificate for localhost / 127.0.0.1 (used by Sluice and by
// PostgreSQL), and client certificates for the roles.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/clients.h"
#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;

PostgresServer& pg() { return PostgresServer::shared(); }

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  const ProcessResult r = run(argv, {}, 60s);
  if (r.exit_code != 0) throw std::runtime_error("openssl " + args.front() + " failed:\n" + r.output);
}

// A CA and certificates it signs, in `dir`.
struct Certificates {
  std::string dir;
  std::string path(const std::string& name) const { return dir + "/" + name; }

  void make_ca(const std::string& name, const std::string& subject) const {
    openssl({"req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             path(name + ".key"), "-out", path(name + ".crt"), "-subj", subject, "-days", "3"});
  }
  // A certificate for `subject` signed by `ca`; `alt_names` e.g. "DNS:localhost,IP:127.0.0.1".
  void make_leaf(const std::string& name, const std::string& ca, const std::string& subject,
                 const std::string& alt_names = "") const {
    openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             path(name + ".key"), "-out", path(name + ".csr"), "-subj", subject});
    std::vector<std::string> sign = {"x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".crt"), "-CAkey",
                                     path(ca + ".key"), "-CAcreateserial", "-out", path(name + ".crt"), "-days", "3"};
    if (!alt_names.empty()) {
      write_file(path(name + ".ext"), "subjectAltName=" + alt_names + "\n");
      sign.insert(sign.end(), {"-extfile", path(name + ".ext")});
    }
    openssl(sign);
  }
};

const Certificates& certs() {
  static const Certificates made = [] {
    Certificates c;
    c.dir = pg().socket_dir() + "/tls-certs";
    std::filesystem::create_directories(c.dir);
    c.make_ca("ca", "/CN=Sluice Test CA");
    c.make_ca("other-ca", "/CN=Untrusted Test CA");
    c.make_leaf("server", "ca", "/CN=localhost", "DNS:localhost,IP:127.0.0.1");
    c.make_leaf("other-server", "other-ca", "/CN=localhost", "DNS:localhost,IP:127.0.0.1");
    c.make_leaf("wrong-name-server", "ca", "/CN=db.example.com", "DNS:db.example.com");
    c.make_leaf("client-app", "ca", "/CN=app");
    c.make_leaf("client-mallory", "ca", "/CN=mallory");
    c.make_leaf("client-untrusted", "other-ca", "/CN=app");
    // libpq refuses a private key that others may read.
    for (const auto& entry : std::filesystem::directory_iterator(c.dir))
      if (entry.path().extension() == ".key") ::chmod(entry.path().c_str(), 0600);
    return c;
  }();
  return made;
}

// The shared PostgreSQL with ssl = on (the test CA's server certificate) and a role `tlsonly`
// that pg_hba.conf admits over TLS only.
void enable_postgres_tls() {
  static bool done = false;
  if (done) return;
  const std::string data = pg().data_dir();
  std::filesystem::copy_file(certs().path("server.crt"), data + "/pg-server.crt",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(certs().path("server.key"), data + "/pg-server.key",
                             std::filesystem::copy_options::overwrite_existing);
  ::chmod((data + "/pg-server.key").c_str(), 0600);
  if (::geteuid() == 0) {
    if (const passwd* postgres = ::getpwnam("postgres")) {
      for (const char* file : {"/pg-server.crt", "/pg-server.key", "/pg_hba.conf"})
        if (::chown((data + file).c_str(), postgres->pw_uid, postgres->pw_gid) != 0) throw std::runtime_error("chown");
    }
  }
  const std::string hba = read_file(data + "/pg_hba.conf");
  write_file(data + "/pg_hba.conf",
             "hostssl all tlsonly 127.0.0.1/32 scram-sha-256\nhost all tlsonly 127.0.0.1/32 reject\n"
             "host all aq_md5 127.0.0.1/32 md5\n" + hba);
  pg().exec("DO $$ BEGIN CREATE ROLE tlsonly LOGIN PASSWORD 'tls_pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  pg().exec("GRANT ALL ON DATABASE sluice_test TO tlsonly");
  pg().exec("ALTER SYSTEM SET ssl = on");
  pg().exec("ALTER SYSTEM SET ssl_cert_file = '" + data + "/pg-server.crt'");
  pg().exec("ALTER SYSTEM SET ssl_key_file = '" + data + "/pg-server.key'");
  pg().exec("SELECT pg_reload_conf()");
  const bool ready = wait_for([&] {
    PgConn direct = connect(pg().conninfo("sluice_test", "tlsonly", "tls_pw") + " sslmode=require");
    return PQstatus(direct.get()) == CONNECTION_OK;
  });
  if (!ready) throw std::runtime_error("PostgreSQL did not accept TLS logins after the reload:\n" + pg().log());
  done = true;
}

// default_config() plus `tls` (TOML placed before [databases...]) and extra users.
std::string config_with(const std::string& tls, const std::string& mode = "session") {
  std::string toml = default_config(5);
  if (mode != "session") {
    const auto at = toml.find("mode = \"session\"");
    toml.replace(at, std::string("mode = \"session\"").size(), "mode = \"" + mode + "\"");
  }
  const auto databases = toml.find("[databases.sluice_test]");
  toml.insert(databases, tls + "\n");
  toml += "\n[users.tlsonly]\nauth = \"scram-sha-256\"\npassword = \"tls_pw\"\n";
  return toml;
}

std::string client_tls(const std::string& mode, bool with_ca = false) {
  return "[tls.client]\nmode = \"" + mode + "\"\ncert = \"" + certs().path("server.crt") + "\"\nkey = \"" +
         certs().path("server.key") + "\"\n" + (with_ca ? "ca = \"" + certs().path("ca.crt") + "\"\n" : "");
}

// Client-certificate conninfo parts for libpq.
std::string client_cert(const std::string& name) {
  return "sslcert=" + certs().path(name + ".crt") + " sslkey=" + certs().path(name + ".key");
}

std::string verify_full(const std::string& root = "ca") {
  return "sslmode=verify-full sslrootcert=" + certs().path(root + ".crt") + " host=localhost hostaddr=127.0.0.1";
}

struct Login {
  bool ok = false;
  bool tls = false;
  std::string error;   // libpq's message (with SQLSTATE: connect_verbose)
  std::string value;   // of `sql` when logged in
};

Login login(const std::string& conninfo, const std::string& sql = "SELECT 1") {
  Login l;
  PgConn conn = connect_verbose(conninfo, 60s);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    l.error = login_error(conn.get());
    return l;
  }
  l.tls = PQsslInUse(conn.get()) == 1;
  l.value = value_of(conn.get(), sql);
  l.ok = !l.value.starts_with("<error");
  if (!l.ok) l.error = l.value;
  return l;
}

// ---- Clients -> Sluice ----------------------------------------------------------------------

TEST(TlsClient, RequireRefusesPlaintextWith28000AndServesTls) {
  SluiceProcess sluice(config_with(client_tls("require")));
  const Login plain = login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=disable"));
  EXPECT_FALSE(plain.ok);
  EXPECT_EQ(sqlstate_in_message(plain.error), "28000") << plain.error;
  EXPECT_TRUE(contains(plain.error, "TLS is required")) << plain.error;

  const Login tls = login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=require"), "SELECT current_user");
  ASSERT_TRUE(tls.ok) << tls.error << "\n" << sluice.log();
  EXPECT_TRUE(tls.tls);
  EXPECT_EQ(tls.value, "app");
  // Every password method works over TLS.
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "md5user", "md5_pw", "sslmode=require")).ok);
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "plainuser", "plain_pw", "sslmode=require")).ok);
  const Login wrong = login(sluice.conninfo("sluice_test", "app", "nope", "sslmode=require"));
  EXPECT_EQ(sqlstate_in_message(wrong.error), "28P01") << wrong.error;
}

TEST(TlsClient, ScramChannelBindingIsOfferedAndChecked) {
  SluiceProcess sluice(config_with(client_tls("prefer")));
  // channel_binding=require: libpq insists on SCRAM-SHA-256-PLUS and checks the server's proof.
  const Login bound = login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=require channel_binding=require"));
  EXPECT_TRUE(bound.ok) << bound.error << "\n" << sluice.log();
  // Without TLS there is nothing to bind to: libpq refuses by itself (Sluice offers no PLUS).
  const Login plain = login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=disable channel_binding=require"));
  EXPECT_FALSE(plain.ok);
  EXPECT_TRUE(contains(plain.error, "channel binding")) << plain.error;
  // prefer: plaintext still allowed.
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=disable")).ok);
}

TEST(TlsClient, PsqlVerifyFullChecksTheCertificate) {
  SluiceProcess sluice(config_with(client_tls("require")));
  auto psql = [&](const std::string& root) {
    return run({pg_tool("psql"), "-X", "-At", "-c", "SELECT 'tls ok'",
                "host=localhost hostaddr=127.0.0.1 port=" + std::to_string(sluice.port()) +
                    " dbname=sluice_test user=app sslmode=verify-full sslrootcert=" + certs().path(root + ".crt")},
               {"PGPASSWORD=app_pw"}, 60s);
  };
  const ProcessResult good = psql("ca");
  EXPECT_EQ(good.exit_code, 0) << good.output << "\n" << sluice.log();
  EXPECT_TRUE(contains(good.output, "tls ok")) << good.output;
  const ProcessResult untrusted = psql("other-ca");
  EXPECT_NE(untrusted.exit_code, 0);
  EXPECT_TRUE(contains(untrusted.output, "certificate verify failed")) << untrusted.output;
}

TEST(TlsClient, ClientCertificatesUnderVerifyFull) {
  SluiceProcess sluice(config_with(client_tls("verify-full", true)));
  const std::string base = sluice.conninfo("sluice_test", "app", "app_pw", verify_full());
  const Login with_cert = login(base + " " + client_cert("client-app"), "SELECT current_user");
  EXPECT_TRUE(with_cert.ok) << with_cert.error << "\n" << sluice.log();
  // No certificate: the handshake itself fails.
  EXPECT_FALSE(login(base).ok);
  // A certificate from a CA Sluice does not trust: refused in the handshake.
  EXPECT_FALSE(login(base + " " + client_cert("client-untrusted")).ok);
  // A valid certificate for another name: 28000.
  const Login mallory = login(base + " " + client_cert("client-mallory"));
  EXPECT_FALSE(mallory.ok);
  EXPECT_EQ(sqlstate_in_message(mallory.error), "28000") << mallory.error;
  EXPECT_TRUE(contains(mallory.error, "certificate validation")) << mallory.error;
}

// ---- [[hba]] ---------------------------------------------------------------------------------

TEST(Hba, FirstMatchingRuleDecides) {
  const std::string rules = R"(
[[hba]]
user = "md5user"
database = "all"
method = "reject"

[[hba]]
type = "hostnossl"
database = "sluice_other"
user = "app"
method = "reject"

[[hba]]
database = ["sluice_test", "sluice_other"]
user = ["app", "plainuser"]
address = "127.0.0.1/32"
method = "scram-sha-256"

[[hba]]
database = "all"
user = "trustuser"
address = "10.0.0.0/8"
method = "trust"

[[hba]]
type = "hostssl"
database = "all"
user = "trustuser"
method = "trust"
)";
  SluiceProcess sluice(config_with(client_tls("prefer") + rules));
  const Login rejected = login(sluice.conninfo("sluice_test", "md5user", "md5_pw", "sslmode=disable"));
  EXPECT_EQ(sqlstate_in_message(rejected.error), "28000") << rejected.error;
  EXPECT_TRUE(contains(rejected.error, "rejects connection")) << rejected.error;

  const Login nossl = login(sluice.conninfo("sluice_other", "app", "app_pw", "sslmode=disable"));
  EXPECT_EQ(sqlstate_in_message(nossl.error), "28000") << nossl.error;
  // The same over TLS skips the hostnossl rule and matches the scram rule.
  EXPECT_TRUE(login(sluice.conninfo("sluice_other", "app", "app_pw", "sslmode=require")).ok);
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=disable")).ok);
  // plainuser's own auth is cleartext; the rule says scram-sha-256 and a plain password can do both.
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "plainuser", "plain_pw", "sslmode=disable")).ok);

  // trustuser from 127.0.0.1 without TLS: the 10/8 rule does not match, the hostssl one needs TLS.
  const Login none = login(sluice.conninfo("sluice_test", "trustuser", "", "sslmode=disable"));
  EXPECT_EQ(sqlstate_in_message(none.error), "28000") << none.error;
  EXPECT_TRUE(contains(none.error, "no [[hba]] rule for host \"127.0.0.1\", user \"trustuser\"")) << none.error;
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "trustuser", "", "sslmode=require")).ok);
}

TEST(Hba, CertMethodLogsInWithTheCertificateAlone) {
  const std::string rules = R"(
[[hba]]
type = "hostssl"
database = "all"
user = "app"
method = "cert"

[[hba]]
database = "all"
user = "all"
method = "scram-sha-256"
)";
  SluiceProcess sluice(config_with(client_tls("prefer", true) + rules));
  const std::string tls = verify_full();
  // The password is wrong on purpose: the certificate is the proof.
  const Login cert = login(sluice.conninfo("sluice_test", "app", "not-the-password", tls + " " + client_cert("client-app")),
                           "SELECT current_user");
  EXPECT_TRUE(cert.ok) << cert.error << "\n" << sluice.log();
  EXPECT_EQ(cert.value, "app");
  const Login no_cert = login(sluice.conninfo("sluice_test", "app", "app_pw", tls));
  EXPECT_EQ(sqlstate_in_message(no_cert.error), "28000") << no_cert.error;
  EXPECT_TRUE(contains(no_cert.error, "requires a valid client certificate")) << no_cert.error;
  const Login other = login(sluice.conninfo("sluice_test", "app", "app_pw", tls + " " + client_cert("client-mallory")));
  EXPECT_EQ(sqlstate_in_message(other.error), "28000") << other.error;
  EXPECT_TRUE(contains(other.error, "certificate authentication failed")) << other.error;
  // Without TLS the hostssl rule does not apply and the password rule does.
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=disable")).ok);
}

TEST(Hba, RepeatedFailuresFromOneAddressAreSlowedDown) {
  SluiceProcess sluice(config_with("[tls.server]\nmode = \"disable\"\n"));
  for (int i = 0; i < 5; ++i) {
    const Login wrong = login(sluice.conninfo("sluice_test", "app", "wrong-" + std::to_string(i)));
    EXPECT_EQ(sqlstate_in_message(wrong.error), "28P01") << wrong.error;
  }
  // From the fourth failure on, answers wait (100 ms, then 200 ms, ...): the log says so. (No timing
  // is asserted; the delays themselves are unit-tested.)
  EXPECT_TRUE(wait_for([&] { return contains(sluice.log(), "failed to log in repeatedly"); })) << sluice.log();
  // The right password still logs in (after its wait).
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "app", "app_pw")).ok);
}

// ---- PostgreSQL 17's direct TLS (no SSLRequest), with a raw OpenSSL client ---------------------

struct DirectTlsResult {
  bool handshake = false;
  std::string messages;  // types of the messages received after the startup packet, in order
  std::string error_code;
};

DirectTlsResult direct_tls_login(int port, bool with_alpn) {
  ::signal(SIGPIPE, SIG_IGN);  // a refused connection must fail the test, not end the binary
  DirectTlsResult result;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return result;
  }
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (with_alpn) {
    static const unsigned char kAlpn[] = "\x0apostgresql";
    SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof kAlpn - 1);
  }
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), fd);
  result.handshake = SSL_connect(ssl.get()) == 1;
  if (result.handshake) {
    std::string body = std::string("user") + '\0' + "trustuser" + '\0' + "database" + '\0' + "sluice_test" + '\0' + '\0';
    std::string packet(8, '\0');
    const std::uint32_t length = htonl(static_cast<std::uint32_t>(8 + body.size()));
    const std::uint32_t version = htonl(196608);
    std::memcpy(packet.data(), &length, 4);
    std::memcpy(packet.data() + 4, &version, 4);
    packet += body;
    SSL_write(ssl.get(), packet.data(), static_cast<int>(packet.size()));
    std::string in;
    char buffer[4096];
    for (;;) {
      // Parse what has arrived; stop at ReadyForQuery or an error.
      while (in.size() >= 5) {
        std::uint32_t n = 0;
        std::memcpy(&n, in.data() + 1, 4);
        n = ntohl(n);
        if (in.size() < 1 + n) break;
        const char type = in[0];
        result.messages += type;
        if (type == 'E') {
          const std::string fields = in.substr(5, n - 4);
          const auto at = fields.find(std::string("\0C", 2));
          if (at != std::string::npos) result.error_code = fields.substr(at + 2, 5);
        }
        in.erase(0, 1 + n);
        if (type == 'Z' || type == 'E') {
          SSL_shutdown(ssl.get());
          ::close(fd);
          return result;
        }
      }
      const int n = SSL_read(ssl.get(), buffer, sizeof buffer);
      if (n <= 0) break;
      in.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return result;
}

TEST(TlsClient, DirectTlsWithAlpnLogsIn) {
  SluiceProcess sluice(config_with(client_tls("require")));
  const DirectTlsResult direct = direct_tls_login(sluice.port(), true);
  ASSERT_TRUE(direct.handshake) << sluice.log();
  EXPECT_TRUE(contains(direct.messages, "R")) << direct.messages;
  EXPECT_TRUE(direct.messages.ends_with("Z")) << direct.messages << "\n" << sluice.log();
  // Without ALPN "postgresql", PostgreSQL 17's rule: refused with 08P01 after the handshake.
  const DirectTlsResult no_alpn = direct_tls_login(sluice.port(), false);
  ASSERT_TRUE(no_alpn.handshake);
  EXPECT_EQ(no_alpn.error_code, "08P01") << no_alpn.messages;
}

// FATAL messages Sluice sends just before it closes (idle timeout, shutdown) go out over TLS too.
TEST(TlsClient, LastWordsReachTlsClients) {
  for (const std::string mode : {"session", "transaction"}) {
    SluiceProcess sluice(config_with(client_tls("require") + "[timeouts]\nclient_idle = \"1s\"\n", mode));
    PgConn idle = connect_verbose(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=require"));
    ASSERT_EQ(PQstatus(idle.get()), CONNECTION_OK) << login_error(idle.get()) << sluice.log();
    std::string notices;
    collect_notices(idle.get(), &notices);
    ASSERT_EQ(value_of(idle.get(), "SELECT 1"), "1");
    ASSERT_TRUE(await_closed(idle.get())) << sluice.log();
    const std::string told = notices + PQerrorMessage(idle.get());
    EXPECT_EQ(sqlstate_in_message(told), "57P05") << mode << ": " << told;

    PgConn waiting = connect_verbose(sluice.conninfo("sluice_test", "app", "app_pw", "sslmode=require"));
    ASSERT_EQ(PQstatus(waiting.get()), CONNECTION_OK) << login_error(waiting.get());
    std::string shutdown_notices;
    collect_notices(waiting.get(), &shutdown_notices);
    ASSERT_EQ(value_of(waiting.get(), "SELECT 2"), "2");
    sluice.send_signal(SIGTERM);
    ASSERT_TRUE(await_closed(waiting.get())) << sluice.log();
    const std::string shutdown = shutdown_notices + PQerrorMessage(waiting.get());
    EXPECT_EQ(sqlstate_in_message(shutdown), "57P01") << mode << ": " << shutdown;
  }
}

// ---- Sluice -> PostgreSQL ------------------------------------------------------------------

std::string server_tls(const std::string& mode, const std::string& ca = "ca") {
  return "[tls.server]\nmode = \"" + mode + "\"\nca = \"" + certs().path(ca + ".crt") + "\"\n";
}

TEST(TlsServer, VerifyFullToATlsOnlyPostgres) {
  enable_postgres_tls();
  SluiceProcess sluice(config_with(server_tls("verify-full")));
  const Login through = login(sluice.conninfo("sluice_test", "tlsonly", "tls_pw", "sslmode=disable"),
                              "SELECT ssl::text || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  ASSERT_TRUE(through.ok) << through.error << "\n" << sluice.log();
  EXPECT_TRUE(through.value.starts_with("true TLSv1.")) << through.value;
  // Other roles too go over TLS under verify-full.
  EXPECT_EQ(login(sluice.conninfo("sluice_test", "app", "app_pw"),
                  "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .value,
            "true");
}

TEST(TlsServer, UntrustedCaOrWrongHostNameIsRefusedWith08006) {
  enable_postgres_tls();
  {
    SluiceProcess sluice(config_with(server_tls("verify-ca", "other-ca")));
    const Login refused = login(sluice.conninfo("sluice_test", "tlsonly", "tls_pw"));
    EXPECT_FALSE(refused.ok);
    EXPECT_EQ(sqlstate_in_message(refused.error), "08006") << refused.error;
    EXPECT_TRUE(contains(refused.error, "certificate verify failed")) << refused.error;
  }
  {
    // A certificate from the trusted CA that names another host: fine for verify-ca, refused by
    // verify-full. The "server" is a second Sluice (in front of PostgreSQL) presenting that
    // certificate to clients.
    const std::string wrong_name = "[tls.client]\nmode = \"require\"\ncert = \"" + certs().path("wrong-name-server.crt") +
                                   "\"\nkey = \"" + certs().path("wrong-name-server.key") + "\"\n";
    SluiceProcess front(config_with(wrong_name));
    auto behind = [&](const std::string& mode) {
      std::string toml = config_with(server_tls(mode));
      const std::string other = "[databases.sluice_other]\nhost = \"{pg_host}\"\nport = {pg_port}";
      const auto at = toml.find(other);
      if (at == std::string::npos) throw std::logic_error("no sluice_other in the config");
      toml.replace(at, other.size(),
                   "[databases.sluice_other]\nhost = \"127.0.0.1\"\nport = " + std::to_string(front.port()) +
                       "\ndbname = \"sluice_test\"");
      return toml;
    };
    SluiceProcess verify_ca(behind("verify-ca"));
    const Login chain_only = login(verify_ca.conninfo("sluice_other", "app", "app_pw"), "SELECT current_user");
    EXPECT_TRUE(chain_only.ok) << chain_only.error << "\n" << verify_ca.log() << "\n" << front.log();
    SluiceProcess verify_full(behind("verify-full"));
    const Login wrong_host = login(verify_full.conninfo("sluice_other", "app", "app_pw"));
    EXPECT_FALSE(wrong_host.ok);
    EXPECT_EQ(sqlstate_in_message(wrong_host.error), "08006") << wrong_host.error;
    EXPECT_TRUE(contains(wrong_host.error, "IP address mismatch")) << wrong_host.error << "\n" << verify_full.log();
  }
}

TEST(TlsServer, DisabledOrPerDatabaseOverride) {
  enable_postgres_tls();
  std::string toml = config_with("[tls.server]\nmode = \"disable\"\n");
  toml = add_to(toml, "[databases.sluice_other]", "tls = { mode = \"require\" }");
  SluiceProcess sluice(toml);
  // Plain TCP: PostgreSQL's own refusal (its hostssl-only rule) reaches the client as it is.
  const Login plain = login(sluice.conninfo("sluice_test", "tlsonly", "tls_pw"));
  EXPECT_EQ(sqlstate_in_message(plain.error), "28000") << plain.error;
  EXPECT_TRUE(contains(plain.error, "pg_hba.conf rejects connection")) << plain.error;
  // The override turns TLS on for sluice_other only.
  const Login tls = login(sluice.conninfo("sluice_other", "tlsonly", "tls_pw"),
                          "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  EXPECT_TRUE(tls.ok) << tls.error << "\n" << sluice.log();
  EXPECT_EQ(tls.value, "true");
}

// ---- Reload and the relay over TLS -----------------------------------------------------------

TEST(TlsClient, ReloadPicksUpNewCertificatesWithoutDroppingSessions) {
  const std::string dir = certs().dir + "/reload";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(certs().path("server.crt"), dir + "/live.crt", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(certs().path("server.key"), dir + "/live.key", std::filesystem::copy_options::overwrite_existing);
  const std::string tls = "[tls.client]\nmode = \"require\"\ncert = \"" + dir + "/live.crt\"\nkey = \"" + dir + "/live.key\"\n";
  SluiceProcess sluice(config_with(tls));
  PgConn before = connect_verbose(sluice.conninfo("sluice_test", "app", "app_pw", verify_full("ca")));
  ASSERT_EQ(PQstatus(before.get()), CONNECTION_OK) << PQerrorMessage(before.get()) << sluice.log();

  std::filesystem::copy_file(certs().path("other-server.crt"), dir + "/live.crt", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(certs().path("other-server.key"), dir + "/live.key", std::filesystem::copy_options::overwrite_existing);
  sluice.send_signal(SIGHUP);
  const bool reloaded = wait_for([&] {
    return login(sluice.conninfo("sluice_test", "app", "app_pw", verify_full("other-ca"))).ok;
  });
  EXPECT_TRUE(reloaded) << sluice.log();
  EXPECT_FALSE(login(sluice.conninfo("sluice_test", "app", "app_pw", verify_full("ca"))).ok);
  // The session from before the reload keeps its TLS connection.
  EXPECT_EQ(value_of(before.get(), "SELECT 41 + 1"), "42");

  // A file that is not a key: the reload is refused whole, with the key's name and OpenSSL's reason.
  write_file(dir + "/live.key", "not a key\n");
  sluice.send_signal(SIGHUP);
  EXPECT_TRUE(wait_for([&] { return contains(sluice.log(), "cannot load private key"); })) << sluice.log();
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "app", "app_pw", verify_full("other-ca"))).ok);
}

TEST(TlsClient, PgbenchInTransactionModeOverTlsBothWays) {
  enable_postgres_tls();
  SluiceProcess sluice(config_with(client_tls("require") + server_tls("verify-full"), "transaction"));
  const std::vector<std::string> connection = {"-h", "127.0.0.1", "-p", std::to_string(sluice.port()), "-U", "app"};
  auto pgbench = [&](std::vector<std::string> options) {
    std::vector<std::string> argv = {pg_tool("pgbench")};
    argv.insert(argv.end(), connection.begin(), connection.end());
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("sluice_test");
    return run(argv, {"PGPASSWORD=app_pw", "PGSSLMODE=require"}, 300s);
  };
  const ProcessResult init = pgbench({"-i", "-s", "1", "-q"});
  ASSERT_EQ(init.exit_code, 0) << init.output << "\n" << sluice.log();
  // Clients park between transactions (TLS reads for real then) and share 5 server connections.
  const ProcessResult r = pgbench({"-c", "8", "-j", "2", "-t", "300", "-M", "extended"});
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << sluice.log();
  EXPECT_TRUE(contains(r.output, "number of transactions actually processed: 2400/2400")) << r.output;
  EXPECT_TRUE(contains(r.output, "number of failed transactions: 0")) << r.output;
  const ProcessResult connect_each = pgbench({"-c", "4", "-j", "2", "-t", "50", "-C", "-S"});
  EXPECT_EQ(connect_each.exit_code, 0) << connect_each.output;
  EXPECT_TRUE(contains(connect_each.output, "number of failed transactions: 0")) << connect_each.output;
}

// ---- [auth_query] and SCRAM secrets in the config (pass-through) ------------------------------

// Roles that exist only in PostgreSQL: aq_scram (SCRAM), aq_md5 (stored as md5), aq_expired (valid
// until 2000).
void create_lookup_roles() {
  static bool done = false;
  if (done) return;
  enable_postgres_tls();  // also adds the md5 pg_hba line for aq_md5
  pg().exec("DO $$ BEGIN CREATE ROLE aq_scram LOGIN PASSWORD 'aq_pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  pg().exec("SET password_encryption = 'md5'; "
            "DO $$ BEGIN CREATE ROLE aq_md5 LOGIN PASSWORD 'aq_md5_pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  pg().exec("DO $$ BEGIN CREATE ROLE aq_expired LOGIN PASSWORD 'aq_pw' VALID UNTIL '2000-01-01'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  pg().exec("GRANT ALL ON DATABASE sluice_test TO aq_scram, aq_md5, aq_expired");
  done = true;
}

std::string auth_query_config(const std::string& mode = "session") {
  return config_with("[auth_query]\nuser = \"postgres\"\ncache = \"1s\"\n", mode);
}

TEST(AuthQuery, UsersOnlyInPostgresLogInWithTheirSecrets) {
  create_lookup_roles();
  SluiceProcess sluice(auth_query_config("transaction"));
  // Sluice holds only the SCRAM secret: it verifies the client, then logs in to PostgreSQL with the
  // ClientKey the client proved.
  for (int i = 0; i < 3; ++i) {
    const Login scram = login(sluice.conninfo("sluice_test", "aq_scram", "aq_pw"), "SELECT current_user");
    ASSERT_TRUE(scram.ok) << scram.error << "\n" << sluice.log();
    EXPECT_EQ(scram.value, "aq_scram");
  }
  const Login md5 = login(sluice.conninfo("sluice_test", "aq_md5", "aq_md5_pw"), "SELECT current_user");
  EXPECT_TRUE(md5.ok) << md5.error << "\n" << sluice.log();
  EXPECT_EQ(md5.value, "aq_md5");

  const Login wrong = login(sluice.conninfo("sluice_test", "aq_scram", "nope"));
  EXPECT_EQ(sqlstate_in_message(wrong.error), "28P01") << wrong.error;
  // An expired role and an unknown one look like a wrong password to the client (as in PostgreSQL).
  const Login expired = login(sluice.conninfo("sluice_test", "aq_expired", "aq_pw"));
  EXPECT_EQ(sqlstate_in_message(expired.error), "28P01") << expired.error;
  EXPECT_TRUE(contains(sluice.log(), "rolvaliduntil has passed")) << sluice.log();
  const Login unknown = login(sluice.conninfo("sluice_test", "nobody_here", "x"));
  EXPECT_EQ(sqlstate_in_message(unknown.error), "28P01") << unknown.error;
  EXPECT_TRUE(contains(sluice.log(), "no such role \"nobody_here\"")) << sluice.log();
  // Users with their own entry are not looked up.
  EXPECT_TRUE(login(sluice.conninfo("sluice_test", "app", "app_pw")).ok);
}

TEST(AuthQuery, ChangedPasswordIsSeenAfterTheCacheExpires) {
  create_lookup_roles();
  pg().exec("DO $$ BEGIN CREATE ROLE aq_rotate LOGIN PASSWORD 'first_pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  pg().exec("ALTER ROLE aq_rotate PASSWORD 'first_pw'");
  pg().exec("GRANT ALL ON DATABASE sluice_test TO aq_rotate");
  SluiceProcess sluice(auth_query_config());
  ASSERT_TRUE(login(sluice.conninfo("sluice_test", "aq_rotate", "first_pw")).ok) << sluice.log();
  pg().exec("ALTER ROLE aq_rotate PASSWORD 'second_pw'");
  // cache = 1s: the new secret is used once the cached answer is older than that.
  EXPECT_TRUE(wait_for([&] { return login(sluice.conninfo("sluice_test", "aq_rotate", "second_pw")).ok; }))
      << sluice.log();
  EXPECT_FALSE(login(sluice.conninfo("sluice_test", "aq_rotate", "first_pw")).ok);
}

TEST(ScramSecret, ConfiguredSecretWithoutPlainPasswordLogsInThrough) {
  enable_postgres_tls();
  // app's secret as PostgreSQL stores it: Sluice never sees the password, yet logs in to PostgreSQL
  // (same salt and iterations) with the keys the client proves.
  const std::string secret = pg().query_value("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
  ASSERT_TRUE(secret.starts_with("SCRAM-SHA-256$")) << secret;
  std::string toml = config_with(client_tls("prefer"), "transaction");
  const std::string plain = "[users.app]\nauth = \"scram-sha-256\"\npassword = \"app_pw\"";
  const auto at = toml.find(plain);
  ASSERT_NE(at, std::string::npos);
  toml.replace(at, plain.size(), "[users.app]\nauth = \"scram-sha-256\"\npassword = \"" + secret + "\"");
  SluiceProcess sluice(toml);
  for (const std::string mode : {"sslmode=disable", "sslmode=require"}) {
    const Login l = login(sluice.conninfo("sluice_test", "app", "app_pw", mode), "SELECT current_user");
    EXPECT_TRUE(l.ok) << mode << ": " << l.error << "\n" << sluice.log();
  }
  EXPECT_EQ(sqlstate_in_message(login(sluice.conninfo("sluice_test", "app", "wrong")).error), "28P01");
  // The secret never shows in the log.
  EXPECT_FALSE(contains(sluice.log(), secret.substr(secret.find('$') + 1, 20))) << sluice.log();
}

}  // namespace
}  // namespace sluice::test
