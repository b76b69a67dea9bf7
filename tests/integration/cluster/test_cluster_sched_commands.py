# Scheduler commands on the region heartbeat stream are untrusted input: a
# tinykv-server node (cluster mode, cores = 1) against a scripted scheduler
# (fakesched.py) that answers its heartbeats with commands a real scheduler
# would not send: undecodable bytes, a region the store does not hold,
# another target peer, a stale epoch, a peer without a store, an unknown
# change type (2, a learner in etcd),
# a peer id used on another store, a transfer to a non-member, both
# commands at once, removing the last peer, region 0. Each one must be
# ignored and counted (tinykv_scheduler_commands_total{result="ignored"},
# exactly one per command), the node must keep serving and heartbeating,
# and the region must not change. Then a well-formed AddNode is handed to
# the raftstore exactly once per proposal (started = done + failed; with
# conf change built, the next heartbeat shows the new peer with conf_ver + 1,
# listed in pending_peers: its store does not exist, it never catches up).
import re
import time
import unittest

import clustertest
from clustertest import context, raw_get, raw_put
import eraftpb_pb2 as eraftpb
import fakesched
import metapb_pb2 as metapb
import schedulerpb_pb2 as schedpb
import tkvtest


def commands(port):
    """{(type, result): count} from the node's /metrics."""
    code, body, _ = tkvtest.http_request(port, "/metrics")
    assert code == 200, code
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r'tinykv_scheduler_commands_total\{type="(\w+)",result="(\w+)"\} (\S+)', line)
        if m:
            out[(m.group(1), m.group(2))] = int(float(m.group(3)))
    return out


def total(counts, result):
    return sum(v for (t, r), v in counts.items() if r == result)


class SchedCommands(tkvtest.TkvTestCase):

    @classmethod
    def setUpClass(cls):
        cls.fake = fakesched.FakeScheduler()
        cls.node = None
        try:
            cls.node = clustertest.Node(cls.fake, cores=1)
            cls.node.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.node:
            cls.node.cleanup()
        cls.fake.stop()

    def next_heartbeat(self, timeout=20, pred=lambda hb: True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                hb = self.fake.heartbeats.get(timeout=0.2)
            except Exception:
                continue
            if pred(hb):
                return hb
        self.fail("no region heartbeat from the node in %ds" % timeout)

    def drain(self):
        while not self.fake.heartbeats.empty():
            self.fake.heartbeats.get_nowait()

    def resp(self, hb, **kw):
        r = schedpb.RegionHeartbeatResponse(header=self.fake.header(), region_id=hb.region.id,
                                            region_epoch=hb.region.region_epoch,
                                            target_peer=hb.leader)
        for k, v in kw.items():
            if hasattr(v, "CopyFrom"):
                getattr(r, k).CopyFrom(v)
            else:
                setattr(r, k, v)
        return r

    def wait_counts(self, pred, timeout=20):
        deadline = time.monotonic() + timeout
        c = {}
        while time.monotonic() < deadline:
            c = commands(self.node.status_port)
            if pred(c):
                return c
            time.sleep(0.1)
        return c

    def test_1_bad_commands_are_ignored_and_counted(self):
        hb = self.next_heartbeat(pred=lambda h: h.leader.id != 0)
        region, leader = hb.region, hb.leader
        self.assertEqual(len(region.peers), 1)
        self.assertEqual(leader.store_id, self.node.stores[0][0])
        before = commands(self.node.status_port)
        add = eraftpb.ConfChangeType.Value("AddNode")
        remove = eraftpb.ConfChangeType.Value("RemoveNode")
        new_peer = metapb.Peer(id=9001, store_id=9002)
        stale = metapb.RegionEpoch(conf_ver=region.region_epoch.conf_ver + 1,
                                   version=region.region_epoch.version)
        bad = [
            b"\xff\xff\xff\xff\x0f",  # not protobuf
            self.resp(hb, region_id=region.id + 777,
                      change_peer=schedpb.ChangePeer(peer=new_peer, change_type=add)),
            self.resp(hb, target_peer=metapb.Peer(id=leader.id + 1, store_id=leader.store_id),
                      change_peer=schedpb.ChangePeer(peer=new_peer, change_type=add)),
            self.resp(hb, region_epoch=stale,
                      change_peer=schedpb.ChangePeer(peer=new_peer, change_type=add)),
            self.resp(hb, change_peer=schedpb.ChangePeer(peer=metapb.Peer(id=9003),
                                                         change_type=add)),
            self.resp(hb, change_peer=schedpb.ChangePeer(
                peer=new_peer, change_type=2)),  # not a TinyKV change type
            self.resp(hb, change_peer=schedpb.ChangePeer(
                peer=metapb.Peer(id=leader.id, store_id=9002), change_type=add)),
            self.resp(hb, transfer_leader=schedpb.TransferLeader(peer=new_peer)),
            self.resp(hb, transfer_leader=schedpb.TransferLeader(peer=new_peer),
                      change_peer=schedpb.ChangePeer(peer=new_peer, change_type=add)),
            self.resp(hb, change_peer=schedpb.ChangePeer(peer=leader, change_type=remove)),
            self.resp(hb, region_id=0,
                      change_peer=schedpb.ChangePeer(peer=new_peer, change_type=add)),
        ]
        for m in bad:
            self.fake.send(m)
        want = total(before, "ignored") + len(bad)
        c = self.wait_counts(lambda c: total(c, "ignored") >= want)
        self.assertEqual(total(c, "ignored"), want,
                         "every bad command must be ignored and counted once: %s" % c)
        self.assertEqual(total(c, "started"), total(before, "started"),
                         "a bad command was handed to the raftstore: %s" % c)
        self.assertEqual(c.get(("malformed", "ignored"), 0) -
                         before.get(("malformed", "ignored"), 0), 2,
                         "undecodable bytes and a two-command response are malformed: %s" % c)
        self.assertIsNone(self.node.proc.poll(), "the node died on a bad heartbeat response")
        # still serving and reporting the same region
        with tkvtest.channel(self.node.store_addr(leader.store_id)) as ch:
            self.assert_ok(raw_put(ch, context(region, leader), b"after/bad", b"ok"))
            r = self.assert_ok(raw_get(ch, context(region, leader), b"after/bad"))
            self.assertEqual(r.value, b"ok")
        self.drain()
        hb2 = self.next_heartbeat()
        self.assertEqual(hb2.region, region, "a bad command changed the region")

    def test_2_add_node_is_proposed_once(self):
        hb = self.next_heartbeat(pred=lambda h: h.leader.id != 0)
        before = commands(self.node.status_port)
        add = schedpb.ChangePeer(peer=metapb.Peer(id=9101, store_id=9102),
                                 change_type=eraftpb.ConfChangeType.Value("AddNode"))
        for _ in range(3):  # a scheduler resends the step on every heartbeat
            self.fake.send(self.resp(hb, change_peer=add))
        key_s, key_d, key_f = [("change_peer", r) for r in ("started", "done", "failed")]

        def settled(c):
            started = c.get(key_s, 0) - before.get(key_s, 0)
            ended = (c.get(key_d, 0) - before.get(key_d, 0) +
                     c.get(key_f, 0) - before.get(key_f, 0))
            return started >= 1 and started == ended
        c = self.wait_counts(settled)
        self.assertTrue(settled(c), "an AddNode must be proposed and answered: %s" % c)
        done = c.get(key_d, 0) - before.get(key_d, 0)
        if done:
            self.assertEqual(c.get(key_s, 0) - before.get(key_s, 0), 1,
                             "a resent AddNode was proposed twice: %s" % c)
            hb2 = self.next_heartbeat(pred=lambda h: len(h.region.peers) == 2)
            self.assertIn(metapb.Peer(id=9101, store_id=9102), list(hb2.region.peers))
            self.assertEqual(hb2.region.region_epoch.conf_ver,
                             hb.region.region_epoch.conf_ver + 1)
            # store 9102 does not exist: the new peer never catches up, so the
            # leader reports it pending (the scheduler's AddPeer step waits)
            self.assertEqual(list(hb2.pending_peers), [metapb.Peer(id=9101, store_id=9102)],
                             hb2)


if __name__ == "__main__":
    unittest.main()
