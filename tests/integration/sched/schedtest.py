# Shared harness for the tinyscheduler-server integration tests: start the
# real binary on 127.0.0.1 with a free port and a temp data dir, wait until it
# answers GetMembers, talk schedulerpb over python3-grpcio, always kill it.
#
# Inputs (set by ctest, see CMakeLists.txt; also usable by hand):
#   TKV_SCHED_BIN   path of tinyscheduler-server
#   TKV_PROTO_PY    directory holding the generated schedulerpb_pb2.py
#   TKV_KEEP_LOGS=1 keep temp dirs and logs
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

_proto_dir = os.environ.get("TKV_PROTO_PY")
if not _proto_dir or not os.path.isfile(os.path.join(_proto_dir, "schedulerpb_pb2.py")):
    sys.stderr.write("TKV_PROTO_PY must name the directory with schedulerpb_pb2.py (got %r)\n" % _proto_dir)
    sys.exit(2)
sys.path.insert(0, _proto_dir)

import grpc  # noqa: E402  (Debian python3-grpcio)
import metapb_pb2 as metapb  # noqa: E402
import schedulerpb_pb2 as pb  # noqa: E402
import schedulerpb_pb2_grpc as pb_grpc  # noqa: E402

START_TIMEOUT = float(os.environ.get("TKV_START_TIMEOUT", "60"))
RPC_TIMEOUT = float(os.environ.get("TKV_RPC_TIMEOUT", "20"))


def sched_bin():
    b = os.environ.get("TKV_SCHED_BIN")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("TKV_SCHED_BIN must name the tinyscheduler-server binary (got %r)" % b)
    return b


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _die_with_parent_prefix():
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def channel(addr):
    return grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])


class Scheduler:
    """One tinyscheduler-server process with its own port and data dir."""

    def __init__(self, extra_args=None, env=None, prefix=None):
        self.base_dir = tempfile.mkdtemp(prefix="tkv-sched-it-")
        self.data_dir = os.path.join(self.base_dir, "data")
        self.port = None
        self.proc = None
        self.extra_args = list(extra_args or [])
        self.env = dict(os.environ, **(env or {}))
        self.prefix = list(prefix or [])
        self.log_path = None
        self.log_file = None
        self.n_starts = 0

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self, port=None, prefix=None, env=None):
        self.port = port or self.port or free_port()
        # the kernel may hand the just-closed client port out again: a peer
        # URL on the client port makes the scheduler refuse to start
        peer_port = free_port()
        while peer_port == self.port:
            peer_port = free_port()
        self.n_starts += 1
        self.log_path = os.path.join(self.base_dir, "sched-%d.log" % self.n_starts)
        self.log_file = open(self.log_path, "wb")
        args = (_die_with_parent_prefix() + list(prefix if prefix is not None else self.prefix) +
                [sched_bin(), "--client-urls", "http://" + self.addr,
                 "--peer-urls", "http://127.0.0.1:%d" % peer_port,
                 "--data-dir", self.data_dir, "--name", "it",
                 # the status port is picked by the server (never the default 2381:
                 # other tests run at the same time); read it with status_port()
                 "--status-addr", "127.0.0.1:0"] + self.extra_args)
        e = dict(self.env, **(env or {}))
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT, env=e)
        self.wait_serving()
        return self

    def wait_serving(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("tinyscheduler-server exited with %d before serving; log:\n%s" %
                                     (self.proc.returncode, self.log_tail()))
            try:
                with channel(self.addr) as ch:
                    r = pb_grpc.SchedulerStub(ch).GetMembers(pb.GetMembersRequest(), timeout=2)
                    self.cluster_id = r.header.cluster_id
                    return
            except grpc.RpcError as e:
                last = e
            time.sleep(0.1)
        self.kill()
        raise AssertionError("tinyscheduler-server not serving after %.0fs (last: %s); log:\n%s" %
                             (START_TIMEOUT, last, self.log_tail()))

    def status_port(self, timeout=10):
        """The status port the server bound (from its "status server
        listening" log line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                for line in f:
                    if b'["status server listening"]' in line:
                        m = re.search(rb"\[status_port=(\d+)\]", line)
                        if m:
                            return int(m.group(1))
            time.sleep(0.05)
        raise AssertionError("no status port in the log:\n" + self.log_tail())

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_file:
            self.log_file.close()
            self.log_file = None

    def stop(self, timeout=30):
        """SIGTERM; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("tinyscheduler-server ignored SIGTERM for %ds" % timeout)
        if self.log_file:
            self.log_file.close()
            self.log_file = None
        return rc

    def cleanup(self):
        self.kill()
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            sys.stderr.write("kept %s\n" % self.base_dir)
            return
        shutil.rmtree(self.base_dir, ignore_errors=True)


class Client:
    """A stub plus the cluster id header."""

    def __init__(self, sched):
        self.ch = channel(sched.addr)
        self.stub = pb_grpc.SchedulerStub(self.ch)
        self.cluster_id = self.stub.GetMembers(pb.GetMembersRequest(), timeout=RPC_TIMEOUT).header.cluster_id
        self.h = pb.RequestHeader(cluster_id=self.cluster_id)

    def close(self):
        self.ch.close()

    def alloc_id(self):
        r = self.stub.AllocID(pb.AllocIDRequest(header=self.h), timeout=RPC_TIMEOUT)
        assert not r.header.HasField("error"), r
        return r.id

    def bootstrap(self, store_id, addr, node=None):
        labels = [metapb.StoreLabel(key="node", value=node)] if node else []
        return self.stub.Bootstrap(pb.BootstrapRequest(
            header=self.h, store=metapb.Store(id=store_id, address=addr, labels=labels)),
            timeout=RPC_TIMEOUT)

    def put_store(self, store_id, addr, node=None):
        labels = [metapb.StoreLabel(key="node", value=node)] if node else []
        return self.stub.PutStore(pb.PutStoreRequest(
            header=self.h, store=metapb.Store(id=store_id, address=addr, labels=labels)),
            timeout=RPC_TIMEOUT)

    def tso(self, counts):
        """One Tso stream; returns [(physical, logical, count)]."""
        reqs = [pb.TsoRequest(header=self.h, count=c) for c in counts]
        out = []
        for r in self.stub.Tso(iter(reqs), timeout=RPC_TIMEOUT):
            out.append((r.timestamp.physical, r.timestamp.logical, r.count))
        return out

    def heartbeat_req(self, region_id, start, end, peers, leader_store, conf_ver=1, version=1,
                      size_mb=1, pending_stores=()):
        ps = [metapb.Peer(id=pid, store_id=sid) for pid, sid in peers]
        leader = [p for p in ps if p.store_id == leader_store][0]
        return pb.RegionHeartbeatRequest(
            header=self.h,
            region=metapb.Region(id=region_id, start_key=start, end_key=end,
                                 region_epoch=metapb.RegionEpoch(conf_ver=conf_ver, version=version),
                                 peers=ps),
            leader=leader, pending_peers=[p for p in ps if p.store_id in pending_stores],
            approximate_size=size_mb << 20)


def ts(physical, logical):
    return (physical << 18) | logical


class SchedTestCase(unittest.TestCase):
    def new_sched(self, **kw):
        s = Scheduler(**kw)
        self.addCleanup(s.cleanup)
        return s

    def client(self, sched):
        c = Client(sched)
        self.addCleanup(c.close)
        return c

    def assert_code(self, fn, code):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception
