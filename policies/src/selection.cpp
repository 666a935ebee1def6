#include "hostlb/policies/selection.h"

#include <algorithm>
#include <bit>

namespace hostlb {
namespace {

uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// lookup3's mix of three words and its final avalanche (the kernel's
// __jhash_mix and __jhash_final).
void mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  a -= c, a ^= std::rotl(c, 4), c += b;
  b -= a, b ^= std::rotl(a, 6), a += c;
  c -= b, c ^= std::rotl(b, 8), b += a;
  a -= c, a ^= std::rotl(c, 16), c += b;
  b -= a, b ^= std::rotl(a, 19), a += c;
  c -= b, c ^= std::rotl(b, 4), b += a;
}

void final_mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  c ^= b, c -= std::rotl(b, 14);
  a ^= c, a -= std::rotl(c, 11);
  b ^= a, b -= std::rotl(a, 25);
  c ^= b, c -= std::rotl(b, 16);
  a ^= c, a -= std::rotl(c, 4);
  b ^= a, b -= std::rotl(a, 14);
  c ^= b, c -= std::rotl(b, 24);
}

// A 64-bit finalizer (splitmix64's): spreads every input bit over the word.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// FNV-1a over the name: the backend's identity in every score.
uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return mix64(h);
}

uint64_t draw(uint64_t name, uint32_t row, uint32_t index) {
  return mix64(name ^ mix64((uint64_t{row} << 32 | index) + 0x9e3779b97f4a7c15ULL));
}

uint64_t best_draw(uint64_t name, uint32_t weight, uint32_t row) {
  uint64_t best = 0;
  for (uint32_t i = 0; i < weight; ++i) best = std::max(best, draw(name, row, i));
  return best;
}

}  // namespace

uint32_t kernel_jhash(std::span<const uint8_t> key, uint32_t seed) {
  const uint8_t* k = key.data();
  uint32_t length = static_cast<uint32_t>(key.size());
  uint32_t a = 0xdeadbeef + length + seed;
  uint32_t b = a, c = a;
  while (length > 12) {
    a += le32(k);
    b += le32(k + 4);
    c += le32(k + 8);
    mix(a, b, c);
    length -= 12;
    k += 12;
  }
  if (length == 0) return c;
  // The last 1..12 bytes, zero-extended to three words.
  uint8_t tail[12] = {};
  std::copy(k, k + length, tail);
  a += le32(tail);
  b += le32(tail + 4);
  c += le32(tail + 8);
  final_mix(a, b, c);
  return c;
}

std::vector<uint8_t> flow_hash_key(const Flow& flow) {
  std::vector<uint8_t> key;
  key.reserve(40);
  auto address = [&](const IpAddress& ip) {
    key.insert(key.end(), ip.bytes().begin(), ip.bytes().begin() + ip.size());
  };
  auto port = [&](uint16_t p) {
    key.push_back(static_cast<uint8_t>(p >> 8));
    key.push_back(static_cast<uint8_t>(p));
    key.push_back(0);
    key.push_back(0);
  };
  address(flow.client);
  port(flow.client_port);
  address(flow.vip);
  port(flow.vip_port);
  return key;
}

uint32_t flow_row(const Flow& flow, uint32_t rows, uint32_t seed) {
  const uint32_t hash = kernel_jhash(flow_hash_key(flow), seed);
  return static_cast<uint32_t>((uint64_t{hash} * rows) >> 32);
}

uint64_t rendezvous_score(const std::string& backend, uint32_t weight, uint32_t row) {
  return best_draw(name_hash(backend), weight, row);
}

std::vector<uint32_t> rendezvous_table(std::span<const WeightedBackend> backends, uint32_t rows) {
  if (backends.empty()) return {};
  std::vector<uint64_t> names(backends.size());
  for (size_t i = 0; i < backends.size(); ++i) names[i] = name_hash(backends[i].name);
  std::vector<uint32_t> table(rows);
  for (uint32_t row = 0; row < rows; ++row) {
    uint32_t winner = 0;
    uint64_t best = 0;
    for (uint32_t i = 0; i < backends.size(); ++i) {
      const uint64_t score = best_draw(names[i], backends[i].weight, row);
      if (i == 0 || score > best || (score == best && backends[i].name < backends[winner].name)) {
        winner = i;
        best = score;
      }
    }
    table[row] = winner;
  }
  return table;
}

}  // namespace hostlb
