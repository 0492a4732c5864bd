#!/usr/bin/env python3
"""Golden vectors for the slime #1806 delta format, made with the real tools (torch >= 2.9, safetensors).

Two modes, both run on the device machine (torch 2.11, safetensors 0.8):

  make_golden.py write OUT_DIR
      Writes slime-format delta files the way slime #1806's sender builds them with torch ops
      (`view(int) !=`, `nonzero`, `cat`, torch.hash_tensor checksums, safetensors.torch.save), plus
      base.safetensors / new.safetensors (the tensors before and after) and hash_cases.safetensors
      (one tensor per dtype, its torch.hash_tensor stored in the metadata).

  make_golden.py check DIR
      Loads every *.safetensors file under DIR that deltasync wrote (a `deltasync demo --keep DIR` run)
      with safetensors.torch.load_file, recomputes the checksum with torch.hash_tensor, decodes positions the
      way slime's receiver does, applies them to DIR/base.safetensors and compares with DIR/new.safetensors.

The outputs are committed under tests/data/golden/ and read by tests/codec/golden_test.cc.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save, save_file

SEED = 1806


def int_view(t):
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]


def changed_indices(old, new):
    # slime compares bit patterns through an integer view, so NaN == NaN bits and -0.0 != +0.0.
    return (old.flatten().view(int_view(old)) != new.flatten().view(int_view(new))).nonzero().squeeze(1)


def encode_positions(idx, encoding):
    if encoding == "indices":
        return idx.to(torch.int32).view(torch.uint8), 4
    gaps = idx.clone()
    if idx.numel() > 1:
        gaps[1:] = idx[1:] - idx[:-1] - 1
    if idx.numel() == 0 or int(gaps.max()) <= 65535:
        return gaps.to(torch.int32).to(torch.uint16).view(torch.uint8), 2
    return gaps.to(torch.int32).view(torch.uint8), 4


def h(t):
    return int(torch.hash_tensor(t).item()) & 0xFFFFFFFFFFFFFFFF


def build_file(params, encoding, version):
    pos_parts, val_parts, manifest = [], [], []
    pos_off = val_off = 0
    for name, old, new in params:
        idx = changed_indices(old, new)
        if idx.numel() == 0:
            continue
        pos, width = encode_positions(idx, "indices" if encoding == "indices" else "deltas")
        vals = new.flatten()[idx]
        manifest.append({
            "name": name, "dtype": str(new.dtype).removeprefix("torch."), "shape": list(new.shape),
            "pos_start": pos_off, "pos_end": pos_off + pos.numel(), "pos_width": width,
            "val_start": val_off, "val_end": val_off + vals.numel(),
        })
        pos_off += pos.numel()
        val_off += vals.numel()
        pos_parts.append(pos)
        val_parts.append(vals)
    positions = torch.cat(pos_parts) if pos_parts else torch.empty(0, dtype=torch.uint8)
    values = torch.cat(val_parts) if val_parts else torch.empty(0, dtype=torch.bfloat16)  # promotes dtypes
    checksum = h(positions) ^ (h(values) << 1)
    meta = {"encoding": encoding, "current_version": str(version), "checksum": str(checksum),
            "params": json.dumps(manifest)}
    data = save({"__positions__": positions, "__values__": values}, metadata=meta)
    if encoding == "deltas_zstd":
        data = zstd_compress(data)
    return data


def _libzstd():
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
    lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    return ctypes, lib


def zstd_compress(data):
    """One level-1 frame with the content size, as slime writes it (python-zstandard, else libzstd)."""
    try:
        import zstandard
        return zstandard.ZstdCompressor(level=1, write_content_size=True).compress(data)
    except ImportError:
        ctypes, lib = _libzstd()  # ZSTD_compress records the content size in the frame header
        cap = lib.ZSTD_compressBound(len(data))
        dst = ctypes.create_string_buffer(cap)
        n = lib.ZSTD_compress(dst, cap, data, len(data), 1)
        assert not lib.ZSTD_isError(n), "ZSTD_compress failed"
        return dst.raw[:n]


def zstd_decompress(data):
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data)
    except ImportError:
        ctypes, lib = _libzstd()
        size = lib.ZSTD_getFrameContentSize(data, len(data))
        assert size < (1 << 40), "frame without a content size"
        dst = ctypes.create_string_buffer(max(size, 1))
        n = lib.ZSTD_decompress(dst, size, data, len(data))
        assert not lib.ZSTD_isError(n) and n == size, "ZSTD_decompress failed"
        return dst.raw[:n]


def special(t, g):
    """Sprinkles NaN (quiet and signalling bit patterns), +-inf and -0.0 into a float tensor."""
    flat = t.flatten()
    n = flat.numel()
    picks = torch.randint(0, n, (8,), generator=g)
    if t.dtype == torch.bfloat16:
        bits = torch.tensor([0x7FC0, 0x7F81, 0xFFC1, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x7F7F], dtype=torch.int32)
        bits = bits.to(torch.int16)  # wraps: 0xFFC1 is a negative int16 bit pattern
        flat.view(torch.int16)[picks] = bits
    else:
        vals = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 1e-45, 3.0e38, -1.0, 0.5])
        flat[picks] = vals.to(t.dtype)
    return t


def make_pair(shape, dtype, density, g):
    old = torch.randn(shape, generator=g).to(dtype)
    new = old.clone()
    n = new.numel()
    k = max(1, int(n * density))
    idx = torch.randperm(n, generator=g)[:k]
    new.view(-1)[idx] = (torch.randn(k, generator=g) * 2).to(dtype)
    if dtype.is_floating_point:
        special(new, g)
    return old, new


def write(out):
    g = torch.Generator().manual_seed(SEED)
    base, newt = {}, {}
    specs = [
        ("layers.0.attn.q_proj.weight", (64, 96), torch.bfloat16, 0.01),
        ("layers.0.mlp.up_proj.weight", (128, 64), torch.bfloat16, 0.5),
        ("layers.0.norm.weight", (96,), torch.float32, 0.1),
        ("lm_head.weight", (32, 48), torch.float16, 0.03),
        ("embed.weight", (10, 10), torch.bfloat16, 1.0),
        ("unchanged.weight", (16, 16), torch.bfloat16, 0.0),
    ]
    for name, shape, dtype, density in specs:
        old = torch.randn(shape, generator=g).to(dtype)
        if density == 0.0:
            new = old.clone()
        else:
            old, new = make_pair(shape, dtype, density, g)
        base[name], newt[name] = old, new
    # A tensor whose changes sit > 65535 elements apart: `deltas` must use uint32 gaps for it.
    far_old = torch.zeros(140000, dtype=torch.bfloat16)
    far_new = far_old.clone()
    far_new[[3, 70000, 139999]] = torch.tensor([1.5, -2.0, float("nan")], dtype=torch.bfloat16)
    base["far.weight"], newt["far.weight"] = far_old, far_new
    save_file(base, os.path.join(out, "base.safetensors"))
    save_file(newt, os.path.join(out, "new.safetensors"))

    names = list(base)
    buckets = [names[:3], names[3:]]  # bucket 0 mixes bf16 + f32 (values promoted to F32)
    encodings = ["indices", "deltas", "deltas_zstd"]
    for enc in encodings:
        d = os.path.join(out, enc, "weight_v000001")
        os.makedirs(d, exist_ok=True)
        for f, bucket in enumerate(buckets):
            data = build_file([(n, base[n], newt[n]) for n in bucket], enc, 1)
            with open(os.path.join(d, f"rank0000_flush{f:06d}.safetensors"), "wb") as fh:
                fh.write(data)

    cases, hashes = {}, {}
    for dtype in [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int8, torch.int16,
                  torch.int32, torch.int64, torch.uint8, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2]:
        key = str(dtype).removeprefix("torch.")
        if dtype.is_floating_point:
            t = special(torch.randn(257, generator=g).to(dtype), g) if dtype in (torch.bfloat16, torch.float16,
                        torch.float32, torch.float64) else torch.randn(257, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, (257,), generator=g).to(torch.bool)
        else:
            info = torch.iinfo(dtype)
            t = torch.randint(max(info.min, -2**31), min(info.max, 2**31 - 1), (257,), generator=g).to(dtype)
        try:
            hashes[key] = str(h(t))
        except RuntimeError as e:  # a dtype torch.hash_tensor does not support: no golden for it
            print(f"hash_tensor({key}) unsupported: {e}", file=sys.stderr)
            continue
        cases[key] = t
    save_file(cases, os.path.join(out, "hash_cases.safetensors"), metadata=hashes)
    print("wrote golden files to", out)


def apply_file(path, tensors):
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstd_decompress(data)
    from safetensors.torch import load
    from safetensors import safe_open  # noqa: F401
    t = load(data)
    # Re-read metadata through the reference parser.
    import struct
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8:8 + n])["__metadata__"]
    positions, values = t["__positions__"], t["__values__"]
    got = h(positions) ^ (h(values) << 1)
    assert str(got) == meta["checksum"], f"{path}: checksum {got} != {meta['checksum']}"
    for p in json.loads(meta["params"]):
        raw = positions[p["pos_start"]:p["pos_end"]].clone()  # a uint32 run may start at any byte offset
        if meta["encoding"] == "indices":
            idx = raw.view(torch.int32).to(torch.int64)
        else:
            gaps = (raw.view(torch.uint16) if p["pos_width"] == 2 else raw.view(torch.int32)).to(torch.int64)
            idx = torch.cumsum(gaps + 1, 0) - 1
        vals = values[p["val_start"]:p["val_end"]]
        dst = tensors[p["name"]]
        assert list(dst.shape) == p["shape"], p["name"]
        dst.view(-1)[idx] = vals.to(dst.dtype)
    return len(json.loads(meta["params"]))


def check(d):
    base = load_file(os.path.join(d, "base.safetensors"))
    new = load_file(os.path.join(d, "new.safetensors"))
    files = 0
    for root, _, names in sorted(os.walk(d)):
        for name in sorted(names):
            if name.startswith("rank") and name.endswith(".safetensors"):
                path = os.path.join(root, name)
                with open(path, "rb") as fh:
                    zstd = fh.read(4) == b"\x28\xb5\x2f\xfd"
                if not zstd:
                    load_file(path)  # the reference loader accepts the container as written
                files += 1
    # Apply every encoding's files to its own copy of base and compare bit patterns with new.
    for enc in sorted(os.listdir(d)):
        ed = os.path.join(d, enc)
        if not os.path.isdir(ed):
            continue
        state = {k: v.clone() for k, v in base.items()}
        for root, _, names in sorted(os.walk(ed)):
            for name in sorted(names):
                if name.endswith(".safetensors"):
                    apply_file(os.path.join(root, name), state)
        for k in new:
            a, b = state[k].view(-1), new[k].view(-1)
            same = a.view(int_view(a)) == b.view(int_view(b))
            if not bool(same.all()):
                # torch's cast back from a promoted values dtype canonicalizes NaN payloads (slime's receiver
                # inherits this); every other element must match bit for bit.
                assert a.is_floating_point() and bool((torch.isnan(a) & torch.isnan(b))[~same].all()), \
                    f"{enc}: {k} differs after apply"
                print(f"note {enc}: {k}: {int((~same).sum())} NaN payload(s) canonicalized by torch's cast")
        print(f"check {enc}: ok")
    print(f"checked {files} files in {d}: all load, checksums match torch.hash_tensor, apply is bit-exact")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
