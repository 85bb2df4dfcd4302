#include "proxy/context.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "proxy/client_session.h"

namespace sluice::proxy {

protocol::BackendKey CancelRegistry::add(CancelsInFlight& in_flight) {
  std::lock_guard lock(mutex_);
  for (;;) {
    std::uint32_t values[2];
    RAND_bytes(reinterpret_cast<unsigned char*>(values), sizeof values);
    protocol::BackendKey key{values[0] & 0x7fffffffu, values[1]};
    if (key.pid == 0 || entries_.contains(key.pid)) continue;
    in_flight = std::make_shared<std::atomic<int>>(0);
    entries_.emplace(key.pid, Entry{key.secret, std::nullopt, in_flight});
    return key;
  }
}

void CancelRegistry::remove(std::uint32_t pid) {
  std::lock_guard lock(mutex_);
  entries_.erase(pid);
}

void CancelRegistry::set_target(std::uint32_t pid, std::optional<CancelTarget> target) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(pid); it != entries_.end()) it->second.target = std::move(target);
}

std::optional<ForwardedCancel> CancelRegistry::find(protocol::BackendKey key) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key.pid);
  if (it == entries_.end()) return std::nullopt;
  if (CRYPTO_memcmp(&it->second.secret, &key.secret, sizeof key.secret) != 0) return std::nullopt;
  if (!it->second.target) return std::nullopt;
  // Counted under the lock: once set_target(nullopt) has run, no new cancel is
  // counted, so a count of zero afterwards means none is left.
  it->second.in_flight->fetch_add(1);
  return ForwardedCancel(*it->second.target, it->second.in_flight);
}

QueryStats::Shard& Context::query_stats_shard() {
  // One Context per process: a thread's shard is created on its first statement.
  thread_local QueryStats::Shard* shard = nullptr;
  if (shard == nullptr) shard = &query_stats_.add_shard();
  return *shard;
}

bool Context::try_add_client() {
  const int max = config_->max_client_conn;
  int current = clients_.load(std::memory_order_relaxed);
  while (current < max) {
    if (clients_.compare_exchange_weak(current, current + 1)) return true;
  }
  return false;
}

void Context::remove_client() { clients_.fetch_sub(1); }

protocol::auth::ScramSecret Context::scram_secret_for(const config::User& user) {
  std::lock_guard lock(scram_mutex_);
  auto it = scram_cache_.find(user.name);
  if (it != scram_cache_.end()) return it->second;
  auto secret = protocol::auth::make_scram_secret(user.password, protocol::auth::random_bytes(16), 4096);
  scram_cache_.emplace(user.name, secret);
  return secret;
}

void Context::track(std::uint64_t id, const std::shared_ptr<ClientSession>& session) {
  std::lock_guard lock(sessions_mutex_);
  sessions_.emplace(id, session);
}

void Context::untrack(std::uint64_t id) {
  bool last = false;
  {
    std::lock_guard lock(sessions_mutex_);
    sessions_.erase(id);
    last = sessions_.empty() && shutting_down();
  }
  if (last && last_session_hook_) last_session_hook_();
}

std::vector<std::shared_ptr<ClientSession>> Context::sessions() {
  std::vector<std::shared_ptr<ClientSession>> live;
  std::lock_guard lock(sessions_mutex_);
  live.reserve(sessions_.size());
  for (auto& [id, weak] : sessions_)
    if (auto session = weak.lock()) live.push_back(std::move(session));
  return live;
}

std::size_t Context::live_sessions() {
  std::lock_guard lock(sessions_mutex_);
  return sessions_.size();
}

void Context::close_all_sessions() {
  std::vector<std::shared_ptr<ClientSession>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& [id, weak] : sessions_)
      if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->request_close();
}

}  // namespace sluice::proxy
