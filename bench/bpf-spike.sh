#!/usr/bin/env bash
# The BPF spike of bench/README.md ("Shared hypervisor"): new connections per
# second over the lab's bridge with br_netfilter off, interleaved per round:
#   plain      no program, to vm1's own port 9090
#   bystander  the spike's programs attached, to vm1's port 9090
#   vip        the spike's programs attached, to the VIP (DNAT by BPF)
# Needs clang and libbpf-dev (apt-get install clang libbpf-dev bpftool).
#
#   bench/bpf-spike.sh          (ROUNDS=5 SECONDS_PER_RUN=2)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-2}
[ "$(id -u)" -eq 0 ] || { echo "bench/bpf-spike.sh: run as root" >&2; exit 1; }
[ -e /usr/include/bpf/bpf_helpers.h ] || { echo "bench/bpf-spike.sh: needs libbpf-dev" >&2; exit 1; }
./scripts/build.sh >/dev/null
CONNRATE=$ROOT/build/bench/hostlb-connrate
P=hlbs$$
WORK=$(mktemp -d /tmp/hostlb-bpfspike.XXXXXX)
cleanup() { "$ROOT/scripts/lab.sh" down "$P"; rm -rf "$WORK"; }
trap cleanup EXIT
bpftool btf dump file /sys/kernel/btf/vmlinux format c >"$WORK/vmlinux.h"
for part in FWD REV; do
  clang -O2 -g -target bpf -I"$WORK" -D$part -c bench/bpf-spike/vip_dnat.bpf.c -o "$WORK/$part.o"
done
"$ROOT/scripts/lab.sh" up "$P"
"$ROOT/scripts/lab.sh" gateway "$P" c1 203.0.113.10 02:00:00:00:01:11
in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }
in_ns hv sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0
for i in $(seq 1 64); do in_ns c1 ip addr add "198.18.2.$i/15" dev eth0; done
for port in 8080 9090; do ip netns exec "$P-vm1" "$CONNRATE" serve $port & done
disown -a  # ended by lab.sh down with the namespaces
attach() {
  for pair in "c1 FWD" "vm1 REV"; do
    set -- $pair
    in_ns hv tc qdisc add dev "$1" clsact
    in_ns hv tc filter add dev "$1" ingress bpf da obj "$WORK/$2.o" sec tc
  done
}
detach() { for dev in c1 vm1; do in_ns hv tc qdisc del dev $dev clsact 2>/dev/null || true; done; }
rate() {
  in_ns c1 "$CONNRATE" connect "$1" "$2" "$3" 198.18.2.1 64 "$SECS" 2 | sed -E 's/.*rate=([0-9.]+).*/\1/'
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
sleep 0.5
for mode in handshake request; do
  b=(); v=()
  for r in $(seq 1 "$ROUNDS"); do
    detach; p=$(rate $mode 198.18.1.11 9090)
    attach; e=$(rate $mode 198.18.1.11 9090); x=$(rate $mode 203.0.113.10 80)
    b+=("$(awk -v a="$e" -v b="$p" 'BEGIN{printf "%.3f", a/b}')")
    v+=("$(awk -v a="$x" -v b="$p" 'BEGIN{printf "%.3f", a/b}')")
    echo "$mode round $r: plain $p/s, bystander $e/s (${b[-1]}), vip $x/s (${v[-1]}); conntrack entries $(in_ns hv conntrack -C)"
  done
  echo "$mode: median bystander/plain $(printf '%s\n' "${b[@]}" | median), vip/plain $(printf '%s\n' "${v[@]}" | median)"
done
