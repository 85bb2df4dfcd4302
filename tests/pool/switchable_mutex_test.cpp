// Unit tests of SwitchableMutex (pool/switchable_mutex.h): the lock a pool and a
// statistics shard skip when Sluice runs one worker.
#include <gtest/gtest.h>

#include <mutex>

#include "pool/switchable_mutex.h"

namespace sluice::pool {
namespace {

TEST(SwitchableMutex, EnabledItExcludesLikeAMutex) {
  SwitchableMutex mutex;
  std::unique_lock held(mutex);
  EXPECT_FALSE(mutex.try_lock()) << "a held lock was taken again";
  held.unlock();
  EXPECT_TRUE(mutex.try_lock());
  mutex.unlock();
}

TEST(SwitchableMutex, SwitchedOffItNeverExcludes) {
  SwitchableMutex mutex(/*enabled=*/false);
  std::lock_guard held(mutex);
  EXPECT_TRUE(mutex.try_lock()) << "a switched-off lock excluded its own thread";
  std::lock_guard again(mutex);  // a real mutex would deadlock here
  mutex.unlock();
}

}  // namespace
}  // namespace sluice::pool
