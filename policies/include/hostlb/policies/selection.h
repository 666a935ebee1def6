// The stateless choice of a backend, defined once for every gateway and
// host: a flow is hashed to a row exactly as the kernel's nft `jhash`
// expression hashes it, and each row of a service's table belongs to one
// backend by rendezvous (highest random weight) hashing. Pure and
// deterministic across machines: the same service and backends give the
// same table anywhere, whatever order the backends were added in.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hostlb/policies/address.h"

namespace hostlb {

// The kernel's jhash (lib/jhash.h: Bob Jenkins' lookup3, bytes read as
// little-endian words) over `key`, with `seed` as the initial value.
uint32_t kernel_jhash(std::span<const uint8_t> key, uint32_t seed);

// The seed every gateway uses (fixed: without an explicit seed the kernel
// draws a random one at every load, and gateways would disagree).
inline constexpr uint32_t kSelectionSeed = 0x686c6231;  // "hlb1"

struct Flow {
  IpAddress client;
  uint16_t client_port = 0;
  IpAddress vip;
  uint16_t vip_port = 0;
};

// The bytes nft hashes for `ip saddr . th sport . ip daddr . th dport`:
// each field in network order in its own 4-byte register slot, ports
// zero-padded (16 bytes for IPv4, 40 for IPv6).
std::vector<uint8_t> flow_hash_key(const Flow& flow);

// The row `jhash ... mod rows seed kSelectionSeed` gives: the kernel scales
// the hash to the row count as (hash * rows) >> 32, not hash % rows.
uint32_t flow_row(const Flow& flow, uint32_t rows, uint32_t seed = kSelectionSeed);

// The default and the limits of a service's row count. At the default, a
// pool of 8 backends gets max/mean rows per backend 1.06 on average (up to
// ~1.15 for an unlucky pool), 16 backends 1.12; larger pools should set
// more rows per service (bench/selection.cpp prints N = 2..500). The
// default is also what the gateway's kernel memory allows: each row is one
// map element (~80 bytes), so 1,000 services take ~330 MB. Rows fit 16
// bits: the gateway offsets each service's rows by its index << 16.
inline constexpr uint32_t kDefaultRows = 4093;
inline constexpr uint32_t kMinRows = 1;
inline constexpr uint32_t kMaxRows = 65521;

struct WeightedBackend {
  std::string name;
  uint32_t weight = 1;  // 1..kMaxWeight
};
inline constexpr uint32_t kMaxWeight = 100;

// Rendezvous filling: row r goes to the backend with the highest score. A
// backend of weight w draws w scores per row and keeps the best, so it wins
// a share w / (total weight) of rows (integer arithmetic only: the same on
// every machine). Removing a backend moves only its rows; adding one moves
// rows only to it; changing one backend's weight moves rows only to or from
// it. Ties (64-bit scores) go to the smaller name. Returns, per row, an
// index into `backends`; empty if there are no backends.
std::vector<uint32_t> rendezvous_table(std::span<const WeightedBackend> backends, uint32_t rows);

// One backend's score for one row (its best draw): exposed for tests.
uint64_t rendezvous_score(const std::string& backend, uint32_t weight, uint32_t row);

}  // namespace hostlb
