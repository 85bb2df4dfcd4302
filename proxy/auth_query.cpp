#include "proxy/auth_query.h"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "protocol/read_buffer.h"
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
  if (auto [ec, n] = co_await asio::async_write(conn.stream(), asio::buffer(out), use_nothrow); ec)
    co_return QueryOutcome{"write to server failed: " + ec.message()};
  protocol::ReadBuffer buffer;
  AuthLookup lookup;
  std::string error;
  for (;;) {
    protocol::Message msg;
    auto peeked = protocol::peek_message(buffer.data(), 1u << 20, msg);
    if (!peeked) co_return QueryOutcome{"invalid message from server: " + peeked.error().message()};
    if (*peeked == 0) {
      auto space = buffer.prepare();
      auto [ec, n] = co_await conn.stream().async_read_some(asio::buffer(space.data(), space.size()), use_nothrow);
      if (ec) co_return QueryOutcome{"server closed the connection: " + ec.message()};
      buffer.commit(n);
      continue;
    }
    switch (msg.type) {
      case 'D': {
        auto row = protocol::parse_data_row(msg.body);
        if (!row || row->size() != 2) {
          error = "auth_query must return two columns (user name, password)";
        } else if (lookup.found) {
          error = "auth_query returned more than one row";
        } else {
          lookup.found = true;
          if ((*row)[1]) lookup.secret = std::string(*(*row)[1]);
        }
        break;
      }
      case 'E': {
        auto fields = protocol::parse_error_fields(msg.body);
        error = "auth_query failed: " + (fields ? std::string(fields->message) : std::string("malformed error"));
        break;
      }
      case 'S':
        if (auto status = protocol::parse_parameter_status(msg.body)) conn.set_parameter(status->name, status->value);
        break;
      case 'Z': {
        const bool idle = msg.body.size() == 1 && msg.body[0] == 'I';
        buffer.consume(*peeked);
        const bool reusable = idle && buffer.empty();
        if (!error.empty()) co_return QueryOutcome{error, reusable};
        co_return QueryOutcome{lookup, reusable};
      }
      default:  // ParseComplete, BindComplete, CommandComplete, NoticeResponse
        break;
    }
    buffer.consume(*peeked);
  }
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
