# Disk full (issue 13 item 1). The server used to acknowledge puts until
# WiredTiger hit ENOSPC, panicked and the process aborted; a restart on the
# still-full disk failed. Now (storage.reserve-space, src/server/README.md
# "Disk full"): writes are refused with "disk full" (RawPut/RawDelete: the
# response's error string; Kv writes: gRPC RESOURCE_EXHAUSTED) while free
# space is still there for the engine, reads keep being served, writes
# resume by themselves when space comes back, and a kill -9 + restart on the
# nearly full disk serves every acknowledged write.
#
# The data dir is a 64 MiB tmpfs mounted here (needs root; skipped with a
# message otherwise); a filler file in it is the space an operator frees.
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import grpc

import tkvtest
from tkvtest import _call, kvrpcpb, raw_get, raw_put, raw_scan

MiB = 1 << 20
FS_SIZE = 64 * MiB
FILLER = 16 * MiB
VALUE = 8 * 1024
WRITERS = 4
FILL_DEADLINE_S = 120
RESUME_DEADLINE_S = 20
REFUSALS = 5  # in a row, 0.3 s apart
DISK_FULL = "disk full"


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskFull(tkvtest.TkvTestCase):
    def setUp(self):
        self.acked = {}  # key -> value of every acknowledged put
        self.mu = threading.Lock()

    def mount_small_data_dir(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs as the data dir")
        self.srv = tkvtest.Server(cores=2)
        self.addCleanup(self.srv.cleanup)
        os.makedirs(self.srv.data_dir)
        if os.environ.get("TKV_DISK_FULL_FS") == "ext4":
            # By hand: a real filesystem (journal, block allocation, fsync).
            image = os.path.join(self.srv.base_dir, "ext4.img")
            with open(image, "wb") as f:
                f.truncate(FS_SIZE)
            subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
            cmd = ["mount", "-o", "loop", image, self.srv.data_dir]
        else:
            cmd = ["mount", "-t", "tmpfs", "-o", "size=%d" % FS_SIZE, "tmpfs", self.srv.data_dir]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            self.skipTest("cannot mount the small data dir (%s): %s" %
                          (p.returncode, p.stdout.decode().strip()))
        self.addCleanup(self.unmount)

    def unmount(self):
        self.srv.kill()
        for _ in range(50):
            if subprocess.run(["umount", self.srv.data_dir]).returncode == 0:
                return
            time.sleep(0.1)
        subprocess.run(["umount", "-l", self.srv.data_dir])

    def fill_until_refused(self, phase):
        """WRITERS clients put VALUE-byte random values until each has been
        refused REFUSALS times in a row (a refusal can be the server's
        estimate between two measurements of the disk, lifted by the next
        one: writers retry until the disk itself is at the threshold).
        Returns the least free space seen at a refusal. Every answer must
        be OK (recorded as acknowledged) or "disk full"."""
        problems = []
        first_refusal = []

        def writer(w):
            n = 0
            refused = 0
            deadline = time.monotonic() + FILL_DEADLINE_S
            with self.srv.channel() as ch:
                while time.monotonic() < deadline:
                    key = b"%s/%d/%07d" % (phase.encode(), w, n)
                    value = os.urandom(VALUE)
                    n += 1
                    try:
                        r = raw_put(ch, key, value)
                    except grpc.RpcError as e:
                        problems.append("put %r: gRPC %s %s (server alive: %s)" %
                                        (key, e.code(), e.details(), self.srv.alive()))
                        return
                    if r.error == DISK_FULL:
                        with self.mu:
                            first_refusal.append(free_bytes(self.srv.data_dir))
                        refused += 1
                        if refused >= REFUSALS:
                            return
                        time.sleep(0.3)
                        continue
                    refused = 0
                    if r.error or r.HasField("region_error"):
                        problems.append("put %r: unexpected answer %r" % (key, r))
                        return
                    with self.mu:
                        self.acked[key] = value
                problems.append("writer %d: no refusal within %d s" % (w, FILL_DEADLINE_S))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(problems, [], "while filling the disk (%s); log:\n%s" %
                         (phase, self.srv.log_tail()))
        self.assertTrue(first_refusal, "no write was refused")
        return min(first_refusal)

    def assert_no_engine_enospc(self):
        with open(self.srv.log_path, "rb") as f:
            bad = [line for line in f if b"No space left" in line or b"[FATAL]" in line]
        self.assertEqual(bad, [], "the engine ran out of space (the refusal came too late)")

    def assert_all_acked_readable(self, ch):
        missing = []
        for key, value in self.acked.items():
            r = raw_get(ch, key)
            if r.error or r.not_found or r.value != value:
                missing.append(key)
        self.assertEqual(missing[:5], [], "%d of %d acknowledged writes not read back" %
                         (len(missing), len(self.acked)))

    def test_refuse_serve_reads_resume_and_restart(self):
        self.mount_small_data_dir()
        srv = self.srv
        srv.start()
        placeholder = os.path.join(srv.data_dir, "space_placeholder_file")
        self.assertTrue(os.path.exists(placeholder), "no space placeholder file at start-up")
        filler = os.path.join(srv.data_dir, "filler")
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, FILLER)

        # 1. Fill: every answer is OK or "disk full", and the refusal comes
        # while the filesystem still has room for the engine.
        free_at_refusal = self.fill_until_refused("a")
        self.assertGreater(len(self.acked), 100, "refused far too early")
        self.assertGreater(free_at_refusal, 2 * MiB, "refused only when the disk was already full")
        self.assertTrue(srv.alive(), "server died at disk full; log:\n%s" % srv.log_tail())

        # 2. Still refusing, not dead, after the engine's background work
        # (eviction, checkpoint) had time to run; reads are served; the Kv
        # writes are refused too; the placeholder was given back.
        time.sleep(1.5)
        with srv.channel() as ch:
            r = raw_put(ch, b"late", b"x")
            self.assertEqual(r.error, DISK_FULL)
            r = raw_get(ch, b"late")
            self.assertTrue(r.not_found, "a refused put was applied")
            some = sorted(self.acked)[:50]
            for k in some:
                self.assertEqual(raw_get(ch, k).value, self.acked[k])
            r = raw_scan(ch, some[0], 10)
            self.assertEqual(r.error, "")
            self.assertEqual([kv.key for kv in r.kvs], some[:10])
            req = kvrpcpb.PrewriteRequest(primary_lock=b"txn", start_version=100, lock_ttl=3000)
            req.mutations.add(op=0, key=b"txn", value=b"v")
            with self.assertRaises(grpc.RpcError) as cm:
                _call(ch, "KvPrewrite", req, kvrpcpb.PrewriteResponse, tkvtest.RPC_TIMEOUT)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(cm.exception.details(), DISK_FULL)
        self.assertFalse(os.path.exists(placeholder), "the placeholder was not released")
        code, body, _ = srv.http_get("/status")
        self.assertEqual(code, 200)
        store = json.loads(body)["stores"][0]
        self.assertIs(store["disk_full"], True, "/status: %s" % store)
        self.assertLess(store["available"], store["capacity"])
        self.assertTrue(srv.alive(), "server died while full; log:\n%s" % srv.log_tail())

        # 3. The operator frees space: writes resume by themselves.
        os.unlink(filler)
        deadline = time.monotonic() + RESUME_DEADLINE_S
        with srv.channel() as ch:
            while True:
                r = raw_put(ch, b"resumed", b"yes")
                if r.error == "":
                    self.acked[b"resumed"] = b"yes"
                    break
                self.assertEqual(r.error, DISK_FULL)
                self.assertLess(time.monotonic(), deadline,
                                "writes did not resume within %d s of freeing %d MiB" %
                                (RESUME_DEADLINE_S, FILLER // MiB))
                time.sleep(0.2)
        self.assertTrue(os.path.exists(placeholder), "the placeholder was not recreated")

        # 4. kill -9 while the placeholder exists, then something else fills
        # the disk to the last byte: the node still starts (the placeholder
        # is released for the engine's recovery), serves every acknowledged
        # write, refuses writes, and takes them again once space is freed.
        with srv.channel() as ch:
            for i in range(200):
                key, value = b"c/%04d" % i, os.urandom(VALUE)
                self.assert_ok(raw_put(ch, key, value))
                self.acked[key] = value
        srv.kill()
        junk = os.path.join(srv.data_dir, "junk")
        fd = os.open(junk, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, free_bytes(srv.data_dir))
            os.lseek(fd, 0, os.SEEK_END)
            while os.write(fd, b"\0" * 4096) > 0:  # the last blocks, until ENOSPC
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        self.assertLess(free_bytes(srv.data_dir), 64 * 1024, "the junk did not fill the disk")
        srv.start()
        with open(srv.log_path, "rb") as f:
            self.assertIn(b"free space is short at start-up", f.read(),
                          "the placeholder was not released at start-up")
        with srv.channel() as ch:
            self.assert_all_acked_readable(ch)
            self.assertEqual(raw_put(ch, b"on-full-disk", b"x").error, DISK_FULL)
        os.unlink(junk)
        deadline = time.monotonic() + RESUME_DEADLINE_S
        with srv.channel() as ch:
            while raw_put(ch, b"resumed-2", b"yes").error != "":
                self.assertLess(time.monotonic(), deadline, "writes did not resume after restart")
                time.sleep(0.2)
            self.acked[b"resumed-2"] = b"yes"

        # 5. Fill again (the disk is left nearly full), kill -9, restart on
        # it: the node starts and every acknowledged write is there.
        self.fill_until_refused("b")
        self.assert_no_engine_enospc()
        srv.kill()
        srv.start()
        with srv.channel() as ch:
            self.assert_all_acked_readable(ch)
            r = raw_put(ch, b"after-restart", b"x")
            self.assertIn(r.error, ("", DISK_FULL))
        self.assert_no_engine_enospc()
        self.assertTrue(srv.alive())

    def test_engine_enospc_is_answered_and_not_fatal(self):
        """An ENOSPC the engine returns without panicking (failpoint
        server/engine_enospc: the batch is not applied) is answered
        "disk full", not INTERNAL and not an abort; writes work again once
        the monitor sees free space."""
        fiu_ctrl = shutil.which("fiu-ctrl")
        if not fiu_ctrl:
            self.skipTest("fiu-ctrl (Debian fiu-utils) is needed")
        fifo = os.path.join(tempfile.mkdtemp(prefix="tkv-fiu-"), "fiu")
        self.addCleanup(shutil.rmtree, os.path.dirname(fifo), True)
        srv = tkvtest.Server(cores=2, env={"TKV_FIU_CTRL": fifo})
        self.addCleanup(srv.cleanup)
        srv.start()
        if not os.path.exists("%s-%d.in" % (fifo, srv.proc.pid)):
            self.skipTest("not a test build (no failpoints)")

        def fiu(cmd):
            subprocess.run([fiu_ctrl, "-f", fifo, "-c", cmd, str(srv.proc.pid)], check=True,
                           timeout=30)

        with srv.channel() as ch:
            self.assert_ok(raw_put(ch, b"before", b"1"))
            fiu("enable name=server/engine_enospc")
            r = raw_put(ch, b"lost", b"x")
            self.assertEqual(r.error, DISK_FULL)
            fiu("disable name=server/engine_enospc")
            self.assertTrue(raw_get(ch, b"lost").not_found, "a write answered disk full was applied")
            self.assertEqual(raw_get(ch, b"before").value, b"1")
            deadline = time.monotonic() + RESUME_DEADLINE_S
            while True:
                r = raw_put(ch, b"after", b"2")
                if r.error == "":
                    break
                self.assertEqual(r.error, DISK_FULL)
                self.assertLess(time.monotonic(), deadline, "writes did not resume")
                time.sleep(0.1)
            self.assertEqual(raw_get(ch, b"after").value, b"2")
        self.assertTrue(srv.alive(), "server died on ENOSPC; log:\n%s" % srv.log_tail())

    def test_txn_engine_eio_stops_the_node_with_one_fatal_line(self):
        """-EIO from the engine under a transactional write (failpoint
        server/engine_eio fails the txn core's batch) stops the node as it
        does for a raw write (one error classification, tkv_err_class), and
        says so in exactly one FATAL log line; the prewrite is never
        acknowledged. Before: KvPrewrite was answered INTERNAL and the node
        went on (only TKV_EIOFATAL stopped it, and it was logged twice)."""
        fiu_ctrl = shutil.which("fiu-ctrl")
        if not fiu_ctrl:
            self.skipTest("fiu-ctrl (Debian fiu-utils) is needed")
        fifo = os.path.join(tempfile.mkdtemp(prefix="tkv-fiu-"), "fiu")
        self.addCleanup(shutil.rmtree, os.path.dirname(fifo), True)
        srv = tkvtest.Server(cores=2, env={"TKV_FIU_CTRL": fifo})
        self.addCleanup(srv.cleanup)
        srv.start()
        if not os.path.exists("%s-%d.in" % (fifo, srv.proc.pid)):
            self.skipTest("not a test build (no failpoints)")
        subprocess.run([fiu_ctrl, "-f", fifo, "-c", "enable name=server/engine_eio",
                        str(srv.proc.pid)], check=True, timeout=30)
        req = kvrpcpb.PrewriteRequest(primary_lock=b"k", start_version=10, lock_ttl=3000)
        req.mutations.add(op=0, key=b"k", value=b"v")  # Op Put
        with srv.channel() as ch:
            try:
                resp = _call(ch, "KvPrewrite", req, kvrpcpb.PrewriteResponse, tkvtest.RPC_TIMEOUT)
                self.fail("a prewrite whose batch failed with EIO was acknowledged: %s" % resp)
            except grpc.RpcError as e:
                answered = e.code()
        try:
            srv.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("the node went on after EIO under a transaction (answered %s); log:\n%s"
                      % (answered, srv.log_tail()))
        self.assertNotEqual(srv.proc.returncode, 0)
        with open(srv.log_path, "rb") as f:
            fatal = [l for l in f.read().decode("utf-8", "replace").splitlines() if "FATAL" in l]
        self.assertEqual(len(fatal), 1, "want one FATAL line, got:\n%s" % "\n".join(fatal))
        self.assertIn("KvPrewrite", fatal[0])


if __name__ == "__main__":
    tkvtest.main()
