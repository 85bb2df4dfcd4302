#pragma once
// Sluice's configuration: one TOML file parsed once into plain structs and
// validated as a whole. Every problem found is reported with file:line:column and
// the key's full dotted name, so `sluice --check` can list all of them at once.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sluice::config {

using Duration = std::chrono::milliseconds;  // "0s" disables a timeout

enum class PoolMode { session, transaction, statement };
enum class AuthMethod { trust, cleartext, md5, scram_sha_256 };

struct ListenAddress {
  std::string host;  // literal IP address
  std::uint16_t port = 6432;
};

// Keys a database or user may override; unset = inherit.
struct PoolOverrides {
  std::optional<PoolMode> mode;
  std::optional<int> size;
  std::optional<std::string> server_reset_query;
};

struct PoolSettings {
  PoolMode mode = PoolMode::session;
  int size = 20;
  std::string server_reset_query = "DISCARD ALL";
};

struct Timeouts {
  Duration client_login{60'000};
  Duration server_connect{5'000};
};

struct Database {
  std::string name;      // the name clients ask for ("*" for the fallback)
  std::string host;      // hostname or IP of PostgreSQL
  std::uint16_t port = 5432;
  std::string dbname;    // database on the server; empty = the name the client asked for
  PoolOverrides pool;
};

struct User {
  std::string name;  // "*" for the fallback
  AuthMethod auth = AuthMethod::scram_sha_256;
  // What clients must prove: plain text, an "md5..." hash or a "SCRAM-SHA-256$..." secret.
  std::string password;
  // What Sluice sends to PostgreSQL; empty = `password` when that is plain text.
  std::string server_password;
  PoolOverrides pool;
};

struct Config {
  std::string source_file;
  std::vector<ListenAddress> listen{{"127.0.0.1", 6432}};
  int workers = 0;  // 0 = one per core
  int max_client_conn = 10000;
  std::string log_level = "info";  // trace | debug | info | warn | error | critical | off
  std::uint32_t max_message_size = 64u * 1024 * 1024;  // [sluice] max_message_size, e.g. "64MB"
  PoolSettings pool;
  Timeouts timeouts;
  std::map<std::string, Database> databases;  // keyed by client-facing name, may contain "*"
  std::map<std::string, User> users;          // keyed by user name, may contain "*"

  // Lookups that apply the "*" fallbacks; nullptr when there is no match.
  const Database* find_database(const std::string& name) const;
  const User* find_user(const std::string& name) const;
  // Effective pool settings for a (database, user) pair: global < database < user.
  PoolSettings pool_for(const Database& db, const User& user) const;
};

struct ConfigError {
  std::string file;
  int line = 0;    // 0 when unknown
  int column = 0;
  std::string key;  // full dotted name, e.g. "databases.app.port"; may be empty for syntax errors
  std::string message;
  std::string to_string() const;  // "file:line:column: key: message"
};

struct LoadResult {
  std::optional<Config> config;      // set only when errors is empty
  std::vector<ConfigError> errors;
};

LoadResult load_file(const std::string& path);
// `source_name` is used as the file name in errors.
LoadResult load_string(std::string_view toml_text, const std::string& source_name = "<string>");

// "250ms", "5s", "10m", "1h"; nullopt when malformed.
std::optional<Duration> parse_duration(std::string_view text);
// "64MB", "512kB", "1GB", "100" (bytes); nullopt when malformed.
std::optional<std::uint64_t> parse_size(std::string_view text);

const char* to_string(PoolMode mode);
const char* to_string(AuthMethod method);

}  // namespace sluice::config
