#!/usr/bin/env python3
"""The PyTorch baseline of the GPU diff+encode (bench/gpu_bench), on the same kind of data.

Two PyTorch implementations are timed, both with CUDA events, medians of --reps after a warm-up:

  slime   what slime #1806's sender does for each bucket (`--update-weight-buffer-size`, 512 MiB by default):
          a per-tensor `view(int16) !=` mask, `cat` of the bucket's dense values and of its masks, one `nonzero`,
          `index` of the values, `searchsorted` + `tolist` for the per-tensor bounds, then per tensor the local
          positions (`indices`: int32; `deltas`: gaps against a `cat`-ed shifted copy, the widths from one
          `stack(max).cpu()`), and `cat` of the bucket's positions and values. slime then copies every tensor's
          positions to the host (`.cpu().numpy()`); with --positions-on-device (the default) they stay on the
          device, as ours do in the figure we compare with: that favours PyTorch.
  lean    the fastest PyTorch we could write for the same output: per tensor `!=`, `nonzero`, `index_select`,
          gaps from `diff`, then `cat`; no dense `cat`. Not what slime does; reported so the ratio does not
          rest on a weak baseline.

Data: bf16, --density of the elements changed, either --tensors equal tensors of --gib GiB in total, or
--layout qwen3-4b (Qwen3-4B's 398 tensors, 8.04 GB, tied embeddings) cut into --bucket-mib buckets.
--write-sizes FILE writes the layout's element counts (one per line) for `gpu_bench --sizes FILE` and exits.
With --ours FILE (gpu_bench --json) it prints the ratios to our device diff+encode of the same layout.

Usage: python3 bench/torch_baseline.py [--gib 8 --tensors 32 | --layout qwen3-4b] [--bucket-mib 512]
                                       [--density 0.01] [--reps 5] [--encoding deltas] [--ours gpu.json]
"""
import argparse
import itertools
import json
import statistics
import sys


def qwen3_4b_sizes():
    """Element counts of Qwen3-4B's tensors in checkpoint order (hidden 2560, 36 layers, 32 q / 8 kv heads of
    128, MLP 9728, vocabulary 151936, embeddings tied to the LM head)."""
    hidden, inter, q, kv, head = 2560, 9728, 32 * 128, 8 * 128, 128
    sizes = [151936 * hidden]
    for _ in range(36):
        sizes += [q * hidden, kv * hidden, kv * hidden, hidden * q, head, head,
                  inter * hidden, inter * hidden, hidden * inter, hidden, hidden]
    sizes.append(hidden)
    return sizes


def buckets_of(sizes, bucket_elems):
    """Tensors grouped in order into buckets of at least bucket_elems elements (the last may be smaller)."""
    out, cur, n = [], [], 0
    for i, s in enumerate(sizes):
        cur.append(i)
        n += s
        if n >= bucket_elems:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


def encode_slime(torch, cur, snap, encoding, positions_on_device):
    dev = cur[0].device
    masks = [c.view(torch.int16) != s.view(torch.int16) for c, s in zip(cur, snap)]
    cum = list(itertools.accumulate(c.numel() for c in cur))
    cum_t = torch.tensor(cum, dtype=torch.int64, device=dev)
    big_values = torch.cat([c.reshape(-1) for c in cur])
    big_mask = torch.cat([m.reshape(-1) for m in masks])
    big_idx = big_mask.nonzero().view(-1)
    big_val = big_values[big_idx]
    bounds = torch.searchsorted(big_idx, cum_t).tolist()
    pos, vals, prev_b, start = [], [], 0, 0
    for i in range(len(cur)):
        b = bounds[i]
        if b > prev_b:
            local = big_idx[prev_b:b] - start
            if encoding == "deltas":
                shifted = torch.cat([torch.tensor([-1], dtype=local.dtype, device=dev), local[:-1]])
                local = local - shifted - 1
            pos.append(local)
            vals.append(big_val[prev_b:b])
        prev_b, start = b, cum[i]
    if not pos:
        return None, None
    if encoding == "indices":
        pieces = [p.to(torch.int32) for p in pos]
    else:
        widths = torch.stack([p.max() for p in pos]).cpu().tolist()
        pieces = [p.to(torch.int16 if w <= 65535 else torch.int32) for p, w in zip(pos, widths)]
    if positions_on_device:
        positions = torch.cat([p.view(torch.uint8) for p in pieces])
    else:
        positions = b"".join(p.cpu().numpy().tobytes() for p in pieces)
    return positions, torch.cat(vals)


def encode_lean(torch, cur, snap, encoding):
    positions, values = [], []
    for c, s in zip(cur, snap):
        idx = (c.view(torch.int16) != s.view(torch.int16)).flatten().nonzero().squeeze(1)
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
    ap.add_argument("--layout", choices=["qwen3-4b"], help="a real model's tensor sizes instead of equal tensors")
    ap.add_argument("--bucket-mib", type=int, default=512, help="bucket size (slime's default 512 MiB)")
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--encoding", default="deltas", choices=["indices", "deltas"])
    ap.add_argument("--positions-to-host", action="store_true", help="also time slime's copy of positions to the host")
    ap.add_argument("--write-sizes", help="write the layout's element counts to this file and exit")
    ap.add_argument("--ours", help="gpu_bench --json output, for the ratio")
    a = ap.parse_args()
    if a.layout:
        sizes = qwen3_4b_sizes()
    else:
        per = int(a.gib * (1 << 30)) // 2 // a.tensors // 4096 * 4096
        sizes = [per] * a.tensors
    if a.write_sizes:
        with open(a.write_sizes, "w") as f:
            f.write("".join(f"{s}\n" for s in sizes))
        return 0
    import torch
    if not torch.cuda.is_available():
        print("SKIP: torch sees no CUDA device")
        return 0
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(7)
    snap, cur = [], []
    for n in sizes:
        s = torch.randint(-32768, 32768, (n,), dtype=torch.int32, device=dev, generator=g).to(torch.int16)
        c = s.clone()
        flip = torch.rand(n, device=dev, generator=g) < a.density
        c[flip] ^= 1
        del flip
        shape = (n // 2560, 2560) if n % 2560 == 0 and n > 2560 else (n,)
        snap.append(s.view(torch.bfloat16).view(shape))
        cur.append(c.view(torch.bfloat16).view(shape))
    torch.cuda.synchronize()
    buckets = buckets_of(sizes, (a.bucket_mib << 20) // 2)
    nbytes = 2 * sum(sizes)

    def run_all(fn):
        changed = 0
        for b in buckets:
            _, v = fn([cur[i] for i in b], [snap[i] for i in b])
            changed += 0 if v is None else v.numel()
        return changed

    def timed(fn):
        changed = run_all(fn)  # warm-up
        times = []
        for _ in range(a.reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run_all(fn)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times), min(times), max(times), changed

    ways = [("slime #1806's way, positions kept on the device",
             lambda c, s: encode_slime(torch, c, s, a.encoding, True)),
            ("lean per-tensor PyTorch (not slime's way)", lambda c, s: encode_lean(torch, c, s, a.encoding))]
    if a.positions_to_host:
        ways.insert(1, ("slime #1806's way, positions copied to the host as slime does",
                        lambda c, s: encode_slime(torch, c, s, a.encoding, False)))
    what = f"{a.layout} ({len(sizes)} tensors)" if a.layout else f"{len(sizes)} equal tensors"
    print(f"torch {torch.__version__}: diff+encode ({a.encoding}) of {nbytes / 2**30:.2f} GiB bf16, {what}, "
          f"{len(buckets)} buckets of >= {a.bucket_mib} MiB, density {a.density}")
    results = {}
    for name, fn in ways:
        med, lo, hi, changed = timed(fn)
        results[name] = med
        print(f"  {name}: median {med * 1e3:.3f} ms (min {lo * 1e3:.3f}, max {hi * 1e3:.3f}), {changed} changed, "
              f"{2 * nbytes / med / 1e9:.1f} GB/s of inputs read")
    if a.ours:
        with open(a.ours) as f:
            ours = json.load(f)
        key = "diff_layout_s" if a.layout else "diff_device_s"
        if key not in ours:
            print(f"FAILED: {a.ours} has no {key} (gpu_bench --sizes gives diff_layout_s)")
            return 1
        mine = ours[key]
        nb = ours.get("layout_buckets", 1) if a.layout else 1
        print(f"deltasync GPU diff+encode ({key}, {nb:.0f} bucket(s)): median {mine * 1e3:.3f} ms")
        for name, med in results.items():
            print(f"  speed-up over {name}: {med / mine:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
