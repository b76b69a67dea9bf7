# tinykv-ctl's scheduler verbs and the scheduler's POST /pd/api/v1/operators,
# against the real tinyscheduler-server and three tinykv-server nodes
# (cores 2, 1, 1: four stores on three nodes) on 127.0.0.1, free ports.
# Checks: `store list` / `region list` / `region KEY` / `operator show`
# tables and --json against the scheduler's own /pd/api/v1 answers;
# `operator add` with bad input (unknown region or store, peer already there,
# two replicas on one node, the only peer, a bad verb or id, the API
# unreachable) exits with a clear error and the right code, and the API
# answers bad bodies with 400 JSON errors; an add-peer is accepted and shows
# in /pd/api/v1/operators; when the nodes apply it (conf change), the peer
# appears, then a transfer-leader to it and a remove-peer of the old leader
# complete too. The scheduler's own schedulers are off (limits 0), so the
# region changes only by the operators of the test.
import json
import os
import sys
import time
import unittest
import urllib.parse

import clustertest
from clustertest import ctl
import tkvtest


def ctl_http(sched_http, *args, timeout=60):
    return clustertest.subprocess.run(
        [tkvtest.ctl_bin(), "--pd-http", sched_http, "--timeout", "20"] + list(args),
        capture_output=True, timeout=timeout)


def run_ctl(sched_http, *args):
    p = ctl_http(sched_http, *args)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def table(text):
    """Rows of an aligned table as dicts keyed by the header's columns
    (columns are separated by two or more spaces; cells hold none)."""
    import re
    lines = [l for l in text.splitlines() if l.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for l in lines[1:]:
        cells = re.split(r"\s{2,}", l.strip())
        if len(cells) != len(head):
            raise AssertionError("row %r does not match header %r" % (l, head))
        rows.append(dict(zip(head, cells)))
    return rows


class CtlAdmin(tkvtest.TkvTestCase):

    @classmethod
    def setUpClass(cls):
        cls.sched = clustertest.schedtest.Scheduler()
        conf = os.path.join(cls.sched.base_dir, "sched.toml")
        with open(conf, "w") as f:
            f.write("[schedule]\nreplica-schedule-limit = 0\nregion-schedule-limit = 0\n"
                    "leader-schedule-limit = 0\n")
        cls.sched.extra_args += ["-C", conf]
        cls.nodes = []
        try:
            cls.sched.start()
            cls.http_port = cls.sched.status_port()
            cls.http = "127.0.0.1:%d" % cls.http_port
            # one node at a time: the first one bootstraps the cluster
            for cores in (2, 1, 1):
                n = clustertest.Node(cls.sched, cores=cores)
                cls.nodes.append(n)
                n.start()
            cls.wait_stores(4)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            n.cleanup()
        cls.sched.cleanup()

    @classmethod
    def api(cls, path, method="GET", body=None):
        code, data, _ = tkvtest.http_request(cls.http_port, path, method, body=body)
        return code, json.loads(data.decode())

    @classmethod
    def wait_stores(cls, n, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, j = cls.api("/pd/api/v1/stores")
            up = [s for s in j.get("stores", []) if s["store"]["state_name"] == "Up"]
            code, r = cls.api("/pd/api/v1/regions")
            if len(up) == n and r["count"] >= 1 and "leader" in r["regions"][0]:
                return
            time.sleep(0.2)
        raise AssertionError("not %d Up stores and a region leader after %ds: %s" % (n, timeout, j))

    def store_ids_by_node(self):
        _, j = self.api("/pd/api/v1/stores")
        out = {}
        for s in j["stores"]:
            node = [l["value"] for l in s["store"]["labels"] if l["key"] == "node"][0]
            out.setdefault(node, []).append(s["store"]["id"])
        return out

    # ---- reads ----

    def test_store_list(self):
        rc, out, err = run_ctl(self.http, "store", "list", "--json")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        _, want = self.api("/pd/api/v1/stores")
        self.assertEqual(got["count"], 4)
        self.assertEqual(got["count"], want["count"])

        def stable(doc):  # heartbeat times and disk figures move between two calls
            return sorted((s["store"]["id"], s["store"]["address"], json.dumps(s["store"]["labels"]),
                           s["store"]["state_name"], s["status"]["region_count"],
                           s["status"]["leader_count"]) for s in doc["stores"])
        self.assertEqual(stable(got), stable(want))
        self.assertTrue(all(s["store"]["state_name"] == "Up" for s in got["stores"]))

        rc, out, err = run_ctl(self.http, "store", "list")
        self.assertEqual(rc, 0, err)
        rows = table(out)
        self.assertEqual(len(rows), 4, out)
        by_id = {int(r["ID"]): r for r in rows}
        for s in want["stores"]:
            r = by_id[s["store"]["id"]]
            self.assertEqual(r["ADDRESS"], s["store"]["address"])
            self.assertEqual(r["NODE"], [l["value"] for l in s["store"]["labels"]
                                         if l["key"] == "node"][0])
            self.assertEqual(r["STATE"], "Up")
            self.assertEqual(int(r["REGIONS"]), s["status"]["region_count"])
            self.assertEqual(int(r["LEADERS"]), s["status"]["leader_count"])
        # the first node's two stores share its node label, the others have their own
        self.assertEqual(sorted(len(v) for v in self.store_ids_by_node().values()), [1, 1, 2])

    def test_region_list_and_key(self):
        rc, out, err = run_ctl(self.http, "region", "list", "--json")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        _, want = self.api("/pd/api/v1/regions")
        strip = lambda d: [{k: v for k, v in r.items() if k != "approximate_size"}
                           for r in d["regions"]]
        self.assertEqual(strip(got), strip(want))
        self.assertGreaterEqual(got["count"], 1)

        rc, out, err = run_ctl(self.http, "region", "list")
        self.assertEqual(rc, 0, err)
        rows = table(out)
        self.assertEqual(len(rows), want["count"], out)
        for r, w in zip(rows, want["regions"]):
            self.assertEqual(int(r["ID"]), w["id"])
            self.assertEqual(r["START_KEY"], '""' if not w["start_key"] else r["START_KEY"])
            self.assertEqual(int(r["LEADER_STORE"]), w["leader"]["store_id"])
            self.assertEqual(r["PEERS(id@store)"],
                             ",".join("%d@%d" % (p["id"], p["store_id"]) for p in w["peers"]))
            self.assertEqual(r["CONF_VER/VERSION"],
                             "%d/%d" % (w["epoch"]["conf_ver"], w["epoch"]["version"]))

        first = want["regions"][0]
        # region KEY: table, --json (= /region/id/<id>), --hex with a NUL byte
        rc, out, err = run_ctl(self.http, "region", "abc")
        self.assertEqual(rc, 0, err)
        self.assertEqual(int(table(out)[0]["ID"]), first["id"])
        rc, out, err = run_ctl(self.http, "region", "abc", "--json")
        self.assertEqual(rc, 0, err)
        _, by_id = self.api("/pd/api/v1/region/id/%d" % first["id"])
        strip1 = lambda r: {k: v for k, v in r.items() if k != "approximate_size"}
        self.assertEqual(strip1(json.loads(out)), strip1(by_id))
        rc, out, err = run_ctl(self.http, "--hex", "region", "00ff2f25", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["id"], first["id"])
        # the API itself: PD's url-escaped key, a bad escape is a 400
        code, j = self.api("/pd/api/v1/region/key/" + urllib.parse.quote(b"a/b\x00c", safe=""))
        self.assertEqual((code, j["id"]), (200, first["id"]))
        code, j = self.api("/pd/api/v1/region/key/%zz")
        self.assertEqual(code, 400)
        self.assertIn("escape", j)

    # ---- operator add: refusals ----

    def assert_refused(self, args, code, *needles):
        rc, out, err = run_ctl(self.http, "operator", "add", *args)
        self.assertEqual(rc, code, "operator add %s: rc %d, out %r, err %r" % (args, rc, out, err))
        for n in needles:
            self.assertIn(n, err)
        self.assertEqual(out, "")

    def test_operator_add_1_refused(self):
        _, regions = self.api("/pd/api/v1/regions")
        r = regions["regions"][0]
        rid = r["id"]
        peer_stores = {p["store_id"] for p in r["peers"]}
        nodes = self.store_ids_by_node()
        _, stores = self.api("/pd/api/v1/stores")
        all_ids = {s["store"]["id"] for s in stores["stores"]}
        holder = r["leader"]["store_id"]
        self.assert_refused(["add-peer", "999999", str(holder)], 1, "region 999999 not found",
                            "HTTP 400")
        self.assert_refused(["add-peer", str(rid), "999999"], 1, "store 999999 not found")
        self.assert_refused(["add-peer", str(rid), str(holder)], 1,
                            "already has a peer on store %d" % holder)
        self.assert_refused(["remove-peer", str(rid), str(max(all_ids - peer_stores))], 1,
                            "has no peer on store")
        self.assert_refused(["transfer-leader", str(rid), str(holder)], 1, "already on store")
        # the node rule: a store of a node that already holds a replica
        for node, ids in nodes.items():
            clash = [s for s in ids if s not in peer_stores]
            if clash and any(s in peer_stores for s in ids):
                self.assert_refused(["add-peer", str(rid), str(clash[0])], 1,
                                    "two replicas on one node")
                break
        else:
            self.fail("no store shares a node with a replica of region %d: %s" % (rid, nodes))
        if len(r["peers"]) == 1:
            self.assert_refused(["remove-peer", str(rid), str(holder)], 1, "only peer")
            other = sorted(all_ids - peer_stores)[0]
            self.assert_refused(["transfer-leader", str(rid), str(other)], 1,
                                "has no peer on store %d" % other)
        # usage errors: exit 2, nothing sent
        self.assert_refused(["move-everything", str(rid), "1"], 2, "unknown operator")
        self.assert_refused(["add-peer", "x", "1"], 2, "positive integers")
        self.assert_refused(["add-peer", str(rid), "0"], 2, "positive integers")
        self.assert_refused(["add-peer", str(rid)], 2, "expected")
        # the API unreachable
        port = tkvtest.free_port()
        p = ctl_http("127.0.0.1:%d" % port, "operator", "add", "add-peer", str(rid), "1")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"no answer from the scheduler's HTTP API", p.stderr)
        # the raw API: bad bodies are 400 with a JSON string, other methods 405
        for body, needle in [(b"{", "invalid JSON"), (b"[1]", "expected an object"),
                             (b'{"region_id":1,"store_id":1}', "missing \"name\""),
                             (b'{"name":"split-region","region_id":1}', "unknown operator name"),
                             (b'{"name":"add-peer","region_id":"1","store_id":1}',
                              "positive integers"),
                             (b'{"name":"transfer-leader","region_id":1,"store_id":1}',
                              "to_store_id")]:
            code, j = self.api("/pd/api/v1/operators", "POST", body)
            self.assertEqual(code, 400, (body, j))
            self.assertIsInstance(j, str)
            self.assertIn(needle, j)
        code, j = self.api("/pd/api/v1/operators", "PUT", b"{}")
        self.assertEqual(code, 405)
        code, data, _ = tkvtest.http_request(self.http_port, "/pd/api/v1/operators", "POST",
                                             body=b"x" * 10000)
        self.assertEqual(code, 413)
        # nothing of this created an operator of the administrator
        _, ops = self.api("/pd/api/v1/operators")
        self.assertFalse([o for o in ops if o["desc"].startswith("admin-")], ops)

    # ---- operator add: accepted ----

    def wait_region(self, rid, pred, timeout=30):
        deadline = time.monotonic() + timeout
        j = None
        while time.monotonic() < deadline:
            _, j = self.api("/pd/api/v1/region/id/%d" % rid)
            if pred(j):
                return j
            time.sleep(0.2)
        return None

    def running_ops(self, rid):
        _, ops = self.api("/pd/api/v1/operators")
        return [o for o in ops if o["region_id"] == rid]

    def test_operator_add_2_accepted(self):
        _, regions = self.api("/pd/api/v1/regions")
        r = regions["regions"][0]
        rid = r["id"]
        self.assertEqual(len(r["peers"]), 1, "the schedulers are off: region %d keeps its one "
                         "peer: %s" % (rid, r))
        old_leader = r["leader"]["store_id"]
        nodes = self.store_ids_by_node()
        target = [ids for ids in nodes.values() if old_leader not in ids][0][0]
        rc, out, err = run_ctl(self.http, "operator", "add", "add-peer", str(rid), str(target))
        self.assertEqual(rc, 0, err)
        row = table(out)[0]
        self.assertEqual((int(row["REGION"]), row["DESC"]), (rid, "admin-add-peer"))
        self.assertIn("add_peer(store %d, peer " % target, row["STEPS"])
        mine = self.running_ops(rid)
        if mine:  # (a fast node may have applied it already)
            self.assertEqual(len(mine), 1, mine)
            self.assertEqual(mine[0]["desc"], "admin-add-peer")
            self.assertEqual(mine[0]["steps"][0]["type"], "add_peer")
            self.assertEqual(mine[0]["steps"][0]["store_id"], target)
            # (the node carries the step out at once: assert only what was
            # shown while the operator still ran afterwards)
            rc, out, err = run_ctl(self.http, "operator", "show", "--json")
            self.assertEqual(rc, 0, err)
            if self.running_ops(rid):
                self.assertIn(mine[0]["steps"], [o["steps"] for o in json.loads(out)])
            rc, out, err = run_ctl(self.http, "operator", "show")
            if self.running_ops(rid):
                self.assertIn("admin-add-peer", out)
            # a second administrator's operator on the region waits for the first
            rc, out, err = run_ctl(self.http, "operator", "add", "add-peer", str(rid),
                                   str(target))
            if self.running_ops(rid):
                self.assertEqual(rc, 1)
                self.assertIn("already has a running operator (admin-add-peer)", err)

        # Whether the nodes apply it depends on conf change (issue 10 item 1).
        has = lambda j: any(p["store_id"] == target for p in j["peers"]) and \
            not any(p["store_id"] == target for p in j.get("pending_peers", []))
        j = self.wait_region(rid, has)
        if j is None:
            sys.stderr.write("add-peer accepted but not applied within 30 s (no conf change in "
                             "this build?): completion not checked\n")
            return
        self.assertEqual(self.running_ops(rid), [], "the add-peer operator did not finish")
        # the leader to the new peer, then the old leader's peer away
        rc, out, err = run_ctl(self.http, "--json", "operator", "add", "transfer-leader",
                               str(rid), str(target))
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["desc"], "admin-transfer-leader")
        self.assertIsNotNone(self.wait_region(rid, lambda j: j["leader"]["store_id"] == target),
                             "the leader did not move to store %d in 30 s" % target)
        rc, out, err = run_ctl(self.http, "operator", "add", "remove-peer", str(rid),
                               str(old_leader))
        self.assertEqual(rc, 0, err)
        j = self.wait_region(rid, lambda j: [p["store_id"] for p in j["peers"]] == [target])
        self.assertIsNotNone(j, "the peer on store %d was not removed in 30 s" % old_leader)


if __name__ == "__main__":
    unittest.main(verbosity=2)
