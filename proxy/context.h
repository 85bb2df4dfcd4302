#pragma once
// State shared by every client session of one Sluice process: the config, the
// pools, the cancel-key registry and the live sessions (for shutdown).
#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <optional>
#include <string>
#include <unordered_map>

#include "config/config.h"
#include "pool/pool.h"
#include "protocol/auth.h"
#include "proxy/auth_query.h"
#include "proxy/auth_throttle.h"
#include "proxy/fingerprint.h"
#include "proxy/query_stats.h"
#include "proxy/slow_log.h"

namespace sluice::proxy {

class ClientSession;

// Where a client's CancelRequest must go: the backend currently serving it.
struct CancelTarget {
  std::string host;
  std::uint16_t port = 0;
  protocol::BackendKey key;
};

// Cancels being forwarded for one client. A session waits for them to finish
// before its server connection goes back to the pool, so that a late cancel
// cannot hit the next client's query on the same backend. The counter lives in
// the session; this pointer shares the session's ownership.
using CancelsInFlight = std::shared_ptr<std::atomic<int>>;

// A cancel that find() has counted as in flight; uncounts itself when done.
class [[nodiscard]] ForwardedCancel {
 public:
  ForwardedCancel(CancelTarget target, CancelsInFlight counter)
      : target_(std::move(target)), counter_(std::move(counter)) {}
  ForwardedCancel(ForwardedCancel&&) noexcept = default;
  ForwardedCancel& operator=(ForwardedCancel&&) = delete;
  ~ForwardedCancel() {
    if (counter_) counter_->fetch_sub(1);
  }
  const CancelTarget& target() const { return target_; }

 private:
  CancelTarget target_;
  CancelsInFlight counter_;
};

// One client's end of cancel forwarding, kept in its session: the backend a cancel
// must go to while one is attached, and the cancels on their way to it. In
// transaction mode the target changes at every attach and release, so it has a
// lock of its own, held for a few instructions and contended only by a
// CancelRequest, rather than the registry's lock over every client.
class CancelSlot {
 public:
  void set_target(std::optional<CancelTarget> target) {
    Guard guard(locked_);
    has_target_ = target.has_value();
    if (target) target_ = std::move(*target);
  }
  // The target, counted as in flight, or nullopt while no server is attached.
  // Counted under the slot's lock: once set_target(nullopt) has returned, no new
  // cancel is counted, so a count of zero afterwards means none is left.
  std::optional<CancelTarget> count_cancel() {
    Guard guard(locked_);
    if (!has_target_) return std::nullopt;
    std::optional<CancelTarget> target = target_;  // copied first: a failed copy counts nothing
    in_flight.fetch_add(1);
    return target;
  }
  std::atomic<int> in_flight{0};

 private:
  // A spin lock: its holders never block, and it is one byte per client.
  class Guard {
   public:
    explicit Guard(std::atomic_flag& flag) : flag_(flag) {
      while (flag_.test_and_set(std::memory_order_acquire)) std::this_thread::yield();
    }
    ~Guard() { flag_.clear(std::memory_order_release); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    std::atomic_flag& flag_;
  };
  std::atomic_flag locked_;
  bool has_target_ = false;
  CancelTarget target_;
};

// Maps the BackendKeyData Sluice gave each client to that client's CancelSlot.
class CancelRegistry {
 public:
  // Issues a fresh key (random pid and secret, pid unique among live clients) for
  // the session that owns `slot` (held weakly: the session removes its key when it
  // ends).
  protocol::BackendKey add(const std::shared_ptr<CancelSlot>& slot);
  void remove(std::uint32_t pid);
  // The target for a CancelRequest, counted as in flight, or nullopt for an unknown
  // pid, a wrong secret, or a client with no server attached.
  std::optional<ForwardedCancel> find(protocol::BackendKey key) const;

 private:
  struct Entry {
    std::weak_ptr<CancelSlot> slot;
    std::uint32_t secret = 0;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::uint32_t, Entry> entries_;
};

// How to reach and pool a (database, user) pair under `config`.
pool::ServerTarget server_target(const config::Database& db, const config::User& user, const std::string& requested_db,
                                 const std::string& user_name);
std::vector<std::pair<std::string, std::uint16_t>> servers_of(const config::Database& db);
pool::PoolSettingsSnapshot pool_snapshot(const config::Config& config, const config::Database& db,
                                         const config::User& user);

class Context {
 public:
  explicit Context(std::shared_ptr<const config::Config> config)
      : current_(config.get()),
        pools_(pool::HostPolicy{config->health.ban_time, config->retry.backoff_initial, config->retry.backoff_max}) {
    kept_configs_.push_back(std::move(config));
  }

  // The configuration in force. A reference stays valid for the process's life:
  // every configuration ever loaded is kept (sessions hold pointers into the one
  // they logged in with), so a RELOAD never pulls one from under a session.
  const config::Config& config() const { return *current_.load(std::memory_order_acquire); }
  // RELOAD: makes `config` the one in force for everything read from now on.
  void replace_config(std::shared_ptr<const config::Config> config);
  pool::PoolRegistry& pools() { return pools_; }
  CancelRegistry& cancels() { return cancels_; }
  AuthThrottle& auth_throttle() { return auth_throttle_; }
  AuthQueryCache& auth_query_cache() { return auth_query_cache_; }
  pool::StatementRegistry& statements() { return statements_; }
  // The slow-query log, or null when [slow_query] log is not set.
  SlowLog* slow_log() { return slow_log_.get(); }
  void set_slow_log(std::unique_ptr<SlowLog> log) { slow_log_ = std::move(log); }
  // Per-query-shape statistics; each thread records into its own shard.
  QueryStats& query_stats() { return query_stats_; }
  QueryStats::Shard& query_stats_shard();
  // For the only worker thread, before it serves anything: every reader of the
  // statistics (console, metrics) runs on that thread too, so its shard needs no
  // lock. (The shape service's thread keeps a locked shard of its own.)
  void take_unlocked_stats_shard();
  // The most recent slow statements (SHOW SLOW), logged to a file or not.
  RecentSlowQueries& recent_slow() { return recent_slow_; }
  // Query shapes computed off the relay path.
  ShapeService& shapes() { return shapes_; }

  // Client connection accounting for max_client_conn.
  bool try_add_client();
  void remove_client();
  int client_count() const { return clients_.load(std::memory_order_relaxed); }

  // SCRAM secret for a user whose configured password is plain text: derived
  // once (PBKDF2 is deliberately slow) with a random salt, then reused for as long
  // as the configured password stays the same (a reload may change it).
  protocol::auth::ScramSecret scram_secret_for(const config::User& user);

  // Live sessions, so shutdown can close them.
  void track(std::uint64_t id, const std::shared_ptr<ClientSession>& session);
  // Called by the session's destructor: a parked session has no coroutine whose
  // end could be observed, so its lifetime is what counts.
  void untrack(std::uint64_t id);
  // Runs (on the untracking thread) when the last session is gone during shutdown.
  void on_last_session_gone(std::function<void()> hook) { last_session_hook_ = std::move(hook); }
  void close_all_sessions();
  std::vector<std::shared_ptr<ClientSession>> sessions();
  std::size_t live_sessions();

  bool shutting_down() const { return shutting_down_.load(); }
  void begin_shutdown() { shutting_down_.store(true); }

  // For SHOW / metrics.
  std::chrono::steady_clock::time_point started_at() const { return started_at_; }
  void count_refused_client() { clients_refused_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t clients_refused() const { return clients_refused_.load(std::memory_order_relaxed); }
  // SHOW STATS averages: the server takes a sample of per-database totals every
  // stats period; the console shows the increase between the last two.
  struct StatsSample {
    std::chrono::steady_clock::time_point at{};
    std::map<std::string, std::array<std::uint64_t, 7>> totals;  // database -> ConsoleTotals fields in order
  };
  void record_stats_sample(StatsSample sample);
  std::pair<StatsSample, StatsSample> stats_samples() const;  // previous, latest

  // Console commands carried out by the Server (set once at start-up).
  std::function<std::string()> reload;     // "" = reloaded; otherwise the errors
  std::function<void()> shutdown;

 private:
  std::atomic<const config::Config*> current_;
  std::mutex configs_mutex_;
  std::vector<std::shared_ptr<const config::Config>> kept_configs_;
  pool::PoolRegistry pools_;
  CancelRegistry cancels_;
  AuthThrottle auth_throttle_;
  AuthQueryCache auth_query_cache_;
  pool::StatementRegistry statements_;
  std::unique_ptr<SlowLog> slow_log_;
  QueryStats query_stats_;
  RecentSlowQueries recent_slow_{kDefaultRecentSlowQueries};
  // Declared after what its jobs record into: destroyed (and drained) first.
  ShapeService shapes_;
  std::atomic<int> clients_{0};
  std::atomic<std::uint64_t> clients_refused_{0};
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  mutable std::mutex stats_mutex_;
  StatsSample previous_sample_, latest_sample_;
  std::atomic<bool> shutting_down_{false};

  std::mutex scram_mutex_;
  struct DerivedSecret {
    std::string password;  // what it was derived from
    protocol::auth::ScramSecret secret;
  };
  std::map<std::string, DerivedSecret> scram_cache_;  // by user name

  std::mutex sessions_mutex_;
  std::unordered_map<std::uint64_t, std::weak_ptr<ClientSession>> sessions_;
  std::function<void()> last_session_hook_;
};

}  // namespace sluice::proxy
