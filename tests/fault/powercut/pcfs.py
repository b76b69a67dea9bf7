# Harness for powercutfs (tests/lib/powercutfs): mount a backing dir, cut the
# power, remount. Shared by the power-cut tests of this folder.
#
# Inputs (set by ctest, see CMakeLists.txt):
#   POWERCUTFS_BIN  path of the powercutfs binary
#   TKV_KEEP_LOGS=1 keep the temp dirs (backing dir = what the "disk" held)
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77  # ctest SKIP_RETURN_CODE


def fs_bin():
    b = os.environ.get("POWERCUTFS_BIN")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("POWERCUTFS_BIN must name the powercutfs binary (got %r)" % b)
    return b


def _pdeathsig(sig):
    """The daemon gets `sig` when the test dies (a ctest timeout): SIGTERM is
    a clean unmount, so no dead mount is left behind."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig, "--"] if setpriv else []


def _lazy_umount(path):
    for cmd in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
        if shutil.which(cmd[0]) and subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode == 0:
            return


class PowerCutFS:
    """One powercutfs daemon: BACKING is the disk, MNT what programs use."""

    def __init__(self, base, posix_dirs=False, persist_random=None):
        self.backing = os.path.join(base, "disk")
        self.mnt = os.path.join(base, "mnt")
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)
        self.posix_dirs = posix_dirs
        self.persist_random = persist_random  # None or "PCT:SEED" (--persist-random)
        self.proc = None
        self.log_path = os.path.join(base, "powercutfs.log")
        self.n_mounts = 0
        self.cut_lines = []

    def mount(self, timeout=15):
        self.n_mounts += 1
        log = open(self.log_path, "ab")
        args = _pdeathsig("TERM") + [fs_bin()] + (["--posix-dirs"] if self.posix_dirs else []) + \
            (["--persist-random", self.persist_random] if self.persist_random else []) + \
            [self.backing, self.mnt]
        # At a power cut the daemon abandons what the kernel still holds open
        # (directory handles, libfuse's node table): not leaks to report.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.ismount(self.mnt):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("powercutfs exited with %d before mounting:\n%s" %
                                   (self.proc.returncode, self.log_tail()))
            time.sleep(0.02)
        self.proc.kill()
        raise RuntimeError("powercutfs did not mount within %ds:\n%s" % (timeout, self.log_tail()))

    def cut(self, timeout=20):
        """The power cut: SIGUSR1, the daemon drops everything unsynced and
        exits. Returns the daemon's summary line. Whatever still uses the
        mount must have been killed before (nothing survives a power cut)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            # Resent: a signal landing just before the daemon blocks in its
            # read of /dev/fuse is only seen with the next one.
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("powercutfs ignored the power cut for %ds:\n%s" %
                                 (timeout, self.log_tail()))
        if os.path.ismount(self.mnt):
            _lazy_umount(self.mnt)
        lines = [ln for ln in self.log_tail(200).splitlines() if "power cut: dropped" in ln]
        if self.proc.returncode != 0 or not lines:
            raise AssertionError("powercutfs power cut failed (exit %d):\n%s" %
                                 (self.proc.returncode, self.log_tail()))
        line = lines[-1]
        extra = [ln for ln in self.log_tail(5).splitlines() if "--persist-random" in ln]
        if self.persist_random and extra:
            line += "\n  " + extra[-1]
        self.cut_lines.append(line)
        return line

    def unmount(self, timeout=20):
        """Clean unmount (everything flushed, as a real umount does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if os.path.ismount(self.mnt):
            _lazy_umount(self.mnt)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"


def dropped_pages(cut_line):
    m = re.search(r"dropped (\d+) dirty pages", cut_line)
    return int(m.group(1)) if m else 0


def require_fuse():
    """Exit 77 (ctest: skipped) with the reason when FUSE cannot be used here."""
    reason = None
    if not os.path.exists("/dev/fuse"):
        reason = "/dev/fuse does not exist (no FUSE in this kernel or container)"
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        reason = "/dev/fuse is not readable and writable by this user"
    else:
        base = tempfile.mkdtemp(prefix="tkv-powercut-probe-")
        fs = PowerCutFS(base)
        try:
            fs.mount()
        except RuntimeError as e:
            reason = "cannot mount powercutfs (mounting not permitted here?): %s" % e
        finally:
            fs.unmount()
            shutil.rmtree(base, ignore_errors=True)
    if reason:
        sys.stderr.write("SKIP: power-cut tests need FUSE: %s\n" % reason)
        sys.exit(SKIP)


def new_base(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def remove_base(base):
    if os.environ.get("TKV_KEEP_LOGS") == "1":
        sys.stderr.write("kept %s\n" % base)
        return
    shutil.rmtree(base, ignore_errors=True)
