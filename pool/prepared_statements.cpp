#include "pool/prepared_statements.h"

namespace sluice::pool {

StatementPtr StatementRegistry::intern(protocol::Bytes tail) {
  const std::string_view key(reinterpret_cast<const char*>(tail.data()), tail.size());
  std::lock_guard lock(mutex_);
  if (auto it = by_tail_.find(key); it != by_tail_.end()) return it->second;
  if (by_tail_.size() >= kMaxIndexed) by_tail_.clear();
  auto statement = std::make_shared<SharedStatement>();
  statement->id = ++next_id_;
  statement->server_name = "sluice_" + std::to_string(statement->id);
  statement->tail.assign(key);
  by_tail_.emplace(std::string_view(statement->tail), statement);
  return statement;
}

StatementPtr StatementRegistry::renew(const StatementPtr& stale) {
  std::lock_guard lock(mutex_);
  auto it = by_tail_.find(std::string_view(stale->tail));
  if (it != by_tail_.end() && it->second != stale) return it->second;
  if (it != by_tail_.end()) by_tail_.erase(it);
  auto statement = std::make_shared<SharedStatement>();
  statement->id = ++next_id_;
  statement->server_name = "sluice_" + std::to_string(statement->id);
  statement->tail = stale->tail;
  by_tail_.emplace(std::string_view(statement->tail), statement);
  return statement;
}

std::size_t StatementRegistry::size() const {
  std::lock_guard lock(mutex_);
  return by_tail_.size();
}

bool ServerStatements::use(std::uint64_t id) {
  auto it = index_.find(id);
  if (it == index_.end()) return false;
  lru_.splice(lru_.end(), lru_, it->second);
  return true;
}

StatementPtr ServerStatements::add(StatementPtr statement, std::size_t capacity) {
  const auto id = statement->id;
  if (use(id)) return nullptr;
  lru_.push_back(std::move(statement));
  index_.emplace(id, std::prev(lru_.end()));
  if (index_.size() <= capacity || lru_.size() < 2) return nullptr;
  StatementPtr victim = std::move(lru_.front());
  lru_.pop_front();
  index_.erase(victim->id);
  return victim;
}

void ServerStatements::erase(std::uint64_t id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
}

void ServerStatements::clear() {
  lru_.clear();
  index_.clear();
}

}  // namespace sluice::pool
