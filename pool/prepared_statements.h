#pragma once
// Protocol-level prepared statements shared between clients in transaction and
// statement mode. Every distinct statement (query text + parameter types) gets
// one server-side name for the life of the process, so clients that prepare the
// same text under any name share one server-side statement, and two texts can
// never meet under one name. Each server connection remembers which of them it
// has prepared, least recently used first out.
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "protocol/wire.h"

namespace sluice::pool {

struct SharedStatement {
  std::uint64_t id = 0;
  std::string server_name;  // "sluice_<id>"
  std::string tail;         // Parse body after the name: query text, parameter types
};
using StatementPtr = std::shared_ptr<const SharedStatement>;

class StatementRegistry {
 public:
  // The statement for this Parse tail, created on first sight.
  StatementPtr intern(protocol::Bytes tail);
  // A new server-side name for `stale`'s text (its plan no longer fits the
  // tables), which later intern() calls return; if another client renewed it
  // first, that statement.
  StatementPtr renew(const StatementPtr& stale);
  std::size_t size() const;

 private:
  // Past this many distinct statements the index starts over; ids keep growing,
  // so a name is still never reused for another text.
  static constexpr std::size_t kMaxIndexed = 100000;
  mutable std::mutex mutex_;
  std::uint64_t next_id_ = 0;
  std::unordered_map<std::string_view, StatementPtr> by_tail_;  // views into the statements' tails
};

class ServerStatements {
 public:
  // Whether the connection has `id` prepared; marks it most recently used.
  bool use(std::uint64_t id);
  // Records `statement` as prepared. If that makes more than `capacity`, returns
  // the least recently used other statement, which the caller closes on the server.
  StatementPtr add(StatementPtr statement, std::size_t capacity);
  void erase(std::uint64_t id);
  void clear();
  std::size_t size() const { return index_.size(); }

 private:
  std::list<StatementPtr> lru_;  // least recently used first
  std::unordered_map<std::uint64_t, std::list<StatementPtr>::iterator> index_;
};

}  // namespace sluice::pool
