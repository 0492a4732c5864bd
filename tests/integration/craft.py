#!/usr/bin/env python3
"""Crafts safetensors checkpoints and slime-format delta files with the standard library only, for the
service's integration tests (no torch needed).

  craft.py checkpoint OUT NAME:DTYPE:D0xD1:FILL ...   FILL = a byte value repeated, or 'seq' (0,1,2,...)
  craft.py delta OUT --version N --name T --dtype bfloat16 --shape 4x8 --positions 1,5,99 [--bad-checksum]
  craft.py bomb OUT CONTENT_BYTES [DECLARED_BYTES]   a zstd frame of RLE blocks (zeros): a real bomb, or one
                                                     whose header declares another size
  craft.py manifest OUT --version N --bytes B        a slime file whose params list (about B bytes) names only
                                                     tensors no receiver holds
"""
import json
import struct
import sys

SIZES = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1, "I32": 4}
TORCH = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "U8": "uint8", "I32": "int32"}


def safetensors_bytes(tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def checkpoint(out, specs):
    tensors = []
    for spec in specs:
        name, dtype, dims, fill = spec.split(":")
        shape = [int(d) for d in dims.split("x")] if dims else []
        nbytes = numel(shape) * SIZES[dtype]
        data = bytes(i % 251 for i in range(nbytes)) if fill == "seq" else bytes([int(fill)]) * nbytes
        tensors.append((name, dtype, shape, data))
    with open(out, "wb") as f:
        f.write(safetensors_bytes(tensors, {"format": "pt"}))


def hash_bf16(values):
    """torch.hash_tensor of a bf16 tensor: each value widened to float64, bits XOR-reduced."""
    h = 0
    for (bits,) in struct.iter_unpack("<H", values):
        f32 = struct.unpack("<f", struct.pack("<I", bits << 16))[0]
        h ^= struct.unpack("<Q", struct.pack("<d", f32))[0]
    return h


def delta(out, version, name, dtype, shape, positions, bad_checksum):
    pos = b"".join(struct.pack("<I", p) for p in positions)
    vals = b"".join(struct.pack("<H", 0x3F80 + i) for i in range(len(positions)))  # bf16 1.0, 1.0078, ...
    h_pos = 0
    for b in pos:
        h_pos ^= b
    checksum = h_pos ^ (hash_bf16(vals) << 1)
    if bad_checksum:
        checksum ^= 1 << 7
    params = [{"name": name, "dtype": dtype, "shape": shape, "pos_start": 0, "pos_end": len(pos),
               "pos_width": 4, "val_start": 0, "val_end": len(positions)}]
    meta = {"encoding": "indices", "current_version": str(version), "checksum": str(checksum),
            "params": json.dumps(params)}
    with open(out, "wb") as f:
        f.write(safetensors_bytes([("__positions__", "U8", [len(pos)], pos), ("__values__", "BF16", [len(positions)], vals)], meta))


def bomb(out, content, declared):
    """A zstd frame of RLE blocks of 128 KiB of zeros (4 bytes each): `content` bytes, header says `declared`."""
    frame = bytearray(b"\x28\xb5\x2f\xfd\xc0" + bytes([7 << 3]) + struct.pack("<Q", declared))
    left = content
    while True:
        n = min(left, 128 << 10)
        left -= n
        h = (1 if left == 0 else 0) | (1 << 1) | (n << 3)
        frame += struct.pack("<I", h)[:3] + b"\x00"
        if left == 0:
            break
    with open(out, "wb") as f:
        f.write(frame)


def manifest(out, version, nbytes):
    params, size, i = [], 0, 0
    while size < nbytes:
        p = {"name": "no.such.layer.%d.weight" % i, "dtype": "bfloat16", "shape": [4], "pos_start": 0, "pos_end": 0,
             "pos_width": 4, "val_start": 0, "val_end": 0}
        params.append(p)
        size += len(json.dumps(p)) + 2
        i += 1
    meta = {"encoding": "indices", "current_version": str(version), "checksum": "0", "params": json.dumps(params)}
    with open(out, "wb") as f:
        f.write(safetensors_bytes([("__positions__", "U8", [0], b""), ("__values__", "BF16", [0], b"")], meta))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "checkpoint":
        checkpoint(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "delta":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("out")
        ap.add_argument("--version", type=int, required=True)
        ap.add_argument("--name", required=True)
        ap.add_argument("--dtype", default="bfloat16")
        ap.add_argument("--shape", required=True)
        ap.add_argument("--positions", required=True)
        ap.add_argument("--bad-checksum", action="store_true")
        a = ap.parse_args(sys.argv[2:])
        delta(a.out, a.version, a.name, a.dtype, [int(d) for d in a.shape.split("x")],
              [int(p) for p in a.positions.split(",")], a.bad_checksum)
    elif len(sys.argv) >= 4 and sys.argv[1] == "bomb":
        content = int(sys.argv[3])
        bomb(sys.argv[2], content, int(sys.argv[4]) if len(sys.argv) > 4 else content)
    elif len(sys.argv) >= 3 and sys.argv[1] == "manifest":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("out")
        ap.add_argument("--version", type=int, required=True)
        ap.add_argument("--bytes", type=int, required=True)
        a = ap.parse_args(sys.argv[2:])
        manifest(a.out, a.version, a.bytes)
    else:
        sys.exit(__doc__)
