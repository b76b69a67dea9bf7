# The store transport in real processes: tinyscheduler-server, one
# tinykv-server node in cluster mode (2 stores) and a fake third store (a
# python gRPC server registered in the scheduler with PutStore). The fake
# store sends a RaftMessage (a vote for a new region) on the node's Raft
# stream; the node's raftstore creates an uninitialized peer and answers,
# and the answer travels back over the node's own outgoing transport: the
# fake store's address is resolved through the scheduler (GetStore), a Raft
# stream is opened to it, and the vote response arrives there. Also: a
# snapshot whose checksum does not match is refused with DATA_LOSS and the
# node serves on. Skipped (with the reason) while cluster mode answers the
# Raft/Snapshot streams UNIMPLEMENTED, i.e. before the transport is wired.
import queue
import time
import unittest
from concurrent import futures

import grpc

import clustertest
from clustertest import context, raw_get, raw_put
import eraftpb_pb2 as eraftpb
import metapb_pb2 as metapb
import raft_serverpb_pb2 as rspb
import schedulerpb_pb2 as schedpb
import tkvtest


class FakeStore:
    """A TinyKv server that only takes Raft streams and records them."""

    def __init__(self):
        self.got = queue.Queue()
        handlers = {
            "Raft": grpc.stream_unary_rpc_method_handler(
                self._raft, request_deserializer=rspb.RaftMessage.FromString,
                response_serializer=rspb.Done.SerializeToString),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tinykvpb.TinyKv", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _raft(self, it, ctx):
        for m in it:
            self.got.put(m)
        return rspb.Done()

    def stop(self):
        self.server.stop(0)


class ClusterTransport(tkvtest.TkvTestCase):

    @classmethod
    def setUpClass(cls):
        cls.sched = clustertest.schedtest.Scheduler()
        cls.node = None
        cls.fake = None
        try:
            cls.sched.start()
            cls.node = clustertest.Node(cls.sched, cores=2)
            cls.node.start()
            cls.sc = clustertest.SchedClient(cls.sched)
            cls.fake = FakeStore()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.fake:
            cls.fake.stop()
        if getattr(cls, "sc", None):
            cls.sc.close()
        if cls.node:
            cls.node.cleanup()
        cls.sched.cleanup()

    def alloc(self):
        return self.sc.stub.AllocID(schedpb.AllocIDRequest(header=self.sc.h), timeout=20).id

    def raft_send(self, store_port, msgs):
        ch = tkvtest.channel("127.0.0.1:%d" % store_port)
        try:
            raft = ch.stream_unary(tkvtest.SERVICE + "Raft",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=rspb.Done.FromString)
            try:
                return raft(iter(msgs), timeout=20)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self.skipTest("this tinykv-server does not serve the Raft stream in cluster "
                                  "mode (transport not wired): %s" % e.details())
                raise
        finally:
            ch.close()

    def test_vote_answered_over_the_nodes_own_transport(self):
        fake_id = self.alloc()
        r = self.sc.stub.PutStore(schedpb.PutStoreRequest(
            header=self.sc.h,
            store=metapb.Store(id=fake_id, address="127.0.0.1:%d" % self.fake.port)), timeout=20)
        self.assertFalse(r.header.HasField("error"), "PutStore of the fake store: %s" % r)
        store_id, port = self.node.stores[0]
        region_id, fake_peer, node_peer = self.alloc(), self.alloc(), self.alloc()
        vote = rspb.RaftMessage(
            region_id=region_id,
            from_peer=metapb.Peer(id=fake_peer, store_id=fake_id),
            to_peer=metapb.Peer(id=node_peer, store_id=store_id),
            region_epoch=metapb.RegionEpoch(conf_ver=1, version=1),
            message=eraftpb.Message(msg_type=eraftpb.MsgRequestVote, to=node_peer, **{"from": fake_peer},
                                    term=7, log_term=5, index=5))
        self.raft_send(port, [vote])
        deadline = time.monotonic() + 20
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                m = self.fake.got.get(timeout=0.5)
            except queue.Empty:
                continue
            if m.region_id == region_id:
                answer = m
        self.assertIsNotNone(answer, "no raft message came back to the fake store (the node must "
                             "resolve it with GetStore and open a Raft stream to it); node log:\n%s"
                             % self.node.log_tail())
        self.assertEqual(answer.message.msg_type, eraftpb.MsgRequestVoteResponse)
        self.assertEqual(answer.to_peer.store_id, fake_id)
        self.assertEqual(answer.to_peer.id, fake_peer)
        self.assertEqual(answer.from_peer.id, node_peer)
        self.assertEqual(answer.from_peer.store_id, store_id)
        self.assertEqual(getattr(answer.message, "from"), node_peer)
        self.assertEqual(answer.message.term, 7)
        self.assertTrue(answer.HasField("region_epoch"), "every RaftMessage carries the epoch")

    def test_snapshot_with_a_bad_checksum_is_refused(self):
        store_id, port = self.node.stores[1]
        payload = bytes(range(256)) * 4096  # 1 MiB
        meta = rspb.RaftSnapshotData(file_size=len(payload), meta=rspb.SnapshotMeta(
            cf_files=[rspb.SnapshotCFFile(cf="tinykv", size=len(payload), checksum=12345)]))
        msg = rspb.RaftMessage(
            region_id=self.alloc(),
            from_peer=metapb.Peer(id=self.alloc(), store_id=store_id + 1000),
            to_peer=metapb.Peer(id=self.alloc(), store_id=store_id),
            region_epoch=metapb.RegionEpoch(conf_ver=1, version=1))
        msg.message.msg_type = eraftpb.MsgSnapshot
        msg.message.to = msg.to_peer.id
        setattr(msg.message, "from", msg.from_peer.id)
        msg.message.term = 3
        msg.message.snapshot.data = meta.SerializeToString()
        msg.message.snapshot.metadata.index = 10
        msg.message.snapshot.metadata.term = 3
        chunks = [rspb.SnapshotChunk(message=msg), rspb.SnapshotChunk(data=payload)]
        ch = tkvtest.channel("127.0.0.1:%d" % port)
        try:
            snap = ch.stream_unary(tkvtest.SERVICE + "Snapshot",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=rspb.Done.FromString)
            with self.assertRaises(grpc.RpcError) as cm:
                snap(iter(chunks), timeout=20)
            if cm.exception.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.skipTest("this tinykv-server does not serve the Snapshot stream in cluster "
                              "mode (transport not wired): %s" % cm.exception.details())
            self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS,
                             "a checksum mismatch must be refused: %s" % cm.exception)
        finally:
            ch.close()
        # the node serves on
        region, leader = self.sc.region_with_leader(b"")
        ch = tkvtest.channel(self.node.store_addr(leader.store_id))
        try:
            raw_put(ch, context(region, leader), b"after-bad-snapshot", b"v")
            self.assertEqual(raw_get(ch, context(region, leader), b"after-bad-snapshot").value, b"v")
        finally:
            ch.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
