#!/usr/bin/env bash
# Tries Sluice in one command: installs what is missing, builds (Release, build-release/),
# starts a throwaway PostgreSQL 15 in a temp dir on a free port, starts Sluice in front of it
# with a config made from examples/sluice.toml, and prints the psql line to connect through
# Sluice. Ctrl-C stops both and removes the temp dir.
#
#   scripts/demo.sh                        throwaway PostgreSQL (role app/app_pw, database app)
#   scripts/demo.sh --backend HOST:PORT    use an existing PostgreSQL instead; it needs a role
#                                          `app` with password `app_pw` and a database `app`
#   scripts/demo.sh --port N               Sluice's port (default 6432, or a free one if taken)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN=/usr/lib/postgresql/15/bin
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
DEMO_PASSWORD=app_pw  # role app's password, in PostgreSQL and in the generated config
EXAMPLE="$ROOT/examples/sluice.toml"

BACKEND=""
SLUICE_PORT=""
while (($#)); do
  case "$1" in
    --backend) BACKEND="${2:?--backend needs HOST:PORT}"; shift ;;
    --backend=*) BACKEND="${1#*=}" ;;
    --port) SLUICE_PORT="${2:?--port needs a number}"; shift ;;
    --port=*) SLUICE_PORT="${1#*=}" ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n $BACKEND && ! $BACKEND =~ ^[^:]+:[0-9]+$ ]]; then
  echo "demo: --backend must be HOST:PORT, got '$BACKEND'" >&2
  exit 2
fi

say() { echo "demo: $*" >&2; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! port_in_use "$port"; then
      echo "$port"
      return 0
    fi
  done
  say "no free port found"
  return 1
}

# --- state for cleanup ----------------------------------------------------------------------
TMP=""
SLUICE_PID=""
PG_STARTED=""
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then AS_PG=(runuser -u postgres --); fi

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $SLUICE_PID ]] && kill -0 "$SLUICE_PID" 2>/dev/null; then
    say "stopping Sluice (pid $SLUICE_PID)"
    kill -TERM "$SLUICE_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SLUICE_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SLUICE_PID" 2>/dev/null || true
    wait "$SLUICE_PID" 2>/dev/null || true
  fi
  if [[ -n $PG_STARTED ]]; then
    say "stopping PostgreSQL"
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" stop -m fast -w >/dev/null 2>&1 ||
      "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" stop -m immediate -w >/dev/null 2>&1 || true
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    say "removing $TMP"
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- install and build ------------------------------------------------------------------------
"$ROOT/scripts/install-deps.sh"

if [[ ! -f $EXAMPLE ]]; then
  say "missing $EXAMPLE"
  exit 1
fi

say "building Sluice (Release) in $BUILD_DIR"
GENERATOR=(-G Ninja)
[[ -f "$BUILD_DIR/CMakeCache.txt" ]] && GENERATOR=()
if ! cmake -S "$ROOT" -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
       -DSLUICE_BUILD_TESTS=OFF -DSLUICE_BUILD_BENCH=OFF >/dev/null ||
   ! cmake --build "$BUILD_DIR" --target sluice --parallel "$(nproc 2>/dev/null || echo 2)"; then
  say "build failed (see the errors above)"
  exit 1
fi
SLUICE_BIN="$BUILD_DIR/sluice"

TMP="$(mktemp -d /tmp/sluice-demo-XXXXXX)"
chmod 755 "$TMP"

# --- PostgreSQL ---------------------------------------------------------------------------------
if [[ -n $BACKEND ]]; then
  BACKEND_HOST="${BACKEND%:*}"
  BACKEND_PORT="${BACKEND##*:}"
  say "using the PostgreSQL at $BACKEND_HOST:$BACKEND_PORT (it needs role app/app_pw and database app)"
else
  if [[ ${#AS_PG[@]} -gt 0 ]]; then
    id postgres >/dev/null 2>&1 || { say "no 'postgres' OS user to run PostgreSQL as"; exit 1; }
    chown postgres: "$TMP"
  fi
  BACKEND_HOST=127.0.0.1
  BACKEND_PORT="$(free_port)"
  say "starting PostgreSQL 15 on $BACKEND_HOST:$BACKEND_PORT (data in $TMP/data)"
  (cd "$TMP" && "${AS_PG[@]}" "$PGBIN/initdb" -D "$TMP/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1) ||
    { cat "$TMP/initdb.log" >&2; say "initdb failed"; exit 1; }
  cat >>"$TMP/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $BACKEND_PORT
unix_socket_directories = '$TMP'
CONF
  cat >"$TMP/data/pg_hba.conf" <<'HBA'
local all all                 trust
host  all all  127.0.0.1/32   scram-sha-256
HBA
  PG_STARTED=1
  (cd "$TMP" && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start >/dev/null) ||
    { cat "$TMP/postgres.log" >&2 || true; say "PostgreSQL did not start"; exit 1; }
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$BACKEND_PORT" -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD '$DEMO_PASSWORD'" -c "CREATE DATABASE app OWNER app" >/dev/null
fi

# --- Sluice config: examples/sluice.toml with this demo's addresses ---------------------------
if [[ -z $SLUICE_PORT ]]; then
  if port_in_use 6432; then SLUICE_PORT="$(free_port)"; else SLUICE_PORT=6432; fi
elif port_in_use "$SLUICE_PORT"; then
  say "port $SLUICE_PORT is in use"
  exit 1
fi
METRICS_PORT="$(free_port)"
CONFIG="$TMP/sluice.toml"
# In [sluice]: listen and metrics_listen on this demo's ports. In every [databases.*] table:
# host/hosts and port point at the backend. In [users.app]: the demo's password, app_pw (the
# example may store a SCRAM secret of another password). Everything else is the example as written.
awk -v listen="127.0.0.1:$SLUICE_PORT" -v metrics="127.0.0.1:$METRICS_PORT" \
    -v bhost="$BACKEND_HOST" -v bport="$BACKEND_PORT" -v password="$DEMO_PASSWORD" '
  /^[[:space:]]*\[/ { table = $0; sub(/#.*/, "", table); gsub(/[[:space:]]/, "", table) }
  table == "[sluice]" && /^[[:space:]]*listen[[:space:]]*=/ { print "listen = [\"" listen "\"]"; next }
  table == "[sluice]" && /^[[:space:]]*metrics_listen[[:space:]]*=/ { print "metrics_listen = \"" metrics "\""; next }
  table ~ /^\[databases\./ && /^[[:space:]]*hosts[[:space:]]*=/ { print "hosts = [\"" bhost ":" bport "\"]"; next }
  table ~ /^\[databases\./ && /^[[:space:]]*host[[:space:]]*=/ { print "host = \"" bhost "\""; next }
  table ~ /^\[databases\./ && /^[[:space:]]*port[[:space:]]*=/ { print "port = " bport; next }
  table == "[users.app]" && /^[[:space:]]*password[[:space:]]*=/ { print "password = \"" password "\""; next }
  table == "[users.app]" && /^[[:space:]]*server_password[[:space:]]*=/ { print "server_password = \"" password "\""; next }
  { print }
' "$EXAMPLE" >"$CONFIG"
if ! grep -q "^port = $BACKEND_PORT\$\|$BACKEND_HOST:$BACKEND_PORT" "$CONFIG" ||
   ! grep -q "127.0.0.1:$SLUICE_PORT" "$CONFIG" || ! grep -q '^\[databases\.app\]' "$CONFIG" ||
   ! grep -q "^password = \"$DEMO_PASSWORD\"" "$CONFIG"; then
  say "could not adapt $EXAMPLE (expected [sluice] listen, [databases.app] host/port and [users.app]"
  say "password lines); got:"
  cat "$CONFIG" >&2
  exit 1
fi
if ! "$SLUICE_BIN" --check --config "$CONFIG" >&2; then
  say "the generated config $CONFIG does not pass sluice --check"
  exit 1
fi

# --- Sluice ---------------------------------------------------------------------------------------
say "starting Sluice on 127.0.0.1:$SLUICE_PORT (logs below; config $CONFIG)"
(cd "$TMP" && exec "$SLUICE_BIN" --config "$CONFIG") &
SLUICE_PID=$!
ready=""
for _ in $(seq 1 200); do
  if ! kill -0 "$SLUICE_PID" 2>/dev/null; then
    wait "$SLUICE_PID" || true
    SLUICE_PID=""
    say "Sluice exited before accepting connections"
    exit 1
  fi
  if port_in_use "$SLUICE_PORT"; then ready=1; break; fi
  sleep 0.1
done
if [[ -z $ready ]]; then
  say "Sluice did not accept connections within 20 s"
  exit 1
fi

cat <<BANNER

  Sluice is running in front of PostgreSQL at $BACKEND_HOST:$BACKEND_PORT. Connect with:

    psql "postgresql://app:$DEMO_PASSWORD@127.0.0.1:$SLUICE_PORT/app"

  Press Ctrl-C to stop Sluice$([[ -z $BACKEND ]] && echo " and PostgreSQL") and remove $TMP.

BANNER

set +e
wait "$SLUICE_PID"
status=$?
set -e
SLUICE_PID=""
say "Sluice exited with status $status"
exit "$status"
