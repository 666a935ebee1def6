# Sourced by the connection-rate benchmarks (run.sh, events.sh): a lab of
# namespaces with prefix $P, a work directory $WORK (both removed on exit),
# the connrate server on vm1:8080 and vm2:8080, and the client c1 with 64 source
# addresses delivering $VIP to vm1's MAC. Needs ROOT and CONNRATE set.
P=$1
WORK=$(mktemp -d /tmp/hostlb-bench.XXXXXX)
cleanup() { "$ROOT/scripts/lab.sh" down "$P"; rm -rf "$WORK"; }
trap cleanup EXIT
"$ROOT/scripts/lab.sh" up "$P"
in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }

VM1_MAC=02:00:00:00:01:11
VIP=203.0.113.10
# 64 client source addresses, so that no 4-tuple is reused within a run.
for i in $(seq 1 64); do in_ns c1 ip addr add "198.18.2.$i/15" dev eth0; done
"$ROOT/scripts/lab.sh" gateway "$P" c1 "$VIP" "$VM1_MAC"
ip netns exec "$P-vm1" "$CONNRATE" serve 8080 &
disown  # ended by lab.sh down with the namespace
# vm2 is no backend of any VIP: a VM that only shares the hypervisor.
ip netns exec "$P-vm2" "$CONNRATE" serve 8080 &
disown
# Connections end with a RST; keep CLOSE entries briefly so that the table
# does not fill up over a long run (this namespace only).
in_ns hv sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_close=1
