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
