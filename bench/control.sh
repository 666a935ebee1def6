#!/usr/bin/env bash
# Control-plane benchmark (issue targets in brackets):
#   - median round trip of one `hostlbctl service attach` with 10,000
#     services loaded, and its ratio to the same with 10 services, the two
#     daemons measured alternately in each round        [<= 10 ms, ratio <= 1.5]
#   - `hostlbctl apply` of a 10,000-service document from empty  [< 1 s]
#   - `hostlbctl apply` of a document differing in one service   [< 20 ms]
#   - hostlbd RSS with 10,000 services loaded                     [< 30 MB]
#
#   bench/control.sh          (ROUNDS=50 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-50}
[ "$(id -u)" -eq 0 ] || { echo "bench/control.sh: run as root" >&2; exit 1; }
./scripts/build.sh >/dev/null
HOSTLBD=$ROOT/build/hostagent/hostlbd
CTL=$ROOT/build/hostagent/hostlbctl
CTLBENCH=$ROOT/build/bench/hostlb-ctlbench

WORK=$(mktemp -d /tmp/hostlb-ctlbench.XXXXXX)
PA=hlbc$$a
PB=hlbc$$b
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$ROOT/scripts/lab.sh" down "$PA"; "$ROOT/scripts/lab.sh" down "$PB"; rm -rf "$WORK"
}
trap cleanup EXIT
"$ROOT/scripts/lab.sh" up "$PA"
"$ROOT/scripts/lab.sh" up "$PB"

probe='{"vip":"203.0.113.250","port":9,"protocol":"tcp","backends":[]}'
"$ROOT/bench/gen-doc.sh" 10 "$probe" >"$WORK/small.json"
"$ROOT/bench/gen-doc.sh" 10000 "$probe" >"$WORK/large.json"
"$ROOT/bench/gen-doc.sh" 10000 "$probe,"'{"vip":"203.0.113.251","port":9,"protocol":"tcp","backends":[{"name":"web-1","port":9}]}' >"$WORK/large-plus-one.json"
echo '{"version":1}' >"$WORK/empty.json"

start_daemon() {  # PREFIX NAME CONFIG
  ip netns exec "$1-hv" "$HOSTLBD" --config "$3" --state-dir "$WORK/$2" \
    --socket "$WORK/$2.sock" --log-level warn >"$WORK/$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -S "$WORK/$2.sock" ] && "$CTL" --socket "$WORK/$2.sock" status >/dev/null 2>&1 && return; sleep 0.05; done
  cat "$WORK/$2.log"; exit 1
}
ms_of() {  # COMMAND... -> prints elapsed ms of one run
  local t0 t1
  t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

echo "hostlb control-plane benchmark"
start_daemon "$PA" small "$WORK/small.json"
start_daemon "$PB" large "$WORK/empty.json"

# apply from empty, then a one-service difference (medians of 5)
full=$(ms_of "$CTL" --socket "$WORK/large.sock" --timeout 120 apply -f "$WORK/large.json")
echo "apply of 10,000 services from empty: ${full} ms   (target < 1000 ms)"
echo "apply of a document differing in one service (10,000 loaded, ~1 MB), $ROUNDS rounds, whole hostlbctl runs:"
"$CTLBENCH" --apply "$CTL" "$ROUNDS" "$WORK/large.sock" "$WORK/large.json" "$WORK/large-plus-one.json" | sed 's/^/  /'
echo "  (target < 20 ms; includes starting hostlbctl, reading and sending the file; removing a"
echo "   service also flushes its connections, which walks the conntrack table once)"

echo "service attach round trips, $ROUNDS rounds alternating 10 / 10,000 services:"
"$CTLBENCH" "$CTL" "$ROUNDS" "$WORK/small.sock" "$WORK/large.sock" | sed 's/^/  /'
echo "  (target: 10,000-service median <= 10 ms, ratio <= 1.5)"

pid=$(pgrep -f -- "--state-dir $WORK/large" | head -1)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "hostlbd with 10,000 services: RSS $((rss / 1024)) MiB, peak $((hwm / 1024)) MiB   (target < 30 MB)"

# Removing everything: 10,000 bindings leave the maps and their connections
# are flushed (in one walk of the conntrack table).
gone=$(ms_of "$CTL" --socket "$WORK/large.sock" --timeout 120 apply -f "$WORK/empty.json")
echo "apply of an empty document (10,000 services removed, their connections flushed): ${gone} ms"
