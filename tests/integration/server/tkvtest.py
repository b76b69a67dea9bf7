# Shared harness for the standalone tinykv-server integration tests: start the
# real binary on 127.0.0.1 with a free port and a temp data dir, wait until it
# serves, talk gRPC (Debian python3-grpcio) or raw HTTP/2, always kill it.
#
# Inputs (set by ctest, see CMakeLists.txt; also usable by hand):
#   TKV_SERVER_BIN  path of tinykv-server
#   TKV_CTL_BIN     path of tinykv-ctl (only the ctl tests need it)
#   TKV_PROTO_PY    directory holding the generated kvrpcpb_pb2.py (target tkv_proto_py)
#   TKV_SERVER_ARGS extra server arguments, whitespace separated (optional)
#   TKV_KEEP_LOGS=1 keep temp dirs and server logs after the run
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

_proto_dir = os.environ.get("TKV_PROTO_PY")
if not _proto_dir or not os.path.isfile(os.path.join(_proto_dir, "kvrpcpb_pb2.py")):
    sys.stderr.write("TKV_PROTO_PY must name the directory with kvrpcpb_pb2.py (got %r)\n" % _proto_dir)
    sys.exit(2)
sys.path.insert(0, _proto_dir)

import grpc  # noqa: E402  (Debian python3-grpcio)
import kvrpcpb_pb2 as kvrpcpb  # noqa: E402,F401

SERVICE = "/tinykvpb.TinyKv/"
# Every method of tinykvpb.TinyKv (TINYKV-API.md 1.2) that the standalone
# server does not implement yet, with its request type where unary.
UNIMPLEMENTED_UNARY = ["Coprocessor"]
UNIMPLEMENTED_STREAMING = ["Raft", "Snapshot"]

# Generous under ASan on a shared 2-core machine.
START_TIMEOUT = float(os.environ.get("TKV_START_TIMEOUT", "60"))
RPC_TIMEOUT = float(os.environ.get("TKV_RPC_TIMEOUT", "20"))


def server_bin():
    b = os.environ.get("TKV_SERVER_BIN")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("TKV_SERVER_BIN must name the tinykv-server binary (got %r)" % b)
    return b


def ctl_bin():
    b = os.environ.get("TKV_CTL_BIN")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("TKV_CTL_BIN must name the tinykv-ctl binary (got %r)" % b)
    return b


def channel(addr, options=()):
    """A gRPC channel with its OWN connection: gRPC core otherwise shares one
    TCP connection among channels with equal targets and options, which
    would put every "client" of a test on one connection and so on one
    server core."""
    return grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)] + list(options))


def _die_with_parent_prefix():
    """Command prefix that makes the server get SIGKILL when the test process
    dies (e.g. a ctest timeout), so nothing started here outlives the test.
    util-linux setpriv sets PR_SET_PDEATHSIG and execs; a Popen preexec_fn
    could do the same but may deadlock in a process with threads (gRPC's)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (bind port 0). Free only
    until somebody else binds it: for servers prefer Server.start() without a
    port (the server binds port 0 itself)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """One tinykv-server process with its own port and data dir."""

    def __init__(self, cores=None, extra_args=None, env=None, host="127.0.0.1", wrapper=None,
                 server_log=None):
        self.base_dir = tempfile.mkdtemp(prefix="tkv-it-")
        self.data_dir = os.path.join(self.base_dir, "data")
        self.wrapper = list(wrapper or [])  # command prefix, e.g. prlimit --nofile=N:N --
        self.host = host  # as given to -addr: "127.0.0.1", "localhost", "[::1]"
        self.port = None
        self.status_port = None
        self.server_log = server_log  # the server's --log-file, when it has one
        self.proc = None
        self.cores = cores
        self.extra_args = list(extra_args or [])
        self.env = dict(os.environ, **(env or {}))
        self.log_path = None
        self.log_file = None
        self.n_starts = 0

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def start(self, port=None):
        """Start the server on port, or by default on a port it picks itself
        (-addr 127.0.0.1:0, read back from its log): a port picked here and
        handed over would be free only until the server binds it, and
        another test starting at the same moment could get the same one.
        The status port is picked by the server too (never the default
        20180: tests of other engineers run at the same time)."""
        self.port = port
        self.status_port = None
        self.n_starts += 1
        self.log_path = os.path.join(self.base_dir, "server-%d.log" % self.n_starts)
        self.log_file = open(self.log_path, "wb")
        addr = "%s:%d" % (self.host, port or 0)
        args = _die_with_parent_prefix() + self.wrapper + [server_bin(), "-addr", addr, "-path", self.data_dir,
                                                           "--status-addr", "127.0.0.1:0"]
        if self.cores:
            args += ["--cores", str(self.cores)]
        args += os.environ.get("TKV_SERVER_ARGS", "").split()
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env)
        self.wait_serving()
        return self

    def _log_field(self, message, key):
        """Integer field `key` of the first record `message` in the current
        log (text or JSON format), or None yet."""
        text_msg = b'["' + message.encode() + b'"]'
        json_msg = b'"message":"' + message.encode() + b'"'
        try:
            with open(self.server_log or self.log_path, "rb") as f:
                for line in f:
                    if text_msg in line or json_msg in line:
                        m = (re.search(rb"\[" + key.encode() + rb"=(\d+)\]", line) or
                             re.search(rb'"' + key.encode() + rb'":(\d+)', line))
                        return int(m.group(1)) if m else None
        except OSError:
            pass
        return None

    def _bound_port(self):
        """The port of the welcome line of the current log, or None yet."""
        return self._log_field("welcome to tinykv-server", "port")

    def wait_serving(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("tinykv-server exited with %d before serving; log:\n%s" %
                                     (self.proc.returncode, self.log_tail()))
            # Probe only once OUR process has logged its bound port: after a
            # kill -9 the port we restart on may briefly belong to another
            # test's server (it picked it as a free ephemeral port), and a
            # probe answered by that server would pass for ours.
            bound = self._bound_port()
            # every core listens only once "is serving" is logged: before
            # it a probe can reach a core that serves while another does not
            # yet (/readyz answers 503 "core 0 is not serving")
            if not bound or self._log_field("tinykv-server is serving", "port") is None:
                time.sleep(0.05)
                continue
            if not self.port:
                self.port = bound
            try:
                with channel(self.addr) as ch:
                    r = raw_get(ch, b"\x00tkv-it-probe", timeout=2)
                    if not r.error:
                        # logged before the cores start; None if the port was taken
                        self.status_port = self._log_field("status server listening",
                                                           "status_port")
                        return
                    last = r.error
            except grpc.RpcError as e:
                last = e
            time.sleep(0.1)
        self.kill()
        raise AssertionError("tinykv-server not serving after %.0fs (last: %s); log:\n%s" %
                             (START_TIMEOUT, last, self.log_tail()))

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def channel(self):
        return channel(self.addr)

    def http_get(self, path, method="GET", timeout=RPC_TIMEOUT):
        """(status code, body bytes, content type) of a request to the status port."""
        return http_request(self.status_port, path, method, timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

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
        """SIGTERM and expect a clean exit 0; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("tinykv-server ignored SIGTERM for %ds" % timeout)
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


def http_request(port, path, method="GET", timeout=RPC_TIMEOUT, body=None):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("Content-Type")
    finally:
        conn.close()


# ---- gRPC helpers (generic calls: the tests depend only on kvrpcpb_pb2) ----

def _call(ch, method, req, resp_type, timeout):
    f = ch.unary_unary(SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                       response_deserializer=resp_type.FromString)
    return f(req, timeout=timeout)


def raw_get(ch, key, cf="", timeout=RPC_TIMEOUT):
    return _call(ch, "RawGet", kvrpcpb.RawGetRequest(key=key, cf=cf), kvrpcpb.RawGetResponse, timeout)


def raw_put(ch, key, value, cf="", timeout=RPC_TIMEOUT):
    return _call(ch, "RawPut", kvrpcpb.RawPutRequest(key=key, value=value, cf=cf),
                 kvrpcpb.RawPutResponse, timeout)


def raw_delete(ch, key, cf="", timeout=RPC_TIMEOUT):
    return _call(ch, "RawDelete", kvrpcpb.RawDeleteRequest(key=key, cf=cf),
                 kvrpcpb.RawDeleteResponse, timeout)


def raw_scan(ch, start_key, limit, cf="", timeout=RPC_TIMEOUT):
    return _call(ch, "RawScan", kvrpcpb.RawScanRequest(start_key=start_key, limit=limit, cf=cf),
                 kvrpcpb.RawScanResponse, timeout)


def call_bytes(ch, path, body, timeout=RPC_TIMEOUT, **kw):
    """Unary call with raw request bytes; returns the raw response bytes."""
    f = ch.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return f(body, timeout=timeout, **kw)


# ---- raw HTTP/2 (for inputs a gRPC library refuses to produce) ----

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype, flags, stream_id, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    def string(s):
        b = s.encode() if isinstance(s, str) else s
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + string(name) + string(value)


def grpc_headers_block(path, authority):
    return b"".join(hpack_literal(n, v) for n, v in [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers")])


def grpc_message(body, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(body)) + body


def raw_connect(addr, timeout=10):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def wait_closed(sock, timeout=15):
    """Read until the peer closes; True if it closed within timeout."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            b = sock.recv(65536)
            if not b:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def nghttp_call(addr, path, body, timeout=30, extra_headers=()):
    """POST one gRPC request body (already framed) with nghttp (Debian
    nghttp2-client) and return its verbose output, which shows the decoded
    response headers and trailers (grpc-status, grpc-message)."""
    nghttp = shutil.which("nghttp")
    if not nghttp:
        raise RuntimeError("nghttp (Debian nghttp2-client) is required")
    with tempfile.NamedTemporaryFile(prefix="tkv-it-body-") as f:
        f.write(body)
        f.flush()
        args = [nghttp, "-v", "-n", "-t", str(timeout),
                "-H", "content-type: application/grpc", "-H", "te: trailers"]
        for h in extra_headers:
            args += ["-H", h]
        args += ["-d", f.name, "http://%s%s" % (addr, path)]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout + 10)
        return p.stdout.decode("utf-8", "replace")


class TkvTestCase(unittest.TestCase):
    """Assertions shared by every integration test."""

    def assert_ok(self, resp):
        self.assertFalse(resp.HasField("region_error"), "unexpected region_error: %s" % resp.region_error)
        self.assertEqual(resp.error, "", "unexpected error string")
        return resp


class ServerTestCase(TkvTestCase):
    """One server per test class (start-up under ASan costs seconds)."""
    cores = None
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(cores=cls.cores)
        try:
            cls.srv.start()
        except BaseException:
            cls.srv.cleanup()
            raise
        cls.ch = cls.srv.channel()

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        srv = cls.srv
        rc = srv.stop()
        srv.cleanup()
        if rc != 0:
            raise AssertionError("tinykv-server exited with %r on SIGTERM; log:\n%s" % (rc, srv.log_tail()))

    def assert_serving(self):
        """Proof that the server still serves a fresh client."""
        with self.srv.channel() as ch:
            k = b"still-serving-%d" % time.monotonic_ns()
            self.assert_ok(raw_put(ch, k, b"yes"))
            r = self.assert_ok(raw_get(ch, k))
            self.assertFalse(r.not_found)
            self.assertEqual(r.value, b"yes")
        self.assertTrue(self.srv.alive(), "server died")


def main():
    unittest.main(verbosity=2)
