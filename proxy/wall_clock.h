#pragma once
// Wall-clock times of steady_clock readings, for what is recorded per statement
// (the statistics' first and last seen, the slow-query log's timestamp): one
// system_clock read per thread and second instead of one per statement, each a
// vDSO call that perf puts at 30-40 ns in this VM.
#include <chrono>

namespace sluice::proxy {

inline std::chrono::system_clock::time_point wall_time_of(std::chrono::steady_clock::time_point steady) noexcept {
  using namespace std::chrono;
  // Taken together, the two clocks' readings map the one onto the other, for a
  // reading before or after them alike. The statements' readings move forward, so a
  // step of the wall clock (settimeofday, NTP) shows within a second.
  struct Anchor {
    steady_clock::time_point steady{};
    system_clock::time_point wall{};
  };
  thread_local Anchor anchor;
  if (anchor.steady == steady_clock::time_point{} || steady - anchor.steady >= seconds(1)) {
    anchor = {steady_clock::now(), system_clock::now()};
  }
  return anchor.wall + duration_cast<system_clock::duration>(steady - anchor.steady);
}

}  // namespace sluice::proxy
