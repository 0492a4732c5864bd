#!/usr/bin/env bash
# A fleet over the HTTP pull transport (docs/fleet.md): three receivers that pull every sync from one
# `deltasync serve-files`, each with a delta dir of its own (empty: nothing is shared with the Sender but HTTP).
#   sync 1: all three apply it.
#   sync 2: r2 is down; r0 and r1 apply v2, the version is published, v2's dir is kept for r2.
#   r2 comes back from its last checkpoint (c1 at version 1), without --recover. A push that names a second
#   file server, where one byte of v2's file is flipped (same size): r2 walks the markers back there, pulls
#   v2 and refuses it on the marker's XXH3-64 (409 naming it); its store stays bit-identical to c1.
#   sync 3: base 2 is ahead of r2: it pulls v2 from the real server by itself, then applies v3.
#   sync 4: every receiver bit-identical to c4; a retried pull push of v4 is an idempotent 200.
#   A receiver at 0 whose chain was pruned on the server: 409 naming the missing link, store unchanged.
#   sync 5 writes a full-model anchor; a receiver joining at 0 gets sync 6 and catches up from anchor_v5.
#   serve --recover-from: a receiver started from the base recovers to version 6 from the file server alone.
# The Sender's file server is serve-files, or nginx (fleet_pull_test.sh BIN nginx; skipped with exit 77 when
# nginx is not installed): the walk needs no directory listing, only plain GETs of published.json/fleet.json.
set -euo pipefail
bin=$1
server_kind=${2:-deltasync}
if [ "$server_kind" = nginx ] && ! command -v nginx > /dev/null; then
  echo "SKIP: nginx is not installed (scripts/install-deps.sh installs nginx-light)"; exit 77
fi
source "$(dirname "$0")/fault_lib.sh"
source "$(dirname "$0")/nginx_lib.sh"
chmod 755 "$work"  # nginx workers run as an unprivileged user

make_chain_checkpoints 6
D=$work/deltas
mkdir -p "$D" "$work/ref_deltas"
for c in c0 c1 c4 c6; do
  start_serve ref_$c --base "$(ck $c)" --delta-dir "$work/ref_deltas"
  eval "want_$c=\$(tensors_of \"\$(url_of ref_$c)\")"
  kill "$last_pid"; wait "$last_pid" 2>/dev/null || true
done

if [ "$server_kind" = nginx ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  write_nginx_conf "$work/nginx" "$D" $port
  nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" > "$work/nginx/out.log" 2>&1 &
  nginx_pid=$!
  # Stopped with TERM before the trap's kill -9, which would leave its worker running.
  cleanups+=("kill $nginx_pid; wait $nginx_pid")
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  FS=http://127.0.0.1:$port
else
  "$bin" serve-files --dir "$D" --listen 127.0.0.1:0 --port-file "$work/fs.port" --log-level warn 2> "$work/fs.log" &
  pids+=($!)
  for _ in $(seq 1 200); do [ -s "$work/fs.port" ] && break; sleep 0.05; done
  [ -s "$work/fs.port" ] || fail "serve-files did not start"
  FS=http://127.0.0.1:$(cat "$work/fs.port")
fi
mkdir -p "$work/mirror"
"$bin" serve-files --dir "$work/mirror" --listen 127.0.0.1:0 --port-file "$work/fs2.port" --log-level warn 2> "$work/fs2.log" &
pids+=($!)
for _ in $(seq 1 200); do [ -s "$work/fs2.port" ] && break; sleep 0.05; done
[ -s "$work/fs2.port" ] || fail "the second serve-files did not start"
FS2=http://127.0.0.1:$(cat "$work/fs2.port")

receiver() {  # name base base_version [serve args...]
  local name=$1 base=$2 bv=$3; shift 3
  mkdir -p "$work/rx_$name"
  start_serve "$name" --base "$base" --base-version "$bv" --delta-dir "$work/rx_$name" --pull-allow "$FS" "$@"
}
declare -A rpid
for r in r0 r1 r2; do receiver $r "$(ck c0)" 0; rpid[$r]=$last_pid; done
push_args() { for r in "$@"; do printf -- '--push %s ' "$(url_of $r)"; done; }
publish() {  # from to version base_version [receivers...] [-- extra publish args] -> $work/pub_$3.json, $pub_rc
  local from=$1 to=$2 v=$3 b=$4; shift 4
  local rx=() extra=()
  while [ $# -gt 0 ]; do [ "$1" = -- ] && { shift; extra=("$@"); break; }; rx+=("$1"); shift; done
  set +e
  "$bin" publish --from "$(ck $from)" --to "$(ck $to)" --version $v --base-version $b --delta-dir "$D" \
    --pull-base-url "$FS" $(push_args "${rx[@]}") --push-timeout-ms 5000 --json "${extra[@]}" \
    > "$work/pub_$v.json" 2> "$work/pub_$v.log"
  pub_rc=$?
  set -e
}
jq_() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
version_of() { status_field "$(url_of $1)" 'd["version"]'; }

publish c0 c1 1 0 r0 r1 r2
[ $pub_rc = 0 ] || fail "sync 1: $(cat "$work/pub_1.json")"
ok "sync 1 pulled and applied by all three"

kill "${rpid[r2]}"; wait "${rpid[r2]}" 2>/dev/null || true
publish c1 c2 2 1 r0 r1 r2
[ $pub_rc = 1 ] || fail "sync 2 should report r2 down (rc $pub_rc)"
[ "$(jq_ "$work/pub_2.json" 'd["published"]')" = True ] || fail "sync 2 not published: $(cat "$work/pub_2.json")"
[ -f "$D/$(vdir 2)/published.json" ] || fail "v2 not kept for the laggard"
ok "sync 2: r0, r1 at 2, v2 kept for r2"

receiver r2 "$(ck c1)" 1 --pull-allow "$FS2"; rpid[r2]=$last_pid
# A second file server over a copy of the delta dir in which one byte of v2's file is flipped (same size).
cp -r "$D/$(vdir 2)" "$work/mirror/"
victim=$(ls "$work/mirror/$(vdir 2)"/*.safetensors | head -1)
python3 - "$victim" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)
PY
body="{\"version\": 3, \"base_version\": 2, \"transport\": \"http\", \"base_url\": \"$FS2\", \"dir\": \"$(vdir 3)\", \"files\": [\"x.safetensors\"]}"
out=$(curl -s -w ' %{http_code}' -X POST -d "$body" "$(url_of r2)/sync")
case "$out" in *'replaying weight_v000002'*'XXH3-64'*' 409') ;; *) fail "a changed file on the chain should be a 409 naming the marker's XXH3-64: $out";; esac
[ "$(version_of r2)" = 1 ] && [ "$(tensors_of "$(url_of r2)")" = "$want_c1" ] ||
  fail "the refused catch-up changed r2's store"
ok "r2 pulled v2 from a server where it was changed: refused on the marker's XXH3-64, store still c1"

publish c2 c3 3 2 r0 r1 r2
[ $pub_rc = 0 ] || fail "sync 3: $(cat "$work/pub_3.json")"
[ "$(status_field "$(url_of r2)" '[s["version"] for s in d["last_catch_up"]["replayed"]]')" = "[2]" ] ||
  fail "r2 should have pulled and replayed v2: $(curl -s "$(url_of r2)/status")"
ok "sync 3: r2 caught up over HTTP by itself (replayed v2) and applied v3"

publish c3 c4 4 3 r0 r1 r2
[ $pub_rc = 0 ] || fail "sync 4: $(cat "$work/pub_4.json")"
for r in r0 r1 r2; do [ "$(tensors_of "$(url_of $r)")" = "$want_c4" ] || fail "$r is not bit-identical to c4"; done
ok "sync 4: all three bit-identical to c4"

files=$(files_json "$D/$(vdir 4)")
body="{\"version\": 4, \"base_version\": 3, \"transport\": \"http\", \"base_url\": \"$FS\", \"dir\": \"$(vdir 4)\", \"files\": $files}"
out=$(curl -s -w ' %{http_code}' -X POST -d "$body" "$(url_of r0)/sync")
case "$out" in *'"idempotent":true'*' 200') ;; *) fail "a retried pull push should be an idempotent 200: $out";; esac
ok "retried pull push of the held version: idempotent 200 (marker fetched from the server)"

# The restarted r2 came back on another port, so the Sender still counts its old address at version 1 and keeps
# v2..v4 for it; prune v2 and v3 by hand, as retention does once every receiver it knows holds them.
rm -rf "${D:?}/$(vdir 2)" "${D:?}/$(vdir 3)"
receiver late "$(ck c0)" 0
body="{\"version\": 5, \"base_version\": 4, \"transport\": \"http\", \"base_url\": \"$FS\", \"dir\": \"$(vdir 5)\", \"files\": [\"x.safetensors\"]}"
out=$(curl -s -w ' %{http_code}' -X POST -d "$body" "$(url_of late)/sync")
case "$out" in *'versions 1..4 missing on the file server'*"$(vdir 3)"*' 409') ;;
  *) fail "the pruned chain should be a 409 naming the missing link: $out";; esac
[ "$(tensors_of "$(url_of late)")" = "$want_c0" ] || fail "the refused catch-up changed the store"
ok "pruned chain on the server: 409 naming $(vdir 3), store unchanged"

publish c4 c5 5 4 r0 r1 r2 -- --anchor
[ $pub_rc = 0 ] || fail "sync 5: $(cat "$work/pub_5.json")"
[ -f "$D/anchor_v000005/published.json" ] || fail "no anchor of version 5"
publish c5 c6 6 5 r0 r1 r2 late
[ $pub_rc = 0 ] || fail "sync 6: $(cat "$work/pub_6.json")"
replayed=$(status_field "$(url_of late)" '[(s["version"], s["anchor"]) for s in d["last_catch_up"]["replayed"]]')
[ "$replayed" = "[(5, True)]" ] || fail "the late joiner should have caught up from anchor_v5: $replayed"
for r in r0 r1 r2 late; do [ "$(tensors_of "$(url_of $r)")" = "$want_c6" ] || fail "$r is not bit-identical to c6"; done
ok "sync 6: a receiver joining at 0 pulled anchor_v5, then v6; all four bit-identical to c6"

# A pull-only receiver restarted from the base recovers before the next push: serve --recover-from reads the
# newest published version from the server's fleet.json and walks the markers there (anchor_v5, then v6).
mkdir -p "$work/rx_rec"
start_serve rec --base "$(ck c0)" --delta-dir "$work/rx_rec" --recover-from "$FS"
wait_recovered "$(url_of rec)"
replayed=$(status_field "$(url_of rec)" '[(s["version"], s["anchor"]) for s in d["recovery"]["replayed"]]')
[ "$replayed" = "[(5, True), (6, False)]" ] || fail "--recover-from should have replayed anchor_v5 and v6: $(curl -s "$(url_of rec)/status")"
[ "$(version_of rec)" = 6 ] && [ "$(tensors_of "$(url_of rec)")" = "$want_c6" ] || fail "--recover-from did not reach c6"
ok "serve --recover-from: a pull-only receiver recovered to the newest published version (6) from the file server"
echo PASS
