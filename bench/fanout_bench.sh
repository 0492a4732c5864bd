#!/usr/bin/env bash
# Fan-out and catch-up of the disk transport on loopback (issue 17, docs/fleet.md).
#   fan-out:  one sync (`deltasync publish`, one AdamW step of MODEL, ~1.2% of the elements) pushed to N
#             receivers at once, for each N in NS. The figure is publish's push time (first POST to the last
#             200: every receiver read, verified and committed the sync), the median of REPS syncs; the
#             baseline is the same at N = 1 in the same run, and the ratio push(N) / push(1) is printed
#             (target: <= 1.2 at N = 16).
#   catch-up: a receiver started at version 0 while the chain 1..LAG is kept replays it at the next push;
#             the per-version time (its /status last_catch_up) against one normal sync's apply at N = 1.
# Syncs alternate base -> new -> base, so every one carries the same number of changes. One JSON line per
# measurement on stdout, a summary on stderr.
# Loopback stands in for N hosts on one: every receiver gets WORKERS decode/apply threads (default 1) whatever
# N is, so N = 16 on a 16-core machine gives each its own core, as separate hosts would have.
# Usage: bench/fanout_bench.sh BUILD_DIR   env: MODEL (qwen2.5-0.5b), NS ("1 4 8 16"), REPS (5), LAG (5),
#        WORKERS (1)
set -euo pipefail
build=${1:-build}
bin=$build/src/cli/deltasync
model=${MODEL:-qwen2.5-0.5b}
ns=${NS:-1 4 8 16}
reps=${REPS:-5}
lag=${LAG:-5}
workers=${WORKERS:-1}
dir=${DS_BENCH_DIR:-/var/tmp/deltasync-fanout-bench}
rm -rf "$dir"
mkdir -p "$dir/ck"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
py() { python3 -c "$@"; }

"$bin" demo --offline --model "$model" --steps 1 --encodings deltas --keep "$dir/ck" > /dev/null
ck() { if [ $(($1 % 2)) = 0 ]; then echo "$dir/ck/base.safetensors"; else echo "$dir/ck/new.safetensors"; fi; }
cat "$dir/ck/"*.safetensors > /dev/null
echo "fanout_bench: model $model, N in {$ns}, $reps syncs each, $workers worker(s) per receiver, catch-up over $lag versions; $(nproc) cores" >&2

start_receivers() {  # count delta_dir -> urls in $urls
  urls=()
  local i
  for i in $(seq 1 "$1"); do
    rm -f "$dir/r$i.port"
    "$bin" serve --listen 127.0.0.1:0 --port-file "$dir/r$i.port" --log-level warn --base "$(ck 0)" --workers "$workers" \
      --delta-dir "$2" 2> "$dir/r$i.log" &
    pids+=($!)
  done
  for i in $(seq 1 "$1"); do
    for _ in $(seq 1 1200); do [ -s "$dir/r$i.port" ] && break; sleep 0.05; done
    [ -s "$dir/r$i.port" ] || { echo "receiver $i did not start: $(cat "$dir/r$i.log")" >&2; exit 1; }
    urls+=("http://127.0.0.1:$(cat "$dir/r$i.port")")
  done
}
stop_receivers() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
publish() {  # delta_dir version extra-args... -> publish JSON on stdout
  local d=$1 v=$2; shift 2
  "$bin" publish --from "$(ck $((v - 1)))" --to "$(ck "$v")" --version "$v" --base-version $((v - 1)) \
    --delta-dir "$d" "$@" --json
}

declare -A median
for n in $ns; do
  d=$dir/deltas_$n
  mkdir -p "$d"
  start_receivers "$n" "$d"
  args=(); for u in "${urls[@]}"; do args+=(--push "$u"); done
  times=()
  for v in $(seq 1 "$reps"); do
    out=$(publish "$d" "$v" "${args[@]}")
    t=$(py 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"], d; print(d["timings_s"]["push"])' "$out")
    # The slowest receiver's own stage times (its 200 body's timings_ms): where a larger N's extra time goes.
    py 'import json,sys
d = json.loads(sys.argv[1])
slow = max(d["receivers"], key=lambda r: r["elapsed_s"])
print(json.dumps({"bench": "fanout", "model": sys.argv[2], "receivers": int(sys.argv[3]), "version": int(sys.argv[4]),
                  "push_s": d["timings_s"]["push"], "slowest_receiver_s": slow["elapsed_s"],
                  "slowest_timings_ms": (slow.get("body") or {}).get("timings_ms"), "wire_bytes": d["wire_bytes"]}))' \
      "$out" "$model" "$n" "$v"
    times+=("$t")
  done
  median[$n]=$(py 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "${times[@]}")
  stop_receivers
  rm -rf "$d"
done
first=${ns%% *}
for n in $ns; do
  printf 'fanout N=%-3s push median %.4f s  ratio to N=%s: %.2f\n' "$n" "${median[$n]}" "$first" \
    "$(py 'import sys; print(float(sys.argv[1]) / float(sys.argv[2]))' "${median[$n]}" "${median[$first]}")" >&2
done

# Catch-up: the chain 1..lag kept (--keep-files), a receiver at 0 takes version lag+1.
d=$dir/deltas_catch_up
mkdir -p "$d"
for v in $(seq 1 "$lag"); do publish "$d" "$v" --keep-files > /dev/null; done
start_receivers 1 "$d"
out=$(publish "$d" $((lag + 1)) --push "${urls[0]}")
py 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"], d' "$out"
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1] + "/status").read().decode())' "${urls[0]}" | python3 -c '
import json, statistics, sys
d = json.load(sys.stdin)
steps = d["last_catch_up"]["replayed"]
per = statistics.median(s["ms"] for s in steps) / 1e3
one = float(sys.argv[2])
print(json.dumps({"bench": "catch_up", "model": sys.argv[1], "replayed": len(steps), "per_version_s": per,
                  "one_sync_push_s": one}))
print("catch-up: %d versions replayed, median %.4f s per version (%.2f x one sync pushed at N=1)" %
      (len(steps), per, per / one), file=sys.stderr)' "$model" "${median[$first]}"
