#pragma once
// A pool of server connections for one (database, user) pair, capped at `size`.
// Clients beyond the cap wait in FIFO order; a released connection or a freed
// slot goes to the first waiter. Connections are only handed to a client whose
// startup parameters they were opened with (session semantics of RESET).
#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pool/hosts.h"
#include "pool/server_connection.h"
#include "pool/switchable_mutex.h"

namespace sluice::pool {

class Pool;

// A server connection on loan from a pool. Whoever holds it owns the
// connection; if the lease is dropped without `release_clean()`, the connection
// is closed and its slot freed, so a connection in an unknown state is never
// handed to another client.
class [[nodiscard]] Lease {
 public:
  Lease() = default;
  Lease(std::shared_ptr<Pool> pool, std::unique_ptr<ServerConnection> conn)
      : pool_(std::move(pool)), conn_(std::move(conn)) {}
  Lease(Lease&&) noexcept = default;
  Lease& operator=(Lease&& other) noexcept;
  ~Lease();

  explicit operator bool() const { return conn_ != nullptr; }
  ServerConnection* operator->() const { return conn_.get(); }
  ServerConnection& operator*() const { return *conn_; }

  // The connection is idle ('I') and reset: back to the pool's idle list.
  void release_clean();
  // The connection is broken or dirty: close it and free the slot.
  void discard();

 private:
  std::shared_ptr<Pool> pool_;
  std::unique_ptr<ServerConnection> conn_;
};

struct AcquireResult {
  Lease lease;
  ConnectFailure failure;  // meaningful when !lease
};

struct PoolSettingsSnapshot {
  int size = 20;
  int min_size = 0;      // kept open by the janitor (never above size)
  int reserve_size = 0;  // extra connections for clients that waited reserve_timeout
  std::chrono::milliseconds reserve_timeout{5000};
  std::chrono::milliseconds connect_timeout{5000};
  // How long a client may wait for a connection (0 = for ever).
  std::chrono::milliseconds query_wait{120000};
  std::chrono::milliseconds server_idle{600000};      // 0 = never closed for idleness
  std::chrono::milliseconds server_lifetime{3600000};  // 0 = no age limit
  // A connection idle longer than check_delay is checked with check_query
  // ("" = an empty query) before it is handed out.
  std::string check_query;
  std::chrono::milliseconds check_delay{30000};
  int connect_attempts = 3;
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{1000};
  // Transaction/statement mode: clients whose startup parameters differ only in
  // tracked parameters (application_name, TimeZone, ...) share connections; the
  // session SETs its values on the connection it is given. Session mode: a client
  // only gets a connection opened with exactly its startup parameters.
  bool share_tracked_parameters = false;
  std::string mode = "session";  // for SHOW POOLS and /metrics
  // TLS to the servers; points into a loaded configuration, which lives as long
  // as the process (so a RELOAD with renewed certificates takes effect for new
  // connections while open ones keep theirs). Null = plain TCP.
  const config::TlsSettings* tls = nullptr;
};

// What a pool's clients did, for SHOW STATS and /metrics. Sessions add to it in
// batches (once per round trip), with relaxed atomics: nothing waits on it.
struct PoolCounters {
  std::atomic<std::uint64_t> transactions{0};  // ReadyForQuery 'I'
  std::atomic<std::uint64_t> queries{0};       // ReadyForQuery
  std::atomic<std::uint64_t> bytes_received{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  std::atomic<std::uint64_t> transaction_us{0};
  std::atomic<std::uint64_t> query_us{0};
  std::atomic<std::uint64_t> wait_us{0};
  std::atomic<std::uint64_t> connections_opened{0};
  std::atomic<std::uint64_t> connect_failures{0};
  std::atomic<int> clients{0};  // of this pool, from login on (waiting ones included)
  std::atomic<int> waiting{0};  // sessions waiting for a server connection (queued or being connected)

  void add_error(std::string_view sqlstate);
  std::vector<std::pair<std::string, std::uint64_t>> errors_by_class() const;

 private:
  mutable std::mutex errors_mutex_;
  std::map<std::string, std::uint64_t> errors_;  // SQLSTATE class -> count
};

// Limits shared with other pools; null = none.
struct PoolLimits {
  std::shared_ptr<ConnectionLimit> database;
  std::shared_ptr<ConnectionLimit> user;
};

class Pool : public std::enable_shared_from_this<Pool> {
 public:
  // `target` gives the database, user and credential; `hosts` (at least one) the
  // servers, used round-robin while healthy. `locking` false: only one thread
  // ever uses this pool, which then takes no lock.
  Pool(std::string database, std::string user, ServerTarget target, std::vector<std::shared_ptr<Host>> hosts,
       PoolSettingsSnapshot settings, PoolLimits limits = {}, bool locking = true);
  ~Pool();

  // Waits (FIFO) for a server connection opened with `params`.
  awaitable<AcquireResult> acquire(const StartupParams& params, std::uint64_t client_id);

  struct Waiter;
  // ---- A wait without a coroutine (a session's lone exchange) ----
  // Told, under the pool's lock, that its waiter was served: it must only post.
  class WaitListener {
   public:
    virtual void wait_served() = 0;

   protected:
    ~WaitListener() = default;
  };
  // A waiter for clients with `params`, to be queued by enqueue() again and again
  // (one per session: no allocation per wait).
  std::shared_ptr<Waiter> make_waiter(const StartupParams& params) const;
  // Queues `waiter` when that is all acquire() would do now: others wait already,
  // the pool is paused, or it is full with nothing idle to replace and a server is
  // usable. `listener` is kept until the waiter is served (its turn came, or
  // query_wait or reserve_timeout passed, watched by one timer for the whole pool,
  // run on `executor`), then told. False: nothing was done, acquire() does the job.
  bool enqueue(const std::shared_ptr<Waiter>& waiter, std::shared_ptr<WaitListener> listener,
               const asio::any_io_executor& executor, std::uint64_t client_id, Clock::time_point now);
  // After wait_served: the connection the waiter was handed, when it needs nothing
  // more (no health check due). Empty otherwise, and acquire_served() then returns
  // what acquire() would have after that wait.
  Lease take_served(Waiter& waiter, Clock::time_point now);
  awaitable<AcquireResult> acquire_served(std::shared_ptr<Waiter> waiter, std::uint64_t client_id);
  // A served waiter whose outcome will not be taken (its session failed): the
  // connection or slot it was handed goes back.
  void abandon_served(Waiter& waiter) noexcept;
  // The usual checkout without a coroutine: the most recently used idle connection
  // for these parameters, when nobody waits, the pool is not paused or closing, and
  // that connection is current, clean and not due for a health check. Empty
  // otherwise, and acquire() then does the whole job; nothing is changed, except
  // that a connection found closed or unclean by the probe is dropped. `now` is the
  // caller's clock reading, when it has one.
  Lease try_acquire_idle(const StartupParams& params, Clock::time_point now = Clock::now());

  const std::string& name() const { return name_; }
  const std::string& database() const { return database_; }
  const std::string& user() const { return user_; }
  // PAUSE: no connection is handed out until resume(); clients wait (up to query_wait).
  void pause();
  void resume();
  bool paused() const;
  // RECONNECT: idle connections close now, the others when they are released.
  void reconnect();
  // Open connections (idle, lent and being opened).
  int open_connections() const;
  const ServerTarget& target() const { return target_; }
  // SCRAM pass-through: a client proved these keys for the pool's user, whose
  // password Sluice holds only as a SCRAM secret; new connections log in with them.
  void remember_scram_keys(const protocol::auth::ScramKeys& keys);
  std::vector<std::shared_ptr<Host>> hosts() const;
  // The settings in force (replaced as a whole by reconfigure).
  std::shared_ptr<const PoolSettingsSnapshot> current_settings() const;
  const std::string& mode() const { return mode_; }
  // RELOAD: new sizes, timeouts, checks and servers. The pool mode stays as it was
  // when the pool was created. With other servers, connections to the old ones
  // are closed (idle ones now, lent ones when released).
  void reconfigure(PoolSettingsSnapshot settings, std::vector<std::shared_ptr<Host>> hosts);

  struct Counts {
    int idle = 0;
    int active = 0;   // leased or connecting
    int waiting = 0;
    int connecting = 0;
    std::chrono::microseconds max_wait{0};  // of the clients waiting now
  };
  Counts counts() const;
  PoolCounters& counters() { return counters_; }
  const PoolCounters& counters() const { return counters_; }
  // Idle connections as (server id, backend pid, address, created, last used), for SHOW SERVERS.
  struct IdleServer {
    std::uint64_t id = 0;
    std::uint32_t backend_pid = 0;
    std::string address;
    Clock::time_point created_at;
    Clock::time_point last_used_at;
  };
  std::vector<IdleServer> idle_servers() const;
  // The ParameterStatus set a server connection opened with `params` reported at
  // login, if one ever was: lets a client log in before it needs a server.
  // Shared, not copied: every idle client of the pool points at the same list.
  std::shared_ptr<const ParameterList> cached_parameters(const StartupParams& params) const;
  // Records what a client with `params` is told at login (transaction mode, after
  // its tracked parameters were SET on a shared connection).
  void remember_parameters(const StartupParams& params, std::shared_ptr<const ParameterList> reported);
  // Closes idle connections (shutdown).
  void close_idle();
  // Shutdown: waiting clients are told at once (instead of being served a
  // connection opened during shutdown), no new connection is opened, idle ones close.
  void close();

  // ---- The janitor's work (off the relay path) ----
  // Closes idle connections past server_lifetime, and past server_idle while
  // more than min_size are open.
  void expire_idle(Clock::time_point now);
  // Whether fewer than min_size connections are open (and the pool knows which
  // startup parameters to open them with: those of its latest connection).
  bool wants_top_up() const;
  // Opens connections until min_size are open (or one fails).
  awaitable<void> top_up();

  // ---- Called by a ConnectionLimit (without any pool lock held) ----
  // A token was given back: serve waiters that can use it.
  void offer_slot();
  // Closes the least recently used idle connection; false when there is none.
  bool close_one_idle();
  // Clients wait here although the pool is below its size: a shared limit holds them.
  bool blocked_by_limit() const;

 private:
  friend class Lease;

  // acquire() for a key_for() key; `served` is a waiter queued by enqueue() and
  // served since, whose outcome is taken as a queued coroutine's would be.
  awaitable<AcquireResult> acquire_keyed(StartupParams key, std::uint64_t client_id, std::shared_ptr<Waiter> served);
  // The queue timer (see enqueue) fires at `at`, unless it is set to fire sooner.
  void arm_queue_timer_locked(Clock::time_point at, const asio::any_io_executor& executor);
  // Serves the enqueue()d waiters whose reserve_timeout or query_wait has passed.
  void queue_timer_fired();
  void give_back(std::unique_ptr<ServerConnection> conn);  // clean, from a lease
  void drop(std::unique_ptr<ServerConnection> conn);       // dirty, from a lease
  // A connection's slot is free (closed, or never opened): to the next waiter.
  void free_slot();
  // Hands a connection or a free slot to waiters in order; called with mutex_ held.
  void serve_waiters_locked(std::vector<std::unique_ptr<ServerConnection>>& to_close);
  // Takes a slot (and the shared limits' tokens) when fewer than `cap` are open.
  enum class SlotRefusal { none, pool_full, limit_reached };
  SlotRefusal take_slot_locked(int cap);
  // The shared limits' tokens of `count` closed connections go back (no lock held).
  void return_tokens(int count);
  // Tells every waiter `failure` (all hosts down, or shutdown); called with mutex_ held.
  void fail_waiters_locked(const ConnectFailure& failure);
  bool any_host_usable(Clock::time_point now) const;
  bool any_host_usable_locked(Clock::time_point now) const;
  ConnectFailure hosts_down_failure() const;
  // Opens a connection with up to connect_attempts attempts across the hosts.
  awaitable<ConnectResult> open_connection(const StartupParams& key, std::uint64_t server_id);
  // The connection answers check_query (called for one idle past check_delay).
  awaitable<bool> healthy(ServerConnection& conn, const PoolSettingsSnapshot& settings, std::uint64_t client_id);
  bool expired(const ServerConnection& conn, Clock::time_point now) const;
  StartupParams key_for(const StartupParams& params) const;
  // key == key_for(params), without building key_for(params).
  bool key_matches(const StartupParams& key, const StartupParams& params) const;
  void remember_locked(const StartupParams& params, std::shared_ptr<const ParameterList> reported);

  const std::string database_;
  const std::string user_;
  const std::string name_;  // "database/user"
  const ServerTarget target_;
  const bool share_tracked_;
  const std::string mode_;
  const PoolLimits limits_;

  mutable SwitchableMutex mutex_;
  // Replaced whole under mutex_ (RELOAD); readers outside the lock keep a copy.
  std::shared_ptr<const std::vector<std::shared_ptr<Host>>> hosts_;
  std::shared_ptr<const PoolSettingsSnapshot> settings_;
  std::shared_ptr<const protocol::auth::ScramKeys> scram_keys_;  // see remember_scram_keys
  std::vector<std::unique_ptr<ServerConnection>> idle_;  // most recently used last
  int open_ = 0;  // idle + leased + connecting; never above size (+ reserve_size)
  bool closing_ = false;
  bool topping_up_ = false;
  Clock::time_point next_top_up_{};  // after a failed top-up, not before (backoff)
  std::chrono::milliseconds top_up_backoff_{0};
  std::size_t next_host_ = 0;  // round-robin position
  std::optional<StartupParams> latest_key_;  // what min_size connections are opened with
  std::deque<std::shared_ptr<Waiter>> waiters_;
  // Watches the deadlines of the waiters queued by enqueue(), which have no timer
  // of their own; created with the first of them.
  std::optional<asio::steady_timer> queue_timer_;
  Clock::time_point queue_timer_at_ = Clock::time_point::max();
  std::map<StartupParams, std::shared_ptr<const ParameterList>> reported_parameters_;
  int connecting_ = 0;
  bool paused_ = false;
  std::uint64_t generation_ = 0;  // RECONNECT bumps it; older connections are not reused
  PoolCounters counters_;
};

// All pools, created on first use.
class PoolRegistry {
 public:
  explicit PoolRegistry(HostPolicy host_policy = {}) : hosts_(host_policy) {}
  // `servers` are the database's hosts; max_db_connections / max_user_connections
  // (0 = none) are shared by every pool of that database / user.
  std::shared_ptr<Pool> get_or_create(const std::string& database, const std::string& user,
                                      const ServerTarget& target, const std::vector<std::pair<std::string, std::uint16_t>>& servers,
                                      PoolSettingsSnapshot settings, int max_db_connections = 0,
                                      int max_user_connections = 0);
  std::vector<std::shared_ptr<Pool>> all() const;
  HostRegistry& hosts() { return hosts_; }
  // Pools created from now on take no locks: the caller promises that only one
  // thread will ever use them (Sluice with one worker).
  void set_single_threaded(bool single_threaded) { pool_locking_ = !single_threaded; }
  // PAUSE/RESUME of a database ("" = all), also for pools created while paused.
  void pause(const std::string& database);
  void resume(const std::string& database);
  bool paused(const std::string& database) const;

 private:
  HostRegistry hosts_;
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::shared_ptr<Pool>>> pools_;
  std::map<std::string, std::shared_ptr<ConnectionLimit>> database_limits_;
  std::map<std::string, std::shared_ptr<ConnectionLimit>> user_limits_;
  bool all_paused_ = false;
  std::set<std::string> paused_databases_;
  bool pool_locking_ = true;
};

std::uint64_t next_server_id();

}  // namespace sluice::pool
