#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/nft.h"
#include "nft_internal.h"

namespace hostlb {
namespace {

// Runs the script with libnftables in this process. Returns "" on success,
// nft's error text otherwise.
std::string run_in_this_process(const std::string& script) {
  // A fresh context per transaction: libnftables keeps a ruleset cache in
  // the context, and a stale cache must never shape a later command.
  std::unique_ptr<nft_ctx, decltype(&nft_ctx_free)> ctx(nft_ctx_new(NFT_CTX_DEFAULT),
                                                        &nft_ctx_free);
  if (!ctx) return "cannot create an nftables context (out of memory)";
  if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0)
    return "cannot set up nftables output buffers";
  if (nft_run_cmd_from_buffer(ctx.get(), script.c_str()) == 0) return "";
  std::string said = nft_ctx_get_error_buffer(ctx.get());
  while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
  return said.empty() ? "nft reported failure without a message" : said;
}

}  // namespace

std::string nft_list_ruleset() {
  std::unique_ptr<nft_ctx, decltype(&nft_ctx_free)> ctx(nft_ctx_new(NFT_CTX_DEFAULT),
                                                        &nft_ctx_free);
  if (!ctx || nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0)
    throw KernelError("listing the nftables ruleset", "cannot create an nftables context");
  if (nft_run_cmd_from_buffer(ctx.get(), "list ruleset") != 0)
    throw KernelError("listing the nftables ruleset", nft_ctx_get_error_buffer(ctx.get()));
  return nft_ctx_get_output_buffer(ctx.get());
}

// libnftables builds a large in-memory form of every command (tens of MB for
// a 10,000-service table) and glibc keeps much of that heap after it is
// freed. Each script therefore runs in a forked child: the kernel outcome is
// the same (one atomic batch), the daemon's resident memory stays that of its
// own state, and the child's heap goes back to the system when it exits.
NftRunStats run_nft_script_in_helper(const std::string& what, const std::string& script) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
    throw KernelError(what, std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int saved = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    throw KernelError(what, std::string("fork: ") + std::strerror(saved));
  }
  if (pid == 0) {
    ::close(pipe_fds[0]);
    const std::string error = run_in_this_process(script);
    size_t done = 0;
    while (done < error.size()) {
      const ssize_t n = ::write(pipe_fds[1], error.data() + done, error.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::_exit(error.empty() ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::string error;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
    if (n > 0) {
      error.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(pipe_fds[0]);
  int status = 0;
  rusage usage{};
  while (::wait4(pid, &status, 0, &usage) < 0) {
    if (errno != EINTR) throw KernelError(what, std::string("wait4: ") + std::strerror(errno));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {usage.ru_maxrss};
  if (WIFSIGNALED(status))
    throw KernelError(what, "the nftables helper died from signal " +
                                std::to_string(WTERMSIG(status)) +
                                " (a transaction is atomic: it was committed whole or not at all)");
  throw KernelError(what, error.empty() ? "nft failed without a message" : error);
}

}  // namespace hostlb
