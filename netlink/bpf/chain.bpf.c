// Chaining on a host (second chance), at tc ingress of the host's uplink:
// a mid-flow TCP packet of a VIP flow that a gateway sent here, whose row
// changed owner in the service's last change, and that has no conntrack
// entry on this host, goes once to the row's previous owner: Ethernet
// destination rewritten, source set to this host's (frames from a host are
// never chained again), L3/L4 untouched, sent back out of the uplink.
// Everything else passes on unchanged (to the next tc filter, then the
// bridge). IPv4 (no options) and
// IPv6 (TCP right after the fixed header).
//
// The row is computed as the gateways' nft rule computes it: jhash over
// saddr . th sport . daddr . th dport (each field in whole 4-byte
// registers, ports zero-padded: 16 bytes for IPv4, 40 for IPv6), seed
// 0x686c6231, scaled as (h * rows) >> 32 (policies/selection.h holds the
// model this must match).
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "selection.bpf.h"

// Not ours: the next tc filter (the host program, if any) decides.
#define TC_ACT_UNSPEC (-1)
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, u32,
                                         struct bpf_ct_opts *, u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;

struct service_value {
  u32 index;  // the host's own: rows are keyed index << 16 | row
  u32 rows;
};
struct mac {
  u8 bytes[6];
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct service_key);
  __type(value, struct service_value);
} services SEC(".maps");

// Rows whose owner changed in the last change of their service, whose new
// owner runs here and the previous one elsewhere: row key -> previous
// owner's MAC. hostlbd removes them when the chaining window ends.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1 << 20);
  __type(key, u32);
  __type(value, struct mac);
} previous SEC(".maps");

// The gateways' MACs: only their frames are chained (one hop).
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 256);
  __type(key, struct mac);
  __type(value, u8);
} gateways SEC(".maps");

// [0]: this host's uplink MAC (the source of chained frames).
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, u32);
  __type(value, struct mac);
} self SEC(".maps");

// Chained packets per service index.
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 65536);
  __type(key, u32);
  __type(value, u64);
} chained SEC(".maps");

SEC("tc")
int hostlb_chain(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end) return TC_ACT_UNSPEC;
  struct service_key key = {.proto = IPPROTO_TCP};
  struct bpf_sock_tuple tuple = {};
  u32 tuple_size;
  u32 words[10] = {};
  bool v6;
  struct tcphdr *tcp;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5) return TC_ACT_UNSPEC;
    if (ip->frag_off & bpf_htons(0x3fff)) return TC_ACT_UNSPEC;  // fragments: not ours to guess
    tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end) return TC_ACT_UNSPEC;
    key.family = 4;
    __builtin_memcpy(key.vip, &ip->daddr, 4);
    tuple.ipv4.saddr = ip->saddr;
    tuple.ipv4.daddr = ip->daddr;
    tuple.ipv4.sport = tcp->source;
    tuple.ipv4.dport = tcp->dest;
    tuple_size = sizeof(tuple.ipv4);
    // The words the kernel's jhash reads: each field's bytes in network
    // order in its own 4-byte slot, read as a little-endian word.
    words[0] = ip->saddr;
    words[1] = (u32)tcp->source;
    words[2] = ip->daddr;
    words[3] = (u32)tcp->dest;
    v6 = false;
  } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP) return TC_ACT_UNSPEC;
    tcp = (void *)(ip6 + 1);
    if ((void *)(tcp + 1) > end) return TC_ACT_UNSPEC;
    key.family = 6;
    __builtin_memcpy(key.vip, &ip6->daddr, 16);
    __builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
    __builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
    tuple.ipv6.sport = tcp->source;
    tuple.ipv6.dport = tcp->dest;
    tuple_size = sizeof(tuple.ipv6);
    __builtin_memcpy(&words[0], &ip6->saddr, 16);
    words[4] = (u32)tcp->source;
    __builtin_memcpy(&words[5], &ip6->daddr, 16);
    words[9] = (u32)tcp->dest;
    v6 = true;
  } else {
    return TC_ACT_UNSPEC;
  }
  if (tcp->syn || tcp->rst) return TC_ACT_UNSPEC;

  struct mac source;
  __builtin_memcpy(source.bytes, eth->h_source, 6);
  if (!bpf_map_lookup_elem(&gateways, &source)) return TC_ACT_UNSPEC;
  key.port = tcp->dest;
  struct service_value *service = bpf_map_lookup_elem(&services, &key);
  if (!service || service->rows == 0) return TC_ACT_UNSPEC;

  const u32 row = flow_row(words, v6, service->rows);
  u32 row_key = service->index << 16 | row;
  struct mac *previous_owner = bpf_map_lookup_elem(&previous, &row_key);
  if (!previous_owner) return TC_ACT_UNSPEC;

  struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = IPPROTO_TCP};
  struct nf_conn *ct = bpf_skb_ct_lookup(skb, &tuple, tuple_size, &opts, sizeof(opts));
  if (ct) {
    bpf_ct_release(ct);
    return TC_ACT_UNSPEC;  // this host has the connection
  }
  u32 zero = 0;
  struct mac *self_mac = bpf_map_lookup_elem(&self, &zero);
  if (!self_mac) return TC_ACT_UNSPEC;
  // The packet pointers are stale after the helper calls: read again.
  data = (void *)(long)skb->data;
  end = (void *)(long)skb->data_end;
  eth = data;
  if ((void *)(eth + 1) > end) return TC_ACT_UNSPEC;
  __builtin_memcpy(eth->h_dest, previous_owner->bytes, 6);
  __builtin_memcpy(eth->h_source, self_mac->bytes, 6);
  u32 index = service->index;
  u64 *count = bpf_map_lookup_elem(&chained, &index);
  if (count) {
    *count += 1;
  } else {
    u64 one = 1;
    bpf_map_update_elem(&chained, &index, &one, BPF_NOEXIST);
  }
  return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
