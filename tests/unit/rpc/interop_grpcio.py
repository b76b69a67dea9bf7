#!/usr/bin/python3
"""Interop with Debian's python3-grpcio (a real gRPC C-core peer), both ways:
1. python calls tkv-rpc-echo's server with generic calls on raw bytes;
2. tkv-rpc-echo's client ("client <port>" mode) calls a python test.Echo server.
Usage: interop_grpcio.py <tkv-rpc-echo>."""
import concurrent.futures
import signal
import subprocess
import sys
import time

import grpc

FAIL_MSG = "bad request: 100% \u00fcnicode\nline2"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(fn, code, what):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: got {e.code()} ({e.details()}), want {code}")
        return e
    raise AssertionError(f"{what}: no error, want {code}")


def python_server():
    def unary(req, ctx):
        if req == b"fail":
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, FAIL_MSG)
        if req == b"hold":
            time.sleep(1.0)
        return req

    def client_stream(it, ctx):
        return b"".join(it)

    def server_stream(req, ctx):
        for i in range(int(req)):
            yield b"msg-%d" % i

    def bidi(it, ctx):
        for m in it:
            yield m

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(16),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def our_client_against_python(echo_bin):
    server, port = python_server()
    try:
        r = subprocess.run([echo_bin, "client", str(port)], timeout=60)
        check(r.returncode == 0, f"tkv-rpc-echo client exit status {r.returncode}")
    finally:
        server.stop(0)


def main():
    our_client_against_python(sys.argv[1])
    srv = subprocess.Popen([sys.argv[1], "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline()
        check(line.startswith("PORT "), f"server said {line!r}")
        port = int(line.split()[1])
        opts = [("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
            grpc.channel_ready_future(ch).result(timeout=10)
            unary = ch.unary_unary("/test.Echo/Unary")
            check(unary(b"hello", timeout=10) == b"hello", "unary echo")
            check(unary(b"", timeout=10) == b"", "empty message")
            big = bytes(range(256)) * 4096  # 1 MiB, many DATA frames
            check(unary(big, timeout=20) == big, "1 MiB echo")
            e = expect_error(lambda: unary(b"fail", timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
                             "status")
            check(e.details() == FAIL_MSG, f"grpc-message {e.details()!r}")
            expect_error(lambda: ch.unary_unary("/test.Echo/Nope")(b"x", timeout=10),
                         grpc.StatusCode.UNIMPLEMENTED, "unknown method")
            expect_error(lambda: unary(b"hold", timeout=0.2), grpc.StatusCode.DEADLINE_EXCEEDED,
                         "deadline")
            expect_error(lambda: unary(b"x" * 100, timeout=10, compression=grpc.Compression.Gzip),
                         grpc.StatusCode.UNIMPLEMENTED, "compressed request")
            expect_error(lambda: unary(b"y" * ((16 << 20) + 1), timeout=30),
                         grpc.StatusCode.RESOURCE_EXHAUSTED, "oversize request")
            check(unary(b"after", timeout=10) == b"after", "served after errors")

            cs = ch.stream_unary("/test.Echo/ClientStream")
            check(cs(iter([b"a", b"bc", b"", b"def"]), timeout=10) == b"abcdef", "client stream")
            ss = ch.unary_stream("/test.Echo/ServerStream")
            got = list(ss(b"25", timeout=10))
            check(got == [f"msg-{i}".encode() for i in range(25)], f"server stream {got[:3]}")
            bidi = ch.stream_stream("/test.Echo/Bidi")
            got = list(bidi(iter([b"x%d" % i for i in range(30)]), timeout=10))
            check(got == [b"x%d" % i for i in range(30)], "bidi")

            futs = [unary.future(b"c%d" % i, timeout=20) for i in range(200)]
            for i, f in enumerate(futs):
                check(f.result() == b"c%d" % i, f"concurrent call {i}")
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                res = list(ex.map(lambda i: unary(b"t%d" % i, timeout=20), range(100)))
            check(res == [b"t%d" % i for i in range(100)], "threaded calls")
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(timeout=20)
        check(rc == 0, f"tkv-rpc-echo exit status {rc} after SIGTERM")
        print("interop OK")
        return 0
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


if __name__ == "__main__":
    sys.exit(main())
