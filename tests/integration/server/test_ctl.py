# tinykv-ctl against the real server: each raw verb, key escaping and --hex,
# --cf, --limit, and non-zero exit with a clear stderr message on every kind
# of error (connection refused, error string, gRPC status, usage).
import subprocess

import tkvtest
from tkvtest import raw_get, raw_put


class Ctl(tkvtest.ServerTestCase):
    cores = 1

    def ctl(self, *args, host=None):
        p = subprocess.run([tkvtest.ctl_bin(), "--host", host or self.srv.addr] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def ok(self, *args):
        rc, out, err = self.ctl(*args)
        self.assertEqual(rc, 0, "tinykv-ctl %s failed: %s" % (" ".join(args), err))
        return out

    def test_put_get_delete(self):
        self.assertEqual(self.ok("raw", "put", "ctl/a", "hello world"), "OK\n")
        self.assertEqual(raw_get(self.ch, b"ctl/a").value, b"hello world")
        self.assertEqual(self.ok("raw", "get", "ctl/a"), "hello world\n")
        self.assertEqual(self.ok("raw", "delete", "ctl/a"), "OK\n")
        rc, out, err = self.ctl("raw", "get", "ctl/a")
        self.assertEqual(rc, 3, "not found must exit 3")
        self.assertEqual(out, "")
        self.assertIn("not found", err)

    def test_scan_with_limit_and_escaping(self):
        raw_put(self.ch, b"ctls/1", b"one")
        raw_put(self.ch, b"ctls/2", b"\x00\xffbin\\")
        raw_put(self.ch, b"ctls/3", b"three")
        out = self.ok("raw", "scan", "ctls/", "--limit", "2")
        self.assertEqual(out, "ctls/1\tone\nctls/2\t\\x00\\xffbin\\\\\n")
        self.assertEqual(self.ok("raw", "scan", "ctls/", "--limit", "0"), "")

    def test_escaped_and_hex_input_round_trip(self):
        self.ok("raw", "put", "ctlx/\\x01\\\\", "v\\x7f")
        self.assertEqual(raw_get(self.ch, b"ctlx/\x01\\").value, b"v\x7f")
        self.assertEqual(self.ok("raw", "get", "ctlx/\\x01\\\\"), "v\\x7f\n")
        self.assertEqual(self.ok("--hex", "raw", "get", b"ctlx/\x01\\".hex()), "767f\n")
        self.ok("--hex", "raw", "put", "00ff", "cafe")
        self.assertEqual(raw_get(self.ch, b"\x00\xff").value, b"\xca\xfe")

    def test_cf(self):
        self.ok("--cf", "lock", "raw", "put", "ctlcf/k", "in-lock")
        self.assertTrue(raw_get(self.ch, b"ctlcf/k").not_found)
        self.assertEqual(raw_get(self.ch, b"ctlcf/k", cf="lock").value, b"in-lock")
        self.assertEqual(self.ok("--cf", "lock", "raw", "get", "ctlcf/k"), "in-lock\n")

    def test_errors_exit_non_zero_with_a_message(self):
        rc, out, err = self.ctl("--cf", "nope", "raw", "get", "k")
        self.assertEqual(rc, 1)
        self.assertIn("nope", err, "the error string from the server reaches stderr")
        # Repeated: a fast refusal once raced the client's own shutdown (segfault).
        dead = "127.0.0.1:%d" % tkvtest.free_port()
        for _ in range(10):
            rc, out, err = self.ctl("raw", "get", "k", host=dead)
            self.assertEqual(rc, 1, "connection refused must fail with 1: rc %d %s" % (rc, err))
            self.assertIn("UNAVAILABLE", err)
        for bad in (["raw", "frob", "k"], ["raw", "get"], ["raw", "get", "\\q"], ["--hex", "raw", "get", "zz"],
                    ["raw", "scan", "a", "--limit", "-1"], ["cooked", "get", "k"]):
            rc, out, err = self.ctl(*bad)
            self.assertEqual(rc, 2, "usage error expected for %s" % bad)
            self.assertIn("usage", err)

    def test_large_value(self):
        v = "x" * 100000  # below the kernel's 128 KiB limit for one argument
        self.assertEqual(self.ok("raw", "put", "ctlbig", v), "OK\n")
        self.assertEqual(self.ok("raw", "get", "ctlbig"), v + "\n")


if __name__ == "__main__":
    tkvtest.main()
