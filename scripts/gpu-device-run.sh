#!/usr/bin/env bash
# Runs the GPU tests, the service test with the device store, the GPU benchmark and the PyTorch baseline on a
# machine with a CUDA GPU, from a folder prepared by `scripts/gpu-device-pack.sh DIR` (stripped binaries +
# scripts). Everything it prints also lands in $OUT (default ./gpu-out). See docs/gpu.md.
#   usage: bash gpu-device-run.sh [GIB]     (GIB: benchmark size, default 8)
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
out=${OUT:-$here/gpu-out}
mkdir -p "$out"
gib=${1:-8}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "devices", torch.cuda.device_count())'
  df -h /tmp | tail -1
} > "$out/summary.txt" 2>&1
cat "$out/summary.txt"
echo "== gpu_tests"
./gpu_tests > "$out/gpu_tests.log" 2>&1; echo "gpu_tests rc=$?" | tee -a "$out/summary.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|error" "$out/gpu_tests.log" | head -40
echo "== service test with --store cuda"
DS_SERVE_EXTRA="--store cuda" timeout 300 bash tests/integration/service_test.sh ./deltasync > "$out/service_cuda.log" 2>&1
echo "service_test --store cuda rc=$?" | tee -a "$out/summary.txt"
tail -5 "$out/service_cuda.log"
echo "== gpu_bench"
python3 torch_baseline.py --layout qwen3-4b --write-sizes "$out/qwen3-4b.sizes"
./gpu_bench --gib "$gib" --sizes "$out/qwen3-4b.sizes" --json "$out/gpu_bench.json" --dir /tmp/deltasync-gpu-bench \
  > "$out/gpu_bench.log" 2>&1
echo "gpu_bench rc=$?" | tee -a "$out/summary.txt"
cat "$out/gpu_bench.log"
echo "== torch baseline"
{
  PYTHONUNBUFFERED=1 python3 torch_baseline.py --gib "$gib" --ours "$out/gpu_bench.json"
  PYTHONUNBUFFERED=1 python3 torch_baseline.py --layout qwen3-4b --positions-to-host --ours "$out/gpu_bench.json"
} > "$out/torch.log" 2>&1
echo "torch_baseline rc=$?" | tee -a "$out/summary.txt"
cat "$out/torch.log"
if [ "${DS_SANITIZE:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
  echo "== compute-sanitizer (small tests)"
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_tests \
    --gtest_filter='gpu_diff.wide*:gpu_diff.snapshot*:gpu_diff.scratch*:gpu_apply.*:gpu_xor*:gpu_digest.many*:gpu_digest.unaligned*:gpu_sender.*:gpu_store.*' \
    > "$out/sanitizer.log" 2>&1
  echo "memcheck rc=$?" | tee -a "$out/summary.txt"
  timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 ./gpu_tests \
    --gtest_filter='gpu_digest.many*:gpu_diff.wide*' >> "$out/sanitizer.log" 2>&1
  echo "racecheck rc=$?" | tee -a "$out/summary.txt"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|FAILED" "$out/sanitizer.log" | sort | uniq -c | head -20
fi
cat "$out/summary.txt"
