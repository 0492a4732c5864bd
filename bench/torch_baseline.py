#!/usr/bin/env python3
"""The PyTorch baseline of the GPU diff+encode, done the way slime #1806 does it: per tensor
`cur.view(int16) != snap.view(int16)`, `nonzero`, `index_select` of the new values, position encoding
(indices: int32; deltas: gaps from `diff`, int16/int32 by the largest gap), then `cat` of the bucket's
positions and values. Same data shape as bench/gpu_bench (bf16, --gib in --tensors tensors, --density
changed). Prints the median; with --ours FILE (gpu_bench --json) also the ratio of the two.

Usage: python3 bench/torch_baseline.py [--gib 8] [--tensors 32] [--density 0.01] [--reps 5] [--ours gpu.json]
"""
import argparse
import json
import statistics
import sys

import torch


def encode_bucket(cur, snap, encoding):
    positions, values = [], []
    for c, s in zip(cur, snap):
        mask = c.view(torch.int16) != s.view(torch.int16)
        idx = mask.flatten().nonzero().squeeze(1)
        values.append(c.flatten().index_select(0, idx))
        if encoding == "indices":
            positions.append(idx.to(torch.int32).view(torch.uint8))
        else:
            gaps = torch.diff(idx, prepend=idx.new_full((1,), -1)) - 1
            wide = bool(gaps.numel() and gaps.max().item() > 65535)
            positions.append((gaps.to(torch.int32) if wide else gaps.to(torch.int16)).view(torch.uint8))
    return torch.cat(positions), torch.cat(values)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=8)
    ap.add_argument("--tensors", type=int, default=32)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--encoding", default="deltas", choices=["indices", "deltas"])
    ap.add_argument("--ours", help="gpu_bench --json output, for the ratio")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: torch sees no CUDA device")
        return 0
    dev = torch.device("cuda")
    per = int(a.gib * (1 << 30)) // 2 // a.tensors // 4096 * 4096
    g = torch.Generator(device=dev).manual_seed(7)
    snap, cur = [], []
    for _ in range(a.tensors):
        s = torch.randint(-32768, 32768, (per,), dtype=torch.int32, device=dev, generator=g).to(torch.int16)
        c = s.clone()
        flip = torch.rand(per, device=dev, generator=g) < a.density
        c[flip] ^= 1
        snap.append(s.view(torch.bfloat16).view(per // 4096, 4096))
        cur.append(c.view(torch.bfloat16).view(per // 4096, 4096))
    torch.cuda.synchronize()
    encode_bucket(cur, snap, a.encoding)  # warm-up
    times = []
    for _ in range(a.reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        pos, val = encode_bucket(cur, snap, a.encoding)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    med = statistics.median(times)
    nbytes = per * a.tensors * 2
    print(f"torch {torch.__version__}: diff+encode ({a.encoding}) of {nbytes / 2**30:.2f} GiB bf16, "
          f"{val.numel()} changed: median {med * 1e3:.3f} ms (min {min(times) * 1e3:.3f}, max {max(times) * 1e3:.3f}), "
          f"{2 * nbytes / med / 1e9:.1f} GB/s of inputs read")
    if a.ours:
        with open(a.ours) as f:
            ours = json.load(f)
        print(f"deltasync GPU diff+encode: median {ours['diff_device_s'] * 1e3:.3f} ms; "
              f"speed-up over PyTorch {med / ours['diff_device_s']:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
