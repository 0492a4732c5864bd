#!/usr/bin/env bash
# `cmake --install` into a scratch prefix, then what a user of the installed tree does: build the consumer
# project (tests/install_consumer) with find_package(deltasync) and run it; compile and link the same
# program through pkg-config (deltasync.pc); check the installed binary, headers, config file and systemd
# unit (its ExecStart names the installed binary, and systemd-analyze accepts it when present).
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
prefix=$work/prefix
# A sanitizer build's libraries need the sanitizer runtime at link time, which the exported targets do not
# carry (the flags are the build's, not usage requirements): nothing a user installs. Skip visibly.
if grep -Eq '^DELTASYNC_SANITIZE:STRING=.+' "$build/CMakeCache.txt" || grep -q '^DELTASYNC_BUILD_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "SKIP: $build is a sanitizer/fuzz build; the install test runs on the release build"
  exit 77
fi

# The C++ side only (the component without a name): the Python module's rules install into the interpreter's
# own site-packages, an absolute path outside any prefix (docs/python.md).
cmake --install "$build" --prefix "$prefix" --component Unspecified > "$work/install.log" || fail "cmake --install: $(tail -5 "$work/install.log")"
"$prefix/bin/deltasync" --version | head -1 | grep -q '^deltasync ' || fail "installed binary"
[ -f "$prefix/include/deltasync/sync/sender.h" ] && [ -f "$prefix/include/deltasync/base/features.h" ] || fail "public headers"
! ls "$prefix"/include/deltasync/*/*_internal.h > /dev/null 2>&1 || fail "internal headers must not be installed"
[ -f "$prefix/etc/deltasync/deltasync.toml" ] || fail "config file"
unit=$prefix/lib/systemd/system/deltasync-serve@.service
[ -f "$unit" ] || fail "systemd unit"
grep -q "^ExecStart=$prefix/bin/deltasync serve --config $prefix/etc/deltasync/%i.toml" "$unit" || fail "unit ExecStart: $(grep ExecStart "$unit")"
if command -v systemd-analyze > /dev/null; then
  # verify needs the binary at the ExecStart path: it is.
  systemd-analyze verify "$unit" 2> "$work/verify.txt" || true
  ! grep -Ei 'deltasync-serve@.*(error|invalid|unknown)' "$work/verify.txt" || fail "systemd-analyze: $(cat "$work/verify.txt")"
fi
pc=$(find "$prefix" -name deltasync.pc)
[ -n "$pc" ] || fail "pkg-config file"
echo "ok: cmake --install (binary, headers, libraries, config, unit, pkg-config)"

cmake -S "$src/tests/install_consumer" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$work/configure.log" 2>&1 || fail "consumer configure: $(tail -20 "$work/configure.log")"
cmake --build "$work/consumer" > "$work/build.log" 2>&1 || fail "consumer build: $(tail -20 "$work/build.log")"
"$work/consumer/consumer" || fail "consumer run"
echo "ok: find_package(deltasync) -> deltasync::deltasync"

export PKG_CONFIG_PATH=$(dirname "$pc")
c++ -o "$work/consumer_pc" "$src/tests/install_consumer/main.cc" $(pkg-config --cflags --libs deltasync) \
  > "$work/pc.log" 2>&1 || fail "pkg-config build: $(tail -20 "$work/pc.log")"
"$work/consumer_pc" > /dev/null || fail "pkg-config consumer run"
echo "ok: pkg-config --cflags --libs deltasync"
