// Unit tests of StreamScanner (protocol/scanner.h): one stream of mixed messages fed whole,
// byte by byte, split at every point (small stream) and in chunks of sizes drawn from fixed-seed
// generators; the observer must see the same thing every time.
#include "protocol/scanner.h"

#include <gtest/gtest.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/protocol/test_messages.h"

namespace sluice::protocol {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;
using test::as_bytes;
using test::as_string;
using test::be32;
using test::cstr;
using test::ExactCopy;
using test::nul;
using test::pg_msg;
using test::pg_msg_with_length;

constexpr std::uint32_t kMaxBody = 4 << 20;

// Records every call. Inspects the types in `inspected`; stops after each message of type `stop_on`.
struct Recorder {
  std::string inspected;
  char stop_on = 0;
  const StreamScanner* scanner = nullptr;

  std::string inspect_calls;                          // every type, in order
  std::vector<std::pair<char, std::string>> bodies;   // inspected messages, in order
  Bytes chunk;                                        // the chunk being fed (set by the driver)
  std::size_t views_into_chunk = 0;                   // bodies handed over as a view of the chunk
  bool boundary_in_callback = true;                   // at_boundary() seen from on_message

  bool inspect(char type) {
    inspect_calls.push_back(type);
    return inspected.find(type) != std::string::npos;
  }
  ScanAction on_message(char type, Bytes body) {
    bodies.emplace_back(type, as_string(body));
    if (!body.empty() && body.data() >= chunk.data() && body.data() + body.size() <= chunk.data() + chunk.size())
      ++views_into_chunk;
    if (scanner != nullptr && !scanner->at_boundary()) boundary_in_callback = false;
    return type == stop_on ? ScanAction::stop : ScanAction::next;
  }
};

// A stream of messages and what an observer should see of it.
struct Stream {
  std::string wire;
  std::string types;                          // every message's type, in order
  std::vector<std::pair<char, std::string>> messages;
  std::vector<std::size_t> ends;              // offset just after each message
  std::vector<bool> boundary;                 // boundary[offset]: a message starts or ends there

  void add(char type, std::string body) {
    wire += pg_msg(type, body);
    types.push_back(type);
    messages.emplace_back(type, std::move(body));
    ends.push_back(wire.size());
  }
  void finish() {
    boundary.assign(wire.size() + 1, false);
    boundary[0] = true;
    for (std::size_t end : ends) boundary[end] = true;
  }
  std::vector<std::pair<char, std::string>> inspected(std::string_view types_inspected) const {
    std::vector<std::pair<char, std::string>> out;
    // The scanner hands over at most kMaxInspected bytes of an inspected body.
    for (const auto& m : messages)
      if (types_inspected.find(m.first) != std::string_view::npos)
        out.emplace_back(m.first, m.second.substr(0, StreamScanner::kMaxInspected));
    return out;
  }
  std::vector<std::size_t> ends_of(char type) const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < messages.size(); ++i)
      if (messages[i].first == type) out.push_back(ends[i]);
    return out;
  }
};

std::string text_body(std::size_t size, char seed) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

// Login, a query with a 1 MB DataRow, errors and notices, empty bodies, COPY data.
Stream mixed_stream() {
  Stream s;
  s.add('R', be32(0));
  s.add('S', cstr("client_encoding") + cstr("UTF8"));
  s.add('S', cstr("server_version") + cstr("15.6"));
  s.add('K', be32(4242) + be32(0xdeadbeef));
  s.add('Z', "I");
  s.add('T', "\0\x01"s + cstr("?column?") + std::string(18, '\0'));
  s.add('D', text_body(1 << 20, 'a'));  // 1 MB DataRow: skipped
  s.add('D', "\0\x01\0\0\0\x01" "1"s);
  s.add('C', cstr("SELECT 2"));
  s.add('Z', "T");
  s.add('1', "");  // ParseComplete: empty body, inspected
  s.add('n', "");  // NoData: empty body, skipped
  s.add('N', "SNOTICE\0MNote\0\0"s);
  s.add('E', "SERROR\0C42601\0Msyntax error\0\0"s);
  s.add('Z', "E");
  s.add('d', text_body(300000, 'c'));  // CopyData: skipped
  s.add('E', text_body(70000, 'e'));   // a large inspected body, split by most chunkings
  s.add('I', "");                      // EmptyQueryResponse, skipped, empty body
  s.add('Z', "I");
  s.finish();
  return s;
}
constexpr std::string_view kInspected = "RSKZCN1E";

// Small enough to split at every point and every pair of points.
Stream small_stream() {
  Stream s;
  s.add('Z', "I");
  s.add('D', "\0\x01\0\0\0\x03" "abc"s);
  s.add('1', "");
  s.add('E', "SERROR\0\0"s);
  s.add('n', "");
  s.add('S', "a\0b\0"s);
  s.add('Z', "T");
  s.finish();
  return s;
}

// Thousands of messages of random types and sizes (fixed seed), most small, a few large.
Stream many_messages_stream() {
  Stream s;
  std::mt19937 rng(12345);
  constexpr std::string_view types = "ZEDSNdCK1n";
  for (int i = 0; i < 3000; ++i) {
    const char type = types[rng() % types.size()];
    const std::uint32_t pick = rng() % 100;
    const std::size_t size = pick < 90 ? rng() % 40 : pick < 99 ? rng() % 2000 : rng() % 200000;
    s.add(type, text_body(size, static_cast<char>(i)));
  }
  s.finish();
  return s;
}

struct RunResult {
  std::vector<std::size_t> stops;  // global offsets at which feed() reported stopped
  bool error = false;
  std::string error_name;
};

// Feeds `s.wire` cut at `cuts` (strictly increasing offsets inside the wire); re-feeds the rest
// of a chunk after a stop. Checks at_boundary() after every feed() and that an unstopped feed()
// consumes the whole chunk. With `copy`, each chunk is an exact-size heap copy (ASan catches a
// read past its end).
RunResult drive(const Stream& s, Recorder& rec, StreamScanner& scanner, const std::vector<std::size_t>& cuts,
                bool copy) {
  RunResult run;
  rec.scanner = &scanner;
  std::size_t from = 0;
  auto feed_chunk = [&](std::size_t to) -> bool {
    std::optional<ExactCopy> owned;
    Bytes chunk = as_bytes(std::string_view(s.wire).substr(from, to - from));
    if (copy) {
      owned.emplace(std::string_view(s.wire).substr(from, to - from));
      chunk = owned->bytes();
    }
    std::size_t off = 0;
    while (off < chunk.size()) {
      Bytes rest = chunk.subspan(off);
      rec.chunk = rest;
      auto r = scanner.feed(rest, rec);
      if (!r.has_value()) {
        run.error = true;
        run.error_name = test::errc_name(r.error());
        return false;
      }
      if (r->stopped) {
        EXPECT_GE(r->consumed, 1u);
        EXPECT_LE(r->consumed, rest.size());
        off += r->consumed;
        run.stops.push_back(from + off);
      } else {
        EXPECT_EQ(r->consumed, rest.size()) << "an unstopped feed walks the whole chunk";
        off = chunk.size();
      }
      const std::size_t global = from + off;
      if (scanner.at_boundary() != s.boundary[global]) {
        ADD_FAILURE() << "at_boundary() is " << scanner.at_boundary() << " at offset " << global;
        return false;
      }
    }
    from = to;
    return true;
  };
  for (std::size_t cut : cuts)
    if (!feed_chunk(cut)) return run;
  feed_chunk(s.wire.size());
  return run;
}

// Runs the stream through a fresh scanner and checks everything the observer saw.
void expect_scans(const Stream& s, const std::vector<std::size_t>& cuts, bool copy, char stop_on = 0) {
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = std::string(kInspected);
  rec.stop_on = stop_on;
  EXPECT_TRUE(scanner.at_boundary());
  RunResult run = drive(s, rec, scanner, cuts, copy);
  ASSERT_FALSE(run.error) << run.error_name;
  EXPECT_EQ(rec.inspect_calls, s.types) << "inspect() once per message, in order";
  const auto expected = s.inspected(kInspected);
  ASSERT_EQ(rec.bodies.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(rec.bodies[i].first, expected[i].first) << "message " << i;
    ASSERT_TRUE(rec.bodies[i].second == expected[i].second) << "body of message " << i << " ('"
                                                            << expected[i].first << "') differs";
  }
  EXPECT_TRUE(rec.boundary_in_callback);
  EXPECT_EQ(run.stops, stop_on != 0 ? s.ends_of(stop_on) : std::vector<std::size_t>{});
  EXPECT_TRUE(scanner.at_boundary());
}

std::vector<std::size_t> every(std::size_t step, std::size_t size) {
  std::vector<std::size_t> cuts;
  for (std::size_t at = step; at < size; at += step) cuts.push_back(at);
  return cuts;
}

// Cuts from a fixed-seed generator: mostly tiny chunks (headers split often), some medium, a few large.
std::vector<std::size_t> random_cuts(std::uint32_t seed, std::size_t size) {
  std::mt19937 rng(seed);  // mt19937's output sequence is fixed by the standard
  std::vector<std::size_t> cuts;
  std::size_t at = 0;
  for (;;) {
    const std::uint32_t pick = rng() % 16;
    const std::uint32_t limit = pick < 12 ? 24 : pick < 15 ? 4096 : 262144;
    at += 1 + rng() % limit;
    if (at >= size) break;
    cuts.push_back(at);
  }
  return cuts;
}

constexpr std::uint32_t kSeeds[] = {1, 2, 3, 42, 20240611};

// ---- The observer sees the same sequence whatever the chunking

TEST(StreamScanner, MixedStreamWhole) {
  const Stream s = mixed_stream();
  expect_scans(s, {}, /*copy=*/true);
  // Fed whole, every inspected non-empty body is a view into the chunk: no copy.
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = std::string(kInspected);
  drive(s, rec, scanner, {}, false);
  std::size_t non_empty = 0;
  for (const auto& [type, body] : s.inspected(kInspected)) non_empty += body.empty() ? 0 : 1;
  EXPECT_EQ(rec.views_into_chunk, non_empty);
}

TEST(StreamScanner, MixedStreamByteByByte) {
  const Stream s = mixed_stream();
  expect_scans(s, every(1, s.wire.size()), /*copy=*/false);
}

TEST(StreamScanner, MixedStreamInFixedSizeChunks) {
  const Stream s = mixed_stream();
  for (std::size_t size : {2u, 3u, 4u, 5u, 6u, 7u, 64u, 4095u, 4096u, 65536u, 1u << 20}) {
    SCOPED_TRACE("chunks of " + std::to_string(size));
    expect_scans(s, every(size, s.wire.size()), /*copy=*/true);
  }
}

TEST(StreamScanner, MixedStreamInRandomChunksFromFixedSeeds) {
  const Stream s = mixed_stream();
  for (std::uint32_t seed : kSeeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    expect_scans(s, random_cuts(seed, s.wire.size()), /*copy=*/true);
  }
}

TEST(StreamScanner, ManyMessagesInRandomChunksFromFixedSeeds) {
  const Stream s = many_messages_stream();
  for (std::uint32_t seed : kSeeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    expect_scans(s, random_cuts(seed, s.wire.size()), /*copy=*/true);
    expect_scans(s, random_cuts(seed + 1000, s.wire.size()), /*copy=*/true, /*stop_on=*/'K');
  }
  expect_scans(s, every(1, s.wire.size()), /*copy=*/false, 'Z');
}

TEST(StreamScanner, SmallStreamSplitAtEveryPoint) {
  const Stream s = small_stream();
  for (std::size_t i = 1; i < s.wire.size(); ++i) {
    SCOPED_TRACE("split at " + std::to_string(i));
    expect_scans(s, {i}, /*copy=*/true);
  }
}

TEST(StreamScanner, SmallStreamSplitAtEveryPairOfPoints) {
  const Stream s = small_stream();
  for (std::size_t i = 1; i < s.wire.size(); ++i)
    for (std::size_t j = i + 1; j < s.wire.size(); ++j) {
      SCOPED_TRACE("split at " + std::to_string(i) + " and " + std::to_string(j));
      expect_scans(s, {i, j}, /*copy=*/true);
      if (::testing::Test::HasFailure()) return;
    }
}

TEST(StreamScanner, SmallStreamByteByByte) {
  const Stream s = small_stream();
  expect_scans(s, every(1, s.wire.size()), /*copy=*/true);
}

// ---- Stopping

TEST(StreamScanner, StopReturnsRightAfterTheStoppingMessage) {
  const Stream s = mixed_stream();
  expect_scans(s, {}, /*copy=*/true, /*stop_on=*/'Z');
  expect_scans(s, every(1, s.wire.size()), /*copy=*/false, 'Z');
  for (std::uint32_t seed : kSeeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    expect_scans(s, random_cuts(seed, s.wire.size()), /*copy=*/true, 'Z');
  }
  // Stopping on an empty-bodied message, and on one split by most chunkings.
  expect_scans(s, random_cuts(7, s.wire.size()), /*copy=*/true, '1');
  expect_scans(s, random_cuts(8, s.wire.size()), /*copy=*/true, 'E');
}

TEST(StreamScanner, StopInSmallStreamAtEverySplit) {
  const Stream s = small_stream();
  for (char stop_on : {'Z', '1', 'E', 'S'})
    for (std::size_t i = 1; i < s.wire.size(); ++i) {
      SCOPED_TRACE(std::string("stop on ") + stop_on + ", split at " + std::to_string(i));
      expect_scans(s, {i}, /*copy=*/true, stop_on);
    }
}

TEST(StreamScanner, StopConsumedIsRelativeToTheChunk) {
  const std::string z = pg_msg('Z', "I");
  const std::string d = pg_msg('D', "row");
  const std::string wire = d + z + d;
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = "Z";
  rec.stop_on = 'Z';
  // First chunk ends in the middle of Z.
  const std::size_t cut = d.size() + 3;
  auto first = scanner.feed(as_bytes(std::string_view(wire).substr(0, cut)), rec);
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(first->stopped);
  EXPECT_EQ(first->consumed, cut);
  EXPECT_FALSE(scanner.at_boundary());
  auto second = scanner.feed(as_bytes(std::string_view(wire).substr(cut)), rec);
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->stopped);
  EXPECT_EQ(second->consumed, d.size() + z.size() - cut);
  EXPECT_TRUE(scanner.at_boundary());
  auto rest = scanner.feed(as_bytes(std::string_view(wire).substr(d.size() + z.size())), rec);
  ASSERT_TRUE(rest.has_value());
  EXPECT_FALSE(rest->stopped);
  EXPECT_EQ(rest->consumed, d.size());
  EXPECT_EQ(rec.bodies, (std::vector<std::pair<char, std::string>>{{'Z', "I"}}));
  EXPECT_EQ(rec.inspect_calls, "DZD");
}

TEST(StreamScanner, StopOnTheLastMessageOfAChunk) {
  const std::string wire = pg_msg('D', "x") + pg_msg('Z', "I");
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = "Z";
  rec.stop_on = 'Z';
  auto r = scanner.feed(as_bytes(wire), rec);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->stopped);
  EXPECT_EQ(r->consumed, wire.size());
  EXPECT_TRUE(scanner.at_boundary());
}

// ---- Boundaries

TEST(StreamScanner, AtBoundaryOnlyBetweenMessages) {
  const std::string wire = pg_msg('Z', "I") + pg_msg('n', "") + pg_msg('D', "abcdef");
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = "Z";
  EXPECT_TRUE(scanner.at_boundary());
  std::string seen;
  for (std::size_t i = 0; i < wire.size(); ++i) {
    ASSERT_TRUE(scanner.feed(as_bytes(std::string_view(wire).substr(i, 1)), rec).has_value());
    seen += scanner.at_boundary() ? '|' : '.';
  }
  // Z: 6 bytes, n: 5 bytes, D: 11 bytes.
  EXPECT_EQ(seen, ".....|" "....|" "..........|");
}

TEST(StreamScanner, EmptyChunkChangesNothing) {
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = "Z";
  auto r = scanner.feed(Bytes{}, rec);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->consumed, 0u);
  EXPECT_FALSE(r->stopped);
  EXPECT_TRUE(scanner.at_boundary());
  const std::string z = pg_msg('Z', "I");
  ASSERT_TRUE(scanner.feed(as_bytes(std::string_view(z).substr(0, 2)), rec).has_value());
  ASSERT_TRUE(scanner.feed(Bytes{}, rec).has_value());
  EXPECT_FALSE(scanner.at_boundary());
  ASSERT_TRUE(scanner.feed(as_bytes(std::string_view(z).substr(2)), rec).has_value());
  EXPECT_EQ(rec.bodies, (std::vector<std::pair<char, std::string>>{{'Z', "I"}}));
  EXPECT_TRUE(scanner.at_boundary());
}

// ---- Zero-length bodies

TEST(StreamScanner, ZeroLengthBodyAtTheVeryEndOfAChunk) {
  const std::string wire = pg_msg('Z', "I") + pg_msg('1', "");
  StreamScanner scanner(kMaxBody);
  Recorder rec;
  rec.inspected = "Z1";
  rec.scanner = &scanner;
  ExactCopy chunk(wire);  // ends exactly with the 5-byte header of the empty message
  auto r = scanner.feed(chunk.bytes(), rec);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->consumed, wire.size());
  EXPECT_EQ(rec.bodies, (std::vector<std::pair<char, std::string>>{{'Z', "I"}, {'1', ""}}));
  EXPECT_TRUE(scanner.at_boundary());
  EXPECT_TRUE(rec.boundary_in_callback);
}

TEST(StreamScanner, ZeroLengthBodyWithItsHeaderSplit) {
  const std::string wire = pg_msg('Z', "I") + pg_msg('1', "");
  for (std::size_t cut = 7; cut < wire.size(); ++cut) {  // inside the second header
    StreamScanner scanner(kMaxBody);
    Recorder rec;
    rec.inspected = "Z1";
    rec.stop_on = '1';
    ExactCopy first(std::string_view(wire).substr(0, cut));
    auto r1 = scanner.feed(first.bytes(), rec);
    ASSERT_TRUE(r1.has_value());
    EXPECT_FALSE(r1->stopped);
    EXPECT_EQ(rec.bodies.size(), 1u);
    EXPECT_FALSE(scanner.at_boundary());
    ExactCopy second(std::string_view(wire).substr(cut));
    auto r2 = scanner.feed(second.bytes(), rec);
    ASSERT_TRUE(r2.has_value());
    EXPECT_TRUE(r2->stopped);
    EXPECT_EQ(r2->consumed, wire.size() - cut);
    EXPECT_EQ(rec.bodies, (std::vector<std::pair<char, std::string>>{{'Z', "I"}, {'1', ""}}));
    EXPECT_TRUE(scanner.at_boundary());
  }
}

TEST(StreamScanner, OnlyEmptyMessagesByteByByte) {
  Stream s;
  for (char type : "123nIsSXc"sv) s.add(type, "");
  s.finish();
  expect_scans(s, every(1, s.wire.size()), /*copy=*/true);
  expect_scans(s, {}, /*copy=*/true, 'S');
}

// ---- Errors

TEST(StreamScanner, LengthBelowFourIsBadLength) {
  for (std::uint32_t length = 0; length < 4; ++length) {
    const std::string good = pg_msg('Z', "I");
    const std::string wire = good + pg_msg_with_length('D', length, "xxxxxxxx");
    // Whole.
    {
      StreamScanner scanner(kMaxBody);
      Recorder rec;
      rec.inspected = "ZD";
      auto r = scanner.feed(as_bytes(wire), rec);
      EXPECT_EQ(r.has_value() ? "ok" : test::errc_name(r.error()), "bad_length") << length;
      EXPECT_EQ(rec.bodies.size(), 1u);      // the message before it was seen
      EXPECT_EQ(rec.inspect_calls, "Z");     // the bad one was never offered to the observer
    }
    // Byte by byte: fine until the fifth byte of the bad header.
    {
      StreamScanner scanner(kMaxBody);
      Recorder rec;
      rec.inspected = "ZD";
      for (std::size_t i = 0; i < good.size() + kHeaderSize; ++i) {
        auto r = scanner.feed(as_bytes(std::string_view(wire).substr(i, 1)), rec);
        if (i + 1 < good.size() + kHeaderSize) {
          ASSERT_TRUE(r.has_value()) << "byte " << i;
        } else {
          EXPECT_EQ(r.has_value() ? "ok" : test::errc_name(r.error()), "bad_length") << length;
        }
      }
    }
  }
}

TEST(StreamScanner, OversizedIsRefusedFromTheHeader) {
  constexpr std::uint32_t cap = 1000;
  // At the cap: fine, skipped or inspected.
  for (const char* inspected : {"", "D"}) {
    StreamScanner scanner(cap);
    Recorder rec;
    rec.inspected = inspected;
    const std::string at_cap = pg_msg('D', std::string(cap, 'x'));
    auto r = scanner.feed(as_bytes(at_cap), rec);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->consumed, at_cap.size());
  }
  // One over: refused with only the header fed, whole header or byte by byte.
  const std::string header = pg_msg_with_length('D', cap + 5);
  {
    StreamScanner scanner(cap);
    Recorder rec;
    auto r = scanner.feed(as_bytes(header), rec);
    EXPECT_EQ(r.has_value() ? "ok" : test::errc_name(r.error()), "message_too_large");
    EXPECT_EQ(rec.inspect_calls, "");
  }
  {
    StreamScanner scanner(cap);
    Recorder rec;
    for (std::size_t i = 0; i + 1 < kHeaderSize; ++i)
      ASSERT_TRUE(scanner.feed(as_bytes(std::string_view(header).substr(i, 1)), rec).has_value());
    auto r = scanner.feed(as_bytes(std::string_view(header).substr(kHeaderSize - 1)), rec);
    EXPECT_EQ(r.has_value() ? "ok" : test::errc_name(r.error()), "message_too_large");
  }
  // The largest length field.
  {
    StreamScanner scanner(kMaxBody);
    Recorder rec;
    auto r = scanner.feed(as_bytes(pg_msg_with_length('D', 0xffffffff)), rec);
    EXPECT_EQ(r.has_value() ? "ok" : test::errc_name(r.error()), "message_too_large");
  }
}

TEST(StreamScanner, SetMaxBodyAppliesToTheNextHeader) {
  const std::string big = pg_msg('D', std::string(5000, 'x'));
  StreamScanner scanner(100);
  Recorder rec;
  scanner.set_max_body(5000);
  auto r = scanner.feed(as_bytes(big), rec);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->consumed, big.size());
  scanner.set_max_body(4999);
  auto too_big = scanner.feed(as_bytes(big), rec);
  EXPECT_EQ(too_big.has_value() ? "ok" : test::errc_name(too_big.error()), "message_too_large");
}

// ---- Large messages

TEST(StreamScanner, OneMegabyteDataRowInChunksIsSkippedWithoutACall) {
  const std::string body = text_body(1 << 20, 'q');
  const std::string wire = pg_msg('Z', "I") + pg_msg('D', body) + pg_msg('Z', "T");
  for (std::size_t chunk : {1u, 7u, 4096u, 65536u, 1u << 20, 2u << 20}) {
    SCOPED_TRACE("chunks of " + std::to_string(chunk));
    StreamScanner scanner(1 << 20);  // exactly the DataRow's body
    Recorder rec;
    rec.inspected = "Z";
    for (std::size_t at = 0; at < wire.size(); at += chunk) {
      auto r = scanner.feed(as_bytes(std::string_view(wire).substr(at, chunk)), rec);
      ASSERT_TRUE(r.has_value()) << test::errc_name(r.error());
      ASSERT_FALSE(r->stopped);
    }
    EXPECT_EQ(rec.inspect_calls, "ZDZ");
    EXPECT_EQ(rec.bodies, (std::vector<std::pair<char, std::string>>{{'Z', "I"}, {'Z', "T"}}));
    EXPECT_TRUE(scanner.at_boundary());
  }
}

TEST(StreamScanner, LargeInspectedBodySplitAcrossChunksIsReassembledUpToTheCap) {
  const std::string body = text_body(1 << 20, 'r');
  const std::string wire = pg_msg('E', body) + pg_msg('E', "short") + pg_msg('E', body.substr(0, 3000));
  for (std::uint32_t seed : kSeeds) {
    StreamScanner scanner(1 << 20);
    Recorder rec;
    rec.inspected = "E";
    std::size_t from = 0;
    auto cuts = random_cuts(seed, wire.size());
    cuts.push_back(wire.size());
    for (std::size_t to : cuts) {
      ASSERT_TRUE(scanner.feed(as_bytes(std::string_view(wire).substr(from, to - from)), rec).has_value());
      from = to;
    }
    ASSERT_EQ(rec.bodies.size(), 3u);
    EXPECT_TRUE(rec.bodies[0].second == body.substr(0, StreamScanner::kMaxInspected));
    EXPECT_EQ(rec.bodies[1].second, "short");
    EXPECT_TRUE(rec.bodies[2].second == body.substr(0, 3000));
  }
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
std::size_t heap_in_use() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;  // small blocks + mmapped blocks
}

// The scanner never buffers a skipped message: 63 MB of a 64 MB DataRow pass through in 64 KB
// chunks and the heap does not grow. (Under AddressSanitizer, which has its own allocator,
// glibc's counters do not move and this check is vacuous; the plain build is the one that counts.)
TEST(StreamScanner, SkippedMessageIsNeverBuffered) {
  constexpr std::uint32_t body_size = 64u << 20;
  const std::string header = pg_msg_with_length('D', body_size + 4);
  const std::string chunk = text_body(64 << 10, 'm');
  StreamScanner scanner(body_size);
  Recorder rec;
  rec.inspected = "ZE";
  rec.bodies.reserve(4);
  ASSERT_TRUE(scanner.feed(as_bytes(header), rec).has_value());
  const std::size_t before = heap_in_use();
  for (std::size_t fed = 0; fed + chunk.size() < body_size; fed += chunk.size()) {
    auto r = scanner.feed(as_bytes(chunk), rec);
    if (!r.has_value() || r->consumed != chunk.size()) FAIL() << "feed failed at " << fed;
  }
  const std::size_t after = heap_in_use();
  EXPECT_LT(after, before + (1u << 20)) << "heap grew by " << (after - before) << " bytes";
  EXPECT_FALSE(scanner.at_boundary());
  EXPECT_EQ(rec.inspect_calls, "D");
  EXPECT_TRUE(rec.bodies.empty());
}
#endif

}  // namespace
}  // namespace sluice::protocol
