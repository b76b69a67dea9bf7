# Power cut under the standalone tinykv-server: its data dir is on
# powercutfs; concurrent writers RawPut unique keys and remember every
# acknowledged one; the server is killed -9, the power is cut (everything not
# fsynced is dropped), the filesystem is mounted again, the server restarts on
# the same data dir and every acknowledged put must be there. Twice on the
# same data dir: the second time with --posix-dirs (names durable only after
# a directory fsync) and --persist-random 50 (a random half of the unsynced
# pages reach the disk at the cut), on top of what the first recovery left.
# Negative control (test builds): the same run with the engine/skip_fsync
# failpoint (TKV_FAILPOINTS, WiredTiger's log written but never fsynced) must
# lose acknowledged puts.
import os
import random
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "integration", "server"))
import pcfs  # noqa: E402

N_WRITERS = 6
WRITE_SECONDS = 2.0


class ServerPowerCut(unittest.TestCase):

    def setUp(self):
        import tkvtest  # needs TKV_PROTO_PY: imported once FUSE is known to work
        self.tkvtest = tkvtest
        self.base = pcfs.new_base("tkv-powercut-server-")
        self.fs = pcfs.PowerCutFS(self.base)
        self.fs.mount()
        self.srv = None

    def tearDown(self):
        if self.srv:
            self.srv.cleanup()
        self.fs.unmount()
        pcfs.remove_base(self.base)

    def server(self, env=None):
        srv = self.tkvtest.Server(cores=2, env=env)
        srv.data_dir = os.path.join(self.fs.mnt, "data")
        return srv

    def write_until_killed(self, srv, prefix):
        """Writers put flat out for WRITE_SECONDS, then the server is killed
        -9; returns the acknowledged keys."""
        from tkvtest import raw_put
        import grpc
        acked = [[] for _ in range(N_WRITERS)]
        stop = threading.Event()

        def writer(w):
            with srv.channel() as ch:
                i = 0
                while not stop.is_set():
                    k = b"pc/%s/%d/%07d" % (prefix, w, i)
                    try:
                        r = raw_put(ch, k, b"v" * 100 + k, timeout=10)
                    except grpc.RpcError:
                        return  # the server died under us: not acknowledged
                    if r.error or r.HasField("region_error"):
                        return
                    acked[w].append(k)
                    i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(N_WRITERS)]
        for t in threads:
            t.start()
        time.sleep(WRITE_SECONDS)
        srv.kill(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join()
        return [k for a in acked for k in a]

    def missing_after_restart(self, srv, keys):
        from tkvtest import raw_get
        srv.start()
        missing = []
        with srv.channel() as ch:
            for k in keys:
                r = raw_get(ch, k)
                self.assertFalse(r.error, "RawGet %r after the power cut: %s" % (k, r.error))
                if r.not_found or r.value != b"v" * 100 + k:
                    missing.append(k)
        self.assertEqual(srv.stop(), 0)
        return missing

    def power_cut_run(self, env=None, prefix=b"r0", earlier=()):
        """One run: start, write, kill -9, cut, remount, restart; returns
        this run's acknowledged keys and which of them and of `earlier`
        (keys acknowledged by previous runs) are missing."""
        self.srv = self.server(env)
        self.srv.start()
        if env and "failpoint engine/skip_fsync is on" not in self.srv.log_tail(400):
            self.skipTest("failpoints are compiled into test (Debug) builds only")
        keys = self.write_until_killed(self.srv, prefix)
        self.assertGreater(len(keys), 0, "no put was acknowledged before the kill")
        line = self.fs.cut()
        self.fs.mount()
        self.srv = self.server()  # restarted without any failpoint
        missing = self.missing_after_restart(self.srv, list(earlier) + keys)
        sys.stderr.write("%s%s: %d puts acknowledged, %d lost\n  fs: %s\n" %
                         ("engine/skip_fsync" if env else "normal",
                          " (posix dirs, persist-random %s)" % self.fs.persist_random
                          if self.fs.posix_dirs else "", len(keys), len(missing), line))
        return keys, missing

    def test_power_cut_keeps_every_acknowledged_put(self):
        keys, missing = self.power_cut_run()
        self.assertFalse(missing, "%d of %d acknowledged puts lost at a power cut; first: %r" %
                         (len(missing), len(keys), missing[:5]))
        # Again on the recovered data dir, names durable only after a
        # directory fsync this time.
        self.fs.unmount()
        self.fs.posix_dirs = True
        self.fs.persist_random = "50:%d" % random.randrange(1 << 31)
        self.fs.mount()
        keys2, missing = self.power_cut_run(prefix=b"r1", earlier=keys)
        self.assertFalse(missing, "%d of %d acknowledged puts lost at the second power cut "
                         "(--posix-dirs --persist-random %s); first: %r" %
                         (len(missing), len(keys) + len(keys2), self.fs.persist_random, missing[:5]))

    def test_negative_control_skip_fsync_loses_puts(self):
        keys, missing = self.power_cut_run({"TKV_FAILPOINTS": "engine/skip_fsync"})
        self.assertGreater(len(missing), 0,
                           "NEGATIVE CONTROL FAILED: with WiredTiger's log never fsynced, all %d "
                           "acknowledged puts survived the power cut: the test cannot catch a "
                           "missing fsync" % len(keys))


if __name__ == "__main__":
    pcfs.require_fuse()
    unittest.main(verbosity=2)
