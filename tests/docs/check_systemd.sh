#!/usr/bin/env bash
# The systemd unit: systemd-analyze verify finds nothing wrong (with the
# built hostlbd in ExecStart, since the package is not installed here), and
# its security exposure stays at or below 3.0 ("OK"). Prints the score.
#   check_systemd.sh HOSTLBD SOURCE_DIR
set -euo pipefail
hostlbd=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#^ExecStart=/usr/sbin/hostlbd#ExecStart=$hostlbd#" "$src/systemd/hostlbd.service" \
  >"$work/hostlbd.service"
grep -q "^ExecStart=$hostlbd" "$work/hostlbd.service"
systemd-analyze verify --man=no "$work/hostlbd.service"
echo "ok   systemd-analyze verify"
systemd-analyze security --offline=true --threshold=30 "$work/hostlbd.service" >"$work/security.txt" || {
  cat "$work/security.txt"; echo "FAIL exposure above 3.0"; exit 1; }
grep -o "Overall exposure level for hostlbd.service: [0-9.]* [A-Z]*" "$work/security.txt"
