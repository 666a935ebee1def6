#pragma once

#include <stdexcept>
#include <string>

namespace hostlb {

// A kernel operation failed. The message names what was attempted and what
// the kernel (or the library in front of it) said.
class KernelError : public std::runtime_error {
 public:
  KernelError(const std::string& attempted, const std::string& kernel_said)
      : std::runtime_error(attempted + ": " + kernel_said) {}
};

}  // namespace hostlb
