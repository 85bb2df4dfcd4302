#include "proxy/reused_fifo.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace sluice::proxy {
namespace {

TEST(ReusedFifo, KeepsOrderAcrossPushesAndPops) {
  ReusedFifo<int> fifo;
  EXPECT_TRUE(fifo.empty());
  for (int i = 0; i < 5; ++i) fifo.push_back(i);
  EXPECT_EQ(fifo.size(), 5u);
  EXPECT_EQ(fifo.front(), 0);
  EXPECT_EQ(fifo.back(), 4);
  fifo.pop_front();
  fifo.pop_front();
  EXPECT_EQ(fifo.size(), 3u);
  EXPECT_EQ(fifo.front(), 2);
  EXPECT_EQ(fifo[1], 3);
  fifo.push_back(5);
  int expected = 2;
  for (int value : fifo) EXPECT_EQ(value, expected++);
  EXPECT_EQ(expected, 6);
}

TEST(ReusedFifo, AnEmptiedQueueReusesItsStorage) {
  ReusedFifo<std::string> fifo;
  for (int round = 0; round < 1000; ++round) {
    for (int i = 0; i < 5; ++i) fifo.push_back("request " + std::to_string(i));
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(fifo.front(), "request " + std::to_string(i));
      fifo.pop_front();
    }
    EXPECT_TRUE(fifo.empty());
  }
  EXPECT_LE(fifo.capacity(), 8u);
}

TEST(ReusedFifo, AQueueThatNeverEmptiesStaysBounded) {
  // One in, one out, always two waiting (a client that keeps pipelining).
  ReusedFifo<int> fifo;
  fifo.push_back(0);
  fifo.push_back(1);
  for (int next = 2; next < 100000; ++next) {
    fifo.push_back(next);
    EXPECT_EQ(fifo.front(), next - 2);
    fifo.pop_front();
    ASSERT_EQ(fifo.size(), 2u);
  }
  EXPECT_LE(fifo.capacity(), 64u);
  EXPECT_EQ(fifo.front(), 99998);
  EXPECT_EQ(fifo.back(), 99999);
}

TEST(ReusedFifo, PoppedElementsAreDestroyedWhenTheQueueEmpties) {
  ReusedFifo<std::shared_ptr<int>> fifo;
  auto held = std::make_shared<int>(7);
  fifo.push_back(held);
  fifo.push_back(std::make_shared<int>(8));
  fifo.pop_front();
  EXPECT_EQ(held.use_count(), 2);  // kept until the queue empties
  fifo.pop_front();
  EXPECT_EQ(held.use_count(), 1);
}

TEST(ReusedFifo, PoppedElementsAreDestroyedWhenTheDeadFrontIsDropped) {
  ReusedFifo<std::shared_ptr<int>> fifo;
  auto held = std::make_shared<int>(7);
  fifo.push_back(held);
  fifo.push_back(std::make_shared<int>(0));  // never empties from here on
  fifo.pop_front();
  for (int i = 0; i < 40; ++i) {
    fifo.push_back(std::make_shared<int>(i));
    fifo.pop_front();
  }
  EXPECT_EQ(held.use_count(), 1);
  EXPECT_EQ(fifo.size(), 1u);
}

TEST(ReusedFifo, EraseInTheMiddleKeepsTheRestInOrder) {
  ReusedFifo<int> fifo;
  for (int i = 0; i < 6; ++i) fifo.push_back(i);
  fifo.pop_front();  // 1 2 3 4 5
  fifo.erase(fifo.begin() + 2);  // 1 2 4 5
  ASSERT_EQ(fifo.size(), 4u);
  EXPECT_EQ(fifo[0], 1);
  EXPECT_EQ(fifo[1], 2);
  EXPECT_EQ(fifo[2], 4);
  EXPECT_EQ(fifo[3], 5);
  fifo.clear();
  EXPECT_TRUE(fifo.empty());
}

}  // namespace
}  // namespace sluice::proxy
