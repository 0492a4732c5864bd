#!/usr/bin/env python3
"""slime #1806's receiver re-implemented in torch: the baseline of bench/receiver_bench.sh.

What slime's SGLang patch does (../shared/FIELD.md), step by step, written from that description:
  1. the sync's files are read whole by up to --read-workers threads (plain buffered read(), then zstd when
     the frame magic is there);
  2. each blob is parsed with safetensors.torch.load; __positions__ and __values__ go to the device with
     non-blocking copies; the payload checksum is computed there (torch.hash_tensor when this torch has it);
  3. per param: a full-shape tensor filled with NaN; positions unpacked from their 2/4 bytes with int64
     shifts; `deltas` gaps turned into indices by cumsum(g + 1) - 1; index_copy_ of the values (cast back to
     the param's dtype) into the NaN tensor;
  4. the NaN tensors go to the engine's load_weights in groups of --chunk-bytes, whose Tensor.copy_ is
     patched to copy only where the source is not NaN (here: torch.where(isnan(src), dst, src) into dst).
  Read, decode and apply of a batch do not overlap.
The weights are the --base checkpoint, on the GPU when torch sees one (else the CPU). Each rep applies the
same files to the base weights and is timed from the first read to the device's last write
(torch.cuda.synchronize). After the first rep the weights are compared with --expect (bit for bit, except
where the new value is a NaN: slime's sentinel cannot carry those, which is one of its known faults).
With --cold the page cache is dropped before every rep (root only). Prints one JSON line per mode.

Usage: python3 bench/slime_receiver.py --base BASE.safetensors [--expect NEW.safetensors] [--reps 3] [--cold] FILE...
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import time

import torch
from safetensors.torch import load, load_file

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DTYPES = {"torch.bfloat16": torch.bfloat16, "torch.float16": torch.float16, "torch.float32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def read_blob(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == ZSTD_MAGIC:
        import zstandard  # only deltas_zstd files need it
        data = zstandard.ZstdDecompressor().decompress(data)
    return data


def metadata_of(blob):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n])["__metadata__"]


def apply_files(paths, weights, device, read_workers, chunk_bytes):
    # 1. read the batch (all files of the sync), no overlap with what follows
    with concurrent.futures.ThreadPoolExecutor(read_workers) as pool:
        blobs = list(pool.map(read_blob, paths))
    for blob in blobs:
        meta = metadata_of(blob)
        enc = meta["encoding"]
        tensors = load(blob)
        pos = tensors["__positions__"].to(device, non_blocking=True)
        vals = tensors["__values__"].to(device, non_blocking=True)
        if hasattr(torch, "hash_tensor"):  # 2. the payload checksum, on the device
            torch.hash_tensor(pos)
            torch.hash_tensor(vals)
        pending = []
        pending_bytes = 0
        for p in json.loads(meta["params"]):
            dtype = DTYPES[p["dtype"]]
            shape = p["shape"]
            width = int(p["pos_width"])
            raw = pos[p["pos_start"]:p["pos_end"]].view(-1, width).to(torch.int64)
            idx = raw[:, 0].clone()
            for k in range(1, width):  # 3. little-endian bytes -> int64 with shifts
                idx |= raw[:, k] << (8 * k)
            if enc in ("deltas", "deltas_zstd"):
                idx = torch.cumsum(idx + 1, 0) - 1
            dense = torch.full(shape, float("nan"), dtype=dtype, device=device)
            dense.view(-1).index_copy_(0, idx, vals[p["val_start"]:p["val_end"]].to(dtype))
            pending.append((p["name"], dense))
            pending_bytes += dense.numel() * dense.element_size()
            if pending_bytes >= chunk_bytes:
                load_weights(weights, pending)
                pending, pending_bytes = [], 0
        load_weights(weights, pending)


def load_weights(weights, named):
    # 4. the patched copy_: only where the source is not NaN
    for name, src in named:
        dst = weights[name]
        dst.copy_(torch.where(torch.isnan(src), dst, src))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--expect")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--read-workers", type=int, default=4)
    ap.add_argument("--chunk-bytes", type=int, default=512 << 20)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_file(a.base, device=str(device))
    modes = ["warm"] + (["cold"] if a.cold else [])
    exact = None
    for mode in modes:
        times = []
        for rep in range(a.reps + 1):  # the first warm rep also checks the result, and is not timed
            weights = {k: v.clone() for k, v in base.items()}
            sync(device)
            if mode == "cold":
                os.sync()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
            else:
                for path in a.files:
                    with open(path, "rb") as f:
                        f.read()
            t0 = time.perf_counter()
            apply_files(a.files, weights, device, a.read_workers, a.chunk_bytes)
            sync(device)
            ms = (time.perf_counter() - t0) * 1e3
            if mode == "warm" and rep == 0:
                if a.expect:
                    want = load_file(a.expect, device=str(device))
                    exact = all(torch.equal(weights[k].view(torch.int16) if weights[k].element_size() == 2 else weights[k],
                                            want[k].view(torch.int16) if want[k].element_size() == 2 else want[k])
                                for k in want)
                continue
            times.append(ms)
        print(json.dumps({"mode": mode, "ms": statistics.median(times), "reps": a.reps, "device": str(device),
                          "torch": torch.__version__, "exact": exact}))


if __name__ == "__main__":
    main()
