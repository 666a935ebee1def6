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
#include <vector>

#include "hostlb/netlink/nft_batch.h"
#include "hostlb/policies/address.h"
#include "hostlb/policies/gateway.h"

namespace hostlb {

inline constexpr const char* kGatewayTable = "hostlb_gw";

struct GatewayConfig {
  std::string client_interface;  // client frames arrive here (ingress hook)
  std::string fabric_interface;  // and leave here toward the hosts
  MacAddress gateway_mac;        // their new Ethernet source
};

// Pure rendering, as nft scripts (rules end at a newline: nft 1.0.6 does
// not take "offset N;").
// The table without rows and without the services' entries in the verdict
// maps (so no traffic is taken before its rows exist).
std::string render_gateway_skeleton(const GatewayDatapath& datapath, const GatewayConfig& config);
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
struct StampChange {
  std::optional<uint32_t> before, after;
};
std::vector<NftBatch> encode_gateway_rows(const std::vector<GatewayDiff::Row>& rows,
                                          uint32_t first_seq, size_t per_batch = 65536,
                                          StampChange stamp = {});
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
};

std::unique_ptr<GatewayRuleset> make_kernel_gateway();

}  // namespace hostlb
