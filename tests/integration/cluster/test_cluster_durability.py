# kill -9 of a cluster-mode node under 8 concurrent writers (TinyKV-style
# region context, the raft path: WiredTiger's log is off, durability is the
# raft log's group commit plus replay from the last engine checkpoint).
# Each writer owns a few keys and overwrites them with increasing versions;
# after a restart on the same data dirs, for every key: the value is one a
# writer actually sent (never a value that was never written), and its
# version is at least the last acknowledged one (no acknowledged write
# lost). The restart keeps the store ids. Done twice (the second kill right
# after recovery, while writers run again).
import os
import threading
import time
import unittest

import grpc

import clustertest
from clustertest import context, raw_get, raw_put
import tkvtest

N_WRITERS = 8
KEYS_PER_WRITER = 4


class ClusterDurability(tkvtest.TkvTestCase):

    def run_writers(self, node, sc, seconds, state):
        """8 writers for `seconds`, then kill -9 (still writing)."""
        region, leader = sc.region_with_leader(b"")
        addr = node.store_addr(leader.store_id)
        ctx = context(region, leader)
        stop = threading.Event()
        errors = []

        def writer(w):
            with tkvtest.channel(addr) as ch:
                while not stop.is_set():
                    for j in range(KEYS_PER_WRITER):
                        k = b"dur/%d/%d" % (w, j)
                        ver = state["next"][k]
                        state["next"][k] = ver + 1
                        v = b"%s#%08d" % (k, ver)
                        state["sent"][k].add(v)
                        try:
                            r = raw_put(ch, ctx, k, v, timeout=10)
                        except grpc.RpcError:
                            return  # the node died under us: not acknowledged
                        if r.HasField("region_error") or r.error:
                            errors.append((k, str(r)))
                            return
                        state["acked"][k] = ver
                        state["n_acked"] += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(N_WRITERS)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        node.kill()
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(errors, [], "writes refused before the kill")

    def serving_leader(self, node, sc, key, timeout=30.0):
        """(region, leader) once the leader the scheduler names answers a
        read: right after a restart the scheduler still names the leader of
        before the kill, and the restarted peer answers NotLeader until it
        has won its election again."""
        deadline = time.monotonic() + timeout
        while True:
            region, leader = sc.region_with_leader(b"")
            with tkvtest.channel(node.store_addr(leader.store_id)) as ch:
                r = raw_get(ch, context(region, leader), key)
            if not (r.HasField("region_error") and r.region_error.HasField("not_leader")):
                return region, leader
            if time.monotonic() > deadline:
                self.fail("no leader serves %r %.0fs after the restart: %s" %
                          (key, timeout, r.region_error))
            time.sleep(0.2)

    def check(self, node, sc, state):
        region, leader = self.serving_leader(node, sc, next(iter(state["sent"])))
        with tkvtest.channel(node.store_addr(leader.store_id)) as ch:
            lost, invented = [], []
            for k in state["sent"]:
                r = self.assert_ok(raw_get(ch, context(region, leader), k))
                if r.not_found:
                    if k in state["acked"]:
                        lost.append((k, "missing"))
                    continue
                if r.value not in state["sent"][k]:
                    invented.append((k, r.value))
                    continue
                ver = int(r.value.rsplit(b"#", 1)[1])
                if ver < state["acked"].get(k, -1):
                    lost.append((k, "version %d < acknowledged %d" % (ver, state["acked"][k])))
            self.assertEqual(invented, [], "values that were never written")
            self.assertEqual(lost, [], "acknowledged writes lost after kill -9 (%d acknowledged)" %
                             state["n_acked"])

    def test_kill9_under_8_writers_loses_no_acknowledged_write(self):
        sched = clustertest.schedtest.Scheduler()
        node = sc = None
        try:
            sched.start()
            node = clustertest.Node(sched, cores=2)
            node.start()
            sc = clustertest.SchedClient(sched)
            keys = [b"dur/%d/%d" % (w, j) for w in range(N_WRITERS) for j in range(KEYS_PER_WRITER)]
            state = {"next": {k: 0 for k in keys}, "sent": {k: set() for k in keys},
                     "acked": {}, "n_acked": 0}
            ids = [s for s, _ in node.stores]
            for round_ in range(2):
                before = state["n_acked"]
                self.run_writers(node, sc, 3.0 if round_ == 0 else 1.5, state)
                self.assertGreater(state["n_acked"], before + 50,
                                   "round %d: too few writes acknowledged to test anything" % round_)
                print("round %d: %d writes acknowledged before kill -9" %
                      (round_, state["n_acked"] - before), flush=True)
                node.start()
                self.assertEqual([s for s, _ in node.stores], ids,
                                 "the store ids changed across kill -9")
                self.check(node, sc, state)
            self.assertEqual(len(sc.stores()), 2, "restarts registered extra stores")
            self.assertEqual(node.stop(), 0)
        finally:
            if sc:
                sc.close()
            if node:
                node.cleanup()
            sched.cleanup()



class ClusterIdent(tkvtest.TkvTestCase):
    """The store ident (data dir) is untrusted input: a damaged one or one of
    another cluster stops start-up with a clear error, never a new store id
    over old data."""

    def start_fails(self, node, what):
        with self.assertRaises(AssertionError) as e:
            node.start()
        self.assertIn("exited with 1", str(e.exception), what)
        with open(node.log_path, "rb") as f:
            return f.read()

    def test_damaged_or_foreign_ident_refuses_to_start(self):
        sched = clustertest.schedtest.Scheduler()
        other = clustertest.schedtest.Scheduler()
        node = None
        try:
            sched.start()
            node = clustertest.Node(sched, cores=1)
            node.start()
            self.assertEqual(node.stop(), 0)
            ident = os.path.join(node.data_dir, "store-0", "ident")
            with open(ident, "rb") as f:
                good = f.read()
            self.assertIn(b"store_id ", good)
            with open(ident, "wb") as f:
                f.write(b"cluster_id 12x\nstore_id 1\n")
            log = self.start_fails(node, "a malformed ident must stop start-up")
            self.assertIn(b"malformed store ident", log)
            with open(ident, "wb") as f:
                f.write(good)
            # the same data dir pointed at another cluster's scheduler
            other.start()
            node.extra_args[node.extra_args.index("--pd") + 1] = other.addr
            log = self.start_fails(node, "another cluster's store must not start")
            self.assertIn(b"this store belongs to another cluster", log)
        finally:
            if node:
                node.cleanup()
            sched.cleanup()
            other.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
