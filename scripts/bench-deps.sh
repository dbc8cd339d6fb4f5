#!/usr/bin/env bash
# Installs what `make bench` compares against but the tests and the daemon
# do not need: podman (BenchmarkUserWait times `podman run -d` of the same
# rootfs beside `provctl reserve … --wait ok`). As root only; elsewhere it
# says what is missing and the benchmark skips.
set -euo pipefail
if command -v podman >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-deps: podman is missing; run as root to install it (BenchmarkUserWait skips without it)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq podman
