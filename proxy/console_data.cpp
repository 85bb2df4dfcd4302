#include "proxy/console_data.h"

#include <map>

namespace sluice::proxy {
namespace {

using Clock = std::chrono::steady_clock;

std::string hosts_text(const std::vector<config::HostPort>& hosts) {
  std::string out;
  for (const auto& h : hosts) out += (out.empty() ? "" : ",") + h.to_string();
  return out;
}

std::array<std::uint64_t, 7> totals_of(const pool::PoolCounters& c) {
  return {c.transactions.load(std::memory_order_relaxed),   c.queries.load(std::memory_order_relaxed),
          c.bytes_received.load(std::memory_order_relaxed), c.bytes_sent.load(std::memory_order_relaxed),
          c.transaction_us.load(std::memory_order_relaxed), c.query_us.load(std::memory_order_relaxed),
          c.wait_us.load(std::memory_order_relaxed)};
}

ConsoleTotals to_totals(const std::string& database, const std::array<std::uint64_t, 7>& v) {
  ConsoleTotals t;
  t.database = database;
  t.xact_count = v[0];
  t.query_count = v[1];
  t.received = v[2];
  t.sent = v[3];
  t.xact_time_us = v[4];
  t.query_time_us = v[5];
  t.wait_time_us = v[6];
  return t;
}

std::map<std::string, std::array<std::uint64_t, 7>> totals_by_database(Context& context) {
  std::map<std::string, std::array<std::uint64_t, 7>> out;
  for (const auto& pool : context.pools().all()) {
    auto& sum = out[pool->database()];
    const auto v = totals_of(pool->counters());
    for (std::size_t i = 0; i < v.size(); ++i) sum[i] += v[i];
  }
  return out;
}

}  // namespace

std::vector<ConsoleTotals> database_totals(Context& context) {
  std::vector<ConsoleTotals> out;
  for (const auto& [database, v] : totals_by_database(context)) out.push_back(to_totals(database, v));
  return out;
}

std::vector<ConsolePool> console_pools(Context& context) {
  std::vector<ConsolePool> out;
  for (const auto& pool : context.pools().all()) {
    const auto counts = pool->counts();
    ConsolePool row;
    row.database = pool->database();
    row.user = pool->user();
    row.pool_mode = pool->mode();
    const int waiting = pool->counters().waiting.load(std::memory_order_relaxed);
    row.cl_waiting = waiting;
    row.cl_active = std::max(0, pool->counters().clients.load(std::memory_order_relaxed) - waiting);
    row.sv_idle = counts.idle;
    row.sv_login = counts.connecting;
    row.sv_active = std::max(0, counts.active - counts.connecting);
    row.maxwait_us = counts.max_wait.count();
    row.paused = pool->paused();
    for (const auto& host : pool->hosts()) {
      row.hosts += (row.hosts.empty() ? "" : ",") + host->address();
      if (host->down()) ++row.hosts_down;
    }
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<ConsoleStats> console_stats(Context& context) {
  const auto [previous, latest] = context.stats_samples();
  const double period = previous.at == Clock::time_point{} || latest.at == Clock::time_point{}
                            ? 0.0
                            : std::chrono::duration<double>(latest.at - previous.at).count();
  std::vector<ConsoleStats> out;
  for (const auto& [database, v] : totals_by_database(context)) {
    ConsoleStats stats;
    stats.total = to_totals(database, v);
    if (period > 0) {
      std::array<std::uint64_t, 7> increase{};
      const auto now_it = latest.totals.find(database);
      const auto before_it = previous.totals.find(database);
      if (now_it != latest.totals.end()) {
        for (std::size_t i = 0; i < increase.size(); ++i) {
          const std::uint64_t before = before_it != previous.totals.end() ? before_it->second[i] : 0;
          increase[i] = now_it->second[i] >= before ? now_it->second[i] - before : 0;
        }
      }
      stats.period = to_totals(database, increase);
      stats.period_seconds = period;
    }
    out.push_back(std::move(stats));
  }
  return out;
}

std::vector<ConsoleDatabase> console_databases(Context& context) {
  const auto& config = context.config();
  std::vector<ConsoleDatabase> out;
  const auto pools = context.pools().all();
  for (const auto& [name, db] : config.databases) {
    ConsoleDatabase row;
    row.name = name;
    row.host = db.host;
    row.port = db.port;
    row.database = db.dbname;
    const auto settings = config.pool;
    config::PoolSettings effective = settings;
    if (db.pool.size) effective.size = *db.pool.size;
    if (db.pool.min_size) effective.min_size = *db.pool.min_size;
    if (db.pool.reserve_size) effective.reserve_size = *db.pool.reserve_size;
    if (db.pool.mode) effective.mode = *db.pool.mode;
    row.pool_size = effective.size;
    row.min_pool_size = effective.min_size;
    row.reserve_pool = effective.reserve_size;
    row.pool_mode = config::to_string(effective.mode);
    row.max_connections = db.max_db_connections;
    for (const auto& pool : pools)
      if (pool->database() == name) row.current_connections += pool->open_connections();
    row.paused = context.pools().paused(name);
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<ConsoleConfigItem> console_config(const config::Config& c) {
  const config::Config d;  // defaults
  std::vector<ConsoleConfigItem> out;
  auto add = [&](std::string key, std::string value, std::string default_value, bool changeable = true) {
    out.push_back(ConsoleConfigItem{std::move(key), std::move(value), std::move(default_value), changeable});
  };
  auto listen_text = [](const std::vector<config::ListenAddress>& listen) {
    std::string out;
    for (const auto& l : listen) out += (out.empty() ? "" : ",") + l.host + ":" + std::to_string(l.port);
    return out;
  };
  auto names = [](const std::vector<std::string>& list) {
    std::string out;
    for (const auto& n : list) out += (out.empty() ? "" : ",") + n;
    return out;
  };
  add("sluice.listen", listen_text(c.listen), listen_text(d.listen), false);
  add("sluice.workers", std::to_string(c.workers), std::to_string(d.workers), false);
  add("sluice.max_client_conn", std::to_string(c.max_client_conn), std::to_string(d.max_client_conn));
  add("sluice.log_level", c.log_level, d.log_level);
  add("sluice.max_message_size", std::to_string(c.max_message_size), std::to_string(d.max_message_size));
  add("sluice.admin_users", names(c.admin_users), "");
  add("sluice.stats_users", names(c.stats_users), "");
  add("sluice.metrics_listen", c.metrics_listen, d.metrics_listen, false);
  add("sluice.shutdown_timeout", config::format_duration(c.shutdown_timeout), config::format_duration(d.shutdown_timeout));
  add("sluice.so_reuseport", c.so_reuseport ? "true" : "false", d.so_reuseport ? "true" : "false", false);
  add("sluice.auth_failure_delay", config::format_duration(c.auth_failure_delay),
      config::format_duration(d.auth_failure_delay));
  // File names only: what is in them (keys) never.
  for (const auto& [side, tls, defaults] :
       {std::tuple{"tls.client", &c.tls_client, &d.tls_client}, std::tuple{"tls.server", &c.tls_server, &d.tls_server}}) {
    const std::string prefix = side;
    add(prefix + ".mode", config::to_string(tls->mode), config::to_string(defaults->mode));
    add(prefix + ".cert", tls->cert, "");
    add(prefix + ".key", tls->key, "");
    add(prefix + ".ca", tls->ca, "");
    add(prefix + ".min_protocol", tls->min_protocol, defaults->min_protocol);
  }
  add("hba", std::to_string(c.hba.size()) + " rule(s)", "0 rule(s)");
  add("auth_query.user", c.auth_query.user, "");
  add("auth_query.database", c.auth_query.database, "");
  add("auth_query.cache", config::format_duration(c.auth_query.cache), config::format_duration(d.auth_query.cache));
  add("pool.mode", config::to_string(c.pool.mode), config::to_string(d.pool.mode));
  add("pool.size", std::to_string(c.pool.size), std::to_string(d.pool.size));
  add("pool.min_size", std::to_string(c.pool.min_size), std::to_string(d.pool.min_size));
  add("pool.reserve_size", std::to_string(c.pool.reserve_size), std::to_string(d.pool.reserve_size));
  add("pool.reserve_timeout", config::format_duration(c.pool.reserve_timeout), config::format_duration(d.pool.reserve_timeout));
  add("pool.max_prepared_statements", std::to_string(c.pool.max_prepared_statements),
      std::to_string(d.pool.max_prepared_statements));
  add("pool.server_reset_query", c.pool.server_reset_query, d.pool.server_reset_query);
  const std::pair<const char*, config::Duration config::Timeouts::*> timeouts[] = {
      {"timeouts.client_login", &config::Timeouts::client_login},
      {"timeouts.server_connect", &config::Timeouts::server_connect},
      {"timeouts.query_wait", &config::Timeouts::query_wait},
      {"timeouts.query", &config::Timeouts::query},
      {"timeouts.client_idle", &config::Timeouts::client_idle},
      {"timeouts.idle_transaction", &config::Timeouts::idle_transaction},
      {"timeouts.server_idle", &config::Timeouts::server_idle},
      {"timeouts.server_lifetime", &config::Timeouts::server_lifetime},
  };
  for (const auto& [key, member] : timeouts) add(key, config::format_duration(c.timeouts.*member), config::format_duration(d.timeouts.*member));
  add("health.check_query", c.health.check_query, d.health.check_query);
  add("health.check_delay", config::format_duration(c.health.check_delay), config::format_duration(d.health.check_delay));
  add("health.ban_time", config::format_duration(c.health.ban_time), config::format_duration(d.health.ban_time));
  add("retry.connect_attempts", std::to_string(c.retry.connect_attempts), std::to_string(d.retry.connect_attempts));
  add("retry.backoff_initial", config::format_duration(c.retry.backoff_initial), config::format_duration(d.retry.backoff_initial));
  add("retry.backoff_max", config::format_duration(c.retry.backoff_max), config::format_duration(d.retry.backoff_max));
  add("slow_query.threshold", config::format_duration(c.slow_query.threshold), config::format_duration(d.slow_query.threshold));
  add("slow_query.log", c.slow_query.log, d.slow_query.log, false);
  add("slow_query.log_parameters", c.slow_query.log_parameters ? "true" : "false", "false");
  add("slow_query.record", c.slow_query.record ? "true" : "false", "true");
  for (const auto& [name, db] : c.databases) {
    const std::string prefix = "databases." + (name == "*" ? std::string("\"*\"") : name) + ".";
    add(prefix + "hosts", hosts_text(db.hosts), "");
    add(prefix + "dbname", db.dbname, "");
    add(prefix + "max_db_connections", std::to_string(db.max_db_connections), "0");
  }
  for (const auto& [name, user] : c.users) {
    // Passwords never: only the method.
    const std::string prefix = "users." + (name == "*" ? std::string("\"*\"") : name) + ".";
    add(prefix + "auth", config::to_string(user.auth), "scram-sha-256");
    add(prefix + "max_user_connections", std::to_string(user.max_user_connections), "0");
  }
  return out;
}

std::vector<ConsoleConnection> console_idle_servers(Context& context) {
  std::vector<ConsoleConnection> out;
  const auto steady_now = Clock::now();
  const auto system_now = std::chrono::system_clock::now();
  const auto to_system = [&](Clock::time_point t) {
    return system_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(steady_now - t);
  };
  for (const auto& pool : context.pools().all()) {
    for (const auto& idle : pool->idle_servers()) {
      ConsoleConnection row;
      row.user = pool->user();
      row.database = pool->database();
      row.state = "idle";
      const auto colon = idle.address.rfind(':');
      row.addr = idle.address.substr(0, colon);
      row.port = colon == std::string::npos ? 0 : std::atoi(idle.address.c_str() + colon + 1);
      row.connect_time = to_system(idle.created_at);
      row.request_time = to_system(idle.last_used_at);
      row.id = idle.id;
      row.remote_pid = idle.backend_pid;
      out.push_back(std::move(row));
    }
  }
  return out;
}

MetricsSnapshot metrics_snapshot(Context& context) {
  MetricsSnapshot snapshot;
  snapshot.version = SLUICE_VERSION;
  snapshot.uptime_seconds = std::chrono::duration<double>(Clock::now() - context.started_at()).count();
  snapshot.clients = context.client_count();
  snapshot.max_clients = context.config().max_client_conn;
  snapshot.clients_refused = context.clients_refused();
  for (const auto& pool : context.pools().all()) {
    const auto counts = pool->counts();
    const auto& c = pool->counters();
    PoolMetrics m;
    m.database = pool->database();
    m.user = pool->user();
    m.mode = pool->mode();
    const int waiting = c.waiting.load(std::memory_order_relaxed);
    m.clients_waiting = waiting;
    m.clients_active = std::max(0, c.clients.load(std::memory_order_relaxed) - waiting);
    m.servers_idle = counts.idle;
    m.servers_connecting = counts.connecting;
    m.servers_active = std::max(0, counts.active - counts.connecting);
    m.max_wait_seconds = std::chrono::duration<double>(counts.max_wait).count();
    const auto v = totals_of(c);
    m.transactions = v[0];
    m.queries = v[1];
    m.bytes_received = v[2];
    m.bytes_sent = v[3];
    m.transaction_seconds = static_cast<double>(v[4]) / 1e6;
    m.query_seconds = static_cast<double>(v[5]) / 1e6;
    m.wait_seconds = static_cast<double>(v[6]) / 1e6;
    m.server_connections_opened = c.connections_opened.load(std::memory_order_relaxed);
    m.server_connect_failures = c.connect_failures.load(std::memory_order_relaxed);
    m.errors_by_class = c.errors_by_class();
    snapshot.pools.push_back(std::move(m));
  }
  for (const auto& host : context.pools().hosts().all()) {
    const auto status = host->status();
    snapshot.hosts.push_back(HostMetrics{host->address(), !status.down, status.failures, status.times_down});
  }
  return snapshot;
}

}  // namespace sluice::proxy
