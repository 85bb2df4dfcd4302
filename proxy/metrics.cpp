#include "proxy/metrics.h"

#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include "pool/log.h"
#include "proxy/slow_log.h"  // utf8_sequence_length

namespace sluice::proxy {
namespace {

const std::shared_ptr<spdlog::logger>& log() {
  static auto logger = module_logger("metrics");
  return logger;
}

// ---------------------------------------------------------------------------
// Prometheus text exposition format 0.0.4
// ---------------------------------------------------------------------------

// Label values: \ " and newline escaped; bytes that are not valid UTF-8 become
// U+FFFD (database and user names can come from a client's startup packet, and
// the Prometheus parser rejects a label value that is not UTF-8).
void append_label_value(std::string& out, std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const char ch = text[i];
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '"') {
      out += "\\\"";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      const std::size_t length = utf8_sequence_length(text, i);
      if (length == 0) {
        out += "\xef\xbf\xbd";
        ++i;
      } else {
        out.append(text.substr(i, length));
        i += length;
      }
      continue;
    }
    ++i;
  }
}

void append_number(std::string& out, std::int64_t value) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, r.ptr);
}

void append_number(std::string& out, std::uint64_t value) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, r.ptr);
}

// Shortest text that reads back as the same double ("0.25", "12", "1e-07").
// Every double in a snapshot is a duration: NaN, infinities and negative values
// (a clock step, a bug upstream) are written as 0 rather than breaking the scrape.
void append_number(std::string& out, double value) {
  if (!(value > 0) || !std::isfinite(value)) value = 0;  // NaN, -0.0 and negatives too
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, r.ptr);
}

void append_number(std::string& out, int value) { append_number(out, static_cast<std::int64_t>(value)); }

class Exposition {
 public:
  // Starts a family: its # HELP and # TYPE lines. Help texts are constants
  // without backslashes or newlines, so they need no escaping.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  // `labels` is the already escaped inside of the braces (empty: no braces);
  // `extra_name`/`extra_value` (unescaped) is appended as one more label.
  template <class Number>
  void sample(std::string_view name, std::string_view labels, Number value, std::string_view extra_name = {},
              std::string_view extra_value = {}) {
    out_ += name;
    if (!labels.empty() || !extra_name.empty()) {
      out_ += '{';
      out_ += labels;
      if (!extra_name.empty()) {
        if (!labels.empty()) out_ += ',';
        out_ += extra_name;
        out_ += "=\"";
        append_label_value(out_, extra_value);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    append_number(out_, value);
    out_ += '\n';
  }

  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string pool_labels(const PoolMetrics& pool) {
  std::string labels = "database=\"";
  append_label_value(labels, pool.database);
  labels += "\",user=\"";
  append_label_value(labels, pool.user);
  labels += "\",mode=\"";
  append_label_value(labels, pool.mode);
  labels += '"';
  return labels;
}

std::string host_labels(const HostMetrics& host) {
  std::string labels = "address=\"";
  append_label_value(labels, host.address);
  labels += '"';
  return labels;
}

// Per-pool families with one series per pool, in output order after the
// state-labelled ones. The getter returns the value of one pool.
template <class T>
struct PoolFamily {
  std::string_view name;
  std::string_view type;
  std::string_view help;
  T (*get)(const PoolMetrics&);
};

constexpr PoolFamily<double> kPoolMaxWait{
    "sluice_pool_max_wait_seconds", "gauge",
    "Longest current wait of a client of the pool for a server connection, in seconds.",
    [](const PoolMetrics& p) { return p.max_wait_seconds; }};

constexpr PoolFamily<std::uint64_t> kPoolIntegerCounters[] = {
    {"sluice_pool_transactions_total", "counter", "Transactions relayed (ReadyForQuery with status idle).",
     [](const PoolMetrics& p) { return p.transactions; }},
    {"sluice_pool_queries_total", "counter", "Statements relayed (simple Query messages and Executes).",
     [](const PoolMetrics& p) { return p.queries; }},
    {"sluice_pool_received_bytes_total", "counter", "Bytes received from clients.",
     [](const PoolMetrics& p) { return p.bytes_received; }},
    {"sluice_pool_sent_bytes_total", "counter", "Bytes sent to clients.",
     [](const PoolMetrics& p) { return p.bytes_sent; }},
};

constexpr PoolFamily<double> kPoolSecondsCounters[] = {
    {"sluice_pool_transaction_seconds_total", "counter", "Time spent inside transactions, in seconds.",
     [](const PoolMetrics& p) { return p.transaction_seconds; }},
    {"sluice_pool_query_seconds_total", "counter", "Time spent inside statements, in seconds.",
     [](const PoolMetrics& p) { return p.query_seconds; }},
    {"sluice_pool_wait_seconds_total", "counter", "Time clients spent waiting for a server connection, in seconds.",
     [](const PoolMetrics& p) { return p.wait_seconds; }},
};

constexpr PoolFamily<std::uint64_t> kPoolConnectCounters[] = {
    {"sluice_pool_server_connections_opened_total", "counter", "Server connections opened.",
     [](const PoolMetrics& p) { return p.server_connections_opened; }},
    {"sluice_pool_server_connect_failures_total", "counter", "Server connection attempts that failed.",
     [](const PoolMetrics& p) { return p.server_connect_failures; }},
};

template <class T>
void render_pool_family(Exposition& out, const PoolFamily<T>& family, const std::vector<std::string>& labels,
                        const std::vector<PoolMetrics>& pools) {
  out.family(family.name, family.type, family.help);
  for (std::size_t i = 0; i < pools.size(); ++i) out.sample(family.name, labels[i], family.get(pools[i]));
}

}  // namespace

std::string render_prometheus(const MetricsSnapshot& s) {
  Exposition out;
  out.family("sluice_info", "gauge", "Sluice version; the value is always 1.");
  out.sample("sluice_info", {}, 1, "version", s.version);
  out.family("sluice_uptime_seconds", "gauge", "Seconds since Sluice started.");
  out.sample("sluice_uptime_seconds", {}, s.uptime_seconds);
  out.family("sluice_clients", "gauge", "Client connections open (all states, admin console included).");
  out.sample("sluice_clients", {}, s.clients);
  out.family("sluice_max_clients", "gauge", "Most client connections allowed (max_client_conn).");
  out.sample("sluice_max_clients", {}, s.max_clients);
  out.family("sluice_clients_refused_total", "counter", "Client connections refused because of max_client_conn.");
  out.sample("sluice_clients_refused_total", {}, s.clients_refused);

  std::vector<std::string> labels;
  labels.reserve(s.pools.size());
  for (const auto& pool : s.pools) labels.push_back(pool_labels(pool));

  out.family("sluice_pool_clients", "gauge",
             "Clients of the pool: active (logged in, not waiting) and waiting (for a server connection).");
  for (std::size_t i = 0; i < s.pools.size(); ++i) {
    out.sample("sluice_pool_clients", labels[i], s.pools[i].clients_active, "state", "active");
    out.sample("sluice_pool_clients", labels[i], s.pools[i].clients_waiting, "state", "waiting");
  }
  out.family("sluice_pool_servers", "gauge",
             "Server connections of the pool: active (lent to a client), idle (in the pool), connecting.");
  for (std::size_t i = 0; i < s.pools.size(); ++i) {
    out.sample("sluice_pool_servers", labels[i], s.pools[i].servers_active, "state", "active");
    out.sample("sluice_pool_servers", labels[i], s.pools[i].servers_idle, "state", "idle");
    out.sample("sluice_pool_servers", labels[i], s.pools[i].servers_connecting, "state", "connecting");
  }
  render_pool_family(out, kPoolMaxWait, labels, s.pools);
  for (const auto& family : kPoolIntegerCounters) render_pool_family(out, family, labels, s.pools);
  for (const auto& family : kPoolSecondsCounters) render_pool_family(out, family, labels, s.pools);
  for (const auto& family : kPoolConnectCounters) render_pool_family(out, family, labels, s.pools);
  out.family("sluice_pool_errors_total", "counter", "ErrorResponses relayed to clients, by SQLSTATE class.");
  for (std::size_t i = 0; i < s.pools.size(); ++i) {
    for (const auto& [error_class, count] : s.pools[i].errors_by_class) {
      out.sample("sluice_pool_errors_total", labels[i], count, "class", error_class);
    }
  }

  labels.clear();
  for (const auto& host : s.hosts) labels.push_back(host_labels(host));
  out.family("sluice_host_up", "gauge", "Whether the PostgreSQL server is considered up (1) or down (0).");
  for (std::size_t i = 0; i < s.hosts.size(); ++i) {
    out.sample("sluice_host_up", labels[i], s.hosts[i].up ? 1 : 0);
  }
  out.family("sluice_host_consecutive_failures", "gauge", "Failed connects or checks since the last success.");
  for (std::size_t i = 0; i < s.hosts.size(); ++i) {
    out.sample("sluice_host_consecutive_failures", labels[i], s.hosts[i].consecutive_failures);
  }
  out.family("sluice_host_down_total", "counter", "Times the PostgreSQL server was marked down.");
  for (std::size_t i = 0; i < s.hosts.size(); ++i) {
    out.sample("sluice_host_down_total", labels[i], s.hosts[i].times_down);
  }
  return out.take();
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

namespace {
namespace beast = boost::beast;
namespace http = beast::http;

// Bounds per HTTP connection: a request (header, and body, which is read and
// ignored) of at most 8 KiB each, a read buffer of at most 8 KiB, 30 s to send
// a request or to take a response, and at most 64 connections at once.
constexpr std::size_t kMaxHeaderBytes = 8 * 1024;
constexpr std::size_t kMaxBodyBytes = 8 * 1024;
constexpr std::size_t kMaxBufferBytes = 8 * 1024;
constexpr auto kIdleTimeout = std::chrono::seconds(30);
constexpr std::size_t kMaxConnections = 64;

constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextContentType = "text/plain; charset=utf-8";

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

}  // namespace

// All state lives on one strand: the acceptor, every HTTP connection and the
// handler calls (so the handlers are never called concurrently). Scrapes are
// rare and small; one strand costs nothing and needs no locks.
struct MetricsServer::Impl {
  Impl(asio::io_context& io, std::string address, Handlers h)
      : strand(asio::make_strand(io)), acceptor(strand), name(std::move(address)), handlers(std::move(h)) {}

  // Both coroutines take `self` so that their frames keep the Impl alive: they
  // may start or end after the MetricsServer is gone.
  static awaitable<void> accept_loop(std::shared_ptr<Impl> self);
  static awaitable<void> session(std::shared_ptr<Impl> self, tcp::socket socket, std::uint64_t id);
  Response respond(const Request& request, std::uint64_t id);
  void shutdown();

  asio::strand<asio::io_context::executor_type> strand;
  tcp::acceptor acceptor;
  std::string name;  // "host:port", for log lines
  Handlers handlers;
  // Below: on the strand only.
  bool started = false;
  bool stopped = false;
  std::uint64_t next_id = 0;
  std::unordered_map<std::uint64_t, beast::tcp_stream*> connections;
};

namespace {

Response make_response(const Request& request, http::status status, std::string_view content_type, std::string body) {
  Response response{status, request.version()};
  response.set(http::field::content_type, content_type);
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

std::string_view path_of(std::string_view target) {
  const auto query = target.find('?');
  return query == std::string_view::npos ? target : target.substr(0, query);
}

// What to answer a request that could not be read, or nothing (the client left,
// timed out, or the server is stopping: just close).
std::optional<http::status> status_for_read_error(const error_code& ec, bool header_done) {
  if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
      ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::bad_descriptor ||
      ec == http::error::partial_message) {
    return std::nullopt;
  }
  if (ec == http::error::body_limit) return http::status::payload_too_large;
  if (ec == http::error::header_limit || (ec == http::error::buffer_overflow && !header_done)) {
    return http::status::request_header_fields_too_large;
  }
  if (ec == http::error::buffer_overflow) return http::status::payload_too_large;
  return http::status::bad_request;
}

}  // namespace

Response MetricsServer::Impl::respond(const Request& request, std::uint64_t id) {
  const std::string_view path = path_of(std::string_view(request.target().data(), request.target().size()));
  const bool known = path == "/metrics" || path == "/healthz" || path == "/readyz";
  if (!known) return make_response(request, http::status::not_found, kTextContentType, "not found\n");
  if (request.method() != http::verb::get && request.method() != http::verb::head) {
    auto response = make_response(request, http::status::method_not_allowed, kTextContentType, "method not allowed\n");
    response.set(http::field::allow, "GET, HEAD");
    return response;
  }
  try {
    if (path == "/metrics") {
      return make_response(request, http::status::ok, kMetricsContentType, render_prometheus(handlers.snapshot()));
    }
    if (path == "/healthz") return make_response(request, http::status::ok, kTextContentType, "ok\n");
    std::string reason = handlers.not_ready_reason ? handlers.not_ready_reason() : std::string();
    if (reason.empty()) return make_response(request, http::status::ok, kTextContentType, "ready\n");
    reason += '\n';
    return make_response(request, http::status::service_unavailable, kTextContentType, std::move(reason));
  } catch (const std::exception& e) {
    log()->error("[m{}] {} handler failed: {}", id, path, e.what());
    return make_response(request, http::status::internal_server_error, kTextContentType, "internal error\n");
  }
}

awaitable<void> MetricsServer::Impl::session(std::shared_ptr<Impl> self, tcp::socket socket, std::uint64_t id) {
  beast::tcp_stream stream(std::move(socket));
  self->connections.emplace(id, &stream);
  struct Unregister {
    Impl& impl;
    std::uint64_t id;
    ~Unregister() { impl.connections.erase(id); }
  } unregister{*self, id};

  beast::flat_buffer buffer(kMaxBufferBytes);
  for (;;) {
    if (self->stopped) co_return;
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(kMaxBodyBytes);
    stream.expires_after(kIdleTimeout);
    auto [read_error, read_bytes] = co_await http::async_read(stream, buffer, parser, use_nothrow);
    (void)read_bytes;
    if (read_error) {
      const auto status = status_for_read_error(read_error, parser.is_header_done());
      if (!status) {
        log()->debug("[m{}] closed: {}", id, read_error.message());
        co_return;
      }
      log()->debug("[m{}] bad request ({}): {}", id, static_cast<unsigned>(*status), read_error.message());
      Request dummy;
      auto response = make_response(dummy, *status, kTextContentType, read_error.message() + "\n");
      response.keep_alive(false);
      stream.expires_after(kIdleTimeout);
      co_await http::async_write(stream, response, use_nothrow);
      error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }

    // stop() may have run while this request's bytes were on their way: then the
    // handlers are not called any more and the connection just closes.
    if (self->stopped) co_return;
    const Request& request = parser.get();
    auto response = self->respond(request, id);
    log()->debug(
        "[m{}] {} {} -> {}", id, std::string_view(request.method_string().data(), request.method_string().size()),
        std::string_view(request.target().data(), request.target().size()), static_cast<unsigned>(response.result()));
    const bool keep_alive = request.keep_alive() && !self->stopped;
    response.keep_alive(keep_alive);
    if (request.method() == http::verb::head) {
      // Content-Length as for GET, no body.
      const auto length = response.body().size();
      response.body().clear();
      response.content_length(length);
    }
    stream.expires_after(kIdleTimeout);
    auto [write_error, written] = co_await http::async_write(stream, response, use_nothrow);
    (void)written;
    if (write_error) {
      log()->debug("[m{}] write failed: {}", id, write_error.message());
      co_return;
    }
    if (!keep_alive) {
      error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
  }
}

awaitable<void> MetricsServer::Impl::accept_loop(std::shared_ptr<Impl> self) {
  for (;;) {
    auto [ec, socket] = co_await self->acceptor.async_accept(self->strand, use_nothrow);
    if (self->stopped || !self->acceptor.is_open()) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      log()->warn("accept failed on {}: {}", self->name, ec.message());
      asio::steady_timer pause(self->strand, std::chrono::milliseconds(50));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    if (self->connections.size() >= kMaxConnections) {
      log()->warn("refusing an HTTP connection on {}: {} already open", self->name, self->connections.size());
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    const auto id = ++self->next_id;
    asio::co_spawn(self->strand, session(self, std::move(socket), id), [id](std::exception_ptr error) {
      if (!error) return;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        log()->error("[m{}] HTTP connection ended with an exception: {}", id, e.what());
      }
    });
  }
}

void MetricsServer::Impl::shutdown() {
  if (stopped) return;
  stopped = true;
  error_code ignored;
  acceptor.close(ignored);
  // Each connection's pending read or write fails at once and its coroutine ends.
  for (auto& [id, stream] : connections) stream->close();
  log()->info("stopped serving metrics on {}", name);
}

MetricsServer::MetricsServer(asio::io_context& io, const std::string& host, std::uint16_t port, Handlers handlers) {
  const std::string name = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  impl_ = std::make_shared<Impl>(io, name, std::move(handlers));
  error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("invalid metrics listen address " + host + ": " + ec.message());
  const tcp::endpoint endpoint(address, port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("could not listen for metrics on " + name + ": " + ec.message());
}

MetricsServer::~MetricsServer() {
  if (impl_) stop();
}

void MetricsServer::start() {
  asio::post(impl_->strand, [impl = impl_] {
    if (impl->started || impl->stopped) return;
    impl->started = true;
    log()->info("serving metrics on http://{}/metrics", impl->name);
    asio::co_spawn(impl->strand, Impl::accept_loop(impl), [](std::exception_ptr error) {
      if (!error) return;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        log()->error("metrics listener ended with an exception: {}", e.what());
      }
    });
  });
}

void MetricsServer::stop() {
  asio::post(impl_->strand, [impl = impl_] { impl->shutdown(); });
}

}  // namespace sluice::proxy
