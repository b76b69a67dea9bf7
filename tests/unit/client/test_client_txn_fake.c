/* libtinykv transactions against a scripted fake: one fake scheduler (two
 * regions split at the encoded key of "m", Tso) and one fake store that
 * records every Kv* request it gets. Shows the 2PC order (primary prewritten
 * alone first, secondaries grouped by region, primary committed before any
 * secondary), lock resolution on a read (CheckTxnStatus on the primary,
 * ResolveLock with the primary's commit version, read again), waiting out a
 * live lock, and a write conflict that rolls every key back and surfaces as
 * TINYKV_ECONFLICT. Skipped when io_uring is unavailable. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kvrpcpb.pb.h"
#include "schedulerpb.pb.h"
#include "tinykv/client.h"
#include "tkv/arena.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

enum scenario { SC_COMMIT, SC_READ_COMMITTED_LOCK, SC_READ_LIVE_LOCK, SC_CONFLICT };

#define MAX_LOG 64

static struct {
    enum scenario sc;
    struct tkv_rpc_server *sched_srv, *store_srv;
    uint16_t sched_port, store_port;
    struct tinykv *kv;
    struct tinykv_txn *txn;
    int64_t tso_logical;
    /* what the store saw, in order: "prewrite:r1:a,b" etc. */
    char log[MAX_LOG][96];
    int n_log;
    int check_calls, get_calls;
    uint64_t resolve_commit_version;
    uint64_t commit_ts_seen;
    int rv;
    char value[64];
    struct tinykv_stats stats;
    bool done;
} F;

static void note_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_log(const char *fmt, ...)
{
    if (F.n_log == MAX_LOG)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(F.log[F.n_log++], sizeof F.log[0], fmt, ap);
    va_end(ap);
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

/* The split point: EncodeBytes("m"). */
static uint8_t split_enc[9];

static metapb_Peer peer1 = {.id = 11, .store_id = 1}, peer2 = {.id = 21, .store_id = 1};

/* ---- scheduler ---- */

static void sched_members(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    struct tkv_arena *a = tkv_rpc_call_arena(call);
    schedulerpb_GetMembersResponse r = {.has_header = true, .has_leader = true};
    struct tkv_slice *url = TKV_PB_PUSH(a, &r.leader.client_urls);
    *url = tkv_pb_printf(a, "127.0.0.1:%u", F.sched_port);
    reply(call, schedulerpb_GetMembersResponse_fields, &r);
}

static void sched_get_region(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    schedulerpb_GetRegionRequest q;
    tkv_pb_decode(schedulerpb_GetRegionRequest_fields, &q, msg.ptr, msg.len,
                  tkv_rpc_call_arena(call));
    size_t l = q.region_key.len < 9 ? q.region_key.len : 9;
    int d = l ? memcmp(q.region_key.ptr, split_enc, l) : 0;
    bool left = d < 0 || (d == 0 && q.region_key.len < 9);
    schedulerpb_GetRegionResponse r = {.has_header = true, .has_region = true, .has_leader = true};
    r.region = (metapb_Region){.id = left ? 1 : 2,
                               .start_key = left ? TKV_SLICE("", 0) : TKV_SLICE(split_enc, 9),
                               .end_key = left ? TKV_SLICE(split_enc, 9) : TKV_SLICE("", 0),
                               .has_region_epoch = true,
                               .region_epoch = {.conf_ver = 1, .version = 1},
                               .peers = {.items = left ? &peer1 : &peer2, .n = 1}};
    r.leader = left ? peer1 : peer2;
    reply(call, schedulerpb_GetRegionResponse_fields, &r);
}

static void sched_get_store(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    schedulerpb_GetStoreResponse r = {
        .has_header = true,
        .has_store = true,
        .store = {.id = 1,
                  .address = tkv_pb_printf(tkv_rpc_call_arena(call), "127.0.0.1:%u",
                                           F.store_port)}};
    reply(call, schedulerpb_GetStoreResponse_fields, &r);
}

static void sched_tso(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    schedulerpb_TsoRequest q;
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    tkv_pb_decode(schedulerpb_TsoRequest_fields, &q, msg.ptr, msg.len, &a);
    tkv_arena_close(&a);
    F.tso_logical += q.count;
    schedulerpb_TsoResponse r = {.has_header = true, .count = q.count, .has_timestamp = true,
                                 .timestamp = {.physical = 5000, .logical = F.tso_logical}};
    uint8_t buf[64];
    size_t n;
    tkv_pb_encode(schedulerpb_TsoResponse_fields, &r, buf, sizeof buf, &n);
    tkv_rpc_call_send(call, buf, n);
}

static void sched_tso_half_close(struct tkv_rpc_call *call)
{
    tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

/* ---- store ---- */

static void keys_text(char *out, size_t cap, const struct tkv_slice *keys, size_t n)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%.*s", i ? "," : "", (int)keys[i].len,
                 (const char *)keys[i].ptr);
    }
}

static void kv_prewrite(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct tkv_arena *a = tkv_rpc_call_arena(call);
    kvrpcpb_PrewriteRequest q;
    tkv_pb_decode(kvrpcpb_PrewriteRequest_fields, &q, msg.ptr, msg.len, a);
    struct tkv_slice keys[16] = {0};
    size_t n = q.mutations.n < 16 ? q.mutations.n : 16;
    for (size_t i = 0; i < n; i++)
        keys[i] = q.mutations.items[i].key;
    char text[64];
    keys_text(text, sizeof text, keys, n);
    note_log("prewrite:r%llu:%s:primary=%.*s", (unsigned long long)q.context.region_id, text,
         (int)q.primary_lock.len, (const char *)q.primary_lock.ptr);
    kvrpcpb_PrewriteResponse r = {0};
    if (F.sc == SC_CONFLICT && n && q.mutations.items[0].key.len == 1 &&
        q.mutations.items[0].key.ptr[0] == 'n') {
        kvrpcpb_KeyError *e = TKV_PB_PUSH(a, &r.errors);
        e->has_conflict = true;
        e->conflict = (kvrpcpb_WriteConflict){.start_ts = q.start_version, .conflict_ts = 1,
                                              .key = q.mutations.items[0].key};
    }
    reply(call, kvrpcpb_PrewriteResponse_fields, &r);
}

static void kv_commit(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_CommitRequest q;
    tkv_pb_decode(kvrpcpb_CommitRequest_fields, &q, msg.ptr, msg.len, tkv_rpc_call_arena(call));
    char text[64];
    keys_text(text, sizeof text, q.keys.items, q.keys.n);
    note_log("commit:r%llu:%s", (unsigned long long)q.context.region_id, text);
    F.commit_ts_seen = q.commit_version;
    kvrpcpb_CommitResponse r = {0};
    reply(call, kvrpcpb_CommitResponse_fields, &r);
}

static void kv_rollback(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_BatchRollbackRequest q;
    tkv_pb_decode(kvrpcpb_BatchRollbackRequest_fields, &q, msg.ptr, msg.len,
                  tkv_rpc_call_arena(call));
    char text[64];
    keys_text(text, sizeof text, q.keys.items, q.keys.n);
    note_log("rollback:r%llu:%s", (unsigned long long)q.context.region_id, text);
    kvrpcpb_BatchRollbackResponse r = {0};
    reply(call, kvrpcpb_BatchRollbackResponse_fields, &r);
}

static bool lock_resolved;

static void kv_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_GetRequest q;
    tkv_pb_decode(kvrpcpb_GetRequest_fields, &q, msg.ptr, msg.len, tkv_rpc_call_arena(call));
    F.get_calls++;
    note_log("get:r%llu:%.*s", (unsigned long long)q.context.region_id, (int)q.key.len,
         (const char *)q.key.ptr);
    kvrpcpb_GetResponse r = {0};
    if (!lock_resolved) {
        r.has_error = true;
        r.error.has_locked = true;
        r.error.locked = (kvrpcpb_LockInfo){.primary_lock = TKV_SLICE_STR("a"),
                                            .lock_version = 77, .key = q.key, .lock_ttl = 100};
    } else {
        r.value = tkv_pb_str("committed-value");
    }
    reply(call, kvrpcpb_GetResponse_fields, &r);
}

static void kv_check(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_CheckTxnStatusRequest q;
    tkv_pb_decode(kvrpcpb_CheckTxnStatusRequest_fields, &q, msg.ptr, msg.len,
                  tkv_rpc_call_arena(call));
    F.check_calls++;
    note_log("check:r%llu:%.*s:%llu", (unsigned long long)q.context.region_id,
         (int)q.primary_key.len, (const char *)q.primary_key.ptr,
         (unsigned long long)q.lock_ts);
    kvrpcpb_CheckTxnStatusResponse r = {0};
    if (F.sc == SC_READ_COMMITTED_LOCK)
        r.commit_version = 99;
    else if (F.check_calls == 1)
        r.lock_ttl = 100; /* alive the first time */
    else
        r.action = kvrpcpb_Action_TTLExpireRollback;
    if (q.current_ts <= q.lock_ts)
        r.lock_ttl = 1; /* a client must ask with a fresh timestamp */
    reply(call, kvrpcpb_CheckTxnStatusResponse_fields, &r);
}

static void kv_resolve(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    kvrpcpb_ResolveLockRequest q;
    tkv_pb_decode(kvrpcpb_ResolveLockRequest_fields, &q, msg.ptr, msg.len,
                  tkv_rpc_call_arena(call));
    note_log("resolve:r%llu:%llu:%llu", (unsigned long long)q.context.region_id,
         (unsigned long long)q.start_version, (unsigned long long)q.commit_version);
    F.resolve_commit_version = q.commit_version;
    lock_resolved = true;
    kvrpcpb_ResolveLockResponse r = {0};
    reply(call, kvrpcpb_ResolveLockResponse_fields, &r);
}

/* ---- client side ---- */

static void close_and_stop(void *arg)
{
    (void)arg;
    tinykv_get_stats(F.kv, &F.stats);
    tinykv_close(F.kv);
    F.kv = NULL;
    tkv_reactor_group_stop(tkv_reactor_group_of(tkv_reactor_self()));
}

static void finish(int rv)
{
    F.rv = rv;
    F.done = true;
    tkv_reactor_defer(tkv_reactor_self(), close_and_stop, NULL);
}

static void on_begin(void *user, int rv, struct tinykv_txn *txn);

static int commits;

static void on_commit(void *user, int rv)
{
    (void)user;
    /* SC_COMMIT: a second transaction on the same handle, with the regions
     * now cached: the primary's region batch goes first, whole. */
    if (rv == 0 && F.sc == SC_COMMIT && ++commits == 1) {
        rv = tinykv_txn_begin(F.kv, on_begin, NULL);
        if (rv == 0)
            return;
    }
    finish(rv);
}

static void on_rollback(void *user, int rv)
{
    (void)user;
    (void)rv;
    finish(F.rv);
}

static void on_get(void *user, int rv, struct tkv_slice v)
{
    (void)user;
    snprintf(F.value, sizeof F.value, "%.*s", (int)v.len, (const char *)v.ptr);
    F.rv = rv;
    if (tinykv_txn_rollback(F.txn, on_rollback, NULL) != 0)
        finish(-1);
}

static void on_begin(void *user, int rv, struct tinykv_txn *txn)
{
    (void)user;
    if (rv) {
        finish(rv);
        return;
    }
    F.txn = txn;
    if (F.sc == SC_COMMIT || F.sc == SC_CONFLICT) {
        /* "b" (primary, smallest), "c" in region 1; "n", "z" in region 2. */
        const char *keys[] = {"z", "c", "n", "b"};
        for (int i = 0; i < 4; i++)
            tinykv_txn_set(txn, TKV_SLICE(keys[i], 1), TKV_SLICE_STR("v"));
        rv = tinykv_txn_commit(txn, on_commit, NULL);
    } else {
        rv = tinykv_txn_get(txn, TKV_SLICE_STR("x"), on_get, NULL);
    }
    if (rv)
        finish(rv);
}

static void kick(void *arg)
{
    (void)arg;
    int rv = tinykv_txn_begin(F.kv, on_begin, NULL);
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

static const struct tkv_rpc_method store_methods[] = {
    {.path = "/tinykvpb.TinyKv/KvPrewrite", .kind = TKV_RPC_UNARY, .on_message = kv_prewrite},
    {.path = "/tinykvpb.TinyKv/KvCommit", .kind = TKV_RPC_UNARY, .on_message = kv_commit},
    {.path = "/tinykvpb.TinyKv/KvBatchRollback", .kind = TKV_RPC_UNARY, .on_message = kv_rollback},
    {.path = "/tinykvpb.TinyKv/KvGet", .kind = TKV_RPC_UNARY, .on_message = kv_get},
    {.path = "/tinykvpb.TinyKv/KvCheckTxnStatus", .kind = TKV_RPC_UNARY, .on_message = kv_check},
    {.path = "/tinykvpb.TinyKv/KvResolveLock", .kind = TKV_RPC_UNARY, .on_message = kv_resolve},
};

static int h_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    int rv = tkv_rpc_server_new(NULL, sched_methods, TKV_ARRAY_LEN(sched_methods), &F.sched_srv);
    if (rv == 0)
        rv = tkv_rpc_server_listen(F.sched_srv, r, "127.0.0.1", 0, &F.sched_port);
    if (rv == 0)
        rv = tkv_rpc_server_new(NULL, store_methods, TKV_ARRAY_LEN(store_methods), &F.store_srv);
    if (rv == 0)
        rv = tkv_rpc_server_listen(F.store_srv, r, "127.0.0.1", 0, &F.store_port);
    if (rv)
        return rv;
    char pd[64];
    snprintf(pd, sizeof pd, "127.0.0.1:%u", F.sched_port);
    struct tinykv_config cfg = {.pd_addrs = pd, .op_timeout_ms = 5000};
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
    tkv_rpc_server_free(F.store_srv);
}

static void run_scenario(enum scenario sc)
{
    memset(&F, 0, sizeof F);
    lock_resolved = false;
    commits = 0;
    F.sc = sc;
    tkv_codec_encode_bytes(split_enc, (const uint8_t *)"m", 1);
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

static int find_log(const char *entry)
{
    for (int i = 0; i < F.n_log; i++)
        if (strcmp(F.log[i], entry) == 0)
            return i;
    return -1;
}

static void dump_log(char *out, size_t cap)
{
    out[0] = '\0';
    for (int i = 0; i < F.n_log; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s | ", F.log[i]);
    }
}

Test(client_txn_fake, two_phase_commit_order)
{
    run_scenario(SC_COMMIT);
    char log[2048];
    dump_log(log, sizeof log);
    cr_assert_eq(F.rv, 0, "commit failed: %s (%s)", tinykv_strerror(F.rv), log);
    cr_assert_eq(F.n_log, 11, "want 3 + 2 prewrites and 3 + 3 commits: %s", log);
    cr_assert_str_eq(F.log[0], "prewrite:r1:b:primary=b", "the primary goes first, alone: %s", log);
    int p1 = find_log("prewrite:r1:c:primary=b"), p2 = find_log("prewrite:r2:n,z:primary=b");
    int c0 = find_log("commit:r1:b"), c1 = find_log("commit:r1:c"), c2 = find_log("commit:r2:n,z");
    cr_assert(p1 > 0 && p2 > 0, "secondaries grouped by region: %s", log);
    cr_assert(c0 > p1 && c0 > p2, "primary commit only after every prewrite: %s", log);
    cr_assert(c1 > c0 && c2 > c0, "secondaries commit after the primary: %s", log);
    cr_assert(F.commit_ts_seen > (5000ull << 18), "commit_ts from the TSO");
    /* Second transaction, regions cached: primary's region batch first. */
    cr_assert_str_eq(F.log[6], "prewrite:r1:b,c:primary=b", "%s", log);
    cr_assert_str_eq(F.log[7], "prewrite:r2:n,z:primary=b", "%s", log);
    cr_assert_str_eq(F.log[8], "commit:r1:b", "%s", log);
}

Test(client_txn_fake, read_resolves_a_committed_lock)
{
    run_scenario(SC_READ_COMMITTED_LOCK);
    char log[2048];
    dump_log(log, sizeof log);
    cr_assert_eq(F.rv, 0, "get failed: %s (%s)", tinykv_strerror(F.rv), log);
    cr_assert_str_eq(F.value, "committed-value");
    cr_assert_str_eq(F.log[0], "get:r2:x", "%s", log);
    cr_assert_str_eq(F.log[1], "check:r1:a:77", "CheckTxnStatus on the primary's region: %s", log);
    cr_assert_str_eq(F.log[2], "resolve:r2:77:99", "resolve with the commit version: %s", log);
    cr_assert_str_eq(F.log[3], "get:r2:x", "read again: %s", log);
    cr_assert_eq(F.stats.locks_resolved, 1);
}

Test(client_txn_fake, read_waits_out_a_live_lock_then_rolls_it_back)
{
    run_scenario(SC_READ_LIVE_LOCK);
    char log[2048];
    dump_log(log, sizeof log);
    cr_assert_eq(F.rv, 0, "get failed: %s (%s)", tinykv_strerror(F.rv), log);
    cr_assert_eq(F.check_calls, 2, "checked twice (alive, then expired): %s", log);
    cr_assert_eq(F.stats.lock_waits, 1);
    cr_assert_eq(F.resolve_commit_version, 0, "an expired lock is rolled back");
    cr_assert_str_eq(F.value, "committed-value");
}

Test(client_txn_fake, write_conflict_rolls_back_and_is_retryable)
{
    run_scenario(SC_CONFLICT);
    char log[2048];
    dump_log(log, sizeof log);
    cr_assert_eq(F.rv, TINYKV_ECONFLICT, "want ECONFLICT, got %s (%s)", tinykv_strerror(F.rv), log);
    cr_assert(tinykv_retryable(F.rv));
    cr_assert_eq(find_log("commit:r1:b"), -1, "nothing may commit after a conflict: %s", log);
    cr_assert(find_log("rollback:r1:b,c") >= 0 && find_log("rollback:r2:n,z") >= 0,
              "every key rolled back, per region: %s", log);
}
