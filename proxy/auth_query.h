#pragma once
// [auth_query]: the password (SCRAM secret or md5 hash) of a user that has no
// [users] entry, asked of PostgreSQL over a pooled connection of the auth user,
// and remembered for [auth_query] cache.
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <variant>

#include "pool/pool.h"

namespace sluice::proxy {

// What PostgreSQL said about a user.
struct AuthLookup {
  bool found = false;                  // the query returned a row
  std::optional<std::string> secret;   // NULL: no password, or the role has expired (rolvaliduntil)
};

// Runs `query` ($1 = user) on a connection from `pool` (bounded by `timeout`):
// the lookup, or why it failed.
awaitable<std::variant<AuthLookup, std::string>> run_auth_query(std::shared_ptr<pool::Pool> pool, std::string query,
                                                                 std::string user, std::chrono::milliseconds timeout,
                                                                 std::uint64_t client_id);

// Answers kept for a while, per (database, user). Thread-safe.
class AuthQueryCache {
 public:
  using Clock = std::chrono::steady_clock;
  std::optional<AuthLookup> get(const std::string& database, const std::string& user, Clock::time_point now,
                                std::chrono::milliseconds ttl);
  void put(const std::string& database, const std::string& user, AuthLookup lookup, Clock::time_point now);

 private:
  struct Entry {
    AuthLookup lookup;
    Clock::time_point fetched;
  };
  static constexpr std::size_t kMaxEntries = 100'000;
  std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
};

}  // namespace sluice::proxy
