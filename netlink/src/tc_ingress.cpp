#include "tc_ingress.h"

#include <bpf/libbpf.h>
#include <net/if.h>

#include <cerrno>

#include "hostlb/netlink/error.h"

namespace hostlb {
namespace {

bpf_tc_hook hook_of(const std::string& interface) {
  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = static_cast<int>(if_nametoindex(interface.c_str()));
  hook.attach_point = BPF_TC_INGRESS;
  return hook;
}

bpf_tc_opts opts_of(uint32_t handle, uint32_t priority) {
  bpf_tc_opts opts{};
  opts.sz = sizeof opts;
  opts.handle = handle;
  opts.priority = priority;
  return opts;
}

}  // namespace

uint32_t TcIngress::attach(int program_fd, const std::string& what) const {
  bpf_tc_hook hook = hook_of(interface_);
  if (hook.ifindex == 0)
    throw KernelError("finding interface " + interface_ + " for " + what, errno);
  // EEXIST: the clsact qdisc is there already (ours from before, or
  // someone's): attach beside what it holds.
  if (int e = bpf_tc_hook_create(&hook); e != 0 && e != -EEXIST)
    throw KernelError("creating the clsact hook on " + interface_, -e);
  bpf_tc_opts opts = opts_of(handle_, priority_);
  opts.prog_fd = program_fd;
  opts.flags = BPF_TC_F_REPLACE;
  if (int e = bpf_tc_attach(&hook, &opts); e != 0)
    throw KernelError("attaching " + what + " at tc ingress of " + interface_, -e);
  return opts.prog_id;
}

void TcIngress::detach(const std::string& what) const {
  bpf_tc_hook hook = hook_of(interface_);
  if (hook.ifindex == 0) return;  // no interface, no program
  bpf_tc_opts opts = opts_of(handle_, priority_);
  if (int e = bpf_tc_detach(&hook, &opts); e != 0 && e != -ENOENT && e != -EINVAL)
    throw KernelError("taking " + what + " off " + interface_, -e);
}

std::optional<uint32_t> TcIngress::attached_id() const {
  bpf_tc_hook hook = hook_of(interface_);
  if (hook.ifindex == 0) return std::nullopt;
  bpf_tc_opts opts = opts_of(handle_, priority_);
  if (bpf_tc_query(&hook, &opts) != 0) return std::nullopt;
  return opts.prog_id;
}

}  // namespace hostlb
