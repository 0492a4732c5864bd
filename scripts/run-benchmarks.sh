#!/usr/bin/env bash
# Runs every built Google Benchmark binary in BUILD_DIR/bench (5 repetitions, median/mean/stddev only) and
# writes BUILD_DIR/bench-results/<name>.json next to the console output. A bench that was not built (missing
# dependency, partial build) is skipped with a note; one that fails to run makes the script exit non-zero
# after the others have run. Extra arguments go to every binary, e.g. --benchmark_filter=BM_diff.
# Usage: scripts/run-benchmarks.sh BUILD_DIR [benchmark args...]
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [benchmark args...]" >&2
  exit 2
fi
build=$1
shift
out="$build/bench-results"
mkdir -p "$out"
status=0
ran=0
shopt -s nullglob
for bin in "$build"/bench/*_bench; do
  if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
    echo "bench: skipping $bin (not an executable)"
    continue
  fi
  name=$(basename "$bin")
  echo "bench: $name -> $out/$name.json"
  if "$bin" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
       --benchmark_out="$out/$name.json" --benchmark_out_format=json "$@"; then
    ran=$((ran + 1))
  else
    echo "bench: $name FAILED (exit $?)" >&2
    status=1
  fi
done
if [ "$ran" -eq 0 ] && [ "$status" -eq 0 ]; then
  echo "bench: no benchmark binaries in $build/bench (not built?); nothing to run"
fi
exit $status
