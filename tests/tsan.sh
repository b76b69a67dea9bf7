#!/bin/sh
# ThreadSanitizer run of the cross-core tests: reactor rings and group,
# rpc over 2 cores, the server's cores under 64 concurrent clients
# (ctest label tsan; not part of CI). Build dir: build/tsan.
#   tests/tsan.sh            configure, build what the label needs, run it
#   tests/tsan.sh -R reactor extra ctest arguments
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DTKV_TSAN=ON >/dev/null
cmake --build build/tsan -j2 --target tkv-ring-bench tinykv-server tkv_proto_py
cd build/tsan
exec ctest -L tsan --output-on-failure "$@"
