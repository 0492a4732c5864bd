#!/usr/bin/env bash
# A fleet that never stalls (docs/fleet.md): four receivers on loopback, publishing is the commit point.
#   sync 1: all four apply it.
#   sync 2: r3 is down; the other three apply v2, the Sender's snapshot (and fleet.json) advances, v2's dir is
#           kept for r3 (no --keep-files) and v1's is pruned once everyone holds it.
#   r3 comes back from its last checkpoint (c1 at version 1), without --recover.
#   sync 3: base 2 is ahead of r3: r3 replays v2 from the kept chain by itself, then applies v3; 200 everywhere.
#   sync 4: all four; then every receiver is bit-identical to a receiver that loads c4 (GET /checksums).
# Also: a retried push of the version held is an idempotent 200; a receiver at version 0 whose chain was
# pruned answers 409 naming the missing versions, store unchanged; the SGLang route refuses a version gap,
# and slime files published from the wrong --from (their digests do not match what the apply made);
# a reused version number is refused by publish and the kept dir is not rewritten.
bin=$1
source "$(dirname "$0")/fault_lib.sh"

make_chain_checkpoints 4
D=$work/deltas
mkdir -p "$D" "$work/ref_deltas"
start_serve ref4 --base "$(ck c4)" --delta-dir "$work/ref_deltas"
want4=$(tensors_of "$(url_of ref4)"); kill "$last_pid"
start_serve ref0 --base "$ck_base" --delta-dir "$work/ref_deltas"
want0=$(tensors_of "$(url_of ref0)"); kill "$last_pid"

declare -A rpid
for r in r0 r1 r2 r3; do start_serve $r --base "$ck_base" --delta-dir "$D"; rpid[$r]=$last_pid; done
push_args() { for r in "$@"; do printf -- '--push %s ' "$(url_of $r)"; done; }
publish() {  # from to version base_version -> JSON in $work/pub_$3.json, exit status in $pub_rc
  set +e
  "$bin" publish --from "$(ck $1)" --to "$(ck $2)" --version $3 --base-version $4 --delta-dir "$D" \
    $(push_args r0 r1 r2 r3) --push-timeout-ms 5000 --json > "$work/pub_$3.json" 2> "$work/pub_$3.log"
  pub_rc=$?
  set -e
}
jq_() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

publish c0 c1 1 0
[ $pub_rc = 0 ] || fail "sync 1: $(cat "$work/pub_1.json")"
ok "sync 1 applied by all four"

kill "${rpid[r3]}"; wait "${rpid[r3]}" 2>/dev/null || true
publish c1 c2 2 1
[ $pub_rc = 1 ] || fail "sync 2 should report r3 down (rc $pub_rc)"
[ "$(jq_ "$work/pub_2.json" 'd["published"]')" = True ] || fail "sync 2 not published: $(cat "$work/pub_2.json")"
[ "$(jq_ "$work/pub_2.json" 'sorted(d["acked"].values())')" = "[1, 2, 2, 2]" ] || fail "acked: $(cat "$work/pub_2.json")"
for r in r0 r1 r2; do [ "$(status_field "$(url_of $r)" 'd["version"]')" = 2 ] || fail "$r not at 2"; done
[ -f "$D/$(vdir 2)/published.json" ] || fail "v2 not kept for the laggard"
[ ! -e "$D/$(vdir 1)" ] || fail "v1 should be pruned: every receiver acknowledged it"
ok "sync 2: three healthy receivers at 2, r3 acked 1, v2 kept, v1 pruned"

start_serve r3 --base "$(ck c1)" --base-version 1 --delta-dir "$D"; rpid[r3]=$last_pid
publish c2 c3 3 2
[ $pub_rc = 0 ] || fail "sync 3: $(cat "$work/pub_3.json")"
for r in r0 r1 r2 r3; do [ "$(status_field "$(url_of $r)" 'd["version"]')" = 3 ] || fail "$r not at 3"; done
[ "$(status_field "$(url_of r3)" '[s["version"] for s in d["last_catch_up"]["replayed"]]')" = "[2]" ] ||
  fail "r3 should have replayed v2: $(curl -s "$(url_of r3)/status")"
jq_ "$work/pub_3.json" '[r["body"].get("caught_up", {}).get("to_version") for r in d["receivers"]]' | grep -q "2\]" ||
  fail "the push answer should say what r3 replayed: $(cat "$work/pub_3.json")"
ok "sync 3: r3 caught up by itself (replayed v2) and applied v3"

publish c3 c4 4 3
[ $pub_rc = 0 ] || fail "sync 4: $(cat "$work/pub_4.json")"
for r in r0 r1 r2 r3; do [ "$(tensors_of "$(url_of $r)")" = "$want4" ] || fail "$r is not bit-identical to c4"; done
ok "all four bit-identical to c4 (GET /checksums)"

# A retry of the push they already hold: idempotent 200.
files=$(files_json "$D/$(vdir 4)")
body="{\"version\": 4, \"base_version\": 3, \"transport\": \"disk\", \"dir\": \"$(vdir 4)\", \"files\": $files}"
out=$(curl -s -w ' %{http_code}' -X POST -d "$body" "$(url_of r0)/sync")
case "$out" in *'"idempotent":true'*' 200') ;; *) fail "retry should be an idempotent 200: $out";; esac
ok "retried push of the held version: idempotent 200"

# A receiver at 0 whose chain was pruned: a 409 naming the missing versions, store unchanged.
start_serve late --base "$ck_base" --delta-dir "$D"
out=$(curl -s -w ' %{http_code}' -X POST -d "$body" "$(url_of late)/sync")
case "$out" in *'versions 1..3 missing (no published, chained version dir for 1, 2'*' 409') ;; *) fail "the gap should be a 409 naming 1..3: $out";; esac
[ "$(tensors_of "$(url_of late)")" = "$want0" ] || fail "the refused catch-up changed the store"
ok "unclosable gap: 409 naming versions 1..3, store unchanged"

# The SGLang route: weight_version 4 on a store at 0 is refused (naming both versions), store unchanged.
sg="{\"model_path\": \"$D/$(vdir 4)\", \"load_format\": \"delta\", \"weight_version\": \"4\", \"files\": $files}"
out=$(curl -s -X POST -d "$sg" "$(url_of late)/update_weights_from_disk")
case "$out" in *'"success":false'*'weight_version 4 is not the store'"'"'s version 0 + 1'*) ;; *) fail "sglang gap accepted: $out";; esac
[ "$(tensors_of "$(url_of late)")" = "$want0" ] || fail "the refused slime sync changed the store"
ok "SGLang route refuses weight_version 4 on a store at 0"

# publish --format slime from the wrong --from (c1, while the receiver holds c0): its files carry the base
# version and the new tensors' digests (deltasync_* keys), so the apply is refused and rolled back instead of
# leaving weights that match no checkpoint. From the right --from the same route applies it.
S=$D/slime; mkdir -p "$S"  # inside late's delta dir
slime_push() {  # from -> the SGLang route's answer from `late`
  rm -rf "${S:?}"/*
  "$bin" publish --from "$(ck $1)" --to "$(ck c2)" --version 1 --base-version 0 --format slime --delta-dir "$S" \
    --keep-files > /dev/null 2>&1 || fail "publish --format slime from $1"
  local fs; fs=$(files_json "$S/$(vdir 1)")
  curl -s -X POST -d "{\"model_path\": \"$S/$(vdir 1)\", \"load_format\": \"delta\", \"weight_version\": \"1\", \"files\": $fs}" \
    "$(url_of late)/update_weights_from_disk"
}
out=$(slime_push c1)
case "$out" in *'"success":false'*'digest'*) ;; *) fail "slime files from the wrong --from accepted: $out";; esac
[ "$(tensors_of "$(url_of late)")" = "$want0" ] || fail "the refused slime sync changed the store"
ok "slime files from the wrong --from: refused by their tensor digests, store unchanged"
out=$(slime_push c0)
case "$out" in *'"success":true'*) ;; *) fail "slime files from the right --from refused: $out";; esac
[ "$(status_field "$(url_of late)" 'd["version"]')" = 1 ] || fail "late not at 1 after the slime sync"

# A reused version number: refused, the kept dir untouched.
sum=$(cat "$D/$(vdir 4)"/* | md5sum)
set +e; "$bin" publish --from "$(ck c3)" --to "$(ck c2)" --version 4 --base-version 3 --delta-dir "$D" > "$work/reuse.log" 2>&1; rc=$?; set -e
[ $rc != 0 ] && grep -q "already published" "$work/reuse.log" || fail "reused version 4 accepted: $(cat "$work/reuse.log")"
[ "$(cat "$D/$(vdir 4)"/* | md5sum)" = "$sum" ] || fail "the published v4 dir was rewritten"
ok "reused version number refused, v4 untouched"
echo PASS
