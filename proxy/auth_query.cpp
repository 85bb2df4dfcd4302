#include "proxy/auth_query.h"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "protocol/wire.h"

namespace sluice::proxy {
namespace {

struct QueryOutcome {
  std::variant<AuthLookup, std::string> result;
  bool reusable = false;  // the connection ended idle, with nothing left unread
};

awaitable<QueryOutcome> query_on(pool::ServerConnection& conn, const std::string& query, const std::string& user) {
  std::string out;
  const std::string_view parameters[] = {user};
  protocol::append_extended_query(out, query, parameters);
  AuthLookup lookup;
  std::string error;
  auto ready = co_await pool::exchange(conn, out, [&](const protocol::Message& msg) {
    if (msg.type == 'D') {
      auto row = protocol::parse_data_row(msg.body);
      if (!row || row->size() != 2) {
        error = "auth_query must return two columns (user name, password)";
      } else if (lookup.found) {
        error = "auth_query returned more than one row";
      } else {
        lookup.found = true;
        if ((*row)[1]) lookup.secret = std::string(*(*row)[1]);
      }
    } else if (msg.type == 'E') {
      auto fields = protocol::parse_error_fields(msg.body);
      error = "auth_query failed: " + (fields ? std::string(fields->message) : std::string("malformed error"));
    }
  });
  if (!ready) co_return QueryOutcome{std::string("the server connection failed during auth_query")};
  if (!error.empty()) co_return QueryOutcome{error, ready->idle};
  co_return QueryOutcome{lookup, ready->idle};
}

}  // namespace

awaitable<std::variant<AuthLookup, std::string>> run_auth_query(std::shared_ptr<pool::Pool> pool, std::string query,
                                                                 std::string user, std::chrono::milliseconds timeout,
                                                                 std::uint64_t client_id) {
  using namespace asio::experimental::awaitable_operators;
  auto acquired = co_await pool->acquire({}, client_id);
  if (!acquired.lease) {
    co_return "no connection for the auth user: " + acquired.failure.reason;
  }
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, timeout);
  auto outcome = co_await (query_on(*acquired.lease, query, user) || timer.async_wait(use_nothrow));
  auto* finished = std::get_if<QueryOutcome>(&outcome);
  if (finished == nullptr) {
    acquired.lease.discard();
    co_return "auth_query took longer than " + std::to_string(timeout.count()) + " ms";
  }
  if (finished->reusable) {
    acquired.lease.release_clean();
  } else {
    acquired.lease.discard();
  }
  co_return std::move(finished->result);
}

std::optional<AuthLookup> AuthQueryCache::get(const std::string& database, const std::string& user,
                                              Clock::time_point now, std::chrono::milliseconds ttl) {
  if (ttl.count() <= 0) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = entries_.find({database, user});
  if (it == entries_.end()) return std::nullopt;
  if (now - it->second.fetched > ttl) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.lookup;
}

void AuthQueryCache::put(const std::string& database, const std::string& user, AuthLookup lookup,
                         Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (entries_.size() >= kMaxEntries) entries_.clear();  // a flood of unknown names must not grow it for ever
  entries_[{database, user}] = Entry{std::move(lookup), now};
}

}  // namespace sluice::proxy
