// hostlb-fleetsync: how long one write to the fleet in etcd takes to be in
// the kernel of every machine that follows it, and light watchers that
// stand in for many hosts when etcd's load is measured.
//
//   hostlb-fleetsync changes ENDPOINT KEY VALUE_A VALUE_B COUNT SOCKET...
//     COUNT writes of KEY, alternately VALUE_A and VALUE_B, one at a time;
//     after each, the control sockets' `status` is read until every daemon
//     has applied the write's revision (hostlbd sets it once the kernel
//     holds the change). Prints the latencies' p50, p90, p99 and max.
//   hostlb-fleetsync watchers ENDPOINT PREFIX N SECONDS
//     N watches of PREFIX (one connection each) for SECONDS; prints the
//     events they received.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clock.h"
#include "event_loop.h"
#include "hostlb/netlink/etcd.h"
#include "hostlb/policies/control_protocol.h"
#include "loop_io.h"

namespace {

using namespace hostlb;
using Clock = std::chrono::steady_clock;

// The daemon's applied fleet revision, from one `status` over its socket
// (-1 if it cannot be read).
int64_t applied_revision(const std::string& socket_path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", socket_path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    ::close(fd);
    return -1;
  }
  const std::string request = control::encode_request(1, "status", nlohmann::json::object()) + "\n";
  (void)!::write(fd, request.data(), request.size());
  std::string line;
  char buf[65536];
  while (line.find('\n') == std::string::npos) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  try {
    const auto response = control::decode_response(line.substr(0, line.find('\n')));
    if (!response.ok || !response.result.contains("fleet") || response.result["fleet"].is_null())
      return -1;
    return response.result["fleet"].value("applied_revision", int64_t{-1});
  } catch (const std::exception&) {
    return -1;  // no whole answer (the daemon restarting): asked again
  }
}

struct Etcd {
  explicit Etcd(const std::string& endpoint)
      : loop(clock), io(loop), http(io, {}), client(http, EtcdSettings{{endpoint}, {}, {}}) {
    io.attach(&http);
  }
  int64_t put(const std::string& key, const std::string& value) {
    std::optional<EtcdResult<etcd::TxnResponse>> out;
    etcd::TxnRequest txn;
    txn.puts.push_back({key, value, 0, 0, 0});
    client.txn(txn, [&out](EtcdResult<etcd::TxnResponse> r) { out = std::move(r); });
    while (!out) loop.run_once();
    if (!out->ok()) {
      std::fprintf(stderr, "hostlb-fleetsync: %s\n", out->failure.message.c_str());
      std::exit(1);
    }
    return out->value->revision;
  }
  SystemClock clock;
  EventLoop loop;
  LoopIo io;
  HttpClient http;
  EtcdClient client;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

int changes(int argc, char** argv) {
  if (argc < 8) return 2;
  Etcd etcd(argv[2]);
  const std::string key = argv[3], a = argv[4], b = argv[5];
  const int count = std::atoi(argv[6]);
  std::vector<std::string> sockets(argv + 7, argv + argc);
  std::vector<double> latencies;
  for (int i = 0; i < count; ++i) {
    const auto start = Clock::now();
    const int64_t revision = etcd.put(key, i % 2 == 0 ? a : b);
    std::vector<bool> done(sockets.size(), false);
    size_t left = sockets.size();
    while (left > 0) {
      for (size_t s = 0; s < sockets.size(); ++s)
        if (!done[s] && applied_revision(sockets[s]) >= revision) {
          done[s] = true;
          --left;
        }
      if (Clock::now() - start > std::chrono::seconds(10)) {
        std::fprintf(stderr, "hostlb-fleetsync: change %d (revision %lld) not applied in 10 s\n", i,
                     static_cast<long long>(revision));
        return 1;
      }
    }
    latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::printf(
      "changes %d, machines %zu: write -> every kernel p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, "
      "max %.1f ms\n",
      count, sockets.size(), percentile(latencies, 0.5), percentile(latencies, 0.9),
      percentile(latencies, 0.99), percentile(latencies, 1.0));
  return 0;
}

int watchers(int argc, char** argv) {
  if (argc != 6) return 2;
  SystemClock clock;
  EventLoop loop(clock);
  LoopIo io(loop);
  HttpClient http(io, {});
  io.attach(&http);
  const int n = std::atoi(argv[4]);
  const std::string prefix = argv[3];
  std::vector<std::unique_ptr<EtcdClient>> clients;
  uint64_t events = 0, ended = 0;
  for (int i = 0; i < n; ++i) {
    clients.push_back(std::make_unique<EtcdClient>(http, EtcdSettings{{argv[2]}, {}, {}}));
    clients.back()->watch(
        {prefix, etcd::prefix_end(prefix), 0, false},
        [&events](const etcd::WatchMessage& m) { events += m.events.size(); },
        [&ended](const EtcdFailure&) { ++ended; });
  }
  Timer stop(loop, [&loop] { loop.stop(0); });
  stop.arm_in(std::chrono::seconds(std::atoi(argv[5])));
  loop.run();
  std::printf("watchers %d: %llu events received, %llu watches ended early\n", n,
              static_cast<unsigned long long>(events), static_cast<unsigned long long>(ended));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  int rc = 2;
  if (mode == "changes") rc = changes(argc, argv);
  if (mode == "watchers") rc = watchers(argc, argv);
  if (rc == 2)
    std::fprintf(stderr,
                 "usage: hostlb-fleetsync changes ENDPOINT KEY VALUE_A VALUE_B COUNT SOCKET...\n"
                 "       hostlb-fleetsync watchers ENDPOINT PREFIX N SECONDS\n");
  return rc;
}
