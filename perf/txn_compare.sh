#!/usr/bin/env bash
# perf/txn_compare.sh: the cost of a transaction against a raw put on the
# same tinykv-server in one run (issue 11's benchmark). Starts one standalone
# server (Release build), loads keys, then for R rounds runs, in alternation:
# raw puts, one-key transactions, four-key transactions (tinykv-bench -b
# tinykv-txn, libtinykv 2PC: prewrite + commit per key group), and prints the
# medians: ops/s, p99, server CPU per op and the ratio to a raw put.
# --txn-load also writes every key once through a transaction before the
# rounds, so transactions meet keys with committed versions (a store whose
# data was written by transactions) instead of an empty write CF.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: perf/txn_compare.sh [-r ROUNDS] [-D SECONDS] [-k KEYS] [-c CONNS] [-m DEPTH]
                           [--txn-load] [--build-dir DIR] [--out DIR]
  -r rounds (default 3), -D measured seconds per run (default 8), -k keys (default 100000:
  uniform keys, so concurrent transactions rarely conflict), -c connections x -m depth in flight
  (default 4 x 4), --txn-load also loads every key through a one-key transaction (the write
  CF starts populated, as in a store of transactional data), --build-dir Release build
  (default build/release), --out keep results there.
USAGE
}

root=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 duration=8 keys=100000 conns=4 depth=4 build_dir=$root/build/release out="" txn_load=0
while [ $# -gt 0 ]; do
  case "$1" in
    -r) rounds=$2; shift ;;
    -D) duration=$2; shift ;;
    -k) keys=$2; shift ;;
    -c) conns=$2; shift ;;
    -m) depth=$2; shift ;;
    --txn-load) txn_load=1 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --out) out=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
bin=$build_dir/bin
for b in tinykv-server tinykv-bench; do
  [ -x "$bin/$b" ] || { echo "txn_compare: $bin/$b missing (build Release first)" >&2; exit 2; }
done
tmp=$(mktemp -d /tmp/tkv-txn-compare.XXXXXX)
[ -n "$out" ] || out=$tmp
mkdir -p "$out"
srv_pid=""
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null || true
  rm -rf "$tmp/data"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/tinykv-server" --addr 127.0.0.1:$port --status-addr 127.0.0.1:0 --data-dir "$tmp/data" \
  -L warn >"$out/server.log" 2>&1 &
srv_pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
addr=127.0.0.1:$port
common=(-a "$addr" -k "$keys" -c "$conns" -m "$depth" -q -p "$srv_pid")
"$bin/tinykv-bench" -b tinykv -w load "${common[@]}" >/dev/null
[ "$txn_load" = 1 ] && "$bin/tinykv-bench" -b tinykv-txn -w load "${common[@]}" >/dev/null
: >"$out/results.jsonl"
for r in $(seq "$rounds"); do
  "$bin/tinykv-bench" -b tinykv -w put -D "$duration" "${common[@]}" --label raw-put >>"$out/results.jsonl"
  "$bin/tinykv-bench" -b tinykv-txn -w put --txn-keys 1 -D "$duration" "${common[@]}" --label txn-1key >>"$out/results.jsonl"
  "$bin/tinykv-bench" -b tinykv-txn -w put --txn-keys 4 -D "$duration" "${common[@]}" --label txn-4key >>"$out/results.jsonl"
  echo "txn_compare: round $r of $rounds done" >&2
done
python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r)
def med(label, f):
    return statistics.median(f(r) for r in by[label])
base_cpu = med("raw-put", lambda r: r["cpu_us_per_op"]["server"])
print("| run | ops/s | p99 us | server CPU us/op | x raw put (CPU/op) | errors |")
print("|---|---|---|---|---|---|")
for label in ("raw-put", "txn-1key", "txn-4key"):
    if label not in by:
        continue
    cpu = med(label, lambda r: r["cpu_us_per_op"]["server"])
    print("| %s | %.0f | %.0f | %.1f | %.2f | %d |" % (
        label, med(label, lambda r: r["ops_per_s"]), med(label, lambda r: r["lat_us"]["p99"]),
        cpu, cpu / base_cpu if base_cpu else 0, sum(r["errors"]["total"] for r in by[label])))
PY
echo "txn_compare: results in $out/results.jsonl" >&2
