#!/usr/bin/env bash
# Disk full while the sender writes: `deltasync publish` into a 16 KiB tmpfs runs out of space part way
# through a sync. It must fail with a clear ENOSPC error naming the file, leave no partial file, temp file
# or version dir behind, push nothing (the receiver's store is unchanged), and the same sync must then go
# through into a directory with room. Needs root and `mount -t tmpfs`: otherwise a visible skip (exit 77).
bin=$1
source "$(dirname "$0")/fault_lib.sh"
full=$work/full
mkdir -p "$full"
if ! mount -t tmpfs -o size=16k tmpfs "$full" 2> "$work/mount.err"; then
  echo "SKIP: cannot mount a small tmpfs here (needs root and mount -t tmpfs): $(cat "$work/mount.err")"
  exit 77
fi
cleanups+=("umount '$full'")
make_checkpoints
reference_digests

mkdir -p "$work/deltas"
start_serve rx --base "$ck_base" --delta-dir "$full"
RX=$(url_of rx)
# ~24 KiB of delta files in 4 KiB buckets: the first files fit, a later one does not.
if "$bin" publish --from "$ck_base" --to "$ck_third" --delta-dir "$full" --version 1 --base-version 0 \
     --update-weight-buffer-size 4096 --push "$RX" > "$work/p.log" 2>&1; then
  fail "publish into a full disk should fail: $(cat "$work/p.log")"
fi
grep -q "No space left on device" "$work/p.log" || fail "the error should say ENOSPC: $(cat "$work/p.log")"
grep -q "\[no_space\]" "$work/p.log" || fail "the error should carry the no_space code: $(cat "$work/p.log")"
grep -q "rank0000_flush0000" "$work/p.log" || fail "the error should name the file: $(cat "$work/p.log")"
left=$(find "$full" -mindepth 1 | wc -l)
[ "$left" = 0 ] || fail "nothing should be left on the full disk, found: $(find "$full" -mindepth 1)"
[ "$(status_field "$RX" 'd["version"]')" = 0 ] || fail "nothing should have been pushed"
[ "$(tensors_of "$RX")" = "$want_base" ] || fail "the receiver's store should be unchanged"
ok "ENOSPC mid-sync: $(grep -o 'No space left on device.*' "$work/p.log" | head -1 | cut -c1-60)...; no file left, receiver unchanged"

# The version dir was removed, so the same sync retried with room goes through.
umount "$full"
cleanups=()
mkdir -p "$full"
"$bin" publish --from "$ck_base" --to "$ck_third" --delta-dir "$full" --version 1 --base-version 0 \
  --update-weight-buffer-size 4096 --push "$RX" > "$work/p2.log" 2>&1 || fail "retry: $(cat "$work/p2.log")"
[ "$(tensors_of "$RX")" = "$want_third" ] || fail "after the retry the store should equal the trainer's"
ok "the retried sync with room applies; store == trainer"
echo "fault_enospc_test: all checks passed"
