#pragma once
// A mutex that is switched off, for good, when its owner is only ever used by one
// thread: Sluice with one worker takes no lock on the relay path (a pool's
// checkout and release, a statement's statistics).
#include <mutex>

namespace sluice::pool {

class SwitchableMutex {
 public:
  explicit SwitchableMutex(bool enabled = true) : enabled_(enabled) {}
  SwitchableMutex(const SwitchableMutex&) = delete;
  SwitchableMutex& operator=(const SwitchableMutex&) = delete;

  void lock() {
    if (enabled_) mutex_.lock();
  }
  bool try_lock() { return !enabled_ || mutex_.try_lock(); }
  void unlock() {
    if (enabled_) mutex_.unlock();
  }

 private:
  const bool enabled_;
  std::mutex mutex_;
};

}  // namespace sluice::pool
