#!/usr/bin/env bash
# The README's run command: install what is missing, build the release build
# and start a local cluster with tinykv-playground: tinyscheduler-server on
# 127.0.0.1:2379 (HTTP API and dashboard on 2381) and three tinykv-server
# nodes on 20160, 20161, 20162 (status ports 20180..20182, cores = 1, data in
# ./tinykv-data/<node>, logs in ./tinykv-data/logs). It prints the addresses
# and tinykv-ctl commands once the cluster is ready; Ctrl-C stops them all.
# Extra arguments go to tinykv-playground (deploy/run.sh --help lists them).
#
#   deploy/run.sh --standalone [ARGS]   one standalone tinykv-server instead
#                                       (no scheduler, no Raft; 127.0.0.1:20160,
#                                       data in ./tinykv-data; ARGS go to it)
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
BUILD_DIR=${TKV_BUILD_DIR:-build/release}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
if [ "${1:-}" = "--standalone" ]; then
  shift
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target tinykv-server tinykv-ctl
  exec "$BUILD_DIR/bin/tinykv-server" "$@"
fi
cmake --build "$BUILD_DIR" -j"$(nproc)" \
  --target tinykv-playground tinykv-server tinyscheduler-server tinykv-ctl
exec "$BUILD_DIR/bin/tinykv-playground" "$@"
