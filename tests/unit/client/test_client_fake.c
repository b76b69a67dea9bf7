/* libtinykv against scripted fakes on 127.0.0.1 (port 0): a fake scheduler
 * (GetMembers, GetRegion, GetStore, Tso) and two fake stores answering
 * scripted region errors, all on one reactor core with the client. Shows
 * that NotLeader hints and EpochNotMatch's regions are followed (and how
 * many scheduler calls that costs), that a scan continues across a region
 * boundary, that deadlines bound the retries, and that TSO requests of one
 * loop turn are batched. Skipped when io_uring is unavailable. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kvrpcpb.pb.h"
#include "schedulerpb.pb.h"
#include "tinykv/client.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

enum scenario { SC_NOT_LEADER, SC_EPOCH, SC_DEADLINE, SC_TSO };

static struct {
    enum scenario sc;
    struct tkv_rpc_server *sched_srv, *store_srv[2];
    uint16_t sched_port, store_port[2];
    struct tinykv *kv;
    /* counters */
    int get_region_calls, get_store_calls, members_calls, tso_requests;
    int store_calls[2];
    /* results */
    int rv;
    char value[64];
    char scan_keys[256];
    size_t scan_n;
    struct tinykv_stats stats;
    uint64_t elapsed_ms;
    uint64_t t0;
    uint64_t ts[5];
    int ts_got;
    bool done;
} F;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void reply(struct tkv_rpc_call *call, const pb_msgdesc_t *fields, const void *msg)
{
    struct tkv_slice out;
    if (tkv_pb_encode_arena(fields, msg, tkv_rpc_call_arena(call), 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "encode");
        return;
    }
    tkv_rpc_call_reply(call, out.ptr, out.len);
}

/* ---- fake scheduler ---- */

static metapb_Peer peers_wide[2] = {{.id = 11, .store_id = 1}, {.id = 12, .store_id = 2}};

static void sched_members(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    F.members_calls++;
    struct tkv_arena *a = tkv_rpc_call_arena(call);
    schedulerpb_GetMembersResponse r = {.has_header = true, .header = {.cluster_id = 7},
                                        .has_leader = true};
    struct tkv_slice *url = TKV_PB_PUSH(a, &r.leader.client_urls);
    *url = tkv_pb_printf(a, "http://127.0.0.1:%u", F.sched_port);
    reply(call, schedulerpb_GetMembersResponse_fields, &r);
}

static void sched_get_region(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    F.get_region_calls++;
    /* One region over everything, epoch 1, on stores 1 and 2. NotLeader
     * scenario: the scheduler believes store 1 leads (stale); otherwise 2. */
    schedulerpb_GetRegionResponse r = {
        .has_header = true,
        .header = {.cluster_id = 7},
        .has_region = true,
        .region = {.id = 1, .has_region_epoch = true, .region_epoch = {.conf_ver = 1, .version = 1},
                   .peers = {.items = peers_wide, .n = 2}},
        .has_leader = true,
        .leader = F.sc == SC_NOT_LEADER ? peers_wide[0] : peers_wide[1],
    };
    reply(call, schedulerpb_GetRegionResponse_fields, &r);
}

static void sched_get_store(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    F.get_store_calls++;
    schedulerpb_GetStoreRequest q;
    struct tkv_arena *a = tkv_rpc_call_arena(call);
    if (tkv_pb_decode(schedulerpb_GetStoreRequest_fields, &q, msg.ptr, msg.len, a) != 0 ||
        q.store_id < 1 || q.store_id > 2) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "bad store");
        return;
    }
    schedulerpb_GetStoreResponse r = {
        .has_header = true,
        .header = {.cluster_id = 7},
        .has_store = true,
        .store = {.id = q.store_id,
                  .address = tkv_pb_printf(a, "127.0.0.1:%u", F.store_port[q.store_id - 1])}};
    reply(call, schedulerpb_GetStoreResponse_fields, &r);
}

static int64_t tso_logical;

static void sched_tso(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    schedulerpb_TsoRequest q;
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    F.tso_requests++;
    if (tkv_pb_decode(schedulerpb_TsoRequest_fields, &q, msg.ptr, msg.len, &a) != 0 || !q.count) {
        tkv_arena_close(&a);
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "bad tso");
        return;
    }
    tso_logical += q.count;
    schedulerpb_TsoResponse r = {.has_header = true, .header = {.cluster_id = 7},
                                 .count = q.count, .has_timestamp = true,
                                 .timestamp = {.physical = 1000, .logical = tso_logical}};
    uint8_t buf[64];
    size_t n;
    tkv_pb_encode(schedulerpb_TsoResponse_fields, &r, buf, sizeof buf, &n);
    tkv_rpc_call_send(call, buf, n);
    tkv_arena_close(&a);
}

static void sched_tso_half_close(struct tkv_rpc_call *call)
{
    tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

/* ---- fake stores ---- */

static void store_region_error(struct tkv_rpc_call *call, const errorpb_Error *e, bool scan)
{
    if (scan) {
        kvrpcpb_RawScanResponse r = {.has_region_error = true, .region_error = *e};
        reply(call, kvrpcpb_RawScanResponse_fields, &r);
    } else {
        kvrpcpb_RawGetResponse r = {.has_region_error = true, .region_error = *e};
        reply(call, kvrpcpb_RawGetResponse_fields, &r);
    }
}

static bool key_lt(struct tkv_slice k, const char *s)
{
    size_t n = strlen(s), l = k.len < n ? k.len : n;
    int d = l ? memcmp(k.ptr, s, l) : 0;
    return d < 0 || (d == 0 && k.len < n);
}

static void store_call(struct tkv_rpc_call *call, struct tkv_slice msg, bool scan)
{
    int store = (int)(uintptr_t)tkv_rpc_call_method_data(call); /* 0 or 1 */
    struct tkv_arena *a = tkv_rpc_call_arena(call);
    F.store_calls[store]++;
    kvrpcpb_Context ctx;
    struct tkv_slice key;
    if (scan) {
        kvrpcpb_RawScanRequest q;
        tkv_pb_decode(kvrpcpb_RawScanRequest_fields, &q, msg.ptr, msg.len, a);
        ctx = q.context;
        key = q.start_key;
    } else {
        kvrpcpb_RawGetRequest q;
        tkv_pb_decode(kvrpcpb_RawGetRequest_fields, &q, msg.ptr, msg.len, a);
        ctx = q.context;
        key = q.key;
    }
    errorpb_Error e = {0};
    switch (F.sc) {
    case SC_NOT_LEADER:
        if (store == 0) { /* store 1: not the leader; names peer 12 on store 2 */
            e.has_not_leader = true;
            e.not_leader = (errorpb_NotLeader){.region_id = 1, .has_leader = true,
                                               .leader = peers_wide[1]};
            store_region_error(call, &e, scan);
            return;
        }
        break;
    case SC_EPOCH:
        if (ctx.region_epoch.version == 1) { /* the region split: [, m) and [m, ) */
            static metapb_Peer left_peer = {.id = 12, .store_id = 2};
            static metapb_Peer right_peer = {.id = 22, .store_id = 2};
            metapb_Region *regs = tkv_arena_calloc(a, 2, sizeof *regs);
            regs[0] = (metapb_Region){.id = 1, .end_key = TKV_SLICE_STR("m"),
                                      .has_region_epoch = true,
                                      .region_epoch = {.conf_ver = 1, .version = 2},
                                      .peers = {.items = &left_peer, .n = 1}};
            regs[1] = (metapb_Region){.id = 2, .start_key = TKV_SLICE_STR("m"),
                                      .has_region_epoch = true,
                                      .region_epoch = {.conf_ver = 1, .version = 2},
                                      .peers = {.items = &right_peer, .n = 1}};
            e.has_epoch_not_match = true;
            e.epoch_not_match.current_regions.items = regs;
            e.epoch_not_match.current_regions.n = 2;
            store_region_error(call, &e, scan);
            return;
        }
        break;
    case SC_DEADLINE:
        e.has_stale_command = true;
        store_region_error(call, &e, scan);
        return;
    default:
        break;
    }
    if (scan) {
        /* Region 1 holds a, b; region 2 holds m, x (each answers its own). */
        static const char *left[] = {"a", "b"}, *right[] = {"m", "x"};
        const char **keys = ctx.region_id == 2 ? right : left;
        kvrpcpb_RawScanResponse r = {0};
        for (int i = 0; i < 2; i++) {
            kvrpcpb_KvPair *p = TKV_PB_PUSH(a, &r.kvs);
            p->key = tkv_pb_str(keys[i]);
            p->value = tkv_pb_str("v");
        }
        reply(call, kvrpcpb_RawScanResponse_fields, &r);
        return;
    }
    kvrpcpb_RawGetResponse r = {0};
    if (F.sc == SC_EPOCH)
        r.value = ctx.region_id == 2 && !key_lt(key, "m") ? tkv_pb_str("right")
                  : ctx.region_id == 1 && key_lt(key, "m") ? tkv_pb_str("left")
                                                            : tkv_pb_str("WRONG-REGION");
    else
        r.value = tkv_pb_printf(a, "from-store-%d", store + 1);
    reply(call, kvrpcpb_RawGetResponse_fields, &r);
}

static void store_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    store_call(call, msg, false);
}

static void store_scan(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    store_call(call, msg, true);
}

/* ---- the client side of each scenario ---- */

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
    F.elapsed_ms = mono_ms() - F.t0;
    tinykv_get_stats(F.kv, &F.stats);
    F.done = true;
    /* Never close the handle from inside one of its callbacks. */
    tkv_reactor_defer(tkv_reactor_self(), close_and_stop, NULL);
}

static void on_scan(void *user, int rv, const struct tinykv_kv *kvs, size_t n)
{
    (void)user;
    for (size_t i = 0; i < n; i++) {
        strncat(F.scan_keys, (const char *)kvs[i].key.ptr, kvs[i].key.len);
        strcat(F.scan_keys, ",");
    }
    F.scan_n = n;
    finish(rv);
}

static void on_get(void *user, int rv, struct tkv_slice v)
{
    (void)user;
    snprintf(F.value, sizeof F.value, "%.*s", (int)v.len, (const char *)v.ptr);
    if (rv == 0 && F.sc == SC_EPOCH) {
        /* Then a scan from the start: must cross into region 2. */
        int r2 = tinykv_raw_scan(F.kv, NULL, TKV_SLICE("", 0), 10, on_scan, NULL);
        if (r2)
            finish(r2);
        return;
    }
    finish(rv);
}

static void noop_done(void *user, int rv)
{
    (void)user;
    (void)rv;
}

static void on_begin(void *user, int rv, struct tinykv_txn *txn)
{
    int i = (int)(intptr_t)user;
    if (rv == 0) {
        F.ts[i] = tinykv_txn_start_ts(txn);
        cr_assert_eq(tinykv_txn_rollback(txn, noop_done, NULL), 0);
    }
    if (rv)
        F.rv = rv;
    if (++F.ts_got == 5)
        finish(F.rv);
}

static void kick(void *arg)
{
    (void)arg;
    F.t0 = mono_ms();
    int rv = 0;
    if (F.sc == SC_TSO) {
        for (int i = 0; i < 5 && !rv; i++)
            rv = tinykv_txn_begin(F.kv, on_begin, (void *)(intptr_t)i);
    } else {
        rv = tinykv_raw_get(F.kv, NULL, TKV_SLICE_STR("x"), on_get, NULL);
    }
    if (rv)
        finish(rv);
}

static const struct tkv_rpc_method sched_methods[] = {
    {.path = "/schedulerpb.Scheduler/GetMembers", .kind = TKV_RPC_UNARY, .on_message = sched_members},
    {.path = "/schedulerpb.Scheduler/GetRegion", .kind = TKV_RPC_UNARY, .on_message = sched_get_region},
    {.path = "/schedulerpb.Scheduler/GetStore", .kind = TKV_RPC_UNARY, .on_message = sched_get_store},
    {.path = "/schedulerpb.Scheduler/Tso", .kind = TKV_RPC_BIDI, .on_message = sched_tso,
     .on_half_close = sched_tso_half_close},
};

static int h_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    int rv = tkv_rpc_server_new(NULL, sched_methods, TKV_ARRAY_LEN(sched_methods), &F.sched_srv);
    if (rv == 0)
        rv = tkv_rpc_server_listen(F.sched_srv, r, "127.0.0.1", 0, &F.sched_port);
    for (int s = 0; s < 2 && rv == 0; s++) {
        struct tkv_rpc_method m[] = {
            {.path = "/tinykvpb.TinyKv/RawGet", .kind = TKV_RPC_UNARY, .on_message = store_get,
             .data = (void *)(uintptr_t)s},
            {.path = "/tinykvpb.TinyKv/RawScan", .kind = TKV_RPC_UNARY, .on_message = store_scan,
             .data = (void *)(uintptr_t)s},
        };
        rv = tkv_rpc_server_new(NULL, m, 2, &F.store_srv[s]);
        if (rv == 0)
            rv = tkv_rpc_server_listen(F.store_srv[s], r, "127.0.0.1", 0, &F.store_port[s]);
    }
    if (rv)
        return rv;
    char pd[64];
    snprintf(pd, sizeof pd, "http://127.0.0.1:%u", F.sched_port);
    struct tinykv_config cfg = {.pd_addrs = pd,
                                .op_timeout_ms = F.sc == SC_DEADLINE ? 300 : 5000,
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
    tkv_rpc_server_free(F.sched_srv);
    for (int s = 0; s < 2; s++)
        tkv_rpc_server_free(F.store_srv[s]);
}

static void run_scenario(enum scenario sc)
{
    memset(&F, 0, sizeof F);
    F.sc = sc;
    tso_logical = 0;
    struct tkv_reactor_config rc = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&rc, h_init, h_fini, NULL, &g);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable (%d)", rv);
    cr_assert_eq(rv, 0, "group start: %s", tkv_strerror(rv));
    rv = tkv_reactor_group_wait(g);
    cr_assert_eq(rv, 0, "group: %s", tkv_strerror(rv));
    cr_assert(F.done, "the scenario never finished");
}

Test(client_fake, not_leader_hint_is_followed)
{
    run_scenario(SC_NOT_LEADER);
    cr_assert_eq(F.rv, 0, "get failed: %s", tinykv_strerror(F.rv));
    cr_assert_str_eq(F.value, "from-store-2", "the value must come from the hinted leader");
    cr_assert_eq(F.stats.not_leader, 1);
    cr_assert_eq(F.stats.not_leader_hinted, 1, "the hint must be used, not a scheduler reload");
    cr_assert_eq(F.store_calls[0], 1);
    cr_assert_eq(F.store_calls[1], 1);
    cr_assert_eq(F.get_region_calls, 1, "one GetRegion: the hint replaced the second lookup");
    cr_assert_eq(F.stats.backoffs, 0, "a hinted retry goes at once");
}

Test(client_fake, epoch_not_match_regions_replace_the_cache_and_scan_crosses_regions)
{
    run_scenario(SC_EPOCH);
    cr_assert_eq(F.rv, 0, "failed: %s", tinykv_strerror(F.rv));
    cr_assert_str_eq(F.value, "right", "key x must be read from region 2 after the split");
    cr_assert_eq(F.stats.epoch_not_match, 1);
    cr_assert_eq(F.get_region_calls, 1, "EpochNotMatch's current regions fill the cache");
    cr_assert_str_eq(F.scan_keys, "a,b,m,x,", "the scan must continue in region 2");
    cr_assert_eq(F.scan_n, 4);
}

Test(client_fake, deadline_bounds_the_retries)
{
    run_scenario(SC_DEADLINE);
    cr_assert_eq(F.rv, TKV_ETIMEDOUT, "want ETIMEDOUT, got %s", tinykv_strerror(F.rv));
    cr_assert(F.elapsed_ms >= 100 && F.elapsed_ms <= 1500,
              "a 300 ms deadline ended after %llu ms", (unsigned long long)F.elapsed_ms);
    cr_assert(F.stats.rpcs >= 4, "backoff retries expected, got %llu RPCs",
              (unsigned long long)F.stats.rpcs);
    cr_assert(F.stats.rpcs < 200, "backoff must slow the retries: %llu RPCs in 300 ms",
              (unsigned long long)F.stats.rpcs);
    cr_assert_eq(F.stats.backoffs + 1, F.stats.rpcs);
}

Test(client_fake, tso_requests_of_a_turn_are_batched)
{
    run_scenario(SC_TSO);
    cr_assert_eq(F.rv, 0, "begin failed: %s", tinykv_strerror(F.rv));
    cr_assert_eq(F.tso_requests, 1, "five begins in one turn: one TsoRequest, got %d",
                 F.tso_requests);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(F.ts[i], (1000ull << 18) + 1 + (uint64_t)i, "ts %d = %llu", i,
                     (unsigned long long)F.ts[i]);
    cr_assert_eq(F.members_calls, 1);
}
