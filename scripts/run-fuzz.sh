#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, starting from the committed corpus. New inputs go
# to a scratch directory, so the committed corpus only changes when someone copies findings in on purpose.
set -euo pipefail
build=${1:-build-fuzz}
seconds=${2:-30}
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for bin in "$build"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  mkdir -p "$scratch/$name"
  echo "fuzz: $name for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
       "$scratch/$name" "$root/tests/fuzz/corpus/$name" > "$scratch/$name.log" 2>&1; then
    echo "fuzz: $name FAILED"; tail -50 "$scratch/$name.log"; status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$scratch/$name.log" | tail -2
  fi
done
exit $status
