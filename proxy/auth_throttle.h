#pragma once
// Slows down password guessing: an address whose logins keep failing waits before
// each further attempt is answered, longer after each failure, up to a limit. One
// map for the process (addresses, not connections, are what an attacker has few of).
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace sluice::proxy {

class AuthThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  // Failures an address may have before it is slowed down.
  static constexpr int kFreeFailures = 3;
  // The first delay; each further failure doubles it (up to the configured maximum).
  static constexpr std::chrono::milliseconds kFirstDelay{100};
  // An address that has not failed for this long starts afresh.
  static constexpr std::chrono::seconds kForgetAfter{60};
  // Addresses remembered at most (the oldest are forgotten first when full).
  static constexpr std::size_t kMaxAddresses = 10'000;

  void record_failure(const std::string& address, Clock::time_point now);
  // How long a login from `address` waits before it is answered; 0 for most.
  std::chrono::milliseconds delay_for(const std::string& address, Clock::time_point now,
                                      std::chrono::milliseconds max_delay);
  std::size_t tracked() const;

 private:
  struct Entry {
    int failures = 0;
    Clock::time_point last_failure;
  };
  void forget_stale(Clock::time_point now);
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace sluice::proxy
