#!/usr/bin/env bash
# Health checks at scale (issue 14): BINDINGS bindings probed every second
# (TCP) from one host.
#   - hostlbd's CPU use over MEASURE seconds, checked vs the same bindings
#     without checks (the idle baseline), side by side in one run;
#   - the spread of probe latency (p50/p99 of each binding's last probe)
#     vs one checked binding alone;
#   - the time from the backend dying (its port starts answering RST) to the
#     host's first refused connection, as a ratio of
#     fall x interval + timeout (target <= 1.2).
#
#   bench/health.sh                (BINDINGS=10000 MEASURE=10)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINDINGS=${BINDINGS:-10000}
MEASURE=${MEASURE:-10}
[ "$(id -u)" -eq 0 ] || { echo "bench/health.sh: run as root" >&2; exit 1; }
"$ROOT/scripts/build.sh" >/dev/null
CONNRATE=$ROOT/build/bench/hostlb-connrate
HOSTLBD=$ROOT/build/hostagent/hostlbd
CTL_BIN=$ROOT/build/hostagent/hostlbctl
# shellcheck source=bench/connrate-lab.sh
source "$ROOT/bench/connrate-lab.sh" hlbh$$
in_ns hv ip route add 198.18.0.0/15 dev br0
in_ns hv ip addr add 198.18.255.254/32 dev br0
# Every probe is a conntrack entry of the host (not hostlb's); a probe
# closes with a reset, so its entry is short-lived.
in_ns hv sysctl -qw net.netfilter.nf_conntrack_max=1048576 2>/dev/null || true

INTERVAL=1 TIMEOUT=1 FALL=2
HEALTH="{\"interval\":$INTERVAL,\"timeout\":$TIMEOUT,\"rise\":2,\"fall\":$FALL}"
# N services 203.0.113.10:10000.. -> web-1:8080, with `health` or without.
gen_doc() {
  awk -v n="$1" -v health="$2" 'BEGIN {
    printf "{\"version\":1,\"backends\":[{\"name\":\"web-1\",\"mac\":\"02:00:00:00:01:11\",\"ipv4\":\"198.18.1.11\",\"bridge\":\"br0\"}],\"services\":["
    for (i = 0; i < n; i++)
      printf "%s{\"vip\":\"203.0.113.10\",\"port\":%d,\"protocol\":\"tcp\",\"backends\":[{\"name\":\"web-1\",\"port\":8080}]%s}", (i ? "," : ""), 10000 + i, (health == "" ? "" : ",\"health\":" health)
    printf "]}\n"
  }'
}

PID=
start_daemon() {  # NAME DOC
  mkdir -p "$WORK/$1"
  in_ns hv "$HOSTLBD" --config "$2" --state-dir "$WORK/$1/state" --socket "$WORK/$1/s.sock" \
    --log-level warn --health-source-ipv4 198.18.255.254 --service-new-rate 1000000 \
    >"$WORK/$1/log" 2>&1 &
  for _ in $(seq 600); do [ -S "$WORK/$1/s.sock" ] && break; sleep 0.05; done
  PID=$(pgrep -f -- "--state-dir $WORK/$1/state" | head -1)
  CTL="$CTL_BIN --socket $WORK/$1/s.sock --timeout 120"
}
stop_daemon() {
  kill "$PID"
  while kill -0 "$PID" 2>/dev/null; do sleep 0.05; done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# hostlbd's CPU use over MEASURE seconds, in percent of one core.
cpu_percent() {
  local t0 t1
  t0=$(cpu_ticks)
  sleep "$MEASURE"
  t1=$(cpu_ticks)
  echo "$t0 $t1" | awk -v hz="$(getconf CLK_TCK)" -v s="$MEASURE" '{printf "%.1f", ($2 - $1) / hz / s * 100}'
}
count_state() { $CTL --json health | python3 -c "import json,sys; print(sum(1 for b in json.load(sys.stdin)['bindings'] if b['state'] == '$1'))"; }
wait_all() {  # STATE N
  for _ in $(seq 300); do [ "$(count_state "$1")" -ge "$2" ] && return 0; sleep 0.2; done
  echo "not all bindings $1 after 60 s" >&2
  return 1
}
latencies() {  # p50 p99 of every binding's last probe, in ms
  $CTL --json health | python3 -c "
import json, sys
l = sorted(b['last']['latency_ms'] for b in json.load(sys.stdin)['bindings'] if b['last'])
print(l[len(l) // 2], l[min(len(l) - 1, len(l) * 99 // 100)])"
}

echo "== $BINDINGS bindings without checks (the idle baseline)"
gen_doc "$BINDINGS" "" >"$WORK/plain.json"
start_daemon plain "$WORK/plain.json"
idle_cpu=$(cpu_percent)
echo "hostlbd CPU: $idle_cpu% of a core"
stop_daemon

echo "== one checked binding (the latency baseline)"
gen_doc 1 "$HEALTH" >"$WORK/one.json"
start_daemon one "$WORK/one.json"
wait_all up 1
samples=()
for _ in $(seq "$MEASURE"); do
  sleep "$INTERVAL"
  samples+=("$(latencies | cut -d' ' -f1)")
done
one_p50=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
one_p99=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
echo "probe latency alone: p50 $one_p50 ms, max of $MEASURE $one_p99 ms"
stop_daemon

echo "== $BINDINGS checked bindings, probed every ${INTERVAL}s"
gen_doc "$BINDINGS" "$HEALTH" >"$WORK/checked.json"
start_daemon checked "$WORK/checked.json"
started=$(date +%s.%N)
wait_all up "$BINDINGS"
echo "all up after $(echo "$(date +%s.%N) $started" | awk '{printf "%.1f", $1 - $2}') s"
checked_cpu=$(cpu_percent)
read -r p50 p99 < <(latencies)
echo "hostlbd CPU: $checked_cpu% of a core (idle baseline $idle_cpu%)"
echo "probe latency: p50 $p50 ms, p99 $p99 ms (alone: p50 $one_p50 ms)"
echo "host conntrack entries: $(in_ns hv conntrack -C)"

# The backend dies: its port answers new connections with RST. A client
# opens connections to one of its services meanwhile; the first one the
# host refuses as unhealthy ends the clock.
"$ROOT/scripts/lab.sh" gateway "$P" c1 "$VIP" "$VM1_MAC"
in_ns c1 "$CONNRATE" connect handshake "$VIP" 10000 198.18.2.1 64 30 1 >"$WORK/client" 2>&1 &
client=$!
sleep 1
died=$(date +%s.%N)
in_ns vm1 nft add table inet t
in_ns vm1 nft 'add chain inet t in { type filter hook input priority 0; }'
in_ns vm1 nft add rule inet t in tcp dport 8080 tcp flags \& '(syn | ack)' == syn reject with tcp reset
refused_at=
for _ in $(seq 400); do
  n=$($CTL --json stats | python3 -c "
import json, sys
print(sum(s.get('unhealthy', 0) for s in json.load(sys.stdin)['services'] if s['service'] == '203.0.113.10:10000/tcp'))")
  if [ "$n" -gt 0 ]; then refused_at=$(date +%s.%N); break; fi
  sleep 0.05
done
kill "$client" 2>/dev/null || true
budget=$((FALL * INTERVAL + TIMEOUT))
if [ -n "$refused_at" ]; then
  echo "$died $refused_at $budget" | awk '{printf "first refused connection %.2f s after the backend died: %.2f x (fall x interval + timeout = %d s; target <= 1.2)\n", $2 - $1, ($2 - $1) / $3, $3}'
else
  echo "no connection refused within 20 s"
fi
wait_all down "$BINDINGS" && echo "all $BINDINGS down"
stop_daemon
echo "health: $BINDINGS bindings, CPU $checked_cpu% vs $idle_cpu% idle, latency p50 $p50 ms p99 $p99 ms vs $one_p50 ms alone"
