# TinyKV project-1 scenarios (kv/server/server_test.go, TINYKV-API.md 3.1 and
# 2.3) against the real standalone tinykv-server over gRPC, plus the Raw API
# edges: cf names, not_found, RawScan start_key/limit, snapshot scans.
import threading

import tkvtest
from tkvtest import raw_delete, raw_get, raw_put, raw_scan


class RawApi(tkvtest.ServerTestCase):
    cores = 2

    def scan_prefix(self, prefix, start, limit, cf=""):
        """RawScan from start; checks global order, returns the pairs that
        belong to this test's key prefix (other tests share the server)."""
        r = self.assert_ok(raw_scan(self.ch, start, limit, cf=cf))
        keys = [kv.key for kv in r.kvs]
        self.assertLessEqual(len(keys), limit, "RawScan returned more than limit")
        self.assertEqual(keys, sorted(keys), "RawScan not in ascending key order")
        self.assertEqual(len(set(keys)), len(keys), "RawScan returned a key twice")
        self.assertTrue(all(k >= start for k in keys), "RawScan returned a key below start_key")
        mine = [(kv.key, kv.value) for kv in r.kvs if kv.key.startswith(prefix)]
        # This prefix's keys must come first: nothing else sorts between them.
        self.assertEqual([k for k, _ in mine], keys[:len(mine)])
        return mine

    # ---- the ten project-1 tests ----

    def test_raw_get1(self):
        self.assert_ok(raw_put(self.ch, b"get1/42", b"42"))
        r = self.assert_ok(raw_get(self.ch, b"get1/42"))
        self.assertFalse(r.not_found)
        self.assertEqual(r.value, b"42")

    def test_raw_get_not_found1(self):
        r = self.assert_ok(raw_get(self.ch, b"notfound1/99"))
        self.assertTrue(r.not_found)
        self.assertEqual(r.value, b"")

    def test_raw_put1(self):
        self.assert_ok(raw_put(self.ch, b"put1/99", b"42"))
        r = self.assert_ok(raw_get(self.ch, b"put1/99"))
        self.assertEqual((r.not_found, r.value), (False, b"42"))

    def test_raw_get_after_raw_put1(self):
        self.assert_ok(raw_put(self.ch, b"gap1/2", b"42"))
        self.assert_ok(raw_put(self.ch, b"gap1/3", b"43"))
        self.assertEqual(self.assert_ok(raw_get(self.ch, b"gap1/2")).value, b"42")
        self.assertEqual(self.assert_ok(raw_get(self.ch, b"gap1/3")).value, b"43")

    def test_raw_get_after_raw_delete1(self):
        self.assert_ok(raw_put(self.ch, b"gad1/2", b"42"))
        self.assert_ok(raw_delete(self.ch, b"gad1/2"))
        r = self.assert_ok(raw_get(self.ch, b"gad1/2"))
        self.assertTrue(r.not_found)
        self.assertEqual(r.value, b"")

    def test_raw_delete1(self):
        self.assert_ok(raw_put(self.ch, b"del1/99", b"42"))
        self.assert_ok(raw_delete(self.ch, b"del1/99"))
        self.assertTrue(self.assert_ok(raw_get(self.ch, b"del1/99")).not_found)
        # Deleting a missing key is fine (TINYKV-API.md 2.3).
        self.assert_ok(raw_delete(self.ch, b"del1/never-written"))

    def test_raw_scan1(self):
        for i in range(1, 6):
            self.assert_ok(raw_put(self.ch, b"scan1/%d" % i, b"%d" % (i * 10)))
        got = self.scan_prefix(b"scan1/", b"scan1/1", 3)
        self.assertEqual(got, [(b"scan1/1", b"10"), (b"scan1/2", b"20"), (b"scan1/3", b"30")])

    def test_raw_scan_after_raw_put1(self):
        for i in range(1, 6):
            self.assert_ok(raw_put(self.ch, b"sap1/%d" % i, b"%d" % (i * 10)))
        self.assert_ok(raw_put(self.ch, b"sap1/6", b"60"))
        got = self.scan_prefix(b"sap1/", b"sap1/1", 10)
        self.assertEqual(got, [(b"sap1/%d" % i, b"%d" % (i * 10)) for i in range(1, 7)])

    def test_raw_scan_after_raw_delete1(self):
        for i in range(1, 5):
            self.assert_ok(raw_put(self.ch, b"sad1/%d" % i, b"%d" % (i * 10)))
        self.assert_ok(raw_delete(self.ch, b"sad1/3"))
        got = self.scan_prefix(b"sad1/", b"sad1/1", 10)
        self.assertEqual(got, [(b"sad1/1", b"10"), (b"sad1/2", b"20"), (b"sad1/4", b"40")])

    def test_iter_with_raw_delete1(self):
        """TestIterWithRawDelete1 asks that an iterator opened before a
        RawDelete still sees the key. Over the wire that becomes: every
        RawScan reads one consistent snapshot while another client writes.
        A token moves between the first key A and the last key Z of a range
        (with filler keys between): put the new place, then delete the old
        one. Every snapshot holds A or Z (or both); a scan that walked the
        live tree could read A after the token left it and reach Z after it
        left Z again, and return neither."""
        first, last = b"iwd1/a", b"iwd1/z"
        fillers = [b"iwd1/m%04d" % i for i in range(500)]
        for k in fillers + [first]:
            self.assert_ok(raw_put(self.ch, k, b"f"))
        stop = threading.Event()
        errors = []
        n_moves = [0]

        def writer():
            # Several connections, used in turn, so that some writes land on
            # another server core than the scans (SO_REUSEPORT hashing).
            chans = [self.srv.channel() for _ in range(4)]
            try:
                at, other = first, last
                while not stop.is_set():
                    ch = chans[n_moves[0] % len(chans)]
                    for r in (raw_put(ch, other, b"token"), raw_delete(ch, at)):
                        if r.error or r.HasField("region_error"):
                            errors.append("writer: %s" % r)
                            return
                    at, other = other, at
                    n_moves[0] += 1
            finally:
                for ch in chans:
                    ch.close()

        t = threading.Thread(target=writer)
        t.start()
        n_scans = 0
        try:
            for _ in range(150):
                got = dict(self.scan_prefix(b"iwd1/", b"iwd1/", 1000))
                self.assertEqual(len([k for k in got if k in fillers]), len(fillers), "fillers missing")
                self.assertTrue(first in got or last in got,
                                "RawScan is not a snapshot: the token is in neither %r nor %r" % (first, last))
                n_scans += 1
        finally:
            stop.set()
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(n_scans, 150)
        self.assertGreater(n_moves[0], 0, "the writer never ran concurrently")

    # ---- column families ----

    def test_cf_empty_is_default(self):
        self.assert_ok(raw_put(self.ch, b"cf/a", b"via-empty", cf=""))
        r = self.assert_ok(raw_get(self.ch, b"cf/a", cf="default"))
        self.assertEqual((r.not_found, r.value), (False, b"via-empty"))
        self.assert_ok(raw_put(self.ch, b"cf/b", b"via-default", cf="default"))
        self.assertEqual(self.assert_ok(raw_get(self.ch, b"cf/b", cf="")).value, b"via-default")
        got = self.scan_prefix(b"cf/", b"cf/", 10, cf="default")
        self.assertIn((b"cf/a", b"via-empty"), got)

    def test_cf_are_separate_namespaces(self):
        for cf in ("default", "lock", "write"):
            self.assert_ok(raw_put(self.ch, b"cfsep/k", cf.encode(), cf=cf))
        for cf in ("default", "lock", "write"):
            r = self.assert_ok(raw_get(self.ch, b"cfsep/k", cf=cf))
            self.assertEqual(r.value, cf.encode(), "cf %s" % cf)
        self.assert_ok(raw_delete(self.ch, b"cfsep/k", cf="lock"))
        self.assertTrue(self.assert_ok(raw_get(self.ch, b"cfsep/k", cf="lock")).not_found)
        self.assertEqual(self.assert_ok(raw_get(self.ch, b"cfsep/k", cf="write")).value, b"write")
        self.assertEqual(self.scan_prefix(b"cfsep/", b"cfsep/", 5, cf="write"), [(b"cfsep/k", b"write")])

    def test_unknown_cf_is_error_string(self):
        for name, resp in [
                ("RawGet", raw_get(self.ch, b"ucf/k", cf="nope")),
                ("RawPut", raw_put(self.ch, b"ucf/k", b"v", cf="nope")),
                ("RawDelete", raw_delete(self.ch, b"ucf/k", cf="nope")),
                ("RawScan", raw_scan(self.ch, b"ucf/", 10, cf="nope"))]:
            self.assertNotEqual(resp.error, "", "%s with unknown cf answered no error" % name)
            self.assertIn("nope", resp.error, "%s error should name the cf" % name)
        # The failed put wrote nothing anywhere.
        for cf in ("default", "lock", "write"):
            self.assertTrue(self.assert_ok(raw_get(self.ch, b"ucf/k", cf=cf)).not_found)

    # ---- RawScan start_key and limit ----

    def test_scan_limit_zero_returns_nothing(self):
        self.assert_ok(raw_put(self.ch, b"lim0/1", b"x"))
        r = self.assert_ok(raw_scan(self.ch, b"lim0/", 0))
        self.assertEqual(len(r.kvs), 0)

    def test_scan_start_key_inclusive_and_between(self):
        for i in (1, 3, 5):
            self.assert_ok(raw_put(self.ch, b"sk/%d" % i, b"%d" % i))
        self.assertEqual([k for k, _ in self.scan_prefix(b"sk/", b"sk/3", 2)], [b"sk/3", b"sk/5"])
        self.assertEqual([k for k, _ in self.scan_prefix(b"sk/", b"sk/2", 1)], [b"sk/3"])
        self.assertEqual([k for k, _ in self.scan_prefix(b"sk/", b"sk/", 3)], [b"sk/1", b"sk/3", b"sk/5"])

    def test_scan_past_the_end_is_empty(self):
        self.assert_ok(raw_put(self.ch, b"\xff\xfe", b"last"))
        r = self.assert_ok(raw_scan(self.ch, b"\xff\xff\xff", 10))
        self.assertEqual(len(r.kvs), 0)
        r = self.assert_ok(raw_scan(self.ch, b"\xff\xfe", 10))
        self.assertEqual([(kv.key, kv.value) for kv in r.kvs], [(b"\xff\xfe", b"last")])

    def test_scan_limit_caps_a_large_range(self):
        for i in range(40):
            self.assert_ok(raw_put(self.ch, b"big/%02d" % i, b"v%d" % i))
        got = self.scan_prefix(b"big/", b"big/", 25)
        self.assertEqual([k for k, _ in got], [b"big/%02d" % i for i in range(25)])

    # ---- values and keys ----

    def test_binary_keys_and_values(self):
        k = bytes(range(256))
        v = bytes(reversed(range(256))) * 3
        self.assert_ok(raw_put(self.ch, k, v))
        self.assertEqual(self.assert_ok(raw_get(self.ch, k)).value, v)
        self.assertTrue(self.assert_ok(raw_get(self.ch, k[:-1])).not_found)

    def test_overwrite_and_large_value(self):
        self.assert_ok(raw_put(self.ch, b"ow/k", b"one"))
        self.assert_ok(raw_put(self.ch, b"ow/k", b"two"))
        self.assertEqual(self.assert_ok(raw_get(self.ch, b"ow/k")).value, b"two")
        big = bytes((i * 7) & 0xFF for i in range(1 << 20))
        self.assert_ok(raw_put(self.ch, b"ow/big", big))
        self.assertEqual(self.assert_ok(raw_get(self.ch, b"ow/big")).value, big)

    def test_clean_shutdown_keeps_data(self):
        """Runs in its own server: SIGTERM exits 0, a restart serves the data."""
        srv = tkvtest.Server(cores=2)
        try:
            srv.start()
            with srv.channel() as ch:
                for i in range(20):
                    self.assert_ok(raw_put(ch, b"shut/%02d" % i, b"%d" % i))
                self.assert_ok(raw_delete(ch, b"shut/07"))
            self.assertEqual(srv.stop(), 0, "SIGTERM should exit 0; log:\n" + srv.log_tail())
            srv.start()
            with srv.channel() as ch:
                r = self.assert_ok(raw_scan(ch, b"shut/", 100))
                self.assertEqual([kv.key for kv in r.kvs if kv.key.startswith(b"shut/")],
                                 [b"shut/%02d" % i for i in range(20) if i != 7])
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.cleanup()


if __name__ == "__main__":
    tkvtest.main()
