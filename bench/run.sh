#!/usr/bin/env bash
# Datapath benchmark: new TCP connections per second from a client namespace,
# four variants measured side by side in each round (A B C D, interleaved):
#   a  plain bridging to the backend IP, br_netfilter on, no hostlb
#   b  hostlb with 1 service, to the VIP
#   c  hostlb with 10,000 services loaded, to the VIP
#   d  an iptables-style nft chain of 10,000 single rules, match last
# and prints the medians of same-round ratios, the time hostlbd takes to
# apply a 10,000-service document from scratch, and its peak RSS.
#
#   bench/run.sh                 (ROUNDS=5 SECONDS_PER_RUN=2 by default)
#
# All traffic stays in namespaces this script creates (prefix hlbb<pid>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-2}
SERVICES=${SERVICES:-10000}
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }
./scripts/build.sh >/dev/null
HOSTLBD=$ROOT/build/hostagent/hostlbd
CONNRATE=$ROOT/build/bench/hostlb-connrate

# shellcheck source=bench/connrate-lab.sh
source "$ROOT/bench/connrate-lab.sh" hlbb$$

"$ROOT/bench/gen-doc.sh" 1 >"$WORK/one.json"
"$ROOT/bench/gen-doc.sh" "$SERVICES" >"$WORK/many.json"
awk -v n="$((SERVICES - 1))" -v mac="$VM1_MAC" -v vip="$VIP" 'BEGIN {
  print "table ip benchlinear {"
  print " chain pre { type nat hook prerouting priority dstnat; policy accept;"
  for (i = 0; i < n; i++)
    printf "  ether daddr %s ip daddr 203.0.113.%d tcp dport %d dnat to 198.18.1.11:8080\n", mac, i % 250 + 1, 1000 + int(i / 250)
  printf "  ether daddr %s ip daddr %s tcp dport 80 dnat to 198.18.1.11:8080\n", mac, vip
  print " }"
  print "}"
}' >"$WORK/linear.nft"

hostlbd_apply() {  # CONFIG: run hostlbd until it has applied, then stop it (datapath stays)
  local log=$WORK/hostlbd.log
  # Not through in_ns: $! must be hostlbd itself (ip netns exec execs it).
  ip netns exec "$P-hv" "$HOSTLBD" --config "$1" --state-dir "$WORK/state" --socket "$WORK/s.sock" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do
    grep -q "^.* applied $1" "$log" && break
    kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.05
  done
  APPLY_MS=$(grep -oE 'host entries in [0-9]+ ms' "$log" | grep -oE '[0-9]+' | tail -1)
  HELPER_KB=$(grep -oE 'nft helper peak RSS [0-9]+ kB' "$log" | grep -oE '[0-9]+' | tail -1)
  PEAK_KB=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid
}
no_hostlb() {
  in_ns hv "$HOSTLBD" --cleanup --state-dir "$WORK/state" >/dev/null 2>&1
  in_ns hv nft delete table ip benchlinear 2>/dev/null || true
}
setup_variant() {
  case $1 in
    a) no_hostlb ;;
    b) in_ns hv nft delete table ip benchlinear 2>/dev/null || true; hostlbd_apply "$WORK/one.json" ;;
    c) in_ns hv nft delete table ip benchlinear 2>/dev/null || true; hostlbd_apply "$WORK/many.json" ;;
    d) no_hostlb
       # The recipe from DESIGN.md, by hand: route, neighbour, forwarding.
       in_ns hv ip route replace 198.18.1.11/32 dev br0
       in_ns hv ip neigh replace 198.18.1.11 lladdr "$VM1_MAC" dev br0 nud permanent
       in_ns hv sysctl -qw net.ipv4.conf.br0.forwarding=1
       in_ns hv nft -f "$WORK/linear.nft" ;;
  esac
}
measure() {  # MODE VARIANT -> prints rate
  local target=$VIP:80
  [ "$2" = a ] && target=198.18.1.11:8080
  local out
  out=$(in_ns c1 "$CONNRATE" connect "$1" "${target%:*}" "${target#*:}" 198.18.2.1 64 "$SECS" 2)
  local failures=${out#*failures=}; failures=${failures%% *}
  [ "$failures" -eq 0 ] || echo "  warning: $1 variant $2 had $failures failed connections" >&2
  local rate=${out##*rate=}
  echo "$rate"
}

syn_retrans() { in_ns c1 nstat -az TcpExtTCPSynRetrans | awk '/TcpExtTCPSynRetrans/ {print $2}'; }

echo "hostlb datapath benchmark: $ROUNDS rounds x 4 variants x ${SECS}s per mode, $SERVICES services in (c) and (d)"
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
syn_before=$(syn_retrans)
for mode in request handshake; do
  echo
  case $mode in
    request) echo "mode request: each connection sends a 64-byte request and reads a 64-byte response" ;;
    handshake) echo "mode handshake: each connection is only a handshake (the harshest case for conntrack)" ;;
  esac
  echo "round      a(plain)      b(1 svc)  c($SERVICES)  d(linear)   c/b    b/a    c/d"
  ratios=()
  for r in $(seq 1 "$ROUNDS"); do
    declare -A rate=()
    for v in a b c d; do
      setup_variant $v
      rate[$v]=$(measure $mode $v)
    done
    cb=$(awk -v x="${rate[c]}" -v y="${rate[b]}" 'BEGIN{printf "%.3f", x/y}')
    ba=$(awk -v x="${rate[b]}" -v y="${rate[a]}" 'BEGIN{printf "%.3f", x/y}')
    cd=$(awk -v x="${rate[c]}" -v y="${rate[d]}" 'BEGIN{printf "%.3f", x/y}')
    printf "%5d %12.0f %12.0f %10.0f %10.0f %6s %6s %6s\n" "$r" "${rate[a]}" "${rate[b]}" "${rate[c]}" "${rate[d]}" "$cb" "$ba" "$cd"
    ratios+=("$cb $ba $cd")
  done
  med_cb=$(printf '%s\n' "${ratios[@]}" | awk '{print $1}' | median)
  med_ba=$(printf '%s\n' "${ratios[@]}" | awk '{print $2}' | median)
  med_cd=$(printf '%s\n' "${ratios[@]}" | awk '{print $3}' | median)
  echo "  $mode: median c/b (10k services vs 1)        = $med_cb   (target >= 0.9)"
  echo "  $mode: median b/a (hostlb vs plain bridging) = $med_ba   (target >= 0.8)"
  echo "  $mode: median c/d (map vs linear rules)      = $med_cd   (target: clearly > 1)"
done
syn_after=$(syn_retrans)
echo
echo "client SYN retransmits during all runs: $((syn_after - syn_before)) (should be 0)"

# Apply from scratch and memory, measured separately.
no_hostlb
rm -rf "$WORK/state"
start_ns=$(date +%s%N)
hostlbd_apply "$WORK/many.json"
end_ns=$(date +%s%N)
echo "hostlbd apply of $SERVICES services from scratch: ${APPLY_MS} ms in the reconciler, $(((end_ns - start_ns) / 1000000)) ms process start to applied (target < 1000 ms)"
echo "hostlbd peak RSS with $SERVICES services: $((PEAK_KB / 1024)) MiB (${PEAK_KB} kB; target < 30 MiB)"
echo "  (the nft transaction runs in a forked helper that exits after each apply: its peak was $((HELPER_KB / 1024)) MiB)"
