#!/usr/bin/env bash
# The loop/worker hand-off under ThreadSanitizer (`make tsan-test`): the io, sync and http unit tests, the
# service integration test on both I/O backends, and a short soak (mixed dtypes, random densities) under a wrk
# load on /status and /metrics — all built with -fsanitize=thread in BUILD_DIR. Every TSan report of every
# process (child `deltasync serve` processes included, whose exit status the scripts do not see) goes to a
# log_path file; the run fails if any test fails or any report was written.
#
#   scripts/tsan-test.sh [BUILD_DIR]      (default build-tsan)
set -uo pipefail
build=${1:-build-tsan}
root="$(cd "$(dirname "$0")/.." && pwd)"
build=$(cd "$build" && pwd)
reports=$build/tsan-reports
rm -rf "$reports"; mkdir -p "$reports"
supp=$root/tests/tsan.supp
opts="log_path=$reports/tsan second_deadlock_stack=1 history_size=4"
[ -s "$supp" ] && opts="$opts suppressions=$supp"
export TSAN_OPTIONS="$opts${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
bin=$build/src/cli/deltasync

failed=()
step() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  echo "tsan: $name"
  if timeout 1200 "$@" > "$reports/$name.out" 2>&1; then
    echo "tsan: $name passed ($((SECONDS - t0)) s)"
  else
    local rc=$?
    if [ "$rc" = 77 ]; then echo "tsan: $name SKIPPED: $(grep -m1 SKIP "$reports/$name.out")"; return; fi
    echo "tsan: $name FAILED (exit $rc, $((SECONDS - t0)) s)"; tail -40 "$reports/$name.out"; failed+=("$name")
  fi
}

step io_tests "$build/tests/io/io_tests"
step sync_tests "$build/tests/sync/sync_tests"
step http_tests "$build/tests/http/http_tests"
step service bash "$root/tests/integration/service_test.sh" "$bin"
step service_threads env DELTASYNC_IO_BACKEND=threads bash "$root/tests/integration/service_test.sh" "$bin"
step soak bash "$root/bench/soak.sh" "$build" 20

shopt -s nullglob
logs=("$reports"/tsan.*)
if [ ${#logs[@]} -gt 0 ]; then
  echo "tsan: ${#logs[@]} process(es) wrote ThreadSanitizer reports:"
  for f in "${logs[@]}"; do echo "== $f"; head -60 "$f"; done
  failed+=("tsan-reports")
fi
if [ ${#failed[@]} -gt 0 ]; then echo "tsan: FAILED: ${failed[*]}"; exit 1; fi
echo "tsan: all passed, no ThreadSanitizer report"
