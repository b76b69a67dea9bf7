#!/usr/bin/python3
"""tinykv-bench end to end: against a real tinykv-server (and etcd when installed),
load keys, read them back, count misses as not_found, scan, transactions (tinykv-txn),
emit an h2load body. Usage: smoke_bench.py <tinykv-bench> <tinykv-server>"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

bench, server = sys.argv[1], sys.argv[2]
procs = []
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(*args, expect_rc=0):
    r = subprocess.run([bench, "-q", *args], capture_output=True, text=True, timeout=120)
    if expect_rc is not None and r.returncode != expect_rc:
        failures.append(f"{args}: exit {r.returncode}, want {expect_rc}; stderr: {r.stderr[-500:]}")
        print("FAIL:", failures[-1], file=sys.stderr)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), r


def wait_port(port, proc, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


tmp = tempfile.mkdtemp(prefix="tkv-bench-smoke.")
try:
    port = free_port()
    srv = subprocess.Popen([server, "--addr", f"127.0.0.1:{port}", "--status-addr", "127.0.0.1:0",
                            "--data-dir", os.path.join(tmp, "tkv"), "--log-level", "warn"],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "srv.log"), "w"))
    procs.append(srv)
    if not wait_port(port, srv):
        sys.exit("tinykv-server did not start: " + open(os.path.join(tmp, "srv.log")).read()[-2000:])
    addr = f"127.0.0.1:{port}"
    common = ["-a", addr, "-c", "2", "-m", "2", "--value-size", "32"]

    res, _ = run("-w", "load", "-k", "60", *common)
    check(res and res["ops"] == 60 and res["put_ops"] == 60 and res["errors"]["total"] == 0,
          f"load of 60 keys: {res}")

    res, _ = run("-w", "get", "-k", "60", "--warmup", "0", "-D", "1", "-p", str(srv.pid), *common)
    check(res and res["ops"] > 0 and res["get_ops"] == res["ops"] and res["errors"]["total"] == 0,
          f"get of loaded keys: {res}")
    check(res and res["servers"][0]["pid"] == srv.pid and res["servers"][0]["cpu_s"] >= 0,
          f"server CPU reported: {res and res['servers']}")
    check(res and res["lat_us"]["p50"] <= res["lat_us"]["p99"] <= res["lat_us"]["max"],
          f"quantiles ordered: {res and res['lat_us']}")

    # Keys 60..119 were never written: reads of them must count as not_found.
    res, _ = run("-w", "get", "-k", "120", "--warmup", "0", "-D", "1", *common, expect_rc=None)
    check(res and res["errors"].get("not_found", 0) > 0, f"misses counted as not_found: {res}")

    # A value size that differs from the loaded one is caught.
    res, _ = run("-w", "c", "-k", "60", "--warmup", "0", "-D", "0.5", "-a", addr, "--value-size", "33",
                 expect_rc=None)
    check(res and res["errors"].get("bad_value", 0) > 0, f"wrong value size counted: {res}")

    res, _ = run("-w", "scan", "-k", "60", "--scan-len", "5", "--warmup", "0", "-D", "0.5", *common)
    check(res and res["scan_ops"] > 0 and res["rows"] > res["scan_ops"], f"scan rows: {res}")

    res, _ = run("-w", "a", "-k", "60", "--warmup", "0", "-D", "1", "-r", "200", *common)
    check(res and res["mode"] == "open" and res["ops"] > 50 and res["errors"]["total"] == 0,
          f"open loop mix: {res}")

    # tinykv-txn (libtinykv transactions): load keys transactionally (raw and
    # transactional keys never mix), then a 50/50 mix of one-key and four-key
    # transactions. Write conflicts between concurrent transactions are
    # expected and counted apart; nothing else may fail. Until the server has
    # the Kv* commands every transaction fails with UNIMPLEMENTED, which must
    # be what it says.
    res, r = run("-b", "tinykv-txn", "-a", addr, "-w", "put", "--warmup", "0", "-D", "0.5",
                 "-k", "300", "-c", "1", "-m", "1", expect_rc=None)
    if "UNIMPLEMENTED" in r.stderr:
        check(r.returncode == 1 and res and res["ops"] == 0, f"txn without Kv*: {r.stderr[-300:]}")
    else:
        res, r = run("-b", "tinykv-txn", "-a", addr, "-w", "load", "-k", "300", "-c", "2",
                     expect_rc=None)
        check(r.returncode == 0 and res and res["ops"] == 300 and res["errors"]["total"] == 0,
              f"tinykv-txn load: {res} {r.stderr[-300:]}")
        for n in ("1", "4"):
            res, r = run("-b", "tinykv-txn", "-a", addr, "-w", "a", "--txn-keys", n, "-k", "300",
                         "--warmup", "0", "-D", "1", "-c", "2", expect_rc=None)
            errs = dict(res["errors"]) if res else {"no result": 1}
            errs.pop("total", None)
            errs.pop("txn_conflict", None)
            check(r.returncode == 0 and res and res["ops"] > 0 and res["txn_keys"] == int(n)
                  and not errs, f"tinykv-txn {n} key(s): {res} {r.stderr[-300:]}")

    body = os.path.join(tmp, "put.bin")
    _, r = run("-w", "put", "--value-size", "32", "--emit-body", body)
    data = open(body, "rb").read() if os.path.exists(body) else b""
    check(r.stdout.strip() == "/tinykvpb.TinyKv/RawPut", f"emit-body path: {r.stdout!r}")
    check(len(data) > 5 and data[0] == 0 and int.from_bytes(data[1:5], "big") == len(data) - 5,
          f"emit-body framing: {data[:8]!r} len {len(data)}")

    etcd = shutil.which("etcd")
    if etcd:
        cp, pp = free_port(), free_port()
        e = subprocess.Popen([etcd, "--name", "s", "--data-dir", os.path.join(tmp, "etcd"),
                              "--listen-client-urls", f"http://127.0.0.1:{cp}",
                              "--advertise-client-urls", f"http://127.0.0.1:{cp}",
                              "--listen-peer-urls", f"http://127.0.0.1:{pp}",
                              "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                              "--initial-cluster", f"s=http://127.0.0.1:{pp}", "--log-level", "error",
                              "--logger", "zap"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(e)
        if not wait_port(cp, e):
            check(False, "etcd did not start")
        else:
            # Open loop at a low rate: under full load grpc-go (etcd) sends a
            # BDP PING per round trip, which src/rpc's work-in-progress control
            # frame limiter (64/s) treats as a flood; that is reported, not
            # what this smoke test is about.
            ecommon = ["-b", "etcd", "-a", f"127.0.0.1:{cp}", "-c", "2", "-m", "2", "--value-size", "32",
                       "-r", "150"]
            res = None
            for _ in range(50):  # the member needs a moment to elect itself
                res, _ = run("-w", "load", "-k", "40", *ecommon, expect_rc=None)
                if res and res["ops"] == 40:
                    break
                time.sleep(0.2)
            check(res and res["ops"] == 40 and res["errors"]["total"] == 0, f"etcd load: {res}")
            for mode in ("--serializable", "--linearizable"):
                res, _ = run("-w", "get", "-k", "40", "--warmup", "0", "-D", "0.5", mode,
                             "-p", str(e.pid), *ecommon)
                check(res and res["ops"] > 0 and res["errors"]["total"] == 0, f"etcd get {mode}: {res}")
            res, _ = run("-w", "scan", "-k", "40", "--scan-len", "4", "--warmup", "0", "-D", "0.5", *ecommon)
            check(res and res["rows"] > res["scan_ops"] > 0, f"etcd scan: {res}")
            # Closed loop, briefly: errors other than connection resets fail.
            res, _ = run("-w", "put", "-k", "40", "--warmup", "0", "-D", "0.5", *ecommon[:-2], expect_rc=None)
            other = {k: v for k, v in (res or {}).get("errors", {}).items() if k not in ("total", "UNAVAILABLE")}
            check(res and res["put_ops"] > 0 and not other, f"etcd closed-loop put: {res}")
            res, _ = run("-w", "get", "-k", "80", "--warmup", "0", "-D", "0.5", *ecommon, expect_rc=None)
            check(res and res["errors"].get("not_found", 0) > 0, f"etcd misses: {res}")
    else:
        print("etcd not installed: etcd backend not exercised", file=sys.stderr)
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("tinykv-bench smoke: all checks passed")
