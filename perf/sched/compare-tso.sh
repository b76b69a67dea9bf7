#!/usr/bin/env bash
# perf/sched/compare-tso.sh: the scheduler's TSO against the obvious
# alternative, a single-key etcd v3 Txn per allocation, side by side on
# 127.0.0.1 in one run. Starts etcd (the same single durable member as
# perf/compare.sh) and tinyscheduler-server, runs tkv-sched-bench against
# each for R rounds, prints medians and ratios, stops what it started.
#   Tso requests/s  : S streams x D in flight, 1 timestamp per request
#   timestamps/s    : S streams x D in flight, N timestamps per request
#   etcd Txn/s      : S connections x D in flight, one put of one key each
set -euo pipefail

rounds=3 duration=5 warmup=1 streams=4 depth=32 count=100
build_dir=${TKV_BUILD_DIR:-build/release}
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--rounds) rounds=$2; shift ;;
    -D|--duration) duration=$2; shift ;;
    -s|--streams) streams=$2; shift ;;
    -m|--depth) depth=$2; shift ;;
    -n|--count) count=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    -h|--help) sed -n 2,10p "$0"; echo "options: -r ROUNDS -D SECS -s STREAMS -m DEPTH -n COUNT --build-dir DIR"; exit 0 ;;
    *) echo "compare-tso.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bench=$build_dir/bin/tkv-sched-bench
sched=$build_dir/bin/tinyscheduler-server
for b in "$bench" "$sched"; do
  [ -x "$b" ] || { echo "compare-tso.sh: $b missing: cmake --build $build_dir" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "compare-tso.sh: etcd not found (apt-get install etcd-server)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/tkv-tso-cmp.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port seconds pid
  for _ in $(seq $(( $2 * 10 ))); do
    kill -0 "$3" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# etcd: one member, WAL fsync'ed before a write is acknowledged (as perf/compare.sh).
cport=$(free_port); pport=$(free_port)
etcd --name bench --data-dir "$tmp/etcd" \
  --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "bench=http://127.0.0.1:$pport" --initial-cluster-state new \
  --logger zap --log-level warn >"$tmp/etcd.log" 2>&1 &
pids+=($!)
wait_port "$cport" 30 "${pids[-1]}" || { echo "etcd did not start" >&2; cat "$tmp/etcd.log" >&2; exit 1; }
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$cport" get probe >/dev/null 2>&1 && break
  sleep 0.2
done

# tinyscheduler-server: its own WiredTiger engine, fsync'ed TSO bound.
sport=$(free_port)
"$sched" --client-urls "http://127.0.0.1:$sport" --peer-urls "http://127.0.0.1:$(free_port)" \
  --data-dir "$tmp/sched" --log-level warn >"$tmp/sched.log" 2>&1 &
pids+=($!)
wait_port "$sport" 30 "${pids[-1]}" || { echo "tinyscheduler-server did not start" >&2; cat "$tmp/sched.log" >&2; exit 1; }

results=$tmp/results.jsonl
common=(--streams "$streams" --depth "$depth" --duration "$duration" --warmup "$warmup")
for r in $(seq "$rounds"); do
  echo "compare-tso.sh: round $r/$rounds" >&2
  "$bench" --mode etcd-txn --addr "127.0.0.1:$cport" "${common[@]}" >>"$results"
  "$bench" --mode tso --addr "127.0.0.1:$sport" --count 1 "${common[@]}" >>"$results"
  "$bench" --mode tso --addr "127.0.0.1:$sport" --count "$count" "${common[@]}" >>"$results"
done

/usr/bin/python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(mode, count, key):
    v = [r[key] for r in rows if r["mode"] == mode and (count is None or r["count"] == count)]
    return statistics.median(v) if v else float("nan")
etcd = med("etcd-txn", None, "requests_per_s")
counts = sorted({r["count"] for r in rows if r["mode"] == "tso"})
print("medians over %d round(s); %s streams x %s in flight" % (
    len([r for r in rows if r["mode"] == "etcd-txn"]), rows[0]["streams"], rows[0]["depth"]))
print("%-34s %14s %10s" % ("", "per second", "vs etcd Txn"))
print("%-34s %14.0f %10s" % ("etcd single-key Txn", etcd, "1.00"))
for c in counts:
    req = med("tso", c, "requests_per_s"); ts = med("tso", c, "items_per_s")
    print("%-34s %14.0f %10.2f" % ("Tso requests (count=%d)" % c, req, req / etcd))
    if c > 1:
        print("%-34s %14.0f %10.2f" % ("timestamps (count=%d)" % c, ts, ts / etcd))
bad = [r for r in rows if r["errors"] or r["violations"]]
print("errors/violations:", "none" if not bad else bad)
EOF
