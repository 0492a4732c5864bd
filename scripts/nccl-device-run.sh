#!/usr/bin/env bash
# One device-machine call for the NCCL transport (two GPUs): the channel tests, the multi-process test, the
# demo's NCCL variant in each encoding and the benchmark. Run from a repository root holding the binaries in
# $D (default build-nccl-dev: deltasync, nccl_tests, nccl_bench, nccl_test.sh, nccl_ckpt.py); logs to $OUT.
set -uo pipefail
D=${D:-build-nccl-dev}
OUT=${OUT:-/tmp/nccl-out}
L=/tmp/nccl-logs  # many logs: only the archive and the summary go to $OUT (8 files come back at most)
mkdir -p "$OUT" "$L"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# One host, no outside network: NCCL's bootstrap sockets on loopback.
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
{ date -u; nvidia-smi -L; nvidia-smi topo -m; ldd "$D/deltasync" | grep -E 'nccl|not found'; ls /usr/lib/x86_64-linux-gnu/libnccl*; } > "$L/machine.txt" 2>&1
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s); timeout "$limit" "$@" > "$L/$name.log" 2>&1; local rc=$?
  echo "== $name: rc $rc in $(( $(date +%s) - t0 ))s"; tail -${TAILN:-6} "$L/$name.log"
  { echo "===== $name: rc $rc"; cat "$L/$name.log"; } >> "$OUT/all.log"; }
PARTS=${PARTS:-tests integration demo bench}  # a subset runs only those parts
has() { [[ " $PARTS " == *" $1 "* ]]; }
has tests && TAILN=14 step nccl_tests 120 "$D/nccl_tests"
has integration && TAILN=12 step integration 200 bash "$D/nccl_test.sh" "$D/deltasync"
has demo && {
TAILN=4 step demo_deltas 100 "$D/deltasync" demo --model small --steps 3 --encoding deltas --update-weight-transport nccl
for enc in indices deltas_zstd; do TAILN=3 step demo_$enc 40 "$D/deltasync" demo --model tiny --steps 3 --encoding $enc --update-weight-transport nccl; done
}
has bench && TAILN=${BENCH_TAIL:-30} step bench 200 "$D/nccl_bench" ${BENCH_ARGS:-}
cat "$L/machine.txt"; tar czf "$OUT/logs.tgz" -C "$L" . && echo "logs in \$OUT/logs.tgz"
