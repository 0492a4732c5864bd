#!/usr/bin/env bash
# The soak: `deltasync serve` holding a small mixed-dtype model (BF16, F16, F32, F8_E4M3, F8_E5M2), a wrk load
# on /status and on /metrics, and bench/soak_driver pushing SYNCS consecutive syncs with random densities,
# encodings, formats and bucket sizes, checking GET /checksums against its own digests after each one.
#
#   bench/soak.sh [BUILD_DIR] [SYNCS]      (BUILD_DIR default build, SYNCS default 1000)
#
# Environment: SOAK_OUT=DIR keeps the server log, the per-sync CSV and wrk's reports there (default: a
# scratch dir, removed); SOAK_SEED (default 1); SOAK_WRK=0 runs without the HTTP load. Without wrk installed
# (scripts/install-deps.sh installs it) the script exits 77, which CTest reports as a skip.
# Exits 1 if any sync is refused or any store differs from the trainer, if wrk saw a non-2xx answer or a
# socket error, or if the receiver does not exit 0 on SIGTERM at the end.
set -euo pipefail
build=${1:-build}
syncs=${2:-1000}
seed=${SOAK_SEED:-1}
bin=$build/src/cli/deltasync
driver=$build/tests/soak/soak_driver
if [ ! -x "$bin" ] || [ ! -x "$driver" ]; then
  echo "soak: build $bin and $driver first (cmake --build $build --target deltasync soak_driver)"; exit 1
fi
use_wrk=${SOAK_WRK:-1}
if [ "$use_wrk" = 1 ] && ! command -v wrk > /dev/null; then
  echo "SKIP: wrk is not installed (scripts/install-deps.sh installs it; SOAK_WRK=0 runs the soak without the load)"
  exit 77
fi
if [ -n "${SOAK_OUT:-}" ]; then
  work=$SOAK_OUT; mkdir -p "$work"
else
  work=$(mktemp -d)
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${SOAK_OUT:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/deltas"
rm -f "$work/port"
"$driver" write-base --out "$work/base.safetensors" --seed "$seed"
"$bin" serve --listen 127.0.0.1:0 --port-file "$work/port" --base "$work/base.safetensors" \
  --delta-dir "$work/deltas" --log-level warn 2> "$work/serve.log" &
server=$!
pids+=("$server")
for _ in $(seq 1 300); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || { echo "soak: deltasync serve did not start: $(cat "$work/serve.log")"; exit 1; }
url=http://127.0.0.1:$(cat "$work/port")
echo "soak: receiver pid $server on $url, $syncs syncs, seed $seed"

wrk_pids=()
if [ "$use_wrk" = 1 ]; then
  for route in status metrics; do
    wrk -t1 -c2 -d24h --latency "$url/$route" > "$work/wrk_$route.txt" 2>&1 &
    wrk_pids+=($!)
    pids+=($!)
  done
  echo "soak: wrk -t1 -c2 on /status and /metrics"
else
  echo "soak: no HTTP load (SOAK_WRK=0)"
fi

status=0
rc=0
"$driver" run --url "$url" --delta-dir "$work/deltas" --syncs "$syncs" --seed "$seed" --server-pid "$server" \
  --csv "$work/syncs.csv" || rc=$?
if [ "$rc" != 0 ]; then echo "soak: FAIL: soak_driver exited $rc"; status=1; fi

# wrk prints its report on SIGINT.
for p in "${wrk_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
if [ "$use_wrk" = 1 ]; then
  for route in status metrics; do
    f=$work/wrk_$route.txt
    reqs=$(grep -Eo '^ *[0-9]+ requests in [^,]*' "$f" || echo "no report")
    rps=$(grep -Eo 'Requests/sec: *[0-9.]+' "$f" || echo "Requests/sec: ?")
    p99=$(grep -E '^ +99%' "$f" | awk '{print $2}' || true)
    echo "soak: wrk /$route:$reqs, $rps, p99 ${p99:-?}"
    if grep -q 'Non-2xx' "$f"; then
      echo "soak: FAIL: wrk /$route got non-2xx answers: $(grep 'Non-2xx' "$f")"; status=1
    fi
    if grep -q 'Socket errors' "$f"; then echo "soak: FAIL: wrk /$route: $(grep 'Socket errors' "$f")"; status=1; fi
    grep -q 'requests in' "$f" || { echo "soak: FAIL: wrk /$route printed no report: $(tail -5 "$f")"; status=1; }
  done
fi
# The receiver must still be up, and must shut down cleanly on SIGTERM (exit 0: under ASan/LSan or TSan a
# report at exit makes it non-zero).
if ! kill -0 "$server" 2>/dev/null; then
  echo "soak: FAIL: the receiver exited during the run: $(tail -20 "$work/serve.log")"; status=1
else
  kill -TERM "$server"
  src=0
  wait "$server" || src=$?
  if [ "$src" != 0 ]; then
    echo "soak: FAIL: the receiver exited $src on SIGTERM: $(tail -30 "$work/serve.log")"; status=1
  fi
fi
pids=("${wrk_pids[@]}")
[ "$status" = 0 ] && echo "soak: PASS" || echo "soak: FAILED (logs in $work)"
exit $status
