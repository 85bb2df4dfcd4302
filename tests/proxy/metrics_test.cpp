// Tests for proxy/metrics: the Prometheus text rendering (byte-exact output,
// label escaping, numbers, promtool's verdict) and the HTTP server (routes,
// status codes, HEAD, keep-alive, pipelining, request limits, stop()).
#include "proxy/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace sluice::proxy {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// render_prometheus
// ---------------------------------------------------------------------------

MetricsSnapshot small_snapshot() {
  MetricsSnapshot s;
  s.version = "0.1.0";
  s.uptime_seconds = 12.5;
  s.clients = 3;
  s.max_clients = 100;
  s.clients_refused = 2;
  PoolMetrics p;
  p.database = "app";
  p.user = "alice";
  p.mode = "transaction";
  p.clients_active = 2;
  p.clients_waiting = 1;
  p.servers_active = 1;
  p.servers_idle = 4;
  p.servers_connecting = 0;
  p.max_wait_seconds = 0.25;
  p.transactions = 10;
  p.queries = 42;
  p.bytes_received = 1024;
  p.bytes_sent = 4096;
  p.transaction_seconds = 1.5;
  p.query_seconds = 0.75;
  p.wait_seconds = 0.125;
  p.server_connections_opened = 5;
  p.server_connect_failures = 1;
  p.errors_by_class = {{"57", 3}, {"23", 1}};
  s.pools.push_back(p);
  HostMetrics h;
  h.address = "127.0.0.1:5432";
  h.up = true;
  h.consecutive_failures = 0;
  h.times_down = 1;
  s.hosts.push_back(h);
  return s;
}

// The lines every rendering starts with (up to the first per-pool family).
std::string header_lines(const std::string& version, const std::string& uptime, const std::string& clients,
                         const std::string& max_clients, const std::string& refused) {
  return "# HELP sluice_info Sluice version; the value is always 1.\n"
         "# TYPE sluice_info gauge\n"
         "sluice_info{version=\"" +
         version +
         "\"} 1\n"
         "# HELP sluice_uptime_seconds Seconds since Sluice started.\n"
         "# TYPE sluice_uptime_seconds gauge\n"
         "sluice_uptime_seconds " +
         uptime +
         "\n"
         "# HELP sluice_clients Client connections open (all states, admin console included).\n"
         "# TYPE sluice_clients gauge\n"
         "sluice_clients " +
         clients +
         "\n"
         "# HELP sluice_max_clients Most client connections allowed (max_client_conn).\n"
         "# TYPE sluice_max_clients gauge\n"
         "sluice_max_clients " +
         max_clients +
         "\n"
         "# HELP sluice_clients_refused_total Client connections refused because of max_client_conn.\n"
         "# TYPE sluice_clients_refused_total counter\n"
         "sluice_clients_refused_total " +
         refused + "\n";
}

TEST(MetricsRender, SmallSnapshotByteExact) {
  const std::string L = "database=\"app\",user=\"alice\",mode=\"transaction\"";
  const std::string expected =
      header_lines("0.1.0", "12.5", "3", "100", "2") +
      "# HELP sluice_pool_clients Clients of the pool: active (logged in, not waiting) and waiting (for a server "
      "connection).\n"
      "# TYPE sluice_pool_clients gauge\n"
      "sluice_pool_clients{" +
      L +
      ",state=\"active\"} 2\n"
      "sluice_pool_clients{" +
      L +
      ",state=\"waiting\"} 1\n"
      "# HELP sluice_pool_servers Server connections of the pool: active (lent to a client), idle (in the pool), "
      "connecting.\n"
      "# TYPE sluice_pool_servers gauge\n"
      "sluice_pool_servers{" +
      L +
      ",state=\"active\"} 1\n"
      "sluice_pool_servers{" +
      L +
      ",state=\"idle\"} 4\n"
      "sluice_pool_servers{" +
      L +
      ",state=\"connecting\"} 0\n"
      "# HELP sluice_pool_max_wait_seconds Longest current wait of a client of the pool for a server connection, "
      "in seconds.\n"
      "# TYPE sluice_pool_max_wait_seconds gauge\n"
      "sluice_pool_max_wait_seconds{" +
      L +
      "} 0.25\n"
      "# HELP sluice_pool_transactions_total Transactions relayed (ReadyForQuery with status idle).\n"
      "# TYPE sluice_pool_transactions_total counter\n"
      "sluice_pool_transactions_total{" +
      L +
      "} 10\n"
      "# HELP sluice_pool_queries_total Statements relayed (simple Query messages and Executes).\n"
      "# TYPE sluice_pool_queries_total counter\n"
      "sluice_pool_queries_total{" +
      L +
      "} 42\n"
      "# HELP sluice_pool_received_bytes_total Bytes received from clients.\n"
      "# TYPE sluice_pool_received_bytes_total counter\n"
      "sluice_pool_received_bytes_total{" +
      L +
      "} 1024\n"
      "# HELP sluice_pool_sent_bytes_total Bytes sent to clients.\n"
      "# TYPE sluice_pool_sent_bytes_total counter\n"
      "sluice_pool_sent_bytes_total{" +
      L +
      "} 4096\n"
      "# HELP sluice_pool_transaction_seconds_total Time spent inside transactions, in seconds.\n"
      "# TYPE sluice_pool_transaction_seconds_total counter\n"
      "sluice_pool_transaction_seconds_total{" +
      L +
      "} 1.5\n"
      "# HELP sluice_pool_query_seconds_total Time spent inside statements, in seconds.\n"
      "# TYPE sluice_pool_query_seconds_total counter\n"
      "sluice_pool_query_seconds_total{" +
      L +
      "} 0.75\n"
      "# HELP sluice_pool_wait_seconds_total Time clients spent waiting for a server connection, in seconds.\n"
      "# TYPE sluice_pool_wait_seconds_total counter\n"
      "sluice_pool_wait_seconds_total{" +
      L +
      "} 0.125\n"
      "# HELP sluice_pool_server_connections_opened_total Server connections opened.\n"
      "# TYPE sluice_pool_server_connections_opened_total counter\n"
      "sluice_pool_server_connections_opened_total{" +
      L +
      "} 5\n"
      "# HELP sluice_pool_server_connect_failures_total Server connection attempts that failed.\n"
      "# TYPE sluice_pool_server_connect_failures_total counter\n"
      "sluice_pool_server_connect_failures_total{" +
      L +
      "} 1\n"
      "# HELP sluice_pool_errors_total ErrorResponses relayed to clients, by SQLSTATE class.\n"
      "# TYPE sluice_pool_errors_total counter\n"
      "sluice_pool_errors_total{" +
      L +
      ",class=\"57\"} 3\n"
      "sluice_pool_errors_total{" +
      L +
      ",class=\"23\"} 1\n"
      "# HELP sluice_host_up Whether the PostgreSQL server is considered up (1) or down (0).\n"
      "# TYPE sluice_host_up gauge\n"
      "sluice_host_up{address=\"127.0.0.1:5432\"} 1\n"
      "# HELP sluice_host_consecutive_failures Failed connects or checks since the last success.\n"
      "# TYPE sluice_host_consecutive_failures gauge\n"
      "sluice_host_consecutive_failures{address=\"127.0.0.1:5432\"} 0\n"
      "# HELP sluice_host_down_total Times the PostgreSQL server was marked down.\n"
      "# TYPE sluice_host_down_total counter\n"
      "sluice_host_down_total{address=\"127.0.0.1:5432\"} 1\n";
  EXPECT_EQ(render_prometheus(small_snapshot()), expected);
}

// No pools and no hosts: every family still has its HELP and TYPE lines (promtool
// accepts a family without samples), and only the process-wide ones have samples.
TEST(MetricsRender, EmptySnapshot) {
  const std::string expected =
      header_lines("", "0", "0", "0", "0") +
      "# HELP sluice_pool_clients Clients of the pool: active (logged in, not waiting) and waiting (for a server "
      "connection).\n"
      "# TYPE sluice_pool_clients gauge\n"
      "# HELP sluice_pool_servers Server connections of the pool: active (lent to a client), idle (in the pool), "
      "connecting.\n"
      "# TYPE sluice_pool_servers gauge\n"
      "# HELP sluice_pool_max_wait_seconds Longest current wait of a client of the pool for a server connection, "
      "in seconds.\n"
      "# TYPE sluice_pool_max_wait_seconds gauge\n"
      "# HELP sluice_pool_transactions_total Transactions relayed (ReadyForQuery with status idle).\n"
      "# TYPE sluice_pool_transactions_total counter\n"
      "# HELP sluice_pool_queries_total Statements relayed (simple Query messages and Executes).\n"
      "# TYPE sluice_pool_queries_total counter\n"
      "# HELP sluice_pool_received_bytes_total Bytes received from clients.\n"
      "# TYPE sluice_pool_received_bytes_total counter\n"
      "# HELP sluice_pool_sent_bytes_total Bytes sent to clients.\n"
      "# TYPE sluice_pool_sent_bytes_total counter\n"
      "# HELP sluice_pool_transaction_seconds_total Time spent inside transactions, in seconds.\n"
      "# TYPE sluice_pool_transaction_seconds_total counter\n"
      "# HELP sluice_pool_query_seconds_total Time spent inside statements, in seconds.\n"
      "# TYPE sluice_pool_query_seconds_total counter\n"
      "# HELP sluice_pool_wait_seconds_total Time clients spent waiting for a server connection, in seconds.\n"
      "# TYPE sluice_pool_wait_seconds_total counter\n"
      "# HELP sluice_pool_server_connections_opened_total Server connections opened.\n"
      "# TYPE sluice_pool_server_connections_opened_total counter\n"
      "# HELP sluice_pool_server_connect_failures_total Server connection attempts that failed.\n"
      "# TYPE sluice_pool_server_connect_failures_total counter\n"
      "# HELP sluice_pool_errors_total ErrorResponses relayed to clients, by SQLSTATE class.\n"
      "# TYPE sluice_pool_errors_total counter\n"
      "# HELP sluice_host_up Whether the PostgreSQL server is considered up (1) or down (0).\n"
      "# TYPE sluice_host_up gauge\n"
      "# HELP sluice_host_consecutive_failures Failed connects or checks since the last success.\n"
      "# TYPE sluice_host_consecutive_failures gauge\n"
      "# HELP sluice_host_down_total Times the PostgreSQL server was marked down.\n"
      "# TYPE sluice_host_down_total counter\n";
  EXPECT_EQ(render_prometheus(MetricsSnapshot{}), expected);
}

std::vector<std::string> lines_starting_with(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
    start = end + 1;
  }
  return out;
}

TEST(MetricsRender, LabelValuesAreEscaped) {
  MetricsSnapshot s;
  PoolMetrics p;
  p.database = "we\"ird\\db\nname";
  p.user = "u";
  p.mode = "session";
  p.transactions = 7;
  p.errors_by_class = {{"5\"", 1}};
  s.pools.push_back(p);
  HostMetrics h;
  h.address = "db\\1:5432";
  s.hosts.push_back(h);
  s.version = "v\n1";
  const auto text = render_prometheus(s);
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_transactions_total"),
            std::vector<std::string>{
                R"(sluice_pool_transactions_total{database="we\"ird\\db\nname",user="u",mode="session"} 7)"});
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_errors_total"),
            std::vector<std::string>{
                R"(sluice_pool_errors_total{database="we\"ird\\db\nname",user="u",mode="session",class="5\""} 1)"});
  EXPECT_EQ(lines_starting_with(text, "sluice_host_up"),
            std::vector<std::string>{R"(sluice_host_up{address="db\\1:5432"} 1)"});
  EXPECT_EQ(lines_starting_with(text, "sluice_info"), std::vector<std::string>{R"(sluice_info{version="v\n1"} 1)"});
}

// A name from a client's startup packet need not be UTF-8; the Prometheus parser
// rejects such a label value, so bad bytes become U+FFFD (valid UTF-8 is kept).
TEST(MetricsRender, InvalidUtf8InLabelsIsReplaced) {
  MetricsSnapshot s;
  PoolMetrics p;
  p.database = "caf\xc3\xa9";  // valid: é
  p.user =
      "a\xff"
      "b\xc3";  // invalid byte, truncated sequence
  p.mode = "session";
  s.pools.push_back(p);
  const auto text = render_prometheus(s);
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_queries_total"),
            std::vector<std::string>{"sluice_pool_queries_total{database=\"caf\xc3\xa9\",user=\"a\xef\xbf\xbd"
                                     "b\xef\xbf\xbd\",mode=\"session\"} 0"});
}

TEST(MetricsRender, Numbers) {
  MetricsSnapshot s;
  s.uptime_seconds = 1e-7;
  s.clients_refused = std::numeric_limits<std::uint64_t>::max();
  PoolMetrics p;
  p.database = "d";
  p.user = "u";
  p.mode = "session";
  p.max_wait_seconds = std::nan("");
  p.transaction_seconds = std::numeric_limits<double>::infinity();
  p.query_seconds = -1.5;
  p.wait_seconds = 0.1;
  p.clients_waiting = -1;  // a gauge: written as it is
  s.pools.push_back(p);
  const auto text = render_prometheus(s);
  const std::string L = "{database=\"d\",user=\"u\",mode=\"session\"}";
  EXPECT_EQ(lines_starting_with(text, "sluice_uptime_seconds "),
            std::vector<std::string>{"sluice_uptime_seconds 1e-07"});
  EXPECT_EQ(lines_starting_with(text, "sluice_clients_refused_total "),
            std::vector<std::string>{"sluice_clients_refused_total 18446744073709551615"});
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_max_wait_seconds{"),
            std::vector<std::string>{"sluice_pool_max_wait_seconds" + L + " 0"});
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_transaction_seconds_total{"),
            std::vector<std::string>{"sluice_pool_transaction_seconds_total" + L + " 0"});
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_query_seconds_total{"),
            std::vector<std::string>{"sluice_pool_query_seconds_total" + L + " 0"});
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_wait_seconds_total{"),
            std::vector<std::string>{"sluice_pool_wait_seconds_total" + L + " 0.1"});
  EXPECT_EQ(lines_starting_with(text, "sluice_pool_clients{"),
            (std::vector<std::string>{
                "sluice_pool_clients{database=\"d\",user=\"u\",mode=\"session\",state=\"active\"} 0",
                "sluice_pool_clients{database=\"d\",user=\"u\",mode=\"session\",state=\"waiting\"} -1"}));
  for (const char* bad : {" nan\n", " inf\n", " -inf\n", " NaN\n", " +Inf\n", " -Inf\n"}) {
    EXPECT_EQ(text.find(bad), std::string::npos) << bad;
  }
}

MetricsSnapshot rich_snapshot() {
  MetricsSnapshot s = small_snapshot();
  s.uptime_seconds = 86400.123456789;
  s.clients_refused = 12345678901234ull;
  PoolMetrics p2 = s.pools[0];
  p2.database = "we\"ird\\db\nname \xff";
  p2.user = "bob";
  p2.mode = "session";
  p2.max_wait_seconds = 1e-9;
  p2.transaction_seconds = 1e12;
  p2.errors_by_class = {{"08", 2}, {"57", 1}, {"XX", 9}};
  s.pools.push_back(p2);
  PoolMetrics p3;
  p3.database = "empty";
  p3.user = "nobody";
  p3.mode = "statement";
  s.pools.push_back(p3);
  HostMetrics down;
  down.address = "[::1]:5433";
  down.up = false;
  down.consecutive_failures = 4;
  down.times_down = 2;
  s.hosts.push_back(down);
  return s;
}

constexpr const char* kPromtool = "/usr/bin/promtool";

// Runs `promtool check metrics` on `text`; returns its exit status and output.
std::pair<int, std::string> promtool_check(const std::string& text) {
  char path[] = "/tmp/sluice-metrics-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return {-1, "mkstemp failed"};
  ::close(fd);
  {
    std::ofstream out(path, std::ios::binary);
    out << text;
  }
  const std::string command = std::string(kPromtool) + " check metrics < " + path + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ::unlink(path);
    return {-1, "popen failed"};
  }
  std::string output;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, n);
  const int status = ::pclose(pipe);
  ::unlink(path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(MetricsRender, PassesPromtool) {
  if (::access(kPromtool, X_OK) != 0) {
    GTEST_SKIP() << kPromtool << " not found: install the Debian package 'prometheus' (scripts/install-deps.sh does)";
  }
  for (const auto& snapshot : {rich_snapshot(), small_snapshot(), MetricsSnapshot{}}) {
    const auto text = render_prometheus(snapshot);
    const auto [status, output] = promtool_check(text);
    EXPECT_EQ(status, 0) << "promtool says:\n" << output << "\nfor:\n" << text;
    EXPECT_EQ(output, "") << text;  // no lint warnings either
  }
}

// ---------------------------------------------------------------------------
// MetricsServer over HTTP on loopback
// ---------------------------------------------------------------------------

namespace http = boost::beast::http;
using HttpResponse = http::response<http::string_body>;

std::uint16_t pick_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A blocking loopback client with timeouts (poll), parsing responses with
// Beast's parser so that framing (Content-Length, keep-alive) is checked too.
class Client {
 public:
  explicit Client(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    connect_errno_ = errno;
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  int connect_errno() const { return connect_errno_; }

  bool send(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  // One response; nullopt on EOF, error or timeout before it is complete.
  std::optional<HttpResponse> read_response(bool head = false, std::chrono::milliseconds timeout = 5s) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.skip(head);
    parser.body_limit(1 << 20);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (!pending_.empty()) {
        boost::beast::error_code ec;
        const auto used = parser.put(boost::asio::buffer(pending_), ec);
        pending_.erase(0, used);
        if (ec && ec != http::error::need_more) {
          ADD_FAILURE() << "bad response: " << ec.message();
          return std::nullopt;
        }
        if (parser.is_done()) return parser.release();
        if (used > 0) continue;
      }
      const int got = receive(deadline);
      if (got <= 0) {
        if (got == 0 && parser.is_header_done()) {  // EOF ends a body without length
          boost::beast::error_code ec;
          parser.put_eof(ec);
          if (!ec && parser.is_done()) return parser.release();
        }
        return std::nullopt;
      }
    }
  }

  // True when the server closes the connection (EOF or reset) within the timeout.
  bool closed_by_peer(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const int got = receive(deadline);
      if (got == 0 || got == -1) return true;
      if (got == -2) return false;  // timeout
    }
  }

  const std::string& leftover() const { return pending_; }

 private:
  // >0 bytes appended to pending_, 0 EOF, -1 error, -2 timeout.
  int receive(std::chrono::steady_clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return -2;
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready == 0) return -2;
    if (ready < 0) return -1;
    char buf[4096];
    const auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) return -1;
    pending_.append(buf, static_cast<std::size_t>(n));
    return static_cast<int>(n);
  }

  int fd_ = -1;
  bool connected_ = false;
  int connect_errno_ = 0;
  std::string pending_;
};

std::string get(const std::string& target, const std::string& method = "GET", const std::string& extra = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra + "\r\n";
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MetricsServer::Handlers handlers;
    handlers.snapshot = [this] {
      ++snapshots_;
      return small_snapshot();
    };
    handlers.not_ready_reason = [this] {
      std::lock_guard lock(mutex_);
      return reason_;
    };
    // The interface takes a port, not an endpoint to report: pick a free one and retry on a race.
    for (int attempt = 0; attempt < 5 && !server_; ++attempt) {
      port_ = pick_free_port();
      try {
        server_ = std::make_unique<MetricsServer>(io_, "127.0.0.1", port_, handlers);
      } catch (const std::runtime_error&) {
      }
    }
    ASSERT_TRUE(server_) << "could not listen on a free loopback port";
    server_->start();  // queued before run(), so run() has work from the start
    runner_ = std::async(std::launch::async, [this] { io_.run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    if (runner_.valid()) {
      // With no work guard, run() returns once the listener and every connection are gone.
      ASSERT_EQ(runner_.wait_for(5s), std::future_status::ready) << "io_context still busy after stop()";
    }
  }

  void set_reason(std::string reason) {
    std::lock_guard lock(mutex_);
    reason_ = std::move(reason);
  }

  asio::io_context io_;
  std::unique_ptr<MetricsServer> server_;
  std::future<void> runner_;
  std::uint16_t port_ = 0;
  std::atomic<int> snapshots_{0};
  std::mutex mutex_;
  std::string reason_;
};

TEST_F(MetricsServerTest, MetricsBody) {
  Client client(port_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send(get("/metrics")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::ok);
  EXPECT_EQ(response->at(http::field::content_type), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(response->body(), render_prometheus(small_snapshot()));
  EXPECT_TRUE(response->keep_alive());
  EXPECT_EQ(snapshots_.load(), 1);
}

TEST_F(MetricsServerTest, QueryStringIsIgnored) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/metrics?name[]=sluice_info")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::ok);
  EXPECT_EQ(response->body(), render_prometheus(small_snapshot()));
}

TEST_F(MetricsServerTest, HeadHasLengthButNoBody) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/metrics", "HEAD")));
  auto response = client.read_response(/*head=*/true);
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::ok);
  EXPECT_EQ(response->at(http::field::content_length), std::to_string(render_prometheus(small_snapshot()).size()));
  EXPECT_EQ(response->body(), "");
  // Nothing after the header: the next response on the connection starts clean.
  ASSERT_TRUE(client.send(get("/healthz")));
  auto next = client.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->result(), http::status::ok);
  EXPECT_EQ(next->body(), "ok\n");
}

TEST_F(MetricsServerTest, Healthz) {
  set_reason("pools not loaded");  // liveness does not depend on readiness
  Client client(port_);
  ASSERT_TRUE(client.send(get("/healthz")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::ok);
  EXPECT_EQ(response->at(http::field::content_type), "text/plain; charset=utf-8");
  EXPECT_EQ(response->body(), "ok\n");
}

TEST_F(MetricsServerTest, ReadyzFollowsTheHandler) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/readyz")));
  auto ready = client.read_response();
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->result(), http::status::ok);
  EXPECT_EQ(ready->body(), "ready\n");

  set_reason("shutting down");
  ASSERT_TRUE(client.send(get("/readyz")));
  auto not_ready = client.read_response();
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->result(), http::status::service_unavailable);
  EXPECT_EQ(not_ready->body(), "shutting down\n");
  EXPECT_TRUE(not_ready->keep_alive());
}

TEST_F(MetricsServerTest, UnknownPathIs404) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/nope")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::not_found);
  ASSERT_TRUE(client.send(get("/metrics/")));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::not_found);
  EXPECT_EQ(snapshots_.load(), 0);
}

TEST_F(MetricsServerTest, OtherMethodsAre405) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/metrics", "POST", "Content-Length: 5\r\n") + "hello"));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::method_not_allowed);
  EXPECT_EQ(response->at(http::field::allow), "GET, HEAD");
  ASSERT_TRUE(client.send(get("/readyz", "DELETE")));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::method_not_allowed);
  EXPECT_EQ(snapshots_.load(), 0);
}

TEST_F(MetricsServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  Client client(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client.send(get("/metrics")));
    auto response = client.read_response();
    ASSERT_TRUE(response) << "request " << i;
    EXPECT_EQ(response->result(), http::status::ok);
    EXPECT_EQ(response->body(), render_prometheus(small_snapshot()));
  }
  EXPECT_EQ(snapshots_.load(), 3);
}

TEST_F(MetricsServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/healthz") + get("/nope") + get("/readyz")));
  auto first = client.read_response();
  auto second = client.read_response();
  auto third = client.read_response();
  ASSERT_TRUE(first && second && third);
  EXPECT_EQ(first->body(), "ok\n");
  EXPECT_EQ(second->result(), http::status::not_found);
  EXPECT_EQ(third->body(), "ready\n");
}

TEST_F(MetricsServerTest, ConnectionCloseIsHonoured) {
  Client client(port_);
  ASSERT_TRUE(client.send(get("/healthz", "GET", "Connection: close\r\n")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_FALSE(response->keep_alive());
  EXPECT_TRUE(client.closed_by_peer());
}

TEST_F(MetricsServerTest, Http10WithoutKeepAliveIsClosed) {
  Client client(port_);
  ASSERT_TRUE(client.send("GET /healthz HTTP/1.0\r\n\r\n"));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->version(), 10u);
  EXPECT_EQ(response->body(), "ok\n");
  EXPECT_TRUE(client.closed_by_peer());
}

TEST_F(MetricsServerTest, OversizedBodyIsRefused) {
  Client client(port_);
  // Only the header is sent: the declared length alone is over the limit.
  ASSERT_TRUE(client.send(get("/metrics", "POST", "Content-Length: 100000\r\n")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::payload_too_large);
  EXPECT_FALSE(response->keep_alive());
  EXPECT_TRUE(client.closed_by_peer());
}

TEST_F(MetricsServerTest, OversizedHeaderIsRefusedAndTheServerCarriesOn) {
  {
    Client client(port_);
    ASSERT_TRUE(client.connected());
    client.send(get("/metrics", "GET", "X-Padding: " + std::string(20000, 'a') + "\r\n"));
    // The server answers 431 and closes with the rest of the header unread, so the
    // answer may be lost to the reset; either way the connection ends.
    if (auto response = client.read_response()) {
      EXPECT_EQ(response->result(), http::status::request_header_fields_too_large);
      EXPECT_FALSE(response->keep_alive());
    }
    EXPECT_TRUE(client.closed_by_peer());
  }
  Client again(port_);
  ASSERT_TRUE(again.send(get("/healthz")));
  auto response = again.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::ok);
}

TEST_F(MetricsServerTest, GarbageIs400) {
  Client client(port_);
  ASSERT_TRUE(client.send("NOT HTTP AT ALL\r\n\r\n"));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::bad_request);
  EXPECT_TRUE(client.closed_by_peer());
}

TEST_F(MetricsServerTest, FailingHandlerIs500AndTheConnectionLives) {
  // Replace the server with one whose snapshot throws.
  server_->stop();
  ASSERT_EQ(runner_.wait_for(5s), std::future_status::ready);
  io_.restart();
  server_.reset();
  MetricsServer::Handlers handlers;
  handlers.snapshot = []() -> MetricsSnapshot { throw std::runtime_error("no snapshot today"); };
  server_ = std::make_unique<MetricsServer>(io_, "127.0.0.1", port_, handlers);
  server_->start();
  runner_ = std::async(std::launch::async, [this] { io_.run(); });

  Client client(port_);
  ASSERT_TRUE(client.send(get("/metrics")));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::internal_server_error);
  // No not_ready_reason handler: ready.
  ASSERT_TRUE(client.send(get("/readyz")));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->result(), http::status::ok);
}

TEST_F(MetricsServerTest, StopClosesTheListenerAndOpenConnections) {
  Client idle(port_);  // connected, never sends
  Client client(port_);
  ASSERT_TRUE(client.send(get("/healthz")));
  ASSERT_TRUE(client.read_response());
  server_->stop();
  EXPECT_TRUE(client.closed_by_peer());
  EXPECT_TRUE(idle.closed_by_peer());
  ASSERT_EQ(runner_.wait_for(5s), std::future_status::ready) << "io_context still busy after stop()";
  Client late(port_);
  EXPECT_FALSE(late.connected());
  EXPECT_EQ(late.connect_errno(), ECONNREFUSED);
}

TEST(MetricsServerSetup, ListenErrorsNameTheAddress) {
  asio::io_context io;
  // A port another socket listens on.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const auto port = ntohs(addr.sin_port);
  try {
    MetricsServer server(io, "127.0.0.1", port, {});
    ADD_FAILURE() << "expected a listen error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos) << e.what();
  }
  ::close(fd);
  EXPECT_THROW(MetricsServer(io, "not-an-address", 9187, {}), std::runtime_error);
}

}  // namespace
}  // namespace sluice::proxy
