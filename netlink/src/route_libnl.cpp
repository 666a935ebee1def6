#include <fcntl.h>
#include <linux/if.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/routes.h"

namespace hostlb {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const {
    if (p) Free(p);
  }
};
using SocketPtr = std::unique_ptr<nl_sock, Deleter<nl_sock, nl_socket_free>>;
using AddrPtr = std::unique_ptr<nl_addr, Deleter<nl_addr, nl_addr_put>>;
using RoutePtr = std::unique_ptr<rtnl_route, Deleter<rtnl_route, rtnl_route_put>>;
using NeighPtr = std::unique_ptr<rtnl_neigh, Deleter<rtnl_neigh, rtnl_neigh_put>>;
using LinkPtr = std::unique_ptr<rtnl_link, Deleter<rtnl_link, rtnl_link_put>>;
using CachePtr = std::unique_ptr<nl_cache, Deleter<nl_cache, nl_cache_free>>;

// libnl folds many kernel errnos into "Unspecific failure"; the error
// callback keeps the kernel's own errno so that messages can say it.
int remember_kernel_errno(sockaddr_nl*, nlmsgerr* err, void* arg) {
  *static_cast<int*>(arg) = -err->error;
  return NL_STOP;
}

int af_of(const IpAddress& address) { return address.is_v4() ? AF_INET : AF_INET6; }

AddrPtr build_addr(const IpAddress& address) {
  AddrPtr addr(nl_addr_build(af_of(address), address.bytes().data(), address.size()));
  if (!addr) throw KernelError("building address " + address.str(), "out of memory");
  nl_addr_set_prefixlen(addr.get(), static_cast<int>(address.size() * 8));
  return addr;
}

IpAddress from_nl_addr(const nl_addr* addr) {
  const auto* bytes = static_cast<const uint8_t*>(nl_addr_get_binary_addr(addr));
  return IpAddress::from_bytes(nl_addr_get_family(addr) == AF_INET ? IpFamily::kV4 : IpFamily::kV6,
                               bytes);
}

class LibnlRouteTable final : public RouteTable {
 public:
  LibnlRouteTable() : sock_(nl_socket_alloc()) {
    if (!sock_) throw KernelError("opening an rtnetlink socket", "out of memory");
    if (int err = nl_connect(sock_.get(), NETLINK_ROUTE); err < 0)
      throw KernelError("opening an rtnetlink socket", nl_geterror(err));
    nl_socket_modify_err_cb(sock_.get(), NL_CB_CUSTOM, remember_kernel_errno, &kernel_errno_);
  }

  std::optional<LinkState> link(const std::string& name) override {
    kernel_errno_ = 0;
    rtnl_link* raw = nullptr;
    const int err = rtnl_link_get_kernel(sock_.get(), 0, name.c_str(), &raw);
    LinkPtr found(raw);
    if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV || kernel_errno_ == ENODEV) {
      kernel_errno_ = 0;
      return std::nullopt;
    }
    if (err < 0) fail("looking up link " + name, err);
    return LinkState{rtnl_link_get_ifindex(found.get()),
                     (rtnl_link_get_flags(found.get()) & IFF_UP) != 0};
  }

  std::string link_name(int ifindex) override {
    rtnl_link* raw = nullptr;
    const int err = rtnl_link_get_kernel(sock_.get(), ifindex, nullptr, &raw);
    LinkPtr link(raw);
    if (err < 0) return "ifindex " + std::to_string(ifindex);
    return rtnl_link_get_name(link.get());
  }

  void replace_host_route(int ifindex, const IpAddress& address) override {
    kernel_errno_ = 0;
    const std::string what = "installing route " + describe(address, ifindex);
    auto route = host_route(ifindex, address, what);
    if (int err = rtnl_route_add(sock_.get(), route.get(), NLM_F_REPLACE); err < 0) fail(what, err);
  }

  void delete_host_route(int ifindex, const IpAddress& address) override {
    kernel_errno_ = 0;
    const std::string what = "removing route " + describe(address, ifindex);
    auto route = host_route(ifindex, address, what);
    const int err = rtnl_route_delete(sock_.get(), route.get(), 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND) fail(what, err);
  }

  void replace_neighbour(int ifindex, const IpAddress& address, const MacAddress& mac) override {
    kernel_errno_ = 0;
    const std::string what = "installing neighbour " + address.str() + " lladdr " + mac.str() +
                             " on " + link_name(ifindex);
    auto neigh = neighbour(ifindex, address, what);
    AddrPtr lladdr(nl_addr_build(AF_LLC, mac.bytes().data(), mac.bytes().size()));
    if (!lladdr) throw KernelError(what, "out of memory");
    rtnl_neigh_set_lladdr(neigh.get(), lladdr.get());
    rtnl_neigh_set_state(neigh.get(), NUD_PERMANENT);
    if (int err = rtnl_neigh_add(sock_.get(), neigh.get(), NLM_F_CREATE | NLM_F_REPLACE); err < 0)
      fail(what, err);
  }

  void delete_neighbour(int ifindex, const IpAddress& address) override {
    kernel_errno_ = 0;
    const std::string what = "removing neighbour " + address.str() + " on " + link_name(ifindex);
    auto neigh = neighbour(ifindex, address, what);
    const int err = rtnl_neigh_delete(sock_.get(), neigh.get(), 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) fail(what, err);
  }

  std::vector<InstalledRoute> list_host_routes() override {
    kernel_errno_ = 0;
    std::vector<InstalledRoute> found;
    for (int family : {AF_INET, AF_INET6}) {
      nl_cache* raw = nullptr;
      if (int err = rtnl_route_alloc_cache(sock_.get(), family, 0, &raw); err < 0)
        fail("listing routes", err);
      CachePtr cache(raw);
      for (nl_object* obj = nl_cache_get_first(cache.get()); obj; obj = nl_cache_get_next(obj)) {
        auto* route = reinterpret_cast<rtnl_route*>(obj);
        if (rtnl_route_get_protocol(route) != kRouteProtocol) continue;
        if (rtnl_route_get_table(route) != RT_TABLE_MAIN) continue;
        if (rtnl_route_get_nnexthops(route) < 1) continue;
        const nl_addr* dst = rtnl_route_get_dst(route);
        if (!dst || nl_addr_get_prefixlen(dst) != nl_addr_get_len(dst) * 8) continue;
        InstalledRoute entry;
        entry.ifindex = rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0));
        entry.address = from_nl_addr(dst);
        found.push_back(entry);
      }
    }
    return found;
  }

  std::vector<Neighbour> list_permanent_neighbours() override {
    kernel_errno_ = 0;
    nl_cache* raw = nullptr;
    if (int err = rtnl_neigh_alloc_cache(sock_.get(), &raw); err < 0)
      fail("listing neighbours", err);
    CachePtr cache(raw);
    std::vector<Neighbour> found;
    for (nl_object* obj = nl_cache_get_first(cache.get()); obj; obj = nl_cache_get_next(obj)) {
      auto* neigh = reinterpret_cast<rtnl_neigh*>(obj);
      const int family = rtnl_neigh_get_family(neigh);
      if ((family != AF_INET && family != AF_INET6) ||
          !(rtnl_neigh_get_state(neigh) & NUD_PERMANENT))
        continue;
      const nl_addr* dst = rtnl_neigh_get_dst(neigh);
      const nl_addr* ll = rtnl_neigh_get_lladdr(neigh);
      if (!dst || !ll || nl_addr_get_len(ll) != 6) continue;
      std::array<uint8_t, 6> mac;
      std::memcpy(mac.data(), nl_addr_get_binary_addr(ll), 6);
      found.push_back({rtnl_neigh_get_ifindex(neigh), from_nl_addr(dst), MacAddress(mac)});
    }
    return found;
  }

 private:
  // Throws what the kernel said for the last request (its errno), or
  // libnl's text if the failure did not come from the kernel.
  [[noreturn]] void fail(const std::string& what, int err) {
    const int kernel = kernel_errno_;
    kernel_errno_ = 0;
    if (kernel > 0) throw KernelError(what, kernel);
    throw KernelError(what, std::string(nl_geterror(err)) + " (libnl)");
  }

  std::string describe(const IpAddress& address, int ifindex) {
    return address.str() + (address.is_v4() ? "/32" : "/128") + " dev " + link_name(ifindex) +
           " proto " + std::to_string(kRouteProtocol);
  }

  RoutePtr host_route(int ifindex, const IpAddress& address, const std::string& what) {
    RoutePtr route(rtnl_route_alloc());
    rtnl_nexthop* nh = rtnl_route_nh_alloc();
    if (!route || !nh) {
      if (nh) rtnl_route_nh_free(nh);
      throw KernelError(what, "out of memory");
    }
    auto dst = build_addr(address);
    rtnl_route_set_family(route.get(), static_cast<uint8_t>(af_of(address)));
    rtnl_route_set_dst(route.get(), dst.get());
    rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
    rtnl_route_set_protocol(route.get(), kRouteProtocol);
    rtnl_route_set_type(route.get(), RTN_UNICAST);
    if (address.is_v4()) rtnl_route_set_scope(route.get(), RT_SCOPE_LINK);
    rtnl_route_nh_set_ifindex(nh, ifindex);
    rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh from here on
    return route;
  }

  NeighPtr neighbour(int ifindex, const IpAddress& address, const std::string& what) {
    NeighPtr neigh(rtnl_neigh_alloc());
    if (!neigh) throw KernelError(what, "out of memory");
    AddrPtr dst(nl_addr_build(af_of(address), address.bytes().data(), address.size()));
    if (!dst) throw KernelError(what, "out of memory");
    rtnl_neigh_set_ifindex(neigh.get(), ifindex);
    rtnl_neigh_set_family(neigh.get(), af_of(address));
    rtnl_neigh_set_dst(neigh.get(), dst.get());
    return neigh;
  }

  SocketPtr sock_;
  int kernel_errno_ = 0;
};

}  // namespace

std::unique_ptr<RouteTable> make_libnl_route_table() { return std::make_unique<LibnlRouteTable>(); }

namespace {
// struct __fdb_entry of linux/if_bridge.h (whose includes clash with the C
// library's netinet/in.h): the record sysfs brforward is made of.
struct FdbEntry {
  uint8_t mac_addr[6];
  uint8_t port_no;
  uint8_t is_local;
  uint32_t ageing_timer_value;
  uint8_t port_hi;
  uint8_t pad0;
  uint16_t unused;
};
static_assert(sizeof(FdbEntry) == 16);
}  // namespace

std::vector<MacAddress> bridge_learnt_macs(const std::string& bridge) {
  // The forwarding database as sysfs exposes it, read in one go.
  const std::string path = "/sys/class/net/" + bridge + "/brforward";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw KernelError("reading the forwarding database of " + bridge, errno);
  std::vector<MacAddress> out;
  std::vector<FdbEntry> entries(1024);
  for (;;) {
    const ssize_t n = ::read(fd, entries.data(), entries.size() * sizeof(FdbEntry));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      throw KernelError("reading the forwarding database of " + bridge, saved);
    }
    if (n == 0) break;
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(FdbEntry); ++i) {
      if (entries[i].is_local) continue;
      std::array<uint8_t, 6> mac;
      std::memcpy(mac.data(), entries[i].mac_addr, 6);
      out.push_back(MacAddress(mac));
    }
  }
  ::close(fd);
  return out;
}

}  // namespace hostlb
