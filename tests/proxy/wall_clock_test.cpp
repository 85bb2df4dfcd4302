// Unit tests of wall_time_of (proxy/wall_clock.h): wall-clock times of steady_clock
// readings without a system_clock read per statement.
#include "proxy/wall_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace sluice::proxy {
namespace {

using namespace std::chrono;

// Generous bounds: only a step of the machine's clock during the test moves them.
TEST(WallClock, ANowReadingIsNow) {
  const auto before = system_clock::now();
  const auto wall = wall_time_of(steady_clock::now());
  const auto after = system_clock::now();
  EXPECT_GE(wall, before - milliseconds(100));
  EXPECT_LE(wall, after + milliseconds(100));
}

// Readings apart by d map to wall times apart by d, within the second that one
// anchor serves and across a new anchor alike.
TEST(WallClock, DistancesBetweenReadingsAreKept) {
  const auto steady = steady_clock::now();
  const auto wall = wall_time_of(steady);
  EXPECT_LE(abs(wall_time_of(steady + milliseconds(300)) - wall - milliseconds(300)), milliseconds(5));
  EXPECT_LE(abs(wall_time_of(steady + seconds(5)) - wall - seconds(5)), milliseconds(5));
  // A reading older than the anchor (a new one was taken for the last) maps too.
  EXPECT_LE(abs(wall_time_of(steady - milliseconds(500)) - wall + milliseconds(500)), milliseconds(5));
}

// Each thread keeps its own anchor; a fresh thread's first reading is right too.
TEST(WallClock, AFreshThreadMapsItsFirstReading) {
  std::thread([] {
    const auto before = system_clock::now();
    const auto wall = wall_time_of(steady_clock::now());
    EXPECT_GE(wall, before - milliseconds(100));
    EXPECT_LE(wall, system_clock::now() + milliseconds(100));
  }).join();
}

}  // namespace
}  // namespace sluice::proxy
