#!/usr/bin/env bash
# End-to-end test of `deltasync serve` + `deltasync publish` on loopback with the real binary: consecutive
# syncs in every encoding and both formats, pushes by our client, by curl and through the SGLang-compatible
# route, and every documented refusal — each refusal must leave the store bit-identical (compared through
# GET /checksums).
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
config=$here/../../config/deltasync.toml
craft="python3 $here/craft.py"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

start_serve() {  # name, args... (runs in this shell, so the trap can stop the server)
  local name=$1; shift
  # DS_SERVE_EXTRA adds flags to every receiver (e.g. "--store cuda" on a machine with a GPU, docs/gpu.md).
  "$bin" serve --listen 127.0.0.1:0 --port-file "$work/$name.port" --log-level warn ${DS_SERVE_EXTRA:-} "$@" 2> "$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 300); do [ -s "$work/$name.port" ] && break; sleep 0.1; done
  [ -s "$work/$name.port" ] || fail "$name did not start: $(cat "$work/$name.log")"
}
url_of() { echo "http://127.0.0.1:$(cat "$work/$1.port")"; }
tensors_of() {  # url [curl args] -> canonical JSON of the tensors' digests
  local url=$1; shift
  curl -sf "$@" "$url/checksums" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["tensors"], sort_keys=True))'
}
version_of() { curl -sf -H "$auth" "$1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }
expect_status() {  # want, description, curl args...
  local want=$1 what=$2; shift 2
  local got
  got=$(curl -s -o "$work/resp.json" -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || fail "$what: expected HTTP $want, got $got: $(cat "$work/resp.json")"
}
post_sync() {  # url body-json -> curl args for /sync
  echo "-X POST -H Content-Type:application/json -H $auth_h --data-binary $2 $1/sync"
}

# Two checkpoints one RL step apart (tiny synthetic model), via the offline demo.
"$bin" demo --offline --model tiny --steps 1 --encodings deltas --keep "$work/ck" > /dev/null
base=$work/ck/base.safetensors
new=$work/ck/new.safetensors
echo "s3cr3t-token" > "$work/token"
auth="Authorization: Bearer s3cr3t-token"
mkdir -p "$work/deltas" "$work/ref_deltas"

# Receiver A reads the shipped config file; flags given here override it (listen, log level).
start_serve a --config "$config" --base "$base" --delta-dir "$work/deltas" --token-file "$work/token"
start_serve ref --base "$new" --delta-dir "$work/ref_deltas"
A=$(url_of a)
REF=$(url_of ref)
want_new=$(tensors_of "$REF")
want_base=$(tensors_of "$A" -H "$auth")
[ "$want_new" != "$want_base" ] || fail "the two checkpoints should differ"

# 1. Consecutive syncs, every encoding x both formats, pushed by `deltasync publish`.
v=0
state=base
for fmt in native slime; do
  encs="indices deltas deltas_zstd"
  [ $fmt = native ] && encs="$encs compact"  # compact is native-only
  for enc in $encs; do
    if [ $state = base ]; then from=$base; to=$new; else from=$new; to=$base; fi
    "$bin" publish --from "$from" --to "$to" --delta-dir "$work/deltas" --version $((v + 1)) --base-version $v \
      --encoding $enc --format $fmt --push "$A" --token-file "$work/token" > "$work/publish.txt" 2>&1 \
      || fail "publish $fmt/$enc v$((v + 1)): $(cat "$work/publish.txt")"
    v=$((v + 1))
    if [ $state = base ]; then state=new; want=$want_new; else state=base; want=$want_base; fi
    [ "$(tensors_of "$A" -H "$auth")" = "$want" ] || fail "store differs from the trainer after $fmt/$enc sync v$v"
    [ "$(version_of "$A")" = "$v" ] || fail "version should be $v"
    # Retention (docs/fleet.md): once every receiver acknowledged, only the newest version dir stays.
    [ "$(ls "$work/deltas" | tr '\n' ' ')" = "fleet.json $(printf 'weight_v%06d' $v) " ] ||
      fail "only the newest version dir should be kept after all acks (no --keep-files): $(ls "$work/deltas")"
  done
done
echo "ok: $v consecutive syncs (3 encodings x 2 formats, and compact) pushed by deltasync publish"

# Files for the next sync, kept on disk and pushed by hand.
make_files() {  # version base_version format -> leaves weight_v<version> in the delta dir
  if [ $state = base ]; then from=$base; to=$new; else from=$new; to=$base; fi
  "$bin" publish --from "$from" --to "$to" --delta-dir "$work/deltas" --version "$1" --base-version "$2" \
    --encoding deltas --format "$3" --keep-files > /dev/null
}
files_json() { python3 -c 'import json,os,sys; print(json.dumps(sorted(f for f in os.listdir(sys.argv[1]) if f.endswith(".safetensors"))))' "$1"; }
vdir() { printf 'weight_v%06d' "$1"; }
flip_state() { if [ $state = base ]; then state=new; want=$want_new; else state=base; want=$want_base; fi; }

# 2. Push with curl.
make_files $((v + 1)) $v native
d=$(vdir $((v + 1)))
body="{\"version\": $((v + 1)), \"base_version\": $v, \"transport\": \"disk\", \"dir\": \"$d\", \"files\": $(files_json "$work/deltas/$d")}"
expect_status 200 "curl push" -X POST -H "$auth" -H 'Content-Type: application/json' --data-binary "$body" "$A/sync"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["version"]==int(sys.argv[2]) and r["changed_elements"]>0 and "total" in r["timings_ms"], r' "$work/resp.json" $((v + 1))
v=$((v + 1)); flip_state
[ "$(tensors_of "$A" -H "$auth")" = "$want" ] || fail "store differs after the curl push"
echo "ok: curl push"

# 2b. compact is not idempotent: the same sync pushed again is refused by the base check (409), store unchanged.
if [ $state = base ]; then from=$base; to=$new; else from=$new; to=$base; fi
"$bin" publish --from "$from" --to "$to" --delta-dir "$work/deltas" --version $((v + 1)) --base-version $v \
  --encoding compact --format native --keep-files > /dev/null 2>&1 || fail "publish compact --keep-files"
d=$(vdir $((v + 1)))
body="{\"version\": $((v + 1)), \"base_version\": $v, \"transport\": \"disk\", \"dir\": \"$d\", \"files\": $(files_json "$work/deltas/$d")}"
expect_status 200 "compact push" -X POST -H "$auth" -H 'Content-Type: application/json' --data-binary "$body" "$A/sync"
v=$((v + 1)); flip_state
[ "$(tensors_of "$A" -H "$auth")" = "$want" ] || fail "store differs after the compact push"
expect_status 200 "compact pushed twice (idempotent: marker matches, docs/fleet.md)" -X POST -H "$auth" -H 'Content-Type: application/json' --data-binary "$body" "$A/sync"
[ "$(tensors_of "$A" -H "$auth")" = "$want" ] || fail "a refused compact re-push changed the store"
rm -rf "$work/deltas/$d"
echo "ok: compact push, and its re-push refused with 409"

# 3. The SGLang-compatible route, driven as slime #1806 drives it (slime format, weight_version as a string).
make_files $((v + 1)) $v slime
d=$(vdir $((v + 1)))
body="{\"model_path\": \"$work/deltas/$d\", \"load_format\": \"delta\", \"weight_version\": \"$((v + 1))\", \"files\": $(files_json "$work/deltas/$d")}"
expect_status 200 "update_weights_from_disk" -X POST -H "$auth" -H 'Content-Type: application/json' --data-binary "$body" "$A/update_weights_from_disk"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["success"] is True and r["num_paused_requests"]==0, r' "$work/resp.json"
v=$((v + 1)); flip_state
[ "$(tensors_of "$A" -H "$auth")" = "$want" ] || fail "store differs after update_weights_from_disk"
echo "ok: SGLang-compatible route"

# 4. Refusals: each answers the documented status and leaves the store bit-identical.
before=$(tensors_of "$A" -H "$auth")
make_files $((v + 1)) $v slime
d=$(vdir $((v + 1)))
good_files=$(files_json "$work/deltas/$d")
first=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[0])' "$good_files")
sync_body() { echo "{\"version\": $((v + 1)), \"base_version\": ${2:-$v}, \"dir\": \"${3:-$d}\", \"files\": $1}"; }
refuse() {  # status what body [extra curl args]
  local want=$1 what=$2 b=$3; shift 3
  expect_status "$want" "$what" -X POST -H 'Content-Type: application/json' --data-binary "$b" "$@" "$A/sync"
  [ "$(tensors_of "$A" -H "$auth")" = "$before" ] || fail "$what: the store changed"
  [ "$(version_of "$A")" = "$v" ] || fail "$what: the version changed"
  echo "ok: $what -> $want, store unchanged"
}
refuse 409 "wrong base_version" "$(sync_body "$good_files" $((v + 5)))" -H "$auth"
refuse 404 "missing file" "$(sync_body '["rank0000_flush000099.safetensors"]')" -H "$auth"
refuse 403 "dotdot dir" "$(sync_body "$good_files" $v "../$d")" -H "$auth"
refuse 403 "absolute dir" "$(sync_body "$good_files" $v "/etc")" -H "$auth"
refuse 403 "dotdot file" "$(sync_body '["../../token"]')" -H "$auth"
ln -s /etc "$work/deltas/escape"
refuse 403 "symlink escape" "$(sync_body '["passwd"]' $v escape)" -H "$auth"
refuse 400 "malformed JSON" '{"version": 1, "files": [' -H "$auth"
refuse 400 "missing field" '{"version": 1}' -H "$auth"
python3 -c 'print("{\"pad\": \"" + "x" * (2 << 20) + "\"}")' > "$work/big.json"
expect_status 413 "oversized body" -X POST -H "$auth" -H 'Content-Type: application/json' --data-binary @"$work/big.json" "$A/sync"
refuse 401 "missing token" "$(sync_body "$good_files")"
refuse 401 "wrong token" "$(sync_body "$good_files")" -H "Authorization: Bearer nope"

cp "$work/deltas/$d/$first" "$work/good.bin"
head -c $(( $(stat -c %s "$work/good.bin") - 7 )) "$work/good.bin" > "$work/deltas/$d/$first"
refuse 422 "truncated file" "$(sync_body "$good_files")" -H "$auth"
cp "$work/good.bin" "$work/deltas/$d/$first"
size=$(stat -c %s "$work/good.bin")
printf '\x55' | dd of="$work/deltas/$d/$first" bs=1 seek=$((size - 2)) conv=notrunc status=none
refuse 422 "flipped byte (checksum)" "$(sync_body "$good_files")" -H "$auth"
cp "$work/good.bin" "$work/deltas/$d/$first"

q=model.layers.0.self_attn.q_proj.weight
mkdir -p "$work/deltas/crafted"
$craft delta "$work/deltas/crafted/unknown.safetensors" --version $((v + 1)) --name no.such.weight --shape 64x64 --positions 1,2
refuse 422 "unknown tensor" "$(sync_body '["unknown.safetensors"]' $v crafted)" -H "$auth"
$craft delta "$work/deltas/crafted/shape.safetensors" --version $((v + 1)) --name $q --shape 32x128 --positions 1,2
refuse 422 "shape mismatch" "$(sync_body '["shape.safetensors"]' $v crafted)" -H "$auth"
$craft delta "$work/deltas/crafted/dtype.safetensors" --version $((v + 1)) --name $q --dtype float32 --shape 64x64 --positions 1,2
refuse 422 "dtype mismatch" "$(sync_body '["dtype.safetensors"]' $v crafted)" -H "$auth"
$craft delta "$work/deltas/crafted/range.safetensors" --version $((v + 1)) --name $q --shape 64x64 --positions 1,4096
refuse 422 "position out of range" "$(sync_body '["range.safetensors"]' $v crafted)" -H "$auth"
# A good file followed by a bad one: the first file's params were applied, then rolled back.
cp "$work/deltas/crafted/range.safetensors" "$work/deltas/$d/zz_bad.safetensors"
both=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1]) + ["zz_bad.safetensors"]))' "$good_files")
refuse 422 "good file then bad file (rollback)" "$(sync_body "$both")" -H "$auth"
rm "$work/deltas/$d/zz_bad.safetensors"

# A sync in flight makes a second one 503: receiver C delays each apply (test fault injection) so its
# first sync is still running when the second request arrives.
mkdir -p "$work/deltas_c"
DELTASYNC_TEST_APPLY_DELAY_MS=3000 start_serve c --base "$base" --delta-dir "$work/deltas_c"
C=$(url_of c)
"$bin" publish --from "$base" --to "$new" --delta-dir "$work/deltas_c" --version 1 --base-version 0 \
  --encoding deltas --format slime --keep-files > /dev/null
c_body="{\"version\": 1, \"base_version\": 0, \"dir\": \"$(vdir 1)\", \"files\": $(files_json "$work/deltas_c/$(vdir 1)")}"
curl -s -o "$work/slow.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary "$c_body" "$C/sync" > "$work/slow.code" &
slow=$!
busy=False
for _ in $(seq 1 50); do
  busy=$(curl -sf "$C/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sync_in_flight"])')
  [ "$busy" = True ] && break; sleep 0.05
done
[ "$busy" = True ] || fail "the delayed sync should be in flight"
code=$(curl -s -o "$work/resp.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary "$c_body" "$C/sync")
[ "$code" = 503 ] || fail "concurrent sync: expected 503, got $code: $(cat "$work/resp.json")"
wait $slow
[ "$(cat "$work/slow.code")" = 200 ] || fail "the delayed sync should commit: $(cat "$work/slow.json")"
echo "ok: concurrent sync -> 503 while the first runs (the first then answered 200)"
[ "$(version_of "$A")" = "$v" ] || fail "A's version changed"

# After all of that, the good files still apply.
expect_status 200 "good sync after refusals" -X POST -H "$auth" -H 'Content-Type: application/json' --data-binary "$(sync_body "$good_files")" "$A/sync"
v=$((v + 1)); flip_state
[ "$(tensors_of "$A" -H "$auth")" = "$want" ] || fail "store differs after the final sync"

# Metrics and status.
curl -sf -H "$auth" "$A/metrics" > "$work/metrics.txt"
grep -q "^deltasync_syncs_ok_total $v" "$work/metrics.txt" || fail "metrics: syncs_ok should be $v: $(grep syncs_ok "$work/metrics.txt")"
grep -q '^deltasync_sync_seconds_bucket{le="+Inf"}' "$work/metrics.txt" || fail "metrics: no latency histogram"
expect_status 200 "healthz without token" "$A/healthz"
echo "service_test: all checks passed ($v syncs)"
