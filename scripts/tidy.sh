#!/usr/bin/env bash
# clang-tidy (.clang-tidy at the root) over the project's own sources, in
# parallel; any warning fails (WarningsAsErrors). Tests and benches are
# left out: gtest macros and test shortcuts are not what the checks are for.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null  # generated headers
run-clang-tidy -p "$BUILD_DIR" -quiet -j "$(nproc)" "$PWD/(policies|netlink|hostagent)/.*\\.cpp" \
  >"$BUILD_DIR/clang-tidy.log" 2>&1 || {
  grep -E "(warning|error):" "$BUILD_DIR/clang-tidy.log" | sort -u
  echo "clang-tidy: warnings (see $BUILD_DIR/clang-tidy.log)"
  exit 1
}
echo "clang-tidy: no warnings in policies/, netlink/, hostagent/"
