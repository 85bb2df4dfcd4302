// SHOW CONFIG's rows (proxy/console_data): every key with its value and default,
// and never a password.
#include "proxy/console_data.h"

#include <gtest/gtest.h>

namespace sluice::proxy {
namespace {

TEST(ConsoleConfigTest, ListsValuesAndDefaultsWithoutSecrets) {
  const auto loaded = config::load_string(R"(
[pool]
size = 7
[timeouts]
query = "1500ms"
[databases.app]
hosts = ["10.0.0.1:5432", "10.0.0.2:5433"]
max_db_connections = 9
[users.app]
auth = "scram-sha-256"
password = "very-secret-password"
server_password = "another-secret"
[users.md5]
auth = "md5"
password = "md5b71fca3210fe5cd484579342dd7bc01a"
[users.secret]
password = "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$NrPjB0koz1gmuv9gFuoi4oHuTSeYyIRQNOEMCoHzrDM=:ppVuvDgPGo/M0EYRUfKNajfhj1IbNcB1RLyfjHMquR0="
[auth_query]
user = "app"
cache = "10s"
[tls.server]
mode = "disable"
[[hba]]
database = "all"
user = "all"
method = "scram-sha-256"
)");
  ASSERT_TRUE(loaded.config);
  const auto items = console_config(*loaded.config);
  auto find = [&](const std::string& key) -> const ConsoleConfigItem* {
    for (const auto& item : items)
      if (item.key == key) return &item;
    return nullptr;
  };
  ASSERT_NE(find("pool.size"), nullptr);
  EXPECT_EQ(find("pool.size")->value, "7");
  EXPECT_EQ(find("pool.size")->default_value, "20");
  EXPECT_EQ(find("timeouts.query")->value, "1500ms");
  EXPECT_EQ(find("timeouts.query")->default_value, "0s");
  EXPECT_EQ(find("timeouts.server_lifetime")->value, "3600s");
  EXPECT_EQ(find("databases.app.hosts")->value, "10.0.0.1:5432,10.0.0.2:5433");
  EXPECT_EQ(find("databases.app.max_db_connections")->value, "9");
  EXPECT_EQ(find("users.app.auth")->value, "scram-sha-256");
  EXPECT_FALSE(find("sluice.listen")->changeable);
  // Missing rows fail the comparison instead of crashing the binary.
  auto value = [&](const std::string& key) { return find(key) ? find(key)->value : "<no row " + key + ">"; };
  auto default_of = [&](const std::string& key) { return find(key) ? find(key)->default_value : "<no row " + key + ">"; };
  EXPECT_EQ(value("sluice.auth_failure_delay"), "5s");
  EXPECT_EQ(value("tls.client.mode"), "disable");
  EXPECT_EQ(value("tls.server.mode"), "disable");
  EXPECT_EQ(default_of("tls.server.mode"), "prefer");
  EXPECT_EQ(value("tls.server.min_protocol"), "TLSv1.2");
  EXPECT_EQ(value("hba"), "1 rule(s)");
  EXPECT_EQ(value("auth_query.user"), "app");
  EXPECT_EQ(value("auth_query.cache"), "10s");
  EXPECT_EQ(default_of("auth_query.cache"), "60s");
  for (const auto& item : items) {
    for (std::string_view secret : {"very-secret-password", "another-secret", "md5b71fca3210fe5cd484579342dd7bc01a",
                                    "NrPjB0koz1gmuv9gFuoi4oHuTSeYyIRQNOEMCoHzrDM"}) {
      EXPECT_EQ(item.value.find(secret), std::string::npos) << item.key;
      EXPECT_EQ(item.key.find("password"), std::string::npos) << item.key;
    }
  }
}

}  // namespace
}  // namespace sluice::proxy
