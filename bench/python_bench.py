"""Benchmarks of the Python package against its C++ baselines, in the same run (H200; docs/python.md).

1. Sender: one Sender over CUDA bf16 tensors (16 x 64 Mi elements = 2 GiB), ~1% of elements changed before
   every sync; syncs driven from Python (begin, add per tensor, finish) alternate with syncs driven from C++
   alone on the same tensors (Sender._bench_native: same Sender, tensors imported beforehand). Reports the
   median finish() and whole-sync times of each and their ratio, and the per-add() overhead measured on
   4096 tiny tensors (Python add loop vs the C++ loop).
2. Receiver: the same chain of sync files applied by `deltasync serve --store cuda` and by
   deltasync.Receiver into caller-owned CUDA tensors, both over HTTP POST /sync, alternating per version.
Prints one JSON document.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import torch

import deltasync

N_TENSORS = int(os.environ.get("BENCH_TENSORS", 16))
NUMEL = int(os.environ.get("BENCH_NUMEL", 64 << 20))
SYNCS = int(os.environ.get("BENCH_SYNCS", 5))
DENSITY = 0.01


def perturb(tensors, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    for t in tensors.values():
        n = int(t.numel() * DENSITY)
        idx = torch.randint(0, t.numel(), (n,), device="cuda", generator=g)
        t.view(-1)[idx] += 1.0
    torch.cuda.synchronize()


def post(url, body):
    req = urllib.request.Request(url + "/sync", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        ans = json.loads(r.read())
    return time.perf_counter() - t0, ans


def bench_sender(work):
    torch.manual_seed(0)
    tensors = {"layer%02d.weight" % i: torch.randn(NUMEL, device="cuda").to(torch.bfloat16) for i in range(N_TENSORS)}
    names = list(tensors.items())
    d = os.path.join(work, "sender")
    py_finish, py_total, cx_finish, cx_total, py_add, cx_add = [], [], [], [], [], []
    with deltasync.Sender(d, encoding="deltas") as s:
        s.seed_all(tensors)
        v = 0
        for rep in range(SYNCS + 1):  # the first pair warms up
            v += 1
            perturb(tensors, v)
            t0 = time.perf_counter()
            s.begin(v)
            for n, t in names:
                s.add(n, t)
            t1 = time.perf_counter()
            s.finish()
            t2 = time.perf_counter()
            shutil.rmtree(os.path.join(d, "weight_v%06d" % v))
            v += 1
            perturb(tensors, v)
            r = s._s._bench_native(v, names)
            shutil.rmtree(os.path.join(d, "weight_v%06d" % v))
            if rep == 0:
                continue
            py_add.append(t1 - t0), py_finish.append(t2 - t1), py_total.append(t2 - t0)
            cx_add.append(r["add_s"]), cx_finish.append(r["finish_s"]), cx_total.append(r["total_s"])
    # Per-add overhead: many tiny tensors, so the binding's cost (DLPack import, GIL, argument conversion)
    # dominates; the same adds from C++ are the baseline.
    tiny = {"t%05d" % i: torch.zeros(16, device="cuda", dtype=torch.bfloat16) for i in range(4096)}
    tiny_items = list(tiny.items())
    per_py, per_cx, per_generic, per_sync = [], [], [], []
    with deltasync.Sender(os.path.join(work, "tiny")) as s:
        s.seed_all(tiny)
        v = 0
        for rep in range(7):
            v += 1
            t0 = time.perf_counter()
            s.begin(v)
            for n, t in tiny_items:
                s.add(n, t)
            t1 = time.perf_counter()
            s.finish()
            r = s._s._bench_native(v + 1, tiny_items)
            v += 1
            # The generic DLPack hand-off (torch records an event on its stream, ours waits on it).
            v += 1
            t2 = time.perf_counter()
            s.begin(v)
            for n, t in tiny_items:
                s._s.add(n, t, None, False)
            t3 = time.perf_counter()
            s.finish()
            # Sender.sync(): torch's stream synchronised once per sync, not per tensor; its whole time
            # (begin + adds + finish) against the C++ loop's whole time.
            v += 1
            t4 = time.perf_counter()
            s.sync(v, tiny_items)
            t5 = time.perf_counter()
            per_sync.append(((t5 - t4) - r["total_s"]) / len(tiny_items))
            per_generic.append((t3 - t2) / len(tiny_items))
            per_py.append((t1 - t0) / len(tiny_items))
            per_cx.append(r["add_s"] / len(tiny_items))
    med = statistics.median
    return {
        "tensors": N_TENSORS, "numel": NUMEL, "bytes": N_TENSORS * NUMEL * 2, "syncs": SYNCS,
        "python_finish_s": med(py_finish), "cxx_finish_s": med(cx_finish), "finish_ratio": med(py_finish) / med(cx_finish),
        "python_total_s": med(py_total), "cxx_total_s": med(cx_total), "total_ratio": med(py_total) / med(cx_total),
        "python_add_s": med(py_add), "cxx_add_s": med(cx_add),
        "python_finish_all_s": py_finish, "cxx_finish_all_s": cx_finish,
        "tiny_add_python_us": med(per_py) * 1e6, "tiny_add_cxx_us": med(per_cx) * 1e6,
        "add_overhead_us": (med(per_py) - med(per_cx)) * 1e6,
        "tiny_add_generic_stream_us": med(per_generic) * 1e6,
        "add_overhead_generic_stream_us": (med(per_generic) - med(per_cx)) * 1e6,
        "sync_overhead_per_tensor_us": med(per_sync) * 1e6,
        "add_overhead_all_us": [(p - c) * 1e6 for p, c in zip(per_py, per_cx)],
    }


def bench_receiver(work, deltasync_bin):
    from safetensors.torch import save_file
    torch.manual_seed(1)
    trainer = {"layer%02d.weight" % i: torch.randn(NUMEL, device="cuda").to(torch.bfloat16) for i in range(N_TENSORS)}
    base = os.path.join(work, "base.safetensors")
    save_file({k: v.cpu() for k, v in trainer.items()}, base)
    d = os.path.join(work, "rx")
    os.makedirs(d)
    syncs = []
    with deltasync.Sender(d, encoding="deltas") as s:  # no receivers: files are written and kept
        s.seed_all(trainer)
        for v in range(1, SYNCS + 2):
            perturb(trainer, 100 + v)
            rep = s.sync(v, trainer)
            syncs.append({"version": v, "base_version": v - 1, "transport": "disk", "dir": "weight_v%06d" % v,
                          "files": rep["files"]})
    port_file = os.path.join(work, "port")
    serve = subprocess.Popen([deltasync_bin, "serve", "--listen", "127.0.0.1:0", "--delta-dir", d, "--base", base,
                              "--store", "cuda", "--port-file", port_file, "--log-level", "warn"])
    try:
        for _ in range(1200):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        serve_url = "http://127.0.0.1:%d" % int(open(port_file).read())
        torch.manual_seed(1)
        rollout = {"layer%02d.weight" % i: torch.randn(NUMEL, device="cuda").to(torch.bfloat16) for i in range(N_TENSORS)}
        sv_wall, sv_total, rx_wall, rx_total = [], [], [], []
        with deltasync.Receiver(rollout, d) as rx:
            for i, body in enumerate(syncs):
                w1, a1 = post(serve_url, body)
                w2, a2 = post(rx.url, body)
                if i == 0:
                    continue  # warm-up
                sv_wall.append(w1), sv_total.append(a1["timings_ms"]["total"])
                rx_wall.append(w2), rx_total.append(a2["timings_ms"]["total"])
            torch.cuda.synchronize()
            equal = all(torch.equal(rollout[k].view(torch.int16), trainer[k].view(torch.int16)) for k in trainer)
            same_checksums = json.loads(urllib.request.urlopen(serve_url + "/checksums").read()) == rx.checksums()
    finally:
        serve.terminate()
        serve.wait()
    med = statistics.median
    return {"serve_wall_s": med(sv_wall), "receiver_wall_s": med(rx_wall), "wall_ratio": med(rx_wall) / med(sv_wall),
            "serve_total_ms": med(sv_total), "receiver_total_ms": med(rx_total),
            "total_ratio": med(rx_total) / med(sv_total), "serve_all_s": sv_wall, "receiver_all_s": rx_wall,
            "bit_equal": equal, "checksums_equal_serve": same_checksums}


def main():
    work = tempfile.mkdtemp(prefix="ds-pybench-", dir=os.environ.get("BENCH_DIR"))
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    try:
        out["sender"] = bench_sender(work)
        out["receiver"] = bench_receiver(work, sys.argv[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
