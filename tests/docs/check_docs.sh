#!/usr/bin/env bash
# The man pages render without warnings, and every option hostlbd --help
# lists is documented in hostlbd(8) (and the other way round).
set -euo pipefail
hostlbd=$1
src=$2
fail=0
for page in "$src"/man/*.[0-9]; do
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null || true)
  if [ -n "$warnings" ]; then
    echo "FAIL $page renders with warnings:"; echo "$warnings"; fail=1
  else
    echo "ok   $page renders cleanly"
  fi
done
help_opts=$("$hostlbd" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u)
man_opts=$(sed -n '/^\.SH OPTIONS/,/^\.SH EXIT/p' "$src/man/hostlbd.8" | grep -oE -- '\\-\\-[a-z][a-z\\-]+' | sed 's/\\//g' | sort -u)
for opt in $help_opts; do
  if grep -qx -- "$opt" <<<"$man_opts"; then echo "ok   $opt in hostlbd(8)"; else echo "FAIL $opt is in --help but not in hostlbd(8)"; fail=1; fi
done
for opt in $man_opts; do
  grep -qx -- "$opt" <<<"$help_opts" || { echo "FAIL $opt is in hostlbd(8) but not in --help"; fail=1; }
done
exit $fail
