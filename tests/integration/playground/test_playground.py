# tinykv-playground, the README's run command: one scheduler and three nodes
# from one command, on free ports (every port and the data dir overridden by
# flags or the environment), in a temp dir. Checks: it prints where each
# process listens (gRPC and status) and ready-to-paste tinykv-ctl commands
# once the cluster is ready; the three stores are registered and Up
# (tinykv-ctl store list --json, ids as printed); raw put/get through
# tinykv-ctl --pd; a node killed with SIGKILL is reported at once; SIGINT
# stops every child within a bound, reports each exit code and leaves no
# process behind; a restart on the same data dir keeps the store ids and the
# data and stops cleanly (exit 0); bad flags exit 2; a port held by another
# process is refused before anything starts (exit 1, naming the port and
# its flag); a scheduler that cannot start is reported with its log (exit 1).
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
import clustertest  # noqa: E402  (also puts ../server and ../sched on the path)
import tkvtest  # noqa: E402

STOP_BOUND = 60  # seconds: SIGINT to the playground's exit, ASan build on a loaded machine


def playground_bin():
    b = os.environ.get("TKV_PLAYGROUND_BIN")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("TKV_PLAYGROUND_BIN must name tinykv-playground (got %r)" % b)
    return b


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not a running process: look at its state
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Playground:
    def __init__(self, base, ports, env_ports=False):
        self.base = base
        self.data = os.path.join(base, "data")
        (self.pd, self.peer, self.pd_status, n1, n2, n3, s1, s2, s3) = ports
        self.node_ports = [n1, n2, n3]
        self.node_status = [s1, s2, s3]
        self.env_ports = env_ports
        self.out_path = None
        self.proc = None
        self.n_runs = 0
        self.extra_args = []

    def args_env(self):
        conf = os.path.join(self.base, "fast.toml")
        with open(conf, "w") as f:
            f.write(clustertest.TEST_CONF)
        bin_dir = os.path.dirname(tkvtest.server_bin())
        args = [playground_bin(), "--bin-dir", bin_dir, "--config", conf, "--data-dir", self.data]
        args += self.extra_args
        ports = {"PD_PORT": self.pd, "PD_PEER_PORT": self.peer, "PD_STATUS_PORT": self.pd_status,
                 "NODE_PORTS": ",".join(map(str, self.node_ports)),
                 "NODE_STATUS_PORTS": ",".join(map(str, self.node_status))}
        env = dict(os.environ)
        if self.env_ports:  # the environment form
            for k, v in ports.items():
                env["TKV_PLAYGROUND_" + k] = str(v)
        else:
            for k, v in ports.items():
                args += ["--" + k.lower().replace("_", "-"), str(v)]
        return args, env

    def start(self, wait_ready=True):
        self.n_runs += 1
        args, env = self.args_env()
        self.out_path = os.path.join(self.base, "playground-%d.out" % self.n_runs)
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(tkvtest._die_with_parent_prefix() + args, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.base, env=env)
        if wait_ready:
            self.wait_output("cluster ready", tkvtest.START_TIMEOUT * 2)
        return self

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_output(self, needle, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if needle in out:
                return out
            if self.proc.poll() is not None:
                raise AssertionError("playground exited %d before %r:\n%s" %
                                     (self.proc.returncode, needle, out))
            time.sleep(0.1)
        raise AssertionError("no %r within %ds:\n%s" % (needle, timeout, self.output()))

    def pids(self):
        """name -> pid from the printed table."""
        out = {}
        for m in re.finditer(r"^  (scheduler|node\d)\S*(?: \(store \d+\))?\s+(\d+)\s", self.output(),
                             re.M):
            out[m.group(1)] = int(m.group(2))
        return out

    def interrupt(self):
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("playground did not stop within %ds of SIGINT:\n%s" %
                                 (STOP_BOUND, self.output()))
        self.out.close()
        return rc, time.monotonic() - t0

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # the children die with it (PR_SET_PDEATHSIG); make sure
        for pid in self.pids().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


class PlaygroundTest(unittest.TestCase):

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="tkv-playground-it-")
        self.pg = None

    def tearDown(self):
        if self.pg:
            self.pg.kill()
        if os.environ.get("TKV_KEEP_LOGS") == "1":
            sys.stderr.write("kept %s\n" % self.base)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    def ctl(self, *args):
        p = subprocess.run([tkvtest.ctl_bin(), "--timeout", "20"] + list(args),
                           capture_output=True, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def assert_all_gone(self, pids):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
            time.sleep(0.1)
        self.assertEqual([n for n, p in pids.items() if alive(p)], [],
                         "processes left behind after the playground stopped")

    def wait_three_replicas(self, pd_http, timeout=60):
        deadline = time.monotonic() + timeout
        regions = None
        while time.monotonic() < deadline:
            rc, sout, err = self.ctl("--pd-http", pd_http, "region", "list", "--json")
            if rc == 0:
                regions = json.loads(sout)["regions"]
                if regions and all(len({p["store_id"] for p in r["peers"]}) == 3 and
                                   not r.get("pending_peers") and r.get("leader")
                                   for r in regions):
                    return
            time.sleep(0.2)
        self.fail("regions without three replicas %d s after start-up: %s" % (timeout, regions))

    def test_cluster_lifecycle(self):
        self.pg = pg = Playground(self.base, free_ports(9))
        pg.start()
        out = pg.output()
        pd, pd_http = "127.0.0.1:%d" % pg.pd, "127.0.0.1:%d" % pg.pd_status
        # where each process listens, and ctl commands to paste
        pids = pg.pids()
        self.assertEqual(sorted(pids), ["node1", "node2", "node3", "scheduler"], out)
        self.assertRegex(out, r"scheduler\s+%d\s+%s\s+%s\s" % (pids["scheduler"], pd, pd_http))
        printed_ids = {}
        for i in range(3):
            m = re.search(r"node%d \(store (\d+)\)\s+%d\s+127\.0\.0\.1:%d\s+127\.0\.0\.1:%d\s+"
                          r"\S*data/node%d" % (i + 1, pids["node%d" % (i + 1)], pg.node_ports[i],
                                            pg.node_status[i], i + 1), out)
            self.assertIsNotNone(m, "node%d's line is missing:\n%s" % (i + 1, out))
            printed_ids[int(m.group(1))] = "127.0.0.1:%d" % pg.node_ports[i]
            self.assertTrue(os.path.isfile(os.path.join(pg.data, "node%d" % (i + 1), "store-0",
                                                        "ident")))
            self.assertTrue(os.path.isfile(os.path.join(pg.data, "logs", "node%d.log" % (i + 1))))
        self.assertIn("tinykv-ctl --pd %s raw put hello world" % pd, out)
        self.assertIn("tinykv-ctl --pd-http %s store list" % pd_http, out)
        self.assertIn("http://%s/dashboard" % pd_http, out)
        # the three stores are registered and Up, with the ids printed
        rc, sout, err = self.ctl("--pd-http", pd_http, "store", "list", "--json")
        self.assertEqual(rc, 0, err)
        stores = json.loads(sout)["stores"]
        self.assertEqual({s["store"]["id"]: s["store"]["address"] for s in stores}, printed_ids)
        self.assertEqual([s["store"]["state_name"] for s in stores], ["Up"] * 3)
        # every node's status port answers as printed
        for p in pg.node_status:
            code, body, _ = tkvtest.http_request(p, "/status")
            self.assertEqual(code, 200)
            self.assertEqual(json.loads(body)["component"], "tinykv-server")
        # data through the cluster, as the printed command does
        rc, _, err = self.ctl("--pd", pd, "raw", "put", "hello", "world")
        self.assertEqual(rc, 0, err)
        rc, sout, err = self.ctl("--pd", pd, "raw", "get", "hello")
        self.assertEqual((rc, sout), (0, "world\n"), err)

        # a node dies: reported at once, the rest keep running. The scheduler
        # adds the second and third replicas one at a time after start-up;
        # a region of two voters cannot lose one (no quorum), so the kill
        # waits until every region has three replicas and none is pending.
        self.wait_three_replicas(pd_http)
        os.kill(pids["node2"], signal.SIGKILL)
        pg.wait_output("node2 (pid %d, 127.0.0.1:%d) killed by signal 9" %
                       (pids["node2"], pg.node_ports[1]), 20)
        self.assertIn("unexpectedly", pg.output())
        self.assertIsNone(pg.proc.poll(), "the playground ended when a node died")
        rc, sout, err = self.ctl("--pd", pd, "raw", "get", "hello")
        self.assertEqual((rc, sout), (0, "world\n"), err)

        # Ctrl-C: every child stopped and reported, nothing left behind
        rc, took = pg.interrupt()
        out = pg.output()
        self.assertEqual(rc, 1, "a node died, so the exit code says so:\n" + out)
        for name in ("node1", "node3", "scheduler"):
            self.assertIn("%s (pid %d) exited with code 0" % (name, pids[name]), out)
        self.assertLess(out.index("node1 (pid"), out.index("scheduler (pid"),
                        "nodes stop before the scheduler")
        self.assert_all_gone(pids)

        # a second run on the same data: same store ids, the data is there,
        # and a clean stop exits 0 (ports from the environment this time)
        pg.env_ports = True
        pg.start()
        pids2 = pg.pids()
        rc, sout, err = self.ctl("--pd-http", pd_http, "store", "list", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual({s["store"]["id"]: s["store"]["address"]
                          for s in json.loads(sout)["stores"]}, printed_ids)
        rc, sout, err = self.ctl("--pd", pd, "raw", "get", "hello")
        self.assertEqual((rc, sout), (0, "world\n"), err)
        rc, took = pg.interrupt()
        out = pg.output()
        self.assertEqual(rc, 0, out)
        for name in ("node1", "node2", "node3", "scheduler"):
            self.assertIn("%s (pid %d) exited with code 0" % (name, pids2[name]), out)
        self.assertNotIn("unexpectedly", out)
        self.assert_all_gone(pids2)

    def test_port_taken(self):
        # any of the ports held by somebody else: refused before anything starts
        ports = free_ports(9)
        for idx, flag in [(2, "--pd-status-port"), (4, "--node-ports")]:
            taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            taken.bind(("127.0.0.1", ports[idx]))
            taken.listen(1)
            try:
                self.pg = pg = Playground(self.base, ports)
                pg.start(wait_ready=False)
                rc = pg.proc.wait(timeout=STOP_BOUND)
            finally:
                taken.close()
                pg.out.close()
            out = pg.output()
            self.assertEqual(rc, 1, out)
            self.assertIn("port 127.0.0.1:%d is in use" % ports[idx], out)
            self.assertIn(flag, out)
            self.assertNotIn("starting", out)

    def test_scheduler_cannot_start(self):
        # the scheduler exits at start-up (a config file it refuses): reported
        # with its log, no node started, exit 1, no hang
        bad = os.path.join(self.base, "bad-sched.toml")
        with open(bad, "w") as f:
            f.write("no-such-key = 1\n")
        self.pg = pg = Playground(self.base, free_ports(9))
        pg.extra_args = ["--sched-config", bad]
        pg.start(wait_ready=False)
        try:
            rc = pg.proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            raise AssertionError("playground hangs with a scheduler that cannot start:\n" +
                                 pg.output())
        pg.out.close()
        out = pg.output()
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"scheduler \(pid \d+, 127\.0\.0\.1:%d\) exited with code \d+ "
                              r"unexpectedly" % pg.pd)
        self.assertIn("no-such-key", out)  # the log's last lines are shown
        self.assertNotIn("cluster ready", out)
        self.assertNotIn("starting node1", out)

    def test_bad_flags(self):
        b = playground_bin()
        for args, needle in [(["--node-ports", "1,2", "--node-status-ports", "3"], "names 2 nodes"),
                             (["--pd-port", "2379", "--pd-status-port", "2379"], "used twice"),
                             (["--node-ports", "x"], "comma-separated"),
                             (["--stop-timeout", "0"], "seconds"),
                             (["stray"], "unexpected argument")]:
            p = subprocess.run([b] + args, capture_output=True, timeout=30, cwd=self.base)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(needle, p.stderr.decode())
        p = subprocess.run([b, "--bin-dir", self.base], capture_output=True, timeout=30,
                           cwd=self.base)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"tinyscheduler-server not found", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.base, "tinykv-data")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
