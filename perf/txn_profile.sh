#!/usr/bin/env bash
# perf/txn_profile.sh: where a one-key transaction's server CPU goes, next to
# a raw put's, on the same tinykv-server in one run. Starts one standalone
# server (Release build), loads keys, then runs raw puts and one-key
# transactions (tinykv-bench, as perf/txn_compare.sh does) and records the
# server with `perf record -e cpu-clock` (these VMs have no hardware counters)
# during each. Prints, per shared object and for the hottest symbols, the
# server CPU in microseconds per operation (samples / frequency / operations)
# and the transaction / raw-put ratio, so "2.5x" can be read as "where".
# perf.data files stay in the output directory for perf report / flamegraphs.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: perf/txn_profile.sh [-D SECONDS] [-k KEYS] [-c CONNS] [-m DEPTH] [-F HZ]
                           [--txn-load] [--build-dir DIR] [--out DIR] [-- SERVER_ARGS...]
  -D recorded seconds per run (default 10), -k keys (default 100000), -c x -m in flight
  (default 4 x 4, as txn_compare.sh), -F sampling frequency (default 4999),
  --txn-load also loads every key through a one-key transaction (as txn_compare.sh),
  --build-dir Release build (default build/release), --out keep results there.
USAGE
}

root=$(cd "$(dirname "$0")/.." && pwd)
secs=10 keys=100000 conns=4 depth=4 freq=4999 build_dir=$root/build/release out="" txn_load=0
while [ $# -gt 0 ]; do
  case "$1" in
    -D) secs=$2; shift ;;
    -k) keys=$2; shift ;;
    -c) conns=$2; shift ;;
    -m) depth=$2; shift ;;
    -F) freq=$2; shift ;;
    --txn-load) txn_load=1 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --out) out=$2; shift ;;
    --) shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
command -v perf >/dev/null || { echo "txn_profile: perf not found (apt-get install linux-perf)" >&2; exit 2; }
bin=$build_dir/bin
for b in tinykv-server tinykv-bench; do
  [ -x "$bin/$b" ] || { echo "txn_profile: $bin/$b missing (build Release first)" >&2; exit 2; }
done
tmp=$(mktemp -d /tmp/tkv-txn-profile.XXXXXX)
[ -n "$out" ] || out=$tmp
mkdir -p "$out"
out=$(realpath "$out")
srv_pid=""
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null || true
  rm -rf "$tmp/data"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
status_port=$(free_port)
# Durable write batches (one fsync'd engine commit each) from the status
# port's metrics: batches per operation is the group-commit share.
batches() {
  python3 - "$status_port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines()
              if l.startswith("tinykv_engine_write_batches_total"))))
PY
}
"$bin/tinykv-server" --addr 127.0.0.1:$port --status-addr 127.0.0.1:$status_port --data-dir "$tmp/data" \
  -L warn "$@" >"$out/server.log" 2>&1 &
srv_pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
common=(-a 127.0.0.1:$port -k "$keys" -c "$conns" -m "$depth" -q -p "$srv_pid")
"$bin/tinykv-bench" -b tinykv -w load "${common[@]}" >/dev/null
[ "$txn_load" = 1 ] && "$bin/tinykv-bench" -b tinykv-txn -w load "${common[@]}" >/dev/null
for kind in raw-put txn-1key; do
  case $kind in
    raw-put) args=(-b tinykv -w put) ;;
    txn-1key) args=(-b tinykv-txn -w put --txn-keys 1) ;;
  esac
  # The bench runs 2 s longer on each side than the recording, so every
  # sample falls inside steady load; ops/s is the bench's own measurement.
  "$bin/tinykv-bench" "${args[@]}" -D $((secs + 4)) "${common[@]}" --label $kind >"$out/$kind.json" &
  bench_pid=$!
  sleep 2
  b0=$(batches)
  perf record -e cpu-clock -F "$freq" -g -p "$srv_pid" -o "$out/$kind.perf.data" -- sleep "$secs" \
    >/dev/null 2>&1
  echo $(( $(batches) - b0 )) >"$out/$kind.batches"
  wait "$bench_pid"
done
python3 - "$out" "$freq" "$secs" <<'PY'
import json, re, subprocess, sys
out, freq, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(kind):
    r = json.loads([l for l in open("%s/%s.json" % (out, kind)) if l.startswith("{")][0])
    ops = r["ops_per_s"] * secs
    r["batches_per_op"] = int(open("%s/%s.batches" % (out, kind)).read()) / ops if ops else 0
    def per_op(sort):
        rep = subprocess.run(["perf", "report", "-i", "%s/%s.perf.data" % (out, kind), "--no-children",
                              "--sort", sort, "--stdio", "-g", "none", "-n"],
                             capture_output=True, text=True).stdout
        res = {}
        for line in rep.splitlines():
            m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(.+?)\s*$", line)
            if m:
                name = re.sub(r"\s+-\s+-$", "", m.group(2)).strip()
                res[name] = res.get(name, 0) + int(m.group(1)) / freq / ops * 1e6 if ops else 0
        return res
    return r, per_op("dso"), per_op("dso,symbol")
raw, raw_dso, raw_sym = load("raw-put")
txn, txn_dso, txn_sym = load("txn-1key")
print("| run | ops/s | p99 us | server CPU us/op (bench, /proc) | sampled us/op | fsync'd batches/op |")
print("|---|---|---|---|---|---|")
for label, r, d in (("raw-put", raw, raw_dso), ("txn-1key", txn, txn_dso)):
    print("| %s | %.0f | %.0f | %.1f | %.1f | %.3f |" % (label, r["ops_per_s"], r["lat_us"]["p99"],
          r["cpu_us_per_op"]["server"], sum(d.values()), r["batches_per_op"]))
def table(title, a, b, n):
    print("\n| %s | raw-put us/op | txn-1key us/op | txn - raw |" % title)
    print("|---|---|---|---|")
    for k in sorted(set(a) | set(b), key=lambda k: -(b.get(k, 0) - a.get(k, 0)))[:n]:
        print("| %s | %.2f | %.2f | %+.2f |" % (k, a.get(k, 0), b.get(k, 0), b.get(k, 0) - a.get(k, 0)))
table("shared object", raw_dso, txn_dso, 10)
table("symbol (largest differences)", raw_sym, txn_sym, 15)
PY
echo "txn_profile: perf.data and bench output in $out" >&2
