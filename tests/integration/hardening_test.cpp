// Hardening (issue 8, first part): one client must not be able to hurt others
// through Sluice's memory. A client that asks for a result of about 1 GB and never
// reads it: PostgreSQL ends up blocked writing to Sluice (wait_event ClientWrite),
// Sluice's memory stays bounded (back-pressure, not buffering), and other clients
// are served meanwhile. Run in session and transaction mode.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "support/harness.h"

namespace sluice::test {
namespace {

using namespace std::chrono_literals;

std::string config(const std::string& mode) {
  std::string toml = default_config(3);
  const std::string from = "mode = \"session\"";
  toml.replace(toml.find(from), from.size(), "mode = \"" + mode + "\"");
  return toml;
}

// Waits (bounded) until the statement of the client named `application` is blocked
// writing its result (wait_event ClientWrite): the buffers on the way are full.
::testing::AssertionResult blocked_writing_to(PostgresServer& pg, const std::string& application) {
  std::string state;
  const bool blocked = wait_for(
      [&] {
        state = pg.query_value(
            "SELECT coalesce(string_agg(coalesce(wait_event, '-'), ','), '') FROM pg_stat_activity "
            "WHERE application_name = '" + application + "' AND state = 'active'");
        return state == "ClientWrite";
      },
      60s);
  if (blocked) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "PostgreSQL never blocked writing the result (wait events: " << state
                                       << ")\n";
}

class SlowReaderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SlowReaderTest, AClientThatNeverReadsAHugeResultDoesNotGrowSluice) {
  SluiceProcess sluice(config(GetParam()));
  auto& pg = PostgresServer::shared();
  const std::string conninfo = sluice.conninfo("sluice_test", "app", "app_pw");

  // Warm up so that the baseline includes the relay's buffers and a pooled connection.
  {
    PgConn warm = connect(conninfo);
    ASSERT_EQ(PQstatus(warm.get()), CONNECTION_OK) << PQerrorMessage(warm.get());
    PgResult r(PQexec(warm.get(), "SELECT repeat('x', 100000) FROM generate_series(1, 20)"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(warm.get());
  }
  const long baseline = rss_kib(sluice.pid());
  ASSERT_GT(baseline, 0);

  PgConn stalled = connect(conninfo);
  ASSERT_EQ(PQstatus(stalled.get()), CONNECTION_OK) << PQerrorMessage(stalled.get());
  PgResult tag(PQexec(stalled.get(), "SET application_name = 'slow_reader'"));
  ASSERT_EQ(PQresultStatus(tag.get()), PGRES_COMMAND_OK) << PQerrorMessage(stalled.get());
  // About 1 GB of rows; the client never calls PQconsumeInput, so nothing is read.
  ASSERT_EQ(PQsendQuery(stalled.get(), "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)"), 1);

  // PostgreSQL blocks once the socket buffers between it and the client are full.
  ASSERT_TRUE(blocked_writing_to(pg, "slow_reader")) << tail_lines(sluice.log(), 30);
  const long stalled_rss = rss_kib(sluice.pid());
  std::printf("[ INFO     ] %s mode: Sluice RSS %ld KiB before, %ld KiB with PostgreSQL blocked on the unread result\n",
              GetParam().c_str(), baseline, stalled_rss);
  // A few relay buffers (at most 128 KiB each) may be held; 1 GB must not be.
  EXPECT_LT(stalled_rss - baseline, 32 * 1024) << "Sluice buffered the unread result";

  // Other clients are served meanwhile.
  PgConn other = connect(conninfo);
  ASSERT_EQ(PQstatus(other.get()), CONNECTION_OK) << PQerrorMessage(other.get());
  PgResult one(PQexec(other.get(), "SELECT 1"));
  EXPECT_EQ(PQresultStatus(one.get()), PGRES_TUPLES_OK) << PQerrorMessage(other.get());

  // The stalled client leaves: its statement is cancelled and its backend freed.
  stalled.reset();
  EXPECT_TRUE(wait_for([&] {
    return pg.query_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slow_reader' AND "
                          "state = 'active'") == "0";
  })) << tail_lines(sluice.log(), 30);
  EXPECT_TRUE(sluice.running());
}

// A client that reads a large result only once PostgreSQL is blocked writing it: Sluice's
// writes to the client were cut short and finished later (in transaction mode, the lone
// exchange hands its reply to a coroutine then). Every row arrives, and the client carries on.
TEST_P(SlowReaderTest, AClientThatReadsALargeResultLateGetsAllOfItAndCarriesOn) {
  SluiceProcess sluice(config(GetParam()));
  auto& pg = PostgresServer::shared();
  const std::string conninfo = sluice.conninfo("sluice_test", "app", "app_pw");
  PgConn late = connect(conninfo + " application_name=late_reader");
  ASSERT_EQ(PQstatus(late.get()), CONNECTION_OK) << PQerrorMessage(late.get());
  PgResult first(PQexec(late.get(), "SELECT 1"));  // in transaction mode the next request wakes a parked client
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_TUPLES_OK) << PQerrorMessage(late.get());

  constexpr int kRows = 40000;  // about 40 MB: more than the socket buffers on the way hold
  ASSERT_EQ(PQsendQuery(late.get(), ("SELECT i, repeat('x', 1000) FROM generate_series(1, " + std::to_string(kRows) +
                                     ") AS i")
                                        .c_str()),
            1);
  ASSERT_TRUE(blocked_writing_to(pg, "late_reader")) << tail_lines(sluice.log(), 30);

  long rows = 0;
  long last = 0;
  bool in_order = true;
  while (PGresult* raw = PQgetResult(late.get())) {
    PgResult r(raw);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      const long value = std::stol(PQgetvalue(r.get(), i, 0));
      in_order = in_order && value == last + 1;
      last = value;
      ++rows;
    }
  }
  EXPECT_EQ(rows, kRows);
  EXPECT_TRUE(in_order) << "rows arrived out of order";
  PgResult next(PQexec(late.get(), "SELECT 2"));
  ASSERT_EQ(PQresultStatus(next.get()), PGRES_TUPLES_OK) << PQerrorMessage(late.get()) << tail_lines(sluice.log(), 30);
  EXPECT_STREQ(PQgetvalue(next.get(), 0, 0), "2");
  EXPECT_TRUE(sluice.running());
}

INSTANTIATE_TEST_SUITE_P(Modes, SlowReaderTest, ::testing::Values("session", "transaction"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace sluice::test
