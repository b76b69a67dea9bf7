/* Two stores' transports on two reactor cores over 127.0.0.1 (port 0):
 * messages both ways in per-turn batches, a store that is down (bounded
 * queue, drops counted, unreachable reported, reconnect once it listens), a
 * peer that accepts but never reads (sender memory bounded, its core keeps
 * serving), a multi-MiB snapshot, corrupted / misaddressed / malformed
 * snapshot chunks and RaftMessages refused and counted. Skipped when
 * io_uring is unavailable. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "raft_serverpb.pb.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"
#include "tkv/transport.h"

#define MS 1000000ull
#define N_STORES 2

typedef void (*cmd_fn)(void);

struct store {
    struct tkv_transport *tp;
    struct tkv_rpc_server *srv;
    struct tkv_timer poll;
    atomic_uint delivered, delivered_snaps, unreachable, snap_ok, snap_failed;
    atomic_uint order_errors;
    uint64_t next_ctx[N_STORES + 2]; /* per sender store: last ctx delivered */
    size_t snap_len;
    uint32_t snap_crc;
    uint64_t snap_index;
    uint32_t snap_voters;
    struct tkv_transport_stats stats;
};

static struct {
    struct tkv_reactor_group *g;
    struct tkv_transport_config tcfg;
    struct store st[N_STORES];
    _Atomic uint16_t port[N_STORES + 1]; /* store id - 1 -> port; 0 = not known yet */
    bool late_listen;                    /* store 2 listens only when told */
    bool free_transport_first;           /* fini frees the transport before the rpc server */
    int late_fd;
    _Atomic(uintptr_t) cmd[N_STORES];
    atomic_int done[N_STORES], ready, nerr;
    bool stopped;
    char err[512];
} H;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    if (atomic_fetch_add(&H.nerr, 1) == 0) {
        va_start(ap, fmt);
        vsnprintf(H.err, sizeof(H.err), fmt, ap);
        va_end(ap);
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint32_t core(void)
{
    return tkv_core_self();
}

/* ---------------------------------------------------------- host */

static int h_resolve(void *ctx, uint64_t store_id, char *addr, size_t cap)
{
    (void)ctx;
    if (store_id == 0 || store_id > N_STORES + 1)
        return TKV_ENOTFOUND;
    uint16_t p = atomic_load(&H.port[store_id - 1]);
    if (!p)
        return TKV_EUNAVAILABLE;
    snprintf(addr, cap, "127.0.0.1:%u", p);
    return 0;
}

static void h_deliver(void *ctx, const struct tkv_rs_msg *m)
{
    struct store *s = ctx;
    if (m->to.store_id != core() + 1)
        fail("store %u got a message for store %llu", core() + 1,
             (unsigned long long)m->to.store_id);
    if (m->msg.type == TKV_RAFT_MSG_SNAPSHOT) {
        const struct tkv_raft_snapshot *sn = m->msg.snapshot;
        s->snap_len = sn->data ? sn->data->len : 0;
        s->snap_crc = sn->data ? tkv_codec_crc32c(0, sn->data->data, sn->data->len) : 0;
        s->snap_index = sn->index;
        s->snap_voters = sn->conf_state.n_voters;
        atomic_fetch_add(&s->delivered_snaps, 1);
        return;
    }
    /* senders number their heartbeats: one stream per destination keeps order */
    uint64_t from = m->from.store_id;
    if (m->msg.ctx && from < N_STORES + 2) {
        if (m->msg.ctx <= s->next_ctx[from]) /* gaps are drops; never backwards */
            atomic_fetch_add(&s->order_errors, 1);
        s->next_ctx[from] = m->msg.ctx;
    }
    if (m->msg.n_entries) {
        const struct tkv_raft_entry *e = &m->msg.entries[0];
        if (!e->data || e->data->len < 1 || e->data->data[0] != (uint8_t)(m->msg.ctx & 0xff))
            fail("entry payload damaged");
    }
    atomic_fetch_add(&s->delivered, 1);
}

static void h_unreachable(void *ctx, uint64_t region_id, uint64_t peer)
{
    struct store *s = ctx;
    if (region_id == 0 || peer == 0)
        fail("unreachable report without region/peer");
    atomic_fetch_add(&s->unreachable, 1);
}

static void h_report_snapshot(void *ctx, uint64_t region_id, uint64_t peer, bool failed)
{
    struct store *s = ctx;
    (void)region_id;
    (void)peer;
    atomic_fetch_add(failed ? &s->snap_failed : &s->snap_ok, 1);
}

/* ---------------------------------------------------------- harness */

static void poll_cb(struct tkv_timer *t)
{
    struct store *s = t->data;
    uint32_t c = core();
    uintptr_t fn = atomic_exchange(&H.cmd[c], 0);
    if (fn) {
        ((cmd_fn)fn)();
        atomic_store(&H.done[c], 1);
    }
    tkv_timer_start(tkv_reactor_self(), &s->poll, 1 * MS);
}

static void stop_poll(void *arg)
{
    struct store *s = arg;
    tkv_timer_stop(tkv_reactor_self(), &s->poll);
}

static int h_init(struct tkv_reactor *r, uint32_t c, void *arg)
{
    (void)arg;
    struct store *s = &H.st[c];
    struct tkv_transport_config cfg = H.tcfg;
    cfg.store_id = c + 1;
    struct tkv_transport_host host = {
        .ctx = s,
        .resolve = h_resolve,
        .deliver = h_deliver,
        .report_unreachable = h_unreachable,
        .report_snapshot = h_report_snapshot,
    };
    int rv = tkv_transport_new(r, &cfg, &host, &s->tp);
    if (rv < 0)
        return rv;
    struct tkv_rpc_method methods[TKV_TRANSPORT_N_METHODS];
    tkv_transport_methods(s->tp, methods);
    struct tkv_rpc_server_config scfg = {.max_recv_msg = 8u << 20};
    rv = tkv_rpc_server_new(&scfg, methods, TKV_TRANSPORT_N_METHODS, &s->srv);
    if (rv < 0)
        return rv;
    if (!(c == 1 && H.late_listen)) {
        uint16_t port = 0;
        rv = tkv_rpc_server_listen(s->srv, r, "127.0.0.1", 0, &port);
        if (rv < 0)
            return rv;
        atomic_store(&H.port[c], port);
    }
    tkv_timer_init(&s->poll, poll_cb, s);
    tkv_timer_start(r, &s->poll, 1 * MS);
    tkv_reactor_on_stop(r, stop_poll, s);
    atomic_fetch_add(&H.ready, 1);
    return 0;
}

static void h_fini(struct tkv_reactor *r, uint32_t c, void *arg)
{
    (void)r;
    (void)arg;
    struct store *s = &H.st[c];
    tkv_transport_stats(s->tp, &s->stats);
    if (H.free_transport_first) {
        tkv_transport_free(s->tp); /* calls still in the server see a closed store */
        tkv_rpc_server_free(s->srv);
    } else {
        tkv_rpc_server_free(s->srv);
        tkv_transport_free(s->tp);
    }
}

static void start(void)
{
    struct tkv_reactor_config rc = {.n_cores = N_STORES};
    int rv = tkv_reactor_group_start(&rc, h_init, h_fini, NULL, &H.g);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable (%d)", rv);
    cr_assert_eq(rv, 0, "group start: %d", rv);
    uint64_t t0 = mono_ms();
    while (atomic_load(&H.ready) < N_STORES && mono_ms() - t0 < 5000)
        usleep(1000);
    cr_assert_eq(atomic_load(&H.ready), N_STORES, "cores did not start");
}

static void setup(void)
{
    memset(&H, 0, sizeof(H));
    H.late_fd = -1;
    H.tcfg.backoff_min_ns = 20 * MS;
    H.tcfg.backoff_max_ns = 200 * MS;
}

static void teardown(void)
{
    if (H.g && !H.stopped) {
        H.stopped = true;
        tkv_reactor_group_stop(H.g);
        tkv_reactor_group_wait(H.g);
    }
    if (H.late_fd >= 0)
        close(H.late_fd);
}

/* Run fn on store (core) c and wait for it to return. */
static void run_on(uint32_t c, cmd_fn fn)
{
    atomic_store(&H.done[c], 0);
    atomic_store(&H.cmd[c], (uintptr_t)fn);
    uint64_t t0 = mono_ms();
    while (!atomic_load(&H.done[c]) && mono_ms() - t0 < 10000)
        usleep(500);
    cr_assert(atomic_load(&H.done[c]), "command on core %u did not run", c);
    cr_assert_eq(atomic_load(&H.nerr), 0, "%d failure(s), first: %s", atomic_load(&H.nerr), H.err);
}

static void copy_stats(void)
{
    struct store *s = &H.st[core()];
    tkv_transport_stats(s->tp, &s->stats);
}

static struct tkv_transport_stats stats_of(uint32_t c)
{
    run_on(c, copy_stats);
    return H.st[c].stats;
}

#define WAIT_UNTIL(cond, ms, ...)                                          \
    do {                                                                   \
        uint64_t t0_ = mono_ms();                                          \
        while (!(cond) && mono_ms() - t0_ < (uint64_t)(ms))               \
            usleep(1000);                                                  \
        cr_assert((cond), __VA_ARGS__);                                    \
    } while (0)

/* ---------------------------------------------------------- messages */

static uint64_t ctx_counter[N_STORES + 2]; /* per destination, on the sending core */

static void send_heartbeats(uint64_t to_store, int n, size_t payload)
{
    uint32_t me = core() + 1;
    uint8_t *data = payload ? tkv_xmalloc(payload) : NULL;
    for (int i = 0; i < n; i++) {
        struct tkv_rs_msg m;
        memset(&m, 0, sizeof(m));
        m.region_id = 1 + (uint64_t)(i % 7);
        m.from = (struct tkv_rs_peer){.id = 100 + me, .store_id = me};
        m.to = (struct tkv_rs_peer){.id = 100 + to_store, .store_id = to_store};
        m.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
        m.msg.type = payload ? TKV_RAFT_MSG_APPEND : TKV_RAFT_MSG_HEARTBEAT;
        m.msg.from = m.from.id;
        m.msg.to = m.to.id;
        m.msg.term = 5;
        m.msg.ctx = ++ctx_counter[to_store];
        struct tkv_raft_entry e;
        struct tkv_raft_buf *b = NULL;
        if (payload) {
            memset(data, (int)(m.msg.ctx & 0xff), payload);
            if (tkv_raft_buf_copy(data, payload, &b) < 0)
                fail("buf");
            e = (struct tkv_raft_entry){.term = 5, .index = m.msg.ctx, .data = b};
            m.msg.entries = &e;
            m.msg.n_entries = 1;
            m.msg.index = m.msg.ctx - 1;
        }
        tkv_transport_send(H.st[core()].tp, to_store, &m);
        tkv_raft_buf_unref(b);
    }
    tkv_free(data);
}

/* ---------------------------------------------------------- 1: both ways, batched */

static void send_100_to_2(void)
{
    send_heartbeats(2, 100, 0);
}
static void send_50_to_1(void)
{
    send_heartbeats(1, 50, 16);
}

Test(transport_net, messages_flow_both_ways_in_per_turn_batches, .init = setup, .fini = teardown)
{
    start();
    run_on(0, send_100_to_2);
    run_on(1, send_50_to_1);
    WAIT_UNTIL(atomic_load(&H.st[1].delivered) == 100, 5000, "store 2 got %u of 100",
               atomic_load(&H.st[1].delivered));
    WAIT_UNTIL(atomic_load(&H.st[0].delivered) == 50, 5000, "store 1 got %u of 50",
               atomic_load(&H.st[0].delivered));
    run_on(0, send_100_to_2);
    WAIT_UNTIL(atomic_load(&H.st[1].delivered) == 200, 5000, "store 2 got %u of 200",
               atomic_load(&H.st[1].delivered));
    struct tkv_transport_stats a = stats_of(0), b = stats_of(1);
    cr_assert_eq(a.msgs_sent, 200);
    cr_assert_eq(a.batches, 2, "100 messages sent in one turn must leave in ONE batch (%llu batches "
                 "for 2 turns)", (unsigned long long)a.batches);
    cr_assert_eq(a.streams_started, 1, "one long-lived stream per destination");
    cr_assert_eq(b.msgs_sent, 50);
    cr_assert_eq(b.batches, 1);
    cr_assert_eq(b.msgs_delivered, 200);
    cr_assert_eq(atomic_load(&H.st[1].order_errors), 0, "messages reordered");
    cr_assert_eq(atomic_load(&H.st[0].order_errors), 0, "messages reordered");
    cr_assert_eq(a.msgs_dropped_full + a.msgs_dropped_unreachable, 0);
    cr_assert_eq(a.queued_bytes, 0);
}

/* ---------------------------------------------------------- 2: down, then up */

static void send_200_to_2(void)
{
    send_heartbeats(2, 200, 0);
}
static void send_10_to_2(void)
{
    send_heartbeats(2, 10, 0);
}
static void late_listen(void)
{
    struct store *s = &H.st[1];
    int rv = tkv_rpc_server_listen_fd(s->srv, tkv_reactor_self(), H.late_fd);
    if (rv < 0)
        fail("listen_fd: %d", rv);
    H.late_fd = -1; /* the server owns it */
}

Test(transport_net, store_down_bounded_queue_drops_counted_reconnects_when_up, .init = setup,
     .fini = teardown)
{
    H.late_listen = true;
    H.tcfg.queue_max_msgs = 64;
    /* store 2's address is a bound socket that does not listen yet:
     * connections are refused until it does (no port race) */
    H.late_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(H.late_fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(H.late_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    cr_assert_eq(getsockname(H.late_fd, (struct sockaddr *)&sa, &sl), 0);
    start();

    /* not yet resolvable: messages wait, bounded */
    run_on(0, send_200_to_2);
    struct tkv_transport_stats a = stats_of(0);
    cr_assert_eq(a.msgs_queued, 64, "queue bound is 64 messages, %llu queued",
                 (unsigned long long)a.msgs_queued);
    cr_assert_eq(a.msgs_dropped_full, 136);
    WAIT_UNTIL(atomic_load(&H.st[0].unreachable) > 0, 2000,
               "drops while the store is not reachable are reported to raft");

    /* resolvable but refusing: the stream fails, its queue is dropped and
     * reported, then backoff; new messages stay bounded meanwhile */
    unsigned reported = atomic_load(&H.st[0].unreachable);
    atomic_store(&H.port[1], ntohs(sa.sin_port));
    for (int round = 0; round < 5; round++) {
        run_on(0, send_200_to_2);
        usleep(30 * 1000);
    }
    WAIT_UNTIL(stats_of(0).stream_failures >= 2, 5000, "refused connections must fail the stream");
    a = stats_of(0);
    cr_assert_leq(a.queued_bytes, 64 * 200, "queue over its bound: %zu bytes", a.queued_bytes);
    cr_assert_gt(a.msgs_dropped_full, 136, "messages offered during the backoff are dropped");
    WAIT_UNTIL(atomic_load(&H.st[0].unreachable) > reported, 2000,
               "a failed stream reports its regions' peers unreachable");
    cr_assert_eq(atomic_load(&H.st[1].delivered), 0);

    /* it comes up: the next backoff round reconnects and messages flow */
    cr_assert_eq(listen(H.late_fd, 64), 0);
    run_on(1, late_listen);
    uint64_t t0 = mono_ms();
    while (atomic_load(&H.st[1].delivered) == 0 && mono_ms() - t0 < 5000) {
        run_on(0, send_10_to_2);
        usleep(20 * 1000);
    }
    cr_assert_gt(atomic_load(&H.st[1].delivered), 0, "no message after the store came up");
    a = stats_of(0);
    cr_assert_geq(a.streams_started, 2, "reconnected");
    cr_assert_eq(atomic_load(&H.st[1].order_errors), 0);
}

/* ---------------------------------------------------------- 3: a peer that never reads */

static int never_read_fd = -1;

static void send_round_to_3_and_2(void)
{
    send_heartbeats(3, 500, 4096); /* ~2 MiB per round to the stalled peer */
    send_heartbeats(2, 5, 0);
}

Test(transport_net, peer_that_never_reads_costs_bounded_memory, .init = setup, .fini = teardown)
{
    H.tcfg.queue_max_bytes = 1u << 20;
    H.tcfg.queue_max_msgs = 100000;
    H.tcfg.stream_max_out_bytes = 256u << 10;
    /* store 3: accepts connections (kernel backlog) and never reads */
    never_read_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(never_read_fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(never_read_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    cr_assert_eq(getsockname(never_read_fd, (struct sockaddr *)&sa, &sl), 0);
    cr_assert_eq(listen(never_read_fd, 8), 0);
    atomic_store(&H.port[2], ntohs(sa.sin_port));
    start();
    size_t max_queued = 0, max_rpc = 0;
    for (int round = 0; round < 20; round++) {
        run_on(0, send_round_to_3_and_2);
        usleep(5 * 1000);
        struct tkv_transport_stats a = stats_of(0);
        if (a.queued_bytes > max_queued)
            max_queued = a.queued_bytes;
        if (a.rpc_out_bytes > max_rpc)
            max_rpc = a.rpc_out_bytes;
    }
    /* the live store was served all along */
    WAIT_UNTIL(atomic_load(&H.st[1].delivered) == 100, 5000, "store 2 got %u of 100 meanwhile",
               atomic_load(&H.st[1].delivered));
    struct tkv_transport_stats a = stats_of(0);
    cr_assert_leq(max_queued, (1u << 20), "queue held %zu bytes (bound 1 MiB)", max_queued);
    /* rpc holds at most the bound plus one message (4 KiB + envelope) */
    cr_assert_leq(max_rpc, (256u << 10) + 8192, "rpc held %zu bytes unsent (bound 256 KiB)",
                  max_rpc);
    cr_assert_gt(a.msgs_dropped_full, 5000, "~40 MiB offered to a peer that reads nothing: most "
                 "must be dropped, %llu were", (unsigned long long)a.msgs_dropped_full);
    close(never_read_fd);
}

/* ---------------------------------------------------------- 4: snapshots */

#define SNAP_LEN ((5u << 20) + 123)
static uint32_t snap_crc_sent;

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(seed >> 56);
    }
}

static void send_snapshot_to_2(void)
{
    struct tkv_raft_buf *b = NULL;
    if (tkv_raft_buf_new(SNAP_LEN, &b) < 0) {
        fail("buf");
        return;
    }
    fill_random(b->data, SNAP_LEN, 42);
    snap_crc_sent = tkv_codec_crc32c(0, b->data, SNAP_LEN);
    struct tkv_raft_snapshot sn = {.index = 77, .term = 6, .data = b};
    sn.conf_state.n_voters = 3;
    sn.conf_state.voters[0] = 101;
    sn.conf_state.voters[1] = 102;
    sn.conf_state.voters[2] = 103;
    struct tkv_rs_msg m;
    memset(&m, 0, sizeof(m));
    m.region_id = 9;
    m.from = (struct tkv_rs_peer){.id = 101, .store_id = 1};
    m.to = (struct tkv_rs_peer){.id = 102, .store_id = 2};
    m.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    m.msg.type = TKV_RAFT_MSG_SNAPSHOT;
    m.msg.from = 101;
    m.msg.to = 102;
    m.msg.term = 6;
    m.msg.snapshot = &sn;
    tkv_transport_send(H.st[0].tp, 2, &m);
    tkv_raft_buf_unref(b); /* the transport holds its own reference */
}

Test(transport_net, snapshot_of_several_mib_arrives_intact, .init = setup, .fini = teardown)
{
    start();
    run_on(0, send_snapshot_to_2);
    WAIT_UNTIL(atomic_load(&H.st[1].delivered_snaps) == 1, 20000, "snapshot not delivered");
    cr_assert_eq(H.st[1].snap_len, SNAP_LEN, "snapshot length %zu", H.st[1].snap_len);
    cr_assert_eq(H.st[1].snap_crc, snap_crc_sent, "snapshot bytes differ");
    cr_assert_eq(H.st[1].snap_index, 77);
    cr_assert_eq(H.st[1].snap_voters, 3);
    WAIT_UNTIL(atomic_load(&H.st[0].snap_ok) == 1, 5000,
               "the sender's raft must hear REPORT_SNAPSHOT(finish)");
    cr_assert_eq(atomic_load(&H.st[0].snap_failed), 0);
    struct tkv_transport_stats b = stats_of(1);
    cr_assert_eq(b.snaps_received, 1);
    cr_assert_eq(b.recv_snap_bytes, 0, "reassembly memory released");
}

/* ---------------------------------------------------------- 5: bad snapshot streams */

enum { BAD_FLIP, BAD_SHORT, BAD_DATA_FIRST, BAD_TOO_MUCH, BAD_WRONG_STORE, BAD_HUGE, BAD_N };
static atomic_int bad_status[BAD_N];
static struct tkv_rpc_client *raw_cl;

static void raw_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st, const char *m)
{
    (void)c;
    (void)m;
    atomic_store(&bad_status[(intptr_t)user], (int)st + 1);
}
static void raw_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice m)
{
    (void)c;
    (void)user;
    (void)m;
}
static const struct tkv_rpc_stream_cbs raw_cbs = {raw_msg, raw_done};

/* SnapshotChunk{message: RaftMessage with RaftSnapshotData(size, crc)}. */
static struct tkv_slice snap_header(struct tkv_arena *a, uint64_t to_store, uint64_t size,
                                    uint32_t crc)
{
    raft_serverpb_SnapshotCFFile f = {.cf = tkv_pb_str("tinykv"), .size = size, .checksum = crc};
    raft_serverpb_RaftSnapshotData rsd = {0};
    rsd.file_size = size;
    rsd.has_meta = true;
    rsd.meta.cf_files.items = &f;
    rsd.meta.cf_files.n = 1;
    struct tkv_slice meta;
    if (tkv_pb_encode_arena(raft_serverpb_RaftSnapshotData_fields, &rsd, a, 0, &meta) < 0)
        fail("meta");
    struct tkv_raft_buf *mb = NULL;
    if (tkv_raft_buf_copy(meta.ptr, meta.len, &mb) < 0)
        fail("buf");
    struct tkv_raft_snapshot sn = {.index = 50, .term = 3, .data = mb};
    struct tkv_rs_msg m;
    memset(&m, 0, sizeof(m));
    m.region_id = 9;
    m.from = (struct tkv_rs_peer){.id = 101, .store_id = 1};
    m.to = (struct tkv_rs_peer){.id = 102, .store_id = to_store};
    m.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    m.msg.type = TKV_RAFT_MSG_SNAPSHOT;
    m.msg.from = 101;
    m.msg.to = 102;
    m.msg.term = 3;
    m.msg.snapshot = &sn;
    struct tkv_slice rm;
    if (tkv_transport_encode(&m, a, &rm) < 0)
        fail("encode");
    tkv_raft_buf_unref(mb);
    uint8_t *p = tkv_arena_alloc(a, rm.len + 16);
    size_t n = 0;
    p[n++] = 0x0a;
    n += tkv_codec_put_uvarint(p + n, rm.len);
    memcpy(p + n, rm.ptr, rm.len);
    return TKV_SLICE(p, n + rm.len);
}

static struct tkv_slice data_chunk(struct tkv_arena *a, const uint8_t *d, size_t len)
{
    raft_serverpb_SnapshotChunk ch = {0};
    ch.data = TKV_SLICE(d, len);
    struct tkv_slice out;
    if (tkv_pb_encode_arena(raft_serverpb_SnapshotChunk_fields, &ch, a, 0, &out) < 0)
        fail("chunk");
    return out;
}

static void start_bad(int which, struct tkv_arena *a, const uint8_t *data, size_t len)
{
    struct tkv_rpc_ccall *c;
    if (tkv_rpc_client_start(raw_cl, "/tinykvpb.TinyKv/Snapshot", 5000 * MS, &raw_cbs,
                             (void *)(intptr_t)which, &c) < 0) {
        fail("start");
        return;
    }
    uint32_t crc = tkv_codec_crc32c(0, data, len);
    struct tkv_slice s;
    switch (which) {
    case BAD_FLIP: {
        s = snap_header(a, 2, len, crc);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        uint8_t *copy = tkv_xmemdup(data, len);
        copy[len / 2] ^= 0x40; /* one bit flipped in transit */
        s = data_chunk(a, copy, len);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        tkv_free(copy);
        break;
    }
    case BAD_SHORT:
        s = snap_header(a, 2, len + 1000, crc);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        s = data_chunk(a, data, len);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        break;
    case BAD_DATA_FIRST:
        s = data_chunk(a, data, len);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        break;
    case BAD_TOO_MUCH:
        s = snap_header(a, 2, len - 10, crc);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        s = data_chunk(a, data, len);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        break;
    case BAD_WRONG_STORE:
        s = snap_header(a, 3, len, crc);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        break;
    case BAD_HUGE:
        s = snap_header(a, 2, 1ull << 40, crc);
        tkv_rpc_ccall_send(c, s.ptr, s.len);
        break;
    }
    tkv_rpc_ccall_close_send(c);
}

static void send_bad_snapshots(void)
{
    uint16_t port = atomic_load(&H.port[1]);
    if (tkv_rpc_client_connect(tkv_reactor_self(), "127.0.0.1", port, NULL, &raw_cl) < 0) {
        fail("connect");
        return;
    }
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    size_t len = 300000;
    uint8_t *data = tkv_xmalloc(len);
    fill_random(data, len, 7);
    for (int i = 0; i < BAD_N; i++)
        start_bad(i, &a, data, len);
    tkv_free(data);
    tkv_arena_close(&a);
}

static void close_raw(void)
{
    tkv_rpc_client_close(raw_cl);
    raw_cl = NULL;
}

Test(transport_net, corrupt_short_misaddressed_snapshots_are_refused, .init = setup,
     .fini = teardown)
{
    H.tcfg.max_snapshot_bytes = 64u << 20;
    start();
    run_on(0, send_bad_snapshots);
    for (int i = 0; i < BAD_N; i++)
        WAIT_UNTIL(atomic_load(&bad_status[i]) != 0, 5000, "bad snapshot %d not answered", i);
    run_on(0, close_raw);
    static const int want[BAD_N] = {
        [BAD_FLIP] = TKV_GRPC_DATA_LOSS,           [BAD_SHORT] = TKV_GRPC_DATA_LOSS,
        [BAD_DATA_FIRST] = TKV_GRPC_INVALID_ARGUMENT, [BAD_TOO_MUCH] = TKV_GRPC_INVALID_ARGUMENT,
        [BAD_WRONG_STORE] = TKV_GRPC_INVALID_ARGUMENT, [BAD_HUGE] = TKV_GRPC_INVALID_ARGUMENT,
    };
    for (int i = 0; i < BAD_N; i++)
        cr_assert_eq(atomic_load(&bad_status[i]) - 1, want[i], "case %d answered %s, want %s", i,
                     tkv_grpc_status_name(atomic_load(&bad_status[i]) - 1),
                     tkv_grpc_status_name(want[i]));
    cr_assert_eq(atomic_load(&H.st[1].delivered_snaps), 0, "a refused snapshot reached raft");
    struct tkv_transport_stats b = stats_of(1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_SNAP_CHECKSUM], 2, "flip + short");
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_SNAP_CHUNK], 2, "data first + too much");
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_WRONG_STORE], 1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_TOO_BIG], 1);
    cr_assert_eq(b.recv_snap_bytes, 0, "reassembly memory released after refusals");
    /* the store still takes a good snapshot afterwards */
    run_on(0, send_snapshot_to_2);
    WAIT_UNTIL(atomic_load(&H.st[1].delivered_snaps) == 1, 20000, "good snapshot not delivered");
    cr_assert_eq(H.st[1].snap_crc, snap_crc_sent);
}

/* ---------------------------------------------------------- 6: bad RaftMessages */

static atomic_int raft_stream_status;

static void raft_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st, const char *m)
{
    (void)c;
    (void)user;
    (void)m;
    atomic_store(&raft_stream_status, (int)st + 1);
}
static const struct tkv_rpc_stream_cbs raft_cbs = {raw_msg, raft_done};

static struct tkv_rs_msg good_heartbeat(uint64_t to_store)
{
    struct tkv_rs_msg m;
    memset(&m, 0, sizeof(m));
    m.region_id = 4;
    m.from = (struct tkv_rs_peer){.id = 101, .store_id = 1};
    m.to = (struct tkv_rs_peer){.id = 102, .store_id = to_store};
    m.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    m.msg.type = TKV_RAFT_MSG_HEARTBEAT;
    m.msg.from = 101;
    m.msg.to = 102;
    m.msg.term = 2;
    return m;
}

static void send_bad_raft_messages(void)
{
    uint16_t port = atomic_load(&H.port[1]);
    if (tkv_rpc_client_connect(tkv_reactor_self(), "127.0.0.1", port, NULL, &raw_cl) < 0) {
        fail("connect");
        return;
    }
    struct tkv_rpc_ccall *c;
    if (tkv_rpc_client_start(raw_cl, "/tinykvpb.TinyKv/Raft", 5000 * MS, &raft_cbs, NULL, &c) < 0) {
        fail("start");
        return;
    }
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    struct tkv_slice s;
    /* 1 malformed */
    tkv_rpc_ccall_send(c, "\x0a\xff\xff\xff\x01", 5);
    /* 2 another store's */
    struct tkv_rs_msg m = good_heartbeat(3);
    tkv_transport_encode(&m, &a, &s);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    /* 3 no region epoch */
    raft_serverpb_RaftMessage rm = {0};
    rm.region_id = 4;
    rm.has_from_peer = rm.has_to_peer = rm.has_message = true;
    rm.from_peer = (metapb_Peer){.id = 101, .store_id = 1};
    rm.to_peer = (metapb_Peer){.id = 102, .store_id = 2};
    rm.message.msg_type = eraftpb_MessageType_MsgHeartbeat;
    rm.message.from = 101;
    rm.message.to = 102;
    tkv_pb_encode_arena(raft_serverpb_RaftMessage_fields, &rm, &a, 0, &s);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    /* 4 a local-only type */
    m = good_heartbeat(2);
    m.msg.type = TKV_RAFT_MSG_BEAT;
    tkv_transport_encode(&m, &a, &s);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    /* 5 a snapshot on the Raft stream (no checksum checked there) */
    struct tkv_raft_buf *b = NULL;
    tkv_raft_buf_copy("x", 1, &b);
    struct tkv_raft_snapshot sn = {.index = 9, .term = 2, .data = b};
    m = good_heartbeat(2);
    m.msg.type = TKV_RAFT_MSG_SNAPSHOT;
    m.msg.snapshot = &sn;
    tkv_transport_encode(&m, &a, &s);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    tkv_raft_buf_unref(b);
    /* 6 message.to disagrees with to_peer */
    m = good_heartbeat(2);
    m.msg.to = 999;
    tkv_transport_encode(&m, &a, &s);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    /* and one good one: the stream survives the bad ones */
    m = good_heartbeat(2);
    tkv_transport_encode(&m, &a, &s);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    tkv_rpc_ccall_close_send(c);
    tkv_arena_close(&a);
}

Test(transport_net, malformed_and_misaddressed_raft_messages_are_rejected_and_counted,
     .init = setup, .fini = teardown)
{
    start();
    run_on(0, send_bad_raft_messages);
    WAIT_UNTIL(atomic_load(&raft_stream_status) != 0, 5000, "Raft stream not answered");
    run_on(0, close_raw);
    cr_assert_eq(atomic_load(&raft_stream_status) - 1, TKV_GRPC_OK,
                 "the Raft stream ends with Done/OK, got %s",
                 tkv_grpc_status_name(atomic_load(&raft_stream_status) - 1));
    cr_assert_eq(atomic_load(&H.st[1].delivered), 1, "only the good message is delivered");
    struct tkv_transport_stats b = stats_of(1);
    cr_assert_eq(b.msgs_received, 7);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_MALFORMED], 1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_WRONG_STORE], 1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_MISSING], 1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_BAD_TYPE], 1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_SNAP_ON_RAFT], 1);
    cr_assert_eq(b.rejects[TKV_TRANSPORT_REJECT_MISMATCH], 1);
}

/* ---------------------------------------------------------- 7: stop mid-snapshot */

static void send_partial_snapshot(void)
{
    uint16_t port = atomic_load(&H.port[1]);
    if (tkv_rpc_client_connect(tkv_reactor_self(), "127.0.0.1", port, NULL, &raw_cl) < 0) {
        fail("connect");
        return;
    }
    struct tkv_rpc_ccall *c;
    if (tkv_rpc_client_start(raw_cl, "/tinykvpb.TinyKv/Snapshot", 0, &raw_cbs, (void *)(intptr_t)0,
                             &c) < 0) {
        fail("start");
        return;
    }
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    static uint8_t data[1 << 16];
    struct tkv_slice s = snap_header(&a, 2, 3u << 20, 0);
    tkv_rpc_ccall_send(c, s.ptr, s.len);
    s = data_chunk(&a, data, sizeof(data));
    tkv_rpc_ccall_send(c, s.ptr, s.len); /* never finished: 3 MiB announced */
    tkv_arena_close(&a);
}

static void close_raw_if_any(void)
{
    if (raw_cl)
        close_raw();
}

/* A snapshot half received (3 MiB reserved) is abandoned by its sender and
 * the store then stops with its transport freed BEFORE its rpc server (the
 * order tinykv-server's cluster mode uses): the reservation is released,
 * nothing is delivered, no use after free or leak (ASan/LSan). */
Test(transport_net, stop_mid_snapshot_in_either_free_order, .init = setup, .fini = teardown)
{
    H.free_transport_first = true;
    start();
    run_on(0, send_partial_snapshot);
    WAIT_UNTIL(stats_of(1).recv_snap_bytes == (3u << 20), 5000,
               "the partial snapshot did not reserve its memory");
    cr_assert_eq(atomic_load(&H.st[1].delivered_snaps), 0);
    run_on(0, close_raw_if_any);
    teardown();
    cr_assert_eq(H.st[1].stats.recv_snap_bytes, 0, "reassembly memory not released at stop");
}
