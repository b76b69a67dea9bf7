#!/usr/bin/env bash
# The README's run command: install what is missing, build the release build
# and start a standalone tinykv-server on embedded defaults (data in
# ./tinykv-data, gRPC on 127.0.0.1:20160). Extra arguments go to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
BUILD_DIR=${TKV_BUILD_DIR:-build/release}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target tinykv-server tinykv-ctl
exec "$BUILD_DIR/bin/tinykv-server" "$@"
