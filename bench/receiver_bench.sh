#!/usr/bin/env bash
# The receiver benchmark (issue 14): on the same files, in the same run,
#   ours     `deltasync serve` (each store in $STORES), POST /sync -> commit (curl's time_total), warm (files
#            read into the page cache first) and cold (caches dropped; skipped when that is not allowed);
#   raw      the raw read of the same files: fio (buffered warm, O_DIRECT cold, 4 MiB blocks, 16 in flight),
#            bench/raw_read.py (the same reads from 16 threads) when fio is missing;
#   scatter  one pass of scattered writes of the changed elements (bench/scatter_pass, one thread);
#   torch    bench/slime_receiver.py, slime #1806's receiver re-implemented in torch (slime-format files only;
#            on the GPU when torch sees one, else on the CPU; skipped without torch).
# Data: a synthetic model ($MODEL) one RL step apart (`deltasync demo --offline --keep`), published by
# `deltasync publish` in each format of $FORMATS and encoding of $ENCODINGS as a chain of versions that
# alternate base -> new -> base; each serve replays the chain from version 0. Format "slime-plain" is slime's
# without deltasync's base version and digests (`publish --slime-plain`): what slime's own sender writes.
# Prints one JSON line per measurement and a summary line per (store, format, encoding) with medians and the
# ratios of the issue's targets. DS_BENCH_SMOKE=1: tiny model, one rep (CTest smoke).
# Usage: bench/receiver_bench.sh BUILD_DIR   (env: MODEL REPS FORMATS ENCODINGS STORES BUCKET DS_BENCH_DIR)
set -euo pipefail
build=${1:-build}
bin=$build/src/cli/deltasync
scatter=$build/bench/scatter_pass
here=$(cd "$(dirname "$0")" && pwd)
if [ "${DS_BENCH_SMOKE:-0}" = 1 ]; then
  model=${MODEL:-tiny}; reps=${REPS:-1}
else
  model=${MODEL:-llama3.2-1b}; reps=${REPS:-3}
fi
formats=${FORMATS:-slime native}
encodings=${ENCODINGS:-deltas}
stores=${STORES:-host}
bucket=${BUCKET:-536870912}
dir=${DS_BENCH_DIR:-/var/tmp/deltasync-receiver-bench-$$}
rm -rf "$dir"
mkdir -p "$dir/deltas"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
source "$here/raw_read_lib.sh"  # can_drop, drop_caches, py, raw_read_ms
now_ns() { date +%s%N; }

echo "receiver_bench: model $model, formats [$formats], encodings [$encodings], stores [$stores], $reps reps, cold=$can_drop, in $dir" >&2
"$bin" demo --offline --model "$model" --steps 1 --encodings deltas --keep "$dir/ck" > /dev/null
base=$dir/ck/base.safetensors
new=$dir/ck/new.safetensors
model_bytes=$(stat -c %s "$base")

# The chain: per (format, encoding) 2 x reps versions (odd: warm, even: cold), alternating base/new.
v=0
: > "$dir/chain"
for fmt in $formats; do
  for enc in $encodings; do
    for _ in $(seq 1 $((2 * reps))); do
      v=$((v + 1))
      if [ $((v % 2)) = 1 ]; then from=$base; to=$new; else from=$new; to=$base; fi
      plain=(); [ "$fmt" = slime-plain ] && plain=(--slime-plain)
      "$bin" publish --from "$from" --to "$to" --delta-dir "$dir/deltas" --version "$v" --base-version $((v - 1)) \
        --encoding "$enc" --format "${fmt%-plain}" "${plain[@]}" --update-weight-buffer-size "$bucket" --keep-files --json > "$dir/pub.json" 2> "$dir/pub.err" \
        || { cat "$dir/pub.err" >&2; exit 1; }
      files=$(py 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["files"]))' "$dir/pub.json")
      echo "$v $fmt $enc $files" >> "$dir/chain"
    done
  done
done

results=$dir/results.jsonl
: > "$results"
for store in $stores; do
  rm -f "$dir/port"
  "$bin" serve --listen 127.0.0.1:0 --port-file "$dir/port" --base "$base" --delta-dir "$dir/deltas" --store "$store" \
    --log-level warn > "$dir/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do [ -s "$dir/port" ] && break; sleep 0.1; done
  [ -s "$dir/port" ] || { echo "receiver_bench: serve --store $store did not start" >&2; cat "$dir/serve.log" >&2; exit 1; }
  url=http://127.0.0.1:$(cat "$dir/port")
  while read -r v fmt enc files; do
    vd=$(printf 'weight_v%06d' "$v")
    paths=$(py 'import json,sys; print(" ".join(sys.argv[2] + "/" + f for f in json.loads(sys.argv[1])))' "$files" "$dir/deltas/$vd")
    if [ $((v % 2)) = 1 ]; then mode=warm; cat $paths > /dev/null; else mode=cold; fi
    if [ "$mode" = cold ] && [ $can_drop = 1 ]; then drop_caches; fi
    t=$(curl -sf -o "$dir/sync.json" -w '%{time_total}' -X POST -H 'Content-Type: application/json' \
      --data-binary "{\"version\": $v, \"base_version\": $((v - 1)), \"dir\": \"$vd\", \"files\": $files}" "$url/sync") \
      || { echo "receiver_bench: sync $v failed" >&2; cat "$dir/sync.json" "$dir/serve.log" >&2; exit 1; }
    [ "$mode" = cold ] && [ $can_drop = 0 ] && continue  # not cold: not reported
    py 'import json,sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"what": "ours", "store": sys.argv[2], "format": sys.argv[3], "encoding": sys.argv[4], "mode": sys.argv[5],
                  "version": int(sys.argv[6]), "post_to_commit_ms": float(sys.argv[7]) * 1e3, "bytes_read": s.get("bytes_read"),
                  "changed_elements": s.get("changed_elements"), "timings_ms": s.get("timings_ms")}))' \
      "$dir/sync.json" "$store" "$fmt" "$enc" "$mode" "$v" "$t" | tee -a "$results"
  done < "$dir/chain"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done

# Baselines on the first two versions of each (format, encoding): raw read warm and cold, the scatter pass,
# and (slime files) the torch receiver.
while read -r v fmt enc files; do
  [ $((v % 2)) = 1 ] || continue
  vd=$(printf 'weight_v%06d' "$v")
  paths=$(py 'import json,sys; print(" ".join(sys.argv[2] + "/" + f for f in json.loads(sys.argv[1])))' "$files" "$dir/deltas/$vd")
  modes=warm; [ $can_drop = 1 ] && modes="warm cold"
  for mode in $modes; do
    for _ in $(seq 1 "$reps"); do
      ms=$(raw_read_ms "$mode" $paths)
      echo "{\"what\": \"raw\", \"tool\": \"$(command -v fio > /dev/null && echo fio || echo dd)\", \"format\": \"$fmt\", \"encoding\": \"$enc\", \"mode\": \"$mode\", \"ms\": $ms}" | tee -a "$results"
    done
  done
  changed=$(py 'import json,sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j["what"] == "ours" and j["version"] == int(sys.argv[2]): print(j["changed_elements"]); break' "$results" "$v")
  echo "{\"what\": \"scatter\", \"format\": \"$fmt\", \"encoding\": \"$enc\", \"ms\": $("$scatter" "$model_bytes" "$changed" 5 | py 'import json,sys; print(json.load(sys.stdin)["scatter_ms"])')}" | tee -a "$results"
  if [ "${fmt%-plain}" = slime ]; then
    if py 'import torch, safetensors' 2>/dev/null; then
      cold_flag=; [ $can_drop = 1 ] && cold_flag=--cold
      python3 "$here/slime_receiver.py" --base "$base" --expect "$new" --reps "$reps" $cold_flag $paths \
        | py 'import json,sys
for l in sys.stdin:
    j = json.loads(l); j.update({"what": "torch", "format": sys.argv[1], "encoding": sys.argv[2]}); print(json.dumps(j))' "$fmt" "$enc" \
        | tee -a "$results"
    else
      echo "{\"what\": \"torch\", \"skipped\": \"no torch/safetensors in python3\"}" | tee -a "$results"
    fi
  fi
done < "$dir/chain"

py 'import json,sys,statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs): return st.median(xs) if xs else None
for (store, fmt, enc) in sorted({(r["store"], r["format"], r["encoding"]) for r in rows if r["what"] == "ours"}):
    out = {"summary": True, "store": store, "format": fmt, "encoding": enc}
    scat = med([r["ms"] for r in rows if r["what"] == "scatter" and r["format"] == fmt and r["encoding"] == enc])
    for mode in ("warm", "cold"):
        ours = med([r["post_to_commit_ms"] for r in rows if r["what"] == "ours" and r["store"] == store and r["format"] == fmt and r["encoding"] == enc and r["mode"] == mode])
        raw = med([r["ms"] for r in rows if r["what"] == "raw" and r["format"] == fmt and r["encoding"] == enc and r["mode"] == mode])
        torch = med([r["ms"] for r in rows if r["what"] == "torch" and r.get("format") == fmt and r.get("encoding") == enc and r.get("mode") == mode])
        if ours is None: continue
        out[mode] = {"ours_ms": round(ours, 2), "raw_read_ms": raw and round(raw, 2),
                     "ours_over_target_1.15raw_plus_10ms": raw and round(ours / (1.15 * raw + 10), 3),
                     "ours_over_raw_plus_scatter": raw and scat and round(ours / (raw + scat), 3),
                     "torch_ms": torch and round(torch, 2), "torch_over_ours": torch and round(torch / ours, 2)}
    out["scatter_ms"] = scat
    print(json.dumps(out))' "$results"
