#!/usr/bin/env python3
"""Checkpoints for the NCCL multi-process test (numpy only): v0 random, each later version changes about 1% of
every tensor's elements. Also prints/compares digests: XXH3-128 of each tensor's raw bytes, as GET /checksums
reports them.

  nccl_ckpt.py make DIR VERSIONS          writes DIR/v0.safetensors ... DIR/v{VERSIONS}.safetensors
  nccl_ckpt.py check URL FILE VERSION     exit 0 when the receiver's /checksums match FILE's tensors at VERSION
"""
import json
import struct
import sys
import urllib.request

import numpy as np

TENSORS = [("embed", "BF16", (4096, 1024)), ("layers.0.w", "BF16", (2048, 2048)), ("layers.0.norm", "F32", (8192,)),
           ("layers.1.w", "BF16", (2048, 4096)), ("head", "F16", (1024, 1000))]
NP = {"BF16": np.uint16, "F16": np.uint16, "F32": np.uint32}


def write(path, arrays):
    header, offset, blobs = {}, 0, []
    for (name, dtype, shape), a in zip(TENSORS, arrays):
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return {k: data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


def make(out, versions):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 1 << 16 if dt != "F32" else 1 << 32, size=int(np.prod(s)), dtype=np.uint64).astype(NP[dt])
              for _, dt, s in TENSORS]
    write(f"{out}/v0.safetensors", arrays)
    for v in range(1, versions + 1):
        for a in arrays:
            idx = rng.choice(a.size, size=max(1, a.size // 100), replace=False)
            a[idx] ^= np.array(1 + rng.integers(0, 255, size=idx.size), dtype=a.dtype)
        write(f"{out}/v{v}.safetensors", arrays)


def check(url, path, version):
    import xxhash
    got = json.loads(urllib.request.urlopen(url + "/checksums", timeout=60).read())
    if got["version"] != version:
        print(f"receiver at version {got['version']}, expected {version}")
        return 1
    for name, b in read(path).items():
        if got["tensors"][name]["xxh3_128"] != xxhash.xxh3_128(b).hexdigest():
            print(f"tensor {name} differs")
            return 1
    print(f"v{version}: byte-identical ({len(got['tensors'])} tensors)")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(check(sys.argv[2], sys.argv[3], int(sys.argv[4])))
