#!/usr/bin/env bash
# The recovery benchmark: `deltasync serve --recover` replaying a kept chain, against the raw read of the same
# files, in the same run.
#   ours  the wall time from "recovering from version" to "recovery done" in serve's log (the base checkpoint's
#         load is not counted), warm (the chain's files read into the page cache first) and cold (caches dropped;
#         skipped when that is not allowed). With OLD_BIN set, that binary is measured too, rep by rep
#         alternating with ours (before/after a change).
#   raw   fio reading every file of the chain once (bench/raw_read_lib.sh: buffered warm, O_DIRECT cold).
# Data: a synthetic model ($MODEL) one RL step apart (`deltasync demo --offline --keep`), published by
# `deltasync publish --keep-files` as a chain of $VERSIONS versions alternating base -> new -> base.
# Prints one JSON line per measurement and a summary per binary and mode: medians and ratio to the raw read.
# DS_BENCH_SMOKE=1: tiny model, 3 versions, one rep (CTest smoke).
# Usage: bench/recover_bench.sh BUILD_DIR   (env: MODEL VERSIONS REPS OLD_BIN DS_BENCH_DIR)
set -euo pipefail
build=${1:-build}
bin=$build/src/cli/deltasync
here=$(cd "$(dirname "$0")" && pwd)
if [ "${DS_BENCH_SMOKE:-0}" = 1 ]; then
  model=${MODEL:-tiny}; versions=${VERSIONS:-3}; reps=${REPS:-1}
else
  model=${MODEL:-qwen2.5-0.5b}; versions=${VERSIONS:-10}; reps=${REPS:-5}
fi
dir=${DS_BENCH_DIR:-/var/tmp/deltasync-recover-bench-$$}
rm -rf "$dir"
mkdir -p "$dir/deltas"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
source "$here/raw_read_lib.sh"  # can_drop, drop_caches, py, raw_read_ms

echo "recover_bench: model $model, $versions versions, $reps reps, cold=$can_drop, in $dir" >&2
"$bin" demo --offline --model "$model" --steps 1 --encodings deltas --keep "$dir/ck" > /dev/null
base=$dir/ck/base.safetensors
new=$dir/ck/new.safetensors
for v in $(seq 1 "$versions"); do
  if [ $((v % 2)) = 1 ]; then from=$base; to=$new; else from=$new; to=$base; fi
  "$bin" publish --from "$from" --to "$to" --delta-dir "$dir/deltas" --version "$v" --base-version $((v - 1)) \
    --keep-files --json > "$dir/pub.json" 2> "$dir/pub.err" || { cat "$dir/pub.err" >&2; exit 1; }
done
files=$(ls "$dir"/deltas/weight_v*/*.safetensors)
chain_bytes=$(cat $files | wc -c)

# One recovery: serve --recover until its log says done; prints the milliseconds between the two log lines.
recover_ms() {  # binary
  rm -f "$dir/port"
  "$1" serve --listen 127.0.0.1:0 --port-file "$dir/port" --base "$base" --delta-dir "$dir/deltas" --recover \
    --log-level info > "$dir/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do grep -q "recovery done" "$dir/serve.log" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=
  grep -q "recovery done: version 0 -> $versions," "$dir/serve.log" || { echo "recover_bench: recovery failed" >&2; cat "$dir/serve.log" >&2; exit 1; }
  py 'import datetime, re, sys
t = {}
for line in open(sys.argv[1]):
    for key in ("recovering from version", "recovery done"):
        if key in line:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
print(round((t["recovery done"] - t["recovering from version"]).total_seconds() * 1000, 1))' "$dir/serve.log"
}

results=$dir/results.jsonl
: > "$results"
modes=warm; [ $can_drop = 1 ] && modes="warm cold"
bins="ours"; [ -n "${OLD_BIN:-}" ] && bins="ours old"
for _ in $(seq 1 "$reps"); do
  for mode in $modes; do
    ms=$(raw_read_ms "$mode" $files)
    echo "{\"what\": \"raw\", \"mode\": \"$mode\", \"ms\": $ms}" | tee -a "$results"
    for b in $bins; do
      exe=$bin; [ "$b" = old ] && exe=$OLD_BIN
      if [ "$mode" = cold ]; then drop_caches; else cat $files > /dev/null; fi
      ms=$(recover_ms "$exe")
      echo "{\"what\": \"$b\", \"mode\": \"$mode\", \"ms\": $ms}" | tee -a "$results"
    done
  done
done
py 'import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(what, mode):
    v = [r["ms"] for r in rows if r["what"] == what and r["mode"] == mode]
    return statistics.median(v) if v else None
for mode in ("warm", "cold"):
    raw = med("raw", mode)
    if raw is None:
        continue
    line = f"summary {mode}: {sys.argv[2]} versions, {int(sys.argv[3]) / 1e6:.1f} MB of files; raw read {raw:.1f} ms"
    for what in ("ours", "old"):
        m = med(what, mode)
        if m is not None:
            line += f"; {what} recover {m:.1f} ms = {m / raw:.2f}x raw"
    ours, old = med("ours", mode), med("old", mode)
    if old:
        line += f"; ours/old {ours / old:.2f}"
    print(line)' "$results" "$versions" "$chain_bytes"
