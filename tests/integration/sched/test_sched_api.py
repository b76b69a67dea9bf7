# The schedulerpb.Scheduler service of the real binary: TinyKV's store
# start-up sequence, header checks, every method, the scheduler client
# behaviours of TinyKV's scheduler/client tests (TSO, TSO race, GetRegion,
# GetPrevRegion, ScanRegions, GetRegionByID, GetStore, GC safe point),
# TestConcurrentHandleRegion3C and bad input.
import threading
import unittest

import grpc

import schedtest
from schedtest import metapb, pb, ts

RT = schedtest.RPC_TIMEOUT


class SchedulerApi(schedtest.SchedTestCase):

    @classmethod
    def setUpClass(cls):
        # One scheduler for the read-mostly cases; tests that need a fresh
        # cluster start their own.
        cls.sched = schedtest.Scheduler()
        cls.sched.start()
        cls.c = schedtest.Client(cls.sched)
        c = cls.c
        cls.store_ids = [c.alloc_id() for _ in range(3)]
        r = c.bootstrap(cls.store_ids[0], "127.0.0.1:30001", node="n1")
        assert not r.header.HasField("error"), r
        for i, sid in enumerate(cls.store_ids[1:]):
            r = c.put_store(sid, "127.0.0.1:3000%d" % (i + 2), node="n%d" % (i + 2))
            assert not r.header.HasField("error"), r

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.sched.cleanup()

    # ---- start-up sequence and header checks ----

    def test_store_startup_sequence_on_a_fresh_cluster(self):
        s = self.new_sched()
        s.start()
        c = self.client(s)
        m = c.stub.GetMembers(pb.GetMembersRequest(), timeout=RT)
        self.assertNotEqual(m.header.cluster_id, 0)
        self.assertEqual(m.leader.client_urls[0], "http://" + s.addr)
        self.assertEqual(len(m.members), 1)
        r = c.stub.IsBootstrapped(pb.IsBootstrappedRequest(header=c.h), timeout=RT)
        self.assertFalse(r.bootstrapped)
        # Before bootstrap: NOT_BOOTSTRAPPED in the header, not a gRPC error.
        r = c.stub.GetRegion(pb.GetRegionRequest(header=c.h, region_key=b""), timeout=RT)
        self.assertEqual(r.header.error.type, pb.NOT_BOOTSTRAPPED)
        r = c.stub.PutStore(pb.PutStoreRequest(header=c.h, store=metapb.Store(id=9, address="a:1")),
                            timeout=RT)
        self.assertEqual(r.header.error.type, pb.NOT_BOOTSTRAPPED)
        hb = c.heartbeat_req(2, b"", b"", [(3, 1)], 1)
        resps = list(c.stub.RegionHeartbeat(iter([hb]), timeout=RT))
        self.assertEqual(resps[0].header.error.type, pb.NOT_BOOTSTRAPPED)
        sid, rid, pid = c.alloc_id(), c.alloc_id(), c.alloc_id()
        self.assertEqual(len({sid, rid, pid}), 3)
        r = c.bootstrap(sid, "127.0.0.1:1")
        self.assertFalse(r.header.HasField("error"), r)
        r = c.bootstrap(sid, "127.0.0.1:1")
        self.assertEqual(r.header.error.type, pb.ALREADY_BOOTSTRAPPED)
        self.assertTrue(c.stub.IsBootstrapped(pb.IsBootstrappedRequest(header=c.h), timeout=RT).bootstrapped)
        cfg = c.stub.GetClusterConfig(pb.GetClusterConfigRequest(header=c.h), timeout=RT)
        self.assertEqual(cfg.cluster.id, c.cluster_id)
        self.assertEqual(cfg.cluster.max_peer_count, 3)
        # The first region is learnt from its first heartbeat.
        self.assertFalse(c.stub.GetRegion(pb.GetRegionRequest(header=c.h), timeout=RT).HasField("region"))
        resps = list(c.stub.RegionHeartbeat(iter([c.heartbeat_req(rid, b"", b"", [(pid, sid)], sid)]),
                                            timeout=RT))
        r = c.stub.GetRegion(pb.GetRegionRequest(header=c.h, region_key=b"any"), timeout=RT)
        self.assertEqual(r.region.id, rid)
        self.assertEqual(r.leader.id, pid)

    def test_cluster_id_mismatch_is_failed_precondition(self):
        c = self.c
        wrong = pb.RequestHeader(cluster_id=c.cluster_id + 1)
        for fn in [lambda h: c.stub.AllocID(pb.AllocIDRequest(header=h), timeout=RT),
                   lambda h: c.stub.IsBootstrapped(pb.IsBootstrappedRequest(header=h), timeout=RT),
                   lambda h: c.stub.GetStore(pb.GetStoreRequest(header=h, store_id=1), timeout=RT),
                   lambda h: c.stub.GetRegion(pb.GetRegionRequest(header=h), timeout=RT),
                   lambda h: c.stub.GetGCSafePoint(pb.GetGCSafePointRequest(header=h), timeout=RT)]:
            e = self.assert_code(lambda: fn(wrong), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("mismatch cluster id", e.details())
            # A missing header is cluster id 0: also a mismatch.
            self.assert_code(lambda: fn(None), grpc.StatusCode.FAILED_PRECONDITION)
        self.assert_code(lambda: list(c.stub.Tso(iter([pb.TsoRequest(header=wrong, count=1)]), timeout=RT)),
                         grpc.StatusCode.FAILED_PRECONDITION)
        # GetMembers needs no header.
        c.stub.GetMembers(pb.GetMembersRequest(), timeout=RT)

    # ---- TSO (scheduler/client TestTSO, TestTSORace; tests TestTsoWithoutCount) ----

    def test_tso_batches_strictly_increasing(self):
        out = self.c.tso([1, 10, 100, 1000, 1, 5] * 20)
        last = 0
        for phys, logical, count in out:
            t = ts(phys, logical)
            self.assertGreaterEqual(logical, count)
            self.assertGreater(t - count + 1, last, "TSO batches overlap or go back")
            last = t

    def test_tso_race_many_streams_unique(self):
        got = []
        lock = threading.Lock()

        def worker():
            c = schedtest.Client(self.sched)
            try:
                mine = []
                for phys, logical, count in c.tso([3] * 200):
                    mine.extend(ts(phys, logical - i) for i in range(count))
                with lock:
                    got.append(mine)
            finally:
                c.close()

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        allts = [t for m in got for t in m]
        self.assertEqual(len(allts), 6 * 200 * 3)
        self.assertEqual(len(set(allts)), len(allts), "a timestamp was handed out twice")
        for m in got:
            batches = [m[i:i + 3] for i in range(0, len(m), 3)]
            highs = [b[0] for b in batches]
            self.assertEqual(highs, sorted(highs), "a stream's timestamps went back")

    def test_tso_without_count_is_an_error(self):
        e = self.assert_code(lambda: self.c.tso([0]), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("count", e.details())
        self.assert_code(lambda: self.c.tso([1 << 20]), grpc.StatusCode.INVALID_ARGUMENT)

    # ---- stores ----

    def test_get_store_and_all_stores(self):
        c = self.c
        r = c.stub.GetStore(pb.GetStoreRequest(header=c.h, store_id=self.store_ids[1]), timeout=RT)
        self.assertEqual(r.store.address, "127.0.0.1:30002")
        self.assertEqual([(l.key, l.value) for l in r.store.labels], [("node", "n2")])
        r = c.stub.GetStore(pb.GetStoreRequest(header=c.h, store_id=999999), timeout=RT)
        self.assertTrue(r.header.HasField("error"))
        r = c.stub.GetAllStores(pb.GetAllStoresRequest(header=c.h), timeout=RT)
        self.assertTrue(set(self.store_ids) <= {s.id for s in r.stores})
        r = c.stub.StoreHeartbeat(pb.StoreHeartbeatRequest(
            header=c.h, stats=pb.StoreStats(store_id=self.store_ids[0], capacity=100, available=40,
                                            region_count=3)), timeout=RT)
        self.assertFalse(r.header.HasField("error"))
        r = c.stub.GetStore(pb.GetStoreRequest(header=c.h, store_id=self.store_ids[0]), timeout=RT)
        self.assertEqual(r.stats.capacity, 100)
        self.assertEqual(r.stats.available, 40)
        r = c.stub.StoreHeartbeat(pb.StoreHeartbeatRequest(
            header=c.h, stats=pb.StoreStats(store_id=424242)), timeout=RT)
        self.assertTrue(r.header.HasField("error"), "heartbeat of an unknown store")

    def test_put_store_rejects_bad_stores(self):
        c = self.c
        r = c.put_store(0, "127.0.0.1:1")
        self.assertTrue(r.header.HasField("error"), "store id 0")
        r = c.put_store(123456, "127.0.0.1:30001")  # address of store_ids[0]
        self.assertTrue(r.header.HasField("error"), "duplicated address")
        r = c.put_store(123457, "")
        self.assertTrue(r.header.HasField("error"), "empty address")
        self.assert_code(lambda: c.stub.PutStore(pb.PutStoreRequest(header=c.h), timeout=RT),
                         grpc.StatusCode.INVALID_ARGUMENT)

    # ---- regions (TestGetRegion, TestGetPrevRegion, TestScanRegions, TestGetRegionByID) ----

    def test_regions_lookups(self):
        c = self.c
        s = self.store_ids
        base = 1000
        keys = [b"", b"r10", b"r20", b"r30", b"r40", b""]
        reqs = []
        for i in range(5):
            rid = base + i
            reqs.append(c.heartbeat_req(rid, keys[i], keys[i + 1],
                                        [(rid * 10 + j, s[j]) for j in range(3)], s[i % 3]))
        resps = list(c.stub.RegionHeartbeat(iter(reqs), timeout=RT))
        self.assertFalse(any(r.header.HasField("error") for r in resps), resps)
        r = c.stub.GetRegion(pb.GetRegionRequest(header=c.h, region_key=b"r15"), timeout=RT)
        self.assertEqual(r.region.id, base + 1)
        self.assertEqual(r.leader.store_id, s[1])
        self.assertEqual(len(r.region.peers), 3)
        r = c.stub.GetPrevRegion(pb.GetRegionRequest(header=c.h, region_key=b"r15"), timeout=RT)
        self.assertEqual(r.region.id, base)
        r = c.stub.GetPrevRegion(pb.GetRegionRequest(header=c.h, region_key=b"a"), timeout=RT)
        self.assertFalse(r.HasField("region"))
        r = c.stub.GetRegionByID(pb.GetRegionByIDRequest(header=c.h, region_id=base + 3), timeout=RT)
        self.assertEqual(r.region.start_key, b"r30")
        r = c.stub.GetRegionByID(pb.GetRegionByIDRequest(header=c.h, region_id=77777777), timeout=RT)
        self.assertFalse(r.HasField("region"))
        r = c.stub.ScanRegions(pb.ScanRegionsRequest(header=c.h, start_key=b"r15", limit=2), timeout=RT)
        self.assertEqual([x.id for x in r.regions], [base + 1, base + 2])
        self.assertEqual([x.store_id for x in r.leaders], [s[1], s[2]])
        r = c.stub.ScanRegions(pb.ScanRegionsRequest(header=c.h, start_key=b"", end_key=b"r30"), timeout=RT)
        self.assertEqual([x.id for x in r.regions], [base, base + 1, base + 2])
        r = c.stub.ScanRegions(pb.ScanRegionsRequest(header=c.h, start_key=b"r35", limit=0), timeout=RT)
        self.assertEqual([x.id for x in r.regions], [base + 3, base + 4])
        # AskSplit at the region's start key allocates fresh ids.
        region = c.stub.GetRegionByID(pb.GetRegionByIDRequest(header=c.h, region_id=base + 2), timeout=RT).region
        r = c.stub.AskSplit(pb.AskSplitRequest(header=c.h, region=region), timeout=RT)
        self.assertFalse(r.header.HasField("error"), r)
        self.assertEqual(len(r.new_peer_ids), 3)
        self.assertEqual(len({r.new_region_id, *r.new_peer_ids}), 4)
        stale = metapb.Region()
        stale.CopyFrom(region)
        stale.region_epoch.version = 0
        r = c.stub.AskSplit(pb.AskSplitRequest(header=c.h, region=stale), timeout=RT)
        self.assertTrue(r.header.HasField("error"), "AskSplit with an old epoch")
        # A stale heartbeat is answered with an error on the stream.
        old = c.heartbeat_req(base + 2, b"r20", b"r30", [(region.peers[0].id, s[0])], s[0], conf_ver=0)
        resps = list(c.stub.RegionHeartbeat(iter([old]), timeout=RT))
        self.assertTrue(resps and resps[0].header.HasField("error"))
        self.assertEqual(c.stub.GetRegionByID(pb.GetRegionByIDRequest(header=c.h, region_id=base + 2),
                                              timeout=RT).region.region_epoch.conf_ver, 1)

    # ---- GC safe point (TestUpdateGCSafePoint), config, scatter, operator ----

    def test_gc_safe_point_monotonic(self):
        c = self.c
        for sp, want in [(100, 100), (50, 100), (200, 200)]:
            r = c.stub.UpdateGCSafePoint(pb.UpdateGCSafePointRequest(header=c.h, safe_point=sp), timeout=RT)
            self.assertEqual(r.new_safe_point, want)
            r = c.stub.GetGCSafePoint(pb.GetGCSafePointRequest(header=c.h), timeout=RT)
            self.assertEqual(r.safe_point, want)

    def test_config_scatter_operator(self):
        c = self.c
        r = c.stub.PutClusterConfig(pb.PutClusterConfigRequest(
            header=c.h, cluster=metapb.Cluster(id=c.cluster_id, max_peer_count=3)), timeout=RT)
        self.assertFalse(r.header.HasField("error"))
        self.assert_code(lambda: c.stub.PutClusterConfig(pb.PutClusterConfigRequest(
            header=c.h, cluster=metapb.Cluster(id=c.cluster_id, max_peer_count=99)), timeout=RT),
            grpc.StatusCode.INVALID_ARGUMENT)
        r = c.stub.ScatterRegion(pb.ScatterRegionRequest(header=c.h, region_id=1), timeout=RT)
        self.assertEqual(r.header.cluster_id, c.cluster_id)
        r = c.stub.GetOperator(pb.GetOperatorRequest(header=c.h, region_id=55555555), timeout=RT)
        self.assertEqual(r.header.error.type, pb.REGION_NOT_FOUND)

    # ---- TestConcurrentHandleRegion3C ----

    def test_concurrent_handle_region_3c(self):
        """3 stores with bound heartbeat streams, then 2,000 concurrent region
        heartbeats on them (TinyKV sends them from 2,000 goroutines over the
        three streams): every one is handled without an error and the
        store streams stay usable."""
        c = self.c
        s = self.store_ids
        n = 2000
        errors = []
        lock = threading.Lock()
        per_store = {sid: [] for sid in s}
        for i in range(n):
            rid = 500000 + i
            leader = s[i % 3]
            key = b"ch/%06d" % i
            end = b"ch/%06d" % (i + 1)
            per_store[leader].append(c.heartbeat_req(rid, key, end, [(rid * 10 + j, s[j]) for j in range(3)],
                                                     leader))

        def stream(sid):
            cl = schedtest.Client(self.sched)
            try:
                for r in cl.stub.RegionHeartbeat(iter(per_store[sid]), timeout=120):
                    if r.header.HasField("error"):
                        with lock:
                            errors.append(r.header.error.message)
            except grpc.RpcError as e:
                with lock:
                    errors.append(str(e))
            finally:
                cl.close()

        threads = [threading.Thread(target=stream, args=(sid,)) for sid in s]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        r = c.stub.ScanRegions(pb.ScanRegionsRequest(header=c.h, start_key=b"ch/", end_key=b"ch0",
                                                     limit=0), timeout=RT)
        self.assertEqual(len(r.regions), n, "not every concurrent heartbeat was recorded")

    # ---- bad input (item 8) ----

    def test_garbage_requests_get_invalid_argument(self):
        c = self.c
        for method in ["AllocID", "GetStore", "PutStore", "GetRegion", "AskSplit", "Bootstrap"]:
            f = c.ch.unary_unary("/schedulerpb.Scheduler/" + method,
                                 request_serializer=lambda b: b, response_deserializer=lambda b: b)
            self.assert_code(lambda: f(b"\xff\xff\xff\xff", timeout=RT), grpc.StatusCode.INVALID_ARGUMENT)
        # Heartbeats that make no sense are answered with an error, nothing cached.
        s = self.store_ids
        bad = [
            c.heartbeat_req(0, b"x", b"y", [(1, s[0])], s[0]),                 # region id 0
            c.heartbeat_req(9001, b"y", b"x", [(9002, s[0])], s[0]),           # inverted range
            c.heartbeat_req(9003, b"x", b"y", [(9004, s[0]), (9005, s[0])], s[0]),  # two peers, one store
            c.heartbeat_req(9006, b"x", b"y", [(0, s[0])], s[0]),              # peer id 0
        ]
        resps = list(c.stub.RegionHeartbeat(iter(bad), timeout=RT))
        self.assertEqual(len(resps), len(bad))
        self.assertTrue(all(r.header.HasField("error") for r in resps), resps)
        no_peers = pb.RegionHeartbeatRequest(header=c.h, region=metapb.Region(id=9007),
                                             leader=metapb.Peer(id=1, store_id=s[0]))
        resps = list(c.stub.RegionHeartbeat(iter([no_peers]), timeout=RT))
        self.assertTrue(resps[0].header.HasField("error"))
        for rid in [9001, 9003, 9006, 9007]:
            r = c.stub.GetRegionByID(pb.GetRegionByIDRequest(header=c.h, region_id=rid), timeout=RT)
            self.assertFalse(r.HasField("region"), "a malformed heartbeat was cached")
        # A heartbeat from an unknown store closes the stream with an error.
        self.assert_code(lambda: list(c.stub.RegionHeartbeat(iter([
            c.heartbeat_req(9008, b"x", b"y", [(9009, 777777)], 777777)]), timeout=RT)),
            grpc.StatusCode.UNKNOWN)
        # Still healthy.
        self.assertTrue(c.alloc_id() > 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
