#!/usr/bin/env bash
# The fleet emulation: do connections survive backend and gateway changes?
#
# In network namespaces (scripts/fleet-lab.sh): a client -> an ECMP router
# -> GATEWAYS gateways (one more wired up as a spare) -> a fabric bridge ->
# HOSTS hypervisors with VMS backend VMs each. Every gateway runs
# `hostlbd --role gateway`, every hypervisor `hostlbd` with the same fleet
# document; real daemons, real kernel. The client holds CONNECTIONS
# long-lived TCP connections to one VIP, each sending a heartbeat every
# INTERVAL_MS that its backend answers with its name (build/bench/
# hostlb-fleet-load). A connection whose backend's name changes, that is
# reset or closed, or whose answer takes longer than STALL_MS is a
# violation; the connections of a killed backend are left out (as in JET).
#
# The service starts with per hypervisor VMS-1 active backends and one more:
# in the horizon on the first half of the hypervisors, outside the service on
# the others. Events (EVENTS), each in a fresh fleet, the same seed for
# every configuration; the gateways apply each update at random moments
# 0..SKEW_MS apart (hosts first):
#   horizon-add     a horizon backend is promoted
#   outside-add     a backend from outside the service is attached (active)
#   drain           an active backend drains (warm-up WARMUP s, then its rows move)
#   kill            an active backend's VM goes down and it is detached
#   gateway-add     horizon-add, then the spare gateway joins the ECMP route
#   gateway-remove  drain (warm-up over), then a gateway leaves the ECMP route
#   mixed           promote, attach, drain and kill in one go, then after
#                   the warm-up a gateway leaves and the spare joins
# Configurations (CONFIGS): stateless (gateways --no-tracking, no chaining:
# what OVN's stateless load balancer does), jet (tracking), chaining
# (--no-tracking, hosts chain), jet+chaining.
#
# Prints a table (configuration x event -> violations, tracked entries /
# connections before the event, max/mean connections per backend) and last
# `fleet: N connections, V violations, tracked T% (H/(N+H) = E%)` for
# jet+chaining (H horizon, N active backends).
#
#   bench/fleet.sh                  (GATEWAYS=4 HOSTS=8 VMS=4 CONNECTIONS=19000)
#   CHECK=1 ...                     exit 1 unless every connection opened,
#                                   jet+chaining has no violation, its tracked
#                                   share is E within max(1 point, 4 standard
#                                   errors), and stateless breaks connections
#                                   on horizon-add, outside-add and drain
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GATEWAYS=${GATEWAYS:-4}
HOSTS=${HOSTS:-8}
VMS=${VMS:-4}
CONNECTIONS=${CONNECTIONS:-19000}
INTERVAL_MS=${INTERVAL_MS:-500}
STALL_MS=${STALL_MS:-3000}
SKEW_MS=${SKEW_MS:-500}
WARMUP=${WARMUP:-3}
OBSERVE=${OBSERVE:-5}
SEED=${SEED:-1}
CHECK=${CHECK:-0}
CONFIGS=${CONFIGS:-stateless jet chaining jet+chaining}
EVENTS=${EVENTS:-horizon-add outside-add drain kill gateway-add gateway-remove mixed}
BUILD=${BUILD:-$ROOT/build}
[ "$(id -u)" -eq 0 ] || { echo "bench/fleet.sh: run as root (network namespaces)" >&2; exit 1; }
if [ "$VMS" -lt 2 ] || [ "$HOSTS" -lt 2 ] || [ "$GATEWAYS" -lt 2 ]; then
  echo "bench/fleet.sh: at least 2 gateways, 2 hosts and 2 VMs a host" >&2
  exit 2
fi
[ -x "$BUILD/bench/hostlb-fleet-load" ] || ./scripts/build.sh >/dev/null
HOSTLBD=$BUILD/hostagent/hostlbd
CTL=$BUILD/hostagent/hostlbctl
LOAD=$BUILD/bench/hostlb-fleet-load
VIP=203.0.113.10
KEY=$VIP:80/tcp
P=hlfb$$
RUN=$(mktemp -d /tmp/hostlb-fleet.XXXXXX)
PIDS=()

in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }
# The fleet's roles: VM v runs on hypervisor hv((v-1)/VMS+1); the last VM of
# each hypervisor is in the horizon (first half) or outside (second half).
vm_host() { echo "hv$((($1 - 1) / VMS + 1))"; }
vm_role() {
  local slot=$((($1 - 1) % VMS + 1)) host=$((($1 - 1) / VMS + 1))
  if [ "$slot" -lt "$VMS" ]; then echo active
  elif [ "$host" -le $((HOSTS / 2)) ]; then echo horizon
  else echo outside; fi
}
first_of() {  # ROLE [NTH]: the NTH VM (1) of that role
  local n=${2:-1} v
  for v in $(seq 1 $((HOSTS * VMS))); do
    [ "$(vm_role "$v")" = "$1" ] && { n=$((n - 1)); [ "$n" -eq 0 ] && { echo "vm$v"; return; }; }
  done
}
count_of() { local v n=0; for v in $(seq 1 $((HOSTS * VMS))); do [ "$(vm_role "$v")" = "$1" ] && n=$((n + 1)); done; echo $n; }
ACTIVE=$(count_of active)
HORIZON=$(count_of horizon)
ALL_GATEWAYS=$((GATEWAYS + 1))
GATEWAY_MACS=$(for k in $(seq 1 "$ALL_GATEWAYS"); do printf '02:00:00:00:0f:%02x,' "$k"; done)
GATEWAY_MACS=${GATEWAY_MACS%,}

fleet_document() {
  local v backends="" refs=""
  for v in $(seq 1 $((HOSTS * VMS))); do
    backends+="${backends:+,}{\"name\":\"vm$v\",\"mac\":\"02:00:00:00:0a:$((10 + v))\",\"ipv4\":\"198.18.10.$((10 + v))\",\"bridge\":\"br0\",\"host\":\"$(vm_host "$v")\"}"
    case $(vm_role "$v") in
      active) refs+="${refs:+,}{\"name\":\"vm$v\",\"port\":8080}" ;;
      horizon) refs+="${refs:+,}{\"name\":\"vm$v\",\"port\":8080,\"state\":\"horizon\"}" ;;
    esac
  done
  echo "{\"version\":1,\"backends\":[$backends],\"services\":[{\"vip\":\"$VIP\",\"port\":80,\"protocol\":\"tcp\",\"backends\":[$refs]}]}"
}

start_daemon() {  # NS ARGS...
  local ns=$1; shift
  in_ns "$ns" "$HOSTLBD" --daemon-config "" --services-dir "" --config "$RUN/fleet.json" \
    --state-dir "$RUN/$ns" --socket "$RUN/$ns.sock" "$@" >"$RUN/$ns.log" 2>&1 &
  PIDS+=($!)
}
wait_ready() {  # NS
  for _ in $(seq 150); do
    "$CTL" --socket "$RUN/$1.sock" status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench/fleet.sh: hostlbd in $1 did not start:" >&2
  cat "$RUN/$1.log" >&2
  return 1
}

fleet_up() {  # CONFIG
  local config=$1 v k h
  FLEET_GATEWAYS=$GATEWAYS FLEET_SPARE_GATEWAYS=1 FLEET_HOSTS=$HOSTS FLEET_VMS=$VMS \
    "$ROOT/scripts/fleet-lab.sh" up "$P"
  fleet_document >"$RUN/fleet.json"
  for v in $(seq 1 $((HOSTS * VMS))); do
    in_ns "vm$v" "$LOAD" serve 8080 "vm$v" >"$RUN/vm$v.serve" 2>&1 &
    PIDS+=($!)
  done
  local chain=() track=()
  case $config in *chaining*) chain=(--chain-uplink up0 --chain-gateways "$GATEWAY_MACS" --chain-window 120) ;; esac
  case $config in jet*) ;; *) track=(--no-tracking) ;; esac
  for h in $(seq 1 "$HOSTS"); do start_daemon "hv$h" --host-name "hv$h" "${chain[@]}"; done
  for k in $(seq 1 "$ALL_GATEWAYS"); do
    start_daemon "gw$k" --role gateway --client-interface cli0 --fabric-interface fab0 \
      --drain-warmup "$WARMUP" --track-timeout 60 "${track[@]}"
  done
  for h in $(seq 1 "$HOSTS"); do wait_ready "hv$h"; done
  for k in $(seq 1 "$ALL_GATEWAYS"); do wait_ready "gw$k"; done
  for v in $(seq 1 $((HOSTS * VMS))); do
    for _ in $(seq 50); do grep -q listening "$RUN/vm$v.serve" && break; sleep 0.1; done
  done
}

fleet_down() {
  if [ -n "${CLIENT_PID:-}" ]; then
    { echo quit >&"${CLIENT[1]}"; } 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=
  fi
  [ ${#PIDS[@]} -gt 0 ] && { kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; }
  PIDS=()
  "$ROOT/scripts/fleet-lab.sh" down "$P"
  rm -rf "${RUN:?}"/*
}
cleanup() { fleet_down; rm -rf "$RUN" "$RUN.results"; }
trap cleanup EXIT

# One update on every node: the hosts at once, then each gateway after its
# own random delay of 0..SKEW_MS (RANDOM is seeded per run).
update_all() {  # FUNCTION: called with a socket, runs hostlbctl commands
  local h k delays=() jobs=()
  for h in $(seq 1 "$HOSTS"); do "$1" "$RUN/hv$h.sock" & jobs+=($!); done
  wait "${jobs[@]}"
  jobs=()
  for k in $(seq 1 "$ALL_GATEWAYS"); do delays+=($((RANDOM % (SKEW_MS + 1)))); done
  for k in $(seq 1 "$ALL_GATEWAYS"); do
    (sleep "$(awk -v ms="${delays[$((k - 1))]}" 'BEGIN { printf "%.3f", ms / 1000 }')"; "$1" "$RUN/gw$k.sock") &
    jobs+=($!)
  done
  wait "${jobs[@]}"
  [ ! -e "$RUN/update-failed" ] || exit 1
}
# A failed command fails the run (it runs in the background: a file says so).
ctl() {
  "$CTL" --socket "$@" >/dev/null && return 0
  echo "bench/fleet.sh: hostlbctl --socket $* failed" >&2
  touch "$RUN/update-failed"
}
promote() { ctl "$1" service promote "$KEY" "$H1"; }
attach_outside() { ctl "$1" service attach "$KEY" "$O1:8080"; }
drain() { ctl "$1" service drain "$KEY" "$A1"; }
detach_killed() { ctl "$1" service detach "$KEY" "$A2"; }
mixed() { promote "$1"; attach_outside "$1"; drain "$1"; detach_killed "$1"; }
kill_vm() {  # its VM goes down; its connections no longer count
  in_ns "$A2" ip link set eth0 down
  echo "exclude $A2" >&"${CLIENT[1]}"
}
route() { "$ROOT/scripts/fleet-lab.sh" route "$P" "$@"; }
gateways() { seq -f 'gw%g' "$1" "$2"; }
settle() { sleep "$(awk -v w="$WARMUP" -v s="$SKEW_MS" 'BEGIN { printf "%.3f", w + s / 1000 + 1.5 }')"; }

event() {
  case $1 in
    horizon-add) update_all promote ;;
    outside-add) update_all attach_outside ;;
    drain) update_all drain ;;
    kill) kill_vm; update_all detach_killed ;;
    gateway-add) update_all promote; mapfile -t gws < <(gateways 1 "$ALL_GATEWAYS"); route "${gws[@]}" ;;
    gateway-remove)
      update_all drain; settle
      mapfile -t gws < <(gateways 1 $((GATEWAYS - 1))); route "${gws[@]}" ;;
    mixed)
      kill_vm; update_all mixed; settle
      mapfile -t gws < <(gateways 1 $((GATEWAYS - 1))); gws+=("gw$ALL_GATEWAYS"); route "${gws[@]}" ;;
    *) echo "bench/fleet.sh: no event $1" >&2; exit 2 ;;
  esac
}

report() {  # prints the client's report line
  local line
  echo report >&"${CLIENT[1]}"
  read -r -t 30 line <&"${CLIENT[0]}"
  echo "$line"
}
field() { sed -E "s/.* $1=([^ ]*).*/\\1/" <<<"$2"; }
tracked_flows() {
  local k n=0 f
  for k in $(seq 1 "$ALL_GATEWAYS"); do
    f=$("$CTL" --socket "$RUN/gw$k.sock" --json status | sed -n 's/.*"flows": \([0-9]*\).*/\1/p' | head -1)
    n=$((n + ${f:-0}))
  done
  echo "$n"
}

H1=$(first_of horizon)
O1=$(first_of outside)
A1=$(first_of active 1)
A2=$(first_of active 2)
echo "hostlb fleet emulation: $GATEWAYS gateways (+1 spare), $HOSTS hypervisors x $VMS VMs," \
  "$ACTIVE active + $HORIZON horizon backends, $CONNECTIONS connections, heartbeat ${INTERVAL_MS} ms," \
  "skew 0-${SKEW_MS} ms, drain warm-up ${WARMUP} s, seed $SEED"
echo "events: horizon-add promotes $H1, outside-add attaches $O1, drain drains $A1, kill takes $A2"
printf '%-13s %-15s %6s %11s %8s %8s %8s %9s %9s\n' config event conns violations changed reset stalled tracked max/mean
RESULTS=$RUN.results
: >"$RESULTS"
for event_name in $EVENTS; do
  for config in $CONFIGS; do
    RANDOM=$SEED
    fleet_up "$config"
    coproc CLIENT { exec ip netns exec "$P-cl" "$LOAD" client "$VIP" 80 "$CONNECTIONS" \
      --interval "$INTERVAL_MS" --stall "$STALL_MS" --seed "$SEED"; }
    CLIENT_PID=$!
    read -r -t 120 ready <&"${CLIENT[0]}" || { echo "bench/fleet.sh: the client did not get ready" >&2; exit 1; }
    [[ $ready == ready* ]] || { echo "bench/fleet.sh: the client said: $ready" >&2; exit 1; }
    failed=$(field failed "$ready")
    sleep 1
    before=$(report)
    [[ $before == report* ]] || { echo "bench/fleet.sh: no report from the client" >&2; exit 1; }
    tracked=$(tracked_flows)
    alive=$(field alive "$before")
    balance=$(field backends "$before" | tr ',' '\n' | awk -F: -v n="$alive" -v a="$ACTIVE" \
      '$2 > max { max = $2 } END { printf "%.2f", n ? max / (n / a) : 0 }')
    event "$event_name"
    sleep "$OBSERVE"
    after=$(report)
    [[ $after == report* ]] || { echo "bench/fleet.sh: no report from the client" >&2; exit 1; }
    v=$(field violations "$after")
    counted=$((CONNECTIONS - failed - $(field excluded "$after")))
    share=$(awk -v t="$tracked" -v n="$alive" 'BEGIN { printf "%.1f%%", n ? 100 * t / n : 0 }')
    printf '%-13s %-15s %6s %11s %8s %8s %8s %9s %9s\n' "$config" "$event_name" "$counted" "$v" \
      "$(field changed "$after")" "$(field reset "$after")" "$(field stalled "$after")" "$share" "$balance"
    [ "$failed" -eq 0 ] || echo "  ($failed connections did not open and are not counted)"
    echo "$config $event_name $counted $v $tracked $alive $failed" >>"$RESULTS"
    fleet_down
  done
done

awk -v h="$HORIZON" -v a="$ACTIVE" -v check="$CHECK" '
  $1 == "jet+chaining" { n += $3; v += $4; t += $5; alive += $6 }
  { failed += $7 }
  $1 == "stateless" && ($2 == "horizon-add" || $2 == "outside-add" || $2 == "drain") {
    shown++; if ($4 > 0) broke++ }
  END {
    e = h / (a + h); share = alive ? t / alive : 0
    if (n) printf "fleet: %d connections, %d violations, tracked %.1f%% (H/(N+H) = %.1f%%)\n", n, v, 100 * share, 100 * e
    if (!check) exit 0
    tolerance = 4 * sqrt(e * (1 - e) / (alive ? alive : 1)); if (tolerance < 0.01) tolerance = 0.01
    bad = 0
    if (!n) { print "check: no jet+chaining run"; bad = 1 }
    if (v > 0) { print "check: jet+chaining broke " v " connections"; bad = 1 }
    if (failed > 0) { print "check: " failed " connections did not open"; bad = 1 }
    if (n && (share - e > tolerance || e - share > tolerance)) {
      printf "check: tracked %.3f is not %.3f +- %.3f\n", share, e, tolerance; bad = 1 }
    if (shown && broke < shown) { print "check: stateless kept every connection through an event that moves them"; bad = 1 }
    exit bad
  }' "$RESULTS"
