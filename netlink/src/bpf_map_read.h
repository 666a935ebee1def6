// Reading BPF maps from hostlbd: a walk by key and per-CPU sums, shared by
// the programs' loaders (host, chaining).
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace hostlb {

// Calls f(key, value) for every entry of a map whose values are one Value
// (entries deleted during the walk are skipped).
template <typename Key, typename Value, typename F>
void each_entry(int fd, F&& f) {
  Key key{}, next{};
  const Key* at = nullptr;
  while (bpf_map_get_next_key(fd, at, &next) == 0) {
    Value value{};
    if (bpf_map_lookup_elem(fd, &next, &value) == 0) f(next, value);
    key = next;
    at = &key;
  }
}

template <typename Key, typename Value>
std::map<Key, Value> read_map(int fd) {
  std::map<Key, Value> out;
  each_entry<Key, Value>(fd, [&](const Key& k, const Value& v) { out[k] = v; });
  return out;
}

// A per-CPU map of u64 counters: the sum over all CPUs of `key`'s values
// (0 if it has none).
class PercpuSums {
 public:
  PercpuSums() {
    const int cpus = libbpf_num_possible_cpus();
    values_.resize(cpus > 0 ? static_cast<size_t>(cpus) : 0);
  }
  template <typename Key>
  uint64_t sum(int fd, const Key& key) {
    return read(fd, key).value_or(0);
  }
  // Every key of the map with its sum (a key deleted during the walk is
  // left out).
  template <typename Key>
  std::map<Key, uint64_t> all(int fd) {
    std::map<Key, uint64_t> out;
    Key key{}, next{};
    const Key* at = nullptr;
    while (bpf_map_get_next_key(fd, at, &next) == 0) {
      if (auto total = read(fd, next)) out[next] = *total;
      key = next;
      at = &key;
    }
    return out;
  }

 private:
  template <typename Key>
  std::optional<uint64_t> read(int fd, const Key& key) {
    if (values_.empty() || bpf_map_lookup_elem(fd, &key, values_.data()) != 0) return std::nullopt;
    uint64_t total = 0;
    for (auto v : values_) total += v;
    return total;
  }

  std::vector<uint64_t> values_;
};

}  // namespace hostlb
