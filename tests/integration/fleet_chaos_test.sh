#!/usr/bin/env bash
# The fleet soak of issue 17 (docs/fleet.md): FLEET_RECEIVERS (16) receivers on loopback, FLEET_SYNCS (50)
# syncs published by `deltasync publish` without --base-version (each run is a restarted Sender that resumes
# from the delta dir's newest publish marker). At every sync one random receiver fails in one of four ways:
#   kill    SIGKILLed before the push; restarted afterwards from its last checkpoint (its version then)
#   refuse  its port answers 422 to the push (a stand-in server on the same port); then restarted as above
#   slow    restarted with every apply delayed past the push timeout: it times out, commits anyway, and is
#           restarted from the checkpoint of the version it committed
#   stop    SIGSTOPped across the push, SIGCONTed after it (it then handles the push it had buffered)
# After every sync each healthy receiver holds the new version (none ever misses one); a failed receiver
# catches up by itself at the next push. Every 10th version also gets a full-model anchor (--anchor-every),
# which bounds the kept chain. Sync 25's Sender is killed mid-push; the next `publish` continues the chain.
# After sync 40 a receiver joins from the base (version 0): at the next push it applies the anchor of 40, then
# that push. A last clean sync then leaves all of them bit-identical to the trainer (GET /checksums), every
# one acknowledged in fleet.json, and only that version's dir and the newest anchor kept.
bin=$1
source "$(dirname "$0")/fault_lib.sh"
NR=${FLEET_RECEIVERS:-16}
NS=${FLEET_SYNCS:-50}
RANDOM=${FLEET_SEED:-1806}
TIMEOUT_MS=2000
KILL_SENDER_AT=$((NS / 2))
JOIN_AT=$((NS * 4 / 5))
LAST=$((NS + 1))

make_checkpoints
python3 - "$ck_base" "$work/ck" "$LAST" <<'PY'
import struct, sys
cur = bytearray(open(sys.argv[1], "rb").read())
start = 8 + struct.unpack("<Q", cur[:8])[0]
open(f"{sys.argv[2]}/c0.safetensors", "wb").write(cur)
for k in range(1, int(sys.argv[3]) + 1):
    for i in range(start + k % 31, len(cur), 29 + k % 17):
        cur[i] ^= 1 + k % 251
    open(f"{sys.argv[2]}/c{k}.safetensors", "wb").write(cur)
PY
ck() { echo "$work/ck/c$1.safetensors"; }
D=$work/deltas
mkdir -p "$D" "$work/ref_deltas"

declare -a port pid ver
# start_rx i version [env...]: receiver i from the checkpoint of `version`, on its port (0 the first time).
start_rx() {
  local i=$1 v=$2; shift 2
  rm -f "$work/r$i.port"
  env "$@" "$bin" serve --listen "127.0.0.1:${port[$i]:-0}" --port-file "$work/r$i.port" --log-level warn \
    --base "$(ck "$v")" --base-version "$v" --delta-dir "$D" 2>> "$work/r$i.log" &
  pid[$i]=$!
  pids+=("${pid[$i]}")
  for _ in $(seq 1 600); do [ -s "$work/r$i.port" ] && break; kill -0 "${pid[$i]}" 2>/dev/null || break; sleep 0.05; done
  [ -s "$work/r$i.port" ] || fail "r$i did not start: $(tail -5 "$work/r$i.log")"
  port[$i]=$(cat "$work/r$i.port")
  ver[$i]=$v
}
stop_rx() { kill -9 "${pid[$1]}" 2>/dev/null || true; wait "${pid[$1]}" 2>/dev/null || true; }
# The receivers' versions, one per line ("i version"; -1 when it does not answer).
probe() {
  python3 - "$@" <<'PY'
import json, sys, urllib.request
for arg in sys.argv[1:]:
    i, port = arg.split(":")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=3) as r:
            print(i, json.load(r)["version"])
    except Exception:
        print(i, -1)
PY
}
members() { local i; for i in "${!port[@]}"; do printf '%s:%s ' "$i" "${port[$i]}"; done; }
push_args() { local i; for i in "${!port[@]}"; do printf -- '--push http://127.0.0.1:%s ' "${port[$i]}"; done; }
publish_cmd() {  # n -> the command line of sync n (base: the delta dir's newest published version)
  echo "$bin" publish --from "$(ck $(($1 - 1)))" --to "$(ck "$1")" --version "$1" --delta-dir "$D" \
    $(push_args) --push-timeout-ms $TIMEOUT_MS --anchor-every 10 --json
}
refuser() {  # port ready-file: answers every POST with 422, like a receiver that finds the files invalid
  python3 - "$1" "$2" <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "delta_bad_checksum: refused by the soak's stand-in", "code": "delta_bad_checksum"}).encode()
        self.send_response(422)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer.allow_reuse_address = True
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
open(sys.argv[2], "w").write("ready")
s.serve_forever()
PY
  refuser_pid=$!
  pids+=("$refuser_pid")
  for _ in $(seq 1 200); do [ -s "$2" ] && return; sleep 0.05; done
  fail "the refuser on port $1 did not start"
}
wait_version() {  # i version seconds: until receiver i reports the version
  local t
  for t in $(seq 1 $(($3 * 10))); do
    [ "$(probe "$1:${port[$1]}" | cut -d' ' -f2)" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

for i in $(seq 0 $((NR - 1))); do start_rx "$i" 0; done
kinds=(kill refuse slow stop)
declare -A seen
for n in $(seq 1 "$LAST"); do
  victim=-1 kind=none
  if [ "$n" -le "$NS" ]; then
    victim=$((RANDOM % NR)); kind=${kinds[$((RANDOM % 4))]}
    [ "$n" = "$KILL_SENDER_AT" ] && kind=stop
    seen[$kind]=1
  fi
  case $kind in
    kill) stop_rx "$victim" ;;
    refuse) stop_rx "$victim"; rm -f "$work/refuser.ready"; refuser "${port[$victim]}" "$work/refuser.ready" ;;
    slow) stop_rx "$victim"; start_rx "$victim" "${ver[$victim]}" DELTASYNC_TEST_APPLY_DELAY_MS=$((TIMEOUT_MS + 1500)) ;;
    stop) kill -STOP "${pid[$victim]}" ;;
  esac

  set +e
  if [ "$n" = "$KILL_SENDER_AT" ]; then
    # The Sender dies while it waits for the stopped receiver: after the marker, before fleet.json.
    $(publish_cmd "$n") > "$work/pub_$n.json" 2> "$work/pub_$n.log" &
    sender_pid=$!
    for _ in $(seq 1 100); do [ -f "$D/$(vdir "$n")/published.json" ] && break; sleep 0.05; done
    sleep 0.5
    kill -9 "$sender_pid"; wait "$sender_pid" 2>/dev/null
    rc=killed
  else
    $(publish_cmd "$n") > "$work/pub_$n.json" 2> "$work/pub_$n.log"
    rc=$?
  fi
  set -e
  [ -f "$D/$(vdir "$n")/published.json" ] || fail "sync $n ($kind r$victim) was not published: $(cat "$work/pub_$n.log")"
  if [ "$rc" != killed ]; then
    want_rc=1; [ "$kind" = none ] && want_rc=0
    [ "$rc" = "$want_rc" ] || fail "sync $n ($kind r$victim): publish exit status $rc: $(cat "$work/pub_$n.json" "$work/pub_$n.log")"
    base=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_version"])' "$work/pub_$n.json")
    [ "$base" = $((n - 1)) ] || fail "sync $n was computed against $base, not $((n - 1)) (resume from the newest marker)"
  fi

  # No healthy receiver misses a version.
  for _ in $(seq 1 30); do
    missed=$(probe $(members) | while read -r i v; do [ "$i" != "$victim" ] && [ "$v" != "$n" ] && echo "r$i:$v"; done || true)
    [ -z "$missed" ] && break
    [ "$rc" = killed ] || break  # a killed Sender's push may still be in flight at the others
    sleep 0.1
  done
  [ -z "$missed" ] || fail "sync $n ($kind r$victim): healthy receivers not at $n: $missed"

  case $kind in
    kill) start_rx "$victim" "${ver[$victim]}" ;;
    refuse) kill -9 "$refuser_pid"; wait "$refuser_pid" 2>/dev/null || true; start_rx "$victim" "${ver[$victim]}" ;;
    slow)
      wait_version "$victim" "$n" 30 || fail "sync $n: the slow r$victim never committed $n after its timeout"
      stop_rx "$victim"; start_rx "$victim" "$n" ;;
    stop) kill -CONT "${pid[$victim]}" ;;
  esac
  for i in "${!port[@]}"; do [ "$i" = "$victim" ] || ver[$i]=$n; done
  if [ "$kind" = stop ]; then
    v=$(probe "$victim:${port[$victim]}" | cut -d' ' -f2)
    [ "$v" -ge 0 ] 2>/dev/null && ver[$victim]=$v
  fi
  if [ "$n" = "$JOIN_AT" ]; then
    [ -f "$D/anchor_v$(printf %06d "$n")/published.json" ] || fail "no anchor of version $n"
    start_rx "$NR" 0
  fi
  if [ "$n" = $((JOIN_AT + 1)) ]; then
    replayed=$(status_field "http://127.0.0.1:${port[$NR]}" '[(s["version"], s["anchor"]) for s in d["last_catch_up"]["replayed"]]')
    [ "$replayed" = "[($JOIN_AT, True)]" ] || fail "the late joiner should have caught up from the anchor of $JOIN_AT: $replayed"
  fi
done
for k in "${kinds[@]}"; do [ -n "${seen[$k]:-}" ] || fail "fault kind $k never drawn (seed $RANDOM)"; done
ok "$NS syncs over $NR receivers, one failing at each (kill, 422, timeout, stop): no healthy receiver missed a version"

start_serve ref --base "$(ck "$LAST")" --delta-dir "$work/ref_deltas"
want=$(tensors_of "$(url_of ref)")
for i in "${!port[@]}"; do
  [ "$(tensors_of "http://127.0.0.1:${port[$i]}")" = "$want" ] || fail "r$i is not bit-identical to the trainer"
done
ok "all $((NR + 1)) receivers (the late joiner too) bit-identical to the trainer at version $LAST"
python3 - "$D/fleet.json" "$LAST" $((NR + 1)) <<'PY' || fail "fleet.json: $(cat "$D/fleet.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["published"] == int(sys.argv[2]), d
assert len(d["acked"]) == int(sys.argv[3]) and set(d["acked"].values()) == {int(sys.argv[2])}, d
PY
kept=$(cd "$D" && ls -d weight_v* anchor_v* | tr '\n' ' ')
newest_anchor=anchor_v$(printf %06d $((NS / 10 * 10)))
[ "$kept" = "$newest_anchor $(vdir "$LAST") " ] || fail "retention should keep only $(vdir "$LAST") and $newest_anchor: $kept"
ok "fleet.json: every receiver acknowledged $LAST; only its dir and the newest anchor are kept"
echo PASS
