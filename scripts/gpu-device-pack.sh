#!/usr/bin/env bash
# Copies what scripts/gpu-device-run.sh needs into DIR: stripped gpu_tests, gpu_bench and deltasync from
# BUILD (default build/), the PyTorch baseline, the service test and the config it reads. See docs/gpu.md.
#   usage: scripts/gpu-device-pack.sh DIR [BUILD]
set -euo pipefail
dir=$1
build=${2:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir/tests/integration" "$dir/config"
for b in tests/gpu/gpu_tests bench/gpu_bench src/cli/deltasync; do
  strip -o "$dir/$(basename "$b")" "$build/$b"
done
cp "$root/bench/torch_baseline.py" "$root/scripts/gpu-device-run.sh" "$dir/"
cp "$root/tests/integration/service_test.sh" "$root/tests/integration/craft.py" "$dir/tests/integration/"
cp "$root/config/deltasync.toml" "$dir/config/"
du -sh "$dir"
