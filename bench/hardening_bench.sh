#!/usr/bin/env bash
# Issue 18's two measurements (bench/RESULTS.md): the receiver's peak RSS rise across the zstd-bomb,
# duplicate-file and big-manifest refusals under --max-sync-memory-bytes 256 MiB (read from /proc/PID: VmHWM
# after `echo 5 > clear_refs`, minus VmRSS before), and GET /healthz latency with no other connection (the
# baseline) and under 1000 idle keep-alive connections. It is the CTest integration.fault_hardening run with
# MEASURE=1, which prints the figures at the end.
#   bench/hardening_bench.sh BUILD_DIR
set -euo pipefail
exec env MEASURE=1 bash "$(dirname "$0")/../tests/integration/fault_hardening_test.sh" "${1:?build dir}/src/cli/deltasync"
