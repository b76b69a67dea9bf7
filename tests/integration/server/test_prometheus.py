# A real scraper: Debian's Prometheus server (package prometheus) scrapes a
# running tinykv-server's status port every second from a temporary config
# (ephemeral ports, private data dir), and the test asks Prometheus's HTTP
# API for tinykv's request counter after known traffic. Also lints the
# shipped deploy/monitoring files: promtool check config on the scrape
# config example, and every metric the Grafana dashboard queries must exist
# in a live scrape.
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import tkvtest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
MONITORING = os.path.join(REPO, "deploy", "monitoring")
PROM_TIMEOUT = float(os.environ.get("TKV_PROM_TIMEOUT", "90"))


def need(binary):
    p = shutil.which(binary)
    if not p:
        raise AssertionError("%s not found: install the Debian package prometheus "
                             "(deploy/install-deps.sh)" % binary)
    return p


class PrometheusTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tkv-prom-")
        self.srv = tkvtest.Server(cores=2)
        self.prom = None
        self.prom_log = None

    def tearDown(self):
        if self.prom and self.prom.poll() is None:
            self.prom.terminate()
            try:
                self.prom.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        if self.prom_log:
            self.prom_log.close()
        self.srv.cleanup()
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start_prometheus(self, target_port):
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: tinykv\n    scrape_interval: 1s\n"
                    "    scrape_timeout: 1s\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.prom_port = tkvtest.free_port()
        self.prom_log = open(os.path.join(self.tmp, "prometheus.log"), "wb")
        self.prom = subprocess.Popen(
            tkvtest._die_with_parent_prefix() +
            [need("prometheus"), "--config.file=" + cfg,
             "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.prom_port,
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self.prom_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + PROM_TIMEOUT
        while time.monotonic() < deadline:
            if self.prom.poll() is not None:
                self.fail("prometheus exited with %d: %s" % (self.prom.returncode, self.prom_tail()))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.prom_port,
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.fail("prometheus not ready after %ds: %s" % (PROM_TIMEOUT, self.prom_tail()))

    def prom_tail(self):
        with open(os.path.join(self.tmp, "prometheus.log"), "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def query(self, expr):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            self.prom_port, urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        self.assertEqual(doc["status"], "success", doc)
        return doc["data"]["result"]

    def wait_value(self, expr, want):
        deadline = time.monotonic() + PROM_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            res = self.query(expr)
            if res:
                last = float(res[0]["value"][1])
                if last == want:
                    return
            time.sleep(0.5)
        self.fail("prometheus query %s: wanted %s, last %s; prometheus log: %s" %
                  (expr, want, last, self.prom_tail()))

    def test_prometheus_scrapes_the_request_counter(self):
        self.srv.start()
        self.start_prometheus(self.srv.status_port)
        self.wait_value('up{job="tinykv"}', 1)
        with self.srv.channel() as ch:
            for i in range(7):
                self.assertEqual(tkvtest.raw_put(ch, b"prom-%d" % i, b"v").error, "")
        self.wait_value('sum(tinykv_grpc_msg_total{job="tinykv",type="raw_put",code="OK"})', 7)
        # histograms work end to end: a quantile over the scraped buckets
        res = self.query('histogram_quantile(0.99, sum by (le) '
                         '(tinykv_grpc_msg_duration_seconds_bucket{type="raw_put"}))')
        self.assertTrue(res and float(res[0]["value"][1]) > 0, res)
        self.assertEqual(len(self.query('tinykv_reactor_busy_ratio{job="tinykv"}')), 2)

    def test_shipped_monitoring_files(self):
        r = subprocess.run([need("promtool"), "check", "config",
                            os.path.join(MONITORING, "prometheus.yml")],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        r = subprocess.run([need("promtool"), "check", "rules",
                            os.path.join(MONITORING, "tinykv-rules.yml")],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        # Every metric the dashboard and the rules query exists in a scrape.
        with open(os.path.join(MONITORING, "grafana-tinykv.json")) as f:
            dash = json.load(f)
        exprs = []

        def walk(x):
            if isinstance(x, dict):
                for k, v in x.items():
                    if k == "expr":
                        exprs.append(v)
                    else:
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
        walk(dash)
        with open(os.path.join(MONITORING, "tinykv-rules.yml")) as f:
            exprs += re.findall(r"expr:\s*(.+)", f.read())
        self.assertGreater(len(exprs), 8, "the dashboard should have panels")
        wanted = set()
        for e in exprs:
            wanted |= set(re.findall(r"\b((?:tinykv|process)_[a-z_]+)", e))
        self.srv.start()
        with self.srv.channel() as ch:
            tkvtest.raw_put(ch, b"k", b"v")
        time.sleep(1.5)  # the cores publish their reactor series once a second
        code, body, _ = self.srv.http_get("/metrics")
        self.assertEqual(code, 200)
        families = set(re.findall(r"^# TYPE (\S+) ", body.decode(), re.M))
        have = set(families)
        for f in families:
            have |= {f + "_bucket", f + "_sum", f + "_count"}
        # The raft log is not wired into the standalone server yet (the
        # raftstore brings it), so its series appear once a log is open;
        # tests/unit/raftlog checks they are registered and move.
        not_served_yet = {m for m in wanted if m.startswith("tinykv_raftlog_")}
        self.assertTrue(not_served_yet <= {
            "tinykv_raftlog_sync_duration_seconds_bucket", "tinykv_raftlog_write_bytes_total",
            "tinykv_raftlog_segments", "tinykv_raftlog_batches_total"}, not_served_yet)
        missing = sorted(m for m in wanted - not_served_yet if m not in have)
        self.assertEqual(missing, [], "dashboard/rules query metrics that /metrics lacks")


if __name__ == "__main__":
    tkvtest.main()
