#!/usr/bin/env bash
# Integration test of `deltasync inspect` and `deltasync demo --keep` with the real binary:
# valid files report 0 invalid and exit 0; a flipped byte, a truncated file and a foreign file each exit 1
# with the reason named.
set -euo pipefail
bin=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Golden files written by torch + safetensors (slime's format) are valid.
"$bin" inspect "$data/golden/indices" > "$work/golden.txt" || fail "golden indices should be valid: $(cat "$work/golden.txt")"
grep -q "0 invalid" "$work/golden.txt" || fail "golden: expected 0 invalid"
"$bin" inspect "$data/golden/deltas_zstd" --json > "$work/golden.json" || fail "golden zstd invalid"
python3 - "$work/golden.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["invalid"] == 0, doc
assert all(f["encoding"] == "deltas_zstd" and f["zstd_frame"] and f["checksum_ok"] for f in doc["files"]), doc
assert sum(f["changed_elements"] for f in doc["files"]) > 0
PY

# Our own files: the demo keeps them, inspect accepts them.
"$bin" demo --offline --model tiny --steps 2 --keep "$work/demo" > "$work/demo.txt" || fail "demo failed: $(cat "$work/demo.txt")"
grep -q "bit-identical" "$work/demo.txt" || fail "demo did not verify"
"$bin" inspect "$work/demo" > "$work/ours.txt" || fail "our files should be valid: $(cat "$work/ours.txt")"
grep -q "0 invalid" "$work/ours.txt" || fail "ours: expected 0 invalid"

# A flipped byte inside the values: checksum mismatch, exit 1.
f=$(ls "$work"/demo/indices/weight_v000001/*.safetensors | head -1)
cp "$f" "$work/flip.safetensors"
size=$(stat -c %s "$work/flip.safetensors")
printf '\xff' | dd of="$work/flip.safetensors" bs=1 seek=$((size - 3)) conv=notrunc status=none
if "$bin" inspect "$work/flip.safetensors" > "$work/flip.txt"; then fail "flipped byte accepted"; fi
grep -q "checksum" "$work/flip.txt" || fail "flipped byte: reason should name the checksum: $(cat "$work/flip.txt")"

# A truncated file: the container rule is named.
head -c $((size - 10)) "$f" > "$work/trunc.safetensors"
if "$bin" inspect "$work/trunc.safetensors" > "$work/trunc.txt"; then fail "truncated file accepted"; fi
grep -q "st_size_mismatch_file" "$work/trunc.txt" || fail "truncated: $(cat "$work/trunc.txt")"

# Not a safetensors file at all.
echo "hello" > "$work/junk.safetensors"
if "$bin" inspect "$work/junk.safetensors" > "$work/junk.txt"; then fail "junk accepted"; fi
grep -q "INVALID" "$work/junk.txt" || fail "junk: $(cat "$work/junk.txt")"

# A missing path is an error, not an empty success.
if "$bin" inspect "$work/nope" 2> "$work/nope.txt"; then fail "missing path accepted"; fi
echo "inspect_test: all checks passed"
