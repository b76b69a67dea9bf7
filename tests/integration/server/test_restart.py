# Crash and restart (issue 13 item 6): a restart right after kill -9 must
# find its port, even while the dead process's listener is still being torn
# down (it waits, bounded, and says so), and server.addr takes the address
# forms operators write: localhost, IPv4, [::1].
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import tkvtest
from tkvtest import raw_get, raw_put

RESTARTS = 20


class Restart(tkvtest.TkvTestCase):
    def test_restart_right_after_kill9_20_times(self):
        srv = tkvtest.Server(cores=2)
        try:
            srv.start()
            port = srv.port
            ok = 0
            for i in range(RESTARTS):
                with srv.channel() as ch:
                    self.assert_ok(raw_put(ch, b"restart/%02d" % i, b"v%d" % i))
                srv.kill(signal.SIGKILL)
                srv.start(port=port)  # raises with the server log if it did not come up
                ok += 1
            self.assertEqual(ok, RESTARTS)
            with srv.channel() as ch:
                for i in range(RESTARTS):
                    self.assertEqual(raw_get(ch, b"restart/%02d" % i).value, b"v%d" % i,
                                     "acknowledged write %d lost across kill -9" % i)
        finally:
            srv.cleanup()

    def test_waits_for_a_listener_that_is_going_away(self):
        """What kill -9 leaves behind for a moment (the dead process's
        listener, held by its io_uring until the kernel tears the ring
        down), played by a plain listening socket released after 1 s: the
        server must wait for it, log that it waits, and then serve."""
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(8)
        port = holder.getsockname()[1]
        timer = threading.Timer(1.0, holder.close)
        srv = tkvtest.Server()
        try:
            timer.start()
            t0 = time.monotonic()
            srv.start(port=port)
            self.assertGreaterEqual(time.monotonic() - t0, 0.9, "served while the port was held?")
            with srv.channel() as ch:
                self.assert_ok(raw_put(ch, b"k", b"v"))
            with open(srv.log_path) as f:
                log = f.read()
            self.assertIn("waiting for it to be released", log)
            self.assertIn("the address is free now", log)
        finally:
            timer.cancel()
            holder.close()
            srv.cleanup()

    def test_address_forms(self):
        """server.addr = localhost:port, [::1]:port, 127.0.0.1:port all serve
        (the start-up probe used to parse numeric IPv4 only and reported
        localhost as 'the address is in use')."""
        hosts = ["localhost", "127.0.0.1"]
        try:
            s = socket.socket(socket.AF_INET6)
            s.bind(("::1", 0))
            s.close()
            hosts.append("[::1]")
        except OSError:
            pass  # no IPv6 loopback on this machine
        for host in hosts:
            with self.subTest(host=host):
                srv = tkvtest.Server(host=host)
                try:
                    srv.start()
                    with srv.channel() as ch:
                        self.assert_ok(raw_put(ch, b"addr", host.encode()))
                        self.assertEqual(raw_get(ch, b"addr").value, host.encode())
                    self.assertEqual(srv.stop(), 0)
                finally:
                    srv.cleanup()

    def test_unresolvable_host_says_so(self):
        with tempfile.TemporaryDirectory(prefix="tkv-restart-") as d:
            p = subprocess.run([tkvtest.server_bin(), "-addr", "no-such-host.invalid:0",
                                "-path", os.path.join(d, "data")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 1, out)
            self.assertIn("cannot resolve the host", out)
            self.assertNotIn("in use", out)


if __name__ == "__main__":
    tkvtest.main()
