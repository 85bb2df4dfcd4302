// Regression tests for review findings on StreamScanner: where a stopping
// message began (a Terminate split across reads) and the cap on inspected bodies.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/scanner.h"

namespace sluice::protocol {
namespace {

struct StopOnTerminate {
  bool inspect(char type) { return type == 'X' || type == 'E'; }
  ScanAction on_message(char type, Bytes body) {
    if (type == 'E') inspected_sizes.push_back(body.size());
    return type == 'X' ? ScanAction::stop : ScanAction::next;
  }
  std::vector<std::size_t> inspected_sizes;
};

Bytes bytes_of(const std::string& s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

TEST(ScannerStop, TerminateWholeInChunkReportsItsStart) {
  StreamScanner scanner(1 << 20);
  StopOnTerminate observer;
  std::string query("Q\0\0\0\x0dSELECT 1\0", 14);
  std::string chunk = query + std::string("X\0\0\0\x04", 5);
  auto outcome = scanner.feed(bytes_of(chunk), observer);
  ASSERT_TRUE(outcome);
  EXPECT_TRUE(outcome->stopped);
  EXPECT_EQ(outcome->stop_message_begin, query.size());
  EXPECT_EQ(outcome->consumed, chunk.size());
}

TEST(ScannerStop, TerminateSplitAcrossChunksIsReportedAsBegunEarlier) {
  // Every split point inside the Terminate: the part in the first chunk was already
  // forwarded, so the scanner must say the message began in an earlier chunk.
  const std::string terminate("X\0\0\0\x04", 5);
  for (std::size_t split = 1; split < terminate.size(); ++split) {
    StreamScanner scanner(1 << 20);
    StopOnTerminate observer;
    auto first = scanner.feed(bytes_of(terminate.substr(0, split)), observer);
    ASSERT_TRUE(first);
    EXPECT_FALSE(first->stopped);
    auto second = scanner.feed(bytes_of(terminate.substr(split)), observer);
    ASSERT_TRUE(second);
    EXPECT_TRUE(second->stopped) << split;
    EXPECT_EQ(second->stop_message_begin, StreamScanner::npos) << split;
    EXPECT_EQ(second->consumed, terminate.size() - split) << split;
  }
}

TEST(ScannerStop, TerminateAfterASplitMessageBeginsInTheSecondChunk) {
  std::string query("Q\0\0\0\x0dSELECT 1\0", 14);
  StreamScanner scanner(1 << 20);
  StopOnTerminate observer;
  ASSERT_TRUE(scanner.feed(bytes_of(query.substr(0, 7)), observer));
  std::string rest = query.substr(7) + std::string("X\0\0\0\x04", 5);
  auto outcome = scanner.feed(bytes_of(rest), observer);
  ASSERT_TRUE(outcome);
  EXPECT_TRUE(outcome->stopped);
  EXPECT_EQ(outcome->stop_message_begin, query.size() - 7);
}

TEST(ScannerStop, InspectedBodiesAreCappedWholeOrSplit) {
  const std::size_t body_size = StreamScanner::kMaxInspected * 4;
  std::string message = "E";
  const std::uint32_t length = static_cast<std::uint32_t>(body_size + 4);
  for (int shift = 24; shift >= 0; shift -= 8) message.push_back(static_cast<char>(length >> shift));
  message.append(body_size, 'x');
  {
    StreamScanner scanner(1u << 30);
    StopOnTerminate observer;
    ASSERT_TRUE(scanner.feed(bytes_of(message), observer));
    ASSERT_EQ(observer.inspected_sizes.size(), 1u);
    EXPECT_EQ(observer.inspected_sizes[0], StreamScanner::kMaxInspected);
  }
  {
    StreamScanner scanner(1u << 30);
    StopOnTerminate observer;
    for (std::size_t pos = 0; pos < message.size(); pos += 1000)
      ASSERT_TRUE(scanner.feed(bytes_of(message.substr(pos, 1000)), observer));
    ASSERT_EQ(observer.inspected_sizes.size(), 1u);
    EXPECT_EQ(observer.inspected_sizes[0], StreamScanner::kMaxInspected);
  }
}

}  // namespace
}  // namespace sluice::protocol
