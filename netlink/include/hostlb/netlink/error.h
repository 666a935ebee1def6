#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace hostlb {

// A kernel operation failed. The message names what was attempted and what
// the kernel (or the library in front of it) said; the errno is kept so that
// callers decide on facts, not on text.
class KernelError : public std::runtime_error {
 public:
  // `error` is the errno the kernel answered with; `kernel_message` the text
  // of its extended acknowledgement (NETLINK_EXT_ACK), if it gave one.
  KernelError(const std::string& attempted, int error, const std::string& kernel_message = {});
  // For libraries that say what went wrong in words only (errno unknown).
  KernelError(const std::string& attempted, const std::string& kernel_said)
      : std::runtime_error(attempted + ": " + kernel_said) {}

  int error() const { return error_; }
  const std::string& kernel_message() const { return kernel_message_; }
  bool is_not_found() const { return error_ == ENOENT; }
  bool is_exists() const { return error_ == EEXIST; }

 private:
  int error_ = 0;
  std::string kernel_message_;
};

}  // namespace hostlb
