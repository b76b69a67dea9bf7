/* Sockets and files through io_uring: accept/connect/recv/send echo with a
 * multi-megabyte send, refused connect, writev + fsync + linked write_sync
 * and read-back, close, and cancellation of a pending recv. */
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor_harness.h"

#define BIG (8u << 20)

/* ---- echo over 127.0.0.1 ---- */

struct echo {
    struct tkv_reactor *r;
    int lfd, sfd, cfd;
    uint16_t port;
    struct sockaddr_in addr;
    struct tkv_io accept_io, connect_io, srv_recv, srv_send, cli_send, cli_recv, close_io[3];
    uint8_t *out, *in;
    size_t in_len;
    uint8_t srv_buf[64 * 1024];
    size_t srv_pending;
    int closes;
    bool sent_all;
    struct tkv_reactor_stats st;
};
static struct echo E;

static void stop_here(void)
{
    tkv_reactor_group_stop(tkv_reactor_group_of(E.r));
}

static void on_close(struct tkv_io *io, int res)
{
    CHECK(res == 0, "close fd: %s", strerror(-res));
    (void)io;
    if (++E.closes == 3)
        stop_here();
}

static void maybe_done(void)
{
    if (!E.sent_all || E.in_len < BIG)
        return;
    tkv_reactor_get_stats(E.r, &E.st);
    tkv_reactor_close(E.r, &E.close_io[0], E.cfd);
    tkv_reactor_close(E.r, &E.close_io[1], E.sfd);
    tkv_reactor_close(E.r, &E.close_io[2], E.lfd);
}

static void srv_recv_cb(struct tkv_io *io, int res);

static void srv_send_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res == (int)E.srv_pending, "server send res %d, want %zu", res, E.srv_pending);
    tkv_reactor_recv(E.r, &E.srv_recv, E.sfd, E.srv_buf, sizeof(E.srv_buf));
}

static void srv_recv_cb(struct tkv_io *io, int res)
{
    (void)io;
    if (res == 0)
        return; /* client closed */
    if (res < 0) {
        CHECK(res == -ECANCELED, "server recv: %s", strerror(-res));
        return;
    }
    E.srv_pending = (size_t)res;
    tkv_reactor_send(E.r, &E.srv_send, E.sfd, E.srv_buf, (size_t)res);
}

static void cli_recv_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res > 0, "client recv res %d after %zu bytes", res, E.in_len);
    if (res <= 0)
        return;
    E.in_len += (size_t)res;
    if (E.in_len < BIG) {
        tkv_reactor_recv(E.r, &E.cli_recv, E.cfd, E.in + E.in_len, BIG - E.in_len);
        return;
    }
    CHECK(memcmp(E.in, E.out, BIG) == 0, "echoed bytes differ from the sent ones");
    maybe_done();
}

static void cli_send_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res == (int)BIG, "client send res %d, want %u (all bytes)", res, BIG);
    E.sent_all = true;
    maybe_done();
}

static void accept_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res >= 0, "accept: %s", strerror(-res));
    if (res < 0)
        return;
    E.sfd = res;
    int fl = fcntl(res, F_GETFL);
    CHECK(fl >= 0 && (fl & O_NONBLOCK), "accepted fd is not non-blocking");
    CHECK(fcntl(res, F_GETFD) & FD_CLOEXEC, "accepted fd is not close-on-exec");
    tkv_reactor_recv(E.r, &E.srv_recv, E.sfd, E.srv_buf, sizeof(E.srv_buf));
}

static void connect_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res == 0, "connect: %s", strerror(-res));
    if (res < 0)
        return;
    tkv_reactor_send(E.r, &E.cli_send, E.cfd, E.out, BIG);
    tkv_reactor_recv(E.r, &E.cli_recv, E.cfd, E.in, BIG);
}

static int echo_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    E.r = r;
    E.lfd = tkv_reactor_listen_tcp("127.0.0.1", 0, false, 16, &E.port);
    CHECK(E.lfd >= 0, "listen: %s", tkv_strerror(E.lfd));
    if (E.lfd < 0)
        return E.lfd;
    CHECK(E.port != 0, "port 0 was not resolved");
    E.cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* small socket buffers make the kernel accept only part of the 8 MB
     * send per SQE, exercising the resubmission of short sends */
    int small = 16 * 1024;
    setsockopt(E.cfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    E.addr.sin_family = AF_INET;
    E.addr.sin_port = htons(E.port);
    E.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    tkv_io_init(&E.accept_io, accept_cb, NULL);
    tkv_io_init(&E.connect_io, connect_cb, NULL);
    tkv_io_init(&E.srv_recv, srv_recv_cb, NULL);
    tkv_io_init(&E.srv_send, srv_send_cb, NULL);
    tkv_io_init(&E.cli_send, cli_send_cb, NULL);
    tkv_io_init(&E.cli_recv, cli_recv_cb, NULL);
    for (int i = 0; i < 3; i++)
        tkv_io_init(&E.close_io[i], on_close, NULL);
    tkv_reactor_accept(r, &E.accept_io, E.lfd);
    CHECK(tkv_io_pending(&E.accept_io), "accept io not pending after submission");
    tkv_reactor_connect(r, &E.connect_io, E.cfd, (struct sockaddr *)&E.addr, sizeof(E.addr));
    return 0;
}

Test(reactor_io, tcp_echo_8mb, .timeout = 30)
{
    E.out = malloc(BIG);
    E.in = malloc(BIG);
    cr_assert(E.out && E.in);
    srand(7);
    for (size_t i = 0; i < BIG; i++)
        E.out[i] = (uint8_t)(rand() >> 7);
    cr_assert_eq(h_run(1, 0, echo_init, NULL, NULL), 0);
    cr_assert_eq(E.in_len, BIG, "received %zu of %u bytes", E.in_len, BIG);
    cr_assert_eq(E.closes, 3);
    cr_assert_gt(E.st.resubmits, 0, "no short send was resubmitted: the test lost its point");
    cr_assert_gt(E.st.cqes, 10);
    free(E.out);
    free(E.in);
}

/* ---- connect refused ---- */

static void refused_cb(struct tkv_io *io, int res)
{
    CHECK(res == -ECONNREFUSED, "connect to a closed port: %d (%s)", res, strerror(-res));
    close(*(int *)io->data);
    stop_here();
}

static int refused_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    E.r = r;
    /* a port that was just free: bind, read it, close */
    int lfd = tkv_reactor_listen_tcp("127.0.0.1", 0, false, 1, &E.port);
    CHECK(lfd >= 0, "listen");
    close(lfd);
    E.cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    E.addr.sin_family = AF_INET;
    E.addr.sin_port = htons(E.port);
    E.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    tkv_io_init(&E.connect_io, refused_cb, &E.cfd);
    tkv_reactor_connect(r, &E.connect_io, E.cfd, (struct sockaddr *)&E.addr, sizeof(E.addr));
    return 0;
}

Test(reactor_io, connect_refused, .timeout = 10)
{
    cr_assert_eq(h_run(1, 0, refused_init, NULL, NULL), 0);
}

/* ---- files ---- */

struct ftest {
    struct tkv_reactor *r;
    int fd;
    char path[64];
    struct tkv_io io;
    struct iovec iov[3], ws_iov[2];
    char rbuf[128];
    int step;
};
static struct ftest F;

static const char *const part[3] = {"hello ", "io_uring ", "world"};
#define WS1 "-linked"
#define WS2 "+sync"

static void file_step(struct tkv_io *io, int res)
{
    (void)io;
    switch (F.step++) {
    case 0: /* writev done */
        CHECK(res == 20, "writev res %d, want 20", res);
        tkv_reactor_fsync(F.r, &F.io, F.fd, false);
        break;
    case 1:
        CHECK(res == 0, "fsync: %d", res);
        F.ws_iov[0] = (struct iovec){(void *)WS1, strlen(WS1)};
        F.ws_iov[1] = (struct iovec){(void *)WS2, strlen(WS2)};
        tkv_reactor_write_sync(F.r, &F.io, F.fd, F.ws_iov, 2, 20);
        break;
    case 2:
        CHECK(res == (int)(strlen(WS1) + strlen(WS2)), "write_sync res %d", res);
        tkv_reactor_fsync(F.r, &F.io, F.fd, true);
        break;
    case 3:
        CHECK(res == 0, "fdatasync: %d", res);
        tkv_reactor_read(F.r, &F.io, F.fd, F.rbuf, sizeof(F.rbuf), 0);
        break;
    case 4:
        CHECK(res == 32, "read res %d, want 32", res);
        CHECK(res >= 0 && memcmp(F.rbuf, "hello io_uring world-linked+sync", 32) == 0,
              "read back \"%.*s\"", res > 0 ? res : 0, F.rbuf);
        tkv_reactor_read(F.r, &F.io, F.fd, F.rbuf, sizeof(F.rbuf), 1000);
        break;
    case 5:
        CHECK(res == 0, "read past the end: %d", res);
        /* a write_sync on a read-only fd reports the write's error, not the
         * -ECANCELED of the broken link */
        close(F.fd);
        F.fd = open(F.path, O_RDONLY | O_CLOEXEC);
        tkv_reactor_write_sync(F.r, &F.io, F.fd, F.ws_iov, 2, 0);
        break;
    case 6:
        CHECK(res == -EBADF, "write_sync on a read-only fd: %d (%s)", res, strerror(-res));
        tkv_reactor_close(F.r, &F.io, F.fd);
        break;
    case 7:
        CHECK(res == 0, "close: %d", res);
        tkv_reactor_close(F.r, &F.io, F.fd); /* already closed */
        break;
    case 8:
        CHECK(res == -EBADF, "second close: %d", res);
        unlink(F.path);
        tkv_reactor_group_stop(tkv_reactor_group_of(F.r));
        break;
    }
}

static int file_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    F.r = r;
    strcpy(F.path, "/tmp/tkv-reactor-XXXXXX");
    F.fd = mkstemp(F.path);
    CHECK(F.fd >= 0, "mkstemp");
    for (int i = 0; i < 3; i++)
        F.iov[i] = (struct iovec){(void *)part[i], strlen(part[i])};
    tkv_io_init(&F.io, file_step, NULL);
    tkv_reactor_writev(r, &F.io, F.fd, F.iov, 3, 0);
    return 0;
}

Test(reactor_io, file_writev_fsync_write_sync_read_close, .timeout = 10)
{
    cr_assert_eq(h_run(1, 0, file_init, NULL, NULL), 0);
    cr_assert_eq(F.step, 9, "file sequence stopped at step %d", F.step);
}

/* ---- cancel ---- */

struct ctest {
    struct tkv_reactor *r;
    int sv[2];
    char buf[16];
    struct tkv_io recv_io, close_io;
    int res;
    int fired;
};
static struct ctest C;

static void cancelled_cb(struct tkv_io *io, int res)
{
    C.fired++;
    C.res = res;
    CHECK(!tkv_io_pending(io), "io still pending inside its callback");
    close(C.sv[0]);
    close(C.sv[1]);
    tkv_reactor_group_stop(tkv_reactor_group_of(C.r));
}

static void do_cancel(struct tkv_timer *t)
{
    (void)t;
    CHECK(tkv_io_pending(&C.recv_io), "recv no longer pending before cancel");
    tkv_reactor_cancel(C.r, &C.recv_io);
}

static struct tkv_timer cancel_timer;

static int cancel_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    C.r = r;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, C.sv) == 0, "socketpair");
    tkv_io_init(&C.recv_io, cancelled_cb, NULL);
    tkv_reactor_recv(r, &C.recv_io, C.sv[0], C.buf, sizeof(C.buf));
    tkv_reactor_cancel(r, &C.close_io); /* not pending: no-op */
    tkv_timer_init(&cancel_timer, do_cancel, NULL);
    tkv_timer_start(r, &cancel_timer, 5 * MS);
    return 0;
}

Test(reactor_io, cancel_pending_recv, .timeout = 10)
{
    cr_assert_eq(h_run(1, 0, cancel_init, NULL, NULL), 0);
    cr_assert_eq(C.fired, 1, "recv callback fired %d times", C.fired);
    cr_assert_eq(C.res, -ECANCELED, "cancelled recv res %d, want -ECANCELED", C.res);
}

/* ---- socket helpers ---- */

Test(reactor_socket, parse_hostport)
{
    char h[64];
    uint16_t p;
    cr_assert_eq(tkv_reactor_parse_hostport("127.0.0.1:20160", h, sizeof(h), &p), 0);
    cr_assert_str_eq(h, "127.0.0.1");
    cr_assert_eq(p, 20160);
    cr_assert_eq(tkv_reactor_parse_hostport("[::1]:80", h, sizeof(h), &p), 0);
    cr_assert_str_eq(h, "::1");
    cr_assert_eq(p, 80);
    cr_assert_eq(tkv_reactor_parse_hostport(":7", h, sizeof(h), &p), 0);
    cr_assert_str_eq(h, "0.0.0.0");
    cr_assert_eq(p, 7);
    cr_assert_eq(tkv_reactor_parse_hostport("host", h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_eq(tkv_reactor_parse_hostport("h:", h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_eq(tkv_reactor_parse_hostport("h:65536", h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_eq(tkv_reactor_parse_hostport("h:1x", h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_eq(tkv_reactor_parse_hostport("::1:80", h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_eq(tkv_reactor_parse_hostport("[::1]80", h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_eq(tkv_reactor_parse_hostport("abcdef:1", h, 4, &p), TKV_EINVAL);
}

/* One resolver for the listener, the rpc listeners and client connects:
 * the address forms an operator writes in server.addr all work. */
Test(reactor_socket, resolve_address_forms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[INET6_ADDRSTRLEN];
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

    cr_assert_eq(tkv_reactor_resolve("localhost", 20160, TKV_RESOLVE_NUMERIC, &ss, &len), 0);
    cr_assert_eq(ss.ss_family, AF_INET, "localhost must be 127.0.0.1 on both sides");
    cr_assert_str_eq(inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf)), "127.0.0.1");
    cr_assert_eq(ntohs(s4->sin_port), 20160);
    cr_assert_eq(len, sizeof(struct sockaddr_in));

    cr_assert_eq(tkv_reactor_resolve("[::1]", 7, 0, &ss, &len), 0);
    cr_assert_eq(ss.ss_family, AF_INET6);
    cr_assert_str_eq(inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf)), "::1");
    cr_assert_eq(ntohs(s6->sin6_port), 7);
    cr_assert_eq(tkv_reactor_resolve("::1", 7, TKV_RESOLVE_NUMERIC, &ss, &len), 0);
    cr_assert_eq(ss.ss_family, AF_INET6);

    cr_assert_eq(tkv_reactor_resolve("", 1, TKV_RESOLVE_PASSIVE, &ss, &len), 0);
    cr_assert_str_eq(inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf)), "0.0.0.0");
    cr_assert_eq(tkv_reactor_resolve("", 1, 0, &ss, &len), 0);
    cr_assert_str_eq(inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf)), "127.0.0.1");

    /* a name is never looked up where a lookup could block a core */
    cr_assert_eq(tkv_reactor_resolve("some-host", 1, TKV_RESOLVE_NUMERIC, &ss, &len), TKV_EINVAL);
    cr_assert_lt(tkv_reactor_resolve("no-such-host.invalid", 1, 0, &ss, &len), 0);

    /* and each form binds */
    const char *hosts[] = {"localhost", "127.0.0.1", "[::1]", "::1"};
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        uint16_t port = 0;
        int fd = tkv_reactor_listen_tcp(hosts[i], 0, false, 8, &port);
        if (fd == -EADDRNOTAVAIL && strchr(hosts[i], ':'))
            continue; /* no IPv6 loopback on this machine */
        cr_assert_geq(fd, 0, "listen on %s: %s", hosts[i], tkv_strerror(fd));
        cr_assert_neq(port, 0);
        close(fd);
    }
}

Test(reactor_socket, listen_port_zero_and_reuseport)
{
    uint16_t p1 = 0, p2 = 0;
    int a = tkv_reactor_listen_tcp("127.0.0.1", 0, true, 8, &p1);
    cr_assert_geq(a, 0, "listen: %s", tkv_strerror(a));
    cr_assert_neq(p1, 0);
    int b = tkv_reactor_listen_tcp("127.0.0.1", p1, true, 8, &p2);
    cr_assert_geq(b, 0, "second SO_REUSEPORT listener on %u: %s", p1, tkv_strerror(b));
    cr_assert_eq(p2, p1);
    int c = tkv_reactor_listen_tcp("127.0.0.1", p1, false, 8, NULL);
    cr_assert_eq(c, -EADDRINUSE, "a non-reuseport bind on a taken port gave %d", c);
    cr_assert_lt(tkv_reactor_listen_tcp("no-such-host.invalid", 0, false, 8, NULL), 0);
    close(a);
    close(b);
}

/* ---- short writev: a small non-blocking pipe accepts part of the iovecs at
 * a time, so the rest is resubmitted (whole iovecs as writev, a partly
 * written one as a plain write) while a read drains the other end ---- */

#include <fcntl.h>

#define PIPE_IOV 5
#define PIPE_CHUNK 10000

static struct {
    struct tkv_reactor *r;
    int p[2];
    uint8_t src[PIPE_IOV][PIPE_CHUNK], dst[PIPE_IOV * PIPE_CHUNK];
    struct iovec iov[PIPE_IOV];
    size_t got;
    int wres;
    bool wdone;
    struct tkv_io wio, rio;
    struct tkv_reactor_stats st;
} PW;

static void pw_maybe_done(void)
{
    if (!PW.wdone || PW.got < sizeof(PW.dst))
        return;
    tkv_reactor_get_stats(PW.r, &PW.st);
    close(PW.p[0]);
    close(PW.p[1]);
    tkv_reactor_group_stop(tkv_reactor_group_of(PW.r));
}

static void pw_read_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res > 0, "pipe read: %d after %zu bytes", res, PW.got);
    if (res <= 0)
        return;
    PW.got += (size_t)res;
    if (PW.got < sizeof(PW.dst))
        tkv_reactor_read(PW.r, &PW.rio, PW.p[0], PW.dst + PW.got,
                         TKV_MIN(3000, sizeof(PW.dst) - PW.got), (uint64_t)-1);
    pw_maybe_done();
}

static void pw_write_cb(struct tkv_io *io, int res)
{
    (void)io;
    PW.wres = res;
    PW.wdone = true;
    CHECK(res == PIPE_IOV * PIPE_CHUNK, "writev res %d, want %d", res, PIPE_IOV * PIPE_CHUNK);
    pw_maybe_done();
}

static int pw_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    PW.r = r;
    CHECK(pipe2(PW.p, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
    fcntl(PW.p[1], F_SETPIPE_SZ, 4096);
    for (int i = 0; i < PIPE_IOV; i++) {
        for (int j = 0; j < PIPE_CHUNK; j++)
            PW.src[i][j] = (uint8_t)(i * 31 + j * 7 + j / 251); /* no period dividing 4096 */
        PW.iov[i] = (struct iovec){PW.src[i], PIPE_CHUNK};
    }
    tkv_io_init(&PW.wio, pw_write_cb, NULL);
    tkv_io_init(&PW.rio, pw_read_cb, NULL);
    tkv_reactor_writev(r, &PW.wio, PW.p[1], PW.iov, PIPE_IOV, (uint64_t)-1);
    tkv_reactor_read(r, &PW.rio, PW.p[0], PW.dst, 3000, (uint64_t)-1);
    return 0;
}

Test(reactor_io, short_writev_is_resubmitted, .timeout = 20)
{
    cr_assert_eq(h_run(1, 0, pw_init, NULL, NULL), 0);
    cr_assert_eq(PW.got, sizeof(PW.dst));
    for (int i = 0; i < PIPE_IOV; i++)
        cr_assert(memcmp(PW.dst + (size_t)i * PIPE_CHUNK, PW.src[i], PIPE_CHUNK) == 0,
                  "iovec %d arrived corrupted or out of order", i);
    cr_assert_gt(PW.st.resubmits, 0, "the pipe took the whole writev at once");
}
