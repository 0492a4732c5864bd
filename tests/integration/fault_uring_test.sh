#!/usr/bin/env bash
# io_uring unavailable: deltasync run under a seccomp filter that makes io_uring_setup fail with EPERM (what
# a container's default profile does; no_uring_exec.cc). The auto backend must log the fallback and take the
# thread backend; a forced uring backend must refuse to start with a clear error; then the whole service test
# (every encoding, every refusal, stores compared after each) passes with both serve and publish denied.
# The global switch kernel.io_uring_disabled is not used: it would change every process on the machine.
bin=$1
no_uring=$2
source "$(dirname "$0")/fault_lib.sh"
"$no_uring" true || { rc=$?; [ $rc = 77 ] && { echo "SKIP: seccomp filters unavailable"; exit 77; }; fail "no_uring_exec: $rc"; }
wrapped=$work/deltasync-no-uring
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$no_uring" "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" > "$wrapped"
chmod +x "$wrapped"
bin=$wrapped
make_checkpoints
mkdir -p "$work/d"
start_serve rx --base "$ck_base" --delta-dir "$work/d"
grep -q "I/O backend: threads (io_uring unavailable: .*Operation not permitted" "$work/rx.log" \
  || fail "the fallback should be logged with its reason: $(cat "$work/rx.log")"
ok "io_uring denied (EPERM): serve logs '$(grep -o 'I/O backend: threads.*' "$work/rx.log")'"
if "$bin" serve --listen 127.0.0.1:0 --base "$ck_base" --delta-dir "$work/d" --io-backend uring > "$work/forced.log" 2>&1; then
  fail "a forced uring backend should refuse to start"
fi
grep -q "io backend 'uring' forced" "$work/forced.log" || fail "forced uring: unclear error: $(cat "$work/forced.log")"
ok "forced --io-backend uring under the denial: $(head -c 120 "$work/forced.log")"
[ -z "${DELTASYNC_IO_BACKEND:-}" ] || fail "this test must run with the auto backend"
bash "$here/service_test.sh" "$bin" || fail "service_test under the io_uring denial"
ok "the whole service test passes with io_uring denied (thread backend)"
echo "fault_uring_test: all checks passed"
