#!/usr/bin/env bash
# A lab of network namespaces: two clients (each also plays the gateway that
# delivers VIP frames by MAC), a hypervisor with a Linux bridge, and two
# backend VMs on that bridge.
#
#   scripts/lab.sh up   [PREFIX]   create the namespaces (PREFIX defaults to hlb)
#   scripts/lab.sh down [PREFIX]   delete them (only those with PREFIX)
#
# Addresses follow DESIGN.md: hosts in 198.18.0.0/15 and 2001:db8::/32,
# VIPs in 203.0.113.0/24 and 2001:db8:f00::/48.
set -euo pipefail
# shellcheck source=scripts/netns-lib.sh
source "$(dirname "$0")/netns-lib.sh"

cmd=${1:-}
P=${2:-hlb}
HV=$P-hv

# name  mac                ipv4         ipv6
VMS=("vm1 02:00:00:00:01:11 198.18.1.11 2001:db8:1::11"
     "vm2 02:00:00:00:01:12 198.18.1.12 2001:db8:1::12")
CLIENTS=("c1 02:00:00:00:00:01 198.18.0.1 2001:db8::1"
         "c2 02:00:00:00:00:02 198.18.0.2 2001:db8::2")

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# attach NAME MAC IPV4 IPV6: a namespace P-NAME whose eth0 is a port of br0 in the hypervisor.
attach() {
  local name=$1 mac=$2 v4=$3 v6=$4 ns=$P-$1
  ip netns add "$ns"
  ip link add eth0 netns "$ns" address "$mac" type veth peer name "$name" netns "$HV"
  in_ns "$HV" ip link set "$name" master br0 up
  in_ns "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  in_ns "$ns" ip link set lo up
  in_ns "$ns" ip link set eth0 up
  in_ns "$ns" ip addr add "$v4/15" dev eth0
  in_ns "$ns" ip addr add "$v6/32" dev eth0 nodad
}

# gateway CLIENT VIP MAC: the client sends frames for VIP to MAC, as a gateway would.
gateway() {
  local ns=$P-$1 vip=$2 mac=$3
  in_ns "$ns" ip route replace "$vip" dev eth0
  in_ns "$ns" ip neigh replace "$vip" lladdr "$mac" dev eth0 nud permanent
}

up() {
  if ip netns list | grep -q "^$HV\b"; then
    echo "lab $P already exists (scripts/lab.sh down $P first)" >&2
    exit 1
  fi
  ip netns add "$HV"
  in_ns "$HV" ip link set lo up
  in_ns "$HV" ip link add br0 type bridge
  in_ns "$HV" sysctl -qw net.ipv6.conf.br0.accept_dad=0
  in_ns "$HV" ip link set br0 up
  for vm in "${VMS[@]}"; do attach $vm; done
  for c in "${CLIENTS[@]}"; do attach $c; done
}

down() { delete_namespaces "$P" 'hv|vm[0-9]+|c[0-9]+|gw[0-9]+|cl[0-9]+'; }

case "$cmd" in
  up) up ;;
  down) down ;;
  gateway) shift 2; gateway "$@" ;;
  *) echo "usage: $0 up|down [PREFIX] | gateway PREFIX CLIENT VIP MAC" >&2; exit 2 ;;
esac
