// Tests for config/: TOML -> validated Config, error positions and keys, the "*"
// fallbacks, pool precedence, and the duration/size parsers.
#include "config/config.h"
#include "tests/config/loading.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::config {
namespace {

using namespace std::chrono_literals;

using namespace sluice::config::test_support;

constexpr std::string_view kScramSecret =
    "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$NrPjB0koz1gmuv9gFuoi4oHuTSeYyIRQNOEMCoHzrDM=:"
    "ppVuvDgPGo/M0EYRUfKNajfhj1IbNcB1RLyfjHMquR0=";
constexpr std::string_view kMd5Hash = "md5b71fca3210fe5cd484579342dd7bc01a";  // "reporting-password" + "reporting"

// ---- valid documents --------------------------------------------------------------

TEST(ConfigLoadTest, FullConfigRoundTrip) {
  const std::string text = doc(R"(
[sluice]
listen = ["127.0.0.1:6432", "[::1]:6433", "0.0.0.0:7000"]
workers = 4
max_client_conn = 500
log_level = "debug"
max_message_size = "16MB"

[pool]
mode = "session"
size = 10
server_reset_query = ""

[timeouts]
client_login = "30s"
server_connect = "250ms"

[databases.app]
host = "db.internal"
port = 5433
dbname = "app_production"
pool = { size = 50, server_reset_query = "RESET ALL" }

[databases."*"]
host = "127.0.0.1"

[users.app]
auth = "scram-sha-256"
password = "SCRAM_SECRET"
server_password = "app-password"
pool = { mode = "session", size = 7 }

[users.reporting]
auth = "md5"
password = "MD5_HASH"

[users.legacy]
auth = "cleartext"
password = "plain text"

[users."*"]
auth = "trust"
)");
  std::string filled = text;
  filled.replace(filled.find("SCRAM_SECRET"), 12, kScramSecret);
  filled.replace(filled.find("MD5_HASH"), 8, kMd5Hash);

  const LoadResult result = load_string(filled, "full.toml");
  ASSERT_TRUE(result.errors.empty()) << describe(result);
  ASSERT_TRUE(result.config.has_value());
  const Config& cfg = *result.config;

  EXPECT_EQ(cfg.source_file, "full.toml");
  ASSERT_EQ(cfg.listen.size(), 3u);
  EXPECT_EQ(cfg.listen[0].host, "127.0.0.1");
  EXPECT_EQ(cfg.listen[0].port, 6432);
  EXPECT_EQ(cfg.listen[1].host, "::1");
  EXPECT_EQ(cfg.listen[1].port, 6433);
  EXPECT_EQ(cfg.listen[2].host, "0.0.0.0");
  EXPECT_EQ(cfg.listen[2].port, 7000);
  EXPECT_EQ(cfg.workers, 4);
  EXPECT_EQ(cfg.max_client_conn, 500);
  EXPECT_EQ(cfg.log_level, "debug");
  EXPECT_EQ(cfg.max_message_size, 16u * 1024 * 1024);

  EXPECT_EQ(cfg.pool.mode, PoolMode::session);
  EXPECT_EQ(cfg.pool.size, 10);
  EXPECT_EQ(cfg.pool.server_reset_query, "");
  EXPECT_EQ(cfg.timeouts.client_login, 30s);
  EXPECT_EQ(cfg.timeouts.server_connect, 250ms);

  ASSERT_EQ(cfg.databases.size(), 2u);
  const Database& app = cfg.databases.at("app");
  EXPECT_EQ(app.name, "app");
  EXPECT_EQ(app.host, "db.internal");
  EXPECT_EQ(app.port, 5433);
  EXPECT_EQ(app.dbname, "app_production");
  EXPECT_FALSE(app.pool.mode.has_value());
  EXPECT_EQ(app.pool.size, 50);
  EXPECT_EQ(app.pool.server_reset_query, "RESET ALL");
  const Database& any = cfg.databases.at("*");
  EXPECT_EQ(any.name, "*");
  EXPECT_EQ(any.host, "127.0.0.1");
  EXPECT_EQ(any.port, 5432);
  EXPECT_EQ(any.dbname, "");  // the name the client asks for

  ASSERT_EQ(cfg.users.size(), 4u);
  const User& user_app = cfg.users.at("app");
  EXPECT_EQ(user_app.auth, AuthMethod::scram_sha_256);
  EXPECT_EQ(user_app.password, kScramSecret);
  EXPECT_EQ(user_app.server_password, "app-password");
  EXPECT_EQ(user_app.pool.mode, PoolMode::session);
  EXPECT_EQ(user_app.pool.size, 7);
  EXPECT_EQ(cfg.users.at("reporting").auth, AuthMethod::md5);
  EXPECT_EQ(cfg.users.at("reporting").password, kMd5Hash);
  EXPECT_EQ(cfg.users.at("reporting").server_password, "");
  EXPECT_EQ(cfg.users.at("legacy").auth, AuthMethod::cleartext);
  EXPECT_EQ(cfg.users.at("legacy").password, "plain text");
  EXPECT_EQ(cfg.users.at("*").auth, AuthMethod::trust);
  EXPECT_EQ(cfg.users.at("*").password, "");
}

TEST(ConfigLoadTest, DefaultsApplyWhenKeysAreOmitted) {
  const LoadResult result = load(R"(
[databases.app]
host = "127.0.0.1"

[users.app]
password = "secret"
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  ASSERT_EQ(cfg.listen.size(), 1u);
  EXPECT_EQ(cfg.listen[0].host, "127.0.0.1");
  EXPECT_EQ(cfg.listen[0].port, 6432);
  EXPECT_EQ(cfg.workers, 0);
  EXPECT_EQ(cfg.max_client_conn, 10000);
  EXPECT_EQ(cfg.log_level, "info");
  EXPECT_EQ(cfg.max_message_size, 64u * 1024 * 1024);
  EXPECT_EQ(cfg.pool.mode, PoolMode::session);
  EXPECT_EQ(cfg.pool.size, 20);
  EXPECT_EQ(cfg.pool.server_reset_query, "DISCARD ALL");
  EXPECT_EQ(cfg.timeouts.client_login, 60s);
  EXPECT_EQ(cfg.timeouts.server_connect, 5s);
  EXPECT_EQ(cfg.databases.at("app").port, 5432);
  EXPECT_EQ(cfg.databases.at("app").dbname, "app");  // defaults to the entry's name
  EXPECT_EQ(cfg.users.at("app").auth, AuthMethod::scram_sha_256);
  EXPECT_EQ(cfg.users.at("app").password, "secret");
}

TEST(ConfigLoadTest, ZeroDurationDisablesTimeout) {
  const LoadResult result = load(R"(
[timeouts]
client_login = "0s"
server_connect = "0ms"
[databases.app]
host = "h"
)");
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->timeouts.client_login, 0ms);
  EXPECT_EQ(result.config->timeouts.server_connect, 0ms);
}

TEST(ConfigLoadTest, ListenAddressesAreStoredCanonically) {
  const LoadResult result = load(R"(
[sluice]
listen = ["[0:0::1]:6432", "[2001:DB8::1]:1", "10.0.0.1:65535"]
[databases.app]
host = "h"
)");
  ASSERT_TRUE(result.config) << describe(result);
  const auto& listen = result.config->listen;
  ASSERT_EQ(listen.size(), 3u);
  EXPECT_EQ(listen[0].host, "::1");
  EXPECT_EQ(listen[1].host, "2001:db8::1");
  EXPECT_EQ(listen[1].port, 1);
  EXPECT_EQ(listen[2].host, "10.0.0.1");
  EXPECT_EQ(listen[2].port, 65535);
}

#ifdef SLUICE_SOURCE_DIR
TEST(ConfigLoadTest, ExampleFileLoadsCleanly) {
  const std::string path = std::string(SLUICE_SOURCE_DIR) + "/examples/sluice.toml";
  const LoadResult result = load_file(path);
  ASSERT_TRUE(result.errors.empty()) << describe(result);
  ASSERT_TRUE(result.config);
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.source_file, path);
  EXPECT_EQ(cfg.pool.mode, PoolMode::transaction);
  ASSERT_NE(cfg.find_database("app"), nullptr);
  EXPECT_EQ(cfg.find_database("app")->host, "127.0.0.1");
  EXPECT_EQ(cfg.find_database("app")->port, 5432);
  EXPECT_EQ(cfg.find_database("other")->name, "*");
  EXPECT_EQ(cfg.find_user("app")->auth, AuthMethod::scram_sha_256);
  EXPECT_EQ(cfg.find_user("reporting")->auth, AuthMethod::md5);
  EXPECT_EQ(cfg.find_user("nobody"), nullptr);  // users."*" is commented out
}
#endif

TEST(ConfigLoadTest, LoadFileReadsTheFile) {
  const std::string path = ::testing::TempDir() + "sluice_config_test.toml";
  {
    std::ofstream out(path);
    out << "[databases.app]\nhost = \"127.0.0.1\"\nport = 70000\n";
  }
  const LoadResult result = load_file(path);
  std::remove(path.c_str());
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_EQ(result.errors[0].file, path);
  EXPECT_EQ(result.errors[0].line, 3);
  EXPECT_EQ(result.errors[0].column, 8);
  EXPECT_EQ(result.errors[0].key, "databases.app.port");
}

TEST(ConfigLoadTest, LoadFileReportsAnUnreadableFile) {
  const std::string path = ::testing::TempDir() + "sluice_config_test_missing/none.toml";
  const LoadResult result = load_file(path);
  EXPECT_FALSE(result.config);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].file, path);
  EXPECT_EQ(result.errors[0].line, 0);
  EXPECT_NE(result.errors[0].message.find(std::strerror(ENOENT)), std::string::npos) << result.errors[0].message;
  EXPECT_EQ(result.errors[0].to_string().rfind(path + ": ", 0), 0u) << result.errors[0].to_string();
}

TEST(ConfigLoadTest, LoadFileReportsADirectory) {
  const LoadResult result = load_file(::testing::TempDir());
  EXPECT_FALSE(result.config);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].message.find(std::strerror(EISDIR)), std::string::npos) << result.errors[0].message;
}

// ---- errors: one kind at a time, each with its exact position and key -------------------

TEST(ConfigErrorTest, UnknownTopLevelKey) {
  EXPECT_TRUE(OnlyError(load(R"(
verbose = true
[databases.app]
host = "h"
)"),
                        1, 1, "verbose", "unknown key"));
}

TEST(ConfigErrorTest, UnknownTopLevelTable) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"

[timeout]
client_login = "5s"
)"),
                        4, 2, "timeout", "unknown key; did you mean \"timeouts\"?"));
}

TEST(ConfigErrorTest, UnknownNestedKey) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
  prot = 5432
)"),
                        3, 3, "databases.app.prot", "unknown key; did you mean \"port\"?"));
}

TEST(ConfigErrorTest, UnknownKeyInInlinePoolTable) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[users.bob]
password = "x"
pool = { size = 3, color = "red" }
)"),
                        5, 20, "users.bob.pool.color", "unknown key"));
}

TEST(ConfigErrorTest, UnknownKeyQuotesNonBareNames) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases."*"]
host = "h"
"max conn" = 1
)"),
                        3, 1, "databases.\"*\".\"max conn\"", "unknown key"));
}

TEST(ConfigTest, OperationsKeys) {
  const LoadResult result = load(R"(
[sluice]
metrics_listen = "127.0.0.1:9930"
shutdown_timeout = "5s"
so_reuseport = true
[databases.app]
host = "h"
)");
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->metrics_listen, "127.0.0.1:9930");
  EXPECT_EQ(result.config->shutdown_timeout.count(), 5000);
  EXPECT_TRUE(result.config->so_reuseport);
  const LoadResult defaults = load("[databases.app]\nhost = \"h\"\n");
  ASSERT_TRUE(defaults.config);
  EXPECT_EQ(defaults.config->metrics_listen, "");
  EXPECT_EQ(defaults.config->shutdown_timeout.count(), 30000);
  EXPECT_FALSE(defaults.config->so_reuseport);
  const LoadResult bad = load("[sluice]\nmetrics_listen = \"localhost:1\"\nso_reuseport = 1\n[databases.app]\nhost = \"h\"\n");
  std::vector<std::string> got;
  for (const auto& e : bad.errors) got.push_back(e.to_string());
  ASSERT_EQ(got.size(), 2u) << describe(bad);
  EXPECT_NE(got[0].find("sluice.metrics_listen: invalid address \"localhost:1\""), std::string::npos) << got[0];
  EXPECT_NE(got[1].find("sluice.so_reuseport"), std::string::npos) << got[1];
}

TEST(ConfigTest, FormatDurationIsTheInverseOfParse) {
  EXPECT_EQ(format_duration(Duration{5000}), "5s");
  EXPECT_EQ(format_duration(Duration{0}), "0s");
  EXPECT_EQ(format_duration(Duration{1500}), "1500ms");
  for (const char* text : {"250ms", "5s", "3600s"}) EXPECT_EQ(format_duration(*parse_duration(text)), text);
}

TEST(ConfigTest, ResilienceKeysHaveDefaults) {
  const LoadResult result = load("[databases.app]\nhost = \"h\"\n");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.timeouts.query.count(), 0);
  EXPECT_EQ(cfg.timeouts.client_idle.count(), 0);
  EXPECT_EQ(cfg.timeouts.server_idle.count(), 600'000);
  EXPECT_EQ(cfg.timeouts.server_lifetime.count(), 3'600'000);
  EXPECT_EQ(cfg.pool.min_size, 0);
  EXPECT_EQ(cfg.pool.reserve_size, 0);
  EXPECT_EQ(cfg.pool.reserve_timeout.count(), 5'000);
  EXPECT_EQ(cfg.health.check_query, "");
  EXPECT_EQ(cfg.health.check_delay.count(), 30'000);
  EXPECT_EQ(cfg.health.ban_time.count(), 30'000);
  EXPECT_EQ(cfg.retry.connect_attempts, 3);
  EXPECT_EQ(cfg.retry.backoff_initial.count(), 100);
  EXPECT_EQ(cfg.retry.backoff_max.count(), 1'000);
  const auto& db = cfg.databases.at("app");
  ASSERT_EQ(db.hosts.size(), 1u);
  EXPECT_EQ(db.hosts[0].to_string(), "h:5432");
  EXPECT_EQ(db.max_db_connections, 0);
}

TEST(ConfigTest, ResilienceKeysAreRead) {
  const LoadResult result = load(R"(
[pool]
min_size = 2
reserve_size = 3
reserve_timeout = "250ms"
[timeouts]
query = "10s"
client_idle = "5m"
server_idle = "30s"
server_lifetime = "1h"
[health]
check_query = "SELECT 1"
check_delay = "5s"
ban_time = "1m"
[retry]
connect_attempts = 5
backoff_initial = "50ms"
backoff_max = "2s"
[databases.app]
hosts = ["10.0.0.1:5433", "db2.example", "[::1]:6000"]
max_db_connections = 40
pool = { min_size = 1 }
[users.u]
auth = "trust"
max_user_connections = 7
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.pool.min_size, 2);
  EXPECT_EQ(cfg.pool.reserve_size, 3);
  EXPECT_EQ(cfg.pool.reserve_timeout.count(), 250);
  EXPECT_EQ(cfg.timeouts.query.count(), 10'000);
  EXPECT_EQ(cfg.timeouts.client_idle.count(), 300'000);
  EXPECT_EQ(cfg.timeouts.server_idle.count(), 30'000);
  EXPECT_EQ(cfg.timeouts.server_lifetime.count(), 3'600'000);
  EXPECT_EQ(cfg.health.check_query, "SELECT 1");
  EXPECT_EQ(cfg.health.check_delay.count(), 5'000);
  EXPECT_EQ(cfg.health.ban_time.count(), 60'000);
  EXPECT_EQ(cfg.retry.connect_attempts, 5);
  EXPECT_EQ(cfg.retry.backoff_initial.count(), 50);
  EXPECT_EQ(cfg.retry.backoff_max.count(), 2'000);
  const auto& db = cfg.databases.at("app");
  ASSERT_EQ(db.hosts.size(), 3u);
  EXPECT_EQ(db.hosts[0].to_string(), "10.0.0.1:5433");
  EXPECT_EQ(db.hosts[1].to_string(), "db2.example:5432");
  EXPECT_EQ(db.hosts[2].to_string(), "::1:6000");
  EXPECT_EQ(db.host, "10.0.0.1");
  EXPECT_EQ(db.port, 5433);
  EXPECT_EQ(db.max_db_connections, 40);
  EXPECT_EQ(cfg.users.at("u").max_user_connections, 7);
  EXPECT_EQ(cfg.pool_for(db, cfg.users.at("u")).min_size, 1);
}

TEST(ConfigErrorTest, ResilienceKeysAreValidated) {
  const LoadResult result = load(R"(
[pool]
min_size = -1
[retry]
connect_attempts = 0
backoff_initial = "2s"
backoff_max = "1s"
[databases.a]
hosts = ["h:1", "h:1"]
[databases.b]
host = "h"
hosts = ["h:2"]
[databases.c]
hosts = ["h:99999", ":5", "fe80::1:5432"]
[databases.d]
hosts = []
)");
  std::vector<std::string> got;
  for (const auto& e : result.errors) got.push_back(e.to_string());
  const std::vector<std::string> expected = {
      "test.toml:2:12: pool.min_size: must be at least 0, got -1",
      "test.toml:4:20: retry.connect_attempts: must be between 1 and 100, got 0",
      "test.toml:6:15: retry.backoff_max: backoff_max (1000ms) must not be shorter than backoff_initial (2000ms)",
      "test.toml:8:17: databases.a.hosts[1]: duplicate host \"h:1\"",
      "test.toml:11:9: databases.b.hosts: give either host (and port) or hosts, not both",
      "test.toml:13:10: databases.c.hosts[0]: invalid host \"h:99999\": port must be a number between 1 and 65535",
      "test.toml:13:21: databases.c.hosts[1]: invalid host \":5\": the host name must not be empty or contain spaces",
      "test.toml:13:27: databases.c.hosts[2]: write IPv6 addresses in brackets, e.g. \"[::1]:5432\"",
      "test.toml:15:9: databases.d.hosts: at least one host is required",
  };
  EXPECT_EQ(got, expected) << describe(result);
}

TEST(ConfigTest, StatementRecordingCanBeTurnedOff) {
  const LoadResult on = load("[databases.app]\nhost = \"h\"\n");
  ASSERT_TRUE(on.config);
  EXPECT_TRUE(on.config->slow_query.record);
  const LoadResult off = load("[slow_query]\nrecord = false\n[databases.app]\nhost = \"h\"\n");
  ASSERT_TRUE(off.config) << describe(off);
  EXPECT_FALSE(off.config->slow_query.record);
  EXPECT_TRUE(OnlyError(load("[slow_query]\nrecord = false\nlog = \"/tmp/sluice-config-test-slow.jsonl\"\n"
                             "[databases.app]\nhost = \"h\"\n"),
                        2, 10, "slow_query.record", "the slow-query log (log) would stay empty"));
}

TEST(ConfigTest, AdminAndStatsUsers) {
  const LoadResult result = load(R"(
[sluice]
admin_users = ["admin", "root"]
stats_users = ["monitor"]
[databases.app]
host = "h"
)");
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->admin_users, (std::vector<std::string>{"admin", "root"}));
  EXPECT_EQ(result.config->stats_users, (std::vector<std::string>{"monitor"}));
}

TEST(ConfigErrorTest, AdminUsersMustBeAnArrayOfNames) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
admin_users = "admin"
[databases.app]
host = "h"
)"),
                        2, 15, "sluice.admin_users", "expected an array of user names"));
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
stats_users = ["ok", 3]
[databases.app]
host = "h"
)"),
                        2, 22, "sluice.stats_users[1]", "expected a string"));
}

TEST(ConfigErrorTest, WrongType) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
workers = "4"
[databases.app]
host = "h"
)"),
                        2, 11, "sluice.workers", "expected an integer, got a string"));
}

TEST(ConfigErrorTest, WrongTypeForTable) {
  EXPECT_TRUE(OnlyError(load(R"(
pool = 5
[databases.app]
host = "h"
)"),
                        1, 8, "pool", "expected a table, got an integer"));
}

TEST(ConfigErrorTest, DurationGivenAsInteger) {
  EXPECT_TRUE(OnlyError(load(R"(
[timeouts]
client_login = 60
[databases.app]
host = "h"
)"),
                        2, 16, "timeouts.client_login", "expected a duration string with a unit, e.g. \"60s\""));
}

TEST(ConfigErrorTest, BadDuration) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[timeouts]
server_connect = "5 seconds"
)"),
                        4, 18, "timeouts.server_connect", "invalid duration \"5 seconds\""));
}

TEST(ConfigErrorTest, DurationTooLong) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[timeouts]
server_connect = "366d"
)"),
                        4, 18, "timeouts.server_connect", "too long"));
}

TEST(ConfigErrorTest, BadPort) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
port = 70000
)"),
                        3, 8, "databases.app.port", "must be between 1 and 65535, got 70000"));
  EXPECT_TRUE(OnlyError(load(R"(
[databases."*"]
host = "h"
port = 0
)"),
                        3, 8, "databases.\"*\".port", "must be between 1 and 65535, got 0"));
}

TEST(ConfigErrorTest, MissingHost) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
port = 5432
)"),
                        1, 12, "databases.app", "missing host"));
}

TEST(ConfigErrorTest, EmptyHost) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = ""
)"),
                        2, 8, "databases.app.host", "must be a non-empty host name"));
}

TEST(ConfigErrorTest, DuplicateListen) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
listen = ["127.0.0.1:6432", "[::1]:6432",
          "127.0.0.1:6432"]
[databases.app]
host = "h"
)"),
                        3, 11, "sluice.listen[2]", "duplicate listen address \"127.0.0.1:6432\""));
}

TEST(ConfigErrorTest, DuplicateListenIsFoundAcrossSpellings) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
listen = ["[::1]:6432", "[0::1]:6432"]
[databases.app]
host = "h"
)"),
                        2, 25, "sluice.listen[1]", "duplicate listen address"));
}

TEST(ConfigErrorTest, BadListenAddresses) {
  struct Case {
    std::string address;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"localhost:6432", "host must be an IP address (IPv4, or IPv6 in brackets), not a host name"},
      {"::1:6432", "write IPv6 addresses in brackets"},
      {"127.0.0.1", "expected \"host:port\""},
      {"127.0.0.1:", "port must be a number between 1 and 65535"},
      {"127.0.0.1:0", "port must be a number between 1 and 65535"},
      {"127.0.0.1:65536", "port must be a number between 1 and 65535"},
      {"127.0.0.1:+80", "port must be a number between 1 and 65535"},
      {"[::1]6432", "expected \"[IPv6]:port\""},
      {"[127.0.0.1]:6432", "host must be an IPv6 address inside brackets"},
      {"[::1:6432", "expected \"[IPv6]:port\""},
      {":6432", "host must be an IP address"},
  };
  for (const Case& c : cases) {
    const LoadResult result = load_string(
        "[sluice]\nlisten = [\"" + c.address + "\"]\n[databases.app]\nhost = \"h\"\n", "test.toml");
    EXPECT_TRUE(OnlyError(result, 2, 11, "sluice.listen[0]", "invalid listen address \"" + c.address + "\": " + c.message))
        << c.address;
  }
}

TEST(ConfigErrorTest, EmptyListen) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
listen = []
[databases.app]
host = "h"
)"),
                        2, 10, "sluice.listen", "at least one listen address is required"));
}

TEST(ConfigErrorTest, ListenMustBeAnArray) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
listen = "127.0.0.1:6432"
[databases.app]
host = "h"
)"),
                        2, 10, "sluice.listen", "expected an array"));
}

TEST(ConfigTest, PoolModesAndPreparedStatementCapOverridePerDatabaseAndUser) {
  const LoadResult result = load(R"(
[pool]
mode = "transaction"
max_prepared_statements = 50
[databases.app]
host = "h"
pool = { mode = "statement" }
[databases.other]
host = "h"
[users.app]
auth = "trust"
pool = { mode = "session", max_prepared_statements = 0 }
[users.bob]
auth = "trust"
)");
  ASSERT_TRUE(result.config) << (result.errors.empty() ? "" : result.errors.front().to_string());
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.pool.mode, PoolMode::transaction);
  EXPECT_EQ(cfg.pool.max_prepared_statements, 50);
  const auto& app = cfg.databases.at("app");
  const auto& other = cfg.databases.at("other");
  EXPECT_EQ(cfg.pool_for(app, cfg.users.at("bob")).mode, PoolMode::statement);
  EXPECT_EQ(cfg.pool_for(other, cfg.users.at("bob")).mode, PoolMode::transaction);
  EXPECT_EQ(cfg.pool_for(app, cfg.users.at("app")).mode, PoolMode::session);
  EXPECT_EQ(cfg.pool_for(app, cfg.users.at("app")).max_prepared_statements, 0);
  EXPECT_EQ(cfg.pool_for(app, cfg.users.at("bob")).max_prepared_statements, 50);
}

TEST(ConfigErrorTest, MaxPreparedStatementsRange) {
  EXPECT_TRUE(OnlyError(load(R"(
[pool]
max_prepared_statements = -1
[databases.app]
host = "h"
)"),
                        2, 27, "pool.max_prepared_statements", "must be between 0 and 100000, got -1"));
}

TEST(ConfigErrorTest, InvalidPoolMode) {
  EXPECT_TRUE(OnlyError(load(R"(
[pool]
mode = "sessions"
[databases.app]
host = "h"
)"),
                        2, 8, "pool.mode", "invalid pool mode \"sessions\""));
}

TEST(ConfigErrorTest, PoolSizeMustBePositive) {
  EXPECT_TRUE(OnlyError(load(R"(
[pool]
size = 0
[databases.app]
host = "h"
)"),
                        2, 8, "pool.size", "must be at least 1, got 0"));
}

TEST(ConfigErrorTest, InvalidLogLevel) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
log_level = "verbose"
[databases.app]
host = "h"
)"),
                        2, 13, "sluice.log_level", "invalid log level \"verbose\""));
}

TEST(ConfigErrorTest, MaxMessageSizeBounds) {
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
max_message_size = "512B"
[databases.app]
host = "h"
)"),
                        2, 20, "sluice.max_message_size", "between 1kB and 1GB"));
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
max_message_size = "2GB"
[databases.app]
host = "h"
)"),
                        2, 20, "sluice.max_message_size", "between 1kB and 1GB"));
  EXPECT_TRUE(OnlyError(load(R"(
[sluice]
max_message_size = 65536
[databases.app]
host = "h"
)"),
                        2, 20, "sluice.max_message_size", "expected a size string"));
  const LoadResult ok = load(R"(
[sluice]
max_message_size = "1GB"
[databases.app]
host = "h"
)");
  ASSERT_TRUE(ok.config) << describe(ok);
  EXPECT_EQ(ok.config->max_message_size, 1024u * 1024 * 1024);
}

TEST(ConfigErrorTest, InvalidAuthMethod) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[users.app]
auth = "password"
password = "x"
)"),
                        4, 8, "users.app.auth", "invalid auth method \"password\""));
}

TEST(ConfigErrorTest, Md5HashNeedsMd5Auth) {
  const std::string text = "[databases.app]\nhost = \"h\"\n[users.app]\nauth = \"scram-sha-256\"\npassword = \"" +
                           std::string(kMd5Hash) + "\"\n";
  EXPECT_TRUE(OnlyError(load_string(text, "test.toml"), 5, 12, "users.app.password",
                        "an md5 hash is only valid with auth = \"md5\""));
}

TEST(ConfigErrorTest, ScramSecretCannotVerifyMd5) {
  const std::string text =
      "[databases.app]\nhost = \"h\"\n[users.app]\nauth = \"md5\"\npassword = \"" + std::string(kScramSecret) + "\"\n";
  EXPECT_TRUE(OnlyError(load_string(text, "test.toml"), 5, 12, "users.app.password", "a SCRAM secret cannot verify"));
}

TEST(ConfigErrorTest, CleartextNeedsPlainPassword) {
  const std::string text =
      "[databases.app]\nhost = \"h\"\n[users.app]\nauth = \"cleartext\"\npassword = \"" + std::string(kMd5Hash) + "\"\n";
  EXPECT_TRUE(OnlyError(load_string(text, "test.toml"), 5, 12, "users.app.password", "needs a plain password"));
}

TEST(ConfigErrorTest, MalformedScramSecret) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[users.app]
password = "SCRAM-SHA-256$4096:not-base64"
)"),
                        4, 12, "users.app.password", "malformed SCRAM secret"));
}

TEST(ConfigErrorTest, Md5HashCannotServeEveryUser) {
  const std::string text =
      "[databases.app]\nhost = \"h\"\n[users.\"*\"]\nauth = \"md5\"\npassword = \"" + std::string(kMd5Hash) + "\"\n";
  EXPECT_TRUE(OnlyError(load_string(text, "test.toml"), 5, 12, "users.\"*\".password", "tied to one user name"));
}

TEST(ConfigErrorTest, MissingPassword) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[users.app]
auth = "md5"
)"),
                        3, 8, "users.app", "missing password: auth = \"md5\" needs one"));
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[users.app]
password = ""
)"),
                        4, 12, "users.app.password", "must not be empty with auth = \"scram-sha-256\""));
}

TEST(ConfigErrorTest, TrustNeedsNoPassword) {
  const LoadResult result = load(R"(
[databases.app]
host = "h"
[users."*"]
auth = "trust"
)");
  EXPECT_TRUE(result.config) << describe(result);
}

TEST(ConfigErrorTest, ScramSecretCannotBeAServerPassword) {
  const std::string text = "[databases.app]\nhost = \"h\"\n[users.app]\npassword = \"x\"\nserver_password = \"" +
                           std::string(kScramSecret) + "\"\n";
  EXPECT_TRUE(OnlyError(load_string(text, "test.toml"), 5, 19, "users.app.server_password",
                        "cannot be used to log in to PostgreSQL"));
}

TEST(ConfigErrorTest, SecretsNeverAppearInMessages) {
  const std::string text = "[databases.app]\nhost = \"h\"\n"
                           "[users.a]\nauth = \"scram-sha-256\"\npassword = \"" + std::string(kMd5Hash) + "\"\n"
                           "[users.b]\nauth = \"md5\"\npassword = \"" + std::string(kScramSecret) + "\"\n"
                           "[users.c]\npassword = \"SCRAM-SHA-256$hunter2\"\n"
                           "[users.d]\nauth = \"cleartext\"\npassword = \"" + std::string(kMd5Hash) + "\"\n"
                           "[users.e]\npassword = \"p\"\nserver_password = \"" + std::string(kScramSecret) + "\"\n";
  const LoadResult result = load_string(text, "test.toml");
  ASSERT_EQ(result.errors.size(), 5u) << describe(result);
  for (const ConfigError& e : result.errors) {
    const std::string s = e.to_string();
    EXPECT_EQ(s.find("b71fca"), std::string::npos) << s;
    EXPECT_EQ(s.find("AAECAwQF"), std::string::npos) << s;
    EXPECT_EQ(s.find("hunter2"), std::string::npos) << s;
  }
}

TEST(ConfigErrorTest, SyntaxError) {
  const LoadResult result = load(R"(
[databases.app]
host = "h"
port = 
)");
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  const ConfigError& e = result.errors[0];
  EXPECT_EQ(e.file, "test.toml");
  EXPECT_EQ(e.line, 3);
  EXPECT_EQ(e.column, 8);
  EXPECT_EQ(e.key, "");
  EXPECT_NE(e.message.find("expected value"), std::string::npos) << e.message;
  EXPECT_FALSE(result.config);
}

TEST(ConfigErrorTest, SyntaxErrorRedefinedKey) {
  const LoadResult result = load(R"(
[databases.app]
host = "h"
host = "i"
)");
  ASSERT_EQ(result.errors.size(), 1u) << describe(result);
  EXPECT_EQ(result.errors[0].line, 3);
  EXPECT_EQ(result.errors[0].key, "");
}

TEST(ConfigErrorTest, NoDatabases) {
  const LoadResult missing = load(R"(
[sluice]
workers = 1
)");
  ASSERT_EQ(missing.errors.size(), 1u) << describe(missing);
  EXPECT_EQ(missing.errors[0].line, 0);
  EXPECT_EQ(missing.errors[0].key, "databases");
  EXPECT_NE(missing.errors[0].message.find("at least one database is required"), std::string::npos);
  EXPECT_EQ(missing.errors[0].to_string().rfind("test.toml: databases: at least one database", 0), 0u)
      << missing.errors[0].to_string();

  EXPECT_TRUE(OnlyError(load(R"(
[databases]
)"),
                        1, 1, "databases", "at least one database is required"));
}

TEST(ConfigErrorTest, MultipleErrorsAreReportedTogetherInDocumentOrder) {
  const LoadResult result = load(R"(
[sluice]
listen = ["127.0.0.1:6432", "127.0.0.1:6432"]
workers = -1
colour = "blue"

[pool]
mode = "transactions"

[timeouts]
client_login = 5

[databases.app]
port = 99999

[users.app]
auth = "md5"
password = "SCRAM-SHA-256$4096:x$y:z"
)");
  ASSERT_FALSE(result.config);
  std::vector<std::string> got;
  for (const auto& e : result.errors) got.push_back(e.to_string());
  const std::vector<std::string> expected = {
      "test.toml:2:29: sluice.listen[1]: duplicate listen address \"127.0.0.1:6432\"",
      "test.toml:3:11: sluice.workers: must be at least 0, got -1",
      "test.toml:4:1: sluice.colour: unknown key",
      "test.toml:7:8: pool.mode: invalid pool mode \"transactions\"; expected \"session\", \"transaction\" or "
      "\"statement\"",
      "test.toml:10:16: timeouts.client_login: expected a duration string with a unit, e.g. \"5s\" or \"250ms\"; "
      "got the integer 5",
      "test.toml:12:12: databases.app: missing host",
      "test.toml:13:8: databases.app.port: must be between 1 and 65535, got 99999",
      "test.toml:17:12: users.app.password: a SCRAM secret cannot verify auth = \"md5\"; give a plain password or an "
      "md5 hash",
  };
  EXPECT_EQ(got, expected) << describe(result);
}

TEST(ConfigErrorTest, ToStringFormat) {
  ConfigError e{"f.toml", 3, 7, "databases.app.port", "bad"};
  EXPECT_EQ(e.to_string(), "f.toml:3:7: databases.app.port: bad");
  e.key.clear();
  EXPECT_EQ(e.to_string(), "f.toml:3:7: bad");
  e.line = 0;
  e.column = 0;
  EXPECT_EQ(e.to_string(), "f.toml: bad");
}

// ---- lookups ----------------------------------------------------------------------------------

TEST(ConfigLookupTest, WildcardDatabaseFallback) {
  const LoadResult result = load(R"(
[databases.app]
host = "a"
[databases."*"]
host = "b"
port = 5433
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;

  const Database* app = cfg.find_database("app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->host, "a");
  EXPECT_EQ(server_dbname(*app, "app"), "app");

  const Database* other = cfg.find_database("analytics");
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->name, "*");
  EXPECT_EQ(other->host, "b");
  EXPECT_EQ(other->port, 5433);
  EXPECT_EQ(other->dbname, "");
  EXPECT_EQ(server_dbname(*other, "analytics"), "analytics");
}

TEST(ConfigLookupTest, WildcardDatabaseWithExplicitDbname) {
  const LoadResult result = load(R"(
[databases."*"]
host = "b"
dbname = "shared"
)");
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(server_dbname(*result.config->find_database("x"), "x"), "shared");
}

TEST(ConfigLookupTest, WildcardUserFallback) {
  const LoadResult result = load(R"(
[databases.app]
host = "a"
[users.app]
password = "p"
[users."*"]
auth = "trust"
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  ASSERT_NE(cfg.find_user("app"), nullptr);
  EXPECT_EQ(cfg.find_user("app")->name, "app");
  ASSERT_NE(cfg.find_user("someone"), nullptr);
  EXPECT_EQ(cfg.find_user("someone")->name, "*");
  EXPECT_EQ(cfg.find_user("someone")->auth, AuthMethod::trust);
}

TEST(ConfigLookupTest, NoFallbackMeansNoMatch) {
  const LoadResult result = load(R"(
[databases.app]
host = "a"
[users.app]
password = "p"
)");
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->find_database("other"), nullptr);
  EXPECT_EQ(result.config->find_user("other"), nullptr);
}

TEST(ConfigLookupTest, PoolForPrecedence) {
  const LoadResult result = load(R"(
[pool]
size = 10
server_reset_query = "RESET ALL"
[databases.big]
host = "a"
pool = { size = 50 }
[databases.plain]
host = "a"
[users.small]
password = "p"
pool = { size = 2 }
[users.reset]
password = "p"
pool = { server_reset_query = "" }
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  const Database& big = cfg.databases.at("big");
  const Database& plain = cfg.databases.at("plain");
  const User& small = cfg.users.at("small");
  const User& reset = cfg.users.at("reset");

  PoolSettings s = cfg.pool_for(plain, reset);  // global size, user's reset query
  EXPECT_EQ(s.mode, PoolMode::session);
  EXPECT_EQ(s.size, 10);
  EXPECT_EQ(s.server_reset_query, "");

  s = cfg.pool_for(big, reset);  // database overrides global
  EXPECT_EQ(s.size, 50);
  EXPECT_EQ(s.server_reset_query, "");

  s = cfg.pool_for(big, small);  // user overrides database
  EXPECT_EQ(s.size, 2);
  EXPECT_EQ(s.server_reset_query, "RESET ALL");

  s = cfg.pool_for(plain, small);
  EXPECT_EQ(s.size, 2);
}

// ---- [slow_query] -------------------------------------------------------------------------

TEST(SlowQueryConfigTest, Defaults) {
  const LoadResult result = load(R"(
[databases.app]
host = "h"
[users.app]
auth = "trust"
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.slow_query.threshold, 500ms);
  EXPECT_EQ(cfg.slow_query.log, "");  // no log file unless one is configured
  EXPECT_FALSE(cfg.slow_query.log_parameters);
  EXPECT_EQ(cfg.slow_query.max_size, 100u * 1024 * 1024);
  EXPECT_EQ(cfg.slow_query.keep, 5);
  const SlowQuerySettings s = cfg.slow_query_for(cfg.databases.at("app"), cfg.users.at("app"));
  EXPECT_EQ(s.threshold, 500ms);
  EXPECT_FALSE(s.log_parameters);
}

TEST(SlowQueryConfigTest, SectionAndRelativeLogPath) {
  char pattern[] = "/tmp/sluice_config_slow_XXXXXX";
  const std::string dir = ::mkdtemp(pattern);
  const std::string path = dir + "/sluice.toml";
  {
    std::ofstream out(path);
    out << "[slow_query]\nthreshold = \"250ms\"\nlog = \"slow.jsonl\"\nlog_parameters = true\n"
           "max_size = \"10MB\"\nkeep = 0\n[databases.app]\nhost = \"h\"\n";
  }
  const LoadResult result = load_file(path);
  std::remove(path.c_str());
  ::rmdir(dir.c_str());
  ASSERT_TRUE(result.config) << describe(result);
  const SlowQuerySettings& s = result.config->slow_query;
  EXPECT_EQ(s.threshold, 250ms);
  EXPECT_EQ(s.log, dir + "/slow.jsonl");  // relative to the config file's directory
  EXPECT_TRUE(s.log_parameters);
  EXPECT_EQ(s.max_size, 10u * 1024 * 1024);
  EXPECT_EQ(s.keep, 0);
}

TEST(SlowQueryConfigTest, AbsoluteLogPathAndExistingFile) {
  const std::string log = ::testing::TempDir() + "sluice_config_slow.jsonl";
  { std::ofstream out(log); }
  const LoadResult result = load("[slow_query]\nlog = \"" + log + "\"\n[databases.app]\nhost = \"h\"\n");
  std::remove(log.c_str());
  ASSERT_TRUE(result.config) << describe(result);
  EXPECT_EQ(result.config->slow_query.log, log);
  EXPECT_EQ(result.config->slow_query.threshold, 500ms);
}

TEST(SlowQueryConfigTest, OverridesPerDatabaseAndUser) {
  const LoadResult result = load(R"(
[slow_query]
threshold = "1s"
[databases.app]
host = "h"
slow_query = { threshold = "100ms" }
[databases.other]
host = "h"
[users.app]
auth = "trust"
[users.debug]
auth = "trust"
slow_query = { threshold = "0s", log_parameters = true }
)");
  ASSERT_TRUE(result.config) << describe(result);
  const Config& cfg = *result.config;
  const Database& app = cfg.databases.at("app");
  const Database& other = cfg.databases.at("other");
  EXPECT_EQ(app.slow_query.threshold, 100ms);
  EXPECT_FALSE(app.slow_query.log_parameters.has_value());
  EXPECT_EQ(cfg.slow_query_for(other, cfg.users.at("app")).threshold, 1s);
  EXPECT_EQ(cfg.slow_query_for(app, cfg.users.at("app")).threshold, 100ms);  // database over global
  const SlowQuerySettings debug = cfg.slow_query_for(app, cfg.users.at("debug"));  // user over database
  EXPECT_EQ(debug.threshold, 0ms);
  EXPECT_TRUE(debug.log_parameters);
  EXPECT_FALSE(cfg.slow_query_for(app, cfg.users.at("app")).log_parameters);
}

TEST(SlowQueryConfigTest, UnwritableLogIsAnError) {
  const std::string missing_dir = ::testing::TempDir() + "sluice_no_such_dir/slow.jsonl";
  LoadResult result = load("[slow_query]\nlog = \"" + missing_dir + "\"\n[databases.app]\nhost = \"h\"\n");
  EXPECT_TRUE(OnlyError(result, 2, 7, "slow_query.log",
                        "cannot write the slow-query log \"" + missing_dir + "\": " + std::strerror(ENOENT)));

  std::string directory = ::testing::TempDir();
  if (directory.size() > 1 && directory.back() == '/') directory.pop_back();
  result = load("[slow_query]\nlog = \"" + directory + "\"\n[databases.app]\nhost = \"h\"\n");
  EXPECT_TRUE(OnlyError(result, 2, 7, "slow_query.log", std::strerror(EISDIR)));

  // The file's name and the OS reason reach `sluice --check` through to_string().
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].to_string(), "test.toml:2:7: slow_query.log: cannot write the slow-query log \"" +
                                              directory + "\": " + std::strerror(EISDIR));
}

TEST(SlowQueryConfigTest, ValueErrors) {
  EXPECT_TRUE(OnlyError(load(R"(
[slow_query]
threshold = 500
[databases.app]
host = "h"
)"),
                        2, 13, "slow_query.threshold", "expected a duration string"));
  EXPECT_TRUE(OnlyError(load(R"(
[slow_query]
log_parameters = "yes"
[databases.app]
host = "h"
)"),
                        2, 18, "slow_query.log_parameters", "expected a boolean"));
  EXPECT_TRUE(OnlyError(load(R"(
[slow_query]
max_size = "100"
[databases.app]
host = "h"
)"),
                        2, 12, "slow_query.max_size", "between 1kB and 1024GB"));
  EXPECT_TRUE(OnlyError(load(R"(
[slow_query]
keep = -1
[databases.app]
host = "h"
)"),
                        2, 8, "slow_query.keep", "must be between 0 and 1000, got -1"));
  EXPECT_TRUE(OnlyError(load(R"(
[slow_query]
log = 5
[databases.app]
host = "h"
)"),
                        2, 7, "slow_query.log", "expected a string"));
  EXPECT_TRUE(OnlyError(load(R"(
[slow_query]
treshold = "1s"
[databases.app]
host = "h"
)"),
                        2, 1, "slow_query.treshold", "unknown key; did you mean \"threshold\"?"));
}

TEST(SlowQueryConfigTest, OverrideErrors) {
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
slow_query = { threshold = "fast" }
)"),
                        3, 28, "databases.app.slow_query.threshold", "invalid duration \"fast\""));
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
[users.bob]
auth = "trust"
slow_query = { keep = 3 }
)"),
                        5, 16, "users.bob.slow_query.keep", "can only be set in [slow_query]"));
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
slow_query = { log = "/tmp/x.jsonl" }
)"),
                        3, 16, "databases.app.slow_query.log", "can only be set in [slow_query]"));
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
slow_query = { thresold = "1s" }
)"),
                        3, 16, "databases.app.slow_query.thresold", "unknown key; did you mean \"threshold\"?"));
  EXPECT_TRUE(OnlyError(load(R"(
[databases.app]
host = "h"
slow_query = "100ms"
)"),
                        3, 14, "databases.app.slow_query", "expected a table"));
}

TEST(ConfigLookupTest, ToStringOfEnums) {
  EXPECT_STREQ(to_string(PoolMode::session), "session");
  EXPECT_STREQ(to_string(PoolMode::transaction), "transaction");
  EXPECT_STREQ(to_string(PoolMode::statement), "statement");
  EXPECT_STREQ(to_string(AuthMethod::scram_sha_256), "scram-sha-256");
  EXPECT_STREQ(to_string(AuthMethod::md5), "md5");
  EXPECT_STREQ(to_string(AuthMethod::cleartext), "cleartext");
  EXPECT_STREQ(to_string(AuthMethod::trust), "trust");
}

// ---- parse_duration / parse_size -----------------------------------------------------------

TEST(ParseDurationTest, ValidDurations) {
  const std::vector<std::pair<std::string, Duration>> cases = {
      {"0s", 0ms},       {"0ms", 0ms},           {"250ms", 250ms},  {"5s", 5s},
      {"10m", 10min},    {"1h", 1h},             {"2d", 48h},       {"007s", 7s},
      {"3600s", 1h},     {"1000000ms", 1000s},
      {"9223372036854775807ms", Duration(9223372036854775807LL)},
  };
  for (const auto& [text, expected] : cases) {
    const auto parsed = parse_duration(text);
    ASSERT_TRUE(parsed.has_value()) << text;
    EXPECT_EQ(*parsed, expected) << text;
  }
}

TEST(ParseDurationTest, MalformedDurations) {
  const std::vector<std::string> cases = {
      "",     "s",     "5",      "-5s",   "+5s",  "5.5s", "5 s",  " 5s",   "5s ",  "5S",
      "5sec", "5mss",  "1h30m",  "ms",    "0x5s", "5us",  "5ns",  "5w",    "５s",
      "9223372036854775808ms",   // overflows int64
      "9223372036854775807s",    // overflows after the unit
      "99999999999999999999999h",
  };
  for (const auto& text : cases) {
    EXPECT_FALSE(parse_duration(text).has_value()) << "\"" << text << "\"";
  }
  EXPECT_FALSE(parse_duration(std::string_view("5\0s", 3)).has_value());
}

TEST(ParseSizeTest, ValidSizes) {
  const std::vector<std::pair<std::string, std::uint64_t>> cases = {
      {"0", 0},
      {"100", 100},
      {"100B", 100},
      {"1kB", 1024},
      {"512KB", 512 * 1024},
      {"64MB", 64ull * 1024 * 1024},
      {"1GB", 1024ull * 1024 * 1024},
      {"16GB", 16ull * 1024 * 1024 * 1024},
      {"18446744073709551615", 18446744073709551615ull},
      {"17179869183GB", 17179869183ull * 1024 * 1024 * 1024},
  };
  for (const auto& [text, expected] : cases) {
    const auto parsed = parse_size(text);
    ASSERT_TRUE(parsed.has_value()) << text;
    EXPECT_EQ(*parsed, expected) << text;
  }
}

TEST(ParseSizeTest, MalformedSizes) {
  const std::vector<std::string> cases = {
      "",     "MB",   "-1MB", "+1MB", "1.5MB", "1 MB", " 1MB", "1MB ", "1mb", "1Mb",
      "1kb",  "1K",   "1M",   "1TB",  "1MiB",  "1b",   "0x10", "1e6",
      "18446744073709551616",  // overflows uint64
      "17179869184GB",         // overflows after the unit
  };
  for (const auto& text : cases) {
    EXPECT_FALSE(parse_size(text).has_value()) << "\"" << text << "\"";
  }
}

}  // namespace
}  // namespace sluice::config
