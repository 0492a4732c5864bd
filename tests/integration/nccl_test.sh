#!/usr/bin/env bash
# The NCCL transport across processes: `deltasync serve --device 1` (host store) receives what
# `deltasync publish --update-weight-transport nccl` (rank 0 on GPU 0) broadcasts.
#  1. several syncs in each encoding, the store byte-identical to the checkpoint after each (GET /checksums);
#  2. a receiver killed in the middle of a broadcast: publish fails cleanly (bounded) and advances nothing;
#  3. a receiver killed while applying: the same;
#  4. after a restart, a full seed then deltas succeed.
# DS_SERVE_EXTRA adds flags to the receiver (e.g. "--store cuda"). Needs two GPUs, NCCL and python3 with numpy + xxhash; exits 77 (skip) otherwise.
set -uo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" -lt 2 ]; then echo "SKIP: the NCCL multi-process test needs two GPUs (found ${gpus:-0})"; exit 77; fi
python3 -c 'import numpy, xxhash' 2>/dev/null || { echo "SKIP: needs python3 with numpy and xxhash"; exit 77; }
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on shared machines
work=$(mktemp -d)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill -9 "$serve_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$work/serve.log" ] && tail -20 "$work/serve.log"; exit 1; }
mkdir -p "$work/d"
python3 "$here/nccl_ckpt.py" make "$work" 3 || fail "making checkpoints"

start_serve() {  # env for the receiver in $@ (e.g. DELTASYNC_TEST_APPLY_DELAY_MS=3000)
  rm -f "$work/port"
  env "$@" "$bin" serve --base "$work/v0.safetensors" --delta-dir "$work/d" --device 1 --listen 127.0.0.1:0 \
    --port-file "$work/port" --nccl-timeout-ms 20000 --log-level info ${DS_SERVE_EXTRA:-} >> "$work/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 300); do [ -s "$work/port" ] && break; sleep 0.1; done
  [ -s "$work/port" ] || fail "serve did not start"
  url="http://127.0.0.1:$(cat "$work/port")"
}
stop_serve() { kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=; }
publish() {  # FROM TO VERSION BASE [extra flags]
  local from=$1 to=$2 v=$3 b=$4; shift 4
  timeout 300 "$bin" publish --from "$work/v$from.safetensors" --to "$work/v$to.safetensors" --delta-dir "$work/d" \
    --version "$v" --base-version "$b" --update-weight-transport nccl --nccl-device 0 --nccl-timeout-ms 10000 \
    --push "$url" "$@"
}
check() { python3 "$here/nccl_ckpt.py" check "$url" "$work/v$1.safetensors" "$1" || fail "store differs at v$1"; }

# 1. Several syncs in each encoding (small buckets and chunks: several flushes, several broadcasts per file).
for enc in indices deltas deltas_zstd; do
  start_serve
  for v in 1 2 3; do
    publish $((v - 1)) $v $v $((v - 1)) --encoding $enc --update-weight-buffer-size 8MiB --nccl-chunk-bytes 1MiB \
      > "$work/pub.log" 2>&1 || { cat "$work/pub.log"; fail "$enc sync v$v"; }
    check $v
  done
  stop_serve
  echo "ok: $enc: 3 syncs over NCCL, byte-identical after each"
done

# 2./3. A receiver killed mid-sync: during the broadcast (its receive is held 5 s), then during the apply.
for phase in broadcast apply; do
  if [ $phase = broadcast ]; then start_serve DELTASYNC_TEST_NCCL_RECEIVE_DELAY_MS=5000; else start_serve DELTASYNC_TEST_APPLY_DELAY_MS=5000; fi
  t0=$(date +%s)
  publish 0 1 1 0 --json > "$work/pub.json" 2>&1 &
  pub=$!
  for _ in $(seq 100); do grep -q '"sync_in_flight":true' <(python3 -c "import urllib.request;print(urllib.request.urlopen('$url/status').read().decode())" 2>/dev/null) && break; sleep 0.1; done
  sleep 1
  kill -9 "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=
  wait $pub; rc=$?
  took=$(( $(date +%s) - t0 ))
  [ $rc -eq 1 ] || { cat "$work/pub.json"; fail "publish should fail when the receiver dies during the $phase (rc $rc)"; }
  grep -q '"snapshot_advanced":false' "$work/pub.json" || { cat "$work/pub.json"; fail "snapshot advanced"; }
  [ "$took" -lt 60 ] || fail "the sender took ${took}s to notice"
  echo "ok: receiver killed during the $phase: publish failed cleanly in ${took}s"
done

# 4. Restart: a full seed, then deltas.
start_serve
publish 0 1 1 0 --update-weight-mode full > "$work/pub.log" 2>&1 || { cat "$work/pub.log"; fail "full seed"; }
check 1
publish 1 2 2 1 --encoding deltas > "$work/pub.log" 2>&1 || { cat "$work/pub.log"; fail "delta after restart"; }
check 2
publish 2 3 3 2 --encoding deltas_zstd > "$work/pub.log" 2>&1 || { cat "$work/pub.log"; fail "delta after restart"; }
check 3
stop_serve
echo "ok: after a restart, full seed then deltas"
echo "nccl_test: all passed"
