#!/usr/bin/env bash
# `deltasync serve` as an operator runs it (docs/service.md "Operating"): --version; readiness through the
# sd_notify protocol (a NOTIFY_SOCKET listener stands in for systemd: READY=1 only once the base is loaded and
# the port bound); --log-format json (every line one object with ts, level, module, msg, version, and a
# sync's fields); SIGHUP reloading the token file; SIGTERM during a sync: the sync finishes, its client gets
# 200, the process exits 0; `deltasync status` over a fleet with one receiver down (text, --json, --watch);
# SIGTERM during a sync that fails verification after its apply: rolled back, 422, exit 0; GET /metrics through
# `promtool check metrics` when promtool is installed.
set -euo pipefail
bin=$1
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. --version: version, git revision, features.
"$bin" --version > "$work/version.txt" || fail "--version exited non-zero"
head -1 "$work/version.txt" | grep -Eq '^deltasync [0-9]+\.[0-9]+\.[0-9]+ \(git [^)]+\)$' || fail "--version line 1: $(cat "$work/version.txt")"
grep -Eq '^features: cuda=(yes|no) nccl=(yes|no) io_uring=yes systemd=(yes|no)$' "$work/version.txt" || fail "--version features: $(cat "$work/version.txt")"
have_systemd=no; grep -q 'systemd=yes' "$work/version.txt" && have_systemd=yes
echo "ok: --version ($(head -1 "$work/version.txt"))"

"$bin" demo --offline --model tiny --steps 1 --encodings deltas --keep "$work/ck" > /dev/null
base=$work/ck/base.safetensors
new=$work/ck/new.safetensors
mkdir -p "$work/deltas"
echo "token-one" > "$work/token"

# A NOTIFY_SOCKET listener: appends every datagram to a file, one message per line (newlines as '|').
cat > "$work/notify.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    out.write("listening\n")
    while True:
        out.write(s.recv(4096).decode().replace("\n", "|") + "\n")
PY
python3 "$work/notify.py" "$work/notify.sock" "$work/notify.txt" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/notify.txt" ] && break; sleep 0.05; done

start_serve() {  # name, env-assignments..., -- serve args...
  local name=$1; shift
  env NOTIFY_SOCKET="$work/notify.sock" "$@" 2> "$work/$name.log" &
  pids+=($!)
}

# 2. Readiness: READY=1 comes once the base is loaded and the port bound, so /healthz answers at once.
start_serve a "$bin" serve --log-format json --listen 127.0.0.1:0 --port-file "$work/a.port" --base "$base" \
  --delta-dir "$work/deltas" --token-file "$work/token"
serve_a=${pids[-1]}
if [ $have_systemd = yes ]; then
  for _ in $(seq 1 300); do grep -q '^READY=1' "$work/notify.txt" && break; sleep 0.05; done
  grep -q '^READY=1|STATUS=serving version 0 on port' "$work/notify.txt" || fail "no READY=1: $(cat "$work/notify.txt"); $(cat "$work/a.log")"
  [ -s "$work/a.port" ] || fail "READY=1 before the port file was written"
  A="http://127.0.0.1:$(cat "$work/a.port")"
  curl -sf "$A/healthz" > /dev/null || fail "READY=1 sent but /healthz does not answer"
  echo "ok: sd_notify READY=1 once the port is bound"
else
  for _ in $(seq 1 300); do [ -s "$work/a.port" ] && break; sleep 0.1; done
  A="http://127.0.0.1:$(cat "$work/a.port")"
  for _ in $(seq 1 100); do curl -sf "$A/healthz" > /dev/null && break; sleep 0.1; done
  echo "ok: readiness by GET /healthz (SKIP sd_notify: this build has no libsystemd)"
fi

# One sync, then the JSON log lines.
"$bin" publish --from "$base" --to "$new" --delta-dir "$work/deltas" --version 1 --base-version 0 --encoding deltas \
  --push "$A" --token-file "$work/token" > "$work/publish.txt" 2>&1 || fail "publish: $(cat "$work/publish.txt")"
python3 - "$work/a.log" <<'PY' || fail "json log: $(tail -5 "$work/a.log")"
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert lines, "no log lines"
commits = []
for line in lines:
    o = json.loads(line)  # every line is one JSON object
    for k in ("ts", "level", "module", "msg", "version"):
        assert k in o, (k, line)
    assert o["ts"].endswith("Z") and "T" in o["ts"], line
    if o["module"] == "sync" and o.get("outcome") == "committed":
        commits.append(o)
assert len(commits) == 1, commits
c = commits[0]
assert c["sync_version"] == 1 and c["base_version"] == 0 and c["changed_elements"] > 0, c
for k in ("files", "bytes_read", "read_ms", "decode_ms", "apply_ms", "verify_ms", "total_ms", "format"):
    assert k in c, (k, c)
PY
echo "ok: --log-format json (every line an object; the sync's fields on its commit line)"

# 3. SIGHUP reloads the token file; an unreadable one keeps the old token.
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code -H 'Authorization: Bearer token-one' "$A/status")" = 200 ] || fail "token-one should be accepted"
echo "token-two" > "$work/token"
kill -HUP "$serve_a"
for _ in $(seq 1 100); do [ "$(code -H 'Authorization: Bearer token-two' "$A/status")" = 200 ] && break; sleep 0.05; done
[ "$(code -H 'Authorization: Bearer token-two' "$A/status")" = 200 ] || fail "SIGHUP: the new token is refused"
[ "$(code -H 'Authorization: Bearer token-one' "$A/status")" = 401 ] || fail "SIGHUP: the old token is still accepted"
chmod 000 "$work/token"; mv "$work/token" "$work/token.moved"
kill -HUP "$serve_a"; sleep 0.3
[ "$(code -H 'Authorization: Bearer token-two' "$A/status")" = 200 ] || fail "SIGHUP with a missing file must keep the token"
grep -q 'keeping the current token' "$work/a.log" || fail "SIGHUP with a missing file is not logged"
mv "$work/token.moved" "$work/token"; chmod 600 "$work/token"
if [ $have_systemd = yes ]; then grep -q '^RELOADING=1' "$work/notify.txt" || fail "no RELOADING=1"; fi
echo "ok: SIGHUP reloads the token file (and keeps the old token when the file is unreadable)"

# 4. deltasync status over the fleet: A, and a receiver that is down.
"$bin" status "$A" http://127.0.0.1:1 --token-file "$work/token" > "$work/status.txt" && fail "status should exit 1 with a receiver down"
[ "$(wc -l < "$work/status.txt")" = 3 ] || fail "status: a header and one line per receiver: $(cat "$work/status.txt")"
grep -E "^$A +1 +0 +[0-9.]+ +v1 [0-9]+s ago: [0-9]+ files, [0-9]+ changed; ms read" "$work/status.txt" > /dev/null || fail "status line: $(cat "$work/status.txt")"
grep -q '^http://127.0.0.1:1 .*DOWN: ' "$work/status.txt" || fail "status: the down receiver: $(cat "$work/status.txt")"
"$bin" status "$A" --json --token-file "$work/token" > "$work/status.json" || fail "status --json should exit 0"
python3 - "$work/status.json" <<'PY' || fail "status --json: $(cat "$work/status.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["newest_version"] == 1, d
r = d["receivers"][0]
assert r["up"] and r["version"] == 1 and r["lag"] == 0 and r["last_sync"]["version"] == 1, r
assert "total" in r["last_sync"]["timings_ms"] and r["deltasync_version"], r
PY
"$bin" status "$A" --json --watch 0.2 --iterations 3 --token-file "$work/token" > "$work/watch.json" || fail "status --watch"
[ "$(wc -l < "$work/watch.json")" = 3 ] || fail "status --watch --iterations 3: one object per refresh: $(cat "$work/watch.json")"
echo "ok: deltasync status (text, --json, --watch; a down receiver exits 1)"

# 5. GET /metrics passes promtool's checks (HELP, TYPE, names, units).
if command -v promtool > /dev/null; then
  curl -sf -H 'Authorization: Bearer token-two' "$A/metrics" > "$work/metrics.txt"
  promtool check metrics < "$work/metrics.txt" > "$work/promtool.txt" 2>&1 || fail "promtool: $(cat "$work/promtool.txt")"
  [ ! -s "$work/promtool.txt" ] || fail "promtool lint: $(cat "$work/promtool.txt")"
  echo "ok: promtool check metrics"
else
  echo "SKIP: promtool not installed (Debian package prometheus)"
fi

# 6. SIGTERM during a sync: the sync finishes, its client gets 200, the process exits 0.
"$bin" publish --from "$new" --to "$base" --delta-dir "$work/deltas" --version 2 --base-version 1 --encoding deltas \
  --keep-files > /dev/null
files=$(python3 -c 'import json,os,sys; print(json.dumps(sorted(f for f in os.listdir(sys.argv[1]) if f.endswith(".safetensors"))))' "$work/deltas/weight_v000002")
start_serve b env DELTASYNC_TEST_APPLY_DELAY_MS=1500 "$bin" serve --log-format json --listen 127.0.0.1:0 \
  --port-file "$work/b.port" --base "$new" --base-version 1 --delta-dir "$work/deltas"
serve_b=${pids[-1]}
for _ in $(seq 1 300); do [ -s "$work/b.port" ] && break; sleep 0.1; done
B="http://127.0.0.1:$(cat "$work/b.port")"
for _ in $(seq 1 100); do curl -sf "$B/healthz" > /dev/null && break; sleep 0.1; done
curl -s -o "$work/term_sync.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary "{\"version\": 2, \"base_version\": 1, \"dir\": \"weight_v000002\", \"files\": $files}" "$B/sync" > "$work/term_code.txt" &
curl_pid=$!
for _ in $(seq 1 100); do curl -sf "$B/status" | grep -q '"sync_in_flight":true' && break; sleep 0.05; done
curl -sf "$B/status" | grep -q '"sync_in_flight":true' || fail "the sync should be in flight"
kill -TERM "$serve_b"
rc=0; wait "$serve_b" || rc=$?
[ $rc = 0 ] || fail "SIGTERM during a sync: exit status $rc, want 0: $(tail -5 "$work/b.log")"
wait "$curl_pid" || true
[ "$(cat "$work/term_code.txt")" = 200 ] || fail "the sync in flight at SIGTERM should finish with 200, got $(cat "$work/term_code.txt"): $(cat "$work/term_sync.json")"
grep -q '"outcome":"committed"' "$work/b.log" || fail "no commit logged: $(tail -5 "$work/b.log")"
grep -q 'waiting for the sync in flight' "$work/b.log" || fail "shutdown did not wait for the sync"
if [ $have_systemd = yes ]; then grep -q '^STOPPING=1' "$work/notify.txt" || fail "no STOPPING=1"; fi
echo "ok: SIGTERM during a sync: the sync committed, answered 200, exit 0"

# 7. SIGTERM during a sync that fails after its apply (a tensor digest in the file's metadata is wrong): the
# sync rolls back, its client gets 422, the process exits 0.
python3 - "$work/deltas/weight_v000002" <<'PY'
import glob, re, sys
for f in glob.glob(sys.argv[1] + "/*.safetensors"):
    b = bytearray(open(f, "rb").read())
    # The full hash and, where the Sender wrote one, the additive digest the receiver checks instead.
    for key in (b"tensor_xxh3_128", b"tensor_sum128"):
        at = b.find(key)
        if at < 0:
            continue
        m = re.compile(rb"[0-9a-f]{32}").search(bytes(b), at)
        i = m.start()
        b[i] = ord("1") if b[i] != ord("1") else ord("2")  # same length: the container stays valid
    open(f, "wb").write(bytes(b))
PY
start_serve c env DELTASYNC_TEST_APPLY_DELAY_MS=1500 "$bin" serve --log-format json --listen 127.0.0.1:0 \
  --port-file "$work/c.port" --base "$new" --base-version 1 --delta-dir "$work/deltas"
serve_c=${pids[-1]}
for _ in $(seq 1 300); do [ -s "$work/c.port" ] && break; sleep 0.1; done
C="http://127.0.0.1:$(cat "$work/c.port")"
for _ in $(seq 1 100); do curl -sf "$C/healthz" > /dev/null && break; sleep 0.1; done
curl -s -o "$work/term_bad.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary "{\"version\": 2, \"base_version\": 1, \"dir\": \"weight_v000002\", \"files\": $files}" "$C/sync" > "$work/term_bad_code.txt" &
curl_pid=$!
for _ in $(seq 1 100); do curl -sf "$C/status" | grep -q '"sync_in_flight":true' && break; sleep 0.05; done
kill -TERM "$serve_c"
rc=0; wait "$serve_c" || rc=$?
[ $rc = 0 ] || fail "SIGTERM during a failing sync: exit status $rc, want 0: $(tail -5 "$work/c.log")"
wait "$curl_pid" || true
[ "$(cat "$work/term_bad_code.txt")" = 422 ] || fail "the failing sync should answer 422, got $(cat "$work/term_bad_code.txt"): $(cat "$work/term_bad.json")"
grep -q 'delta_tensor_digest_mismatch' "$work/term_bad.json" || fail "422 should name the digest: $(cat "$work/term_bad.json")"
grep -q '"outcome":"failed"' "$work/c.log" || fail "no rollback logged: $(tail -5 "$work/c.log")"
echo "ok: SIGTERM during a sync that fails verification: rolled back, answered 422, exit 0"
