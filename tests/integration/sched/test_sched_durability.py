# Durable state of the real binary: after kill -9 (under AllocID and Tso
# load) and a restart on the same data dir: the same cluster id, no id ever
# handed out twice, every timestamp strictly greater than before the crash
# (also with the wall clock a day behind: faketime), stores, GC safe point,
# cluster config and regions known before any heartbeat. Plus: SIGTERM is a
# clean exit 0, a bad config exits 2.
import os
import subprocess
import threading
import time
import unittest

import grpc

import schedtest
from schedtest import metapb, pb, ts

RT = schedtest.RPC_TIMEOUT


LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime_env(spec):
    """Environment that runs the server under libfaketime with the wall
    clock at `spec` (e.g. "-1d"), preloaded directly: the faketime wrapper
    program forks, so killing it would orphan the server. Monotonic clocks
    stay real (the reactor's timers use them); ASan must otherwise come
    first in the link order."""
    if not os.path.exists(LIBFAKETIME):
        return None
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": spec, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}


class Durability(schedtest.SchedTestCase):

    def load(self, sched, stop, ids, tss, errors):
        """AllocID and Tso flat out until stop or the server dies."""
        def ider():
            c = schedtest.Client(sched)
            try:
                while not stop.is_set():
                    ids.append(c.alloc_id())
            except grpc.RpcError:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                c.close()

        def tsoer():
            c = schedtest.Client(sched)
            try:
                def reqs():
                    while not stop.is_set():
                        yield pb.TsoRequest(header=c.h, count=7)
                for r in c.stub.Tso(reqs(), timeout=120):
                    tss.append(ts(r.timestamp.physical, r.timestamp.logical))
            except grpc.RpcError:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                c.close()

        return [threading.Thread(target=ider), threading.Thread(target=tsoer)]

    def test_kill9_keeps_ids_tso_and_metadata(self):
        s = self.new_sched()
        s.start()
        c = schedtest.Client(s)
        cid = c.cluster_id
        sid = c.alloc_id()
        self.assertFalse(c.bootstrap(sid, "127.0.0.1:40001", node="n1").header.HasField("error"))
        sid2 = c.alloc_id()
        self.assertFalse(c.put_store(sid2, "127.0.0.1:40002", node="n2").header.HasField("error"))
        c.stub.UpdateGCSafePoint(pb.UpdateGCSafePointRequest(header=c.h, safe_point=4242), timeout=RT)
        c.stub.PutClusterConfig(pb.PutClusterConfigRequest(
            header=c.h, cluster=metapb.Cluster(id=cid, max_peer_count=2)), timeout=RT)
        hbs = [c.heartbeat_req(100, b"", b"m", [(101, sid), (102, sid2)], sid, conf_ver=3, version=4,
                               size_mb=20),
               c.heartbeat_req(200, b"m", b"", [(201, sid), (202, sid2)], sid2, conf_ver=3, version=4)]
        list(c.stub.RegionHeartbeat(iter(hbs), timeout=RT))
        time.sleep(0.5)  # region metas are flushed every 100 ms
        c.close()

        all_ids, all_ts = [], []
        for round_ in range(3):
            stop = threading.Event()
            ids, tss, errors = [], [], []
            threads = self.load(s, stop, ids, tss, errors)
            for t in threads:
                t.start()
            time.sleep(1.0)
            s.kill()  # SIGKILL mid-load
            stop.set()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            self.assertTrue(ids and tss, "no load reached the server in round %d" % round_)
            all_ids.extend(ids)
            all_ts.extend(tss)
            s.start()
            c = schedtest.Client(s)
            try:
                self.assertEqual(c.cluster_id, cid, "cluster id changed across kill -9")
                new_id = c.alloc_id()
                self.assertGreater(new_id, max(all_ids), "AllocID handed out an old id")
                (p, l, _), = c.tso([1])
                self.assertGreater(ts(p, l), max(all_ts), "TSO went back across kill -9")
                self.assertTrue(c.stub.IsBootstrapped(pb.IsBootstrappedRequest(header=c.h),
                                                      timeout=RT).bootstrapped)
                st = c.stub.GetStore(pb.GetStoreRequest(header=c.h, store_id=sid2), timeout=RT)
                self.assertEqual(st.store.address, "127.0.0.1:40002")
                self.assertEqual(st.store.labels[0].value, "n2")
                self.assertEqual(c.stub.GetGCSafePoint(pb.GetGCSafePointRequest(header=c.h),
                                                       timeout=RT).safe_point, 4242)
                cfg = c.stub.GetClusterConfig(pb.GetClusterConfigRequest(header=c.h), timeout=RT)
                self.assertEqual(cfg.cluster.max_peer_count, 2)
                # Regions are known before any heartbeat after the restart.
                r = c.stub.GetRegion(pb.GetRegionRequest(header=c.h, region_key=b"zz"), timeout=RT)
                self.assertEqual(r.region.id, 200)
                self.assertEqual(r.leader.store_id, sid2)
                self.assertEqual(r.region.region_epoch.version, 4)
                all_ids.append(new_id)
                all_ts.append(ts(p, l))
            finally:
                c.close()
        self.assertEqual(len(all_ids), len(set(all_ids)), "an id was handed out twice")
        self.assertEqual(len(all_ts), len(set(all_ts)), "a timestamp was handed out twice")

    def test_restart_with_clock_a_day_behind(self):
        env = faketime_env("-1d")
        if env is None:
            self.skipTest("libfaketime not installed (Debian package faketime)")
        s = self.new_sched()
        s.start()
        c = schedtest.Client(s)
        before = max(ts(p, l) for p, l, _ in c.tso([5] * 50))
        c.close()
        s.kill()
        s.start(env=env)
        c = schedtest.Client(s)
        try:
            t0 = time.monotonic()
            out = c.tso([5] * 200)
            elapsed = time.monotonic() - t0
            got = [ts(p, l) for p, l, _ in out]
            self.assertGreater(got[0], before, "TSO went back when the clock is a day behind")
            self.assertEqual(got, sorted(got))
            self.assertEqual(len(set(got)), len(got))
            # The wall clock really is a day behind in that process: the
            # physical part stays at the persisted floor (only the logical
            # part moves) instead of following real time.
            if elapsed > 0.05:
                self.assertLessEqual(out[-1][0] - out[0][0], 1,
                                     "physical part followed the real clock: faketime not in effect?")
        finally:
            c.close()
        s.kill()
        # And back to the real clock: still increasing.
        s.start()
        c = schedtest.Client(s)
        try:
            (p, l, _), = c.tso([1])
            self.assertGreater(ts(p, l), max(got))
        finally:
            c.close()

    def test_sigterm_is_a_clean_exit(self):
        s = self.new_sched()
        s.start()
        c = schedtest.Client(s)
        c.alloc_id()
        c.close()
        self.assertEqual(s.stop(), 0)
        with open(s.log_path, "rb") as f:
            log = f.read()
        self.assertIn(b"tinyscheduler-server stopped", log)

    def test_bad_config_exits_2(self):
        b = schedtest.sched_bin()
        r = subprocess.run([b, "--no-such-flag"], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = subprocess.run([b, "--config-check"], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run([b, "--version"], capture_output=True, timeout=60)
        self.assertIn(b"tinyscheduler-server", r.stdout)

    def test_second_server_on_same_port_refused(self):
        s = self.new_sched()
        s.start()
        d = os.path.join(s.base_dir, "other")
        r = subprocess.run([schedtest.sched_bin(), "--client-urls", "http://" + s.addr,
                            "--data-dir", d], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"in use", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
