// Notices nftables changes made by other processes: every committed
// transaction ends with a NEWGEN notification that names the process that
// made it. hostlbd then checks its table (and repairs it) instead of
// trusting that nobody touched it.
#pragma once

#include <memory>
#include <string>

namespace hostlb {

class NftMonitor {
 public:
  virtual ~NftMonitor() = default;
  virtual int fd() const = 0;
  // Reads what is queued without blocking; true if a transaction by another
  // process was committed, or notifications were lost (then it may have).
  virtual bool foreign_change() = 0;
};

// `own_name`: the process name (comm) of hostlbd and its helpers, whose
// transactions are not foreign. Throws KernelError.
std::unique_ptr<NftMonitor> make_nft_monitor(const std::string& own_name);

}  // namespace hostlb
