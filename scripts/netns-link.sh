#!/usr/bin/env bash
# Link emulation for `deltasync bench` and its tests: two network namespaces joined by a veth pair, each end's
# egress shaped with tc tbf (optionally behind a netem delay), so traffic between them stays on this machine
# but crosses a link of a chosen rate.
#
#   scripts/netns-link.sh up RATE [DELAY]   RATE: 100MBps, 300MBps, 1GBps (bytes per second), or any tc rate
#                                           such as 2400mbit; DELAY: one-way netem delay, e.g. 5ms
#   scripts/netns-link.sh down
#   scripts/netns-link.sh status
#
# Namespaces: ${DS_NETNS_PREFIX:-ds}-snd (10.77.0.1, the sender: run `deltasync serve-files` there) and
# ${DS_NETNS_PREFIX:-ds}-rcv (10.77.0.2, the receiver: run `deltasync bench` or `serve` there). Example:
#   scripts/netns-link.sh up 300MBps
#   ip netns exec ds-rcv deltasync bench --models llama3.2-1b --paths http --sender-netns ds-snd --sender-addr 10.77.0.1
#   scripts/netns-link.sh down
# Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); exits non-zero with the reason when namespaces are not permitted.
set -euo pipefail
prefix=${DS_NETNS_PREFIX:-ds}
snd=$prefix-snd
rcv=$prefix-rcv
vs=$prefix-vs
vr=$prefix-vr

tc_rate() {  # 300MBps -> 300mbps (tc: megabytes/s), 1GBps -> 1gbps; anything else passes through
  case $1 in
    *[0-9]MBps) echo "${1%MBps}mbps" ;;
    *[0-9]GBps) echo "${1%GBps}gbps" ;;
    *[0-9]KBps) echo "${1%KBps}kbps" ;;
    *) echo "$1" ;;
  esac
}

down() {
  ip netns del "$snd" 2> /dev/null || true
  ip netns del "$rcv" 2> /dev/null || true
}

shape() {  # netns dev rate delay
  local ns=$1 dev=$2 rate=$3 delay=$4
  # burst: at least 4 MB (a 64 KiB GSO packet must fit, and high rates need a deep bucket at HZ granularity).
  if [ -n "$delay" ]; then
    tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000
    tc -n "$ns" qdisc add dev "$dev" parent 1:1 handle 10: tbf rate "$rate" burst 4mb latency 100ms
  else
    tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst 4mb latency 100ms
  fi
}

up() {
  local rate delay
  rate=$(tc_rate "$1")
  delay=${2:-}
  down
  trap 'down' ERR
  ip netns add "$snd"
  ip netns add "$rcv"
  ip link add "$vs" type veth peer name "$vr"
  ip link set "$vs" netns "$snd"
  ip link set "$vr" netns "$rcv"
  ip -n "$snd" addr add 10.77.0.1/24 dev "$vs"
  ip -n "$rcv" addr add 10.77.0.2/24 dev "$vr"
  for ns in "$snd" "$rcv"; do ip -n "$ns" link set lo up; done
  ip -n "$snd" link set "$vs" up
  ip -n "$rcv" link set "$vr" up
  shape "$snd" "$vs" "$rate" "$delay"
  shape "$rcv" "$vr" "$rate" "$delay"
  trap - ERR
  echo "netns-link: $snd (10.77.0.1) <-> $rcv (10.77.0.2), tbf rate $rate${delay:+, netem delay $delay} each way"
}

case ${1:-} in
  up) [ $# -ge 2 ] || { echo "usage: $0 up RATE [DELAY]" >&2; exit 2; }; up "$2" "${3:-}" ;;
  down) down; echo "netns-link: removed $snd and $rcv" ;;
  status) for ns in "$snd" "$rcv"; do echo "== $ns"; ip -n "$ns" -br addr 2>&1 || true; tc -n "$ns" qdisc 2>&1 || true; done ;;
  *) echo "usage: $0 up RATE [DELAY] | down | status" >&2; exit 2 ;;
esac
