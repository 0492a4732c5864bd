#!/usr/bin/env bash
# Assembles the bundle that device_run.sh runs on the H200 (no nvcc there, Python 3.12 and pip pybind11):
#   bundle.sh BUILD_DIR OUT_DIR
# BUILD_DIR: a CUDA build of this tree (make build on a machine with nvcc). OUT_DIR gets the static
# libraries (debug info stripped), the runtime libraries the device lacks, the stripped CLI, the headers
# the bindings compile against, the Python package, the tests and the benchmark. Run it from the repo root;
# then carry OUT_DIR and run `bash OUT_DIR/tests/python/device/device_run.sh` there.
set -euo pipefail
B=$(cd "$1" && pwd)
O=$2
rm -rf "$O"
mkdir -p "$O/lib" "$O/bin" "$O/include" "$O/bench" "$O/tests"
find "$B/src" -name 'libdeltasync_*.a' -exec cp {} "$O/lib/" \;
strip --strip-debug "$O"/lib/*.a
for l in liburing.so.2 libzstd.so.1 libxxhash.so.0; do cp -L "/usr/lib/x86_64-linux-gnu/$l" "$O/lib/"; done
cp /usr/local/cuda/lib64/libcudart_static.a "$O/lib/"
strip -o "$O/bin/deltasync" "$B/src/cli/deltasync"
cp -r /usr/include/dlpack "$O/include/"
cp -r "$B/generated" "$O/generated"
find src \( -name '*.h' -o -path 'src/python/*' \) -type f | tar -cf - -T - | tar -xf - -C "$O"
cp -r tests/python "$O/tests/"
cp bench/python_bench.py "$O/bench/"
cp tests/python/device/device_run.sh "$O/"
du -sh "$O"
