// Unit tests of the extended-query pieces used by transaction pooling (protocol/extended.h):
// views of the frontend Parse, Bind, Describe and Close bodies, their builders, which backend
// message ends the answer to which request, and the SQL commands that drop prepared statements.
//
// Builders are checked against byte arrays written by hand from PostgreSQL 15's "Message Formats"
// chapter (protocol-message-formats.html):
//   Parse     'P' Int32 len, String name, String query, Int16 n, Int32[n] parameter type OIDs
//   Bind      'B' Int32 len, String portal, String statement, Int16 n, Int16[n] formats, Int16 n,
//                 n x (Int32 len, Byte[len]), Int16 n, Int16[n] result formats
//   Describe  'D' Int32 len, Byte1 'S' or 'P', String name
//   Close     'C' Int32 len, Byte1 'S' or 'P', String name
//   ParseComplete '1', CloseComplete '3': Int32 4
//   CommandComplete 'C' Int32 len, String tag
// Parsers are fed exact bodies, malformed ones, and every prefix of a valid body, both as views
// into the whole body and as exact-size heap copies (a read past the end is reported by
// AddressSanitizer when the suite is built with -DSLUICE_SANITIZE=ON).
#include "protocol/extended.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/wire.h"
#include "tests/protocol/test_messages.h"

namespace sluice::protocol {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;
using test::as_bytes;
using test::as_sv;
using test::be16;
using test::be32;
using test::cstr;
using test::ExactCopy;
using test::hex;
using test::nul;
using test::peeked;
using test::size_str;

// Byte arrays below are written as concatenated literals, one field per literal, so that a hex
// escape can never swallow the following character ("\x0d" "E", not "\x0dE").

// The rest of a Parse body after the name: query text, one parameter type (int4, OID 23).
const std::string kParseTail = cstr("SELECT $1") + be16(1) + be32(23);
// The rest of a Bind body after the names: one text parameter format, one parameter "42",
// one binary result format.
const std::string kBindTail = be16(1) + be16(0) + be16(1) + be32(2) + "42" + be16(1) + be16(1);

// Whether `part` lies within `whole` (a view must never point outside the parsed buffer).
bool inside(Bytes whole, const void* data, std::size_t size) {
  const auto* begin = whole.data();
  const auto* end = begin + whole.size();
  const auto* p = static_cast<const std::uint8_t*>(data);
  return p >= begin && p <= end && size <= static_cast<std::size_t>(end - p);
}
bool inside(Bytes whole, std::string_view part) { return inside(whole, part.data(), part.size()); }
bool inside(Bytes whole, Bytes part) { return inside(whole, part.data(), part.size()); }

Message peek_whole(const std::string& wire) {
  Message m;
  auto r = peek_message(as_bytes(wire), 1 << 20, m);
  EXPECT_EQ(peeked(r), size_str(wire.size()));
  return m;
}

// =====================================================================================
// Builders: exact bytes
// =====================================================================================

TEST(ExtendedBuilders, Parse) {
  std::string out;
  append_parse(out, "s1", as_bytes(kParseTail));
  EXPECT_EQ(hex(out), hex("P" "\x00\x00\x00\x17"
                          "s1" "\0"
                          "SELECT $1" "\0"
                          "\x00\x01"
                          "\x00\x00\x00\x17"sv));
}

TEST(ExtendedBuilders, ParseWithEmptyNameOrEmptyTail) {
  std::string unnamed;
  append_parse(unnamed, "", as_bytes(kParseTail));
  EXPECT_EQ(hex(unnamed), hex("P" "\x00\x00\x00\x15"
                              "\0"
                              "SELECT $1" "\0"
                              "\x00\x01"
                              "\x00\x00\x00\x17"sv));
  std::string no_tail;
  append_parse(no_tail, "x", Bytes{});
  EXPECT_EQ(hex(no_tail), hex("P" "\x00\x00\x00\x06" "x" "\0"sv));
}

TEST(ExtendedBuilders, ParseLengthCoversTailsOf256BytesAndMore) {
  const std::string tail(0x10203, 'q');
  std::string out;
  append_parse(out, "", as_bytes(tail));
  ASSERT_EQ(out.size(), 1u + 4u + 1u + 0x10203u);
  EXPECT_EQ(hex(std::string_view(out).substr(0, 6)), hex("P" "\x00\x01\x02\x08" "\0"sv));
  EXPECT_EQ(std::string_view(out).substr(6), tail);
}

TEST(ExtendedBuilders, Bind) {
  std::string out;
  append_bind(out, "", "sluice_7", as_bytes(kBindTail));
  EXPECT_EQ(hex(out), hex("B" "\x00\x00\x00\x1e"
                          "\0"
                          "sluice_7" "\0"
                          "\x00\x01" "\x00\x00"
                          "\x00\x01" "\x00\x00\x00\x02" "42"
                          "\x00\x01" "\x00\x01"sv));
}

TEST(ExtendedBuilders, BindWithPortalName) {
  std::string out;
  append_bind(out, "c1", "", as_bytes(be16(0) + be16(0) + be16(0)));
  EXPECT_EQ(hex(out), hex("B" "\x00\x00\x00\x0e"
                          "c1" "\0"
                          "\0"
                          "\x00\x00" "\x00\x00" "\x00\x00"sv));
}

TEST(ExtendedBuilders, DescribeStatementAndPortal) {
  std::string statement;
  append_describe(statement, 'S', "sluice_7");
  EXPECT_EQ(hex(statement), hex("D" "\x00\x00\x00\x0e" "S" "sluice_7" "\0"sv));
  std::string portal;
  append_describe(portal, 'P', "");
  EXPECT_EQ(hex(portal), hex("D" "\x00\x00\x00\x06" "P" "\0"sv));
}

TEST(ExtendedBuilders, CloseStatementAndPortal) {
  std::string statement;
  append_close(statement, 'S', "s1");
  EXPECT_EQ(hex(statement), hex("C" "\x00\x00\x00\x08" "S" "s1" "\0"sv));
  std::string portal;
  append_close(portal, 'P', "portal");
  EXPECT_EQ(hex(portal), hex("C" "\x00\x00\x00\x0c" "P" "portal" "\0"sv));
}

TEST(ExtendedBuilders, ParseCompleteAndCloseComplete) {
  std::string parse_complete;
  append_parse_complete(parse_complete);
  EXPECT_EQ(hex(parse_complete), hex("1" "\x00\x00\x00\x04"sv));
  std::string close_complete;
  append_close_complete(close_complete);
  EXPECT_EQ(hex(close_complete), hex("3" "\x00\x00\x00\x04"sv));
}

TEST(ExtendedBuilders, CommandComplete) {
  std::string deallocate;
  append_command_complete(deallocate, "DEALLOCATE");
  EXPECT_EQ(hex(deallocate), hex("C" "\x00\x00\x00\x0f" "DEALLOCATE" "\0"sv));
  std::string deallocate_all;
  append_command_complete(deallocate_all, "DEALLOCATE ALL");
  EXPECT_EQ(hex(deallocate_all), hex("C" "\x00\x00\x00\x13" "DEALLOCATE ALL" "\0"sv));
  std::string empty;
  append_command_complete(empty, "");
  EXPECT_EQ(hex(empty), hex("C" "\x00\x00\x00\x05" "\0"sv));
}

TEST(ExtendedBuilders, AppendsAfterExistingBytes) {
  // Each length is that of its own message, not of everything in `out`.
  std::string out = "prefix";
  append_parse(out, "a", as_bytes(cstr("SELECT 1") + be16(0)));
  append_bind(out, "", "a", as_bytes(be16(0) + be16(0) + be16(0)));
  append_describe(out, 'P', "");
  append_close(out, 'S', "a");
  append_parse_complete(out);
  append_close_complete(out);
  append_command_complete(out, "DISCARD ALL");
  EXPECT_EQ(hex(out), hex("prefix"
                          "P" "\x00\x00\x00\x11" "a" "\0" "SELECT 1" "\0" "\x00\x00"
                          "B" "\x00\x00\x00\x0d" "\0" "a" "\0" "\x00\x00" "\x00\x00" "\x00\x00"
                          "D" "\x00\x00\x00\x06" "P" "\0"
                          "C" "\x00\x00\x00\x07" "S" "a" "\0"
                          "1" "\x00\x00\x00\x04"
                          "3" "\x00\x00\x00\x04"
                          "C" "\x00\x00\x00\x10" "DISCARD ALL" "\0"sv));
}

// =====================================================================================
// Builders -> peek_message -> parsers (round trips, and the rewrite the pooler does)
// =====================================================================================

TEST(ExtendedRoundTrip, BuiltMessagesParseBack) {
  std::string parse;
  append_parse(parse, "stmt", as_bytes(kParseTail));
  Message m = peek_whole(parse);
  EXPECT_EQ(m.type, 'P');
  auto p = parse_parse(m.body);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "stmt");
  EXPECT_EQ(hex(p->tail), hex(kParseTail));

  std::string bind;
  append_bind(bind, "portal", "stmt", as_bytes(kBindTail));
  m = peek_whole(bind);
  EXPECT_EQ(m.type, 'B');
  auto b = parse_bind(m.body);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->portal, "portal");
  EXPECT_EQ(b->statement, "stmt");
  EXPECT_EQ(hex(b->tail), hex(kBindTail));

  for (char kind : {'S', 'P'}) {
    for (std::string_view name : {""sv, "x"sv, "sluice_123"sv}) {
      SCOPED_TRACE(std::string(1, kind) + " " + std::string(name));
      std::string describe;
      append_describe(describe, kind, name);
      m = peek_whole(describe);
      EXPECT_EQ(m.type, 'D');
      auto d = parse_target(m.body);
      ASSERT_TRUE(d.has_value());
      EXPECT_EQ(d->kind, kind);
      EXPECT_EQ(d->name, name);

      std::string close;
      append_close(close, kind, name);
      m = peek_whole(close);
      EXPECT_EQ(m.type, 'C');
      auto c = parse_target(m.body);
      ASSERT_TRUE(c.has_value());
      EXPECT_EQ(c->kind, kind);
      EXPECT_EQ(c->name, name);
    }
  }
}

TEST(ExtendedRoundTrip, RenamingAStatementKeepsTheRestOfTheBodyByteForByte) {
  // What transaction pooling does: the client's Parse/Bind/Describe/Close of "my_stmt" go to the
  // server under the shared name, with every other byte unchanged.
  const std::string client_parse = cstr("my_stmt") + kParseTail;
  ExactCopy parse_copy(client_parse);
  auto p = parse_parse(parse_copy.bytes());
  ASSERT_TRUE(p.has_value());
  std::string out;
  append_parse(out, "sluice_42", p->tail);
  EXPECT_EQ(hex(out), hex("P" "\x00\x00\x00\x1e"
                          "sluice_42" "\0"
                          "SELECT $1" "\0"
                          "\x00\x01"
                          "\x00\x00\x00\x17"sv));

  const std::string client_bind = cstr("") + cstr("my_stmt") + kBindTail;
  ExactCopy bind_copy(client_bind);
  auto b = parse_bind(bind_copy.bytes());
  ASSERT_TRUE(b.has_value());
  out.clear();
  append_bind(out, b->portal, "sluice_42", b->tail);
  EXPECT_EQ(hex(out), hex("B" "\x00\x00\x00\x1f"
                          "\0"
                          "sluice_42" "\0"
                          "\x00\x01" "\x00\x00"
                          "\x00\x01" "\x00\x00\x00\x02" "42"
                          "\x00\x01" "\x00\x01"sv));

  const std::string client_describe = "S" + cstr("my_stmt");
  ExactCopy describe_copy(client_describe);
  auto d = parse_target(describe_copy.bytes());
  ASSERT_TRUE(d.has_value());
  out.clear();
  append_describe(out, d->kind, "sluice_42");
  EXPECT_EQ(hex(out), hex("D" "\x00\x00\x00\x0f" "S" "sluice_42" "\0"sv));
}

// =====================================================================================
// parse_parse
// =====================================================================================

TEST(ExtendedParseParse, NameAndTail) {
  const std::string body = cstr("s1") + kParseTail;
  ExactCopy copy(body);
  auto p = parse_parse(copy.bytes());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "s1");
  EXPECT_EQ(hex(p->tail), hex(kParseTail));
  // Views into the caller's buffer, not copies.
  EXPECT_EQ(p->name.data(), reinterpret_cast<const char*>(copy.bytes().data()));
  EXPECT_EQ(p->tail.data(), copy.bytes().data() + 3);
  EXPECT_EQ(p->tail.size(), kParseTail.size());
}

TEST(ExtendedParseParse, UnnamedStatement) {
  const std::string body = nul() + cstr("SELECT 1") + be16(0);
  ExactCopy copy(body);
  auto p = parse_parse(copy.bytes());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "");
  EXPECT_EQ(hex(p->tail), hex(cstr("SELECT 1") + be16(0)));
}

TEST(ExtendedParseParse, TailIsEverythingAfterTheFirstNulEvenWithNulsInside) {
  // Parameter type OIDs hold zero bytes; the tail is taken whole, not up to the next NUL.
  const std::string tail = cstr("SELECT $1, $2") + be16(2) + be32(0) + be32(25);
  const std::string body = cstr("two") + tail;
  ExactCopy copy(body);
  auto p = parse_parse(copy.bytes());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "two");
  EXPECT_EQ(hex(p->tail), hex(tail));
}

TEST(ExtendedParseParse, NameOnlyGivesAnEmptyTail) {
  ExactCopy copy(cstr("s1"));
  auto p = parse_parse(copy.bytes());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "s1");
  EXPECT_TRUE(p->tail.empty());
}

TEST(ExtendedParseParse, MalformedBodies) {
  for (const std::string& body : {std::string(), "s1"s, "SELECT 1"s, "\x01\x02\x03"s}) {
    ExactCopy copy(body);
    EXPECT_FALSE(parse_parse(copy.bytes()).has_value()) << hex(body);
  }
}

TEST(ExtendedParseParse, EveryPrefixIsRejectedOrParsedWithinIt) {
  const std::string body = cstr("s1") + kParseTail;
  const ExactCopy full(body);
  for (std::size_t n = 0; n <= body.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " of " + std::to_string(body.size()) + " bytes");
    ExactCopy prefix(std::string_view(body).substr(0, n));
    for (Bytes bytes : {full.bytes().first(n), prefix.bytes()}) {
      auto p = parse_parse(bytes);
      if (n < 3) {
        EXPECT_FALSE(p.has_value());
        continue;
      }
      ASSERT_TRUE(p.has_value());
      EXPECT_EQ(p->name, "s1");
      EXPECT_EQ(hex(p->tail), hex(std::string_view(body).substr(3, n - 3)));
      EXPECT_TRUE(inside(bytes, p->name));
      EXPECT_TRUE(inside(bytes, p->tail));
    }
  }
}

// =====================================================================================
// parse_bind
// =====================================================================================

TEST(ExtendedParseBind, PortalStatementAndTail) {
  const std::string body = cstr("c1") + cstr("s1") + kBindTail;
  ExactCopy copy(body);
  auto b = parse_bind(copy.bytes());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->portal, "c1");
  EXPECT_EQ(b->statement, "s1");
  EXPECT_EQ(hex(b->tail), hex(kBindTail));
  EXPECT_EQ(b->tail.data(), copy.bytes().data() + 6);
}

TEST(ExtendedParseBind, UnnamedPortalAndStatement) {
  const std::string tail = be16(0) + be16(0) + be16(0);
  const std::string body = nul() + nul() + tail;
  ExactCopy copy(body);
  auto b = parse_bind(copy.bytes());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->portal, "");
  EXPECT_EQ(b->statement, "");
  EXPECT_EQ(hex(b->tail), hex(tail));
}

TEST(ExtendedParseBind, TailKeepsNullParameterAndZeroBytes) {
  // A NULL parameter (length -1) and a value with zero bytes inside stay in the tail.
  const std::string tail = be16(0) + be16(2) + be32(0xffffffff) + be32(3) + "a\0b"s + be16(0);
  const std::string body = nul() + cstr("s") + tail;
  ExactCopy copy(body);
  auto b = parse_bind(copy.bytes());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->statement, "s");
  EXPECT_EQ(hex(b->tail), hex(tail));
}

TEST(ExtendedParseBind, NamesOnlyGivesAnEmptyTail) {
  ExactCopy copy(cstr("") + cstr("s1"));
  auto b = parse_bind(copy.bytes());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->portal, "");
  EXPECT_EQ(b->statement, "s1");
  EXPECT_TRUE(b->tail.empty());
}

TEST(ExtendedParseBind, MalformedBodies) {
  for (const std::string& body : {std::string(), "c1"s, cstr("c1"), cstr("c1") + "s1", nul(), "\x01\x02"s}) {
    ExactCopy copy(body);
    EXPECT_FALSE(parse_bind(copy.bytes()).has_value()) << hex(body);
  }
}

TEST(ExtendedParseBind, EveryPrefixIsRejectedOrParsedWithinIt) {
  const std::string body = cstr("c1") + cstr("sluice_7") + kBindTail;
  const std::size_t names = 3 + 9;
  const ExactCopy full(body);
  for (std::size_t n = 0; n <= body.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " of " + std::to_string(body.size()) + " bytes");
    ExactCopy prefix(std::string_view(body).substr(0, n));
    for (Bytes bytes : {full.bytes().first(n), prefix.bytes()}) {
      auto b = parse_bind(bytes);
      if (n < names) {
        EXPECT_FALSE(b.has_value());
        continue;
      }
      ASSERT_TRUE(b.has_value());
      EXPECT_EQ(b->portal, "c1");
      EXPECT_EQ(b->statement, "sluice_7");
      EXPECT_EQ(hex(b->tail), hex(std::string_view(body).substr(names, n - names)));
      EXPECT_TRUE(inside(bytes, b->portal));
      EXPECT_TRUE(inside(bytes, b->statement));
      EXPECT_TRUE(inside(bytes, b->tail));
    }
  }
}

// =====================================================================================
// parse_target (Describe and Close)
// =====================================================================================

TEST(ExtendedParseTarget, StatementAndPortal) {
  ExactCopy statement("S" + cstr("s1"));
  auto s = parse_target(statement.bytes());
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->kind, 'S');
  EXPECT_EQ(s->name, "s1");
  EXPECT_TRUE(inside(statement.bytes(), s->name));

  ExactCopy portal("P" + cstr("c1"));
  auto p = parse_target(portal.bytes());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->kind, 'P');
  EXPECT_EQ(p->name, "c1");
}

TEST(ExtendedParseTarget, UnnamedStatementAndPortal) {
  ExactCopy statement("S" + nul());
  auto s = parse_target(statement.bytes());
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->kind, 'S');
  EXPECT_EQ(s->name, "");

  ExactCopy portal("P" + nul());
  auto p = parse_target(portal.bytes());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->kind, 'P');
  EXPECT_EQ(p->name, "");
}

TEST(ExtendedParseTarget, WrongKindByte) {
  for (char kind : {'s', 'p', 'D', 'C', 'X', '\0', '\xff', ' '}) {
    const std::string body = std::string(1, kind) + cstr("s1");
    ExactCopy copy(body);
    EXPECT_FALSE(parse_target(copy.bytes()).has_value()) << hex(body);
  }
}

TEST(ExtendedParseTarget, MalformedBodies) {
  for (const std::string& body : {std::string(), "S"s, "P"s, "Ss1"s, "Ps1"s, nul(), nul() + nul()}) {
    ExactCopy copy(body);
    EXPECT_FALSE(parse_target(copy.bytes()).has_value()) << hex(body);
  }
}

TEST(ExtendedParseTarget, TrailingBytesAfterTheNameAreRejected) {
  for (const std::string& body : {"S" + cstr("s1") + "x", "S" + cstr("s1") + nul(), "S" + cstr("a") + cstr("b"),
                                  "P" + nul() + nul(), "P" + cstr("c1") + be32(0)}) {
    ExactCopy copy(body);
    EXPECT_FALSE(parse_target(copy.bytes()).has_value()) << hex(body);
  }
}

TEST(ExtendedParseTarget, EveryStrictPrefixIsRejected) {
  for (const std::string& body : {"S" + cstr("sluice_7"), "P" + cstr("c1"), "S" + nul()}) {
    const ExactCopy full(body);
    for (std::size_t n = 0; n < body.size(); ++n) {
      SCOPED_TRACE(hex(body) + " truncated to " + std::to_string(n) + " bytes");
      EXPECT_FALSE(parse_target(full.bytes().first(n)).has_value());
      ExactCopy prefix(std::string_view(body).substr(0, n));
      EXPECT_FALSE(parse_target(prefix.bytes()).has_value());
    }
  }
}

// =====================================================================================
// ends_response / is_extended_request
// =====================================================================================

// Every backend message type of protocol 3.0.
constexpr std::string_view kBackendTypes = "123ACDEGHIKNRSTVWZcdnstv";

TEST(ExtendedResponses, WhichBackendMessageEndsWhichRequest) {
  struct Case {
    char request;
    std::string_view ends;
  };
  const Case cases[] = {
      {'P', "1"},    // Parse: ParseComplete
      {'B', "2"},    // Bind: BindComplete
      {'C', "3"},    // Close: CloseComplete
      {'D', "Tn"},   // Describe: RowDescription or NoData (after ParameterDescription for 'S')
      {'E', "CIs"},  // Execute: CommandComplete, EmptyQueryResponse or PortalSuspended
      {'S', "Z"},    // Sync: ReadyForQuery
      {'Q', "Z"},    // Query: ReadyForQuery
      {'F', "Z"},    // FunctionCall: ReadyForQuery
  };
  for (const Case& c : cases) {
    for (char response : kBackendTypes) {
      const bool expected = c.ends.find(response) != std::string_view::npos;
      EXPECT_EQ(ends_response(c.request, response), expected)
          << "request '" << c.request << "' response '" << response << "'";
    }
  }
}

TEST(ExtendedResponses, IntermediateMessagesDoNotEndARequest) {
  // ParameterDescription comes before RowDescription/NoData; DataRow, notices, notifications and
  // ParameterStatus can come in the middle of any answer.
  EXPECT_FALSE(ends_response('D', 't'));
  for (char request : "PBCDESQF"sv) {
    for (char response : "DNAS"sv) {
      EXPECT_FALSE(ends_response(request, response)) << request << " " << response;
    }
  }
}

TEST(ExtendedResponses, OtherRequestsAreNeverEndedByAResponse) {
  // Flush, Terminate, CopyData, CopyDone, CopyFail and unknown bytes have no answer of their own.
  for (char request : "HXdcfp\0\xff"sv) {
    for (char response : kBackendTypes) {
      EXPECT_FALSE(ends_response(request, response)) << hex(std::string(1, request)) << " " << response;
    }
  }
}

TEST(ExtendedResponses, ExtendedRequests) {
  for (char request : "PBDEC"sv) EXPECT_TRUE(is_extended_request(request)) << request;
  for (char request : "SQFHXdcfp\0\xff"sv) EXPECT_FALSE(is_extended_request(request)) << hex(std::string(1, request));
}

// =====================================================================================
// classify_statement_command
// =====================================================================================

std::string kind_name(StatementCommand::Kind kind) {
  switch (kind) {
    case StatementCommand::none: return "none";
    case StatementCommand::deallocate: return "deallocate";
    case StatementCommand::deallocate_all: return "deallocate_all";
    case StatementCommand::discard_all: return "discard_all";
  }
  return "?";
}
// "deallocate <name>", "deallocate_all", "discard_all" or "none", for readable failures.
std::string classified(std::string_view sql) {
  const StatementCommand command = classify_statement_command(sql);
  if (command.kind == StatementCommand::deallocate) return "deallocate <" + command.name + ">";
  std::string out = kind_name(command.kind);
  if (!command.name.empty()) out += " with name <" + command.name + ">";  // only deallocate has a name
  return out;
}

TEST(ExtendedStatementCommand, DeallocateName) {
  EXPECT_EQ(classified("DEALLOCATE s1"), "deallocate <s1>");
  EXPECT_EQ(classified("deallocate s1"), "deallocate <s1>");
  EXPECT_EQ(classified("DeAlLoCaTe s1"), "deallocate <s1>");
  EXPECT_EQ(classified("DEALLOCATE _pg3_0"), "deallocate <_pg3_0>");  // psycopg 3's names
  EXPECT_EQ(classified("DEALLOCATE x$1"), "deallocate <x$1>");        // $ is allowed after the first character
  EXPECT_EQ(classified("DEALLOCATE a1_b2"), "deallocate <a1_b2>");
}

TEST(ExtendedStatementCommand, DeallocatePrepareName) {
  EXPECT_EQ(classified("DEALLOCATE PREPARE s1"), "deallocate <s1>");
  EXPECT_EQ(classified("deallocate prepare s1"), "deallocate <s1>");
  EXPECT_EQ(classified("Deallocate Prepare s1"), "deallocate <s1>");
  // After PREPARE, "prepare" is the name.
  EXPECT_EQ(classified("DEALLOCATE PREPARE prepare"), "deallocate <prepare>");
}

TEST(ExtendedStatementCommand, UnquotedNamesAreLowerCased) {
  EXPECT_EQ(classified("DEALLOCATE MyStmt"), "deallocate <mystmt>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE S1"), "deallocate <s1>");
  // Only ASCII letters are folded; other bytes (here UTF-8 "Ä") are kept, as PostgreSQL does in UTF-8.
  EXPECT_EQ(classified("DEALLOCATE \xc3\x84" "BC"), "deallocate <\xc3\x84" "bc>");
}

TEST(ExtendedStatementCommand, QuotedNamesAreKeptAsWritten) {
  EXPECT_EQ(classified("DEALLOCATE \"MyStmt\""), "deallocate <MyStmt>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"My Stmt\""), "deallocate <My Stmt>");
  EXPECT_EQ(classified("DEALLOCATE \"a\"\"b\""), "deallocate <a\"b>");  // "" is a quote inside
  EXPECT_EQ(classified("DEALLOCATE \"\"\"\""), "deallocate <\">");
  EXPECT_EQ(classified("DEALLOCATE \"1x\""), "deallocate <1x>");
  EXPECT_EQ(classified("DEALLOCATE \"a;b\""), "deallocate <a;b>");
  EXPECT_EQ(classified("DEALLOCATE \"--x\""), "deallocate <--x>");
  EXPECT_EQ(classified("DEALLOCATE \"\xc3\x84\""), "deallocate <\xc3\x84>");
  // Quoted keywords are names, not keywords.
  EXPECT_EQ(classified("DEALLOCATE \"ALL\""), "deallocate <ALL>");
  EXPECT_EQ(classified("DEALLOCATE \"all\""), "deallocate <all>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"all\""), "deallocate <all>");
  EXPECT_EQ(classified("DEALLOCATE \"prepare\""), "deallocate <prepare>");
  // No space is needed between a keyword and a quoted identifier.
  EXPECT_EQ(classified("DEALLOCATE\"x\""), "deallocate <x>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE\"X\";"), "deallocate <X>");
}

TEST(ExtendedStatementCommand, DeallocateAll) {
  EXPECT_EQ(classified("DEALLOCATE ALL"), "deallocate_all");
  EXPECT_EQ(classified("deallocate all"), "deallocate_all");
  EXPECT_EQ(classified("Deallocate All;"), "deallocate_all");
  EXPECT_EQ(classified("DEALLOCATE PREPARE ALL"), "deallocate_all");
  EXPECT_EQ(classified("deallocate prepare all ;"), "deallocate_all");
}

TEST(ExtendedStatementCommand, DiscardAll) {
  EXPECT_EQ(classified("DISCARD ALL"), "discard_all");
  EXPECT_EQ(classified("discard all"), "discard_all");
  EXPECT_EQ(classified("Discard\tAll;"), "discard_all");
  EXPECT_EQ(classified("  DISCARD ALL ;  "), "discard_all");
}

TEST(ExtendedStatementCommand, WhitespaceAndOneTrailingSemicolon) {
  EXPECT_EQ(classified("DEALLOCATE s1;"), "deallocate <s1>");
  EXPECT_EQ(classified("DEALLOCATE s1 ;"), "deallocate <s1>");
  EXPECT_EQ(classified("DEALLOCATE s1;  \n"), "deallocate <s1>");
  EXPECT_EQ(classified("  \n\tDEALLOCATE\n  s1 \r\n"), "deallocate <s1>");
  EXPECT_EQ(classified("\fDEALLOCATE\r\ns1\t;\t"), "deallocate <s1>");
}

TEST(ExtendedStatementCommand, OtherCommandsAreNone) {
  for (std::string_view sql : {
           ""sv,
           " \n\t"sv,
           ";"sv,
           "SELECT 1"sv,
           "PREPARE s1 AS SELECT 1"sv,
           "EXECUTE s1"sv,
           "EXPLAIN DEALLOCATE s1"sv,
           "DEALLOCATE"sv,
           "DEALLOCATE;"sv,
           "DEALLOCATE s1 s2"sv,
           "DEALLOCATE ALL s1"sv,
           "DEALLOCATE PREPARE ALL s1"sv,
           "DEALLOCATE PREPARE s1 s2"sv,
           "DEALLOCATES s1"sv,
           "DEALLOCATEs1"sv,
           "DISCARD"sv,
           "DISCARD PLANS"sv,
           "DISCARD SEQUENCES"sv,
           "DISCARD TEMP"sv,
           "DISCARD ALL ALL"sv,
           "DISCARD ALL s1"sv,
           "DISCARD \"ALL\""sv,
           "DISCARD \"all\""sv,
           "RESET ALL"sv,
           // Quoted keywords are identifiers.
           "\"DEALLOCATE\" s1"sv,
           "\"deallocate\" s1"sv,
           "\"discard\" all"sv,
           "DEALLOCATE \"prepare\" s1"sv,
       }) {
    EXPECT_EQ(classified(sql), "none") << sql;
  }
}

TEST(ExtendedStatementCommand, AnythingElseIsNone) {
  for (std::string_view sql : {
           // More than one command, or more than one semicolon.
           "DEALLOCATE s1; DEALLOCATE s2"sv,
           "DEALLOCATE s1; SELECT 1"sv,
           "SELECT 1; DEALLOCATE s1"sv,
           "DISCARD ALL; SELECT 1"sv,
           "DEALLOCATE s1;;"sv,
           "DEALLOCATE s1 ; ;"sv,
           "; DEALLOCATE s1"sv,
           // Comments and other punctuation.
           "DEALLOCATE s1 -- why"sv,
           "-- why\nDEALLOCATE s1"sv,
           "/* why */ DEALLOCATE s1"sv,
           "DEALLOCATE /* why */ s1"sv,
           "DEALLOCATE s1.x"sv,
           "DEALLOCATE 's1'"sv,
           "DEALLOCATE E's1'"sv,
           "DEALLOCATE U&\"s1\""sv,
           "DEALLOCATE $1"sv,
           "DEALLOCATE (s1)"sv,
           "DEALLOCATE s1,"sv,
           // Not identifiers.
           "DEALLOCATE 1"sv,
           "DEALLOCATE 1abc"sv,
           "DEALLOCATE \"\""sv,            // zero-length quoted identifier
           "DEALLOCATE \"unterminated"sv,
           "DEALLOCATE \"a\"\""sv,          // the last quote pair is a quote inside, unterminated
           "DEALLOCATE \""sv,
           // A NUL inside the text.
           "DEALLOCATE s1\0"sv,
           "DEALLOCATE\0s1"sv,
       }) {
    EXPECT_EQ(classified(sql), "none") << hex(sql);
  }
}

TEST(ExtendedStatementCommand, LargeInputsAreNoneAndSafe) {
  EXPECT_EQ(classified(std::string(1 << 20, 'a')), "none");
  EXPECT_EQ(classified("DEALLOCATE \"" + std::string(1 << 20, 'a')), "none");
  EXPECT_EQ(classified("DEALLOCATE " + std::string(1 << 20, ' ') + "s1 x"), "none");
}

TEST(ExtendedStatementCommand, EveryPrefixIsSafe) {
  // Exact-size heap copies: the classifier must not read past the end of the view, whatever it
  // makes of the prefix (an unterminated quoted identifier, a keyword cut short...).
  for (std::string_view sql : {"DEALLOCATE PREPARE \"a\"\"b\" ;"sv, "deallocate prepare all;"sv, "DISCARD ALL ;"sv,
                               "DEALLOCATE x$1_\xc3\x84;"sv}) {
    for (std::size_t n = 0; n <= sql.size(); ++n) {
      ExactCopy prefix(sql.substr(0, n));
      const StatementCommand command = classify_statement_command(as_sv(prefix.bytes()));
      if (command.kind != StatementCommand::deallocate) {
        EXPECT_EQ(command.name, "") << sql.substr(0, n);
      }
    }
  }
  // A few prefixes with known outcomes.
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"a"), "none");
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"a\""), "deallocate <a>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"a\"\""), "none");
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"a\"\"b\""), "deallocate <a\"b>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE \"a\"\"b\" "), "deallocate <a\"b>");
  EXPECT_EQ(classified("DISCARD AL"), "none");
  EXPECT_EQ(classified("DISCARD A"), "none");
}

TEST(ExtendedStatementCommand, StatementNamedPrepare) {
  // PostgreSQL's grammar has DEALLOCATE name | DEALLOCATE PREPARE name; PREPARE is an unreserved
  // keyword, so it is also a valid name. Checked against PostgreSQL 15.20:
  //   PREPARE prepare AS SELECT 1; DEALLOCATE prepare;  -> DEALLOCATE (the statement is gone)
  //   DEALLOCATE PREPARE;  -> ERROR: prepared statement "prepare" does not exist
  // Both are DEALLOCATE of the statement named "prepare".
  EXPECT_EQ(classified("DEALLOCATE prepare"), "deallocate <prepare>");
  EXPECT_EQ(classified("DEALLOCATE PREPARE"), "deallocate <prepare>");
  EXPECT_EQ(classified("deallocate Prepare;"), "deallocate <prepare>");
}

}  // namespace
}  // namespace sluice::protocol
