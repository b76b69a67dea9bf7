# A scripted stand-in for tinyscheduler-server (python gRPC, port 0): just
# enough of schedulerpb.Scheduler for a tinykv-server node to start, register
# and heartbeat (GetMembers, AllocID, IsBootstrapped, Bootstrap, GetRegion,
# PutStore, GetStore, StoreHeartbeat, AskSplit, RegionHeartbeat). The test
# reads the node's region heartbeats from `heartbeats` and pushes whatever
# it wants the node to receive on the heartbeat stream (protobuf messages or
# raw bytes) with send(): that is how a test feeds the node bad or hostile
# heartbeat responses a real scheduler would never send.
import queue
import threading
from concurrent import futures

import grpc

import schedulerpb_pb2 as schedpb


def _ser(m):
    return m if isinstance(m, (bytes, bytearray)) else m.SerializeToString()


class FakeScheduler:
    CLUSTER_ID = 0x5ca1ab1e

    def __init__(self):
        self.lock = threading.Lock()
        self.next_id = 1000
        self.bootstrapped = False
        # Bootstrap's answer: None = success, else a schedulerpb.ErrorType
        # (ALREADY_BOOTSTRAPPED: another node won the race).
        self.bootstrap_error = None
        self.put_stores = []
        self.stores = {}
        self.heartbeats = queue.Queue()
        self.ask_splits = queue.Queue()
        self.out = queue.Queue()
        self.stopped = threading.Event()
        u = grpc.unary_unary_rpc_method_handler
        handlers = {
            "GetMembers": u(self._get_members, schedpb.GetMembersRequest.FromString, _ser),
            "AllocID": u(self._alloc_id, schedpb.AllocIDRequest.FromString, _ser),
            "IsBootstrapped": u(self._is_bootstrapped, schedpb.IsBootstrappedRequest.FromString,
                                _ser),
            "Bootstrap": u(self._bootstrap, schedpb.BootstrapRequest.FromString, _ser),
            "GetRegion": u(self._get_region, schedpb.GetRegionRequest.FromString, _ser),
            "PutStore": u(self._put_store, schedpb.PutStoreRequest.FromString, _ser),
            "GetStore": u(self._get_store, schedpb.GetStoreRequest.FromString, _ser),
            "StoreHeartbeat": u(self._store_hb, schedpb.StoreHeartbeatRequest.FromString, _ser),
            "AskSplit": u(self._ask_split, schedpb.AskSplitRequest.FromString, _ser),
            "RegionHeartbeat": grpc.stream_stream_rpc_method_handler(
                self._region_hb, schedpb.RegionHeartbeatRequest.FromString, _ser),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("schedulerpb.Scheduler", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def header(self):
        return schedpb.ResponseHeader(cluster_id=self.CLUSTER_ID)

    def alloc(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def send(self, msg):
        """Queue a message (pb or bytes) for the node's heartbeat stream."""
        self.out.put(msg)

    def stop(self):
        self.stopped.set()
        self.server.stop(0)

    def _get_members(self, req, ctx):
        m = schedpb.Member(name="fake", member_id=1, client_urls=["http://" + self.addr])
        return schedpb.GetMembersResponse(header=self.header(), members=[m], leader=m)

    def _alloc_id(self, req, ctx):
        return schedpb.AllocIDResponse(header=self.header(), id=self.alloc())

    def _is_bootstrapped(self, req, ctx):
        return schedpb.IsBootstrappedResponse(header=self.header(), bootstrapped=self.bootstrapped)

    def _bootstrap(self, req, ctx):
        if self.bootstrap_error is not None:
            h = self.header()
            h.error.type = self.bootstrap_error
            h.error.message = "refused by the test"
            return schedpb.BootstrapResponse(header=h)
        with self.lock:
            self.bootstrapped = True
            self.stores[req.store.id] = req.store
        return schedpb.BootstrapResponse(header=self.header())

    def _get_region(self, req, ctx):
        return schedpb.GetRegionResponse(header=self.header())

    def _put_store(self, req, ctx):
        with self.lock:
            self.stores[req.store.id] = req.store
            self.put_stores.append(req.store)
        return schedpb.PutStoreResponse(header=self.header())

    def _get_store(self, req, ctx):
        with self.lock:
            s = self.stores.get(req.store_id)
        if s is None:
            h = self.header()
            h.error.type = schedpb.UNKNOWN
            h.error.message = "invalid store ID %d, not found" % req.store_id
            return schedpb.GetStoreResponse(header=h)
        return schedpb.GetStoreResponse(header=self.header(), store=s)

    def _store_hb(self, req, ctx):
        return schedpb.StoreHeartbeatResponse(header=self.header())

    def _ask_split(self, req, ctx):
        self.ask_splits.put(req)
        return schedpb.AskSplitResponse(header=self.header(), new_region_id=self.alloc(),
                                        new_peer_ids=[self.alloc() for _ in req.region.peers])

    def _region_hb(self, it, ctx):
        def reader():
            try:
                for hb in it:
                    self.heartbeats.put(hb)
            except grpc.RpcError:
                pass
        threading.Thread(target=reader, daemon=True).start()
        while ctx.is_active() and not self.stopped.is_set():
            try:
                yield self.out.get(timeout=0.1)
            except queue.Empty:
                pass
