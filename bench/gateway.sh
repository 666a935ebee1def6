#!/usr/bin/env bash
# Gateway benchmarks (issue targets in brackets):
#   1. new connections per second through a gateway namespace, three
#      variants interleaved B G R in each round: hostlb's gateway as the BPF
#      program (B, the default datapath) and as the nft netdev table (G),
#      each re-addressing frames and forwarding them out of the fabric port,
#      and the same namespace forwarding by plain IP routing (R); medians of
#      same-round ratios   [B/R >= 1]
#   1b. packets per second of the forward path alone: a SYN flood from
#      spoofed sources (2 sender threads) through the same gateway, counted
#      where it arrives (vm1's port) and dropped there, B G R interleaved
#   2. hostlb-gwbench: 1,000 services of 8 backends at the default row
#      count, on each datapath: load time, kernel memory, one backend
#      removed/added, the row audit's read
#      [change <= 20 ms, rows written = rows whose owner changed]
#   3. hostlb-selection: imbalance and rows moved for N = 2..500 (model)
#
#   bench/gateway.sh            (ROUNDS=5 SECONDS_PER_RUN=3 SERVICES=1000)
#   FORWARDING_ONLY=1 bench/gateway.sh     parts 1 and 1b only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-3}
SERVICES=${SERVICES:-1000}
[ "$(id -u)" -eq 0 ] || { echo "bench/gateway.sh: run as root" >&2; exit 1; }
./scripts/build.sh >/dev/null
CONNRATE=$ROOT/build/bench/hostlb-connrate
SYNFLOOD=$ROOT/build/bench/hostlb-synflood
GWBENCH=$ROOT/build/bench/hostlb-gwbench
P=hlbg$$
WORK=$(mktemp -d /tmp/hostlb-gwbench.XXXXXX)
cleanup() { "$ROOT/scripts/lab.sh" down "$P"; rm -rf "$WORK"; }
trap cleanup EXIT
"$ROOT/scripts/lab.sh" up "$P"
in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }

# client cl1 -> gateway gw1 (cli0 | fab0 on the lab's bridge) -> vm1, which
# holds the VIP itself and answers through the gateway's routing.
G=$P-gw1 C=$P-cl1 HV=$P-hv VIP=203.0.113.10
ip netns add "$G"; ip netns add "$C"
ip link add cli0 netns "$G" type veth peer name eth0 netns "$C"
ip link add fab0 netns "$G" address 02:00:00:00:0f:01 type veth peer name gw1 netns "$HV"
ip -n "$HV" link set gw1 master br0 up
for l in lo cli0 fab0; do ip -n "$G" link set $l up; done
ip -n "$G" addr add 198.18.2.254/24 dev cli0
ip -n "$G" addr add 198.18.1.254/24 dev fab0
ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1
ip -n "$C" link set lo up; ip -n "$C" link set eth0 up
for i in $(seq 1 64); do ip -n "$C" addr add "198.18.2.$i/24" dev eth0; done
ip -n "$C" route add default via 198.18.2.254
in_ns vm1 ip addr add "$VIP/32" dev lo
in_ns vm1 ip route replace 198.18.2.0/24 via 198.18.1.254
ip netns exec "$P-vm1" "$CONNRATE" serve 8080 &
# The flood's spoofed sources (198.19.128.0/17) are dropped at vm1's port
# ingress, after the interface counted them, so nothing answers them and
# only the forward path is loaded.
FLOOD_NET=198.19.128.0
in_ns vm1 nft -f - <<NFT
table netdev flooddrop {
  chain in { type filter hook ingress device eth0 priority 0; policy accept;
    ip saddr $FLOOD_NET/17 drop
  }
}
NFT
disown  # ended by lab.sh down with the namespace
cat >"$WORK/one.json" <<DOC
{"version":1,"backends":[{"name":"vm1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
 "services":[{"vip":"$VIP","port":8080,"protocol":"tcp","backends":[{"name":"vm1","port":8080}]}]}
DOC

variant() {  # B: hostlb's BPF gateway; G: its nft table; R: plain routing to vm1
  ip netns exec "$G" "$GWBENCH" remove
  case $1 in
    B|G)
      ip -n "$G" route del "$VIP/32" 2>/dev/null || true
      ip netns exec "$G" "$GWBENCH" load "$WORK/one.json" "$([ "$1" = B ] && echo bpf || echo nft)" ;;
    R) ip -n "$G" route replace "$VIP/32" via 198.18.1.11 ;;
  esac
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
rate() {
  ip netns exec "$C" "$CONNRATE" connect request "$VIP" 8080 198.18.2.1 64 "$SECS" 2 |
    sed -E 's/.*rate=([0-9.]+).*/\1/'
}

echo "hostlb gateway benchmark"
echo "1. connections/s through the gateway namespace, ${ROUNDS} rounds of ${SECS}s (request mode, 2 threads)"
bratios=() gratios=()
for r in $(seq 1 "$ROUNDS"); do
  variant B; b=$(rate)
  variant G; g=$(rate)
  variant R; rt=$(rate)
  bratios+=("$(ratio "$b" "$rt")") gratios+=("$(ratio "$g" "$rt")")
  echo "  round $r: bpf $b/s, nft $g/s, routing $rt/s; bpf/routing ${bratios[-1]}, nft/routing ${gratios[-1]}"
done
echo "  median bpf/routing: $(median "${bratios[@]}")   (target >= 1)"
echo "  median nft/routing: $(median "${gratios[@]}")"

rx_vm1() { in_ns vm1 cat /sys/class/net/eth0/statistics/rx_packets; }
flood() {  # prints "delivered/s sent/s"
  local before after out
  before=$(rx_vm1)
  out=$(ip netns exec "$C" "$SYNFLOOD" "$VIP" 8080 "$FLOOD_NET" 17 "$SECS" 2)
  after=$(rx_vm1)
  awk -v b="$before" -v a="$after" -v out="$out" 'BEGIN {
    match(out, /seconds=[0-9.]+/); s = substr(out, RSTART + 8, RLENGTH - 8)
    match(out, /rate=[0-9.]+/); r = substr(out, RSTART + 5, RLENGTH - 5)
    printf "%.0f %.0f\n", (a - b) / s, r }'
}
echo "1b. forward path alone: spoofed SYNs/s delivered to vm1, ${ROUNDS} rounds of ${SECS}s (2 senders)"
bratios=() gratios=()
for r in $(seq 1 "$ROUNDS"); do
  variant B; read -r b bs < <(flood)
  variant G; read -r g gs < <(flood)
  variant R; read -r rt rs < <(flood)
  bratios+=("$(ratio "$b" "$rt")") gratios+=("$(ratio "$g" "$rt")")
  echo "  round $r: bpf $b/s (of $bs sent), nft $g/s (of $gs sent), routing $rt/s (of $rs sent); bpf/routing ${bratios[-1]}, nft/routing ${gratios[-1]}"
done
echo "  median bpf/routing (packets): $(median "${bratios[@]}")   (target >= 1)"
echo "  median nft/routing (packets): $(median "${gratios[@]}")"
variant R >/dev/null
[ "${FORWARDING_ONLY:-0}" = 1 ] && exit 0

echo "2. the table at scale (in the gateway namespace)"
for engine in bpf nft; do
  ip netns exec "$G" "$GWBENCH" "$SERVICES" 4093 20 "$engine" | sed 's/^/  /'
done
echo "3. rendezvous tables (model), 20 random pools per cell"
"$ROOT/build/bench/hostlb-selection" 20 | sed 's/^/  /'
