#!/usr/bin/env python3
"""Raw read of files, the fallback of bench/receiver_bench.sh where fio is missing: 4 MiB reads, --depth in
flight (threads doing os.preadv, which releases the GIL), O_DIRECT with --direct (into page-aligned mmap
buffers; the tail past the last whole 4 KiB block read buffered). Prints the milliseconds of the whole read.

Usage: python3 bench/raw_read.py [--direct] [--depth 16] FILE...
"""
import argparse
import concurrent.futures
import mmap
import os
import threading
import time

BLOCK = 4 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--direct", action="store_true")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    local = threading.local()

    def read(job):
        path, off, n = job
        if not hasattr(local, "buf"):
            local.buf = mmap.mmap(-1, BLOCK)
            local.fds = {}
        key = (path, a.direct and n % 4096 == 0)
        if key not in local.fds:
            local.fds[key] = os.open(path, os.O_RDONLY | (os.O_DIRECT if key[1] else 0))
        got = os.preadv(local.fds[key], [memoryview(local.buf)[:n]], off)
        if got != n:
            raise RuntimeError(f"{path}: short read at {off}")

    jobs = []
    for f in a.files:
        size = os.stat(f).st_size
        for off in range(0, size, BLOCK):
            jobs.append((f, off, min(BLOCK, size - off)))
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.depth) as pool:
        list(pool.map(read, jobs))
    print(f"{(time.perf_counter() - t0) * 1e3:.3f}")


if __name__ == "__main__":
    main()
