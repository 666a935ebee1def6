#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds hostlb and runs every test: formatting,
# unit and component tests, and the integration tests on the real kernel in
# network namespaces (root). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/check-format.sh
./scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --no-tests=error
