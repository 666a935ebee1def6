// Pieces of the nftables layer shared between its source files.
#pragma once

#include <string>

#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/nft_batch.h"

namespace hostlb {

// Runs an nft script (one transaction) with libnftables in a forked helper.
NftRunStats run_nft_script_in_helper(const std::string& what, const std::string& script);

// Sends a batch over NETLINK_NETFILTER and waits for the kernel's verdict.
void send_nft_batch(const NftBatch& batch);

}  // namespace hostlb
