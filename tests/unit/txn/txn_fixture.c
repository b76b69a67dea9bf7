/* Test builder for the txn commands (see txn_fixture.h). */
#include <stdio.h>
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "txn_fixture.h"

const char *tb_why;

void assert_bytes(struct tkv_slice got, struct tkv_slice want, const char *what)
{
    char g[256] = "", w[256] = "";
    for (size_t i = 0; i < got.len && i < 60; i++)
        snprintf(g + strlen(g), sizeof(g) - strlen(g), "%02x ", got.ptr[i]);
    for (size_t i = 0; i < want.len && i < 60; i++)
        snprintf(w + strlen(w), sizeof(w) - strlen(w), "%02x ", want.ptr[i]);
    cr_assert(got.len == want.len && (want.len == 0 || memcmp(got.ptr, want.ptr, want.len) == 0),
              "%s: got [%s] want [%s]", what, g, w);
}

void tb_open(struct tb *b)
{
    memset(b, 0, sizeof(*b));
    struct tkv_engine_opts o = {.kind = TKV_ENGINE_MEM, .sync = true};
    cr_assert_eq(tkv_engine_open(&o, &b->e), 0);
    cr_assert_eq(tkv_engine_session_open(b->e, &b->s), 0);
    tkv_arena_init(&b->arena, 0);
    b->prev_ts = 99;
}

void tb_close(struct tb *b)
{
    tkv_arena_close(&b->arena);
    tkv_engine_session_close(b->s);
    tkv_engine_close(b->e);
}

uint64_t tb_next_ts(struct tb *b)
{
    return ++b->prev_ts;
}

uint8_t tb_ts(const struct tb *b)
{
    return (uint8_t)b->prev_ts;
}

static struct tkv_slice storage_key(struct tb *b, const struct kv *kv)
{
    if (kv->cf == TKV_CF_LOCK)
        return kv->key;
    return tkv_txn_encode_key(&b->arena, kv->key, kv->ts ? kv->ts : b->prev_ts);
}

void tb_init(struct tb *b, const struct kv *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct kv k = kvs[i];
        if (k.ts == 0)
            k.ts = b->prev_ts;
        cr_assert_eq(tkv_engine_put(b->s, k.cf, storage_key(b, &k), k.value), 0);
        cr_assert(b->n_inits < TKV_ARRAY_LEN(b->inits));
        /* the caller's literals may die before the asserts: keep copies */
        k.key = TKV_SLICE(tkv_arena_memdup(&b->arena, k.key.ptr, k.key.len), k.key.len);
        k.value = TKV_SLICE(tkv_arena_memdup(&b->arena, k.value.ptr, k.value.len), k.value.len);
        b->inits[b->n_inits++] = k;
    }
}

static bool same_record(struct tb *b, const struct kv *x, uint64_t ts, const struct kv *y)
{
    (void)b;
    return x->cf == y->cf && x->key.len == y->key.len &&
           memcmp(x->key.ptr, y->key.ptr, x->key.len) == 0 && (x->cf == TKV_CF_LOCK || ts == x->ts);
}

void tb_assert(struct tb *b, const struct kv *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct kv k = kvs[i];
        uint64_t ts = k.ts ? k.ts : b->prev_ts;
        k.ts = ts;
        struct tkv_slice got;
        int rv = tkv_engine_get(b->s, k.cf, storage_key(b, &k), &got);
        char what[96];
        snprintf(what, sizeof(what), "record %zu (%s cf, ts %llu)", i, tkv_engine_cf_name(k.cf),
                 (unsigned long long)ts);
        if (k.has_value) {
            cr_assert_eq(rv, 0, "%s: missing", what);
            assert_bytes(got, k.value, what);
            continue;
        }
        /* "unchanged": equal to what init stored there, or still absent */
        const struct kv *init = NULL;
        for (size_t j = 0; j < b->n_inits; j++)
            if (same_record(b, &b->inits[j], ts, &k))
                init = &b->inits[j];
        if (!init) {
            cr_assert_eq(rv, TKV_ENOTFOUND, "%s: should not exist", what);
        } else {
            cr_assert_eq(rv, 0, "%s: was deleted", what);
            assert_bytes(got, init->value, what);
        }
    }
}

static size_t cf_len(struct tb *b, enum tkv_cf cf)
{
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    size_t n = 0;
    cr_assert_eq(tkv_engine_snap_open(b->s, &snap), 0);
    cr_assert_eq(tkv_engine_iter_open(snap, cf, NIL, NIL, &it), 0);
    cr_assert_eq(tkv_engine_iter_seek_first(it), 0);
    while (tkv_engine_iter_valid(it)) {
        n++;
        cr_assert_eq(tkv_engine_iter_next(it), 0);
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    return n;
}

void tb_assert_lens(struct tb *b, size_t def, size_t lock, size_t write)
{
    size_t d = cf_len(b, TKV_CF_DEFAULT), l = cf_len(b, TKV_CF_LOCK), w = cf_len(b, TKV_CF_WRITE);
    cr_assert(d == def && l == lock && w == write,
              "CF sizes default/lock/write: got %zu/%zu/%zu want %zu/%zu/%zu", d, l, w, def, lock,
              write);
}

kvrpcpb_PrewriteRequest tb_prewrite_req(struct tb *b, const kvrpcpb_Mutation *muts, size_t n)
{
    static const uint8_t primary[] = {1};
    kvrpcpb_PrewriteRequest r = {0};
    r.primary_lock = TKV_SLICE(primary, 1);
    r.start_version = tb_next_ts(b);
    r.mutations.items =
        n ? (kvrpcpb_Mutation *)tkv_arena_memdup(&b->arena, muts, n * sizeof(*muts)) : NULL;
    r.mutations.n = n;
    return r;
}

kvrpcpb_Mutation mutation(uint8_t key, struct tkv_slice value, kvrpcpb_Op op)
{
    static uint8_t keys[256];
    keys[key] = key;
    return (kvrpcpb_Mutation){.op = op, .key = TKV_SLICE(&keys[key], 1), .value = value};
}

static void set_keys(struct tb *b, struct tkv_slice **items, size_t *n_out,
                     const struct tkv_slice *keys, size_t n)
{
    *items = n ? tkv_arena_memdup(&b->arena, keys, n * sizeof(*keys)) : NULL;
    *n_out = n;
}

kvrpcpb_CommitRequest tb_commit_req(struct tb *b, const struct tkv_slice *keys, size_t n)
{
    kvrpcpb_CommitRequest r = {0};
    r.start_version = tb_next_ts(b);
    r.commit_version = b->prev_ts + 10;
    set_keys(b, &r.keys.items, &r.keys.n, keys, n);
    return r;
}

kvrpcpb_BatchRollbackRequest tb_rollback_req(struct tb *b, const struct tkv_slice *keys, size_t n)
{
    kvrpcpb_BatchRollbackRequest r = {0};
    r.start_version = tb_next_ts(b);
    set_keys(b, &r.keys.items, &r.keys.n, keys, n);
    return r;
}

kvrpcpb_CheckTxnStatusRequest tb_check_req(struct tb *b, struct tkv_slice key)
{
    kvrpcpb_CheckTxnStatusRequest r = {0};
    tb_next_ts(b);
    r.lock_ts = tkv_codec_get_u64be((const uint8_t[]){0, 0, 5, 0, 0, 0, 0, tb_ts(b)});
    r.current_ts = tkv_codec_get_u64be((const uint8_t[]){0, 0, 6, 0, 0, 0, 0, tb_ts(b)});
    r.primary_key = key;
    return r;
}

kvrpcpb_ScanRequest tb_scan_req(struct tb *b, struct tkv_slice start, uint32_t limit)
{
    kvrpcpb_ScanRequest r = {0};
    r.start_key = start;
    r.limit = limit;
    r.version = tb_next_ts(b);
    return r;
}

/* ---- running commands ---- */

/* TinyKV's Latches.Validation: every key a command writes (user key of
 * default/write records, raw key of locks) must be in its latch set. */
static void validate_and_apply(struct tb *b, const struct tkv_slice *latch_keys, size_t n_latch,
                               const struct tkv_txn_writes *w)
{
    struct tkv_txn_latch_req req;
    tkv_txn_latch_req_init(&req, &b->arena, latch_keys, n_latch);
    for (size_t i = 0; i < w->n; i++) {
        struct tkv_slice key = w->items[i].key;
        if (w->items[i].cf != TKV_CF_LOCK) {
            tkv_ts ts;
            cr_assert_eq(tkv_txn_decode_key(&b->arena, w->items[i].key, &key, &ts), 0,
                         "write %zu: undecodable %s key", i, tkv_engine_cf_name(w->items[i].cf));
        }
        cr_assert(tkv_txn_latch_req_covers(&req, key),
                  "latch validation: write %zu (%s cf) touches a key that was not latched", i,
                  tkv_engine_cf_name(w->items[i].cf));
    }
    struct tkv_engine_batch batch;
    tkv_engine_batch_init(&batch);
    cr_assert_eq(tkv_txn_writes_to_batch(w, &batch), 0);
    cr_assert_eq(tkv_engine_write(b->s, &batch), 0);
    tkv_engine_batch_close(&batch);
}

#define RUN(b, call)                                                                               \
    do {                                                                                           \
        struct tkv_engine_snap *snap_;                                                             \
        cr_assert_eq(tkv_engine_snap_open((b)->s, &snap_), 0);                                     \
        struct tkv_txn_ctx c = {.snap = snap_, .arena = &(b)->arena};                              \
        rv = (call);                                                                               \
        tb_why = c.why;                                                                            \
        tkv_engine_snap_close(snap_);                                                              \
    } while (0)

int tb_get(struct tb *b, const kvrpcpb_GetRequest *req, kvrpcpb_GetResponse *resp)
{
    int rv;
    RUN(b, tkv_txn_kv_get(&c, req, resp));
    return rv;
}

int tb_scan(struct tb *b, const kvrpcpb_ScanRequest *req, kvrpcpb_ScanResponse *resp)
{
    int rv;
    RUN(b, tkv_txn_kv_scan(&c, req, 16u << 20, resp));
    return rv;
}

int tb_prewrite(struct tb *b, const kvrpcpb_PrewriteRequest *req, kvrpcpb_PrewriteResponse *resp)
{
    struct tkv_txn_writes w;
    int rv;
    RUN(b, tkv_txn_kv_prewrite(&c, req, resp, &w));
    if (rv == 0) {
        struct tkv_slice *keys = tkv_arena_alloc(&b->arena, (req->mutations.n + 1) * sizeof(*keys));
        for (size_t i = 0; i < req->mutations.n; i++)
            keys[i] = req->mutations.items[i].key;
        validate_and_apply(b, keys, req->mutations.n, &w);
    }
    return rv;
}

int tb_commit(struct tb *b, const kvrpcpb_CommitRequest *req, kvrpcpb_CommitResponse *resp)
{
    struct tkv_txn_writes w;
    int rv;
    RUN(b, tkv_txn_kv_commit(&c, req, resp, &w));
    if (rv == 0)
        validate_and_apply(b, req->keys.items, req->keys.n, &w);
    return rv;
}

int tb_rollback(struct tb *b, const kvrpcpb_BatchRollbackRequest *req,
                kvrpcpb_BatchRollbackResponse *resp)
{
    struct tkv_txn_writes w;
    int rv;
    RUN(b, tkv_txn_kv_batch_rollback(&c, req, resp, &w));
    if (rv == 0)
        validate_and_apply(b, req->keys.items, req->keys.n, &w);
    return rv;
}

int tb_check(struct tb *b, const kvrpcpb_CheckTxnStatusRequest *req,
             kvrpcpb_CheckTxnStatusResponse *resp)
{
    struct tkv_txn_writes w;
    int rv;
    RUN(b, tkv_txn_kv_check_txn_status(&c, req, resp, &w));
    if (rv == 0)
        validate_and_apply(b, &req->primary_key, 1, &w);
    return rv;
}

int tb_resolve(struct tb *b, const kvrpcpb_ResolveLockRequest *req,
               kvrpcpb_ResolveLockResponse *resp)
{
    struct tkv_txn_writes w;
    struct tkv_slice *keys = NULL;
    size_t n = 0;
    bool truncated;
    int rv;
    /* scan first, then latch, then run on a fresh snapshot (2.5) */
    RUN(b, tkv_txn_resolve_scan(c.snap, c.arena, req->start_version, NULL, &keys, &n, &truncated));
    cr_assert_eq(rv, 0);
    cr_assert(!truncated);
    RUN(b, tkv_txn_kv_resolve_lock(&c, req, keys, n, resp, &w));
    if (rv == 0)
        validate_and_apply(b, keys, n, &w);
    return rv;
}
