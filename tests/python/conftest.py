"""Shared helpers of the deltasync package tests: random models, a perturbing "trainer step", a minimal
safetensors writer (for `deltasync serve --base`), and `deltasync serve` started on an ephemeral port."""
import json
import os
import struct
import subprocess
import time
import urllib.request

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (python3-torch)")
deltasync = pytest.importorskip("deltasync", reason="the deltasync module is not on PYTHONPATH")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and deltasync.gpu_available()), reason="no CUDA device (or GPU support not built)"))]

ST_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
            torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
            torch.bool: "BOOL"}


def model(seed=0, device="cpu", dtype=torch.bfloat16, shapes=None):
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"embed.weight": (64, 32), "layers.0.q.weight": (32, 32), "layers.0.mlp.weight": (96, 32),
                        "norm.weight": (32,), "lm_head.weight": (64, 32)}
    out = {}
    for name, shape in shapes.items():
        if dtype.is_floating_point:
            t = torch.randn(*shape, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=g).bool()
        else:
            t = torch.randint(0, 100, shape, generator=g).to(dtype)
        out[name] = t.to(device)
    return out


def step(tensors, seed, density=0.02):
    """Changes about `density` of every tensor's elements in place (an RL step's effect on bf16 weights)."""
    g = torch.Generator().manual_seed(seed)
    for t in tensors.values():
        flat = t.view(-1)
        n = max(1, int(flat.numel() * density))
        idx = torch.randperm(flat.numel(), generator=g)[:n].to(t.device)
        if t.dtype == torch.bool:
            flat[idx] = ~flat[idx]
        elif t.dtype.is_floating_point:
            flat[idx] = (flat[idx].float() + torch.randn(n, generator=g).to(t.device)).to(t.dtype)
        else:
            flat[idx] = flat[idx] + 1


def bits(t):
    """A tensor's raw bytes as a CPU uint8 tensor: bit-equality, NaN payloads and -0.0 included."""
    t = t.detach().contiguous().cpu()
    return t.view(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(bits(a[k]), bits(b[k])), "tensor %s differs" % k


def clone(tensors):
    return {k: v.clone() for k, v in tensors.items()}


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        b = bits(t).numpy().tobytes()
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def deltasync_bin():
    b = os.environ.get("DELTASYNC_BIN")
    if not b or not os.path.exists(b):
        pytest.skip("DELTASYNC_BIN does not name the deltasync binary")
    return b


class Serve:
    """`deltasync serve` on an ephemeral port, stopped at the end of the test."""

    def __init__(self, tmp, base, delta_dir, *extra):
        port_file = os.path.join(tmp, "port")
        self.proc = subprocess.Popen([deltasync_bin(), "serve", "--listen", "127.0.0.1:0", "--delta-dir", delta_dir,
                                      "--base", base, "--port-file", port_file, "--log-level", "warn", *extra])
        for _ in range(600):
            if os.path.exists(port_file):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("deltasync serve exited %d" % self.proc.returncode)
            time.sleep(0.05)
        self.url = "http://127.0.0.1:%d" % int(open(port_file).read())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def serve_factory(tmp_path):
    started = []

    def make(base, delta_dir, *extra):
        s = Serve(str(tmp_path), base, delta_dir, *extra)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
