#!/usr/bin/env bash
# A receiver that refuses a sync: the demo's pre-push hook corrupts sync 2's file, the receiver answers 422,
# the sender keeps its snapshot, and sync 3 carries the lost changes — the receiver ends bit-identical to
# the trainer (slime #2104 is the bug this rules out).
set -euo pipefail
bin=$1
fmt=${2:-native}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
hook='if [ "$DELTASYNC_VERSION" = 2 ]; then f=$(ls "$DELTASYNC_DIR"/*.safetensors | head -1); printf "\377\377\377\377" | dd of="$f" bs=1 seek=300 conv=notrunc status=none; fi'
"$bin" demo --model tiny --steps 3 --format "$fmt" --pre-push-hook "$hook" > "$out" 2>&1 || { cat "$out"; echo "FAIL: demo"; exit 1; }
grep -q "sync v2: .*receiver_failed" "$out" || { cat "$out"; echo "FAIL: sync 2 should have been refused"; exit 1; }
grep -qE "^3 .*bit-exact" "$out" || { cat "$out"; echo "FAIL: sync 3 should verify bit-exact"; exit 1; }
grep -q "bit-identical to the trainer" "$out" || { cat "$out"; echo "FAIL: final state"; exit 1; }
echo "demo_recovery_test ($fmt): refused sync 2 recovered by sync 3"
