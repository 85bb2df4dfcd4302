#!/usr/bin/env bash
# Benchmarks Sluice against PgBouncer and a direct connection, side by side in one run.
# Starts a throwaway PostgreSQL 15, Sluice and PgBouncer (same pool mode, pool size and auth),
# initializes pgbench data, runs the scenarios with the targets alternating within each round,
# and prints a Markdown table (also written to bench/results/<date>-<set>.md, with a PNG chart).
# See bench/README.md for what each scenario measures and how to read the table.
#
#   bench/compare.sh                     every scenario, 3 rounds of 10 s (about 12-15 minutes)
#   bench/compare.sh --quick             1 round of 2 s of simple20,connect8,idle50 (about 20 s)
#
#   --scenarios a,b,c      simple20 extended20 prepared20 connect8 many400 tpcb20 idle5000
#                          (idleN: N idle logged-in clients; any N)
#   --rounds N             rounds per scenario (default 3)
#   --duration S           seconds per pgbench run (default 10)
#   --scale N              pgbench scale factor (default 10; 1 with --quick)
#   --pool-mode MODE       pool mode of every pooler (default session)
#   --pool-size N          server connections per pool (default: in session mode the largest
#                          client count of the chosen pgbench scenarios, else 20)
#   --workers N            Sluice's [sluice] workers (default 0 = one per core)
#   --quiet-logs           no per-connection log lines in either pooler (default: their defaults)
#   --sluice-binary PATH   use this sluice instead of building build-release/ (Release)
#   --pgbouncer-binary P   PgBouncer binary (default: pgbouncer from PATH, /usr/sbin)
#   --sluice-toml TEXT     TOML appended to Sluice's config (e.g. a [slow_query] section)
#   --sluice-variant NAME=TEXT  one more Sluice target whose config gets TEXT appended instead
#                          (repeatable), e.g. 'sluice-norec=[slow_query] record = false' ("\n" = newline)
#   --extra NAME=COMMAND   one more pooler (repeatable); placeholders in COMMAND: {port} {pg_port}
#                          {pool_size} {pool_mode} {max_client_conn} {dir} {userlist} {password};
#                          it must stay in the foreground and accept user bench, database bench
#   --floor                one more target, "floor": bench/floor_relay.c, a transparent TCP relay (one
#                          backend connection per client, bytes copied untouched, one recv and one send
#                          per chunk): what merely being in the path costs, the yardstick for CPU/txn
#                          (not run for idleN: each of its clients is a PostgreSQL backend)
#   --floor-uring          one more target, "uring": bench/floor_uring.c, the same transparent relay on
#                          io_uring (liburing), all reads and writes queued while handling a batch of
#                          completions handed over in one io_uring_enter: what batching syscalls could save
#   --results-dir DIR      where the .md and .png go (default bench/results)
#   --no-chart             do not draw the PNG
#   --no-install           never apt-get install gnuplot; without it the chart is skipped
#   --tls                  every client connects with sslmode=require (PostgreSQL gets ssl = on, Sluice
#                          [tls.client] require, PgBouncer client_tls_sslmode = require, one self-signed
#                          certificate); the poolers' defaults (prefer) also use TLS to PostgreSQL
#   --keep                 keep the temp dir (configs, logs, pgbench output) and print its path
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN="${SLUICE_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
# Idle scenarios first: they measure RSS growth, which memory freed by an earlier
# scenario (many400) would hide.
ALL_SCENARIOS="idle5000,simple20,extended20,prepared20,connect8,many400,tpcb20"
QUICK_SCENARIOS="idle50,simple20,connect8"
DB=bench
DB_USER=bench
DB_PASSWORD=bench_pw

# --- options --------------------------------------------------------------------------------
ROUNDS="" DURATION="" SCENARIOS="" SCALE="" POOL_MODE=session POOL_SIZE="" WORKERS=0
QUICK="" QUIET_LOGS="" SLUICE_BIN="" PGBOUNCER_BIN="" RESULTS_DIR="$ROOT/bench/results"
NO_CHART="" NO_INSTALL="" KEEP="" TLS="" FLOOR="" FLOOR_URING=""
EXTRA_SPECS=()
SLUICE_TOML="" SLUICE_VARIANTS=()

usage() { sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || { echo "compare: $1 needs a value" >&2; exit 2; }; }
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) need_arg "$@"; ROUNDS=$2; shift ;;
    --duration) need_arg "$@"; DURATION=$2; shift ;;
    --scenarios) need_arg "$@"; SCENARIOS=$2; shift ;;
    --scale) need_arg "$@"; SCALE=$2; shift ;;
    --pool-mode) need_arg "$@"; POOL_MODE=$2; shift ;;
    --pool-size) need_arg "$@"; POOL_SIZE=$2; shift ;;
    --workers) need_arg "$@"; WORKERS=$2; shift ;;
    --quiet-logs) QUIET_LOGS=1 ;;
    --sluice-binary) need_arg "$@"; SLUICE_BIN=$2; shift ;;
    --pgbouncer-binary) need_arg "$@"; PGBOUNCER_BIN=$2; shift ;;
    --extra) need_arg "$@"; EXTRA_SPECS+=("$2"); shift ;;
    --sluice-toml) need_arg "$@"; SLUICE_TOML=$2; shift ;;
    --sluice-variant) need_arg "$@"; SLUICE_VARIANTS+=("$2"); shift ;;
    --results-dir) need_arg "$@"; RESULTS_DIR=$2; shift ;;
    --no-chart) NO_CHART=1 ;;
    --no-install) NO_INSTALL=1 ;;
    --keep) KEEP=1 ;;
    --tls) TLS=1 ;;
    --floor) FLOOR=1 ;;
    --floor-uring) FLOOR_URING=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n $QUICK ]]; then
  : "${ROUNDS:=1}" "${DURATION:=2}" "${SCENARIOS:=$QUICK_SCENARIOS}" "${SCALE:=1}"
fi
: "${ROUNDS:=3}" "${DURATION:=10}" "${SCENARIOS:=$ALL_SCENARIOS}" "${SCALE:=10}"
for v in ROUNDS DURATION SCALE WORKERS ${POOL_SIZE:+POOL_SIZE}; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "compare: --${v,,} must be a whole number, got '${!v}'" >&2; exit 2; }
done
((ROUNDS >= 1 && DURATION >= 1 && SCALE >= 1)) || { echo "compare: rounds, duration and scale must be >= 1" >&2; exit 2; }

# Scenario table: pgbench options (-j 2 everywhere), or idle:N.
scenario_spec() {
  case "$1" in
    simple20) echo "-S -M simple -c 20 -j 2" ;;
    extended20) echo "-S -M extended -c 20 -j 2" ;;
    prepared20) echo "-S -M prepared -c 20 -j 2" ;;
    connect8) echo "-S -C -c 8 -j 2" ;;
    many400) echo "-S -c 400 -j 2" ;;
    tpcb20) echo "-c 20 -j 2" ;;
    idle[0-9]*) [[ $1 =~ ^idle([1-9][0-9]*)$ ]] && echo "idle:${BASH_REMATCH[1]}" ;;
  esac
}
IFS=',' read -r -a SCENARIO_LIST <<<"$SCENARIOS"
((${#SCENARIO_LIST[@]} > 0)) || { echo "compare: no scenarios" >&2; exit 2; }
MAX_PGBENCH_CLIENTS=0 MAX_IDLE=0
for s in "${SCENARIO_LIST[@]}"; do
  spec="$(scenario_spec "$s")"
  [[ -n $spec ]] || { echo "compare: unknown scenario '$s' (known: $ALL_SCENARIOS, idleN)" >&2; exit 2; }
  if [[ $spec == idle:* ]]; then
    ((${spec#idle:} > MAX_IDLE)) && MAX_IDLE=${spec#idle:}
  else
    c=$(sed -n 's/.*-c \([0-9]*\).*/\1/p' <<<"$spec")
    ((c > MAX_PGBENCH_CLIENTS)) && MAX_PGBENCH_CLIENTS=$c
  fi
done
if [[ -z $POOL_SIZE ]]; then
  # Session mode: a client holds a server connection for its whole session, so the pool must
  # have one per concurrent pgbench client. Idle clients must not need one (they have not
  # sent a query), so they do not count.
  if [[ $POOL_MODE == session ]]; then POOL_SIZE=$((MAX_PGBENCH_CLIENTS > 0 ? MAX_PGBENCH_CLIENTS : 20)); else POOL_SIZE=20; fi
fi
MAX_CLIENT_CONN=$((MAX_IDLE > MAX_PGBENCH_CLIENTS ? MAX_IDLE : MAX_PGBENCH_CLIENTS))
MAX_CLIENT_CONN=$((MAX_CLIENT_CONN + 1000))
if [[ $SCENARIOS == "$ALL_SCENARIOS" ]]; then SET_NAME=full
elif [[ -n $QUICK && $SCENARIOS == "$QUICK_SCENARIOS" ]]; then SET_NAME=quick
else SET_NAME="${SCENARIOS//,/+}"; fi
if [[ $ROUNDS -ne 3 || $DURATION -ne 10 ]] && [[ $SET_NAME == full ]]; then SET_NAME="full-${ROUNDS}x${DURATION}s"; fi
[[ -n $TLS ]] && SET_NAME="$SET_NAME-tls"

say() { echo "compare: $*" >&2; }
die() { say "$*"; exit 1; }

# --- state and cleanup ----------------------------------------------------------------------
TMP="" CHILD="" WATCHDOG_PID="" PG_PID="" EXIT_STATUS=0
declare -A T_PORT=() T_PID=() T_DEAD=() T_DESC=()
TARGETS=()
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' OS user (install postgresql-15)"
  if command -v setpriv >/dev/null; then AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  else AS_PG=(runuser -u postgres --); fi
fi

stop_pid() {  # pid signal: signal, wait up to 5 s, then SIGKILL
  local pid=$1 sig=$2
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  say "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)) did not exit within 5 s of SIG$sig; killing it"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

cleanup() {
  local status=$?
  ((EXIT_STATUS != 0 && status == 0)) && status=$EXIT_STATUS
  trap - EXIT INT TERM
  [[ -n $CHILD ]] && stop_pid "$CHILD" TERM
  [[ -n ${IDLE_PID:-} ]] && stop_pid "$IDLE_PID" KILL
  local t
  for t in "${TARGETS[@]}"; do
    [[ $t == direct ]] && continue
    stop_pid "${T_PID[$t]:-}" TERM
  done
  if [[ -n $PG_PID ]]; then
    kill -0 "$PG_PID" 2>/dev/null && kill -QUIT "$PG_PID" 2>/dev/null  # immediate shutdown
    for _ in $(seq 1 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PG_PID" 2>/dev/null
  fi
  # Anything else started here (a pooler that failed to come up, an idle_clients run).
  if [[ -n $TMP && -f $TMP/pids ]]; then
    local p
    while read -r p; do stop_pid "$p" TERM; done <"$TMP/pids"
  fi
  [[ -n $WATCHDOG_PID ]] && kill "$WATCHDOG_PID" 2>/dev/null
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ -n $KEEP ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background with a time bound, output to a file, and waits for it (the
# wait is interruptible, so Ctrl-C/TERM reach cleanup at once). Returns its exit status (124 =
# timed out).
bounded() {  # seconds outfile cmd...
  local secs=$1 out=$2 rc=0
  shift 2
  timeout -k 5 "$secs" "$@" >"$out" 2>&1 </dev/null &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

# Port checks read /proc/net/tcp* rather than connecting: a probe connection that closes without
# a startup packet is noise in the poolers' logs (and has kept a pooler from shutting down).
sockets_on_port() {  # port [state]: local sockets bound to the port (state 0A = LISTEN)
  awk -v p="$(printf '%04X' "$1")" -v st="${2:-}" 'FNR > 1 { split($2, a, ":"); if (a[2] == p && (st == "" || $4 == st)) n++ }
    END { print n + 0 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
port_in_use() { (($(sockets_on_port "$1") > 0)); }
port_listening() { (($(sockets_on_port "$1" 0A) > 0)); }
USED_PORTS=" "
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    [[ $USED_PORTS == *" $port "* ]] && continue
    if ! port_in_use "$port"; then USED_PORTS+="$port "; echo "$port"; return 0; fi
  done
  return 1
}
wait_for_port() {  # port seconds pid
  local i
  for ((i = 0; i < $2 * 10; ++i)); do
    port_listening "$1" && return 0
    [[ -n ${3:-} ]] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.1
  done
  return 1
}

# /proc readings. Ticks: utime+stime (fields 14, 15), all threads of the process.
cpu_ticks() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo ""; return; }
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}
proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
alive() { [[ $1 == direct ]] && return 0; [[ -z ${T_DEAD[$1]:-} ]] && kill -0 "${T_PID[$1]}" 2>/dev/null; }

# --- environment ----------------------------------------------------------------------------
for v in PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGSERVICEFILE PGSSLMODE \
         PGTZ PGDATESTYLE PGPASSFILE PGAPPNAME PGCONNECT_TIMEOUT PGTARGETSESSIONATTRS PGGSSENCMODE; do
  unset "$v"
done
export PGPASSWORD=$DB_PASSWORD LC_ALL=C LANG=C
IDLE_SSLMODE=disable
if [[ -n $TLS ]]; then export PGSSLMODE=require; IDLE_SSLMODE=require; fi
CLK_TCK=$(getconf CLK_TCK)
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]]; then ulimit -n 1048576 2>/dev/null || true; else ulimit -n "$hard" 2>/dev/null || true; fi
NOFILE=$(ulimit -n)
need=$((MAX_CLIENT_CONN + POOL_SIZE + 100))
if [[ $NOFILE != unlimited ]] && ((NOFILE < need)); then
  say "warning: open file limit $NOFILE is below $need; raise it (ulimit -n) for idle/many scenarios"
fi

for tool in pgbench postgres initdb pg_ctl psql; do
  [[ -x $PGBIN/$tool ]] || die "$PGBIN/$tool not found (install postgresql-15: scripts/install-deps.sh)"
done
PGBENCH_VERSION=$("$PGBIN/pgbench" --version)
[[ $PGBENCH_VERSION == *" 15."* ]] || say "warning: $PGBENCH_VERSION is not PostgreSQL 15's pgbench"
if [[ -z $PGBOUNCER_BIN ]]; then
  PGBOUNCER_BIN=$(command -v pgbouncer || true)
  [[ -z $PGBOUNCER_BIN && -x /usr/sbin/pgbouncer ]] && PGBOUNCER_BIN=/usr/sbin/pgbouncer
fi
[[ -n $PGBOUNCER_BIN && -x $PGBOUNCER_BIN ]] || die "pgbouncer not found (scripts/install-deps.sh installs it)"
command -v cc >/dev/null || die "no C compiler (cc) for bench/idle_clients.c"
command -v timeout >/dev/null || die "timeout (coreutils) is missing"

UPTIME_BEFORE=$(uptime)
START_TIME=$(date +%s)

# --- Sluice binary --------------------------------------------------------------------------
if [[ -z $SLUICE_BIN ]]; then
  BUILD_DIR="$ROOT/build-release"
  say "building Sluice (Release) in $BUILD_DIR"
  GEN=(-G Ninja)
  [[ -f $BUILD_DIR/CMakeCache.txt ]] && GEN=()
  cmake -S "$ROOT" -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSLUICE_BUILD_TESTS=OFF \
      -DSLUICE_BUILD_BENCH=OFF >/dev/null || die "cmake configure failed"
  cmake --build "$BUILD_DIR" --target sluice >/dev/null || die "building sluice failed"
  SLUICE_BIN="$BUILD_DIR/sluice"
  SLUICE_BUILD="Release (build-release/)"
else
  SLUICE_BUILD="given with --sluice-binary"
fi
[[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN"
SLUICE_BIN="$(cd "$(dirname "$SLUICE_BIN")" && pwd)/$(basename "$SLUICE_BIN")"
SLUICE_VERSION=$("$SLUICE_BIN" --version 2>&1 | head -1)

# --- temp dir and watchdog ------------------------------------------------------------------
TMP="$(mktemp -d /tmp/sluice-bench-XXXXXX)" || die "mktemp failed"
chmod 755 "$TMP"
mkdir -p "$TMP/pg" "$TMP/pgbouncer" "$TMP/sluice" "$TMP/runs" "$TMP/logs"
((${#AS_PG[@]})) && chown postgres: "$TMP/pg" "$TMP/pgbouncer"
: >"$TMP/pids"
TLS_CERT="" TLS_KEY=""
if [[ -n $TLS ]]; then
  # One self-signed certificate for all three servers (PostgreSQL, Sluice, PgBouncer).
  mkdir -p "$TMP/tls"
  TLS_CERT=$TMP/tls/server.crt TLS_KEY=$TMP/tls/server.key
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TLS_KEY" -out "$TLS_CERT" \
    -subj /CN=localhost -days 2 -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >"$TMP/tls/openssl.log" 2>&1 ||
    { cat "$TMP/tls/openssl.log" >&2; die "openssl could not make a certificate"; }
  chmod 600 "$TLS_KEY"
  ((${#AS_PG[@]})) && chown -R postgres: "$TMP/tls"
fi
# If this script is killed without running its trap (SIGKILL), a detached watchdog kills what
# it started and removes the temp dir.
setsid bash -c '
  parent=$1 tmp=$2
  while kill -0 "$parent" 2>/dev/null; do sleep 1; done
  [[ -d $tmp ]] || exit 0
  while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$tmp/pids"
  [[ -f $tmp/pg/data/postmaster.pid ]] && kill -QUIT "$(head -1 "$tmp/pg/data/postmaster.pid")" 2>/dev/null
  sleep 2
  rm -rf "$tmp"
' watchdog "$$" "$TMP" </dev/null >/dev/null 2>&1 &
WATCHDOG_PID=$!

IDLE_BIN=""
if [[ $SCENARIOS =~ (^|,)idle ]]; then
  IDLE_BIN="$TMP/idle_clients"
  cc -O2 -o "$IDLE_BIN" "$ROOT/bench/idle_clients.c" -I"$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" \
     -lpq 2>"$TMP/idle_clients.build.log" || { cat "$TMP/idle_clients.build.log" >&2; die "building bench/idle_clients.c failed (libpq-dev?)"; }
fi

FLOOR_BIN=""
if [[ -n $FLOOR ]]; then
  [[ -z $TLS ]] || die "--floor relays plain TCP only; it cannot be combined with --tls"
  FLOOR_BIN="$TMP/floor_relay"
  cc -O2 -o "$FLOOR_BIN" "$ROOT/bench/floor_relay.c" 2>"$TMP/floor_relay.build.log" ||
    { cat "$TMP/floor_relay.build.log" >&2; die "building bench/floor_relay.c failed"; }
  EXTRA_SPECS+=("floor=$FLOOR_BIN {port} {pg_port}")
fi
if [[ -n $FLOOR_URING ]]; then
  [[ -z $TLS ]] || die "--floor-uring relays plain TCP only; it cannot be combined with --tls"
  URING_BIN="$TMP/floor_uring"
  cc -O2 -o "$URING_BIN" "$ROOT/bench/floor_uring.c" -luring 2>"$TMP/floor_uring.build.log" ||
    { cat "$TMP/floor_uring.build.log" >&2; die "building bench/floor_uring.c failed (liburing-dev: scripts/install-deps.sh)"; }
  EXTRA_SPECS+=("uring=$URING_BIN {port} {pg_port}")
fi

# --- PostgreSQL -----------------------------------------------------------------------------
PG_PORT=$(free_port) || die "no free port"
# Every pooler may keep a full pool of idle server connections from earlier scenarios while a
# direct run opens its own clients, so room for all of them at once.
N_PROXIES=$((2 + ${#EXTRA_SPECS[@]}))
MAX_CONNECTIONS=$(((N_PROXIES + 1) * (POOL_SIZE > MAX_PGBENCH_CLIENTS ? POOL_SIZE : MAX_PGBENCH_CLIENTS) + 30))
((MAX_CONNECTIONS < 100)) && MAX_CONNECTIONS=100
PGDATA="$TMP/pg/data"
say "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT (max_connections $MAX_CONNECTIONS)"
(cd "$TMP/pg" && bounded 180 "$TMP/initdb.log" "${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDATA" -U postgres \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync) ||
  { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
PG_SETTINGS="max_connections = $MAX_CONNECTIONS
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
checkpoint_timeout = 30min
password_encryption = 'scram-sha-256'"
[[ -n $TLS ]] && PG_SETTINGS="$PG_SETTINGS
ssl = on
ssl_cert_file = '$TLS_CERT'
ssl_key_file = '$TLS_KEY'"
cat >>"$PGDATA/postgresql.conf" <<CONF
# sluice bench/compare.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP/pg'
$PG_SETTINGS
CONF
cat >"$PGDATA/pg_hba.conf" <<'HBA'
local all all                trust
host  all all 127.0.0.1/32   scram-sha-256
HBA
(cd "$TMP/pg" && bounded 120 "$TMP/pg_ctl.log" "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$TMP/pg/postgres.log" -w -t 90 start) ||
  { cat "$TMP/pg_ctl.log" "$TMP/pg/postgres.log" >&2 2>/dev/null; die "PostgreSQL did not start"; }
PG_PID=$(head -1 "$PGDATA/postmaster.pid")
psql_admin() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$TMP/pg" -p "$PG_PORT" -U postgres "$@"; }
psql_admin -d postgres -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'" -c "CREATE DATABASE $DB OWNER $DB_USER" >/dev/null ||
  die "creating role/database failed"
SCRAM_SECRET=$(psql_admin -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$DB_USER'")
[[ $SCRAM_SECRET == SCRAM-SHA-256\$* ]] || die "role $DB_USER has no SCRAM secret"
PG_VERSION=$(psql_admin -d postgres -c "SHOW server_version")
say "initializing pgbench data (scale $SCALE)"
bounded 900 "$TMP/pgbench-init.log" "$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB" ||
  { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

# --- targets --------------------------------------------------------------------------------
TARGETS=(direct)
T_PORT[direct]=$PG_PORT
T_DESC[direct]="PostgreSQL $PG_VERSION directly"

start_sluice() {  # [NAME [EXTRA_TOML]]
  local name=${1:-sluice} extra=${2:-} port log_level=info
  local dir=$TMP/$name cfg=$TMP/$name/sluice.toml
  mkdir -p "$dir"
  port=$(free_port) || die "no free port"
  [[ -n $QUIET_LOGS ]] && log_level=warn
  cat >"$cfg" <<TOML
[sluice]
listen = ["127.0.0.1:$port"]
workers = $WORKERS
max_client_conn = $MAX_CLIENT_CONN
log_level = "$log_level"

[pool]
mode = "$POOL_MODE"
size = $POOL_SIZE
server_reset_query = "DISCARD ALL"

[timeouts]
client_login = "60s"
server_connect = "10s"

[databases.$DB]
host = "127.0.0.1"
port = $PG_PORT
dbname = "$DB"

[users.$DB_USER]
auth = "scram-sha-256"
password = "$SCRAM_SECRET"
server_password = "$DB_PASSWORD"
TOML
  if [[ -n $TLS ]]; then
    printf '\n[tls.client]\nmode = "require"\ncert = "%s"\nkey = "%s"\n' "$TLS_CERT" "$TLS_KEY" >>"$cfg"
  fi
  # Extra sections (given with literal \n for newlines).
  # A variant's TOML replaces --sluice-toml's.
  if [[ -n $extra ]]; then printf '\n%b\n' "$extra" >>"$cfg"
  elif [[ -n $SLUICE_TOML ]]; then printf '\n%b\n' "$SLUICE_TOML" >>"$cfg"; fi
  if ! "$SLUICE_BIN" --check --config "$cfg" >"$dir/check.log" 2>&1; then
    cat "$dir/check.log" >&2
    die "the generated Sluice config does not pass sluice --check ($cfg)"
  fi
  (cd "$dir" && exec "$SLUICE_BIN" --config "$cfg") >"$dir/sluice.log" 2>&1 </dev/null &
  T_PID[$name]=$!
  echo "${T_PID[$name]}" >>"$TMP/pids"
  wait_for_port "$port" 20 "${T_PID[$name]}" || { tail -20 "$dir/sluice.log" >&2; die "Sluice did not start"; }
  T_PORT[$name]=$port
  T_DESC[$name]="$SLUICE_VERSION, workers = $WORKERS, log_level = $log_level, plus: ${extra:-${SLUICE_TOML:-nothing}}"
  TARGETS+=("$name")
}

start_pgbouncer() {
  local port dir=$TMP/pgbouncer verbose_logs=1 pid
  port=$(free_port) || die "no free port"
  [[ -n $QUIET_LOGS ]] && verbose_logs=0
  printf '"%s" "%s"\n' "$DB_USER" "$SCRAM_SECRET" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = $POOL_MODE
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $MAX_CLIENT_CONN
max_db_connections = 0
server_reset_query = DISCARD ALL
listen_backlog = 4096
log_connections = $verbose_logs
log_disconnections = $verbose_logs
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  if [[ -n $TLS ]]; then
    printf 'client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\nserver_tls_sslmode = prefer\n' \
      "$TLS_CERT" "$TLS_KEY" >>"$dir/pgbouncer.ini"
  fi
  ((${#AS_PG[@]})) && chown postgres: "$dir"/*
  (cd "$dir" && exec "${AS_PG[@]}" "$PGBOUNCER_BIN" -q "$dir/pgbouncer.ini") >"$dir/stderr.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >>"$TMP/pids"
  wait_for_port "$port" 20 "$pid" || { cat "$dir/stderr.log" >&2; tail -20 "$dir/pgbouncer.log" >&2; die "PgBouncer did not start"; }
  # The pid file names the pgbouncer process itself (in case a wrapper forked).
  [[ -s $dir/pgbouncer.pid ]] && pid=$(head -1 "$dir/pgbouncer.pid")
  echo "$pid" >>"$TMP/pids"
  T_PID[pgbouncer]=$pid
  T_PORT[pgbouncer]=$port
  T_DESC[pgbouncer]="$("$PGBOUNCER_BIN" --version 2>&1 | head -1), log_connections = $verbose_logs"
  TARGETS+=(pgbouncer)
}

start_extra() {  # NAME=COMMAND
  local name=${1%%=*} cmd=${1#*=} port dir pid
  [[ $name =~ ^[A-Za-z][A-Za-z0-9_-]*$ && $1 == *=* ]] || die "--extra wants NAME=COMMAND, got '$1'"
  [[ -z ${T_PORT[$name]:-} ]] || die "--extra: target name '$name' is taken"
  port=$(free_port) || die "no free port"
  dir=$TMP/extra-$name
  mkdir -p "$dir" && chmod 1777 "$dir"
  printf '"%s" "%s"\n' "$DB_USER" "$SCRAM_SECRET" >"$dir/userlist.txt"
  chmod 644 "$dir/userlist.txt"
  cmd=${cmd//\{port\}/$port}
  cmd=${cmd//\{pg_port\}/$PG_PORT}
  cmd=${cmd//\{pool_size\}/$POOL_SIZE}
  cmd=${cmd//\{pool_mode\}/$POOL_MODE}
  cmd=${cmd//\{max_client_conn\}/$MAX_CLIENT_CONN}
  cmd=${cmd//\{dir\}/$dir}
  cmd=${cmd//\{userlist\}/$dir/userlist.txt}
  cmd=${cmd//\{password\}/$DB_PASSWORD}
  (cd "$dir" && exec bash -c "exec $cmd") >"$dir/output.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >>"$TMP/pids"
  wait_for_port "$port" 20 "$pid" || { tail -20 "$dir/output.log" >&2; die "extra target $name did not start"; }
  T_PID[$name]=$pid
  T_PORT[$name]=$port
  T_DESC[$name]="--extra: $cmd"
  TARGETS+=("$name")
}

say "starting Sluice ($SLUICE_BIN) and PgBouncer ($PGBOUNCER_BIN): pool_mode $POOL_MODE, pool size $POOL_SIZE"
start_sluice
for spec in "${SLUICE_VARIANTS[@]}"; do start_sluice "${spec%%=*}" "${spec#*=}"; done
start_pgbouncer
for spec in "${EXTRA_SPECS[@]}"; do start_extra "$spec"; done

# --- runs -----------------------------------------------------------------------------------
RESULTS=$TMP/results.tsv  # scenario target round status tps txns failed lat_mean_us lat_p99_us cpu_us_txn rss_kib hwm_kib
IDLE_RESULTS=$TMP/idle.tsv  # scenario target round status clients login_s rss_before rss_with kib_per_client cpu_us_login hwm_kib
NOTES=$TMP/notes.txt
: >"$RESULTS"; : >"$IDLE_RESULTS"; : >"$NOTES"
note() { echo "$*" >>"$NOTES"; say "$*"; }

mark_dead_targets() {  # after each run: a pooler that exited is reported and not run again
  local t
  for t in "${TARGETS[@]}"; do
    [[ $t == direct || -n ${T_DEAD[$t]:-} ]] && continue
    if ! kill -0 "${T_PID[$t]}" 2>/dev/null; then
      T_DEAD[$t]=1
      EXIT_STATUS=1
      note "$t (pid ${T_PID[$t]}) died during $1; its later runs are reported as 'died'"
      # Forget the pid (pids wrap quickly on a busy machine; cleanup must not signal a stranger).
      grep -vx "${T_PID[$t]}" "$TMP/pids" >"$TMP/pids.new"; mv "$TMP/pids.new" "$TMP/pids"
      T_PID[$t]=""
    fi
  done
  if ! kill -0 "$PG_PID" 2>/dev/null; then
    note "PostgreSQL died during $1"
    EXIT_STATUS=1
    exit 1
  fi
}

run_pgbench() {  # scenario target round
  local s=$1 t=$2 r=$3 opts port pid out prefix rc=0 status=ok
  local tps="" txns="" failed="" mean="" p99="" cpu="" rss="" hwm="" t0="" t1=""
  opts=$(scenario_spec "$s")
  port=${T_PORT[$t]}
  pid=${T_PID[$t]:-}
  out=$TMP/runs/$s.$t.$r.out
  prefix=$TMP/logs/$s.$t.$r
  if ! alive "$t"; then
    printf '%s\t%s\t%s\tdied\t\t\t\t\t\t\t\t\n' "$s" "$t" "$r" >>"$RESULTS"
    return
  fi
  if [[ $s == tpcb* ]]; then  # what pgbench itself does before a TPC-B run (we run it with -n)
    psql_admin -d "$DB" -c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers" \
      -c "TRUNCATE pgbench_history" -c "CHECKPOINT" >/dev/null 2>&1
  fi
  [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086
  bounded $((DURATION + 120)) "$out" "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U "$DB_USER" -n -T "$DURATION" \
    $opts --log --log-prefix="$prefix" "$DB" || rc=$?
  if [[ -n $pid ]]; then
    t1=$(cpu_ticks "$pid")
    rss=$(proc_kib "$pid" VmRSS)
    hwm=$(proc_kib "$pid" VmHWM)
  fi
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -1)
  txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -1)
  : "${failed:=0}"
  if ((rc == 124 || rc == 137)); then status=timeout
  elif [[ -z $tps || -z $txns ]]; then status=failed
  elif ((rc != 0)); then status=aborted
  fi
  if [[ $status != ok ]]; then
    note "$s/$t round $r: pgbench $status (exit $rc): $(grep -m1 -iE 'error|abort|fatal' "$out" | cut -c1-200)"
  fi
  # Per-transaction log lines: client_id transaction_no time(us) script_no epoch us ...; time is
  # "failed"/"skipped" for those transactions.
  if compgen -G "$prefix.*" >/dev/null; then
    cat "$prefix".* | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n >"$prefix.sorted"
    read -r mean p99 < <(awk '{ v[NR] = $1; s += $1 } END {
        if (NR == 0) { print "", ""; exit }
        i = int((99 * NR + 99) / 100); if (i > NR) i = NR
        printf "%.1f %s\n", s / NR, v[i] }' "$prefix.sorted")
    rm -f "$prefix".*
  fi
  if [[ -n $t0 && -n $t1 && -n $txns && $txns -gt 0 ]]; then
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$t" "$r" "$status" "$tps" "$txns" "$failed" \
    "$mean" "$p99" "$cpu" "$rss" "$hwm" >>"$RESULTS"
  say "$(printf '%-10s %-10s round %d: %-7s tps %-10s failed %-4s cpu %s us/txn' "$s" "$t" "$r" "$status" "${tps:--}" "$failed" "${cpu:--}")"
  mark_dead_targets "$s/$t round $r"
}

IDLE_PID=""
run_idle() {  # scenario target round
  local s=$1 t=$2 r=$3 n pid port out status=ok rc=0 i
  local rss0 rss1="" hwm="" t0 t1 fds0 login_s="" per="" cpu="" limit stall
  n=$(scenario_spec "$s"); n=${n#idle:}
  pid=${T_PID[$t]}
  port=${T_PORT[$t]}
  out=$TMP/runs/$s.$t.$r.out
  if ! alive "$t"; then
    printf '%s\t%s\t%s\tdied\t%s\t\t\t\t\t\t\n' "$s" "$t" "$r" "$n" >>"$IDLE_RESULTS"
    return
  fi
  if [[ -n $QUICK ]]; then stall=2; else stall=15; fi
  limit=$((10 + n / 25))
  # Warm up with one login using the very same connection parameters, so that
  # one-time costs (the pool, its first server connection, allocator and library
  # caches) are not charged to the idle clients.
  "$PGBIN/psql" -X -q -At "host=127.0.0.1 port=$port user=$DB_USER dbname=$DB sslmode=disable gssencmode=disable application_name=idle_clients" \
    -c "SELECT 1" >/dev/null 2>&1 </dev/null || true
  rss0=$(proc_kib "$pid" VmRSS)
  t0=$(cpu_ticks "$pid")
  fds0=$(fd_count "$pid")
  "$IDLE_BIN" "host=127.0.0.1 port=$port user=$DB_USER dbname=$DB sslmode=$IDLE_SSLMODE gssencmode=disable application_name=idle_clients" \
    "$n" "$limit" "$stall" >"$out" 2>&1 </dev/null &
  IDLE_PID=$!
  echo "$IDLE_PID" >>"$TMP/pids"
  for ((i = 0; i < (limit + 10) * 10; ++i)); do
    grep -q '^ready' "$out" && break
    kill -0 "$IDLE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^ready' "$out"; then
    sleep 1  # let the pooler finish whatever follows a login
    rss1=$(proc_kib "$pid" VmRSS)
    hwm=$(proc_kib "$pid" VmHWM)
    t1=$(cpu_ticks "$pid")
    login_s=$(awk '/^ready/ { print $3 }' "$out")
    per=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
  else
    status=failed
    kill -0 "$IDLE_PID" 2>/dev/null && status=timeout
    note "$s/$t round $r: $(grep -m1 -E '^failed|error' "$out" | sed 's/^failed: //' | cut -c1-240) ($status)"
  fi
  stop_pid "$IDLE_PID" TERM
  wait "$IDLE_PID" 2>/dev/null || true
  grep -vx "$IDLE_PID" "$TMP/pids" >"$TMP/pids.new"; mv "$TMP/pids.new" "$TMP/pids"
  IDLE_PID=""
  # Let the pooler drop the closed clients before the next run: its descriptor count must come
  # back to where it was (plus any server connections it opened).
  for ((i = 0; i < 300; ++i)); do
    (($(fd_count "$pid") <= fds0 + POOL_SIZE + 2)) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if (($(fd_count "$pid") > fds0 + POOL_SIZE + 2)); then
    note "$s/$t round $r: $t still had $(fd_count "$pid") descriptors open 30 s after the idle clients left (before: $fds0)"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$t" "$r" "$status" "$n" "$login_s" "$rss0" "$rss1" \
    "$per" "$cpu" "$hwm" >>"$IDLE_RESULTS"
  say "$(printf '%-10s %-10s round %d: %-7s %s KiB/client, login %s s' "$s" "$t" "$r" "$status" "${per:--}" "${login_s:--}")"
  mark_dead_targets "$s/$t round $r"
}

say "targets: ${TARGETS[*]}; scenarios: ${SCENARIO_LIST[*]}; $ROUNDS round(s) of ${DURATION} s"
for s in "${SCENARIO_LIST[@]}"; do
  for ((r = 1; r <= ROUNDS; ++r)); do
    # Each round starts one target later (round 1: direct, Sluice, PgBouncer, ...; round 2:
    # Sluice, PgBouncer, ..., direct): no target always runs right after the same other one.
    # Alternating runs of two targets showed the one run first in each pair a few percent slower.
    for ((i = 0; i < ${#TARGETS[@]}; ++i)); do
      t=${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}
      if [[ $(scenario_spec "$s") == idle:* ]]; then
        # A direct connection is a PostgreSQL backend process each, and so is a floor relay's
        # client (one backend connection per client): neither is a pooler's idle client.
        [[ $t == direct || $t == floor || $t == uring ]] && continue
        run_idle "$s" "$t" "$r"
      else
        run_pgbench "$s" "$t" "$r"
      fi
    done
  done
done
UPTIME_AFTER=$(uptime)
ELAPSED=$(($(date +%s) - START_TIME))

# --- report ---------------------------------------------------------------------------------
# Values of column c over the rounds of (scenario, target) that completed.
values() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t && $4 == "ok" && $c != "" { print $c }' "$4"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { values "$1" "$2" "$3" "${4:-$RESULTS}" | median; }
fmt() { [[ -z $2 ]] && { echo "—"; return; }; awk -v v="$2" -v f="$1" 'BEGIN { printf f, v }'; }
ratio() { [[ -z $1 || -z $2 ]] && return; awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'; }
rounds_ok() { awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t && $4 == "ok"' "${3:-$RESULTS}" | wc -l; }
rounds_all() { awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t' "${3:-$RESULTS}" | wc -l; }
last_value() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t && $c != "" { v = $c } END { print v }' "${4:-$RESULTS}"; }
max_value() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t && $c != "" && (m == "" || $c + 0 > m + 0) { m = $c } END { print m }' "${4:-$RESULTS}"; }
sum_value() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { n += $c } END { print n + 0 }' "${4:-$RESULTS}"; }
first_ok() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t && $4 == "ok" && $c != "" { print $c; exit }' "${4:-$RESULTS}"; }
label() { case "$1" in direct) echo "direct" ;; sluice) echo "Sluice" ;; pgbouncer) echo "PgBouncer" ;; *) echo "$1" ;; esac; }
ms() { [[ -n $1 ]] && awk -v v="$1" 'BEGIN { print v / 1000 }'; }
mib() { [[ -z $1 ]] && { echo "—"; return; }; awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

PGB_SCENARIOS=() IDLE_SCENARIOS=()
for s in "${SCENARIO_LIST[@]}"; do
  if [[ $(scenario_spec "$s") == idle:* ]]; then IDLE_SCENARIOS+=("$s"); else PGB_SCENARIOS+=("$s"); fi
done
DATE=$(date +%Y-%m-%d)
BASE="$DATE-$SET_NAME"
REPORT=$TMP/report.md
CHART_DATA=$TMP/chart

load1() { sed -n 's/.*load average: \([0-9.]*\).*/\1/p' <<<"$1"; }
LOAD_BEFORE=$(load1 "$UPTIME_BEFORE") LOAD_AFTER=$(load1 "$UPTIME_AFTER")
NPROC=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
# The commit of the tree the Sluice binary sits in (a build dir inside a checkout or worktree),
# else of this checkout.
SLUICE_SRC=$(git -C "$(dirname "$SLUICE_BIN")" rev-parse --show-toplevel 2>/dev/null || echo "$ROOT")
GIT_COMMIT=$(git -C "$SLUICE_SRC" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$SLUICE_SRC" status --porcelain --untracked-files=no -- . ':(exclude)bench' ':(exclude)tests' 2>/dev/null | wc -l)
[[ $GIT_DIRTY -gt 0 ]] && GIT_COMMIT+=" + uncommitted changes in $GIT_DIRTY tracked file(s) outside bench/ and tests/"
[[ $SLUICE_SRC != "$ROOT" ]] && GIT_COMMIT+=" (checkout $SLUICE_SRC)"

{
  echo "# Sluice vs PgBouncer vs direct: $SET_NAME ($DATE)"
  echo
  echo "Scenarios: ${SCENARIO_LIST[*]}. $ROUNDS round(s) of $DURATION s per target; targets alternate"
  echo "within each round (${TARGETS[*]}; each round starts one target later). TPS, latency and CPU are"
  echo "medians over the rounds that completed."
  echo
  if ((${#PGB_SCENARIOS[@]})); then
    echo "| scenario | target | TPS | ×direct | ×PgBouncer | mean lat ms | p99 lat ms | failed txns | CPU µs/txn | CPU ×PgBouncer | RSS MiB | peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    : >"$CHART_DATA.tps"; : >"$CHART_DATA.cpu"
    printf 'scenario' >>"$CHART_DATA.tps"; printf 'scenario' >>"$CHART_DATA.cpu"
    for t in "${TARGETS[@]}"; do
      printf ' %s' "$(label "$t")" >>"$CHART_DATA.tps"
      [[ $t != direct ]] && printf ' %s' "$(label "$t")" >>"$CHART_DATA.cpu"
    done
    echo >>"$CHART_DATA.tps"; echo >>"$CHART_DATA.cpu"
    for s in "${PGB_SCENARIOS[@]}"; do
      tps_direct=$(med "$s" direct 5)
      tps_pgb=$(med "$s" pgbouncer 5)
      cpu_pgb=$(med "$s" pgbouncer 10)
      printf '%s' "$s" >>"$CHART_DATA.tps"; printf '%s' "$s" >>"$CHART_DATA.cpu"
      for t in "${TARGETS[@]}"; do
        ok=$(rounds_ok "$s" "$t"); all=$(rounds_all "$s" "$t")
        tps=$(med "$s" "$t" 5)
        cpu=$(med "$s" "$t" 10)
        printf ' %s' "${tps:-?}" >>"$CHART_DATA.tps"
        [[ $t != direct ]] && printf ' %s' "${cpu:-?}" >>"$CHART_DATA.cpu"
        if ((ok == 0)); then
          why=$(awk -F'\t' -v s="$s" -v t="$t" '$1 == s && $2 == t { print $4; exit }' "$RESULTS")
          echo "| $s | $(label "$t") | ${why:-failed} |  |  |  |  | $(sum_value "$s" "$t" 7) |  |  | $(mib "$(last_value "$s" "$t" 11)") | $(mib "$(max_value "$s" "$t" 12)") |"
          continue
        fi
        star=""; ((ok < all)) && star=" ($ok/$all ok)"
        x_direct="" x_pgb="" x_cpu=""
        [[ $t != direct ]] && x_direct=$(ratio "$tps" "$tps_direct")
        if [[ $t != direct && $t != pgbouncer ]]; then x_pgb=$(ratio "$tps" "$tps_pgb"); x_cpu=$(ratio "$cpu" "$cpu_pgb"); fi
        mean_ms=$(fmt %.3f "$(ms "$(med "$s" "$t" 8)")")
        p99_ms=$(fmt %.3f "$(ms "$(med "$s" "$t" 9)")")
        cpu_cell=""
        [[ $t != direct ]] && cpu_cell=$(fmt %.1f "$cpu")
        echo "| $s | $(label "$t") | $(fmt %.0f "$tps")$star | $x_direct | $x_pgb | $mean_ms | $p99_ms |" \
             "$(sum_value "$s" "$t" 7) | $cpu_cell | $x_cpu | $(mib "$(last_value "$s" "$t" 11)") | $(mib "$(max_value "$s" "$t" 12)") |"
      done
      echo >>"$CHART_DATA.tps"; echo >>"$CHART_DATA.cpu"
    done
    echo
    echo "TPS: pgbench's \"tps\" (without initial connection time; with -C, including reconnection time)."
    echo "Latency: from pgbench's per-transaction logs (all threads), mean and 99th percentile."
    echo "CPU µs/txn: the pooler's user+sys time (/proc/PID/stat) over the whole pgbench run, logins"
    echo "included, divided by the transactions processed. RSS: VmRSS after the scenario's last round;"
    echo "peak: VmHWM (process-lifetime peak) at the end of the scenario."
    echo
  fi
  if ((${#IDLE_SCENARIOS[@]})); then
    echo "| scenario | target | idle clients | login time s | RSS before MiB | RSS with clients MiB | KiB per idle client | per round KiB | CPU µs per login | peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
    : >"$CHART_DATA.idle"
    for s in "${IDLE_SCENARIOS[@]}"; do
      for t in "${TARGETS[@]}"; do
        [[ $t == direct || $t == floor || $t == uring ]] && continue  # not run (see the scenario loop)
        n=$(scenario_spec "$s"); n=${n#idle:}
        ok=$(rounds_ok "$s" "$t" "$IDLE_RESULTS")
        per_round=$(awk -F'\t' -v s="$s" -v t="$t" '$1 == s && $2 == t { printf "%s%s", sep, ($4 == "ok" ? $9 : $4); sep = " / " }' "$IDLE_RESULTS")
        if ((ok == 0)); then
          echo "| $s | $(label "$t") | $n | failed |  |  |  | $per_round |  | $(mib "$(max_value "$s" "$t" 11 "$IDLE_RESULTS")") |"
          echo "$(label "$t") ? failed" >>"$CHART_DATA.idle"
          continue
        fi
        per=$(first_ok "$s" "$t" 9 "$IDLE_RESULTS")
        echo "$(label "$t") $per $per" >>"$CHART_DATA.idle"
        echo "| $s | $(label "$t") | $n | $(fmt %.2f "$(first_ok "$s" "$t" 6 "$IDLE_RESULTS")") | $(mib "$(first_ok "$s" "$t" 7 "$IDLE_RESULTS")") | $(mib "$(first_ok "$s" "$t" 8 "$IDLE_RESULTS")") | $(fmt %.2f "$per") | $per_round | $(fmt %.1f "$(first_ok "$s" "$t" 10 "$IDLE_RESULTS")") | $(mib "$(max_value "$s" "$t" 11 "$IDLE_RESULTS")") |"
      done
    done
    echo
    echo "KiB per idle client: (VmRSS with the clients logged in − VmRSS just before) / clients, from the"
    echo "first round that completed (later rounds reuse memory the allocator kept, so they read lower)."
    echo "A login counts once PQconnectPoll reports CONNECTION_OK (ReadyForQuery received)."
    echo
  fi

  # Issue #3 targets, Sluice against PgBouncer.
  echo "## Issue #3 targets (Sluice vs PgBouncer, this run)"
  echo
  echo "| scenario | metric | target | measured | met |"
  echo "|---|---|---|---:|---|"
  check() {  # scenario metric op threshold value [fail-means-missed]
    local met="no"
    if [[ -z $5 && -n ${6:-} ]]; then met="no"
    elif [[ -z $5 ]]; then met="—"
    elif awk -v v="$5" -v th="$4" -v op="$3" 'BEGIN { exit !((op == "≥" && v >= th) || (op == "≤" && v <= th)) }'; then met="yes"; fi
    echo "| $1 | $2 | $3 $4 | ${5:-failed} | $met |"
  }
  for s in "${PGB_SCENARIOS[@]}"; do
    tr=$(ratio "$(med "$s" sluice 5)" "$(med "$s" pgbouncer 5)")
    case "$s" in
      simple20|extended20)
        check "$s" "TPS ×PgBouncer" "≥" 1.15 "$tr"
        check "$s" "CPU/txn ×PgBouncer" "≤" 0.70 "$(ratio "$(med "$s" sluice 10)" "$(med "$s" pgbouncer 10)")" ;;
      connect8) check "$s" "TPS ×PgBouncer" "≥" 1.00 "$tr" ;;
      many400)
        check "$s" "TPS ×PgBouncer" "≥" 1.10 "$tr"
        check "$s" "p99 latency ×PgBouncer" "≤" 1.00 "$(ratio "$(med "$s" sluice 9)" "$(med "$s" pgbouncer 9)")" ;;
    esac
  done
  for s in "${IDLE_SCENARIOS[@]}"; do
    check "$s" "KiB per idle client" "≤" 1.5 "$(first_ok "$s" sluice 9 "$IDLE_RESULTS")" missed
  done
  echo
  echo "## Per round"
  echo
  echo "| scenario | target | TPS per round | CPU µs/txn per round |"
  echo "|---|---|---|---|"
  for s in "${PGB_SCENARIOS[@]}"; do
    for t in "${TARGETS[@]}"; do
      awk -F'\t' -v s="$s" -v t="$(label "$t")" -v key="$t" '$1 == s && $2 == key {
          tps = tps sep ($4 == "ok" ? sprintf("%.0f", $5) : $4); cpu = cpu sep ($10 == "" ? "—" : $10); sep = " / " }
        END { if (tps != "") printf "| %s | %s | %s | %s |\n", s, t, tps, (key == "direct" ? "" : cpu) }' "$RESULTS"
    done
  done
  echo
  if [[ -s $NOTES ]]; then
    echo "## Notes from this run"
    echo
    sed 's/^/- /' "$NOTES"
    echo
  fi
  echo "## Machine and settings"
  echo
  echo "- Machine: $NPROC CPU(s), ${CPU_MODEL:-unknown CPU}, $(uname -sr), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM."
  echo "  pgbench, PostgreSQL and the pooler under test share these cores; the others are idle meanwhile."
  echo "- Load before: \`${UPTIME_BEFORE# }\`"
  echo "- Load after:  \`${UPTIME_AFTER# }\`"
  if awk -v a="${LOAD_BEFORE:-0}" -v b="${LOAD_AFTER:-0}" -v n="$NPROC" 'BEGIN { exit !(a > n / 2 || b > n / 2 + 2) }'; then
    echo "- **The machine was busy** (other work was running: load average above half the cores before the run,"
    echo "  or above what this benchmark adds after it). Numbers are noisy; compare ratios within this run only."
  fi
  echo "- PostgreSQL $PG_VERSION ($PGBIN), $PGBENCH_VERSION, $("$PGBOUNCER_BIN" --version 2>&1 | head -1),"
  echo "  Sluice $SLUICE_VERSION at commit $GIT_COMMIT, binary $SLUICE_BUILD."
  echo "- Run took ${ELAPSED} s. pgbench: \`-n -T $DURATION\` plus the scenario's options, scale $SCALE, user \`$DB_USER\`"
  if [[ -n $TLS ]]; then
    echo "  over TCP on 127.0.0.1, password via PGPASSWORD, **TLS: sslmode=require** to every target (one self-signed"
    echo "  certificate); both poolers use their default (prefer) to PostgreSQL, so they too talk TLS to it."
  else
    echo "  over TCP on 127.0.0.1, password via PGPASSWORD (libpq default sslmode=prefer; every target answers N)."
  fi
  echo "- Pool mode \`$POOL_MODE\`, pool size $POOL_SIZE server connections (session mode: the largest pgbench"
  echo "  client count, so every client can hold one), max client connections $MAX_CLIENT_CONN, reset query DISCARD ALL."
  echo "- Client auth: SCRAM-SHA-256 against the role's stored SCRAM secret in every target (Sluice: password ="
  echo "  the secret plus server_password; PgBouncer: the secret in auth_file, SCRAM pass-through to PostgreSQL)."
  for t in "${TARGETS[@]}"; do echo "- $(label "$t"): ${T_DESC[$t]}"; done
  echo "- PostgreSQL settings: $(tr '\n' ';' <<<"$PG_SETTINGS" | sed 's/;$//; s/;/; /g')."
  echo "- Open file limit $NOFILE; CLK_TCK $CLK_TCK."
} >"$REPORT"

# --- chart ----------------------------------------------------------------------------------
CHART_NOTE=""
if [[ -z $NO_CHART && ${#PGB_SCENARIOS[@]} -gt 0 ]]; then
  if ! command -v gnuplot >/dev/null && [[ -z $NO_INSTALL ]]; then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
    say "gnuplot is missing; installing gnuplot-nox with apt-get"
    { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox ||
      { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox; }
    } >"$TMP/apt.log" 2>&1 || say "could not install gnuplot-nox (see apt-get output above); no chart"
  fi
  if command -v gnuplot >/dev/null; then
    mkdir -p "$RESULTS_DIR"
    idle_file=""; [[ -s $CHART_DATA.idle ]] && idle_file=$CHART_DATA.idle
    if gnuplot -e "tpsfile='$CHART_DATA.tps'; cpufile='$CHART_DATA.cpu'; idlefile='$idle_file'; outfile='$TMP/chart.png'; charttitle='$SET_NAME $DATE'; ntargets=${#TARGETS[@]}" \
         "$ROOT/bench/plot.gnuplot" >"$TMP/gnuplot.log" 2>&1 && [[ -s $TMP/chart.png ]]; then
      CHART_NOTE="chart"
    else
      cat "$TMP/gnuplot.log" >&2
      say "gnuplot failed; no chart"
    fi
  else
    say "gnuplot not available; no chart (install gnuplot-nox)"
  fi
fi

mkdir -p "$RESULTS_DIR" || die "cannot create $RESULTS_DIR"
if [[ -n $CHART_NOTE ]]; then
  cp "$TMP/chart.png" "$RESULTS_DIR/$BASE.png"
  printf '\n![TPS and CPU per transaction](%s.png)\n' "$BASE" >>"$REPORT"
fi
cp "$REPORT" "$RESULTS_DIR/$BASE.md"
cat "$REPORT"
echo
say "wrote $RESULTS_DIR/$BASE.md${CHART_NOTE:+ and $RESULTS_DIR/$BASE.png}"
exit "$EXIT_STATUS"
