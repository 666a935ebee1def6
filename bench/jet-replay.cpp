// JET's own event-driven workload replayed through hostlb's gateway policy
// (the tables, tracked rows and flow choice of policies/gateway.h; no
// kernel): 468 active backends and a horizon of 70, a backend killed at
// random 10 times a minute (it goes to the horizon; the backend longest in
// the horizon is promoted in the same update), for 1000 s of Poisson
// connection arrivals (~4.7 million) with heavy-tailed durations. A
// connection is tracked when its first packet falls in a tracked row (what
// the gateway's nft rules do). At every update, a live connection that is
// not tracked and whose row changed owner is broken; connections of the
// killed backend are excluded (as in JET). The stateless configuration
// (no tracking, what OVN's stateless LB does) runs on the same events.
//
//   hostlb-jet-replay [SECONDS] [ACTIVE] [HORIZON] [KILLS_PER_MINUTE]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "hostlb/policies/gateway.h"
#include "hostlb/policies/selection.h"

using namespace hostlb;

namespace {

struct Connection {
  double end = 0;
  uint32_t row = 0;
  uint16_t backend = 0;  // index into the service's backends
  bool tracked = false;
  bool alive_jet = true, alive_stateless = true;
};

std::string name_of(int i) { return "be-" + std::to_string(i); }

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1000;
  const int active = argc > 2 ? std::atoi(argv[2]) : 468;
  const int horizon = argc > 3 ? std::atoi(argv[3]) : 70;
  const double kills_per_minute = argc > 4 ? std::atof(argv[4]) : 10;
  const double arrivals_per_second = 4687530.0 / 1000;
  const auto started = std::chrono::steady_clock::now();

  State state;
  Service service;
  service.key = *parse_service_key("203.0.113.10:80/tcp");
  service.rows = kMaxRows;
  for (int i = 0; i < active + horizon; ++i) {
    Backend b;
    b.name = name_of(i);
    b.mac = MacAddress({0x02, 0, 0, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8),
                        static_cast<uint8_t>(i)});
    b.ipv4 =
        IpAddress::parse("198.18." + std::to_string(i / 250) + "." + std::to_string(1 + i % 250));
    b.bridge = "br0";
    state.backends.push_back(b);
    BackendRef ref{b.name, 80};
    ref.state = i < active ? BindingState::kActive : BindingState::kHorizon;
    service.backends.push_back(ref);
  }
  state.services.push_back(service);
  std::deque<int> in_horizon;  // oldest first: promoted first
  for (int i = active; i < active + horizon; ++i) in_horizon.push_back(i);
  std::vector<int> working(static_cast<size_t>(active));
  std::iota(working.begin(), working.end(), 0);

  GatewayDatapath table = compile_gateway(state, {});
  // The backends' order in the table (sorted by name) is fixed: the set of
  // bindings never changes, only their states.
  const std::vector<std::string> names = table.services[0].backends;
  auto index_of = [&](int i) {
    return static_cast<uint16_t>(std::lower_bound(names.begin(), names.end(), name_of(i)) -
                                 names.begin());
  };

  std::mt19937_64 rng(20211207);
  std::exponential_distribution<double> gap(arrivals_per_second);
  std::exponential_distribution<double> kill_gap(kills_per_minute / 60.0);
  std::lognormal_distribution<double> duration(0.0, 2.0);  // median 1 s, mean ~7.4 s
  std::uniform_int_distribution<uint32_t> address(0x0a000000u, 0x0affffffu);
  std::uniform_int_distribution<int> port(1024, 65535);

  std::vector<Connection> live;
  uint64_t connections = 0, broken_jet = 0, broken_stateless = 0, excluded = 0, events = 0;
  double tracked_share_sum = 0, row_share_sum = 0;
  uint64_t samples = 0, peak_tracked = 0;
  double now = 0, next_kill = kill_gap(rng), next_sample = 1;
  size_t rows_changed = 0;
  while (now < seconds) {
    now += gap(rng);
    while (next_sample <= now) {
      uint64_t tracked = 0, alive = 0;
      for (const auto& c : live)
        if (c.alive_jet && c.end > next_sample) ++alive, tracked += c.tracked;
      if (alive > 0) tracked_share_sum += static_cast<double>(tracked) / alive;
      row_share_sum +=
          static_cast<double>(table.services[0].tracked.size()) / table.services[0].rows;
      peak_tracked = std::max(peak_tracked, tracked);
      ++samples;
      next_sample += 1;
    }
    if (next_kill <= now) {
      // Kill a working backend (it goes to the horizon) and promote the one
      // longest in the horizon: one update of the gateways' table.
      std::uniform_int_distribution<size_t> pick(0, working.size() - 1);
      const size_t at = pick(rng);
      const int killed = working[at];
      const int promoted = in_horizon.front();
      in_horizon.pop_front();
      in_horizon.push_back(killed);
      working[at] = promoted;
      for (auto& ref : state.services[0].backends) {
        if (ref.name == name_of(killed)) ref.state = BindingState::kHorizon;
        if (ref.name == name_of(promoted)) ref.state = BindingState::kActive;
      }
      const GatewayDatapath next = recompile_gateway(state, table);
      rows_changed += diff_gateway(table, next).rows.size();
      const auto& owner = next.services[0].owner;
      const uint16_t killed_index = index_of(killed);
      std::erase_if(live, [&](const Connection& c) { return c.end <= now; });
      for (auto& c : live) {
        if (c.backend == killed_index) {
          if (c.alive_jet || c.alive_stateless) ++excluded;
          c.alive_jet = c.alive_stateless = false;
          continue;
        }
        if (owner[c.row] == c.backend) continue;
        if (c.alive_stateless) ++broken_stateless, c.alive_stateless = false;
        if (c.alive_jet && !c.tracked) ++broken_jet, c.alive_jet = false;
      }
      table = next;
      ++events;
      next_kill += kill_gap(rng);
    }
    const uint32_t a = address(rng);
    const uint8_t bytes[4] = {static_cast<uint8_t>(a >> 24), static_cast<uint8_t>(a >> 16),
                              static_cast<uint8_t>(a >> 8), static_cast<uint8_t>(a)};
    const IpAddress client = IpAddress::from_bytes(IpFamily::kV4, bytes);
    const FlowChoice choice = choose(table.services[0], client, static_cast<uint16_t>(port(rng)));
    Connection c;
    c.end = now + duration(rng);
    c.row = choice.row;
    c.backend = table.services[0].owner[choice.row];
    c.tracked = choice.tracked;
    live.push_back(c);
    ++connections;
    if (live.size() > size_t{4} * 65536 && (connections & 0xffff) == 0)
      std::erase_if(live, [&](const Connection& x) { return x.end <= now; });
  }
  const double expected = static_cast<double>(horizon) / (active + horizon);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("jet-replay: %d active + %d horizon backends, %u rows, %.0f s, %.1f kills/min\n",
              active, horizon, kMaxRows, seconds, kills_per_minute);
  std::printf(
      "  %llu connections, %llu updates (%zu rows changed owner), %llu excluded (on a "
      "killed backend)\n",
      static_cast<unsigned long long>(connections), static_cast<unsigned long long>(events),
      rows_changed, static_cast<unsigned long long>(excluded));
  std::printf("  %-28s %12s %12s\n", "configuration", "broken", "JET (paper)");
  std::printf("  %-28s %12llu %12s\n", "stateless (no tracking)",
              static_cast<unsigned long long>(broken_stateless), "-");
  std::printf("  %-28s %12llu %12s\n", "JET (hostlb policy)",
              static_cast<unsigned long long>(broken_jet), "0");
  std::printf(
      "  tracked: %.2f%% of live connections on average (peak %llu), %.2f%% of rows; "
      "H/(N+H) = %.2f%% (paper: ~H/(N+H))\n",
      100.0 * tracked_share_sum / std::max<uint64_t>(1, samples),
      static_cast<unsigned long long>(peak_tracked),
      100.0 * row_share_sum / std::max<uint64_t>(1, samples), 100.0 * expected);
  std::printf("  (%.1f s)\n", elapsed);
  return broken_jet == 0 ? 0 : 1;
}
