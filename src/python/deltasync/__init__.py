"""deltasync for Python trainers and inference processes.

``deltasync.Sender`` is the library Sender (the trainer side) over your tensors; ``deltasync.Receiver`` runs
the receiver service (the HTTP API of ``deltasync serve``) inside your process and applies every sync in
place into tensors you own; ``deltasync.inspect`` reads a delta file's manifest. Tensors cross into C++
zero-copy through DLPack (torch CPU/CUDA tensors in every supported dtype, numpy arrays); they must be
contiguous. Nothing here imports torch: any object with ``__dlpack__`` / ``__dlpack_device__`` works.
See docs/python.md.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import weakref

from . import _core

__all__ = ["Sender", "Receiver", "inspect", "Error", "InvalidArgument", "NotFound", "InvalidFile",
           "VersionConflict", "LimitExceeded", "Unsupported", "Busy", "Forbidden", "ReceiverFailed", "IOError",
           "gpu_available"]


# ---- errors ----

class Error(Exception):
    """A deltasync error. ``message`` is what the CLI prints (the text and the code in brackets), ``code`` the
    code's stable name (e.g. "delta_checksum_mismatch"), ``value`` its number, ``http_status`` the status the
    receiver service answers for it."""

    def __init__(self, message, code="internal", value=9, http_status=500):
        super().__init__(message)
        self.message = message
        self.code = code
        self.value = value
        self.http_status = http_status


class InvalidArgument(Error, ValueError):
    """Bad arguments or a malformed request (invalid_argument, bad_request)."""


class NotFound(Error, FileNotFoundError):
    """A file or directory does not exist (not_found)."""


class InvalidFile(Error):
    """A delta file (or checkpoint) broke a format rule: st_*, zstd_*, delta_* codes (HTTP 422)."""


class VersionConflict(Error):
    """A sync's base_version is not the receiver's version (version_conflict, HTTP 409)."""


class LimitExceeded(Error):
    """A limit was reached (limit_exceeded, body_too_large, zstd_too_large; HTTP 413)."""


class Unsupported(Error):
    """Not available in this build or on this device (unsupported)."""


class Busy(Error):
    """Another sync is in progress (busy, HTTP 503)."""


class Forbidden(Error, PermissionError):
    """A path escaping the delta dir, a pull URL not allowed, a bad token (forbidden_*, unauthorized)."""


class ReceiverFailed(Error):
    """Sender.finish(): a receiver did not answer 200. ``report`` holds the sync's report with every
    receiver's outcome; the Sender's snapshot did not advance, so the next sync carries the changes."""
    report = None


class IOError(Error, OSError):  # noqa: A001 - deltasync.IOError, distinct from the builtin
    """An I/O error (io_error, no_space, timeout, a system error)."""


_CLASSES = {
    "invalid_argument": InvalidArgument, "bad_request": InvalidArgument, "not_found": NotFound,
    "version_conflict": VersionConflict, "limit_exceeded": LimitExceeded, "body_too_large": LimitExceeded,
    "zstd_too_large": LimitExceeded, "unsupported": Unsupported, "busy": Busy, "forbidden_path": Forbidden,
    "forbidden_url": Forbidden, "unauthorized": Forbidden, "receiver_failed": ReceiverFailed,
    "io_error": IOError, "no_space": IOError, "timeout": IOError, "upstream_error": IOError,
}


def _error_class(code, value):
    cls = _CLASSES.get(code)
    if cls is None and (code.startswith(("st_", "zstd_", "delta_")) or 100 <= value < 400):
        cls = InvalidFile
    return cls or Error


def _error_factory(message, code, value, http_status):
    return _error_class(code, value)(message, code, value, http_status)


_core._set_error_factory(_error_factory)
_ERRC = _core._errc_names()


def _error_from_answer(status, body):
    """The exception for a refused in-process sync: the receiver's JSON answer carries message and code."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {"error": body.decode(errors="replace") if isinstance(body, bytes) else str(body)}
    message = doc.get("error") or doc.get("message") or "HTTP %d" % status
    code = doc.get("code") or "internal"
    return _error_class(code, _ERRC.get(code, 9))(message, code, _ERRC.get(code, 9), status)


def gpu_available():
    """Whether this build and process can use a GPU (CUDA tensors, the Sender's GPU path)."""
    return _core.gpu_available()


def set_log_level(level):
    """The C++ log level: "debug", "info", "warn" or "error" (default "info")."""
    _core.set_log_level(level)


# ---- tensors ----

def _exportable(t):
    """What can be handed to DLPack: a torch tensor that requires grad is detached (same memory)."""
    if getattr(t, "requires_grad", False):
        t = t.detach()
    return t


def _producer_stream(t):
    """For a torch CUDA tensor, the raw cudaStream_t torch writes it on (its current stream on that device):
    the import then synchronises that stream instead of having torch record and wait on an event (DLPack
    ``stream=-1``). None for anything else (the generic, fully general DLPack stream hand-off)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(t, torch.Tensor) or not t.is_cuda:
        return None
    return _raw_stream(t.get_device())


def _raw_stream(index):
    import torch  # only reached for torch tensors, so torch is already imported
    global _raw_stream
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    _raw_stream = raw if raw is not None else (lambda i: torch.cuda.current_stream(i).cuda_stream)
    return _raw_stream(index)


def _named(tensors):
    if hasattr(tensors, "items"):
        return list(tensors.items())
    return list(tensors)


# ---- Sender ----

class Sender:
    """The trainer side: per sync ``begin(version)``, ``add(name, tensor)`` for each tensor, ``finish()``.

    ``push``: receiver URLs ("http://host:port"); each gets one ``POST /sync`` per sync. Publishing is the
    commit point (docs/fleet.md): once a version's files and marker are durable the snapshot advances, and a
    receiver that missed it catches up from the kept chain at the next push (over NCCL every receiver must
    answer 200). Without receivers the files are only written (and kept). A restarted trainer seeds the
    checkpoint it last published and calls ``resume()``.
    ``encoding``: "indices" | "deltas" | "deltas_zstd" | "compact" (native only); ``format``: "native" (version checks, per-tensor
    digests) | "slime" (the slime #1806 wire format). Device tensors take the GPU path (diff and pack on the
    GPU); host tensors the CPU path. ``add`` reads the tensor before it returns (the trainer may then modify
    it). The GIL is released while C++ works.
    """

    def __init__(self, delta_dir, push=(), encoding="deltas", format="native", buffer_bytes=512 << 20,
                 keep_files=False, token=None, transport="disk", *, mode="delta", pre_push_hook="", rank=0,
                 pull_base_url="", push_timeout_s=0.0, snapshot_version=0, anchor_every=0):
        if isinstance(push, str):
            push = [push]
        os.makedirs(delta_dir, exist_ok=True)
        self._s = _core.Sender(str(delta_dir), list(push), encoding, format, int(buffer_bytes), bool(keep_files),
                               token or "", transport, mode, pre_push_hook or "", int(rank), pull_base_url or "",
                               int(push_timeout_s * 1000))
        if snapshot_version:
            self._s.snapshot_version = int(snapshot_version)
        if anchor_every:
            self._s.set_anchor_every(int(anchor_every))

    def seed(self, name, tensor):
        """Records what the receivers hold before the first sync (a copy is kept, on the tensor's device)."""
        t = _exportable(tensor)
        self._s.seed(name, t, _producer_stream(t), False)

    def seed_all(self, tensors):
        """seed() for every (name, tensor) of a dict or an iterable of pairs (e.g. model.named_parameters())."""
        for name, t in _named(tensors):
            self.seed(name, t)

    def begin(self, version):
        self._s.begin(int(version))

    def add(self, name, tensor):
        """Adds the tensor's current value to the sync begun (read before add returns)."""
        if getattr(tensor, "requires_grad", False):
            tensor = tensor.detach()
        self._s.add(name, tensor, _producer_stream(tensor), False)

    def finish(self):
        """Writes the last bucket, pushes, waits for every receiver. Returns the report (a dict: version,
        base_version, changed_elements, dense_bytes, wire_bytes, files, timings_s, receivers,
        snapshot_advanced). Raises ReceiverFailed (with ``.report``) when a receiver refused."""
        try:
            return self._s.finish()
        except Error as e:
            e.report = self._s.last_report()
            raise

    def sync(self, version, tensors):
        """begin(version), add() for every (name, tensor), finish(); aborts the sync if an add fails.

        Torch's current stream is synchronised once per CUDA device here rather than once per tensor, so no
        other thread may write these tensors while sync() runs."""
        pairs = _named(tensors)
        self.begin(version)
        try:
            synced = {}  # raw stream -> True, once per device
            for name, t in pairs:
                t = _exportable(t)
                stream = _producer_stream(t)
                if stream is not None and stream not in synced:
                    _core._synchronize_stream(stream)
                    synced[stream] = True
                self._s.add(name, t, stream, stream is not None)
        except BaseException:
            self._s.abort()
            raise
        return self.finish()

    def abort(self):
        self._s.abort()

    def write_anchor(self):
        """Writes a full-model anchor of what receivers hold now ({delta_dir}/anchor_vN/; docs/fleet.md):
        receivers below N catch up from it and the chain below N is pruned. ``anchor_every=K`` does this at
        every K-th version. Returns the anchor's dir."""
        return self._s.write_anchor()

    def resume(self, version=None):
        """After seeding: continue the delta dir's chain. The snapshot version becomes ``version`` or, when None,
        the newest version published in the delta dir (0 when none), and is returned. Raises VersionConflict
        when a seeded tensor does not match the digests that version's files carry (the seeded checkpoint is
        not that version)."""
        return self._s.resume(None if version is None else int(version))

    @property
    def snapshot_version(self):
        return self._s.snapshot_version

    def last_report(self):
        return self._s.last_report()

    def close(self):
        """Drops a sync begun and releases the snapshot and threads. Idempotent."""
        self._s.close()

    @property
    def closed(self):
        return self._s.closed()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- Receiver ----

_live_receivers = weakref.WeakSet()


@atexit.register
def _close_receivers():
    for r in list(_live_receivers):
        try:
            r.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to report to
            pass


def _host_copy(t):
    """A host copy of a tensor in checkpoint coordinates, kept by a load_weights receiver."""
    if hasattr(t, "detach"):  # torch
        return t.detach().to("cpu", copy=True).contiguous()
    import numpy as np
    return np.array(t, copy=True, order="C")


def _split_listen(listen):
    host, sep, port = str(listen).rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument("listen must be HOST:PORT, got %r [invalid_argument]" % (listen,), "invalid_argument", 1, 400)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Receiver:
    """The receiver service inside this process, applying every sync in place into ``tensors``.

    ``tensors``: a dict name -> tensor you own (e.g. ``dict(model.named_parameters())``), host or CUDA (one
    device), contiguous. The receiver serves the HTTP API of ``deltasync serve`` on ``listen`` from a
    background thread (``port`` is the bound port) and applies each sync with the same validation,
    transactional rollback and digest verification: a refused sync leaves your tensors bit-identical.

    Hooks (called on the service thread, before the sync's HTTP answer is sent):
      * ``before_apply(version)``: before the sync touches anything (pause generation here); raising refuses
        the sync (HTTP 500 "cancelled", weights untouched);
      * ``after_commit(version, stats)``: after a commit (resume generation); ``stats`` is the route's answer;
      * ``after_refuse(version, answer)``: after a refused or rolled-back sync (resume generation);
      * ``load_weights(pairs)``: for engines whose parameters are fused or sharded. ``tensors`` are then the
        weights in checkpoint coordinates; the receiver keeps its own host copy of them, applies syncs there,
        and after each commit calls ``load_weights([(name, tensor), ...])`` with the changed tensors, the way
        an engine's loader takes them (copy out of them; they are overwritten by the next sync).
    Exceptions raised by after_commit / load_weights cannot undo the commit: they are logged and listed by
    ``status()["hook_errors"]``.
    """

    def __init__(self, tensors, delta_dir, listen="127.0.0.1:0", token=None, version=0, *, before_apply=None,
                 after_commit=None, after_refuse=None, load_weights=None, pull_allow=(), workers=0,
                 read_workers=8, chunk_bytes=4 << 20, io_backend="auto", max_body_bytes=1 << 20,
                 max_file_bytes=8 << 30):
        named = _named(tensors)
        self._delta_dir_path = os.path.realpath(str(delta_dir))
        self._load_weights = load_weights
        self._before_user, self._after_user, self._refuse_user = before_apply, after_commit, after_refuse
        self._host = None
        if load_weights is not None:
            self._host = {name: _host_copy(t) for name, t in named}
            named = list(self._host.items())
        host, port = _split_listen(listen)
        o = _core.ReceiverOptions()
        o.host, o.port, o.token, o.delta_dir, o.version = host, port, token or "", str(delta_dir), int(version)
        o.workers, o.read_workers, o.chunk_bytes, o.io_backend = int(workers), int(read_workers), int(chunk_bytes), io_backend
        o.max_body_bytes, o.max_file_bytes, o.pull_allow = int(max_body_bytes), int(max_file_bytes), list(pull_allow)
        wrap = self._hook_refs()
        self._r = _core.Receiver([(n, _exportable(t)) for n, t in named], o, *wrap)
        self._lock = threading.Lock()
        _live_receivers.add(self)

    def _hook_refs(self):
        # The C++ side holds these callables; they reach back through a weak reference so that the receiver
        # can be collected while its service still holds them.
        me = weakref.ref(self)
        need_before = self._before_user is not None or self._load_weights is not None
        need_after = self._after_user is not None or self._load_weights is not None

        def before(version):
            r = me()
            if r is not None:
                r._before(version)

        def after(version, answer):
            r = me()
            if r is not None:
                r._after(version, answer)

        def refuse(version, answer):
            r = me()
            if r is not None and r._refuse_user is not None:
                r._refuse_user(version, json.loads(answer))

        return (before if need_before else None, after if need_after else None,
                refuse if self._refuse_user is not None else None)

    def _before(self, version):
        if self._load_weights is not None:
            self._r.clear_touched()
        if self._before_user is not None:
            self._before_user(version)

    def _after(self, version, answer):
        stats = json.loads(answer)
        if self._load_weights is not None:
            names = self._r.touched()
            if names:
                self._load_weights([(n, self._host[n]) for n in names])
        if self._after_user is not None:
            self._after_user(version, stats)

    @property
    def port(self):
        return self._r.port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def version(self):
        return self._r.version

    @property
    def tensors(self):
        """The host copy a load_weights receiver keeps (checkpoint coordinates); None otherwise."""
        return self._host

    def _get(self, path):
        status, body = self._r.call("GET", path, "")
        if status != 200:
            raise _error_from_answer(status, body)
        return json.loads(body)

    def status(self):
        """GET /status, as a dict, plus "hook_errors"."""
        s = self._get("/status")
        s["hook_errors"] = self._r.hook_errors()
        return s

    def checksums(self):
        """GET /checksums: {"version", "tensors": {name: {"dtype", "shape", "xxh3_128"}}}."""
        return self._get("/checksums")

    def apply(self, dir, files, version=None, base_version=None, transport="disk", **extra):
        """Applies one sync without HTTP, exactly as ``POST /sync`` would (hooks included): ``dir`` is the
        version directory (relative to the delta dir, or absolute inside it), ``files`` its file names.
        ``version`` defaults to the one in the dir's name (weight_vNNNNNN), ``base_version`` to the current
        version. Returns the route's answer (version, files, changed_elements, bytes_read, timings_ms);
        raises the matching Error (VersionConflict, InvalidFile, NotFound, Forbidden, ...) when refused."""
        dir = str(dir)
        if os.path.isabs(dir):
            dir = os.path.relpath(dir, self._delta_dir_path)
        if version is None:
            tail = os.path.basename(dir.rstrip("/"))
            if not tail.startswith("weight_v") or not tail[8:].isdigit():
                raise InvalidArgument("apply(): give version= (the dir %r is not weight_vNNNNNN) [invalid_argument]"
                                      % dir, "invalid_argument", 1, 400)
            version = int(tail[8:])
        req = {"version": int(version), "base_version": int(self.version if base_version is None else base_version),
               "transport": transport, "dir": dir, "files": [os.path.basename(str(f)) for f in files]}
        req.update(extra)
        status, body = self._r.call("POST", "/sync", json.dumps(req))
        if status != 200:
            raise _error_from_answer(status, body)
        return json.loads(body)

    def close(self):
        """Stops serving (a sync in flight finishes first) and lets go of the tensors. Idempotent."""
        self._r.close()
        _live_receivers.discard(self)

    @property
    def closed(self):
        return self._r.closed()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- inspect ----

def inspect(path, max_bytes=16 << 30):
    """The manifest of a delta file as a dict (format, encoding, version, base_version, values_dtype,
    checksum, params with name/dtype/shape/changed/ranges and, native, xxh3_128, metadata), after validating
    the whole file; a checkpoint file gives its tensors. A directory gives {"files": [...]} of every
    .safetensors file under it. Raises InvalidFile naming the broken rule."""
    path = str(path)
    if os.path.isdir(path):
        files = []
        for root, _, names in sorted(os.walk(path)):
            for n in sorted(names):
                if n.endswith(".safetensors"):
                    files.append(inspect(os.path.join(root, n), max_bytes))
        return {"files": files}
    return json.loads(_core.inspect_file(path, int(max_bytes)))
