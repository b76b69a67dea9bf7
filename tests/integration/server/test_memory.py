#!/usr/bin/env python3
"""Memory under hostile clients (issue 13 item 3): clients that never read
their RawScan responses, and clients that hold partial 16 MiB messages, must
not make the server's memory grow past its stated bound
(server.grpc-memory-pool-quota + 64 MiB of scan results per core + slack),
and the server keeps serving others. Before the quotas the first attack
grew the server to gigabytes until malloc failed, the second pinned 16 MiB
per connection with no node limit."""
import os
import socket
import struct
import threading
import time

import tkvtest
from tkvtest import kvrpcpb

VALUE = 64 * 1024
N_KEYS = 200            # a full scan answers ~12.5 MiB
POOL_MIB = 64           # server.grpc-memory-pool-quota in this test (1 core)
CONN_MIB = 40           # server.grpc-conn-memory-quota
SCAN_BUDGET_MIB = 64    # server_raw.c SCAN_MEM_BUDGET
SLACK_MIB = 96          # allocator and sanitizer overhead, per-connection buffers
BOUND_MIB = POOL_MIB + SCAN_BUDGET_MIB + SLACK_MIB


def proc_mib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def scan_request(stream_id):
    body = kvrpcpb.RawScanRequest(start_key=b"", limit=100000).SerializeToString()
    return (tkvtest.h2_frame(1, 0x4, stream_id,
                             tkvtest.grpc_headers_block("/tinykvpb.TinyKv/RawScan", "x")) +
            tkvtest.h2_frame(0, 0x1, stream_id, tkvtest.grpc_message(body)))


def h2_open(addr):
    s = tkvtest.raw_connect(addr)
    s.sendall(tkvtest.H2_PREFACE + tkvtest.h2_frame(4, 0, 0, b""))
    return s


def partial_put(addr, megabytes, out):
    """Announce a RawPut of ~16 MiB and send `megabytes` MiB of it, never the
    rest; stop when the server stops reading (send times out)."""
    s = h2_open(addr)
    out.append(s)
    s.settimeout(3)
    hdr = tkvtest.h2_frame(1, 0x4, 1, tkvtest.grpc_headers_block("/tinykvpb.TinyKv/RawPut", "x"))
    prefix = b"\x00" + struct.pack(">I", 16 * 1024 * 1024 - 100)
    chunk = b"\x0a" * 16384
    try:
        s.sendall(hdr + tkvtest.h2_frame(0, 0, 1, prefix))
        for _ in range(megabytes * 64):
            s.sendall(tkvtest.h2_frame(0, 0, 1, chunk))
    except (socket.timeout, OSError):
        pass


class Memory(tkvtest.TkvTestCase):
    """One server per test: its peak RSS (VmHWM) is the measure."""

    def setUp(self):
        import tempfile
        self.conf_dir = tempfile.mkdtemp(prefix="tkv-mem-")
        conf = os.path.join(self.conf_dir, "mem.toml")
        with open(conf, "w") as f:
            f.write('[server]\ngrpc-memory-pool-quota = "%dMiB"\n'
                    'grpc-conn-memory-quota = "%dMiB"\n' % (POOL_MIB, CONN_MIB))
        asan = os.environ.get("ASAN_OPTIONS", "")
        self.srv = tkvtest.Server(cores=1, extra_args=["-C", conf],
                                  env={"ASAN_OPTIONS": (asan + ":" if asan else "") +
                                       "quarantine_size_mb=16"})
        self.srv.start()
        self.pid = self.srv.proc.pid

    def tearDown(self):
        rc = self.srv.stop()
        self.srv.cleanup()
        __import__("shutil").rmtree(self.conf_dir, ignore_errors=True)
        self.assertEqual(rc, 0, "tinykv-server exited with %r on SIGTERM" % rc)

    def cpu_ticks(self):
        with open("/proc/%d/stat" % self.pid) as f:
            return sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])

    def assert_bounded_and_serving(self, what):
        peak = proc_mib(self.pid, "VmHWM")
        grew = peak - self.rss0
        self.assertLess(grew, BOUND_MIB,
                        "%s: server peak RSS %.0f MiB, %.0f MiB over its %.0f MiB before "
                        "(bound %d MiB = pool quota %d + scan budget %d + slack %d)" %
                        (what, peak, grew, self.rss0, BOUND_MIB, POOL_MIB, SCAN_BUDGET_MIB,
                         SLACK_MIB))
        self.assertTrue(self.srv.alive(), "%s: the server died" % what)
        with self.srv.channel() as ch:
            self.assert_ok(tkvtest.raw_put(ch, b"victim", b"ok"))
            self.assertEqual(tkvtest.raw_get(ch, b"victim").value, b"ok")
        return peak

    def test_clients_that_never_read_scan_responses(self):
        """3 connections x 30 full-range scans (~1.1 GB of responses), never
        reading a byte: streams over the quotas get RESOURCE_EXHAUSTED."""
        with self.srv.channel() as ch:
            v = b"v" * VALUE
            for i in range(N_KEYS):
                tkvtest.raw_put(ch, b"scan-%04d" % i, v)
        self.rss0 = proc_mib(self.pid, "VmRSS")
        socks = [h2_open(self.srv.addr) for _ in range(3)]
        try:
            for s in socks:
                s.sendall(b"".join(scan_request(2 * i + 1) for i in range(30)))
            # until the server is done with them (no CPU left to spend)
            deadline = time.monotonic() + 120
            last = None
            while time.monotonic() < deadline:
                cpu = self.cpu_ticks()
                if last is not None and cpu - last <= 2:
                    break
                last = cpu
                time.sleep(1.0)
            peak = self.assert_bounded_and_serving("never-reading scan clients")
            print("never-reading scans: peak RSS %.0f MiB (%.0f before)" % (peak, self.rss0))
        finally:
            for s in socks:
                s.close()

    def test_connections_holding_partial_16mib_messages(self):
        """24 connections each send 15 MiB of a 16 MiB RawPut and stop:
        the node stops reading the largest holders; memory stays bounded."""
        self.rss0 = proc_mib(self.pid, "VmRSS")
        socks = []
        threads = [threading.Thread(target=partial_put, args=(self.srv.addr, 15, socks))
                   for _ in range(24)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            peak = self.assert_bounded_and_serving("partial 16 MiB messages")
            print("partial messages: peak RSS %.0f MiB (%.0f before)" % (peak, self.rss0))
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    tkvtest.main()
