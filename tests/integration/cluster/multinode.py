# Workloads and checks for the multi-node cluster tests: libtinykv clients
# (tkv-raw-workload, tkv-txn-workload --pd) recording histories, the checkers
# of tests/lib (tkv-check-lin, tkv-check-si), failover probes, lock scans.
#
# Inputs (ctest sets them): those of clustertest plus TKV_RAW_WORKLOAD,
# TKV_TXN_WORKLOAD, TKV_CHECK_LIN, TKV_CHECK_SI.
import json
import os
import signal
import subprocess
import sys
import time

import grpc

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_here, "..", "workloads"))

import clustertest  # noqa: E402
from clustertest import context, raw_put  # noqa: E402
import tkvtest  # noqa: E402
from history import run_checker  # noqa: E402
import metapb_pb2 as metapb  # noqa: E402

# "A new leader serves within 3 election timeouts" (issue 10 item 7).
ELECTION_TIMEOUT_S = clustertest.ELECTION_TICKS * clustertest.TICK_MS / 1000.0
FAILOVER_BOUND_S = 3 * ELECTION_TIMEOUT_S


def _bin(env):
    b = os.environ.get(env)
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("%s must name the program (got %r)" % (env, b))
    return b


def now():
    return time.monotonic_ns()  # CLOCK_MONOTONIC, as the workload programs


class RawClients:
    """tkv-raw-workload --pd: `workers` libtinykv Raw clients on `keys` hot
    keys, recording to `out` until stop() (SIGTERM: the operations in flight
    complete or time out first)."""

    def __init__(self, cluster, out, client=1, workers=6, keys=4, think_ms=4, prefix="rw",
                 op_timeout_ms=8000, seconds=600):
        self.out = out
        self.proc = subprocess.Popen(
            tkvtest._die_with_parent_prefix() +
            [_bin("TKV_RAW_WORKLOAD"), "--pd", cluster.sched.addr, "--out", out,
             "--client", str(client), "--workers", str(workers), "--keys", str(keys),
             "--think-ms", str(think_ms), "--prefix", prefix, "--seed", str(client),
             "--op-timeout-ms", str(op_timeout_ms), "--duration-ms", str(seconds * 1000)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError("tkv-raw-workload exited %d: %s" %
                                 (self.proc.returncode, err.decode(errors="replace")))


def raw_read_all(cluster, out, keys=4, prefix="rw"):
    """One more client reads every key once (after the faults)."""
    p = subprocess.run(tkvtest._die_with_parent_prefix() +
                       [_bin("TKV_RAW_WORKLOAD"), "--pd", cluster.sched.addr, "--out", out,
                        "--client", "999", "--keys", str(keys), "--prefix", prefix, "--read-all",
                        "--op-timeout-ms", "20000"],
                       capture_output=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("final reads failed: %s" % p.stderr.decode(errors="replace"))


def read_through_store(cluster, store_id, keys, prefix="rw"):
    """The final reads (process 99900) sent straight to store_id's replica
    with the region's context: only served if that replica leads. Returns
    the history records; raises on a region error."""
    recs = []
    with tkvtest.channel(cluster.store_addr(store_id)) as ch:
        for i in range(keys):
            key = b"%s/k%d" % (prefix.encode(), i)
            region, _ = cluster.region(key)
            peer = [p for p in region.peers if p.store_id == store_id][0]
            call = now()
            r = clustertest.raw_get(ch, context(region, peer), key)
            ret = now()
            if r.HasField("region_error") or r.error:
                raise AssertionError("store %d did not serve the read of %r: %s" % (store_id, key, r))
            recs.append({"process": 99900, "f": "get", "key": key.decode(), "call": call, "ret": ret,
                         "type": "ok", "value": None if r.not_found else r.value.decode("latin-1")})
    return recs


def append_history(path, recs):
    with open(path, "a") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def raw_load(cluster, prefix, n, value_bytes, workers=8):
    p = subprocess.run(tkvtest._die_with_parent_prefix() +
                       [_bin("TKV_RAW_WORKLOAD"), "--pd", cluster.sched.addr, "--prefix", prefix,
                        "--load", str(n), "--value-bytes", str(value_bytes),
                        "--workers", str(workers), "--op-timeout-ms", "20000"],
                       capture_output=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError("loading %d keys under %s failed: %s" %
                             (n, prefix, p.stderr.decode(errors="replace")))


def read_history(path):
    recs = []
    with open(path) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass  # a torn last line
    return recs


def summary(recs):
    n = {"ok": 0, "fail": 0, "info": 0}
    for r in recs:
        n[r["type"]] += 1
    return n


def check_linearizable(path):
    """(exit code, report) of tkv-check-lin on the history file."""
    return run_checker("TKV_CHECK_LIN", path)


def lost_acknowledged_writes(recs):
    """For each key, the value its final read (process 99900: the --read-all
    client) returned must come from the last acknowledged write or from a
    write that may have taken effect after it (invoked before it completed,
    or unknown). Returns [(key, why)] for keys where an acknowledged write
    was lost."""
    final = {r["key"]: r for r in recs if r["process"] == 99900 and r["type"] == "ok"}
    lost = []
    for key, fr in sorted(final.items()):
        writes = [r for r in recs if r["key"] == key and r["f"] in ("put", "delete")
                  and r["type"] != "fail"]  # a failed write surely did not take effect
        acked = [w for w in writes if w["type"] == "ok"]
        if not acked:
            continue
        last = max(acked, key=lambda w: w["ret"])
        # writes that could legally be the final state: last, and any write
        # not known to have finished before last was invoked
        later = [w for w in writes if w is last or w["type"] == "info" or w["ret"] > last["call"]]
        got = fr.get("value")
        ok = any((w["f"] == "delete" and got is None) or (w["f"] == "put" and w["value"] == got)
                 for w in later)
        if not ok:
            lost.append((key, "final read %r, last acknowledged %s %r at %d" %
                         (got, last["f"], last.get("value"), last["ret"])))
    return lost


def first_ok_write_after(recs, t):
    """Completion time of the first acknowledged write invoked after t."""
    rets = [r["ret"] for r in recs if r["f"] in ("put", "delete") and r["type"] == "ok" and r["call"] > t]
    return min(rets) if rets else None


def probe_new_leader(cluster, dead_stores, t_kill, key=b"", timeout=30.0):
    """After the leader's node died (at t_kill, now()): RawPut with the
    region's context to every live replica, again and again, until one
    answers OK (it leads and has committed in its term). Returns (seconds
    from t_kill, store_id), or (None, None) after timeout."""
    region, _ = cluster.region(key)
    chans = {}
    try:
        n = 0
        while (now() - t_kill) / 1e9 < timeout:
            for p in region.peers:
                if p.store_id in dead_stores:
                    continue
                ch = chans.get(p.store_id)
                if ch is None:
                    ch = chans[p.store_id] = tkvtest.channel(cluster.store_addr(p.store_id))
                n += 1
                try:
                    r = raw_put(ch, context(region, metapb.Peer(id=p.id, store_id=p.store_id)),
                                b"probe/failover", b"%d" % n, timeout=0.5)
                except grpc.RpcError:
                    continue
                if not r.HasField("region_error") and not r.error:
                    return (now() - t_kill) / 1e9, p.store_id
                if r.region_error.HasField("epoch_not_match"):
                    region, _ = cluster.region(key)
            time.sleep(0.01)
    finally:
        for ch in chans.values():
            ch.close()
    return None, None


class TxnClients:
    """tkv-txn-workload --pd processes (libtinykv 2PC) appending to one file."""

    def __init__(self, cluster, out, workload="bank", accounts=5, balance=100, lock_ttl_ms=300,
                 prefix="wl"):
        self.cluster, self.out, self.workload = cluster, out, workload
        self.accounts, self.balance, self.lock_ttl_ms, self.prefix = accounts, balance, lock_ttl_ms, prefix
        self.procs = []

    def cmd(self, client, *args):
        return (tkvtest._die_with_parent_prefix() +
                [_bin("TKV_TXN_WORKLOAD"), "--pd", self.cluster.sched.addr, "--out", self.out,
                 "--workload", self.workload, "--client", str(client), "--seed", str(client),
                 "--lock-ttl-ms", str(self.lock_ttl_ms), "--accounts", str(self.accounts),
                 "--balance", str(self.balance), "--prefix", self.prefix] + list(args))

    def setup(self):
        p = subprocess.run(self.cmd(1, "--setup"), capture_output=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError("bank setup failed: %s" % p.stderr.decode(errors="replace"))

    def start(self, client, duration_ms, workers=4):
        self.procs.append(subprocess.Popen(
            self.cmd(client, "--workers", str(workers), "--txns", "1000000",
                     "--duration-ms", str(duration_ms)),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    def wait(self, timeout=120):
        errs = []
        for p in self.procs:
            _, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                errs.append(err.decode(errors="replace"))
        self.procs = []
        if errs:
            raise AssertionError("tkv-txn-workload failed: %s" % errs)

    def final_read(self):
        """A reader after everything settled: reads every account (resolving
        any lock left behind) a few times."""
        p = subprocess.run(self.cmd(998, "--workers", "1", "--txns", "3"), capture_output=True,
                           timeout=120)
        if p.returncode != 0:
            raise AssertionError("final reader failed: %s" % p.stderr.decode(errors="replace"))

    def check_bank(self):
        with open(self.out) as f:
            n_reads = sum(1 for line in f if '"balances"' in line)
        rc, report = run_checker("TKV_CHECK_SI", self.out,
                                 ["--bank", "%d:%d" % (self.accounts, self.accounts * self.balance)])
        return rc, report, n_reads


def scan_locks(cluster):
    """Every pair of the lock column family (hex), across all regions."""
    rc, out, err = clustertest.ctl(cluster.sched.addr, "--cf", "lock", "--hex", "raw", "scan", "00",
                                   "--limit", "100000")
    if rc != 0:
        raise AssertionError("scanning the lock CF failed: %s" % err)
    words = out.split()
    return list(zip(words[0::2], words[1::2]))


def encode_bytes(key):
    """TiKV's memcomparable EncodeBytes (how transactional keys are stored and
    how region boundaries compare with them)."""
    out = bytearray()
    for i in range(0, len(key) + 1, 8):
        group = key[i:i + 8]
        pad = 8 - len(group)
        out += group + b"\x00" * pad + bytes([0xFF - pad])
        if pad:
            break
    return bytes(out)
