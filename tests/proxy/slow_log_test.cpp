// Tests for proxy/slow_log: JSON formatting and escaping, truncation, and the
// asynchronous writer (rotation, open errors, write errors, a full queue).
#include "proxy/slow_log.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sluice::proxy {
namespace {

using namespace std::chrono_literals;

std::string json(std::string_view text) {
  std::string out;
  append_json_string(out, text);
  return out;
}

std::chrono::system_clock::time_point example_time() {
  using namespace std::chrono;
  return sys_days{year{2026} / 11 / 25} + 8h + 40min + 1s + 123456us;
}

SlowQueryRecord example_record() {
  SlowQueryRecord r;
  r.ts = example_time();
  r.duration_ms = 812.4;
  r.server_ms = 800.1;
  r.wait_ms = 12.3;
  r.database = "app";
  r.user = "app";
  r.application_name = "api";
  r.client = "10.0.0.5:53122";
  r.backend = "127.0.0.1:5432";
  r.backend_pid = 12345;
  r.protocol = "extended";
  r.fingerprint = 0x4851b0e100123b55ull;
  r.query = "SELECT * FROM orders WHERE user_id = $1";
  r.command = "SELECT";
  r.rows = 120;
  return r;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

// A fresh directory under the test temp dir, removed (with its files) at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "sluice_slow_log_XXXXXX";
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    for (const char* name : {"slow.jsonl", "slow.jsonl.1", "slow.jsonl.2", "slow.jsonl.3", "slow.jsonl.4"}) {
      std::remove((path_ + "/" + name).c_str());
    }
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name = "slow.jsonl") const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- formatting ---------------------------------------------------------------------------

TEST(SlowLogFormatTest, ProductExampleLine) {
  EXPECT_EQ(format_slow_query(example_record(), 16384),
            "{\"ts\":\"2026-11-25T08:40:01.123456Z\",\"duration_ms\":812.400,\"server_ms\":800.100,"
            "\"wait_ms\":12.300,\"database\":\"app\",\"user\":\"app\",\"application_name\":\"api\","
            "\"client\":\"10.0.0.5:53122\",\"backend\":\"127.0.0.1:5432\",\"backend_pid\":12345,"
            "\"protocol\":\"extended\",\"fingerprint\":\"4851b0e100123b55\","
            "\"query\":\"SELECT * FROM orders WHERE user_id = $1\",\"command\":\"SELECT\",\"rows\":120,"
            "\"sqlstate\":null}\n");
}

TEST(SlowLogFormatTest, UnknownValuesAreNull) {
  SlowQueryRecord r = example_record();
  r.backend.clear();
  r.backend_pid = 0;
  r.command.clear();
  r.rows.reset();
  r.sqlstate = "57014";
  r.fingerprint = 0xab;
  r.duration_ms = 1.0 / 0.0;
  const std::string line = format_slow_query(r, 16384);
  EXPECT_NE(line.find("\"duration_ms\":null,"), std::string::npos) << line;
  EXPECT_NE(line.find("\"backend\":null,\"backend_pid\":null,"), std::string::npos) << line;
  EXPECT_NE(line.find("\"fingerprint\":\"00000000000000ab\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"command\":null,\"rows\":null,\"sqlstate\":\"57014\"}"), std::string::npos) << line;
}

TEST(SlowLogFormatTest, Timestamps) {
  EXPECT_EQ(format_timestamp(example_time()), "2026-11-25T08:40:01.123456Z");
  EXPECT_EQ(format_timestamp(std::chrono::system_clock::time_point{}), "1970-01-01T00:00:00.000000Z");
  using namespace std::chrono;
  EXPECT_EQ(format_timestamp(sys_days{year{2024} / 2 / 29} + 23h + 59min + 59s + 999999us + 999ns),
            "2024-02-29T23:59:59.999999Z");  // truncated, not rounded into the next day
}

TEST(SlowLogFormatTest, JsonEscaping) {
  EXPECT_EQ(json(""), "\"\"");
  EXPECT_EQ(json("plain text"), "\"plain text\"");
  EXPECT_EQ(json("say \"hi\" \\ o/"), "\"say \\\"hi\\\" \\\\ o/\"");
  EXPECT_EQ(json("a\nb\tc\rd\be\ff"), "\"a\\nb\\tc\\rd\\be\\ff\"");
  EXPECT_EQ(json(std::string_view("\x01\x1f\x7f\0", 4)), "\"\\u0001\\u001f\\u007f\\u0000\"");
  EXPECT_EQ(json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98\"");
  EXPECT_EQ(json("\xe2\x80\xa8|\xe2\x80\xa9"), "\"\\u2028|\\u2029\"");
}

TEST(SlowLogFormatTest, InvalidUtf8IsReplaced) {
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(json("a\x80z"), "\"a" + fffd + "z\"");                  // lone continuation byte
  EXPECT_EQ(json("a\xc3"), "\"a" + fffd + "\"");                    // cut short at the end
  EXPECT_EQ(json("\xc0\x80"), "\"" + fffd + fffd + "\"");           // overlong NUL
  EXPECT_EQ(json("\xe0\x80\xaf"), "\"" + fffd + fffd + fffd + "\"");  // overlong '/'
  EXPECT_EQ(json("\xed\xa0\x80"), "\"" + fffd + fffd + fffd + "\"");  // a surrogate
  EXPECT_EQ(json("\xf4\x90\x80\x80"), "\"" + fffd + fffd + fffd + fffd + "\"");  // above U+10FFFF
  EXPECT_EQ(json("\xff\xfe"), "\"" + fffd + fffd + "\"");
  EXPECT_EQ(json("\xe2\x82x"), "\"" + fffd + fffd + "x\"");
}

TEST(SlowLogFormatTest, LongQueriesAreTruncatedWithAMarker) {
  SlowQueryRecord r = example_record();
  r.query = "SELECT 'abcdefghij'";
  std::string line = format_slow_query(r, 10);
  EXPECT_NE(line.find("\"query\":\"SELECT 'ab ...[truncated, 19 bytes]\""), std::string::npos) << line;
  // Never cut inside a UTF-8 character: "é" is 2 bytes at offsets 9-10.
  r.query = "SELECT 'a\xc3\xa9zzzz'";
  line = format_slow_query(r, 10);
  EXPECT_NE(line.find("\"query\":\"SELECT 'a ...[truncated, 16 bytes]\""), std::string::npos) << line;
  r.query = "0123456789";  // exactly at the cap: untouched
  line = format_slow_query(r, 10);
  EXPECT_NE(line.find("\"query\":\"0123456789\""), std::string::npos) << line;
}

// ---- the writer -----------------------------------------------------------------------------

TEST(SlowLogTest, WritesOneLinePerRecord) {
  TempDir dir;
  auto opened = SlowLog::open({.path = dir.file()});
  ASSERT_TRUE(opened.log) << opened.error;
  SlowLog& log = *opened.log;
  for (int i = 0; i < 100; ++i) {
    SlowQueryRecord r = example_record();
    r.rows = i;
    r.query = "SELECT \"x\"\n-- line " + std::to_string(i);
    EXPECT_TRUE(log.submit(std::move(r)));
  }
  log.flush();
  EXPECT_EQ(log.stats().written, 100u);
  EXPECT_EQ(log.stats().dropped, 0u);
  const auto lines = read_lines(dir.file());
  ASSERT_EQ(lines.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(lines[i].front(), '{');
    EXPECT_EQ(lines[i].back(), '}');
    EXPECT_NE(lines[i].find("\"rows\":" + std::to_string(i) + ","), std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find("SELECT \\\"x\\\"\\n-- line"), std::string::npos) << lines[i];
  }
}

TEST(SlowLogTest, AppendsToAnExistingFile) {
  TempDir dir;
  {
    std::ofstream out(dir.file());
    out << "{\"old\":true}\n";
  }
  {
    auto opened = SlowLog::open({.path = dir.file()});
    ASSERT_TRUE(opened.log) << opened.error;
    opened.log->submit(example_record());
  }  // the destructor writes what was submitted
  const auto lines = read_lines(dir.file());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "{\"old\":true}");
}

TEST(SlowLogTest, RotatesBySizeAndKeepsN) {
  TempDir dir;
  const std::size_t line_size = format_slow_query(example_record(), 16384).size();
  SlowLogOptions options{.path = dir.file(), .max_size = line_size * 3, .keep = 2};
  auto opened = SlowLog::open(options);
  ASSERT_TRUE(opened.log) << opened.error;
  for (int i = 0; i < 10; ++i) {  // 3 + 3 + 3 + 1 lines
    SlowQueryRecord r = example_record();
    r.rows = 100 + i;  // same length for every line
    opened.log->submit(std::move(r));
    if (i % 4 == 0) opened.log->flush();  // rotation works across batches too
  }
  opened.log->flush();
  EXPECT_EQ(opened.log->stats().written, 10u);
  EXPECT_EQ(opened.log->stats().rotations, 3u);
  EXPECT_EQ(read_lines(dir.file()).size(), 1u);
  ASSERT_EQ(read_lines(dir.file("slow.jsonl.1")).size(), 3u);
  ASSERT_EQ(read_lines(dir.file("slow.jsonl.2")).size(), 3u);
  EXPECT_FALSE(exists(dir.file("slow.jsonl.3")));
  // Newest first: .1 holds records 6..8, .2 holds 3..5; 0..2 were rotated away.
  EXPECT_NE(read_lines(dir.file("slow.jsonl.1"))[0].find("\"rows\":106,"), std::string::npos);
  EXPECT_NE(read_lines(dir.file("slow.jsonl.2"))[0].find("\"rows\":103,"), std::string::npos);
  EXPECT_LE(file_size(dir.file("slow.jsonl.1")), line_size * 3);
}

TEST(SlowLogTest, KeepZeroTruncates) {
  TempDir dir;
  const std::size_t line_size = format_slow_query(example_record(), 16384).size();
  auto opened = SlowLog::open({.path = dir.file(), .max_size = line_size * 2, .keep = 0});
  ASSERT_TRUE(opened.log) << opened.error;
  for (int i = 0; i < 5; ++i) opened.log->submit(example_record());
  opened.log->flush();
  EXPECT_EQ(read_lines(dir.file()).size(), 1u);
  EXPECT_FALSE(exists(dir.file("slow.jsonl.1")));
  EXPECT_EQ(opened.log->stats().rotations, 2u);
}

TEST(SlowLogTest, UnwritablePathIsAnErrorAtOpen) {
  TempDir dir;
  auto missing = SlowLog::open({.path = dir.file("no-such-dir/slow.jsonl")});
  EXPECT_FALSE(missing.log);
  EXPECT_NE(missing.error.find(dir.file("no-such-dir/slow.jsonl")), std::string::npos) << missing.error;
  EXPECT_NE(missing.error.find(std::strerror(ENOENT)), std::string::npos) << missing.error;

  auto directory = SlowLog::open({.path = dir.path()});
  EXPECT_FALSE(directory.log);
  EXPECT_NE(directory.error.find(std::strerror(EISDIR)), std::string::npos) << directory.error;

  EXPECT_FALSE(SlowLog::open({.path = ""}).log);
}

// /dev/full fails every write with ENOSPC: the records are counted, the error is
// reported once per interval, and submit() never notices.
TEST(SlowLogTest, DiskFullIsCountedAndReportedOncePerInterval) {
  if (!exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  std::mutex mutex;
  std::vector<std::string> reports;
  {
    auto opened = SlowLog::open({.path = "/dev/full",
                                 .error_interval = 60s,
                                 .on_error = [&](const std::string& message) {
                                   std::lock_guard lock(mutex);
                                   reports.push_back(message);
                                 }});
    ASSERT_TRUE(opened.log) << opened.error;
    EXPECT_TRUE(opened.log->submit(example_record()));
    opened.log->flush();
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(opened.log->submit(example_record()));
      opened.log->flush();
    }
    EXPECT_EQ(opened.log->stats().write_errors, 6u);
    EXPECT_EQ(opened.log->stats().written, 0u);
    std::lock_guard lock(mutex);
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_NE(reports[0].find("/dev/full"), std::string::npos) << reports[0];
    EXPECT_NE(reports[0].find(std::strerror(ENOSPC)), std::string::npos) << reports[0];
    EXPECT_NE(reports[0].find("(1 records lost)"), std::string::npos) << reports[0];
  }
  // The rest is reported when the log closes.
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_NE(reports[1].find("(5 records lost)"), std::string::npos) << reports[1];
}

TEST(SlowLogTest, HeldBackErrorsAreReportedAfterTheIntervalWithoutNewRecords) {
  if (!exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  std::atomic<int> reports{0};
  auto opened = SlowLog::open(
      {.path = "/dev/full", .error_interval = 100ms, .on_error = [&](const std::string&) { ++reports; }});
  ASSERT_TRUE(opened.log) << opened.error;
  opened.log->submit(example_record());
  opened.log->flush();
  opened.log->submit(example_record());
  opened.log->flush();
  EXPECT_EQ(reports.load(), 1);
  for (int i = 0; i < 100 && reports.load() < 2; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(reports.load(), 2);
}

// While the writer is stuck (here: inside on_error), submit() drops and counts
// instead of waiting.
TEST(SlowLogTest, FullQueueDropsInsteadOfBlocking) {
  if (!exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> first{true};
  auto opened = SlowLog::open({.path = "/dev/full",
                               .queue_capacity = 3,
                               .on_error = [&](const std::string&) {
                                 if (first.exchange(false)) {
                                   entered.set_value();
                                   released.wait();
                                 }
                               }});
  ASSERT_TRUE(opened.log) << opened.error;
  SlowLog& log = *opened.log;
  EXPECT_TRUE(log.submit(example_record()));
  entered.get_future().wait();  // the writer is now blocked in on_error
  int accepted = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) accepted += log.submit(example_record()) ? 1 : 0;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(log.stats().dropped, 7u);
  release.set_value();
  log.flush();
  EXPECT_EQ(log.stats().write_errors, 4u);
}

TEST(SlowLogTest, ManyThreadsSubmit) {
  TempDir dir;
  auto opened = SlowLog::open({.path = dir.file(), .queue_capacity = 1'000'000});
  ASSERT_TRUE(opened.log) << opened.error;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2500; ++i) opened.log->submit(example_record());
    });
  }
  for (auto& thread : threads) thread.join();
  opened.log->flush();
  EXPECT_EQ(opened.log->stats().written, 10000u);
  EXPECT_EQ(read_lines(dir.file()).size(), 10000u);
}

// Prints the cost of submit() and of formatting one record; asserts nothing.
TEST(SlowLogTest, MeasureCost) {
  TempDir dir;
  auto opened = SlowLog::open({.path = dir.file()});
  ASSERT_TRUE(opened.log) << opened.error;
  using Clock = std::chrono::steady_clock;
  constexpr int kRounds = 200;
  constexpr int kPerRound = 100;  // bursts of 100, as the queue is used in steady state
  Clock::duration submitting{};
  const auto start = Clock::now();
  for (int round = 0; round < kRounds; ++round) {
    std::vector<SlowQueryRecord> records(kPerRound, example_record());
    const auto before = Clock::now();
    for (auto& r : records) opened.log->submit(std::move(r));
    submitting += Clock::now() - before;
    opened.log->flush();
  }
  const double total_us =
      std::chrono::duration<double, std::micro>(Clock::now() - start).count() / (kRounds * kPerRound);
  const double submit_ns = std::chrono::duration<double, std::nano>(submitting).count() / (kRounds * kPerRound);
  EXPECT_EQ(opened.log->stats().written, static_cast<std::uint64_t>(kRounds * kPerRound));

  const auto format_start = Clock::now();
  std::size_t bytes = 0;
  const SlowQueryRecord r = example_record();
  for (int i = 0; i < kRounds * kPerRound; ++i) bytes += format_slow_query(r, 16384).size();
  const double format_ns =
      std::chrono::duration<double, std::nano>(Clock::now() - format_start).count() / (kRounds * kPerRound);
  EXPECT_GT(bytes, 0u);
  std::printf("[ timing   ] slow log: submit %.0f ns/record (caller side), format %.0f ns/record, "
              "whole path incl. write(2) %.2f us/record\n",
              submit_ns, format_ns, total_us);
}

}  // namespace
}  // namespace sluice::proxy
