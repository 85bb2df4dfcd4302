#include "pool/pool.h"

#include <algorithm>
#include <atomic>

#include "config/config.h"
#include "pool/log.h"

namespace sluice::pool {
namespace {
const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("pool");
  return logger;
}
}  // namespace

std::uint64_t next_server_id() {
  static std::atomic<std::uint64_t> counter{0};
  return ++counter;
}

// ---- Lease ---------------------------------------------------------------------

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (conn_) pool_->drop(std::move(conn_));
    pool_ = std::move(other.pool_);
    conn_ = std::move(other.conn_);
  }
  return *this;
}

Lease::~Lease() {
  if (conn_) pool_->drop(std::move(conn_));
}

void Lease::release_clean() {
  if (conn_) pool_->give_back(std::move(conn_));
}

void Lease::discard() {
  if (conn_) pool_->drop(std::move(conn_));
}

// ---- Pool ----------------------------------------------------------------------

// A client waiting for a connection, told once `conn`, `may_open`, `failure` or
// `timed_out` has been set under the pool's mutex. A coroutine's (acquire) has a
// timer that never expires on its own: it is cancelled, on the waiter's own
// executor, to wake it. A session's lone exchange has a listener instead (enqueue).
struct Pool::Waiter {
  Waiter(asio::any_io_executor executor, const StartupParams& k) : key(k) {
    timer.emplace(std::move(executor), asio::steady_timer::time_point::max());
  }
  explicit Waiter(StartupParams k) : own_key(std::move(k)), key(own_key) {}
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  const StartupParams own_key;  // a listener's waiter: its key
  const StartupParams& key;
  Clock::time_point since = Clock::now();
  std::optional<asio::steady_timer> timer;
  std::shared_ptr<Pool::WaitListener> listener;  // held from enqueue until served
  // A listener's deadlines, watched by the pool's queue timer.
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point reserve_at = Clock::time_point::max();
  std::chrono::milliseconds query_wait{0};  // for the timeout's message
  std::unique_ptr<ServerConnection> conn;
  bool may_open = false;
  bool served = false;
  bool timed_out = false;
  std::optional<ConnectFailure> failure;  // shutdown, or every host is down
};

namespace {
// A coroutine's waiter cannot miss the cancel: it enqueued itself and began
// waiting without yielding its executor in between. A listener only posts.
void wake(const std::shared_ptr<Pool::Waiter>& waiter) {
  if (waiter->listener) {
    const auto listener = std::move(waiter->listener);
    listener->wait_served();
    return;
  }
  asio::post(waiter->timer->get_executor(), [waiter] { waiter->timer->cancel(); });
}

ConnectFailure shutdown_failure() {
  return ConnectFailure{"terminating connection due to administrator command", {}, "57P01"};
}
}  // namespace

Pool::Pool(std::string database, std::string user, ServerTarget target, std::vector<std::shared_ptr<Host>> hosts,
           PoolSettingsSnapshot settings, PoolLimits limits, bool locking)
    : database_(std::move(database)),
      user_(std::move(user)),
      name_(database_ + "/" + user_),
      target_(std::move(target)),
      share_tracked_(settings.share_tracked_parameters),
      mode_(settings.mode),
      limits_(std::move(limits)),
      mutex_(locking),
      hosts_(std::make_shared<const std::vector<std::shared_ptr<Host>>>(std::move(hosts))),
      settings_(std::make_shared<const PoolSettingsSnapshot>(std::move(settings))) {}

Pool::~Pool() { close_idle(); }

StartupParams Pool::key_for(const StartupParams& params) const {
  return share_tracked_ ? sharing_key(params) : params;
}

bool Pool::key_matches(const StartupParams& key, const StartupParams& params) const {
  if (!share_tracked_) return key == params;
  auto next = key.begin();
  for (const auto& param : params) {
    if (is_tracked_parameter(param.first)) continue;
    if (next == key.end() || *next != param) return false;
    ++next;
  }
  return next == key.end();
}

Lease Pool::try_acquire_idle(const StartupParams& params, Clock::time_point now) {
  std::unique_ptr<ServerConnection> found;
  {
    std::lock_guard lock(mutex_);
    if (closing_ || paused_ || !waiters_.empty()) return {};
    for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
      if (!key_matches((*it)->pool_key, params)) continue;
      // As acquire() would take it, or leave it for acquire() to deal with.
      const auto& conn = **it;
      if (expired(conn, now) || conn.generation != generation_ || now - conn.last_used_at >= settings_->check_delay) {
        return {};
      }
      found = std::move(*it);
      idle_.erase(std::next(it).base());
      break;
    }
  }
  if (!found) return {};
  // The probe is a syscall: made without the pool's lock, which other workers take.
  if (!found->idle_and_clean()) {
    drop(std::move(found));  // closed by the server, or unsolicited bytes: as acquire() would
    return {};
  }
  found->last_used_at = now;
  return Lease(shared_from_this(), std::move(found));
}

std::shared_ptr<Pool::Waiter> Pool::make_waiter(const StartupParams& params) const {
  return std::make_shared<Waiter>(key_for(params));
}

bool Pool::enqueue(const std::shared_ptr<Waiter>& waiter, std::shared_ptr<WaitListener> listener,
                   const asio::any_io_executor& executor, std::uint64_t client_id, Clock::time_point now) {
  {
    std::lock_guard lock(mutex_);
    if (closing_) return false;
    // As acquire() decides to queue, except where it would first close idle
    // connections (expired, or to replace one) or evict others' under a shared limit.
    const bool queue =
        paused_ || !waiters_.empty() || (idle_.empty() && open_ >= settings_->size && any_host_usable_locked(now));
    if (!queue) return false;
    waiter->since = now;
    waiter->served = false;
    waiter->may_open = false;
    waiter->timed_out = false;
    waiter->conn.reset();
    waiter->failure.reset();
    waiter->query_wait = settings_->query_wait;
    waiter->deadline = settings_->query_wait.count() > 0 ? now + settings_->query_wait : Clock::time_point::max();
    waiter->reserve_at = settings_->reserve_size > 0 ? now + settings_->reserve_timeout : Clock::time_point::max();
    // What can throw (out of memory) first: then nothing is queued and acquire()
    // does the job. The listener, which keeps the session alive, is set last.
    waiters_.push_back(waiter);
    try {
      const auto due = std::min(waiter->deadline, waiter->reserve_at);
      if (due != Clock::time_point::max()) arm_queue_timer_locked(due, executor);
    } catch (...) {
      waiters_.pop_back();
      throw;
    }
    waiter->listener = std::move(listener);
  }
  log()->debug("[c{}] waiting for a server connection in pool {}", client_id, name_);
  return true;
}

void Pool::abandon_served(Waiter& waiter) noexcept {
  if (waiter.conn) {
    drop(std::move(waiter.conn));
  } else if (waiter.may_open) {
    waiter.may_open = false;
    free_slot();
  }
}

Lease Pool::take_served(Waiter& waiter, Clock::time_point now) {
  if (!waiter.conn) return {};
  {
    std::lock_guard lock(mutex_);
    if (now - waiter.conn->last_used_at >= settings_->check_delay) return {};
  }
  waiter.conn->last_used_at = now;
  return Lease(shared_from_this(), std::move(waiter.conn));
}

void Pool::arm_queue_timer_locked(Clock::time_point at, const asio::any_io_executor& executor) {
  // The usual waiter's deadline is after the one the timer is set for (the queue
  // is FIFO, query_wait the same for all): then there is nothing to do.
  if (at >= queue_timer_at_) return;
  if (!queue_timer_) queue_timer_.emplace(executor);
  queue_timer_at_ = at;
  queue_timer_->expires_at(at);  // a wait set for later ends as cancelled, and is ignored
  queue_timer_->async_wait([weak = weak_from_this()](error_code ec) {
    if (ec) return;
    auto pool = weak.lock();
    if (!pool) return;
    try {
      pool->queue_timer_fired();
    } catch (const std::exception& e) {
      // Out of memory: the deadlines are left to the next wake-up; the worker runs on.
      log()->error("pool {}: the wait queue's deadlines could not be served: {}", pool->name_, e.what());
    }
  });
}

void Pool::queue_timer_fired() {
  std::lock_guard lock(mutex_);
  queue_timer_at_ = Clock::time_point::max();
  const auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    auto& waiter = *it;
    if (!waiter->listener) {  // a coroutine's: it has its own timer
      ++it;
      continue;
    }
    if (now >= waiter->reserve_at) {
      waiter->reserve_at = Clock::time_point::max();
      if (take_slot_locked(settings_->size + settings_->reserve_size) == SlotRefusal::none) {
        log()->info("pool {} full for reserve_timeout; opening a reserve connection", name_);
        waiter->may_open = true;
      }
    }
    if (!waiter->may_open && now >= waiter->deadline) waiter->timed_out = true;
    if (waiter->may_open || waiter->timed_out) {
      waiter->served = true;
      wake(waiter);
      it = waiters_.erase(it);
      continue;
    }
    next = std::min(next, std::min(waiter->deadline, waiter->reserve_at));
    ++it;
  }
  if (next != Clock::time_point::max()) arm_queue_timer_locked(next, queue_timer_->get_executor());
}

Pool::SlotRefusal Pool::take_slot_locked(int cap) {
  if (open_ >= cap) return SlotRefusal::pool_full;
  if (!ConnectionLimit::try_take_both(limits_.database.get(), limits_.user.get())) return SlotRefusal::limit_reached;
  ++open_;
  return SlotRefusal::none;
}

void Pool::return_tokens(int count) {
  for (int i = 0; i < count; ++i) {
    if (limits_.database) limits_.database->give_back();
    if (limits_.user) limits_.user->give_back();
  }
}

bool Pool::any_host_usable_locked(Clock::time_point now) const {
  return std::any_of(hosts_->begin(), hosts_->end(), [&](const auto& host) { return host->usable(now); });
}

bool Pool::any_host_usable(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  return any_host_usable_locked(now);
}

ConnectFailure Pool::hosts_down_failure() const {
  const auto hosts = this->hosts();
  std::string reason;
  for (const auto& host : hosts) {
    const auto status = host->status();
    if (!reason.empty()) reason += "; ";
    reason += "server " + host->address() + " is down";
    if (!status.last_failure.empty()) reason += ": " + status.last_failure;
  }
  if (hosts.size() > 1) reason = "every server of " + name_ + " is down (" + reason + ")";
  return ConnectFailure{std::move(reason), {}, "08006"};
}

void Pool::fail_waiters_locked(const ConnectFailure& failure) {
  for (auto& waiter : waiters_) {
    waiter->served = true;
    waiter->failure = failure;
    wake(waiter);
  }
  waiters_.clear();
}

bool Pool::expired(const ServerConnection& conn, Clock::time_point now) const {
  return settings_->server_lifetime.count() > 0 && now - conn.created_at >= settings_->server_lifetime;
}

awaitable<AcquireResult> Pool::acquire(const StartupParams& params, std::uint64_t client_id) {
  return acquire_keyed(key_for(params), client_id, nullptr);
}

awaitable<AcquireResult> Pool::acquire_served(std::shared_ptr<Waiter> waiter, std::uint64_t client_id) {
  StartupParams key = waiter->key;
  return acquire_keyed(std::move(key), client_id, std::move(waiter));
}

awaitable<AcquireResult> Pool::acquire_keyed(StartupParams key, std::uint64_t client_id,
                                             std::shared_ptr<Waiter> served) {
  auto executor = co_await asio::this_coro::executor;
  for (;;) {  // again when a pooled connection fails its health check
    std::vector<std::unique_ptr<ServerConnection>> to_close;
    std::unique_ptr<ServerConnection> found;
    bool may_open = false;
    bool blocked_by_limit = false;
    std::optional<ConnectFailure> failure;
    bool refused_hosts_down = false;
    // Served already (its outcome is taken below, as a queued coroutine's is), or
    // queued here when the pool has nothing for this client now.
    std::shared_ptr<Waiter> waiter = std::move(served);
    std::shared_ptr<const PoolSettingsSnapshot> settings;
    int freed = 0;
    const auto now = Clock::now();
    if (waiter) {
      settings = current_settings();
    } else {
      std::lock_guard lock(mutex_);
      settings = settings_;
      if (closing_) {
        failure = shutdown_failure();
      } else if (waiters_.empty() && !paused_) {
        // Most recently used first: it is the most likely to be warm.
        for (auto it = idle_.rbegin(); it != idle_.rend();) {
          if ((*it)->pool_key != key) {
            ++it;
            continue;
          }
          auto conn = std::move(*it);
          it = decltype(it)(idle_.erase(std::next(it).base()));
          if (!expired(*conn, now) && conn->generation == generation_ && conn->idle_and_clean()) {
            found = std::move(conn);
            break;
          }
          to_close.push_back(std::move(conn));
          --open_;
          ++freed;
        }
        if (!found) {
          if (!any_host_usable_locked(now)) {
            // Refused at once: waiting out a connect timeout per client helps nobody.
            refused_hosts_down = true;
          } else if (const auto refusal = take_slot_locked(settings_->size); refusal == SlotRefusal::none) {
            may_open = true;
          } else if (!idle_.empty()) {
            // Full, but an idle connection was opened with other startup parameters:
            // replace it rather than make this client wait for nobody (its slot is reused).
            to_close.push_back(std::move(idle_.front()));
            idle_.erase(idle_.begin());
            may_open = true;
          } else {
            blocked_by_limit = refusal == SlotRefusal::limit_reached;
          }
        }
      }
      if (!found && !may_open && !failure && !refused_hosts_down) {
        waiter = std::make_shared<Waiter>(executor, key);
        waiters_.push_back(waiter);
      }
    }
    for (auto& conn : to_close) {
      log()->debug("[s{}] closing server connection to {} (not reusable for this client)", conn->id(), name_);
      conn->close();
    }
    to_close.clear();
    return_tokens(freed);
    if (refused_hosts_down) failure = hosts_down_failure();
    if (blocked_by_limit) {
      if (limits_.database) limits_.database->evict_idle_from_others(this);
      if (limits_.user) limits_.user->evict_idle_from_others(this);
    }

    if (waiter) {
      if (!waiter->served) log()->debug("[c{}] waiting for a server connection in pool {}", client_id, name_);
      // Woken by serve_waiters_locked (which cancels the timer), or by the timer at
      // the reserve or query_wait deadline; the loop guards against any other wake-up.
      const auto started = Clock::now();
      const auto deadline = settings->query_wait.count() > 0 ? started + settings->query_wait
                                                              : asio::steady_timer::time_point::max();
      auto reserve_at = settings->reserve_size > 0 ? started + settings->reserve_timeout
                                                   : asio::steady_timer::time_point::max();
      bool timed_out = false;
      for (;;) {
        {
          std::lock_guard lock(mutex_);
          if (waiter->served) break;
          const auto at = Clock::now();
          if (at >= reserve_at) {
            reserve_at = asio::steady_timer::time_point::max();
            if (take_slot_locked(settings_->size + settings_->reserve_size) == SlotRefusal::none) {
              log()->info("[c{}] pool {} full for reserve_timeout; opening a reserve connection", client_id, name_);
              waiters_.erase(std::find(waiters_.begin(), waiters_.end(), waiter));
              waiter->served = true;
              waiter->may_open = true;
              break;
            }
          }
          if (at >= deadline) {
            // Still queued (not served under the lock): leave the queue.
            waiters_.erase(std::find(waiters_.begin(), waiters_.end(), waiter));
            timed_out = true;
            break;
          }
          waiter->timer->expires_at(std::min(deadline, reserve_at));
        }
        co_await waiter->timer->async_wait(use_nothrow);
      }
      const auto query_wait = waiter->timed_out ? waiter->query_wait : settings->query_wait;
      if (timed_out || waiter->timed_out) {
        log()->info("[c{}] no server connection in pool {} within query_wait ({} ms)", client_id, name_,
                    query_wait.count());
        co_return AcquireResult{Lease(), ConnectFailure{"no server connection available for " + name_ +
                                                            " within query_wait (" +
                                                            config::format_duration(query_wait) + ")",
                                                        {}, "57014"}};
      }
      if (waiter->conn) found = std::move(waiter->conn);
      may_open = waiter->may_open;
      failure = std::move(waiter->failure);
    }
    if (failure) co_return AcquireResult{Lease(), std::move(*failure)};

    if (found) {
      // The delay is checked here, not in healthy(): the usual checkout must not
      // pay for a coroutine frame (nor another clock read).
      const auto checked_at = waiter ? Clock::now() : now;
      if (checked_at - found->last_used_at >= settings->check_delay && !co_await healthy(*found, *settings, client_id)) {
        drop(std::move(found));
        continue;  // another connection, without the client noticing
      }
      found->last_used_at = checked_at;
      co_return AcquireResult{Lease(shared_from_this(), std::move(found)), {}};
    }

    const auto server_id = next_server_id();
    // Shared connections are opened without the tracked parameters, so that what
    // they report at login is the server's default for each (see attach_server).
    auto result = co_await open_connection(key, server_id);
    if (auto* failed = std::get_if<ConnectFailure>(&result)) {
      {
        std::lock_guard lock(mutex_);
        --open_;
        if (is_host_failure(*failed) && !any_host_usable_locked(Clock::now())) {
          // Everyone queued here would fail the same way: tell them now.
          fail_waiters_locked(*failed);
        } else {
          serve_waiters_locked(to_close);
        }
      }
      for (auto& conn : to_close) conn->close();
      return_tokens(1);
      co_return AcquireResult{Lease(), std::move(*failed)};
    }
    auto conn = std::move(std::get<0>(result));
    {
      std::lock_guard lock(mutex_);
      // What a client with exactly these startup parameters is told at login.
      remember_locked(key, std::make_shared<const ParameterList>(conn->parameters));
    }
    log()->info("[s{}] connected to {} for pool {}, backend pid {}", server_id, conn->address, name_,
                conn->backend_key.pid);
    co_return AcquireResult{Lease(shared_from_this(), std::move(conn)), {}};
  }
}

awaitable<ConnectResult> Pool::open_connection(const StartupParams& key, std::uint64_t server_id) {
  const auto settings = current_settings();
  const int attempts = std::max(1, settings->connect_attempts);
  std::vector<const Host*> failed_here;
  std::shared_ptr<Host> previous;
  std::chrono::milliseconds backoff{0};
  std::optional<ConnectFailure> last;
  auto executor = co_await asio::this_coro::executor;
  {
    std::lock_guard lock(mutex_);
    ++connecting_;
  }
  struct Uncount {
    Pool* pool;
    ~Uncount() {
      std::lock_guard lock(pool->mutex_);
      --pool->connecting_;
    }
  } uncount{this};
  for (int attempt = 0; attempt < attempts; ++attempt) {
    // A usable host this request has not failed on, round-robin; else the host it
    // failed on last, once more after a backoff (its own retry, even while others
    // see that host as down and are refused at once).
    std::shared_ptr<Host> host;
    const auto now = Clock::now();
    {
      std::lock_guard lock(mutex_);
      const auto& hosts = *hosts_;
      for (std::size_t i = 0; i < hosts.size(); ++i) {
        const auto& candidate = hosts[(next_host_ + i) % hosts.size()];
        if (std::find(failed_here.begin(), failed_here.end(), candidate.get()) != failed_here.end()) continue;
        if (!candidate->usable(now)) continue;
        host = candidate;
        next_host_ = (next_host_ + i + 1) % hosts.size();
        break;
      }
    }
    if (!host && previous) host = previous;
    if (!host) break;
    {
      std::lock_guard lock(mutex_);
      if (closing_) break;  // shutting down: no more attempts
    }
    if (host == previous) {
      backoff = next_backoff(backoff, settings->backoff_initial, settings->backoff_max, jitter_random());
      asio::steady_timer pause(executor, backoff);
      co_await pause.async_wait(use_nothrow);
    }
    ServerTarget target = target_;
    target.tls = settings->tls;
    if (target.credential.plain.empty() && target.credential.md5_hash.empty()) {
      std::lock_guard lock(mutex_);
      target.credential.scram_keys = scram_keys_;
    }
    target.host = host->host();
    target.port = host->port();
    log()->debug("[s{}] opening server connection to {} for pool {} (attempt {} of {})", server_id, host->address(),
                 name_, attempt + 1, attempts);
    // Bounded even with server_connect = "0s": a host that swallows packets must not
    // hold a slot (or a shutdown) for ever.
    const auto timeout =
        settings->connect_timeout.count() > 0 ? settings->connect_timeout : std::chrono::milliseconds(60'000);
    auto result = co_await connect_server(target, key, timeout, server_id);
    if (auto* conn = std::get_if<std::unique_ptr<ServerConnection>>(&result)) {
      counters_.connections_opened.fetch_add(1, std::memory_order_relaxed);
      host->record_success();
      (*conn)->pool_key = key;
      {
        std::lock_guard lock(mutex_);
        (*conn)->generation = generation_;
      }
      (*conn)->host = host->host();
      (*conn)->port = host->port();
      {
        std::lock_guard lock(mutex_);
        latest_key_ = key;
      }
      co_return result;
    }
    auto& failure = std::get<ConnectFailure>(result);
    counters_.connect_failures.fetch_add(1, std::memory_order_relaxed);
    log()->warn("[s{}] connection to {} for pool {} failed: {}", server_id, host->address(), name_, failure.reason);
    if (!is_host_failure(failure)) co_return result;  // PostgreSQL's answer for this user or database
    host->record_failure(failure.reason, target, key);
    failed_here.push_back(host.get());
    previous = host;
    last = std::move(failure);
  }
  {
    std::lock_guard lock(mutex_);
    if (closing_) co_return shutdown_failure();
  }
  if (!last) co_return hosts_down_failure();
  if (!any_host_usable(Clock::now())) co_return hosts_down_failure();
  co_return std::move(*last);
}

awaitable<bool> Pool::healthy(ServerConnection& conn, const PoolSettingsSnapshot& settings, std::uint64_t client_id) {
  const auto timeout = settings.connect_timeout.count() > 0 ? settings.connect_timeout : std::chrono::milliseconds(5000);
  if (co_await check_server(conn, settings.check_query, timeout)) co_return true;
  log()->info("[c{}] server connection s{} failed its health check; using another", client_id, conn.id());
  co_return false;
}

void Pool::give_back(std::unique_ptr<ServerConnection> conn) {
  const auto now = Clock::now();
  conn->last_used_at = now;
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  int freed = 0;
  bool went_idle = false;
  {
    std::lock_guard lock(mutex_);
    if (closing_ || expired(*conn, now) || conn->generation != generation_) {
      if (!closing_) {
        log()->debug("[s{}] closing server connection (pool {}): {}", conn->id(), name_,
                     conn->generation != generation_ ? "RECONNECT" : "server_lifetime reached");
      }
      --open_;
      ++freed;
      to_close.push_back(std::move(conn));
    } else {
      idle_.push_back(std::move(conn));
    }
    if (!closing_) serve_waiters_locked(to_close);
    went_idle = !idle_.empty();
  }
  for (auto& c : to_close) c->close();
  return_tokens(freed);
  // Under a shared limit, an idle connection here must not starve another pool's
  // waiting clients: its slot goes to them.
  if (went_idle && ((limits_.database && limits_.database->others_waiting(this)) ||
                    (limits_.user && limits_.user->others_waiting(this)))) {
    close_one_idle();
  }
}

void Pool::drop(std::unique_ptr<ServerConnection> conn) {
  log()->debug("[s{}] closing server connection (pool {})", conn->id(), name_);
  conn->close();
  free_slot();
}

void Pool::free_slot() {
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  {
    std::lock_guard lock(mutex_);
    --open_;
    serve_waiters_locked(to_close);
  }
  for (auto& c : to_close) c->close();
  return_tokens(1);
}

void Pool::serve_waiters_locked(std::vector<std::unique_ptr<ServerConnection>>& to_close) {
  while (!waiters_.empty() && !paused_) {
    auto& waiter = waiters_.front();
    auto match = std::find_if(idle_.rbegin(), idle_.rend(),
                              [&](const auto& c) { return c->pool_key == waiter->key; });
    if (match != idle_.rend()) {
      waiter->conn = std::move(*match);
      idle_.erase(std::next(match).base());
    } else if (take_slot_locked(settings_->size) == SlotRefusal::none) {
      waiter->may_open = true;
    } else if (!idle_.empty()) {
      to_close.push_back(std::move(idle_.front()));
      idle_.erase(idle_.begin());
      waiter->may_open = true;
    } else {
      return;
    }
    waiter->served = true;
    wake(waiter);
    waiters_.pop_front();
  }
}

void Pool::offer_slot() {
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  {
    std::lock_guard lock(mutex_);
    if (closing_ || waiters_.empty()) return;
    serve_waiters_locked(to_close);
  }
  for (auto& c : to_close) c->close();
}

bool Pool::close_one_idle() {
  std::unique_ptr<ServerConnection> victim;
  {
    std::lock_guard lock(mutex_);
    if (idle_.empty()) return false;
    victim = std::move(idle_.front());  // least recently used
    idle_.erase(idle_.begin());
    --open_;
  }
  log()->debug("[s{}] closing idle server connection (pool {}) for another pool under the same limit", victim->id(),
               name_);
  victim->close();
  return_tokens(1);
  return true;
}

void Pool::expire_idle(Clock::time_point now) {
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  {
    std::lock_guard lock(mutex_);
    const int keep = std::min(settings_->min_size, settings_->size);
    for (auto it = idle_.begin(); it != idle_.end();) {  // least recently used first
      const bool idle_too_long = settings_->server_idle.count() > 0 && now - (*it)->last_used_at >= settings_->server_idle &&
                                 open_ > keep;
      if (expired(**it, now) || idle_too_long) {
        log()->debug("[s{}] closing server connection (pool {}): {}", (*it)->id(), name_,
                     idle_too_long ? "server_idle reached" : "server_lifetime reached");
        to_close.push_back(std::move(*it));
        it = idle_.erase(it);
        --open_;
      } else {
        ++it;
      }
    }
  }
  for (auto& c : to_close) c->close();
  return_tokens(static_cast<int>(to_close.size()));
}

bool Pool::wants_top_up() const {
  std::lock_guard lock(mutex_);
  return !closing_ && !topping_up_ && latest_key_ && open_ < std::min(settings_->min_size, settings_->size) &&
         Clock::now() >= next_top_up_;
}

bool Pool::blocked_by_limit() const {
  std::lock_guard lock(mutex_);
  return !waiters_.empty() && !paused_ && open_ < settings_->size;
}

awaitable<void> Pool::top_up() {
  for (;;) {
    StartupParams key;
    {
      std::lock_guard lock(mutex_);
      if (closing_ || topping_up_ || !latest_key_ || open_ >= std::min(settings_->min_size, settings_->size)) co_return;
      if (!any_host_usable_locked(Clock::now())) co_return;
      if (take_slot_locked(settings_->size) != SlotRefusal::none) co_return;
      key = *latest_key_;
      topping_up_ = true;
    }
    const auto server_id = next_server_id();
    auto result = co_await open_connection(key, server_id);
    std::vector<std::unique_ptr<ServerConnection>> to_close;
    bool ok = false;
    {
      std::lock_guard lock(mutex_);
      topping_up_ = false;
      if (std::holds_alternative<ConnectFailure>(result)) {
        // Not again at every janitor tick (PostgreSQL may be refusing this role).
        top_up_backoff_ = next_backoff(top_up_backoff_, settings_->backoff_initial, settings_->backoff_max * 10,
                                       jitter_random());
        next_top_up_ = Clock::now() + top_up_backoff_;
      } else {
        top_up_backoff_ = {};
      }
      if (auto* conn = std::get_if<std::unique_ptr<ServerConnection>>(&result); conn && !closing_) {
        log()->info("[s{}] opened to {} for pool {} to keep min_size ({}), backend pid {}", server_id,
                    (*conn)->address, name_, settings_->min_size, (*conn)->backend_key.pid);
        (*conn)->last_used_at = Clock::now();
        idle_.push_back(std::move(*conn));
        serve_waiters_locked(to_close);
        ok = true;
      } else {
        --open_;
        if (auto* conn = std::get_if<std::unique_ptr<ServerConnection>>(&result)) to_close.push_back(std::move(*conn));
        // The slot is free again: a queued client may open it, or hear why it cannot.
        auto* failed = std::get_if<ConnectFailure>(&result);
        if (failed && is_host_failure(*failed) && !any_host_usable_locked(Clock::now())) {
          fail_waiters_locked(*failed);
        } else {
          serve_waiters_locked(to_close);
        }
      }
    }
    for (auto& c : to_close) c->close();
    if (!ok) {
      return_tokens(1);
      co_return;
    }
  }
}

std::shared_ptr<const PoolSettingsSnapshot> Pool::current_settings() const {
  std::lock_guard lock(mutex_);
  return settings_;
}

std::vector<std::shared_ptr<Host>> Pool::hosts() const {
  std::lock_guard lock(mutex_);
  return *hosts_;
}

void Pool::remember_scram_keys(const protocol::auth::ScramKeys& keys) {
  std::lock_guard lock(mutex_);
  if (scram_keys_ && scram_keys_->client_key == keys.client_key && scram_keys_->server_key == keys.server_key) return;
  scram_keys_ = std::make_shared<const protocol::auth::ScramKeys>(keys);
}

void Pool::reconfigure(PoolSettingsSnapshot settings, std::vector<std::shared_ptr<Host>> hosts) {
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  int freed = 0;
  {
    std::lock_guard lock(mutex_);
    settings.mode = settings_->mode;  // fixed for the pool's life (sessions follow it)
    settings.share_tracked_parameters = share_tracked_;
    settings_ = std::make_shared<const PoolSettingsSnapshot>(std::move(settings));
    if (!hosts.empty() && hosts != *hosts_) {
      log()->info("pool {}: servers changed; connections to the old ones close as they are released", name_);
      hosts_ = std::make_shared<const std::vector<std::shared_ptr<Host>>>(std::move(hosts));
      next_host_ = 0;
      ++generation_;  // connections to the old servers are not reused
      for (auto& conn : idle_) to_close.push_back(std::move(conn));
      idle_.clear();
      open_ -= static_cast<int>(to_close.size());
      freed = static_cast<int>(to_close.size());
    }
    // A larger size (or anything else) may serve waiters now.
    serve_waiters_locked(to_close);
  }
  for (auto& c : to_close) c->close();
  return_tokens(freed);
}

void Pool::pause() {
  std::lock_guard lock(mutex_);
  if (!paused_) log()->info("pool {} paused", name_);
  paused_ = true;
}

void Pool::resume() {
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  {
    std::lock_guard lock(mutex_);
    if (paused_) log()->info("pool {} resumed", name_);
    paused_ = false;
    serve_waiters_locked(to_close);
  }
  for (auto& c : to_close) c->close();
}

bool Pool::paused() const {
  std::lock_guard lock(mutex_);
  return paused_;
}

void Pool::reconnect() {
  {
    std::lock_guard lock(mutex_);
    ++generation_;
    log()->info("pool {}: RECONNECT, server connections are replaced as they are released", name_);
  }
  close_idle();
  offer_slot();
}

int Pool::open_connections() const {
  std::lock_guard lock(mutex_);
  return open_;
}

Pool::Counts Pool::counts() const {
  std::lock_guard lock(mutex_);
  Counts c;
  c.idle = static_cast<int>(idle_.size());
  c.active = open_ - c.idle;
  c.waiting = static_cast<int>(waiters_.size());
  c.connecting = connecting_;
  const auto now = Clock::now();
  for (const auto& waiter : waiters_) {
    c.max_wait = std::max(c.max_wait, std::chrono::duration_cast<std::chrono::microseconds>(now - waiter->since));
  }
  return c;
}

std::vector<Pool::IdleServer> Pool::idle_servers() const {
  std::lock_guard lock(mutex_);
  std::vector<IdleServer> out;
  out.reserve(idle_.size());
  for (const auto& conn : idle_) {
    out.push_back(IdleServer{conn->id(), conn->backend_key.pid, conn->address, conn->created_at, conn->last_used_at});
  }
  return out;
}

void PoolCounters::add_error(std::string_view sqlstate) {
  if (sqlstate.size() < 2) return;
  std::lock_guard lock(errors_mutex_);
  ++errors_[std::string(sqlstate.substr(0, 2))];
}

std::vector<std::pair<std::string, std::uint64_t>> PoolCounters::errors_by_class() const {
  std::lock_guard lock(errors_mutex_);
  return {errors_.begin(), errors_.end()};
}

std::shared_ptr<const ParameterList> Pool::cached_parameters(const StartupParams& params) const {
  std::lock_guard lock(mutex_);
  auto it = reported_parameters_.find(params);
  if (it == reported_parameters_.end()) return nullptr;
  return it->second;
}

void Pool::remember_parameters(const StartupParams& params, std::shared_ptr<const ParameterList> reported) {
  std::lock_guard lock(mutex_);
  remember_locked(params, std::move(reported));
}

void Pool::remember_locked(const StartupParams& params, std::shared_ptr<const ParameterList> reported) {
  // Bounded: a fleet of clients with ever-changing startup values (say, a unique
  // application_name each) must not grow this without limit.
  if (reported_parameters_.size() >= 256) reported_parameters_.clear();
  reported_parameters_[params] = std::move(reported);
}

void Pool::close() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    fail_waiters_locked(shutdown_failure());
    // Its wait is work that would keep the io_context running.
    if (queue_timer_) queue_timer_->cancel();
    queue_timer_at_ = Clock::time_point::max();
  }
  close_idle();
}

void Pool::close_idle() {
  std::vector<std::unique_ptr<ServerConnection>> idle;
  {
    std::lock_guard lock(mutex_);
    idle.swap(idle_);
    open_ -= static_cast<int>(idle.size());
  }
  for (auto& c : idle) c->close();
  return_tokens(static_cast<int>(idle.size()));
}

// ---- PoolRegistry ---------------------------------------------------------------

std::shared_ptr<Pool> PoolRegistry::get_or_create(const std::string& database, const std::string& user,
                                                  const ServerTarget& target,
                                                  const std::vector<std::pair<std::string, std::uint16_t>>& servers,
                                                  PoolSettingsSnapshot settings, int max_db_connections,
                                                  int max_user_connections) {
  std::string key = database;
  key.push_back('\0');
  key += user;
  std::lock_guard lock(mutex_);
  for (auto& [k, pool] : pools_)
    if (k == key) return pool;
  std::vector<std::shared_ptr<Host>> hosts;
  for (const auto& [host, port] : servers) hosts.push_back(hosts_.get(host, port));
  if (hosts.empty()) hosts.push_back(hosts_.get(target.host, target.port));
  PoolLimits limits;
  if (max_db_connections > 0) {
    auto& limit = database_limits_[database];
    if (!limit) limit = std::make_shared<ConnectionLimit>("database " + database, max_db_connections);
    limits.database = limit;
  }
  if (max_user_connections > 0) {
    auto& limit = user_limits_[user];
    if (!limit) limit = std::make_shared<ConnectionLimit>("user " + user, max_user_connections);
    limits.user = limit;
  }
  auto pool = std::make_shared<Pool>(database, user, target, std::move(hosts), std::move(settings), limits, pool_locking_);
  if (all_paused_ || paused_databases_.count(database)) pool->pause();
  if (limits.database) limits.database->add_member(pool);
  if (limits.user) limits.user->add_member(pool);
  pools_.emplace_back(std::move(key), pool);
  return pool;
}

void PoolRegistry::pause(const std::string& database) {
  std::vector<std::shared_ptr<Pool>> pools;
  {
    std::lock_guard lock(mutex_);
    if (database.empty()) {
      all_paused_ = true;
    } else {
      paused_databases_.insert(database);
    }
    for (auto& [k, pool] : pools_)
      if (database.empty() || pool->database() == database) pools.push_back(pool);
  }
  for (auto& pool : pools) pool->pause();
}

void PoolRegistry::resume(const std::string& database) {
  std::vector<std::shared_ptr<Pool>> pools;
  {
    std::lock_guard lock(mutex_);
    if (database.empty()) {
      all_paused_ = false;
      paused_databases_.clear();
    } else {
      paused_databases_.erase(database);
    }
    for (auto& [k, pool] : pools_) {
      if (!database.empty() && pool->database() != database) continue;
      if (all_paused_) continue;
      pools.push_back(pool);
    }
  }
  for (auto& pool : pools) pool->resume();
}

bool PoolRegistry::paused(const std::string& database) const {
  std::lock_guard lock(mutex_);
  return all_paused_ || paused_databases_.count(database) > 0;
}

std::vector<std::shared_ptr<Pool>> PoolRegistry::all() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Pool>> out;
  for (auto& [k, pool] : pools_) out.push_back(pool);
  return out;
}

}  // namespace sluice::pool
