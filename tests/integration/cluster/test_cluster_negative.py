# Negative controls of test_cluster_multinode.py: the same three-node cluster
# and libtinykv workloads with a bug injected into every node (failpoints,
# TKV_FAILPOINTS in the nodes' environment; sanitized builds only), and the
# checks that must catch it:
#   raftstore/ack_before_apply  a write is answered as soon as it is
#       proposed, before it is committed or applied: the Raw history (kill -9
#       of the leader's node when the region has 3 replicas, then kill -9 of
#       every node) must FAIL tkv-check-lin (stale reads, lost acknowledged
#       writes);
#   txn/read_ignores_locks  KvGet/KvScan do not report locks: the bank
#       workload (with the leader's node killed when replicated) must FAIL
#       tkv-check-si --bank.
# Each test prints what the checker reported.
import os
import shutil
import tempfile
import time
import unittest

import clustertest
import multinode as mn
import tkvtest


class Negative(tkvtest.TkvTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tkv-negative-")
        self.cluster = None

    def tearDown(self):
        if self.cluster:
            self.cluster.cleanup()
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            print("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, failpoint):
        self.cluster = clustertest.Cluster(n_nodes=3, env={"TKV_FAILPOINTS": failpoint}).start()
        # use the replicas if the scheduler grows region 1 (conf change)
        self.cluster.wait_for("3 replicas", self.replicated,
                              30 if clustertest.missing_feature("conf change") is None else 2)
        return self.cluster

    def replicated(self):
        region, leader = self.cluster.region(b"")
        return region is not None and leader is not None and len(region.peers) >= 3

    def kill_leader_if_replicated(self, key):
        c = self.cluster
        if not self.replicated():
            return None
        _, leader = c.region(key)
        victim = c.node_of_store(leader.store_id)
        c.kill(victim)
        return victim

    def test_lin_checker_catches_writes_acknowledged_before_apply(self):
        c = self.start("raftstore/ack_before_apply")
        hist = os.path.join(self.tmp, "lin.jsonl")
        clients = mn.RawClients(c, hist, client=3, prefix="neg")
        try:
            time.sleep(2.0)
            victim = self.kill_leader_if_replicated(b"neg/k0")
            if victim:
                time.sleep(2.0)
                c.restart(victim)
            time.sleep(1.0)
            c.kill_all()
            for name in c.names:
                c.restart(name)
            time.sleep(1.5)
        finally:
            clients.stop()
        mn.raw_read_all(c, hist, prefix="neg")
        recs = mn.read_history(hist)
        rc, report = mn.check_linearizable(hist)
        lost = mn.lost_acknowledged_writes(recs)
        print("with raftstore/ack_before_apply (leader killed: %s): %s; tkv-check-lin exit %d:\n%s\n"
              "acknowledged writes lost per the final reads: %s" %
              (victim, mn.summary(recs), rc, report, lost or "none"))
        self.assertEqual(rc, 1, "tkv-check-lin missed writes acknowledged before they were applied:\n%s" % report)

    def test_si_checker_catches_reads_that_ignore_locks(self):
        c = self.start("txn/read_ignores_locks")
        bank = mn.TxnClients(c, os.path.join(self.tmp, "bank.jsonl"))
        bank.setup()
        for client in (1, 2, 3):
            bank.start(client, 5000)
        time.sleep(2.0)
        victim = self.kill_leader_if_replicated(mn.encode_bytes(b"wl/acct0"))
        if victim:
            time.sleep(2.0)
            c.restart(victim)
        bank.wait()
        rc, report, n_reads = bank.check_bank()
        print("with txn/read_ignores_locks (leader killed: %s): %d snapshot reads; tkv-check-si exit %d:\n%s" %
              (victim, n_reads, rc, report))
        self.assertEqual(rc, 1, "the bank checker missed reads that ignore locks:\n%s" % report)


if __name__ == "__main__":
    unittest.main(verbosity=2)
