// What the kernel must hold for a desired State: the bindings (one per
// service x local backend, each with a stable numeric identity carried in the
// conntrack mark) and the host entries (route + permanent neighbour for each
// backend address on its bridge). Pure: compiled from State, diffed, rendered
// by netlink/.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "hostlb/policies/model.h"

namespace hostlb {

// Which conntrack mark bits belong to hostlb. A binding's identity is stored
// in those bits; the others are left to other netfilter users.
class MarkLayout {
 public:
  // Throws std::invalid_argument unless `mask` is one non-empty run of bits.
  explicit MarkLayout(uint32_t mask);

  uint32_t mask() const { return mask_; }
  uint32_t max_id() const { return mask_ >> shift_; }
  uint32_t mark_for(uint32_t id) const { return id << shift_; }
  uint32_t id_from_mark(uint32_t mark) const { return (mark & mask_) >> shift_; }

  static constexpr uint32_t kDefaultMask = 0xfffff000;

 private:
  uint32_t mask_;
  unsigned shift_;
};

struct BindingKey {
  ServiceKey service;
  std::string backend;

  std::string str() const { return service.str() + " -> " + backend; }
  auto operator<=>(const BindingKey&) const = default;
};

// What a frame delivered by a gateway carries: the backend's MAC and the
// service (VIP, protocol, port). It is the key of every lookup the
// datapath makes (the DNAT and identity maps, the refuse sets, the miss
// counters) and of what is read back from them.
struct DeliveryKey {
  MacAddress mac;
  ServiceKey service;

  auto operator<=>(const DeliveryKey&) const = default;
};

struct Binding {
  BindingKey key;
  MacAddress mac;    // the frame's destination MAC the gateway chose
  IpAddress target;  // the backend's address of the VIP's family
  uint16_t target_port = 0;
  uint32_t id = 0;  // 1..MarkLayout::max_id(), stable for the binding's life
  // Whether it takes new connections: false while its health check says
  // it is down (or has not said yet). A binding that does not serve keeps
  // its identity and its established connections; its key is refused like
  // a draining binding's, and counted apart.
  bool serving = true;

  DeliveryKey delivery() const { return {mac, key.service}; }
  bool operator==(const Binding&) const = default;
};

struct HostEntry {
  std::string bridge;
  IpAddress address;
  MacAddress mac;
  std::string backend;

  auto operator<=>(const HostEntry&) const = default;
};

// Identities handed out so far, kept across restarts so that marks on live
// connections keep meaning the same binding.
using BindingIds = std::map<BindingKey, uint32_t>;

struct Datapath {
  std::vector<Binding> bindings;     // sorted by key
  std::vector<HostEntry> hosts;      // sorted
  std::vector<std::string> bridges;  // sorted, unique
  // The anti-spoof guard: frames from these MACs (the backends) with one of
  // these addresses (the VIPs) as source are dropped. A backend's replies
  // carry its own address until conntrack rewrites them after routing, so
  // only forged packets match. Both sorted, unique.
  std::vector<MacAddress> guard_macs;
  std::vector<IpAddress> guard_vips;
  // New connections to these are refused (reset, ICMP or dropped by the
  // daemon's policy) and counted. Sorted, unique, none of them a binding's.
  std::vector<DeliveryKey> refused;

  BindingIds ids() const;
  bool operator==(const Datapath&) const = default;
};

class IdSpaceExhausted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Keeps the identity of every binding that `previous` knows and gives new
// bindings the lowest identities `previous` does not use. Throws
// IdSpaceExhausted when the mark bits cannot number them all. Only the
// backends on `host` (Backend::is_on) get bindings, host entries and guard
// MACs: the others run on other hypervisors of the fleet.
Datapath compile_datapath(const State& state, const BindingIds& previous, const MarkLayout& marks,
                          std::string_view host = {});
// The VIPs of the state's services, sorted and unique (Datapath::guard_vips).
std::vector<IpAddress> service_vips(const State& state);

struct DatapathDiff {
  std::vector<Binding> bindings_added;
  std::vector<Binding> bindings_removed;
  std::vector<HostEntry> hosts_added;
  std::vector<HostEntry> hosts_removed;
  std::vector<MacAddress> guard_macs_added;
  std::vector<MacAddress> guard_macs_removed;
  std::vector<IpAddress> guard_vips_added;
  std::vector<IpAddress> guard_vips_removed;
  std::vector<DeliveryKey> refused_added;
  std::vector<DeliveryKey> refused_removed;

  // Whether the nftables table changes.
  bool changes_ruleset() const {
    return !bindings_added.empty() || !bindings_removed.empty() || !guard_macs_added.empty() ||
           !guard_macs_removed.empty() || !guard_vips_added.empty() ||
           !guard_vips_removed.empty() || !refused_added.empty() || !refused_removed.empty();
  }
  bool empty() const { return !changes_ruleset() && hosts_added.empty() && hosts_removed.empty(); }
};

// Bindings of one service, of one backend, of one backend in one service, or
// all of them when neither is given.
std::vector<const Binding*> select_bindings(const Datapath& datapath,
                                            const std::optional<ServiceKey>& service,
                                            const std::optional<std::string>& backend);

// A binding whose target changed appears as removed and added (its identity
// is the same; the kernel object is rewritten).
DatapathDiff diff_datapath(const Datapath& before, const Datapath& after);
// `before` with `diff` applied: patch_datapath(a, diff_datapath(a, b)) == b
// (bridges derived from the host entries). For a datapath that keeps the
// whole desired state itself and is handed only the changes.
Datapath patch_datapath(const Datapath& before, const DatapathDiff& diff);

// Sets next.refused to `refused` and records the difference from
// before.refused in `diff` (for changes computed without diff_datapath).
void set_refused(Datapath& next, std::vector<DeliveryKey> refused, const Datapath& before,
                 DatapathDiff& diff);

// The bindings a diff removes for good, whose connections are to be flushed:
// removed and not rewritten under the same identity (a re-pointed binding
// keeps its connections, which go where they went).
std::vector<Binding> bindings_gone(const DatapathDiff& diff);

}  // namespace hostlb
