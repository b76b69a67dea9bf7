#!/usr/bin/env python3
# perf/compare3.py's harness, shortened: (1) the etcd half on a real
# 3-member cluster: every run's CPU is summed over the three member
# processes, the open-loop runs hold the offered rate, and a kill -9 of the
# leader is measured as a pause that contains the kill and ends in an
# acknowledged write; (2) the tinykv half: either the region reaches 3
# replicas and tinykv rows are measured, or the run refuses with exit 3 and
# says why. Skipped (exit 77) without etcd.
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "..", "perf", "compare3.py")
BIN_ROOT = os.environ["TKV_BIN_ROOT"]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(out, *extra, timeout=400):
    argv = [sys.executable, SCRIPT, "--build-dir", BIN_ROOT, "-r", "1", "-D", "1", "--warmup", "0",
            "-k", "200", "-c", "2", "-m", "2", "--out", out] + list(extra)
    p = subprocess.run(argv, capture_output=True, timeout=timeout)
    rows = []
    path = os.path.join(out, "results.jsonl")
    if os.path.exists(path):
        rows = [json.loads(l) for l in open(path) if l.strip()]
    return p.returncode, p.stdout.decode(), p.stderr.decode(), rows


def check_etcd(rows, out):
    tags = {r["tag"] for r in rows if r["system"] == "etcd"}
    for t in ("put", "get", "put-open", "get-open", "put-1", "failover-fast"):
        if t not in tags:
            fail("no etcd %s run in %s (tags %s)" % (t, out, sorted(tags)))
    for r in rows:
        if r["system"] != "etcd" or r["tag"].startswith("failover"):
            continue
        if r["ops"] <= 0:
            fail("etcd %s measured no operation: %s" % (r["tag"], r))
        cpus = [s["cpu_s"] for s in r["servers"]]
        if len(cpus) != 3:
            fail("etcd %s: CPU of %d processes, want the 3 members" % (r["tag"], len(cpus)))
        if r["tag"] == "put" and min(cpus) <= 0:
            fail("etcd put: a member used no CPU while replicating puts: %s" % cpus)
        if abs(sum(c for c in cpus if c > 0) - r["server_cpu_s"]) > 0.01:
            fail("server_cpu_s %.3f is not the sum of the members' %s" % (r["server_cpu_s"], cpus))
        if r["tag"].endswith("-open"):
            if r["mode"] != "open" or not r["rate"]:
                fail("%s ran closed loop: %s" % (r["tag"], r))
            if r["ops_per_s"] < 0.5 * r["rate"]:
                fail("%s: %.0f ops/s against an offered %d/s" % (r["tag"], r["ops_per_s"], r["rate"]))
        if r["tag"] == "put-1" and (r["conns"], r["depth"]) != (1, 1):
            fail("single-put run with %d x %d in flight" % (r["conns"], r["depth"]))
    fo = [r for r in rows if r["tag"] == "failover-fast" and r["system"] == "etcd"]
    ms = fo[0]["failover_ms"]
    if ms is None:
        fail("etcd failover not measured: no pause around the kill ended in a write: %s" % fo[0])
    if not 0 < ms < 30000:
        fail("etcd failover of %.0f ms is outside (0, 30 s)" % ms)
    print("etcd: %d runs, failover %.0f ms" % (len(rows), ms))


def main():
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        print("SKIP: etcd/etcdctl not installed")
        sys.exit(77)
    base = tempfile.mkdtemp(prefix="tkv-test-compare3.")
    try:
        out = os.path.join(base, "etcd")
        rc, so, se, rows = run(out, "--etcd-only", "--failover-reps", "1", "--failover-configs", "fast")
        if rc != 0:
            fail("etcd-only run exited %d:\n%s\n%s" % (rc, so, se[-3000:]))
        check_etcd(rows, out)
        if "| put ops/s |" not in so:
            fail("no table printed:\n" + so)

        out = os.path.join(base, "both")
        rc, so, se, rows = run(out, "--no-failover", "--replica-timeout", "20",
                               "--data-root", base)
        if rc == 3:
            if "REFUSED" not in se or "3 replicas" not in se:
                fail("exit 3 without the reason:\n" + se[-3000:])
            if any(r["system"] == "tinykv" for r in rows):
                fail("refused but measured tinykv rows")
            print("tinykv: refused as expected while the region lacks 3 replicas")
        elif rc == 0:
            tk = [r for r in rows if r["system"] == "tinykv" and r["tag"] == "put"]
            if not tk or tk[0]["ops"] <= 0 or len(tk[0]["servers"]) != 4:
                fail("tinykv put not measured over scheduler + 3 nodes: %s" % tk)
            print("tinykv: measured with 3 replicas")
        else:
            fail("run exited %d:\n%s\n%s" % (rc, so, se[-3000:]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
