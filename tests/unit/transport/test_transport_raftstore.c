/* Two raftstores replicate one region over the real transport: each store
 * on its own reactor core (in-memory engine, in-memory raft log in
 * synchronous mode), messages as RaftMessages on Raft streams over
 * 127.0.0.1 (port 0). A leader is elected over the network, 200 writes are
 * acknowledged after the follower replicated them (a quorum of 2 needs
 * both), and the follower's applied index catches up. Skipped when io_uring
 * is unavailable. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tkv/engine.h"
#include "tkv/err.h"
#include "tkv/raftlog.h"
#include "tkv/raftstore.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"
#include "tkv/transport.h"

#define MS 1000000ull
#define N 2
#define WRITES 200

typedef void (*cmd_fn)(void);

struct store {
    uint64_t id;
    struct tkv_reactor *r;
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_engine *engine;
    struct tkv_raftstore *rs;
    struct tkv_transport *tp;
    struct tkv_rpc_server *srv;
    struct tkv_timer tick, poll;
    struct tkv_reactor_hook ready_hook;
    struct tkv_rs_region_status status;
    struct tkv_transport_stats tstats;
};

static struct {
    struct tkv_reactor_group *g;
    struct store st[N];
    _Atomic uint16_t port[N];
    _Atomic(uintptr_t) cmd[N];
    atomic_int done[N], ready, nerr, acked, failed;
    bool stopped;
    char err[256];
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

static struct store *me(void)
{
    return &H.st[tkv_core_self()];
}

/* env seam */
static uint64_t env_now_ms(void *ctx)
{
    struct store *s = ctx;
    return tkv_now_ns(s->r) / 1000000;
}

static void env_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    struct store *s = ctx;
    tkv_transport_send(s->tp, to_store, m);
}

/* transport host */
static int h_resolve(void *ctx, uint64_t store_id, char *addr, size_t cap)
{
    (void)ctx;
    if (store_id == 0 || store_id > N)
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
    if (m->to.store_id != s->id)
        fail("store %llu was handed a message for store %llu", (unsigned long long)s->id,
             (unsigned long long)m->to.store_id);
    if (s->rs)
        tkv_raftstore_receive(s->rs, m);
}

static void h_unreachable(void *ctx, uint64_t region_id, uint64_t peer)
{
    struct store *s = ctx;
    if (s->rs)
        tkv_raftstore_report_unreachable(s->rs, region_id, peer);
}

static void h_snapshot(void *ctx, uint64_t region_id, uint64_t peer, bool failed)
{
    struct store *s = ctx;
    if (s->rs)
        tkv_raftstore_report_snapshot(s->rs, region_id, peer, failed);
}

/* the Ready loop once per turn */
static void ready_cb(void *arg)
{
    struct store *s = arg;
    /* the in-memory raft log is in synchronous mode: its flush completes
     * the turn's sync barrier, which lets the turn's messages leave */
    for (int i = 0; i < 8 && s->rs; i++) {
        bool more = tkv_raftstore_ready(s->rs);
        if (tkv_raftlog_flush(s->log) < 0)
            fail("raft log flush");
        if (!more)
            break;
    }
}

static void tick_cb(struct tkv_timer *t)
{
    struct store *s = t->data;
    tkv_raftstore_tick(s->rs);
    tkv_timer_start(s->r, t, 20 * MS);
}

static void poll_cb(struct tkv_timer *t)
{
    struct store *s = t->data;
    uint32_t c = tkv_core_self();
    uintptr_t fn = atomic_exchange(&H.cmd[c], 0);
    if (fn) {
        ((cmd_fn)fn)();
        atomic_store(&H.done[c], 1);
    }
    tkv_timer_start(s->r, t, 1 * MS);
}

static void on_stop(void *arg)
{
    struct store *s = arg;
    tkv_timer_stop(s->r, &s->poll);
    tkv_timer_stop(s->r, &s->tick);
}

static int h_init(struct tkv_reactor *r, uint32_t c, void *arg)
{
    (void)arg;
    struct store *s = &H.st[c];
    s->id = c + 1;
    s->r = r;
    s->disk = tkv_raftlog_memdisk_new();
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_MEM, .sync = false};
    int rv = tkv_engine_open(&eo, &s->engine);
    if (rv < 0)
        return rv;
    struct tkv_rs_region rg;
    memset(&rg, 0, sizeof(rg));
    rg.id = 1;
    rg.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    rg.n_peers = N;
    for (uint32_t i = 0; i < N; i++)
        rg.peers[i] = (struct tkv_rs_peer){.id = i + 1, .store_id = i + 1};
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    if ((rv = tkv_raftlog_open_mem(&lc, s->disk, &s->log, NULL)) < 0 ||
        (rv = tkv_raftstore_bootstrap(s->log, s->engine, s->id, &rg)) < 0)
        return rv;
    struct tkv_transport_config tc = {.store_id = s->id, .backoff_min_ns = 10 * MS};
    struct tkv_transport_host host = {.ctx = s,
                                      .resolve = h_resolve,
                                      .deliver = h_deliver,
                                      .report_unreachable = h_unreachable,
                                      .report_snapshot = h_snapshot};
    if ((rv = tkv_transport_new(r, &tc, &host, &s->tp)) < 0)
        return rv;
    struct tkv_raftstore_config rc = {.store_id = s->id,
                                      .election_tick = 10,
                                      .heartbeat_tick = 2,
                                      .raft_log_gc_tick = 100,
                                      .raft_log_gc_count_limit = 1000000,
                                      .seed = 7 + c};
    struct tkv_raftstore_env env = {.ctx = s, .now_ms = env_now_ms, .send = env_send,
                                    .raftlog = s->log, .engine = s->engine};
    if ((rv = tkv_raftstore_open(&rc, &env, &s->rs)) < 0)
        return rv;
    struct tkv_rpc_method methods[TKV_TRANSPORT_N_METHODS];
    tkv_transport_methods(s->tp, methods);
    if ((rv = tkv_rpc_server_new(NULL, methods, TKV_TRANSPORT_N_METHODS, &s->srv)) < 0)
        return rv;
    uint16_t port = 0;
    if ((rv = tkv_rpc_server_listen(s->srv, r, "127.0.0.1", 0, &port)) < 0)
        return rv;
    atomic_store(&H.port[c], port);
    tkv_reactor_hook_init(&s->ready_hook, ready_cb, s);
    tkv_reactor_hook_add(r, &s->ready_hook);
    tkv_timer_init(&s->tick, tick_cb, s);
    tkv_timer_start(r, &s->tick, 20 * MS);
    tkv_timer_init(&s->poll, poll_cb, s);
    tkv_timer_start(r, &s->poll, 1 * MS);
    tkv_reactor_on_stop(r, on_stop, s);
    atomic_fetch_add(&H.ready, 1);
    return 0;
}

static void h_fini(struct tkv_reactor *r, uint32_t c, void *arg)
{
    (void)arg;
    struct store *s = &H.st[c];
    if (s->ready_hook.linked)
        tkv_reactor_hook_remove(r, &s->ready_hook);
    tkv_rpc_server_free(s->srv);
    tkv_raftstore_close(s->rs);
    s->rs = NULL;
    tkv_transport_free(s->tp);
    tkv_raftlog_close(s->log);
    tkv_engine_close(s->engine);
    tkv_raftlog_memdisk_free(s->disk);
}

static void run_on(uint32_t c, cmd_fn fn)
{
    atomic_store(&H.done[c], 0);
    atomic_store(&H.cmd[c], (uintptr_t)fn);
    uint64_t t0 = mono_ms();
    while (!atomic_load(&H.done[c]) && mono_ms() - t0 < 10000)
        usleep(500);
    cr_assert(atomic_load(&H.done[c]), "command on core %u did not run", c);
}

static void read_status(void)
{
    struct store *s = me();
    tkv_raftstore_region_status(s->rs, 1, &s->status);
    tkv_transport_stats(s->tp, &s->tstats);
}

static void on_put(void *arg, const struct tkv_rs_result *res)
{
    (void)arg;
    if (res->rv == 0)
        atomic_fetch_add(&H.acked, 1);
    else
        atomic_fetch_add(&H.failed, 1);
}

static void put_many(void)
{
    struct store *s = me();
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(s->rs, 1, &st);
    struct tkv_rs_header h = {.region_id = 1,
                              .peer = {.id = st.peer_id, .store_id = s->id},
                              .epoch = st.region.epoch};
    for (int i = 0; i < WRITES; i++) {
        char k[32], v[32];
        int kn = snprintf(k, sizeof(k), "key%04d", i);
        int vn = snprintf(v, sizeof(v), "value%04d", i);
        tkv_raftstore_put(s->rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)kn),
                          TKV_SLICE(v, (size_t)vn), on_put, NULL);
    }
}

/* The follower's engine holds every acknowledged value (what crossed the
 * wire is what was written). */
static atomic_int follower_values;
static void check_values(void)
{
    struct store *s = me();
    struct tkv_engine_session *sess = NULL;
    if (tkv_engine_session_open(s->engine, &sess) < 0) {
        fail("session");
        return;
    }
    int good = 0;
    for (int i = 0; i < WRITES; i++) {
        char k[32], v[32];
        int kn = snprintf(k, sizeof(k), "key%04d", i);
        int vn = snprintf(v, sizeof(v), "value%04d", i);
        struct tkv_slice got;
        if (tkv_engine_get(sess, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)kn), &got) == 0 &&
            got.len == (size_t)vn && memcmp(got.ptr, v, got.len) == 0)
            good++;
    }
    tkv_engine_session_close(sess);
    atomic_store(&follower_values, good);
}

static void teardown(void)
{
    if (H.g && !H.stopped) {
        H.stopped = true;
        tkv_reactor_group_stop(H.g);
        tkv_reactor_group_wait(H.g);
    }
}

Test(transport_raftstore, two_stores_replicate_a_region_over_the_transport, .fini = teardown,
     .timeout = 60)
{
    memset(&H, 0, sizeof(H));
    struct tkv_reactor_config rc = {.n_cores = N};
    int rv = tkv_reactor_group_start(&rc, h_init, h_fini, NULL, &H.g);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable (%d)", rv);
    cr_assert_eq(rv, 0, "group start: %d", rv);
    uint64_t t0 = mono_ms();
    while (atomic_load(&H.ready) < N && mono_ms() - t0 < 5000)
        usleep(1000);
    cr_assert_eq(atomic_load(&H.ready), N, "stores did not start");

    /* an election needs votes over the network */
    int leader = -1;
    t0 = mono_ms();
    while (leader < 0 && mono_ms() - t0 < 10000) {
        for (int c = 0; c < N; c++) {
            run_on((uint32_t)c, read_status);
            if (H.st[c].status.is_leader)
                leader = c;
        }
        usleep(10000);
    }
    for (int c = 0; leader < 0 && c < N; c++) {
        const struct tkv_transport_stats *t = &H.st[c].tstats;
        struct tkv_rs_region_status *rs = &H.st[c].status;
        fprintf(stderr, "exists %d peer %llu n_peers %u last %llu commit %llu role leader %llu\n",
                rs->exists, (unsigned long long)rs->peer_id, rs->region.n_peers,
                (unsigned long long)rs->last_index, (unsigned long long)rs->commit,
                (unsigned long long)rs->leader_peer_id);
        fprintf(stderr, "store %d: term %llu queued %llu sent %llu delivered %llu rejects %llu "
                "dropped %llu/%llu streams %llu failures %llu\n", c + 1,
                (unsigned long long)H.st[c].status.term, (unsigned long long)t->msgs_queued,
                (unsigned long long)t->msgs_sent, (unsigned long long)t->msgs_delivered,
                (unsigned long long)(t->rejects[1] + t->rejects[2] + t->rejects[3] +
                                     t->rejects[4] + t->rejects[5]),
                (unsigned long long)t->msgs_dropped_full,
                (unsigned long long)t->msgs_dropped_unreachable,
                (unsigned long long)t->streams_started, (unsigned long long)t->stream_failures);
    }
    cr_assert_geq(leader, 0, "no leader elected over the transport");
    int follower = 1 - leader;

    run_on((uint32_t)leader, put_many);
    t0 = mono_ms();
    while (atomic_load(&H.acked) + atomic_load(&H.failed) < WRITES && mono_ms() - t0 < 15000)
        usleep(2000);
    cr_assert_eq(atomic_load(&H.failed), 0, "%d writes failed", atomic_load(&H.failed));
    cr_assert_eq(atomic_load(&H.acked), WRITES, "%d of %d writes acknowledged",
                 atomic_load(&H.acked), WRITES);

    run_on((uint32_t)leader, read_status);
    tkv_index leader_applied = H.st[leader].status.applied;
    t0 = mono_ms();
    do {
        run_on((uint32_t)follower, read_status);
        if (H.st[follower].status.applied >= leader_applied)
            break;
        usleep(5000);
    } while (mono_ms() - t0 < 5000);
    cr_assert_geq(H.st[follower].status.applied, leader_applied,
                  "follower applied %llu, leader %llu",
                  (unsigned long long)H.st[follower].status.applied,
                  (unsigned long long)leader_applied);
    cr_assert_geq(leader_applied, WRITES, "the writes are in the log");
    run_on((uint32_t)follower, check_values);
    cr_assert_eq(atomic_load(&follower_values), WRITES, "the follower holds %d of %d values",
                 atomic_load(&follower_values), WRITES);
    const struct tkv_transport_stats *ls = &H.st[leader].tstats, *fs = &H.st[follower].tstats;
    cr_assert_gt(ls->msgs_sent, 0);
    cr_assert_gt(fs->msgs_delivered, 0);
    cr_assert_gt(fs->msgs_sent, 0, "the follower answers over its own stream");
    cr_assert_eq(ls->streams_started, 1, "one stream per destination");
    cr_assert_eq(atomic_load(&H.nerr), 0, "%s", H.err);
}
