#!/usr/bin/env bash
# Builds the libFuzzer targets (build-fuzz/, clang, ASan+UBSan), replays the
# checked-in regression inputs, then fuzzes each target for FUZZ_SECONDS
# (default 30) from the seed corpus in tests/fuzz/corpus. A crash fails the
# run; its input is in build-fuzz/artifacts/ and belongs in
# tests/fuzz/regressions/TARGET/ once fixed. Prints one line per target.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-30}
targets=(state_document control_request config keys journal_record etcd_response)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DHOSTLB_FUZZ=ON -DHOSTLB_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" $(printf -- '--target fuzz_%s ' "${targets[@]}") >/dev/null
mkdir -p build-fuzz/artifacts
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in "${targets[@]}"; do
  bin=build-fuzz/tests/fuzz/fuzz_$t
  if [ -d "tests/fuzz/regressions/$t" ]; then
    "$bin" -runs=1 "tests/fuzz/regressions/$t"/* >/dev/null 2>&1 ||
      { echo "FAIL fuzz_$t: a regression input crashes again"; exit 1; }
  fi
  work=build-fuzz/corpus/$t
  mkdir -p "$work"
  log=build-fuzz/fuzz_$t.log
  if ! "$bin" -max_total_time="$SECS" -max_len=65536 -timeout=10 -print_final_stats=1 \
      -artifact_prefix=build-fuzz/artifacts/"$t"- "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    tail -40 "$log"
    echo "FAIL fuzz_$t: crash; input in build-fuzz/artifacts/ (add it to tests/fuzz/regressions/$t/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  echo "ok   fuzz_$t: ${SECS}s, $runs inputs, coverage $cov edges, corpus $(ls "$work" | wc -l) files, no crash"
done
