// One visitor from several lambdas, for std::visit over typed requests.
#pragma once

namespace hostlb {

template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};
// (clang 14 does not deduce aggregate template arguments by itself.)
template <typename... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace hostlb
