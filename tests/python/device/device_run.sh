#!/usr/bin/env bash
# The H200 run of the Python package (tests/python/device/README in docs/python.md): the device has
# Python 3.12, torch, transformers and pybind11 from pip but no nvcc, so the module's bindings are compiled
# there against the static libraries built (with CUDA) on the build machine and carried in this bundle:
#   lib/*.a, lib/lib{uring,zstd,xxhash}.so.*, lib/libcudart_static.a, bin/deltasync, src/, generated/, include/dlpack
# Then: the pytest suite (CUDA variants included), the transformers end to end, bench/python_bench.py.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$B/out}
mkdir -p "$OUT" "$B/pkg/deltasync"
cd "$B"
PY=${PY:-python3}
EXT=$($PY -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
PBINC=$($PY -m pybind11 --includes 2>/dev/null || echo "-I$($PY -c 'import sysconfig; print(sysconfig.get_paths()["include"])')")
NCCL=$(ldconfig -p | awk '/libnccl\.so\.2 /{print $NF; exit}')
if [ -z "$NCCL" ]; then NCCL=$($PY -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib', 'libnccl.so.2'))" 2>/dev/null); fi
if [ -z "$NCCL" ] || [ ! -e "$NCCL" ]; then NCCL=$(find / -xdev -name 'libnccl.so.2*' 2>/dev/null | head -1); fi
echo "python $($PY --version) ext $EXT pybind11 $($PY -m pybind11 --version 2>/dev/null) nccl $NCCL" | tee "$OUT/build.txt"
cp src/python/deltasync/*.py pkg/deltasync/
ln -sf "$NCCL" lib/libnccl.so.2
objs=()
for f in module dlpack_import sender_binding receiver_binding inspect_binding; do
  g++ -std=c++20 -O2 -fPIC -fvisibility=hidden $PBINC -Isrc -Igenerated -Iinclude -c src/python/$f.cc -o /tmp/$f.o &
  objs+=(/tmp/$f.o)
done
wait
g++ -shared -o "pkg/deltasync/_core$EXT" "${objs[@]}" -Wl,--start-group lib/libdeltasync_*.a -Wl,--end-group \
  lib/libcudart_static.a lib/libnccl.so.2 lib/liburing.so.2 lib/libzstd.so.1 lib/libxxhash.so.0 -ldl -lrt -lpthread \
  -Wl,-rpath,"$B/lib" 2>&1 | tee -a "$OUT/build.txt"
ls -la pkg/deltasync | tee -a "$OUT/build.txt"
export PYTHONPATH=$B/pkg:$B/tests/python DELTASYNC_BIN=$B/bin/deltasync LD_LIBRARY_PATH=$B/lib:${LD_LIBRARY_PATH:-}
$PY -c "import deltasync; print('gpu_available', deltasync.gpu_available())" 2>&1 | tee -a "$OUT/build.txt"
timeout 200 $PY -m pytest -q -rs -p no:cacheprovider tests/python 2>&1 | tail -60 > "$OUT/pytest.txt"
tail -5 "$OUT/pytest.txt"
BENCH_DIR=/tmp timeout 200 $PY bench/python_bench.py "$B/bin/deltasync" > "$OUT/bench.json" 2> "$OUT/bench.err"
tail -c 3000 "$OUT/bench.json"; tail -5 "$OUT/bench.err"
