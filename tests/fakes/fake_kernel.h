// Stateful fakes of the kernel interfaces: each applies an operation the way
// the kernel would (a failed nft transaction leaves the ruleset as it was, a
// route to a missing link fails) and exposes the resulting state.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "hostlb/netlink/conntrack.h"
#include "hostlb/netlink/error.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/routes.h"
#include "hostlb/netlink/sysctl.h"

namespace hostlb::testing {

// nf_tables as far as hostlb's table goes: a transaction applies whole or
// not at all, deleting what is missing fails with ENOENT and adding what
// exists with EEXIST. The state is dumped with the real renderer, so tests
// compare canonical text.
class FakeNft : public NftRuleset {
 public:
  explicit FakeNft(RulesetPolicies policies = {}) : policies_(policies) {}

  NftRunStats replace(const Datapath& datapath, const MarkLayout& marks) override {
    begin("replacing table");
    table_ = true;
    marks_ = marks;
    rules_ = rules_per_chain(render_full_ruleset(Datapath{}, marks, policies_));
    bindings_.clear();
    for (const auto& binding : datapath.bindings) bindings_[binding.id] = binding;
    macs_ = {datapath.guard_macs.begin(), datapath.guard_macs.end()};
    vips_ = {datapath.guard_vips.begin(), datapath.guard_vips.end()};
    refused_.clear();
    for (const auto& key : datapath.refused) refused_[key] = 0;
    for (const auto& binding : datapath.bindings)
      if (!binding.serving) refused_[binding.delivery()] = 0;
    ++replacements;
    return {};
  }

  void apply(const DatapathDiff& diff, const MarkLayout& marks) override {
    begin("applying a change");
    if (!table_) throw KernelError("applying a change", ENOENT);
    auto next = bindings_;
    auto refused = refused_;
    // A binding that does not serve is an element of the refuse set.
    for (const auto& binding : diff.bindings_removed) {
      auto it = next.find(binding.id);
      if (it == next.end() || !(it->second == binding))
        throw KernelError("deleting " + binding.key.str(), ENOENT);
      next.erase(it);
      if (!binding.serving && !refused.erase(binding.delivery()))
        throw KernelError("deleting refused " + binding.key.str(), ENOENT);
    }
    for (const auto& key : diff.refused_removed)
      if (!refused.erase(key)) throw KernelError("deleting refused " + key.service.str(), ENOENT);
    for (const auto& binding : diff.bindings_added) {
      if (!next.emplace(binding.id, binding).second)
        throw KernelError("adding " + binding.key.str(), EEXIST);
      if (!binding.serving && !refused.emplace(binding.delivery(), 0).second)
        throw KernelError("adding refused " + binding.key.str(), EEXIST);
    }
    auto macs = macs_;
    auto vips = vips_;
    for (const auto& key : diff.refused_added)
      if (!refused.emplace(key, 0).second)
        throw KernelError("adding refused " + key.service.str(), EEXIST);
    for (const auto& mac : diff.guard_macs_removed)
      if (!macs.erase(mac)) throw KernelError("deleting MAC " + mac.str(), ENOENT);
    for (const auto& vip : diff.guard_vips_removed)
      if (!vips.erase(vip)) throw KernelError("deleting VIP " + vip.str(), ENOENT);
    for (const auto& mac : diff.guard_macs_added)
      if (!macs.insert(mac).second) throw KernelError("adding MAC " + mac.str(), EEXIST);
    for (const auto& vip : diff.guard_vips_added)
      if (!vips.insert(vip).second) throw KernelError("adding VIP " + vip.str(), EEXIST);
    bindings_ = std::move(next);
    macs_ = std::move(macs);
    vips_ = std::move(vips);
    refused_ = std::move(refused);
    marks_ = marks;
    ++increments;
  }

  Counters counters() override {
    Counters out;
    out.guard_drops = guard_drops;
    out.refused = refused_;
    return out;
  }

  Inventory inventory() override {
    Inventory out;
    out.table = table_;
    for (const auto& [id, b] : bindings_) {
      if (!b.serving) continue;
      out.targets.insert({b.mac, b.key.service});
      out.identities.insert({b.mac, b.key.service});
    }
    for (const auto& [key, packets] : refused_) out.refused.insert(key);
    return out;
  }

  // Compares what the real check compares (nft_counters.cpp): the rules
  // of each chain, every element of the DNAT and identity maps with its
  // data, the refuse sets and the guard sets.
  std::optional<std::string> difference(const Datapath& desired, const MarkLayout& marks) override {
    if (!table_) return "table inet hostlb is missing";
    for (const auto& [chain, count] :
         rules_per_chain(render_full_ruleset(Datapath{}, marks, policies_))) {
      const auto it = rules_.find(chain);
      const size_t have = it == rules_.end() ? 0 : it->second;
      if (have != count)
        return "chain " + chain + " has " + std::to_string(have) + " rules, not " +
               std::to_string(count);
    }
    std::map<DeliveryKey, std::pair<IpAddress, uint16_t>> targets, want_targets;
    std::map<DeliveryKey, uint32_t> identities, want_identities;
    std::set<DeliveryKey> refused, want_refused(desired.refused.begin(), desired.refused.end());
    for (const auto& [id, b] : bindings_) {
      if (!b.serving) continue;
      targets[{b.mac, b.key.service}] = {b.target, b.target_port};
      identities[{b.mac, b.key.service}] = marks_.mark_for(b.id);
    }
    for (const auto& b : desired.bindings) {
      if (!b.serving) {
        want_refused.insert(b.delivery());
        continue;
      }
      want_targets[{b.mac, b.key.service}] = {b.target, b.target_port};
      want_identities[{b.mac, b.key.service}] = marks.mark_for(b.id);
    }
    if (targets != want_targets) return "the DNAT maps differ";
    if (identities != want_identities) return "the identity maps differ";
    for (const auto& [key, packets] : refused_) refused.insert(key);
    if (refused != want_refused) return "the refuse sets differ";
    if (macs_ != std::set<MacAddress>(desired.guard_macs.begin(), desired.guard_macs.end()))
      return "the guard MAC set differs";
    if (vips_ != std::set<IpAddress>(desired.guard_vips.begin(), desired.guard_vips.end()))
      return "the guard VIP sets differ";
    return std::nullopt;
  }

  // A packet to a refused key arrives; false if the key is not refused.
  bool refuse_packet(const DeliveryKey& key) {
    auto it = refused_.find(key);
    if (it == refused_.end()) return false;
    ++it->second;
    return true;
  }
  bool refuses(const DeliveryKey& key) const { return refused_.count(key) != 0; }
  uint64_t guard_drops = 0;

  void remove() override {
    begin("removing table");
    table_ = false;
    rules_.clear();
    bindings_.clear();
    macs_.clear();
    vips_.clear();
    refused_.clear();
  }

  // What `nft list` would hold, as the text that would create it; "" when
  // the table does not exist.
  std::string ruleset() const {
    if (!table_) return "";
    Datapath datapath;
    for (const auto& [id, binding] : bindings_) datapath.bindings.push_back(binding);
    std::sort(datapath.bindings.begin(), datapath.bindings.end(),
              [](const Binding& a, const Binding& b) { return a.key < b.key; });
    datapath.guard_macs.assign(macs_.begin(), macs_.end());
    datapath.guard_vips.assign(vips_.begin(), vips_.end());
    std::set<DeliveryKey> down;
    for (const auto& [id, binding] : bindings_)
      if (!binding.serving) down.insert(binding.delivery());
    for (const auto& [key, packets] : refused_)
      if (!down.count(key)) datapath.refused.push_back(key);
    return render_full_ruleset(datapath, marks_, policies_);
  }

  // Someone else edits the table behind hostlbd's back (each in one commit
  // of their own).
  void drop_binding(uint32_t id) {
    bindings_.erase(id);
    ++foreign_commits;
  }
  void drop_rule(const std::string& chain) {
    if (rules_[chain] > 0) --rules_[chain];
    ++foreign_commits;
  }
  void drop_refused(const DeliveryKey& key) {
    refused_.erase(key);
    ++foreign_commits;
  }
  void drop_guard_mac(const MacAddress& mac) {
    macs_.erase(mac);
    ++foreign_commits;
  }

  bool changed_by_others() override {
    const bool others = foreign_commits > 0;
    foreign_commits = 0;
    return others;
  }
  int foreign_commits = 0;  // not yet seen by changed_by_others

  int transactions = 0;
  int replacements = 0;
  int increments = 0;
  int failures_to_inject = 0;  // the next N transactions fail

 private:
  void begin(const std::string& what) {
    ++transactions;
    if (failures_to_inject > 0) {
      --failures_to_inject;
      throw KernelError(what, EPERM);
    }
  }

  RulesetPolicies policies_;
  bool table_ = false;
  std::map<std::string, size_t> rules_;
  MarkLayout marks_{MarkLayout::kDefaultMask};
  std::map<uint32_t, Binding> bindings_;
  std::set<MacAddress> macs_;
  std::set<IpAddress> vips_;
  std::map<DeliveryKey, uint64_t> refused_;
};

class FakeRoutes : public RouteTable {
 public:
  std::optional<LinkState> link(const std::string& name) override {
    auto it = links.find(name);
    if (it == links.end()) return std::nullopt;
    return LinkState{it->second, !down.count(name)};
  }
  std::string link_name(int ifindex) override {
    for (const auto& [name, index] : links)
      if (index == ifindex) return name;
    return "ifindex " + std::to_string(ifindex);
  }
  void replace_host_route(int ifindex, const IpAddress& address) override {
    check_link(ifindex, "installing route " + address.str());
    if (fail_route_for && *fail_route_for == address)
      throw KernelError("installing route " + address.str(), EPERM);
    routes.insert({ifindex, address});
  }
  void replace_neighbour(int ifindex, const IpAddress& address, const MacAddress& mac) override {
    check_link(ifindex, "installing neighbour " + address.str());
    neighbours[{ifindex, address}] = mac;
  }
  void delete_host_route(int ifindex, const IpAddress& address) override {
    routes.erase({ifindex, address});
  }
  void delete_neighbour(int ifindex, const IpAddress& address) override {
    neighbours.erase({ifindex, address});
  }
  std::vector<InstalledRoute> list_host_routes() override {
    std::vector<InstalledRoute> out;
    for (const auto& [ifindex, address] : routes) out.push_back({ifindex, address});
    return out;
  }
  std::vector<Neighbour> list_permanent_neighbours() override {
    std::vector<Neighbour> out;
    for (const auto& [key, mac] : neighbours) out.push_back({key.first, key.second, mac});
    return out;
  }

  std::map<std::string, int> links{{"br0", 10}, {"br1", 11}};
  std::set<std::string> down;
  std::set<std::pair<int, IpAddress>> routes;
  std::map<std::pair<int, IpAddress>, MacAddress> neighbours;
  std::optional<IpAddress> fail_route_for;

 private:
  void check_link(int ifindex, const std::string& what) {
    for (const auto& [name, index] : links)
      if (index == ifindex) return;
    throw KernelError(what, ENODEV);
  }
};

class FakeSysctls : public Sysctls {
 public:
  std::optional<std::string> read(const std::string& key) override {
    auto it = values.find(key);
    if (it == values.end()) return std::nullopt;
    return it->second;
  }
  void write(const std::string& key, const std::string& value) override {
    if (!values.count(key)) throw KernelError("setting sysctl " + key, ENOENT);
    values[key] = value;
    ++writes;
  }

  // A namespace with br_netfilter loaded and two bridges that do not forward.
  std::map<std::string, std::string> values{
      {"net/bridge/bridge-nf-call-iptables", "1"},   {"net/bridge/bridge-nf-call-ip6tables", "0"},
      {"net/netfilter/nf_conntrack_timestamp", "0"}, {"net/ipv4/conf/br0/forwarding", "0"},
      {"net/ipv6/conf/br0/forwarding", "0"},         {"net/ipv4/conf/br1/forwarding", "0"},
      {"net/ipv6/conf/br1/forwarding", "0"},
  };
  int writes = 0;
};

// Conntrack entries as marks; flush removes those that match.
class FakeConntrack : public ConntrackTable {
 public:
  // Parts of `part_size` entries, like the kernel's datagrams; the entries
  // are those of the moment the listing opened.
  class Listing final : public ConntrackListing {
   public:
    Listing(std::vector<ConntrackEntry> entries, size_t part_size, std::atomic<size_t>& parts_read)
        : entries_(std::move(entries)), part_size_(part_size), parts_read_(parts_read) {}
    bool next(const std::function<void(const ConntrackEntry&)>& each) override {
      if (at_ >= entries_.size() && parts_ > 0) return false;
      ++parts_;
      ++parts_read_;
      for (size_t n = 0; n < part_size_ && at_ < entries_.size(); ++n) each(entries_[at_++]);
      return true;
    }

   private:
    std::vector<ConntrackEntry> entries_;
    size_t part_size_;
    std::atomic<size_t>& parts_read_;
    size_t at_ = 0, parts_ = 0;
  };
  std::unique_ptr<ConntrackListing> open_listing(uint32_t value, uint32_t mask) override {
    std::vector<ConntrackEntry> matching;
    list(value, mask, [&](const ConntrackEntry& e) { matching.push_back(e); });
    ++listings_opened;
    return std::make_unique<Listing>(std::move(matching), listing_part_size, parts_read);
  }
  size_t listing_part_size = 2;
  int listings_opened = 0;
  std::atomic<size_t> parts_read{0};  // read by tests while the daemon's loop runs
  size_t reap_expired() override {
    ++reaps;
    return 0;
  }
  int reaps = 0;
  size_t list(uint32_t value, uint32_t mask,
              const std::function<void(const ConntrackEntry&)>& each) override {
    size_t n = 0;
    for (uint32_t mark : entries) {
      if ((mark & mask) != value) continue;
      ConntrackEntry entry;
      entry.mark = mark;
      each(entry);
      ++n;
    }
    return n;
  }
  size_t count(uint32_t value, uint32_t mask) override {
    size_t n = 0;
    for (uint32_t mark : entries) n += (mark & mask) == value;
    return n;
  }
  size_t flush(uint32_t value, uint32_t mask) override {
    const size_t n = count(value, mask);
    std::erase_if(entries, [&](uint32_t mark) { return (mark & mask) == value; });
    flushes.push_back(value);
    return n;
  }
  std::map<uint32_t, size_t> flush_marks(const std::set<uint32_t>& values, uint32_t mask) override {
    std::map<uint32_t, size_t> gone;
    std::erase_if(entries, [&](uint32_t mark) {
      const bool match = values.count(mark & mask) != 0;
      if (match) ++gone[mark & mask];
      return match;
    });
    flushes.insert(flushes.end(), values.begin(), values.end());
    return gone;
  }
  std::vector<uint32_t> entries;  // the mark of each live entry
  std::vector<uint32_t> flushes;
};

}  // namespace hostlb::testing
