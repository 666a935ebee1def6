#!/usr/bin/env bash
# Conntrack event listener under the datapath's maximum new-connection rate:
# hostlbd serves one VIP while a client opens handshake-only connections as
# fast as it can (two threads, 64 source addresses). Run twice, side by
# side: with hostlbd's default event queue, and with a tiny one (16 KiB)
# that must overflow. For each: connections made, events received, losses
# and resyncs per minute, and whether the active count converges to what
# conntrack holds once the traffic stops.
#
#   bench/events.sh            (SECONDS_PER_RUN=30 by default)
#
# All traffic stays in namespaces this script creates (prefix hlbe<pid>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${SECONDS_PER_RUN:-30}
[ "$(id -u)" -eq 0 ] || { echo "bench/events.sh: run as root" >&2; exit 1; }
./scripts/build.sh >/dev/null
HOSTLBD=$ROOT/build/hostagent/hostlbd
HOSTLBCTL=$ROOT/build/hostagent/hostlbctl
CONNRATE=$ROOT/build/bench/hostlb-connrate

# shellcheck source=bench/connrate-lab.sh
source "$ROOT/bench/connrate-lab.sh" hlbe$$
"$ROOT/bench/gen-doc.sh" 1 >"$WORK/one.json"

metric() {  # NAME_WITH_LABELS -> value, from hostlbctl stats --prometheus
  "$HOSTLBCTL" --socket "$WORK/s.sock" stats --prometheus | awk -v m="$1" '$1 == m {print $2}'
}

run() {  # QUEUE_KB LABEL
  rm -rf "$WORK/state"
  ip netns exec "$P-hv" "$HOSTLBD" --config "$WORK/one.json" --state-dir "$WORK/state" \
    --socket "$WORK/s.sock" --event-queue-kb "$1" >"$WORK/hostlbd.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do [ -S "$WORK/s.sock" ] && grep -q "applied" "$WORK/hostlbd.log" && break; sleep 0.05; done
  local out
  out=$(in_ns c1 "$CONNRATE" connect handshake "$VIP" 80 198.18.2.1 64 "$SECS" 2)
  local made=${out#*connections=}; made=${made%% *}
  local rate=${out##*rate=}
  # CLOSE entries expire after 1 s, but the kernel reaps them (and sends
  # their DESTROY events) in batches: wait until the table has settled.
  for _ in $(seq 60); do
    [ "$(in_ns hv conntrack -L --mark 0x1000/0xfffff000 2>/dev/null | grep -c . || true)" -eq 0 ] && break
    sleep 0.5
  done
  sleep 1
  local received losses resyncs opened active truth
  local svc='{service="203.0.113.10:80/tcp"}'
  received=$(metric hostlb_conntrack_events_total)
  losses=$(metric hostlb_conntrack_event_losses_total)
  resyncs=$(metric hostlb_conntrack_resyncs_total)
  opened=$(metric "hostlb_service_connections_opened_total$svc")
  active=$(metric "hostlb_service_connections_active$svc")
  truth=$(in_ns hv conntrack -L --mark 0x1000/0xfffff000 2>/dev/null | grep -c . || true)
  printf "%-14s %9.0f %11s %11s %9s %12.2f %13.2f %7s %7s\n" "$2" "$rate" "$made" "$received" \
    "$opened" "$(awk -v l="$losses" -v s="$SECS" 'BEGIN{print l*60/s}')" \
    "$(awk -v l="$resyncs" -v s="$SECS" 'BEGIN{print l*60/s}')" "$active" "$truth"
  kill -TERM $pid; wait $pid || true
  in_ns hv "$HOSTLBD" --cleanup --state-dir "$WORK/state" >/dev/null 2>&1
}

echo "conntrack event listener at the maximum new-connection rate, ${SECS}s per run"
echo "queue          conn/s   connections  events      opened   losses/min   resyncs/min  active  conntrack"
run 8192 "8 MiB (default)"
run 16 "16 KiB"
echo
echo "opened counts NEW events (those lost in an overflow are not counted as opened);"
echo "active after the run must equal the entries conntrack holds (column 'conntrack')."
