# Linearizability of the Raw API under kill -9 (RELIABILITY.md W1/S1 on a
# standalone server): concurrent clients RawGet/RawPut/RawDelete a few hot
# keys while the server is SIGKILLed and restarted on the same data dir;
# every operation is recorded with its invoke and completion time (those in
# flight at a kill as indeterminate) and the history must pass
# tkv-check-lin. Negative controls: the same recorded history with one
# injected stale read, and with one acknowledged write dropped from the
# store's view (a read after the end that finds an old value), must FAIL,
# so the check is shown to look at what the server did.
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))

import grpc  # noqa: E402

import tkvtest  # noqa: E402
from tkvtest import raw_delete, raw_get, raw_put  # noqa: E402
from history import History, now, run_checker, text  # noqa: E402

N_CLIENTS = 4
# Pause between a client's operations: keeps the history near 2,000 ops, so
# proving the injected bugs non-linearizable (an exhaustive search of the key)
# stays well inside the checker's budget; a fast server otherwise produces
# 1,600+ ops on one key and the negative controls end UNKNOWN.
THINK_S = 0.008
KEYS = [b"lin/k%d" % i for i in range(4)]
KILLS = 3
RUN_BEFORE_KILL = 1.2  # seconds of traffic between restarts
OP_TIMEOUT = 5


class LinRaw(tkvtest.TkvTestCase):

    def client(self, cid, srv, hist, stop, seed, crashes):
        try:
            self.run_client(cid, srv, hist, stop, seed)
        except Exception as e:  # noqa: BLE001  (reported by the test)
            crashes.append("client %d: %r" % (cid, e))

    def run_client(self, cid, srv, hist, stop, seed):
        rnd = random.Random(seed)
        seq = 0
        ch = None
        addr = None
        while not stop.is_set():
            port = srv.port  # None while the server restarts
            if port is None:
                time.sleep(0.02)
                continue
            if ch is None or addr != "127.0.0.1:%d" % port:
                if ch is not None:
                    ch.close()
                addr = "127.0.0.1:%d" % port
                ch = tkvtest.channel(addr)
            key = rnd.choice(KEYS)
            r = rnd.random()
            rec = {"process": cid, "key": text(key)}
            try:
                if r < 0.5:
                    rec["f"] = "get"
                    rec["call"] = now()
                    resp = raw_get(ch, key, timeout=OP_TIMEOUT)
                    rec["ret"] = now()
                    if resp.error:
                        rec["type"] = "fail"
                    else:
                        rec["type"] = "ok"
                        rec["value"] = None if resp.not_found else text(resp.value)
                elif r < 0.9:
                    seq += 1
                    val = b"c%d-%d" % (cid, seq)
                    rec.update(f="put", value=text(val))
                    rec["call"] = now()
                    resp = raw_put(ch, key, val, timeout=OP_TIMEOUT)
                    rec["ret"] = now()
                    # An error answer may still have written: indeterminate.
                    rec["type"] = "info" if resp.error else "ok"
                else:
                    rec["f"] = "delete"
                    rec["call"] = now()
                    resp = raw_delete(ch, key, timeout=OP_TIMEOUT)
                    rec["ret"] = now()
                    rec["type"] = "info" if resp.error else "ok"
            except grpc.RpcError:
                # Killed with the request in flight (or refused while down):
                # it may or may not have taken effect.
                rec["type"] = "info"
                rec["ret"] = None
                time.sleep(0.05)
            hist.add(rec)
            time.sleep(THINK_S)
        if ch is not None:
            ch.close()

    def test_raw_ops_stay_linearizable_across_kill9(self):
        srv = tkvtest.Server(cores=2)
        hist = History()
        stop = threading.Event()
        crashes = []
        tmp = tempfile.mkdtemp(prefix="tkv-lin-")
        seed = int(os.environ.get("TKV_SEED", random.randrange(1 << 30)))
        print("seed %d (TKV_SEED replays the client choices)" % seed)
        try:
            srv.start()
            threads = [threading.Thread(target=self.client, args=(c, srv, hist, stop, seed * 100 + c, crashes))
                       for c in range(N_CLIENTS)]
            for t in threads:
                t.start()
            for _ in range(KILLS):
                time.sleep(RUN_BEFORE_KILL)
                srv.kill()
                srv.start()
            time.sleep(RUN_BEFORE_KILL)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            self.assertEqual(crashes, [], "a client thread failed")
            # One last read of every key after all writers stopped.
            with srv.channel() as ch:
                for k in KEYS:
                    c = now()
                    resp = raw_get(ch, k)
                    hist.add({"process": 99, "f": "get", "key": text(k), "call": c, "ret": now(), "type": "ok",
                              "value": None if resp.not_found else text(resp.value)})
            self.assertEqual(srv.stop(), 0)

            recs = list(hist.records)
            n_ok = sum(1 for r in recs if r["type"] == "ok")
            n_info = sum(1 for r in recs if r["type"] == "info")
            self.assertGreater(n_ok, 200, "too little traffic to check (%d ok ops)" % n_ok)
            self.assertGreater(n_info, 0, "no operation was in flight at a kill: the kills tested nothing")
            path = hist.write(os.path.join(tmp, "history.jsonl"))
            rc, report = run_checker("TKV_CHECK_LIN", path)
            print(report)
            self.assertEqual(rc, 0, "history of %d ops (%d indeterminate) is not linearizable (kept in %s):\n%s" %
                             (len(recs), n_info, tmp, report))

            # Negative control 1: a stale read appended after the end: the
            # value of an acknowledged put that a later acknowledged put to
            # the same key (invoked after it completed) overwrote.
            end = max(r["ret"] or r["call"] for r in recs) + 1000
            puts = [r for r in recs if r["f"] == "put" and r["type"] == "ok"]
            stale = None
            for p in puts:
                later = [q for q in puts if q["key"] == p["key"] and q["call"] > p["ret"]
                         and q["value"] != p["value"]]
                if later:
                    stale = p
                    break
            self.assertIsNotNone(stale, "no overwritten acknowledged put in the history")
            bad = History()
            bad.records = recs + [{"process": 100, "f": "get", "key": stale["key"], "call": end, "ret": end + 10,
                                   "type": "ok", "value": stale["value"]}]
            rc, report = run_checker("TKV_CHECK_LIN", bad.write(os.path.join(tmp, "stale.jsonl")),
                                     ["--budget", "50000000"])
            self.assertEqual(rc, 1, "injected stale read not caught:\n%s" % report)
            self.assertIn("stale read", report)

            # Negative control 2: the last acknowledged write of a key lost:
            # a read at the end returns the value before it.
            last = max((p for p in puts if p["key"] == stale["key"]), key=lambda p: p["ret"])
            prior = [p for p in puts if p["key"] == last["key"] and p["ret"] < last["call"]]
            if prior:
                lost = History()
                lost.records = recs + [{"process": 100, "f": "get", "key": last["key"], "call": end,
                                        "ret": end + 10, "type": "ok", "value": prior[-1]["value"]}]
                rc, report = run_checker("TKV_CHECK_LIN", lost.write(os.path.join(tmp, "lost.jsonl")),
                                             ["--budget", "50000000"])
                self.assertEqual(rc, 1, "injected lost write not caught:\n%s" % report)
        finally:
            stop.set()
            srv.cleanup()
            if os.environ.get("TKV_KEEP_LOGS") != "1":
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    tkvtest.main()
