# High availability of tinyscheduler-server (issue 9 item 7): three real
# members (--initial-cluster) on 127.0.0.1 with ports picked at run time.
#   - they elect one leader; followers answer every method but GetMembers
#     with gRPC UNAVAILABLE "not leader", GetMembers names the leader;
#   - kill -9 of the leader under concurrent Tso and AllocID load from
#     clients that find the new leader through GetMembers: no id twice, no
#     timestamp twice, and real-time order holds (a timestamp or id handed
#     out after another one was received is greater), the new leader knows
#     the stores, the GC safe point and the config;
#   - the failover time (kill to the first Tso answered by the new leader)
#     is measured and printed, and must stay within a few election timeouts;
#   - the killed member restarts and rejoins: a second kill -9 of the new
#     leader leaves a quorum only with the restarted member, and service
#     resumes again with the same guarantees;
#   - the members' wall clocks differ (libfaketime: s1 3 s and s2 6 s behind
#     s0, when installed), so a leader change to a slower clock only keeps
#     timestamps increasing because the new leader starts above the
#     replicated TSO bound;
#   - SIGTERM stops every member with exit 0.
# TKV_KEEP_LOGS=1 keeps the data dirs and logs.
import bisect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

import schedtest
from schedtest import metapb, pb, pb_grpc, ts

# A few election timeouts (0.5 .. 1 s each), with room for ASan on a loaded
# 2-core machine.
FAILOVER_LIMIT_S = float(os.environ.get("TKV_HA_FAILOVER_LIMIT_S", "10"))

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
CLOCK_OFFSETS_S = [0, -3, -6]


def clock_env(offset_s):
    """The server's wall clock offset_s seconds off (monotonic clocks stay
    real), or nothing without libfaketime."""
    if not offset_s or not os.path.exists(LIBFAKETIME):
        return {}
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "%+d" % offset_s,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}


class Member:
    def __init__(self, base, name, client_port, peer_port, clock_offset_s=0):
        self.name = name
        self.env = dict(os.environ, **clock_env(clock_offset_s))
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = os.path.join(base, name)
        self.base = base
        self.proc = None
        self.n_starts = 0
        self.log_path = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.client_port

    def start(self, initial_cluster):
        self.n_starts += 1
        self.log_path = os.path.join(self.base, "%s-%d.log" % (self.name, self.n_starts))
        log = open(self.log_path, "wb")
        args = (schedtest._die_with_parent_prefix() +
                [schedtest.sched_bin(), "--name", self.name,
                 "--client-urls", "http://" + self.addr,
                 "--peer-urls", "http://127.0.0.1:%d" % self.peer_port,
                 "--initial-cluster", initial_cluster, "--data-dir", self.data_dir,
                 "--status-addr", "127.0.0.1:0"])  # never the default 2381
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def term(self):
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "ignored SIGTERM"

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except (OSError, TypeError):
            return "(no log)"


def members_of(addr, timeout=2):
    with schedtest.channel(addr) as ch:
        return pb_grpc.SchedulerStub(ch).GetMembers(pb.GetMembersRequest(), timeout=timeout)


class LeaderClient:
    """What libtinykv's scheduler client does: ask any member for the
    leader (GetMembers), call the leader, and on UNAVAILABLE or a broken
    connection look for the leader again."""

    def __init__(self, addrs, cluster_id):
        self.addrs = list(addrs)
        self.h = pb.RequestHeader(cluster_id=cluster_id)
        self.addr = None
        self.ch = None
        self.stub = None

    def close(self):
        if self.ch:
            self.ch.close()
        self.ch = self.stub = None

    def find_leader(self, deadline):
        while time.monotonic() < deadline:
            for a in self.addrs:
                try:
                    r = members_of(a, timeout=1)
                except grpc.RpcError:
                    continue
                if r.HasField("leader") and r.leader.client_urls:
                    url = r.leader.client_urls[0].replace("http://", "")
                    if url != self.addr or self.stub is None:
                        self.close()
                        self.addr = url
                        self.ch = schedtest.channel(url)
                        self.stub = pb_grpc.SchedulerStub(self.ch)
                    return
            time.sleep(0.05)
        raise AssertionError("no scheduler leader found")

    def call(self, fn, deadline):
        """fn(stub, header) with leader switching; returns (result, addr)."""
        while True:
            if self.stub is None:
                self.find_leader(deadline)
            try:
                return fn(self.stub, self.h), self.addr
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.CANCELLED):
                    raise
                if time.monotonic() > deadline:
                    raise
                self.close()
                time.sleep(0.02)


def tso_batch(stub, h):
    out = []
    for r in stub.Tso(iter([pb.TsoRequest(header=h, count=c) for c in (1, 3, 7)]), timeout=3):
        assert r.count in (1, 3, 7), r
        out.append((ts(r.timestamp.physical, r.timestamp.logical), r.count))
    assert len(out) == 3, out
    return out


def alloc_id(stub, h):
    r = stub.AllocID(pb.AllocIDRequest(header=h), timeout=3)
    assert not r.header.HasField("error"), r
    return r.id


class HA(unittest.TestCase):

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="tkv-sched-ha-")
        ports = set()
        while len(ports) < 6:
            ports.add(schedtest.free_port())
        ports = sorted(ports)
        self.members = [Member(self.base, "s%d" % i, ports[i], ports[3 + i], CLOCK_OFFSETS_S[i])
                        for i in range(3)]
        self.ic = ",".join("%s=http://127.0.0.1:%d" % (m.name, m.peer_port) for m in self.members)

    def tearDown(self):
        for m in self.members:
            m.kill9()
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            sys.stderr.write("kept %s\n" % self.base)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    def logs(self):
        return "\n".join("--- %s\n%s" % (m.name, m.log_tail()) for m in self.members)

    def wait_leader(self, timeout=30, alive=None):
        """The member every live member names as leader, serving AllocID."""
        alive = alive or [m for m in self.members if m.alive()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = set()
            for m in alive:
                if not m.alive():
                    self.fail("%s exited with %s:\n%s" % (m.name, m.proc.returncode, self.logs()))
                try:
                    r = members_of(m.addr, timeout=1)
                    names.add(r.leader.name if r.HasField("leader") else None)
                except grpc.RpcError:
                    names.add(None)
            if len(names) == 1 and None not in names:
                leader = [m for m in alive if m.name in names][0]
                return leader
            time.sleep(0.05)
        self.fail("members did not agree on a leader in %ds:\n%s" % (timeout, self.logs()))

    def run_load(self, addrs, cluster_id, stop, rec, errors):
        def tso_worker(k):
            cl = LeaderClient(addrs, cluster_id)
            last = 0
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    out, addr = cl.call(tso_batch, time.monotonic() + 30)
                    t1 = time.monotonic()
                    for t, c in out:
                        if t - c + 1 <= last:
                            errors.append("tso thread %d: %d (count %d) after %d from %s" %
                                          (k, t, c, last, addr))
                        last = t
                        rec["tso"].append((t0, t1, t - c + 1, t, addr))
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append("tso thread %d: %r" % (k, e))
            finally:
                cl.close()

        def id_worker(k):
            cl = LeaderClient(addrs, cluster_id)
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    i, addr = cl.call(alloc_id, time.monotonic() + 30)
                    rec["id"].append((t0, time.monotonic(), i, i, addr))
            except Exception as e:  # noqa: BLE001
                errors.append("id thread %d: %r" % (k, e))
            finally:
                cl.close()

        threads = [threading.Thread(target=tso_worker, args=(k,)) for k in range(3)]
        threads += [threading.Thread(target=id_worker, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        return threads

    def check_unique_and_ordered(self, what, recs):
        """No value twice (ranges [lo, hi] never overlap) and real-time
        order: a value obtained by a call that started after another call
        had returned is greater than everything that call got."""
        ranges = sorted((lo, hi) for _, _, lo, hi, _ in recs)
        for (a_lo, a_hi), (b_lo, b_hi) in zip(ranges, ranges[1:]):
            self.assertLess(a_hi, b_lo, "%s handed out twice: [%d,%d] and [%d,%d]" %
                            (what, a_lo, a_hi, b_lo, b_hi))
        by_recv = sorted(recs, key=lambda r: r[1])
        recv_times = [r[1] for r in by_recv]
        prefix_max, m = [], -1
        for r in by_recv:
            m = max(m, r[3])
            prefix_max.append(m)
        for t0, _, lo, _, addr in recs:
            k = bisect.bisect_left(recv_times, t0)  # calls that returned before t0
            if k:
                self.assertGreater(lo, prefix_max[k - 1],
                                   "%s went back: %d from %s after %d was handed out" %
                                   (what, lo, addr, prefix_max[k - 1]))

    def failover_round(self, leader, cluster_id, label):
        addrs = [m.addr for m in self.members]
        stop = threading.Event()
        rec = {"tso": [], "id": []}
        errors = []
        threads = self.run_load(addrs, cluster_id, stop, rec, errors)
        time.sleep(1.5)
        n_before = len(rec["tso"])
        self.assertGreater(n_before, 0, "no Tso answered before the kill:\n" + self.logs())
        t_kill = time.monotonic()
        leader.kill9()
        # Load continues until the new leader has served for a while.
        deadline = t_kill + FAILOVER_LIMIT_S + 20
        first_new = None
        while time.monotonic() < deadline and not errors:
            after = [r for r in list(rec["tso"]) if r[0] >= t_kill and r[4] != leader.addr]
            if after:
                first_new = min(r[1] for r in after)
                if time.monotonic() - first_new > 1.5:
                    break
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [], "load errors:\n%s\n%s" % ("\n".join(errors[:10]), self.logs()))
        self.assertIsNotNone(first_new, "no Tso served by a new leader after the kill:\n" + self.logs())
        failover = first_new - t_kill
        ids_after = [r for r in rec["id"] if r[0] >= t_kill]
        self.assertTrue(ids_after, "no AllocID served after the kill")
        self.check_unique_and_ordered("timestamp", rec["tso"])
        self.check_unique_and_ordered("id", rec["id"])
        print("%s: %s -> %s" % (label, leader.name,
                                [m.name for m in self.members if m.addr == rec["tso"][-1][4]]))
        print("%s: failover (kill -9 of the leader to the first Tso answered by the new leader) "
              "= %.0f ms; %d Tso batches, %d ids, %d after the kill" %
              (label, failover * 1000, len(rec["tso"]), len(rec["id"]), len(ids_after)),
              flush=True)
        self.assertLess(failover, FAILOVER_LIMIT_S, "failover took %.1f s" % failover)
        return failover

    def test_three_members(self):
        for m in self.members:
            m.start(self.ic)
        leader = self.wait_leader()
        followers = [m for m in self.members if m is not leader]
        r = members_of(leader.addr)
        cluster_id = r.header.cluster_id
        self.assertNotEqual(cluster_id, 0)
        self.assertEqual(sorted(m.name for m in r.members), ["s0", "s1", "s2"])
        self.assertEqual(list(r.leader.client_urls), ["http://" + leader.addr])
        h = pb.RequestHeader(cluster_id=cluster_id)

        # Followers: GetMembers names the leader, the rest is "not leader".
        for f in followers:
            r = members_of(f.addr)
            self.assertEqual(r.leader.name, leader.name)
            self.assertEqual(r.header.cluster_id, cluster_id)
            with schedtest.channel(f.addr) as ch:
                stub = pb_grpc.SchedulerStub(ch)
                for call in (lambda: stub.AllocID(pb.AllocIDRequest(header=h), timeout=5),
                             lambda: stub.IsBootstrapped(pb.IsBootstrappedRequest(header=h),
                                                         timeout=5),
                             lambda: list(stub.Tso(iter([pb.TsoRequest(header=h, count=1)]),
                                                   timeout=5))):
                    with self.assertRaises(grpc.RpcError) as cm:
                        call()
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
                    self.assertEqual(cm.exception.details(), "not leader")

        # Replicated state: bootstrap, stores, GC safe point, config.
        with schedtest.channel(leader.addr) as ch:
            stub = pb_grpc.SchedulerStub(ch)
            r = stub.Bootstrap(pb.BootstrapRequest(
                header=h, store=metapb.Store(id=1, address="127.0.0.1:20160")), timeout=10)
            self.assertFalse(r.header.HasField("error"), r)
            for sid in (2, 3):
                r = stub.PutStore(pb.PutStoreRequest(
                    header=h, store=metapb.Store(id=sid, address="127.0.0.1:2016%d" % sid)),
                    timeout=10)
                self.assertFalse(r.header.HasField("error"), r)
            stub.UpdateGCSafePoint(pb.UpdateGCSafePointRequest(header=h, safe_point=4242),
                                   timeout=10)
            stub.PutClusterConfig(pb.PutClusterConfigRequest(
                header=h, cluster=metapb.Cluster(id=cluster_id, max_peer_count=5)), timeout=10)

        f1 = self.failover_round(leader, cluster_id, "round 1")
        new_leader = self.wait_leader(alive=followers)
        self.assertIsNot(new_leader, leader)
        with schedtest.channel(new_leader.addr) as ch:
            stub = pb_grpc.SchedulerStub(ch)
            r = stub.GetAllStores(pb.GetAllStoresRequest(header=h), timeout=10)
            self.assertEqual(sorted(s.id for s in r.stores), [1, 2, 3])
            r = stub.GetGCSafePoint(pb.GetGCSafePointRequest(header=h), timeout=10)
            self.assertEqual(r.safe_point, 4242)
            r = stub.GetClusterConfig(pb.GetClusterConfigRequest(header=h), timeout=10)
            self.assertEqual(r.cluster.max_peer_count, 5)

        # The killed member restarts and rejoins as a follower.
        leader.start(self.ic)
        deadline = time.monotonic() + 30
        while True:
            try:
                r = members_of(leader.addr)
                if r.HasField("leader") and r.leader.name == new_leader.name:
                    break
            except grpc.RpcError:
                pass
            self.assertLess(time.monotonic(), deadline,
                            "restarted member does not know the leader:\n" + self.logs())
            time.sleep(0.1)

        # Round 2: the quorum left after this kill needs the restarted member.
        f2 = self.failover_round(new_leader, cluster_id, "round 2")
        third = self.wait_leader(alive=[m for m in self.members if m is not new_leader])
        with schedtest.channel(third.addr) as ch:
            stub = pb_grpc.SchedulerStub(ch)
            r = stub.GetAllStores(pb.GetAllStoresRequest(header=h), timeout=10)
            self.assertEqual(sorted(s.id for s in r.stores), [1, 2, 3])
        print("failover: round 1 %.0f ms, round 2 %.0f ms" % (f1 * 1000, f2 * 1000), flush=True)

        for m in self.members:
            if m.alive():
                self.assertEqual(m.term(), 0, "%s did not stop cleanly:\n%s" % (m.name, m.log_tail()))


if __name__ == "__main__":
    unittest.main(verbosity=2)
