// Tests for proxy/fingerprint: libpg_query's fingerprint and normalization, the
// token-scan fallback, and the per-thread cache. The timing test prints its
// measurements and asserts nothing about them.
#include "proxy/fingerprint.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace sluice::proxy {
namespace {

QueryShape shape(std::string_view text) { return compute_shape(text); }

// True when any of `values` occurs in `text`.
::testing::AssertionResult NoLiteral(const std::string& text, const std::vector<std::string>& values) {
  for (const auto& value : values) {
    if (text.find(value) != std::string::npos) {
      return ::testing::AssertionFailure() << "\"" << value << "\" appears in: " << text;
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(FingerprintTest, FormatIs16HexDigits) {
  EXPECT_EQ(format_fingerprint(0), "0000000000000000");
  EXPECT_EQ(format_fingerprint(0x4851b0e100123b55ull), "4851b0e100123b55");
  EXPECT_EQ(format_fingerprint(~0ull), "ffffffffffffffff");
  QueryShape s;
  s.fingerprint = 0xabc;
  EXPECT_EQ(s.fingerprint_hex(), "0000000000000abc");
}

TEST(FingerprintTest, LiteralsDoNotChangeTheShape) {
  const QueryShape a = shape("SELECT * FROM orders WHERE user_id = 42 AND status = 'paid'");
  const QueryShape b = shape("SELECT * FROM orders WHERE user_id = 7 AND status = 'it''s new'");
  const QueryShape c = shape("select *\n  from orders  -- who\n where user_id = -1.5e3 and status = E'x\\'y'");
  EXPECT_EQ(a.source, ShapeSource::parser);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(a.fingerprint, c.fingerprint);
  EXPECT_EQ(a.normalized, "SELECT * FROM orders WHERE user_id = $1 AND status = $2");
  EXPECT_EQ(b.normalized, a.normalized);
  EXPECT_EQ(c.normalized, "select * from orders where user_id = $1 and status = $2");
}

TEST(FingerprintTest, DifferentShapesDiffer) {
  const std::vector<std::string> queries = {
      "SELECT * FROM orders WHERE user_id = 1",
      "SELECT * FROM orders WHERE customer_id = 1",
      "SELECT id FROM orders WHERE user_id = 1",
      "SELECT * FROM invoices WHERE user_id = 1",
      "SELECT * FROM orders WHERE user_id > 1",
      "SELECT * FROM orders WHERE user_id = 1 ORDER BY id",
      "UPDATE orders SET status = 'x' WHERE user_id = 1",
      "DELETE FROM orders WHERE user_id = 1",
  };
  for (std::size_t i = 0; i < queries.size(); ++i) {
    for (std::size_t j = i + 1; j < queries.size(); ++j) {
      EXPECT_NE(shape(queries[i]).fingerprint, shape(queries[j]).fingerprint) << queries[i] << " vs " << queries[j];
    }
  }
}

// libpg_query 15-4.0 already gives IN lists of any length (and = ANY($1)) one
// fingerprint; its normalized text lists one $n per element, which we collapse.
TEST(FingerprintTest, InListsOfDifferentLengthsShareAShape) {
  const QueryShape one = shape("SELECT * FROM t WHERE id IN (1) AND b = 'x'");
  const QueryShape two = shape("SELECT * FROM t WHERE id IN (1, 2) AND b = 'x'");
  const QueryShape many = shape("SELECT * FROM t WHERE id IN (1,2,3,4,5,6,7,8,9,10) AND b = 'y'");
  const QueryShape negative = shape("SELECT * FROM t WHERE id IN (-1, -2) AND b = 'x'");
  EXPECT_EQ(one.fingerprint, two.fingerprint);
  EXPECT_EQ(one.fingerprint, many.fingerprint);
  EXPECT_EQ(one.fingerprint, negative.fingerprint);
  EXPECT_EQ(two.normalized, "SELECT * FROM t WHERE id IN ($1 /*, ... */) AND b = $2");
  EXPECT_EQ(one.normalized, two.normalized);
  EXPECT_EQ(many.normalized, two.normalized);
  EXPECT_EQ(negative.normalized, two.normalized);
  // NOT IN is a different shape, and a list with a column in it is not collapsed.
  EXPECT_NE(shape("SELECT * FROM t WHERE id NOT IN (1, 2) AND b = 'x'").fingerprint, one.fingerprint);
  EXPECT_EQ(shape("SELECT * FROM t WHERE id IN (1, b)").normalized, "SELECT * FROM t WHERE id IN ($1, b)");
  EXPECT_EQ(shape("SELECT * FROM t WHERE id IN (SELECT 1)").normalized, "SELECT * FROM t WHERE id IN (SELECT $1)");
}

TEST(FingerprintTest, ExtendedProtocolParametersAreKept) {
  const QueryShape p = shape("SELECT * FROM orders WHERE user_id = $1 AND status = $2");
  EXPECT_EQ(p.source, ShapeSource::parser);
  EXPECT_EQ(p.normalized, "SELECT * FROM orders WHERE user_id = $1 AND status = $2");
  // The same statement with literals has the same fingerprint.
  EXPECT_EQ(p.fingerprint, shape("SELECT * FROM orders WHERE user_id = 5 AND status = 'x'").fingerprint);
  // Literals next to parameters are numbered after the client's own.
  EXPECT_EQ(shape("SELECT $1, 5, 'a' FROM t WHERE b = $2 LIMIT 10").normalized,
            "SELECT $1, $3, $4 FROM t WHERE b = $2 LIMIT $5");
  // An IN list of the client's own parameters is shown as written.
  const QueryShape in_params = shape("SELECT * FROM t WHERE id IN ($1, $2, $3)");
  EXPECT_EQ(in_params.normalized, "SELECT * FROM t WHERE id IN ($1, $2, $3)");
  EXPECT_EQ(in_params.fingerprint, shape("SELECT * FROM t WHERE id IN (1, 2)").fingerprint);
}

TEST(FingerprintTest, PlaceholdersAreNumberedInOrder) {
  // pg_query_normalize numbers LIMIT/OFFSET in tree order ($2 ... $1); we renumber.
  EXPECT_EQ(shape("SELECT * FROM t LIMIT 10 OFFSET 5").normalized, "SELECT * FROM t LIMIT $1 OFFSET $2");
}

TEST(FingerprintTest, NoLiteralInNormalizedText) {
  const std::string query =
      "/* app=billing,id=13579 */ SELECT E'se\\ncret1', 'secret2', $tag$secret3$tag$, $$secret4$$, 24680, 3.25, "
      "X'abcdef', B'10101', U&'s\\0065cret5', interval '97531 days', 'secret6'::text, -86420 "
      "FROM t WHERE a = 'secret7' -- user=secret8\n AND b IN ('secret9', 'secret10')";
  const std::vector<std::string> literals = {"13579", "secret", "24680", "3.25", "abcdef", "10101", "97531",
                                             "86420", "billing"};
  const QueryShape parsed = shape(query);
  EXPECT_EQ(parsed.source, ShapeSource::parser);
  EXPECT_TRUE(NoLiteral(parsed.normalized, literals));
  const QueryShape scanned = token_shape(query);
  EXPECT_TRUE(NoLiteral(scanned.normalized, literals));
  const QueryShape broken = shape(query + " GARBAGE (");
  EXPECT_EQ(broken.source, ShapeSource::syntax_error);
  EXPECT_TRUE(NoLiteral(broken.normalized, literals));
  // Password literals in DDL too.
  EXPECT_TRUE(NoLiteral(shape("ALTER ROLE bob PASSWORD 'hunter2'").normalized, {"hunter2"}));
}

TEST(FingerprintTest, SyntaxErrorFallsBackToTheTokenScan) {
  const QueryShape a = shape("SELEC * FROM t WHERE a = 1 AND b = 'x'");
  const QueryShape b = shape("selec *  FROM t WHERE a = 22 AND b = 'yy'  ");
  const QueryShape c = shape("SELEC * FROM t WHERE a = 1 AND c = 'x'");
  EXPECT_EQ(a.source, ShapeSource::syntax_error);
  EXPECT_EQ(a.fingerprint, b.fingerprint);  // keywords are case-insensitive, whitespace ignored
  EXPECT_NE(a.fingerprint, c.fingerprint);
  EXPECT_EQ(a.normalized, "SELEC * FROM t WHERE a = $1 AND b = $2");
  // Unterminated strings and comments do not break the scan.
  EXPECT_EQ(shape("SELECT 'abc").source, ShapeSource::syntax_error);
  EXPECT_EQ(shape("SELECT 'abc").normalized, "SELECT $1");
  EXPECT_EQ(shape("SELECT 1 /* abc").normalized, "SELECT $1");
  // An embedded NUL cannot reach the C parser.
  EXPECT_EQ(shape(std::string_view("SELECT 1\0 2", 10)).source, ShapeSource::syntax_error);
}

TEST(FingerprintTest, TokenScanRules) {
  // Quoted identifiers keep their case and are not literals; unquoted words fold.
  EXPECT_NE(token_shape("SELECT \"A\" FROM t").fingerprint, token_shape("SELECT \"a\" FROM t").fingerprint);
  EXPECT_EQ(token_shape("SELECT A FROM t").fingerprint, token_shape("select a from T").fingerprint);
  EXPECT_EQ(token_shape("SELECT \"it's\" FROM t WHERE x = 'a'").normalized, "SELECT \"it's\" FROM t WHERE x = $1");
  // Parameters and literals hash alike; IN lists of any length hash alike.
  EXPECT_EQ(token_shape("SELECT a FROM t WHERE b = $1").fingerprint,
            token_shape("SELECT a FROM t WHERE b = 1").fingerprint);
  EXPECT_EQ(token_shape("SELECT a FROM t WHERE b IN (1, 2, 3)").fingerprint,
            token_shape("SELECT a FROM t WHERE b IN ($1)").fingerprint);
  EXPECT_EQ(token_shape("SELECT a FROM t WHERE b IN (1, 2, 3)").normalized,
            "SELECT a FROM t WHERE b IN ($1 /*, ... */)");
  // Binary minus stays an operator; unary minus belongs to the literal.
  EXPECT_EQ(token_shape("SELECT a - 1, -2 FROM t").normalized, "SELECT a - $1, $2 FROM t");
  EXPECT_EQ(token_shape("SELECT a = -2").fingerprint, token_shape("SELECT a = 2").fingerprint);
  // Identifiers with digits or $ are not literals or parameters.
  EXPECT_EQ(token_shape("SELECT t1.a$b FROM t1").normalized, "SELECT t1.a$b FROM t1");
  EXPECT_EQ(token_shape("SELECT a::int FROM t").normalized, "SELECT a::int FROM t");
  // Nested block comments.
  EXPECT_EQ(token_shape("SELECT /* a /* b */ 42 */ 1").normalized, "SELECT $1");
}

TEST(FingerprintTest, LongTextFallsBackQuickly) {
  std::string big = "SELECT * FROM t WHERE a IN (";
  for (int i = 0; big.size() < 1024 * 1024; ++i) big += std::to_string(i) + ", 'str" + std::to_string(i) + "', ";
  big += "0) AND note = 'end'";
  const auto start = std::chrono::steady_clock::now();
  const QueryShape s = shape(big);
  const auto elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ timing   ] 1 MiB query, token-scan fallback: %.2f ms\n", elapsed);
  EXPECT_EQ(s.source, ShapeSource::too_long);
  EXPECT_EQ(s.normalized, "SELECT * FROM t WHERE a IN ($1 /*, ... */) AND note = $2");
  EXPECT_LT(elapsed, 2000.0);  // generous: only catches a quadratic scan

  // The cap is configurable; just over it, the shape changes source.
  FingerprintOptions options;
  options.max_parse_bytes = 20;
  EXPECT_EQ(compute_shape("SELECT 1 FROM t", options).source, ShapeSource::parser);
  EXPECT_EQ(compute_shape("SELECT 1 FROM t WHERE a = 2", options).source, ShapeSource::too_long);
}

TEST(FingerprinterTest, CachesByExactText) {
  FingerprintOptions options;
  options.cache_entries = 3;
  Fingerprinter f(options);
  const auto a = f.shape("SELECT 1");
  const auto again = f.shape("SELECT 1");
  EXPECT_EQ(a.get(), again.get());
  EXPECT_EQ(f.stats().hits, 1u);
  EXPECT_EQ(f.stats().misses, 1u);
  // Other literal values, same statement: the same entry (simple-protocol clients
  // send new literals every time).
  EXPECT_EQ(f.shape("SELECT 22").get(), a.get());
  EXPECT_EQ(f.shape("SELECT 1.5e3").get(), a.get());
  const auto s1 = f.shape("SELECT 'x', 'it''s'");
  EXPECT_EQ(f.shape("SELECT 'other', 'y'").get(), s1.get());
  EXPECT_EQ(f.cache_size(), 2u);
  f.shape("SELECT * FROM t1");
  EXPECT_EQ(f.cache_size(), 3u);
  f.shape("SELECT * FROM t2");  // a digit inside a name is not a literal: full, cleared, then cached
  EXPECT_EQ(f.cache_size(), 1u);
  EXPECT_EQ(f.stats().cache_clears, 1u);
  EXPECT_EQ(a->normalized, "SELECT $1");  // a held shape survives the clear
  f.shape("SELECT syntax error here (");
  EXPECT_EQ(f.stats().fallbacks, 1u);
}

TEST(FingerprinterTest, CacheKeyKeepsNamesParametersAndQuotedIdentifiers) {
  Fingerprinter f;
  const auto p1 = f.shape("SELECT $1::int");
  const auto p2 = f.shape("SELECT $2::int");
  EXPECT_NE(p1.get(), p2.get());
  const auto q1 = f.shape("SELECT \"col 1\" FROM t");
  const auto q2 = f.shape("SELECT \"col 2\" FROM t");
  EXPECT_NE(q1.get(), q2.get());
  EXPECT_NE(q1->fingerprint, q2->fingerprint);
  // An escape string with a backslash-escaped quote is one literal.
  const auto e1 = f.shape("SELECT E'it\\'s', 1");
  const auto e2 = f.shape("SELECT E'x', 2");
  EXPECT_EQ(e1.get(), e2.get());
  EXPECT_EQ(e1->normalized, "SELECT $1, $2");
}

// literal_key one character at a time: what its faster scan of ordinary runs
// must give.
std::string reference_literal_key(std::string_view text) {
  auto word_char = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' ||
           static_cast<unsigned char>(c) >= 0x80;
  };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::string key;
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    const char c = text[i];
    if (c == '\'') {
      const bool escapes = i > 0 && (text[i - 1] == 'E' || text[i - 1] == 'e') && (i < 2 || !word_char(text[i - 2]));
      ++i;
      while (i < n) {
        if (escapes && text[i] == '\\') {
          i += 2;
        } else if (text[i] == '\'' && i + 1 < n && text[i + 1] == '\'') {
          i += 2;
        } else if (text[i++] == '\'') {
          break;
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
      const std::size_t start = i++;
      while (i < n) {
        if (text[i] == '"' && i + 1 < n && text[i + 1] == '"') {
          i += 2;
        } else if (text[i++] == '"') {
          break;
        }
      }
      key += text.substr(start, i - start);
    } else {
      key += c;
      ++i;
    }
  }
  return key;
}

TEST(LiteralKeyTest, MatchesACharacterByCharacterScan) {
  // Quotes, digits, letters and bytes >= 0x80 at every offset of texts longer and
  // shorter than one 16-byte chunk, so that each falls before, in and after one.
  const std::string alphabet = std::string("aE1 9'\"._$\\-+e") + static_cast<char>(0xc3) + static_cast<char>(0x80);
  std::mt19937 random(20261203);
  std::string key;
  for (int round = 0; round < 20000; ++round) {
    std::string text(random() % 70, ' ');
    for (auto& c : text) c = random() % 3 == 0 ? alphabet[random() % alphabet.size()] : 'x';
    literal_key(text, key);
    ASSERT_EQ(key, reference_literal_key(text)) << "text: " << text;
  }
  // Keys longer than their texts: empty literals, and a quote that ends the text.
  literal_key("'' '' ''", key);
  EXPECT_EQ(key, "'?' '?' '?'");
  literal_key("'", key);
  EXPECT_EQ(key, "'?'");
  literal_key("x''", key);
  EXPECT_EQ(key, "x'?'");
  literal_key("SELECT abalance FROM pgbench_accounts WHERE aid = 79462;", key);
  EXPECT_EQ(key, "SELECT abalance FROM pgbench_accounts WHERE aid = ?;");
  literal_key("SELECT t1.c2 FROM t1 WHERE name = 'O''Brien' AND x > 1.5e+3 AND \"col 9\" = E'\\'9'", key);
  EXPECT_EQ(key, "SELECT t1.c2 FROM t1 WHERE name = '?' AND x > ? AND \"col 9\" = E'?'");
}

TEST(ShapeServiceTest, ParsesOffTheCallingThreadAndPublishesTheShape) {
  ShapeService service;
  const std::string text = "SELECT name FROM shape_service_test WHERE id = 41";
  EXPECT_EQ(service.find(text), nullptr);  // never parses on the caller's thread
  std::promise<std::pair<std::shared_ptr<const QueryShape>, std::thread::id>> done;
  ASSERT_TRUE(service.submit(text, [&](std::shared_ptr<const QueryShape> shape) {
    done.set_value({std::move(shape), std::this_thread::get_id()});
  }));
  auto [shape, worker] = done.get_future().get();
  ASSERT_NE(shape, nullptr);
  EXPECT_NE(worker, std::this_thread::get_id());
  EXPECT_EQ(shape->normalized, "SELECT name FROM shape_service_test WHERE id = $1");
  // Published: this thread now finds it, for other literal values too.
  auto found = service.find("SELECT name FROM shape_service_test WHERE id = 7");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->fingerprint, shape->fingerprint);
}

TEST(ShapeServiceTest, DestructorRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    ShapeService service;
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(service.submit("SELECT " + std::to_string(i) + " FROM queued_" + std::to_string(i % 5),
                                 [&](std::shared_ptr<const QueryShape>) { ++ran; }));
    }
  }
  EXPECT_EQ(ran.load(), 50);
}

TEST(FingerprinterTest, LongTextsAreNotCached) {
  FingerprintOptions options;
  options.max_parse_bytes = 32;
  Fingerprinter f(options);
  const std::string text = "SELECT a, b, c, d FROM some_table WHERE x = 1";
  f.shape(text);
  f.shape(text);
  EXPECT_EQ(f.cache_size(), 0u);
  EXPECT_EQ(f.stats().misses, 2u);
}

TEST(FingerprinterTest, CacheByteBudget) {
  FingerprintOptions options;
  options.cache_bytes = 40;
  Fingerprinter f(options);
  f.shape("SELECT 1 FROM t");  // key "SELECT ? FROM t" 15 + normalized 16 bytes
  EXPECT_EQ(f.cache_size(), 1u);
  f.shape("SELECT 2 FROM u");  // would exceed 40: cleared first
  EXPECT_EQ(f.cache_size(), 1u);
  EXPECT_EQ(f.stats().cache_clears, 1u);
}

TEST(FingerprinterTest, OnePerThread) {
  const QueryShape* main_thread = &*query_shape("SELECT 1");
  std::uint64_t other_fingerprint = 0;
  std::uint64_t other_misses = 0;
  std::thread worker([&] {
    other_fingerprint = query_shape("SELECT 1")->fingerprint;
    other_misses = thread_fingerprinter().stats().misses;
  });
  worker.join();  // the worker exits without pg_query_exit: no crash, no leak report
  EXPECT_EQ(other_misses, 1u);
  EXPECT_EQ(other_fingerprint, main_thread->fingerprint);
}

// Prints the cost of a miss (parse + normalize) and a hit; asserts nothing.
TEST(FingerprinterTest, MeasureCost) {
  using Clock = std::chrono::steady_clock;
  const auto per_call_us = [](Clock::time_point start, int n) {
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / n;
  };
  const std::string query =
      "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id "
      "WHERE o.user_id = 12345 AND o.status = 'paid' ORDER BY o.created_at DESC LIMIT 20";
  constexpr int kMisses = 2000;
  constexpr int kHits = 200000;

  auto start = Clock::now();
  for (int i = 0; i < kMisses; ++i) compute_shape(query);
  const double miss = per_call_us(start, kMisses);

  start = Clock::now();
  for (int i = 0; i < kMisses; ++i) token_shape(query);
  const double scan = per_call_us(start, kMisses);

  std::string in_list = "SELECT * FROM t WHERE id IN (";
  for (int i = 0; i < 1000; ++i) in_list += (i ? ", " : "") + std::to_string(100000 + i);
  in_list += ")";
  FingerprintOptions unlimited;
  unlimited.max_parse_bytes = 1 << 20;
  start = Clock::now();
  for (int i = 0; i < 50; ++i) compute_shape(in_list, unlimited);
  const double in_parse = per_call_us(start, 50);
  start = Clock::now();
  for (int i = 0; i < 50; ++i) token_shape(in_list);
  const double in_scan = per_call_us(start, 50);

  Fingerprinter f;
  f.shape(query);
  start = Clock::now();
  std::uint64_t sink = 0;
  for (int i = 0; i < kHits; ++i) sink += f.shape(query)->fingerprint;
  const double hit = per_call_us(start, kHits);
  EXPECT_NE(sink, 1u);  // keeps the loop

  std::printf("[ timing   ] %zu-byte query: miss (fingerprint + normalize) %.2f us, token scan %.2f us, "
              "cache hit %.0f ns\n",
              query.size(), miss, scan, hit * 1000);
  std::printf("[ timing   ] 1000-element IN list (%zu bytes): parser %.0f us, token scan %.1f us\n",
              in_list.size(), in_parse, in_scan);
}

}  // namespace
}  // namespace sluice::proxy
