#!/usr/bin/env bash
# The man pages render without warnings, every option of hostlbd --help is in
# hostlbd(8), and every command and option of hostlbctl --help is in
# hostlbctl(8) (and the other way round).
#   check_docs.sh HOSTLBD HOSTLBCTL SOURCE_DIR
set -euo pipefail
hostlbd=$1
hostlbctl=$2
src=$3
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

for page in "$src"/man/*.[0-9]; do
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null || true)
  if [ -n "$warnings" ]; then bad "$page renders with warnings:"; echo "$warnings"; else ok "$page renders cleanly"; fi
done

# Long options listed in a man page section (roff escapes removed).
man_options() {  # PAGE FIRST_SECTION NEXT_SECTION
  sed -n "/^\\.SH $2/,/^\\.SH $3/p" "$1" | grep -oE -- '\\-\\-[a-z][a-z\\-]+' | sed 's/\\//g' | sort -u
}
compare() {  # WHAT HELP_LIST MAN_LIST PAGE
  local item
  for item in $2; do grep -qx -- "$item" <<<"$3" && ok "$1 $item in $4" || bad "$1 $item is in --help but not in $4"; done
  for item in $3; do grep -qx -- "$item" <<<"$2" || bad "$1 $item is in $4 but not in --help"; done
}

compare option "$("$hostlbd" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u)" \
  "$(man_options "$src/man/hostlbd.8" OPTIONS EXIT)" "hostlbd(8)"
compare option "$("$hostlbctl" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u)" \
  "$(man_options "$src/man/hostlbctl.8" OPTIONS COMMANDS)" "hostlbctl(8)"

# Commands: the subcommands --help lists, two levels deep.
subcommands() { "$@" --help | sed -n '/^Subcommands:/,/^$/p' | awk 'NR > 1 && NF {print $1}'; }
help_commands=$(for c in $(subcommands "$hostlbctl"); do
  nested=$(subcommands "$hostlbctl" "$c" 2>/dev/null || true)
  if [ -n "$nested" ]; then for n in $nested; do echo "$c $n"; done; else echo "$c"; fi
done | sort)
# In the COMMANDS section, each .TP is followed by the command's words.
man_commands=$(sed -n '/^\.SH COMMANDS/,/^\.SH EXIT/p' "$src/man/hostlbctl.8" |
  awk '/^\.TP/ {getline; print}' | sed -E 's/^\.BI? //; s/"//g; s/\\f.//g' |
  awk '$1 ~ /^[a-z]+$/ {w = $1; if ($2 ~ /^[a-z]+$/) w = w " " $2; print w}' | sort -u)
while IFS= read -r c; do
  grep -qx -- "$c" <<<"$man_commands" && ok "command $c in hostlbctl(8)" || bad "command $c is in --help but not in hostlbctl(8)"
done <<<"$help_commands"
while IFS= read -r c; do
  grep -qx -- "$c" <<<"$help_commands" || bad "command $c is in hostlbctl(8) but not in --help"
done <<<"$man_commands"
exit $fail
