// The gateway's kernel table at scale (run inside a namespace that has the
// interfaces cli0 and fab0; bench/gateway.sh sets that up):
//   - building SERVICES services of 8 backends at ROWS rows each (from a pool
//     of 64 backends), its time and the kernel memory it takes (slab and
//     vmalloc growth);
//   - ROUNDS times: one backend removed from one service, then added back,
//     each change applied as a diff; its time, and the rows it wrote beside
//     the rows whose owner changed.
//
//   hostlb-gwbench SERVICES ROWS ROUNDS [bpf|nft]
//   hostlb-gwbench load DOCUMENT [bpf|nft]   build the table from a state document
//   hostlb-gwbench remove                    remove it (both datapaths)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hostlb/netlink/gateway.h"
#include "hostlb/policies/gateway.h"
#include "hostlb/policies/state_document.h"

using namespace hostlb;

namespace {

// The kernel's own memory: slab (nft sets, BPF hash maps) and vmalloc
// (large BPF arrays).
long kernel_kb() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  long value = 0, total = 0;
  std::string unit;
  while (in >> key >> value >> unit)
    if (key == "Slab:" || key == "VmallocUsed:") total += value;
  return total;
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

State fleet(int services, uint32_t rows, std::mt19937& rng) {
  State state;
  for (int b = 0; b < 64; ++b) {
    char mac[18];
    std::snprintf(mac, sizeof mac, "02:00:00:00:%02x:%02x", 1 + b / 256, b % 256);
    state.backends.push_back({"vm" + std::to_string(b),
                              *MacAddress::parse(mac),
                              IpAddress::parse("198.18.4." + std::to_string(1 + b)),
                              {},
                              "br0",
                              "hv" + std::to_string(b % 8)});
  }
  for (int s = 0; s < services; ++s) {
    Service service;
    service.key = {*IpAddress::parse("203.0.113." + std::to_string(1 + s % 250)),
                   static_cast<uint16_t>(1000 + s / 250), Protocol::kTcp};
    service.rows = rows;
    std::vector<int> pool(64);
    for (int i = 0; i < 64; ++i) pool[i] = i;
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int i = 0; i < 8; ++i) service.backends.push_back({"vm" + std::to_string(pool[i]), 80, 1});
    state.services.push_back(service);
  }
  return state;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

GatewayConfig lab_config(const char* engine) {
  GatewayConfig config{"cli0", "fab0", *MacAddress::parse("02:00:00:00:0f:01")};
  config.engine = parse_gateway_engine(engine).value_or(GatewayEngine::kBpf);
  return config;
}

int load_or_remove(int argc, char** argv) {
  try {
    if (std::string(argv[1]) == "remove") {
      for (const char* engine : {"nft", "bpf"}) make_gateway(lab_config(engine))->remove();
      return 0;
    }
    if (argc < 3) return 2;
    const GatewayConfig config = lab_config(argc > 3 ? argv[3] : "bpf");
    auto gw = make_gateway(config);
    std::ifstream in(argv[2]);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    gw->replace(compile_gateway(parse_state_document(text), {}), config);
    // What hostlbd does within seconds: services without tracked rows or
    // flows stop looking flows up.
    gw->sweep_tracked();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hostlb-gwbench: %s\n", e.what());
    return 1;
  }
}

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "load" || std::string(argv[1]) == "remove"))
    return load_or_remove(argc, argv);
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: hostlb-gwbench SERVICES ROWS ROUNDS [bpf|nft]\n");
    return 2;
  }
  const int services = std::atoi(argv[1]);
  const auto rows = static_cast<uint32_t>(std::atoi(argv[2]));
  const int rounds = std::atoi(argv[3]);
  std::mt19937 rng(7);
  State state = fleet(services, rows, rng);
  const GatewayConfig config = lab_config(argc > 4 ? argv[4] : "bpf");
  auto gw = make_gateway(config);
  try {
    auto start = std::chrono::steady_clock::now();
    GatewayDatapath applied = compile_gateway(state, {});
    const double compile_ms = ms_since(start);
    const long kernel_before = kernel_kb();
    start = std::chrono::steady_clock::now();
    gw->replace(applied, config);
    const double load_ms = ms_since(start);
    const long kernel_grown = kernel_kb() - kernel_before;
    const double total_rows = static_cast<double>(services) * rows;
    std::printf("gateway (%s): %d services x %u rows = %.0f rows; compile %.0f ms, load %.0f ms\n",
                engine_name(config.engine), services, rows, total_rows, compile_ms, load_ms);
    std::printf("kernel memory (slab + vmalloc growth): %.1f MiB, %.0f bytes a row\n",
                kernel_grown / 1024.0, kernel_grown * 1024.0 / total_rows);

    std::vector<double> change_ms;
    size_t written = 0, reowned = 0;
    for (int r = 0; r < rounds; ++r) {
      Service& s = state.services[static_cast<size_t>(rng() % state.services.size())];
      const BackendRef gone = s.backends[rng() % s.backends.size()];
      for (int step = 0; step < 2; ++step) {
        if (step == 0)
          std::erase(s.backends, gone);
        else
          s.backends.push_back(gone);
        start = std::chrono::steady_clock::now();
        GatewayDatapath next = recompile_gateway(state, applied);
        const GatewayDiff diff = diff_gateway(applied, next);
        gw->apply(diff, config, gateway_stamp(next));
        change_ms.push_back(ms_since(start));
        written += diff.rows.size();
        const GatewayService& a = *applied.find(s.key);
        const GatewayService& b = *next.find(s.key);
        for (uint32_t row = 0; row < a.rows; ++row)
          reowned += a.macs[a.owner[row]] != b.macs[b.owner[row]];
        applied = std::move(next);
      }
    }
    std::printf(
        "one backend removed from / added to a service of 8, %d rounds (compile + diff + "
        "kernel): median %.2f ms, p90 %.2f ms, max %.2f ms\n",
        rounds, percentile(change_ms, 0.5), percentile(change_ms, 0.9),
        *std::max_element(change_ms.begin(), change_ms.end()));
    std::printf("rows written %zu, rows whose owner changed %zu (%.1f per change)\n", written,
                reowned, static_cast<double>(reowned) / static_cast<double>(change_ms.size()));

    // The row audit after a foreign commit reads the whole map: its parts
    // (one datagram each) and time, unpaced (hostlbd reads 8 parts per
    // 50 ms), with the comparison.
    for (int pass = 0; pass < 2; ++pass) {
      start = std::chrono::steady_clock::now();
      RowAudit audit(applied);
      auto scan = gw->scan_rows();
      size_t parts = 0;
      while (scan->next([&](uint32_t mark, const MacAddress& mac) { audit.saw(mark, mac); }))
        ++parts;
      const RowDifferences differ = count_differences(audit.finish());
      const double scan_ms = ms_since(start);
      std::printf(
          "row audit %d: %zu rows in %zu parts (%.0f a part), %.0f ms unpaced; differ: %zu "
          "re-pointed, %zu missing, %zu foreign\n",
          pass + 1, audit.rows_seen(), parts, static_cast<double>(audit.rows_seen()) / parts,
          scan_ms, differ.repointed, differ.missing, differ.foreign);
      std::this_thread::sleep_for(std::chrono::seconds(2));
    }
    gw->remove();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hostlb-gwbench: %s\n", e.what());
    return 1;
  }
  return 0;
}
