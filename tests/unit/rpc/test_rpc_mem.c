/* The gRPC engine tested in memory: a server engine and a client engine
 * wired to each other through byte buffers, with a fake clock. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_echo.h"
#include "rpc_int.h"
#include "tkv/err.h"

struct pair {
    struct tkv_rpc_server *srv;
    struct rpc_conn *sc;
    struct tkv_rpc_client *cl;
    uint64_t now;
    size_t chunk; /* feed received bytes in pieces this big (0 = whole) */
    bool server_failed, client_failed;
};

static struct pair P;

static uint64_t fake_now(void *arg)
{
    return ((struct pair *)arg)->now;
}
static void no_want(void *arg)
{
    (void)arg;
}
static void mem_close(void *arg)
{
    struct pair *p = arg;
    rpc_client_destroy(p->cl);
    p->cl = NULL;
}
static const struct rpc_transport mem_tp = {no_want, fake_now, mem_close};

static void teardown(void);

static void setup_cfg(const struct tkv_rpc_server_config *cfg)
{
    teardown(); /* criterion runs the suite's init before a test's own init */
    memset(&P, 0, sizeof(P));
    P.now = 1000000000ull;
    echo_reset();
    cr_assert_eq(tkv_rpc_server_new(cfg, echo_methods, echo_n_methods, &P.srv), 0);
    P.sc = rpc_conn_new_server(P.srv, &mem_tp, &P);
    P.cl = rpc_client_new(NULL, "test", &mem_tp, &P);
}

static void setup(void)
{
    setup_cfg(NULL);
}

static void teardown(void)
{
    /* idempotent: criterion may run both the suite's and the test's fini */
    if (P.cl)
        tkv_rpc_client_close(P.cl);
    P.cl = NULL;
    if (P.sc)
        rpc_conn_free(P.sc);
    P.sc = NULL;
    echo_release(TKV_GRPC_CANCELLED);
    tkv_rpc_server_free(P.srv);
    P.srv = NULL;
}

static bool move(struct rpc_conn *from, struct rpc_conn *to, bool *to_failed)
{
    const uint8_t *p;
    size_t n;
    if (rpc_conn_pull(from, &p, &n) != 0 || n == 0)
        return false;
    size_t step = P.chunk ? P.chunk : n;
    for (size_t off = 0; off < n && !*to_failed; off += step)
        if (rpc_conn_recv(to, p + off, TKV_MIN(step, n - off)) != 0)
            *to_failed = true;
    rpc_conn_sent(from);
    return true;
}

static void pump(void)
{
    for (int i = 0; i < 100000; i++) {
        bool moved = false;
        if (P.cl && !P.server_failed)
            moved |= move(rpc_client_conn(P.cl), P.sc, &P.server_failed);
        if (P.cl && !P.client_failed)
            moved |= move(P.sc, rpc_client_conn(P.cl), &P.client_failed);
        if (!moved)
            return;
    }
    cr_assert_fail("pump did not quiesce");
}

/* ---- unary completion capture ---- */
struct result {
    bool done;
    int status;
    char msg[256];
    uint8_t *resp;
    size_t len;
    int calls;
};

static void unary_cb(void *user, enum tkv_grpc_status st, const char *message,
                     struct tkv_slice resp)
{
    struct result *r = user;
    r->calls++;
    r->done = true;
    r->status = st;
    snprintf(r->msg, sizeof(r->msg), "%s", message);
    free(r->resp);
    r->resp = malloc(resp.len + 1);
    memcpy(r->resp, resp.ptr ? resp.ptr : (const uint8_t *)"", resp.len);
    r->resp[resp.len] = 0;
    r->len = resp.len;
}

static void unary(const char *path, const void *req, size_t len, uint64_t tmo, struct result *r)
{
    memset(r, 0, sizeof(*r));
    cr_assert_eq(tkv_rpc_client_unary(P.cl, path, req, len, tmo, unary_cb, r), 0);
}

/* ---- streaming capture ---- */
struct sresult {
    bool done;
    int status;
    char msg[256];
    int n;
    char *all; /* messages joined by '|' */
    size_t len;
};

static void s_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice m)
{
    (void)c;
    struct sresult *r = user;
    r->all = realloc(r->all, r->len + m.len + 2);
    memcpy(r->all + r->len, m.ptr, m.len);
    r->len += m.len;
    r->all[r->len++] = '|';
    r->all[r->len] = 0;
    r->n++;
}
static void s_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st, const char *m)
{
    (void)c;
    struct sresult *r = user;
    cr_assert(!r->done, "on_done fired twice");
    r->done = true;
    r->status = st;
    snprintf(r->msg, sizeof(r->msg), "%s", m);
}
static const struct tkv_rpc_stream_cbs scbs = {s_msg, s_done};

TestSuite(rpc_mem, .init = setup, .fini = teardown);

Test(rpc_mem, unary_echo_and_empty)
{
    struct result a, b;
    unary("/test.Echo/Unary", "hello", 5, 0, &a);
    unary("/test.Echo/Unary", "", 0, 0, &b);
    pump();
    cr_assert(a.done && b.done);
    cr_assert_eq(a.status, TKV_GRPC_OK, "status %d %s", a.status, a.msg);
    cr_assert_eq(a.len, 5);
    cr_assert_str_eq((char *)a.resp, "hello");
    cr_assert_eq(b.status, TKV_GRPC_OK);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(tkv_rpc_server_calls(P.srv, TKV_GRPC_OK), 2);
    free(a.resp);
    free(b.resp);
}

Test(rpc_mem, status_and_percent_encoded_message)
{
    struct result a;
    unary("/test.Echo/Unary", "fail", 4, 0, &a);
    pump();
    cr_assert(a.done);
    cr_assert_eq(a.status, TKV_GRPC_INVALID_ARGUMENT);
    cr_assert_str_eq(a.msg, echo_fail_message);
    cr_assert_eq(a.len, 0);
    cr_assert_eq(tkv_rpc_server_calls(P.srv, TKV_GRPC_INVALID_ARGUMENT), 1);
    free(a.resp);
}

Test(rpc_mem, unknown_method_unimplemented)
{
    struct result a, b;
    unary("/test.Echo/Nope", "x", 1, 0, &a);
    unary("/test.Echo/Unary", "still", 5, 0, &b);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_UNIMPLEMENTED, "status %d", a.status);
    cr_assert(strstr(a.msg, "/test.Echo/Nope") != NULL, "message: %s", a.msg);
    cr_assert_eq(b.status, TKV_GRPC_OK);
    cr_assert_str_eq((char *)b.resp, "still");
    free(a.resp);
    free(b.resp);
}

Test(rpc_mem, client_stream)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    char expect[2000] = "";
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/ClientStream", 0, &scbs, &r, &c), 0);
    for (int i = 0; i < 100; i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "%d,", i);
        strcat(expect, m);
        cr_assert_eq(tkv_rpc_ccall_send(c, m, (size_t)n), 0);
        if (i % 10 == 0)
            pump();
    }
    pump();
    cr_assert(!r.done);
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK, "%d %s", r.status, r.msg);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.len, strlen(expect) + 1);
    cr_assert_eq(memcmp(r.all, expect, strlen(expect)), 0);
    cr_assert_eq(atomic_load(&echo_stats.messages), 100);
    free(r.all);
}

Test(rpc_mem, server_stream)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/ServerStream", 0, &scbs, &r, &c), 0);
    cr_assert_eq(tkv_rpc_ccall_send(c, "50", 2), 0);
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK);
    cr_assert_eq(r.n, 50);
    cr_assert(strncmp(r.all, "msg-0|msg-1|msg-2|", 18) == 0, "%s", r.all);
    cr_assert(strstr(r.all, "|msg-49|") != NULL);
    free(r.all);
}

Test(rpc_mem, server_stream_zero_messages)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/ServerStream", 0, &scbs, &r, &c), 0);
    cr_assert_eq(tkv_rpc_ccall_send(c, "0", 1), 0);
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK);
    cr_assert_eq(r.n, 0);
}

Test(rpc_mem, bidi_interleaved)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    for (int i = 0; i < 10; i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "b%d", i);
        cr_assert_eq(tkv_rpc_ccall_send(c, m, (size_t)n), 0);
        pump();
        cr_assert_eq(r.n, i + 1, "echo %d not received before the next send", i);
    }
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK);
    cr_assert(strncmp(r.all, "b0|b1|b2|", 9) == 0);
    free(r.all);
}

Test(rpc_mem, bidi_server_finishes_first)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    tkv_rpc_ccall_send(c, "a", 1);
    tkv_rpc_ccall_send(c, "end", 3);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(P.sc->n_calls, 0, "server stream not closed");
    free(r.all);
}

Test(rpc_mem, big_message_split_over_frames_and_reads)
{
    size_t n = 1u << 20;
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 131 + 7);
    struct result a;
    P.chunk = 1000; /* reads of 1000 bytes: headers and frames split anywhere */
    unary("/test.Echo/Unary", big, n, 0, &a);
    pump();
    cr_assert(a.done);
    cr_assert_eq(a.status, TKV_GRPC_OK, "%d %s", a.status, a.msg);
    cr_assert_eq(a.len, n);
    cr_assert_eq(memcmp(a.resp, big, n), 0);
    cr_assert_eq(P.sc->buffered, 0);
    free(a.resp);
    free(big);
}

Test(rpc_mem, many_messages_in_one_frame_and_byte_reads)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    /* queued before any pull: all 200 messages go out in one or two DATA frames */
    for (int i = 0; i < 200; i++)
        cr_assert_eq(tkv_rpc_ccall_send(c, "xy", 2), 0);
    tkv_rpc_ccall_close_send(c);
    P.chunk = 1;
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK);
    cr_assert_eq(r.n, 200);
    cr_assert_eq(atomic_load(&echo_stats.messages), 200);
    free(r.all);
}

static void limit_setup(void)
{
    struct tkv_rpc_server_config cfg = {.max_recv_msg = 256 * 1024};
    setup_cfg(&cfg);
}

Test(rpc_mem, message_at_and_over_limit, .init = limit_setup, .fini = teardown)
{
    size_t lim = 256 * 1024;
    uint8_t *big = calloc(1, lim + 1);
    struct result a, b, c;
    unary("/test.Echo/Unary", big, lim, 0, &a);
    unary("/test.Echo/Unary", big, lim + 1, 0, &b);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_OK, "%d %s", a.status, a.msg);
    cr_assert_eq(a.len, lim);
    cr_assert_eq(b.status, TKV_GRPC_RESOURCE_EXHAUSTED, "%d %s", b.status, b.msg);
    cr_assert_eq(P.sc->buffered, 0);
    cr_assert_eq(P.sc->n_calls, 0);
    /* the connection still works */
    unary("/test.Echo/Unary", "ok", 2, 0, &c);
    pump();
    cr_assert_eq(c.status, TKV_GRPC_OK);
    cr_assert_eq(tkv_rpc_server_calls(P.srv, TKV_GRPC_RESOURCE_EXHAUSTED), 1);
    free(a.resp);
    free(b.resp);
    free(c.resp);
    free(big);
}

Test(rpc_mem, oversize_is_rejected_before_the_body_arrives, .init = limit_setup, .fini = teardown)
{
    /* announce 200 MiB but send only the header: the server answers at once */
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/ClientStream", 0, &scbs, &r, &c), 0);
    uint8_t hdr[5] = {0, 0x0c, 0x80, 0, 0};
    rpc_buf_append(&c->s.q, hdr, 5);
    P.sc->queued += 0; /* raw bytes bypass the queue accounting on purpose */
    rpc_conn_kick(c->s.conn);
    c->s.conn->queued += 5;
    rpc_call_notify(&c->s);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_RESOURCE_EXHAUSTED, "%d %s", r.status, r.msg);
    cr_assert_eq(P.sc->buffered, 0);
}

static void budget_setup(void)
{
    struct tkv_rpc_server_config cfg = {.max_recv_msg = 64 * 1024, .max_conn_buffered = 128 * 1024};
    setup_cfg(&cfg);
}

Test(rpc_mem, unary_requests_waiting_for_end_stream_share_the_budget, .init = budget_setup,
     .fini = teardown)
{
    /* complete 60 KiB unary requests whose END_STREAM never comes are held
     * by the server; a connection may hold at most max_conn_buffered */
    static uint8_t m[60 * 1024];
    struct sresult r[3] = {{0}};
    struct tkv_rpc_ccall *c[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Unary", 0, &scbs, &r[i], &c[i]), 0);
        cr_assert_eq(tkv_rpc_ccall_send(c[i], m, sizeof(m)), 0);
        pump();
    }
    cr_assert(!r[0].done && !r[1].done);
    cr_assert(r[2].done, "third held request not refused");
    cr_assert_eq(r[2].status, TKV_GRPC_RESOURCE_EXHAUSTED, "%d %s", r[2].status, r[2].msg);
    cr_assert_eq(P.sc->buffered, 2 * sizeof(m));
    tkv_rpc_ccall_close_send(c[0]);
    tkv_rpc_ccall_close_send(c[1]);
    pump();
    cr_assert_eq(r[0].status, TKV_GRPC_OK);
    cr_assert_eq(r[1].status, TKV_GRPC_OK);
    cr_assert_eq(P.sc->buffered, 0);
    for (int i = 0; i < 3; i++)
        free(r[i].all);
}

Test(rpc_mem, compressed_flag_unimplemented)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    cr_assert_eq(tkv_rpc_ccall_send(c, "zz", 2), 0);
    c->s.q.p[c->s.q.len - 7] = 1; /* set the compressed flag */
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_UNIMPLEMENTED, "%d %s", r.status, r.msg);
    cr_assert_eq(atomic_load(&echo_stats.messages), 0);
}

Test(rpc_mem, unary_with_two_messages_internal)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Unary", 0, &scbs, &r, &c), 0);
    tkv_rpc_ccall_send(c, "a", 1);
    tkv_rpc_ccall_send(c, "b", 1);
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_INTERNAL, "%d %s", r.status, r.msg);
    cr_assert_eq(atomic_load(&echo_stats.messages), 0);
}

Test(rpc_mem, unary_without_message_internal)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Unary", 0, &scbs, &r, &c), 0);
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_INTERNAL, "%d %s", r.status, r.msg);
}

Test(rpc_mem, server_deadline_from_grpc_timeout)
{
    struct result a, b;
    unary("/test.Echo/Unary", "hold", 4, 100000000ull /* 100 ms */, &a);
    unary("/test.Echo/Unary", "hold", 4, 0, &b);
    pump();
    cr_assert(!a.done);
    cr_assert_eq(atomic_load(&echo_stats.held), 2);
    uint64_t dl = rpc_conn_next_deadline(P.sc);
    cr_assert(dl >= P.now + 100000000ull && dl <= P.now + 100001000ull, "deadline %llu",
              (unsigned long long)dl);
    P.now += 50000000ull;
    rpc_conn_expire(P.sc, P.now);
    pump();
    cr_assert(!a.done, "expired too early");
    P.now += 60000000ull;
    /* only the server expires: the client deadline is left alone */
    rpc_conn_expire(P.sc, P.now);
    pump();
    cr_assert(a.done);
    cr_assert_eq(a.status, TKV_GRPC_DEADLINE_EXCEEDED, "%d %s", a.status, a.msg);
    cr_assert_eq(atomic_load(&echo_stats.cancel_why[TKV_GRPC_DEADLINE_EXCEEDED]), 1);
    cr_assert_eq(atomic_load(&echo_stats.held), 1);
    cr_assert(!b.done);
    tkv_rpc_client_close(P.cl); /* b completes now, while it is in scope */
    P.cl = NULL;
    cr_assert(b.done);
    cr_assert_eq(b.status, TKV_GRPC_CANCELLED);
    free(a.resp);
    free(b.resp);
}

Test(rpc_mem, client_deadline_resets_stream)
{
    struct result a;
    unary("/test.Echo/Unary", "hold", 4, 1000000ull, &a);
    pump();
    P.now += 2000000ull;
    rpc_conn_expire(rpc_client_conn(P.cl), P.now);
    cr_assert(a.done);
    cr_assert_eq(a.status, TKV_GRPC_DEADLINE_EXCEEDED);
    pump();
    cr_assert_eq(atomic_load(&echo_stats.cancel_why[TKV_GRPC_CANCELLED]), 1,
                 "the handler did not hear about the reset");
    cr_assert_eq(atomic_load(&echo_stats.held), 0);
    free(a.resp);
}

Test(rpc_mem, cancellation_reaches_handler)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/ClientStream", 0, &scbs, &r, &c), 0);
    tkv_rpc_ccall_send(c, "partial", 7);
    pump();
    cr_assert_eq(atomic_load(&echo_stats.messages), 1);
    tkv_rpc_ccall_cancel(c);
    pump();
    cr_assert(!r.done, "on_done must not fire after cancel");
    cr_assert_eq(atomic_load(&echo_stats.cancels), 1);
    cr_assert_eq(atomic_load(&echo_stats.cancel_why[TKV_GRPC_CANCELLED]), 1);
    cr_assert_eq(P.sc->n_calls, 0);
    cr_assert_eq(rpc_client_conn(P.cl)->n_calls, 0);
}

Test(rpc_mem, cancel_before_headers_sent)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    tkv_rpc_ccall_cancel(c); /* HEADERS still queued in the client session */
    pump();
    cr_assert(!r.done);
    cr_assert_eq(rpc_client_conn(P.cl)->n_calls, 0, "cancelled pending call leaked");
    cr_assert_eq(P.sc->n_calls, 0);
    struct result a;
    unary("/test.Echo/Unary", "next", 4, 0, &a);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_OK);
    free(a.resp);
}

Test(rpc_mem, handler_reply_inside_on_cancel_free_path)
{
    /* finish from a later turn after the client went away: no crash, no
     * double callback (on_cancel already released the call) */
    struct result a;
    unary("/test.Echo/Unary", "async:x", 7, 0, &a);
    pump();
    tkv_rpc_client_close(P.cl);
    P.cl = NULL;
    cr_assert(a.done);
    cr_assert_eq(a.status, TKV_GRPC_CANCELLED);
    free(a.resp);
    rpc_conn_free(P.sc);
    P.sc = NULL;
    cr_assert_eq(atomic_load(&echo_stats.cancels), 1);
    cr_assert_eq(echo_release(TKV_GRPC_OK), 0);
}

Test(rpc_mem, async_reply_later)
{
    struct result a;
    unary("/test.Echo/Unary", "async:later", 11, 0, &a);
    pump();
    cr_assert(!a.done);
    cr_assert_eq(echo_release(TKV_GRPC_OK), 1);
    pump();
    cr_assert(a.done);
    cr_assert_eq(a.status, TKV_GRPC_OK);
    cr_assert_str_eq((char *)a.resp, "later");
    free(a.resp);
}

Test(rpc_mem, many_concurrent_streams)
{
    enum { N = 3000 }; /* more than the 1024 concurrent streams the server allows */
    static struct result rs[N];
    char req[N][16];
    for (int i = 0; i < N; i++) {
        int n = snprintf(req[i], sizeof(req[i]), "r%d", i);
        unary("/test.Echo/Unary", req[i], (size_t)n, 0, &rs[i]);
    }
    pump();
    for (int i = 0; i < N; i++) {
        cr_assert(rs[i].done, "call %d not done", i);
        cr_assert_eq(rs[i].status, TKV_GRPC_OK, "call %d: %d %s", i, rs[i].status, rs[i].msg);
        cr_assert_str_eq((char *)rs[i].resp, req[i]);
        free(rs[i].resp);
    }
    cr_assert_eq(tkv_rpc_server_calls(P.srv, TKV_GRPC_OK), N);
}

Test(rpc_mem, connection_loss_fails_calls_and_cancels_handlers)
{
    struct result a;
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    unary("/test.Echo/Unary", "hold", 4, 0, &a);
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    tkv_rpc_ccall_send(c, "x", 1);
    pump();
    rpc_conn_free(P.sc);
    P.sc = NULL;
    cr_assert_eq(atomic_load(&echo_stats.cancel_why[TKV_GRPC_UNAVAILABLE]), 2);
    rpc_conn_abort(rpc_client_conn(P.cl), TKV_GRPC_UNAVAILABLE, "connection lost");
    cr_assert(a.done && r.done);
    cr_assert_eq(a.status, TKV_GRPC_UNAVAILABLE);
    cr_assert_eq(r.status, TKV_GRPC_UNAVAILABLE);
    cr_assert(!tkv_rpc_client_usable(P.cl));
    cr_assert_eq(tkv_rpc_client_unary(P.cl, "/test.Echo/Unary", "x", 1, 0, unary_cb, &a),
                 TKV_ECLOSED);
    free(a.resp);
    free(r.all);
}

Test(rpc_mem, goaway_lets_inflight_finish)
{
    struct result a;
    unary("/test.Echo/Unary", "async:inflight", 14, 0, &a);
    pump();
    rpc_conn_shutdown(P.sc);
    pump();
    cr_assert(!tkv_rpc_client_usable(P.cl), "client did not see GOAWAY");
    cr_assert(!rpc_conn_done(P.sc), "server closes before the in-flight call finished");
    echo_release(TKV_GRPC_OK);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_OK);
    cr_assert_str_eq((char *)a.resp, "inflight");
    cr_assert(rpc_conn_done(P.sc), "server does not want to close after GOAWAY + last call");
    free(a.resp);
}

/* Graceful shutdown while a send is in flight: a request read before the
 * GOAWAY is serialized reaches its handler, so the GOAWAY must name it
 * (last stream id >= its id) and it must be answered. Were the id chosen
 * when shutdown was asked (before that read), the client would hear "not
 * processed" (RFC 9113 6.8) for a request the server handled, and a
 * client that retries unprocessed writes would apply it twice. */
Test(rpc_mem, goaway_names_requests_read_before_it_was_serialized)
{
    struct result a, b;
    unary("/test.Echo/Unary", "async:a", 7, 0, &a);
    pump(); /* stream 1 handled, held */
    memset(&b, 0, sizeof b);
    enum tkv_rpc_reach reach_b = TKV_RPC_SENT;
    cr_assert_eq(tkv_rpc_client_unary_reach(P.cl, "/test.Echo/Unary", "b", 1, 0, unary_cb, &b,
                                            &reach_b),
                 0);
    const uint8_t *cp, *sp;
    size_t cn, sn;
    cr_assert_eq(rpc_conn_pull(rpc_client_conn(P.cl), &cp, &cn), 0);
    cr_assert(cn > 0, "request b not serialized");
    rpc_conn_ping(P.sc);
    cr_assert_eq(rpc_conn_pull(P.sc, &sp, &sn), 0);
    cr_assert(sn > 0, "no server send in flight");
    rpc_conn_shutdown(P.sc); /* asked while the PING is on its way */
    uint64_t seen = atomic_load(&echo_stats.messages);
    cr_assert_eq(rpc_conn_recv(P.sc, cp, cn), 0); /* b arrives before the GOAWAY left */
    rpc_conn_sent(rpc_client_conn(P.cl));
    cr_assert_eq(atomic_load(&echo_stats.messages), seen + 1, "b was not handed to its handler");
    cr_assert_eq(rpc_conn_recv(rpc_client_conn(P.cl), sp, sn), 0);
    rpc_conn_sent(P.sc);
    pump();
    cr_assert(!tkv_rpc_client_usable(P.cl), "client did not see GOAWAY");
    cr_assert(b.done, "b never completed");
    cr_assert_eq(b.status, TKV_GRPC_OK,
                 "b was handled by the server but ended %s (%s): the GOAWAY called it unprocessed",
                 tkv_grpc_status_name(b.status), b.msg);
    cr_assert_eq(reach_b, TKV_RPC_ANSWERED);
    cr_assert_str_eq((char *)b.resp, "b");
    echo_release(TKV_GRPC_OK);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_OK);
    cr_assert(rpc_conn_done(P.sc), "server does not want to close after GOAWAY + last call");
    free(a.resp);
    free(b.resp);
}

Test(rpc_mem, garbage_fails_the_connection)
{
    cr_assert_neq(rpc_conn_recv(P.sc, (const uint8_t *)"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 0);
    cr_assert(rpc_conn_done(P.sc));
}

Test(rpc_util, grpc_timeout_parse_and_format)
{
    uint64_t ns;
    cr_assert_eq(rpc_parse_timeout("100m", 4, &ns), 0);
    cr_assert_eq(ns, 100000000ull);
    cr_assert_eq(rpc_parse_timeout("1H", 2, &ns), 0);
    cr_assert_eq(ns, 3600000000000ull);
    cr_assert_eq(rpc_parse_timeout("2M", 2, &ns), 0);
    cr_assert_eq(ns, 120000000000ull);
    cr_assert_eq(rpc_parse_timeout("3S", 2, &ns), 0);
    cr_assert_eq(ns, 3000000000ull);
    cr_assert_eq(rpc_parse_timeout("7u", 2, &ns), 0);
    cr_assert_eq(ns, 7000ull);
    cr_assert_eq(rpc_parse_timeout("9n", 2, &ns), 0);
    cr_assert_eq(ns, 9ull);
    cr_assert_eq(rpc_parse_timeout("99999999H", 9, &ns), 0);
    cr_assert_eq(rpc_parse_timeout("123456789S", 10, &ns), TKV_EINVAL);
    cr_assert_eq(rpc_parse_timeout("10x", 3, &ns), TKV_EINVAL);
    cr_assert_eq(rpc_parse_timeout("m", 1, &ns), TKV_EINVAL);
    cr_assert_eq(rpc_parse_timeout("1-m", 3, &ns), TKV_EINVAL);
    char buf[16];
    rpc_format_timeout(1500, buf);
    cr_assert_str_eq(buf, "1500n");
    rpc_format_timeout(100000000000ull, buf);
    cr_assert_str_eq(buf, "100000m");
    rpc_format_timeout(3600ull * 1000000000ull * 24 * 365, buf);
    cr_assert_eq(rpc_parse_timeout(buf, strlen(buf), &ns), 0);
    cr_assert(ns >= 3600ull * 1000000000ull * 24 * 365);
}

Test(rpc_util, percent_coding)
{
    char *e = rpc_percent_encode("a b%\xc3\xbc\n");
    cr_assert_str_eq(e, "a b%25%C3%BC%0A");
    char *d = rpc_percent_decode(e, strlen(e));
    cr_assert_str_eq(d, "a b%\xc3\xbc\n");
    free(e);
    free(d);
    d = rpc_percent_decode("100%", 4);
    cr_assert_str_eq(d, "100%");
    free(d);
    d = rpc_percent_decode("%zz%4", 5);
    cr_assert_str_eq(d, "%zz%4");
    free(d);
    cr_assert_str_eq(tkv_grpc_status_name(TKV_GRPC_UNIMPLEMENTED), "UNIMPLEMENTED");
    cr_assert_str_eq(tkv_grpc_status_name(99), "UNKNOWN_STATUS");
}

Test(rpc_util, method_table_rejects_duplicates)
{
    struct tkv_rpc_server *srv;
    struct tkv_rpc_method m[2] = {echo_methods[0], echo_methods[0]};
    cr_assert_eq(tkv_rpc_server_new(NULL, m, 2, &srv), TKV_EINVAL);
}

/* ---- a raw nghttp2 client, to send requests our client never sends ---- */
struct rawc {
    nghttp2_session *ng;
    int http_status, grpc_status;
    bool closed;
    const uint8_t *body;
    size_t body_len;
};

static int raw_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    (void)ng;
    (void)f;
    (void)flags;
    struct rawc *rc = ud;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        rc->http_status = atoi((const char *)value);
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        rc->grpc_status = (int)strtol((const char *)value, NULL, 10) + 0 * (int)valuelen;
    return 0;
}

static int raw_on_close(nghttp2_session *ng, int32_t sid, uint32_t code, void *ud)
{
    (void)ng;
    (void)sid;
    (void)code;
    ((struct rawc *)ud)->closed = true;
    return 0;
}

static ssize_t raw_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)sid;
    (void)src;
    struct rawc *rc = ud;
    size_t n = TKV_MIN(len, rc->body_len);
    memcpy(buf, rc->body, n);
    rc->body += n;
    rc->body_len -= n;
    if (rc->body_len == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void raw_exchange(struct rawc *rc, const char *method, const char *ctype,
                         const char *extra_name, const char *extra_value, const void *body,
                         size_t blen)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, raw_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, raw_on_close);
    memset(rc, 0, sizeof(*rc));
    rc->grpc_status = -1;
    rc->body = body;
    rc->body_len = blen;
    cr_assert_eq(nghttp2_session_client_new(&rc->ng, cbs, rc), 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(rc->ng, NGHTTP2_FLAG_NONE, NULL, 0);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[6] = {NV(":method", method),
                        NV(":scheme", "http"),
                        NV(":path", "/test.Echo/Unary"),
                        NV(":authority", "t"),
                        NV("content-type", ctype),
                        NV(extra_name ? extra_name : "te", extra_value ? extra_value : "trailers")};
#undef NV
    nghttp2_data_provider prd = {.read_callback = raw_read};
    cr_assert(nghttp2_submit_request(rc->ng, NULL, nv, 6, body ? &prd : NULL, NULL) > 0);
    for (int i = 0; i < 1000 && !rc->closed; i++) {
        const uint8_t *d;
        ssize_t n;
        bool moved = false;
        while ((n = nghttp2_session_mem_send(rc->ng, &d)) > 0) {
            cr_assert_eq(rpc_conn_recv(P.sc, d, (size_t)n), 0);
            moved = true;
        }
        const uint8_t *p;
        size_t m;
        cr_assert_eq(rpc_conn_pull(P.sc, &p, &m), 0);
        if (m) {
            cr_assert_eq(nghttp2_session_mem_recv(rc->ng, p, m), (ssize_t)m);
            rpc_conn_sent(P.sc);
            moved = true;
        }
        if (!moved)
            break;
    }
    nghttp2_session_del(rc->ng);
}

static const uint8_t framed_hi[7] = {0, 0, 0, 0, 2, 'h', 'i'};

Test(rpc_mem, raw_good_request_baseline)
{
    struct rawc rc;
    raw_exchange(&rc, "POST", "application/grpc+proto", NULL, NULL, framed_hi, 7);
    cr_assert_eq(rc.http_status, 200);
    cr_assert_eq(rc.grpc_status, 0);
}

Test(rpc_mem, raw_wrong_content_type_415)
{
    struct rawc rc;
    raw_exchange(&rc, "POST", "application/json", NULL, NULL, framed_hi, 7);
    cr_assert_eq(rc.http_status, 415);
    cr_assert_eq(atomic_load(&echo_stats.messages), 0);
}

Test(rpc_mem, raw_get_method_405)
{
    struct rawc rc;
    raw_exchange(&rc, "GET", "application/grpc", NULL, NULL, NULL, 0);
    cr_assert_eq(rc.http_status, 405);
}

Test(rpc_mem, raw_grpc_encoding_gzip_unimplemented)
{
    struct rawc rc;
    raw_exchange(&rc, "POST", "application/grpc", "grpc-encoding", "gzip", framed_hi, 7);
    cr_assert_eq(rc.http_status, 200);
    cr_assert_eq(rc.grpc_status, TKV_GRPC_UNIMPLEMENTED);
}

Test(rpc_mem, raw_bad_grpc_timeout)
{
    struct rawc rc;
    raw_exchange(&rc, "POST", "application/grpc", "grpc-timeout", "12x", framed_hi, 7);
    cr_assert_eq(rc.grpc_status, TKV_GRPC_INTERNAL);
}

/* ======================================================================
 * Per-connection bounds against a hostile peer: hand-made frames fed to
 * the server engine, its output parsed frame by frame.
 * ====================================================================== */

struct wire {
    uint8_t *p;
    size_t n, cap;
};

static void w_put(struct wire *w, const void *p, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 1024;
        w->p = realloc(w->p, w->cap);
    }
    memcpy(w->p + w->n, p, n);
    w->n += n;
}

static void w_frame(struct wire *w, size_t len, int type, int flags, uint32_t sid,
                    const void *payload)
{
    uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
                    (uint8_t)type,        (uint8_t)flags,      (uint8_t)(sid >> 24),
                    (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
    w_put(w, h, 9);
    if (len)
        w_put(w, payload, len);
}

/* HPACK integer with an n-bit prefix (RFC 7541 5.1). */
static void hp_int(struct wire *w, uint8_t first, int bits, size_t v)
{
    uint8_t b;
    size_t max = (1u << bits) - 1;
    if (v < max) {
        b = (uint8_t)(first | v);
        w_put(w, &b, 1);
        return;
    }
    b = (uint8_t)(first | max);
    w_put(w, &b, 1);
    v -= max;
    while (v >= 128) {
        b = (uint8_t)(v % 128 + 128);
        w_put(w, &b, 1);
        v /= 128;
    }
    b = (uint8_t)v;
    w_put(w, &b, 1);
}

/* Literal header field without indexing, new name. */
static void hp_lit(struct wire *w, const char *name, const char *value, size_t vlen)
{
    hp_int(w, 0, 4, 0);
    hp_int(w, 0, 7, strlen(name));
    w_put(w, name, strlen(name));
    hp_int(w, 0, 7, vlen);
    w_put(w, value, vlen);
}

static void hp_request(struct wire *w, const char *path)
{
    hp_lit(w, ":method", "POST", 4);
    hp_lit(w, ":scheme", "http", 4);
    hp_lit(w, ":path", path, strlen(path));
    hp_lit(w, ":authority", "x", 1);
    hp_lit(w, "content-type", "application/grpc", 16);
    hp_lit(w, "te", "trailers", 8);
}

/* A header block as HEADERS + CONTINUATION frames of at most 16 KiB. */
static void w_headers(struct wire *w, uint32_t sid, const struct wire *block, bool end_stream)
{
    size_t off = 0;
    bool first = true;
    do {
        size_t k = TKV_MIN(block->n - off, (size_t)16384);
        int flags = (off + k == block->n ? 4 : 0) | (first && end_stream ? 1 : 0);
        w_frame(w, k, first ? 1 : 9, flags, sid, block->p + off);
        off += k;
        first = false;
    } while (off < block->n);
}

static void w_request(struct wire *w, uint32_t sid, const char *path, bool end_stream)
{
    struct wire b = {0};
    hp_request(&b, path);
    w_headers(w, sid, &b, end_stream);
    free(b.p);
}

static const uint8_t framed_hi2[7] = {0, 0, 0, 0, 2, 'h', 'i'};

struct seen {
    int frames[10];
    int rst[16]; /* RST_STREAM by error code (codes < 16) */
    uint32_t rst_sid[8192];
    int n_rst;
    int headers_on[16]; /* HEADERS per stream id < 16 */
    bool goaway;
    uint32_t goaway_code;
    int recv_failed; /* rpc_conn_recv calls that failed */
};

/* Feed w to the server engine in one piece, pulling output after it. */
static void feed(struct wire *w, struct seen *s)
{
    if (rpc_conn_recv(P.sc, w->p, w->n) != 0)
        s->recv_failed++;
    w->n = 0;
    struct wire out = {0};
    const uint8_t *p;
    size_t n;
    while (rpc_conn_pull(P.sc, &p, &n) == 0 && n > 0) {
        w_put(&out, p, n);
        rpc_conn_sent(P.sc);
    }
    for (size_t off = 0; off + 9 <= out.n;) {
        const uint8_t *h = out.p + off;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        uint32_t sid = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) &
                       0x7fffffffu;
        cr_assert_leq(off + 9 + len, out.n, "server output ends inside a frame");
        if (h[3] < 10)
            s->frames[h[3]]++;
        if (h[3] == 3 && len == 4) {
            uint32_t code =
                (uint32_t)h[9] << 24 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 8 | h[12];
            if (code < 16)
                s->rst[code]++;
            if (s->n_rst < 8192)
                s->rst_sid[s->n_rst++] = sid;
        }
        if (h[3] == 1 && sid < 16)
            s->headers_on[sid]++;
        if (h[3] == 7 && len >= 8) {
            s->goaway = true;
            s->goaway_code =
                (uint32_t)h[13] << 24 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 8 | h[16];
        }
        off += 9 + len;
    }
    free(out.p);
}

static void client_hello(struct wire *w)
{
    w_put(w, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    w_frame(w, 0, 4, 0, 0, NULL); /* SETTINGS */
    w_frame(w, 0, 4, 1, 0, NULL); /* ACK of the server's */
}

static bool rst_on(const struct seen *s, uint32_t sid)
{
    for (int i = 0; i < s->n_rst; i++)
        if (s->rst_sid[i] == sid)
            return true;
    return false;
}

Test(rpc_bounds, header_list_over_limit_resets_only_that_stream, .init = setup, .fini = teardown)
{
    struct wire w = {0}, b = {0};
    struct seen s = {0};
    client_hello(&w);
    /* 6 pseudo/gRPC headers + 17 x 4000-byte fields: ~68 KiB > 64 KiB,
     * over 5 frames (within the CONTINUATION limit) */
    hp_request(&b, "/test.Echo/Unary");
    char *pad = malloc(4000);
    memset(pad, 'p', 4000);
    for (int i = 0; i < 17; i++)
        hp_lit(&b, "x-pad", pad, 4000);
    free(pad);
    w_headers(&w, 1, &b, false);
    free(b.p);
    w_frame(&w, 7, 0, 1, 1, framed_hi2);
    feed(&w, &s);
    cr_assert_eq(s.recv_failed, 0, "an oversized header list failed the whole connection");
    cr_assert(rst_on(&s, 1), "stream 1 with %u-byte headers not reset", 17 * 4037);
    cr_assert_eq(atomic_load(&echo_stats.messages), 0);
    /* a normal request on the same connection is still served */
    w_request(&w, 3, "/test.Echo/Unary", false);
    w_frame(&w, 7, 0, 1, 3, framed_hi2);
    feed(&w, &s);
    cr_assert_eq(s.recv_failed, 0);
    cr_assert_geq(s.headers_on[3], 1, "no response on stream 3");
    cr_assert_not(rst_on(&s, 3));
    cr_assert_eq(atomic_load(&echo_stats.messages), 1);
    cr_assert_eq(P.sc->n_calls, 0, "%u calls left", P.sc->n_calls);
    free(w.p);
}

Test(rpc_bounds, header_list_at_limit_is_accepted, .init = setup, .fini = teardown)
{
    struct wire w = {0}, b = {0};
    struct seen s = {0};
    client_hello(&w);
    hp_request(&b, "/test.Echo/Unary");
    char *pad = malloc(4000);
    memset(pad, 'p', 4000);
    for (int i = 0; i < 15; i++) /* ~60 KiB in all */
        hp_lit(&b, "x-pad", pad, 4000);
    free(pad);
    w_headers(&w, 1, &b, false);
    free(b.p);
    w_frame(&w, 7, 0, 1, 1, framed_hi2);
    feed(&w, &s);
    cr_assert_not(rst_on(&s, 1), "a 60 KiB header list was refused");
    cr_assert_eq(atomic_load(&echo_stats.messages), 1);
    free(w.p);
}

static void streams4_setup(void)
{
    struct tkv_rpc_server_config cfg = {.max_streams = 4};
    setup_cfg(&cfg);
}

Test(rpc_bounds, streams_over_max_concurrent_are_refused, .init = streams4_setup, .fini = teardown)
{
    struct wire w = {0};
    struct seen s = {0};
    client_hello(&w);
    for (uint32_t sid = 1; sid <= 19; sid += 2) /* 10 streams, none half-closed */
        w_request(&w, sid, "/test.Echo/ClientStream", false);
    feed(&w, &s);
    cr_assert_leq(P.sc->n_calls, 4, "%u calls open with max_streams 4", P.sc->n_calls);
    cr_assert_eq(s.rst[7 /* REFUSED_STREAM */] + (s.goaway ? 6 : 0), 6,
                 "refused %d streams (goaway %d)", s.rst[7], s.goaway);
    free(w.p);
}

Test(rpc_bounds, rapid_reset_flood_gets_goaway, .init = setup, .fini = teardown)
{
    struct wire w = {0};
    struct seen s = {0};
    uint8_t cancel[4] = {0, 0, 0, 8};
    client_hello(&w);
    feed(&w, &s);
    uint32_t sid = 1;
    for (int i = 0; i < 3000 && !s.goaway && !s.recv_failed; i++, sid += 2) {
        w_request(&w, sid, "/test.Echo/ClientStream", false);
        w_frame(&w, 4, 3, 0, sid, cancel);
        if (i % 100 == 99)
            feed(&w, &s);
    }
    feed(&w, &s);
    cr_assert(s.goaway || s.recv_failed,
              "3000 HEADERS+RST_STREAM pairs did not end the connection");
    cr_assert(s.goaway, "rapid reset ended the connection without a GOAWAY");
    cr_assert_eq(s.goaway_code, 11 /* ENHANCE_YOUR_CALM */,
                 "rapid reset answered with GOAWAY code %u, want ENHANCE_YOUR_CALM (11)",
                 s.goaway_code);
    cr_assert_leq(sid / 2, 1200, "the flood went on for %u streams", sid / 2);
    cr_assert_eq(P.sc->n_calls, 0);
    free(w.p);
}

static void flood(int type, int n, uint64_t step_ns, struct seen *s)
{
    struct wire w = {0};
    uint8_t ping[8] = "flood!!!";
    client_hello(&w);
    feed(&w, s);
    for (int i = 0; i < n && !s->goaway && !s->recv_failed; i++) {
        w_frame(&w, type == 6 ? 8 : 0, type, 0, 0, ping);
        feed(&w, s);
        P.now += step_ns;
    }
    free(w.p);
}

Test(rpc_bounds, settings_flood_gets_goaway_enhance_your_calm, .init = setup, .fini = teardown)
{
    struct seen s = {0};
    flood(4, 2000, 0, &s);
    cr_assert(s.goaway, "2000 SETTINGS at once did not end the connection");
    cr_assert_eq(s.goaway_code, 11 /* ENHANCE_YOUR_CALM */, "GOAWAY code %u", s.goaway_code);
    cr_assert_leq(s.frames[4], RPC_CTRL_BURST + 2, "%d SETTINGS answered", s.frames[4]);
    cr_assert(rpc_conn_done(P.sc), "connection not done after the GOAWAY");
}

Test(rpc_bounds, ping_flood_gets_goaway, .init = setup, .fini = teardown)
{
    struct seen s = {0};
    flood(6, 2000, 0, &s);
    cr_assert(s.goaway, "2000 PINGs at once did not end the connection");
    cr_assert_eq(s.goaway_code, 11);
    cr_assert_leq(s.frames[6], RPC_CTRL_BURST + 1, "%d PING ACKs", s.frames[6]);
}

/* Issue 13 item 5: every response we sent used to refill the whole bucket,
 * so one cheap request per 200 PINGs kept a flood going for ever. */
Test(rpc_bounds, ping_flood_interleaved_with_requests_gets_goaway, .init = setup,
     .fini = teardown)
{
    struct wire w = {0};
    struct seen s = {0};
    uint8_t ping[8] = "flood!!!";
    client_hello(&w);
    feed(&w, &s);
    uint32_t sid = 1;
    int round = 0;
    for (; round < 100 && !s.goaway && !s.recv_failed; round++, sid += 2) {
        for (int i = 0; i < 200; i++)
            w_frame(&w, 8, 6, 0, 0, ping);
        w_request(&w, sid, "/test.Echo/Unary", false);
        w_frame(&w, sizeof(framed_hi2), 0, 1 /* END_STREAM */, sid, framed_hi2);
        feed(&w, &s);
    }
    cr_assert(s.goaway, "%d rounds of 200 PINGs + 1 request did not end the connection", round);
    cr_assert_eq(s.goaway_code, 11, "GOAWAY code %u", s.goaway_code);
    cr_assert_leq(round, 3, "the flood went on for %d rounds", round);
    free(w.p);
}

Test(rpc_bounds, control_frames_under_the_rate_are_fine, .init = setup, .fini = teardown)
{
    struct seen s = {0};
    /* 2000 PINGs at half the sustained rate: never closed */
    flood(6, 2000, 2 * 1000000000ull / RPC_CTRL_RATE, &s);
    cr_assert_not(s.goaway, "a PING every %llu ms closed the connection", 2000ull / RPC_CTRL_RATE);
    cr_assert_eq(s.frames[6], 2000);
}

/* ---- PING after every DATA (grpc-go BDP estimation) is not a flood ---- */

/* Incremental frame-header scanner over a byte stream cut anywhere. */
struct fscan {
    uint8_t h[9];
    size_t hgot, skip;
    int data, pings; /* DATA frames, PINGs without ACK */
};

static void fscan_feed(struct fscan *fs, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (fs->skip > 0) {
            size_t k = TKV_MIN(fs->skip, n);
            fs->skip -= k, p += k, n -= k;
            continue;
        }
        fs->h[fs->hgot++] = *p++, n--;
        if (fs->hgot < 9)
            continue;
        fs->hgot = 0;
        fs->skip = (size_t)fs->h[0] << 16 | (size_t)fs->h[1] << 8 | fs->h[2];
        if (fs->h[3] == 0)
            fs->data++;
        if (fs->h[3] == 6 && !(fs->h[4] & 1))
            fs->pings++;
    }
}

/* Move from -> to; the receiving engine then queues one PING per DATA frame
 * it got when `to_pings`, like grpc-go does. */
static bool move_pinging(struct rpc_conn *from, struct rpc_conn *to, bool *to_failed,
                         struct fscan *fs, bool to_pings)
{
    const uint8_t *p;
    size_t n;
    if (rpc_conn_pull(from, &p, &n) != 0 || n == 0)
        return false;
    int before = fs->data;
    fscan_feed(fs, p, n);
    if (rpc_conn_recv(to, p, n) != 0)
        *to_failed = true;
    rpc_conn_sent(from);
    if (to_pings && !*to_failed)
        for (int i = before; i < fs->data; i++)
            cr_assert_eq(nghttp2_submit_ping(to->ng, NGHTTP2_FLAG_NONE, NULL), 0);
    return true;
}

/* client_pings: the client engine pings after each DATA from the server
 * (tests the server's flood bound); else the server pings (tests ours). */
static void pump_pinging(bool client_pings, struct fscan *to_server, struct fscan *to_client)
{
    for (int i = 0; i < 100000; i++) {
        bool moved = false;
        if (P.cl && !P.server_failed)
            moved |= move_pinging(rpc_client_conn(P.cl), P.sc, &P.server_failed, to_server,
                                  !client_pings);
        if (P.cl && !P.client_failed)
            moved |= move_pinging(P.sc, rpc_client_conn(P.cl), &P.client_failed, to_client,
                                  client_pings);
        if (!moved)
            return;
    }
    cr_assert_fail("pump did not quiesce");
}

static void ping_per_data(bool client_pings)
{
    enum { N = 10000 };
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    struct fscan to_server = {.skip = 24 /* client preface */}, to_client = {0};
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/Bidi", 0, &scbs, &r, &c), 0);
    for (int i = 0; i < N; i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "m%d", i);
        cr_assert_eq(tkv_rpc_ccall_send(c, m, (size_t)n), 0, "send %d refused", i);
        pump_pinging(client_pings, &to_server, &to_client);
        cr_assert_eq(r.n, i + 1, "echo %d missing (done %d, status %d %s)", i, r.done, r.status,
                     r.msg);
        cr_assert(!P.sc->goaway && tkv_rpc_client_usable(P.cl),
                  "connection reset after %d messages", i);
    }
    tkv_rpc_ccall_close_send(c);
    pump_pinging(client_pings, &to_server, &to_client);
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK, "status %d %s", r.status, r.msg);
    /* the pings really flowed, far over the no-traffic burst, at time 0 */
    struct fscan *pinged = client_pings ? &to_server : &to_client;
    cr_assert_geq(pinged->pings, N, "only %d PINGs sent", pinged->pings);
    cr_assert_gt(N, 4 * RPC_CTRL_BURST);
    free(r.all);
}

Test(rpc_bounds, server_tolerates_client_ping_after_every_data, .init = setup, .fini = teardown)
{
    ping_per_data(true);
}

Test(rpc_bounds, client_tolerates_server_ping_after_every_data, .init = setup, .fini = teardown)
{
    ping_per_data(false);
}

Test(rpc_bounds, ping_flood_after_traffic_still_gets_goaway, .init = setup, .fini = teardown)
{
    /* traffic earns one refill, not immunity: a flood that follows it with
     * no further HEADERS/DATA from us is cut off as before */
    struct result a;
    unary("/test.Echo/Unary", "hello", 5, 0, &a);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_OK);
    free(a.resp);
    struct rpc_conn *cc = rpc_client_conn(P.cl);
    for (int i = 0; i < 2000; i++)
        nghttp2_submit_ping(cc->ng, NGHTTP2_FLAG_NONE, NULL);
    pump();
    cr_assert(P.sc->goaway, "2000 PINGs after the last response did not end the connection");
    cr_assert_not(tkv_rpc_client_usable(P.cl), "client did not see the GOAWAY");
}

Test(rpc_bounds, client_gives_goaway_to_a_pinging_server, .init = setup, .fini = teardown)
{
    /* the same bound on our client side (a server that pings with no traffic) */
    struct result a;
    unary("/test.Echo/Unary", "hello", 5, 0, &a);
    pump();
    cr_assert_eq(a.status, TKV_GRPC_OK);
    free(a.resp);
    for (int i = 0; i < 2000; i++)
        nghttp2_submit_ping(P.sc->ng, NGHTTP2_FLAG_NONE, NULL);
    pump();
    cr_assert_not(tkv_rpc_client_usable(P.cl), "2000 PINGs from the server did not end it");
    cr_assert(rpc_client_conn(P.cl)->goaway);
}

Test(rpc_bounds, continuation_flood_fails_the_connection, .init = setup, .fini = teardown)
{
    struct wire w = {0}, b = {0};
    struct seen s = {0};
    client_hello(&w);
    hp_request(&b, "/test.Echo/Unary");
    w_frame(&w, b.n, 1, 0 /* no END_HEADERS */, 1, b.p);
    for (unsigned i = 0; i < 4 * RPC_MAX_CONTINUATIONS; i++)
        w_frame(&w, 0, 9, 0, 1, NULL);
    free(b.p);
    feed(&w, &s);
    cr_assert(s.recv_failed || s.goaway, "%u empty CONTINUATIONs were accepted",
              4 * RPC_MAX_CONTINUATIONS);
    cr_assert(rpc_conn_done(P.sc));
    free(w.p);
}

Test(rpc_bounds, settings_with_too_many_entries_fails, .init = setup, .fini = teardown)
{
    struct wire w = {0};
    struct seen s = {0};
    uint8_t e[6 * 40];
    client_hello(&w);
    for (int i = 0; i < 40; i++) { /* SETTINGS_ENABLE_PUSH = 0, 40 times */
        e[6 * i] = 0, e[6 * i + 1] = 2;
        memset(e + 6 * i + 2, 0, 4);
    }
    w_frame(&w, sizeof(e), 4, 0, 0, e);
    feed(&w, &s);
    cr_assert(s.recv_failed || s.goaway, "a SETTINGS frame with 40 entries was accepted");
    free(w.p);
}

Test(rpc_bounds, idle_timeout_defaults_to_60s)
{
    struct tkv_rpc_server *srv;
    struct tkv_rpc_server_config cfg = {.idle_timeout_ns = UINT64_MAX};
    cr_assert_eq(tkv_rpc_server_new(NULL, echo_methods, echo_n_methods, &srv), 0);
    cr_assert_eq(srv->cfg.idle_timeout_ns, TKV_RPC_DEFAULT_IDLE_NS);
    cr_assert_eq(srv->cfg.idle_timeout_ns, 60ull * 1000000000ull);
    tkv_rpc_server_free(srv);
    cr_assert_eq(tkv_rpc_server_new(&cfg, echo_methods, echo_n_methods, &srv), 0);
    cr_assert_eq(srv->cfg.idle_timeout_ns, 0, "UINT64_MAX must mean never");
    tkv_rpc_server_free(srv);
}

/* ---- found by tests/fuzz (fuzz_h2) ---- */

static int nonnull_seen, null_seen;

static void nonnull_msg(struct tkv_rpc_call *call, struct tkv_slice m)
{
    if (m.ptr)
        nonnull_seen++;
    else
        null_seen++;
    tkv_rpc_call_reply(call, "", 0);
}

/* An empty request message reached unary/server-streaming handlers as
 * {NULL, 0}; the echo ServerStream handler then did memcpy(num, NULL, 0),
 * which UBSan reports (fuzz_h2 crash-46e6f952). Handlers now always get a
 * valid pointer. */
Test(rpc_mem, fuzz_empty_request_message_has_a_pointer)
{
    static const struct tkv_rpc_method m[] = {
        {"/t.T/U", TKV_RPC_UNARY, nonnull_msg, NULL, NULL, NULL},
        {"/t.T/S", TKV_RPC_SERVER_STREAM, nonnull_msg, NULL, NULL, NULL},
    };
    struct tkv_rpc_server *srv;
    struct result a, b;
    cr_assert_eq(tkv_rpc_server_new(NULL, m, 2, &srv), 0);
    rpc_conn_free(P.sc); /* nothing was exchanged yet: swap in our server */
    P.sc = rpc_conn_new_server(srv, &mem_tp, &P);
    nonnull_seen = null_seen = 0;
    unary("/t.T/U", "", 0, 0, &a);
    unary("/t.T/S", "", 0, 0, &b);
    pump();
    cr_assert(a.done && b.done);
    cr_assert_eq(null_seen, 0, "%d handler(s) got a NULL message pointer", null_seen);
    cr_assert_eq(nonnull_seen, 2);
    free(a.resp);
    free(b.resp);
    rpc_conn_free(P.sc);
    P.sc = NULL;
    tkv_rpc_server_free(srv);
}

/* The same through the echo service: ServerStream with an empty request
 * is zero messages and OK. */
Test(rpc_mem, fuzz_server_stream_empty_request)
{
    struct sresult r = {0};
    struct tkv_rpc_ccall *c;
    cr_assert_eq(tkv_rpc_client_start(P.cl, "/test.Echo/ServerStream", 0, &scbs, &r, &c), 0);
    cr_assert_eq(tkv_rpc_ccall_send(c, "", 0), 0);
    tkv_rpc_ccall_close_send(c);
    pump();
    cr_assert(r.done);
    cr_assert_eq(r.status, TKV_GRPC_OK);
    cr_assert_eq(r.n, 0);
}

/* ---- per-turn budgets (issue 13 item 4) ---- */

static void turn_budget_setup(void)
{
    struct tkv_rpc_server_config cfg = {.turn_max_requests = 4,
                                        .turn_max_big_bytes = 200 * 1024};
    setup_cfg(&cfg);
    P.sc->budgeted = true; /* what the reactor transport sets */
}

static int n_done(const struct result *r, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += r[i].done;
    return k;
}

/* The next loop turn as the reactor transport runs it. */
static bool next_turn(void)
{
    P.now += 1000;
    rpc_conn_new_turn(P.sc);
    bool more = rpc_conn_run_ready(P.sc);
    pump();
    return more;
}

Test(rpc_budget, pipelined_requests_get_one_share_per_turn, .init = turn_budget_setup,
     .fini = teardown)
{
    struct result r[10];
    for (int i = 0; i < 10; i++)
        unary("/test.Echo/Unary", "hi", 2, 0, &r[i]);
    pump();
    cr_assert_eq(n_done(r, 10), 4, "%d of 10 pipelined requests served in the first turn, want 4",
                 n_done(r, 10));
    cr_assert(rpc_conn_has_ready(P.sc));
    cr_assert(next_turn(), "requests still waiting after the second turn");
    cr_assert_eq(n_done(r, 10), 8);
    cr_assert_not(next_turn());
    cr_assert_eq(n_done(r, 10), 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(r[i].status, TKV_GRPC_OK, "request %d: status %d", i, r[i].status);
        free(r[i].resp);
    }
}

Test(rpc_budget, big_requests_share_a_server_budget_small_ones_pass, .init = turn_budget_setup,
     .fini = teardown)
{
    /* 150 KiB requests are big (over 64 KiB); the server-wide budget for
     * big requests is 200 KiB per turn (the first of a turn always goes). */
    size_t big = 150 * 1024;
    uint8_t *m = calloc(1, big);
    struct result r[3], s;
    unary("/test.Echo/Unary", m, big, 0, &r[0]);
    unary("/test.Echo/Unary", m, big, 0, &r[1]);
    pump();
    cr_assert_eq(n_done(r, 2), 2, "%d of 2 big requests in the first turn", n_done(r, 2));
    /* same turn, budget of big bytes used up: a small request still goes */
    unary("/test.Echo/Unary", "small", 5, 0, &s);
    pump();
    cr_assert(s.done, "a small request waited for the big-request budget");
    /* ... a third big one waits for the next turn */
    unary("/test.Echo/Unary", m, big, 0, &r[2]);
    pump();
    cr_assert_not(r[2].done, "a big request over the turn's big budget was served at once");
    cr_assert_not(next_turn());
    cr_assert(r[2].done, "the waiting big request was not served in the next turn");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i].status, TKV_GRPC_OK, "request %d: status %d", i, r[i].status);
        free(r[i].resp);
    }
    free(s.resp);
    free(m);
}
