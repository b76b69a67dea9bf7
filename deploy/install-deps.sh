#!/usr/bin/env bash
# Install exactly the Debian 12 packages tinykv needs to build, test and run.
# Idempotent: does nothing when everything is already installed.
# Usage: deploy/install-deps.sh [--check]   (--check: exit 1 if something is missing)
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config
  liburing-dev libwiredtiger-dev libnanopb-dev nanopb protobuf-compiler
  libnghttp2-dev libck-dev libjemalloc-dev libsystemd-dev libmicrohttpd-dev
  libjansson-dev libfiu-dev
  # tests
  libcriterion-dev python3 python3-protobuf python3-grpcio python3-grpc-tools fiu-utils
  faketime  # scheduler TSO tests: wall clock a day behind
  fuse3 libfuse3-dev  # power-cut tests: tests/lib/powercutfs (FUSE)
  # operations (issue 12): promtool + a real Prometheus scraping the status port
  prometheus
  # scheduler /dashboard test: headless Chromium renders the page (issue 12.6;
  # the largest package here: ~100 MB with its dependencies, a minute or two of CI)
  chromium
  # perf harness (issue 5): etcd as the peer, h2load as a neutral client
  etcd-server etcd-client nghttp2-client linux-perf hyperfine
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
