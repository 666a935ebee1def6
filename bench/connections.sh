#!/usr/bin/env bash
# Connections listing benchmark: `hostlbctl connections` over 1,000,000 live
# entries of one binding (made with hostlb-ctfill, beside as many of another
# mark), time and hostlbctl's peak RSS; the same with --count; hostlbd's peak
# RSS growth over the listing (it streams: targets <= 10 MiB for hostlbd,
# <= 20 MiB for hostlbctl). nf_conntrack_max is raised for the run and put
# back after (a host-wide sysctl).
#
#   bench/connections.sh          (ENTRIES=1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
[ "$(id -u)" -eq 0 ] || { echo "bench/connections.sh: run as root" >&2; exit 1; }
./scripts/build.sh >/dev/null
NS=hlbl$$
WORK=$(mktemp -d /tmp/hostlb-connbench.XXXXXX)
MAX_BEFORE=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
cleanup() {
  ip netns pids $NS 2>/dev/null | xargs -r kill
  ip netns del $NS 2>/dev/null || true
  rm -rf "$WORK"
  echo "$MAX_BEFORE" >/proc/sys/net/netfilter/nf_conntrack_max
}
trap cleanup EXIT
echo $((ENTRIES * 2 + 100000)) >/proc/sys/net/netfilter/nf_conntrack_max
ip netns add $NS
ip netns exec $NS ip link add br0 type bridge
ip netns exec $NS ip link set br0 up
cat >"$WORK/doc.json" <<'JSON'
{"version":1,"backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
 "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}]}
JSON
ip netns exec $NS build/hostagent/hostlbd --config "$WORK/doc.json" --state-dir "$WORK/state" \
  --socket "$WORK/s.sock" --log-level warn >"$WORK/log" 2>&1 &
for _ in $(seq 100); do [ -S "$WORK/s.sock" ] && break; sleep 0.05; done
CTL="build/hostagent/hostlbctl --socket $WORK/s.sock --timeout 600"
# The one binding has identity 1: mark 0x1000 under the default mask. The
# fill's entries alternate that mark and another one.
ip netns exec $NS build/bench/hostlb-ctfill $((ENTRIES * 2)) 0x1000 0x0 >/dev/null
echo "conntrack entries: $(ip netns exec $NS conntrack -C), of which $ENTRIES are hostlb's"
pid=$(pgrep -f -- "--state-dir $WORK/state" | head -1)
hwm() { awk '/VmHWM/ {print $2}' /proc/$pid/status; }
peak_before=$(hwm)
/usr/bin/time -f "%e s, hostlbctl peak RSS %M kB" $CTL connections >"$WORK/out" 2>"$WORK/time"
echo "hostlbctl connections: $(tail -1 "$WORK/out"), $(tail -1 "$WORK/time") (target <= 20 MiB)"
echo "  $(($(wc -l <"$WORK/out") - 2)) rows printed"
peak_after=$(hwm)
echo "hostlbd peak RSS growth over the listing: $(((peak_after - peak_before) / 1024)) MiB ($peak_before -> $peak_after kB; target <= 10 MiB)"
/usr/bin/time -f "%e s, hostlbctl peak RSS %M kB" $CTL connections --count >"$WORK/out" 2>"$WORK/time"
echo "hostlbctl connections --count: $(tail -1 "$WORK/out"), $(tail -1 "$WORK/time")"
echo "hostlbd: RSS $(awk '/VmRSS/ {print $2}' /proc/$pid/status) kB, peak $(awk '/VmHWM/ {print $2}' /proc/$pid/status) kB"
