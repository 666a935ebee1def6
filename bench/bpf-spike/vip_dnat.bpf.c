// A spike, not hostlb's datapath: the VIP path as tc programs on the bridge
// ports with the kernel's conntrack kfuncs, br_netfilter off (issue 12's
// third option). IPv4 TCP, one VIP key hard-wired (203.0.113.10:80 ->
// 198.18.1.11:8080, mark 0x1000). Built twice: -DFWD (ingress of the port
// the gateway's frames come in by: look the flow up; a SYN without an entry
// gets one, DNAT info and hostlb's mark, inserted into the kernel's table;
// rewrite the destination) and -DREV (ingress of the backend's port: a reply
// whose entry is hostlb's gets the VIP back as its source). Entries stay in
// the kernel's table: conntrack -L lists them with both tuples and the mark,
// and a mark-filtered delete removes them. Run by bench/bpf-spike.sh.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define VIP 0x0a7100cb        /* 203.0.113.10 as read from the packet (network order) on LE */
#define BACKEND 0x0b0112c6    /* 198.18.1.11 */
#define VPORT 80
#define BPORT 8080

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, u32, struct bpf_ct_opts *, u32) __ksym;
extern struct nf_conn *bpf_skb_ct_alloc(struct __sk_buff *, struct bpf_sock_tuple *, u32, struct bpf_ct_opts *, u32) __ksym;
extern struct nf_conn *bpf_ct_insert_entry(struct nf_conn *) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;
extern int bpf_ct_set_nat_info(struct nf_conn *, union nf_inet_addr *, int, enum nf_nat_manip_type) __ksym;
extern void bpf_ct_set_timeout(struct nf_conn *, u32) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *, u32) __ksym;

#define IP_CSUM_OFF (sizeof(struct ethhdr) + offsetof(struct iphdr, check))
#define IP_DST_OFF (sizeof(struct ethhdr) + offsetof(struct iphdr, daddr))
#define IP_SRC_OFF (sizeof(struct ethhdr) + offsetof(struct iphdr, saddr))
#define TCP_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))
#define TCP_CSUM_OFF (TCP_OFF + offsetof(struct tcphdr, check))
#define TCP_DPORT_OFF (TCP_OFF + offsetof(struct tcphdr, dest))
#define TCP_SPORT_OFF (TCP_OFF + offsetof(struct tcphdr, source))

int stats[8];

#ifdef FWD
SEC("tc")
int fwd(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
  struct iphdr *ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP) return TC_ACT_OK;
  struct tcphdr *tcp = (void *)(ip + 1);
  if ((void *)(tcp + 1) > end) return TC_ACT_OK;
  if (ip->daddr != VIP || tcp->dest != bpf_htons(VPORT)) return TC_ACT_OK;
  struct bpf_sock_tuple t = {};
  t.ipv4.saddr = ip->saddr; t.ipv4.daddr = ip->daddr; t.ipv4.sport = tcp->source; t.ipv4.dport = tcp->dest;
  int syn = tcp->syn && !tcp->ack;
  struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = IPPROTO_TCP};
  struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
  if (!ct) {
    if (!syn) { __sync_fetch_and_add(&stats[0], 1); return TC_ACT_SHOT; }  /* miss */
    struct bpf_ct_opts aopts = {.netns_id = -1, .l4proto = IPPROTO_TCP};
    struct nf_conn *n = bpf_skb_ct_alloc(skb, &t, sizeof(t.ipv4), &aopts, sizeof(aopts));
    if (!n) { __sync_fetch_and_add(&stats[1], 1); return TC_ACT_SHOT; }
    union nf_inet_addr addr = {};
    addr.ip = BACKEND;
    bpf_ct_set_nat_info(n, &addr, BPORT, NF_NAT_MANIP_DST);
    n->mark = 0x1000;
    bpf_ct_set_timeout(n, 10000);
    ct = bpf_ct_insert_entry(n);
    if (!ct) { __sync_fetch_and_add(&stats[2], 1); return TC_ACT_SHOT; }
    __sync_fetch_and_add(&stats[3], 1);
  } else {
    /* Spike simplification of TCP state tracking: a reset or FIN ends the
       entry soon, anything else keeps it a minute. */
    bpf_ct_change_timeout(ct, (tcp->rst || tcp->fin) ? 1000 : 60000);
    __sync_fetch_and_add(&stats[4], 1);
  }
  bpf_ct_release(ct);
  __be32 old_ip = VIP, new_ip = BACKEND;
  __be16 old_port = bpf_htons(VPORT), new_port = bpf_htons(BPORT);
  bpf_l4_csum_replace(skb, TCP_CSUM_OFF, old_ip, new_ip, BPF_F_PSEUDO_HDR | 4);
  bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, new_ip, 4);
  bpf_skb_store_bytes(skb, IP_DST_OFF, &new_ip, 4, 0);
  bpf_l4_csum_replace(skb, TCP_CSUM_OFF, old_port, new_port, 2);
  bpf_skb_store_bytes(skb, TCP_DPORT_OFF, &new_port, 2, 0);
  return TC_ACT_OK;
}
#endif
#ifdef REV
SEC("tc")
int rev(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
  struct iphdr *ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP) return TC_ACT_OK;
  struct tcphdr *tcp = (void *)(ip + 1);
  if ((void *)(tcp + 1) > end) return TC_ACT_OK;
  if (ip->saddr != BACKEND || tcp->source != bpf_htons(BPORT)) return TC_ACT_OK;
  struct bpf_sock_tuple t = {};
  t.ipv4.saddr = ip->saddr; t.ipv4.daddr = ip->daddr; t.ipv4.sport = tcp->source; t.ipv4.dport = tcp->dest;
  struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = IPPROTO_TCP};
  struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
  if (!ct) { __sync_fetch_and_add(&stats[5], 1); return TC_ACT_OK; }  /* not a VIP flow: untouched */
  __be32 vip = ct->tuplehash[0].tuple.dst.u3.ip;
  __be16 vport = ct->tuplehash[0].tuple.dst.u.tcp.port;
  u32 mark = ct->mark;
  bpf_ct_change_timeout(ct, 60000);
  bpf_ct_release(ct);
  if (mark != 0x1000 || opts.dir != 1) return TC_ACT_OK;
  __sync_fetch_and_add(&stats[6], 1);
  __be32 old_ip = ip->saddr;
  __be16 old_port = tcp->source;
  bpf_l4_csum_replace(skb, TCP_CSUM_OFF, old_ip, vip, BPF_F_PSEUDO_HDR | 4);
  bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, vip, 4);
  bpf_skb_store_bytes(skb, IP_SRC_OFF, &vip, 4, 0);
  bpf_l4_csum_replace(skb, TCP_CSUM_OFF, old_port, vport, 2);
  bpf_skb_store_bytes(skb, TCP_SPORT_OFF, &vport, 2, 0);
  return TC_ACT_OK;
}
#endif
char LICENSE[] SEC("license") = "GPL";
