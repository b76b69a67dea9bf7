/* libtinykv never resends a write the server may have applied. A fake store
 * (tkv_rpc server on 127.0.0.1, port 0) counts the RawPut/RawGet requests
 * its handlers saw; the client reaches it through a relay thread that
 * counts the requests crossing it (DATA frames with END_STREAM) and can cut
 * the connection once a request was delivered and handled, dropping the
 * answer (a node that applied a write and died before answering). Shows:
 *   - a RawPut whose connection is cut after it was delivered ends with
 *     TINYKV_EUNDETERMINED and is NOT sent again;
 *   - so does one the store answers with gRPC UNKNOWN (tinykv-server's
 *     "store is stopping, outcome unknown") or never answers (deadline);
 *   - a RawPut refused at connect (nothing listening yet), answered
 *     NotLeader, or answered UNAVAILABLE (busy) is retried and succeeds;
 *   - a RawGet whose connection is cut is retried and succeeds.
 * Skipped when io_uring is unavailable. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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

enum store_mode {
    ST_OK,          /* apply and answer */
    ST_NOT_LEADER,  /* first request: NotLeader region error (nothing applied) */
    ST_BUSY,        /* first request: gRPC UNAVAILABLE "server is busy" (nothing applied) */
    ST_UNKNOWN,     /* first request: applied, then gRPC UNKNOWN (outcome unknown) */
    ST_SILENT,      /* first request: applied, never answered (the client's deadline) */
};

enum client_op { OP_PUT, OP_GET };

static struct {
    enum store_mode mode;
    enum client_op op;
    int cut_at;           /* relay: cut the connection after this request (0 = never) */
    int listen_after_ms;  /* relay: listen only after this long (connect refused before) */
    struct tkv_rpc_server *store;
    uint16_t store_port, relay_port;
    int relay_fd;
    pthread_t relay;
    bool relay_started;
    atomic_bool relay_stop;
    atomic_int handled;   /* requests the store's handlers saw */
    atomic_int applied;   /* puts the store applied */
    atomic_int relayed;   /* requests that crossed the relay */
    struct tkv_rpc_call *held; /* ST_SILENT: the call never answered */
    struct tinykv *kv;
    int rv;
    char value[64];
    char errmsg[600];
    struct tinykv_stats stats;
    bool done;
} F;

/* ---- the fake store ---- */

static void reply(struct tkv_rpc_call *call, const pb_msgdesc_t *fields, const void *msg)
{
    struct tkv_slice out;
    if (tkv_pb_encode_arena(fields, msg, tkv_rpc_call_arena(call), 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "encode");
        return;
    }
    tkv_rpc_call_reply(call, out.ptr, out.len);
}

/* The first request gets the scripted treatment; later ones are served. */
static bool first_scripted(struct tkv_rpc_call *call, const pb_msgdesc_t *fields, bool is_put)
{
    int n = atomic_fetch_add(&F.handled, 1) + 1;
    if (n > 1)
        return false;
    switch (F.mode) {
    case ST_NOT_LEADER: {
        kvrpcpb_RawPutResponse r = {.has_region_error = true,
                                    .region_error = {.message = tkv_pb_str("not leader"),
                                                     .has_not_leader = true,
                                                     .not_leader = {.region_id = 1}}};
        reply(call, fields, &r); /* RawPut/RawGet responses share field 1 */
        return true;
    }
    case ST_BUSY:
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE, "server is busy");
        return true;
    case ST_UNKNOWN:
        if (is_put)
            atomic_fetch_add(&F.applied, 1);
        tkv_rpc_call_finish(call, TKV_GRPC_UNKNOWN,
                            "store is stopping: the write may or may not have been applied");
        return true;
    case ST_SILENT:
        if (is_put)
            atomic_fetch_add(&F.applied, 1);
        F.held = call; /* never answered; the rpc layer answers DEADLINE_EXCEEDED */
        return true;
    default:
        return false;
    }
}

static void on_held_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    (void)why;
    if (F.held == call)
        F.held = NULL;
}

static void store_put(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_RawPutRequest q;
    if (tkv_pb_decode(kvrpcpb_RawPutRequest_fields, &q, msg.ptr, msg.len,
                      tkv_rpc_call_arena(call)) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "decode");
        return;
    }
    if (first_scripted(call, kvrpcpb_RawPutResponse_fields, true))
        return;
    atomic_fetch_add(&F.applied, 1);
    kvrpcpb_RawPutResponse r = {0};
    reply(call, kvrpcpb_RawPutResponse_fields, &r);
}

static void store_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    if (first_scripted(call, kvrpcpb_RawGetResponse_fields, false))
        return;
    kvrpcpb_RawGetResponse r = {.value = tkv_pb_str("v1")};
    reply(call, kvrpcpb_RawGetResponse_fields, &r);
}

/* ---- the relay (its own thread, blocking sockets) ---- */

struct pipe_state {
    int cfd, ufd;
    size_t preface_left; /* client connection preface still to skip */
    uint8_t hdr[9];
    size_t hdr_got;
    size_t payload_left;
    bool counts; /* the current frame ends a request */
    bool cut;    /* stop relaying answers; close once the store handled it */
    uint64_t cut_at_ms;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Client -> store bytes: forward them, parsing HTTP/2 frames to count the
 * requests (DATA or HEADERS with END_STREAM). At the cut_at-th request,
 * forward up to its end and stop. */
static bool relay_up(struct pipe_state *ps, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && !ps->cut) {
        if (ps->preface_left) {
            size_t k = n - i < ps->preface_left ? n - i : ps->preface_left;
            ps->preface_left -= k;
            i += k;
            continue;
        }
        if (ps->hdr_got < 9) {
            ps->hdr[ps->hdr_got++] = p[i++];
            if (ps->hdr_got == 9) {
                ps->payload_left = (size_t)ps->hdr[0] << 16 | (size_t)ps->hdr[1] << 8 | ps->hdr[2];
                uint8_t type = ps->hdr[3], flags = ps->hdr[4];
                ps->counts = (type == 0 || type == 1) && (flags & 1);
            }
        } else {
            size_t k = n - i < ps->payload_left ? n - i : ps->payload_left;
            ps->payload_left -= k;
            i += k;
        }
        if (ps->hdr_got == 9 && ps->payload_left == 0) {
            ps->hdr_got = 0;
            if (ps->counts) {
                int r = atomic_fetch_add(&F.relayed, 1) + 1;
                if (r == F.cut_at) {
                    ps->cut = true;
                    ps->cut_at_ms = mono_ms();
                }
            }
        }
    }
    return write_all(ps->ufd, p, i);
}

static int connect_store(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(F.store_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static void pipe_close(struct pipe_state *ps)
{
    if (ps->cfd >= 0)
        close(ps->cfd);
    if (ps->ufd >= 0)
        close(ps->ufd);
    ps->cfd = ps->ufd = -1;
}

static void *relay_main(void *arg)
{
    (void)arg;
    enum { MAXP = 8 };
    struct pipe_state ps[MAXP];
    for (int i = 0; i < MAXP; i++)
        ps[i].cfd = ps[i].ufd = -1;
    uint64_t t0 = mono_ms();
    bool listening = F.listen_after_ms == 0; /* run() listened already */
    uint8_t buf[16384];
    while (!atomic_load(&F.relay_stop)) {
        if (!listening && mono_ms() - t0 >= (uint64_t)F.listen_after_ms) {
            if (listen(F.relay_fd, 16) != 0)
                break;
            listening = true;
        }
        struct pollfd pf[1 + 2 * MAXP];
        int map[1 + 2 * MAXP], np = 0;
        if (listening) {
            pf[np] = (struct pollfd){.fd = F.relay_fd, .events = POLLIN};
            map[np++] = -1;
        }
        for (int i = 0; i < MAXP; i++) {
            if (ps[i].cfd < 0)
                continue;
            if (ps[i].cut) {
                /* Close once the store's handler ran (the write was applied),
                 * its answer never relayed. */
                if (atomic_load(&F.handled) >= F.cut_at || mono_ms() - ps[i].cut_at_ms > 3000)
                    pipe_close(&ps[i]);
                continue;
            }
            pf[np] = (struct pollfd){.fd = ps[i].cfd, .events = POLLIN};
            map[np++] = 2 * i;
            pf[np] = (struct pollfd){.fd = ps[i].ufd, .events = POLLIN};
            map[np++] = 2 * i + 1;
        }
        if (poll(pf, (nfds_t)np, 10) <= 0)
            continue;
        for (int j = 0; j < np; j++) {
            if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (map[j] < 0) {
                int cfd = accept4(F.relay_fd, NULL, NULL, SOCK_CLOEXEC);
                if (cfd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < MAXP && slot < 0; i++)
                    if (ps[i].cfd < 0)
                        slot = i;
                int ufd = slot >= 0 ? connect_store() : -1;
                if (ufd < 0) {
                    close(cfd);
                    continue;
                }
                ps[slot] = (struct pipe_state){.cfd = cfd, .ufd = ufd, .preface_left = 24};
                continue;
            }
            struct pipe_state *s = &ps[map[j] / 2];
            if (s->cfd < 0 || s->cut)
                continue;
            bool up = map[j] % 2 == 0;
            ssize_t r = read(up ? s->cfd : s->ufd, buf, sizeof buf);
            if (r <= 0) {
                pipe_close(s);
                continue;
            }
            bool ok = up ? relay_up(s, buf, (size_t)r) : write_all(s->cfd, buf, (size_t)r);
            if (!ok)
                pipe_close(s);
        }
    }
    for (int i = 0; i < MAXP; i++)
        pipe_close(&ps[i]);
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

static void finish(int rv)
{
    F.rv = rv;
    snprintf(F.errmsg, sizeof F.errmsg, "%s", tinykv_errmsg(F.kv));
    tinykv_get_stats(F.kv, &F.stats);
    F.done = true;
    tkv_reactor_defer(tkv_reactor_self(), close_and_stop, NULL);
}

static void on_put(void *user, int rv)
{
    (void)user;
    finish(rv);
}

static void on_get(void *user, int rv, struct tkv_slice v)
{
    (void)user;
    snprintf(F.value, sizeof F.value, "%.*s", (int)v.len, (const char *)v.ptr);
    finish(rv);
}

static void kick(void *arg)
{
    (void)arg;
    int rv = F.op == OP_PUT ? tinykv_raw_put(F.kv, NULL, TKV_SLICE_STR("k"), TKV_SLICE_STR("v1"),
                                             on_put, NULL)
                            : tinykv_raw_get(F.kv, NULL, TKV_SLICE_STR("k"), on_get, NULL);
    if (rv)
        finish(rv);
}

static int h_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    static const struct tkv_rpc_method m[] = {
        {.path = "/tinykvpb.TinyKv/RawPut", .kind = TKV_RPC_UNARY, .on_message = store_put,
         .on_cancel = on_held_cancel},
        {.path = "/tinykvpb.TinyKv/RawGet", .kind = TKV_RPC_UNARY, .on_message = store_get,
         .on_cancel = on_held_cancel},
    };
    int rv = tkv_rpc_server_new(NULL, m, TKV_ARRAY_LEN(m), &F.store);
    if (rv == 0)
        rv = tkv_rpc_server_listen(F.store, r, "127.0.0.1", 0, &F.store_port);
    if (rv)
        return rv;
    if (pthread_create(&F.relay, NULL, relay_main, NULL) != 0)
        return -EAGAIN;
    F.relay_started = true;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", F.relay_port);
    struct tinykv_config cfg = {.store_addr = addr,
                                .op_timeout_ms = 5000,
                                /* ST_SILENT: the attempt's deadline ends it */
                                .rpc_timeout_ms = F.mode == ST_SILENT ? 300 : 0,
                                .max_attempts = 1000};
    rv = tinykv_new(r, &cfg, &F.kv);
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
    if (F.held) {
        tkv_rpc_call_finish(F.held, TKV_GRPC_CANCELLED, "test over");
        F.held = NULL;
    }
    tkv_rpc_server_free(F.store);
}

static void run(enum client_op op, enum store_mode mode, int cut_at, int listen_after_ms)
{
    memset(&F, 0, sizeof F);
    F.op = op;
    F.mode = mode;
    F.cut_at = cut_at;
    F.listen_after_ms = listen_after_ms;
    /* The relay's socket is bound now (its port is the client's store
     * address) but listens only after listen_after_ms: until then a connect
     * is refused. */
    F.relay_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(F.relay_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(F.relay_fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(F.relay_fd, (struct sockaddr *)&a, &al), 0);
    F.relay_port = ntohs(a.sin_port);
    if (listen_after_ms == 0)
        cr_assert_eq(listen(F.relay_fd, 16), 0); /* before the client can connect */

    struct tkv_reactor_config rc = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&rc, h_init, h_fini, NULL, &g);
    if (rv == -ENOSYS || rv == -EPERM) {
        close(F.relay_fd);
        cr_skip_test("io_uring unavailable (%d)", rv);
    }
    cr_assert_eq(rv, 0, "group start: %s", tkv_strerror(rv));
    rv = tkv_reactor_group_wait(g);
    atomic_store(&F.relay_stop, true);
    if (F.relay_started)
        pthread_join(F.relay, NULL);
    close(F.relay_fd);
    cr_assert_eq(rv, 0, "group: %s", tkv_strerror(rv));
    cr_assert(F.done, "the operation never finished");
}

Test(client_unknown, put_cut_after_delivery_is_undetermined_and_not_resent)
{
    run(OP_PUT, ST_OK, 1, 0);
    cr_assert_eq(F.rv, TINYKV_EUNDETERMINED,
                 "a put whose connection was cut after the store applied it must end with "
                 "TINYKV_EUNDETERMINED, got %s (%s)", tinykv_strerror(F.rv), F.errmsg);
    cr_assert_eq(atomic_load(&F.relayed), 1,
                 "the put must not be sent again: %d requests crossed the relay",
                 atomic_load(&F.relayed));
    cr_assert_eq(atomic_load(&F.applied), 1, "applied %d times", atomic_load(&F.applied));
    cr_assert(strstr(F.errmsg, "may or may not have been applied"), "errmsg: %s", F.errmsg);
    cr_assert(!tinykv_retryable(F.rv), "an undetermined write is not blindly retryable");
}

Test(client_unknown, put_answered_unknown_by_the_store_is_undetermined_and_not_resent)
{
    run(OP_PUT, ST_UNKNOWN, 0, 0);
    cr_assert_eq(F.rv, TINYKV_EUNDETERMINED, "got %s (%s)", tinykv_strerror(F.rv), F.errmsg);
    cr_assert_eq(atomic_load(&F.handled), 1, "resent: the store saw %d puts",
                 atomic_load(&F.handled));
}

Test(client_unknown, put_past_its_deadline_after_delivery_is_undetermined_and_not_resent)
{
    run(OP_PUT, ST_SILENT, 0, 0);
    cr_assert_eq(F.rv, TINYKV_EUNDETERMINED, "got %s (%s)", tinykv_strerror(F.rv), F.errmsg);
    cr_assert_eq(atomic_load(&F.handled), 1, "resent: the store saw %d puts",
                 atomic_load(&F.handled));
}

Test(client_unknown, put_refused_at_connect_is_retried_and_succeeds)
{
    run(OP_PUT, ST_OK, 0, 150);
    cr_assert_eq(F.rv, 0, "got %s (%s)", tinykv_strerror(F.rv), F.errmsg);
    cr_assert(F.stats.rpc_failures >= 1, "the first connects must have been refused");
    cr_assert(F.stats.retries >= 1, "retries expected");
    cr_assert_eq(atomic_load(&F.applied), 1, "applied %d times", atomic_load(&F.applied));
    cr_assert_eq(atomic_load(&F.relayed), 1, "%d requests crossed", atomic_load(&F.relayed));
}

Test(client_unknown, put_answered_not_leader_is_retried_and_succeeds)
{
    run(OP_PUT, ST_NOT_LEADER, 0, 0);
    cr_assert_eq(F.rv, 0, "got %s (%s)", tinykv_strerror(F.rv), F.errmsg);
    cr_assert_eq(atomic_load(&F.handled), 2, "the store saw %d puts", atomic_load(&F.handled));
    cr_assert_eq(atomic_load(&F.applied), 1);
}

Test(client_unknown, put_answered_busy_is_retried_and_succeeds)
{
    run(OP_PUT, ST_BUSY, 0, 0);
    cr_assert_eq(F.rv, 0, "got %s (%s)", tinykv_strerror(F.rv), F.errmsg);
    cr_assert_eq(atomic_load(&F.handled), 2, "the store saw %d puts", atomic_load(&F.handled));
    cr_assert_eq(atomic_load(&F.applied), 1);
}

Test(client_unknown, get_cut_after_delivery_is_retried_and_succeeds)
{
    run(OP_GET, ST_OK, 1, 0);
    cr_assert_eq(F.rv, 0, "a read is idempotent and must be retried, got %s (%s)",
                 tinykv_strerror(F.rv), F.errmsg);
    cr_assert_str_eq(F.value, "v1");
    cr_assert_eq(atomic_load(&F.relayed), 2, "%d requests crossed", atomic_load(&F.relayed));
}
