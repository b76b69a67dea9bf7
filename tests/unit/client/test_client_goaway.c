/* libtinykv across HTTP/2 stream refusals and GOAWAY. A fake store, written
 * directly on nghttp2 (its own thread, blocking sockets, 127.0.0.1 port 0),
 * answers RawPut/RawDelete by a script that can refuse a stream, send GOAWAY
 * with a chosen last-stream-id, or reset a stream at chosen points, and
 * counts the requests it received and the writes it applied (per key).
 * The rule under test (RFC 9113 6.8 and 8.7; include/tkv/rpc.h reach):
 *   - RST_STREAM(REFUSED_STREAM), or a stream above the last-stream-id of a
 *     GOAWAY: not processed, so the write is retried and applied once;
 *   - a stream at or below the last-stream-id whose connection then closes
 *     unanswered, or reset with any other code once sent: may have been
 *     applied, so TINYKV_EUNDETERMINED and never resent;
 *   - a graceful shutdown (GOAWAY(2^31-1, NO_ERROR) then GOAWAY(n,
 *     NO_ERROR)) with four puts in flight: those at or below n are answered,
 *     those above are resent on a new connection; every put succeeds and
 *     every key is applied exactly once.
 * And end to end with the project's own rpc server: restarted gracefully
 * under a load of 64 puts in flight, every put succeeds, applied once.
 * Skipped when io_uring is unavailable. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kvrpcpb.pb.h"
#include "tinykv/client.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

enum script {
    SC_REFUSE_FIRST,       /* 1st request: RST_STREAM(REFUSED_STREAM), not applied */
    SC_GOAWAY_ABOVE_FIRST, /* 1st request: GOAWAY(last 0, NO_ERROR), closed, not applied */
    SC_GOAWAY_AT_FIRST,    /* 1st request: applied, GOAWAY(last = its id), closed unanswered */
    SC_RESET_FIRST,        /* 1st request: applied, RST_STREAM(INTERNAL_ERROR) */
    SC_GRACEFUL,           /* 1st connection, once all NPUT requests arrived: shutdown
                              notice, GOAWAY(last = 2nd stream), the first two applied
                              and answered, the others left, then closed */
    SC_SERVE,              /* every other request: applied and answered */
};

#define NPUT 4     /* puts in flight in the graceful case */
#define MAXC 6     /* fake store connections at once */
#define MAXS 16    /* open streams per fake connection */

struct fstream {
    int32_t id;
    int ordinal; /* 1 = the first complete request the store received */
    bool is_delete;
    uint8_t body[512];
    size_t len;
    bool overflow;
};

struct fconn {
    int fd;
    int no; /* 1 = the first connection accepted */
    nghttp2_session *ng;
    struct fstream *ended[MAXS]; /* requests complete, not yet acted on, by arrival */
    int n_ended;
    bool acted;          /* the graceful script ran */
    bool shut_after_send; /* half-close as soon as what is queued was written */
    bool close_when_idle; /* half-close once nghttp2 neither reads nor writes */
    bool draining;       /* half-closed: read and discard until the client closes */
    uint64_t drain_ms;
};

static struct {
    enum script script;
    bool use_delete;
    int nput;
    int listen_fd;
    uint16_t port;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_int received;     /* complete requests the store received */
    atomic_int applied;      /* writes applied */
    atomic_int applied_key[NPUT];
    atomic_int conns;        /* connections accepted */
    char fake_err[200];      /* the fake store's first complaint (asserted by the test) */
    /* client side (the reactor's core) */
    struct tinykv *kv;
    int rv[NPUT];
    char errmsg[NPUT][600];
    int n_done;
    bool done;
} F;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the fake store: nghttp2 callbacks ---- */

static ssize_t fs_send(nghttp2_session *ng, const uint8_t *p, size_t n, int flags, void *ud)
{
    (void)ng;
    (void)flags;
    struct fconn *fc = ud;
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fc->fd, p + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        off += (size_t)w;
    }
    return (ssize_t)n;
}

static int fs_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct fstream *st = calloc(1, sizeof *st);
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->id = f->hd.stream_id;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, st);
    return 0;
}

static int fs_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    (void)flags;
    (void)ud;
    struct fstream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    static const char del[] = "/tinykvpb.TinyKv/RawDelete";
    if (st && namelen == 5 && memcmp(name, ":path", 5) == 0)
        st->is_delete = valuelen == sizeof del - 1 && memcmp(value, del, valuelen) == 0;
    return 0;
}

static int fs_data(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *p, size_t n,
                   void *ud)
{
    (void)flags;
    (void)ud;
    struct fstream *st = nghttp2_session_get_stream_user_data(ng, sid);
    if (!st)
        return 0;
    if (st->len + n > sizeof st->body) {
        st->overflow = true;
        return 0;
    }
    memcpy(st->body + st->len, p, n);
    st->len += n;
    return 0;
}

static int fs_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct fconn *fc = ud;
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct fstream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || fc->n_ended == MAXS)
        return 0;
    fc->ended[fc->n_ended++] = st;
    st->ordinal = atomic_fetch_add(&F.received, 1) + 1;
    return 0;
}

static int fs_stream_close(nghttp2_session *ng, int32_t sid, uint32_t code, void *ud)
{
    (void)code;
    struct fconn *fc = ud;
    struct fstream *st = nghttp2_session_get_stream_user_data(ng, sid);
    if (!st)
        return 0;
    for (int i = 0; i < fc->n_ended; i++)
        if (fc->ended[i] == st) {
            memmove(&fc->ended[i], &fc->ended[i + 1], (size_t)(fc->n_ended - i - 1) * sizeof st);
            fc->n_ended--;
            break;
        }
    nghttp2_session_set_stream_user_data(ng, sid, NULL);
    free(st);
    return 0;
}

/* ---- the fake store: applying and answering ---- */

/* The store runs on its own thread: it records what went wrong for the test
 * to assert (criterion's asserts belong to the test's thread). */
#define FAKE_CHECK(cond, what)                                                    \
    do {                                                                          \
        if (!(cond)) {                                                            \
            if (!F.fake_err[0])                                                   \
                snprintf(F.fake_err, sizeof F.fake_err, "fake store: %s", what); \
            return;                                                               \
        }                                                                         \
    } while (0)

/* Apply the write (count it under its key "k<i>"). */
static void fs_apply(struct fstream *st)
{
    FAKE_CHECK(!st->overflow && st->len >= 5 && st->body[0] == 0, "bad gRPC request framing");
    uint32_t n = (uint32_t)st->body[1] << 24 | (uint32_t)st->body[2] << 16 |
                 (uint32_t)st->body[3] << 8 | st->body[4];
    FAKE_CHECK((size_t)n + 5 == st->len, "gRPC message length");
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    struct tkv_slice key = {0};
    int drv;
    if (st->is_delete) {
        kvrpcpb_RawDeleteRequest q;
        drv = tkv_pb_decode(kvrpcpb_RawDeleteRequest_fields, &q, st->body + 5, n, &a);
        key = q.key;
    } else {
        kvrpcpb_RawPutRequest q;
        drv = tkv_pb_decode(kvrpcpb_RawPutRequest_fields, &q, st->body + 5, n, &a);
        key = q.key;
    }
    const uint8_t *kb = key.ptr;
    bool ok = drv == 0 && key.len == 2 && kb[0] == 'k' && kb[1] >= '0' && kb[1] < '0' + NPUT;
    int i = ok ? kb[1] - '0' : 0;
    tkv_arena_close(&a);
    FAKE_CHECK(ok, "undecodable request or unexpected key");
    atomic_fetch_add(&F.applied_key[i], 1);
    atomic_fetch_add(&F.applied, 1);
}

static ssize_t fs_body(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    (void)ud;
    if (len < 5)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    memset(buf, 0, 5); /* one empty Raw{Put,Delete}Response (all fields default) */
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    static const nghttp2_nv trailers[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE}};
    if (nghttp2_submit_trailer(ng, sid, trailers, 1) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 5;
}

static void fs_answer(struct fconn *fc, struct fstream *st)
{
    static const nghttp2_nv hdrs[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE}};
    nghttp2_data_provider prd = {.read_callback = fs_body};
    FAKE_CHECK(nghttp2_submit_response(fc->ng, st->id, hdrs, 2, &prd) == 0, "submit_response");
}

static int cmp_id(const void *a, const void *b)
{
    const struct fstream *x = *(struct fstream *const *)a, *y = *(struct fstream *const *)b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Act on the complete requests of fc by the test's script. */
static void fs_script(struct fconn *fc)
{
    if (F.script == SC_GRACEFUL && fc->no == 1) {
        if (fc->acted || fc->n_ended < F.nput)
            return; /* wait until every put is in flight on this connection */
        fc->acted = true;
        qsort(fc->ended, (size_t)fc->n_ended, sizeof fc->ended[0], cmp_id);
        FAKE_CHECK(nghttp2_submit_shutdown_notice(fc->ng) == 0, "shutdown notice");
        FAKE_CHECK(nghttp2_session_send(fc->ng) == 0, "send"); /* GOAWAY(2^31-1) first */
        int32_t last = fc->ended[1]->id;
        FAKE_CHECK(nghttp2_submit_goaway(fc->ng, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL,
                                         0) == 0,
                   "goaway");
        for (int i = 0; i < fc->n_ended; i++)
            if (fc->ended[i]->id <= last) {
                fs_apply(fc->ended[i]);
                fs_answer(fc, fc->ended[i]);
            } /* the others: nghttp2 closes them when the GOAWAY is sent */
        fc->n_ended = 0;
        fc->close_when_idle = true;
        return;
    }
    while (fc->n_ended > 0) {
        struct fstream *st = fc->ended[0];
        memmove(&fc->ended[0], &fc->ended[1], (size_t)(fc->n_ended - 1) * sizeof st);
        fc->n_ended--;
        switch (st->ordinal == 1 && F.script != SC_GRACEFUL ? F.script : SC_SERVE) {
        case SC_REFUSE_FIRST:
            nghttp2_submit_rst_stream(fc->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
            break;
        case SC_GOAWAY_ABOVE_FIRST:
            /* the first stream (id 1): last-stream-id 0 = none processed */
            nghttp2_submit_goaway(fc->ng, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
            fc->shut_after_send = true;
            break;
        case SC_GOAWAY_AT_FIRST:
            fs_apply(st);
            nghttp2_submit_goaway(fc->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR, NULL, 0);
            fc->shut_after_send = true; /* "dies" before answering */
            break;
        case SC_RESET_FIRST:
            fs_apply(st);
            nghttp2_submit_rst_stream(fc->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
            break;
        default: /* SC_SERVE */
            fs_apply(st);
            fs_answer(fc, st);
            break;
        }
    }
}

/* ---- the fake store: connections ---- */

static void fc_half_close(struct fconn *fc)
{
    shutdown(fc->fd, SHUT_WR); /* FIN after what was written: the client reads it all */
    fc->draining = true;
    fc->drain_ms = mono_ms();
}

static void fc_free(struct fconn *fc)
{
    if (fc->ng)
        nghttp2_session_del(fc->ng); /* frees no stream user data: close callbacks do */
    if (fc->fd >= 0)
        close(fc->fd);
    free(fc);
}

static struct fconn *fc_new(int fd, int no)
{
    struct fconn *fc = calloc(1, sizeof *fc);
    if (!fc)
        abort(); /* the store's thread: no criterion assert here */
    fc->fd = fd;
    fc->no = no;
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_send_callback(cbs, fs_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, fs_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, fs_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, fs_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, fs_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, fs_stream_close);
    if (nghttp2_session_server_new(&fc->ng, cbs, fc) != 0)
        abort();
    nghttp2_session_callbacks_del(cbs);
    if (nghttp2_submit_settings(fc->ng, NGHTTP2_FLAG_NONE, NULL, 0) != 0)
        abort();
    if (nghttp2_session_send(fc->ng) != 0)
        fc_half_close(fc);
    return fc;
}

/* Bytes arrived on fc: feed nghttp2, run the script, write what it queued. */
static bool fc_input(struct fconn *fc, const uint8_t *p, size_t n)
{
    if (fc->draining)
        return true;
    if (nghttp2_session_mem_recv(fc->ng, p, n) < 0)
        return false;
    fs_script(fc);
    if (nghttp2_session_send(fc->ng) != 0)
        return false;
    if (fc->shut_after_send ||
        (fc->close_when_idle && !nghttp2_session_want_read(fc->ng) &&
         !nghttp2_session_want_write(fc->ng)))
        fc_half_close(fc);
    return true;
}

static void *store_main(void *arg)
{
    (void)arg;
    struct fconn *cs[MAXC] = {0};
    uint8_t buf[16384];
    while (!atomic_load(&F.stop)) {
        struct pollfd pf[1 + MAXC];
        int map[1 + MAXC], np = 0;
        pf[np] = (struct pollfd){.fd = F.listen_fd, .events = POLLIN};
        map[np++] = -1;
        for (int i = 0; i < MAXC; i++) {
            if (!cs[i])
                continue;
            if (cs[i]->draining && mono_ms() - cs[i]->drain_ms > 2000) {
                fc_free(cs[i]); /* the client never closed: give up */
                cs[i] = NULL;
                continue;
            }
            pf[np] = (struct pollfd){.fd = cs[i]->fd, .events = POLLIN};
            map[np++] = i;
        }
        if (poll(pf, (nfds_t)np, 10) <= 0)
            continue;
        for (int j = 0; j < np; j++) {
            if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (map[j] < 0) {
                int fd = accept4(F.listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < MAXC && slot < 0; i++)
                    if (!cs[i])
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                cs[slot] = fc_new(fd, atomic_fetch_add(&F.conns, 1) + 1);
                continue;
            }
            struct fconn *fc = cs[map[j]];
            ssize_t r = read(fc->fd, buf, sizeof buf);
            if (r <= 0 || !fc_input(fc, buf, (size_t)r)) {
                fc_free(fc);
                cs[map[j]] = NULL;
            }
        }
    }
    for (int i = 0; i < MAXC; i++)
        if (cs[i])
            fc_free(cs[i]);
    return NULL;
}

/* ---- the client ---- */

static void close_and_stop(void *arg)
{
    (void)arg;
    tinykv_close(F.kv);
    F.kv = NULL;
    tkv_reactor_group_stop(tkv_reactor_group_of(tkv_reactor_self()));
}

static void on_done(void *user, int rv)
{
    int i = (int)(intptr_t)user;
    F.rv[i] = rv;
    snprintf(F.errmsg[i], sizeof F.errmsg[i], "%s", tinykv_errmsg(F.kv));
    if (++F.n_done == F.nput) {
        F.done = true;
        tkv_reactor_defer(tkv_reactor_self(), close_and_stop, NULL);
    }
}

static void kick(void *arg)
{
    (void)arg;
    for (int i = 0; i < F.nput; i++) {
        char key[3] = {'k', (char)('0' + i), 0};
        int rv = F.use_delete
                     ? tinykv_raw_delete(F.kv, NULL, TKV_SLICE(key, 2), on_done,
                                         (void *)(intptr_t)i)
                     : tinykv_raw_put(F.kv, NULL, TKV_SLICE(key, 2), TKV_SLICE_STR("v"), on_done,
                                      (void *)(intptr_t)i);
        if (rv) {
            F.rv[i] = rv;
            if (++F.n_done == F.nput) {
                F.done = true;
                tkv_reactor_defer(tkv_reactor_self(), close_and_stop, NULL);
            }
        }
    }
}

static int h_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", F.port);
    struct tinykv_config cfg = {.store_addr = addr, .op_timeout_ms = 5000, .max_attempts = 1000};
    int rv = tinykv_new(r, &cfg, &F.kv);
    if (rv)
        return rv;
    tkv_reactor_defer(r, kick, NULL);
    return 0;
}

static void h_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    if (F.kv)
        tinykv_close(F.kv);
    F.kv = NULL;
}

static void run(enum script script, int nput, bool use_delete)
{
    memset(&F, 0, sizeof F);
    F.script = script;
    F.nput = nput;
    F.use_delete = use_delete;
    F.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(F.listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(F.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(F.listen_fd, (struct sockaddr *)&a, &al), 0);
    cr_assert_eq(listen(F.listen_fd, 16), 0);
    F.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&F.thread, NULL, store_main, NULL), 0);

    struct tkv_reactor_config rc = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&rc, h_init, h_fini, NULL, &g);
    if (rv == 0)
        rv = tkv_reactor_group_wait(g);
    atomic_store(&F.stop, true);
    pthread_join(F.thread, NULL);
    close(F.listen_fd);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable (%d)", rv);
    cr_assert_eq(rv, 0, "group: %s", tkv_strerror(rv));
    cr_assert(F.done, "the operations never finished");
    cr_assert_eq(F.fake_err[0], 0, "%s", F.fake_err);
}

Test(client_goaway, put_refused_stream_is_retried_and_applied_once)
{
    run(SC_REFUSE_FIRST, 1, false);
    cr_assert_eq(F.rv[0], 0,
                 "a put refused with RST_STREAM(REFUSED_STREAM) was not processed and must be "
                 "retried, got %s (%s)", tinykv_strerror(F.rv[0]), F.errmsg[0]);
    cr_assert_eq(atomic_load(&F.received), 2, "the store received %d puts",
                 atomic_load(&F.received));
    cr_assert_eq(atomic_load(&F.applied), 1, "applied %d times", atomic_load(&F.applied));
}

Test(client_goaway, put_above_goaway_last_stream_is_retried_and_applied_once)
{
    run(SC_GOAWAY_ABOVE_FIRST, 1, false);
    cr_assert_eq(F.rv[0], 0,
                 "a put above GOAWAY's last-stream-id was not processed and must be retried, "
                 "got %s (%s)", tinykv_strerror(F.rv[0]), F.errmsg[0]);
    cr_assert_eq(atomic_load(&F.received), 2, "the store received %d puts",
                 atomic_load(&F.received));
    cr_assert_eq(atomic_load(&F.applied), 1, "applied %d times", atomic_load(&F.applied));
    cr_assert_eq(atomic_load(&F.conns), 2, "the retry must use a new connection (%d)",
                 atomic_load(&F.conns));
}

Test(client_goaway, put_at_goaway_last_stream_then_closed_is_undetermined_and_not_resent)
{
    run(SC_GOAWAY_AT_FIRST, 1, false);
    cr_assert_eq(atomic_load(&F.applied), 1,
                 "a put at GOAWAY's last-stream-id (applied, then the connection closed) was "
                 "resent: applied %d times", atomic_load(&F.applied));
    cr_assert_eq(atomic_load(&F.received), 1, "resent: the store received %d puts",
                 atomic_load(&F.received));
    cr_assert_eq(F.rv[0], TINYKV_EUNDETERMINED,
                 "a put at GOAWAY's last-stream-id may have been processed; its connection "
                 "closed unanswered, so it must end TINYKV_EUNDETERMINED, got %s (%s)",
                 tinykv_strerror(F.rv[0]), F.errmsg[0]);
}

Test(client_goaway, delete_at_goaway_last_stream_then_closed_is_undetermined_and_not_resent)
{
    run(SC_GOAWAY_AT_FIRST, 1, true);
    cr_assert_eq(atomic_load(&F.applied), 1, "resent: the delete was applied %d times",
                 atomic_load(&F.applied));
    cr_assert_eq(F.rv[0], TINYKV_EUNDETERMINED, "got %s (%s)", tinykv_strerror(F.rv[0]),
                 F.errmsg[0]);
}

Test(client_goaway, put_reset_after_delivery_is_undetermined_and_not_resent)
{
    run(SC_RESET_FIRST, 1, false);
    cr_assert_eq(F.rv[0], TINYKV_EUNDETERMINED,
                 "a put reset with INTERNAL_ERROR after it was sent may have been applied, "
                 "got %s (%s)", tinykv_strerror(F.rv[0]), F.errmsg[0]);
    cr_assert_eq(atomic_load(&F.received), 1, "resent: the store received %d puts",
                 atomic_load(&F.received));
    cr_assert_eq(atomic_load(&F.applied), 1);
}

Test(client_goaway, graceful_shutdown_goaway_loses_nothing_and_applies_once)
{
    run(SC_GRACEFUL, NPUT, false);
    for (int i = 0; i < NPUT; i++) {
        cr_assert_eq(F.rv[i], 0, "put k%d: %s (%s)", i, tinykv_strerror(F.rv[i]), F.errmsg[i]);
        cr_assert_eq(atomic_load(&F.applied_key[i]), 1, "k%d applied %d times", i,
                     atomic_load(&F.applied_key[i]));
    }
    cr_assert_eq(atomic_load(&F.received), NPUT + (NPUT - 2),
                 "the store received %d puts: the %d above the last stream should be resent once",
                 atomic_load(&F.received), NPUT - 2);
    cr_assert(atomic_load(&F.conns) >= 2, "no second connection (%d)", atomic_load(&F.conns));
}

/* ---- tinykv's own rpc server restarted gracefully under load ----
 * GR_PUTS puts with distinct keys, GR_WINDOW in flight at a time, against a
 * store served by the project's rpc server on the same core. After
 * GR_SHUTDOWN_AT puts were applied the server shuts down gracefully (one
 * GOAWAY naming the last stream it processed, calls in flight finish, its
 * listener closes) and a new server on the same port takes over 50 ms
 * later. Every put must succeed and be applied exactly once: streams named
 * by the GOAWAY are answered, newer ones are refused and resent, connects
 * during the gap are refused and retried. */
#define GR_PUTS 2000
#define GR_WINDOW 64
#define GR_SHUTDOWN_AT 600

static struct {
    struct tkv_reactor *r;
    struct tkv_rpc_server *old_srv, *new_srv;
    uint16_t port;
    int applied[GR_PUTS];
    int handled;
    bool shut;
    struct tkv_timer restart;
    int restart_err;
    struct tinykv *kv;
    int next, n_done;
    int rv[GR_PUTS];
    char errmsg[600]; /* the first failure */
    bool done;
} G;

static void gr_put(struct tkv_rpc_call *call, struct tkv_slice msg);

static const struct tkv_rpc_method gr_methods[] = {
    {.path = "/tinykvpb.TinyKv/RawPut", .kind = TKV_RPC_UNARY, .on_message = gr_put},
};

static void gr_restart(struct tkv_timer *t)
{
    (void)t;
    int rv = tkv_rpc_server_new(NULL, gr_methods, TKV_ARRAY_LEN(gr_methods), &G.new_srv);
    if (rv == 0)
        rv = tkv_rpc_server_listen(G.new_srv, G.r, "127.0.0.1", G.port, NULL);
    G.restart_err = rv;
}

static void gr_shutdown(void *arg)
{
    (void)arg;
    tkv_rpc_server_shutdown(G.old_srv);
    tkv_timer_start(G.r, &G.restart, 50ull * 1000000);
}

static void gr_put(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_RawPutRequest q;
    int i = -1;
    if (tkv_pb_decode(kvrpcpb_RawPutRequest_fields, &q, msg.ptr, msg.len,
                      tkv_rpc_call_arena(call)) == 0 &&
        q.key.len == 5 && q.key.ptr[0] == 'p') { /* "pNNNN", not NUL-terminated */
        i = 0;
        for (int d = 1; d < 5 && i >= 0; d++)
            i = q.key.ptr[d] >= '0' && q.key.ptr[d] <= '9' ? i * 10 + (q.key.ptr[d] - '0') : -1;
        if (i >= GR_PUTS)
            i = -1;
    }
    if (i < 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "bad request");
        return;
    }
    G.applied[i]++;
    if (++G.handled == GR_SHUTDOWN_AT && !G.shut) {
        G.shut = true;
        tkv_reactor_defer(G.r, gr_shutdown, NULL); /* not from inside the engine */
    }
    tkv_rpc_call_reply(call, "", 0); /* an empty RawPutResponse */
}

static void gr_issue(void);

static void gr_done(void *user, int rv)
{
    int i = (int)(intptr_t)user;
    G.rv[i] = rv;
    if (rv && !G.errmsg[0])
        snprintf(G.errmsg, sizeof G.errmsg, "put p%04d: %s (%s)", i, tinykv_strerror(rv),
                 tinykv_errmsg(G.kv));
    if (++G.n_done == GR_PUTS) {
        G.done = true;
        tkv_reactor_defer(tkv_reactor_self(), close_and_stop, NULL);
        return;
    }
    gr_issue();
}

static void gr_issue(void)
{
    if (G.next >= GR_PUTS)
        return;
    int i = G.next++;
    char key[16];
    snprintf(key, sizeof key, "p%04d", i % GR_PUTS);
    int rv = tinykv_raw_put(G.kv, NULL, TKV_SLICE(key, 5), TKV_SLICE_STR("v"), gr_done,
                            (void *)(intptr_t)i);
    if (rv)
        gr_done((void *)(intptr_t)i, rv); /* counted as a failure */
}

static void gr_kick(void *arg)
{
    (void)arg;
    for (int k = 0; k < GR_WINDOW; k++)
        gr_issue();
}

static int gr_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    G.r = r;
    tkv_timer_init(&G.restart, gr_restart, NULL);
    int rv = tkv_rpc_server_new(NULL, gr_methods, TKV_ARRAY_LEN(gr_methods), &G.old_srv);
    if (rv == 0)
        rv = tkv_rpc_server_listen(G.old_srv, r, "127.0.0.1", 0, &G.port);
    if (rv)
        return rv;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", G.port);
    struct tinykv_config cfg = {.store_addr = addr, .op_timeout_ms = 10000, .max_attempts = 1000};
    rv = tinykv_new(r, &cfg, &G.kv);
    if (rv)
        return rv;
    F.kv = G.kv; /* close_and_stop closes F.kv */
    tkv_reactor_defer(r, gr_kick, NULL);
    return 0;
}

static void gr_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    if (F.kv)
        tinykv_close(F.kv);
    F.kv = G.kv = NULL;
    tkv_timer_stop(r, &G.restart);
    tkv_rpc_server_free(G.old_srv);
    if (G.new_srv)
        tkv_rpc_server_free(G.new_srv);
}

Test(client_goaway, own_server_graceful_restart_under_load_applies_every_put_once)
{
    memset(&F, 0, sizeof F);
    memset(&G, 0, sizeof G);
    struct tkv_reactor_config rc = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&rc, gr_init, gr_fini, NULL, &g);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable (%d)", rv);
    cr_assert_eq(rv, 0, "group start: %s", tkv_strerror(rv));
    cr_assert_eq(tkv_reactor_group_wait(g), 0);
    cr_assert(G.done, "the puts never finished (%d of %d)", G.n_done, GR_PUTS);
    cr_assert(G.shut, "the server was never shut down");
    cr_assert_eq(G.restart_err, 0, "restart: %s", tkv_strerror(G.restart_err));
    int twice = 0, failed = 0, undetermined = 0;
    for (int i = 0; i < GR_PUTS; i++) {
        twice += G.applied[i] > 1;
        failed += G.rv[i] != 0;
        undetermined += G.rv[i] == TINYKV_EUNDETERMINED;
    }
    cr_assert_eq(twice, 0, "%d puts applied more than once across the graceful restart", twice);
    cr_assert_eq(failed, 0, "%d puts failed (%d undetermined) across a graceful restart; first: %s",
                 failed, undetermined, G.errmsg);
    for (int i = 0; i < GR_PUTS; i++)
        cr_assert_eq(G.applied[i], 1, "put p%04d succeeded but was applied %d times", i,
                     G.applied[i]);
    cr_assert(G.handled > GR_SHUTDOWN_AT, "the new server served nothing");
}
