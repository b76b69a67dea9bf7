# Harness for cluster-mode tests: the real tinyscheduler-server (schedtest)
# plus one tinykv-server node started with --pd, whose stores' ports are read
# from its log ("store ready" lines: the node binds port 0 per store). Region
# context for direct gRPC calls comes from the scheduler (GetRegion).
#
# Inputs (ctest sets them): TKV_SERVER_BIN, TKV_SCHED_BIN, TKV_CTL_BIN,
# TKV_PROTO_PY; TKV_KEEP_LOGS=1 keeps temp dirs.
import os
import re
import subprocess
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_here, "..", "server"))
sys.path.insert(0, os.path.join(_here, "..", "sched"))

import tkvtest  # noqa: E402
import schedtest  # noqa: E402
from tkvtest import channel  # noqa: E402

import grpc  # noqa: E402
import kvrpcpb_pb2 as kvrpcpb  # noqa: E402
import schedulerpb_pb2 as schedpb  # noqa: E402
import schedulerpb_pb2_grpc as schedpb_grpc  # noqa: E402

START_TIMEOUT = tkvtest.START_TIMEOUT
RPC_TIMEOUT = tkvtest.RPC_TIMEOUT

# TinyKV's test timings (TINYKV-API.md 2.16): elections and heartbeats fast.
TEST_CONF = """
[raftstore]
raft-base-tick-interval = "50ms"
pd-heartbeat-tick-interval = "100ms"
pd-store-heartbeat-tick-interval = "500ms"
"""


class Node(tkvtest.Server):
    """A tinykv-server in cluster mode: --pd SCHED, one store per core."""

    def __init__(self, sched, cores=2, **kw):
        super().__init__(cores=cores, **kw)
        self.sched = sched
        conf = os.path.join(self.base_dir, "tinykv.toml")
        with open(conf, "w") as f:
            f.write(TEST_CONF)
        self.extra_args += ["-C", conf, "--pd", sched.addr]
        self.stores = []  # [(store_id, port)] by core, from the current log

    def _stores_from_log(self):
        out = []
        try:
            with open(self.log_path, "rb") as f:
                for line in f:
                    if b'["store ready"]' in line:
                        sid = int(re.search(rb"\[store_id=(\d+)\]", line).group(1))
                        port = int(re.search(rb"\[port=(\d+)\]", line).group(1))
                        out.append((sid, port))
        except OSError:
            pass
        return out

    def wait_serving(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("tinykv-server exited with %d before serving; log:\n%s" %
                                     (self.proc.returncode, self.log_tail()))
            with open(self.log_path, "rb") as f:
                serving = b'["tinykv-server is serving"]' in f.read()
            if serving:
                self.stores = self._stores_from_log()
                self.port = self.stores[0][1]
                self.status_port = self._log_field("status server listening", "status_port")
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError("cluster node not serving after %.0fs; log:\n%s" %
                             (START_TIMEOUT, self.log_tail()))

    def store_addr(self, store_id):
        for sid, port in self.stores:
            if sid == store_id:
                return "127.0.0.1:%d" % port
        raise KeyError(store_id)


class SchedClient:
    def __init__(self, sched):
        self.ch = channel(sched.addr)
        self.stub = schedpb_grpc.SchedulerStub(self.ch)
        self.cluster_id = self.stub.GetMembers(schedpb.GetMembersRequest(),
                                               timeout=RPC_TIMEOUT).header.cluster_id
        self.h = schedpb.RequestHeader(cluster_id=self.cluster_id)

    def close(self):
        self.ch.close()

    def region_with_leader(self, key=b"", timeout=START_TIMEOUT):
        """(region, leader) of key once the scheduler knows its leader (the
        first region heartbeat)."""
        deadline = time.monotonic() + timeout
        r = None
        while time.monotonic() < deadline:
            r = self.stub.GetRegion(schedpb.GetRegionRequest(header=self.h, region_key=key),
                                    timeout=RPC_TIMEOUT)
            if r.HasField("region") and r.HasField("leader") and r.leader.id:
                return r.region, r.leader
            time.sleep(0.1)
        raise AssertionError("no leader known for key %r after %.0fs: %s" % (key, timeout, r))

    def stores(self):
        r = self.stub.GetAllStores(schedpb.GetAllStoresRequest(header=self.h), timeout=RPC_TIMEOUT)
        return {s.id: s for s in r.stores}


def context(region, leader, **over):
    ctx = kvrpcpb.Context(region_id=region.id, region_epoch=region.region_epoch, peer=leader)
    for k, v in over.items():
        setattr(ctx, k, v) if not hasattr(v, "CopyFrom") else getattr(ctx, k).CopyFrom(v)
    return ctx


def _call(ch, method, req, resp_type, timeout=RPC_TIMEOUT):
    f = ch.unary_unary(tkvtest.SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                       response_deserializer=resp_type.FromString)
    return f(req, timeout=timeout)


def raw_put(ch, ctx, key, value, timeout=RPC_TIMEOUT):
    return _call(ch, "RawPut", kvrpcpb.RawPutRequest(context=ctx, key=key, value=value),
                 kvrpcpb.RawPutResponse, timeout)


def raw_get(ch, ctx, key, timeout=RPC_TIMEOUT):
    return _call(ch, "RawGet", kvrpcpb.RawGetRequest(context=ctx, key=key), kvrpcpb.RawGetResponse,
                 timeout)


def raw_delete(ch, ctx, key, timeout=RPC_TIMEOUT):
    return _call(ch, "RawDelete", kvrpcpb.RawDeleteRequest(context=ctx, key=key),
                 kvrpcpb.RawDeleteResponse, timeout)


def raw_scan(ch, ctx, start, limit, timeout=RPC_TIMEOUT):
    return _call(ch, "RawScan", kvrpcpb.RawScanRequest(context=ctx, start_key=start, limit=limit),
                 kvrpcpb.RawScanResponse, timeout)


def ctl(pd, *args, timeout=60):
    """tinykv-ctl --pd PD ARGS: (exit code, stdout, stderr)."""
    p = subprocess.run([tkvtest.ctl_bin(), "--pd", pd, "--timeout", "20"] + list(args),
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def call_bytes(ch, path, body, timeout=RPC_TIMEOUT):
    f = ch.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return f(body, timeout=timeout)
