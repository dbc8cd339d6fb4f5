#!/usr/bin/env bash
# Installs what provisiond's tests and daemon need on a Debian machine.
set -euo pipefail
need=()
for cmd in runc:runc busybox:busybox-static mkfs.ext4:e2fsprogs ip:iproute2 openssl:openssl losetup:mount systemd-analyze:systemd \
  systemd-nspawn:systemd-container mmdebstrap:mmdebstrap zsh:zsh python3:python3; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd##*:}")
done
# The explorer's PostgreSQL tests (internal/pgtest) run Debian's server binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium) # the explorer's pages are tested in headless Chromium
command -v nft >/dev/null 2>&1 || need+=(nftables)        # make lab-test lists a node's nftables table
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)  # make lab-test enters its nodes' namespaces
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry) # registry images are tested against a real registry:2 (internal/registrytest)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
go_bin=$(go env GOPATH)/bin
[ -x "$go_bin/staticcheck" ] || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
echo "deps: ok"
