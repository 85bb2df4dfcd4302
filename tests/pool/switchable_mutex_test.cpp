// Unit tests of SwitchableMutex (pool/switchable_mutex.h): the lock a pool and a
// statistics shard skip when Sluice runs one worker.
#include <gtest/gtest.h>

#include <mutex>
#include <thread>

#include "pool/switchable_mutex.h"

namespace sluice::pool {
namespace {

// Whether another thread can take `mutex` right now (try_lock on a mutex its own
// thread holds would be undefined).
bool free_for_another_thread(SwitchableMutex& mutex) {
  bool taken = false;
  std::thread([&] {
    taken = mutex.try_lock();
    if (taken) mutex.unlock();
  }).join();
  return taken;
}

TEST(SwitchableMutex, EnabledItExcludesLikeAMutex) {
  SwitchableMutex mutex;
  std::unique_lock held(mutex);
  EXPECT_FALSE(free_for_another_thread(mutex)) << "another thread took a held lock";
  held.unlock();
  EXPECT_TRUE(free_for_another_thread(mutex));
}

TEST(SwitchableMutex, SwitchedOffItNeverExcludes) {
  SwitchableMutex mutex(/*enabled=*/false);
  std::lock_guard held(mutex);
  ASSERT_TRUE(free_for_another_thread(mutex)) << "a switched-off lock excluded another thread";
  ASSERT_TRUE(mutex.try_lock()) << "a switched-off lock excluded its own thread";
  std::lock_guard again(mutex);  // a real mutex would deadlock here
  mutex.unlock();
}

}  // namespace
}  // namespace sluice::pool
