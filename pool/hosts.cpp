#include "pool/hosts.h"

#include <algorithm>

#include "pool/log.h"
#include "pool/pool.h"

namespace sluice::pool {
namespace {
const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("pool");
  return logger;
}
}  // namespace

std::chrono::milliseconds next_backoff(std::chrono::milliseconds previous, std::chrono::milliseconds initial,
                                       std::chrono::milliseconds max, double random) {
  auto full = previous.count() <= 0 ? initial : previous * 2;
  if (full > max) full = max;
  if (full < std::chrono::milliseconds(1)) full = std::chrono::milliseconds(1);
  const auto half = full / 2;
  const auto delay =
      half + std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>((full - half).count()) * random));
  return std::max(delay, std::chrono::milliseconds(1));  // a zero delay would spin
}

double jitter_random() {
  thread_local std::uint64_t seed = 0x9E3779B97F4A7C15ull ^ reinterpret_cast<std::uintptr_t>(&seed);
  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<double>(seed >> 11) / static_cast<double>(1ull << 53);
}

bool is_host_failure(const ConnectFailure& failure) {
  if (failure.server_error.empty()) return failure.host_fault;  // refused, reset, timed out, garbage
  return failure.sqlstate.starts_with("57P");                   // shutting down, crash, cannot connect now
}

// ---- Host ------------------------------------------------------------------------

Host::Host(std::string host, std::uint16_t port, HostPolicy policy)
    : host_(std::move(host)), port_(port), address_(host_ + ":" + std::to_string(port)), policy_(policy) {}

bool Host::usable(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  return !down_ || (policy_.ban_time.count() > 0 && now >= last_failure_at_ + policy_.ban_time);
}

bool Host::down() const {
  std::lock_guard lock(mutex_);
  return down_;
}

void Host::record_success() {
  std::lock_guard lock(mutex_);
  if (down_) log()->info("server {} is up again", address_);
  down_ = false;
  failures_ = 0;
  backoff_ = {};
}

void Host::record_failure(const std::string& reason, const ServerTarget& check, const StartupParams& params) {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  ++failures_;
  last_failure_ = reason;
  last_failure_at_ = now;
  check_target_ = check;
  check_params_ = params;
  if (!down_) {
    log()->warn("server {} is down: {}", address_, reason);
    down_ = true;
    ++times_down_;
    down_since_ = now;
    backoff_ = {};
    next_check_ = now + policy_.backoff_initial;
  }
}

Host::Status Host::status() const {
  std::lock_guard lock(mutex_);
  return Status{down_, last_failure_, down_since_, failures_, times_down_};
}

bool Host::claim_check(Clock::time_point now, ServerTarget& target, StartupParams& params) {
  std::lock_guard lock(mutex_);
  if (!down_ || check_running_ || now < next_check_) return false;
  check_running_ = true;
  target = check_target_;
  params = check_params_;
  return true;
}

void Host::check_done(bool ok, const std::string& reason) {
  const double random = jitter_random();
  std::lock_guard lock(mutex_);
  check_running_ = false;
  if (ok) {
    if (down_) log()->info("server {} is up again (check succeeded)", address_);
    down_ = false;
    failures_ = 0;
    backoff_ = {};
    return;
  }
  ++failures_;
  last_failure_ = reason;
  last_failure_at_ = Clock::now();
  backoff_ = next_backoff(backoff_, policy_.backoff_initial, policy_.backoff_max, random);
  next_check_ = last_failure_at_ + backoff_;
  log()->debug("server {} still down ({}); next check in {} ms", address_, reason, backoff_.count());
}

// ---- HostRegistry ----------------------------------------------------------------

std::shared_ptr<Host> HostRegistry::get(const std::string& host, std::uint16_t port) {
  std::lock_guard lock(mutex_);
  for (auto& h : hosts_)
    if (h->host() == host && h->port() == port) return h;
  hosts_.push_back(std::make_shared<Host>(host, port, policy_));
  return hosts_.back();
}

std::vector<std::shared_ptr<Host>> HostRegistry::all() const {
  std::lock_guard lock(mutex_);
  return hosts_;
}

// ---- ConnectionLimit ----------------------------------------------------------------

bool ConnectionLimit::try_take() {
  std::lock_guard lock(mutex_);
  if (open_ >= max_) return false;
  ++open_;
  return true;
}

bool ConnectionLimit::try_take_both(ConnectionLimit* first, ConnectionLimit* second) {
  if (first == nullptr || second == nullptr || first == second) {
    ConnectionLimit* only = first != nullptr ? first : second;
    return only == nullptr || only->try_take();
  }
  std::scoped_lock lock(first->mutex_, second->mutex_);
  if (first->open_ >= first->max_ || second->open_ >= second->max_) return false;
  ++first->open_;
  ++second->open_;
  return true;
}

int ConnectionLimit::open() const {
  std::lock_guard lock(mutex_);
  return open_;
}

void ConnectionLimit::give_back() {
  std::vector<std::shared_ptr<Pool>> members;
  {
    std::lock_guard lock(mutex_);
    if (open_ > 0) --open_;
    for (auto& weak : members_)
      if (auto pool = weak.lock()) members.push_back(std::move(pool));
  }
  for (auto& pool : members) pool->offer_slot();
}

void ConnectionLimit::add_member(const std::shared_ptr<Pool>& pool) {
  std::lock_guard lock(mutex_);
  members_.push_back(pool);
}

bool ConnectionLimit::others_waiting(const Pool* except) const {
  std::vector<std::shared_ptr<Pool>> members;
  {
    std::lock_guard lock(mutex_);
    if (open_ < max_) return false;  // they can open their own
    for (auto& weak : members_)
      if (auto pool = weak.lock(); pool && pool.get() != except) members.push_back(std::move(pool));
  }
  return std::any_of(members.begin(), members.end(), [](const auto& pool) { return pool->blocked_by_limit(); });
}

void ConnectionLimit::evict_idle_from_others(const Pool* except) {
  std::vector<std::shared_ptr<Pool>> members;
  {
    std::lock_guard lock(mutex_);
    if (open_ < max_) return;
    for (auto& weak : members_)
      if (auto pool = weak.lock(); pool && pool.get() != except) members.push_back(std::move(pool));
  }
  for (auto& pool : members)
    if (pool->close_one_idle()) return;
}

}  // namespace sluice::pool
