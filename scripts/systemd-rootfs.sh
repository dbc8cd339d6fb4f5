#!/usr/bin/env bash
# Builds (once) the Debian rootfs in which `make systemd-test` boots systemd
# as PID 1 under systemd-nspawn, and prints its path. The tree is cached
# outside the clone, under $SYSTEMD_TEST_CACHE (default
# /var/cache/provisiond-systemd-test), in a folder named after a hash of the
# package list and the mmdebstrap command: a change to either builds a new
# tree. It is built into a temporary folder and renamed when complete, so an
# interrupted build is never used.
set -euo pipefail
cache=${SYSTEMD_TEST_CACHE:-/var/cache/provisiond-systemd-test}
suite=bookworm
packages=systemd,systemd-sysv,dbus,iproute2,runc,busybox-static,e2fsprogs,mount,iputils-ping
# The machine's own apt source, so a mirror or proxy configured there is used.
mirror=${SYSTEMD_TEST_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
cmd=(mmdebstrap --quiet --variant=minbase "--include=$packages" "$suite")
key=$(printf '%s\n' "${cmd[*]}" "$mirror" "v1" | sha256sum | cut -c1-16)
dir=$cache/$key
if [ -e "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "systemd-rootfs: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"${cmd[@]}" "$tmp/root" "deb $mirror $suite main" >&2
touch "$tmp/root/.complete"
# Another build may have won the race: keep the first complete tree.
if mv -T "$tmp/root" "$dir" 2>/dev/null; then :; fi
[ -e "$dir/.complete" ] || { echo "systemd-rootfs: $dir is incomplete" >&2; exit 1; }
echo "$dir"
