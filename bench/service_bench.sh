#!/usr/bin/env bash
# End-to-end service benchmark (issue 4): a synthetic bf16 model (default llama3.2-1b, 1.24B parameters),
# one RL step apart (~1.2% density), files on local disk.
#   receiver: POST /sync -> commit, reads cold (O_DIRECT; page cache dropped when allowed), against
#             1.2 x (wire bytes / O_DIRECT read baseline) + 0.2 s
#   sender:   `deltasync publish` diff+encode+write, against 1.2 x (scan of both checkpoints at memory speed
#             + wire bytes / O_DIRECT write baseline)
# Baselines are measured in the same run with dd (O_DIRECT, 4 MiB blocks). Prints one JSON line per rep and
# a summary with medians. Usage: bench/service_bench.sh BUILD_DIR [MODEL] [REPS] [ENCODING] [BUCKET_BYTES]
# (BUCKET_BYTES = --update-weight-buffer-size; the default 512 MiB makes one file per sync here, smaller buckets
# let the receiver read file k+1 while it applies file k).
set -euo pipefail
build=${1:-build}
model=${2:-llama3.2-1b}
reps=${3:-5}
enc=${4:-deltas}
bucket=${5:-536870912}
bin=$build/src/cli/deltasync
dir=${DS_BENCH_DIR:-/var/tmp/deltasync-service-bench}
rm -rf "$dir"
mkdir -p "$dir/deltas"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { python3 -c 'import sys; print(float(sys.argv[1]) / 1e9)' "$1"; }

echo "service_bench: model $model, encoding $enc, bucket $bucket bytes, $reps reps, in $dir" >&2
"$bin" demo --offline --model "$model" --steps 1 --encodings "$enc" --keep "$dir/ck" > /dev/null
base=$dir/ck/base.safetensors
new=$dir/ck/new.safetensors

# Baselines: O_DIRECT write and read of 2 GiB in 4 MiB blocks; the two checkpoints scanned from memory.
t0=$(date +%s%N); dd if=/dev/zero of="$dir/dd.bin" bs=4M count=512 oflag=direct conv=fsync status=none; t1=$(date +%s%N)
write_bps=$(python3 -c 'import sys; print(2**31 / ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$t0" "$t1")
drop_caches
t0=$(date +%s%N); dd if="$dir/dd.bin" of=/dev/null bs=4M iflag=direct status=none; t1=$(date +%s%N)
read_bps=$(python3 -c 'import sys; print(2**31 / ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$t0" "$t1")
rm -f "$dir/dd.bin"
cat "$base" "$new" > /dev/null  # warm
t0=$(date +%s%N); cat "$base" "$new" > /dev/null; t1=$(date +%s%N)
scan_s=$(secs $((t1 - t0)))
echo "{\"baseline\": {\"write_GBps\": $(python3 -c "print($write_bps/1e9)"), \"read_GBps\": $(python3 -c "print($read_bps/1e9)"), \"scan_two_checkpoints_s\": $scan_s}}"

"$bin" serve --listen 127.0.0.1:0 --port-file "$dir/port" --base "$base" --delta-dir "$dir/deltas" --log-level warn &
pid=$!
for _ in $(seq 1 600); do [ -s "$dir/port" ] && break; sleep 0.1; done
url=http://127.0.0.1:$(cat "$dir/port")

results=$dir/results.jsonl
: > "$results"
from=$base; to=$new
for v in $(seq 1 "$reps"); do
  "$bin" publish --from "$from" --to "$to" --delta-dir "$dir/deltas" --version "$v" --base-version $((v - 1)) \
    --encoding "$enc" --update-weight-buffer-size "$bucket" --keep-files --json > "$dir/publish.json"
  files=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["files"]))' "$dir/publish.json")
  vd=$(printf 'weight_v%06d' "$v")
  drop_caches
  curl -sf -o "$dir/sync.json" -X POST -H 'Content-Type: application/json' \
    --data-binary "{\"version\": $v, \"base_version\": $((v - 1)), \"dir\": \"$vd\", \"files\": $files}" "$url/sync"
  python3 - "$dir/publish.json" "$dir/sync.json" "$read_bps" "$write_bps" "$scan_s" >> "$results" <<'PY'
import json, sys
pub, syn = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
read_bps, write_bps, scan_s = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
wire = pub["wire_bytes"]
t = syn["timings_ms"]
recv_s = t["total"] / 1e3
recv_limit = 1.2 * (wire / read_bps) + 0.2
send_s = pub["timings_s"]["diff_encode"] + pub["timings_s"]["write"]
send_limit = 1.2 * (scan_s + wire / write_bps)
print(json.dumps({"version": syn["version"], "wire_bytes": wire, "files": syn["files"], "changed": syn["changed_elements"],
                  "density": pub["changed_elements"] / pub["total_elements"],
                  "recv_s": recv_s, "recv_limit_s": recv_limit, "recv_ratio": recv_s / recv_limit,
                  "read_s": t["read"] / 1e3, "decode_s": t["decode"] / 1e3, "apply_s": t["apply"] / 1e3,
                  "verify_s": t["verify"] / 1e3,
                  "send_s": send_s, "send_limit_s": send_limit, "send_ratio": send_s / send_limit,
                  "load_s": pub["timings_s"]["load"], "diff_encode_s": pub["timings_s"]["diff_encode"],
                  "write_s": pub["timings_s"]["write"]}))
PY
  tail -1 "$results"
  rm -rf "$dir/deltas/$vd"
  tmp=$from; from=$to; to=$tmp
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in rows)
print("summary (medians of %d): wire %.1f MB in %d files, density %.3f%%" % (len(rows), med("wire_bytes") / 1e6, med("files"), 100 * med("density")))
print("  receiver POST->commit %.3f s (read %.3f, decode %.3f, apply %.3f, verify %.3f); limit %.3f s; ratio %.2f"
      % (med("recv_s"), med("read_s"), med("decode_s"), med("apply_s"), med("verify_s"), med("recv_limit_s"), med("recv_ratio")))
print("  sender diff+encode+write %.3f s (diff+encode %.3f, write %.3f; checkpoint load %.3f not counted); limit %.3f s; ratio %.2f"
      % (med("send_s"), med("diff_encode_s"), med("write_s"), med("load_s"), med("send_limit_s"), med("send_ratio")))
PY
