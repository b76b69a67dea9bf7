#!/usr/bin/env bash
# Record a running process with perf (cpu-clock: these VMs have no hardware
# counters) and render an HTML flamegraph with perf's own flamegraph report
# and d3-flame-graph's template (pinned in perf/package.json, installed with
# npm on first use).
#
# Usage: perf/flamegraph.sh <pid> [seconds=10] [out=flamegraph.html]
# Typical: start the server, start tinykv-bench under put load, then run this
# against the server's pid (see perf/README.md). cpu-clock samples show where
# CPU goes, not time spent blocked (an fdatasync wait is off-CPU).
# Also writes <out>.perf.data next to the HTML for perf report.
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
cp perf.data "${out%.html}.perf.data"
# The three hottest leaf frames (self time) and the three hottest frames
# including their callees, for notes and quick reads.
echo "top frames, self:"
perf report --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | head -3 || true
echo "top frames, with callees (children; unnamed frames and syscall entry skipped):"
perf report --children --sort dso,symbol --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9.]+%' \
  | grep -vE '\[unknown\]|\] 0x[0-9a-f]+ |do_syscall_64|entry_SYSCALL' | head -3 || true
echo "flamegraph: $out"
echo "perf data:  ${out%.html}.perf.data (perf report -i <it> --stdio)"
