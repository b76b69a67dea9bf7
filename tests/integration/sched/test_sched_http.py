# tinyscheduler-server's status port (issue 12 item 6): a real scheduler on
# free ports, stores registered with PutStore and fed store and region
# heartbeats over gRPC, then:
#   - PD's HTTP API (/pd/api/v1/stores, store/<id>, regions, region/id/<id>,
#     operators) returns exactly those stores and regions, with their counts;
#   - /metrics counters follow the traffic exactly (TSO requests and
#     timestamps, ids, heartbeats) and promtool accepts the scrape;
#   - /livez, /readyz, /status;
#   - /dashboard loaded in headless Chromium: the rendered DOM names every
#     store (id, address, node and core labels, region counts) and the
#     page's own refresh from the JSON API ran; the screenshot is a real
#     picture, not an empty page.
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import zlib

from schedtest import RPC_TIMEOUT as RT, SchedTestCase, metapb, pb

GiB = 1 << 30


def http_get(port, path, timeout=10):
    """(status, body bytes) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(test, port, path):
    code, body = http_get(port, path)
    test.assertEqual(code, 200, "%s: %s" % (path, body[:300]))
    return json.loads(body)


def metric(text, name, labels=None):
    """Value of one series in a Prometheus text scrape (None if absent)."""
    want = "" if not labels else "{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.split()[-1])
    return None


def chromium():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


def png_summary(path):
    """(width, height, distinct byte values in the decoded scanlines)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    return width, height, len(set(raw))


class SchedHttpTest(SchedTestCase):
    N_STORES = 5
    REGION_KEYS = [b"", b"b", b"d", b"f", b"h", b"k", b"m", b""]  # 7 regions, the whole key space

    def setUp(self):
        # No balancing during the test: the tree must stay exactly what was sent.
        self.sched = self.new_sched(env={"TKV_SCHED_PREPARE_MS": "3600000"}).start()
        self.port = self.sched.status_port()
        self.c = self.client(self.sched)

    def register(self):
        c = self.c
        self.stores = {}  # id -> (address, node, core)
        for i in range(self.N_STORES):
            sid = c.alloc_id()
            node, core = "node-%d" % (i // 2 + 1), str(i % 2)
            addr = "127.0.0.1:%d" % (31000 + i)
            self.stores[sid] = (addr, node, core)
            store = metapb.Store(id=sid, address=addr, labels=[
                metapb.StoreLabel(key="node", value=node), metapb.StoreLabel(key="core", value=core)])
            if i == 0:
                r = c.stub.Bootstrap(pb.BootstrapRequest(header=c.h, store=store), timeout=RT)
            else:
                r = c.stub.PutStore(pb.PutStoreRequest(header=c.h, store=store), timeout=RT)
            self.assertFalse(r.header.HasField("error"), r)
        self.ids = sorted(self.stores)
        for k, sid in enumerate(self.ids):
            r = c.stub.StoreHeartbeat(pb.StoreHeartbeatRequest(header=c.h, stats=pb.StoreStats(
                store_id=sid, capacity=100 * GiB, available=(50 + k) * GiB, used_size=3 << 20)),
                timeout=RT)
            self.assertFalse(r.header.HasField("error"), r)

    def send_regions(self):
        """7 regions of 3 replicas on stores of 3 different nodes; leaders
        rotate. Returns {region id: (start, end, [(peer, store)], leader store, size)}."""
        c = self.c
        self.regions = {}
        reqs = []
        for i in range(len(self.REGION_KEYS) - 1):
            rid = c.alloc_id()
            # stores 0/1 are node-1, 2/3 node-2, 4 node-3: one of each node
            stores = [self.ids[(i % 2)], self.ids[2 + (i % 2)], self.ids[4]]
            peers = [(c.alloc_id(), s) for s in stores]
            leader = stores[i % 3]
            start, end = self.REGION_KEYS[i], self.REGION_KEYS[i + 1]
            self.regions[rid] = (start, end, peers, leader, i + 1)
            reqs.append(c.heartbeat_req(rid, start, end, peers, leader, size_mb=i + 1))
        resps = list(c.stub.RegionHeartbeat(iter(reqs), timeout=RT))
        self.assertFalse([r for r in resps if r.header.HasField("error")], resps)

    def expected_counts(self):
        regions = {s: 0 for s in self.ids}
        leaders = {s: 0 for s in self.ids}
        sizes = {s: 0 for s in self.ids}
        for start, end, peers, leader, size in self.regions.values():
            for _, s in peers:
                regions[s] += 1
                sizes[s] += size
            leaders[leader] += 1
        return regions, leaders, sizes

    def test_pd_api_returns_exactly_the_registered_stores_and_regions(self):
        self.register()
        self.send_regions()
        regions, leaders, sizes = self.expected_counts()

        doc = get_json(self, self.port, "/pd/api/v1/stores")
        self.assertEqual(doc["count"], self.N_STORES)
        got = {s["store"]["id"]: s for s in doc["stores"]}
        self.assertEqual(sorted(got), self.ids, "store ids")
        for k, sid in enumerate(self.ids):
            st, status = got[sid]["store"], got[sid]["status"]
            addr, node, core = self.stores[sid]
            self.assertEqual(st["address"], addr)
            self.assertEqual(st["labels"], [{"key": "node", "value": node},
                                            {"key": "core", "value": core}])
            self.assertEqual(st["state_name"], "Up")
            self.assertEqual(status["region_count"], regions[sid], "region_count of store %d" % sid)
            self.assertEqual(status["leader_count"], leaders[sid], "leader_count of store %d" % sid)
            self.assertEqual(status["region_size"], sizes[sid], "region_size of store %d" % sid)
            self.assertEqual(status["capacity"], "100GiB")
            self.assertEqual(status["available"], "%dGiB" % (50 + k))
            self.assertRegex(status["last_heartbeat_ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            one = get_json(self, self.port, "/pd/api/v1/store/%d" % sid)
            self.assertEqual(one, got[sid])

        doc = get_json(self, self.port, "/pd/api/v1/regions")
        self.assertEqual(doc["count"], len(self.regions))
        got = {r["id"]: r for r in doc["regions"]}
        self.assertEqual(sorted(got), sorted(self.regions), "region ids")
        for rid, (start, end, peers, leader, size) in self.regions.items():
            r = got[rid]
            self.assertEqual(r["start_key"], start.hex().upper())
            self.assertEqual(r["end_key"], end.hex().upper())
            self.assertEqual(r["epoch"], {"conf_ver": 1, "version": 1})
            self.assertEqual(sorted((p["id"], p["store_id"]) for p in r["peers"]), sorted(peers))
            self.assertEqual(r["leader"]["store_id"], leader)
            self.assertEqual(r["approximate_size"], size)
            self.assertEqual(get_json(self, self.port, "/pd/api/v1/region/id/%d" % rid), r)
        # keys in order, as PD lists them
        self.assertEqual([r["start_key"] for r in doc["regions"]],
                         [k.hex().upper() for k in self.REGION_KEYS[:-1]])

        self.assertEqual(get_json(self, self.port, "/pd/api/v1/operators"), [])
        for path, code in (("/pd/api/v1/store/999999", 404), ("/pd/api/v1/store/abc", 400),
                           ("/pd/api/v1/store/0", 400), ("/pd/api/v1/region/id/999999", 404),
                           ("/pd/api/v1/region/id/1x", 400),
                           ("/pd/api/v1/store/99999999999999999999999", 400),
                           ("/pd/api/v1/nothing", 404), ("/dashboardx", 404)):
            status, body = http_get(self.port, path)
            self.assertEqual(status, code, "%s: %s" % (path, body[:200]))
            json.loads(body)  # errors are JSON strings, as PD's

        status = get_json(self, self.port, "/status")
        self.assertEqual(status["component"], "tinyscheduler-server")
        self.assertEqual(status["cluster_id"], str(self.c.cluster_id))
        self.assertEqual((status["stores"], status["regions"]), (self.N_STORES, len(self.regions)))
        self.assertTrue(status["bootstrapped"])
        code, body = http_get(self.port, "/livez")
        self.assertEqual((code, body.strip()), (200, b"ok"))
        self.assertEqual(http_get(self.port, "/readyz")[0], 200)
        cfg = get_json(self, self.port, "/config")
        self.assertEqual(cfg.get("status-addr"), "127.0.0.1:0")

    def test_store_with_bytes_that_are_not_utf8_is_still_listed(self):
        """Labels and addresses are untrusted bytes (protobuf strings are not
        checked for UTF-8 on our side): the store must still be in the
        documents, with '?' for the bad bytes, not silently dropped."""
        self.register()
        sid = self.c.alloc_id()
        store = metapb.Store(id=sid, address="127.0.0.1:39999",
                             labels=[metapb.StoreLabel(key="node", value="AB")])
        raw = pb.PutStoreRequest(header=self.c.h, store=store).SerializeToString()
        self.assertEqual(raw.count(b"AB"), 1)
        raw = raw.replace(b"AB", b"\xff\xfe")
        call = self.c.ch.unary_unary("/schedulerpb.Scheduler/PutStore",
                                     request_serializer=lambda b: b,
                                     response_deserializer=pb.PutStoreResponse.FromString)
        r = call(raw, timeout=RT)
        self.assertFalse(r.header.HasField("error"), r)
        doc = get_json(self, self.port, "/pd/api/v1/stores")
        self.assertEqual(doc["count"], self.N_STORES + 1)
        got = {s["store"]["id"]: s["store"] for s in doc["stores"]}
        self.assertIn(sid, got, "the store with non-UTF-8 bytes is missing")
        self.assertEqual(got[sid]["labels"], [{"key": "node", "value": "??"}])
        code, _ = http_get(self.port, "/dashboard")
        self.assertEqual(code, 200)

    def scrape(self):
        code, body = http_get(self.port, "/metrics")
        self.assertEqual(code, 200)
        return body.decode()

    def wait_metrics(self, expect):
        """Poll /metrics until every (name, labels, value) holds (the core
        publishes its counters every 50 ms); fail naming those that do not."""
        deadline = time.monotonic() + 10
        while True:
            text = self.scrape()
            wrong = [(n, l, v, metric(text, n, l)) for n, l, v in expect if metric(text, n, l) != v]
            if not wrong:
                return text
            if time.monotonic() > deadline:
                self.fail("metrics (name, labels, expected, got): %s" % wrong)
            time.sleep(0.1)

    def test_metrics_follow_the_traffic(self):
        before = self.scrape()
        for name in ("tinyscheduler_tso_requests_total", "tinyscheduler_alloc_ids_total",
                     "tinyscheduler_patrol_duration_seconds_count", "tinyscheduler_regions"):
            self.assertIsNotNone(metric(before, name), name + " missing from /metrics")
        self.register()
        self.send_regions()
        n_ids = self.N_STORES + len(self.regions) * 4  # a store id; a region id + 3 peer ids
        self.c.tso([1, 10, 100])
        self.c.tso([5])
        text = self.wait_metrics([
            ("tinyscheduler_tso_requests_total", None, 4),
            ("tinyscheduler_tso_timestamps_total", None, 116),
            ("tinyscheduler_alloc_ids_total", None, n_ids),
            ("tinyscheduler_heartbeats_received_total", {"type": "store"}, self.N_STORES),
            ("tinyscheduler_heartbeats_received_total", {"type": "region"}, len(self.regions)),
            ("tinyscheduler_region_updates_total", None, len(self.regions)),
            ("tinyscheduler_stores", {"state": "up"}, self.N_STORES),
            ("tinyscheduler_stores", {"state": "down"}, 0),
            ("tinyscheduler_regions", None, len(self.regions)),
            ("tinyscheduler_cluster_bootstrapped", None, 1),
        ])
        # a stale heartbeat (older version than the cached one) is counted as such
        rid, (start, end, peers, leader, size) = sorted(self.regions.items())[0]
        bump = self.c.heartbeat_req(rid, start, end, peers, leader, version=3, size_mb=size)
        old = self.c.heartbeat_req(rid, start, end, peers, leader, version=2, size_mb=size)
        list(self.c.stub.RegionHeartbeat(iter([bump, old]), timeout=RT))
        self.wait_metrics([("tinyscheduler_region_heartbeats_stale_total", None, 1),
                           ("tinyscheduler_heartbeats_received_total", {"type": "region"},
                            len(self.regions) + 2)])
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, (r.stdout + r.stderr).decode())

    def test_dashboard_renders_every_store_in_headless_chromium(self):
        browser = chromium()
        self.assertIsNotNone(browser, "chromium is required (deploy/install-deps.sh installs it)")
        self.register()
        self.send_regions()
        regions, leaders, _ = self.expected_counts()
        code, page = http_get(self.port, "/dashboard")
        self.assertEqual(code, 200)
        self.assertNotRegex(page.decode(), r"(src|href)=\"(https?:)?//",
                            "the page must not load external assets")
        tmp = tempfile.mkdtemp(prefix="tkv-dash-")
        self.addCleanup(shutil.rmtree, tmp, True)
        url = "http://127.0.0.1:%d/dashboard" % self.port
        common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--user-data-dir=" + os.path.join(tmp, "profile"),
                  # virtual time runs the page's timers and its fetch of the JSON API
                  "--virtual-time-budget=4000"]
        env = dict(os.environ, HOME=tmp)
        r = subprocess.run(common + ["--dump-dom", url], capture_output=True, timeout=180, env=env)
        dom = r.stdout.decode("utf-8", "replace")
        self.assertIn("<table", dom, "no DOM dumped (rc %d): %s" % (r.returncode, r.stderr[-2000:]))
        m = re.search(r'data-refreshes="(\d+)"', dom)
        self.assertTrue(m and int(m.group(1)) >= 1,
                        "the page never refreshed from /pd/api/v1/stores")
        text = re.sub(r"<[^>]+>", "\n", dom)
        for sid, (addr, node, core) in self.stores.items():
            row = re.search(r'<tr id="store-%d">(.*?)</tr>' % sid, dom, re.S)
            self.assertIsNotNone(row, "store %d has no row in the rendered page" % sid)
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
            self.assertEqual(cells[:7], ["store %d" % sid, node, core, addr, "Up",
                                         str(regions[sid]), str(leaders[sid])],
                             "row of store %d" % sid)
            self.assertIn("%d regions, %d leaders" % (regions[sid], leaders[sid]), text,
                          "bar label of store %d" % sid)
        self.assertEqual(len(re.findall(r"<rect ", dom)), 2 * self.N_STORES + 2,
                         "one region bar and one leader bar per store (+2 legend squares)")
        self.assertIn("%d stores (%d up)" % (self.N_STORES, self.N_STORES), text)

        shot = os.path.join(tmp, "dashboard.png")
        r = subprocess.run(common + ["--window-size=1000,700", "--screenshot=" + shot, url],
                           capture_output=True, timeout=180, env=env)
        self.assertTrue(os.path.isfile(shot), "no screenshot (rc %d): %s" %
                        (r.returncode, r.stderr[-2000:]))
        w, h, distinct = png_summary(shot)
        self.assertEqual((w, h), (1000, 700))
        self.assertGreater(os.path.getsize(shot), 8000, "screenshot suspiciously small")
        self.assertGreater(distinct, 40, "screenshot is (nearly) one colour: nothing rendered")
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            keep = os.path.join(self.sched.base_dir, "dashboard.png")
            shutil.copy(shot, keep)


class SchedOperatorsHttpTest(SchedTestCase):
    def test_operators_lists_the_running_operator(self):
        """A region with one replica gets a make-up-replica operator from
        the replica checker: /pd/api/v1/operators shows it, and the
        operator metrics count it."""
        sched = self.new_sched(env={"TKV_SCHED_PREPARE_MS": "0"}).start()
        port = sched.status_port()
        c = self.client(sched)
        ids = [c.alloc_id() for _ in range(3)]
        self.assertFalse(c.bootstrap(ids[0], "127.0.0.1:32000", node="a").header.HasField("error"))
        for i, sid in enumerate(ids[1:]):
            self.assertFalse(c.put_store(sid, "127.0.0.1:%d" % (32001 + i),
                                         node="n%d" % i).header.HasField("error"))
        rid, pid = c.alloc_id(), c.alloc_id()
        # keep the stream open: the operator's command comes back on it
        reqs = [c.heartbeat_req(rid, b"", b"", [(pid, ids[0])], ids[0])]
        list(c.stub.RegionHeartbeat(iter(reqs), timeout=RT))
        deadline = time.monotonic() + 15
        while True:
            ops = get_json(self, port, "/pd/api/v1/operators")
            if ops or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(len(ops), 1, ops)
        op = ops[0]
        self.assertEqual(op["region_id"], rid)
        self.assertEqual(op["kind"], "replica")
        self.assertEqual(op["status"], "RUNNING")
        self.assertEqual(op["steps"][0]["type"], "add_peer")
        self.assertIn(op["steps"][0]["store_id"], ids[1:])
        deadline = time.monotonic() + 10
        while True:
            _, body = http_get(port, "/metrics")
            text = body.decode()
            created = metric(text, "tinyscheduler_operators_total",
                             {"kind": "replica", "event": "created"})
            running = metric(text, "tinyscheduler_operators_running", {"kind": "replica"})
            if (created, running) == (1, 1) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual((created, running), (1, 1))
        self.assertGreater(metric(text, "tinyscheduler_patrol_duration_seconds_count"), 0)


class SchedWatchdogTest(SchedTestCase):
    def test_watchdog_fed_only_while_the_core_turns(self):
        """A fake systemd: NOTIFY_SOCKET + WATCHDOG_USEC=2 s. WATCHDOG=1
        arrives every ~1 s; with the core stuck 4 s per turn (failpoint
        sched/stall_core) /readyz says 503 and the pings stop for longer
        than the interval; after the core recovers they resume."""
        tmp = tempfile.mkdtemp(prefix="tkv-sched-wd-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.addCleanup(sock.close)
        fifo = os.path.join(tmp, "fiu")
        sched = self.new_sched(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000",
                                    "TKV_FIU_CTRL": fifo}).start()
        port = sched.status_port()

        def pings(seconds):
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

        self.assertGreaterEqual(len(pings(3.5)), 3, "watchdog (2 s) must be fed every ~1 s")
        fiu_ctrl = shutil.which("fiu-ctrl")
        if not fiu_ctrl or not os.path.exists("%s-%d.in" % (fifo, sched.proc.pid)):
            self.fail("fiu-ctrl (Debian fiu-utils) and a test build (failpoints) are needed")
        subprocess.run([fiu_ctrl, "-f", fifo, "-c",
                        "enable name=sched/stall_core,failinfo=4000", str(sched.proc.pid)],
                       check=True, timeout=30)
        start = time.monotonic()
        codes, stalled = set(), [start]
        while time.monotonic() < start + 7:
            code, body = http_get(port, "/readyz")
            codes.add(code)
            if code == 503:
                self.assertIn(b"event loop has not turned", body)
            stalled += pings(0.5)
        stalled.append(time.monotonic())
        self.assertIn(503, codes, "/readyz never noticed the stuck core")
        gaps = [b - a for a, b in zip(stalled, stalled[1:])]
        self.assertGreater(max(gaps), 2.0, "watchdog fed while the core was stuck: %s" % gaps)
        subprocess.run([fiu_ctrl, "-f", fifo, "-c", "disable name=sched/stall_core",
                        str(sched.proc.pid)], check=True, timeout=30)
        time.sleep(5)  # the last stalled turn finishes
        self.assertGreaterEqual(len(pings(3.5)), 3, "watchdog not fed again after recovery")
        self.assertEqual(http_get(port, "/readyz")[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
