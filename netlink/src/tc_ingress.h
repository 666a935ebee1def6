// hostlb's place at tc ingress of an interface (a clsact filter at a
// handle of its own and a priority): where the BPF programs are attached.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace hostlb {

class TcIngress {
 public:
  // Filters run in the order of their priority (lowest first).
  TcIngress(std::string interface, uint32_t handle, uint32_t priority = 1)
      : interface_(std::move(interface)), handle_(handle), priority_(priority) {}

  const std::string& interface() const { return interface_; }
  // Attaches `program_fd` there (replacing what is there; the clsact qdisc
  // is created if missing); returns the program's id. `what` names the
  // program in errors. Throws KernelError.
  uint32_t attach(int program_fd, const std::string& what) const;
  // Takes whatever is there off; nothing to do without it or the
  // interface. Throws KernelError.
  void detach(const std::string& what) const;
  // The id of the program there, if any.
  std::optional<uint32_t> attached_id() const;

 private:
  std::string interface_;
  uint32_t handle_;
  uint32_t priority_;
};

}  // namespace hostlb
