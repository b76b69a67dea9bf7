# A first RawPut/RawGet throughput figure (issue 2 asks for one; the real
# harness is perf/): P client processes, each with its own gRPC connection
# and T threads, run closed-loop for D seconds against a running server.
#   TKV_PROTO_PY=build/release/proto-py /usr/bin/python3 bench_raw.py 127.0.0.1:20160 [procs] [threads] [secs]
# Not a ctest test (numbers, not pass/fail).
import multiprocessing as mp
import os
import sys
import threading
import time

import tkvtest


def worker(addr, pid, threads, secs, op, out_q):
    ch = tkvtest.channel(addr)  # its own connection
    counts = [0] * threads
    errors = [0]
    deadline = time.monotonic() + secs

    def loop(t):
        i = 0
        while time.monotonic() < deadline:
            k = b"bench/%d/%d/%d" % (pid, t, i % 1000)
            try:
                if op == "put":
                    r = tkvtest.raw_put(ch, k, b"v" * 100)
                else:
                    r = tkvtest.raw_get(ch, k)
                if r.error:
                    errors[0] += 1
            except Exception:  # noqa: BLE001
                errors[0] += 1
            counts[t] += 1
            i += 1

    ts = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ch.close()
    out_q.put((sum(counts), errors[0]))


def run(addr, procs, threads, secs, op):
    q = mp.Queue()
    ps = [mp.Process(target=worker, args=(addr, p, threads, secs, op, q)) for p in range(procs)]
    t0 = time.monotonic()
    for p in ps:
        p.start()
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
    el = time.monotonic() - t0
    n = sum(r[0] for r in res)
    e = sum(r[1] for r in res)
    print("%-4s %d procs x %d threads, %.1fs: %d ops, %.0f ops/s, %d errors" % (op, procs, threads, el, n, n / el, e))


if __name__ == "__main__":
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:20160"
    procs = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 5
    mp.set_start_method("fork")
    run(addr, procs, threads, secs, "put")
    run(addr, procs, threads, secs, "get")
