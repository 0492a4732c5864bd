#!/usr/bin/env bash
# Issue 18 against the real binary: memory bounded per sync (zstd bombs, a file listed 40 times, a 61 MB
# manifest of unknown names: each refused, the receiver's peak RSS within --max-sync-memory-bytes + 64 MiB),
# log injection (a forged tensor name or file name cannot start a log line), a relative --delta-dir with the
# SGLang route's absolute model_path, /healthz under 1000 idle connections, running out of file descriptors
# (503 naming RLIMIT_NOFILE) and --recover listing a symlinked version dir under "skipped". Every refusal
# leaves the store bit-identical. MEASURE=1 also prints the figures bench/RESULTS.md records.
bin=$(realpath "$1")
source "$(dirname "$0")/fault_lib.sh"
craft="python3 $here/craft.py"
make_checkpoints
D=$work/deltas
mkdir -p "$D"
budget_mib=256
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
post() {  # route body -> HTTP code (answer in $work/resp.json)
  curl -s -o "$work/resp.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$2" "$url$1"
}
error_of() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("error", d.get("message")))' "$work/resp.json"; }

# ---- memory bounded per sync ----
start_serve mem --base "$ck_base" --delta-dir "$D" --max-sync-memory-bytes $((budget_mib << 20))
url=$(url_of mem)
pid=$last_pid
before=$(tensors_of "$url")
V=$D/$(vdir 5)
mkdir -p "$V"
$craft bomb "$V/lie.safetensors" 3000 $((1 << 30))          # declares 1 GiB, decodes to 3000 bytes
$craft bomb "$V/bomb0.safetensors" $((1 << 30))              # a real 1 GiB bomb in 32 KiB
$craft bomb "$V/bomb1.safetensors" $((1 << 30))
head -c $((16 << 20)) /dev/urandom > "$V/big.safetensors"    # 16 MiB, listed 40 times
$craft manifest "$V/manifest.safetensors" --version 5 --bytes 54000000
sync_body() { echo "{\"version\": 5, \"base_version\": 0, \"dir\": \"$(vdir 5)\", \"files\": $1}"; }
forty=$(python3 -c 'import json; print(json.dumps(["big.safetensors"] * 40))')
peak_case() {  # label want-status files-json want-in-error
  local label=$1 want=$2 files=$3 needle=$4 rss0 code hwm delta
  echo 5 > "/proc/$pid/clear_refs" || fail "cannot reset the peak RSS of $pid"
  rss0=$(rss_kb "$pid")
  code=$(post /sync "$(sync_body "$files")")
  hwm=$(hwm_kb "$pid")
  delta=$(( (hwm - rss0) / 1024 ))
  [ "$code" = "$want" ] || fail "$label: expected HTTP $want, got $code: $(cat "$work/resp.json")"
  error_of | grep -q -- "$needle" || fail "$label: the answer should say '$needle': $(cat "$work/resp.json")"
  [ "$delta" -le $((budget_mib + 64)) ] || fail "$label: peak RSS rose by $delta MiB, over the budget $budget_mib MiB + 64 MiB"
  [ "$(tensors_of "$url")" = "$before" ] || fail "$label: the store changed"
  ok "$label -> $code, peak RSS +$delta MiB (budget $budget_mib MiB): $(error_of | cut -c1-100)"
  echo "| $label | $code | $delta |" >> "$work/peaks.md"
}
peak_case "zstd frame declaring 1 GiB (3000 bytes inside)" 422 '["lie.safetensors"]' zstd_size_lie
peak_case "real 1 GiB zstd bomb" 413 '["bomb0.safetensors"]' max-sync-memory-bytes
peak_case "two 1 GiB zstd bombs in one sync" 413 '["bomb0.safetensors", "bomb1.safetensors"]' max-sync-memory-bytes
peak_case "one 16 MiB file listed 40 times" 400 "$forty" "twice"
peak_case "61 MB manifest of unknown names" 422 '["manifest.safetensors"]' "unknown tensor"
[ "$(status_field "$url" 'd["version"]')" = 0 ] || fail "the version changed"

# ---- log injection: a forged tensor name and a forged file name ----
forged=$'x\n2026-01-01T00:00:00.000Z info sync: committed version=999'
mkdir -p "$D/$(vdir 6)"
$craft delta "$D/$(vdir 6)/forged.safetensors" --version 6 --name "$forged" --shape 4x8 --positions 1,2
code=$(post /sync "$(sync_body '["forged.safetensors"]' | sed 's/"version": 5/"version": 6/; s/weight_v000005/weight_v000006/')")
[ "$code" = 422 ] || fail "forged tensor name: expected 422, got $code: $(cat "$work/resp.json")"
error_of | grep -q 'unknown tensor' || fail "forged tensor name: $(cat "$work/resp.json")"
python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["error"]; sys.exit(any(ord(c) < 32 for c in m))' "$work/resp.json" \
  || fail "the JSON error carries a control character: $(cat "$work/resp.json")"
code=$(post /sync '{"version": 6, "dir": "weight_v000006", "files": ["a\nINFO forged.safetensors"]}')
[ "$code" = 404 ] || fail "forged file name: expected 404, got $code"
sleep 0.2
if grep -q '^2026-01-01T00:00:00.000Z info sync: committed' "$work/mem.log" || grep -q '^INFO forged' "$work/mem.log"; then
  fail "a forged line reached the log: $(grep -n 'committed version=999\|INFO forged' "$work/mem.log")"
fi
grep -q 'x\\n2026-01-01T00:00:00.000Z info sync: committed version=999' "$work/mem.log" \
  || fail "the escaped name should be in the log: $(tail -5 "$work/mem.log")"
ok "forged names are escaped in the log and in the JSON answer (422 / 404)"
kill "$pid"; wait "$pid" 2>/dev/null || true

# ---- a relative --delta-dir and the SGLang route's absolute model_path ----
"$bin" publish --from "$ck_base" --to "$ck_new" --delta-dir "$D" --version 1 --format slime --keep-files > /dev/null 2>&1
(cd "$work" && start_serve rel --base "$ck_base" --delta-dir deltas; echo "$last_pid" > "$work/rel.pid")
pids+=("$(cat "$work/rel.pid")")
url=$(url_of rel)
files=$(files_json "$D/$(vdir 1)")
code=$(post /update_weights_from_disk "{\"model_path\": \"$D/$(vdir 1)\", \"load_format\": \"delta\", \"weight_version\": \"1\", \"files\": $files}")
[ "$code" = 200 ] || fail "relative --delta-dir: the SGLang route refused an absolute model_path inside it: $code $(cat "$work/resp.json")"
[ "$(status_field "$url" 'd["version"]')" = 1 ] || fail "relative --delta-dir: not applied"
ok "relative --delta-dir: absolute model_path inside it applied (200)"
kill "$(cat "$work/rel.pid")"; wait "$(cat "$work/rel.pid")" 2>/dev/null || true

# ---- /healthz under 1000 idle connections; max-connections from the config file ----
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 1200 ] || { echo "SKIP: needs 1200 file descriptors for the flood, the hard limit is $(ulimit -Hn)"; exit 77; }
start_serve flood --base "$ck_base" --delta-dir "$D"
got=$(python3 "$here/flood.py" "$(cat "$work/flood.port")" --idle 1000 --requests 200)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["ok"] == d["requests"] and d["p99_ms"] <= 250 else 1)' "$got" \
  || fail "/healthz under 1000 idle connections: $got"
ok "/healthz under 1000 idle connections (max-connections 256): $got"
echo "$got" > "$work/flood_256.json"
kill "$last_pid"; wait "$last_pid" 2>/dev/null || true
printf '[serve]\nmax-connections = 64\n' > "$work/limit.toml"
start_serve flood64 --config "$work/limit.toml" --base "$ck_base" --delta-dir "$D"
got=$(python3 "$here/flood.py" "$(cat "$work/flood64.port")" --idle 300 --requests 50)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["ok"] == d["requests"] and d["idle_open_at_end"] <= 68 else 1)' "$got" \
  || fail "max-connections = 64 from the config file: $got"
ok "max-connections = 64 (config file): $got"
kill "$last_pid"; wait "$last_pid" 2>/dev/null || true

# ---- out of file descriptors: 503 naming the limit, said once ----
mkdir -p "$D/$(vdir 7)"
for i in $(seq 1 80); do echo x > "$D/$(vdir 7)/f$i.safetensors"; done
many=$(files_json "$D/$(vdir 7)")
# serve raises its soft limit to the hard one: both are lowered for it (in a subshell).
rc=0
( { ulimit -Sn 64 && ulimit -Hn 64; } 2>/dev/null || exit 3
  start_serve fds --base "$ck_base" --delta-dir "$D"; echo "$last_pid" > "$work/fds.pid" ) || rc=$?
[ "$rc" != 3 ] || { echo "SKIP: cannot lower the fd limit here"; exit 77; }
[ "$rc" = 0 ] || fail "the fd-limited receiver did not start"
pids+=("$(cat "$work/fds.pid")")
url=$(url_of fds)
code=$(post /sync "{\"version\": 7, \"base_version\": 0, \"dir\": \"$(vdir 7)\", \"files\": $many}")
[ "$code" = 503 ] || fail "out of file descriptors: expected 503, got $code: $(cat "$work/resp.json")"
error_of | grep -q RLIMIT_NOFILE || fail "out of file descriptors: the answer should name RLIMIT_NOFILE: $(cat "$work/resp.json")"
[ "$(error_of | grep -o 'Too many open files' | wc -l)" = 1 ] || fail "the message is doubled: $(cat "$work/resp.json")"
grep -q '"code": *"too_many_open_files"' "$work/resp.json" || fail "code should be too_many_open_files: $(cat "$work/resp.json")"
ok "out of file descriptors -> 503: $(error_of | cut -c1-120)"
kill "$(cat "$work/fds.pid")"; wait "$(cat "$work/fds.pid")" 2>/dev/null || true

# ---- --recover lists a symlinked version dir under "skipped" ----
R=$work/rdeltas
mkdir -p "$R"
"$bin" publish --from "$ck_base" --to "$ck_new" --delta-dir "$R" --version 1 --keep-files > /dev/null 2>&1
"$bin" publish --from "$ck_new" --to "$ck_third" --delta-dir "$R" --version 2 --base-version 1 --keep-files > /dev/null 2>&1
mv "$R/$(vdir 2)" "$work/outside_v2"
ln -s "$work/outside_v2" "$R/$(vdir 2)"
start_serve rec --base "$ck_base" --delta-dir "$R" --recover
url=$(url_of rec)
wait_recovered "$url"
[ "$(status_field "$url" 'd["version"]')" = 1 ] || fail "--recover should stop at v1"
status_field "$url" '[s["reason"] for s in d["recovery"]["skipped"] if s["dir"] == "weight_v000002"][0]' | grep -q symlink \
  || fail "--recover should list the symlinked weight_v000002 under skipped: $(curl -s "$url/status")"
ok "--recover: symlinked weight_v000002 listed under skipped"

if [ "${MEASURE:-0}" = 1 ]; then
  echo "peak RSS rise per refused sync (MiB), budget $budget_mib MiB:"
  cat "$work/peaks.md"
  echo "flood: $(cat "$work/flood_256.json")"
fi
echo "fault_hardening_test: all cases passed"
