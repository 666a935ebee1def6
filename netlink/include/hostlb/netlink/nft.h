// nftables: hostlb's ruleset lives in one table, `inet hostlb`, and every
// change to it is one nft transaction (all or nothing).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "hostlb/policies/datapath.h"

namespace hostlb {

inline constexpr const char* kNftFamily = "inet";
inline constexpr const char* kNftTable = "hostlb";

// What happens to a new connection to a refused key (a draining or
// recently removed binding, or one that does not serve because its health
// check says down). Refused packets are counted either way.
enum class RefusePolicy {
  // TCP reset, ICMP port unreachable for UDP. The reset goes out of the
  // bridge port the SYN came in by, but the kernel needs some route to the
  // client first (a default route is enough); the ICMP error is routed, so
  // it needs a route to the client through the bridge. Without them the
  // packet is only dropped.
  kReject,
  kDrop,
};
std::string_view refuse_policy_name(RefusePolicy policy);
std::optional<RefusePolicy> parse_refuse_policy(std::string_view text);

// What happens to a consistency miss: a TCP packet for a served binding
// that is not a SYN and has no conntrack entry (a gateway moved the flow
// here mid-connection). Counted either way.
enum class MissPolicy {
  kReset,   // answer with a TCP reset (same route need as RefusePolicy::kReject)
  kDrop,    // drop it
  kAccept,  // let conntrack pick the flow up and DNAT it (the VM decides)
};
std::string_view miss_policy_name(MissPolicy policy);
std::optional<MissPolicy> parse_miss_policy(std::string_view text);

// What keeps a flood at one VIP from filling the host's conntrack table
// (shared by every conntrack user of the host) and from starving other
// VIPs. Zero turns a limit off.
struct AdmissionLimits {
  // Seconds a VIP connection's conntrack entry lives until it is answered
  // (TCP SYN_SENT and SYN_RECV, UDP unreplied) instead of the kernel's
  // 120 / 60 / 30 s: a spoofed SYN's entry goes away soon.
  uint32_t embryonic_seconds = 5;
  // New connections a second each service (VIP, protocol, port) may open
  // on this host, with a burst of `burst`; more are dropped and counted
  // per service. With embryonic_seconds, one flooded service holds at most
  // about new_per_second * embryonic_seconds + burst unanswered entries.
  uint32_t new_per_second = 10000;
  uint32_t burst = 2000;

  bool operator==(const AdmissionLimits&) const = default;
};

struct RulesetPolicies {
  RefusePolicy refuse = RefusePolicy::kReject;
  MissPolicy miss = MissPolicy::kReset;
  AdmissionLimits admission{};
};

struct NftRunStats {
  // Peak resident memory of the process that ran libnftables (0 if it ran
  // in the caller).
  long helper_peak_rss_kb = 0;
};

// hostlb's table as the agent sees it. Every method is one nftables
// transaction: on failure it throws KernelError (naming what was attempted
// and what the kernel said) and the ruleset is unchanged.
class NftRuleset {
 public:
  virtual ~NftRuleset() = default;
  // Replaces the whole table (creating it if needed).
  virtual NftRunStats replace(const Datapath& datapath, const MarkLayout& marks) = 0;
  // Applies the difference between two datapaths; touches only the
  // bindings in it. The table must hold `diff`'s "before" side.
  virtual void apply(const DatapathDiff& diff, const MarkLayout& marks) = 0;
  // Removes the table if it exists.
  virtual void remove() = 0;

  struct Counters {
    uint64_t guard_drops = 0;                 // packets
    std::map<DeliveryKey, uint64_t> refused;  // packets, per refused key
    uint64_t misses = 0;                      // packets
    // Packets per binding key (mac, service); a bounded set, so possibly
    // not every key once it is full (`misses` is always complete).
    std::map<DeliveryKey, uint64_t> misses_by_key;
    // New connection attempts dropped by AdmissionLimits::new_per_second,
    // in total and per service (a bounded set, like misses_by_key).
    uint64_t limited = 0;
    std::map<ServiceKey, uint64_t> limited_by_service{};
    // Connections opened per binding key, from a datapath that counts them
    // itself (see sends_conntrack_events); empty otherwise.
    std::map<DeliveryKey, uint64_t> opened_by_key{};
  };
  // What the table holds: whether it exists, the keys of its DNAT and
  // identity maps and of its refuse sets (for checks such as hostlbctl
  // doctor).
  struct Inventory {
    bool table = false;
    std::set<DeliveryKey> targets;
    std::set<DeliveryKey> identities;
    std::set<DeliveryKey> refused{};
  };
  virtual Inventory inventory() = 0;

  // How the kernel's table differs from `desired` (its rules per chain, and
  // every map and set element with its data), or nullopt if it does not:
  // someone may have edited or deleted it behind hostlbd's back.
  virtual std::optional<std::string> difference(const Datapath& desired,
                                                const MarkLayout& marks) = 0;

  // The table's counters as the kernel holds them now (zero if there is no
  // table).
  virtual Counters counters() = 0;

  // Whether an nftables transaction other than this ruleset's own was
  // committed (by any process, to any table) since the previous call; the
  // first call only takes the baseline. nftables numbers its commits (the
  // generation), so this is one small request, not a look at the table.
  virtual bool changed_by_others() = 0;

  // Whether the conntrack entries this datapath commits send events (NEW,
  // DESTROY). Those inserted by a BPF program send none: their connections
  // are counted from Counters::opened_by_key and dumps instead.
  virtual bool sends_conntrack_events() const { return true; }
};

// The kernel: whole-table replacement through libnftables (nft's own
// parser and evaluator, run in a forked helper), changes as hand-built
// batches through libnftnl (no ruleset cache to fetch: the cost of a change
// does not grow with the table).
std::unique_ptr<NftRuleset> make_kernel_ruleset(RulesetPolicies policies = {});

// `nft list ruleset`, every table of this network namespace (libnftables
// in this process: for short-lived tools such as hostlbctl doctor). Throws
// KernelError.
std::string nft_list_ruleset();

// Rendering: pure functions from desired state to nft command text.
//
// The ruleset: one prerouting nat chain that looks up
//   ether daddr . ip[6] daddr . meta l4proto . th dport
// in two data maps (one lookup each whatever the number of services): the
// binding's identity, set as the conntrack mark when no bits outside
// hostlb's mask are set (nft cannot merge a map value into the mark, and
// hostlb does not overwrite marks others set), and the DNAT target.
// Data maps rather than a chain per binding: adding a rule or a jump makes
// the kernel revalidate the whole table on every change, so a change would
// cost more the larger the table; adding map elements does not.

// Replaces the whole table atomically (conntrack entries and their NAT
// bindings are not affected, so live connections continue).
//
// A filter chain between conntrack and DNAT refuses new connections to the
// keys in the refuse sets (draining or recently removed bindings, and
// bindings that do not serve: they are in no map, so nothing would DNAT
// them), by `refuse`.
//
// The same chain counts consistency misses per binding key (in a dynamic
// set of bounded size) and in total, and treats them by `miss`; then it
// limits each service's new connections (a meter keyed by the service) and
// counts what it drops per service. A raw-priority chain gives VIP
// connections' entries the short embryonic timeouts (a conntrack timeout
// policy must be attached before conntrack sees the packet).
std::string render_full_ruleset(const Datapath& datapath, const MarkLayout& marks,
                                RulesetPolicies policies = {});

// Removes the table if it exists.
std::string render_delete_ruleset();

// How many rules each chain of hostlb's table gets from `script` (rendered
// as above): what the drift check expects to find in the kernel.
std::map<std::string, size_t> rules_per_chain(const std::string& script);

}  // namespace hostlb
