#include "pool/pool.h"

#include <algorithm>
#include <atomic>

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

// A client waiting for a connection. The timer never expires on its own; it is
// cancelled (on the waiter's own executor) to wake the waiter once `conn` or
// `may_open` has been set under the pool's mutex.
struct Pool::Waiter {
  explicit Waiter(asio::any_io_executor executor, const StartupParams& k)
      : key(k), timer(std::move(executor), asio::steady_timer::time_point::max()) {}
  const StartupParams& key;
  asio::steady_timer timer;
  std::unique_ptr<ServerConnection> conn;
  bool may_open = false;
  bool served = false;
  bool refused = false;  // the pool is closing
};

namespace {
// The timer belongs to the waiter's executor (its session's strand), so it is
// cancelled there; the waiter cannot miss it because it enqueued itself and began
// waiting without yielding that executor in between.
void wake(const std::shared_ptr<Pool::Waiter>& waiter) {
  asio::post(waiter->timer.get_executor(), [waiter] { waiter->timer.cancel(); });
}
}  // namespace

Pool::Pool(std::string name, ServerTarget target, PoolSettingsSnapshot settings)
    : name_(std::move(name)), target_(std::move(target)), settings_(settings) {}

Pool::~Pool() { close_idle(); }

StartupParams Pool::key_for(const StartupParams& params) const {
  return settings_.share_tracked_parameters ? sharing_key(params) : params;
}

awaitable<AcquireResult> Pool::acquire(const StartupParams& params, std::uint64_t client_id) {
  const StartupParams key = key_for(params);
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  std::unique_ptr<ServerConnection> found;
  bool may_open = false;
  std::shared_ptr<Waiter> waiter;
  auto executor = co_await asio::this_coro::executor;
  bool refused = false;
  {
    std::lock_guard lock(mutex_);
    if (closing_) {
      refused = true;
    } else if (waiters_.empty()) {
      // Most recently used first: it is the most likely to be warm.
      for (auto it = idle_.rbegin(); it != idle_.rend();) {
        if ((*it)->pool_key != key) {
          ++it;
          continue;
        }
        auto conn = std::move(*it);
        it = decltype(it)(idle_.erase(std::next(it).base()));
        if (conn->idle_and_clean()) {
          found = std::move(conn);
          break;
        }
        to_close.push_back(std::move(conn));
        --open_;
      }
      if (!found) {
        if (open_ < settings_.size) {
          ++open_;
          may_open = true;
        } else if (!idle_.empty()) {
          // Full, but an idle connection was opened with other startup parameters:
          // replace it rather than make this client wait for nobody.
          to_close.push_back(std::move(idle_.front()));
          idle_.erase(idle_.begin());
          may_open = true;
        }
      }
    }
    if (!found && !may_open && !refused) {
      waiter = std::make_shared<Waiter>(executor, key);
      waiters_.push_back(waiter);
    }
  }
  for (auto& conn : to_close) {
    log()->debug("[s{}] closing server connection to {} (not reusable for this client)", conn->id(), name_);
    conn->close();
  }
  to_close.clear();

  if (waiter) {
    log()->debug("[c{}] waiting for a server connection in pool {}", client_id, name_);
    // Woken by serve_waiters_locked (which cancels the timer), or by the timer at
    // the query_wait deadline; the loop guards against any other wake-up.
    const auto deadline = settings_.query_wait.count() > 0 ? Clock::now() + settings_.query_wait
                                                            : asio::steady_timer::time_point::max();
    bool timed_out = false;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (waiter->served) break;
        if (Clock::now() >= deadline) {
          // Still queued (not served under the lock): leave the queue.
          waiters_.erase(std::find(waiters_.begin(), waiters_.end(), waiter));
          timed_out = true;
          break;
        }
        waiter->timer.expires_at(deadline);
      }
      co_await waiter->timer.async_wait(use_nothrow);
    }
    if (timed_out) {
      log()->info("[c{}] no server connection in pool {} within query_wait ({} ms)", client_id, name_,
                  settings_.query_wait.count());
      const auto ms = settings_.query_wait.count();
      const std::string limit = ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
      co_return AcquireResult{
          Lease(), ConnectFailure{"no server connection available for " + name_ + " within query_wait (" + limit + ")",
                                  {}, "57014"}};
    }
    if (waiter->conn) found = std::move(waiter->conn);
    may_open = waiter->may_open;
    refused = waiter->refused;
  }
  if (refused) {
    co_return AcquireResult{Lease(), ConnectFailure{"terminating connection due to administrator command", {}, "57P01"}};
  }

  if (found) {
    found->last_used_at = Clock::now();
    co_return AcquireResult{Lease(shared_from_this(), std::move(found)), {}};
  }

  const auto server_id = next_server_id();
  log()->debug("[s{}] opening server connection to {} for pool {}", server_id, target_.address(), name_);
  // Shared connections are opened without the tracked parameters, so that what
  // they report at login is the server's default for each (see attach_server).
  auto result = co_await connect_server(target_, key, settings_.connect_timeout, server_id);
  if (auto* failure = std::get_if<ConnectFailure>(&result)) {
    log()->warn("[s{}] connection to {} for pool {} failed: {}", server_id, target_.address(), name_,
                failure->reason);
    {
      std::lock_guard lock(mutex_);
      --open_;
      serve_waiters_locked(to_close);
    }
    for (auto& conn : to_close) conn->close();
    co_return AcquireResult{Lease(), std::move(*failure)};
  }
  auto conn = std::move(std::get<0>(result));
  conn->pool_key = key;
  {
    std::lock_guard lock(mutex_);
    // What a client with exactly these startup parameters is told at login.
    remember_locked(key, std::make_shared<const ParameterList>(conn->parameters));
  }
  log()->info("[s{}] connected to {} for pool {}, backend pid {}", server_id, target_.address(), name_,
              conn->backend_key.pid);
  co_return AcquireResult{Lease(shared_from_this(), std::move(conn)), {}};
}

void Pool::give_back(std::unique_ptr<ServerConnection> conn) {
  conn->last_used_at = Clock::now();
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  {
    std::lock_guard lock(mutex_);
    if (closing_) {
      --open_;
      to_close.push_back(std::move(conn));
    } else {
      idle_.push_back(std::move(conn));
      serve_waiters_locked(to_close);
    }
  }
  for (auto& c : to_close) c->close();
}

void Pool::drop(std::unique_ptr<ServerConnection> conn) {
  log()->debug("[s{}] closing server connection (pool {})", conn->id(), name_);
  conn->close();
  std::vector<std::unique_ptr<ServerConnection>> to_close;
  {
    std::lock_guard lock(mutex_);
    --open_;
    serve_waiters_locked(to_close);
  }
  for (auto& c : to_close) c->close();
}

void Pool::serve_waiters_locked(std::vector<std::unique_ptr<ServerConnection>>& to_close) {
  while (!waiters_.empty()) {
    auto& waiter = waiters_.front();
    auto match = std::find_if(idle_.rbegin(), idle_.rend(),
                              [&](const auto& c) { return c->pool_key == waiter->key; });
    if (match != idle_.rend()) {
      waiter->conn = std::move(*match);
      idle_.erase(std::next(match).base());
    } else if (open_ < settings_.size) {
      ++open_;
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

Pool::Counts Pool::counts() const {
  std::lock_guard lock(mutex_);
  Counts c;
  c.idle = static_cast<int>(idle_.size());
  c.active = open_ - c.idle;
  c.waiting = static_cast<int>(waiters_.size());
  return c;
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
  std::deque<std::shared_ptr<Waiter>> refused;
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    refused.swap(waiters_);
    for (auto& waiter : refused) {
      waiter->served = true;
      waiter->refused = true;
      wake(waiter);
    }
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
}

// ---- PoolRegistry ---------------------------------------------------------------

std::shared_ptr<Pool> PoolRegistry::get_or_create(const std::string& database, const std::string& user,
                                                  const ServerTarget& target, PoolSettingsSnapshot settings) {
  std::string key = database;
  key.push_back('\0');
  key += user;
  std::lock_guard lock(mutex_);
  for (auto& [k, pool] : pools_)
    if (k == key) return pool;
  auto pool = std::make_shared<Pool>(database + "/" + user, target, settings);
  pools_.emplace_back(std::move(key), pool);
  return pool;
}

std::vector<std::shared_ptr<Pool>> PoolRegistry::all() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Pool>> out;
  for (auto& [k, pool] : pools_) out.push_back(pool);
  return out;
}

}  // namespace sluice::pool
