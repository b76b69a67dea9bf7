# libtinykv routing through a scheduler (tinykv-ctl --pd, tinykv-bench --pd)
# before the real scheduler exists: a python3-grpcio fake scheduler on a free
# port that splits the key space into two regions at "m" (both led by store 1
# = the real standalone tinykv-server) answers GetMembers, GetRegion and
# GetStore. Checks: writes and reads reach the server through the routing,
# a scan crosses the region boundary without duplicates (the standalone
# server ignores region ranges; the client keeps each region's own keys),
# the region cache spares repeated GetRegion calls, and the bench's --pd path
# runs without errors.
import json
import os
import subprocess
import threading
from concurrent import futures

import tkvtest
from tkvtest import raw_get, raw_put

import grpc  # noqa: E402
import metapb_pb2 as metapb  # noqa: E402
import schedulerpb_pb2 as schedulerpb  # noqa: E402
import schedulerpb_pb2_grpc as schedulerpb_grpc  # noqa: E402


class FakeScheduler(schedulerpb_grpc.SchedulerServicer):
    def __init__(self, store_addr):
        self.store_addr = store_addr
        self.calls = {}
        self.lock = threading.Lock()
        self.port = 0

    def count(self, name):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def header(self):
        return schedulerpb.ResponseHeader(cluster_id=42)

    def GetMembers(self, request, context):
        self.count("GetMembers")
        leader = schedulerpb.Member(name="fake", member_id=1,
                                    client_urls=["http://127.0.0.1:%d" % self.port])
        return schedulerpb.GetMembersResponse(header=self.header(), members=[leader], leader=leader)

    def GetRegion(self, request, context):
        self.count("GetRegion")
        if request.header.cluster_id != 42:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "wrong cluster id")
        epoch = metapb.RegionEpoch(conf_ver=1, version=2)
        if request.region_key < b"m":
            region = metapb.Region(id=1, start_key=b"", end_key=b"m", region_epoch=epoch,
                                   peers=[metapb.Peer(id=11, store_id=1)])
        else:
            region = metapb.Region(id=2, start_key=b"m", end_key=b"", region_epoch=epoch,
                                   peers=[metapb.Peer(id=21, store_id=1)])
        return schedulerpb.GetRegionResponse(header=self.header(), region=region,
                                             leader=region.peers[0])

    def GetStore(self, request, context):
        self.count("GetStore")
        if request.store_id != 1:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such store")
        return schedulerpb.GetStoreResponse(
            header=self.header(), store=metapb.Store(id=1, address=self.store_addr))


class ClientPd(tkvtest.ServerTestCase):
    cores = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = FakeScheduler(cls.srv.addr)
        cls.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        schedulerpb_grpc.add_SchedulerServicer_to_server(cls.fake, cls.grpc_server)
        cls.fake.port = cls.grpc_server.add_insecure_port("127.0.0.1:0")
        cls.grpc_server.start()
        cls.pd = "127.0.0.1:%d" % cls.fake.port

    @classmethod
    def tearDownClass(cls):
        cls.grpc_server.stop(None)
        super().tearDownClass()

    def ctl(self, *args):
        p = subprocess.run([tkvtest.ctl_bin(), "--pd", self.pd] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def ok(self, *args):
        rc, out, err = self.ctl(*args)
        self.assertEqual(rc, 0, "tinykv-ctl --pd %s failed: %s" % (" ".join(args), err))
        return out

    def test_raw_through_the_scheduler_and_scan_across_regions(self):
        # Keys on both sides of "m".
        for k, v in ((b"a1", b"left-1"), (b"b2", b"left-2"), (b"n1", b"right-1"), (b"z2", b"right-2")):
            self.assertEqual(self.ok("raw", "put", k.decode(), v.decode()), "OK\n")
            self.assertEqual(raw_get(self.ch, k).value, v, "the put must reach the server")
        self.assertEqual(self.ok("raw", "get", "n1"), "right-1\n")
        raw_put(self.ch, b"zz", b"direct")
        self.assertEqual(self.ok("raw", "get", "zz"), "direct\n")
        out = self.ok("raw", "scan", "", "--limit", "100000")
        keys = [line.split("\t")[0] for line in out.splitlines()]
        self.assertEqual(keys, sorted(set(keys)), "no duplicates, ascending: %s" % keys)
        for k in ("a1", "b2", "n1", "z2", "zz"):
            self.assertIn(k, keys, "scan across the region boundary lost %s" % k)
        self.ok("raw", "delete", "n1")
        rc, out, err = self.ctl("raw", "get", "n1")
        self.assertEqual(rc, 3, err)

    def test_scheduler_down_fails_within_the_deadline(self):
        dead = "127.0.0.1:%d" % tkvtest.free_port()
        p = subprocess.run([tkvtest.ctl_bin(), "--pd", dead, "--timeout", "1", "raw", "get", "k"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("deadline", p.stderr.decode())

    def test_bench_pd_put_then_get(self):
        bench = os.environ.get("TKV_BENCH_BIN")
        if not bench:
            self.skipTest("TKV_BENCH_BIN not set")
        before = dict(self.fake.calls)
        for wl in ("load", "get"):
            p = subprocess.run([bench, "--pd", self.pd, "-w", wl, "-k", "200", "--warmup", "0",
                                "-D", "1", "-c", "2", "-m", "4", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            self.assertEqual(p.returncode, 0, "bench %s: %s" % (wl, p.stderr.decode()))
            res = json.loads(p.stdout.decode().strip().splitlines()[-1])
            self.assertGreater(res["ops"], 0)
            self.assertEqual(res["errors"]["total"], 0, "bench %s errors: %s" % (wl, res["errors"]))
        # Keys "user..." all live in region 2: the cache answers after the first lookup.
        regions = self.fake.calls.get("GetRegion", 0) - before.get("GetRegion", 0)
        self.assertLessEqual(regions, 4, "GetRegion per operation instead of a cache: %d" % regions)


if __name__ == "__main__":
    tkvtest.main()
