#!/usr/bin/env bash
# Record a running process with perf (cpu-clock: these VMs have no hardware
# counters) and render an HTML flamegraph with perf's own flamegraph report
# and d3-flame-graph's template (pinned in perf/package.json, installed with
# npm on first use).
#
# Usage: perf/flamegraph.sh <pid> [seconds=10] [out=flamegraph.html]
# Typical: start the server, start tinykv-bench under put load, then run this
# against the server's pid (see perf/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pid=${1:?usage: perf/flamegraph.sh <pid> [seconds] [out.html]}
secs=${2:-10}
out=$(realpath -m "${3:-flamegraph.html}")
template=$here/node_modules/d3-flame-graph/dist/templates/d3-flamegraph-base.html
if [ ! -f "$template" ]; then
  (cd "$here" && npm install --no-audit --no-fund --silent)
fi
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
cd "$data" # perf's flamegraph report reads ./perf.data for its header
perf record -e cpu-clock -F 999 -g -p "$pid" -o perf.data -- sleep "$secs" >/dev/null 2>&1
perf script report flamegraph --template "$template" -o "$out" >/dev/null
# The three hottest leaf frames, for notes and quick reads.
perf report --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -3 || true
echo "flamegraph: $out"
