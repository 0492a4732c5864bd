#!/usr/bin/env python3
"""Times GET /healthz (each on a new connection) with no other connection open (the baseline), then opens N
keep-alive connections that never send a byte and times it again while they stay open (issue 18: the flood
used to lock /healthz out).

  flood.py PORT [--idle 1000] [--requests 200] [--timeout 5]
Prints one JSON object: {"idle": N, "idle_open_at_end": k, "requests": M, "ok": m, "p50_ms", "p99_ms", "max_ms",
"baseline_p50_ms", "baseline_p99_ms"}.
"""
import argparse
import json
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("--idle", type=int, default=1000)
ap.add_argument("--requests", type=int, default=200)
ap.add_argument("--timeout", type=float, default=5.0)
a = ap.parse_args()

def healthz_ms(n):
    lat, good = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            c = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            c.close()
            good += data.startswith(b"HTTP/1.1 200")
        except OSError:
            pass
        lat.append((time.perf_counter() - t0) * 1000.0)
    lat.sort()
    return lat, good


def pick(lat, q):
    return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)


base, _ = healthz_ms(a.requests)  # the baseline, same run: no idle connection open

idle = []
for _ in range(a.idle):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
    idle.append(s)
time.sleep(0.3)  # let the server accept them all (and shed what it sheds)

lat, ok = healthz_ms(a.requests)

still_open = 0
for s in idle:  # a shed connection reads EOF at once; one still open times out
    s.setblocking(False)
    try:
        still_open += 1 if s.recv(1) is None else 0
    except BlockingIOError:
        still_open += 1
    except OSError:
        pass
    s.close()
print(json.dumps({"idle": a.idle, "idle_open_at_end": still_open, "requests": a.requests, "ok": ok,
                  "p50_ms": pick(lat, 0.50), "p99_ms": pick(lat, 0.99), "max_ms": round(lat[-1], 2),
                  "baseline_p50_ms": pick(base, 0.50), "baseline_p99_ms": pick(base, 0.99)}))
