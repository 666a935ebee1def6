#!/usr/bin/env bash
# The fleet demo: a client behind a router that spreads VIP flows over two
# gateways by ECMP; both gateways run `hostlbd --role gateway`, both
# hypervisors `hostlbd` with the same fleet document. Each flow lands on the
# backend `hostlbctl which` predicts, on either hypervisor, whichever
# gateway carried it; replies go straight back from the hypervisor.
# Expects a build (scripts/demo.sh runs it after its own part).
#
#   scripts/demo-fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
P=hlf
RUN=/tmp/hostlb-demo-fleet
HOSTLBD=$ROOT/build/hostagent/hostlbd
CTL=$ROOT/build/hostagent/hostlbctl
[ "$(id -u)" -eq 0 ] || { echo "demo-fleet.sh: run as root (network namespaces)" >&2; exit 1; }
[ -x "$HOSTLBD" ] || { echo "demo-fleet.sh: build first (scripts/build.sh)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  "$ROOT/scripts/fleet-lab.sh" down "$P"
  rm -rf "$RUN"
}
cleanup
mkdir -p "$RUN"
trap cleanup EXIT

say "fleet $P: client -> router (ECMP) -> gateways gw1 gw2 -> fabric -> hypervisors hv1 (vm1 vm2) and hv2 (vm3 vm4)"
"$ROOT/scripts/fleet-lab.sh" up "$P"

cat >"$RUN/fleet.json" <<'JSON'
{"version": 1,
 "backends": [
   {"name": "vm1", "mac": "02:00:00:00:0a:11", "ipv4": "198.18.10.11", "bridge": "br0", "host": "hv1"},
   {"name": "vm2", "mac": "02:00:00:00:0a:12", "ipv4": "198.18.10.12", "bridge": "br0", "host": "hv1"},
   {"name": "vm3", "mac": "02:00:00:00:0a:13", "ipv4": "198.18.10.13", "bridge": "br0", "host": "hv2"},
   {"name": "vm4", "mac": "02:00:00:00:0a:14", "ipv4": "198.18.10.14", "bridge": "br0", "host": "hv2"}],
 "services": [{"vip": "203.0.113.10", "port": 80, "protocol": "tcp",
   "backends": [{"name": "vm1", "port": 8080}, {"name": "vm2", "port": 8080},
                {"name": "vm3", "port": 8080}, {"name": "vm4", "port": 8080, "weight": 2}]}]}
JSON
say "one fleet document for every host and gateway"
cat "$RUN/fleet.json"

for vm in vm1 vm2 vm3 vm4; do
  ip netns exec "$P-$vm" socat TCP4-LISTEN:8080,fork,reuseaddr SYSTEM:"echo $vm" &
done

start() {  # NS ARGS...: hostlbd in namespace NS, its socket $RUN/NS.sock
  local ns=$1; shift
  ip netns exec "$P-$ns" "$HOSTLBD" --daemon-config "" --services-dir "" \
    --config "$RUN/fleet.json" --state-dir "$RUN/$ns" --socket "$RUN/$ns.sock" "$@" \
    >"$RUN/$ns.log" 2>&1 &
  for _ in $(seq 100); do
    "$CTL" --socket "$RUN/$ns.sock" status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$RUN/$ns.log"; exit 1
}
say "hostlbd on hv1 and hv2 (each serves its own VMs; chaining on the uplink), and as a gateway on gw1 and gw2"
CHAIN=(--chain-uplink up0 --chain-gateways 02:00:00:00:0f:01,02:00:00:00:0f:02)
start hv1 --host-name hv1 "${CHAIN[@]}"
start hv2 --host-name hv2 "${CHAIN[@]}"
start gw1 --role gateway --client-interface cli0 --fabric-interface fab0
start gw2 --role gateway --client-interface cli0 --fabric-interface fab0
for gw in gw1 gw2; do
  echo "  $gw digest: $("$CTL" --socket "$RUN/$gw.sock" gateway digest)"
done
say "rows per backend (vm4 weighs 2)"
"$CTL" --socket "$RUN/gw1.sock" gateway table 203.0.113.10:80/tcp | sed 's/^/  /'

say "16 connections from the client: the backend that answered, and which one hostlbctl predicted"
declare -A count
ok=0
for i in $(seq 1 16); do
  src=198.18.20.$(((i - 1) % 8 + 1)) port=$((40000 + i))
  got=$(ip netns exec "$P-cl" socat -T3 - "TCP:203.0.113.10:80,bind=$src:$port" </dev/null || true)
  predicted=$("$CTL" --socket "$RUN/gw1.sock" --json which 203.0.113.10:80/tcp "$src:$port" |
    sed -n 's/.*"backend": "\([^"]*\)".*/\1/p')
  mark=ok; [ "$got" = "$predicted" ] && ok=$((ok + 1)) || mark=MISMATCH
  count[$got]=$((${count[$got]:-0} + 1))
  printf '  %-18s -> %-4s (predicted %s) %s\n' "$src:$port" "${got:-none}" "$predicted" "$mark"
done
echo "  per backend: $(for b in "${!count[@]}"; do printf '%s=%s ' "$b" "${count[$b]}"; done)"
echo "  $ok of 16 as predicted"
say "the gateways' counters: which gateway carried how many flows (ECMP)"
for gw in gw1 gw2; do
  n=$(ip netns exec "$P-rt" ip -s link show "$gw" | awk '/TX:/ {getline; print $2}')
  echo "  $gw: $n packets from the router"
done
say "a backend's life at the gateways: vm3 back to the horizon, then promoted (JET)"
for ns in hv1 hv2 gw1 gw2; do
  "$CTL" --socket "$RUN/$ns.sock" service horizon 203.0.113.10:80/tcp vm3 >/dev/null
done
"$CTL" --socket "$RUN/gw1.sock" gateway table 203.0.113.10:80/tcp | sed 's/^/  /'
"$CTL" --socket "$RUN/gw1.sock" status | grep '^tracking' | sed 's/^/  /'
for ns in hv1 hv2 gw1 gw2; do
  "$CTL" --socket "$RUN/$ns.sock" service promote 203.0.113.10:80/tcp vm3 >/dev/null
done
"$CTL" --socket "$RUN/gw1.sock" status | grep '^tracking' | sed 's/^/  /'
"$CTL" --socket "$RUN/hv2.sock" status | grep "^chaining" | sed "s/^/  hv2: /"
say "fleet demo done; tearing it down"
[ "$ok" -eq 16 ]
