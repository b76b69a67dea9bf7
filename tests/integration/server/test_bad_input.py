# Methods not built yet answer UNIMPLEMENTED, honestly; bad input gets the
# right gRPC status or closes only its own connection (issue 2, item 6); after
# each case another client is still served.
import os
import re
import socket
import struct

import grpc

import tkvtest
from tkvtest import H2_PREFACE, h2_frame, kvrpcpb

MAX_MSG = 16 * 1024 * 1024  # rpc default maximum message size


def status_of(addr, path, body, **kw):
    """(grpc-status, grpc-message) of one call made with nghttp."""
    out = tkvtest.nghttp_call(addr, path, body, **kw)
    m = re.search(r"grpc-status: (\d+)", out)
    msg = re.search(r"grpc-message: (.*)", out)
    return (int(m.group(1)) if m else None, msg.group(1).strip() if msg else "", out)


class BadInput(tkvtest.ServerTestCase):
    cores = 2

    # ---- methods ----

    def test_unimplemented_unary_methods(self):
        for m in tkvtest.UNIMPLEMENTED_UNARY:
            with self.assertRaises(grpc.RpcError, msg=m) as cm:
                tkvtest.call_bytes(self.ch, tkvtest.SERVICE + m, b"")
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED, m)
            self.assertNotEqual(cm.exception.details() or "", "", "%s: UNIMPLEMENTED without a message" % m)
        self.assert_serving()

    def test_unimplemented_streaming_methods(self):
        for m in tkvtest.UNIMPLEMENTED_STREAMING:
            f = self.ch.stream_unary(tkvtest.SERVICE + m, request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError, msg=m) as cm:
                f(iter([b"", b""]), timeout=tkvtest.RPC_TIMEOUT)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED, m)
        self.assert_serving()

    def test_unknown_method_and_service(self):
        for path in ("/tinykvpb.TinyKv/NoSuchMethod", "/nosuch.Service/RawGet", "/tinykvpb.TinyKv/rawget"):
            with self.assertRaises(grpc.RpcError, msg=path) as cm:
                tkvtest.call_bytes(self.ch, path, b"")
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED, path)
        self.assert_serving()

    # ---- message contents ----

    def test_undecodable_message(self):
        bodies = [
            b"\x12\xff\xff\xff\xff\x0f",  # key: length far past the end
            b"\x12\x05ab",               # key: truncated
            b"\x0a\x03\x08",             # context: truncated inner varint
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # varint tag too long
            b"\x13",                     # wire type 3 (start group) unsupported
        ]
        for body in bodies:
            for m in ("RawGet", "RawPut", "RawDelete", "RawScan"):
                with self.assertRaises(grpc.RpcError, msg="%s %r" % (m, body)) as cm:
                    tkvtest.call_bytes(self.ch, tkvtest.SERVICE + m, body)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                                 "%s with %r: %s" % (m, body, cm.exception.details()))
        self.assert_serving()

    def test_unknown_fields_are_ignored(self):
        # RawPut + field 15 (varint) + field 99 (bytes): proto3 skips unknown fields.
        body = kvrpcpb.RawPutRequest(key=b"unk/k", value=b"v").SerializeToString()
        body += b"\x78\x01" + b"\x9a\x06\x03abc"
        tkvtest.call_bytes(self.ch, tkvtest.SERVICE + "RawPut", body)
        r = self.assert_ok(tkvtest.raw_get(self.ch, b"unk/k"))
        self.assertEqual(r.value, b"v")

    def test_compressed_flag_without_encoding(self):
        body = tkvtest.grpc_message(kvrpcpb.RawGetRequest(key=b"x").SerializeToString(), compressed=True)
        st, msg, out = status_of(self.srv.addr, tkvtest.SERVICE + "RawGet", body)
        self.assertEqual(st, 12, "expected grpc-status 12 (UNIMPLEMENTED); nghttp said:\n" + out)
        self.assert_serving()

    def test_message_over_maximum(self):
        with tkvtest.channel(self.srv.addr, options=[("grpc.max_send_message_length", -1)]) as ch:
            req = kvrpcpb.RawPutRequest(key=b"huge/k", value=b"x" * (MAX_MSG + 1024))
            with self.assertRaises(grpc.RpcError) as cm:
                tkvtest.raw_put(ch, req.key, req.value, timeout=60)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, cm.exception.details())
        self.assertTrue(self.assert_ok(tkvtest.raw_get(self.ch, b"huge/k")).not_found)
        self.assert_serving()

    def test_message_just_under_maximum_is_served(self):
        with tkvtest.channel(self.srv.addr, options=[("grpc.max_send_message_length", -1),
                                                           ("grpc.max_receive_message_length", -1)]) as ch:
            v = b"y" * (MAX_MSG - 1024)
            self.assert_ok(tkvtest.raw_put(ch, b"nearmax/k", v, timeout=60))
            self.assertEqual(self.assert_ok(tkvtest.raw_get(ch, b"nearmax/k", timeout=60)).value, v)

    # ---- broken connections: only that connection closes ----

    def test_garbage_bytes(self):
        s = tkvtest.raw_connect(self.srv.addr)
        try:
            s.sendall(os.urandom(4096))
            self.assertTrue(tkvtest.wait_closed(s), "server kept a garbage connection open")
        finally:
            s.close()
        self.assert_serving()

    def test_http1_request(self):
        s = tkvtest.raw_connect(self.srv.addr)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
            self.assertTrue(tkvtest.wait_closed(s), "server kept an HTTP/1.1 connection open")
        finally:
            s.close()
        self.assert_serving()

    def test_half_sent_frame_then_close(self):
        s = tkvtest.raw_connect(self.srv.addr)
        hdrs = tkvtest.grpc_headers_block(tkvtest.SERVICE + "RawGet", self.srv.addr)
        s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b"") + h2_frame(1, 4, 1, hdrs) +
                  struct.pack(">I", 100)[1:] + b"\x00\x00\x00\x00\x01" + b"half")
        s.close()
        self.assert_serving()

    def test_half_sent_frame_kept_open_does_not_block_others(self):
        """A peer that stalls mid-frame must not stall the core it landed on."""
        socks = []
        try:
            for _ in range(8):  # enough that every core holds one
                s = tkvtest.raw_connect(self.srv.addr)
                hdrs = tkvtest.grpc_headers_block(tkvtest.SERVICE + "RawPut", self.srv.addr)
                s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b"") + h2_frame(1, 4, 1, hdrs) +
                          struct.pack(">I", 1000)[1:] + b"\x00\x00\x00\x00\x01" + b"\x00\x00\x00\x03\xe0")
                socks.append(s)
            for _ in range(4):
                self.assert_serving()
        finally:
            for s in socks:
                s.close()
        self.assert_serving()

    def test_raw_h2_client_is_served(self):
        """Control for the cases above: the hand-made frames are valid."""
        body = tkvtest.grpc_message(kvrpcpb.RawGetRequest(key=b"h2raw/none").SerializeToString())
        st, msg, out = status_of(self.srv.addr, tkvtest.SERVICE + "RawGet", body)
        self.assertEqual(st, 0, "nghttp call failed:\n" + out)
        s = tkvtest.raw_connect(self.srv.addr)
        try:
            hdrs = tkvtest.grpc_headers_block(tkvtest.SERVICE + "RawGet", self.srv.addr)
            s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b"") + h2_frame(1, 4, 1, hdrs) +
                      h2_frame(0, 1, 1, body))
            s.settimeout(20)
            got = b""
            # A HEADERS frame with END_STREAM on stream 1 carries the trailers.
            while True:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "server closed a valid connection; got %r" % got)
                got += chunk
                frames = _parse_frames(got)
                if any(t == 1 and (f & 1) and sid == 1 for t, f, sid, _ in frames):
                    break
            datas = [p for t, f, sid, p in frames if t == 0 and sid == 1]
            payload = b"".join(datas)
            self.assertGreaterEqual(len(payload), 5, "no gRPC message in the reply")
            n = struct.unpack(">I", payload[1:5])[0]
            resp = kvrpcpb.RawGetResponse.FromString(payload[5:5 + n])
            self.assertTrue(resp.not_found)
        except socket.timeout:
            self.fail("no complete reply to a hand-framed request")
        finally:
            s.close()


def _parse_frames(buf):
    frames = []
    off = 0
    while off + 9 <= len(buf):
        n = int.from_bytes(buf[off:off + 3], "big")
        if off + 9 + n > len(buf):
            break
        t, f = buf[off + 3], buf[off + 4]
        sid = int.from_bytes(buf[off + 5:off + 9], "big") & 0x7FFFFFFF
        frames.append((t, f, sid, buf[off + 9:off + 9 + n]))
        off += 9 + n
    return frames


if __name__ == "__main__":
    tkvtest.main()
