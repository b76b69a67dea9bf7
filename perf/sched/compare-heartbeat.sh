#!/usr/bin/env bash
# perf/sched/compare-heartbeat.sh: how many region and store heartbeats
# tinyscheduler-server takes per second, next to an etcd v3 single-key Txn
# round trip (what recording one heartbeat in etcd would cost), side by side
# on 127.0.0.1 in one run. Starts etcd (the same single durable member as
# perf/compare.sh) and tinyscheduler-server, runs tkv-sched-bench against each
# for R rounds, prints medians and ratios, stops what it started.
#   RegionHeartbeat/s : S streams (one store each, 256 regions), D windows of
#                       N heartbeats in flight per stream; every heartbeat
#                       changes its region's size (a tree and counter update)
#   StoreHeartbeat/s  : S connections x 32 unary calls in flight
#   etcd Txn/s        : S connections x 32 in flight, one put of one key each
set -euo pipefail

rounds=3 duration=5 warmup=1 streams=4 depth=8 count=16
build_dir=${TKV_BUILD_DIR:-build/release}
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--rounds) rounds=$2; shift ;;
    -D|--duration) duration=$2; shift ;;
    -s|--streams) streams=$2; shift ;;
    -m|--depth) depth=$2; shift ;;
    -n|--count) count=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    -h|--help) sed -n 2,12p "$0"; echo "options: -r ROUNDS -D SECS -s STREAMS -m DEPTH -n COUNT --build-dir DIR"; exit 0 ;;
    *) echo "compare-heartbeat.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bench=$build_dir/bin/tkv-sched-bench
sched=$build_dir/bin/tinyscheduler-server
for b in "$bench" "$sched"; do
  [ -x "$b" ] || { echo "compare-heartbeat.sh: $b missing: cmake --build $build_dir" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "compare-heartbeat.sh: etcd not found (apt-get install etcd-server)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/tkv-hb-cmp.XXXXXX)
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

# tinyscheduler-server: its own WiredTiger engine (region metas flushed every
# 100 ms); no balancing (a day of prepare time), so no operator traffic mixes
# into the heartbeat streams.
sport=$(free_port)
TKV_SCHED_PREPARE_MS=86400000 "$sched" --client-urls "http://127.0.0.1:$sport" \
  --peer-urls "http://127.0.0.1:$(free_port)" --status-addr "" \
  --data-dir "$tmp/sched" --log-level warn >"$tmp/sched.log" 2>&1 &
pids+=($!)
wait_port "$sport" 30 "${pids[-1]}" || { echo "tinyscheduler-server did not start" >&2; cat "$tmp/sched.log" >&2; exit 1; }

results=$tmp/results.jsonl
common=(--streams "$streams" --duration "$duration" --warmup "$warmup")
for r in $(seq "$rounds"); do
  echo "compare-heartbeat.sh: round $r/$rounds" >&2
  "$bench" --mode etcd-txn --addr "127.0.0.1:$cport" --depth 32 "${common[@]}" >>"$results"
  "$bench" --mode region-hb --addr "127.0.0.1:$sport" --depth "$depth" --count "$count" "${common[@]}" >>"$results"
  "$bench" --mode store-hb --addr "127.0.0.1:$sport" --depth 32 "${common[@]}" >>"$results"
done

/usr/bin/python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(mode, key):
    v = [r[key] for r in rows if r["mode"] == mode]
    return statistics.median(v) if v else float("nan")
etcd = med("etcd-txn", "requests_per_s")
rh = [r for r in rows if r["mode"] == "region-hb"][0]
print("medians over %d round(s); %s streams/connections" % (
    len([r for r in rows if r["mode"] == "etcd-txn"]), rows[0]["streams"]))
print("%-56s %12s %11s" % ("", "per second", "vs etcd Txn"))
print("%-56s %12.0f %11s" % ("etcd single-key Txn (32 in flight per connection)", etcd, "1.00"))
v = med("region-hb", "items_per_s")
print("%-56s %12.0f %11.2f" % ("RegionHeartbeat (%d windows of %d in flight per stream)" %
                                (rh["depth"], rh["count"]), v, v / etcd))
v = med("store-hb", "requests_per_s")
print("%-56s %12.0f %11.2f" % ("StoreHeartbeat (32 in flight per connection)", v, v / etcd))
bad = [r for r in rows if r["errors"] or r["violations"]]
print("errors:", "none" if not bad else bad)
PY
