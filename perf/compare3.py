#!/usr/bin/env python3
"""perf/compare3.py: three replicas, tinykv against etcd (perf/compare.sh --replicas 3).

Starts a 3-member etcd cluster and tinyscheduler-server + three tinykv-server
nodes (cluster mode, one core each) on 127.0.0.1, every member fsyncing before
it acknowledges, and measures both with the same client (tinykv-bench) and key
set:

  put / get       closed loop throughput, p99 and server CPU per op, the CPU
                  summed over EVERY server process (/proc/<pid>/stat utime +
                  stime: 3 etcd members; scheduler + 3 nodes)
  put / get open  open loop at the same offered load on both (a share of
                  etcd's closed-loop rate): p99 without coordinated omission
  put 1-in-flight one connection, one request: the single-put latency
  failover        kill -9 of the leader's process to the first acknowledged
                  write after it, by one client loop (1 put in flight, short
                  deadline, retry), with default and with fast tick settings

Prints a table of medians with the spread (min-max) and the ratios against
the issue's targets, writes every JSON line to OUT/results.jsonl and the
summary to OUT/summary.json. Refuses (exit 3) when tinykv's region does not
reach 3 replicas within --replica-timeout. Only the processes it started are
ever signalled, by pid. See perf/README.md.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

EXIT_REFUSED = 3

# Tick settings. "default" = what each ships with; "fast" = what a user tunes
# for quick failover, the same absolute times on both: heartbeat 100 ms,
# election timeout 500 ms (each randomizes up to twice that).
TICKS = {
    "default": {"etcd": [], "tinykv": {}},
    "fast": {"etcd": ["--heartbeat-interval", "100", "--election-timeout", "500"],
             "tinykv": {"raft-base-tick-interval": '"50ms"', "raft-heartbeat-ticks": "2",
                        "raft-election-timeout-ticks": "10"}},
}

TARGETS = {  # metric: (comparison, bound) on tinykv/etcd, or absolute us
    "put_throughput": (">=", 4.0),
    "get_throughput": (">=", 5.0),
    "put_cpu_per_op": ("<=", 0.25),
    "put_open_p99": ("<=", 0.5),
    "single_put_us": ("<=", 200.0),
}


class Refused(Exception):
    pass


def log(msg):
    print("compare3: " + msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """One server process we started: kill -9, stop, restart with the same argv."""
    everyone = []

    def __init__(self, name, argv, log_path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.p = None
        Proc.everyone.append(self)

    def start(self):
        logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        logf.close()

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def stop(self, grace=10):
        if not self.alive():
            return
        self.p.terminate()
        try:
            self.p.wait(grace)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_port(self, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError("%s exited (%s); log tail:\n%s" %
                                   (self.name, self.p.returncode, self.log_tail()))
            if port_open(port):
                return
            time.sleep(0.05)
        raise RuntimeError("%s: port %d not open after %ds" % (self.name, port, timeout))


def stop_all():
    for p in Proc.everyone:
        try:
            p.stop()
        except Exception:  # keep stopping the others
            pass


# ---- etcd: three members on loopback ----

class Etcd:
    kind = "etcd"

    def __init__(self, base, ticks):
        self.base = base
        cports = [free_port() for _ in range(3)]
        pports = [free_port() for _ in range(3)]
        self.addrs = ["127.0.0.1:%d" % p for p in cports]
        self.cports = cports
        cluster = ",".join("e%d=http://127.0.0.1:%d" % (i, pports[i]) for i in range(3))
        self.members = []
        for i in range(3):
            argv = ["etcd", "--name", "e%d" % i, "--data-dir", os.path.join(base, "etcd-e%d" % i),
                    "--listen-client-urls", "http://" + self.addrs[i],
                    "--advertise-client-urls", "http://" + self.addrs[i],
                    "--listen-peer-urls", "http://127.0.0.1:%d" % pports[i],
                    "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pports[i],
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--logger", "zap", "--log-level", "warn"] + TICKS[ticks]["etcd"]
            self.members.append(Proc("etcd-e%d" % i, argv, os.path.join(base, "etcd-e%d.log" % i)))

    def start(self):
        for m in self.members:
            m.start()
        for m, port in zip(self.members, self.cports):
            m.wait_port(port, 30)
        self.wait_healthy(60)

    def _ctl(self, *args, endpoints=None):
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints or self.addrs),
                               "--dial-timeout", "1s", "--command-timeout", "2s"] + list(args),
                              capture_output=True, env=env, timeout=20)

    def wait_healthy(self, timeout):
        """Every live member serves a linearizable read (a leader exists and
        this member caught up)."""
        deadline = time.monotonic() + timeout
        live = [a for a, m in zip(self.addrs, self.members) if m.alive()]
        while time.monotonic() < deadline:
            if self._ctl("endpoint", "health", endpoints=live).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("etcd not healthy after %ds" % timeout)

    def leader(self):
        """Index of the member that leads, by etcdctl endpoint status."""
        for _ in range(50):
            live = [a for a, m in zip(self.addrs, self.members) if m.alive()]
            r = self._ctl("endpoint", "status", "-w", "json", endpoints=live)
            if r.returncode == 0:
                for st in json.loads(r.stdout):
                    s = st["Status"]
                    if s["leader"] and s["leader"] == s["header"]["member_id"]:
                        return self.addrs.index(st["Endpoint"].replace("http://", ""))
            time.sleep(0.2)
        raise RuntimeError("etcd: no leader found")

    def pids(self):
        return [m.pid for m in self.members]

    def bench_target(self, leader, failover=False):
        """tinykv-bench arguments that reach this system: the leader (then the
        other members, which a failed connection moves on to)."""
        order = [leader] + [i for i in range(3) if i != leader] if failover else [leader]
        return ["-b", "etcd", "-a", ",".join(self.addrs[i] for i in order)]

    def restart(self, i):
        self.members[i].start()
        self.members[i].wait_port(self.cports[i], 30)
        self.wait_healthy(60)

    def stop(self):
        for m in self.members:
            m.stop()


# ---- tinykv: tinyscheduler-server + three tinykv-server nodes ----

class Tinykv:
    kind = "tinykv"

    def __init__(self, base, bindir, ticks, cores):
        self.base = base
        self.sport, self.speer, self.sstatus = free_port(), free_port(), free_port()
        self.sched_addr = "127.0.0.1:%d" % self.sport
        self.sched = Proc("tinyscheduler-server",
                          [os.path.join(bindir, "tinyscheduler-server"),
                           "--client-urls", "http://" + self.sched_addr,
                           "--peer-urls", "http://127.0.0.1:%d" % self.speer,
                           "--status-addr", "127.0.0.1:%d" % self.sstatus,
                           "--data-dir", os.path.join(base, "sched"), "--name", "bench"],
                          os.path.join(base, "sched.log"))
        conf = os.path.join(base, "tinykv.toml")
        with open(conf, "w") as f:
            f.write("[raftstore]\n")
            for k, v in TICKS[ticks]["tinykv"].items():
                f.write("%s = %s\n" % (k, v))
        self.nodes = []
        for i in range(3):
            argv = [os.path.join(bindir, "tinykv-server"), "-C", conf, "--pd", self.sched_addr,
                    "--addr", "127.0.0.1:0", "--status-addr", "127.0.0.1:0",
                    "--data-dir", os.path.join(base, "node%d" % i), "--cores", str(cores),
                    "--log-level", "info"]
            self.nodes.append(Proc("tinykv-node%d" % i, argv, os.path.join(base, "node%d.log" % i)))
        self.store_node = {}  # store id -> node index, from the "store ready" log lines
        self.serving_seen = [0, 0, 0]  # "is serving" lines in each log before its last start

    def _start_node(self, i):
        try:
            with open(self.nodes[i].log_path, "rb") as f:
                self.serving_seen[i] = f.read().count(b'["tinykv-server is serving"]')
        except OSError:
            self.serving_seen[i] = 0
        self.nodes[i].start()

    def _wait_serving(self, i, timeout=120):
        n = self.nodes[i]
        deadline = time.monotonic() + timeout
        seen = self.serving_seen[i]
        while time.monotonic() < deadline:
            if not n.alive():
                raise RuntimeError("%s exited (%s); log tail:\n%s" % (n.name, n.p.returncode, n.log_tail()))
            with open(n.log_path, "rb") as f:
                data = f.read()
            if data.count(b'["tinykv-server is serving"]') > seen:
                for line in data.splitlines():
                    if b'["store ready"]' in line:
                        sid = int(line.split(b"[store_id=")[1].split(b"]")[0])
                        self.store_node[sid] = i
                return
            time.sleep(0.05)
        raise RuntimeError("%s not serving after %ds" % (n.name, timeout))

    def start(self):
        self.sched.start()
        self.sched.wait_port(self.sport, 30)
        # One node bootstraps the cluster; the others join once it serves
        # (fresh nodes started together race to bootstrap, and the loser exits).
        self._start_node(0)
        self._wait_serving(0)
        for i in (1, 2):
            self._start_node(i)
        for i in (1, 2):
            self._wait_serving(i)

    def regions(self):
        url = "http://127.0.0.1:%d/pd/api/v1/regions" % self.sstatus
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["regions"]

    def first_region(self):
        for r in self.regions():
            if r.get("start_key", "") == "":
                return r
        return None

    def wait_replicas(self, timeout):
        """Region 1 (the one starting at "") has 3 peers, on 3 nodes, none
        pending, and a leader; else Refused."""
        deadline = time.monotonic() + timeout
        r = None
        while time.monotonic() < deadline:
            try:
                r = self.first_region()
            except OSError:
                r = None
            if r and len(r["peers"]) == 3 and not r.get("pending_peers") and r.get("leader", {}).get("id"):
                nodes = {self.store_node.get(p["store_id"]) for p in r["peers"]}
                if len(nodes) == 3 and None not in nodes:
                    return r
            time.sleep(0.25)
        raise Refused("tinykv: the first region did not reach 3 replicas on 3 nodes within %ds "
                      "(scheduler's view: %s). Three-replica mode needs the raftstore's conf "
                      "change and the scheduler's replica checker (issue 10 items 1 and 4); "
                      "node logs are in %s." % (timeout, json.dumps(r), self.base))

    def leader(self):
        r = self.first_region()
        return self.store_node[r["leader"]["store_id"]]

    def pids(self):
        return [self.sched.pid] + [n.pid for n in self.nodes]

    def bench_target(self, leader, failover=False):
        return ["-b", "tinykv", "--pd", self.sched_addr]

    @property
    def members(self):
        return self.nodes

    def restart(self, i, settle_timeout=120):
        self._start_node(i)
        self._wait_serving(i)
        self.wait_replicas(settle_timeout)

    def stop(self):
        for n in self.nodes:
            n.stop()
        self.sched.stop()


# ---- the client ----

class Bench:
    def __init__(self, bindir, args, out):
        self.bin = os.path.join(bindir, "tinykv-bench")
        self.a = args
        self.results = os.path.join(out, "results.jsonl")
        self.log = os.path.join(out, "bench.log")

    def common(self):
        return ["-k", str(self.a.keys), "--value-size", str(self.a.value_size), "-d", self.a.dist,
                "-t", str(self.a.threads), "-q"]

    def run(self, system, leader, workload, tag, extra, failover=False):
        argv = ([self.bin] + system.bench_target(leader, failover) + ["-w", workload] +
                self.common() + extra)
        for pid in system.pids():
            argv += ["-p", str(pid)]
        stat = None
        if self.a.perf_stat and tag == "put" and shutil.which("perf"):
            # context switches and CPU of every server process (all threads,
            # io_uring workers included) over the measured window
            stat = subprocess.Popen(
                ["perf", "stat", "-x,", "--per-thread", "-e", "context-switches,cpu-clock", "--delay",
                 str(int(self.a.warmup * 1000)), "-p", ",".join(str(p) for p in system.pids()),
                 "--", "sleep", str(self.a.warmup + self.a.duration)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(self.log, "ab") as lf:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=lf, timeout=900)
        counts = {}
        if stat is not None:
            text = stat.communicate(timeout=60)[1].decode()
            # per thread: "comm-tid,value,unit,event,..."; kept for reading
            # which threads switch (iou-wrk-* are io_uring's workers)
            with open(self.results.replace("results.jsonl", "perfstat-%s-%s.txt" % (
                    system.kind, time.strftime("%H%M%S"))), "w") as f:
                f.write(text)
            for line in text.splitlines():
                f = line.split(",")
                if len(f) > 3 and f[3] in ("context-switches", "cpu-clock"):
                    try:
                        counts[f[3]] = counts.get(f[3], 0.0) + float(f[1])
                    except ValueError:
                        pass
        lines = [l for l in r.stdout.decode().splitlines() if l.startswith("{")]
        if not lines:
            log("run %s %s %s failed (exit %d, see %s)" % (system.kind, workload, tag, r.returncode, self.log))
            return None
        row = json.loads(lines[-1])
        row["system"], row["tag"] = system.kind, tag
        if "context-switches" in counts and row.get("ops_per_s"):
            ops = row["ops_per_s"] * self.a.duration
            row["ctxsw_per_op"] = counts["context-switches"] / ops
            row["perf_cpu_us_per_op"] = counts.get("cpu-clock", 0) * 1000 / ops
        with open(self.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    return "%s-%s" % (fmt(min(xs)), fmt(max(xs))) if xs else "-"


def fmt(x):
    if x != x:
        return "-"
    return "%.0f" % x if abs(x) >= 100 else "%.1f" % x if abs(x) >= 10 else "%.2f" % x


def measure(args, bench, systems):
    """Closed loop, open loop and single-put runs, alternating the systems."""
    rows = {}  # (tag, kind) -> [row]

    def add(tag, sysm, r):
        if r is not None:
            rows.setdefault((tag, sysm.kind), []).append(r)

    leaders = {s.kind: s.leader() for s in systems}
    for s in systems:
        log("loading %d keys into %s (leader: member %d)" % (args.keys, s.kind, leaders[s.kind]))
        add("load", s, bench.run(s, leaders[s.kind], "load", "load", ["-c", "8", "-m", "4"]))
    closed = ["-c", str(args.conns), "-m", str(args.depth), "--warmup", str(args.warmup),
              "-D", str(args.duration)]
    want = set(args.workloads.split(","))
    for rnd in range(1, args.rounds + 1):
        for w in [w for w in ("put", "get") if w in want]:
            for s in systems:
                log("round %d/%d: %s closed loop on %s" % (rnd, args.rounds, w, s.kind))
                add(w, s, bench.run(s, s.leader(), w, w, closed + ["--label", "round=%d" % rnd]))
    # Open loop at the same offered load on both: a share of etcd's closed-loop rate.
    for w in [w for w in ("put", "get") if w + "-open" in want]:
        base = [r["ops_per_s"] for r in rows.get((w, "etcd"), [])]
        rate = args.rate if args.rate else args.rate_share * median(base) if base else 1000
        rate = max(10, int(rate))
        for rnd in range(1, args.rounds + 1):
            for s in systems:
                log("round %d/%d: %s open loop at %d/s on %s" % (rnd, args.rounds, w, rate, s.kind))
                add(w + "-open", s, bench.run(
                    s, s.leader(), w, w + "-open",
                    ["-c", str(args.conns), "-m", "32", "--warmup", str(args.warmup), "-D",
                     str(args.duration), "-r", str(rate), "--label", "round=%d" % rnd]))
    for rnd in range(1, args.rounds + 1 if "put-1" in want else 1):
        for s in systems:
            log("round %d/%d: single put (1 in flight) on %s" % (rnd, args.rounds, s.kind))
            add("put-1", s, bench.run(s, s.leader(), "put", "put-1",
                                      ["-c", "1", "-m", "1", "--warmup", "1", "-D",
                                       str(max(3, args.duration // 2)), "--label", "round=%d" % rnd]))
    return rows


def flamegraph(args, bench, tkv, out_html):
    leader = tkv.leader()
    pid = tkv.nodes[leader].pid
    argv = ([bench.bin] + tkv.bench_target(leader) + ["-w", "put"] + bench.common() +
            ["-c", str(args.conns), "-m", str(args.depth), "--warmup", "1", "-D", "14"])
    log("flamegraph of the tinykv leader (node %d, pid %d) under put load -> %s" % (leader, pid, out_html))
    with open(bench.log, "ab") as lf:
        b = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=lf)
        time.sleep(3)
        fg = subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "flamegraph.sh"),
                             str(pid), "8", out_html], capture_output=True, timeout=300)
        b.wait(120)
    text = fg.stdout.decode("utf-8", "replace")
    print("\nflamegraph of the tinykv leader under put load:\n" + text)
    return text


def failover_once(args, bench, system, rep, cfg):
    """One kill -9 of the leader: the pause from the kill to the first
    acknowledged write after it, as the client loop saw it (ms), or None."""
    leader = system.leader()
    victim = system.members[leader]
    argv = ([bench.bin] + system.bench_target(leader, failover=True) +
            ["-w", "put", "-k", str(args.keys), "--value-size", str(args.value_size), "-q",
             "-c", "1", "-m", "1", "--warmup", "0", "-D", str(args.failover_max),
             "--timeout-ms", str(args.failover_deadline_ms), "--reconnect-ms", "10",
             "--gap-ms", "40", "--stop-after-gap", "--label", "%s/rep=%d" % (cfg, rep)])
    with open(bench.log, "ab") as lf:
        b = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=lf)
        time.sleep(2)  # the loop writes steadily
        kill_ns = time.monotonic_ns()  # CLOCK_MONOTONIC, as the bench's
        victim.kill9()
        # Arm after the kill: the first pause that ends after this (the one
        # the kill causes) ends the run 1 s later. Arming before the kill
        # would let an ordinary hiccup of a loaded machine end it early.
        b.send_signal(signal.SIGUSR1)
        try:
            outp, _ = b.communicate(timeout=args.failover_max + 30)
        except subprocess.TimeoutExpired:
            b.terminate()
            outp, _ = b.communicate()
    lines = [l for l in outp.decode().splitlines() if l.startswith("{")]
    ms = None
    if lines:
        row = json.loads(lines[-1])
        # The first pause that ends after the kill (it may start just after
        # it, when a reply already on its way is read after the kill).
        for g in sorted(row.get("gaps", []), key=lambda g: g["to_ns"]):
            if g["to_ns"] > kill_ns and g["from_ns"] <= kill_ns + 50 * 10**6:
                ms = (g["to_ns"] - kill_ns) / 1e6
                break
        row.update({"system": system.kind, "tag": "failover-" + cfg, "kill_ns": kill_ns,
                    "failover_ms": ms, "victim": leader})
        with open(bench.results, "a") as f:
            f.write(json.dumps(row) + "\n")
    log("failover %s %s rep %d: killed member %d (pid %d): %s" %
        (system.kind, cfg, rep, leader, victim.pid,
         "%.0f ms to the first acknowledged write" % ms if ms is not None else "NO measurement"))
    system.restart(leader)
    return ms


def failover(args, bench, make_system):
    res = {}
    for cfg in args.failover_configs.split(","):
        for kind in args.kinds:
            s = make_system(kind, cfg)
            try:
                s.start()
                if kind == "tinykv":
                    s.wait_replicas(args.replica_timeout)
                    time.sleep(args.settle)
                times = []
                for rep in range(1, args.failover_reps + 1):
                    ms = failover_once(args, bench, s, rep, cfg)
                    if ms is not None:
                        times.append(ms)
                    if kind == "tinykv":
                        time.sleep(args.settle)  # the scheduler learns the leader by heartbeat
                res[(cfg, kind)] = times
            finally:
                s.stop()
    return res


def report(args, rows, fo, out):
    def vals(tag, kind, f):
        xs = [f(r) for r in rows.get((tag, kind), []) if r["errors"]["total"] == 0 or tag == "load"]
        return [x for x in xs if x == x]  # NaN: not measured in that run

    tput = lambda r: r["ops_per_s"]
    p99 = lambda r: r["lat_us"]["p99"]
    cpu = lambda r: r["cpu_us_per_op"]["server"]
    p50 = lambda r: r["lat_us"]["p50"]
    lines = []
    P = lines.append
    P("| metric | etcd (3 members) | tinykv (sched + 3 nodes) | tinykv/etcd | target | met |")
    P("|---|---|---|---|---|---|")
    summary = {}

    def row(name, tag, f, target_key=None, unit=""):
        e, t = vals(tag, "etcd", f), vals(tag, "tinykv", f)
        if not e and not t:
            return
        me, mt = median(e), median(t)
        ratio = mt / me if e and t and me else float("nan")
        tgt, met = "", ""
        if target_key:
            op, bound = TARGETS[target_key]
            x = mt if target_key == "single_put_us" else ratio
            tgt = "%s %s" % (op, fmt(bound))
            if x == x:
                met = "yes" if (x >= bound if op == ">=" else x <= bound) else "NO"
        P("| %s | %s%s (%s) | %s%s (%s) | %s | %s | %s |" %
          (name, fmt(me), unit, spread(e), fmt(mt), unit, spread(t), fmt(ratio), tgt, met))
        summary[name] = {"etcd": e, "tinykv": t, "ratio": ratio}

    row("put ops/s", "put", tput, "put_throughput")
    row("get ops/s (linearizable)", "get", tput, "get_throughput")
    row("put server CPU us/op (all processes)", "put", cpu, "put_cpu_per_op")
    if args.perf_stat:
        row("put context switches/op (all processes, perf stat)", "put",
            lambda r: r.get("ctxsw_per_op", float("nan")))
    row("get server CPU us/op (all processes)", "get", cpu)
    row("put p99 us, closed loop", "put", p99)
    row("put p99 us, open loop (equal rate)", "put-open", p99, "put_open_p99")
    row("get p99 us, open loop (equal rate)", "get-open", p99)
    row("single put p50 us (1 in flight)", "put-1", p50, "single_put_us")
    row("single put p99 us (1 in flight)", "put-1", p99)
    for cfg in args.failover_configs.split(",") if fo else []:
        e, t = fo.get((cfg, "etcd"), []), fo.get((cfg, "tinykv"), [])
        fe = "%s / %s (n=%d)" % (fmt(median(e)), fmt(max(e)) if e else "-", len(e))
        ft = "%s / %s (n=%d)" % (fmt(median(t)), fmt(max(t)) if t else "-", len(t))
        r = median(t) / median(e) if e and t else float("nan")
        P("| failover ms, %s ticks (median / max) | %s | %s | %s | | |" % (cfg, fe, ft, fmt(r)))
        summary["failover_" + cfg] = {"etcd": e, "tinykv": t}
    opens = [r for k, v in rows.items() if k[0].endswith("-open") for r in v]
    if opens:
        P("")
        P("open loop rates: %s" % ", ".join(sorted({"%s %d/s" % (r["workload"], r["rate"]) for r in opens})))
    text = "\n".join(lines)
    print("\n" + text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    errs = sum(r["errors"]["total"] for v in rows.values() for r in v if r.get("tag") != "load")
    if errs:
        print("\nnote: %d errors in measured runs; runs with errors are left out of the medians "
              "(see results.jsonl)" % errs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("-D", "--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("-k", "--keys", type=int, default=10000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("-d", "--dist", default="uniform")
    ap.add_argument("-c", "--conns", type=int, default=8)
    ap.add_argument("-m", "--depth", type=int, default=4)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--cores", type=int, default=1, help="tinykv-server cores per node (default 1)")
    ap.add_argument("--rate", type=float, default=0, help="open-loop ops/s (default: --rate-share of etcd's)")
    ap.add_argument("--rate-share", type=float, default=0.5)
    ap.add_argument("--replica-timeout", type=int, default=60)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after tinykv (re)starts")
    ap.add_argument("--failover-reps", type=int, default=3)
    ap.add_argument("--failover-configs", default="default,fast")
    ap.add_argument("--failover-max", type=int, default=90, help="longest failover waited for (s)")
    ap.add_argument("--failover-deadline-ms", type=int, default=100, help="per-put deadline in the loop")
    ap.add_argument("--no-perf", action="store_true", help="failover only")
    ap.add_argument("-w", "--workloads", default="put,get,put-open,get-open,put-1",
                    help="which measurements (default all: put,get,put-open,get-open,put-1)")
    ap.add_argument("--no-failover", action="store_true")
    ap.add_argument("--perf-stat", action="store_true",
                    help="count context switches of every server process during closed-loop puts")
    ap.add_argument("--flamegraph", default="", help="HTML path: profile the tinykv leader under put load")
    ap.add_argument("--etcd-only", action="store_true", help="only the etcd half (tests the harness)")
    ap.add_argument("--data-root", default=tempfile.gettempdir(), help="where the data dirs go (default /tmp)")
    ap.add_argument("--out", default="")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.kinds = ["etcd"] if args.etcd_only else ["etcd", "tinykv"]
    bindir = os.path.join(args.build_dir, "bin")
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        log("etcd / etcdctl not found (apt-get install etcd-server etcd-client)")
        return 1
    base = tempfile.mkdtemp(prefix="tkv-compare3.", dir=args.data_root)
    out = args.out or os.path.join(base, "out")
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "results.jsonl"), "w").close()
    bench = Bench(bindir, args, out)

    def on_term(sig, frm):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    serial = [0]

    def make_system(kind, ticks):
        serial[0] += 1
        d = os.path.join(base, "%s-%s-%d" % (kind, ticks, serial[0]))
        os.makedirs(d)
        return Etcd(d, ticks) if kind == "etcd" else Tinykv(d, bindir, ticks, args.cores)

    rc = 0
    rows, fo = {}, {}
    try:
        if not args.no_perf:
            systems = [make_system(k, "default") for k in args.kinds]
            try:
                for s in systems:
                    log("starting %s" % s.kind)
                    s.start()
                    if s.kind == "tinykv":
                        r = s.wait_replicas(args.replica_timeout)
                        log("tinykv: region %d has 3 replicas, leader on node %d" % (r["id"], s.leader()))
                        time.sleep(args.settle)
                rows = measure(args, bench, systems)
                if args.flamegraph and "tinykv" in args.kinds:
                    flamegraph(args, bench, systems[-1], os.path.abspath(args.flamegraph))
            finally:
                for s in systems:
                    s.stop()
        if not args.no_failover:
            fo = failover(args, bench, make_system)
        report(args, rows, fo, out)
    except Refused as e:
        log("REFUSED: " + str(e))
        rc = EXIT_REFUSED
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except Exception as e:  # a process that would not start, a run that failed: keep the logs
        log("FAILED: %s: %s" % (type(e).__name__, e))
        rc = 1
    finally:
        stop_all()
        if args.keep or rc not in (0, 130):
            log("data and logs kept in %s" % base)
        else:
            if args.out:
                shutil.rmtree(base, ignore_errors=True)
            else:
                if rc == 0:
                    shutil.copy(os.path.join(out, "results.jsonl"), "/tmp/tkv-compare3-last.jsonl")
                shutil.rmtree(base, ignore_errors=True)
    if rc == 0:
        log("JSON lines in %s" % (os.path.join(out, "results.jsonl") if args.out or args.keep
                                   else "/tmp/tkv-compare3-last.jsonl"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
