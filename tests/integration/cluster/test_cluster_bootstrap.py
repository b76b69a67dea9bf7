# Who owns the first region when nodes start together (TinyKV 2.15,
# ClearPrepareBootstrap), against a scripted scheduler (fakesched.py) so each
# outcome is forced, not left to timing:
#  - lost race: IsBootstrapped says no, the node prepares a first region,
#    Bootstrap answers ALREADY_BOOTSTRAPPED and the scheduler does not know
#    the node's store (Bootstrap registers the winner's): the node discards
#    its prepared region (engine and raft log wiped, the ident forgets the
#    ids), registers and serves with no region; a restart keeps it so;
#  - crash between preparing and Bootstrap (Bootstrap fails, the node
#    exits), then another node bootstraps: at restart the prepared region is
#    discarded (the scheduler does not know the store);
#  - won: the node's Bootstrap went through; a restart keeps its region
#    (the scheduler knows the store) and heartbeats it.
# Without the discard, a node that lost the race either refused to start or
# served a second region ["", "") overlapping the cluster's.
import os
import time
import unittest

import clustertest
import fakesched
import schedulerpb_pb2 as schedpb
import tkvtest

ALREADY = schedpb.ErrorType.Value("ALREADY_BOOTSTRAPPED")


def ident(node):
    with open(os.path.join(node.data_dir, "store-0", "ident")) as f:
        return dict(line.split() for line in f if line.strip())


def log_text(node):
    with open(node.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


class Bootstrap(tkvtest.TkvTestCase):

    def setUp(self):
        self.fake = fakesched.FakeScheduler()
        self.node = clustertest.Node(self.fake, cores=1)

    def tearDown(self):
        self.node.cleanup()
        self.fake.stop()

    def no_region_heartbeat(self, secs=1.5):
        time.sleep(secs)
        hbs = []
        while not self.fake.heartbeats.empty():
            hbs.append(self.fake.heartbeats.get_nowait())
        self.assertEqual(hbs, [], "a node without a region heartbeats one")

    def heartbeat(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                hb = self.fake.heartbeats.get(timeout=0.2)
            except Exception:
                continue
            if hb.leader.id:
                return hb
        self.fail("no region heartbeat in %ds" % timeout)

    def test_lost_race_discards_the_prepared_region(self):
        self.fake.bootstrap_error = ALREADY
        self.node.start()
        self.assertIn("discarding the first region this store prepared", log_text(self.node))
        self.assertNotIn("bootstrap_region", ident(self.node), "the ident still names it")
        sid = self.node.stores[0][0]
        self.assertIn(sid, [s.id for s in self.fake.put_stores], "the node did not register")
        self.no_region_heartbeat()
        self.fake.bootstrapped = True
        self.node.stop()
        self.node.start()
        self.assertEqual(self.node.stores[0][0], sid)
        self.assertIn('["store serving"] [store=0] [store_id=%d] [port=%d] [regions=0]' %
                      (sid, self.node.stores[0][1]), log_text(self.node))
        self.no_region_heartbeat()

    def test_crash_before_bootstrap_then_another_node_won(self):
        self.fake.bootstrap_error = schedpb.ErrorType.Value("UNKNOWN")
        try:
            self.node.start()
        except AssertionError:
            pass  # start-up fails: Bootstrap refused
        self.assertIsNotNone(self.node.proc.wait(timeout=60))
        self.assertIn("bootstrap_region", ident(self.node), "the prepared ids were not persisted")
        self.fake.bootstrap_error = None
        self.fake.bootstrapped = True  # somebody else's Bootstrap
        self.node.start()
        self.assertIn("discarding the first region this store prepared", log_text(self.node))
        self.assertNotIn("bootstrap_region", ident(self.node))
        self.no_region_heartbeat()

    def test_won_keeps_its_region_across_restart(self):
        self.node.start()
        hb = self.heartbeat()
        self.assertEqual((hb.region.start_key, hb.region.end_key), (b"", b""))
        self.node.stop()
        self.node.start()
        self.assertNotIn("discarding", log_text(self.node))
        hb2 = self.heartbeat()
        self.assertEqual(hb2.region.id, hb.region.id, "the node lost the cluster's first region")


if __name__ == "__main__":
    unittest.main()
