#pragma once
// Health of the PostgreSQL hosts behind the pools, and the connection limits that
// span several pools (max_db_connections, max_user_connections).
//
// A host goes down when a connection attempt to it fails for a reason that is the
// host's, not the client's (refused, reset, timed out, PostgreSQL shutting down
// or starting up). While it is down, requests that would need a new connection
// to it are refused at once with the last failure, instead of each waiting out a
// connect timeout; the janitor checks it with backoff and it is up again as soon
// as a check succeeds (or, without one, after ban_time).
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pool/server_connection.h"

namespace sluice::pool {

class Pool;

struct HostPolicy {
  std::chrono::milliseconds ban_time{30'000};
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{1'000};
};

// The next delay of an exponential backoff: doubled from `previous` (or
// `initial` the first time), capped at `max`, then jittered into [d/2, d] so
// that many waiters do not retry in lockstep. `random` is in [0, 1).
std::chrono::milliseconds next_backoff(std::chrono::milliseconds previous, std::chrono::milliseconds initial,
                                       std::chrono::milliseconds max, double random);

// A number in [0, 1) for backoff jitter: a per-thread linear congruential
// generator (spreading retries needs no better source, and no lock).
double jitter_random();

// Whether a failed connection attempt says something about the host (and not
// about this user or database): transport failures and PostgreSQL refusing
// because it is shutting down, starting up or in recovery (class 57P).
bool is_host_failure(const ConnectFailure& failure);

class Host {
 public:
  Host(std::string host, std::uint16_t port, HostPolicy policy);

  const std::string& host() const { return host_; }
  std::uint16_t port() const { return port_; }
  const std::string& address() const { return address_; }

  // Whether new connections may be attempted: up, or down for longer than ban_time.
  bool usable(Clock::time_point now) const;
  bool down() const;
  void record_success();
  // `check` is how the janitor may log in to test the host (a pool's target with
  // this host, and its startup parameters).
  void record_failure(const std::string& reason, const ServerTarget& check, const StartupParams& params);

  struct Status {
    bool down = false;
    std::string last_failure;
    Clock::time_point down_since{};
    int failures = 0;  // consecutive
    std::uint64_t times_down = 0;  // since start
  };
  Status status() const;

  // The janitor: claims a due check (false when none is due or one runs), and
  // reports its outcome.
  bool claim_check(Clock::time_point now, ServerTarget& target, StartupParams& params);
  void check_done(bool ok, const std::string& reason);

 private:
  const std::string host_;
  const std::uint16_t port_;
  const std::string address_;
  const HostPolicy policy_;
  mutable std::mutex mutex_;
  bool down_ = false;
  bool check_running_ = false;
  int failures_ = 0;
  std::uint64_t times_down_ = 0;
  std::string last_failure_;
  Clock::time_point down_since_{};
  Clock::time_point last_failure_at_{};
  Clock::time_point next_check_{};
  std::chrono::milliseconds backoff_{0};
  ServerTarget check_target_;
  StartupParams check_params_;
};

// One Host object per "host:port" for the whole process, so that every pool in
// front of a server sees the same health.
class HostRegistry {
 public:
  explicit HostRegistry(HostPolicy policy = {}) : policy_(policy) {}
  std::shared_ptr<Host> get(const std::string& host, std::uint16_t port);
  std::vector<std::shared_ptr<Host>> all() const;

 private:
  const HostPolicy policy_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Host>> hosts_;
};

// A cap on server connections shared by several pools. Pools take a token per
// connection (under their own lock: pool, then limit) and give it back when the
// connection closes; then every member pool with waiters is offered the slot.
class ConnectionLimit {
 public:
  ConnectionLimit(std::string what, int max) : what_(std::move(what)), max_(max) {}
  bool try_take();
  // Takes a token from each non-null limit, or from none (both checked under both
  // locks, so nothing is taken and handed back behind another pool's back).
  static bool try_take_both(ConnectionLimit* first, ConnectionLimit* second);
  // Gives a token back; call without any pool's lock held (it wakes member pools).
  void give_back();
  void add_member(const std::shared_ptr<Pool>& pool);
  // Asks a member other than `except` to close one idle connection, so that a
  // pool whose clients wait is not starved by another pool's idle connections.
  // Call without any pool's lock held.
  void evict_idle_from_others(const Pool* except);
  // Whether a member other than `except` has clients waiting (call without any
  // pool's lock held).
  bool others_waiting(const Pool* except) const;
  int max() const { return max_; }
  int open() const;
  const std::string& what() const { return what_; }

 private:
  const std::string what_;  // "database app", "user app"
  const int max_;
  mutable std::mutex mutex_;
  int open_ = 0;
  std::vector<std::weak_ptr<Pool>> members_;
};

}  // namespace sluice::pool
