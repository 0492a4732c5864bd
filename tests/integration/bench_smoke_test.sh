#!/usr/bin/env bash
# `deltasync bench --smoke` (tiny model, every encoding (compact included), local disk and HTTP pull on loopback, plus a "shared"
# path through a second directory): it must finish with every receiver bit-identical, write JSON with one
# measured sample per path x encoding (positive times, wire bytes and link throughput) and an SVG chart.
# With NETNS=1 (integration.bench_netns) the file server runs behind scripts/netns-link.sh's shaped link
# (100 MB/s); skipped (exit 77) where network namespaces are not permitted.
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
netns_args=()
cleanup() {
  [ "${NETNS:-0}" = 1 ] && DS_NETNS_PREFIX=$prefix "$here/../../scripts/netns-link.sh" down > /dev/null 2>&1 || true
  rm -rf "$work"
}
prefix=dst$$
trap cleanup EXIT
run=("$bin")
if [ "${NETNS:-0}" = 1 ]; then
  if ! DS_NETNS_PREFIX=$prefix "$here/../../scripts/netns-link.sh" up 100MBps > "$work/netns.log" 2>&1; then
    echo "SKIP: network namespaces are not permitted here: $(tail -1 "$work/netns.log")"
    exit 77
  fi
  run=(ip netns exec "$prefix-rcv" "$bin")
  netns_args=(--sender-netns "$prefix-snd" --sender-addr 10.77.0.1 --link-bytes 33554432)
fi
mkdir -p "$work/shared"
"${run[@]}" bench --smoke --shared-dir "$work/shared" --json "$work/bench.json" --svg "$work/bench.svg" "${netns_args[@]}" \
  > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/out.txt" "$work/err.txt"; echo "FAIL: bench exited non-zero"; exit 1; }
grep -q "every receiver is bit-identical" "$work/out.txt" || { cat "$work/out.txt"; echo "FAIL: not bit-identical"; exit 1; }
grep -q '^bench: \[12/12\]' "$work/err.txt" || { cat "$work/err.txt"; echo "FAIL: no progress lines on stderr"; exit 1; }
grep -q '^recommended for http' "$work/out.txt" || { cat "$work/out.txt"; echo "FAIL: no recommendation"; exit 1; }
python3 - "$work/bench.json" "${NETNS:-0}" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
cells = {(s["path"], s["encoding"]) for s in doc["samples"]}
want = {(p, e) for p in ("local", "shared", "http") for e in ("indices", "deltas", "deltas_zstd", "compact")}
assert cells == want, "cells: %s" % sorted(cells)
for s in doc["samples"]:
    assert s["sync_s"] > 0 and s["wire_bytes"] > 0 and s["link_bytes_per_s"] > 0 and 0 < s["density"] < 0.2, s
assert sum(1 for r in doc["summary"] if r["recommended"]) == 3, "one recommendation per path"
if sys.argv[2] == "1":
    http = [s["link_bytes_per_s"] for s in doc["samples"] if s["path"] == "http"][0]
    assert 50e6 < http < 130e6, "shaped link measured %.0f MB/s, expected ~100" % (http / 1e6)
PY
grep -q '<polyline' "$work/bench.svg" || { echo "FAIL: the SVG has no curves"; exit 1; }
echo "ok: bench smoke ($(grep -c . "$work/err.txt") progress lines; JSON and SVG written)"
