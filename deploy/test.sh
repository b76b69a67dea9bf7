#!/usr/bin/env bash
# The README's test command: install what is missing, build the test build
# (Debug: ASan + UBSan, -Werror) and run every test label that CI runs:
# unit, cluster, fault, integration. Long random runs: ctest -L long.
# Usage: deploy/test.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
BUILD_DIR=${TKV_BUILD_DIR:-build/debug}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
cd "$BUILD_DIR"
exec ctest --output-on-failure -j"$(nproc)" -L 'unit|cluster|fault|integration' "$@"
