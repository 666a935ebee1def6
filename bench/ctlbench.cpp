// Times whole hostlbctl round trips (process start to exit), alternating
// between daemons so that every round measures them side by side.
//
//   hostlb-ctlbench HOSTLBCTL ROUNDS SOCKET...
//   hostlb-ctlbench --apply HOSTLBCTL ROUNDS SOCKET LOADED.json CHANGED.json
//
// First form, each round, for each socket: `service attach
// 203.0.113.250:9/tcp web-1:8080` (timed), then `service detach
// 203.0.113.250:9/tcp web-1` (not timed), so that every attach is a real
// change. Prints the median attach time per socket and the ratio of each to
// the first.
//
// --apply: each round applies CHANGED.json (the loaded document with one
// more service) and then LOADED.json again (one service less), both timed,
// and a `status` round trip for reference (what starting hostlbctl and one
// small request cost in the same moments); prints the median of each.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern char** environ;

namespace {

double run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", 1, 0);  // O_WRONLY
  const auto start = std::chrono::steady_clock::now();
  pid_t pid;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  posix_spawn_file_actions_destroy(&actions);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s %s failed (status %d)\n", args[0].c_str(), args[3].c_str(), status);
    std::exit(1);
  }
  return ms;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int apply_mode(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s --apply HOSTLBCTL ROUNDS SOCKET LOADED CHANGED\n", argv[0]);
    return 2;
  }
  const std::string ctl = argv[2], socket = argv[4], loaded = argv[5], changed = argv[6];
  const int rounds = std::atoi(argv[3]);
  std::vector<double> plus, minus, status;
  for (int r = 0; r < rounds; ++r) {
    plus.push_back(run({ctl, "--socket", socket, "apply", "-f", changed}));
    minus.push_back(run({ctl, "--socket", socket, "apply", "-f", loaded}));
    status.push_back(run({ctl, "--socket", socket, "status"}));
  }
  std::printf(
      "one_service_added_median_ms=%.2f one_service_removed_median_ms=%.2f "
      "status_median_ms=%.2f rounds=%d\n",
      median(plus), median(minus), median(status), rounds);
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--apply") return apply_mode(argc, argv);
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s HOSTLBCTL ROUNDS SOCKET...\n", argv[0]);
    return 2;
  }
  const std::string ctl = argv[1];
  const int rounds = std::atoi(argv[2]);
  std::vector<std::string> sockets(argv + 3, argv + argc);
  std::vector<std::vector<double>> times(sockets.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t s = 0; s < sockets.size(); ++s) {
      times[s].push_back(run(
          {ctl, "--socket", sockets[s], "service", "attach", "203.0.113.250:9/tcp", "web-1:8080"}));
      run({ctl, "--socket", sockets[s], "service", "detach", "203.0.113.250:9/tcp", "web-1"});
    }
  }
  const double base = median(times[0]);
  for (size_t s = 0; s < sockets.size(); ++s)
    std::printf("socket=%s median_ms=%.2f ratio=%.3f\n", sockets[s].c_str(), median(times[s]),
                median(times[s]) / base);
  return 0;
}
