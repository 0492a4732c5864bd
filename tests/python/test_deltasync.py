"""The deltasync package end to end: Sender -> files -> `deltasync serve` and -> deltasync.Receiver (every
encoding and format, host and CUDA tensors), refusals leaving the caller's tensors bit-identical, hooks,
load_weights with fused q/k/v, lifetimes, inspect, errors."""
import gc
import json
import os
import threading
import urllib.request

import pytest

from conftest import DEVICES, assert_bit_equal, bits, clone, deltasync, model, step, torch, write_safetensors

ENCODINGS = ["indices", "deltas", "deltas_zstd"]
FORMATS = ["native", "slime"]


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def files_only_sync(tmp_path, trainer, version, enc="deltas", fmt="native", buffer_bytes=512 << 20, seed_from=None):
    """Writes one sync's files (no receivers: the files are kept) and returns (dir name, files)."""
    d = str(tmp_path / "deltas")
    with deltasync.Sender(d, encoding=enc, format=fmt, buffer_bytes=buffer_bytes) as s:
        s.seed_all(seed_from)
        s._s.snapshot_version = version - 1
        rep = s.sync(version, trainer)
    return "weight_v%06d" % version, rep["files"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("enc", ENCODINGS)
def test_sender_to_receiver_and_serve(tmp_path, serve_factory, device, enc, fmt):
    trainer = model(1, device)
    base = str(tmp_path / "base.safetensors")
    write_safetensors(base, trainer)
    delta_dir = str(tmp_path / "deltas")
    os.makedirs(delta_dir)
    serve = serve_factory(base, delta_dir)
    rollout = clone(trainer)
    with deltasync.Receiver(rollout, delta_dir) as rx, \
            deltasync.Sender(delta_dir, push=[serve.url, rx.url], encoding=enc, format=fmt) as s:
        s.seed_all(trainer)
        for v in range(1, 4):
            step(trainer, v)
            s.begin(v)
            for name, t in trainer.items():
                s.add(name, t)
            rep = s.finish()
            assert rep["version"] == v and rep["snapshot_advanced"]
            assert all(r["ok"] for r in rep["receivers"]), rep["receivers"]
            assert rep["changed_elements"] > 0
            assert_bit_equal(rollout, trainer)  # applied in place into the caller's tensors
            assert rx.version == v
            assert serve.get("/checksums") == rx.checksums()
        assert rx.status()["version"] == 3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int32,
                                   torch.int64, torch.uint8, torch.int8, torch.int16, torch.bool])
def test_every_dtype(tmp_path, dtype):
    if dtype == torch.bool and int(torch.__version__.split(".")[0]) < 2:
        pytest.skip("torch %s cannot export bool tensors through DLPack" % torch.__version__)
    trainer = model(2, dtype=dtype)
    rollout = clone(trainer)
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(rollout, d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        step(trainer, 7)
        s.sync(1, trainer)
        assert_bit_equal(rollout, trainer)


def test_special_values_arrive_intact(tmp_path):
    trainer = {"w": torch.zeros(1000, dtype=torch.float32)}
    rollout = clone(trainer)
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(rollout, d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        trainer["w"][:4] = torch.tensor([float("nan"), float("inf"), -0.0, -float("inf")])
        s.sync(1, trainer)
        assert_bit_equal(rollout, trainer)


def test_numpy_arrays(tmp_path):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    trainer = {"a": rng.standard_normal((50, 20)).astype(np.float32), "b": rng.integers(0, 9, 300).astype(np.int64)}
    rollout = {k: v.copy() for k, v in trainer.items()}
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(rollout, d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        trainer["a"][3, :5] += 1
        trainer["b"][::7] += 2
        s.sync(1, trainer)
        for k in trainer:
            assert rollout[k].tobytes() == trainer[k].tobytes()


def test_non_contiguous_is_refused(tmp_path):
    t = torch.zeros(8, 8)
    with deltasync.Sender(str(tmp_path / "d")) as s:
        with pytest.raises(deltasync.InvalidArgument, match="not contiguous"):
            s.seed("w", t.t())
        s.seed("w", t.t().contiguous())  # the fix the message names
    with pytest.raises(deltasync.InvalidArgument, match="contiguous"):
        deltasync.Receiver({"w": t[:, ::2]}, str(tmp_path))
    with pytest.raises(deltasync.InvalidArgument, match="DLPack"):
        deltasync.Receiver({"w": [1, 2, 3]}, str(tmp_path))


def test_params_that_require_grad(tmp_path):
    nn = torch.nn
    trainer, engine = nn.Linear(16, 8), nn.Linear(16, 8)
    engine.load_state_dict(trainer.state_dict())
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(dict(engine.named_parameters()), d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer.named_parameters())
        with torch.no_grad():
            trainer.weight[0, 0] += 1
        s.sync(1, trainer.named_parameters())
        assert_bit_equal(dict(engine.named_parameters()), dict(trainer.named_parameters()))


@pytest.mark.parametrize("device", DEVICES)
def test_refusals_leave_tensors_bit_identical(tmp_path, device):
    base = model(3, device)
    trainer = clone(base)
    step(trainer, 11)
    # Small buckets: several files, so a bad last file comes after good ones were applied (rolled back).
    dirname, files = files_only_sync(tmp_path, trainer, 1, buffer_bytes=1, seed_from=base)
    assert len(files) > 2
    delta_dir = str(tmp_path / "deltas")
    rollout = clone(base)
    before = {k: bits(v).clone() for k, v in rollout.items()}

    def unchanged():
        for k in rollout:
            assert torch.equal(bits(rollout[k]), before[k]), k

    with deltasync.Receiver(rollout, delta_dir) as rx:
        with pytest.raises(deltasync.VersionConflict) as e:
            rx.apply(dirname, files, base_version=5)
        assert e.value.code == "version_conflict" and e.value.http_status == 409 and "[version_conflict]" in str(e.value)
        unchanged()
        with pytest.raises(deltasync.NotFound):
            rx.apply(dirname, files + ["rank0000_flush999999.safetensors"])
        unchanged()
        with pytest.raises(deltasync.Forbidden):
            rx.apply("../" + os.path.basename(str(tmp_path)), files, version=1)
        unchanged()
        last = os.path.join(delta_dir, dirname, files[-1])
        blob = bytearray(open(last, "rb").read())
        blob[-3] ^= 0x40
        open(last, "wb").write(bytes(blob))
        with pytest.raises(deltasync.InvalidFile) as e:
            rx.apply(dirname, files)
        assert e.value.http_status == 422
        unchanged()
        assert rx.version == 0
        with pytest.raises(deltasync.InvalidFile):
            deltasync.inspect(last)
        # The good files alone still apply (the sync names what it ships).
        rx.apply(dirname, files[:-1])
        assert rx.version == 1


def test_shape_and_unknown_tensor_refused(tmp_path):
    base = model(4)
    trainer = clone(base)
    step(trainer, 5)
    dirname, files = files_only_sync(tmp_path, trainer, 1, seed_from=base)
    wrong = clone(base)
    wrong["norm.weight"] = torch.zeros(33, dtype=torch.bfloat16)
    before = {k: bits(v).clone() for k, v in wrong.items()}
    with deltasync.Receiver(wrong, str(tmp_path / "deltas")) as rx:
        with pytest.raises(deltasync.InvalidFile, match="norm.weight"):
            rx.apply(dirname, files)
    for k in wrong:
        assert torch.equal(bits(wrong[k]), before[k])
    missing = clone(base)
    del missing["embed.weight"]
    with deltasync.Receiver(missing, str(tmp_path / "deltas")) as rx:
        with pytest.raises(deltasync.InvalidFile) as e:
            rx.apply(dirname, files)
        assert e.value.code == "delta_unknown_tensor"


def test_hooks_and_refused_push(tmp_path):
    trainer = model(5)
    rollout = clone(trainer)
    d = str(tmp_path / "deltas")
    calls = []
    veto = {"on": False}

    def before(v):
        calls.append(("before", v))
        if veto["on"]:
            raise RuntimeError("engine busy")

    def after(v, stats):
        calls.append(("after", v, stats["changed_elements"] > 0))
        # The engine sees the new weights when after_commit runs.
        assert_bit_equal(rollout, trainer)

    def refused(v, answer):
        calls.append(("refused", v, answer.get("code")))

    with deltasync.Receiver(rollout, d, before_apply=before, after_commit=after, after_refuse=refused) as rx, \
            deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        step(trainer, 1)
        s.sync(1, trainer)
        assert calls == [("before", 1), ("after", 1, True)]
        snapshot = {k: bits(v).clone() for k, v in rollout.items()}
        veto["on"] = True
        step(trainer, 2)
        with pytest.raises(deltasync.ReceiverFailed) as e:
            s.sync(2, trainer)
        # Published all the same (docs/fleet.md): the receiver catches up at the next push.
        assert e.value.report["snapshot_advanced"] and "engine busy" in e.value.report["receivers"][0]["body"]
        assert calls[2:] == [("before", 2), ("refused", 2, "cancelled")]
        for k in rollout:
            assert torch.equal(bits(rollout[k]), snapshot[k])
        assert s.snapshot_version == 2 and rx.version == 1
        veto["on"] = False
        step(trainer, 3)
        s.sync(3, trainer)  # base 2: the receiver replays the kept v2 first, then applies v3
        assert_bit_equal(rollout, trainer)
        assert rx.version == 3


def test_hook_errors_after_commit_are_reported(tmp_path):
    trainer = model(6)
    rollout = clone(trainer)
    d = str(tmp_path / "deltas")

    def after(v, stats):
        raise ValueError("boom")

    with deltasync.Receiver(rollout, d, after_commit=after) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        step(trainer, 1)
        s.sync(1, trainer)  # committed: the hook cannot undo it
        assert_bit_equal(rollout, trainer)
        assert any("boom" in e for e in rx.status()["hook_errors"])


def test_load_weights_fused_qkv(tmp_path):
    """An engine whose attention has one fused qkv weight; checkpoint coordinates have q, k, v."""
    g = torch.Generator().manual_seed(9)
    ckpt = {"attn.q.weight": torch.randn(16, 8, generator=g).bfloat16(),
            "attn.k.weight": torch.randn(4, 8, generator=g).bfloat16(),
            "attn.v.weight": torch.randn(4, 8, generator=g).bfloat16(),
            "mlp.weight": torch.randn(32, 8, generator=g).bfloat16()}
    engine = {"attn.qkv.weight": torch.cat([ckpt["attn.q.weight"], ckpt["attn.k.weight"], ckpt["attn.v.weight"]]),
              "mlp.weight": ckpt["mlp.weight"].clone()}
    rows = {"attn.q.weight": (0, 16), "attn.k.weight": (16, 20), "attn.v.weight": (20, 24)}
    loaded = []

    def load_weights(pairs):
        for name, t in pairs:
            loaded.append(name)
            if name in rows:
                a, b = rows[name]
                engine["attn.qkv.weight"][a:b].copy_(t)
            else:
                engine[name].copy_(t)

    trainer = clone(ckpt)
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(ckpt, d, load_weights=load_weights) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        for v in (1, 2):
            loaded.clear()
            trainer["attn.k.weight"][v, :] += 1
            trainer["mlp.weight"][::5, v] -= 1
            s.sync(v, trainer)
            assert sorted(loaded) == ["attn.k.weight", "mlp.weight"]  # only the changed tensors
            fused = torch.cat([trainer["attn.q.weight"], trainer["attn.k.weight"], trainer["attn.v.weight"]])
            assert torch.equal(bits(engine["attn.qkv.weight"]), bits(fused))
            assert torch.equal(bits(engine["mlp.weight"]), bits(trainer["mlp.weight"]))
            assert_bit_equal(rx.tensors, trainer)


def test_lifetimes(tmp_path):
    trainer = model(7)
    d = str(tmp_path / "deltas")
    rollout = clone(trainer)
    rx = deltasync.Receiver(rollout, d)
    want = rx.checksums()
    del rollout  # the caller drops its tensors while attached: the receiver keeps their memory alive
    gc.collect()
    with deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        step(trainer, 1)
        s.sync(1, trainer)
    got = rx.checksums()
    assert got["version"] == 1 and got["tensors"].keys() == want["tensors"].keys()
    assert got != want
    rx.close()
    rx.close()  # closing twice is fine
    assert rx.closed
    with pytest.raises(deltasync.Error, match="closed"):
        rx.status()
    s = deltasync.Sender(d)
    s.close()
    s.close()
    with pytest.raises(deltasync.InvalidArgument, match="closed"):
        s.begin(1)
    # A receiver that is never closed is collected (and closed at exit) without hanging.
    rx2 = deltasync.Receiver(clone(trainer), d)
    del rx2
    gc.collect()


def test_sender_errors(tmp_path):
    with deltasync.Sender(str(tmp_path / "d")) as s:
        with pytest.raises(deltasync.InvalidArgument, match="no sync begun|begin"):
            s.add("w", torch.zeros(3))
        s.seed("w", torch.zeros(3))
        s.begin(1)
        with pytest.raises(deltasync.InvalidArgument):
            s.add("w", torch.zeros(4))  # shape differs from the snapshot
        s.abort()
    with pytest.raises(deltasync.InvalidArgument, match="encoding"):
        deltasync.Sender(str(tmp_path / "d"), encoding="gzip")
    with pytest.raises(deltasync.InvalidArgument, match="HOST:PORT"):
        deltasync.Receiver({}, str(tmp_path), listen="nope")


def test_resume_and_anchor(tmp_path):
    """A restarted trainer continues the delta dir's chain (and is refused with the wrong checkpoint) and
    writes a full-model anchor."""
    d = str(tmp_path / "deltas")
    base = model(3)
    v1 = clone(base)
    step(v1, 4)
    v2 = clone(v1)
    step(v2, 5)
    with deltasync.Sender(d) as s:
        s.seed_all(base)
        s.sync(1, v1)
    with deltasync.Sender(d) as s:  # restarted: seeded with what it published last
        s.seed_all(v1)
        assert s.resume() == 1
        assert s.snapshot_version == 1
        rep = s.sync(2, v2)
        assert rep["base_version"] == 1
        assert s.write_anchor() == os.path.join(d, "anchor_v000002")
    with deltasync.Sender(d) as s:
        s.seed_all(base)  # not version 2
        with pytest.raises(deltasync.VersionConflict, match="is not its state at version 2"):
            s.resume()
    with open(os.path.join(d, "anchor_v000002", "published.json")) as f:
        assert json.load(f)["anchor"] is True


def test_token_and_gil_released(tmp_path):
    trainer = model(8, shapes={"w": (512, 512)})
    rollout = clone(trainer)
    d = str(tmp_path / "deltas")
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    with deltasync.Receiver(rollout, d, token="s3cret") as rx:
        with deltasync.Sender(d, push=[rx.url]) as bad:
            bad.seed_all(trainer)
            with pytest.raises(deltasync.ReceiverFailed) as e:
                bad.sync(1, trainer)
            assert e.value.report["receivers"][0]["http_status"] == 401
        with deltasync.Sender(d, push=[rx.url], token="s3cret", encoding="deltas_zstd") as s:
            s.seed_all(trainer)
            step(trainer, 3, density=0.3)
            th = threading.Thread(target=ticker)
            th.start()
            s.sync(2, trainer)  # version 1 was published by the refused sender: never rewritten (docs/fleet.md)
            stop.set()
            th.join()
            assert_bit_equal(rollout, trainer)
    assert len(ticks) > 0  # another Python thread ran during the sync


def test_inspect(tmp_path):
    base = model(10)
    trainer = clone(base)
    step(trainer, 1)
    dirname, files = files_only_sync(tmp_path, trainer, 4, enc="indices", seed_from=base)
    m = deltasync.inspect(tmp_path / "deltas" / dirname / files[0])
    assert m["kind"] == "delta" and m["format"] == "native" and m["encoding"] == "indices"
    assert m["version"] == 4 and m["base_version"] == 3
    assert {p["name"] for p in m["params"]} == set(base)
    assert all(len(p["xxh3_128"]) == 32 for p in m["params"])
    assert m["changed_elements"] == sum(p["changed"] for p in m["params"])
    all_files = deltasync.inspect(tmp_path / "deltas")
    assert len(all_files["files"]) == len(files)
    ck = str(tmp_path / "ck.safetensors")
    write_safetensors(ck, base)
    assert deltasync.inspect(ck)["tensors"]["norm.weight"] == {"dtype": "BF16", "shape": [32]}
    with pytest.raises(deltasync.NotFound):
        deltasync.inspect(tmp_path / "nope.safetensors")


def test_sglang_route_in_process(tmp_path):
    base = model(12)
    trainer = clone(base)
    step(trainer, 2)
    dirname, files = files_only_sync(tmp_path, trainer, 1, fmt="slime", seed_from=base)
    rollout = clone(base)
    commits = []
    with deltasync.Receiver(rollout, str(tmp_path / "deltas"), after_commit=lambda v, s: commits.append(v)) as rx:
        status, body = post(rx.url, "/update_weights_from_disk",
                            {"model_path": str(tmp_path / "deltas" / dirname), "load_format": "delta",
                             "weight_version": "1", "files": files})
        assert status == 200 and body["success"], body
        assert commits == [1]
        assert_bit_equal(rollout, trainer)


@pytest.mark.parametrize("device", DEVICES[1:])
def test_cuda_import_orders_after_pending_work(tmp_path, device):
    """A tensor whose last write is still queued on torch's stream when it is handed over: the Sender (fast
    path: torch's current stream synchronised) and the Receiver (generic path: __dlpack__(stream=ours)) both
    see the written values, not the old ones."""
    trainer = {"w": torch.zeros(1 << 24, device="cuda", dtype=torch.bfloat16)}
    rollout = {"w": torch.zeros(1 << 24, device="cuda", dtype=torch.bfloat16)}
    torch.cuda.synchronize()
    d = str(tmp_path / "deltas")
    torch.cuda._sleep(200_000_000)  # keeps torch's stream busy for a while
    rollout["w"].fill_(2.0)  # queued behind the sleep when the Receiver imports the tensor
    with deltasync.Receiver(rollout, d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed("w", torch.full((1 << 24,), 2.0, device="cuda", dtype=torch.bfloat16))
        torch.cuda._sleep(200_000_000)
        trainer["w"].fill_(3.0)  # queued behind the sleep when add() reads it
        s.sync(1, trainer)
        torch.cuda.synchronize()
        assert_bit_equal(rollout, trainer)
        assert float(rollout["w"][0]) == 3.0


@pytest.mark.parametrize("device", DEVICES[1:])
def test_cuda_add_orders_after_pending_work(tmp_path, device):
    """add() on its own (no sync(): torch's stream is synchronised per tensor) sees a write still queued on
    torch's stream, for every tensor of the sync, including ones on the same stream queued after the first
    add returned."""
    n = 1 << 22
    trainer = {"a": torch.zeros(n, device="cuda", dtype=torch.bfloat16),
               "b": torch.zeros(n, device="cuda", dtype=torch.bfloat16)}
    rollout = {k: v.clone() for k, v in trainer.items()}
    torch.cuda.synchronize()
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(rollout, d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer)
        s.begin(1)
        torch.cuda._sleep(200_000_000)
        trainer["a"].fill_(1.5)
        s.add("a", trainer["a"])
        torch.cuda._sleep(200_000_000)
        trainer["b"].fill_(-2.0)
        s.add("b", trainer["b"])
        s.finish()
        torch.cuda.synchronize()
        assert_bit_equal(rollout, trainer)
        assert float(rollout["a"][0]) == 1.5 and float(rollout["b"][0]) == -2.0
