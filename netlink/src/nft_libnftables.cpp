#include <nftables/libnftables.h>

#include <memory>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/nft.h"

namespace hostlb {
namespace {

class LibNftablesClient final : public NftClient {
 public:
  void run(const std::string& what, const std::string& script) override {
    // A fresh context per transaction: libnftables keeps a ruleset cache in
    // the context, and a stale cache must never shape a later command.
    std::unique_ptr<nft_ctx, decltype(&nft_ctx_free)> ctx(nft_ctx_new(NFT_CTX_DEFAULT),
                                                          &nft_ctx_free);
    if (!ctx) throw KernelError(what, "cannot create an nftables context (out of memory)");
    if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0)
      throw KernelError(what, "cannot set up nftables output buffers");
    const int rc = nft_run_cmd_from_buffer(ctx.get(), script.c_str());
    if (rc != 0) {
      std::string said = nft_ctx_get_error_buffer(ctx.get());
      while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
      if (said.empty()) said = "nft reported failure without a message";
      throw KernelError(what, said);
    }
  }
};

}  // namespace

std::unique_ptr<NftClient> make_libnftables_client() {
  return std::make_unique<LibNftablesClient>();
}

}  // namespace hostlb
