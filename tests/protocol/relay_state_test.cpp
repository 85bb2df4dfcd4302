// The relay's protocol bookkeeping (protocol/relay_state.h), driven by real
// message sequences through StreamScanner.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "protocol/relay_state.h"

namespace sluice::protocol {
namespace {

struct Parameters {
  std::vector<std::pair<std::string, std::string>> values;
  void set_parameter(std::string_view name, std::string_view value) { values.emplace_back(name, value); }
};

std::string msg(char type, std::string_view body = {}) {
  std::string out;
  MessageBuilder(out, type).bytes(body).finish();
  return out;
}
Bytes bytes_of(const std::string& s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

struct Relay {
  RelayState state;
  StreamScanner client{1 << 20};
  StreamScanner server{1u << 30};
  Parameters parameters;
  void from_client(const std::string& bytes) {
    FrontendObserver observer{state};
    ASSERT_TRUE(client.feed(bytes_of(bytes), observer));
  }
  void from_server(const std::string& bytes) {
    BackendObserver<Parameters> observer{state, &parameters};
    ASSERT_TRUE(server.feed(bytes_of(bytes), observer));
  }
};

TEST(RelayState, SimpleQueryIsOwedOneReadyForQuery) {
  Relay r;
  r.from_client(msg('Q', std::string("SELECT 1\0", 9)));
  EXPECT_EQ(r.state.pending, 1);
  r.from_server(msg('T', std::string(6, '\0')) + msg('C', std::string("SELECT 1\0", 9)) + msg('Z', "T"));
  EXPECT_EQ(r.state.pending, 0);
  EXPECT_EQ(r.state.transaction, 'T');
}

TEST(RelayState, ExtendedCopyInIgnoresTheSyncSentDuringCopy) {
  // libpq PQexecParams("COPY ... FROM STDIN"): Parse/Bind/Describe/Execute/Sync, then
  // CopyData..., CopyDone, Sync. PostgreSQL ignores the first Sync (it arrives in
  // COPY IN mode) and answers one ReadyForQuery in all.
  Relay r;
  r.from_client(msg('P', std::string("\0x\0\0\0", 5)) + msg('B', std::string(8, '\0')) +
                msg('D', std::string("P\0", 2)) + msg('E', std::string(5, '\0')) + msg('S'));
  EXPECT_EQ(r.state.pending, 1);
  r.from_server(msg('1') + msg('2') + msg('G', std::string(3, '\0')));
  EXPECT_TRUE(r.state.copy_in);
  EXPECT_EQ(r.state.pending, 0);
  r.from_client(msg('d', "1\n") + msg('c') + msg('S'));
  EXPECT_EQ(r.state.pending, 1);
  r.from_server(msg('C', std::string("COPY 1\0", 7)) + msg('Z', "I"));
  EXPECT_EQ(r.state.pending, 0);
  EXPECT_FALSE(r.state.copy_in);
}

TEST(RelayState, SimpleCopyInKeepsItsQueryOwed) {
  Relay r;
  r.from_client(msg('Q', std::string("COPY t FROM STDIN\0", 18)));
  r.from_server(msg('G', std::string(3, '\0')));
  EXPECT_EQ(r.state.pending, 1);
  r.from_client(msg('d', "1\n") + msg('c'));
  r.from_server(msg('C', std::string("COPY 1\0", 7)) + msg('Z', "I"));
  EXPECT_EQ(r.state.pending, 0);
}

TEST(RelayState, FatalIsSeenEvenInATruncatedErrorResponse) {
  std::string body = std::string("SFATAL\0VFATAL\0C57P01\0M", 22) + std::string(StreamScanner::kMaxInspected * 2, 'x');
  body.push_back('\0');
  body.push_back('\0');
  Relay r;
  r.from_server(msg('E', body));
  EXPECT_TRUE(r.state.fatal);
  EXPECT_EQ(r.state.errors, 1);
}

TEST(RelayState, TranslatedSeverityFallsBackToTheNonLocalizedOne) {
  // With lc_messages = 'de_DE', S is translated and V stays English.
  Relay r;
  r.from_server(msg('E', std::string("SFEHLER\0VERROR\0C42601\0Mx\0\0", 26)));
  EXPECT_FALSE(r.state.fatal);
  r.from_server(msg('E', std::string("SSCHWERWIEGEND\0VFATAL\0C57P01\0Mx\0\0", 33)));
  EXPECT_TRUE(r.state.fatal);
}

TEST(RelayState, ParameterStatusReachesTheParameters) {
  Relay r;
  r.from_server(msg('S', std::string("TimeZone\0UTC\0", 13)));
  ASSERT_EQ(r.parameters.values.size(), 1u);
  EXPECT_EQ(r.parameters.values[0].first, "TimeZone");
  EXPECT_EQ(r.parameters.values[0].second, "UTC");
}

TEST(RelayState, PendingNeverGoesBelowZero) {
  Relay r;
  r.from_server(msg('Z', "I") + msg('Z', "I"));
  EXPECT_EQ(r.state.pending, 0);
}

}  // namespace
}  // namespace sluice::protocol
