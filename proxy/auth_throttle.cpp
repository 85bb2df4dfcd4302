#include "proxy/auth_throttle.h"

#include <algorithm>

namespace sluice::proxy {

void AuthThrottle::record_failure(const std::string& address, Clock::time_point now) {
  if (address.empty()) return;
  std::lock_guard lock(mutex_);
  if (entries_.size() >= kMaxAddresses && entries_.find(address) == entries_.end()) {
    forget_stale(now);
    if (entries_.size() >= kMaxAddresses) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
        return a.second.last_failure < b.second.last_failure;
      });
      entries_.erase(oldest);
    }
  }
  Entry& entry = entries_[address];
  if (entry.failures > 0 && now - entry.last_failure > kForgetAfter) entry.failures = 0;
  entry.failures = std::min(entry.failures + 1, 64);
  entry.last_failure = now;
}

std::chrono::milliseconds AuthThrottle::delay_for(const std::string& address, Clock::time_point now,
                                                  std::chrono::milliseconds max_delay) {
  if (max_delay.count() <= 0 || address.empty()) return std::chrono::milliseconds(0);
  std::lock_guard lock(mutex_);
  auto it = entries_.find(address);
  if (it == entries_.end()) return std::chrono::milliseconds(0);
  if (now - it->second.last_failure > kForgetAfter) {
    entries_.erase(it);
    return std::chrono::milliseconds(0);
  }
  const int over = it->second.failures - kFreeFailures;
  if (over <= 0) return std::chrono::milliseconds(0);
  const int shift = std::min(over - 1, 20);
  return std::min(max_delay, std::chrono::milliseconds(kFirstDelay.count() << shift));
}

std::size_t AuthThrottle::tracked() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void AuthThrottle::forget_stale(Clock::time_point now) {
  std::erase_if(entries_, [&](const auto& item) { return now - item.second.last_failure > kForgetAfter; });
}

}  // namespace sluice::proxy
