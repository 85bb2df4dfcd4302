#!/usr/bin/env bash
# Builds the libFuzzer targets under tests/fuzz/ with clang (build-fuzz/) and runs each.
#   scripts/fuzz.sh                 each target for 20000 executions from its seed corpus
#                                   (deterministic: -seed=1; what CI runs, via ctest)
#   scripts/fuzz.sh --long [SECS]   each target for SECS seconds (default 600), random seed;
#                                   new inputs go to build-fuzz/corpus/<target>
# A crash leaves its input in build-fuzz/artifacts/; turn it into a regression test
# (tests/protocol or tests/config) and add it to tests/fuzz/corpus/<target>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
MODE=ci
SECONDS_EACH=600
case "${1:-}" in
  --long) MODE=long; SECONDS_EACH="${2:-600}" ;;
  ""|--ci) ;;
  -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "fuzz.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: $tool not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

mkdir -p "$BUILD_DIR"
# Quiet when all is well; the compiler's or linker's words when not.
if ! { cmake -S "$ROOT/tests/fuzz" -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER=clang++ &&
       cmake --build "$BUILD_DIR" --parallel "$(nproc 2>/dev/null || echo 2)"; } >"$BUILD_DIR/build.log" 2>&1; then
  echo "fuzz.sh: building the fuzz targets failed; the last lines of $BUILD_DIR/build.log:" >&2
  tail -n 40 "$BUILD_DIR/build.log" >&2
  exit 1
fi

mkdir -p "$BUILD_DIR/artifacts"
status=0
for target in startup frontend backend scram config; do
  work="$BUILD_DIR/corpus/$target"
  mkdir -p "$work"
  if [[ $MODE == ci ]]; then
    # Seeds copied, so that a run never writes into the source tree.
    rm -rf "$work" && mkdir -p "$work" && cp "$ROOT/tests/fuzz/corpus/$target/"* "$work/"
    args=(-seed=1 -runs=20000)
  else
    cp -n "$ROOT/tests/fuzz/corpus/$target/"* "$work/" 2>/dev/null || true
    args=(-max_total_time="$SECONDS_EACH")
  fi
  if "$BUILD_DIR/fuzz_$target" "${args[@]}" -max_len=65536 -artifact_prefix="$BUILD_DIR/artifacts/$target-" \
      "$work" >"$BUILD_DIR/fuzz_$target.log" 2>&1; then
    echo "fuzz_$target: ok ($(grep -Eo 'Done [0-9]+ runs' "$BUILD_DIR/fuzz_$target.log" | tail -1 || echo 'done'))"
  else
    echo "fuzz_$target: FAILED; the last lines of $BUILD_DIR/fuzz_$target.log:" >&2
    tail -n 40 "$BUILD_DIR/fuzz_$target.log" >&2
    status=1
  fi
done
exit "$status"
