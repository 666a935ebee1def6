#!/usr/bin/env bash
# Flush benchmark: deleting one backend's connections from a conntrack table
# of 200,000 entries of which half are that backend's (its mark), with
# hostlb's kernel-side filtered flush (netlink/ConntrackTable, as the daemon
# runs it) and with `conntrack -D -m MARK/MASK` (conntrack-tools: a filtered
# dump, then one delete per entry), alternating, ROUNDS times.
#
#   bench/flush.sh            (ENTRIES=200000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-200000}
ROUNDS=${ROUNDS:-3}
[ "$(id -u)" -eq 0 ] || { echo "bench/flush.sh: run as root" >&2; exit 1; }
./scripts/build.sh >/dev/null
NS=hlbf$$
trap 'ip netns del $NS 2>/dev/null || true' EXIT
ip netns add $NS
# A nat chain switches conntrack on in the namespace, as hostlb's table does.
ip netns exec $NS nft add table ip t
ip netns exec $NS nft add chain ip t c '{ type nat hook prerouting priority dstnat; }'
MARK=0x00001000 OTHER=0x00002000 MASK=0xfffff000

fill() {
  ip netns exec $NS conntrack -F >/dev/null 2>&1 || true
  ip netns exec $NS build/bench/hostlb-ctfill "$ENTRIES" $MARK $OTHER >/dev/null
}
check_left() {  # the other half must be untouched
  local left
  left=$(ip netns exec $NS conntrack -C)
  [ "$left" -eq $((ENTRIES / 2)) ] || { echo "expected $((ENTRIES / 2)) entries left, found $left" >&2; exit 1; }
}
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) / 1e6}'; }

echo "flush of $((ENTRIES / 2)) of $ENTRIES conntrack entries by mark, $ROUNDS rounds"
ratios=()
for r in $(seq "$ROUNDS"); do
  fill
  out=$(ip netns exec $NS build/bench/hostlb-ctflush $MARK $MASK)
  hostlb_ms=${out##*ms=}
  check_left
  fill
  t0=$(date +%s%N)
  ip netns exec $NS conntrack -D -m $MARK/$MASK >/dev/null 2>&1
  t1=$(date +%s%N)
  tools_ms=$(ms "$t0" "$t1")
  check_left
  ratio=$(awk -v a="$tools_ms" -v b="$hostlb_ms" 'BEGIN {printf "%.2f", a / b}')
  echo "round $r: hostlb ${hostlb_ms} ms, conntrack -D ${tools_ms} ms, conntrack -D / hostlb = ${ratio}"
  ratios+=("$ratio")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
echo "median conntrack -D / hostlb: $median   (target: hostlb faster, i.e. > 1)"
