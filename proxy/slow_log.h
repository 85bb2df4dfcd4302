#pragma once
// The slow-query log: one JSON object per line (JSON Lines) per statement at or
// over the slow_query threshold, with the fields of PRODUCT.md:
//
//   {"ts":"2026-11-25T08:40:01.123456Z","duration_ms":812.400,"server_ms":800.100,"wait_ms":12.300,
//    "database":"app","user":"app","application_name":"api","client":"10.0.0.5:53122",
//    "backend":"127.0.0.1:5432","backend_pid":12345,"protocol":"extended",
//    "fingerprint":"4851b0e100123b55","query":"SELECT ... $1","command":"SELECT","rows":120,"sqlstate":null}
//
// Times are in milliseconds with three decimals (µs resolution). null stands for
// "not known": backend and backend_pid when no server connection was attached,
// command and rows without a CommandComplete, sqlstate when there was no error.
// Strings are escaped per RFC 8259 (control characters as \n, \t, ... or \u00XX,
// U+2028/U+2029 as \u2028/\u2029 for JavaScript consumers); invalid UTF-8 is
// replaced by U+FFFD, so every line is valid UTF-8 JSON.
// A query longer than max_query_bytes is cut at a character boundary at or below
// the cap and followed by the marker " ...[truncated, N bytes]" (N = full length).
//
// SlowLog writes from its own thread: submit() only moves the record into a
// bounded queue (a short mutex-protected push, never a wait for I/O, normally
// no system call); the writer takes the queue every flush_interval (100 ms), or
// at once when it is half full. When the queue is full the record is dropped
// and counted. The file is rotated by size:
// before a line would take it past max_size it becomes PATH.1 (PATH.1 -> PATH.2,
// ..., PATH.keep is removed); keep = 0 keeps no old file. A write error (disk
// full, ...) loses the batch being written, is counted, and is reported through
// on_error at most once per error_interval (the first at once), never reaching
// the caller of submit().
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sluice::proxy {

struct SlowQueryRecord {
  std::chrono::system_clock::time_point ts;  // when the statement finished
  double duration_ms = 0;
  double server_ms = 0;
  double wait_ms = 0;
  std::string database;
  std::string user;
  std::string application_name;
  std::string client;   // "10.0.0.5:53122"
  std::string backend;  // "127.0.0.1:5432"; empty -> null
  std::int32_t backend_pid = 0;  // 0 -> null
  std::string protocol;  // "simple" | "extended"
  std::uint64_t fingerprint = 0;
  std::string query;     // normalized unless log_parameters
  std::string command;   // from CommandComplete; empty -> null
  std::optional<std::int64_t> rows;
  std::string sqlstate;  // empty -> null
};

// Length of the valid UTF-8 sequence at text[i] (1 for ASCII; no overlong forms,
// no surrogates, at most U+10FFFF), or 0 when there is none.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i);

// Appends `text` as a JSON string (with the quotes) to `out`.
void append_json_string(std::string& out, std::string_view text);
// RFC 3339 in UTC with microseconds: "2026-11-25T08:40:01.123456Z".
std::string format_timestamp(std::chrono::system_clock::time_point ts);
// One line of the log, ending in '\n'.
std::string format_slow_query(const SlowQueryRecord& record, std::size_t max_query_bytes);

struct SlowLogOptions {
  std::string path;                          // must be set
  std::uint64_t max_size = 100ull << 20;     // rotate before the file would exceed it; 0 = never
  int keep = 5;                              // rotated files kept: PATH.1 (newest) .. PATH.keep
  std::size_t max_query_bytes = 16 * 1024;   // longer queries are truncated with a marker
  std::size_t queue_capacity = 10000;        // records waiting to be written; more are dropped
  // The writer takes what is queued at least this often (sooner when the queue is
  // half full), so a record reaches the file within about this long.
  std::chrono::milliseconds flush_interval{100};
  std::chrono::milliseconds error_interval{60'000};  // at most one on_error call per interval
  // Called on the writer thread with a one-line description of a write failure.
  std::function<void(const std::string& message)> on_error = nullptr;
};

class SlowLog {
 public:
  struct Stats {
    std::uint64_t written = 0;       // records written
    std::uint64_t dropped = 0;       // records refused because the queue was full
    std::uint64_t write_errors = 0;  // records lost to write or rotation failures
    std::uint64_t rotations = 0;
  };

  struct OpenResult {
    std::unique_ptr<SlowLog> log;  // null on error
    std::string error;             // e.g. "cannot open slow-query log \"/x/y\": Permission denied"
  };
  // Opens (creating if needed, appending otherwise) and starts the writer thread.
  static OpenResult open(SlowLogOptions options);

  // Stops the writer after it has written everything already submitted.
  ~SlowLog();
  SlowLog(const SlowLog&) = delete;
  SlowLog& operator=(const SlowLog&) = delete;

  // Queues the record; false (and counted as dropped) when the queue is full or
  // the log is shutting down. Never waits for I/O. Thread-safe.
  bool submit(SlowQueryRecord record);
  // Waits until everything submitted before the call has been handled (written or
  // counted as an error). For tests and orderly shutdown; not for the relay path.
  void flush();

  Stats stats() const;
  const std::string& path() const { return options_.path; }

 private:
  SlowLog(SlowLogOptions options, int fd, std::uint64_t size);
  void run();
  void write_batch(std::vector<SlowQueryRecord>& batch);
  bool write_all(std::string_view data);  // false on error (errno kept in last_errno_)
  bool rotate();
  void failed(std::uint64_t records, const std::string& what);
  void report_errors(bool force);

  SlowLogOptions options_;
  // Writer-thread state.
  int fd_ = -1;
  std::uint64_t size_ = 0;
  bool regular_file_ = true;
  bool line_open_ = false;  // a partial write left an unterminated line
  int last_errno_ = 0;
  std::uint64_t unreported_failures_ = 0;  // failures not yet passed to on_error
  std::uint64_t unreported_lost_ = 0;      // records they lost
  std::string last_error_;
  std::optional<std::chrono::steady_clock::time_point> last_report_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;       // writer: records or stop
  std::condition_variable drained_;    // flush(): a batch is done
  std::vector<SlowQueryRecord> queue_;
  std::uint64_t submitted_ = 0;  // sequence numbers, for flush()
  std::uint64_t handled_ = 0;
  int flush_waiters_ = 0;
  bool stopping_ = false;
  Stats stats_;
  std::thread writer_;
};

}  // namespace sluice::proxy
