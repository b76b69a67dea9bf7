# Power cut under the raft log (src/raftlog, synchronous and io_uring paths)
# and the engine (src/engine, WiredTiger in sync mode): tkv-powercut-driver writes on powercutfs and
# reports every step its module acknowledged as durable; it is killed -9 at a
# random moment, the power is cut (everything not fsynced is dropped), the
# filesystem is mounted again, and every acknowledged step must be there.
# Negative control: with the module's skip_fsync failpoint (test builds) the
# same run must lose acknowledged steps -- and kill -9 alone, without the
# cut, must not (that is why the power cut is needed).
# TKV_SEED=<n> replays the kill timing; TKV_POWERCUT_ROUNDS (default 3: the
# second round mounts with --posix-dirs, the third with --persist-random 50,
# a random half of the unsynced pages reaching the disk at the cut).
import os
import random
import select
import signal
import subprocess
import sys
import time
import unittest

import pcfs

ROUNDS = int(os.environ.get("TKV_POWERCUT_ROUNDS", "3"))
FAILPOINTS = {"raftlog": "raftlog/skip_fsync", "raftlog-uring": "raftlog/skip_fsync",
              "engine": "engine/skip_fsync"}


def driver_bin():
    b = os.environ.get("TKV_POWERCUT_DRIVER")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("TKV_POWERCUT_DRIVER must name tkv-powercut-driver (got %r)" % b)
    return b


class StoragePowerCut(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        seed = int(os.environ.get("TKV_SEED", "0")) or random.randrange(1 << 30)
        sys.stderr.write("TKV_SEED=%d\n" % seed)
        cls.rng = random.Random(seed)
        cls.seed = seed

    def setUp(self):
        self.base = pcfs.new_base("tkv-powercut-storage-")
        self.fs = pcfs.PowerCutFS(self.base)
        self.fs.mount()

    def tearDown(self):
        self.fs.unmount()
        pcfs.remove_base(self.base)

    def run_writer(self, module, subdir, failpoint=None, min_acks=200):
        """Starts the driver, lets it acknowledge at least min_acks steps,
        then a random 0.2-1.2 s more, kills it with SIGKILL and returns the
        number of acknowledged steps (every ack line printed counts: it was
        printed after the step was durable)."""
        env = dict(os.environ)
        env.pop("TKV_POWERCUT_FAILPOINT", None)
        if failpoint:
            env["TKV_POWERCUT_FAILPOINT"] = failpoint
        err = open(os.path.join(self.base, "driver-%s.err" % subdir), "wb")
        p = subprocess.Popen([driver_bin(), "write", module, os.path.join(self.fs.mnt, subdir)],
                             stdout=subprocess.PIPE, stderr=err, env=env)
        err.close()
        acked, buf = 0, b""
        kill_at = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if kill_at is None and acked >= min_acks:
                kill_at = time.monotonic() + self.rng.uniform(0.2, 1.2)
            if kill_at is not None and time.monotonic() >= kill_at:
                break
            r, _, _ = select.select([p.stdout], [], [], 0.05)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                for ln in lines:
                    acked = int(ln.split()[1])
        p.send_signal(signal.SIGKILL)
        rest = p.stdout.read()  # acks already in the pipe count
        p.wait()
        p.stdout.close()
        for ln in (buf + rest).split(b"\n"):
            if ln.startswith(b"ack "):
                acked = int(ln.split()[1])
        if p.returncode == 4:
            self.skipTest("io_uring is unavailable here: %s" % self.driver_err(subdir).strip())
        if failpoint and p.returncode == 3:
            self.skipTest("failpoints are compiled into test (Debug) builds only")
        self.assertEqual(p.returncode, -signal.SIGKILL,
                         "the %s driver exited by itself (%d) before the kill:\n%s" %
                         (module, p.returncode, self.driver_err(subdir)))
        self.assertGreaterEqual(acked, min_acks, "the %s driver acknowledged only %d steps in 60 s" %
                                (module, acked))
        return acked

    def driver_err(self, subdir):
        try:
            with open(os.path.join(self.base, "driver-%s.err" % subdir), "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def verify(self, module, subdir, acked):
        r = subprocess.run([driver_bin(), "verify", module, os.path.join(self.fs.mnt, subdir),
                            str(acked)], capture_output=True, timeout=120)
        out = r.stdout.decode("utf-8", "replace").strip()
        return r.returncode, out, r.stderr.decode("utf-8", "replace")[-2000:]

    def power_cut_round(self, module, subdir, failpoint=None, cut=True):
        acked = self.run_writer(module, subdir, failpoint)
        if cut:
            line = self.fs.cut()
        else:
            self.fs.unmount()  # kill -9 only: the page cache survives
            line = "(no power cut: clean unmount after kill -9)"
        self.fs.mount()
        rc, out, err = self.verify(module, subdir, acked)
        sys.stderr.write("%s%s%s%s: %s\n  fs: %s\n" % (
            module, " [%s]" % failpoint if failpoint else "",
            " (posix dirs)" if self.fs.posix_dirs else "",
            " (persist-random %s)" % self.fs.persist_random if self.fs.persist_random else "",
            out, line))
        return rc, out, err

    def check_keeps_everything(self, module):
        for i in range(ROUNDS):
            # Round 1 (mod 3) with --posix-dirs: names durable only after a
            # directory fsync; round 2 with --persist-random 50: some
            # unsynced pages (a torn tail) reach the disk too.
            posix = i % 3 == 1
            persist = "50:%d" % self.rng.randrange(1 << 31) if i % 3 == 2 else None
            if self.fs.posix_dirs != posix or self.fs.persist_random != persist:
                self.fs.unmount()
                self.fs.posix_dirs, self.fs.persist_random = posix, persist
                self.fs.mount()
            rc, out, err = self.power_cut_round(module, "%s-%d" % (module, i))
            self.assertEqual(rc, 0, "seed %d round %d: %s lost acknowledged data at a power cut:\n%s\n%s" %
                             (self.seed, i, module, out, err))

    def check_negative_control(self, module):
        fp = FAILPOINTS[module]
        # kill -9 alone cannot see the missing fsync: the page cache survives.
        rc, out, err = self.power_cut_round(module, "%s-killonly" % module, fp, cut=False)
        self.assertEqual(rc, 0, "with %s and kill -9 only (no power cut) nothing may be lost:\n%s\n%s" %
                         (fp, out, err))
        # The power cut must.
        rc, out, err = self.power_cut_round(module, "%s-skip" % module, fp)
        self.assertEqual(rc, 1, "NEGATIVE CONTROL FAILED: with %s the power cut did not detect lost "
                         "acknowledged data (rc %d):\n%s\n%s" % (fp, rc, out, err))
        lost = int(out.split("lost ")[1].split(",")[0])
        self.assertGreater(lost, 0, out)

    def test_raftlog_negative_control_skip_dir_fsync_loses_segments(self):
        """raftlog/skip_dir_fsync: segment creations (and purges) are never
        made durable by a directory fsync. Only --posix-dirs catches it:
        ext4-like, the segment's own fdatasync commits its name."""
        self.check_skip_dir_fsync("raftlog")

    def test_raftlog_uring_negative_control_skip_dir_fsync_loses_segments(self):
        """The same on the io_uring path, where segments are prepared ahead
        and renamed into place off the loop (renameat + directory fsync on
        io_uring): without the directory fsync they must be lost."""
        self.check_skip_dir_fsync("raftlog-uring")

    def check_skip_dir_fsync(self, module):
        fp = "raftlog/skip_dir_fsync"
        rc, out, err = self.power_cut_round(module, "dirsync-ext4", fp)
        self.assertEqual(rc, 0, "ext4-like names: the data fsync commits the segment's name, "
                         "nothing may be lost:\n%s\n%s" % (out, err))
        self.fs.unmount()
        self.fs.posix_dirs = True
        self.fs.mount()
        rc, out, err = self.power_cut_round(module, "dirsync-posix", fp)
        self.assertIn(rc, (1, 2), "NEGATIVE CONTROL FAILED: with %s and --posix-dirs the power cut "
                      "did not detect lost segments (rc %d):\n%s\n%s" % (fp, rc, out, err))

    def test_raftlog_keeps_every_synced_entry(self):
        self.check_keeps_everything("raftlog")

    def test_raftlog_uring_keeps_every_synced_entry(self):
        self.check_keeps_everything("raftlog-uring")

    def test_engine_keeps_every_acknowledged_write(self):
        self.check_keeps_everything("engine")

    def test_raftlog_negative_control_skip_fsync_loses_entries(self):
        self.check_negative_control("raftlog")

    def test_raftlog_uring_negative_control_skip_fsync_loses_entries(self):
        self.check_negative_control("raftlog-uring")

    def test_engine_negative_control_skip_fsync_loses_writes(self):
        self.check_negative_control("engine")


if __name__ == "__main__":
    pcfs.require_fuse()
    unittest.main(verbosity=2)
