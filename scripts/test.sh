#!/usr/bin/env bash
# Builds Sluice and runs the whole test suite (unit + integration) with ctest.
#   scripts/test.sh              build in build/ (override with BUILD_DIR=...)
#   scripts/test.sh --sanitize   ASan+UBSan build in build-asan/
# Extra arguments after -- go to ctest (e.g. scripts/test.sh -- -R auth).
# Exit status: ctest's (non-zero also when installing or building fails).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SANITIZE=OFF
CTEST_ARGS=()
while (($#)); do
  case "$1" in
    --sanitize) SANITIZE=ON ;;
    --) shift; CTEST_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $SANITIZE == ON ]]; then
  BUILD_DIR="${BUILD_DIR:-$ROOT/build-asan}"
else
  BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
fi

"$ROOT/scripts/install-deps.sh"

JOBS="$(nproc 2>/dev/null || echo 2)"
GENERATOR=(-G Ninja)
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  GENERATOR=()  # keep whatever generator an existing build dir was configured with
fi
cmake -S "$ROOT" -B "$BUILD_DIR" "${GENERATOR[@]}" -DSLUICE_SANITIZE="$SANITIZE" >/dev/null
cmake --build "$BUILD_DIR" --parallel "$JOBS"

# Each integration binary starts its own PostgreSQL and Sluice processes on free ports,
# so test binaries can run in parallel.
cd "$BUILD_DIR"
set +e
ctest --output-on-failure -j2 "${CTEST_ARGS[@]}"
status=$?
set -e
exit "$status"
