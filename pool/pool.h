#pragma once
// A pool of server connections for one (database, user) pair, capped at `size`.
// Clients beyond the cap wait in FIFO order; a released connection or a freed
// slot goes to the first waiter. Connections are only handed to a client whose
// startup parameters they were opened with (session semantics of RESET).
#include <deque>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pool/server_connection.h"

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
  std::chrono::milliseconds connect_timeout{5000};
  // How long a client may wait for a connection (0 = for ever).
  std::chrono::milliseconds query_wait{120000};
  // Transaction/statement mode: clients whose startup parameters differ only in
  // tracked parameters (application_name, TimeZone, ...) share connections; the
  // session SETs its values on the connection it is given. Session mode: a client
  // only gets a connection opened with exactly its startup parameters.
  bool share_tracked_parameters = false;
};

class Pool : public std::enable_shared_from_this<Pool> {
 public:
  Pool(std::string name, ServerTarget target, PoolSettingsSnapshot settings);
  ~Pool();

  // Waits (FIFO) for a server connection opened with `params`.
  awaitable<AcquireResult> acquire(const StartupParams& params, std::uint64_t client_id);

  const std::string& name() const { return name_; }
  const ServerTarget& target() const { return target_; }

  struct Counts {
    int idle = 0;
    int active = 0;   // leased or connecting
    int waiting = 0;
  };
  Counts counts() const;
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

 struct Waiter;

 private:
  friend class Lease;

  void give_back(std::unique_ptr<ServerConnection> conn);  // clean, from a lease
  void drop(std::unique_ptr<ServerConnection> conn);       // dirty, from a lease
  // Hands a connection or a free slot to the first waiter; called with mutex_ held.
  void serve_waiters_locked(std::vector<std::unique_ptr<ServerConnection>>& to_close);
  StartupParams key_for(const StartupParams& params) const;
  void remember_locked(const StartupParams& params, std::shared_ptr<const ParameterList> reported);

  const std::string name_;
  const ServerTarget target_;
  const PoolSettingsSnapshot settings_;

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<ServerConnection>> idle_;  // most recently used last
  int open_ = 0;
  bool closing_ = false;  // idle + leased + connecting; never above settings_.size
  std::deque<std::shared_ptr<Waiter>> waiters_;
  std::map<StartupParams, std::shared_ptr<const ParameterList>> reported_parameters_;
};

// All pools, created on first use.
class PoolRegistry {
 public:
  std::shared_ptr<Pool> get_or_create(const std::string& database, const std::string& user,
                                      const ServerTarget& target, PoolSettingsSnapshot settings);
  std::vector<std::shared_ptr<Pool>> all() const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::shared_ptr<Pool>>> pools_;
};

std::uint64_t next_server_id();

}  // namespace sluice::pool
