#!/usr/bin/env bash
# Datapath benchmark: new TCP connections per second from a client namespace,
# ten variants measured side by side in each round (interleaved):
#   p  plain bridging to the backend IP, br_netfilter off, no hostlb (what a
#      hypervisor operator has without hostlb)
#   a  plain bridging to the backend IP, br_netfilter on, no hostlb
#   b  hostlb with 1 service, to the VIP
#   c  hostlb with 10,000 services loaded, to the VIP
#   e  hostlb with 10,000 services loaded, to the backend's own IP (traffic
#      hostlb does not balance: a bystander)
#   d  an iptables-style nft chain of 10,000 single rules, match last
#   f  as b, with hostlbd's admission limits off (what they cost: b/f)
#   g  as c on the BPF host datapath (--host-datapath bpf, br_netfilter off)
#   h  as e on the BPF host datapath: a bystander to the backend's port
#      (the worst case: each reply is looked up in conntrack)
#   i  as h, to vm2, a VM no VIP serves (one hash lookup a frame)
# hostlbd runs with its admission limits on but a rate no run reaches
# (--service-new-rate 1000000), so that the meter's cost is in the figures.
# and prints the medians of same-round ratios, the time hostlbd takes to
# apply a 10,000-service document from scratch, and its peak RSS.
#
#   bench/run.sh                 (ROUNDS=5 SECONDS_PER_RUN=2 by default)
#   VARIANTS="p g h i" bench/run.sh   only those (p is always measured: every
#                                     ratio is to a variant of the same round)
#
# All traffic stays in namespaces this script creates (prefix hlbb<pid>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-2}
SERVICES=${SERVICES:-10000}
VARIANTS=${VARIANTS:-p a b c e d f g h i}
[[ " $VARIANTS " == *" p "* ]] || VARIANTS="p $VARIANTS"
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

hostlbd_apply() {  # CONFIG [LIMIT...]: run hostlbd until it has applied, then stop it (datapath stays)
  local log=$WORK/hostlbd.log limits=(--service-new-rate 1000000)
  [ $# -gt 1 ] && limits=("${@:2}")
  # Not through in_ns: $! must be hostlbd itself (ip netns exec execs it).
  ip netns exec "$P-hv" "$HOSTLBD" --config "$1" --state-dir "$WORK/state" --socket "$WORK/s.sock" \
    "${limits[@]}" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do
    grep -q "^.* applied $1" "$log" && break
    kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.05
  done
  APPLY_MS=$(grep -oE 'host entries in [0-9]+ ms' "$log" | grep -oE '[0-9]+' | tail -1)
  HELPER_KB=$(grep -oE 'nft helper peak RSS [0-9]+ kB' "$log" | grep -oE '[0-9]+' | tail -1 || true)  # nft only
  PEAK_KB=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid
}
no_hostlb() {
  in_ns hv "$HOSTLBD" --cleanup --state-dir "$WORK/state" >/dev/null 2>&1
  in_ns hv nft delete table ip benchlinear 2>/dev/null || true
}
br_netfilter() {  # 1|0, for both families, in the hypervisor's namespace
  in_ns hv sysctl -qw net.bridge.bridge-nf-call-iptables="$1" net.bridge.bridge-nf-call-ip6tables="$1"
}
setup_variant() {
  in_ns hv conntrack -F >/dev/null 2>&1 || true  # every variant starts from an empty table
  br_netfilter 1  # hostlbd sets it too; p, g and h turn it off
  case $1 in
    p) no_hostlb; br_netfilter 0 ;;
    a) no_hostlb ;;
    b) in_ns hv nft delete table ip benchlinear 2>/dev/null || true; hostlbd_apply "$WORK/one.json" ;;
    f) in_ns hv nft delete table ip benchlinear 2>/dev/null || true
       hostlbd_apply "$WORK/one.json" --service-new-rate 0 --embryonic-timeout 0 ;;
    c|e) in_ns hv nft delete table ip benchlinear 2>/dev/null || true; hostlbd_apply "$WORK/many.json" ;;
    g|h|i) in_ns hv nft delete table ip benchlinear 2>/dev/null || true; br_netfilter 0
       hostlbd_apply "$WORK/many.json" --service-new-rate 1000000 --host-datapath bpf ;;
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
  case $2 in p|a|e|h) target=198.18.1.11:8080 ;; i) target=198.18.1.12:8080 ;; esac
  local out
  out=$(in_ns c1 "$CONNRATE" connect "$1" "${target%:*}" "${target#*:}" 198.18.2.1 64 "$SECS" 2)
  local failures=${out#*failures=}; failures=${failures%% *}
  [ "$failures" -eq 0 ] || echo "  warning: $1 variant $2 had $failures failed connections" >&2
  local rate=${out##*rate=}
  echo "$rate"
}

syn_retrans() { in_ns c1 nstat -az TcpExtTCPSynRetrans | awk '/TcpExtTCPSynRetrans/ {print $2}'; }

echo "hostlb datapath benchmark: $ROUNDS rounds x 10 variants x ${SECS}s per mode, $SERVICES services in (c), (e) and (d)"
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
syn_before=$(syn_retrans)
bystander_entries=-; bpf_bystander_entries=-; bpf_other_entries=-  # of variants not run
for mode in request handshake; do
  echo
  case $mode in
    request) echo "mode request: each connection sends a 64-byte request and reads a 64-byte response" ;;
    handshake) echo "mode handshake: each connection is only a handshake (the harshest case for conntrack)" ;;
  esac
  echo "round  p(no brnf)  a(brnf)  b(1 svc)  c(${SERVICES})  e(bystander)  d(linear)  f(no limits)  g(bpf vip)  h(bpf bystander)  i(bpf other vm)   c/b    b/a    c/d    a/p    b/p    e/p    b/f    g/p    h/p    i/p"
  ratios=()
  ratio() { awk -v x="$1" -v y="$2" 'BEGIN{if (x == 0 || y == 0) print "-"; else printf "%.3f", x/y}'; }
  for r in $(seq 1 "$ROUNDS"); do
    declare -A rate=()
    for v in $VARIANTS; do
      setup_variant $v
      rate[$v]=$(measure $mode $v)
      [ "$v" = e ] && bystander_entries=$(in_ns hv conntrack -L -p tcp -d 198.18.1.11 --dport 8080 2>/dev/null | grep -c . || true)
      [ "$v" = h ] && bpf_bystander_entries=$(in_ns hv conntrack -L -p tcp -d 198.18.1.11 --dport 8080 2>/dev/null | grep -c . || true)
      [ "$v" = i ] && bpf_other_entries=$(in_ns hv conntrack -L -p tcp -d 198.18.1.12 2>/dev/null | grep -c . || true)
    done
    for v in p a b c e d f g h i; do [ -n "${rate[$v]:-}" ] || rate[$v]=0; done
    cb=$(ratio "${rate[c]}" "${rate[b]}"); ba=$(ratio "${rate[b]}" "${rate[a]}")
    cd=$(ratio "${rate[c]}" "${rate[d]}"); ap=$(ratio "${rate[a]}" "${rate[p]}")
    bp=$(ratio "${rate[b]}" "${rate[p]}"); ep=$(ratio "${rate[e]}" "${rate[p]}")
    bf=$(ratio "${rate[b]}" "${rate[f]}")
    gp=$(ratio "${rate[g]}" "${rate[p]}"); hp=$(ratio "${rate[h]}" "${rate[p]}")
    ip_=$(ratio "${rate[i]}" "${rate[p]}")
    printf "%5d %11.0f %8.0f %9.0f %9.0f %13.0f %10.0f %13.0f %11.0f %17.0f %16.0f %6s %6s %6s %6s %6s %6s %6s %6s %6s %6s\n" "$r" \
      "${rate[p]}" "${rate[a]}" "${rate[b]}" "${rate[c]}" "${rate[e]}" "${rate[d]}" "${rate[f]}" \
      "${rate[g]}" "${rate[h]}" "${rate[i]}" "$cb" "$ba" "$cd" "$ap" "$bp" "$ep" "$bf" "$gp" "$hp" "$ip_"
    ratios+=("$cb $ba $cd $ap $bp $ep $bf $gp $hp $ip_")
  done
  med() {  # "-" for a ratio of variants not run
    local values; values=$(printf '%s\n' "${ratios[@]}" | awk -v f="$1" '$f != "-" {print $f}')
    if [ -z "$values" ]; then echo "-"; else echo "$values" | median; fi
  }
  echo "  $mode: median c/b (10k services vs 1)                   = $(med 1)   (target >= 0.9)"
  echo "  $mode: median b/a (hostlb vs bridging with br_netfilter) = $(med 2)   (target >= 0.8)"
  echo "  $mode: median c/d (map vs linear rules)                 = $(med 3)   (target: clearly > 1)"
  echo "  $mode: median a/p (br_netfilter alone vs plain bridging) = $(med 4)"
  echo "  $mode: median b/p (the VIP path vs plain bridging)       = $(med 5)   (target >= 0.85)"
  echo "  $mode: median e/p (bystander traffic vs plain bridging)  = $(med 6)   (target >= 0.97)"
  echo "  $mode: median b/f (admission limits on vs off)        = $(med 7)"
  echo "  $mode: median g/p (BPF datapath: the VIP path vs plain)  = $(med 8)   (target >= 0.85)"
  echo "  $mode: median h/p (BPF datapath: to the backend's port)  = $(med 9)   (target >= 0.97)"
  echo "  $mode: median i/p (BPF datapath: to a VM no VIP serves)  = $(med 10)   (target >= 0.97)"
  echo "  $mode: conntrack entries of bystander connections after the last (e) run: $bystander_entries, (h) run: $bpf_bystander_entries, (i) run: $bpf_other_entries   (target 0)"
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
