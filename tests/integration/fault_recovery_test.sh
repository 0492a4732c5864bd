#!/usr/bin/env bash
# Crash faults, with the real binary: (1) a writer (`deltasync publish`) killed with SIGKILL mid-flush leaves
# a version dir without its publish marker, and a receiver started with --recover never applies it; (2) a
# receiver killed with SIGKILL in the middle of an apply, restarted with --recover, replays the kept version
# dirs and ends bit-identical to the trainer (GET /checksums == the checkpoint's digests), then takes the
# next live sync.
bin=$1
source "$(dirname "$0")/fault_lib.sh"
make_checkpoints
reference_digests

# 1. Writer killed mid-flush.
D=$work/deltas1
mkdir -p "$D"
"$bin" publish --from "$ck_base" --to "$ck_new" --delta-dir "$D" --version 1 --base-version 0 --keep-files \
  > "$work/p1.log" 2>&1 || fail "publish v1: $(cat "$work/p1.log")"
[ -f "$D/$(vdir 1)/published.json" ] || fail "v1 has no publish marker"
# v2: small buckets (several files) and a pause after each file, so the kill lands between two files.
DELTASYNC_TEST_FLUSH_DELAY_MS=3000 "$bin" publish --from "$ck_new" --to "$ck_third" --delta-dir "$D" --version 2 \
  --base-version 1 --keep-files --update-weight-buffer-size 4096 > "$work/p2.log" 2>&1 &
writer=$!
pids+=("$writer")
for _ in $(seq 1 200); do ls "$D/$(vdir 2)"/rank*.safetensors > /dev/null 2>&1 && break; sleep 0.05; done
ls "$D/$(vdir 2)"/rank*.safetensors > /dev/null 2>&1 || fail "the writer wrote no file"
kill -9 "$writer"
wait "$writer" 2>/dev/null && fail "the writer should have died" || true
[ ! -e "$D/$(vdir 2)/published.json" ] || fail "a killed writer left a publish marker"
written=$(ls "$D/$(vdir 2)" | wc -l)
ok "writer killed by SIGKILL after $written file(s) of v2: no publish marker"

start_serve r1 --base "$ck_base" --delta-dir "$D" --recover
R1=$(url_of r1)
wait_recovered "$R1"
[ "$(status_field "$R1" 'd["version"]')" = 1 ] || fail "recovery should reach v1: $(curl -s "$R1/status")"
[ "$(tensors_of "$R1")" = "$want_new" ] || fail "after recovery the store should equal the v1 checkpoint"
reason=$(status_field "$R1" '[s["reason"] for s in d["recovery"]["skipped"] if s["dir"] == "weight_v000002"][0]')
case $reason in *"no publish marker"*) ;; *) fail "v2 should be skipped for its missing marker, got: $reason";; esac
grep -q "skipped weight_v000002: no publish marker" "$work/r1.log" || fail "the skip should be logged"
[ "$(status_field "$R1" '[s["version"] for s in d["recovery"]["replayed"]]')" = "[1]" ] || fail "only v1 replayed"
ok "receiver --recover: replayed v1 (store == trainer's v1), never applied the unpublished v2 ($reason)"

# 2. Receiver killed mid-apply, restarted with --recover.
D=$work/deltas2
mkdir -p "$D"
DELTASYNC_TEST_APPLY_DELAY_MS=4000 start_serve r2 --base "$ck_base" --delta-dir "$D"
r2_pid=$last_pid
R2=$(url_of r2)
"$bin" publish --from "$ck_base" --to "$ck_new" --delta-dir "$D" --version 1 --base-version 0 --keep-files \
  --push "$R2" > "$work/p3.log" 2>&1 || fail "publish v1 to r2: $(cat "$work/p3.log")"
[ "$(status_field "$R2" 'd["version"]')" = 1 ] || fail "r2 should hold v1"
"$bin" publish --from "$ck_new" --to "$ck_third" --delta-dir "$D" --version 2 --base-version 1 --keep-files \
  --push "$R2" > "$work/p4.log" 2>&1 &
pusher=$!
pids+=("$pusher")
busy=no
for _ in $(seq 1 1000); do  # a cheap poll (no python): the apply of v2 waits 4 s, even a loaded host sees it
  if curl -sf "$R2/status" | grep -q '"sync_in_flight":true'; then busy=yes; break; fi
  sleep 0.02
done
[ "$busy" = yes ] || fail "sync v2 should be in flight on r2"
kill -9 "$r2_pid"
wait "$r2_pid" 2>/dev/null || true
if wait "$pusher"; then fail "publish v2 should fail: its receiver died"; fi
grep -q "unreachable\|receivers failed" "$work/p4.log" || fail "publish should name the dead receiver: $(cat "$work/p4.log")"
[ -f "$D/$(vdir 2)/published.json" ] || fail "v2 was fully written: its marker should be there"
ok "receiver killed by SIGKILL in the middle of applying v2; the sender reports it"

# Recovery switched on by the config file this time (recover = true in [serve]).
# Each replayed apply is slowed down so the test sees the receiver serve while it recovers: GET /status
# answers ("recovering": true) and a push gets 503 with Retry-After.
printf '[serve]\nrecover = true\n' > "$work/recover.toml"
DELTASYNC_TEST_APPLY_DELAY_MS=1500 start_serve r3 --base "$ck_base" --delta-dir "$D" --config "$work/recover.toml"
R3=$(url_of r3)
[ "$(status_field "$R3" 'd["recovering"]')" = True ] || fail "r3 should report recovering: $(curl -s "$R3/status")"
hdr=$(curl -s -D - -o "$work/busy.json" -X POST -d "{\"version\": 9, \"base_version\": 8, \"dir\": \"$(vdir 9)\", \"files\": [\"x.safetensors\"]}" "$R3/sync")
case "$hdr" in *" 503"*) ;; *) fail "a push during recovery should be a 503: $hdr";; esac
echo "$hdr" | grep -qi '^retry-after: 1' || fail "the 503 should carry Retry-After: $hdr"
grep -q "recovering" "$work/busy.json" || fail "the 503 should say it is recovering: $(cat "$work/busy.json")"
ok "serving during --recover: /status answers (recovering), a push gets 503 + Retry-After"
wait_recovered "$R3"
[ "$(status_field "$R3" 'd["version"]')" = 2 ] || fail "recovery should reach v2: $(curl -s "$R3/status")"
[ "$(status_field "$R3" '[s["version"] for s in d["recovery"]["replayed"]]')" = "[1, 2]" ] || fail "v1 then v2 replayed"
[ "$(tensors_of "$R3")" = "$want_third" ] || fail "after recovery the store should equal the trainer's v2"
grep -q "recovery done: version 0 -> 2, 2 replayed" "$work/r3.log" || fail "recovery should be logged"
ok "restarted receiver with --recover: replayed v1, v2; store == trainer's v2"

# The recovered receiver takes the next live sync.
"$bin" publish --from "$ck_third" --to "$ck_new" --delta-dir "$D" --version 3 --base-version 2 --push "$R3" \
  > "$work/p5.log" 2>&1 || fail "publish v3 after recovery: $(cat "$work/p5.log")"
[ "$(tensors_of "$R3")" = "$want_new" ] || fail "store should equal the trainer's v3"
ok "live sync v3 after recovery: store == trainer's v3"
echo "fault_recovery_test: all checks passed"
