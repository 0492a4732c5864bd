#!/usr/bin/env bash
# Installs every build and test dependency of deltasync from Debian 12 packages. Idempotent: only missing
# packages are installed, so `make demo` / `make test` call it every time at no cost.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git python3
  libboost1.81-dev            # Asio, Beast, JSON (1.81: the default 1.74 lacks what we use)
  liburing-dev                # io_uring (static liburing.a)
  libzstd-dev                 # zstd frames (static libzstd.a)
  libxxhash-dev               # xxh3 digests
  libcli11-dev                # command-line parsing and the TOML config files (header-only; find_package(CLI11))
  libsystemd-dev              # sd_notify readiness of `deltasync serve` under systemd (Type=notify)
  dpkg-dev                    # cpack -G DEB: dpkg-shlibdeps computes the package's dependencies
  prometheus                  # CI: promtool check metrics on GET /metrics
  libgtest-dev libgmock-dev   # unit tests
  libbenchmark-dev            # micro-benchmarks
  clang libclang-rt-14-dev    # libFuzzer targets and sanitizers
  curl                        # integration tests push with curl too
  wrk                         # HTTP load on /status and /metrics during the soak (bench/soak.sh)
  nginx-light                 # pull transport: nginx as the sender-side file server (tests/integration/pull_test.sh)
  iproute2                    # scripts/netns-link.sh: ip netns, veth, tc tbf
  python3-dev pybind11-dev libdlpack-dev   # the `deltasync` Python module (src/python, docs/python.md)
  python3-torch python3-numpy python3-pytest  # its tests (tests/python, run by `make test`)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
