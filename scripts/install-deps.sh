#!/usr/bin/env bash
# Installs the Debian packages Sluice needs to build, test and benchmark.
# Idempotent: only packages that are missing are installed.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libboost1.81-dev libssl-dev libspdlog-dev libtomlplusplus-dev
  libgtest-dev googletest libgmock-dev libbenchmark-dev libpq-dev libpg-query-dev
  postgresql-15 postgresql-client-15 pgbouncer gnuplot-nox prometheus liburing-dev
  clang libclang-rt-14-dev openssl
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian postgresql packages start a cluster and pgbouncer starts a service on install;
# Sluice's scripts run their own throwaway instances, so the system ones are not needed.
if command -v pg_lsclusters >/dev/null; then
  $SUDO systemctl stop pgbouncer 2>/dev/null || $SUDO service pgbouncer stop 2>/dev/null || true
fi
# The prometheus package (wanted for promtool) starts a Prometheus server on :9090 where systemd runs.
$SUDO systemctl disable --now prometheus 2>/dev/null || $SUDO service prometheus stop 2>/dev/null || true
