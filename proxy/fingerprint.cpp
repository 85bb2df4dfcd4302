// Query shapes: libpg_query's fingerprint and normalization behind a per-thread
// cache, with a token-scan fallback for long or unparsable texts. See fingerprint.h.
#include "proxy/fingerprint.h"

#include <pg_query.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sluice::proxy {
namespace {

// ---- a small SQL lexer --------------------------------------------------------------
// Follows PostgreSQL's lexical rules closely enough to tell literals, parameters,
// comments and quoted identifiers apart; it never fails (unterminated strings and
// comments run to the end of the text).

enum class TokenKind : std::uint8_t { end, word, quoted_ident, literal, number, param, op, punct };

struct Token {
  TokenKind kind = TokenKind::end;
  std::size_t begin = 0;
  std::size_t end = 0;
  bool gap_before = false;  // whitespace or a comment precedes it
  int param_number = 0;     // for TokenKind::param (saturates)
};

bool is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }
bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
bool is_ident_start(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || static_cast<unsigned char>(ch) >= 0x80;
}
bool is_ident_char(char ch) { return is_ident_start(ch) || is_digit(ch) || ch == '$'; }
bool is_op_char(char ch) {
  switch (ch) {
    case '+': case '-': case '*': case '/': case '<': case '>': case '=': case '~': case '!':
    case '@': case '#': case '%': case '^': case '&': case '|': case '`': case '?':
      return true;
    default:
      return false;
  }
}
char lower(char ch) { return (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch; }

class Lexer {
 public:
  explicit Lexer(std::string_view text) : s_(text) {}

  Token next() {
    Token t;
    t.gap_before = skip_gap();
    t.begin = pos_;
    if (pos_ >= s_.size()) {
      t.end = pos_;
      return t;
    }
    const char ch = s_[pos_];
    const char next = peek(1);
    if (ch == '\'') {
      t.kind = TokenKind::literal;
      quoted_string(false);
    } else if ((ch == 'e' || ch == 'E') && next == '\'') {
      t.kind = TokenKind::literal;
      ++pos_;
      quoted_string(true);
    } else if ((ch == 'b' || ch == 'B' || ch == 'x' || ch == 'X' || ch == 'n' || ch == 'N') && next == '\'') {
      t.kind = TokenKind::literal;
      ++pos_;
      quoted_string(false);
    } else if ((ch == 'u' || ch == 'U') && next == '&' && (peek(2) == '\'' || peek(2) == '"')) {
      t.kind = peek(2) == '\'' ? TokenKind::literal : TokenKind::quoted_ident;
      pos_ += 2;
      quoted(s_[pos_], false);
    } else if (ch == '"') {
      t.kind = TokenKind::quoted_ident;
      quoted('"', false);
    } else if (is_ident_start(ch)) {
      t.kind = TokenKind::word;
      while (pos_ < s_.size() && is_ident_char(s_[pos_])) ++pos_;
    } else if (is_digit(ch) || (ch == '.' && is_digit(next))) {
      t.kind = TokenKind::number;
      number();
    } else if (ch == '$' && is_digit(next)) {
      t.kind = TokenKind::param;
      ++pos_;
      long long n = 0;
      while (pos_ < s_.size() && is_digit(s_[pos_])) {
        n = std::min<long long>(n * 10 + (s_[pos_] - '0'), std::numeric_limits<int>::max());
        ++pos_;
      }
      t.param_number = static_cast<int>(n);
    } else if (ch == '$' && dollar_quoted()) {
      t.kind = TokenKind::literal;
    } else if (is_op_char(ch)) {
      t.kind = TokenKind::op;
      while (pos_ < s_.size() && is_op_char(s_[pos_])) {
        if (pos_ > t.begin && starts_comment(pos_)) break;
        ++pos_;
      }
    } else {
      t.kind = TokenKind::punct;
      pos_ += (ch == ':' && next == ':') ? 2 : 1;
    }
    t.end = pos_;
    return t;
  }

 private:
  char peek(std::size_t ahead) const { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }
  bool starts_comment(std::size_t at) const {
    if (at + 1 >= s_.size()) return false;
    return (s_[at] == '-' && s_[at + 1] == '-') || (s_[at] == '/' && s_[at + 1] == '*');
  }

  // Skips whitespace and comments; true when there were any.
  bool skip_gap() {
    const std::size_t start = pos_;
    while (pos_ < s_.size()) {
      if (is_space(s_[pos_])) {
        ++pos_;
      } else if (s_[pos_] == '-' && peek(1) == '-') {
        const auto eol = s_.find('\n', pos_);
        pos_ = eol == std::string_view::npos ? s_.size() : eol + 1;
      } else if (s_[pos_] == '/' && peek(1) == '*') {
        pos_ += 2;
        int depth = 1;  // PostgreSQL's block comments nest
        while (pos_ < s_.size() && depth > 0) {
          if (s_[pos_] == '/' && peek(1) == '*') {
            ++depth;
            pos_ += 2;
          } else if (s_[pos_] == '*' && peek(1) == '/') {
            --depth;
            pos_ += 2;
          } else {
            ++pos_;
          }
        }
      } else {
        break;
      }
    }
    return pos_ > start;
  }

  // At an opening quote: skips to just past the closing one (a doubled quote is
  // part of the text; with `backslashes`, so is any escaped character).
  void quoted(char quote, bool backslashes) {
    ++pos_;
    while (pos_ < s_.size()) {
      const char ch = s_[pos_];
      if (backslashes && ch == '\\') {
        pos_ += 2;
      } else if (ch == quote) {
        if (peek(1) == quote) {
          pos_ += 2;
        } else {
          ++pos_;
          return;
        }
      } else {
        ++pos_;
      }
    }
    pos_ = s_.size();
  }
  void quoted_string(bool backslashes) { quoted('\'', backslashes); }

  void number() {
    // Digits, one fraction, an exponent, 0x/0o/0b prefixes and _ separators
    // (PostgreSQL 16): consume the whole run so "1e10" and "0xFF" are one token.
    while (pos_ < s_.size()) {
      const char ch = s_[pos_];
      if (is_digit(ch) || ch == '_' || ch == '.' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) {
        if ((ch == 'e' || ch == 'E') && (peek(1) == '+' || peek(1) == '-') && is_digit(peek(2))) ++pos_;
        if (ch == '.' && peek(1) == '.') break;
        ++pos_;
      } else {
        break;
      }
    }
  }

  // At '$': a $tag$...$tag$ string. False (and nothing consumed) when this is not one.
  bool dollar_quoted() {
    std::size_t i = pos_ + 1;
    if (i < s_.size() && s_[i] != '$') {
      if (!is_ident_start(s_[i])) return false;
      while (i < s_.size() && is_ident_char(s_[i]) && s_[i] != '$') ++i;
      if (i >= s_.size() || s_[i] != '$') return false;
    }
    if (i >= s_.size()) return false;
    const std::string_view tag = s_.substr(pos_, i - pos_ + 1);
    const auto close = s_.find(tag, i + 1);
    pos_ = close == std::string_view::npos ? s_.size() : close + tag.size();
    return true;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

// ---- shapes from tokens -----------------------------------------------------------------

class Fnv64 {
 public:
  void byte(std::uint8_t b) {
    h_ ^= b;
    h_ *= 0x100000001b3ull;
  }
  void bytes(std::string_view s) {
    for (char ch : s) byte(static_cast<std::uint8_t>(ch));
  }
  std::uint64_t finish() const {  // splitmix64 finalizer for a better spread
    std::uint64_t z = h_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

enum class Mode {
  raw,              // the client's text: literals become new placeholders
  after_normalize,  // pg_query_normalize's output: params above the client's own are new
};

struct ScanResult {
  std::uint64_t hash = 0;
  std::string normalized;
};

int max_param(std::string_view text) {
  Lexer lexer(text);
  int highest = 0;
  for (Token t = lexer.next(); t.kind != TokenKind::end; t = lexer.next()) {
    if (t.kind == TokenKind::param) highest = std::max(highest, t.param_number);
  }
  return highest;
}

// Rewrites `text` into the normalized form of fingerprint.h and, for Mode::raw,
// hashes its token stream. `client_params` is the highest $n the client wrote.
ScanResult scan(std::string_view text, Mode mode, int client_params) {
  ScanResult out;
  out.normalized.reserve(text.size());
  Fnv64 hash;
  long long next_number = static_cast<long long>(client_params) + 1;

  const auto is_punct = [&](const Token& tok, char ch) {
    return tok.kind == TokenKind::punct && tok.end - tok.begin == 1 && text[tok.begin] == ch;
  };
  const auto is_minus = [&](const Token& tok) {
    return tok.kind == TokenKind::op && tok.end - tok.begin == 1 && text[tok.begin] == '-';
  };
  const auto is_literal = [&](const Token& tok) {
    return tok.kind == TokenKind::literal || (tok.kind == TokenKind::number && mode == Mode::raw);
  };
  // A placeholder that this normalization introduces (rather than one the client wrote).
  const auto is_new = [&](const Token& tok) {
    return is_literal(tok) ||
           (mode == Mode::after_normalize && tok.kind == TokenKind::param && tok.param_number > client_params);
  };
  const auto is_placeholder = [&](const Token& tok) { return is_literal(tok) || tok.kind == TokenKind::param; };
  // Reads one token; in raw text a unary minus and the number after it are one literal.
  const auto read = [&](Lexer& lexer, bool value_before) {
    Token tok = lexer.next();
    if (mode == Mode::raw && !value_before && is_minus(tok)) {
      Lexer ahead = lexer;
      const Token number = ahead.next();
      if (number.kind == TokenKind::number) {
        lexer = ahead;
        tok.kind = TokenKind::number;
        tok.end = number.end;
      }
    }
    return tok;
  };
  const auto separate = [&](const Token& tok) {
    if (tok.gap_before && !out.normalized.empty()) out.normalized += ' ';
  };
  const auto emit_placeholder = [&]() {
    out.normalized += '$';
    out.normalized += std::to_string(next_number++);
  };

  Lexer lexer(text);
  bool value_before = false;  // the previous token ends an operand (so '-' is binary)
  int unhashed = 0;           // tokens of a list already hashed as one
  Token t = read(lexer, value_before);
  while (t.kind != TokenKind::end) {
    // IN ( placeholder [, placeholder]* ): one list, whatever its length.
    if (unhashed == 0 && t.kind == TokenKind::word && t.end - t.begin == 2 && lower(text[t.begin]) == 'i' &&
        lower(text[t.begin + 1]) == 'n') {
      Lexer ahead = lexer;
      const Token open = ahead.next();
      if (is_punct(open, '(')) {
        bool all_new = true;
        bool closed = false;
        int tokens = 2;  // IN and (
        const Token first = read(ahead, false);
        for (Token item = first; is_placeholder(item);) {
          all_new = all_new && is_new(item);
          const Token after = ahead.next();
          tokens += 2;
          if (is_punct(after, ')')) {
            closed = true;
            break;
          }
          if (!is_punct(after, ',')) break;
          item = read(ahead, false);
        }
        if (closed) {
          hash.byte(static_cast<std::uint8_t>(TokenKind::word));
          hash.bytes("in");
          hash.byte(0xfe);  // a list of placeholders
          if (all_new) {
            separate(t);
            out.normalized.append(text.substr(t.begin, 2));
            separate(open);
            out.normalized += '(';
            separate(first);
            emit_placeholder();
            out.normalized += " /*, ... */)";
            lexer = ahead;
            value_before = true;
            t = read(lexer, value_before);
            continue;
          }
          unhashed = tokens;  // some are the client's own parameters: show them as written
        }
      }
    }

    separate(t);
    const std::string_view piece = text.substr(t.begin, t.end - t.begin);
    if (is_new(t)) {
      emit_placeholder();
    } else {
      out.normalized.append(piece);
    }
    if (unhashed > 0) {
      --unhashed;
    } else if (is_placeholder(t)) {
      // Literals and parameters hash alike, so `a = 1` and `a = $1` match.
      hash.byte(static_cast<std::uint8_t>(TokenKind::literal));
      hash.byte(0xff);
    } else {
      hash.byte(static_cast<std::uint8_t>(t.kind));
      if (t.kind == TokenKind::word) {
        for (char ch : piece) hash.byte(static_cast<std::uint8_t>(lower(ch)));
      } else {
        hash.bytes(piece);
      }
      hash.byte(0xff);
    }
    value_before = t.kind == TokenKind::word || t.kind == TokenKind::quoted_ident || is_placeholder(t) ||
                   t.kind == TokenKind::number || is_punct(t, ')') || is_punct(t, ']');
    t = read(lexer, value_before);
  }
  out.hash = hash.finish();
  return out;
}

// ---- libpg_query --------------------------------------------------------------------------

// The parser's shape, or nullopt when it rejects the text. `text` must be NUL-terminated.
bool parser_shape(const std::string& text, QueryShape& shape) {
  PgQueryFingerprintResult fp = pg_query_fingerprint(text.c_str());
  const bool ok = fp.error == nullptr;
  const std::uint64_t fingerprint = fp.fingerprint;
  pg_query_free_fingerprint_result(fp);
  if (!ok) return false;

  PgQueryNormalizeResult normalized = pg_query_normalize(text.c_str());
  if (normalized.error != nullptr || normalized.normalized_query == nullptr) {
    pg_query_free_normalize_result(normalized);
    return false;
  }
  ScanResult tidy = scan(normalized.normalized_query, Mode::after_normalize, max_param(text));
  pg_query_free_normalize_result(normalized);

  shape.fingerprint = fingerprint;
  shape.normalized = std::move(tidy.normalized);
  shape.source = ShapeSource::parser;
  return true;
}

}  // namespace

const char* to_string(ShapeSource source) {
  switch (source) {
    case ShapeSource::parser: return "parser";
    case ShapeSource::too_long: return "too_long";
    case ShapeSource::syntax_error: return "syntax_error";
  }
  return "unknown";
}

std::string format_fingerprint(std::uint64_t fingerprint) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kHex[fingerprint & 0xf];
    fingerprint >>= 4;
  }
  return out;
}

std::string QueryShape::fingerprint_hex() const { return format_fingerprint(fingerprint); }

QueryShape token_shape(std::string_view text, ShapeSource source) {
  ScanResult scanned = scan(text, Mode::raw, max_param(text));
  QueryShape shape;
  shape.fingerprint = scanned.hash;
  shape.normalized = std::move(scanned.normalized);
  shape.source = source;
  return shape;
}

QueryShape compute_shape(std::string_view text, const FingerprintOptions& options) {
  // An embedded NUL would cut the C string short; PostgreSQL rejects such text anyway.
  if (text.size() > options.max_parse_bytes) return token_shape(text, ShapeSource::too_long);
  if (text.find('\0') != std::string_view::npos) return token_shape(text, ShapeSource::syntax_error);
  QueryShape shape;
  if (parser_shape(std::string(text), shape)) return shape;
  return token_shape(text, ShapeSource::syntax_error);
}

// ---- Fingerprinter ----------------------------------------------------------------------------

Fingerprinter::Fingerprinter(FingerprintOptions options) : options_(options) {
  cache_.reserve(std::min<std::size_t>(options_.cache_entries, 1 << 16));
}

void Fingerprinter::clear() {
  cache_.clear();
  cache_bytes_ = 0;
}

namespace {
// Character classes for literal_key, looked up in a table: it runs per statement,
// and std::isalnum/std::isdigit cost a call and a locale lookup per character.
// (Sluice never sets a locale, so these are the "C" locale's classes.)
enum : std::uint8_t { kWordChar = 1, kDigit = 2, kQuote = 4 };
constexpr std::array<std::uint8_t, 256> make_char_classes() {
  std::array<std::uint8_t, 256> classes{};
  for (int c = 0; c < 256; ++c) {
    const bool digit = c >= '0' && c <= '9';
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (digit || letter || c == '_' || c == '$' || c >= 0x80) classes[c] |= kWordChar;
    if (digit) classes[c] |= kDigit;
    if (c == '\'' || c == '"') classes[c] |= kQuote;
  }
  return classes;
}
constexpr auto kCharClasses = make_char_classes();
constexpr std::uint8_t char_class(char c) { return kCharClasses[static_cast<unsigned char>(c)]; }

// Where a run of ordinary characters from `from` may end: the first quote or
// digit (the caller tells a number from a digit inside a name). Statements are
// mostly such runs, so they are searched 16 bytes at a time where SSE2 is there.
std::size_t next_quote_or_digit(const char* text, std::size_t from, std::size_t n) {
#if defined(__SSE2__)
  const __m128i below_zero = _mm_set1_epi8('0' - 1);
  const __m128i above_nine = _mm_set1_epi8('9' + 1);
  const __m128i single_quote = _mm_set1_epi8('\'');
  const __m128i double_quote = _mm_set1_epi8('"');
  while (from + 16 <= n) {
    const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text + from));
    // Signed compares: bytes >= 0x80 are negative, so never digits.
    const __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(chunk, below_zero), _mm_cmplt_epi8(chunk, above_nine));
    const __m128i quote = _mm_or_si128(_mm_cmpeq_epi8(chunk, single_quote), _mm_cmpeq_epi8(chunk, double_quote));
    const auto found = static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(digit, quote)));
    if (found != 0) return from + static_cast<std::size_t>(__builtin_ctz(found));
    from += 16;
  }
#endif
  while (from < n && (char_class(text[from]) & (kQuote | kDigit)) == 0) ++from;
  return from;
}
}  // namespace

void literal_key(std::string_view text, std::string& key) {
  key.clear();
  const std::size_t n = text.size();
  auto word_char = [](char c) { return (char_class(c) & kWordChar) != 0; };
  auto digit = [](char c) { return (char_class(c) & kDigit) != 0; };
  for (std::size_t i = 0; i < n;) {
    const char c = text[i];
    if (c == '\'') {
      // E'...' (escape string): backslash escapes; '...': '' is a quote.
      const bool escapes = i > 0 && (text[i - 1] == 'E' || text[i - 1] == 'e') && (i < 2 || !word_char(text[i - 2]));
      ++i;
      while (i < n) {
        if (escapes && text[i] == '\\') {
          i += 2;
        } else if (text[i] == '\'') {
          if (i + 1 < n && text[i + 1] == '\'') {
            i += 2;
          } else {
            ++i;
            break;
          }
        } else {
          ++i;
        }
      }
      key += "'?'";
    } else if (digit(c) && (i == 0 || !word_char(text[i - 1]))) {
      while (i < n && (digit(text[i]) || text[i] == '.' || text[i] == '_')) ++i;
      if (i < n && (text[i] == 'e' || text[i] == 'E')) {
        ++i;
        if (i < n && (text[i] == '+' || text[i] == '-')) ++i;
        while (i < n && digit(text[i])) ++i;
      }
      key += '?';
    } else if (c == '"') {
      // A quoted identifier is kept whole (it may contain quotes and digits).
      const std::size_t start = i++;
      while (i < n) {
        if (text[i] == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        ++i;
      }
      key.append(text.substr(start, i - start));
    } else {
      // A run of ordinary characters, appended at once. It ends at a quote, or at a
      // digit that starts a number (not one inside a name such as t1).
      const std::size_t start = i++;
      for (;;) {
        i = next_quote_or_digit(text.data(), i, n);
        if (i >= n || (char_class(text[i]) & kQuote) || !word_char(text[i - 1])) break;
        ++i;
      }
      key.append(text.data() + start, i - start);
    }
  }
}

std::shared_ptr<const QueryShape> Fingerprinter::find(std::string_view text) {
  // Never cached (see remember): no key to build, which for such texts is a long pass.
  if (text.size() > options_.max_parse_bytes) return nullptr;
  literal_key(text, key_);
  if (auto it = cache_.find(std::string_view(key_)); it != cache_.end()) {
    ++stats_.hits;
    return it->second;
  }
  return nullptr;
}

void Fingerprinter::remember(std::string_view text, std::shared_ptr<const QueryShape> shape) {
  if (text.size() > options_.max_parse_bytes || options_.cache_entries == 0) return;
  literal_key(text, key_);
  const std::size_t bytes = key_.size() + shape->normalized.size();
  if (cache_.size() >= options_.cache_entries || cache_bytes_ + bytes > options_.cache_bytes) {
    // Cleared rather than evicted one by one: the working set of a pooler is its
    // application's statements, which refill the cache at once.
    clear();
    ++stats_.cache_clears;
  }
  if (cache_.emplace(key_, std::move(shape)).second) cache_bytes_ += bytes;
}

std::shared_ptr<const QueryShape> Fingerprinter::shape(std::string_view text) {
  if (auto known = find(text)) return known;
  ++stats_.misses;
  auto shape = std::make_shared<const QueryShape>(compute_shape(text, options_));
  if (shape->source != ShapeSource::parser) ++stats_.fallbacks;
  remember(text, shape);
  return shape;
}

// ---- ShapeService ---------------------------------------------------------------

ShapeService::ShapeService(std::size_t queue_capacity) : capacity_(queue_capacity) {
  worker_ = std::thread([this] { run(); });
}

ShapeService::~ShapeService() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  worker_.join();
}

std::shared_ptr<const QueryShape> ShapeService::find(std::string_view text) {
  auto& local = thread_fingerprinter();
  if (auto known = local.find(text)) return known;
  if (text.size() > local.options().max_parse_bytes) return nullptr;
  std::shared_ptr<const QueryShape> shared;
  {
    std::lock_guard lock(mutex_);
    literal_key(text, key_);
    if (auto it = shared_.find(std::string_view(key_)); it != shared_.end()) shared = it->second;
  }
  if (shared) local.remember(text, shared);
  return shared;
}

bool ShapeService::submit(std::string text, std::function<void(std::shared_ptr<const QueryShape>)> work) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= capacity_) {
      ++dropped_;
      return false;
    }
    queue_.push_back({std::move(text), std::move(work)});
  }
  wake_.notify_one();
  return true;
}

std::uint64_t ShapeService::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

void ShapeService::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    // The worker's own cache: a text queued twice before its first shape was
    // published is parsed once.
    auto shape = thread_fingerprinter().shape(job.text);
    if (job.text.size() <= thread_fingerprinter().options().max_parse_bytes) {
      std::lock_guard lock(mutex_);
      if (shared_.size() >= kMaxShared) shared_.clear();
      literal_key(job.text, worker_key_);
      shared_.emplace(worker_key_, shape);
    }
    job.work(std::move(shape));
  }
}

Fingerprinter& thread_fingerprinter() {
  thread_local Fingerprinter fingerprinter;
  return fingerprinter;
}

}  // namespace sluice::proxy
