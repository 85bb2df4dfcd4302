// Unit tests of the prepared statements shared between clients in transaction and statement
// mode (pool/prepared_statements.h): the process-wide StatementRegistry, which gives every
// distinct Parse tail (query text + parameter types) one server-side name, and the per-server
// ServerStatements, which remembers what a server connection has prepared, least recently used
// first out.
#include "pool/prepared_statements.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "protocol/wire.h"
#include "tests/protocol/test_messages.h"

namespace sluice::pool {
namespace {

using namespace std::string_literals;
using protocol::test::as_bytes;
using protocol::test::be16;
using protocol::test::be32;
using protocol::test::cstr;
using protocol::test::ExactCopy;
using protocol::test::hex;

// A Parse tail: query text, then the parameter type OIDs.
std::string tail_of(std::string_view query, std::vector<std::uint32_t> types = {}) {
  std::string out = cstr(query) + be16(static_cast<std::uint16_t>(types.size()));
  for (auto oid : types) out += be32(oid);
  return out;
}

// =====================================================================================
// StatementRegistry
// =====================================================================================

TEST(StatementRegistry, StartsEmpty) {
  StatementRegistry registry;
  EXPECT_EQ(registry.size(), 0u);
}

TEST(StatementRegistry, FirstStatementIsSluice1WithACopyOfTheTail) {
  StatementRegistry registry;
  const std::string tail = tail_of("SELECT $1", {23});
  StatementPtr s = registry.intern(as_bytes(tail));
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->id, 1u);
  EXPECT_EQ(s->server_name, "sluice_1");
  EXPECT_EQ(hex(s->tail), hex(tail));
  EXPECT_NE(static_cast<const void*>(s->tail.data()), static_cast<const void*>(tail.data()));
  EXPECT_EQ(registry.size(), 1u);
}

TEST(StatementRegistry, SameTailGivesTheSameStatement) {
  StatementRegistry registry;
  const std::string tail = tail_of("SELECT * FROM t WHERE id = $1", {20});
  StatementPtr first = registry.intern(as_bytes(tail));
  // Another buffer with the same bytes, as another client's Parse would be.
  ExactCopy again(tail);
  StatementPtr second = registry.intern(again.bytes());
  EXPECT_EQ(first, second);  // the same object
  EXPECT_EQ(second->id, first->id);
  EXPECT_EQ(second->server_name, first->server_name);
  EXPECT_EQ(registry.size(), 1u);
}

TEST(StatementRegistry, DifferentTailsGetDifferentIdsAndNames) {
  StatementRegistry registry;
  const std::vector<std::string> tails = {
      tail_of("SELECT 1"),
      tail_of("SELECT 2"),
      tail_of("select 1"),            // case matters: the text is not normalised
      tail_of("SELECT 1 "),           // so does whitespace
      tail_of("SELECT $1", {}),       // same text, different parameter types
      tail_of("SELECT $1", {23}),
      tail_of("SELECT $1", {25}),
      tail_of("SELECT $1", {0}),
      cstr("SELECT $1"),              // same text, no parameter count at all
      "SELECT $1"s,                   // a prefix of the above
      std::string(),                  // an empty tail is a tail too
  };
  std::vector<StatementPtr> statements;
  for (const std::string& tail : tails) statements.push_back(registry.intern(as_bytes(tail)));
  ASSERT_EQ(registry.size(), tails.size());

  std::set<std::uint64_t> ids;
  std::set<std::string> names;
  for (std::size_t i = 0; i < statements.size(); ++i) {
    SCOPED_TRACE(hex(tails[i]));
    ASSERT_NE(statements[i], nullptr);
    EXPECT_EQ(statements[i]->id, i + 1);  // numbered in order of first sight
    EXPECT_EQ(statements[i]->server_name, "sluice_" + std::to_string(i + 1));
    EXPECT_EQ(hex(statements[i]->tail), hex(tails[i]));
    ids.insert(statements[i]->id);
    names.insert(statements[i]->server_name);
  }
  EXPECT_EQ(ids.size(), tails.size());
  EXPECT_EQ(names.size(), tails.size());

  // Interning them all again, in reverse order, finds the same statements.
  for (std::size_t i = tails.size(); i-- > 0;) {
    EXPECT_EQ(registry.intern(as_bytes(tails[i])), statements[i]) << hex(tails[i]);
  }
  EXPECT_EQ(registry.size(), tails.size());
}

TEST(StatementRegistry, TheTailIsCopiedNotViewed) {
  // The registry's index must not point into the caller's buffer (a client's read buffer is
  // reused for the next message).
  StatementRegistry registry;
  std::string buffer = tail_of("SELECT 1");
  const std::string original = buffer;
  StatementPtr s = registry.intern(as_bytes(buffer));
  std::fill(buffer.begin(), buffer.end(), 'x');
  EXPECT_EQ(hex(s->tail), hex(original));
  EXPECT_EQ(registry.intern(as_bytes(original)), s);
  // The overwritten bytes are a different statement.
  StatementPtr other = registry.intern(as_bytes(buffer));
  EXPECT_NE(other, s);
  EXPECT_EQ(other->id, 2u);
}

TEST(StatementRegistry, KeepsStatementsAliveAfterCallersDropThem) {
  StatementRegistry registry;
  const std::string tail = tail_of("SELECT now()");
  std::uint64_t id = 0;
  {
    StatementPtr s = registry.intern(as_bytes(tail));
    id = s->id;
  }
  StatementPtr again = registry.intern(as_bytes(tail));
  EXPECT_EQ(again->id, id);
  EXPECT_EQ(registry.size(), 1u);
}

TEST(StatementRegistry, RegistriesAreIndependent) {
  StatementRegistry a;
  StatementRegistry b;
  const std::string tail = tail_of("SELECT 1");
  a.intern(as_bytes(tail_of("SELECT 0")));
  StatementPtr in_a = a.intern(as_bytes(tail));
  StatementPtr in_b = b.intern(as_bytes(tail));
  EXPECT_NE(in_a, in_b);
  EXPECT_EQ(in_a->id, 2u);
  EXPECT_EQ(in_b->id, 1u);
}

TEST(StatementRegistry, IndexStartsOverPastItsLimitButNamesAreNeverReused) {
  // The header documents a limit of 100000 distinct statements in the index (kMaxIndexed);
  // past it the index starts over and ids keep growing.
  constexpr std::size_t kLimit = 100000;
  StatementRegistry registry;
  const std::string first_tail = tail_of("SELECT 0");
  StatementPtr first = registry.intern(as_bytes(first_tail));
  for (std::size_t i = 1; i < kLimit; ++i) registry.intern(as_bytes(tail_of("SELECT " + std::to_string(i))));
  ASSERT_EQ(registry.size(), kLimit);
  // Still indexed: the same statement.
  EXPECT_EQ(registry.intern(as_bytes(first_tail)), first);
  ASSERT_EQ(registry.size(), kLimit);

  StatementPtr next = registry.intern(as_bytes(tail_of("SELECT 'next'")));
  EXPECT_EQ(next->id, kLimit + 1);
  EXPECT_EQ(next->server_name, "sluice_" + std::to_string(kLimit + 1));
  EXPECT_EQ(registry.size(), 1u);

  // The first text now gets a new statement under a new name; the old one is still valid for
  // whoever holds it (a server connection that prepared it).
  StatementPtr again = registry.intern(as_bytes(first_tail));
  EXPECT_NE(again, first);
  EXPECT_EQ(again->id, kLimit + 2);
  EXPECT_EQ(again->server_name, "sluice_" + std::to_string(kLimit + 2));
  EXPECT_EQ(first->id, 1u);
  EXPECT_EQ(first->server_name, "sluice_1");
  EXPECT_EQ(hex(first->tail), hex(first_tail));
  EXPECT_EQ(registry.intern(as_bytes(first_tail)), again);
  EXPECT_EQ(registry.size(), 2u);
}

TEST(StatementRegistry, ConcurrentInternsAgree) {
  // Clients on different threads share the registry.
  constexpr int kThreads = 4;
  constexpr int kTails = 200;
  StatementRegistry registry;
  std::vector<std::string> tails;
  for (int i = 0; i < kTails; ++i) tails.push_back(tail_of("SELECT " + std::to_string(i), {23}));

  std::vector<std::vector<StatementPtr>> seen(kThreads, std::vector<StatementPtr>(kTails));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<int> order(kTails);
      for (int i = 0; i < kTails; ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<unsigned>(t)));
      for (int round = 0; round < 5; ++round) {
        for (int i : order) {
          StatementPtr s = registry.intern(as_bytes(tails[i]));
          if (round == 0) seen[t][i] = s;
          else if (seen[t][i] != s) seen[t][i] = nullptr;  // checked below
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();

  EXPECT_EQ(registry.size(), static_cast<std::size_t>(kTails));
  std::set<std::uint64_t> ids;
  for (int i = 0; i < kTails; ++i) {
    ASSERT_NE(seen[0][i], nullptr) << i;
    for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t][i], seen[0][i]) << "thread " << t << " tail " << i;
    EXPECT_EQ(hex(seen[0][i]->tail), hex(tails[i]));
    EXPECT_EQ(seen[0][i]->server_name, "sluice_" + std::to_string(seen[0][i]->id));
    ids.insert(seen[0][i]->id);
  }
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kTails));
  EXPECT_EQ(*ids.begin(), 1u);
  EXPECT_EQ(*ids.rbegin(), static_cast<std::uint64_t>(kTails));
}

// =====================================================================================
// ServerStatements
// =====================================================================================

// Statements made by hand, so that ids are known.
StatementPtr statement(std::uint64_t id) {
  auto s = std::make_shared<SharedStatement>();
  s->id = id;
  s->server_name = "sluice_" + std::to_string(id);
  s->tail = tail_of("SELECT " + std::to_string(id));
  return s;
}

std::uint64_t id_of(const StatementPtr& s) { return s ? s->id : 0; }

TEST(ServerStatements, StartsEmpty) {
  ServerStatements server;
  EXPECT_EQ(server.size(), 0u);
  EXPECT_FALSE(server.use(1));
  EXPECT_EQ(server.size(), 0u);
}

TEST(ServerStatements, AddUnderCapacityEvictsNothing) {
  ServerStatements server;
  for (std::uint64_t id = 1; id <= 3; ++id) {
    EXPECT_EQ(server.add(statement(id), 3), nullptr);
    EXPECT_EQ(server.size(), id);
  }
  for (std::uint64_t id = 1; id <= 3; ++id) EXPECT_TRUE(server.use(id)) << id;
  EXPECT_FALSE(server.use(4));
  EXPECT_FALSE(server.use(0));
}

TEST(ServerStatements, OverCapacityEvictsTheLeastRecentlyAdded) {
  ServerStatements server;
  StatementPtr a = statement(1);
  EXPECT_EQ(server.add(a, 2), nullptr);
  EXPECT_EQ(server.add(statement(2), 2), nullptr);
  StatementPtr victim = server.add(statement(3), 2);
  ASSERT_NE(victim, nullptr);
  EXPECT_EQ(victim, a);  // the very statement, so the caller can Close its server_name
  EXPECT_EQ(victim->server_name, "sluice_1");
  EXPECT_EQ(server.size(), 2u);
  EXPECT_FALSE(server.use(1));
  EXPECT_TRUE(server.use(2));
  EXPECT_TRUE(server.use(3));
}

TEST(ServerStatements, UseMarksMostRecentlyUsed) {
  ServerStatements server;
  server.add(statement(1), 3);
  server.add(statement(2), 3);
  server.add(statement(3), 3);
  EXPECT_TRUE(server.use(1));  // order now 2, 3, 1
  EXPECT_EQ(id_of(server.add(statement(4), 3)), 2u);
  EXPECT_TRUE(server.use(3));  // order now 1, 4, 3
  EXPECT_EQ(id_of(server.add(statement(5), 3)), 1u);
  EXPECT_EQ(id_of(server.add(statement(6), 3)), 4u);
  EXPECT_EQ(id_of(server.add(statement(7), 3)), 3u);
  EXPECT_EQ(server.size(), 3u);
}

TEST(ServerStatements, UsingTheMostRecentChangesNothing) {
  ServerStatements server;
  server.add(statement(1), 2);
  server.add(statement(2), 2);
  EXPECT_TRUE(server.use(2));
  EXPECT_TRUE(server.use(2));
  EXPECT_EQ(id_of(server.add(statement(3), 2)), 1u);
}

TEST(ServerStatements, UseOfAnUnknownIdChangesNothing) {
  ServerStatements server;
  server.add(statement(1), 2);
  server.add(statement(2), 2);
  EXPECT_FALSE(server.use(3));
  EXPECT_EQ(server.size(), 2u);
  EXPECT_EQ(id_of(server.add(statement(3), 2)), 1u);
}

TEST(ServerStatements, AddingAKnownStatementOnlyMarksItRecent) {
  ServerStatements server;
  server.add(statement(1), 2);
  server.add(statement(2), 2);
  // Already there: nothing is evicted even at capacity, and it becomes the most recent.
  EXPECT_EQ(server.add(statement(1), 2), nullptr);
  EXPECT_EQ(server.size(), 2u);
  EXPECT_EQ(id_of(server.add(statement(3), 2)), 2u);
  EXPECT_TRUE(server.use(1));
  EXPECT_TRUE(server.use(3));
}

TEST(ServerStatements, CapacityOne) {
  ServerStatements server;
  EXPECT_EQ(server.add(statement(1), 1), nullptr);
  EXPECT_EQ(id_of(server.add(statement(2), 1)), 1u);
  EXPECT_EQ(id_of(server.add(statement(3), 1)), 2u);
  EXPECT_EQ(server.add(statement(3), 1), nullptr);
  EXPECT_EQ(server.size(), 1u);
  EXPECT_TRUE(server.use(3));
}

TEST(ServerStatements, NeverEvictsTheStatementJustAdded) {
  // "returns the least recently used *other* statement": with capacity 0 the newest stays.
  ServerStatements server;
  EXPECT_EQ(server.add(statement(1), 0), nullptr);
  EXPECT_EQ(server.size(), 1u);
  EXPECT_TRUE(server.use(1));
  EXPECT_EQ(id_of(server.add(statement(2), 0)), 1u);
  EXPECT_EQ(server.size(), 1u);
  EXPECT_TRUE(server.use(2));
}

TEST(ServerStatements, EraseRemovesAndKeepsTheOrderOfTheRest) {
  ServerStatements server;
  for (std::uint64_t id = 1; id <= 4; ++id) server.add(statement(id), 4);
  server.erase(2);
  EXPECT_EQ(server.size(), 3u);
  EXPECT_FALSE(server.use(2));
  server.erase(2);   // twice: nothing
  server.erase(99);  // unknown: nothing
  EXPECT_EQ(server.size(), 3u);
  // Room again for one without eviction; then the order is 1, 3, 4, 5.
  EXPECT_EQ(server.add(statement(5), 4), nullptr);
  EXPECT_EQ(id_of(server.add(statement(6), 4)), 1u);
  EXPECT_EQ(id_of(server.add(statement(7), 4)), 3u);
  // An erased statement can be added again, as the most recent.
  EXPECT_EQ(id_of(server.add(statement(2), 4)), 4u);
  EXPECT_EQ(id_of(server.add(statement(8), 4)), 5u);
  EXPECT_TRUE(server.use(2));
}

TEST(ServerStatements, EraseTheLeastAndTheMostRecent) {
  ServerStatements server;
  for (std::uint64_t id = 1; id <= 3; ++id) server.add(statement(id), 3);
  server.erase(1);
  server.erase(3);
  EXPECT_EQ(server.size(), 1u);
  server.add(statement(4), 2);
  EXPECT_EQ(id_of(server.add(statement(5), 2)), 2u);
  server.erase(4);
  server.erase(5);
  EXPECT_EQ(server.size(), 0u);
  EXPECT_EQ(server.add(statement(6), 1), nullptr);
}

TEST(ServerStatements, ClearForgetsEverything) {
  ServerStatements server;
  for (std::uint64_t id = 1; id <= 3; ++id) server.add(statement(id), 3);
  server.clear();
  EXPECT_EQ(server.size(), 0u);
  for (std::uint64_t id = 1; id <= 3; ++id) EXPECT_FALSE(server.use(id)) << id;
  server.clear();  // twice: fine
  EXPECT_EQ(server.size(), 0u);
  // Usable again, from empty.
  EXPECT_EQ(server.add(statement(2), 2), nullptr);
  EXPECT_EQ(server.add(statement(1), 2), nullptr);
  EXPECT_EQ(id_of(server.add(statement(3), 2)), 2u);
}

TEST(ServerStatements, WorksWithRegistryStatements) {
  StatementRegistry registry;
  ServerStatements server;
  StatementPtr a = registry.intern(as_bytes(tail_of("SELECT 'a'")));
  StatementPtr b = registry.intern(as_bytes(tail_of("SELECT 'b'")));
  EXPECT_FALSE(server.use(a->id));
  EXPECT_EQ(server.add(a, 1), nullptr);
  EXPECT_TRUE(server.use(registry.intern(as_bytes(tail_of("SELECT 'a'")))->id));
  StatementPtr victim = server.add(b, 1);
  EXPECT_EQ(victim, a);
  EXPECT_EQ(victim->server_name, "sluice_1");
}

TEST(ServerStatements, AgreesWithAReferenceLruOverRandomOperations) {
  constexpr std::size_t kCapacity = 8;
  ServerStatements server;
  std::vector<std::uint64_t> model;  // least recently used first
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> op_dist(0, 99);
  std::uniform_int_distribution<std::uint64_t> id_dist(1, 20);

  for (int step = 0; step < 20000; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const int op = op_dist(rng);
    const std::uint64_t id = id_dist(rng);
    auto found = std::find(model.begin(), model.end(), id);
    if (op < 40) {  // use
      const bool known = found != model.end();
      if (known) {
        model.erase(found);
        model.push_back(id);
      }
      ASSERT_EQ(server.use(id), known);
    } else if (op < 85) {  // add
      std::uint64_t expected_victim = 0;
      if (found != model.end()) {
        model.erase(found);
        model.push_back(id);
      } else {
        model.push_back(id);
        if (model.size() > kCapacity) {
          expected_victim = model.front();
          model.erase(model.begin());
        }
      }
      ASSERT_EQ(id_of(server.add(statement(id), kCapacity)), expected_victim);
    } else if (op < 99) {  // erase
      if (found != model.end()) model.erase(found);
      server.erase(id);
    } else {
      model.clear();
      server.clear();
    }
    ASSERT_EQ(server.size(), model.size());
  }
}

}  // namespace
}  // namespace sluice::pool
