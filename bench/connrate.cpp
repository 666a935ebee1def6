// A connection-rate load generator and its sink, for bench/run.sh.
//
//   hostlb-connrate serve PORT
//       serve connections until killed: answer a request with a response.
//   hostlb-connrate connect MODE IP PORT SOURCE_BASE SOURCE_COUNT SECONDS THREADS
//       open TCP connections to IP:PORT for SECONDS, spreading the source
//       address over SOURCE_COUNT consecutive IPv4 addresses from
//       SOURCE_BASE; print "connections=N failures=F seconds=S rate=R".
//       MODE "handshake": connect, then close. MODE "request": connect,
//       send a 64-byte request, read the 64-byte response, then close.
//
// The client always closes with a RST (SO_LINGER 0), so neither side keeps
// TIME_WAIT and port reuse cannot stall on PAWS. Bounded by SECONDS; every
// connect and read has a 1 s timeout.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kMessage = 64;

void serve_one(int c) {
  char buf[kMessage];
  size_t got = 0;
  while (got < kMessage) {
    const ssize_t n = ::recv(c, buf + got, kMessage - got, 0);
    if (n <= 0) break;  // handshake mode: the client's RST ends it
    got += static_cast<size_t>(n);
  }
  if (got == kMessage) (void)!::send(c, buf, kMessage, MSG_NOSIGNAL);
  ::close(c);
}

int serve(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 4096) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  // A few threads accept on the same socket so that one slow client does
  // not hold up the others.
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([fd] {
      for (;;) {
        const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        const timeval tv{1, 0};
        ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        serve_one(c);
      }
    });
  }
  for (auto& t : threads) t.join();
  return 0;
}

bool request_response(int fd) {
  char buf[kMessage] = {'q'};
  if (::send(fd, buf, kMessage, MSG_NOSIGNAL) != static_cast<ssize_t>(kMessage)) return false;
  size_t got = 0;
  while (got < kMessage) {
    const ssize_t n = ::recv(fd, buf + got, kMessage - got, 0);
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

int connect_loop(bool request, const char* ip, int port, const char* source_base, int source_count,
                 double seconds, int threads) {
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  in_addr base{};
  if (inet_pton(AF_INET, ip, &dst.sin_addr) != 1 || inet_pton(AF_INET, source_base, &base) != 1) {
    std::fprintf(stderr, "bad address\n");
    return 2;
  }
  std::atomic<long> ok{0}, failed{0};
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      long i = t;
      while (std::chrono::steady_clock::now() < deadline) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const linger lin{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
        const timeval tv{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_in src{};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(ntohl(base.s_addr) + static_cast<uint32_t>(i % source_count));
        ++i;
        if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0 &&
            ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0 &&
            (!request || request_response(fd)))
          ++ok;
        else
          ++failed;
        ::close(fd);
      }
    });
  }
  for (auto& w : workers) w.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("connections=%ld failures=%ld seconds=%.3f rate=%.1f\n", ok.load(), failed.load(),
              elapsed, static_cast<double>(ok.load()) / elapsed);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "serve") == 0) return serve(std::atoi(argv[2]));
  if (argc == 9 && std::strcmp(argv[1], "connect") == 0 &&
      (std::strcmp(argv[2], "handshake") == 0 || std::strcmp(argv[2], "request") == 0))
    return connect_loop(std::strcmp(argv[2], "request") == 0, argv[3], std::atoi(argv[4]), argv[5],
                        std::atoi(argv[6]), std::atof(argv[7]), std::atoi(argv[8]));
  std::fprintf(stderr,
               "usage: %s serve PORT\n"
               "       %s connect handshake|request IP PORT SOURCE_BASE SOURCE_COUNT SECONDS "
               "THREADS\n",
               argv[0], argv[0]);
  return 2;
}
