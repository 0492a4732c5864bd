#!/usr/bin/env bash
# CI: the .deb on this Debian 12 host, as a user gets it. Builds it (cpack -G DEB in BUILD_DIR), installs it
# with dpkg, runs the installed `deltasync serve --config /etc/deltasync/ci.toml` (through systemd when it runs,
# as deltasync-serve@ci; else directly), pushes one sync with the installed `deltasync publish`, checks the
# receiver's digests against the trainer's, checks GET /metrics with promtool, builds tests/install_consumer
# against the installed package, then removes the package and checks that nothing of it is left.
# Needs root (dpkg). Usage: scripts/deb-test.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /var/lib/deltasync-ci.XXXXXX)  # not /tmp: the unit has PrivateTmp=yes
serve_pid=""
unit_started=no
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  if [ $unit_started = yes ]; then systemctl stop deltasync-serve@ci 2>/dev/null || true; fi
  rm -f /etc/deltasync/ci.toml
  if dpkg-query -W -f='${Status}' deltasync 2>/dev/null | grep -q "install ok installed"; then dpkg --purge deltasync > /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "deb-test: FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "deb-test: SKIP: needs root for dpkg"; exit 0; }

(cd "$build" && cpack -G DEB > "$work/cpack.log" 2>&1) || fail "cpack: $(tail -20 "$work/cpack.log")"
deb=$(ls -t "$build"/deltasync_*.deb | head -1)
echo "deb-test: built $(basename "$deb") ($(du -h "$deb" | cut -f1)); Depends: $(dpkg-deb -f "$deb" Depends)"
dpkg -i "$deb" > "$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
[ -x /usr/bin/deltasync ] || fail "no /usr/bin/deltasync"
/usr/bin/deltasync --version
[ -f /etc/deltasync/deltasync.toml ] || fail "no /etc/deltasync/deltasync.toml"
[ -f /usr/lib/systemd/system/deltasync-serve@.service ] || fail "no systemd unit"
grep -q '^ExecStart=/usr/bin/deltasync serve --config /etc/deltasync/%i.toml' /usr/lib/systemd/system/deltasync-serve@.service \
  || fail "unit ExecStart: $(grep ExecStart /usr/lib/systemd/system/deltasync-serve@.service)"

# Two checkpoints one step apart, and the instance's config: the shipped file plus delta-dir and base.
/usr/bin/deltasync demo --offline --model tiny --steps 1 --encodings deltas --keep "$work/ck" > /dev/null
mkdir -p "$work/deltas"
chmod 755 "$work"
port=$((20000 + RANDOM % 20000))
sed -e "0,/^listen = .*/s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
    -e "0,/^# delta-dir = .*/s|^# delta-dir = .*|delta-dir = \"$work/deltas\"|" \
    -e "0,/^# base = .*/s|^# base = .*|base = \"$work/ck/base.safetensors\"|" /etc/deltasync/deltasync.toml > /etc/deltasync/ci.toml
if [ -d /run/systemd/system ] && command -v systemctl > /dev/null; then
  systemctl daemon-reload
  systemctl start deltasync-serve@ci || fail "systemctl start: $(journalctl -u deltasync-serve@ci -n 20 --no-pager)"
  unit_started=yes
else
  /usr/bin/deltasync serve --config /etc/deltasync/ci.toml --log-format json 2> "$work/serve.log" &
  serve_pid=$!
fi
url=http://127.0.0.1:$port
for _ in $(seq 1 300); do curl -sf "$url/healthz" > /dev/null && break; sleep 0.1; done
curl -sf "$url/healthz" > /dev/null || fail "the installed serve does not answer: $(cat "$work/serve.log" 2>/dev/null)"

/usr/bin/deltasync publish --from "$work/ck/base.safetensors" --to "$work/ck/new.safetensors" --delta-dir "$work/deltas" \
  --version 1 --base-version 0 --push "$url" > "$work/publish.log" 2>&1 || fail "publish: $(cat "$work/publish.log")"
/usr/bin/deltasync serve --listen 127.0.0.1:0 --port-file "$work/ref.port" --base "$work/ck/new.safetensors" \
  --delta-dir "$work/deltas" --log-level warn 2> "$work/ref.log" &
ref_pid=$!
for _ in $(seq 1 300); do [ -s "$work/ref.port" ] && break; sleep 0.1; done
digests() { curl -sf "$1/checksums" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["tensors"], sort_keys=True))'; }
got=$(digests "$url"); want=$(digests "http://127.0.0.1:$(cat "$work/ref.port")")
kill "$ref_pid"; wait "$ref_pid" 2>/dev/null || true
[ "$got" = "$want" ] || fail "after one sync the installed receiver differs from the trainer's weights"
/usr/bin/deltasync status "$url"
echo "deb-test: the installed serve applied one sync (digests match the trainer's)"
if command -v promtool > /dev/null; then
  curl -sf "$url/metrics" | promtool check metrics || fail "promtool check metrics"
  echo "deb-test: promtool check metrics: clean"
fi

cmake -S "$src/tests/install_consumer" -B "$work/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$work/consumer.log" 2>&1 \
  || fail "consumer configure against /usr: $(tail -20 "$work/consumer.log")"
cmake --build "$work/consumer" >> "$work/consumer.log" 2>&1 || fail "consumer build: $(tail -20 "$work/consumer.log")"
"$work/consumer/consumer" || fail "consumer run"
echo "deb-test: tests/install_consumer built against the installed package"

if [ $unit_started = yes ]; then systemctl stop deltasync-serve@ci; unit_started=no; fi
if [ -n "$serve_pid" ]; then
  kill -TERM "$serve_pid"; rc=0; wait "$serve_pid" || rc=$?; serve_pid=""
  [ $rc = 0 ] || fail "SIGTERM: the installed serve exited $rc"
fi
rm -f /etc/deltasync/ci.toml
dpkg --purge deltasync > "$work/purge.log" 2>&1 || fail "dpkg --purge: $(cat "$work/purge.log")"
[ ! -e /usr/bin/deltasync ] && [ ! -e /usr/lib/systemd/system/deltasync-serve@.service ] && [ ! -e /usr/include/deltasync ] \
  && [ ! -e /etc/deltasync/deltasync.toml ] || fail "files left after dpkg --purge"
echo "deb-test: installed, served one sync, removed: ok"
