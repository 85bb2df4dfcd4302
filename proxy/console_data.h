#pragma once
// What the admin console and /metrics show about the pooler as a whole, gathered
// from the Context (pools, hosts, configuration) off the relay path: pool
// counters are read with relaxed loads and each pool's lock is held only to count.
// Per-session rows (SHOW CLIENTS / SERVERS) are gathered by the console session
// itself, on each session's executor.
#include <vector>

#include "proxy/admin_console.h"
#include "proxy/context.h"
#include "proxy/metrics.h"

namespace sluice::proxy {

std::vector<ConsolePool> console_pools(Context& context);
// Totals per database since start, and the increase over the last stats period.
std::vector<ConsoleStats> console_stats(Context& context);
std::vector<ConsoleDatabase> console_databases(Context& context);
// Every configuration key with its value in force and its default; secrets never.
std::vector<ConsoleConfigItem> console_config(const config::Config& config);
// Idle server connections (those lent to clients come from their sessions).
std::vector<ConsoleConnection> console_idle_servers(Context& context);
MetricsSnapshot metrics_snapshot(Context& context);

// Per-database totals of every pool's counters (SHOW STATS_TOTALS, the stats period).
std::vector<ConsoleTotals> database_totals(Context& context);

}  // namespace sluice::proxy
