#!/usr/bin/env bash
# The fleet on etcd: how fast a write reaches every kernel, how long a full
# sync takes, and what watching hosts cost etcd.
#
# In the fleet lab (scripts/fleet-lab.sh: GATEWAYS gateways, HOSTS
# hypervisors with 2 VMs each), one etcd (the etcd-server package) in the
# router's namespace, reached by every daemon over a management link of its
# own; every gateway and hypervisor runs hostlbd following it.
#   1. full sync: SERVICES services written by `hostlbctl fleet apply` (one
#      transaction) until every daemon has applied them; then one gateway
#      and one hypervisor restarted, until they have read and applied the
#      whole fleet again;
#   2. CHANGES writes of one service (a backend attached and detached in
#      turn), each timed from before the write until every daemon reports
#      (its `status`) that it applied the write's revision: hostlbd sets it
#      once the kernel holds the change (bench/fleetsync.cpp);
#   3. the same with WATCHERS light watchers (a watch of the whole prefix
#      each, one connection each) standing in for more hosts, with etcd's
#      CPU time and memory in both runs.
#
#   bench/fleet-etcd.sh       (SERVICES=10000 CHANGES=200 WATCHERS=96 GATEWAYS=2 HOSTS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-$ROOT/build}
SERVICES=${SERVICES:-10000}
CHANGES=${CHANGES:-200}
WATCHERS=${WATCHERS:-96}
GATEWAYS=${GATEWAYS:-2}
HOSTS=${HOSTS:-2}
ROWS=${ROWS:-509}
P=${PREFIX_NS:-hlfe}
W=$(mktemp -d /tmp/hostlb-fleet-etcd.XXXXXX)
ETCD=http://127.0.0.1:23790
declare -A PIDS=()

cleanup() {
  for role in "${!PIDS[@]}"; do kill "${PIDS[$role]}" 2>/dev/null || true; done
  [ -n "${ETCD_PID:-}" ] && kill "$ETCD_PID" 2>/dev/null || true
  [ -n "${WATCH_PID:-}" ] && kill "$WATCH_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  FLEET_GATEWAYS=$GATEWAYS FLEET_HOSTS=$HOSTS scripts/fleet-lab.sh down "$P" >/dev/null 2>&1 || true
  [ -n "${KEEP_LOGS:-}" ] && cp "$W"/*.log "$KEEP_LOGS"/ 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

FLEET_GATEWAYS=$GATEWAYS FLEET_HOSTS=$HOSTS FLEET_VMS=2 scripts/fleet-lab.sh up "$P"
roles=()
for k in $(seq 1 "$GATEWAYS"); do roles+=("gw$k"); done
for k in $(seq 1 "$HOSTS"); do roles+=("hv$k"); done
declare -A ENDPOINT=()
k=1
for role in "${roles[@]}"; do
  ip link add "m-$role" netns "$P-rt" type veth peer name mgmt0 netns "$P-$role"
  ip -n "$P-rt" addr add "10.250.$k.1/30" dev "m-$role"
  ip -n "$P-rt" link set "m-$role" up
  ip -n "$P-$role" addr add "10.250.$k.2/30" dev mgmt0
  ip -n "$P-$role" link set mgmt0 up
  ENDPOINT[$role]=http://10.250.$k.1:23790
  k=$((k + 1))
done

ip netns exec "$P-rt" etcd --name e1 --data-dir "$W/etcd" \
  --listen-client-urls http://0.0.0.0:23790 --advertise-client-urls $ETCD \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster e1=http://127.0.0.1:23800 --max-txn-ops 30000 --max-request-bytes 33554432 \
  --logger zap --log-outputs "$W/etcd.log" >"$W/etcd.out" 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 100); do
  ip netns exec "$P-rt" env ETCDCTL_API=3 etcdctl --endpoints=$ETCD endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done

ctl() { "$BUILD/hostagent/hostlbctl" "$@"; }
fleet() { ip netns exec "$P-rt" "$BUILD/hostagent/hostlbctl" fleet --daemon-config '' --etcd-endpoints $ETCD "$@"; }
applied() { ctl --json --socket "$W/$1.sock" status 2>/dev/null | sed -n 's/.*"applied_revision": *\([0-9]*\).*/\1/p'; }
start_daemon() {  # ROLE
  local role=$1 args=(--daemon-config '' --services-dir '' --etcd-endpoints "${ENDPOINT[$role]}"
    --socket "$W/$role.sock" --state-dir "$W/$role" --host-name "$role" --log-level "${LOG_LEVEL:-info}")
  if [[ $role == gw* ]]; then
    args+=(--role gateway --client-interface cli0 --fabric-interface fab0)
  fi
  ip netns exec "$P-$role" "$BUILD/hostagent/hostlbd" "${args[@]}" >"$W/$role.log" 2>&1 &
  PIDS[$role]=$!
}
wait_applied() {  # REVISION ROLE...: seconds until every ROLE applied REVISION
  local revision=$1 start role
  shift
  start=$(date +%s.%N)
  for role in "$@"; do
    until [ "$(applied "$role" || echo 0)" -ge "$revision" ] 2>/dev/null; do sleep 0.01; done
  done
  echo "$(date +%s.%N) - $start" | bc
}
etcd_cpu() { awk '{print ($14 + $15) / 100}' "/proc/$ETCD_PID/stat"; }
etcd_rss() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$ETCD_PID/status"; }

# The fleet: VMs 1,2 on hv1, 3,4 on hv2, ...; each service on the first
# VM of hv1 and of hv2.
service() {  # N [EXTRA_BACKEND]
  local n=$1 extra=${2:-}
  printf '{"vip":"100.64.%d.%d","port":80,"protocol":"tcp","rows":%d,"backends":[{"name":"vm1","port":8080},{"name":"vm3","port":8080}%s]}' \
    $((n / 250)) $((1 + n % 250)) "$ROWS" "$extra"
}
{
  printf '{"version":1,"backends":['
  for v in $(seq 1 $((HOSTS * 2))); do
    [ "$v" -gt 1 ] && printf ','
    printf '{"name":"vm%d","mac":"02:00:00:00:0a:%d","ipv4":"198.18.10.%d","bridge":"br0","host":"hv%d"}' \
      "$v" $((10 + v)) $((10 + v)) $(((v + 1) / 2))
  done
  printf '],"services":['
  for n in $(seq 0 $((SERVICES - 1))); do
    [ "$n" -gt 0 ] && printf ','
    service "$n"
  done
  printf ']}\n'
} >"$W/fleet.json"

for role in "${roles[@]}"; do start_daemon "$role"; done
for role in "${roles[@]}"; do
  until [ -S "$W/$role.sock" ] && [ -n "$(applied "$role")" ]; do sleep 0.05; done
done

echo "== full sync: $SERVICES services (rows $ROWS) to ${#roles[@]} machines"
start=$(date +%s.%N)
out=$(fleet apply -f "$W/fleet.json")
write_s=$(echo "$(date +%s.%N) - $start" | bc)
revision=$(sed -n 's/written at revision \([0-9]*\).*/\1/p' <<<"$out")
rest=$(wait_applied "$revision" "${roles[@]}")
printf 'fleet apply (one transaction): %.2f s; then in every kernel after %.2f s more (%.2f s in all)\n' \
  "$write_s" "$rest" "$(echo "$write_s + $rest" | bc)"
for role in gw1 hv1; do
  kill "${PIDS[$role]}"
  wait "${PIDS[$role]}" 2>/dev/null || true
  rm -f "$W/$role.sock"
  start=$(date +%s.%N)
  start_daemon "$role"
  until [ -S "$W/$role.sock" ] && [ "$(applied "$role" || echo 0)" -ge "$revision" ] 2>/dev/null; do sleep 0.01; done
  printf '%s restarted: the whole fleet read and applied %.2f s after its start\n' "$role" \
    "$(echo "$(date +%s.%N) - $start" | bc)"
done

key=/hostlb/services/100.64.0.2:80/tcp
a=$(service 1)
b=$(service 1 ',{"name":"vm2","port":8080}')
sockets=()
for role in "${roles[@]}"; do sockets+=("$W/$role.sock"); done
run_changes() {  # LABEL
  local cpu0 cpu1 line
  cpu0=$(etcd_cpu)
  line=$(ip netns exec "$P-rt" "$BUILD/bench/hostlb-fleetsync" changes $ETCD "$key" "$a" "$b" "$CHANGES" "${sockets[@]}")
  cpu1=$(etcd_cpu)
  printf '%-34s %s; etcd CPU %.2f s, RSS %.0f MiB\n' "$1" "$line" "$(echo "$cpu1 - $cpu0" | bc)" "$(etcd_rss)"
}
echo "== $CHANGES changes of one service, $SERVICES loaded"
run_changes "${#roles[@]} daemons watching:"
ip netns exec "$P-rt" "$BUILD/bench/hostlb-fleetsync" watchers $ETCD /hostlb/ "$WATCHERS" 600 >"$W/watchers.out" &
WATCH_PID=$!
sleep 2
run_changes "$((${#roles[@]} + WATCHERS)) watching ($WATCHERS light):"
kill -INT "$WATCH_PID" 2>/dev/null || true
