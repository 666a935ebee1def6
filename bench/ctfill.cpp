// Fills the conntrack table of the current network namespace for
// bench/flush.sh: COUNT established TCP entries from 198.18.x.y to
// 203.0.113.10:80, every other one carrying MARK, the rest MARK2.
//
//   hostlb-ctfill COUNT MARK MARK2
#include <arpa/inet.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s COUNT MARK MARK2\n", argv[0]);
    return 2;
  }
  const long count = std::atol(argv[1]);
  const uint32_t marks[2] = {static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 0)),
                             static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 0))};
  nfct_handle* h = nfct_open(CONNTRACK, 0);
  if (!h) {
    std::perror("nfct_open");
    return 1;
  }
  long failed = 0;
  for (long i = 0; i < count; ++i) {
    nf_conntrack* ct = nfct_new();
    const uint32_t client = htonl((198u << 24) | (18u << 16) | static_cast<uint32_t>(i / 60000));
    nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
    nfct_set_attr_u32(ct, ATTR_IPV4_SRC, client);
    nfct_set_attr_u32(ct, ATTR_IPV4_DST, inet_addr("203.0.113.10"));
    nfct_set_attr_u8(ct, ATTR_L4PROTO, IPPROTO_TCP);
    const uint16_t sport = htons(static_cast<uint16_t>(1024 + i % 60000));
    nfct_set_attr_u16(ct, ATTR_PORT_SRC, sport);
    nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(80));
    nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);  // the reply tuple, as conntrack -I does
    nfct_set_attr_u8(ct, ATTR_TCP_STATE, TCP_CONNTRACK_ESTABLISHED);
    nfct_set_attr_u32(ct, ATTR_TIMEOUT, 600);
    nfct_set_attr_u32(ct, ATTR_MARK, marks[i % 2]);
    if (nfct_query(h, NFCT_Q_CREATE, ct) < 0 && ++failed == 1) std::perror("creating an entry");
    nfct_destroy(ct);
  }
  nfct_close(h);
  std::printf("created %ld entries (%ld failed)\n", count - failed, failed);
  return failed == 0 ? 0 : 1;
}
