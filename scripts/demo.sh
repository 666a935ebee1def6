#!/usr/bin/env bash
# The hostlb demo: installs what it needs, builds, brings up a lab of network
# namespaces (clients c1 c2, a hypervisor with br0, backends vm1 vm2), runs
# hostlbd in the hypervisor, and shows real TCP and UDP connections to two
# VIPs (and an IPv6 VIP) served by one backend, with replies coming back from
# the VIP each client used, and a health check taking a dead backend out and
# back in; then runs the fleet demo (scripts/demo-fleet.sh:
# a router, two gateways and two hypervisors on one fleet document). Then it
# tears the labs down.
#
#   scripts/demo.sh            run the demo and clean up
#   scripts/demo.sh --keep     leave the lab and hostlbd running to explore
#   scripts/demo.sh --down     tear down a lab left by --keep
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
P=hlb
RUN=/tmp/hostlb-demo
keep=0
case "${1:-}" in
  --keep) keep=1 ;;
  --down)
    [ -f "$RUN/hostlbd.pid" ] && kill "$(cat "$RUN/hostlbd.pid")" 2>/dev/null || true
    "$ROOT/scripts/lab.sh" down "$P"
    # Nothing of hostlb outlives its namespaces; the run directory goes too.
    rm -rf "$RUN"
    echo "lab $P removed"
    exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--keep|--down]" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then echo "demo.sh: run as root (network namespaces)" >&2; exit 1; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }

say "installing dependencies and building"
./scripts/install-deps.sh
./scripts/build.sh >/dev/null
HOSTLBD=$ROOT/build/hostagent/hostlbd
CTL="$ROOT/build/hostagent/hostlbctl --socket $RUN/hostlbd.sock"

cleanup() {
  if [ "$keep" -eq 0 ]; then
    [ -f "$RUN/hostlbd.pid" ] && kill "$(cat "$RUN/hostlbd.pid")" 2>/dev/null || true
    "$ROOT/scripts/lab.sh" down "$P"
    rm -rf "$RUN"
  fi
}
"$ROOT/scripts/lab.sh" down "$P"
rm -rf "$RUN" && mkdir -p "$RUN"
trap cleanup EXIT

say "lab $P: clients c1 c2, hypervisor $P-hv with bridge br0, backends vm1 vm2"
"$ROOT/scripts/lab.sh" up "$P"

cat > "$RUN/demo.json" <<'JSON'
{"version": 1,
 "backends": [{"name": "web-1", "mac": "02:00:00:00:01:11", "ipv4": "198.18.1.11",
               "ipv6": "2001:db8:1::11", "bridge": "br0"},
              {"name": "web-2", "mac": "02:00:00:00:01:12", "ipv4": "198.18.1.12",
               "bridge": "br0"}],
 "services": [
   {"vip": "203.0.113.10", "port": 80, "protocol": "tcp", "backends": [{"name": "web-1", "port": 8080}]},
   {"vip": "203.0.113.20", "port": 80, "protocol": "tcp", "backends": [{"name": "web-1", "port": 8080}]},
   {"vip": "203.0.113.10", "port": 53, "protocol": "udp", "backends": [{"name": "web-1", "port": 5353}]},
   {"vip": "203.0.113.20", "port": 53, "protocol": "udp", "backends": [{"name": "web-1", "port": 5353}]},
   {"vip": "2001:db8:f00::10", "port": 80, "protocol": "tcp", "backends": [{"name": "web-1", "port": 8080}]}]}
JSON
say "state document $RUN/demo.json"
cat "$RUN/demo.json"

say "starting hostlbd in $P-hv"
# Health probes leave from an address of the hypervisor's on br0, in the
# backends' subnet (so that they can answer it).
in_ns hv ip addr add 198.18.255.254/32 dev br0
# A route towards the clients, for the TCP resets of refused connections
# (a real hypervisor has a default route).
in_ns hv ip route add 198.18.0.0/15 dev br0
# Not through in_ns: $! must be hostlbd itself (ip netns exec execs it).
ip netns exec "$P-hv" "$HOSTLBD" --config "$RUN/demo.json" --state-dir "$RUN/state" \
  --socket "$RUN/hostlbd.sock" --health-source-ipv4 198.18.255.254 >"$RUN/hostlbd.log" 2>&1 &
echo $! >"$RUN/hostlbd.pid"
for _ in $(seq 50); do
  grep -q "applied $RUN/demo.json" "$RUN/hostlbd.log" && break
  kill -0 "$(cat "$RUN/hostlbd.pid")" 2>/dev/null || { cat "$RUN/hostlbd.log"; exit 1; }
  sleep 0.1
done
sed 's/^/  hostlbd: /' "$RUN/hostlbd.log"

say "nftables table inet hostlb in $P-hv"
in_ns hv nft list table inet hostlb

# Backend vm1 answers on 8080 (TCP, IPv4 and IPv6) and 5353 (UDP) with what it sees.
# (Health probes close with a reset: socat's complaints about them are not
# shown.)
ip netns exec "$P-vm1" socat TCP4-LISTEN:8080,fork,reuseaddr \
  SYSTEM:'echo "vm1 at $SOCAT_SOCKADDR:$SOCAT_SOCKPORT sees client $SOCAT_PEERADDR:$SOCAT_PEERPORT"; sleep 1' 2>/dev/null &
ip netns exec "$P-vm1" socat TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=1 \
  SYSTEM:'echo "vm1 at $SOCAT_SOCKADDR:$SOCAT_SOCKPORT sees client $SOCAT_PEERADDR:$SOCAT_PEERPORT"; sleep 1' &
ip netns exec "$P-vm1" socat UDP4-RECVFROM:5353,fork \
  SYSTEM:'echo "vm1 at port 5353 sees client $SOCAT_PEERADDR:$SOCAT_PEERPORT"' &
sleep 0.3

# The clients play the gateway too: frames for a VIP go to the MAC of vm1.
for c in c1 c2; do
  for vip in 203.0.113.10 203.0.113.20 2001:db8:f00::10; do
    "$ROOT/scripts/lab.sh" gateway "$P" "$c" "$vip" 02:00:00:00:01:11
  done
done

tcp_demo() {  # CLIENT VIP-ADDRESS-FOR-SOCAT VIP-FOR-SS
  local c=$1 target=$2 vip=$3
  say "TCP  $c -> $target"
  # stdin stays open for a second, so the connection can be looked at.
  sleep 1 | in_ns "$c" socat -T3 - "TCP:$target" | sed 's/^/  backend says: /' &
  sleep 0.4
  in_ns "$c" ss -tnH state established dst "$vip" |
    awk '{print "  client socket: " $3 " -> " $4 "  (connected, so replies come from the VIP)"}'
  wait $!
}
udp_demo() {  # CLIENT VIP:PORT
  local c=$1 target=$2
  say "UDP  $c -> $target (a connected UDP socket only accepts replies from $target)"
  local reply
  reply=$(echo ping | in_ns "$c" socat -T2 - "UDP-CONNECT:$target" || true)
  if [ -n "$reply" ]; then echo "  reply from $target: $reply"; else echo "  NO REPLY"; exit 1; fi
}

tcp_demo c1 203.0.113.10:80 203.0.113.10
tcp_demo c2 203.0.113.20:80 203.0.113.20
udp_demo c1 203.0.113.10:53
udp_demo c2 203.0.113.20:53
tcp_demo c1 '[2001:db8:f00::10]:80' '[2001:db8:f00::10]'

say "conntrack in $P-hv: each connection remembers its VIP (orig dst) and backend (reply src); mark = binding"
in_ns hv conntrack -L 2>/dev/null | grep -E 'dst=(203\.0\.113|2001:db8:f00::)' | sed 's/^/  /'

say "a live change with hostlbctl: web-1 also serves 203.0.113.30:80/tcp"
$CTL service add 203.0.113.30:80/tcp --backend web-1:8080 | sed 's/^/  /'
"$ROOT/scripts/lab.sh" gateway "$P" c2 203.0.113.30 02:00:00:00:01:11
tcp_demo c2 203.0.113.30:80 203.0.113.30
say "a health check: hostlbd probes web-1's port 8080 for 203.0.113.10:80/tcp twice a second"
$CTL service health 203.0.113.10:80/tcp --interval 0.5 --timeout 0.4 --fall 2 | sed 's/^/  /'
sleep 1.5
$CTL health | sed 's/^/  /'
say "web-1's service on 8080 dies (vm1 resets new connections): the host refuses it at once"
in_ns vm1 nft add table inet demo
in_ns vm1 nft 'add chain inet demo in { type filter hook input priority 0; }'
in_ns vm1 nft add rule inet demo in tcp dport 8080 tcp flags \& '(syn | ack)' == syn reject with tcp reset
sleep 1.5
$CTL health | sed 's/^/  /'
if in_ns c1 socat -T2 - TCP:203.0.113.10:80 </dev/null 2>/dev/null; then
  echo "  UNEXPECTED: a connection to the down backend"
  exit 1
fi
echo "  c1 -> 203.0.113.10:80: refused (hostlbd's refusal: a TCP reset)"
$CTL stats | sed -n '1,/^$/p' | sed 's/^/  /'
say "it comes back: serving again"
in_ns vm1 nft delete table inet demo
sleep 1.5
$CTL health | sed 's/^/  /'
tcp_demo c1 203.0.113.10:80 203.0.113.10
say "hostlbctl status and service list"
$CTL status | sed 's/^/  /'
$CTL service list | sed 's/^/  /'

say "and a whole fleet: two gateways and two hypervisors on one fleet document"
"$ROOT/scripts/demo-fleet.sh"

if [ "$keep" -eq 1 ]; then
  say "the lab stays up (hostlbd pid $(cat "$RUN/hostlbd.pid"), log $RUN/hostlbd.log). Explore:"
  cat <<TXT
  $CTL status                        # hostlbctl against the demo's daemon
  ip netns exec $P-hv nft list table inet hostlb
  ip netns exec $P-hv conntrack -L
  ip netns exec $P-c1 socat - TCP:203.0.113.10:80
  ip netns exec $P-hv ip route show proto 213
  kill -HUP \$(cat $RUN/hostlbd.pid)     # re-read $RUN/demo.json
  $0 --down                               # tear it all down
TXT
else
  say "demo done; tearing the lab down"
fi
