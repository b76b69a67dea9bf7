# Self-test of powercutfs (tests/lib/powercutfs/README.md has the semantics):
# reads see unsynced data until the cut; fsynced data survives the cut,
# unsynced data and size changes are gone; namespace operations are durable
# once the file or directory they touch is fsynced (ext4-like), and only
# after a directory fsync with --posix-dirs; a clean unmount flushes all.
import os
import random
import sys
import unittest

import pcfs


def write_file(path, data, sync):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


class PowerCutFSTest(unittest.TestCase):

    def setUp(self):
        self.base = pcfs.new_base("tkv-powercut-fs-")
        self.fs = None

    def tearDown(self):
        if self.fs:
            self.fs.unmount()
        pcfs.remove_base(self.base)

    def mount(self, posix_dirs=False):
        if self.fs is None:
            self.fs = pcfs.PowerCutFS(self.base, posix_dirs=posix_dirs)
        self.fs.mount()
        return self.fs.mnt

    def p(self, name):
        return os.path.join(self.fs.mnt, name)

    def cut_and_remount(self):
        line = self.fs.cut()
        self.fs.mount()
        return line

    def test_synced_data_survives_unsynced_data_is_dropped(self):
        self.mount()
        write_file(self.p("a"), b"durable", sync=True)
        write_file(self.p("b"), b"", sync=True)  # name and empty content durable
        with open(self.p("a"), "ab") as f:
            f.write(b"+volatile")
        with open(self.p("b"), "wb") as f:
            f.write(b"never synced")
        # Page-cache semantics until the cut: readers see everything.
        self.assertEqual(read_file(self.p("a")), b"durable+volatile")
        self.assertEqual(os.stat(self.p("a")).st_size, len(b"durable+volatile"))
        self.assertEqual(read_file(self.p("b")), b"never synced")
        # Not on the disk yet.
        self.assertEqual(read_file(os.path.join(self.fs.backing, "a")), b"durable")
        line = self.cut_and_remount()
        self.assertGreaterEqual(pcfs.dropped_pages(line), 2, line)
        self.assertEqual(read_file(self.p("a")), b"durable", "unsynced append survived the cut")
        self.assertEqual(read_file(self.p("b")), b"", "unsynced data survived the cut")

    def test_random_writes_and_truncates_against_a_model(self):
        """Random pwrite / ftruncate / fsync / read on a few files, checked
        against an in-memory model: reads see the latest state, the cut
        leaves exactly the state of each file's last fsync."""
        self.mount()
        rng = random.Random(int(os.environ.get("TKV_SEED", "0")) or None)
        seed = rng.randrange(1 << 30)
        rng = random.Random(seed)
        names = ["f%d" % i for i in range(3)]
        live, synced, fds = {}, {}, {}
        for n in names:
            fds[n] = os.open(self.p(n), os.O_CREAT | os.O_RDWR, 0o644)
            os.fsync(fds[n])
            live[n], synced[n] = bytearray(), bytes()
        for step in range(600):
            n = rng.choice(names)
            fd, m = fds[n], live[n]
            op = rng.random()
            if op < 0.5:
                off = rng.randrange(0, 40000)
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9000)))
                os.pwrite(fd, data, off)
                if off > len(m):
                    m.extend(b"\0" * (off - len(m)))
                m[off:off + len(data)] = data
            elif op < 0.65:
                size = rng.randrange(0, 45000)
                os.ftruncate(fd, size)
                if size < len(m):
                    del m[size:]
                else:
                    m.extend(b"\0" * (size - len(m)))
            elif op < 0.75:
                os.fsync(fd) if rng.random() < 0.5 else os.fdatasync(fd)
                synced[n] = bytes(m)
            else:
                off = rng.randrange(0, 46000)
                ln = rng.randrange(1, 20000)
                self.assertEqual(os.pread(fd, ln, off), bytes(m[off:off + ln]),
                                 "seed %d step %d: read of %s [%d, +%d) differs from the model" %
                                 (seed, step, n, off, ln))
            self.assertEqual(os.fstat(fd).st_size, len(m), "seed %d step %d: size" % (seed, step))
        for n in names:
            self.assertEqual(read_file(self.p(n)), bytes(live[n]), "seed %d: %s before the cut" % (seed, n))
            os.close(fds[n])
        self.cut_and_remount()
        for n in names:
            self.assertEqual(read_file(self.p(n)), synced[n],
                             "seed %d: %s after the cut is not its last fsynced state" % (seed, n))

    def test_unsynced_create_vanishes_fsynced_file_keeps_its_name(self):
        self.mount()
        write_file(self.p("ghost"), b"x", sync=False)
        os.mkdir(self.p("dir"))
        self.assertTrue(os.path.exists(self.p("ghost")))
        self.cut_and_remount()
        self.assertFalse(os.path.exists(self.p("ghost")), "a file never fsynced survived the cut")
        self.assertFalse(os.path.exists(self.p("dir")), "a directory never fsynced survived the cut")
        # ext4-like: fsync of a new file commits its name, and the journal
        # before it (the new directory it lives in).
        os.mkdir(self.p("dir"))
        write_file(self.p("dir/kept"), b"kept", sync=True)
        write_file(self.p("dir/later"), b"later", sync=False)
        self.cut_and_remount()
        self.assertEqual(read_file(self.p("dir/kept")), b"kept")
        self.assertFalse(os.path.exists(self.p("dir/later")))

    def test_unlink_and_rename_are_undone_unless_the_directory_is_fsynced(self):
        self.mount()
        os.mkdir(self.p("d"))
        write_file(self.p("d/old"), b"old content", sync=True)
        write_file(self.p("d/victim"), b"victim content", sync=True)
        write_file(self.p("d/tmp"), b"new content", sync=True)
        fsync_path(self.p("d"))
        os.unlink(self.p("d/victim"))
        os.rename(self.p("d/tmp"), self.p("d/old"))  # replaces old
        self.assertEqual(read_file(self.p("d/old")), b"new content")
        self.assertFalse(os.path.exists(self.p("d/victim")))
        self.assertEqual(sorted(os.listdir(self.p("d"))), ["old"])
        line = self.cut_and_remount()
        self.assertIn("undid 2 namespace operations", line)
        self.assertEqual(sorted(os.listdir(self.p("d"))), ["old", "tmp", "victim"])
        self.assertEqual(read_file(self.p("d/old")), b"old content")
        self.assertEqual(read_file(self.p("d/victim")), b"victim content")
        # The same with a directory fsync: durable.
        os.unlink(self.p("d/victim"))
        os.rename(self.p("d/tmp"), self.p("d/old"))
        fsync_path(self.p("d"))
        self.cut_and_remount()
        self.assertEqual(sorted(os.listdir(self.p("d"))), ["old"])
        self.assertEqual(read_file(self.p("d/old")), b"new content")
        # Nothing of the trash shows through the mount.
        self.assertNotIn(".powercutfs-trash", os.listdir(self.fs.mnt))

    def test_links_exchange_rmdir_and_o_dsync(self):
        self.mount()
        os.mkdir(self.p("d"))
        os.mkdir(self.p("d/empty"))
        write_file(self.p("d/x"), b"x", sync=True)
        write_file(self.p("d/y"), b"y", sync=True)
        fsync_path(self.p("d"))
        os.symlink("x", self.p("d/sym"))
        os.link(self.p("d/x"), self.p("d/hard"))
        os.rmdir(self.p("d/empty"))
        import ctypes  # os has no renameat2: glibc's, RENAME_EXCHANGE = 2, AT_FDCWD = -100
        libc = ctypes.CDLL(None, use_errno=True)
        rv = libc.renameat2(-100, self.p("d/x").encode(), -100, self.p("d/y").encode(), 2)
        self.assertEqual(rv, 0, "renameat2(RENAME_EXCHANGE): errno %d" % ctypes.get_errno())
        self.assertEqual(read_file(self.p("d/x")), b"y")
        self.assertEqual(read_file(self.p("d/sym")), b"y")
        self.assertEqual(os.stat(self.p("d/hard")).st_nlink, 2)
        # O_DSYNC: every write is durable when it returns.
        fd = os.open(self.p("d/dsync"), os.O_CREAT | os.O_WRONLY | os.O_DSYNC, 0o644)
        os.write(fd, b"durable at once")
        os.close(fd)
        line = self.cut_and_remount()
        # The O_DSYNC write committed its file's create and, ordered journal,
        # every name change before it: symlink, link, rmdir, exchange.
        self.assertIn("undid 0 namespace operations", line)
        self.assertEqual(read_file(self.p("d/dsync")), b"durable at once")
        self.assertEqual(read_file(self.p("d/x")), b"y")
        self.assertEqual(read_file(self.p("d/hard")), b"x")
        self.assertTrue(os.path.islink(self.p("d/sym")))
        self.assertFalse(os.path.exists(self.p("d/empty")))
        # Now without the synced write at the end: all undone.
        os.symlink("y", self.p("d/sym2"))
        os.link(self.p("d/y"), self.p("d/hard2"))
        os.mkdir(self.p("d/empty2"))
        fsync_path(self.p("d"))
        os.rmdir(self.p("d/empty2"))
        os.unlink(self.p("d/sym"))
        line = self.cut_and_remount()
        self.assertIn("undid 2 namespace operations", line)
        self.assertTrue(os.path.isdir(self.p("d/empty2")), "rmdir not undone")
        self.assertTrue(os.path.islink(self.p("d/sym")), "unlink of a symlink not undone")
        self.assertEqual(os.readlink(self.p("d/sym2")), "y")
        self.assertEqual(read_file(self.p("d/hard2")), b"x")

    def test_persist_random_writes_some_dirty_pages(self):
        """--persist-random 50: each unsynced page reaches the disk or not;
        nothing else does (no other content, names undone as usual)."""
        self.fs = pcfs.PowerCutFS(self.base, persist_random="50:12345")
        self.mount()
        write_file(self.p("f"), b"", sync=True)
        pages = [bytes([i + 1]) * 4096 for i in range(40)]
        with open(self.p("f"), "r+b") as f:
            f.write(b"".join(pages))
        write_file(self.p("new"), b"x" * 4096, sync=False)
        line = self.cut_and_remount()
        data = read_file(self.p("f"))
        self.assertEqual(len(data) % 4096, 0)
        kept = 0
        for i in range(len(data) // 4096):
            page = data[i * 4096:(i + 1) * 4096]
            self.assertIn(page, (pages[i], b"\0" * 4096), "page %d is neither old nor new" % i)
            kept += page == pages[i]
        self.assertTrue(0 < kept < 40, "%d of 40 pages persisted with 50%%: %s" % (kept, line))
        self.assertFalse(os.path.exists(self.p("new")), "an unsynced create survived")

    def test_open_unlinked_file_keeps_working(self):
        self.mount()
        fd = os.open(self.p("anon"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.unlink(self.p("anon"))
            os.pwrite(fd, b"still here", 0)
            os.fsync(fd)
            self.assertEqual(os.pread(fd, 100, 0), b"still here")
            # (no fstat: libfuse's path API answers ESTALE for unlinked files)
        finally:
            os.close(fd)
        self.assertFalse(os.path.exists(self.p("anon")))

    def test_posix_dirs_needs_a_directory_fsync(self):
        self.mount(posix_dirs=True)
        write_file(self.p("f"), b"data", sync=True)  # data durable, name not
        self.cut_and_remount()
        self.assertFalse(os.path.exists(self.p("f")),
                         "--posix-dirs: a name survived without a directory fsync")
        write_file(self.p("f"), b"data", sync=True)
        fsync_path(self.fs.mnt)
        self.cut_and_remount()
        self.assertEqual(read_file(self.p("f")), b"data")

    def test_clean_unmount_flushes_everything(self):
        self.mount()
        write_file(self.p("f"), b"written, never fsynced", sync=False)
        self.fs.unmount()
        self.assertEqual(read_file(os.path.join(self.fs.backing, "f")), b"written, never fsynced")
        self.fs.mount()
        self.assertEqual(read_file(self.p("f")), b"written, never fsynced")


if __name__ == "__main__":
    pcfs.require_fuse()
    unittest.main(verbosity=2)
