#!/usr/bin/env bash
# Every configurable request limit of `deltasync serve` (config/deltasync.toml), each set low on its own
# receiver: the refusal is the documented 4xx with a JSON error naming the setting, and the store is
# bit-identical afterwards (GET /checksums, version).
bin=$1
source "$(dirname "$0")/fault_lib.sh"
make_checkpoints
D=$work/deltas
mkdir -p "$D"
# v1: one native file holding every changed tensor; v2 (slime deltas_zstd, same base) in 4 KiB buckets.
"$bin" publish --from "$ck_base" --to "$ck_third" --delta-dir "$D" --version 1 --keep-files > /dev/null 2>&1
"$bin" publish --from "$ck_base" --to "$ck_third" --delta-dir "$D" --version 2 --base-version 0 --keep-files --format slime \
  --encoding deltas_zstd --update-weight-buffer-size 4096 > /dev/null 2>&1
[ "$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$(files_json "$D/$(vdir 2)")")" -ge 2 ] \
  || fail "v2 should have several files"
body_for() { echo "{\"version\": $1, \"base_version\": 0, \"dir\": \"$(vdir "$1")\", \"files\": $(files_json "$D/$(vdir "$1")")}"; }
n=0
check_limit() {  # setting value want-status version|raw:BODYFILE [curl args...]
  local setting=$1 value=$2 want=$3 what=$4; shift 4
  n=$((n + 1))
  start_serve "l$n" --base "$ck_base" --delta-dir "$D" "--$setting" "$value"
  local url before got
  url=$(url_of "l$n")
  before=$(tensors_of "$url")
  if [ "${what#raw:}" != "$what" ]; then
    got=$(curl -s -o "$work/resp.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$@" \
      --data-binary @"${what#raw:}" "$url/sync")
  else
    got=$(curl -s -o "$work/resp.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$@" \
      --data-binary "$(body_for "$what")" "$url/sync")
  fi
  [ "$got" = "$want" ] || fail "$setting=$value: expected HTTP $want, got $got: $(cat "$work/resp.json")"
  grep -q "$setting" "$work/resp.json" || fail "$setting=$value: the answer should name the setting: $(cat "$work/resp.json")"
  [ "$(tensors_of "$url")" = "$before" ] || fail "$setting=$value: the store changed"
  [ "$(status_field "$url" 'd["version"]')" = 0 ] || fail "$setting=$value: the version changed"
  ok "$setting=$value -> $got $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"][:110])' "$work/resp.json"), store unchanged"
  kill "$last_pid"; wait "$last_pid" 2>/dev/null || true
}
check_limit max-files-per-sync 1 413 2
check_limit max-tensors-per-file 4 413 1
check_limit max-manifest-bytes 512 413 1
check_limit max-decompressed-bytes 1024 413 2
check_limit max-file-bytes 1024 413 1
check_limit max-sync-bytes 8192 413 2
python3 -c 'print("{\"pad\": \"" + "x" * 4096 + "\"}")' > "$work/big.json"
check_limit max-body-bytes 1024 413 "raw:$work/big.json"
check_limit max-header-bytes 1024 413 "raw:$work/big.json" -H "X-Pad: $(head -c 2048 /dev/zero | tr '\0' a)"
echo "fault_limits_test: all $n limits checked"
