// The slow-query log: JSON Lines formatting and the asynchronous, size-rotated
// writer. See slow_log.h.
#include "proxy/slow_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <ctime>
#include <utility>

namespace sluice::proxy {
namespace {

constexpr std::size_t kWriteChunk = 64 * 1024;

std::string errno_text(int error) { return std::strerror(error); }

void append_number(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char buffer[64];
  const int n = std::snprintf(buffer, sizeof buffer, "%.3f", value);
  out.append(buffer, static_cast<std::size_t>(n));
}

void append_key(std::string& out, std::string_view key) {
  out += out.size() > 1 ? ",\"" : "\"";
  out += key;
  out += "\":";
}

void append_string_or_null(std::string& out, std::string_view text) {
  if (text.empty()) {
    out += "null";
  } else {
    append_json_string(out, text);
  }
}


}  // namespace

std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80;  // bounds of the second byte
  unsigned char high = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    length = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    length = 3;
    if (b0 == 0xe0) low = 0xa0;   // no overlong forms
    if (b0 == 0xed) high = 0x9f;  // no surrogates
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    length = 4;
    if (b0 == 0xf0) low = 0x90;
    if (b0 == 0xf4) high = 0x8f;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  }
  return length;
}

// ---- formatting -----------------------------------------------------------------------

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + text.size() + 2);
  out += '"';
  std::size_t i = 0;
  while (i < text.size()) {
    // Copy a run of plain ASCII at once.
    std::size_t run = i;
    while (run < text.size()) {
      const auto ch = static_cast<unsigned char>(text[run]);
      if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') break;
      ++run;
    }
    out.append(text.substr(i, run - i));
    i = run;
    if (i >= text.size()) break;

    const auto ch = static_cast<unsigned char>(text[i]);
    if (ch < 0x80) {
      switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:  // other control characters and DEL
          out += "\\u00";
          out += kHex[ch >> 4];
          out += kHex[ch & 0xf];
      }
      ++i;
      continue;
    }
    const std::size_t length = utf8_sequence_length(text, i);
    if (length == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD for each byte that does not start a valid sequence
      ++i;
    } else if (length == 3 && ch == 0xe2 && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(text[i + 2]) & 0xfe) == 0xa8) {
      out += static_cast<unsigned char>(text[i + 2]) == 0xa8 ? "\\u2028" : "\\u2029";
      i += 3;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  out += '"';
}

std::string format_timestamp(std::chrono::system_clock::time_point ts) {
  using namespace std::chrono;
  const auto micros = floor<microseconds>(ts);
  const auto seconds = floor<std::chrono::seconds>(micros);
  const auto fraction = (micros - seconds).count();
  const std::time_t t = system_clock::to_time_t(time_point_cast<system_clock::duration>(seconds));
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[96];  // ample for any year gmtime_r can produce
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(fraction));
  return buffer;
}

std::string format_slow_query(const SlowQueryRecord& r, std::size_t max_query_bytes) {
  std::string out;
  out.reserve(320 + std::min(r.query.size(), max_query_bytes));
  out += '{';
  append_key(out, "ts");
  out += '"';
  out += format_timestamp(r.ts);
  out += '"';
  append_key(out, "duration_ms");
  append_number(out, r.duration_ms);
  append_key(out, "server_ms");
  append_number(out, r.server_ms);
  append_key(out, "wait_ms");
  append_number(out, r.wait_ms);
  append_key(out, "database");
  append_json_string(out, r.database);
  append_key(out, "user");
  append_json_string(out, r.user);
  append_key(out, "application_name");
  append_json_string(out, r.application_name);
  append_key(out, "client");
  append_json_string(out, r.client);
  append_key(out, "backend");
  append_string_or_null(out, r.backend);
  append_key(out, "backend_pid");
  out += r.backend_pid != 0 ? std::to_string(r.backend_pid) : "null";
  append_key(out, "protocol");
  append_json_string(out, r.protocol);
  append_key(out, "fingerprint");
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (int shift = 60; shift >= 0; shift -= 4) out += kHex[(r.fingerprint >> shift) & 0xf];
  out += '"';
  append_key(out, "query");
  if (r.query.size() <= max_query_bytes) {
    append_json_string(out, r.query);
  } else {
    std::size_t cut = max_query_bytes;
    // Back up to a character boundary (at most 3 continuation bytes).
    for (int k = 0; k < 3 && cut > 0 && (static_cast<unsigned char>(r.query[cut]) & 0xc0) == 0x80; ++k) --cut;
    std::string truncated = r.query.substr(0, cut);
    truncated += " ...[truncated, " + std::to_string(r.query.size()) + " bytes]";
    append_json_string(out, truncated);
  }
  append_key(out, "command");
  append_string_or_null(out, r.command);
  append_key(out, "rows");
  out += r.rows ? std::to_string(*r.rows) : "null";
  append_key(out, "sqlstate");
  append_string_or_null(out, r.sqlstate);
  out += "}\n";
  return out;
}

// ---- the writer ----------------------------------------------------------------------------

namespace {

int open_log(const std::string& path, bool truncate) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | (truncate ? O_TRUNC : 0), 0640);
}

}  // namespace

SlowLog::OpenResult SlowLog::open(SlowLogOptions options) {
  OpenResult result;
  if (options.path.empty()) {
    result.error = "slow-query log path is empty";
    return result;
  }
  const int fd = open_log(options.path, false);
  if (fd < 0) {
    result.error = "cannot open slow-query log \"" + options.path + "\": " + errno_text(errno);
    return result;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    result.error = "cannot open slow-query log \"" + options.path + "\": " + errno_text(error);
    return result;
  }
  auto* log = new SlowLog(std::move(options), fd, static_cast<std::uint64_t>(st.st_size));
  log->regular_file_ = S_ISREG(st.st_mode);
  result.log.reset(log);
  return result;
}

SlowLog::SlowLog(SlowLogOptions options, int fd, std::uint64_t size)
    : options_(std::move(options)), fd_(fd), size_(size) {
  writer_ = std::thread([this] { run(); });
}

SlowLog::~SlowLog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

bool SlowLog::submit(SlowQueryRecord record) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= options_.queue_capacity) {
      ++stats_.dropped;
      return false;
    }
    queue_.push_back(std::move(record));
    ++submitted_;
    // The writer picks records up every flush_interval by itself; waking it for
    // each record would cost a futex wake per slow statement. Only a half-full
    // queue (a burst that could overflow it) is worth waking it early.
    wake = queue_.size() == std::max<std::size_t>(options_.queue_capacity / 2, 1);
  }
  if (wake) wake_.notify_one();
  return true;
}

void SlowLog::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = submitted_;
  ++flush_waiters_;
  wake_.notify_one();
  drained_.wait(lock, [&] { return handled_ >= target; });
  --flush_waiters_;
}

SlowLog::Stats SlowLog::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void SlowLog::run() {
  std::vector<SlowQueryRecord> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      // Wakes every flush_interval even when idle, which also reports errors held
      // back by the rate limit when nothing more comes.
      const std::size_t half_full = std::max<std::size_t>(options_.queue_capacity / 2, 1);
      const auto ready = [&] {
        return stopping_ || (flush_waiters_ > 0 && handled_ < submitted_) || queue_.size() >= half_full;
      };
      wake_.wait_for(lock, options_.flush_interval, ready);
      if (queue_.empty() && stopping_) break;
      batch.swap(queue_);
    }
    const std::uint64_t count = batch.size();
    if (count > 0) write_batch(batch);  // woken only to report held-back errors otherwise
    batch.clear();
    {
      std::lock_guard lock(mutex_);
      handled_ += count;
    }
    drained_.notify_all();
    report_errors(false);
  }
  report_errors(true);
}

void SlowLog::write_batch(std::vector<SlowQueryRecord>& batch) {
  std::uint64_t written = 0;
  std::uint64_t lost = 0;
  std::uint64_t rotations = 0;

  if (fd_ < 0) {  // a failed rotation left no file open: try again
    fd_ = open_log(options_.path, false);
    if (fd_ < 0) {
      failed(batch.size(), "cannot open: " + errno_text(errno));
      std::lock_guard lock(mutex_);
      stats_.write_errors += batch.size();
      return;
    }
    struct stat st {};
    size_ = ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }

  std::string buffer;
  std::uint64_t buffered = 0;  // records in buffer
  const auto flush_buffer = [&] {
    if (buffer.empty()) return;
    if (fd_ >= 0 && write_all(buffer)) {
      written += buffered;
    } else {
      lost += buffered;
      failed(buffered, fd_ < 0 ? "no open file" : "write failed: " + errno_text(last_errno_));
    }
    buffer.clear();
    buffered = 0;
  };

  for (const SlowQueryRecord& record : batch) {
    const std::string line = format_slow_query(record, options_.max_query_bytes);
    const bool over = options_.max_size > 0 && regular_file_ && fd_ >= 0 &&
                      size_ + buffer.size() + line.size() > options_.max_size && size_ + buffer.size() > 0;
    if (over) {
      flush_buffer();
      if (rotate()) ++rotations;
    }
    buffer += line;
    ++buffered;
    if (buffer.size() >= kWriteChunk) flush_buffer();
  }
  flush_buffer();

  std::lock_guard lock(mutex_);
  stats_.written += written;
  stats_.write_errors += lost;
  stats_.rotations += rotations;
}

bool SlowLog::write_all(std::string_view data) {
  std::string joined;
  if (line_open_) {  // end the line a failed write left cut short, so the rest stays parseable
    joined.reserve(data.size() + 1);
    joined += '\n';
    joined += data;
    data = joined;
  }
  while (!data.empty()) {
    const ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      last_errno_ = errno;
      return false;
    }
    if (n == 0) {
      last_errno_ = EIO;
      return false;
    }
    size_ += static_cast<std::uint64_t>(n);
    line_open_ = data[static_cast<std::size_t>(n) - 1] != '\n';
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool SlowLog::rotate() {
  const std::string& path = options_.path;
  bool ok = true;
  if (options_.keep > 0) {
    for (int i = options_.keep; i >= 1; --i) {
      const std::string from = i == 1 ? path : path + "." + std::to_string(i - 1);
      const std::string to = path + "." + std::to_string(i);
      if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
        failed(0, "cannot rotate \"" + from + "\" to \"" + to + "\": " + errno_text(errno));
        ok = false;
        if (i == 1) {  // the live file stays: keep appending to it rather than lose records
          return false;
        }
      }
    }
  }
  ::close(fd_);
  fd_ = open_log(path, options_.keep == 0);
  if (fd_ < 0) {
    failed(0, "cannot reopen after rotation: " + errno_text(errno));
    return false;
  }
  size_ = 0;
  line_open_ = false;
  return ok;
}

void SlowLog::failed(std::uint64_t records, const std::string& what) {
  ++unreported_failures_;
  unreported_lost_ += records;
  last_error_ = what;
}

void SlowLog::report_errors(bool force) {
  if (unreported_failures_ == 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && last_report_ && now - *last_report_ < options_.error_interval) return;
  if (options_.on_error) {
    std::string message = "slow-query log \"" + options_.path + "\": " + last_error_;
    if (unreported_lost_ > 0) message += " (" + std::to_string(unreported_lost_) + " records lost)";
    options_.on_error(message);
  }
  last_report_ = now;
  unreported_failures_ = 0;
  unreported_lost_ = 0;
}

}  // namespace sluice::proxy
