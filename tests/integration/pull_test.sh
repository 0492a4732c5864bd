#!/usr/bin/env bash
# End-to-end test of the HTTP pull transport with the real binary on loopback: a receiver pulls syncs
# ("transport": "http") from `deltasync serve-files` (or nginx: pull_test.sh BIN nginx, skipped with exit 77
# when nginx is not installed), in several files of several ranges each, and every bad input — a truncated
# body, a wrong Content-Length, a server error mid-transfer, a HEAD that lies about the size, a missing file,
# an unreachable server, a bad URL, an escaping dir, a server outside the receiver's pull-allow list — is refused
# with a clear 4xx/5xx while the store stays bit-identical (compared through GET /checksums). Every file server
# of the test listens on one port, the only one the receiver's pull-allow (set in a --config file) names.
set -euo pipefail
bin=$1
server_kind=${2:-deltasync}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/nginx_lib.sh"
work=$(mktemp -d)
chmod 755 "$work"  # nginx workers run as an unprivileged user
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
wait_port() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; fail "no port file $1"; }

if [ "$server_kind" = nginx ]; then
  nginx_bin=$(command -v nginx || true)
  [ -n "$nginx_bin" ] || { echo "SKIP: nginx is not installed (scripts/install-deps.sh installs nginx-light)"; exit 77; }
fi

"$bin" demo --offline --model tiny --steps 1 --encodings deltas --keep "$work/ck" > /dev/null
base=$work/ck/base.safetensors
new=$work/ck/new.safetensors
mkdir -p "$work/served" "$work/rx_dir" "$work/ref_dir"

# Syncs v1 (base -> new) and v2 (new -> base), in small buckets so each sync has several files.
for v in 1 2; do
  from=$base; to=$new
  [ $v = 2 ] && { from=$new; to=$base; }
  "$bin" publish --from "$from" --to "$to" --delta-dir "$work/served" --version $v --base-version $((v - 1)) \
    --encoding deltas --update-weight-buffer-size 8192 --keep-files --json > "$work/pub$v.json"
done
files_of() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["files"]))' "$work/pub$1.json"; }
nfiles=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["files"]))' "$work/pub1.json")
[ "$nfiles" -ge 2 ] || fail "expected several files per sync, got $nfiles"

# The file servers' port (each kind in turn, one at a time) and the receiver's allow list, from a config file.
fs_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FS=http://127.0.0.1:$fs_port
printf '[serve]\npull-allow = ["%s/"]\n' "$FS" > "$work/rx.toml"
# A bad pull-allow entry stops serve at start-up, naming the entry.
if "$bin" serve --model tiny --delta-dir "$work/rx_dir" --listen 127.0.0.1:0 --pull-allow "http://u@$fs_port:1/" \
  > "$work/bad_allow.txt" 2>&1; then fail "serve accepted a bad pull-allow entry"; fi
grep -q "pull-allow entry 'http://u@$fs_port:1/'" "$work/bad_allow.txt" || fail "bad pull-allow: $(cat "$work/bad_allow.txt")"

# Receiver: 4 KiB pieces, 4 requests in flight, so a file takes several ranges.
"$bin" serve --config "$work/rx.toml" --listen 127.0.0.1:0 --port-file "$work/rx.port" --base "$base" --delta-dir "$work/rx_dir" \
  --update-weight-delta-chunk-bytes 4096 --update-weight-delta-read-workers 4 --log-level warn 2> "$work/rx.log" &
pids+=($!)
"$bin" serve --listen 127.0.0.1:0 --port-file "$work/ref.port" --base "$new" --delta-dir "$work/ref_dir" --log-level warn &
pids+=($!)
wait_port "$work/rx.port"; wait_port "$work/ref.port"
RX=http://127.0.0.1:$(cat "$work/rx.port")
REF=http://127.0.0.1:$(cat "$work/ref.port")
tensors_of() { curl -sf "$1/checksums" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["tensors"], sort_keys=True))'; }
version_of() { curl -sf "$1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }
want_base=$(tensors_of "$RX")
want_new=$(tensors_of "$REF")
[ "$want_base" != "$want_new" ] || fail "the checkpoints should differ"

fs_pid=
stop_files() {
  [ -n "$fs_pid" ] || return 0
  kill "$fs_pid" 2>/dev/null || true; wait "$fs_pid" 2>/dev/null || true; fs_pid=
}
start_files() {  # kind: a file server of that kind on $fs_port (FS), instead of the one running
  stop_files
  rm -f "$work/fs.port"
  local port=$fs_port
  case $1 in
    deltasync)
      "$bin" serve-files --dir "$work/served" --listen 127.0.0.1:$port --port-file "$work/fs.port" --log-level warn &
      fs_pid=$!; pids+=($!); wait_port "$work/fs.port" ;;
    nginx)
      write_nginx_conf "$work/nginx" "$work/served" $port
      nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
      fs_pid=$!; pids+=($!)
      for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done ;;
    *)
      python3 "$here/pull_fault_server.py" "$work/served" "$work/fs.port" "$1" "$port" &
      fs_pid=$!; pids+=($!); wait_port "$work/fs.port" ;;
  esac
}
pull_body() {  # version base_version files base_url [dir]
  echo "{\"version\": $1, \"base_version\": $2, \"transport\": \"http\", \"base_url\": \"$4\", \"dir\": \"${5:-$(printf 'weight_v%06d' "$1")}\", \"files\": $3}"
}
expect_pull() {  # want-status what body
  local got
  got=$(curl -s -o "$work/resp.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$3" "$RX/sync")
  [ "$got" = "$1" ] || fail "$2: expected HTTP $1, got $got: $(cat "$work/resp.json")"
}
expect_unchanged() {  # what want-tensors want-version
  [ "$(tensors_of "$RX")" = "$2" ] || fail "$1: the store changed"
  [ "$(version_of "$RX")" = "$3" ] || fail "$1: the version changed"
}

# 1. A good pull from the real server (ours or nginx): v1 lands bit-identical to the reference.
start_files "$server_kind"
expect_pull 200 "pull v1 from $server_kind" "$(pull_body 1 0 "$(files_of 1)" "$FS")"
[ "$(tensors_of "$RX")" = "$want_new" ] || fail "after the v1 pull the store differs from the reference"
grep -q '"bytes_read"' "$work/resp.json" || fail "no stats in the answer"
echo "ok: v1 pulled from $server_kind in $nfiles files, bit-identical"

if [ "$server_kind" = nginx ]; then
  expect_pull 200 "pull v2 from nginx" "$(pull_body 2 1 "$(files_of 2)" "$FS")"
  [ "$(tensors_of "$RX")" = "$want_base" ] || fail "after the v2 pull the store differs from the base"
  expect_pull 404 "missing file on nginx" "$(pull_body 3 2 '["nope.safetensors"]' "$FS" weight_v000002)"
  expect_unchanged "missing file on nginx" "$want_base" 2
  echo "ok: nginx serves the pull transport (v2 bit-identical, 404 refused with the store unchanged)"
  exit 0
fi

# 2. Refusals: each leaves the store at v1, bit-identical.
v2=$(files_of 2)
expect_pull 404 "missing file" "$(pull_body 2 1 '["nope.safetensors"]' "$FS")"
grep -q 'nope.safetensors' "$work/resp.json" || fail "404 does not name the file: $(cat "$work/resp.json")"
expect_unchanged "missing file" "$want_new" 1
expect_pull 403 "escaping dir" "$(pull_body 2 1 "$v2" "$FS" ../etc)"
expect_unchanged "escaping dir" "$want_new" 1
expect_pull 400 "bad URL" "$(pull_body 2 1 "$v2" "ftp://example.com")"
expect_pull 400 "missing base_url" '{"version": 2, "base_version": 1, "transport": "http", "dir": "weight_v000002", "files": ["x"]}'

# Servers outside pull-allow: 403 naming the URL and the key, before any request; the store stays at v1. One
# of them is a live listener on another port that records every connection; others are tricks on the allowed
# server's URL.
python3 - "$work/other.port" "$work/other.hits" <<'PY' &
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
open(sys.argv[1] + ".tmp", "w").write("%d\n" % s.getsockname()[1]); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept(); open(sys.argv[2], "a").write("connection\n"); c.close()
PY
other_pid=$!; pids+=($!); wait_port "$work/other.port"
OTHER=http://127.0.0.1:$(cat "$work/other.port")
for url in "http://127.0.0.1:$fs_port@evil/" "$FS.evil.com/" "http://localhost:$fs_port" "$FS/../x" "$FS/%2e%2e/x" "$OTHER"; do
  code=403
  case $url in *@*|*.evil.com/) code=400 ;; esac  # not a plain http://host:port URL at all
  expect_pull $code "pull from $url" "$(pull_body 2 1 "$v2" "$url")"
  grep -qF "$url" "$work/resp.json" || fail "the refusal of $url does not name it: $(cat "$work/resp.json")"
  [ $code = 400 ] || grep -q 'pull-allow' "$work/resp.json" || fail "the 403 does not name pull-allow: $(cat "$work/resp.json")"
  expect_unchanged "pull from $url" "$want_new" 1
done
kill "$other_pid"; wait "$other_pid" 2>/dev/null || true
[ ! -e "$work/other.hits" ] || fail "a refused pull connected to the other server"
echo "ok: servers outside pull-allow refused with 403 ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"][:120])' "$work/resp.json")...); store unchanged"

stop_files  # the allowed server, down: unreachable
expect_pull 502 "unreachable server" "$(pull_body 2 1 "$v2" "$FS")"
expect_unchanged "unreachable server" "$want_new" 1
echo "ok: missing file 404, escaping dir 403, bad URL 400, unreachable server 502; store unchanged"

for mode in truncate wrong_length error_mid head_lies; do
  start_files "$mode"
  expect_pull 502 "$mode" "$(pull_body 2 1 "$v2" "$FS")"
  expect_unchanged "$mode" "$want_new" 1
  echo "ok: $mode -> 502 ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"][:150])' "$work/resp.json")); store unchanged"
done

# 3. The good server again: v2 applies after all the refusals.
start_files ok
expect_pull 200 "pull v2 after refusals" "$(pull_body 2 1 "$v2" "$FS")"
[ "$(tensors_of "$RX")" = "$want_base" ] || fail "after the v2 pull the store differs from the base"
echo "ok: v2 pulled after the refusals, bit-identical"

# 4. `deltasync publish --pull-base-url`: the sender writes v3 and pushes a pull request for it.
start_files deltasync
"$bin" publish --from "$base" --to "$new" --delta-dir "$work/served" --version 3 --base-version 2 \
  --update-weight-buffer-size 8192 --push "$RX" --pull-base-url "$FS" > "$work/pub3.txt" 2>&1 \
  || fail "publish --pull-base-url: $(cat "$work/pub3.txt")"
[ "$(tensors_of "$RX")" = "$want_new" ] || fail "after publish --pull-base-url the store differs from the reference"
[ "$(version_of "$RX")" = 3 ] || fail "publish --pull-base-url: version not 3"
echo "ok: deltasync publish --pull-base-url pushed v3; the receiver pulled it bit-identical"
