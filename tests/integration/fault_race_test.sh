#!/usr/bin/env bash
# Concurrency and peer faults against the real binary, each asserting the exact HTTP answer and the store
# afterwards (GET /checksums == the trainer's digests of the version it reports):
#   two senders racing with the same version; a client that disconnects mid-body and one that disconnects
#   while its sync is applied. (A file that changes while it is read is tests/sync/receiver_fault_test.cc:
#   only an I/O-level hook can land the change between two reads of the same file deterministically.)
bin=$1
source "$(dirname "$0")/fault_lib.sh"
make_checkpoints
reference_digests
D=$work/deltas
mkdir -p "$D"
body_for() {  # version base_version -> /sync body for the kept dir of that version
  echo "{\"version\": $1, \"base_version\": $2, \"transport\": \"disk\", \"dir\": \"$(vdir "$1")\", \"files\": $(files_json "$D/$(vdir "$1")")}"
}
post() {  # url body outfile -> prints the HTTP status
  curl -s -o "$3" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$2" "$1/sync"
}

# The receiver delays each apply so that overlapping requests really overlap.
DELTASYNC_TEST_APPLY_DELAY_MS=2000 start_serve rx --base "$ck_base" --delta-dir "$D" \
  --update-weight-delta-chunk-bytes 4096 --update-weight-delta-read-workers 1
RX=$(url_of rx)

# 1. Two senders racing with the same version (and the same files): exactly one 200; the other 503 (it
#    arrived while the first ran) or 409 (it arrived after the commit); the store is the trainer's v1.
"$bin" publish --from "$ck_base" --to "$ck_new" --delta-dir "$D" --version 1 --base-version 0 --keep-files > /dev/null 2>&1
b=$(body_for 1 0)
post "$RX" "$b" "$work/a.json" > "$work/a.code" &
ra=$!
post "$RX" "$b" "$work/b.json" > "$work/b.code" &
rb=$!
wait $ra $rb
codes=$(sort <<< "$(cat "$work/a.code")
$(cat "$work/b.code")" | tr '\n' ' ')
case "$codes" in "200 503 "|"200 409 ") ;; *) fail "racing senders: expected one 200 and one 503/409, got $codes: $(cat "$work/a.json" "$work/b.json")";; esac
python3 - "$work/a.json" "$work/b.json" <<'PY' || fail "racing senders: the refused one should say why and where the store is"
import json, sys
bodies = [json.load(open(p)) for p in sys.argv[1:]]
loser = [b for b in bodies if "error" in b]
assert len(loser) == 1 and loser[0]["current_version"] in (0, 1) and loser[0]["code"] in ("busy", "version_conflict"), bodies
PY
[ "$(status_field "$RX" 'd["version"]')" = 1 ] || fail "racing senders: version should be 1"
[ "$(tensors_of "$RX")" = "$want_new" ] || fail "racing senders: store should be the trainer's v1"
ok "two senders racing with version 1 -> $codes(store == trainer's v1)"

# 2a. Client disconnects in the middle of its request body: no sync starts, the store is unchanged.
"$bin" publish --from "$ck_new" --to "$ck_third" --delta-dir "$D" --version 2 --base-version 1 --keep-files > /dev/null 2>&1
b=$(body_for 2 1)
python3 - "$(cat "$work/rx.port")" "$b" <<'PY'
import socket, sys
port, body = int(sys.argv[1]), sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
s.sendall(body[: len(body) // 2])
s.close()
PY
sleep 0.3
[ "$(status_field "$RX" 'd["version"]')" = 1 ] || fail "a half-sent request must not sync"
[ "$(status_field "$RX" 'd["sync_in_flight"]')" = False ] || fail "a half-sent request must not start a sync"
[ "$(tensors_of "$RX")" = "$want_new" ] || fail "half-sent request: store changed"
ok "client disconnects mid-body -> no sync, store unchanged"

# 2b. Client disconnects while its sync is being applied: the sync still completes whole (or not at all);
#     the answer is dropped, the receiver keeps serving and the store is the trainer's v2.
python3 - "$(cat "$work/rx.port")" "$b" <<'PY'
import json, socket, sys, time, urllib.request
port, body = int(sys.argv[1]), sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
deadline = time.time() + 20
while time.time() < deadline:  # until the sync is in flight (each apply waits 2 s)
    st = json.load(urllib.request.urlopen("http://127.0.0.1:%d/status" % port))
    if st["sync_in_flight"]:
        break
    time.sleep(0.01)
else:
    sys.exit("the sync never started")
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close with RST
s.close()
PY
for _ in $(seq 1 400); do curl -sf "$RX/status" | grep -q '"sync_in_flight":false' && break; sleep 0.05; done
[ "$(status_field "$RX" 'd["version"]')" = 2 ] || fail "the abandoned sync should still commit whole: $(curl -s "$RX/status")"
[ "$(tensors_of "$RX")" = "$want_third" ] || fail "abandoned sync: store should be the trainer's v2"
ok "client disconnects (RST) while its sync applies -> sync commits whole, store == trainer's v2, server still serves"

echo "fault_race_test: all checks passed"
