# A real three-node cluster (issue 10 item 7): tinyscheduler-server and three
# tinykv-server nodes (cores = 1: one store each) on 127.0.0.1, free ports,
# one cluster for the whole file, tests in order:
#   1. region 1 grows to 3 replicas by itself (the scheduler's replica
#      checker, conf change), on 3 distinct stores;
#   2. libtinykv Raw clients (tkv-raw-workload) write while the region
#      leader's node is kill -9ed: a new leader serves within 3 election
#      timeouts (probed with RawPut on every live replica; printed), the
#      clients go on; the node restarts and catches up (the other follower is
#      then killed, so every write needs the restarted replica's ack; at the
#      end the leader is moved to it and it serves the final read of every
#      key); the history is linearizable (tkv-check-lin) and no acknowledged
#      write is lost;
#   3. loading data with a small region size (coprocessor.region-max-size)
#      splits the key space into several regions (one per bank account),
#      every one with 3 replicas on 3 stores (when test 1 saw 3 replicas);
#   4. libtinykv's bank workload (tkv-txn-workload --pd, 2PC) over accounts in
#      different regions (when split works) while a leader's node is kill
#      -9ed (restarted at once while regions have 1 replica): tkv-check-si
#      --bank stays green and no lock is left in the lock CF after a final
#      reader;
#   5. a paused leader (SIGSTOP for 3 election timeouts, then SIGCONT: a
#      zombie that wakes up after a new leader took writes) serves no stale
#      read: the history is linearizable;
#   6. kill -9 of every node at once under Raw clients, restart all: the
#      history stays linearizable, nothing acknowledged is lost, the loaded
#      keys are all there (writes in flight at the kill end with libtinykv's
#      TINYKV_EUNDETERMINED and are "info": may apply at any time, or never;
#      other failed writes are "fail": surely not applied).
# Tests that need a feature not in this source tree yet (conf change, split)
# skip with the reason (clustertest.missing_feature); once the feature is
# there they assert. The negative controls are test_cluster_negative.py.
# TKV_KEEP_LOGS=1 keeps the logs and histories.
import os
import shutil
import signal
import tempfile
import time
import unittest

import clustertest
import multinode as mn
import tkvtest

REPLICAS_TIMEOUT_S = 60
# Leader kills in test 2 (the long variant, label long, sets more).
ROUNDS = int(os.environ.get("TKV_MULTINODE_ROUNDS", "1"))
SPLIT_CONF = """
[coprocessor]
region-max-size = "96KiB"
region-split-size = "64KiB"
"""
ACCOUNTS = 5
FILL_KEYS_PER_ACCOUNT = 160  # x 1 KiB: past region-max-size between two accounts
FILL_VALUE_BYTES = 1024


class MultiNode(tkvtest.TkvTestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tkv-multinode-")
        cls.cluster = clustertest.Cluster(n_nodes=3, conf_extra=SPLIT_CONF).start()
        cls.replicated = None  # None: not checked yet; else the skip reason or ""
        cls.loaded = 0

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            print("kept %s" % cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def need_three_replicas(self):
        """Waits until region 1 has 3 replicas; skips (conf change missing)
        or fails (it is there and did not do it)."""
        cls = type(self)
        if cls.replicated is None:
            t0 = time.monotonic()
            why = clustertest.missing_feature("conf change")
            # without conf change waiting longer cannot help
            timeout = REPLICAS_TIMEOUT_S if why is None else 5

            def three():
                region, leader = self.cluster.region(b"")
                return region is not None and leader is not None and len(region.peers) >= 3
            ok = self.cluster.wait_for("3 replicas", three, timeout)
            region, _ = self.cluster.region(b"")
            n = len(region.peers) if region else 0
            if ok:
                cls.replicated = ""
                print("region %d has %d replicas %.1f s after start" % (region.id, n, time.monotonic() - t0))
            else:
                if why is None:
                    self.fail("region 1 has %d replica(s) after %d s although conf change is "
                              "implemented; scheduler operators: %s" %
                              (n, REPLICAS_TIMEOUT_S, self.cluster.api("operators")))
                cls.replicated = "region 1 has %d replica after %d s: %s" % (n, timeout, why)
        if cls.replicated:
            print("SKIP: " + cls.replicated, flush=True)
            self.skipTest(cls.replicated)

    def test_1_region_1_reaches_three_replicas_on_distinct_stores(self):
        stores = self.cluster.sc.stores()
        ids = [sid for name in self.cluster.names for sid in self.cluster.store_ids(name)]
        self.assertEqual(sorted(stores), sorted(ids), "each node's store must be registered")
        self.need_three_replicas()
        region, leader = self.cluster.region(b"")
        on = [p.store_id for p in region.peers]
        self.assertEqual(len(set(on)), len(on), "two replicas of region %d on one store: %s" % (region.id, on))
        self.assertEqual(len({self.cluster.node_of_store(s) for s in on}), 3,
                         "the replicas must be on 3 different nodes")
        self.assertIn(leader.store_id, on)

    def test_2_leader_kill9_failover_is_fast_linearizable_and_the_node_catches_up(self):
        self.need_three_replicas()
        c = self.cluster
        hist = self.path("failover.jsonl")
        clients = mn.RawClients(c, hist, client=1)
        failovers = []
        try:
            time.sleep(2.0)
            for round_ in range(ROUNDS):
                t_kill, victim = self.kill_leader_and_catch_up(hist, round_, failovers)
                if round_ == 0:
                    t_first_kill = t_kill
        finally:
            clients.stop()
        print("failover times (kill -9 -> a write served by the new leader): %s s" %
              ", ".join("%.3f" % f for f in failovers))
        # The last restarted replica leads (scheduler's transfer-leader,
        # refused while it is still catching up) and serves the final reads
        # itself: they must see the latest writes (tkv-check-lin, lost writes).
        r_store = c.store_ids(victim)[0]
        t0 = time.monotonic()
        moved, last = c.transfer_leader(b"rw/k0", r_store)
        self.assertTrue(moved, "the leader never moved to the restarted %s (store %d); last answer %s" %
                        (victim, r_store, last))
        print("leader moved to the restarted %s in %.2f s; final reads served by it" %
              (victim, time.monotonic() - t0), flush=True)
        mn.append_history(hist, mn.read_through_store(c, r_store, 4))
        recs = mn.read_history(hist)
        n = mn.summary(recs)
        first = mn.first_ok_write_after(recs, t_first_kill)
        print("history: %s; first client write invoked after the first kill acknowledged %.3f s after it" %
              (n, (first - t_first_kill) / 1e9 if first else -1), flush=True)
        self.assertGreater(n["ok"], 300, "too little traffic to check: %s" % n)
        self.assertIsNotNone(first, "no client write acknowledged after the leader's kill")
        rc, report = mn.check_linearizable(hist)
        print(report)
        self.assertEqual(rc, 0, "the history across the leader's kill is not linearizable:\n%s" % report)
        self.assertEqual(mn.lost_acknowledged_writes(recs), [], "acknowledged writes lost")

    def kill_leader_and_catch_up(self, hist, round_, failovers):
        """kill -9 of the leader's node (measured), its restart, and its
        catch-up shown by killing the other follower. Returns (kill time,
        killed node)."""
        c = self.cluster

        def leader_known():
            region, leader = c.region(b"rw/k0")
            return leader is not None and c.nodes[c.node_of_store(leader.store_id)].alive() and (region, leader)
        region, leader = c.wait_for("a live leader", leader_known, 20)
        victim = c.node_of_store(leader.store_id)
        t_kill = mn.now()
        c.kill(victim)
        secs, new_store = mn.probe_new_leader(c, set(c.store_ids(victim)), t_kill, b"rw/k0")
        self.assertIsNotNone(secs, "round %d: no live replica of region %d served a write within 30 s of "
                             "kill -9 of its leader's node %s" % (round_, region.id, victim))
        failovers.append(secs)
        print("round %d failover: kill -9 of %s (leader store %d) -> store %d serves a write after %.3f s "
              "(bound: 3 election timeouts = %.1f s)" %
              (round_, victim, leader.store_id, new_store, secs, mn.FAILOVER_BOUND_S), flush=True)
        self.assertLessEqual(secs, mn.FAILOVER_BOUND_S,
                             "round %d: the new leader served %.3f s after the kill, more than 3 election "
                             "timeouts" % (round_, secs))
        time.sleep(1.5)
        c.restart(victim)
        time.sleep(1.0)
        # Catch-up: the survivor that does not lead is killed; from now on
        # every commit needs the restarted replica's ack (2 of 3), so
        # acknowledged writes show that its log caught up.
        others = [n for n in c.names if n not in (victim, c.node_of_store(new_store))]
        self.assertEqual(len(others), 1)
        t_kill2 = mn.now()
        c.kill(others[0])
        deadline = time.monotonic() + 20
        after = None
        while time.monotonic() < deadline and after is None:
            time.sleep(0.2)
            after = mn.first_ok_write_after(mn.read_history(hist), t_kill2)
        self.assertIsNotNone(after, "round %d: no write acknowledged within 20 s with %s down and the "
                             "restarted %s as the leader's only follower: it did not catch up" %
                             (round_, others[0], victim))
        print("round %d catch-up: with %s down, writes acknowledged again %.3f s later (the restarted %s "
              "acks them)" % (round_, others[0], (after - t_kill2) / 1e9, victim), flush=True)
        time.sleep(1.0)
        c.restart(others[0])
        time.sleep(1.0)
        return t_kill, victim

    def test_3_loading_data_splits_the_key_space_into_regions_on_all_stores(self):
        c = self.cluster
        why = clustertest.missing_feature("split")
        # Filler under "wl/acct<i>/" sorts between the encoded accounts i-1 and
        # i, so the split keys fall between the bank's accounts (test 4).
        for i in range(1, ACCOUNTS):
            mn.raw_load(c, "wl/acct%d" % i, FILL_KEYS_PER_ACCOUNT, FILL_VALUE_BYTES)
        type(self).loaded = FILL_KEYS_PER_ACCOUNT

        def acct_regions():
            return {c.region(mn.encode_bytes(b"wl/acct%d" % i))[0].id for i in range(ACCOUNTS)}
        # splits finish in the background: wait until every account has a region of its own
        t0 = time.monotonic()
        waited = c.wait_for("split", lambda: len(acct_regions()) == ACCOUNTS, 5 if why else 60)
        waited = "the wait %s after %.1f s" % ("succeeded" if waited else "timed out", time.monotonic() - t0)
        regions = c.regions()
        if len(regions) < 2 and why:
            print("SKIP: 1 region after loading %d KiB with region-max-size 96KiB: %s" %
                  ((ACCOUNTS - 1) * FILL_KEYS_PER_ACCOUNT, why), flush=True)
            self.skipTest("1 region after loading: " + why)
        self.assertGreaterEqual(len(regions), ACCOUNTS,
                                "%d KiB with region-max-size 96KiB must make several regions: %s" %
                                ((ACCOUNTS - 1) * FILL_KEYS_PER_ACCOUNT, regions))
        if len(acct_regions()) != ACCOUNTS:
            # What the scheduler answers per account and its whole directory:
            # a count that went down after the wait saw it reach ACCOUNTS
            # means the directory went back to an older, wider region.
            per_acct = [(i, c.region(mn.encode_bytes(b"wl/acct%d" % i))[0]) for i in range(ACCOUNTS)]
            self.fail("the bank's accounts must be in %d regions (filler between them): %s; "
                      "%s; regions: %s" % (ACCOUNTS, waited, [(i, r.id, r.region_epoch.version, r.start_key,
                                                   r.end_key) for i, r in per_acct],
                                       [(r["id"], r.get("epoch"), r.get("start_key"), r.get("end_key"))
                                        for r in c.regions()]))
        if type(self).replicated != "":
            print("%d regions (replicas not checked: %s)" % (len(regions), type(self).replicated))
            return
        stores = set(c.sc.stores())

        def replicated():
            rs = c.regions()
            return all(len({p["store_id"] for p in r["peers"]}) == 3 and r.get("leader") for r in rs) and rs
        rs = c.wait_for("3 replicas of every region", replicated, 60) or c.regions()
        for r in rs:
            on = {p["store_id"] for p in r["peers"]}
            self.assertEqual(on, stores, "region %s is not on every store: %s" % (r["id"], r))

        def leaders_per_store():
            n = {}
            for r in c.regions():
                if r.get("leader"):
                    n[r["leader"]["store_id"]] = n.get(r["leader"]["store_id"], 0) + 1
            return n
        # the scheduler's balance-leader spreads the leaders (transfer-leader)
        c.wait_for("leaders on 2 stores", lambda: len(leaders_per_store()) >= 2, 60, interval=0.5)
        leaders = leaders_per_store()
        print("%d regions, every one on stores %s; leaders per store %s" % (len(rs), sorted(stores), leaders))
        self.assertGreaterEqual(len(leaders), 2, "the leaders of %d regions stay on one store: %s" %
                                (len(rs), leaders))

    def test_4_bank_across_regions_with_leader_kill9_stays_si_and_leaves_no_lock(self):
        # Without 3 replicas (conf change missing) the leader's node is the
        # only replica: it is killed and restarted at once (a crash, not a
        # failover), which still tests 2PC across regions and lock cleanup.
        try:
            self.need_three_replicas()
            replicated = True
        except unittest.SkipTest:
            replicated = False
        c = self.cluster
        out = self.path("bank.jsonl")
        bank = mn.TxnClients(c, out, accounts=ACCOUNTS)
        bank.setup()
        acct_regions = {c.region(mn.encode_bytes(b"wl/acct%d" % i))[0].id for i in range(ACCOUNTS)}
        print("bank accounts in %d region(s)" % len(acct_regions))
        for client in (1, 2, 3):
            bank.start(client, 9000)
        time.sleep(2.5)
        region, leader = c.region(mn.encode_bytes(b"wl/acct0"))
        victim = c.node_of_store(leader.store_id)
        c.kill(victim)
        print("killed %s (leader of region %d%s)" %
              (victim, region.id, "" if replicated else ", its only replica: restarted at once"), flush=True)
        if replicated:
            time.sleep(3.0)
        c.restart(victim)
        bank.wait()
        bank.final_read()
        rc, report, n_reads = bank.check_bank()
        print(report)
        self.assertGreater(n_reads, 20, "too few snapshot reads to check")
        self.assertEqual(rc, 0, "bank invariant broken across the kill:\n%s" % report)
        locks = mn.scan_locks(c)
        self.assertEqual(locks, [], "locks left unresolved after the final reader: %s" % locks[:5])

    def test_5_paused_leader_serves_no_stale_read(self):
        """A zombie leader (RELIABILITY.md S3): the leader's node is stopped
        (SIGSTOP) for 3 election timeouts while clients go on, so the others
        elect a new leader and take writes, then continued: requests the old
        leader got before and after the pause must not be answered from its
        stale state (reads go through ReadIndex)."""
        self.need_three_replicas()
        c = self.cluster
        hist = self.path("pause.jsonl")
        clients = mn.RawClients(c, hist, client=6, prefix="zl")
        try:
            time.sleep(2.0)
            _, leader = c.region(b"zl/k0")
            victim = c.node_of_store(leader.store_id)
            node = c.nodes[victim]
            node.proc.send_signal(signal.SIGSTOP)
            t_stop = mn.now()
            try:
                time.sleep(3 * mn.ELECTION_TIMEOUT_S)
            finally:
                node.proc.send_signal(signal.SIGCONT)
            time.sleep(2.0)
        finally:
            clients.stop()
        mn.raw_read_all(c, hist, prefix="zl")
        recs = mn.read_history(hist)
        n = mn.summary(recs)
        during = mn.first_ok_write_after(recs, t_stop)
        print("paused %s (leader store %d) for %.1f s; history %s; first write invoked after the pause "
              "acknowledged %.3f s after it" % (victim, leader.store_id, 3 * mn.ELECTION_TIMEOUT_S, n,
                                                 (during - t_stop) / 1e9 if during else -1))
        self.assertIsNotNone(during, "no write acknowledged after the leader was paused")
        rc, report = mn.check_linearizable(hist)
        print(report)
        self.assertEqual(rc, 0, "the history across the paused leader is not linearizable:\n%s" % report)

    def test_6_kill9_of_every_node_loses_nothing_acknowledged(self):
        # Writes in flight at the kill end TINYKV_EUNDETERMINED (libtinykv
        # never resends a write that may have been applied: a resent one
        # could apply after a later write) and are recorded "info"; writes
        # refused while the nodes are down are retried.
        c = self.cluster
        hist = self.path("killall.jsonl")
        clients = mn.RawClients(c, hist, client=2, prefix="ka")
        try:
            time.sleep(2.5)
            t_kill = mn.now()
            c.kill_all()
            for name in c.names:
                c.restart(name)
            time.sleep(2.5)
        finally:
            clients.stop()
        mn.raw_read_all(c, hist, prefix="ka")
        recs = mn.read_history(hist)
        n = mn.summary(recs)
        acked_before = sum(1 for r in recs if r["type"] == "ok" and r["f"] != "get" and r["ret"] < t_kill)
        print("history: %s, %d writes acknowledged before the kill" % (n, acked_before))
        self.assertGreater(acked_before, 50, "too few writes acknowledged before the kill to test anything")
        self.assertEqual(mn.lost_acknowledged_writes(recs), [], "acknowledged writes lost by kill -9 of all")
        rc, report = mn.check_linearizable(hist)
        print(report)
        self.assertEqual(rc, 0, "the history across kill -9 of every node is not linearizable:\n%s" % report)
        if type(self).loaded:
            rc, out, err = clustertest.ctl(c.sched.addr, "--hex", "raw", "scan",
                                           b"wl/".hex(), "--limit", "100000")
            self.assertEqual(rc, 0, err)
            keys = out.split()[0::2]
            want = (ACCOUNTS - 1) * type(self).loaded
            self.assertEqual(len([k for k in keys if b"/load/" in bytes.fromhex(k)]), want,
                             "loaded keys lost by kill -9 of all")


if __name__ == "__main__":
    unittest.main(verbosity=2)
