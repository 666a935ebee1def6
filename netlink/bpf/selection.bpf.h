// The row a flow falls in, as the gateways compute it (nft's jhash over
// saddr . th sport . daddr . th dport, each field in whole 4-byte
// registers, ports zero-padded: 16 bytes for IPv4, 40 for IPv6), shared by
// the BPF programs. policies/selection.h holds the model this must match.
#pragma once

#define SELECTION_SEED 0x686c6231u

// A service's key in the programs' `services` maps (hostlbd writes it as
// netlink/src/bpf_service_key.h's ServiceKeyBpf).
struct service_key {
  u8 vip[16];  // network order; IPv4: the first 4 bytes, the rest zero
  u16 port;    // network order
  u8 proto;    // IPPROTO_TCP or IPPROTO_UDP
  u8 family;   // 4 or 6
};

static __always_inline u32 rol32(u32 word, unsigned int shift) {
  return (word << shift) | (word >> ((-shift) & 31));
}

#define JHASH_MIX(a, b, c) \
  do {                     \
    a -= c;                \
    a ^= rol32(c, 4);      \
    c += b;                \
    b -= a;                \
    b ^= rol32(a, 6);      \
    a += c;                \
    c -= b;                \
    c ^= rol32(b, 8);      \
    b += a;                \
    a -= c;                \
    a ^= rol32(c, 16);     \
    c += b;                \
    b -= a;                \
    b ^= rol32(a, 19);     \
    a += c;                \
    c -= b;                \
    c ^= rol32(b, 4);      \
    b += a;                \
  } while (0)

static __always_inline u32 jhash_final(u32 a, u32 b, u32 c) {
  c ^= b;
  c -= rol32(b, 14);
  a ^= c;
  a -= rol32(c, 11);
  b ^= a;
  b -= rol32(a, 25);
  c ^= b;
  c -= rol32(b, 16);
  a ^= c;
  a -= rol32(c, 4);
  b ^= a;
  b -= rol32(a, 14);
  c ^= b;
  c -= rol32(b, 24);
  return c;
}

// lookup3's jhash as the kernel reads a key of 16 (IPv4) or 40 (IPv6)
// bytes: little-endian words of the bytes in network order, three words
// mixed at a time while more than three are left, the last one added
// before the final mix.
static __always_inline u32 jhash_words(const u32* w, bool v6, u32 seed) {
  u32 a, b, c;
  a = b = c = 0xdeadbeef + (v6 ? 40 : 16) + seed;
  a += w[0];
  b += w[1];
  c += w[2];
  JHASH_MIX(a, b, c);
  if (v6) {
    a += w[3];
    b += w[4];
    c += w[5];
    JHASH_MIX(a, b, c);
    a += w[6];
    b += w[7];
    c += w[8];
    JHASH_MIX(a, b, c);
    a += w[9];
  } else {
    a += w[3];
  }
  return jhash_final(a, b, c);
}

// The row of a flow among `rows`, scaled as nft scales a hash: (h * rows) >> 32.
static __always_inline u32 flow_row(const u32* words, bool v6, u32 rows) {
  return (u32)(((u64)jhash_words(words, v6, SELECTION_SEED) * rows) >> 32);
}
