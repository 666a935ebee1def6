// The host's VIP datapath without br_netfilter (hostlbd --host-datapath
// bpf), at tc ingress of every port of the backends' bridges. A frame
// neither from a backend's MAC nor to a key's passes after two lookups in a
// small map: no netfilter hook, no conntrack entry. VIP frames get what hostlb's nft table gives them, with
// their entries in the kernel's own conntrack table (conntrack -L, flush by
// mark and ctnetlink keep working):
//
// - A frame to a served key (eth.dst, VIP, protocol, port) with an entry:
//   destination rewritten to the entry's backend. Without one: a TCP SYN or
//   a UDP datagram becomes a new entry (the kfuncs: alloc, DNAT info,
//   hostlb's mark, an embryonic timeout, insert), within the service's
//   admission rate; a TCP segment that is not a SYN is a consistency miss.
// - A reply from a backend's endpoint (its MAC, address, protocol, port)
//   whose entry carries hostlb's mark: source rewritten to the VIP.
// - Refusals and misses answered from here (a TCP reset, an ICMP port
//   unreachable), sent back out of the port the frame came in by: the host's
//   routing table plays no part.
// - A backend's ICMP error about a VIP connection: from the VIP, quoting
//   what the client sent.
// - Frames from a backend's MAC with a VIP as source are forged: dropped.
//
// Conntrack's state machine never sees these packets, so the program keeps
// the entries' timeouts itself, like the kernel's: embryonic until the
// backend answers, established once both sides spoke, short after a FIN,
// shorter after a reset (then IPS_FIXED_TIMEOUT: no packet extends it
// again). Every timeout is
// hostlbd's copy of the kernel's sysctls (the `settings` map).
//
// IPv4 without options and unfragmented, IPv6 with TCP or UDP right after
// the fixed header; anything else passes untouched. Every verdict but a drop
// or an answer is TC_ACT_UNSPEC: later tc filters still run.
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "selection.bpf.h"

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_LEN 14
#define IP4_LEN 20
#define IP6_LEN 40
#define TCP_LEN 20
#define UDP_LEN 8
#define ICMP_LEN 8
#define IPPROTO_ICMPV6 58

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, u32,
                                         struct bpf_ct_opts *, u32) __ksym;
extern struct nf_conn *bpf_skb_ct_alloc(struct __sk_buff *, struct bpf_sock_tuple *, u32,
                                        struct bpf_ct_opts *, u32) __ksym;
extern struct nf_conn *bpf_ct_insert_entry(struct nf_conn *) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;
extern int bpf_ct_set_nat_info(struct nf_conn *, union nf_inet_addr *, int,
                               enum nf_nat_manip_type) __ksym;
extern void bpf_ct_set_timeout(struct nf_conn *, u32) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *, u32) __ksym;
extern int bpf_ct_change_status(struct nf_conn *, u32) __ksym;

// A key as a frame carries it: (MAC, address, protocol, port). For `keys`
// the destination's (what a gateway delivers), for `endpoints` the
// source's (what a backend answers from). hostlbd writes it as
// netlink/src/host_bpf.cpp's DeliveryKeyBpf.
struct delivery_key {
  u8 mac[6];
  u8 proto;   // IPPROTO_TCP or IPPROTO_UDP
  u8 family;  // 4 or 6
  u16 port;   // network order
  u16 pad;
  u8 addr[16];  // network order; IPv4: the first 4 bytes
};

enum { KIND_BINDING = 1, KIND_REFUSED = 2 };

struct key_value {
  u8 target[16];    // the backend's address (KIND_BINDING)
  u16 target_port;  // host order
  u8 kind;
  u8 pad;
  u32 mark;  // the binding's identity in hostlb's mark bits
  // Counted here, read by hostlbd: packets refused, consistency misses,
  // connections opened.
  u64 refused;
  u64 misses;
  u64 opened;
};

enum { MISS_RESET = 0, MISS_DROP = 1, MISS_ACCEPT = 2 };

struct settings {
  u32 mark_mask;
  u8 refuse_reject;  // 1: answer refusals (reset, ICMP), 0: drop them
  u8 miss;           // MISS_*
  u16 pad;
  // Timeouts in milliseconds.
  u32 tcp_embryonic;  // SYN sent or answered, not yet established
  u32 tcp_established;
  u32 tcp_closing;    // after a FIN
  u32 tcp_close;      // after a reset
  u32 udp_embryonic;  // not answered
  u32 udp_replied;
  u32 udp_stream;  // answered more than once
  // Admission: a new connection every `new_interval_ns` a service, up to
  // `burst_ns` ahead of time (0: no limit).
  u64 new_interval_ns;
  u64 burst_ns;
};

struct addr_key {
  u8 addr[16];
  u8 family;
  u8 pad[3];
};

struct mac {
  u8 bytes[6];
};

struct rate {
  u64 next_ns;  // when the service's next new connection is due
  u64 limited;  // connections refused for being over the rate
};

enum {
  TOTAL_GUARD_DROPS,
  TOTAL_MISSES,
  TOTAL_LIMITED,
  TOTAL_NO_ENTRY,  // allocation or insertion failed (table full, a race)
  TOTAL_OPENED,
  TOTAL_REFUSED,
  TOTAL_COUNT = 8,
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, u32);
  __type(value, struct settings);
} settings SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);  // sized by what hostlbd writes
  __uint(max_entries, 1 << 20);
  __type(key, struct delivery_key);
  __type(value, struct key_value);
} keys SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);  // sized by what hostlbd writes
  __uint(max_entries, 1 << 20);
  __type(key, struct delivery_key);
  __type(value, u8);
} endpoints SEC(".maps");

// The MACs that matter, with what they are: a frame neither from nor to one
// of them is not VIP-related (two lookups, then it passes).
enum {
  MAC_BACKEND = 1,  // a local backend's: its frames can be replies, or forged
  MAC_KEYS = 2,     // the destination of served or refused keys
};
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);  // sized by what hostlbd writes
  __uint(max_entries, 65536);
  __type(key, struct mac);
  __type(value, u8);
} backend_macs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);  // sized by what hostlbd writes
  __uint(max_entries, 65536);
  __type(key, struct addr_key);
  __type(value, u8);
} guard_vips SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct service_key);
  __type(value, struct rate);
} rates SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, TOTAL_COUNT);
  __type(key, u32);
  __type(value, u64);
} totals SEC(".maps");

struct packet {
  struct bpf_sock_tuple tuple;  // as the frame carries it
  u8 family, proto;
  u8 syn, ack, fin, rst;
  u16 l4_len;        // transport header and payload
  u32 seq, ack_seq;  // TCP, network order
  u8 doff;
  struct mac source, dest;
};

static __always_inline void count(u32 which) {
  u64 *value = bpf_map_lookup_elem(&totals, &which);
  if (value) *value += 1;
}

// The network and transport headers (the MACs are read before): 0 for TCP
// and UDP, 1 for another protocol (addresses only), -1 for anything else.
static __always_inline int parse(struct __sk_buff *skb, struct packet *p) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end) return -1;
  void *l4;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl != 5) return -1;
    if (ip->frag_off & bpf_htons(0x3fff)) return -1;
    p->family = 4;
    p->proto = ip->protocol;
    p->tuple.ipv4.saddr = ip->saddr;
    p->tuple.ipv4.daddr = ip->daddr;
    p->l4_len = bpf_ntohs(ip->tot_len) - IP4_LEN;
    l4 = ip + 1;
  } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > end) return -1;
    p->family = 6;
    p->proto = ip6->nexthdr;
    __builtin_memcpy(p->tuple.ipv6.saddr, &ip6->saddr, 16);
    __builtin_memcpy(p->tuple.ipv6.daddr, &ip6->daddr, 16);
    p->l4_len = bpf_ntohs(ip6->payload_len);
    l4 = ip6 + 1;
  } else {
    return -1;
  }
  __be16 sport, dport;
  if (p->proto == IPPROTO_TCP) {
    struct tcphdr *tcp = l4;
    if ((void *)(tcp + 1) > end) return -1;
    sport = tcp->source;
    dport = tcp->dest;
    p->syn = tcp->syn;
    p->ack = tcp->ack;
    p->fin = tcp->fin;
    p->rst = tcp->rst;
    p->seq = tcp->seq;
    p->ack_seq = tcp->ack_seq;
    p->doff = tcp->doff;
  } else if (p->proto == IPPROTO_UDP) {
    struct udphdr *udp = l4;
    if ((void *)(udp + 1) > end) return -1;
    sport = udp->source;
    dport = udp->dest;
  } else {
    return 1;  // addresses only
  }
  if (p->family == 4) {
    p->tuple.ipv4.sport = sport;
    p->tuple.ipv4.dport = dport;
  } else {
    p->tuple.ipv6.sport = sport;
    p->tuple.ipv6.dport = dport;
  }
  return 0;
}

static __always_inline __be16 sport_of(const struct packet *p) {
  return p->family == 4 ? p->tuple.ipv4.sport : p->tuple.ipv6.sport;
}
static __always_inline __be16 dport_of(const struct packet *p) {
  return p->family == 4 ? p->tuple.ipv4.dport : p->tuple.ipv6.dport;
}

static __always_inline void copy_addr(u8 *to, const struct packet *p, bool source) {
  if (p->family == 4)
    __builtin_memcpy(to, source ? &p->tuple.ipv4.saddr : &p->tuple.ipv4.daddr, 4);
  else
    __builtin_memcpy(to, source ? p->tuple.ipv6.saddr : p->tuple.ipv6.daddr, 16);
}

static __always_inline u16 fold(u64 sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (u16)~sum;
}

// Rewrites one address and one port of the frame (the destination's on the
// way in, the source's on the way out), checksums updated incrementally:
// correct whatever the frame's checksum state (offloaded or not).
static __always_inline int rewrite(struct __sk_buff *skb, const struct packet *p, bool source,
                                   const void *addr, __be16 port) {
  const u32 alen = p->family == 4 ? 4 : 16;
  const u32 l3 = ETH_LEN;
  const u32 l4 = ETH_LEN + (p->family == 4 ? IP4_LEN : IP6_LEN);
  u32 addr_off, port_off, csum_off;
  if (p->family == 4)
    addr_off = l3 + (source ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
  else
    addr_off = l3 + (source ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));
  port_off = l4 + (source ? 0 : 2);  // source and dest lead both headers
  u64 l4_flags = BPF_F_PSEUDO_HDR;
  if (p->proto == IPPROTO_TCP) {
    csum_off = l4 + offsetof(struct tcphdr, check);
  } else {
    csum_off = l4 + offsetof(struct udphdr, check);
    l4_flags |= BPF_F_MARK_MANGLED_0;  // a zero UDP checksum stays "none"
  }
  u32 old_addr[4] = {}, new_addr[4] = {};
  copy_addr((u8 *)old_addr, p, source);
  __builtin_memcpy(new_addr, addr, 16);
  __be16 old_port = source ? sport_of(p) : dport_of(p);
  s64 diff = bpf_csum_diff(old_addr, alen, new_addr, alen, 0);
  if (diff < 0) return -1;
  if (bpf_l4_csum_replace(skb, csum_off, 0, (u64)diff, l4_flags) < 0) return -1;
  if (p->family == 4 &&
      bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), 0, (u64)diff, 0) < 0)
    return -1;
  if (bpf_skb_store_bytes(skb, addr_off, new_addr, alen, 0) < 0) return -1;
  if (old_port != port) {
    if (bpf_l4_csum_replace(skb, csum_off, old_port, port, (l4_flags & ~BPF_F_PSEUDO_HDR) | 2) < 0)
      return -1;
    if (bpf_skb_store_bytes(skb, port_off, &port, 2, 0) < 0) return -1;
  }
  return 0;
}

// The answers (a TCP reset, an ICMP port unreachable) are built in place of
// the frame: its transport part resized after the network header, every
// header written whole with checksums computed from scratch, and the frame
// sent back out of the port it came in by. A frame that arrived with an
// offloaded checksum came from a local sender (a VM's or a namespace's
// port), whose receive side does not check it.
struct ip6_pseudo {
  u8 saddr[16];
  u8 daddr[16];
  __be32 len;
  u8 zero[3];
  u8 next;
};
struct ip4_pseudo {
  __be32 saddr;
  __be32 daddr;
  u8 zero;
  u8 proto;
  __be16 len;
};

static __always_inline int resize_l4(struct __sk_buff *skb, const struct packet *p, u32 want) {
  s32 delta = (s32)want - (s32)p->l4_len;
  if (delta == 0) return 0;
  return bpf_skb_adjust_room(skb, delta, BPF_ADJ_ROOM_NET, 0);
}

static __always_inline int write_l2_l3(struct __sk_buff *skb, const struct packet *p, u8 proto,
                                       u32 l4_len) {
  struct ethhdr eth = {};
  __builtin_memcpy(eth.h_dest, p->source.bytes, 6);
  __builtin_memcpy(eth.h_source, p->dest.bytes, 6);
  eth.h_proto = bpf_htons(p->family == 4 ? ETH_P_IP : ETH_P_IPV6);
  if (bpf_skb_store_bytes(skb, 0, &eth, sizeof eth, 0) < 0) return -1;
  if (p->family == 4) {
    struct iphdr ip = {};
    ip.version = 4;
    ip.ihl = 5;
    ip.tot_len = bpf_htons(IP4_LEN + l4_len);
    ip.frag_off = bpf_htons(0x4000);  // DF
    ip.ttl = 64;
    ip.protocol = proto;
    ip.saddr = p->tuple.ipv4.daddr;
    ip.daddr = p->tuple.ipv4.saddr;
    s64 sum = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof ip, 0);
    if (sum < 0) return -1;
    ip.check = fold((u64)sum);
    return bpf_skb_store_bytes(skb, ETH_LEN, &ip, sizeof ip, 0);
  }
  struct ipv6hdr ip6 = {};
  ip6.version = 6;
  ip6.payload_len = bpf_htons(l4_len);
  ip6.nexthdr = proto;
  ip6.hop_limit = 64;
  __builtin_memcpy(&ip6.saddr, p->tuple.ipv6.daddr, 16);
  __builtin_memcpy(&ip6.daddr, p->tuple.ipv6.saddr, 16);
  return bpf_skb_store_bytes(skb, ETH_LEN, &ip6, sizeof ip6, 0);
}

// The checksum of the answer's pseudo-header (its source is the frame's
// destination), the start of its transport checksum.
static __always_inline s64 pseudo_sum(const struct packet *p, u8 proto, u32 l4_len) {
  if (p->family == 4) {
    struct ip4_pseudo ph = {.saddr = p->tuple.ipv4.daddr,
                            .daddr = p->tuple.ipv4.saddr,
                            .proto = proto,
                            .len = bpf_htons(l4_len)};
    return bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof ph, 0);
  }
  struct ip6_pseudo ph = {.len = bpf_htonl(l4_len), .next = proto};
  __builtin_memcpy(ph.saddr, p->tuple.ipv6.daddr, 16);
  __builtin_memcpy(ph.daddr, p->tuple.ipv6.saddr, 16);
  return bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof ph, 0);
}

static __always_inline int answer_reset(struct __sk_buff *skb, const struct packet *p) {
  if (skb->gso_segs > 1) return TC_ACT_SHOT;  // an aggregate: its sender retransmits
  struct tcphdr rst = {};
  rst.source = dport_of(p);
  rst.dest = sport_of(p);
  rst.doff = 5;
  rst.rst = 1;
  // RFC 9293 3.10.7.1: to a segment with an ACK, sequence number = its
  // acknowledgment; otherwise 0, acknowledging all it carried.
  if (p->ack) {
    rst.seq = p->ack_seq;
  } else {
    u32 length = p->l4_len - p->doff * 4 + p->syn + p->fin;
    rst.ack_seq = bpf_htonl(bpf_ntohl(p->seq) + length);
    rst.ack = 1;
  }
  if (resize_l4(skb, p, TCP_LEN) < 0) return TC_ACT_SHOT;
  if (write_l2_l3(skb, p, IPPROTO_TCP, TCP_LEN) < 0) return TC_ACT_SHOT;
  s64 sum = pseudo_sum(p, IPPROTO_TCP, TCP_LEN);
  if (sum < 0) return TC_ACT_SHOT;
  sum = bpf_csum_diff(0, 0, (__be32 *)&rst, sizeof rst, (u32)sum);
  if (sum < 0) return TC_ACT_SHOT;
  rst.check = fold((u64)sum);
  const u32 l4 = ETH_LEN + (p->family == 4 ? IP4_LEN : IP6_LEN);
  if (bpf_skb_store_bytes(skb, l4, &rst, sizeof rst, 0) < 0) return TC_ACT_SHOT;
  return bpf_redirect(skb->ifindex, 0);
}

// ICMP destination unreachable, port unreachable (ICMPv6: type 1 code 4),
// quoting the frame's network header and its UDP header.
static __always_inline int answer_unreachable(struct __sk_buff *skb, const struct packet *p) {
  if (skb->gso_segs > 1) return TC_ACT_SHOT;
  struct {
    u8 type, code;
    __be16 check;
    __be32 unused;
    u8 quoted[IP6_LEN + UDP_LEN];
  } icmp = {};
  const u32 l3_len = p->family == 4 ? IP4_LEN : IP6_LEN;
  const u32 quoted = l3_len + UDP_LEN;
  if (bpf_skb_load_bytes(skb, ETH_LEN, icmp.quoted,
                         p->family == 4 ? IP4_LEN + UDP_LEN : IP6_LEN + UDP_LEN) < 0)
    return TC_ACT_SHOT;
  u8 proto;
  if (p->family == 4) {
    icmp.type = 3;
    icmp.code = 3;
    proto = IPPROTO_ICMP;
  } else {
    icmp.type = 1;
    icmp.code = 4;
    proto = IPPROTO_ICMPV6;
  }
  const u32 l4_len = ICMP_LEN + quoted;
  if (resize_l4(skb, p, l4_len) < 0) return TC_ACT_SHOT;
  if (write_l2_l3(skb, p, proto, l4_len) < 0) return TC_ACT_SHOT;
  s64 sum = 0;
  if (p->family == 6) {
    sum = pseudo_sum(p, proto, l4_len);
    if (sum < 0) return TC_ACT_SHOT;
  }
  const u32 size = p->family == 4 ? ICMP_LEN + IP4_LEN + UDP_LEN : ICMP_LEN + IP6_LEN + UDP_LEN;
  sum = bpf_csum_diff(0, 0, (__be32 *)&icmp, size, (u32)sum);
  if (sum < 0) return TC_ACT_SHOT;
  icmp.check = fold((u64)sum);
  if (bpf_skb_store_bytes(skb, ETH_LEN + l3_len, &icmp, size, 0) < 0) return TC_ACT_SHOT;
  return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int refuse(struct __sk_buff *skb, const struct packet *p,
                                  const struct settings *cfg) {
  if (!cfg->refuse_reject || p->rst) return TC_ACT_SHOT;
  return p->proto == IPPROTO_TCP ? answer_reset(skb, p) : answer_unreachable(skb, p);
}

// Whether the service is over its admission rate (a generic cell rate:
// each new connection moves the service's due time one interval on; more
// than a burst ahead of now is over). Racing CPUs may admit a few more.
static __always_inline bool over_rate(const struct packet *p, const struct settings *cfg) {
  if (!cfg->new_interval_ns) return false;
  struct service_key key = {.port = dport_of(p), .proto = p->proto, .family = p->family};
  copy_addr(key.vip, p, false);
  struct rate *rate = bpf_map_lookup_elem(&rates, &key);
  if (!rate) {
    struct rate fresh = {};
    bpf_map_update_elem(&rates, &key, &fresh, BPF_NOEXIST);
    rate = bpf_map_lookup_elem(&rates, &key);
    if (!rate) return false;
  }
  const u64 now = bpf_ktime_get_ns();
  u64 next = rate->next_ns;
  if (next < now) next = now;
  if (next - now > cfg->burst_ns) {
    __sync_fetch_and_add(&rate->limited, 1);
    return true;
  }
  rate->next_ns = next + cfg->new_interval_ns;
  return false;
}

// The kernel's jiffies a second (its HZ), learnt from its own conversion
// the first time a long timeout is set: an entry's timeout is kept in
// jiffies, the kfuncs take milliseconds.
u64 jiffies_per_second;

static __always_inline void learn_hz(struct nf_conn *ct, u32 timeout_ms) {
  if (jiffies_per_second || timeout_ms < 10000) return;
  const u32 left = ct->timeout - (u32)bpf_jiffies64();
  jiffies_per_second = ((u64)left * 1000 + timeout_ms / 2) / timeout_ms;
}

// Milliseconds the entry has left (the most there is while HZ is unknown:
// the first long timeout set teaches it, before any entry can be closing).
static __always_inline u64 left_ms(struct nf_conn *ct) {
  const u64 hz = jiffies_per_second;
  if (!hz) return ~0ull;
  const s32 left = (s32)(ct->timeout - (u32)bpf_jiffies64());
  return left <= 0 ? 0 : (u64)left * 1000 / hz;
}

// The timeout after a packet of an existing entry: the kernel's TCP and
// UDP state machines, reduced to the states that set a timeout. A reset
// closes the entry for good (IPS_FIXED_TIMEOUT: the kernel then refuses it
// a new timeout). A FIN makes it closing: from then on, it has at most the
// FIN_WAIT time left, which every packet renews, as the kernel's FIN_WAIT,
// CLOSE_WAIT and TIME_WAIT states do.
static __always_inline void refresh(struct nf_conn *ct, const struct packet *p,
                                    const struct settings *cfg, bool reply) {
  const u32 status = (u32)ct->status;
  u32 add = reply ? IPS_SEEN_REPLY : 0;
  u32 timeout = 0;
  if (p->proto == IPPROTO_TCP) {
    if (status & IPS_FIXED_TIMEOUT) {
      // reset: its CLOSE time runs out
    } else if (p->rst) {
      add |= IPS_FIXED_TIMEOUT;
      timeout = cfg->tcp_close;
    } else if (!reply && !(status & IPS_SEEN_REPLY)) {
      // Not answered yet (a SYN again, an early FIN): embryonic it stays.
    } else if (p->fin || ((status & IPS_ASSURED) && left_ms(ct) <= cfg->tcp_closing)) {
      add |= IPS_ASSURED;
      timeout = cfg->tcp_closing;
    } else if (status & IPS_ASSURED) {
      timeout = cfg->tcp_established;
    } else if (!reply && !p->syn) {
      add |= IPS_ASSURED;  // the handshake's last ACK
      timeout = cfg->tcp_established;
    }
    // Otherwise (the SYN-ACK): the embryonic timeout stands.
  } else if (reply) {
    if (status & IPS_SEEN_REPLY) {
      add |= IPS_ASSURED;
      timeout = cfg->udp_stream;
    } else {
      timeout = cfg->udp_replied;
    }
  } else {
    timeout = (status & IPS_ASSURED)      ? cfg->udp_stream
              : (status & IPS_SEEN_REPLY) ? cfg->udp_replied
                                          : cfg->udp_embryonic;
  }
  if (timeout) {
    bpf_ct_change_timeout(ct, timeout);
    learn_hz(ct, timeout);
  }
  if ((status | add) != status) bpf_ct_change_status(ct, status | add);
}

// The tuple's length, as a constant the verifier can bound.
static __always_inline struct nf_conn *ct_lookup_tuple(struct __sk_buff *skb,
                                                       struct bpf_sock_tuple *tuple, u8 family,
                                                       struct bpf_ct_opts *opts) {
  if (family == 4)
    return bpf_skb_ct_lookup(skb, tuple, sizeof(tuple->ipv4), opts, sizeof *opts);
  return bpf_skb_ct_lookup(skb, tuple, sizeof(tuple->ipv6), opts, sizeof *opts);
}
static __always_inline struct nf_conn *ct_lookup(struct __sk_buff *skb, struct packet *p,
                                                 struct bpf_ct_opts *opts) {
  return ct_lookup_tuple(skb, &p->tuple, p->family, opts);
}
static __always_inline struct nf_conn *ct_alloc(struct __sk_buff *skb, struct packet *p,
                                                struct bpf_ct_opts *opts) {
  if (p->family == 4)
    return bpf_skb_ct_alloc(skb, &p->tuple, sizeof(p->tuple.ipv4), opts, sizeof *opts);
  return bpf_skb_ct_alloc(skb, &p->tuple, sizeof(p->tuple.ipv6), opts, sizeof *opts);
}

static __always_inline int forward(struct __sk_buff *skb, struct packet *p, struct key_value *v,
                                   const struct settings *cfg) {
  struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = p->proto};
  struct nf_conn *ct = ct_lookup(skb, p, &opts);
  u8 target[16] = {};
  __be16 target_port;
  if (ct) {
    if (opts.dir != IP_CT_DIR_ORIGINAL || !(ct->mark & cfg->mark_mask)) {
      bpf_ct_release(ct);
      return TC_ACT_UNSPEC;  // not an entry of hostlb's
    }
    __builtin_memcpy(target, &ct->tuplehash[IP_CT_DIR_REPLY].tuple.src.u3, 16);
    target_port = ct->tuplehash[IP_CT_DIR_REPLY].tuple.src.u.all;
    refresh(ct, p, cfg, false);
    bpf_ct_release(ct);
  } else {
    if (v->kind != KIND_BINDING) {
      __sync_fetch_and_add(&v->refused, 1);
      count(TOTAL_REFUSED);
      return refuse(skb, p, cfg);
    }
    if (p->proto == IPPROTO_TCP && !p->syn) {
      if (p->rst) return TC_ACT_SHOT;  // nothing to answer, nothing to open
      __sync_fetch_and_add(&v->misses, 1);
      count(TOTAL_MISSES);
      if (cfg->miss == MISS_RESET) return answer_reset(skb, p);
      if (cfg->miss == MISS_DROP) return TC_ACT_SHOT;
      // MISS_ACCEPT: opened like a new connection; the VM decides.
    }
    if (over_rate(p, cfg)) {
      count(TOTAL_LIMITED);
      return TC_ACT_SHOT;
    }
    struct bpf_ct_opts alloc_opts = {.netns_id = -1, .l4proto = p->proto};
    struct nf_conn *fresh = ct_alloc(skb, p, &alloc_opts);
    if (!fresh) {
      count(TOTAL_NO_ENTRY);
      return TC_ACT_SHOT;
    }
    union nf_inet_addr addr = {};
    __builtin_memcpy(&addr, v->target, 16);
    bpf_ct_set_nat_info(fresh, &addr, v->target_port, NF_NAT_MANIP_DST);
    fresh->mark = v->mark;
    bpf_ct_set_timeout(fresh, p->proto == IPPROTO_TCP ? cfg->tcp_embryonic : cfg->udp_embryonic);
    ct = bpf_ct_insert_entry(fresh);
    if (!ct) {
      count(TOTAL_NO_ENTRY);  // full, or another CPU inserted it first
      return TC_ACT_SHOT;
    }
    bpf_ct_release(ct);
    __sync_fetch_and_add(&v->opened, 1);
    count(TOTAL_OPENED);
    __builtin_memcpy(target, v->target, 16);
    target_port = bpf_htons(v->target_port);
  }
  if (rewrite(skb, p, false, target, target_port) < 0) return TC_ACT_SHOT;
  return TC_ACT_UNSPEC;
}

// An ICMP error a backend sends about a packet of a VIP connection (port
// unreachable, fragmentation needed, ...) quotes the packet as the backend
// received it, addressed to the backend: the error leaves from the VIP and
// quotes the packet as the client sent it, as conntrack's NAT would have it
// (the quoted transport checksum is left as it is, as the kernel does when
// the quote is short). 1 if the error was about one of hostlb's
// connections.
struct quoted4 {
  struct iphdr ip;
  __be16 sport, dport;
};
struct quoted6 {
  struct ipv6hdr ip;
  __be16 sport, dport;
};

static __always_inline bool is_icmp_error(const struct packet *p, u8 type) {
  if (p->family == 4) return p->proto == IPPROTO_ICMP && (type == 3 || type == 11 || type == 12);
  return p->proto == IPPROTO_ICMPV6 && type >= 1 && type <= 4;
}

static __always_inline int reverse_icmp(struct __sk_buff *skb, struct packet *p,
                                        const struct settings *cfg) {
  const u32 icmp_off = ETH_LEN + (p->family == 4 ? IP4_LEN : IP6_LEN);
  const u32 quoted_off = icmp_off + ICMP_LEN;
  u8 type;
  if (bpf_skb_load_bytes(skb, icmp_off, &type, 1) < 0 || !is_icmp_error(p, type)) return 0;
  struct bpf_sock_tuple tuple = {};
  struct quoted4 q4;
  struct quoted6 q6;
  u8 proto;
  if (p->family == 4) {
    if (bpf_skb_load_bytes(skb, quoted_off, &q4, sizeof q4) < 0 || q4.ip.ihl != 5) return 0;
    proto = q4.ip.protocol;
    // The reply direction of the quoted packet: from the backend.
    tuple.ipv4.saddr = q4.ip.daddr;
    tuple.ipv4.daddr = q4.ip.saddr;
    tuple.ipv4.sport = q4.dport;
    tuple.ipv4.dport = q4.sport;
  } else {
    if (bpf_skb_load_bytes(skb, quoted_off, &q6, sizeof q6) < 0) return 0;
    proto = q6.ip.nexthdr;
    __builtin_memcpy(tuple.ipv6.saddr, &q6.ip.daddr, 16);
    __builtin_memcpy(tuple.ipv6.daddr, &q6.ip.saddr, 16);
    tuple.ipv6.sport = q6.dport;
    tuple.ipv6.dport = q6.sport;
  }
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return 0;
  struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = proto};
  struct nf_conn *ct = ct_lookup_tuple(skb, &tuple, p->family, &opts);
  if (!ct) return 0;
  if (opts.dir != IP_CT_DIR_REPLY || !(ct->mark & cfg->mark_mask)) {
    bpf_ct_release(ct);
    return 0;
  }
  u8 vip[16] = {};
  __builtin_memcpy(vip, &ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple.dst.u3, 16);
  __be16 vport = ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple.dst.u.all;
  bpf_ct_release(ct);

  const u32 csum_off = icmp_off + 2;
  s64 diff;
  if (p->family == 4) {
    struct quoted4 before = q4;
    __builtin_memcpy(&q4.ip.daddr, vip, 4);
    q4.dport = vport;
    q4.ip.check = 0;
    s64 sum = bpf_csum_diff(0, 0, (__be32 *)&q4.ip, sizeof q4.ip, 0);
    if (sum < 0) return 0;
    q4.ip.check = fold((u64)sum);
    diff = bpf_csum_diff((__be32 *)&before, sizeof before, (__be32 *)&q4, sizeof q4, 0);
    if (diff < 0 || bpf_skb_store_bytes(skb, quoted_off, &q4, sizeof q4, 0) < 0) return 0;
  } else {
    struct quoted6 before = q6;
    __builtin_memcpy(&q6.ip.daddr, vip, 16);
    q6.dport = vport;
    diff = bpf_csum_diff((__be32 *)&before, sizeof before, (__be32 *)&q6, sizeof q6, 0);
    if (diff < 0 || bpf_skb_store_bytes(skb, quoted_off, &q6, sizeof q6, 0) < 0) return 0;
  }
  if (bpf_l4_csum_replace(skb, csum_off, 0, (u64)diff, 0) < 0) return 0;
  // The error's own source: the backend's address becomes the VIP (ICMPv6
  // sums it in its pseudo-header, ICMP does not).
  u32 source[4] = {}, backend[4] = {};
  copy_addr((u8 *)source, p, true);
  if (p->family == 4)
    backend[0] = tuple.ipv4.saddr;
  else
    __builtin_memcpy(backend, tuple.ipv6.saddr, 16);
  if (source[0] != backend[0] || source[1] != backend[1] || source[2] != backend[2] ||
      source[3] != backend[3])
    return 1;  // from elsewhere on the backend's side: its source stays
  const u32 alen = p->family == 4 ? 4 : 16;
  diff = bpf_csum_diff((__be32 *)source, alen, (__be32 *)vip, alen, 0);
  if (diff < 0) return 1;
  if (p->family == 4) {
    bpf_l3_csum_replace(skb, ETH_LEN + offsetof(struct iphdr, check), 0, (u64)diff, 0);
    bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct iphdr, saddr), vip, 4, 0);
  } else {
    bpf_l4_csum_replace(skb, csum_off, 0, (u64)diff, BPF_F_PSEUDO_HDR);
    bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct ipv6hdr, saddr), vip, 16, 0);
  }
  return 1;
}

// A reply from a backend's endpoint: 1 if it was one of hostlb's (and is
// rewritten, or was dropped: *verdict), 0 if not.
static __always_inline int reverse(struct __sk_buff *skb, struct packet *p,
                                   const struct settings *cfg, int *verdict) {
  struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = p->proto};
  struct nf_conn *ct = ct_lookup(skb, p, &opts);
  if (!ct) return 0;  // the backend's own traffic
  if (opts.dir != IP_CT_DIR_REPLY || !(ct->mark & cfg->mark_mask)) {
    bpf_ct_release(ct);
    return 0;
  }
  u8 vip[16] = {};
  __builtin_memcpy(vip, &ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple.dst.u3, 16);
  __be16 vport = ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple.dst.u.all;
  refresh(ct, p, cfg, true);
  bpf_ct_release(ct);
  *verdict = rewrite(skb, p, true, vip, vport) < 0 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
  return 1;
}

SEC("tc")
int hostlb_host(struct __sk_buff *skb) {
  struct packet p = {};
  {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return TC_ACT_UNSPEC;
    __builtin_memcpy(p.source.bytes, eth->h_source, 6);
    __builtin_memcpy(p.dest.bytes, eth->h_dest, 6);
  }
  const u8 *source_mac = bpf_map_lookup_elem(&backend_macs, &p.source);
  const u8 *dest_mac = bpf_map_lookup_elem(&backend_macs, &p.dest);
  const bool from_backend = source_mac && (*source_mac & MAC_BACKEND);
  const bool to_keys = dest_mac && (*dest_mac & MAC_KEYS);
  if (!from_backend && !to_keys) return TC_ACT_UNSPEC;
  const int parsed = parse(skb, &p);
  if (parsed < 0) return TC_ACT_UNSPEC;
  u32 zero = 0;
  const struct settings *cfg = bpf_map_lookup_elem(&settings, &zero);
  if (!cfg) return TC_ACT_UNSPEC;
  if (from_backend) {
    // Replies first: the bulk of a backend's frames. An endpoint's source
    // is the backend's own address, never a VIP.
    if (parsed == 0) {
      struct delivery_key endpoint = {.proto = p.proto, .family = p.family, .port = sport_of(&p)};
      __builtin_memcpy(endpoint.mac, p.source.bytes, 6);
      copy_addr(endpoint.addr, &p, true);
      int verdict;
      if (bpf_map_lookup_elem(&endpoints, &endpoint) && reverse(skb, &p, cfg, &verdict))
        return verdict;
    } else if (reverse_icmp(skb, &p, cfg)) {
      return TC_ACT_UNSPEC;
    }
    struct addr_key source = {.family = p.family};
    copy_addr(source.addr, &p, true);
    if (bpf_map_lookup_elem(&guard_vips, &source)) {
      count(TOTAL_GUARD_DROPS);
      return TC_ACT_SHOT;
    }
  }
  if (parsed > 0 || !to_keys) return TC_ACT_UNSPEC;  // neither TCP nor UDP, or no key's MAC
  // A backend may also be a client of a VIP served here.
  struct delivery_key key = {.proto = p.proto, .family = p.family, .port = dport_of(&p)};
  __builtin_memcpy(key.mac, p.dest.bytes, 6);
  copy_addr(key.addr, &p, false);
  struct key_value *v = bpf_map_lookup_elem(&keys, &key);
  if (v) return forward(skb, &p, v, cfg);
  return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
