#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "bpf_map_read.h"
#include "bpf_service_key.h"
#include "hostlb/netlink/chaining.h"
#include "hostlb/netlink/error.h"
#include "tc_ingress.h"

namespace hostlb {

extern const uint8_t kChainBpfObject[];
extern const size_t kChainBpfObject_size;

namespace {

// The program's map layouts (netlink/bpf/chain.bpf.c).
struct ServiceValueBpf {
  uint32_t index;
  uint32_t rows;
};

[[noreturn]] void fail(const std::string& what, int error) { throw KernelError(what, error); }

constexpr uint32_t kHandle = 0x686c62;  // "hlb"

class BpfChaining final : public ChainDatapath {
 public:
  ~BpfChaining() override {
    if (object_) bpf_object__close(object_);
  }

  void attach(const std::string& uplink, const MacAddress& self) override {
    const unsigned ifindex = if_nametoindex(uplink.c_str());
    if (ifindex == 0) fail("attaching the chaining program to " + uplink, errno);
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "hostlb_chain");
    object_ = bpf_object__open_mem(kChainBpfObject, kChainBpfObject_size, &open_opts);
    if (!object_) fail("opening the chaining program", errno);
    if (int e = bpf_object__load(object_); e != 0)
      fail("loading the chaining program into the kernel (BPF verifier or kfuncs)", -e);
    bpf_program* program = bpf_object__find_program_by_name(object_, "hostlb_chain");
    if (!program) fail("finding the chaining program in its object", ENOENT);
    for (auto [name, fd] : {std::pair{"services", &services_}, std::pair{"previous", &previous_},
                            std::pair{"gateways", &gateways_}, std::pair{"self", &self_},
                            std::pair{"chained", &chained_}}) {
      *fd = bpf_object__find_map_fd_by_name(object_, name);
      if (*fd < 0) fail(std::string("finding the chaining program's map ") + name, ENOENT);
    }
    const uint32_t zero = 0;
    if (bpf_map_update_elem(self_, &zero, self.bytes().data(), BPF_ANY) != 0)
      fail("setting the chaining program's source MAC", errno);
    uplink_.emplace(uplink, kHandle);
    uplink_->attach(bpf_program__fd(program), "the chaining program");
    attached_ = true;
    written_ = {};
  }

  void set_gateways(const std::set<MacAddress>& gateways) override {
    const uint8_t one = 1;
    for (const auto& mac : gateways_written_)
      if (!gateways.count(mac)) bpf_map_delete_elem(gateways_, mac.bytes().data());
    for (const auto& mac : gateways)
      if (bpf_map_update_elem(gateways_, mac.bytes().data(), &one, BPF_ANY) != 0)
        fail("adding gateway " + mac.str() + " to the chaining program", errno);
    gateways_written_ = gateways;
  }

  void update(const ChainTables& tables) override {
    for (const auto& [key, service] : written_.services) {
      if (tables.services.count(key)) continue;
      const ServiceKeyBpf k = bpf_key(key);
      bpf_map_delete_elem(services_, &k);
    }
    for (const auto& [key, service] : tables.services) {
      auto it = written_.services.find(key);
      if (it != written_.services.end() && it->second == service) continue;
      if (key.protocol != Protocol::kTcp) continue;  // TCP only
      const ServiceKeyBpf k = bpf_key(key);
      const ServiceValueBpf v{service.index, service.rows};
      if (bpf_map_update_elem(services_, &k, &v, BPF_ANY) != 0)
        fail("adding service " + key.str() + " to the chaining program", errno);
    }
    for (const auto& [row, mac] : written_.previous)
      if (!tables.previous.count(row)) bpf_map_delete_elem(previous_, &row);
    for (const auto& [row, mac] : tables.previous) {
      auto it = written_.previous.find(row);
      if (it != written_.previous.end() && it->second == mac) continue;
      if (bpf_map_update_elem(previous_, &row, mac.bytes().data(), BPF_ANY) != 0)
        fail("adding a chained row to the chaining program", errno);
    }
    written_ = tables;
  }

  std::map<uint32_t, uint64_t> chained() override { return PercpuSums().all<uint32_t>(chained_); }

  void detach() override {
    if (!attached_ || !uplink_) return;
    try {
      uplink_->detach("the chaining program");
    } catch (const KernelError&) {
      // gone with the interface: nothing to do
    }
    attached_ = false;
  }

 private:
  bpf_object* object_ = nullptr;
  int services_ = -1, previous_ = -1, gateways_ = -1, self_ = -1, chained_ = -1;
  bool attached_ = false;
  std::optional<TcIngress> uplink_;
  ChainTables written_;
  std::set<MacAddress> gateways_written_;
};

}  // namespace

std::unique_ptr<ChainDatapath> make_bpf_chaining() { return std::make_unique<BpfChaining>(); }

void remove_chaining(const std::string& uplink) {
  TcIngress(uplink, kHandle).detach("the chaining program");
}

}  // namespace hostlb
