// The gateway's datapath as a tc program (hostlbd --gateway-datapath bpf),
// at tc ingress of the client interface: a frame for a VIP key gets the
// Ethernet destination of its row's owner (or of the backend its tracked
// flow keeps), the gateway's MAC as its source, and is redirected out of
// the fabric interface; L3/L4 untouched. Everything else passes unchanged.
// It is the nft table's twin (netlink/src/gateway_ruleset.cpp): the same
// rows, the same choice, the same tracking (JET), without the IP stack and
// without nftables' per-packet expression interpreter.
//
// The row is what the nft rule computes: jhash over saddr . th sport .
// daddr . th dport (each field in whole 4-byte registers, ports
// zero-padded: 16 bytes for IPv4, 40 for IPv6), seed 0x686c6231, scaled as
// (h * rows) >> 32 (policies/selection.h holds the model this must match).
// IPv4 with or without options, IPv6 with up to 4 extension headers
// (hop-by-hop, routing, destination options, fragment) before TCP or UDP;
// fragments other than the first pass, as nft's `th` does not match them.
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "selection.bpf.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define MAX_EXTENSION_HEADERS 4
// IPv6 next-header values (linux/in6.h; vmlinux.h has no macros).
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

struct service_value {
  u32 index;         // its rows are rows[index]; their marks index << 16 | row
  u32 rows;          // how many
  u32 tracked_rows;  // how many are tracked
  // Whether its packets look for a tracked flow: set by hostlbd while the
  // service has tracked rows, cleared once it has neither those nor
  // tracked flows (most of the time, so most packets skip the lookup).
  u32 lookup_flows;
};
struct gw_row {
  u8 mac[6];  // the owner's
  u8 owned;   // 0: no backend (its frames are dropped)
  u8 tracked; // flows of this row are tracked from their first packet
};
struct settings {
  u8 gateway_mac[6];
  u8 has_stamp;
  u8 pad;
  u32 fabric_ifindex;
  u32 stamp;  // of what the maps hold, written last (see gateway_stamp)
  u64 track_timeout_ns;
  u64 track_end_timeout_ns;
};
struct flow4 {
  u32 saddr, daddr;
  u16 sport, dport;
  u8 proto;
  u8 pad[3];
};
struct flow6 {
  u8 saddr[16], daddr[16];
  u16 sport, dport;
  u8 proto;
  u8 pad[3];
};
struct tracked {
  u8 mac[6];
  u8 ending;  // a FIN or RST was seen: the short timeout holds from then
  u8 pad;
  u64 expires_ns;  // bpf_ktime_get_ns() (CLOCK_MONOTONIC)
};

// The maps live as long as the program stays attached (hostlbd leaves it
// attached when it exits): a restart finds them through the program.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct service_key);
  __type(value, struct service_value);
} services SEC(".maps");

// Each service's rows: one array of its own size (BPF_F_INNER_MAP lets
// the sizes differ), swapped in whole when a service is built or rebuilt,
// written row by row when a row changes owner or becomes tracked.
struct rows_of_service {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(map_flags, BPF_F_INNER_MAP);
  // Sizes, not types: the BTF of a type only pointed to is a forward
  // declaration, which libbpf cannot size.
  __uint(key_size, sizeof(u32));
  __uint(value_size, sizeof(struct gw_row));
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, 65536);
  __type(key, u32);
  __array(values, struct rows_of_service);
} rows SEC(".maps");

// Tracked flows -> the backend they keep. Their size is the gateway's
// --track-size (set before loading); a full map takes no more flows.
// Expired flows are skipped here and swept by hostlbd.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 262144);
  __type(key, struct flow4);
  __type(value, struct tracked);
} track4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 262144);
  __type(key, struct flow6);
  __type(value, struct tracked);
} track6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, u32);
  __type(value, struct settings);
} settings SEC(".maps");

// [0] flows of tracked rows the tracking maps were asked to take, [1] those
// they took.
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2);
  __type(key, u32);
  __type(value, u64);
} counters SEC(".maps");

static __always_inline void count(u32 which) {
  u64 *n = bpf_map_lookup_elem(&counters, &which);
  if (n) *n += 1;
}

// A tracked flow's backend, if it has one that has not expired; its packet
// extends its life (a FIN or RST shortens it for good).
static __always_inline struct tracked *tracked_flow(void *map, void *flow, bool ends,
                                                    const struct settings *cfg) {
  struct tracked *t = bpf_map_lookup_elem(map, flow);
  if (!t) return 0;
  const u64 now = bpf_ktime_get_ns();
  if (t->expires_ns <= now) {
    bpf_map_delete_elem(map, flow);
    return 0;
  }
  if (ends) {
    if (!t->ending) {
      t->ending = 1;
      t->expires_ns = now + cfg->track_end_timeout_ns;
    }
  } else if (!t->ending) {
    t->expires_ns = now + cfg->track_timeout_ns;
  }
  return t;
}

SEC("tc")
int hostlb_gw(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end) return TC_ACT_OK;
  struct service_key key = {};
  struct flow4 f4 = {};
  struct flow6 f6 = {};
  u32 words[10] = {};
  bool v6, ends = false;
  void *l4;
  u8 proto;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl < 5) return TC_ACT_OK;
    if (ip->frag_off & bpf_htons(0x1fff)) return TC_ACT_OK;  // not the first fragment
    proto = ip->protocol;
    l4 = (void *)ip + ip->ihl * 4;
    key.family = 4;
    __builtin_memcpy(key.vip, &ip->daddr, 4);
    f4.saddr = ip->saddr;
    f4.daddr = ip->daddr;
    words[0] = ip->saddr;
    words[2] = ip->daddr;
    v6 = false;
  } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > end) return TC_ACT_OK;
    proto = ip6->nexthdr;
    l4 = ip6 + 1;
    // Extension headers before the transport header are skipped, as nft
    // finds `th` after them; a fragment other than the first passes.
#pragma unroll
    for (int i = 0; i < MAX_EXTENSION_HEADERS; ++i) {
      if (proto != NEXTHDR_HOP && proto != NEXTHDR_ROUTING && proto != NEXTHDR_DEST &&
          proto != NEXTHDR_FRAGMENT)
        break;
      struct ipv6_opt_hdr *ext = l4;
      if ((void *)(ext + 1) > end) return TC_ACT_OK;
      if (proto == NEXTHDR_FRAGMENT) {
        struct frag_hdr *frag = l4;
        if ((void *)(frag + 1) > end) return TC_ACT_OK;
        if (frag->frag_off & bpf_htons(0xfff8)) return TC_ACT_OK;  // not the first fragment
        l4 = frag + 1;
      } else {
        l4 = (void *)ext + (ext->hdrlen + 1) * 8;
      }
      proto = ext->nexthdr;
    }
    key.family = 6;
    __builtin_memcpy(key.vip, &ip6->daddr, 16);
    __builtin_memcpy(f6.saddr, &ip6->saddr, 16);
    __builtin_memcpy(f6.daddr, &ip6->daddr, 16);
    __builtin_memcpy(&words[0], &ip6->saddr, 16);
    __builtin_memcpy(&words[5], &ip6->daddr, 16);
    v6 = true;
  } else {
    return TC_ACT_OK;
  }
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return TC_ACT_OK;
  // Both carry the ports first; TCP's flags are read when it is TCP.
  struct udphdr *ports = l4;
  if ((void *)(ports + 1) > end) return TC_ACT_OK;
  if (proto == IPPROTO_TCP) {
    struct tcphdr *tcp = l4;
    if ((void *)(tcp + 1) > end) return TC_ACT_OK;
    ends = tcp->fin || tcp->rst;
  }
  key.proto = proto;
  key.port = ports->dest;
  struct service_value *service = bpf_map_lookup_elem(&services, &key);
  if (!service) return TC_ACT_OK;

  u32 zero = 0;
  struct settings *cfg = bpf_map_lookup_elem(&settings, &zero);
  if (!cfg) return TC_ACT_OK;
  const u8 *to = 0;
  struct tracked *t = 0;
  const bool lookup = service->lookup_flows;
  if (v6) {
    f6.sport = ports->source;
    f6.dport = ports->dest;
    f6.proto = proto;
    words[4] = (u32)ports->source;
    words[9] = (u32)ports->dest;
    if (lookup) t = tracked_flow(&track6, &f6, ends, cfg);
  } else {
    f4.sport = ports->source;
    f4.dport = ports->dest;
    f4.proto = proto;
    words[1] = (u32)ports->source;
    words[3] = (u32)ports->dest;
    if (lookup) t = tracked_flow(&track4, &f4, ends, cfg);
  }
  if (t) {
    to = t->mac;
  } else {
    u32 index = service->index;
    void *service_rows = bpf_map_lookup_elem(&rows, &index);
    if (!service_rows) return TC_ACT_SHOT;
    u32 at = flow_row(words, v6, service->rows);
    struct gw_row *owner = bpf_map_lookup_elem(service_rows, &at);
    if (!owner || !owner->owned) return TC_ACT_SHOT;  // no backend: nothing to send it to
    to = owner->mac;
    if (owner->tracked) {
      // A flow of a tracked row is tracked from its first packet seen.
      const u64 now = bpf_ktime_get_ns();
      struct tracked fresh = {.ending = ends};
      __builtin_memcpy(fresh.mac, owner->mac, 6);
      fresh.expires_ns = now + (ends ? cfg->track_end_timeout_ns : cfg->track_timeout_ns);
      count(0);
      if (bpf_map_update_elem(v6 ? (void *)&track6 : (void *)&track4, v6 ? (void *)&f6 : (void *)&f4,
                              &fresh, BPF_NOEXIST) == 0)
        count(1);
    }
  }
  __builtin_memcpy(eth->h_dest, to, 6);
  __builtin_memcpy(eth->h_source, cfg->gateway_mac, 6);
  return bpf_redirect(cfg->fabric_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
