// Encoding a DatapathDiff as one nf_tables netlink batch with libnftnl: a
// pure function (bytes in memory, no socket), so it is tested without root.
// A change is map elements only (deleted, then added: an element cannot be
// overwritten in place); the integration tests check that the table a
// change builds is the one render_full_ruleset's text builds.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hostlb/policies/datapath.h"

namespace hostlb {

struct NftBatch {
  std::vector<char> bytes;
  // What each message does, by sequence number, to name it in errors.
  std::map<uint32_t, std::string> operations;
  uint32_t first_seq = 0;
  uint32_t last_seq = 0;  // the message that asks for the acknowledgement
  size_t messages = 0;
};

NftBatch encode_diff_batch(const DatapathDiff& diff, const MarkLayout& marks, uint32_t first_seq);

// A readable dump of a batch (one line per message, expressions as libnftnl
// prints them), for golden tests.
std::string describe_batch(const NftBatch& batch);

}  // namespace hostlb
