# Shared helpers of the fault-matrix tests (tests/integration/fault_*.sh); sourced, not run. Expects $bin.
# Each test gets a work dir, servers started in this shell (stopped by the EXIT trap), three distinct
# checkpoints of the tiny synthetic model (ck/base, ck/new, ck/third) and reference receivers for digests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
pids=()
cleanups=()
cleanup() {
  for c in "${cleanups[@]}"; do eval "$c" || true; done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done; exit 1; }
ok() { echo "ok: $*"; }

start_serve() {  # name, args... ; the server's pid is left in $last_pid
  local name=$1; shift
  rm -f "$work/$name.port"
  "$bin" serve --listen 127.0.0.1:0 --port-file "$work/$name.port" --log-level info "$@" 2> "$work/$name.log" &
  last_pid=$!
  pids+=("$last_pid")
  for _ in $(seq 1 600); do [ -s "$work/$name.port" ] && break; kill -0 "$last_pid" 2>/dev/null || break; sleep 0.05; done
  [ -s "$work/$name.port" ] || fail "$name did not start: $(cat "$work/$name.log")"
}
url_of() { echo "http://127.0.0.1:$(cat "$work/$1.port")"; }
tensors_of() {  # url -> canonical JSON of the tensors' digests
  curl -sf "$1/checksums" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["tensors"], sort_keys=True))'
}
status_field() {  # url python-expression-over-d
  curl -sf "$1/status" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}
wait_recovered() {  # url: until serve --recover finished replaying (GET /status "recovering" false)
  local _
  for _ in $(seq 1 600); do
    [ "$(status_field "$1" 'd.get("recovering", False)')" = False ] && return 0
    sleep 0.05
  done
  fail "$1 still recovering: $(curl -s "$1/status")"
}
vdir() { printf 'weight_v%06d' "$1"; }
files_json() { python3 -c 'import json,os,sys; print(json.dumps(sorted(f for f in os.listdir(sys.argv[1]) if f.endswith(".safetensors"))))' "$1"; }

# Three checkpoints: base -> new is one simulated RL step; third flips one byte in every 61 of new's data.
make_checkpoints() {
  "$bin" demo --offline --model tiny --steps 1 --encodings deltas --keep "$work/ck" > /dev/null 2>&1
  python3 - "$work/ck/new.safetensors" "$work/ck/third.safetensors" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
start = 8 + struct.unpack("<Q", data[:8])[0]
for i in range(start, len(data), 61):
    data[i] ^= 0x24
open(sys.argv[2], "wb").write(data)
PY
  ck_base=$work/ck/base.safetensors
  ck_new=$work/ck/new.safetensors
  ck_third=$work/ck/third.safetensors
}

# A chain of checkpoints for the fleet tests: c0 is the base, c1..cN each flip bytes of the one before (a
# different stride per step), so every version differs from every other. `ck cK` is the path of one.
make_chain_checkpoints() {  # N
  make_checkpoints
  python3 - "$ck_base" "$work/ck" "$1" <<'PY'
import struct, sys
base = bytearray(open(sys.argv[1], "rb").read())
start = 8 + struct.unpack("<Q", base[:8])[0]
cur = base
for k in range(1, int(sys.argv[3]) + 1):
    cur = bytearray(cur)
    for i in range(start + k, len(cur), 37 + 4 * k):
        cur[i] ^= 0x11 * k
    open(f"{sys.argv[2]}/c{k}.safetensors", "wb").write(cur)
PY
  cp "$ck_base" "$work/ck/c0.safetensors"
}
ck() { echo "$work/ck/$1.safetensors"; }

# Digests of each checkpoint, from receivers that load it as their base (the trainer's view).
reference_digests() {
  mkdir -p "$work/ref_deltas"
  local c
  for c in base new third; do
    start_serve "ref_$c" --base "$work/ck/$c.safetensors" --delta-dir "$work/ref_deltas"
    eval "want_$c=\$(tensors_of \"\$(url_of ref_$c)\")"
    kill "$last_pid"; wait "$last_pid" 2>/dev/null || true
  done
  [ "$want_base" != "$want_new" ] && [ "$want_new" != "$want_third" ] || fail "the checkpoints should differ"
}
