// Times hostlb's flush of one mark (netlink/ConntrackTable, the code the
// daemon runs) in the current network namespace, for bench/flush.sh.
//   hostlb-ctflush MARK MASK
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "hostlb/netlink/conntrack.h"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  auto table = hostlb::make_ctnetlink_table();
  const auto start = std::chrono::steady_clock::now();
  const size_t n = table->flush(static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 0)),
                                static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 0)));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("flushed=%zu ms=%.1f\n", n, ms);
  return 0;
}
