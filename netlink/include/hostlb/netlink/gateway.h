// The gateway's kernel table, `netdev hostlb_gw`: a frame for a VIP key
// arriving on the client interface jumps (one verdict map lookup) to its
// service's chain, which computes the flow's row with jhash, sets eth.dst to
// the row owner's MAC from one map shared by all services, eth.src to the
// gateway's own, and forwards it out of the fabric interface. Everything
// else passes untouched. O(1) per packet in services and backends.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/netlink/nft_batch.h"
#include "hostlb/policies/address.h"
#include "hostlb/policies/gateway.h"

namespace hostlb {

inline constexpr const char* kGatewayTable = "hostlb_gw";

// How the gateway forwards: the nft netdev table, or a tc BPF program
// (netlink/bpf/gateway.bpf.c) with the same rows, choice and tracking that
// skips nftables' expression interpreter.
enum class GatewayEngine { kNft, kBpf };
std::optional<GatewayEngine> parse_gateway_engine(std::string_view name);
const char* engine_name(GatewayEngine engine);

struct GatewayConfig {
  std::string client_interface;  // client frames arrive here (ingress hook)
  std::string fabric_interface;  // and leave here toward the hosts
  MacAddress gateway_mac;        // their new Ethernet source
  // JET's tracking maps (flow -> backend MAC, one per address family): a
  // tracked flow is forgotten after this long without a packet, or this
  // long after its FIN or RST; a full map takes no more flows (counted).
  uint32_t track_timeout_s = 300;
  uint32_t track_end_timeout_s = 10;
  uint32_t track_size = 262144;
  // false: no flow is ever tracked (see without_tracking); the maps stay
  // empty.
  bool tracking = true;
  GatewayEngine engine = GatewayEngine::kBpf;
};

// Named counters of the gateway table: flows of tracked rows that the
// tracking map was asked to take, and those it took (the difference: a
// full map).
inline constexpr const char* kTrackAttempts = "track_attempts";
inline constexpr const char* kTrackAdded = "track_added";

// Pure rendering, as nft scripts (rules end at a newline: nft 1.0.6 does
// not take "offset N;").
// The table without rows and without the services' entries in the verdict
// maps (so no traffic is taken before its rows exist). Everything but the
// tracking maps and the counters is replaced (`chains`: the chains the
// table has now, to delete); the tracking maps keep their flows, so a
// rebuild moves no tracked connection.
std::string render_gateway_skeleton(const GatewayDatapath& datapath, const GatewayConfig& config,
                                    const std::vector<std::string>& chains = {});
// Chains of added services (entries not yet in the verdict maps), or the
// removal of removed services (entries first, then their chains).
std::string render_gateway_chains(const std::vector<GatewayService>& services,
                                  const GatewayConfig& config, bool add);
// The verdict map entries of `services` (add: after their rows are in).
std::string render_gateway_entries(const std::vector<GatewayService>& services, bool add);

// Row elements as nf_tables batches (libnftnl), at most `per_batch` rows
// each: a change of one service's backends is one batch, so one atomic
// transaction. A row whose owner changes is deleted and added again.
// The last batch also swaps the table's stamp (a one-element set holding
// the first 32 bits of gateway_digest() of what the table holds) when
// `stamp` says so, so that a restart can tell whether the kernel still holds
// what it persisted.
// Tracked rows (the `track` set) added go in the first batch, before any
// row changes owner; those removed in the last, after.
struct StampChange {
  std::optional<uint32_t> before, after;
};
struct TrackChange {
  std::vector<uint32_t> added, removed;  // marks
};
std::vector<NftBatch> encode_gateway_rows(const std::vector<GatewayDiff::Row>& rows,
                                          uint32_t first_seq, size_t per_batch = 65536,
                                          StampChange stamp = {}, const TrackChange& track = {});
uint32_t gateway_stamp(const GatewayDatapath& datapath);
// All rows of `services` as additions (or deletions).
std::vector<GatewayDiff::Row> rows_of(const std::vector<GatewayService>& services, bool add);

// The kernel's row map, read in parts (one datagram of the dump each: the
// dump goes on only when a part is asked for), to audit it against what
// was applied without holding millions of rows at once.
class GatewayRowScan {
 public:
  virtual ~GatewayRowScan() = default;
  // Calls `each` for the rows of the next part; false once the map was
  // read whole (or there is no table). Throws KernelError.
  virtual bool next(const std::function<void(uint32_t mark, const MacAddress& mac)>& each) = 0;
  // Whether the kernel said the dump was interrupted by a change meanwhile:
  // what was read is then not one consistent picture.
  virtual bool interrupted() const = 0;
};

// What the tracking maps hold and did, read from the kernel.
struct TrackStats {
  uint64_t entries = 0;   // flows tracked now (both families)
  uint64_t attempts = 0;  // flows of tracked rows the maps were asked to take
  uint64_t added = 0;     // and took
};

class GatewayRuleset {
 public:
  virtual ~GatewayRuleset() = default;
  // Builds the table anew: skeleton, rows, then the services' entries and
  // the stamp of `datapath`.
  virtual void replace(const GatewayDatapath& datapath, const GatewayConfig& config) = 0;
  // Applies a diff: removed services, added services, then changed rows
  // with the new stamp (one transaction for a change of backends). Throws
  // KernelError.
  virtual void apply(const GatewayDiff& diff, const GatewayConfig& config, uint32_t new_stamp) = 0;
  virtual void remove() = 0;
  // The table's stamp; nullopt if there is no table (or no stamp).
  virtual std::optional<uint32_t> stamp() = 0;
  // Whether another process committed an nftables transaction since the
  // previous call (nftables' generation; the first call takes the baseline).
  virtual bool changed_by_others() = 0;
  // The MAC the kernel's row map holds for `mark`, if any.
  virtual std::optional<MacAddress> row(uint32_t mark) = 0;
  // Starts reading the whole row map (its own socket). Throws KernelError.
  virtual std::unique_ptr<GatewayRowScan> scan_rows() = 0;
  // The tracking maps' size and counters (zero without a table).
  virtual TrackStats track_stats() = 0;
  // The marks of the rows whose flows are tracked (the track set), as the
  // kernel holds them, ascending.
  virtual std::vector<uint32_t> tracked_rows() = 0;
  // Forgets tracked flows whose time is up; how many. (The nft maps' own
  // garbage collection does this: 0.)
  virtual size_t sweep_tracked() = 0;
  // The largest row map that an audit may read (after a change by others):
  // nftables dumps a set in time that grows with the square of its size.
  virtual size_t max_audited_rows() const = 0;
};

// The nft table.
std::unique_ptr<GatewayRuleset> make_kernel_gateway();
// The BPF program at tc ingress of config.client_interface. It stays
// attached when hostlbd exits, and its maps with it: the next run finds
// them through the attached program (a restart keeps forwarding and keeps
// its tracked flows). Nothing is loaded before the first replace() or
// apply().
std::unique_ptr<GatewayRuleset> make_bpf_gateway(const GatewayConfig& config);
// The one config.engine names.
std::unique_ptr<GatewayRuleset> make_gateway(const GatewayConfig& config);

}  // namespace hostlb
