// ServerConnection::set_parameter keeps `parameters` current and drops the shared
// list it was known to equal (`reports_as`) exactly when a value changes: sessions
// skip comparing the parameters on attach when they hold that same list.
#include <gtest/gtest.h>

#include <memory>

#include "pool/server_connection.h"

namespace sluice::pool {
namespace {

struct Unconnected {
  asio::io_context context{1};
  ServerConnection conn{Stream(tcp::socket(context)), 1};

  Unconnected() {
    conn.set_parameter("TimeZone", "UTC");
    conn.set_parameter("application_name", "app");
    conn.reports_as = std::make_shared<const ParameterList>(conn.parameters);
  }
};

TEST(ServerParameters, TheSameValueAgainKeepsTheKnownList) {
  Unconnected server;
  const auto known = server.conn.reports_as;
  server.conn.set_parameter("TimeZone", "UTC");
  EXPECT_EQ(server.conn.reports_as, known);
  EXPECT_EQ(*server.conn.reports_as, server.conn.parameters);
}

TEST(ServerParameters, AChangedValueDropsTheKnownList) {
  Unconnected server;
  server.conn.set_parameter("TimeZone", "Europe/Berlin");
  EXPECT_EQ(server.conn.reports_as, nullptr);
  const ParameterList expected{{"TimeZone", "Europe/Berlin"}, {"application_name", "app"}};
  EXPECT_EQ(server.conn.parameters, expected);
}

TEST(ServerParameters, ANewParameterDropsTheKnownList) {
  Unconnected server;
  server.conn.set_parameter("DateStyle", "ISO, DMY");
  EXPECT_EQ(server.conn.reports_as, nullptr);
  EXPECT_EQ(server.conn.parameters.size(), 3u);
  EXPECT_EQ(server.conn.parameters.back(), (std::pair<std::string, std::string>{"DateStyle", "ISO, DMY"}));
}

}  // namespace
}  // namespace sluice::pool

// Pools in transaction mode share connections across the tracked parameters, named
// in any case in a startup packet; every other parameter keeps connections apart.
TEST(ServerParameters, TrackedParametersAreKnownInAnyCase) {
  for (const char* name : {"application_name", "APPLICATION_NAME", "TimeZone", "DateStyle", "client_encoding",
                           "IntervalStyle", "standard_conforming_strings", "default_transaction_read_only"}) {
    EXPECT_TRUE(sluice::pool::is_tracked_parameter(name)) << name;
  }
  for (const char* name : {"", "search_path", "timezone ", "time_zone", "application_nam", "datestyle_",
                           "statement_timeout", "tImEzOnE2"}) {
    EXPECT_FALSE(sluice::pool::is_tracked_parameter(name)) << name;
  }
  // Only letters fold: '@' is 'A' - 1 and '`' is 'a' - 1.
  EXPECT_FALSE(sluice::pool::is_tracked_parameter("@pplication_name"));
  EXPECT_FALSE(sluice::pool::is_tracked_parameter("`pplication_name"));
}

TEST(ServerParameters, TheSharingKeyKeepsOnlyUntrackedParametersInOrder) {
  const sluice::pool::StartupParams params = {{"user", "app"},           {"TimeZone", "UTC"},
                                              {"database", "db"},        {"application_name", "x"},
                                              {"search_path", "s1, s2"}, {"DateStyle", "ISO"}};
  const sluice::pool::StartupParams expected = {{"user", "app"}, {"database", "db"}, {"search_path", "s1, s2"}};
  EXPECT_EQ(sluice::pool::sharing_key(params), expected);
}
