#!/usr/bin/env bash
# Installs the built .deb into a fresh Debian 12 root (debootstrap, minbase;
# the base is cached under /var/cache/hostlb-test and copied for each run)
# and checks what an operator gets: files, the hostlb group, the enabled
# unit (not started), hostlbctl --version, hostlbd --help and --check,
# man -l of every page, then purge.
#   test_deb.sh BUILD_DIR
set -euo pipefail
build=$1
deb=$(ls "$build"/hostlb_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "no .deb in $build (run cpack -G DEB there)"; exit 1; }
cache=/var/cache/hostlb-test/bookworm-minbase.tar
mkdir -p "$(dirname "$cache")"
if [ ! -s "$cache" ]; then
  echo "debootstrap bookworm (once; cached in $cache)"
  base=$(mktemp -d /tmp/hostlb-debootstrap.XXXXXX)
  debootstrap --variant=minbase bookworm "$base" http://deb.debian.org/debian >/dev/null
  tar -C "$base" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
  rm -rf "$base"
fi
root=$(mktemp -d /tmp/hostlb-root.XXXXXX)
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$cache"
chmod 755 "$root"  # maintainer scripts drop to other users (man-db)
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/hostlb.deb"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
fail() { echo "FAIL $*"; exit 1; }
ok() { echo "ok   $*"; }

in_root apt-get update -qq >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  /tmp/hostlb.deb man-db >/dev/null 2>"$root/tmp/apt.err" || { cat "$root/tmp/apt.err"; fail "apt-get install"; }
ok "apt-get install of $(basename "$deb") with its Depends into a fresh Debian 12 root"

for f in /usr/sbin/hostlbd /usr/bin/hostlbctl /lib/systemd/system/hostlbd.service \
         /usr/lib/sysusers.d/hostlb.conf /usr/share/bash-completion/completions/hostlbctl \
         /etc/hostlb/hostlbd.conf /usr/share/man/man8/hostlbd.8 /usr/share/man/man8/hostlbctl.8 \
         /usr/share/man/man5/hostlb.conf.5 /usr/share/man/man5/hostlb-state.5; do
  [ -e "$root$f" ] || fail "missing $f"
done
[ -d "$root/etc/hostlb/services.d" ] || fail "missing /etc/hostlb/services.d"
ok "files in place"
in_root getent group hostlb >/dev/null || fail "no hostlb group"
ok "group hostlb created"
[ -L "$root/etc/systemd/system/multi-user.target.wants/hostlbd.service" ] || fail "unit not enabled"
ok "hostlbd.service enabled (not started: no config)"
in_root dpkg-query -W -f='${Conffiles}\n' hostlb | grep -q /etc/hostlb/hostlbd.conf || fail "hostlbd.conf is not a conffile"
ok "hostlbd.conf is a conffile"
v=$(in_root hostlbctl --version) || fail "hostlbctl --version"
ok "hostlbctl --version: $v"
# grep reads it all (not -q): an early exit would end hostlbd with SIGPIPE.
in_root hostlbd --help | grep -- "--daemon-config" >/dev/null || fail "hostlbd --help"
ok "hostlbd --help"
cat >"$root/tmp/doc.json" <<'DOC'
{"version":1,"backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],
 "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}]}
DOC
in_root hostlbd --check --config /tmp/doc.json --daemon-config /etc/hostlb/hostlbd.conf >/dev/null ||
  fail "hostlbd --check with the installed default hostlbd.conf"
ok "hostlbd --check reads the installed hostlbd.conf and a document"
for page in /usr/share/man/man8/hostlbd.8 /usr/share/man/man8/hostlbctl.8 \
            /usr/share/man/man5/hostlb.conf.5 /usr/share/man/man5/hostlb-state.5; do
  out=$(in_root man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page"
  [ -z "$out" ] || fail "man warnings for $page: $out"
done
ok "man -l of every page, no warnings"

in_root dpkg --purge hostlb >/dev/null || fail "dpkg --purge"
[ ! -e "$root/usr/sbin/hostlbd" ] && [ ! -e "$root/etc/hostlb/hostlbd.conf" ] || fail "files left after purge"
ok "purge removes the files and the config"
