#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, starting from the committed corpus
# (tests/fuzz/corpus/<target>). Exits non-zero if any target reports a finding (crash, sanitizer report, leak,
# timeout, OOM); its log tail and the reproducer path are printed.
#
#   scripts/run-fuzz.sh [BUILD_DIR] [SECONDS]
#
# Environment:
#   FUZZ_JOBS=N      targets run N at a time (default 1)
#   FUZZ_NICE=N      run the fuzzers under `nice -n N` (default: not niced)
#   FUZZ_TARGETS="a b"  only these targets (default: every tests/fuzz/fuzz_* binary)
#   FUZZ_ARGS="..."  extra libFuzzer flags for every target (e.g. -max_len=65536)
#   FUZZ_OUT=DIR     keep logs, new inputs and reproducers in DIR (default: a scratch dir removed at exit)
#   FUZZ_MERGE=1     after a clean run, merge the new inputs into the committed corpus with -merge=1: only inputs
#                    that add coverage are copied in (named by their SHA-1); existing seeds stay.
# New inputs otherwise go to the scratch/out directory, so the committed corpus only changes on purpose.
set -euo pipefail
build=${1:-build-fuzz}
seconds=${2:-30}
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs=${FUZZ_JOBS:-1}
if [ -n "${FUZZ_OUT:-}" ]; then
  out=$FUZZ_OUT; mkdir -p "$out"
else
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
fi
nice_cmd=()
if [ -n "${FUZZ_NICE:-}" ]; then nice_cmd=(nice -n "$FUZZ_NICE"); fi
# UBSan reports must stop the run (the build also uses -fno-sanitize-recover=undefined).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

targets=()
if [ -n "${FUZZ_TARGETS:-}" ]; then
  for t in $FUZZ_TARGETS; do targets+=("$build/tests/fuzz/$t"); done
else
  for bin in "$build"/tests/fuzz/fuzz_*; do [ -x "$bin" ] && targets+=("$bin"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz targets in $build/tests/fuzz (run make fuzz)"; exit 1; }

run_one() {
  local bin=$1 name
  name=$(basename "$bin")
  mkdir -p "$out/$name" "$out/$name.artifacts"
  "${nice_cmd[@]}" "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$out/$name.artifacts/" ${FUZZ_ARGS:-} \
    "$out/$name" "$root/tests/fuzz/corpus/$name" > "$out/$name.log" 2>&1
}

summary() {
  local name=$1 log="$out/$1.log"
  local execs done_line
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  echo "fuzz: $name ${seconds}s execs=${execs:-?} ${done_line#*DONE}"
}

status=0
declare -A pid_of=()
for bin in "${targets[@]}"; do
  [ -x "$bin" ] || { echo "fuzz: $bin missing"; status=1; continue; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "fuzz: $(basename "$bin") for ${seconds}s"
  run_one "$bin" &
  pid_of[$(basename "$bin")]=$!
done
for name in "${!pid_of[@]}"; do
  if wait "${pid_of[$name]}"; then
    summary "$name"
  else
    echo "fuzz: $name FAILED (artifacts in $out/$name.artifacts)"; tail -60 "$out/$name.log"; status=1
  fi
done

if [ "$status" -eq 0 ] && [ "${FUZZ_MERGE:-0}" = 1 ]; then
  for bin in "${targets[@]}"; do
    name=$(basename "$bin")
    before=$(ls "$root/tests/fuzz/corpus/$name" | wc -l)
    "${nice_cmd[@]}" "$bin" -merge=1 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      "$root/tests/fuzz/corpus/$name" "$out/$name" > "$out/$name.merge.log" 2>&1 || {
      echo "fuzz: merge of $name FAILED"; tail -20 "$out/$name.merge.log"; status=1; continue; }
    after=$(ls "$root/tests/fuzz/corpus/$name" | wc -l)
    added=$(grep -o 'MERGE-OUTER: [0-9]* new files.*' "$out/$name.merge.log" || true)
    echo "fuzz: $name corpus $before -> $after files ($added)"
  done
fi
exit $status
