#!/usr/bin/env bash
# perf/compare.sh: tinykv vs etcd, side by side, on 127.0.0.1. Starts etcd
# (one member), tinykv-server standalone and tinykv in cluster mode with one
# replica (tinyscheduler-server + one node, writes through Raft) -- all
# durable: each fsyncs before acknowledging --, loads the same keys, runs each
# workload on each system in alternation for R rounds, prints medians and
# ratios, and stops everything it started. See perf/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: perf/compare.sh [options]
  -w, --workloads LIST   comma-separated tinykv-bench workloads (default put,get)
  -r, --rounds R         rounds; each round runs every workload on etcd then tinykv (default 3)
  -D, --duration S       measured seconds per run (default 10)
      --warmup S         warm-up seconds per run (default 2)
  -k, --keys N           keys loaded into both systems before the rounds (default 10000)
      --value-size B     value bytes (default 100)
  -d, --dist D           uniform | zipfian (default uniform)
  -c, --conns N          client connections (default 8)
  -m, --depth M          requests in flight per connection (default 4)
  -t, --threads N        client reactor cores (default 1)
      --rate R           open loop at R ops/s instead of closed loop
      --cores N          tinykv-server cores (default 1)
      --serializable     etcd reads serializable (default linearizable)
      --replicas N       1 (default); 3 = three etcd members against scheduler + three
                         tinykv nodes (perf/compare3.py): throughput, CPU/op summed over
                         every server process, open-loop p99, single put, failover
    3 replicas only:
      --failover-reps N  kill -9 repetitions per system and tick setting (default 3)
      --failover-configs default,fast   tick settings to fail over with
      --replica-timeout S  refuse (exit 3) if tinykv's region lacks 3 replicas by then (60)
      --flamegraph FILE  profile the tinykv leader under put load into FILE (HTML)
      --rate-share X     open loop at X x etcd's closed-loop rate (default 0.5)
      --data-root DIR    where the data dirs go (default /tmp)
      --no-failover, --no-perf, --etcd-only
      --perf-stat        count context switches per put of every server process (perf stat)
      --no-cluster       skip tinykv's cluster mode (scheduler + one node, Raft path)
      --h2load           afterwards, cross-check put/get with h2load (neutral client)
      --build-dir DIR    Release build directory (default $TKV_BUILD_DIR or build/release)
      --no-build         use the binaries already in the build directory
      --head             build from `git archive HEAD` (committed code only) in a temp
                         dir, so uncommitted edits in the shared tree do not leak in
      --out DIR          keep the JSON result lines and logs in DIR (default: a temp dir)
      --keep             keep the data directories (default: removed on exit)
      --table FILE       only print the table for an earlier results.jsonl
  -h, --help
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
workloads=put,get rounds=3 duration=10 warmup=2 keys=10000 value_size=100 dist=uniform
conns=8 depth=4 threads=1 rate=0 cores=1 serializable=0 replicas=1 do_h2load=0 do_cluster=1
replicas3_args=()
build_dir=${TKV_BUILD_DIR:-$root/build/release} do_build=1 out="" keep=0 from_head=0 table_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    -w|--workloads) workloads=$2; shift ;;
    -r|--rounds) rounds=$2; shift ;;
    -D|--duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    -k|--keys) keys=$2; shift ;;
    --value-size) value_size=$2; shift ;;
    -d|--dist) dist=$2; shift ;;
    -c|--conns) conns=$2; shift ;;
    -m|--depth) depth=$2; shift ;;
    -t|--threads) threads=$2; shift ;;
    --rate) rate=$2; shift ;;
    --cores) cores=$2; shift ;;
    --serializable) serializable=1 ;;
    --replicas) replicas=$2; shift ;;
    --failover-reps|--failover-configs|--replica-timeout|--flamegraph|--rate-share|--data-root)
      replicas3_args+=("$1" "$2"); shift ;;
    --no-failover|--no-perf|--etcd-only|--perf-stat) replicas3_args+=("$1") ;;
    --h2load) do_h2load=1 ;;
    --no-cluster) do_cluster=0 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --no-build) do_build=0 ;;
    --head) from_head=1 ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --keep) keep=1 ;;
    --table) table_only=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

log() { echo "compare.sh: $*" >&2; }

print_table() { # results.jsonl: medians per (workload, backend) and ratios
  /usr/bin/python3 - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {}
for r in rows:
    if r["workload"] == "load":
        print(f'load {r["backend"]:11s}: {r["ops"]} keys in {r["secs"]:.1f} s ({r["ops_per_s"]:.0f}/s), errors {r["errors"]["total"]}')
        continue
    runs.setdefault((r["workload"], r["backend"]), []).append(r)
med = lambda xs: statistics.median(xs) if xs else float("nan")
def m(w, b, f):
    return med([f(r) for r in runs.get((w, b), [])])
def ratio(a, b):
    return f"{a / b:.2f}" if b and a == a and b == b else "-"
backends = [b for b in ("etcd", "tinykv", "tinykv-raft") if any(k[1] == b for k in runs)]
print()
print("medians over %d round(s); tinykv = standalone, tinykv-raft = cluster mode, one replica (Raft path)"
      % max([len(v) for v in runs.values()] or [0]))
print("%-8s | %-11s | %10s | %9s | %11s | %6s" % ("workload", "backend", "ops/s", "p99 us", "srv us/op", "errors"))
print("-" * 70)
for w in dict.fromkeys(k[0] for k in runs):
    for b in backends:
        if (w, b) not in runs:
            continue
        t = m(w, b, lambda r: r["ops_per_s"]); p = m(w, b, lambda r: r["lat_us"]["p99"])
        c = m(w, b, lambda r: r["cpu_us_per_op"]["server"])
        e = sum(r["errors"]["total"] for r in runs[(w, b)])
        print(f"{w:8s} | {b:11s} | {t:10.0f} | {p:9.0f} | {c:11.1f} | {e:6d}")
print()
print("ratios (throughput: higher is better; p99 and CPU/op: lower is better)")
pairs = [("tinykv", "etcd"), ("tinykv-raft", "etcd"), ("tinykv-raft", "tinykv")]
for w in dict.fromkeys(k[0] for k in runs):
    for a, b in pairs:
        if (w, a) not in runs or (w, b) not in runs:
            continue
        f = lambda key: ratio(m(w, a, key), m(w, b, key))
        print(f"{w:8s} {a}/{b}: throughput {f(lambda r: r['ops_per_s'])}, p99 {f(lambda r: r['lat_us']['p99'])}, "
              f"server CPU/op {f(lambda r: r['cpu_us_per_op']['server'])}")
cli = [r["cpu_us_per_op"]["client"] for v in runs.values() for r in v]
if cli:
    print(f"\nclient CPU per op (tinykv-bench, median of all runs): {med(cli):.1f} us")
EOF
}

if [ -n "$table_only" ]; then
  print_table "$table_only"
  exit 0
fi

# ---- processes we start, stopped on any exit ----
pids=()
tmp=$(mktemp -d /tmp/tkv-compare.XXXXXX)
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "$keep" = 1 ]; then log "data kept in $tmp"; else rm -rf "$tmp"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

user_out=$out
[ -n "$out" ] || out=$tmp/out
mkdir -p "$out"
results=$out/results.jsonl
: > "$results"

case "$replicas" in
  1|3) ;;
  *) log "--replicas must be 1 or 3"; exit 2 ;;
esac

# ---- build ----
src_dir=$root
if [ "$from_head" = 1 ]; then
  src_dir=$tmp/src
  mkdir -p "$src_dir"
  git -C "$root" archive HEAD | tar -x -C "$src_dir"
  build_dir=$tmp/build
  do_build=1
  log "building committed HEAD $(git -C "$root" rev-parse --short HEAD) in $src_dir"
fi
if [ "$do_build" = 1 ]; then
  log "building Release into $build_dir"
  cmake -S "$src_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >"$out/build.log" 2>&1
  cmake --build "$build_dir" --target tinykv-server tinykv-bench tinyscheduler-server -j2 >>"$out/build.log" 2>&1 ||
    { log "build failed, see $out/build.log"; exit 1; }
fi
bench=$build_dir/bin/tinykv-bench
server=$build_dir/bin/tinykv-server
sched=$build_dir/bin/tinyscheduler-server
need=("$bench" "$server")
[ "$do_cluster" = 1 ] && need+=("$sched")
for b in "${need[@]}"; do
  [ -x "$b" ] || { log "missing $b (build it or drop --no-build)"; exit 1; }
done
command -v etcd >/dev/null || { log "etcd not found (apt-get install etcd-server)"; exit 1; }

if [ "$replicas" = 3 ]; then
  # Three replicas: perf/compare3.py starts 3 etcd members and scheduler + 3
  # tinykv nodes, measures throughput, CPU, open-loop p99, single-put latency
  # and failover, and prints the ratios (see perf/README.md).
  args3=(--build-dir "$build_dir" -r "$rounds" -D "$duration" --warmup "$warmup" -k "$keys"
         --value-size "$value_size" -d "$dist" -c "$conns" -m "$depth" -t "$threads" --cores "$cores")
  [ -n "$user_out" ] && args3+=(--out "$user_out")
  [ "$rate" != 0 ] && args3+=(--rate "$rate")
  [ "$keep" = 1 ] && args3+=(--keep)
  /usr/bin/python3 "$root/perf/compare3.py" "${args3[@]}" "${replicas3_args[@]}"
  exit $?
fi

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port timeout_s pid
  local i
  for i in $(seq $(($2 * 10))); do
    kill -0 "$3" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ---- etcd: one member; the WAL is fsync'ed before a put is acknowledged (default) ----
start_etcd() {
  local cport pport
  cport=$(free_port); pport=$(free_port)
  etcd --name bench --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "bench=http://127.0.0.1:$pport" --initial-cluster-state new \
    --logger zap --log-level warn >"$out/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
  etcd_addr=127.0.0.1:$cport
  wait_port "$cport" 30 "$etcd_pid" || { log "etcd did not start, see $out/etcd.log"; exit 1; }
  # Ready = serves a linearizable read (has a leader).
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$etcd_addr" get probe >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "etcd never became ready"; exit 1
}

# ---- tinykv-server: standalone, WiredTiger log fsync'ed on commit ----
start_tinykv() {
  local port sport
  port=$(free_port); sport=$(free_port)
  printf '[storage]\nsync-log = true\n' >"$tmp/tinykv.toml"
  "$server" -C "$tmp/tinykv.toml" --addr "127.0.0.1:$port" --status-addr "127.0.0.1:$sport" \
    --data-dir "$tmp/tinykv" --cores "$cores" --log-level warn >"$out/tinykv.log" 2>&1 &
  tkv_pid=$!
  pids+=("$tkv_pid")
  tkv_addr=127.0.0.1:$port
  wait_port "$port" 30 "$tkv_pid" || { log "tinykv-server did not start, see $out/tinykv.log"; exit 1; }
}

# ---- tinykv cluster mode, one replica: tinyscheduler-server + one node ----
# Writes go through Raft (raft log group commit + fdatasync before the
# acknowledgement; WiredTiger's log is off), reads through ReadIndex. The
# client (tinykv-bench --pd, libtinykv) routes by the scheduler's regions.
# Server CPU per op counts the node and the scheduler.
start_cluster() {
  local sport pport kport kstatus
  sport=$(free_port); pport=$(free_port); kport=$(free_port); kstatus=$(free_port)
  "$sched" --client-urls "http://127.0.0.1:$sport" --peer-urls "http://127.0.0.1:$pport" \
    --data-dir "$tmp/sched" --name bench >"$out/sched.log" 2>&1 &
  sched_pid=$!
  pids+=("$sched_pid")
  sched_addr=127.0.0.1:$sport
  wait_port "$sport" 30 "$sched_pid" || { log "tinyscheduler-server did not start, see $out/sched.log"; exit 1; }
  "$server" --pd "$sched_addr" --addr "127.0.0.1:$kport" --status-addr "127.0.0.1:$kstatus" \
    --data-dir "$tmp/tinykv-raft" --cores "$cores" --log-level warn >"$out/tinykv-raft.log" 2>&1 &
  raft_pid=$!
  pids+=("$raft_pid")
  wait_port "$kport" 60 "$raft_pid" || { log "tinykv-server (cluster) did not start, see $out/tinykv-raft.log"; exit 1; }
  # The store ports listen before start-up with the scheduler is over:
  # ready = /readyz answers 200 (every store serves).
  /usr/bin/python3 - "$kstatus" <<'EOF' || { log "tinykv-server (cluster) never became ready, see $out/tinykv-raft.log"; exit 1; }
import sys, time, urllib.request
for _ in range(600):
    try:
        if urllib.request.urlopen("http://127.0.0.1:%s/readyz" % sys.argv[1], timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

start_etcd
start_tinykv
[ "$do_cluster" = 1 ] && start_cluster
log "etcd pid $etcd_pid at $etcd_addr; tinykv-server pid $tkv_pid at $tkv_addr; results in $results"
[ "$do_cluster" = 1 ] && log "cluster: tinyscheduler-server pid $sched_pid at $sched_addr, tinykv-server pid $raft_pid"


common=(-k "$keys" --value-size "$value_size" -d "$dist" -c "$conns" -m "$depth" -t "$threads" -q)
[ "$serializable" = 1 ] && common+=(--serializable)
run() { # backend addr pid workload extra...
  local b=$1 a=$2 p=$3 w=$4; shift 4
  "$bench" -b "$b" -a "$a" -p "$p" -w "$w" "${common[@]}" "$@" 2>>"$out/bench.log" | tee -a "$results" >/dev/null ||
    log "run $b $w failed (see $out/bench.log)"
}
run_cluster() { # workload extra...: tinykv through the scheduler, tagged tinykv-raft
  local w=$1; shift
  "$bench" -b tinykv --pd "$sched_addr" -p "$raft_pid" -p "$sched_pid" -w "$w" "${common[@]}" "$@" \
    2>>"$out/bench.log" | sed 's/"backend":"tinykv"/"backend":"tinykv-raft"/' | tee -a "$results" >/dev/null ||
    log "run tinykv-raft $w failed (see $out/bench.log)"
}

log "loading $keys keys into etcd and tinykv"
run etcd "$etcd_addr" "$etcd_pid" load
run tinykv "$tkv_addr" "$tkv_pid" load
[ "$do_cluster" = 1 ] && run_cluster load

IFS=, read -r -a wls <<<"$workloads"
for r in $(seq "$rounds"); do
  for w in "${wls[@]}"; do
    extra=(--warmup "$warmup" -D "$duration" --label "round=$r")
    [ "$rate" != 0 ] && extra+=(-r "$rate")
    log "round $r/$rounds: $w on etcd"
    run etcd "$etcd_addr" "$etcd_pid" "$w" "${extra[@]}"
    log "round $r/$rounds: $w on tinykv"
    run tinykv "$tkv_addr" "$tkv_pid" "$w" "${extra[@]}"
    if [ "$do_cluster" = 1 ]; then
      log "round $r/$rounds: $w on tinykv-raft"
      run_cluster "$w" "${extra[@]}"
    fi
  done
done

print_table "$results"

if [ "$do_h2load" = 1 ]; then
  command -v h2load >/dev/null || { log "h2load not found (apt-get install nghttp2-client)"; exit 1; }
  echo
  echo "h2load cross-check (same connections x streams, ${duration}s, every request on key 0):"
  for w in put get; do
    for sys in etcd tinykv; do
      if [ "$sys" = etcd ]; then a=$etcd_addr; else a=$tkv_addr; fi
      args=(-b "$sys" -w "$w" --value-size "$value_size")
      [ "$serializable" = 1 ] && args+=(--serializable)
      path=$("$bench" "${args[@]}" --emit-body "$tmp/$sys-$w.bin")
      line=$(h2load -D "$duration" -c "$conns" -m "$depth" -t "$threads" -d "$tmp/$sys-$w.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' "http://$a$path" 2>&1 |
        grep -E 'finished in|requests:' | tr '\n' ' ')
      printf '  %-6s %-4s %s\n' "$sys" "$w" "$line"
    done
  done
fi
log "done; JSON lines in $results"
[ "$keep" = 1 ] || [ "$out" != "$tmp/out" ] || cp "$results" "/tmp/tkv-compare-last.jsonl"
