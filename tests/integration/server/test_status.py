# The status HTTP port (ECOSYSTEM.md 2.7) and the operator-facing behaviour
# around it: /livez /readyz /status /config /metrics (checked by Debian's
# promtool), request counters that move with traffic, JSON logs, reopening
# the log file on SIGHUP, a taken status port, and the systemd watchdog that
# is fed only while every core's loop turns (a fake NOTIFY_SOCKET, and the
# server/stall_core failpoint driven by fiu-ctrl in test builds).
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import tkvtest
import kvrpcpb_pb2 as kvrpcpb

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of a Prometheus text scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, "unparsable metrics line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())), 0.0)


def promtool():
    p = shutil.which("promtool")
    if not p:
        raise AssertionError("promtool not found: install the Debian package prometheus "
                             "(deploy/install-deps.sh)")
    return p


class StatusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = tkvtest.Server(cores=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.cleanup()

    def scrape(self):
        code, body, ctype = self.srv.http_get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        return body.decode()

    def test_livez_readyz(self):
        self.assertEqual(self.srv.http_get("/livez")[:2], (200, b"ok\n"))
        self.assertEqual(self.srv.http_get("/readyz")[:2], (200, b"ok\n"))

    def test_status_json(self):
        code, body, ctype = self.srv.http_get("/status")
        self.assertEqual(code, 200)
        self.assertEqual(ctype, "application/json")
        st = json.loads(body)
        for key in ("version", "git_hash", "build_time", "start_time", "uptime_seconds"):
            self.assertIn(key, st)
        self.assertEqual(st["component"], "tinykv-server")
        self.assertEqual(st["mode"], "standalone")
        self.assertEqual(st["cores"], 2)
        self.assertEqual(st["stores"][0]["port"], self.srv.port)
        self.assertTrue(st["ready"])
        self.assertGreater(st["uptime_seconds"], 0)

    def test_config_is_the_effective_configuration(self):
        code, body, _ = self.srv.http_get("/config")
        self.assertEqual(code, 200)
        cfg = json.loads(body)
        self.assertEqual(cfg["server"]["cores"], 2)
        self.assertEqual(cfg["server"]["status-addr"], "127.0.0.1:0")  # as given; bound port in the log
        self.assertEqual(cfg["storage"]["data-dir"], self.srv.data_dir)

    def test_unknown_path_and_method(self):
        self.assertEqual(self.srv.http_get("/nope")[0], 404)
        self.assertEqual(self.srv.http_get("/metrics", method="POST")[0], 405)
        self.assertEqual(self.srv.http_get("/livez", method="DELETE")[0], 405)

    def test_metrics_pass_promtool(self):
        text = self.scrape()
        r = subprocess.run([promtool(), "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, "promtool check metrics failed:\n%s%s" %
                         (r.stdout.decode(), r.stderr.decode()))

    def test_request_counters_follow_traffic(self):
        before = parse_metrics(self.scrape())
        with self.srv.channel() as ch:
            for i in range(5):
                self.assertEqual(tkvtest.raw_put(ch, b"k%d" % i, b"v").error, "")
            for i in range(3):
                tkvtest.raw_get(ch, b"k%d" % i)
            tkvtest._call(ch, "KvGet", kvrpcpb.GetRequest(key=b"x", version=1),
                          kvrpcpb.GetResponse, tkvtest.RPC_TIMEOUT)
        after = parse_metrics(self.scrape())

        def delta(name, **labels):
            return metric(after, name, **labels) - metric(before, name, **labels)
        self.assertEqual(delta("tinykv_grpc_msg_total", type="raw_put", code="OK"), 5)
        self.assertEqual(delta("tinykv_grpc_msg_total", type="raw_get", code="OK"), 3)
        self.assertEqual(delta("tinykv_grpc_msg_total", type="kv_get", code="OK"), 1)
        self.assertEqual(delta("tinykv_grpc_msg_duration_seconds_count", type="raw_put"), 5)
        self.assertEqual(delta("tinykv_grpc_msg_duration_seconds_bucket", type="raw_put", le="+Inf"), 5)
        batches = delta("tinykv_engine_write_batches_total")
        self.assertTrue(1 <= batches <= 5, "write batches moved by %s" % batches)
        self.assertEqual(delta("tinykv_engine_write_batch_ops_sum"), 5)
        self.assertEqual(delta("tinykv_engine_commit_duration_seconds_count"), batches)
        self.assertGreaterEqual(delta("tinykv_grpc_connections_accepted_total"), 1)
        # The cores publish their reactor figures once a second.
        deadline = time.monotonic() + tkvtest.START_TIMEOUT
        while time.monotonic() < deadline and not all(
                metric(after, "tinykv_reactor_loop_turns_total", core=c) > 0 for c in ("0", "1")):
            time.sleep(0.2)
            after = parse_metrics(self.scrape())
        for core in ("0", "1"):
            self.assertIn(("tinykv_reactor_busy_ratio", frozenset({("core", core)})), after)
            self.assertIn(("tinykv_reactor_xcore_ring_depth", frozenset({("core", core)})), after)
            self.assertIn(("tinykv_reactor_xcore_overflow_total", frozenset({("core", core)})),
                          after)
            self.assertGreater(metric(after, "tinykv_reactor_loop_turns_total", core=core), 0)
        self.assertGreater(metric(after, "process_open_fds"), 0)


class OperationsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tkv-ops-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_json_log_every_line_parses(self):
        conf = os.path.join(self.tmp, "tinykv.toml")
        with open(conf, "w") as f:
            f.write('[log]\nformat = "json"\nlevel = "debug"\n')
        srv = tkvtest.Server(cores=2, extra_args=["-C", conf])
        try:
            srv.start()
            with srv.channel() as ch:
                tkvtest.raw_put(ch, b"json \"key\"\n", b"\xff\x00v")
            self.assertEqual(srv.stop(), 0)
            with open(srv.log_path, "rb") as f:
                lines = f.read().decode("utf-8").splitlines()
            self.assertGreater(len(lines), 3)
            messages = []
            for line in lines:
                if line.startswith("==") or not line.strip():
                    continue  # sanitizer banners are not ours
                rec = json.loads(line)
                for key in ("time", "level", "caller", "message"):
                    self.assertIn(key, rec, line)
                messages.append(rec["message"])
            self.assertIn("tinykv-server is serving", messages)
            self.assertIn("tinykv-server stopped", messages)
        finally:
            srv.cleanup()

    def test_sighup_reopens_the_log_file(self):
        log = os.path.join(self.tmp, "tinykv.log")
        srv = tkvtest.Server(cores=1, extra_args=["--log-file", log], server_log=log)
        try:
            srv.start()
            rotated = log + ".1"
            os.rename(log, rotated)  # what logrotate does before its postrotate
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + tkvtest.START_TIMEOUT
            while time.monotonic() < deadline and not os.path.exists(log):
                time.sleep(0.05)
            self.assertTrue(os.path.exists(log), "SIGHUP did not reopen the log file")
            self.assertTrue(srv.alive(), "SIGHUP must not stop the server")
            with srv.channel() as ch:
                self.assertEqual(tkvtest.raw_put(ch, b"after", b"hup").error, "")
            self.assertEqual(srv.stop(), 0)
            with open(rotated) as f:
                self.assertIn("tinykv-server is serving", f.read())
            with open(log) as f:
                new = f.read()
            self.assertIn("log file reopened", new)
            self.assertIn("tinykv-server stopped", new)
        finally:
            srv.cleanup()

    def test_taken_status_port_does_not_stop_the_node(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        srv = tkvtest.Server(cores=1)
        try:
            port = blocker.getsockname()[1]
            srv.extra_args += ["--status-addr", "127.0.0.1:%d" % port]  # last flag wins
            srv.start()
            self.assertIn("cannot start the status server", srv.log_tail())
        finally:
            srv.cleanup()
            blocker.close()

    def test_watchdog_fed_only_while_every_core_turns(self):
        path = os.path.join(self.tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        fifo = os.path.join(self.tmp, "fiu")
        srv = tkvtest.Server(cores=2, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000",
                                            "TKV_FIU_CTRL": fifo})
        try:
            srv.start()

            def pings(seconds):
                """Arrival times of WATCHDOG=1 during the next `seconds`."""
                out, end = [], time.monotonic() + seconds
                while time.monotonic() < end:
                    sock.settimeout(max(0.01, end - time.monotonic()))
                    try:
                        msg = sock.recv(4096).decode()
                    except socket.timeout:
                        break
                    if "WATCHDOG=1" in msg:
                        out.append(time.monotonic())
                return out

            healthy = pings(3.5)
            self.assertGreaterEqual(len(healthy), 3, "watchdog (2 s) must be fed every ~1 s")

            fiu_ctrl = shutil.which("fiu-ctrl")
            if not fiu_ctrl or not os.path.exists("%s-%d.in" % (fifo, srv.proc.pid)):
                self.fail("fiu-ctrl (Debian fiu-utils) and a test build (failpoints) are needed")
            subprocess.run([fiu_ctrl, "-f", fifo, "-c",
                            "enable name=server/stall_core,failinfo=4000", str(srv.proc.pid)],
                           check=True, timeout=30)
            # Each loop turn now blocks 4 s, longer than the 2 s stall limit:
            # /readyz must say so, and somewhere the watchdog must go unfed
            # for longer than its 2 s interval (systemd would restart us).
            start = time.monotonic()
            ready_codes = set()
            stalled = [start]
            end = start + 7
            while time.monotonic() < end:
                code, body, _ = srv.http_get("/readyz")
                ready_codes.add(code)
                if code == 503:
                    self.assertIn(b"event loop has not turned", body)
                stalled += pings(0.5)
            stalled.append(time.monotonic())
            self.assertIn(503, ready_codes, "/readyz never noticed the stuck cores")
            gaps = [b - a for a, b in zip(stalled, stalled[1:])]
            self.assertGreater(max(gaps), 2.0,
                               "watchdog fed at least every 2 s while cores were stuck: %s" % gaps)
            subprocess.run([fiu_ctrl, "-f", fifo, "-c", "disable name=server/stall_core",
                            str(srv.proc.pid)], check=True, timeout=30)
            time.sleep(5)  # the last stalled turns finish
            self.assertGreaterEqual(len(pings(3.5)), 3, "watchdog not fed again after recovery")
            self.assertEqual(srv.http_get("/readyz")[0], 200)
        finally:
            sock.close()
            srv.cleanup()


if __name__ == "__main__":
    tkvtest.main()
