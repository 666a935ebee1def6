#!/usr/bin/env bash
# A fleet of network namespaces: a client, a router with an ECMP route to
# the VIPs over the gateways, one L2 fabric, and hypervisors with backend
# VMs. Replies go from the hypervisors straight back to the router (direct
# server return); only client->VIP traffic crosses a gateway.
#
#   scripts/fleet-lab.sh up    [PREFIX]        create the namespaces (PREFIX defaults to hlf)
#   scripts/fleet-lab.sh down  [PREFIX]        delete them (only those with PREFIX)
#   scripts/fleet-lab.sh route PREFIX GW...    the router's ECMP route over these gateways
#
# Sizes (environment, defaults in brackets): FLEET_GATEWAYS [2] gateways in
# the ECMP route, FLEET_SPARE_GATEWAYS [0] more wired up but outside it,
# FLEET_HOSTS [2] hypervisors, FLEET_VMS [2] VMs per hypervisor.
#
# P-cl  198.18.20.1-8/24 ── P-rt ──ecmp── P-gw1 (cli0 198.18.21.2/30 | fab0)
#                                  └───── P-gw2 (cli0 198.18.21.6/30 | fab0) ...
# gateway k: cli0 198.18.21.(4k-2)/30, fab0 MAC 02:00:00:00:0f:kk (k in hex).
# fabric bridge (P-fab): the gateways, the router's leg 198.18.10.1/24, the
# hypervisors' uplinks (up0); P-hvN: br0 with its VMs. VM v (1, 2, ...
# across hypervisors): 198.18.10.(10+v), MAC 02:00:00:00:0a:(10+v), its
# default route via the router.
set -euo pipefail
# shellcheck source=scripts/netns-lib.sh
source "$(dirname "$0")/netns-lib.sh"
cmd=${1:-}
P=${2:-hlf}
GATEWAYS=${FLEET_GATEWAYS:-2}
SPARE=${FLEET_SPARE_GATEWAYS:-0}
HOSTS=${FLEET_HOSTS:-2}
VMS=${FLEET_VMS:-2}

in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }
link() {  # NS_A IF_A NS_B IF_B: a veth pair between two namespaces
  ip link add "$2" netns "$P-$1" type veth peer name "$4" netns "$P-$3"
  ip -n "$P-$1" link set "$2" up
  ip -n "$P-$3" link set "$4" up
}

gateway_address() { echo "198.18.21.$(($1 * 4 - 2))"; }  # K: gateway k's cli0

route() {  # GW...: the router's ECMP route over these gateways
  local hops=() g
  for g in "$@"; do hops+=(nexthop via "$(gateway_address "${g#gw}")"); done
  ip -n "$P-rt" route replace 203.0.113.0/24 "${hops[@]}"
}

up() {
  if ip netns list | grep -q "^$P-rt\b"; then
    echo "fleet $P already exists (scripts/fleet-lab.sh down $P first)" >&2
    exit 1
  fi
  local total=$((GATEWAYS + SPARE)) vms=$((HOSTS * VMS)) ns
  if [ "$total" -gt 60 ] || [ "$vms" -gt 89 ]; then
    echo "fleet-lab.sh: at most 60 gateways and 89 VMs" >&2
    exit 2
  fi
  for ns in cl rt fab $(seq -f 'gw%g' 1 "$total") $(seq -f 'hv%g' 1 "$HOSTS") \
    $(seq -f 'vm%g' 1 "$vms"); do
    ip netns add "$P-$ns"
    ip -n "$P-$ns" link set lo up
  done
  # Client and router.
  link cl eth0 rt cl0
  for i in $(seq 1 8); do ip -n "$P-cl" addr add "198.18.20.$i/24" dev eth0; done
  ip -n "$P-cl" route add default via 198.18.20.254
  ip -n "$P-rt" addr add 198.18.20.254/24 dev cl0
  in_ns rt sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
  # Gateways: a link from the router each, and a port on the fabric.
  ip -n "$P-fab" link add fab type bridge
  ip -n "$P-fab" link set fab up
  local k routed=()
  for k in $(seq 1 "$total"); do
    local g=gw$k
    link rt "$g" "$g" cli0
    ip -n "$P-rt" addr add "198.18.21.$((k * 4 - 3))/30" dev "$g"
    ip -n "$P-$g" addr add "$(gateway_address "$k")/30" dev cli0
    ip link add fab0 netns "$P-$g" address "$(printf '02:00:00:00:0f:%02x' "$k")" type veth \
      peer name "$g" netns "$P-fab"
    ip -n "$P-$g" link set fab0 up
    ip -n "$P-fab" link set "$g" master fab up
    [ "$k" -le "$GATEWAYS" ] && routed+=("$g")
  done
  route "${routed[@]}"
  # The router's leg on the fabric, for the replies.
  link rt fab0 fab rt
  ip -n "$P-fab" link set rt master fab
  ip -n "$P-rt" addr add 198.18.10.1/24 dev fab0
  # Hypervisors: br0 with an uplink to the fabric and the VMs' ports.
  local v=1 h
  for h in $(seq -f 'hv%g' 1 "$HOSTS"); do
    ip -n "$P-$h" link add br0 type bridge
    ip -n "$P-$h" link set br0 up
    link fab "$h" "$h" up0
    ip -n "$P-fab" link set "$h" master fab
    ip -n "$P-$h" link set up0 master br0
    for _ in $(seq 1 "$VMS"); do
      local vm=vm$v mac ip
      mac=02:00:00:00:0a:$((10 + v))
      ip=198.18.10.$((10 + v))
      ip link add eth0 netns "$P-$vm" address "$mac" type veth peer name "$vm" netns "$P-$h"
      ip -n "$P-$h" link set "$vm" master br0 up
      ip -n "$P-$vm" link set eth0 up
      ip -n "$P-$vm" addr add "$ip/24" dev eth0
      ip -n "$P-$vm" route add default via 198.18.10.1
      v=$((v + 1))
    done
  done
}

down() { delete_namespaces "$P" 'cl|rt|gw[0-9]+|fab|hv[0-9]+|vm[0-9]+'; }

case "$cmd" in
  up) up ;;
  down) down ;;
  route) shift 2; route "$@" ;;
  *) echo "usage: $0 up|down [PREFIX] | route PREFIX GW..." >&2; exit 2 ;;
esac
