// Pieces of the nftables layer shared between its source files.
#pragma once

#include <libnftnl/set.h>
#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "hostlb/netlink/netlink_socket.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/nft_batch.h"

namespace hostlb {

// unique_ptr deleter for the libnftnl/libmnl objects: their free functions.
template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    if (p) Free(p);
  }
};

// Tells other processes' nftables commits (to any table) from our own by
// nftables' generation, which every commit advances by one: one small
// request, not a look at a table.
class GenerationWatch {
 public:
  explicit GenerationWatch(std::function<netlink::Socket&()> socket) : socket_(std::move(socket)) {}
  // One commit of our own (a batch).
  void own_commit() { ++own_commits_; }
  // After our own scripts (libnftables may commit more than once for one)
  // or a whole table written anew: a new baseline, read at once so that a
  // commit by someone else from now on still counts.
  void rebase();
  // Whether someone else committed since the previous look; the first look
  // only takes the baseline. Throws KernelError.
  bool changed_by_others();

 private:
  uint32_t read();

  std::function<netlink::Socket&()> socket_;
  std::optional<uint32_t> known_;
  uint32_t own_commits_ = 0;  // since known_ was read
};

// One element of a set or map as the kernel's answer holds it (`data` empty
// for a set); `raw` for what else it carries (counters).
struct SetElement {
  std::span<const uint8_t> key, data;
  nftnl_set_elem* raw;
};
// Calls `each` for every element of a GETSETELEM answer message.
void for_each_set_element(const nlmsghdr* nlh, const std::function<void(const SetElement&)>& each);

// Sends a batch and reads the kernel's verdict on it: KernelError naming the
// first operation the kernel refused, with its errno and extended ACK text.
void send_nft_batch(netlink::Socket& socket, const NftBatch& batch);

// Runs an nft script (one transaction) with libnftables in a forked helper.
NftRunStats run_nft_script_in_helper(const std::string& what, const std::string& script);

// The counters of hostlb's table (zero where the table or set is missing).
NftRuleset::Counters read_nft_counters();
NftRuleset::Inventory read_nft_inventory();
// The first way the kernel's table differs from what `desired` renders to,
// or nullopt if it holds exactly that.
std::optional<std::string> find_nft_difference(const Datapath& desired, const MarkLayout& marks,
                                               RulesetPolicies policies);

}  // namespace hostlb
