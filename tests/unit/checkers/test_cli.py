# tkv-check-lin and tkv-check-si: the JSON-lines formats, verdicts and exit
# codes (0 holds, 1 violated, 2 unknown, 3 bad input) that python
# integration tests rely on.
import json
import os
import subprocess
import sys
import tempfile
import unittest

LIN = os.environ.get("TKV_CHECK_LIN")
SI = os.environ.get("TKV_CHECK_SI")


def run(tool, lines, *args):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for l in lines:
            f.write((l if isinstance(l, str) else json.dumps(l)) + "\n")
        path = f.name
    try:
        p = subprocess.run([tool] + list(args) + [path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()
    finally:
        os.unlink(path)


def op(proc, f, key, call, ret, typ="ok", value=None):
    return {"process": proc, "f": f, "key": key, "call": call, "ret": ret, "type": typ, "value": value}


class LinCli(unittest.TestCase):
    def test_linearizable_history_exits_0(self):
        rc, out, err = run(LIN, [op(1, "put", "k", 0, 10, value="a"), op(2, "get", "k", 5, 15, value="a"),
                                 op(3, "put", "k", 20, None, "info", "b"), op(2, "get", "k", 30, 40, value="b"),
                                 op(1, "delete", "k", 50, 60), op(2, "get", "k", 70, 80, value=None),
                                 op(3, "put", "k", 90, 95, "fail", "never")])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("linearizable: 6 operations", out)

    def test_stale_read_exits_1_with_counterexample(self):
        rc, out, err = run(LIN, [op(1, "put", "k\u00ff", 0, 10, value="a"), op(1, "put", "k\u00ff", 20, 30, value="b"),
                                 op(2, "get", "k\u00ff", 40, 50, value="a")])
        self.assertEqual(rc, 1, out + err)
        self.assertIn("stale read", out)
        self.assertIn('key "k\\xc3\\xbf"', out)

    def test_budget_exhaustion_exits_2(self):
        lines = [op(i, "put", "k", 0, 100, value="v%d" % i) for i in range(12)]
        lines.append(op(99, "get", "k", 200, 210, value="v3"))
        rc, out, err = run(LIN, lines, "--budget", "5")
        self.assertEqual(rc, 2, out + err)

    def test_bad_input_exits_3(self):
        for bad in ["{not json", json.dumps({"f": "put", "key": "k", "call": 1, "type": "ok"}),
                    json.dumps(op(1, "cas", "k", 0, 1)), json.dumps(op(1, "get", "k", 0, None, "ok"))]:
            rc, out, err = run(LIN, [bad])
            self.assertEqual(rc, 3, "accepted %s: %s" % (bad, out))
            self.assertIn("line 1", err)


def txn(proc, typ, call, ret, *mops):
    return {"process": proc, "type": typ, "call": call, "ret": ret, "mops": [list(m) for m in mops]}


class SiCli(unittest.TestCase):
    def test_write_skew_passes_read_skew_fails(self):
        base = [txn(0, "ok", 0, 1, ("append", "x", 1), ("append", "y", 1))]
        skew = base + [txn(1, "ok", 2, 10, ("r", "x", [1]), ("r", "y", [1]), ("append", "x", 2)),
                       txn(2, "ok", 2, 10, ("r", "x", [1]), ("r", "y", [1]), ("append", "y", 2)),
                       txn(3, "ok", 20, 30, ("r", "x", [1, 2]), ("r", "y", [1, 2]))]
        rc, out, err = run(SI, skew, "--realtime")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("G2", out)
        fractured = base + [txn(1, "ok", 0, 5, ("r", "x", None), ("r", "y", [1])), txn(2, "ok", 6, 7, ("r", "x", [1]))]
        rc, out, err = run(SI, fractured)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("G-single", out)

    def test_aborted_read_and_unknown(self):
        rc, out, err = run(SI, [txn(1, "fail", 0, 1, ("append", "x", 1)), txn(2, "ok", 2, 3, ("r", "x", [1]))])
        self.assertEqual(rc, 1, out + err)
        self.assertIn("G1a", out)
        rc, out, err = run(SI, [txn(1, "info", 0, None, ("append", "x", 1)), txn(2, "ok", 2, 3, ("r", "x", [1]))])
        self.assertEqual(rc, 0, out + err)

    def test_bank(self):
        reads = [{"type": "ok", "balances": [10, 20, 30]}, {"type": "ok", "balances": [0, 30, 30]},
                 {"type": "fail", "balances": [1, 1, 1]}, {"type": "ok", "transfer": [0, 1, 5]}]
        rc, out, err = run(SI, reads, "--bank", "3:60")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = run(SI, reads + [{"type": "ok", "balances": [10, 20, 25]}], "--bank", "3:60")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("sum 55", out)

    def test_bad_input_exits_3(self):
        for bad in [json.dumps({"type": "ok", "mops": [["w", "x", 1]]}),
                    json.dumps({"type": "ok", "mops": [["r", "x", ["a"]]]}), "[]"]:
            rc, out, err = run(SI, [bad])
            self.assertEqual(rc, 3, "accepted %s: %s" % (bad, out))


if __name__ == "__main__":
    if not (LIN and SI):
        sys.exit("TKV_CHECK_LIN and TKV_CHECK_SI must name the tools")
    unittest.main(verbosity=2)
