#!/usr/bin/env bash
# Runs the chaos tests (real kernel, namespaces, real traffic) and the
# fuzzers, and prints the results table of README.md ("Reliability"): each
# fault, the load held, what was lost, the time to recover; then each fuzz
# target's inputs tried. Run as root after scripts/build.sh.
#   scripts/chaos.sh            (FUZZ_SECONDS=30 per fuzz target)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! build/tests/hostlb_integration_tests --gtest_filter='ChaosTest.*:FloodTest.*' >"$out" 2>&1; then
  grep -E "Failure|FAILED" -A5 "$out" | head -40
  echo "chaos tests failed" >&2
  exit 1
fi
echo "| fault | load held | connections lost | time to recover |"
echo "|---|---|---|---|"
grep '^RESULT|' "$out" | while IFS='|' read -r _ fault load lost recovery; do
  echo "| $fault | $load | $lost | $recovery |"
done
echo
echo "| fuzz target | time | inputs tried | crashes |"
echo "|---|---|---|---|"
./scripts/fuzz.sh | sed -nE 's/^ok   fuzz_([a-z_]+): ([0-9]+)s, ([0-9]+) inputs.*/| \1 | \2 s | \3 | 0 |/p'
