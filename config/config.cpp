// TOML -> Config. The document is parsed once by toml++ and then walked table by
// table; every problem is recorded (never thrown) with the position of the key or
// value at fault and the key's full dotted name, so one run reports all of them.
//
// Key policy: a key is either implemented (read and validated here), documented in
// PRODUCT.md for a later version ("not supported yet", so the user is never misled
// into thinking it takes effect) or unknown. Nothing is silently ignored.
#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <tuple>
#include <utility>

#include <toml++/toml.h>

#include "protocol/auth.h"

namespace sluice::config {
namespace {

namespace auth = sluice::protocol::auth;

using KeyList = std::initializer_list<std::string_view>;

constexpr std::string_view kScramPrefix = "SCRAM-SHA-256$";

// Bounds for values whose type alone does not make them sensible.
constexpr std::int64_t kMaxInt = std::numeric_limits<int>::max();
constexpr std::uint64_t kMinMessageSize = 1024;                // 1kB
constexpr std::uint64_t kMaxMessageSize = 1024ull * 1024 * 1024;  // 1GB, PostgreSQL's MaxAllocSize
constexpr std::uint64_t kMinSlowLogSize = 1024;                          // 1kB
constexpr std::uint64_t kMaxSlowLogSize = 1024ull * 1024 * 1024 * 1024;  // 1TB
constexpr std::int64_t kMaxSlowLogKeep = 1000;
// Longest accepted duration: far beyond any useful timeout, and far from
// overflowing a steady_clock time point in nanoseconds.
constexpr Duration kMaxDuration = std::chrono::hours(24 * 365);

// ---- key names ----------------------------------------------------------------

bool is_bare_key(std::string_view key) {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-';
  });
}

// A key as it would be written in TOML: bare when possible, else a basic string.
std::string quote_key(std::string_view key) {
  if (is_bare_key(key)) return std::string(key);
  std::string out = "\"";
  for (char ch : key) {
    const auto uch = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (uch < 0x20 || uch == 0x7f) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "\\u00";
      out += kHex[uch >> 4];
      out += kHex[uch & 0xf];
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

std::string child_key(const std::string& parent, std::string_view key) {
  return parent.empty() ? quote_key(key) : parent + "." + quote_key(key);
}

std::string quoted(std::string_view value) {
  std::string out = "\"";
  out += value;
  out += '"';
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

const char* type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// ---- error collection -----------------------------------------------------------

class Checker {
 public:
  explicit Checker(std::string file) : file_(std::move(file)) {}

  void error(const toml::source_region& where, std::string key, std::string message) {
    errors_.push_back(ConfigError{file_, static_cast<int>(where.begin.line), static_cast<int>(where.begin.column),
                                  std::move(key), std::move(message)});
  }
  std::size_t error_count() const { return errors_.size(); }
  void error_without_position(std::string key, std::string message) {
    errors_.push_back(ConfigError{file_, 0, 0, std::move(key), std::move(message)});
  }

  std::vector<ConfigError> take_errors() {
    // Document order; errors without a position last.
    std::stable_sort(errors_.begin(), errors_.end(), [](const ConfigError& a, const ConfigError& b) {
      return std::make_tuple(a.line == 0, a.line, a.column) < std::make_tuple(b.line == 0, b.line, b.column);
    });
    return std::move(errors_);
  }

 private:
  std::string file_;
  std::vector<ConfigError> errors_;
};

// Reports every key of `table` that is neither implemented (`known`) nor documented
// for a later version (`later`), and every `later` key that is present.
void check_keys(Checker& c, const toml::table& table, const std::string& path, KeyList known, KeyList later) {
  for (auto&& [key, value] : table) {
    const std::string_view name = key.str();
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    if (std::find(later.begin(), later.end(), name) != later.end()) {
      c.error(key.source(), child_key(path, name), "not supported yet by this version of Sluice");
      continue;
    }
    std::string message = "unknown key";
    std::string_view best;
    std::size_t best_distance = 3;  // suggest only close matches
    for (KeyList list : {known, later}) {
      for (std::string_view candidate : list) {
        const std::size_t d = edit_distance(name, candidate);
        if (d < best_distance) {
          best_distance = d;
          best = candidate;
        }
      }
    }
    if (!best.empty()) message += "; did you mean " + quoted(best) + "?";
    c.error(key.source(), child_key(path, name), std::move(message));
  }
}

// ---- typed values -----------------------------------------------------------------

void type_error(Checker& c, const toml::node& node, const std::string& key, std::string_view expected) {
  c.error(node.source(), key, "expected " + std::string(expected) + ", got " + type_name(node.type()));
}

const toml::table* get_table(Checker& c, const toml::node& node, const std::string& key) {
  if (const auto* table = node.as_table()) return table;
  type_error(c, node, key, "a table");
  return nullptr;
}

std::optional<std::string> get_string(Checker& c, const toml::node& node, const std::string& key) {
  if (const auto* value = node.as_string()) return value->get();
  type_error(c, node, key, "a string");
  return std::nullopt;
}

std::optional<std::int64_t> get_int(Checker& c, const toml::node& node, const std::string& key, std::int64_t min,
                                    std::int64_t max) {
  const auto* value = node.as_integer();
  if (value == nullptr) {
    type_error(c, node, key, "an integer");
    return std::nullopt;
  }
  const std::int64_t v = value->get();
  if (v < min || v > max) {
    std::string message = max == kMaxInt ? "must be at least " + std::to_string(min)
                                         : "must be between " + std::to_string(min) + " and " + std::to_string(max);
    c.error(node.source(), key, message + ", got " + std::to_string(v));
    return std::nullopt;
  }
  return v;
}

std::optional<bool> get_bool(Checker& c, const toml::node& node, const std::string& key) {
  if (const auto* value = node.as_boolean()) return value->get();
  type_error(c, node, key, "a boolean (true or false)");
  return std::nullopt;
}

std::optional<Duration> get_duration(Checker& c, const toml::node& node, const std::string& key) {
  if (const auto* number = node.as_integer()) {
    c.error(node.source(), key,
            "expected a duration string with a unit, e.g. \"" + std::to_string(number->get()) +
                "s\" or \"250ms\"; got the integer " + std::to_string(number->get()));
    return std::nullopt;
  }
  const auto* text = node.as_string();
  if (text == nullptr) {
    type_error(c, node, key, "a duration string such as \"5s\"");
    return std::nullopt;
  }
  const auto duration = parse_duration(text->get());
  if (!duration) {
    c.error(node.source(), key,
            "invalid duration " + quoted(text->get()) +
                "; expected a whole number followed by ms, s, m, h or d, e.g. \"250ms\" or \"5s\"");
    return std::nullopt;
  }
  if (*duration > kMaxDuration) {
    c.error(node.source(), key, "duration " + quoted(text->get()) + " is too long; the maximum is \"365d\"");
    return std::nullopt;
  }
  return duration;
}

std::optional<std::uint64_t> get_size(Checker& c, const toml::node& node, const std::string& key, std::uint64_t min,
                                      std::uint64_t max, std::string_view bounds) {
  const auto* text = node.as_string();
  if (text == nullptr) {
    type_error(c, node, key, "a size string such as \"64MB\"");
    return std::nullopt;
  }
  const auto size = parse_size(text->get());
  if (!size) {
    c.error(node.source(), key,
            "invalid size " + quoted(text->get()) +
                "; expected a whole number followed by B, kB, MB or GB (1024-based), e.g. \"64MB\"");
    return std::nullopt;
  }
  if (*size < min || *size > max) {
    c.error(node.source(), key, "size " + quoted(text->get()) + " is out of range; " + std::string(bounds));
    return std::nullopt;
  }
  return size;
}

// ---- [sluice] -----------------------------------------------------------------------

// Parses "host:port" with an IP literal host ("[v6]:port" for IPv6). The host is
// stored in canonical form so that duplicates are found however they are written.
std::optional<ListenAddress> parse_listen(std::string_view text, std::string& why) {
  std::string_view host;
  std::string_view port;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      why = "expected \"[IPv6]:port\", e.g. \"[::1]:6432\"";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    bracketed = true;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      why = "expected \"host:port\", e.g. \"127.0.0.1:6432\"";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      why = "write IPv6 addresses in brackets, e.g. \"[::1]:6432\"";
      return std::nullopt;
    }
  }

  ListenAddress address;
  const std::string host_copy(host);
  char canonical[INET6_ADDRSTRLEN] = {};
  if (bracketed) {
    in6_addr v6{};
    if (inet_pton(AF_INET6, host_copy.c_str(), &v6) != 1) {
      why = "host must be an IPv6 address inside brackets";
      return std::nullopt;
    }
    inet_ntop(AF_INET6, &v6, canonical, sizeof canonical);
  } else {
    in_addr v4{};
    if (inet_pton(AF_INET, host_copy.c_str(), &v4) != 1) {
      why = "host must be an IP address (IPv4, or IPv6 in brackets), not a host name";
      return std::nullopt;
    }
    inet_ntop(AF_INET, &v4, canonical, sizeof canonical);
  }
  address.host = canonical;

  std::uint32_t port_number = 0;
  const bool digits_only = !port.empty() && port.size() <= 5 &&
                           std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (digits_only) {
    for (char ch : port) port_number = port_number * 10 + static_cast<std::uint32_t>(ch - '0');
  }
  if (!digits_only || port_number < 1 || port_number > 65535) {
    why = "port must be a number between 1 and 65535";
    return std::nullopt;
  }
  address.port = static_cast<std::uint16_t>(port_number);
  return address;
}

void read_listen(Checker& c, const toml::node& node, const std::string& key, Config& cfg) {
  const auto* array = node.as_array();
  if (array == nullptr) {
    type_error(c, node, key, "an array of \"host:port\" strings, e.g. [\"127.0.0.1:6432\"]");
    return;
  }
  if (array->empty()) {
    c.error(node.source(), key, "at least one listen address is required");
    return;
  }
  std::vector<ListenAddress> addresses;
  for (std::size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string element_key = key + "[" + std::to_string(i) + "]";
    const auto text = get_string(c, element, element_key);
    if (!text) continue;
    std::string why;
    auto address = parse_listen(*text, why);
    if (!address) {
      c.error(element.source(), element_key, "invalid listen address " + quoted(*text) + ": " + why);
      continue;
    }
    const bool duplicate = std::any_of(addresses.begin(), addresses.end(), [&](const ListenAddress& seen) {
      return seen.host == address->host && seen.port == address->port;
    });
    if (duplicate) {
      c.error(element.source(), element_key, "duplicate listen address " + quoted(*text));
      continue;
    }
    addresses.push_back(std::move(*address));
  }
  cfg.listen = std::move(addresses);
}

void read_sluice(Checker& c, const toml::table& table, const std::string& path, Config& cfg) {
  check_keys(c, table, path,
             {"listen", "workers", "max_client_conn", "log_level", "max_message_size", "admin_users", "stats_users",
              "metrics_listen", "shutdown_timeout", "so_reuseport", "auth_failure_delay"},
             {});
  if (const auto* node = table.get("metrics_listen")) {
    if (auto text = get_string(c, *node, child_key(path, "metrics_listen"))) {
      std::string why;
      if (text->empty()) {
        cfg.metrics_listen.clear();
      } else if (auto address = parse_listen(*text, why)) {
        cfg.metrics_listen = address->host.find(':') != std::string::npos
                                 ? "[" + address->host + "]:" + std::to_string(address->port)
                                 : address->host + ":" + std::to_string(address->port);
      } else {
        c.error(node->source(), child_key(path, "metrics_listen"), "invalid address " + quoted(*text) + ": " + why);
      }
    }
  }
  if (const auto* node = table.get("auth_failure_delay")) {
    if (auto d = get_duration(c, *node, child_key(path, "auth_failure_delay"))) cfg.auth_failure_delay = *d;
  }
  if (const auto* node = table.get("shutdown_timeout")) {
    if (auto d = get_duration(c, *node, child_key(path, "shutdown_timeout"))) cfg.shutdown_timeout = *d;
  }
  if (const auto* node = table.get("so_reuseport")) {
    if (const auto* value = node->as_boolean()) {
      cfg.so_reuseport = value->get();
    } else {
      type_error(c, *node, child_key(path, "so_reuseport"), "true or false");
    }
  }
  // admin_users / stats_users: arrays of user names (they log in as in [users]).
  auto read_names = [&](const char* name, std::vector<std::string>& out) {
    const auto* node = table.get(name);
    if (node == nullptr) return;
    const std::string key = child_key(path, name);
    const auto* array = node->as_array();
    if (array == nullptr) {
      type_error(c, *node, key, "an array of user names");
      return;
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
      const auto& element = *array->get(i);
      if (auto user = get_string(c, element, key + "[" + std::to_string(i) + "]")) out.push_back(*user);
    }
  };
  read_names("admin_users", cfg.admin_users);
  read_names("stats_users", cfg.stats_users);
  if (const auto* node = table.get("listen")) read_listen(c, *node, child_key(path, "listen"), cfg);
  if (const auto* node = table.get("workers")) {
    if (auto v = get_int(c, *node, child_key(path, "workers"), 0, kMaxInt)) cfg.workers = static_cast<int>(*v);
  }
  if (const auto* node = table.get("max_client_conn")) {
    if (auto v = get_int(c, *node, child_key(path, "max_client_conn"), 1, kMaxInt)) {
      cfg.max_client_conn = static_cast<int>(*v);
    }
  }
  if (const auto* node = table.get("log_level")) {
    if (auto level = get_string(c, *node, child_key(path, "log_level"))) {
      static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
      if (std::find(std::begin(kLevels), std::end(kLevels), *level) != std::end(kLevels)) {
        cfg.log_level = *level;
      } else {
        c.error(node->source(), child_key(path, "log_level"),
                "invalid log level " + quoted(*level) +
                    "; expected trace, debug, info, warn, error, critical or off");
      }
    }
  }
  if (const auto* node = table.get("max_message_size")) {
    if (auto size = get_size(c, *node, child_key(path, "max_message_size"), kMinMessageSize, kMaxMessageSize,
                             "it must be between 1kB and 1GB")) {
      cfg.max_message_size = static_cast<std::uint32_t>(*size);
    }
  }
}

// ---- [pool] and pool = { ... } ----------------------------------------------------------

std::optional<PoolMode> get_pool_mode(Checker& c, const toml::node& node, const std::string& key) {
  const auto mode = get_string(c, node, key);
  if (!mode) return std::nullopt;
  if (*mode == "session") return PoolMode::session;
  if (*mode == "transaction") return PoolMode::transaction;
  if (*mode == "statement") return PoolMode::statement;
  c.error(node.source(), key,
          "invalid pool mode " + quoted(*mode) + "; expected \"session\", \"transaction\" or \"statement\"");
  return std::nullopt;
}

PoolOverrides read_pool(Checker& c, const toml::table& table, const std::string& path) {
  check_keys(c, table, path,
             {"mode", "size", "server_reset_query", "max_prepared_statements", "min_size", "reserve_size",
              "reserve_timeout"},
             {});
  PoolOverrides pool;
  if (const auto* node = table.get("mode")) pool.mode = get_pool_mode(c, *node, child_key(path, "mode"));
  if (const auto* node = table.get("size")) {
    if (auto v = get_int(c, *node, child_key(path, "size"), 1, kMaxInt)) pool.size = static_cast<int>(*v);
  }
  if (const auto* node = table.get("server_reset_query")) {
    pool.server_reset_query = get_string(c, *node, child_key(path, "server_reset_query"));
  }
  if (const auto* node = table.get("max_prepared_statements")) {
    if (auto v = get_int(c, *node, child_key(path, "max_prepared_statements"), 0, 100000)) {
      pool.max_prepared_statements = static_cast<int>(*v);
    }
  }
  if (const auto* node = table.get("min_size")) {
    if (auto v = get_int(c, *node, child_key(path, "min_size"), 0, kMaxInt)) pool.min_size = static_cast<int>(*v);
  }
  if (const auto* node = table.get("reserve_size")) {
    if (auto v = get_int(c, *node, child_key(path, "reserve_size"), 0, kMaxInt)) {
      pool.reserve_size = static_cast<int>(*v);
    }
  }
  if (const auto* node = table.get("reserve_timeout")) {
    pool.reserve_timeout = get_duration(c, *node, child_key(path, "reserve_timeout"));
  }
  return pool;
}

void apply(PoolSettings& settings, const PoolOverrides& overrides) {
  if (overrides.mode) settings.mode = *overrides.mode;
  if (overrides.size) settings.size = *overrides.size;
  if (overrides.server_reset_query) settings.server_reset_query = *overrides.server_reset_query;
  if (overrides.max_prepared_statements) settings.max_prepared_statements = *overrides.max_prepared_statements;
  if (overrides.min_size) settings.min_size = *overrides.min_size;
  if (overrides.reserve_size) settings.reserve_size = *overrides.reserve_size;
  if (overrides.reserve_timeout) settings.reserve_timeout = *overrides.reserve_timeout;
}

// ---- [timeouts] ---------------------------------------------------------------------------

void read_timeouts(Checker& c, const toml::table& table, const std::string& path, Timeouts& timeouts) {
  check_keys(c, table, path,
             {"client_login", "server_connect", "query_wait", "idle_transaction", "query", "client_idle",
              "server_idle", "server_lifetime"},
             {});
  const std::pair<const char*, Duration*> durations[] = {
      {"query", &timeouts.query},
      {"client_idle", &timeouts.client_idle},
      {"server_idle", &timeouts.server_idle},
      {"server_lifetime", &timeouts.server_lifetime},
  };
  for (const auto& [name, target] : durations) {
    if (const auto* node = table.get(name)) {
      if (auto d = get_duration(c, *node, child_key(path, name))) *target = *d;
    }
  }
  if (const auto* node = table.get("idle_transaction")) {
    if (auto d = get_duration(c, *node, child_key(path, "idle_transaction"))) timeouts.idle_transaction = *d;
  }
  if (const auto* node = table.get("query_wait")) {
    if (auto d = get_duration(c, *node, child_key(path, "query_wait"))) timeouts.query_wait = *d;
  }
  if (const auto* node = table.get("client_login")) {
    if (auto d = get_duration(c, *node, child_key(path, "client_login"))) timeouts.client_login = *d;
  }
  if (const auto* node = table.get("server_connect")) {
    if (auto d = get_duration(c, *node, child_key(path, "server_connect"))) timeouts.server_connect = *d;
  }
}

// ---- [health] and [retry] ------------------------------------------------------------------

void read_health(Checker& c, const toml::table& table, const std::string& path, HealthSettings& health) {
  check_keys(c, table, path, {"check_query", "check_delay", "ban_time"}, {});
  if (const auto* node = table.get("check_query")) {
    if (auto text = get_string(c, *node, child_key(path, "check_query"))) {
      if (text->find('\0') != std::string::npos) {
        c.error(node->source(), child_key(path, "check_query"), "must not contain a NUL character");
      } else {
        health.check_query = std::move(*text);
      }
    }
  }
  if (const auto* node = table.get("check_delay")) {
    if (auto d = get_duration(c, *node, child_key(path, "check_delay"))) health.check_delay = *d;
  }
  if (const auto* node = table.get("ban_time")) {
    if (auto d = get_duration(c, *node, child_key(path, "ban_time"))) health.ban_time = *d;
  }
}

void read_retry(Checker& c, const toml::table& table, const std::string& path, RetrySettings& retry) {
  check_keys(c, table, path, {"connect_attempts", "backoff_initial", "backoff_max"}, {});
  if (const auto* node = table.get("connect_attempts")) {
    if (auto v = get_int(c, *node, child_key(path, "connect_attempts"), 1, 100)) {
      retry.connect_attempts = static_cast<int>(*v);
    }
  }
  const toml::node* initial_node = table.get("backoff_initial");
  const toml::node* max_node = table.get("backoff_max");
  if (initial_node) {
    if (auto d = get_duration(c, *initial_node, child_key(path, "backoff_initial"))) {
      if (d->count() == 0) {
        c.error(initial_node->source(), child_key(path, "backoff_initial"), "must be at least \"1ms\"");
      } else {
        retry.backoff_initial = *d;
      }
    }
  }
  if (max_node) {
    if (auto d = get_duration(c, *max_node, child_key(path, "backoff_max"))) retry.backoff_max = *d;
  }
  if (retry.backoff_max < retry.backoff_initial) {
    const toml::node* at = max_node ? max_node : initial_node;
    c.error(at->source(), child_key(path, max_node ? "backoff_max" : "backoff_initial"),
            "backoff_max (" + std::to_string(retry.backoff_max.count()) + "ms) must not be shorter than backoff_initial (" +
                std::to_string(retry.backoff_initial.count()) + "ms)");
  }
}

// ---- [slow_query] and slow_query = { ... } -------------------------------------------------

constexpr std::string_view kSlowQueryGlobalOnly[] = {"log", "max_size", "keep", "record"};

SlowQueryOverrides read_slow_query_overrides(Checker& c, const toml::table& table, const std::string& path) {
  SlowQueryOverrides overrides;
  if (const auto* node = table.get("threshold")) {
    overrides.threshold = get_duration(c, *node, child_key(path, "threshold"));
  }
  if (const auto* node = table.get("log_parameters")) {
    overrides.log_parameters = get_bool(c, *node, child_key(path, "log_parameters"));
  }
  return overrides;
}

void apply(SlowQuerySettings& settings, const SlowQueryOverrides& overrides) {
  if (overrides.threshold) settings.threshold = *overrides.threshold;
  if (overrides.log_parameters) settings.log_parameters = *overrides.log_parameters;
}

// The directory part of `file` with its trailing '/', or "" for a bare name.
std::string directory_of(const std::string& file) {
  const auto slash = file.rfind('/');
  return slash == std::string::npos ? std::string() : file.substr(0, slash + 1);
}

// 0 when Sluice can append to `path` (creating it if missing), else the errno
// that says why not. Creates nothing: an existing file is opened without O_CREAT,
// a missing one needs a writable, searchable directory.
int log_file_error(const std::string& path) {
  if (path.back() == '/') return EISDIR;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return EISDIR;
    // O_NONBLOCK: a FIFO without a reader must not hang the check.
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return errno;
    ::close(fd);
    return 0;
  }
  if (errno != ENOENT) return errno;
  std::string directory = directory_of(path);
  if (directory.empty()) directory = ".";
  if (::stat(directory.c_str(), &st) != 0) return errno;
  if (!S_ISDIR(st.st_mode)) return ENOTDIR;
  if (::access(directory.c_str(), W_OK | X_OK) != 0) return errno;
  return 0;
}

void read_slow_query(Checker& c, const toml::table& table, const std::string& path, const std::string& config_file,
                     SlowQuerySettings& settings) {
  check_keys(c, table, path, {"threshold", "log", "log_parameters", "max_size", "keep", "record"}, {});
  apply(settings, read_slow_query_overrides(c, table, path));
  if (const auto* node = table.get("record")) {
    if (auto record = get_bool(c, *node, child_key(path, "record"))) settings.record = *record;
  }
  if (const auto* node = table.get("log")) {
    const std::string key = child_key(path, "log");
    if (auto log = get_string(c, *node, key)) {
      if (log->find('\0') != std::string::npos) {
        c.error(node->source(), key, "must not contain a NUL character");
      } else if (!log->empty()) {
        std::string resolved = log->front() == '/' ? *log : directory_of(config_file) + *log;
        if (const int error = log_file_error(resolved)) {
          c.error(node->source(), key,
                  "cannot write the slow-query log " + quoted(resolved) + ": " + std::strerror(error));
        }
        settings.log = std::move(resolved);
      }
    }
  }
  if (const auto* node = table.get("max_size")) {
    if (auto size = get_size(c, *node, child_key(path, "max_size"), kMinSlowLogSize, kMaxSlowLogSize,
                             "it must be between 1kB and 1024GB")) {
      settings.max_size = *size;
    }
  }
  if (const auto* node = table.get("keep")) {
    if (auto v = get_int(c, *node, child_key(path, "keep"), 0, kMaxSlowLogKeep)) settings.keep = static_cast<int>(*v);
  }
  if (!settings.record && !settings.log.empty()) {
    c.error(table.get("record")->source(), child_key(path, "record"),
            "record = false times no statement, so the slow-query log (log) would stay empty; remove one of them");
  }
}

// slow_query = { ... } in a database or user: only the keys that may differ per
// statement; the file and its rotation belong to [slow_query].
SlowQueryOverrides read_slow_query_table(Checker& c, const toml::node& node, const std::string& path) {
  const auto* table = get_table(c, node, path);
  if (table == nullptr) return {};
  check_keys(c, *table, path, {"threshold", "log_parameters", "log", "max_size", "keep", "record"}, {});
  for (auto&& [key, value] : *table) {
    if (std::find(std::begin(kSlowQueryGlobalOnly), std::end(kSlowQueryGlobalOnly), key.str()) !=
        std::end(kSlowQueryGlobalOnly)) {
      c.error(key.source(), child_key(path, key.str()),
              "can only be set in [slow_query] (there is one slow-query log); here only threshold and "
              "log_parameters may be overridden");
    }
  }
  return read_slow_query_overrides(c, *table, path);
}

// ---- [databases.NAME] ----------------------------------------------------------------------

// hosts = ["host:port", ...]: host names or IP addresses (IPv6 in brackets); the
// port may be left out (5432).
bool read_hosts(Checker& c, const toml::node& node, const std::string& key, std::vector<HostPort>& hosts) {
  const auto* array = node.as_array();
  if (array == nullptr) {
    type_error(c, node, key, "an array of \"host:port\" strings, e.g. [\"10.0.0.1:5432\", \"10.0.0.2:5432\"]");
    return false;
  }
  if (array->empty()) {
    c.error(node.source(), key, "at least one host is required");
    return false;
  }
  bool ok = true;
  for (std::size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string element_key = key + "[" + std::to_string(i) + "]";
    const auto text = get_string(c, element, element_key);
    if (!text) {
      ok = false;
      continue;
    }
    std::string_view rest = *text;
    HostPort host;
    std::string_view port_text;
    if (rest.starts_with('[')) {
      const auto close = rest.find(']');
      if (close == std::string_view::npos || (close + 1 < rest.size() && rest[close + 1] != ':')) {
        c.error(element.source(), element_key, "invalid host " + quoted(*text) + "; expected \"[v6 address]:port\"");
        ok = false;
        continue;
      }
      host.host = std::string(rest.substr(1, close - 1));
      if (close + 1 < rest.size()) port_text = rest.substr(close + 2);
    } else {
      const auto colon = rest.rfind(':');
      if (colon != std::string_view::npos && rest.find(':') != colon) {
        c.error(element.source(), element_key, "write IPv6 addresses in brackets, e.g. \"[::1]:5432\"");
        ok = false;
        continue;
      }
      host.host = std::string(rest.substr(0, colon));
      if (colon != std::string_view::npos) port_text = rest.substr(colon + 1);
      if (colon != std::string_view::npos && port_text.empty()) port_text = "x";  // "host:" is malformed
    }
    const bool blank = host.host.empty() || std::any_of(host.host.begin(), host.host.end(), [](char ch) {
                         return static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f;
                       });
    if (blank) {
      c.error(element.source(), element_key, "invalid host " + quoted(*text) + ": the host name must not be empty or contain spaces");
      ok = false;
      continue;
    }
    if (!port_text.empty()) {
      std::uint32_t port = 0;
      const bool digits = port_text.size() <= 5 && std::all_of(port_text.begin(), port_text.end(),
                                                               [](char ch) { return ch >= '0' && ch <= '9'; });
      if (digits) {
        for (char ch : port_text) port = port * 10 + static_cast<std::uint32_t>(ch - '0');
      }
      if (!digits || port < 1 || port > 65535) {
        c.error(element.source(), element_key, "invalid host " + quoted(*text) + ": port must be a number between 1 and 65535");
        ok = false;
        continue;
      }
      host.port = static_cast<std::uint16_t>(port);
    }
    if (std::find(hosts.begin(), hosts.end(), host) != hosts.end()) {
      c.error(element.source(), element_key, "duplicate host " + quoted(*text));
      ok = false;
      continue;
    }
    hosts.push_back(std::move(host));
  }
  return ok;
}

// ---- [tls.client], [tls.server], databases.X.tls -------------------------------------------

std::optional<TlsMode> get_tls_mode(Checker& c, const toml::node& node, const std::string& key, bool client_side) {
  const auto text = get_string(c, node, key);
  if (!text) return std::nullopt;
  static constexpr std::pair<std::string_view, TlsMode> kModes[] = {
      {"disable", TlsMode::disable},     {"allow", TlsMode::allow},         {"prefer", TlsMode::prefer},
      {"require", TlsMode::require},     {"verify-ca", TlsMode::verify_ca}, {"verify-full", TlsMode::verify_full}};
  for (const auto& [name, mode] : kModes) {
    if (*text != name) continue;
    if (mode == TlsMode::allow && !client_side) break;
    return mode;
  }
  c.error(node.source(), key,
          "invalid TLS mode " + quoted(*text) +
              (client_side ? "; expected disable, allow, prefer, require, verify-ca or verify-full"
                           : "; expected disable, prefer, require, verify-ca or verify-full"));
  return std::nullopt;
}

// A relative file name is relative to the configuration file's directory.
std::string resolve_path(const std::string& path, const std::string& config_file) {
  if (path.empty() || path.front() == '/' || path == "system") return path;
  return directory_of(config_file) + path;
}

// Reads the keys of one TLS table on top of `settings`, then builds its context.
void read_tls(Checker& c, const toml::table& table, const std::string& path, const std::string& config_file,
              bool client_side, TlsSettings& settings) {
  check_keys(c, table, path, {"mode", "cert", "key", "ca", "ciphers", "ciphersuites", "min_protocol", "max_protocol"},
             {});
  const std::size_t errors_before = c.error_count();
  if (client_side && table.get("mode") == nullptr) settings.mode = TlsMode::prefer;  // a [tls.client] table turns it on
  if (const auto* node = table.get("mode")) {
    if (auto mode = get_tls_mode(c, *node, child_key(path, "mode"), client_side)) settings.mode = *mode;
  }
  auto read_text = [&](const char* name, std::string& out, bool is_file) {
    if (const auto* node = table.get(name)) {
      if (auto text = get_string(c, *node, child_key(path, name))) out = is_file ? resolve_path(*text, config_file) : *text;
    }
  };
  read_text("cert", settings.cert, true);
  read_text("key", settings.key, true);
  read_text("ca", settings.ca, true);
  read_text("ciphers", settings.ciphers, false);
  read_text("ciphersuites", settings.ciphersuites, false);
  read_text("min_protocol", settings.min_protocol, false);
  read_text("max_protocol", settings.max_protocol, false);
  if (c.error_count() != errors_before) return;
  if (settings.mode == TlsMode::disable) {
    // Nothing inherited from [tls.server] stays in force.
    settings.context.reset();
    settings.end_point_hash.clear();
    return;
  }

  const auto& where = table.source();
  const bool verify = settings.mode == TlsMode::verify_ca || settings.mode == TlsMode::verify_full;
  if (client_side && (settings.cert.empty() || settings.key.empty())) {
    c.error(where, path, std::string("cert and key are required with mode = \"") + to_string(settings.mode) + "\"");
    return;
  }
  if (verify && settings.ca.empty()) {
    c.error(where, child_key(path, "ca"),
            std::string("required with mode = \"") + to_string(settings.mode) + "\"" +
                (client_side ? " (the CA that signs client certificates)"
                             : " (the CA that signs the server's certificate, or \"system\")"));
    return;
  }
  const TlsError error = client_side ? build_acceptor_context(settings) : build_connector_context(settings);
  if (error.ok()) return;
  // At the key at fault when this table sets it (it may be inherited from [tls.server]).
  const toml::node* node = error.key.empty() ? nullptr : table.get(error.key);
  c.error(node != nullptr ? node->source() : where, error.key.empty() ? path : child_key(path, error.key), error.message);
}

void read_tls_root(Checker& c, const toml::table& table, Config& cfg) {
  check_keys(c, table, "tls", {"client", "server"}, {});
  if (const auto* node = table.get("client")) {
    if (const auto* t = get_table(c, *node, "tls.client")) read_tls(c, *t, "tls.client", cfg.source_file, true, cfg.tls_client);
  }
  if (const auto* node = table.get("server")) {
    if (const auto* t = get_table(c, *node, "tls.server")) read_tls(c, *t, "tls.server", cfg.source_file, false, cfg.tls_server);
  } else {
    // Built-in default: prefer TLS to PostgreSQL without verifying it (libpq's and PgBouncer's default).
    if (auto error = build_connector_context(cfg.tls_server); !error.ok())
      c.error_without_position("tls.server", error.message);
  }
}

// ---- [[hba]] --------------------------------------------------------------------------------

std::optional<HbaMethod> get_hba_method(Checker& c, const toml::node& node, const std::string& key) {
  const auto text = get_string(c, node, key);
  if (!text) return std::nullopt;
  static constexpr std::pair<std::string_view, HbaMethod> kMethods[] = {
      {"trust", HbaMethod::trust}, {"cleartext", HbaMethod::cleartext}, {"password", HbaMethod::cleartext},
      {"md5", HbaMethod::md5},     {"scram-sha-256", HbaMethod::scram_sha_256}, {"cert", HbaMethod::cert},
      {"reject", HbaMethod::reject}};
  for (const auto& [name, method] : kMethods)
    if (*text == name) return method;
  c.error(node.source(), key,
          "invalid method " + quoted(*text) + "; expected trust, cleartext, md5, scram-sha-256, cert or reject");
  return std::nullopt;
}

// "all", a name, or an array of names; empty result = all.
std::optional<std::vector<std::string>> get_name_list(Checker& c, const toml::node& node, const std::string& key) {
  std::vector<std::string> names;
  if (const auto* array = node.as_array()) {
    for (std::size_t i = 0; i < array->size(); ++i) {
      auto name = get_string(c, *array->get(i), key + "[" + std::to_string(i) + "]");
      if (!name) return std::nullopt;
      if (*name == "all") return std::vector<std::string>{};
      names.push_back(std::move(*name));
    }
    if (names.empty()) {
      c.error(node.source(), key, "must not be empty; use \"all\" for every name");
      return std::nullopt;
    }
    return names;
  }
  auto name = get_string(c, node, key);
  if (!name) return std::nullopt;
  if (*name != "all") names.push_back(std::move(*name));
  return names;
}

// "all", an IP address, or a CIDR range "10.0.0.0/8", "::1/128".
bool parse_hba_address(std::string_view text, HbaRule& rule, std::string& why) {
  if (text == "all") {
    rule.any_address = true;
    return true;
  }
  rule.any_address = false;
  std::string address(text.substr(0, text.find('/')));
  const bool has_prefix = address.size() != text.size();
  rule.ipv6 = address.find(':') != std::string::npos;
  if (::inet_pton(rule.ipv6 ? AF_INET6 : AF_INET, address.c_str(), rule.address.data()) != 1) {
    why = "not an IP address or CIDR range";
    return false;
  }
  const int bits = rule.ipv6 ? 128 : 32;
  rule.prefix = bits;
  if (has_prefix) {
    const std::string_view prefix = text.substr(address.size() + 1);
    int value = 0;
    if (prefix.empty() || prefix.size() > 3 ||
        !std::all_of(prefix.begin(), prefix.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      why = "the prefix length after / must be a number";
      return false;
    }
    for (char ch : prefix) value = value * 10 + (ch - '0');
    if (value > bits) {
      why = "the prefix length must be at most " + std::to_string(bits);
      return false;
    }
    rule.prefix = value;
  }
  // Host bits set below the prefix are a mistake pg_hba.conf also refuses.
  for (int bit = rule.prefix; bit < bits; ++bit) {
    if (rule.address[static_cast<std::size_t>(bit / 8)] & (0x80 >> (bit % 8))) {
      why = "the address has bits set beyond the /" + std::to_string(rule.prefix) + " prefix";
      return false;
    }
  }
  return true;
}

void read_hba(Checker& c, const toml::node& node, Config& cfg) {
  const auto* array = node.as_array();
  if (array == nullptr) {
    type_error(c, node, "hba", "an array of tables ([[hba]])");
    return;
  }
  for (std::size_t i = 0; i < array->size(); ++i) {
    const std::string path = "hba[" + std::to_string(i) + "]";
    const auto* table = get_table(c, *array->get(i), path);
    if (table == nullptr) continue;
    check_keys(c, *table, path, {"type", "database", "user", "address", "method"}, {});
    HbaRule rule;
    rule.line = static_cast<int>(table->source().begin.line);
    bool ok = true;
    if (const auto* n = table->get("type")) {
      const auto type = get_string(c, *n, child_key(path, "type"));
      if (type == "host") {
        rule.connection = HbaConnection::any;
      } else if (type == "hostssl") {
        rule.connection = HbaConnection::tls;
      } else if (type == "hostnossl") {
        rule.connection = HbaConnection::plain;
      } else {
        if (type) c.error(n->source(), child_key(path, "type"), "invalid type " + quoted(*type) + "; expected host, hostssl or hostnossl");
        ok = false;
      }
    }
    auto names = [&](const char* key, std::vector<std::string>& out) {
      const auto* n = table->get(key);
      if (n == nullptr) {
        c.error(table->source(), child_key(path, key), "missing; use \"all\" for every name");
        ok = false;
      } else if (auto list = get_name_list(c, *n, child_key(path, key))) {
        out = std::move(*list);
      } else {
        ok = false;
      }
    };
    names("database", rule.databases);
    names("user", rule.users);
    if (const auto* n = table->get("address")) {
      if (auto text = get_string(c, *n, child_key(path, "address"))) {
        std::string why;
        if (!parse_hba_address(*text, rule, why)) {
          c.error(n->source(), child_key(path, "address"), "invalid address " + quoted(*text) + ": " + why);
          ok = false;
        }
      } else {
        ok = false;
      }
    }
    if (const auto* n = table->get("method")) {
      if (auto method = get_hba_method(c, *n, child_key(path, "method"))) {
        rule.method = *method;
      } else {
        ok = false;
      }
    } else {
      c.error(table->source(), child_key(path, "method"), "missing");
      ok = false;
    }
    if (ok && rule.method == HbaMethod::cert && (cfg.tls_client.mode == TlsMode::disable || cfg.tls_client.ca.empty())) {
      c.error(table->source(), child_key(path, "method"), "method \"cert\" needs [tls.client] with a ca");
      ok = false;
    }
    if (ok) cfg.hba.push_back(std::move(rule));
  }
}


void read_database(Checker& c, const toml::key& name, const toml::table& table, const std::string& path,
                   Config& cfg) {
  check_keys(c, table, path,
             {"host", "port", "hosts", "dbname", "pool", "slow_query", "max_db_connections", "tls"}, {});
  bool ok = true;
  Database db;
  db.name = std::string(name.str());
  if (db.name.empty()) {
    c.error(name.source(), path, "database name must not be empty");
    ok = false;
  }

  const toml::node* hosts_node = table.get("hosts");
  if (hosts_node != nullptr && table.get("host") != nullptr) {
    c.error(hosts_node->source(), child_key(path, "hosts"), "give either host (and port) or hosts, not both");
    ok = false;
  } else if (hosts_node != nullptr && table.get("port") != nullptr) {
    c.error(table.get("port")->source(), child_key(path, "port"),
            "with hosts, give each port in its entry (\"host:port\")");
    ok = false;
  } else if (hosts_node != nullptr) {
    if (!read_hosts(c, *hosts_node, child_key(path, "hosts"), db.hosts)) ok = false;
    if (!db.hosts.empty()) {
      db.host = db.hosts.front().host;
      db.port = db.hosts.front().port;
    }
  } else if (const auto* node = table.get("host")) {
    if (auto host = get_string(c, *node, child_key(path, "host"))) {
      const bool blank = host->empty() || std::any_of(host->begin(), host->end(), [](char ch) {
                           return static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f;
                         });
      if (blank) {
        c.error(node->source(), child_key(path, "host"), "must be a non-empty host name or IP address without spaces");
        ok = false;
      }
      db.host = std::move(*host);
    } else {
      ok = false;
    }
  } else {
    c.error(name.source(), path, "missing host");
    ok = false;
  }

  if (const auto* node = table.get("port"); node != nullptr && hosts_node == nullptr) {
    if (auto port = get_int(c, *node, child_key(path, "port"), 1, 65535)) {
      db.port = static_cast<std::uint16_t>(*port);
    } else {
      ok = false;
    }
  }
  if (hosts_node == nullptr) db.hosts = {HostPort{db.host, db.port}};
  if (const auto* node = table.get("max_db_connections")) {
    if (auto v = get_int(c, *node, child_key(path, "max_db_connections"), 0, kMaxInt)) {
      db.max_db_connections = static_cast<int>(*v);
    }
  }

  if (const auto* node = table.get("dbname")) {
    if (auto dbname = get_string(c, *node, child_key(path, "dbname"))) {
      db.dbname = std::move(*dbname);
    } else {
      ok = false;
    }
  }
  // "*" keeps an empty dbname: the server database is the one the client asked for.
  if (db.dbname.empty() && db.name != "*") db.dbname = db.name;

  if (const auto* node = table.get("pool")) {
    const std::string pool_path = child_key(path, "pool");
    if (const auto* pool = get_table(c, *node, pool_path)) db.pool = read_pool(c, *pool, pool_path);
  }
  if (const auto* node = table.get("slow_query")) {
    db.slow_query = read_slow_query_table(c, *node, child_key(path, "slow_query"));
  }
  if (const auto* node = table.get("tls")) {
    const std::string tls_path = child_key(path, "tls");
    if (const auto* tls = get_table(c, *node, tls_path)) {
      TlsSettings settings = cfg.tls_server;  // [tls.server] with this table on top
      read_tls(c, *tls, tls_path, cfg.source_file, false, settings);
      db.tls = std::move(settings);
    }
  }
  if (ok) cfg.databases.emplace(db.name, std::move(db));
}

// ---- [users.NAME] -------------------------------------------------------------------------

std::optional<AuthMethod> get_auth(Checker& c, const toml::node& node, const std::string& key) {
  const auto method = get_string(c, node, key);
  if (!method) return std::nullopt;
  if (*method == "scram-sha-256") return AuthMethod::scram_sha_256;
  if (*method == "md5") return AuthMethod::md5;
  if (*method == "cleartext") return AuthMethod::cleartext;
  if (*method == "trust") return AuthMethod::trust;
  c.error(node.source(), key,
          "invalid auth method " + quoted(*method) + "; expected \"scram-sha-256\", \"md5\", \"cleartext\" or \"trust\"");
  return std::nullopt;
}

// Checks that `password` can verify clients under `method`. Never puts the
// password itself into a message.
void check_password(Checker& c, const User& user, const toml::key& name, const toml::node* node,
                    const std::string& path) {
  if (user.auth == AuthMethod::trust) return;
  const std::string method = quoted(to_string(user.auth));
  const std::string key = child_key(path, "password");
  if (node == nullptr) {
    c.error(name.source(), path, "missing password: auth = " + method + " needs one");
    return;
  }
  const std::string& password = user.password;
  if (password.empty()) {
    c.error(node->source(), key, "must not be empty with auth = " + method);
    return;
  }
  const bool md5_hash = auth::is_md5_hash(password);
  const bool scram_like = password.starts_with(kScramPrefix);
  switch (user.auth) {
    case AuthMethod::md5:
      if (scram_like) {
        c.error(node->source(), key,
                "a SCRAM secret cannot verify auth = \"md5\"; give a plain password or an md5 hash");
      } else if (md5_hash && user.name == "*") {
        c.error(node->source(), key,
                "an md5 hash is tied to one user name, so users.\"*\" needs a plain password for auth = \"md5\"");
      }
      break;
    case AuthMethod::scram_sha_256:
      if (md5_hash) {
        c.error(node->source(), key, "an md5 hash is only valid with auth = \"md5\"");
      } else if (scram_like && !auth::is_scram_secret(password)) {
        c.error(node->source(), key,
                "malformed SCRAM secret; expected \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\"");
      }
      break;
    case AuthMethod::cleartext:
      if (md5_hash) {
        c.error(node->source(), key, "auth = \"cleartext\" needs a plain password, not an md5 hash");
      } else if (scram_like) {
        c.error(node->source(), key, "auth = \"cleartext\" needs a plain password, not a SCRAM secret");
      }
      break;
    case AuthMethod::trust:
      break;
  }
}

void read_user(Checker& c, const toml::key& name, const toml::table& table, const std::string& path, Config& cfg) {
  check_keys(c, table, path, {"auth", "password", "server_password", "pool", "slow_query", "max_user_connections"},
             {});
  bool ok = true;
  User user;
  user.name = std::string(name.str());
  if (user.name.empty()) {
    c.error(name.source(), path, "user name must not be empty");
    ok = false;
  }

  bool auth_ok = true;
  if (const auto* node = table.get("auth")) {
    if (auto method = get_auth(c, *node, child_key(path, "auth"))) {
      user.auth = *method;
    } else {
      auth_ok = false;
    }
  }

  bool password_ok = true;
  const toml::node* password_node = table.get("password");
  if (password_node != nullptr) {
    if (auto password = get_string(c, *password_node, child_key(path, "password"))) {
      user.password = std::move(*password);
    } else {
      password_ok = false;
    }
  }

  if (const auto* node = table.get("server_password")) {
    if (auto password = get_string(c, *node, child_key(path, "server_password"))) {
      if (password->starts_with(kScramPrefix)) {
        c.error(node->source(), child_key(path, "server_password"),
                "a SCRAM secret cannot be used to log in to PostgreSQL; give the plain password");
        ok = false;
      }
      user.server_password = std::move(*password);
    } else {
      ok = false;
    }
  }

  // Only judge the password against a valid auth method, so one mistake gives one error.
  if (auth_ok && password_ok) check_password(c, user, name, password_node, path);
  ok = ok && auth_ok && password_ok;

  if (const auto* node = table.get("pool")) {
    const std::string pool_path = child_key(path, "pool");
    if (const auto* pool = get_table(c, *node, pool_path)) user.pool = read_pool(c, *pool, pool_path);
  }
  if (const auto* node = table.get("max_user_connections")) {
    if (auto v = get_int(c, *node, child_key(path, "max_user_connections"), 0, kMaxInt)) {
      user.max_user_connections = static_cast<int>(*v);
    }
  }
  if (const auto* node = table.get("slow_query")) {
    user.slow_query = read_slow_query_table(c, *node, child_key(path, "slow_query"));
  }
  if (ok) cfg.users.emplace(user.name, std::move(user));
}


// ---- [auth_query] ------------------------------------------------------------------------

void read_auth_query(Checker& c, const toml::table& table, Config& cfg) {
  check_keys(c, table, "auth_query", {"user", "query", "database", "cache"}, {});
  AuthQuery& aq = cfg.auth_query;
  if (const auto* node = table.get("user")) {
    if (auto user = get_string(c, *node, "auth_query.user")) {
      const auto entry = cfg.users.find(*user);
      if (user->empty() || *user == "*") {
        c.error(node->source(), "auth_query.user", "must name a user with an entry of its own in [users]");
      } else if (entry == cfg.users.end()) {
        c.error(node->source(), "auth_query.user",
                "user " + quoted(*user) + " has no [users." + quote_key(*user) +
                    "] entry (it needs the password Sluice logs in to PostgreSQL with)");
      } else if (entry->second.server_password.empty() && entry->second.password.starts_with(kScramPrefix)) {
        c.error(node->source(), "auth_query.user",
                "user " + quoted(*user) + " needs a plain password or server_password to log in to PostgreSQL");
      } else {
        aq.user = *user;
      }
    }
  } else {
    c.error(table.source(), "auth_query.user", "missing: the user Sluice runs the query as");
  }
  if (const auto* node = table.get("query")) {
    if (auto query = get_string(c, *node, "auth_query.query")) {
      if (query->find("$1") == std::string::npos) {
        c.error(node->source(), "auth_query.query", "must use $1 for the user name");
      } else {
        aq.query = *query;
      }
    }
  }
  if (const auto* node = table.get("database")) {
    if (auto database = get_string(c, *node, "auth_query.database")) aq.database = *database;
  }
  if (const auto* node = table.get("cache")) {
    if (auto d = get_duration(c, *node, "auth_query.cache")) aq.cache = *d;
  }
}

// ---- the whole document ------------------------------------------------------------------

void read_document(Checker& c, const toml::table& root, Config& cfg) {
  check_keys(c, root, "",
             {"sluice", "pool", "timeouts", "health", "retry", "slow_query", "tls", "hba", "auth_query", "databases",
              "users"},
             {});

  if (const auto* node = root.get("sluice")) {
    if (const auto* table = get_table(c, *node, "sluice")) read_sluice(c, *table, "sluice", cfg);
  }
  if (const auto* node = root.get("pool")) {
    if (const auto* table = get_table(c, *node, "pool")) apply(cfg.pool, read_pool(c, *table, "pool"));
  }
  if (const auto* node = root.get("timeouts")) {
    if (const auto* table = get_table(c, *node, "timeouts")) read_timeouts(c, *table, "timeouts", cfg.timeouts);
  }
  if (const auto* node = root.get("health")) {
    if (const auto* table = get_table(c, *node, "health")) read_health(c, *table, "health", cfg.health);
  }
  if (const auto* node = root.get("retry")) {
    if (const auto* table = get_table(c, *node, "retry")) read_retry(c, *table, "retry", cfg.retry);
  }
  if (const auto* node = root.get("slow_query")) {
    if (const auto* table = get_table(c, *node, "slow_query")) {
      read_slow_query(c, *table, "slow_query", cfg.source_file, cfg.slow_query);
    }
  }

  if (const auto* node = root.get("tls")) {
    if (const auto* table = get_table(c, *node, "tls")) read_tls_root(c, *table, cfg);
  } else if (auto error = build_connector_context(cfg.tls_server); !error.ok()) {
    c.error_without_position("tls.server", error.message);
  }
  if (const auto* node = root.get("hba")) read_hba(c, *node, cfg);

  if (const auto* node = root.get("databases")) {
    if (const auto* databases = get_table(c, *node, "databases")) {
      if (databases->empty()) {
        c.error(node->source(), "databases", "at least one database is required, e.g. [databases.app]");
      }
      for (auto&& [name, value] : *databases) {
        const std::string path = child_key("databases", name.str());
        if (const auto* table = get_table(c, value, path)) read_database(c, name, *table, path, cfg);
      }
    }
  } else {
    c.error_without_position("databases", "at least one database is required, e.g. [databases.app]");
  }

  if (const auto* node = root.get("users")) {
    if (const auto* users = get_table(c, *node, "users")) {
      for (auto&& [name, value] : *users) {
        const std::string path = child_key("users", name.str());
        if (const auto* table = get_table(c, value, path)) read_user(c, name, *table, path, cfg);
      }
    }
  }
  if (const auto* node = root.get("auth_query")) {
    if (const auto* table = get_table(c, *node, "auth_query")) read_auth_query(c, *table, cfg);
  }
}

}  // namespace

// ---- public interface ---------------------------------------------------------------------

const Database* Config::find_database(const std::string& name) const {
  if (auto it = databases.find(name); it != databases.end()) return &it->second;
  if (auto it = databases.find("*"); it != databases.end()) return &it->second;
  return nullptr;
}

const User* Config::find_user(const std::string& name) const {
  if (auto it = users.find(name); it != users.end()) return &it->second;
  if (auto it = users.find("*"); it != users.end()) return &it->second;
  return nullptr;
}

PoolSettings Config::pool_for(const Database& db, const User& user) const {
  PoolSettings settings = pool;
  apply(settings, db.pool);
  apply(settings, user.pool);
  return settings;
}

SlowQuerySettings Config::slow_query_for(const Database& db, const User& user) const {
  SlowQuerySettings settings = slow_query;
  apply(settings, db.slow_query);
  apply(settings, user.slow_query);
  return settings;
}

std::string server_dbname(const Database& db, const std::string& requested) {
  return db.dbname.empty() ? requested : db.dbname;
}

std::string format_duration(Duration duration) {
  const auto ms = duration.count();
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

LoadResult load_string(std::string_view toml_text, const std::string& source_name) {
  Checker checker(source_name);
  LoadResult result;
  toml::table root;

  auto syntax_error = [&](const toml::parse_error& e) {
    checker.error(e.source(), "", std::string(e.description()));
  };
#if TOML_EXCEPTIONS
  try {
    root = toml::parse(toml_text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    syntax_error(e);
    result.errors = checker.take_errors();
    return result;
  }
#else
  toml::parse_result parsed = toml::parse(toml_text, std::string_view(source_name));
  if (!parsed) {
    syntax_error(parsed.error());
    result.errors = checker.take_errors();
    return result;
  }
  root = std::move(parsed).table();
#endif

  Config cfg;
  cfg.source_file = source_name;
  read_document(checker, root, cfg);
  result.errors = checker.take_errors();
  if (result.errors.empty()) result.config = std::move(cfg);
  return result;
}

LoadResult load_file(const std::string& path) {
  auto unreadable = [&](int error) {
    LoadResult result;
    result.errors.push_back(ConfigError{path, 0, 0, "", "cannot read configuration file: " + std::string(std::strerror(error))});
    return result;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unreadable(errno);
  std::string text;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      text.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      const int error = errno;
      ::close(fd);
      return unreadable(error);
    }
  }
  ::close(fd);
  return load_string(text, path);
}

std::optional<Duration> parse_duration(std::string_view text) {
  using Rep = Duration::rep;
  std::size_t i = 0;
  Rep value = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    const Rep digit = text[i] - '0';
    if (value > (std::numeric_limits<Rep>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return std::nullopt;  // no digits (also rejects a sign)
  const std::string_view unit = text.substr(i);
  Rep multiplier = 0;
  if (unit == "ms") {
    multiplier = 1;
  } else if (unit == "s") {
    multiplier = 1000;
  } else if (unit == "m") {
    multiplier = 60 * 1000;
  } else if (unit == "h") {
    multiplier = 60 * 60 * 1000;
  } else if (unit == "d") {
    multiplier = 24 * 60 * 60 * 1000;
  } else {
    return std::nullopt;
  }
  if (value > std::numeric_limits<Rep>::max() / multiplier) return std::nullopt;
  return Duration(value * multiplier);
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t i = 0;
  std::uint64_t value = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    const auto digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return std::nullopt;
  const std::string_view unit = text.substr(i);
  std::uint64_t multiplier = 0;
  if (unit.empty() || unit == "B") {
    multiplier = 1;
  } else if (unit == "kB" || unit == "KB") {
    multiplier = 1024;
  } else if (unit == "MB") {
    multiplier = 1024ull * 1024;
  } else if (unit == "GB") {
    multiplier = 1024ull * 1024 * 1024;
  } else {
    return std::nullopt;
  }
  if (value > std::numeric_limits<std::uint64_t>::max() / multiplier) return std::nullopt;
  return value * multiplier;
}

const HbaRule* match_hba(const std::vector<HbaRule>& rules, std::string_view database, std::string_view user,
                         std::string_view client_address, bool tls) {
  // The client's address as bytes; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as IPv4.
  std::array<std::uint8_t, 16> bytes{};
  bool ipv6 = false;
  bool parsed = false;
  const std::string text(client_address);
  if (::inet_pton(AF_INET, text.c_str(), bytes.data()) == 1) {
    parsed = true;
  } else if (::inet_pton(AF_INET6, text.c_str(), bytes.data()) == 1) {
    parsed = true;
    ipv6 = true;
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(std::begin(kMapped), std::end(kMapped), bytes.begin())) {
      std::copy(bytes.begin() + 12, bytes.end(), bytes.begin());
      ipv6 = false;
    }
  }
  auto listed = [](const std::vector<std::string>& names, std::string_view name) {
    return names.empty() || std::find(names.begin(), names.end(), name) != names.end();
  };
  for (const HbaRule& rule : rules) {
    if (rule.connection == HbaConnection::tls && !tls) continue;
    if (rule.connection == HbaConnection::plain && tls) continue;
    if (!listed(rule.databases, database) || !listed(rule.users, user)) continue;
    if (!rule.any_address) {
      if (!parsed || rule.ipv6 != ipv6) continue;
      bool inside = true;
      for (int bit = 0; bit < rule.prefix && inside; ++bit) {
        const auto index = static_cast<std::size_t>(bit / 8);
        const int mask = 0x80 >> (bit % 8);
        inside = (rule.address[index] & mask) == (bytes[index] & mask);
      }
      if (!inside) continue;
    }
    return &rule;
  }
  return nullptr;
}

const char* to_string(HbaMethod method) {
  switch (method) {
    case HbaMethod::trust: return "trust";
    case HbaMethod::cleartext: return "cleartext";
    case HbaMethod::md5: return "md5";
    case HbaMethod::scram_sha_256: return "scram-sha-256";
    case HbaMethod::cert: return "cert";
    case HbaMethod::reject: return "reject";
  }
  return "unknown";
}

const char* to_string(PoolMode mode) {
  switch (mode) {
    case PoolMode::session: return "session";
    case PoolMode::transaction: return "transaction";
    case PoolMode::statement: return "statement";
  }
  return "unknown";
}

const char* to_string(AuthMethod method) {
  switch (method) {
    case AuthMethod::trust: return "trust";
    case AuthMethod::cleartext: return "cleartext";
    case AuthMethod::md5: return "md5";
    case AuthMethod::scram_sha_256: return "scram-sha-256";
  }
  return "unknown";
}

}  // namespace sluice::config
