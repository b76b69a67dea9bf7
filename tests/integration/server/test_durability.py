# A RawPut (and RawDelete) is acknowledged only once it survives kill -9 of
# the server: writers run flat out, the server is SIGKILLed mid-stream, and
# after a restart on the same data dir every acknowledged write is present.
import signal
import threading
import time

import grpc

import tkvtest
from tkvtest import raw_delete, raw_get, raw_put, raw_scan

N_WRITERS = 8


class Durability(tkvtest.TkvTestCase):

    def test_kill9_keeps_every_acknowledged_put(self):
        srv = tkvtest.Server(cores=2)
        try:
            srv.start()
            with srv.channel() as ch:
                for i in range(50):
                    self.assert_ok(raw_put(ch, b"k9/del/%02d" % i, b"doomed"))
                for i in range(50):
                    self.assert_ok(raw_delete(ch, b"k9/del/%02d" % i))
            acked = [[] for _ in range(N_WRITERS)]
            stop = threading.Event()

            def writer(w):
                with srv.channel() as ch:
                    i = 0
                    while not stop.is_set():
                        k = b"k9/%d/%06d" % (w, i)
                        try:
                            r = raw_put(ch, k, b"v" + k, timeout=10)
                        except grpc.RpcError:
                            return  # the server died under us: not acknowledged
                        if r.error or r.HasField("region_error"):
                            return
                        acked[w].append(k)
                        i += 1

            threads = [threading.Thread(target=writer, args=(w,)) for w in range(N_WRITERS)]
            for t in threads:
                t.start()
            time.sleep(2.0)
            srv.kill(signal.SIGKILL)
            stop.set()
            for t in threads:
                t.join()
            n_acked = sum(len(a) for a in acked)
            self.assertGreater(n_acked, 0, "no put was acknowledged before the kill")

            srv.start()
            with srv.channel() as ch:
                missing = []
                for w in range(N_WRITERS):
                    for k in acked[w]:
                        r = self.assert_ok(raw_get(ch, k))
                        if r.not_found or r.value != b"v" + k:
                            missing.append(k)
                self.assertFalse(missing, "%d of %d acknowledged puts lost after kill -9; first: %r" %
                                 (len(missing), n_acked, missing[:5]))
                r = self.assert_ok(raw_scan(ch, b"k9/del/", 100))
                self.assertEqual([kv.key for kv in r.kvs if kv.key.startswith(b"k9/del/")], [],
                                 "acknowledged deletes came back after kill -9")
                # Writes after the restart work and are ordered with the old ones.
                self.assert_ok(raw_put(ch, b"k9/after", b"restart"))
                self.assertEqual(self.assert_ok(raw_get(ch, b"k9/after")).value, b"restart")
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.cleanup()

    def test_kill9_twice_in_a_row(self):
        """Recovery itself must be crash-safe: kill again right after restart."""
        srv = tkvtest.Server(cores=1)
        try:
            srv.start()
            with srv.channel() as ch:
                for i in range(30):
                    self.assert_ok(raw_put(ch, b"kk/%02d" % i, b"%d" % i))
            srv.kill(signal.SIGKILL)
            srv.start()
            srv.kill(signal.SIGKILL)
            srv.start()
            with srv.channel() as ch:
                r = self.assert_ok(raw_scan(ch, b"kk/", 100))
                self.assertEqual([(kv.key, kv.value) for kv in r.kvs if kv.key.startswith(b"kk/")],
                                 [(b"kk/%02d" % i, b"%d" % i) for i in range(30)])
        finally:
            srv.cleanup()


if __name__ == "__main__":
    tkvtest.main()
