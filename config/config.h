#pragma once
// Sluice's configuration: one TOML file parsed once into plain structs and
// validated as a whole. Every problem found is reported with file:line:column and
// the key's full dotted name, so `sluice --check` can list all of them at once.
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/tls.h"

namespace sluice::config {

using Duration = std::chrono::milliseconds;  // "0s" disables a timeout

enum class PoolMode { session, transaction, statement };
enum class AuthMethod { trust, cleartext, md5, scram_sha_256 };

// [[hba]] rules: who may connect from where, and how they prove it (pg_hba.conf's
// model, first match wins).
enum class HbaMethod { trust, cleartext, md5, scram_sha_256, cert, reject };
enum class HbaConnection { any, tls, plain };  // type = host | hostssl | hostnossl

struct HbaRule {
  int line = 0;                        // where the rule is, for logs
  HbaConnection connection = HbaConnection::any;
  std::vector<std::string> databases;  // empty = all
  std::vector<std::string> users;      // empty = all
  bool any_address = true;
  bool ipv6 = false;
  std::array<std::uint8_t, 16> address{};  // network, in network order (4 bytes used for IPv4)
  int prefix = 0;                          // bits of `address` that must match
  HbaMethod method = HbaMethod::reject;
};

// The first rule that matches, or nullptr. `client_address` is the client's IP as
// text (IPv4-mapped IPv6 addresses match IPv4 rules).
const HbaRule* match_hba(const std::vector<HbaRule>& rules, std::string_view database, std::string_view user,
                         std::string_view client_address, bool tls);
const char* to_string(HbaMethod method);

struct ListenAddress {
  std::string host;  // literal IP address
  std::uint16_t port = 6432;
};

// Keys a database or user may override; unset = inherit.
struct PoolOverrides {
  std::optional<PoolMode> mode;
  std::optional<int> size;
  std::optional<std::string> server_reset_query;
  std::optional<int> max_prepared_statements;
  std::optional<int> min_size;
  std::optional<int> reserve_size;
  std::optional<Duration> reserve_timeout;
};

struct PoolSettings {
  PoolMode mode = PoolMode::session;
  int size = 20;
  // Run when a client leaves, in session mode only (in transaction and statement
  // mode the connection is shared while clients stay connected).
  std::string server_reset_query = "DISCARD ALL";
  // Transaction/statement mode: protocol-level prepared statements kept per server
  // connection (LRU); 0 turns the tracking off (named statements then only work
  // within one transaction, as with PgBouncer's default).
  int max_prepared_statements = 200;
  // Server connections the janitor keeps open once the pool exists (a pool is
  // created by its first client); never more than `size`.
  int min_size = 0;
  // Extra connections a client may open after waiting reserve_timeout for a full pool.
  int reserve_size = 0;
  Duration reserve_timeout{5'000};
};

// [slow_query]. A database or user may override `threshold` and `log_parameters`
// (slow_query = { threshold = "100ms" }); the log file and its rotation are global.
struct SlowQueryOverrides {
  std::optional<Duration> threshold;
  std::optional<bool> log_parameters;
};

struct SlowQuerySettings {
  // Statements taking at least this long are slow; "0s" makes every statement slow.
  Duration threshold{500};
  // Literals and bound parameter values stay out of the log unless true.
  bool log_parameters = false;
  // The JSON Lines file; a relative path is taken relative to the directory of the
  // config file. Empty (the default) = no log file: an operator chooses where it
  // goes, so an existing config never starts writing next to itself (often a
  // directory the service may not write). Checked writable at load time.
  std::string log;
  std::uint64_t max_size = 100ull * 1024 * 1024;  // rotate before the file would exceed it
  int keep = 5;  // rotated files kept: log.1 (newest) .. log.keep; 0 = none
  // Time every statement (statistics per query shape, SHOW SLOW, the log). false
  // turns all of it off (used to measure what recording costs).
  bool record = true;
};

struct Timeouts {
  Duration client_login{60'000};
  Duration server_connect{5'000};
  // A client waiting this long for a server connection gets an error and is closed.
  Duration query_wait{120'000};
  // A client idle inside a transaction this long is told (25P03) and closed; its
  // transaction is rolled back. 0 = off.
  Duration idle_transaction{0};
  // A statement running this long is cancelled (CancelRequest); the client gets
  // PostgreSQL's 57014 and keeps its connection. 0 = off.
  Duration query{0};
  // A client with nothing in flight that sends nothing this long gets FATAL 57P05
  // and is closed. 0 = off.
  Duration client_idle{0};
  // Idle server connections older than this (since last use) are closed by the
  // janitor, down to pool.min_size. 0 = never.
  Duration server_idle{600'000};
  // A server connection older than this is closed when it is next idle (never
  // while in use). 0 = never.
  Duration server_lifetime{3'600'000};
};

// [health]
struct HealthSettings {
  // Sent to a pooled connection idle longer than check_delay before it is handed
  // out; "" = an empty query (the cheapest round trip PostgreSQL answers).
  std::string check_query;
  Duration check_delay{30'000};
  // The longest a host that failed stays out of use without a successful check.
  Duration ban_time{30'000};
};

// [retry]
struct RetrySettings {
  // Connection attempts per client request (across hosts) before it gets an error.
  int connect_attempts = 3;
  // Between attempts on one host, and between checks of a host that is down:
  // doubling from backoff_initial up to backoff_max, with jitter.
  Duration backoff_initial{100};
  Duration backoff_max{1'000};
};

// A PostgreSQL server address.
struct HostPort {
  std::string host;  // hostname or IP
  std::uint16_t port = 5432;
  std::string to_string() const { return host + ":" + std::to_string(port); }
  bool operator==(const HostPort&) const = default;
};

struct Database {
  std::string name;      // the name clients ask for ("*" for the fallback)
  std::string host;      // hostname or IP of PostgreSQL (the first of `hosts`)
  std::uint16_t port = 5432;
  // Every server of the database (`host`/`port`, or the `hosts` array); new
  // server connections are spread across the healthy ones round-robin.
  std::vector<HostPort> hosts;
  std::string dbname;    // database on the server; empty = the name the client asked for
  // Server connections to this database across all users' pools; 0 = no limit.
  int max_db_connections = 0;
  PoolOverrides pool;
  SlowQueryOverrides slow_query;
  // databases.X.tls: the server-side TLS settings for this database's servers
  // ([tls.server] with this table's keys on top); unset = [tls.server].
  std::optional<TlsSettings> tls;
};

struct User {
  std::string name;  // "*" for the fallback
  AuthMethod auth = AuthMethod::scram_sha_256;
  // What clients must prove: plain text, an "md5..." hash or a "SCRAM-SHA-256$..." secret.
  std::string password;
  // What Sluice sends to PostgreSQL; empty = `password` when that is plain text.
  std::string server_password;
  // Server connections for this user across all databases' pools; 0 = no limit.
  int max_user_connections = 0;
  PoolOverrides pool;
  SlowQueryOverrides slow_query;
};

// [auth_query]: users without an entry of their own are looked up in PostgreSQL.
inline constexpr std::string_view kDefaultAuthQuery =
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
    "FROM pg_authid WHERE rolname = $1 AND rolcanlogin";

struct AuthQuery {
  std::string user;                             // empty = no lookups; must have its own [users] entry
  std::string query = std::string(kDefaultAuthQuery);  // $1 = the user name; returns (name, secret)
  std::string database;                         // empty = the database the client asked for
  Duration cache{60'000};                       // how long an answer is reused; "0s" = ask every time
  bool enabled() const { return !user.empty(); }
};

struct Config {
  std::string source_file;
  std::vector<ListenAddress> listen{{"127.0.0.1", 6432}};
  int workers = 0;  // 0 = one per core
  int max_client_conn = 10000;
  std::string log_level = "info";  // trace | debug | info | warn | error | critical | off
  std::uint32_t max_message_size = 64u * 1024 * 1024;  // [sluice] max_message_size, e.g. "64MB"
  // Who may use the admin console (database "sluice" or "pgbouncer"): admin_users
  // run every command, stats_users only SHOW. They log in as configured in [users].
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;
  // "host:port" for /metrics, /healthz, /readyz; empty = off.
  std::string metrics_listen;
  // Logins from an address with repeated authentication failures wait up to this
  // long before they are answered (see proxy/auth_throttle.h); "0s" = never.
  Duration auth_failure_delay{5'000};
  // SIGTERM / SHUTDOWN: clients may finish their transactions this long.
  Duration shutdown_timeout{30'000};
  // Listen with SO_REUSEPORT, so a new process can take over the port while the
  // old one drains (zero-downtime restart).
  bool so_reuseport = false;
  PoolSettings pool;
  Timeouts timeouts;
  HealthSettings health;
  RetrySettings retry;
  SlowQuerySettings slow_query;
  TlsSettings tls_client;  // [tls.client]: clients -> Sluice
  TlsSettings tls_server = prefer_tls();  // [tls.server]: Sluice -> PostgreSQL
  // [[hba]]: when empty every client may try to log in (under its user's auth);
  // otherwise the first matching rule decides, and no match is a refusal.
  std::vector<HbaRule> hba;
  AuthQuery auth_query;
  std::map<std::string, Database> databases;  // keyed by client-facing name, may contain "*"
  std::map<std::string, User> users;          // keyed by user name, may contain "*"

  // Lookups that apply the "*" fallbacks; nullptr when there is no match.
  // find_database returns the stored entry: for a name served by "*", its dbname is
  // empty, so use server_dbname(*db, requested) for the database to ask the server for.
  const Database* find_database(const std::string& name) const;
  const User* find_user(const std::string& name) const;
  // Effective pool settings for a (database, user) pair: global < database < user.
  PoolSettings pool_for(const Database& db, const User& user) const;
  // Effective slow-query settings for a (database, user) pair: global < database < user.
  SlowQuerySettings slow_query_for(const Database& db, const User& user) const;
  // Server-side TLS for a database's servers.
  const TlsSettings& server_tls_for(const Database& db) const { return db.tls ? *db.tls : tls_server; }
};

// The database name to send to PostgreSQL for a client that asked for `requested`
// and was matched to `db`: db.dbname, or `requested` when that is empty ("*").
std::string server_dbname(const Database& db, const std::string& requested);

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

// "250ms", "5s", "10m", "1h", "2d": digits then one unit (ms, s, m, h, d); "0s" is
// allowed. No sign, fraction, spaces or compound forms; nullopt when malformed or
// when the value overflows.
std::optional<Duration> parse_duration(std::string_view text);
// The inverse, as messages and SHOW CONFIG write durations: "5s" when whole seconds, else "250ms".
std::string format_duration(Duration duration);
// "64MB", "512kB", "1GB", "100" (bytes): digits then B, kB/KB, MB or GB, 1024-based
// (1kB = 1024 bytes). No sign, fraction or spaces; nullopt when malformed or on overflow.
std::optional<std::uint64_t> parse_size(std::string_view text);

const char* to_string(PoolMode mode);
const char* to_string(AuthMethod method);

}  // namespace sluice::config
