// The rendezvous tables' balance and movement, from the model (no kernel):
// for pools of N backends at several row counts, max/mean rows per backend
// (mean and worst over random pools), and the rows that move when one
// backend is removed or added, beside the ideal 1/N.
//
//   hostlb-selection [POOLS]        (POOLS random pools per cell, default 20)
#include "hostlb/policies/selection.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using hostlb::WeightedBackend;

namespace {

std::vector<WeightedBackend> pool(std::mt19937& rng, size_t n) {
  std::vector<WeightedBackend> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back({"vm-" + std::to_string(rng()) + "-" + std::to_string(i), 1});
  return out;
}

std::vector<std::string> owners(const std::vector<WeightedBackend>& backends, uint32_t rows) {
  std::vector<std::string> out;
  for (uint32_t i : hostlb::rendezvous_table(backends, rows)) out.push_back(backends[i].name);
  return out;
}

double moved(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return static_cast<double>(n) / a.size();
}

}  // namespace

int main(int argc, char** argv) {
  const int pools = argc > 1 ? std::atoi(argv[1]) : 20;
  std::mt19937 rng(42);
  std::printf("%5s %6s %10s %10s %9s %9s %9s %9s %9s\n", "N", "rows", "imb_mean", "imb_worst",
              "rm_moved", "ideal", "add_moved", "ideal", "fill_ms");
  for (size_t n : {2, 4, 8, 16, 32, 64, 100, 200, 500}) {
    for (uint32_t rows : {1021u, 2039u, 4093u, 8191u, 16381u, 65521u}) {
      if (n >= 100 && rows < 4093) continue;
      double imb_sum = 0, imb_worst = 0, rm = 0, add = 0, fill_ms = 0;
      const int rounds = n >= 200 ? std::max(2, pools / 10) : pools;
      for (int r = 0; r < rounds; ++r) {
        auto backends = pool(rng, n);
        const auto start = std::chrono::steady_clock::now();
        const auto table = hostlb::rendezvous_table(backends, rows);
        fill_ms +=
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        std::vector<size_t> count(n);
        for (uint32_t i : table) ++count[i];
        const double imb =
            *std::max_element(count.begin(), count.end()) / (static_cast<double>(rows) / n);
        imb_sum += imb;
        imb_worst = std::max(imb_worst, imb);
        const auto before = owners(backends, rows);
        auto fewer = backends;
        fewer.erase(fewer.begin() + static_cast<long>(rng() % n));
        if (!fewer.empty()) rm += moved(before, owners(fewer, rows));
        auto more = backends;
        more.push_back({"added-" + std::to_string(r), 1});
        add += moved(before, owners(more, rows));
      }
      std::printf("%5zu %6u %10.3f %10.3f %8.2f%% %8.2f%% %8.2f%% %8.2f%% %9.2f\n", n, rows,
                  imb_sum / rounds, imb_worst, 100 * rm / rounds, 100.0 / static_cast<double>(n),
                  100 * add / rounds, 100.0 / static_cast<double>(n + 1), fill_ms / rounds);
    }
  }
  return 0;
}
