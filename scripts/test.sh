#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds hostlb and runs every test: formatting,
# unit and component tests, the integration tests on the real kernel in
# network namespaces (root), the package test; then the unit and component
# tests again under AddressSanitizer and UndefinedBehaviorSanitizer, and the
# fuzzers for a bounded time. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/check-format.sh
./scripts/build.sh
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --no-tests=error)

echo "== unit and component tests under ASan and UBSan (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHOSTLB_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" --target hostlb_unit_tests hostlbd hostlbctl
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure --no-tests=error -L unit)

echo "== fuzzers (${FUZZ_SECONDS:-30} s each)"
./scripts/fuzz.sh

echo "== clang-tidy"
./scripts/tidy.sh
