# tinykv-server as a program: -V, --help, --config-check, exit code 2 with
# file/line/key for configuration errors, 1 for other start-up failures,
# the start-up log line, a config file honoured, flags overriding it.
import os
import subprocess
import tempfile
import time

import tkvtest
from tkvtest import raw_get, raw_put


def run(*args, timeout=60):
    p = subprocess.run([tkvtest.server_bin()] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class Cli(tkvtest.TkvTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tkv-cli-")

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tmp])

    def write(self, name, text):
        p = os.path.join(self.tmp, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_version(self):
        for flag in ("-V", "--version"):
            rc, out, err = run(flag)
            self.assertEqual(rc, 0, err)
            for field in ("Release Version:", "Git Commit Hash:", "Build Time:", "Compiler:",
                          "Enabled Features:"):
                self.assertIn(field, out)

    def test_help(self):
        rc, out, err = run("--help")
        self.assertEqual(rc, 0, err)
        self.assertIn("-addr", out + err)

    def test_config_errors_exit_2_naming_file_line_key(self):
        bad_type = self.write("bad_type.toml", '[server]\naddr = "127.0.0.1:1"\n[storage]\ndata-dir = 5\n')
        rc, out, err = run("-C", bad_type)
        self.assertEqual(rc, 2, err)
        self.assertIn("bad_type.toml:4", err)
        self.assertIn("storage.data-dir", err)
        unknown = self.write("unknown.toml", "[server]\nbogus = 1\n")
        rc, out, err = run("-C", unknown)
        self.assertEqual(rc, 2)
        self.assertIn("unknown.toml:2", err)
        self.assertIn("server.bogus", err)
        rc, out, err = run("-C", os.path.join(self.tmp, "missing.toml"))
        self.assertEqual(rc, 2)
        self.assertIn("missing.toml", err)
        rc, out, err = run("--cores", "abc")
        self.assertEqual(rc, 2)
        self.assertIn("cores", err)
        rc, out, err = run("--no-such-flag")
        self.assertEqual(rc, 2)

    def test_config_check(self):
        good = self.write("good.toml", '[server]\naddr = "127.0.0.1:20999"\n')
        rc, out, err = run("-C", good, "--config-check")
        self.assertEqual(rc, 0, err)

    def test_startup_failure_exits_1(self):
        afile = self.write("not-a-dir", "x")
        rc, out, err = run("-addr", "127.0.0.1:0", "-path", afile)
        self.assertEqual(rc, 1, "data dir that is a file: %s" % err)
        self.assertIn("[ERROR]", err)
        # The port is taken by a plain listener without SO_REUSEPORT.
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            rc, out, err = run("-addr", "127.0.0.1:%d" % s.getsockname()[1], "-path",
                               os.path.join(self.tmp, "d2"))
            self.assertEqual(rc, 1, "port in use: %s" % err)
            self.assertIn("listen", err)
        finally:
            s.close()

    def test_second_server_on_the_same_port_refuses(self):
        """SO_REUSEPORT would let a second server of the same user share the
        port (and our connections); it must refuse instead."""
        first = tkvtest.Server(cores=2)
        try:
            first.start()
            rc, out, err = run("-addr", first.addr, "-path", os.path.join(self.tmp, "second"))
            self.assertEqual(rc, 1, "second server on %s: %s" % (first.addr, err))
            self.assertIn("in use", err)
            with first.channel() as ch:
                self.assert_ok(raw_put(ch, b"port/k", b"v"))
            self.assertEqual(first.stop(), 0)
            # A restart on the same port right away is fine (TIME_WAIT).
            first.start(port=first.port)
            with first.channel() as ch:
                self.assertEqual(raw_get(ch, b"port/k").value, b"v")
        finally:
            first.cleanup()

    def test_two_servers_starting_together_never_share_a_port(self):
        """Regression (flaky integration_server_concurrency): the cores used
        to listen with SO_REUSEPORT after a probe made before the engine
        opened, so two servers started at the same moment on one port both
        passed the probe and both served it, and the kernel spread one
        test's connections over both. Exactly one may serve now; the other
        must exit 1 saying the address is in use."""
        port = tkvtest.free_port()
        procs = []
        try:
            for i in range(2):
                log = open(os.path.join(self.tmp, "srv-%d.log" % i), "wb")
                procs.append((subprocess.Popen(
                    tkvtest._die_with_parent_prefix() +
                    [tkvtest.server_bin(), "-addr", "127.0.0.1:%d" % port,
                     "-path", os.path.join(self.tmp, "d%d" % i), "--cores", "2"],
                    stdout=log, stderr=subprocess.STDOUT), log))
            deadline = time.monotonic() + tkvtest.START_TIMEOUT
            while time.monotonic() < deadline and all(p.poll() is None for p, _ in procs):
                time.sleep(0.05)
            exited = [(i, p.returncode) for i, (p, _) in enumerate(procs) if p.poll() is not None]
            self.assertEqual(len(exited), 1,
                             "two servers started together on port %d: exited %r (both serving "
                             "means they share the port and each other's clients)" % (port, exited))
            loser, rc = exited[0]
            self.assertEqual(rc, 1)
            with open(os.path.join(self.tmp, "srv-%d.log" % loser)) as f:
                self.assertIn("address is in use", f.read())
            with tkvtest.channel("127.0.0.1:%d" % port) as ch:
                self.assert_ok(raw_put(ch, b"two/k", b"v"))
        finally:
            for p, log in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
                log.close()

    def test_config_file_and_flag_precedence(self):
        port = tkvtest.free_port()
        data = os.path.join(self.tmp, "from-file")
        conf = self.write("t.toml", '[server]\naddr = "127.0.0.1:1"\ncores = 2\n[storage]\n'
                                    'data-dir = "%s"\n[log]\nlevel = "debug"\n' % data)
        srv = tkvtest.Server(extra_args=["-C", conf])
        try:
            # -addr from Server.start must win over the file's addr.
            srv.start(port=port)
            with srv.channel() as ch:
                self.assert_ok(raw_put(ch, b"cli/k", b"v"))
                self.assertEqual(raw_get(ch, b"cli/k").value, b"v")
            self.assertEqual(srv.stop(), 0)
            with open(srv.log_path) as f:
                log = f.read()
            self.assertIn('["welcome to tinykv-server"]', log)
            self.assertIn("[cores=2]", log)
            self.assertIn("[port=%d]" % port, log)
            self.assertIn("[DEBUG]", log, "log.level from the file")
            # Server.start passes -path, which wins over storage.data-dir too.
            self.assertFalse(os.path.exists(data))
            self.assertTrue(os.path.isdir(os.path.join(srv.data_dir, "kv")))
        finally:
            srv.cleanup()

    def test_sd_notify_ready_and_stopping(self):
        """Type=notify: READY=1 only once the node serves, STOPPING=1 on SIGTERM
        (ECOSYSTEM.md 2.10: a test-owned datagram socket as NOTIFY_SOCKET)."""
        import socket
        path = os.path.join(self.tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(tkvtest.START_TIMEOUT)
        srv = tkvtest.Server(cores=2, env={"NOTIFY_SOCKET": path})
        try:
            srv.start()  # returns once a RawGet succeeded
            msg = sock.recv(4096).decode()
            self.assertIn("READY=1", msg)
            self.assertIn("STATUS=serving", msg)
            self.assertEqual(srv.stop(), 0)
            self.assertIn("STOPPING=1", sock.recv(4096).decode())
        finally:
            sock.close()
            srv.cleanup()


if __name__ == "__main__":
    tkvtest.main()
