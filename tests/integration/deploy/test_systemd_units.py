# The shipped systemd units (deploy/systemd/*.service): `systemd-analyze
# verify` accepts them without a single warning (it prints unknown keys and
# bad values as warnings yet exits 0, so any output fails), and they carry
# what operators rely on (ECOSYSTEM.md 2.10): Type=notify, a watchdog,
# restart on failure, a high fd limit and the sandbox with only the data
# and log dirs writable. verify wants ExecStart's binary to exist: the test
# points it at the built binary (TKV_SERVER_BIN) or /bin/true for units
# whose binary is not built here, changing nothing else.
import configparser
import os
import re
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
UNITS = os.path.normpath(os.path.join(HERE, "..", "..", "..", "deploy", "systemd"))
EXPECTED = ["tinykv-server.service", "tinyscheduler-server.service"]


def read_unit(path):
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    with open(path) as f:
        cp.read_string(f.read())
    return cp


class SystemdUnitsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tkv-units-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def verify(self, name):
        analyze = shutil.which("systemd-analyze")
        self.assertIsNotNone(analyze, "systemd-analyze (Debian package systemd) is required")
        with open(os.path.join(UNITS, name)) as f:
            text = f.read()
        binary = os.environ.get("TKV_SERVER_BIN") if name == "tinykv-server.service" else None
        text, n = re.subn(r"^ExecStart=/usr/bin/\S+", "ExecStart=" + (binary or "/bin/true"),
                          text, flags=re.M)
        self.assertEqual(n, 1, "%s: one ExecStart=/usr/bin/... expected" % name)
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([analyze, "verify", path], capture_output=True, timeout=120,
                           env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
        out = (r.stdout + r.stderr).decode()
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual(out.strip(), "", "systemd-analyze verify complained about %s" % name)

    def test_units_verify_cleanly(self):
        for name in EXPECTED:
            with self.subTest(unit=name):
                self.verify(name)

    def test_units_have_the_operational_settings(self):
        for name in EXPECTED:
            with self.subTest(unit=name):
                svc = read_unit(os.path.join(UNITS, name))["Service"]
                self.assertEqual(svc.get("Type"), "notify")
                self.assertEqual(svc.get("Restart"), "on-failure")
                self.assertGreaterEqual(int(svc.get("LimitNOFILE", "0")), 65536)
                self.assertEqual(svc.get("NoNewPrivileges"), "yes")
                self.assertEqual(svc.get("ProtectSystem"), "strict")
                self.assertEqual(svc.get("PrivateTmp"), "yes")
                state = svc.get("StateDirectory")
                self.assertIn("/var/lib/" + state, svc.get("ReadWritePaths", "").split(),
                              "the data dir must be writable under ProtectSystem=strict")
                self.assertIn("/etc/tinykv/", svc.get("ExecStart"))

    def test_units_have_watchdog_and_reload(self):
        """Both programs feed the watchdog (only while their cores turn:
        test_status.py and test_sched_http.py check that) and reopen their
        log on SIGHUP, so both units ask for them."""
        for name in EXPECTED:
            with self.subTest(unit=name):
                svc = read_unit(os.path.join(UNITS, name))["Service"]
                self.assertTrue(re.fullmatch(r"\d+s", svc.get("WatchdogSec", "")),
                                "WatchdogSec missing")
                self.assertEqual(svc.get("ExecReload"), "/bin/kill -HUP $MAINPID")

    def test_a_typo_is_caught(self):
        """The check itself: a misspelt key makes verify print a warning."""
        with open(os.path.join(UNITS, EXPECTED[0])) as f:
            text = f.read().replace("WatchdogSec=", "WatchdogSecs=")
        os.makedirs(os.path.join(self.tmp, "bad"))
        path = os.path.join(self.tmp, "bad", EXPECTED[0])
        with open(path, "w") as f:
            f.write(re.sub(r"^ExecStart=/usr/bin/\S+", "ExecStart=/bin/true", text, flags=re.M))
        r = subprocess.run([shutil.which("systemd-analyze"), "verify", path],
                           capture_output=True, timeout=120)
        self.assertIn("WatchdogSecs", (r.stdout + r.stderr).decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
