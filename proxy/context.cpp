#include "proxy/context.h"

#include <openssl/crypto.h>

#include "protocol/auth.h"
#include "proxy/client_session.h"

namespace sluice::proxy {

protocol::BackendKey CancelRegistry::add(const std::shared_ptr<CancelSlot>& slot) {
  std::lock_guard lock(mutex_);
  for (;;) {
    std::uint32_t values[2];
    protocol::auth::fill_random(values, sizeof values);
    protocol::BackendKey key{values[0] & 0x7fffffffu, values[1]};
    if (key.pid == 0 || entries_.contains(key.pid)) continue;
    entries_.emplace(key.pid, Entry{slot, key.secret});
    return key;
  }
}

void CancelRegistry::remove(std::uint32_t pid) {
  std::lock_guard lock(mutex_);
  entries_.erase(pid);
}

std::optional<ForwardedCancel> CancelRegistry::find(protocol::BackendKey key) const {
  std::shared_ptr<CancelSlot> slot;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key.pid);
    if (it == entries_.end()) return std::nullopt;
    if (CRYPTO_memcmp(&it->second.secret, &key.secret, sizeof key.secret) != 0) return std::nullopt;
    slot = it->second.slot.lock();
  }
  if (!slot) return std::nullopt;  // the session is ending
  auto target = slot->count_cancel();
  if (!target) return std::nullopt;
  return ForwardedCancel(std::move(*target), CancelsInFlight(slot, &slot->in_flight));
}

void Context::replace_config(std::shared_ptr<const config::Config> config) {
  std::lock_guard lock(configs_mutex_);
  current_.store(config.get(), std::memory_order_release);
  kept_configs_.push_back(std::move(config));
}

pool::ServerTarget server_target(const config::Database& db, const config::User& user, const std::string& requested_db,
                                 const std::string& user_name) {
  pool::ServerTarget target;
  target.host = db.host;
  target.port = db.port;
  target.dbname = db.dbname.empty() ? requested_db : db.dbname;
  target.user = user_name;
  if (!user.server_password.empty()) {
    target.credential.plain = user.server_password;
  } else if (protocol::auth::is_md5_hash(user.password)) {
    target.credential.md5_hash = user.password;
  } else if (!protocol::auth::is_scram_secret(user.password)) {
    target.credential.plain = user.password;  // empty for trust users: PostgreSQL decides
  }
  return target;
}

std::vector<std::pair<std::string, std::uint16_t>> servers_of(const config::Database& db) {
  std::vector<std::pair<std::string, std::uint16_t>> servers;
  for (const auto& host : db.hosts) servers.emplace_back(host.host, host.port);
  return servers;
}

pool::PoolSettingsSnapshot pool_snapshot(const config::Config& config, const config::Database& db,
                                         const config::User& user) {
  const auto settings = config.pool_for(db, user);
  pool::PoolSettingsSnapshot snapshot;
  snapshot.size = settings.size;
  snapshot.min_size = settings.min_size;
  snapshot.reserve_size = settings.reserve_size;
  snapshot.reserve_timeout = settings.reserve_timeout;
  snapshot.connect_timeout = config.timeouts.server_connect;
  snapshot.query_wait = config.timeouts.query_wait;
  snapshot.server_idle = config.timeouts.server_idle;
  snapshot.server_lifetime = config.timeouts.server_lifetime;
  snapshot.check_query = config.health.check_query;
  snapshot.check_delay = config.health.check_delay;
  snapshot.connect_attempts = config.retry.connect_attempts;
  snapshot.backoff_initial = config.retry.backoff_initial;
  snapshot.backoff_max = config.retry.backoff_max;
  snapshot.share_tracked_parameters = settings.mode != config::PoolMode::session;
  snapshot.mode = config::to_string(settings.mode);
  snapshot.tls = &config.server_tls_for(db);
  return snapshot;
}

namespace {
// One Context per process: a thread's shard is created on its first statement.
QueryStats::Shard*& this_threads_shard() {
  thread_local QueryStats::Shard* shard = nullptr;
  return shard;
}
}  // namespace

QueryStats::Shard& Context::query_stats_shard() {
  auto*& shard = this_threads_shard();
  if (shard == nullptr) shard = &query_stats_.add_shard();
  return *shard;
}

void Context::take_unlocked_stats_shard() {
  auto*& shard = this_threads_shard();
  if (shard == nullptr) shard = &query_stats_.add_shard(/*locking=*/false);
}

bool Context::try_add_client() {
  const int max = config().max_client_conn;
  int current = clients_.load(std::memory_order_relaxed);
  while (current < max) {
    if (clients_.compare_exchange_weak(current, current + 1)) return true;
  }
  return false;
}

void Context::remove_client() { clients_.fetch_sub(1); }

void Context::record_stats_sample(StatsSample sample) {
  std::lock_guard lock(stats_mutex_);
  previous_sample_ = std::move(latest_sample_);
  latest_sample_ = std::move(sample);
}

std::pair<Context::StatsSample, Context::StatsSample> Context::stats_samples() const {
  std::lock_guard lock(stats_mutex_);
  return {previous_sample_, latest_sample_};
}

protocol::auth::ScramSecret Context::scram_secret_for(const config::User& user) {
  std::lock_guard lock(scram_mutex_);
  auto it = scram_cache_.find(user.name);
  if (it != scram_cache_.end() && it->second.password == user.password) return it->second.secret;
  auto secret = protocol::auth::make_scram_secret(user.password, protocol::auth::random_bytes(16), 4096);
  scram_cache_.insert_or_assign(user.name, DerivedSecret{user.password, secret});
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
  for (auto& s : live) s->request_close(true);
}

}  // namespace sluice::proxy
