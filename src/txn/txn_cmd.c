/* The seven transactional commands (TINYKV-API.md 2.6) as pure functions:
 * decoded request + one snapshot -> response + write list. No command
 * writes; a command that answers a KeyError returns an empty write list
 * (all or nothing). */
#include <stdlib.h>
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/txn.h"
#include "txn_private.h"


/* ---- request checks (item 7: bad input is INVALID_ARGUMENT, nothing
 * written) ---- */

static int invalid(const char **why, const char *text)
{
    *why = text;
    return TKV_EINVAL;
}

static int check_key(struct tkv_slice key, const char **why, const char *empty_msg,
                     const char *long_msg)
{
    if (key.len == 0)
        return invalid(why, empty_msg);
    if (key.len > TKV_TXN_KEY_MAX)
        return invalid(why, long_msg);
    return 0;
}

static int check_keys(const struct tkv_slice *keys, size_t n, const char **why)
{
    if (n > TKV_TXN_KEYS_MAX)
        return invalid(why, "too many keys in one request (the limit is 65536)");
    for (size_t i = 0; i < n; i++)
        TKV_RET(
            check_key(keys[i], why, "keys must not be empty", "a key is longer than 32768 bytes"));
    return 0;
}

int tkv_txn_check_prewrite(const kvrpcpb_PrewriteRequest *req, const char **why)
{
    if (req->start_version == 0)
        return invalid(why, "KvPrewrite: start_version must be non-zero");
    if (req->lock_ttl > TKV_TXN_LOCK_TTL_MAX)
        return invalid(why, "KvPrewrite: lock_ttl is over 24 hours (it is in milliseconds)");
    if (req->mutations.n > TKV_TXN_KEYS_MAX)
        return invalid(why, "KvPrewrite: too many mutations in one request (the limit is 65536)");
    if (req->mutations.n > 0)
        TKV_RET(check_key(req->primary_lock, why, "KvPrewrite: primary_lock must not be empty",
                          "KvPrewrite: primary_lock is longer than 32768 bytes"));
    for (size_t i = 0; i < req->mutations.n; i++) {
        const kvrpcpb_Mutation *m = &req->mutations.items[i];
        TKV_RET(check_key(m->key, why, "KvPrewrite: a mutation has an empty key",
                          "KvPrewrite: a mutation key is longer than 32768 bytes"));
        if (m->op != kvrpcpb_Op_Put && m->op != kvrpcpb_Op_Del && m->op != kvrpcpb_Op_Lock)
            return invalid(why, "KvPrewrite: mutation op must be Put, Del or Lock");
        if (m->op != kvrpcpb_Op_Put && m->value.len != 0)
            return invalid(why, "KvPrewrite: a Del or Lock mutation carries a value");
        if (m->value.len > TKV_ENGINE_VALUE_MAX)
            return invalid(why, "KvPrewrite: a value is too large");
    }
    return 0;
}

int tkv_txn_check_commit(const kvrpcpb_CommitRequest *req, const char **why)
{
    if (req->start_version == 0)
        return invalid(why, "KvCommit: start_version must be non-zero");
    if (req->commit_version <= req->start_version)
        return invalid(why, "KvCommit: commit_version must be greater than start_version");
    return check_keys(req->keys.items, req->keys.n, why);
}

int tkv_txn_check_rollback(const kvrpcpb_BatchRollbackRequest *req, const char **why)
{
    if (req->start_version == 0)
        return invalid(why, "KvBatchRollback: start_version must be non-zero");
    return check_keys(req->keys.items, req->keys.n, why);
}

int tkv_txn_check_check_txn_status(const kvrpcpb_CheckTxnStatusRequest *req, const char **why)
{
    if (req->lock_ts == 0)
        return invalid(why, "KvCheckTxnStatus: lock_ts must be non-zero");
    if (req->current_ts == 0)
        return invalid(why, "KvCheckTxnStatus: current_ts must be non-zero");
    return check_key(req->primary_key, why, "KvCheckTxnStatus: primary_key must not be empty",
                     "KvCheckTxnStatus: primary_key is longer than 32768 bytes");
}

/* start_version 0 is accepted and resolves nothing (no lock can carry ts 0:
 * prewrite refuses it); TinyKV's TestEmptyResolve4C sends exactly that. */
int tkv_txn_check_resolve_lock(const kvrpcpb_ResolveLockRequest *req, const char **why)
{
    if (req->commit_version != 0 && req->commit_version <= req->start_version)
        return invalid(why, "KvResolveLock: commit_version must be 0 (roll back) or greater than "
                            "start_version");
    return 0;
}

/* ---- region seam ---- */

bool tkv_txn_region_contains(const struct tkv_txn_region *region, struct tkv_slice key)
{
    if (!region || (region->start.len == 0 && region->end.len == 0))
        return true;
    /* Region bounds of transactional data are EncodeBytes(user key)
     * (TINYKV-API.md 2.4 key-space caveat): compare in that form. */
    uint8_t stackbuf[512];
    size_t n = tkv_codec_encoded_bytes_len(key.len);
    uint8_t *enc = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
    tkv_assert(enc);
    tkv_codec_encode_bytes(enc, key.ptr, key.len);
    bool in = true;
    if (region->start.len) {
        int c = memcmp(enc, region->start.ptr, TKV_MIN(n, region->start.len));
        in = c > 0 || (c == 0 && n >= region->start.len);
    }
    if (in && region->end.len) {
        int c = memcmp(enc, region->end.ptr, TKV_MIN(n, region->end.len));
        in = c < 0 || (c == 0 && n < region->end.len);
    }
    if (enc != stackbuf)
        free(enc);
    return in;
}

/* ---- KeyErrors ---- */

static void set_locked(kvrpcpb_KeyError *e, const struct tkv_txn_lock *lock, struct tkv_slice key)
{
    memset(e, 0, sizeof(*e));
    e->has_locked = true;
    e->locked.primary_lock = lock->primary;
    e->locked.lock_version = lock->ts;
    e->locked.key = key;
    e->locked.lock_ttl = lock->ttl;
}

static bool slice_eq(struct tkv_slice a, struct tkv_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* A read at ts must wait for (report) a lock with lock.ts <= ts, except the
 * TiKV "read latest" rule: a TsMax read of a secondary ignores the lock. */
static bool lock_blocks_read(const struct tkv_txn_lock *lock, struct tkv_slice key, tkv_ts ts)
{
    if (TXN_BUG("read_ignores_locks"))
        return false;
    if (lock->ts > ts)
        return false;
    if (ts == TKV_TXN_TS_MAX && !slice_eq(key, lock->primary))
        return false;
    return true;
}

/* ---- KvGet ---- */

int tkv_txn_kv_get(struct tkv_txn_ctx *c, const kvrpcpb_GetRequest *req, kvrpcpb_GetResponse *resp)
{
    struct tkv_txn_lock lock;
    bool found;

    memset(resp, 0, sizeof(*resp));
    if (req->version == 0)
        return invalid(&c->why, "KvGet: version must be non-zero");
    TKV_RET(check_key(req->key, &c->why, "KvGet: key must not be empty",
                      "KvGet: key is longer than 32768 bytes"));
    if (!tkv_txn_region_contains(c->region, req->key))
        return TKV_EKEYRANGE;
    TKV_RET(txn_read_lock(c->snap, c->arena, req->key, &lock, &found));
    if (found && lock_blocks_read(&lock, req->key, req->version)) {
        resp->has_error = true;
        set_locked(&resp->error, &lock, tkv_pb_dup(c->arena, req->key.ptr, req->key.len));
        return 0;
    }
    TKV_RET(txn_read_value(c->snap, c->arena, req->key, req->version, &resp->value, &found));
    resp->not_found = !found;
    return 0;
}

/* ---- KvScan ---- */

/* Bytes one KvPair adds to a ScanResponse, at most. */
static size_t pair_bound(size_t key_len, size_t value_len)
{
    return 6 + (6 + key_len) + (6 + value_len) + 64 /* a LockInfo's fixed part */;
}

/* The lock CF (raw keys) and the write CF (EncodeKey) are walked together,
 * in user-key order: the next user key is the smaller of the two cursors,
 * so a locked key without any committed version is still reported (the
 * reference missed those). */
int tkv_txn_kv_scan(struct tkv_txn_ctx *c, const kvrpcpb_ScanRequest *req, size_t max_bytes,
                    kvrpcpb_ScanResponse *resp)
{
    struct tkv_engine_iter *lock_it = NULL, *write_it = NULL;
    size_t bytes = 0;
    int rv;

    memset(resp, 0, sizeof(*resp));
    if (req->version == 0)
        return invalid(&c->why, "KvScan: version must be non-zero");
    if (req->start_key.len > TKV_TXN_KEY_MAX)
        return invalid(&c->why, "KvScan: start_key is longer than 32768 bytes");
    if (req->limit == 0)
        return 0;

    struct tkv_slice enc_start = TKV_SLICE(NULL, 0);
    if (req->start_key.len) {
        size_t n = tkv_codec_encoded_bytes_len(req->start_key.len);
        uint8_t *p = tkv_arena_alloc(c->arena, n);
        tkv_codec_encode_bytes(p, req->start_key.ptr, req->start_key.len);
        enc_start = TKV_SLICE(p, n);
    }
    TKV_ERR(
        tkv_engine_iter_open(c->snap, TKV_CF_LOCK, req->start_key, TKV_SLICE(NULL, 0), &lock_it));
    TKV_ERR(tkv_engine_iter_seek(lock_it, req->start_key));
    TKV_ERR(tkv_engine_iter_open(c->snap, TKV_CF_WRITE, enc_start, TKV_SLICE(NULL, 0), &write_it));
    TKV_ERR(tkv_engine_iter_seek(write_it, enc_start));

    while (resp->pairs.n < req->limit) {
        struct tkv_slice lock_key = {0}, write_key = {0}, key;
        bool have_lock = tkv_engine_iter_valid(lock_it);
        bool have_write = tkv_engine_iter_valid(write_it);
        tkv_ts ts_unused;

        if (!have_lock && !have_write)
            break;
        if (have_lock) {
            struct tkv_slice k = tkv_engine_iter_key(lock_it);
            lock_key = tkv_pb_dup(c->arena, k.ptr, k.len);
        }
        if (have_write)
            TKV_ERR(tkv_txn_decode_key(c->arena, tkv_engine_iter_key(write_it), &write_key,
                                       &ts_unused));
        if (have_lock && have_write) {
            int cmp = memcmp(lock_key.ptr, write_key.ptr, TKV_MIN(lock_key.len, write_key.len));
            if (cmp == 0)
                cmp = lock_key.len < write_key.len ? -1 : lock_key.len > write_key.len;
            key = cmp <= 0 ? lock_key : write_key;
            have_lock = cmp <= 0;
            have_write = cmp >= 0;
        } else {
            key = have_lock ? lock_key : write_key;
        }
        if (!tkv_txn_region_contains(c->region, key))
            break; /* keys only grow: the rest is past the region's end */

        struct tkv_txn_lock lock;
        bool locked = false;
        if (have_lock) {
            TKV_ERR(tkv_txn_lock_decode(tkv_engine_iter_value(lock_it), &lock));
            locked = lock_blocks_read(&lock, key, req->version);
            if (locked)
                lock.primary = tkv_pb_dup(c->arena, lock.primary.ptr, lock.primary.len);
            TKV_ERR(tkv_engine_iter_next(lock_it));
        }
        if (have_write) /* skip every version of key */
            TKV_ERR(tkv_engine_iter_seek(write_it, txn_versions_end(c->arena, key)));

        if (locked) {
            bytes += pair_bound(key.len, lock.primary.len + key.len);
            if (bytes > max_bytes) {
                rv = TKV_ETOOBIG;
                goto err;
            }
            kvrpcpb_KvPair *kv = TKV_PB_PUSH(c->arena, &resp->pairs);
            kv->has_error = true;
            set_locked(&kv->error, &lock, key);
            kv->key = key;
            continue;
        }
        if (!have_write)
            continue; /* a lock from the future and no committed version */
        struct tkv_slice value;
        bool found;
        TKV_ERR(txn_read_value(c->snap, c->arena, key, req->version, &value, &found));
        if (!found)
            continue;
        bytes += pair_bound(key.len, value.len);
        if (bytes > max_bytes) {
            rv = TKV_ETOOBIG;
            goto err;
        }
        kvrpcpb_KvPair *kv = TKV_PB_PUSH(c->arena, &resp->pairs);
        kv->key = key;
        kv->value = value;
    }
    rv = 0;
err:
    tkv_engine_iter_close(write_it);
    tkv_engine_iter_close(lock_it);
    return rv;
}

/* ---- KvPrewrite ---- */

static uint8_t kind_of_op(kvrpcpb_Op op)
{
    switch (op) {
    case kvrpcpb_Op_Put:
        return TKV_TXN_KIND_PUT;
    case kvrpcpb_Op_Del:
        return TKV_TXN_KIND_DELETE;
    default:
        return TKV_TXN_KIND_LOCK;
    }
}

struct mut_ref {
    const kvrpcpb_Mutation *m;
    size_t index;
};

static int cmp_mut_ref(const void *a, const void *b)
{
    const struct mut_ref *x = a, *y = b;
    int c = memcmp(x->m->key.ptr, y->m->key.ptr, TKV_MIN(x->m->key.len, y->m->key.len));
    if (c == 0 && x->m->key.len != y->m->key.len)
        c = x->m->key.len < y->m->key.len ? -1 : 1;
    if (c == 0)
        c = x->index < y->index ? -1 : x->index > y->index;
    return c;
}

/* Which mutations count: of several on one key, the last one wins
 * (TestPrewriteOverwrite4B, TestPrewriteMultiple4B). */
static bool *last_of_each_key(struct tkv_arena *arena, const kvrpcpb_PrewriteRequest *req)
{
    size_t n = req->mutations.n;
    bool *keep = tkv_arena_calloc(arena, n ? n : 1, sizeof(*keep));
    struct mut_ref *refs = tkv_arena_alloc(arena, (n ? n : 1) * sizeof(*refs));
    for (size_t i = 0; i < n; i++)
        refs[i] = (struct mut_ref){&req->mutations.items[i], i};
    qsort(refs, n, sizeof(*refs), cmp_mut_ref);
    for (size_t i = 0; i < n; i++)
        if (i + 1 == n || !slice_eq(refs[i].m->key, refs[i + 1].m->key))
            keep[refs[i].index] = true;
    return keep;
}

int tkv_txn_kv_prewrite(struct tkv_txn_ctx *c, const kvrpcpb_PrewriteRequest *req,
                        kvrpcpb_PrewriteResponse *resp, struct tkv_txn_writes *writes)
{
    struct tkv_txn_mvcc m;

    memset(resp, 0, sizeof(*resp));
    memset(writes, 0, sizeof(*writes));
    TKV_RET(tkv_txn_check_prewrite(req, &c->why));
    for (size_t i = 0; i < req->mutations.n; i++)
        if (!tkv_txn_region_contains(c->region, req->mutations.items[i].key))
            return TKV_EKEYRANGE;

    tkv_txn_mvcc_init(&m, c->snap, c->arena, req->start_version);
    bool *keep = last_of_each_key(c->arena, req);
    struct tkv_slice primary = tkv_pb_dup(c->arena, req->primary_lock.ptr, req->primary_lock.len);
    for (size_t i = 0; i < req->mutations.n; i++) {
        const kvrpcpb_Mutation *mu = &req->mutations.items[i];
        struct tkv_txn_write w;
        struct tkv_txn_lock lock;
        tkv_ts commit_ts;
        bool found;

        if (!keep[i])
            continue;
        /* 1. write conflict: anything committed (or rolled back) at or
         * after our start. conflict_ts is that record's commit ts (TiKV;
         * the reference reports its start ts): the ts a retry must pass. */
        TKV_RET(tkv_txn_most_recent_write(&m, mu->key, &w, &commit_ts, &found));
        if (found && commit_ts >= req->start_version) {
            kvrpcpb_KeyError *e = TKV_PB_PUSH(c->arena, &resp->errors);
            memset(e, 0, sizeof(*e));
            e->has_conflict = true;
            e->conflict.start_ts = req->start_version;
            e->conflict.conflict_ts = commit_ts;
            e->conflict.key = tkv_pb_dup(c->arena, mu->key.ptr, mu->key.len);
            e->conflict.primary = primary;
            continue;
        }
        /* 2. someone else's lock */
        TKV_RET(tkv_txn_get_lock(&m, mu->key, &lock, &found));
        if (found && lock.ts != req->start_version && !TXN_BUG("prewrite_ignores_locks")) {
            kvrpcpb_KeyError *e = TKV_PB_PUSH(c->arena, &resp->errors);
            set_locked(e, &lock, tkv_pb_dup(c->arena, mu->key.ptr, mu->key.len));
            continue;
        }
        /* 3. (re)write our lock; a retried prewrite that changed a Put
         * into a Del/Lock drops the value it had written. */
        if (found && lock.kind == TKV_TXN_KIND_PUT && mu->op != kvrpcpb_Op_Put)
            tkv_txn_delete_value(&m, mu->key);
        struct tkv_txn_lock nl = {
            .primary = primary,
            .kind = kind_of_op(mu->op),
            .ts = req->start_version,
            .ttl = req->lock_ttl,
        };
        tkv_txn_put_lock(&m, mu->key, &nl);
        if (mu->op == kvrpcpb_Op_Put)
            tkv_txn_put_value(&m, mu->key, mu->value);
    }
    if (resp->errors.n == 0)
        *writes = m.writes;
    return 0;
}

/* ---- KvCommit and KvBatchRollback, one key at a time ---- */

/* Returns 0 with *err set on a KeyError. */
static int commit_key(struct tkv_txn_mvcc *m, struct tkv_slice key, tkv_ts commit_ts,
                      kvrpcpb_KeyError *err, bool *failed)
{
    struct tkv_txn_lock lock;
    struct tkv_txn_write w;
    tkv_ts cts;
    bool locked, found;

    TKV_RET(tkv_txn_get_lock(m, key, &lock, &locked));
    if (locked && (lock.ts == m->start_ts || TXN_BUG("commit_ignores_lock_owner"))) {
        struct tkv_txn_write nw = {.kind = lock.kind, .start_ts = m->start_ts};
        tkv_txn_put_write(m, key, commit_ts, &nw);
        tkv_txn_delete_lock(m, key);
        return 0;
    }
    TKV_RET(tkv_txn_current_write(m, key, &w, &cts, &found));
    if (found && w.kind != TKV_TXN_KIND_ROLLBACK)
        return 0; /* already committed: idempotent */
    memset(err, 0, sizeof(*err));
    if (found) {
        err->abort = tkv_pb_printf(m->arena, "transaction %llu was rolled back; it cannot commit",
                                   (unsigned long long)m->start_ts);
        *failed = true;
    } else if (locked) {
        err->retryable = tkv_pb_printf(
            m->arena, "key is locked by transaction %llu, not by %llu: lock not found",
            (unsigned long long)lock.ts, (unsigned long long)m->start_ts);
        *failed = true;
    }
    /* neither lock nor write: the prewrite never arrived; nothing to do
     * (TestCommitMissingPrewrite4B). */
    return 0;
}

int tkv_txn_kv_commit(struct tkv_txn_ctx *c, const kvrpcpb_CommitRequest *req,
                      kvrpcpb_CommitResponse *resp, struct tkv_txn_writes *writes)
{
    struct tkv_txn_mvcc m;
    bool failed = false;

    memset(resp, 0, sizeof(*resp));
    memset(writes, 0, sizeof(*writes));
    TKV_RET(tkv_txn_check_commit(req, &c->why));
    for (size_t i = 0; i < req->keys.n; i++)
        if (!tkv_txn_region_contains(c->region, req->keys.items[i]))
            return TKV_EKEYRANGE;
    tkv_txn_mvcc_init(&m, c->snap, c->arena, req->start_version);
    for (size_t i = 0; i < req->keys.n && !failed; i++)
        TKV_RET(commit_key(&m, req->keys.items[i], req->commit_version, &resp->error, &failed));
    resp->has_error = failed;
    if (!failed)
        *writes = m.writes;
    return 0;
}

static int rollback_key(struct tkv_txn_mvcc *m, struct tkv_slice key, kvrpcpb_KeyError *err,
                        bool *failed)
{
    struct tkv_txn_lock lock;
    struct tkv_txn_write w;
    tkv_ts cts;
    bool locked, found;

    TKV_RET(tkv_txn_current_write(m, key, &w, &cts, &found));
    if (found) {
        if (w.kind == TKV_TXN_KIND_ROLLBACK)
            return 0; /* already rolled back */
        memset(err, 0, sizeof(*err));
        err->abort = tkv_pb_printf(m->arena,
                                   "transaction %llu is already committed (at %llu); it cannot "
                                   "be rolled back",
                                   (unsigned long long)m->start_ts, (unsigned long long)cts);
        *failed = true;
        return 0;
    }
    TKV_RET(tkv_txn_get_lock(m, key, &lock, &locked));
    if (locked && lock.ts == m->start_ts) {
        tkv_txn_delete_lock(m, key);
        if (lock.kind == TKV_TXN_KIND_PUT)
            tkv_txn_delete_value(m, key);
    }
    /* Also without any lock (the prewrite may still be in flight: the
     * record makes it fail), and leaving another txn's lock alone. */
    struct tkv_txn_write rb = {.kind = TKV_TXN_KIND_ROLLBACK, .start_ts = m->start_ts};
    tkv_txn_put_write(m, key, m->start_ts, &rb);
    return 0;
}

int tkv_txn_kv_batch_rollback(struct tkv_txn_ctx *c, const kvrpcpb_BatchRollbackRequest *req,
                              kvrpcpb_BatchRollbackResponse *resp, struct tkv_txn_writes *writes)
{
    struct tkv_txn_mvcc m;
    bool failed = false;

    memset(resp, 0, sizeof(*resp));
    memset(writes, 0, sizeof(*writes));
    TKV_RET(tkv_txn_check_rollback(req, &c->why));
    for (size_t i = 0; i < req->keys.n; i++)
        if (!tkv_txn_region_contains(c->region, req->keys.items[i]))
            return TKV_EKEYRANGE;
    tkv_txn_mvcc_init(&m, c->snap, c->arena, req->start_version);
    for (size_t i = 0; i < req->keys.n && !failed; i++)
        TKV_RET(rollback_key(&m, req->keys.items[i], &resp->error, &failed));
    resp->has_error = failed;
    if (!failed)
        *writes = m.writes;
    return 0;
}

/* ---- KvCheckTxnStatus ---- */

/* Expired when the physical time passed lock start + ttl (strictly: the
 * reference's "<"); written without the sum, which could overflow. */
static bool lock_expired(const struct tkv_txn_lock *lock, tkv_ts current_ts)
{
    uint64_t start = tkv_txn_physical_ms(lock->ts), now = tkv_txn_physical_ms(current_ts);
    return now > start && now - start > lock->ttl;
}

int tkv_txn_kv_check_txn_status(struct tkv_txn_ctx *c, const kvrpcpb_CheckTxnStatusRequest *req,
                                kvrpcpb_CheckTxnStatusResponse *resp, struct tkv_txn_writes *writes)
{
    struct tkv_txn_mvcc m;
    struct tkv_txn_lock lock;
    struct tkv_txn_write w;
    tkv_ts cts;
    bool found;

    memset(resp, 0, sizeof(*resp));
    memset(writes, 0, sizeof(*writes));
    TKV_RET(tkv_txn_check_check_txn_status(req, &c->why));
    if (!tkv_txn_region_contains(c->region, req->primary_key))
        return TKV_EKEYRANGE;
    tkv_txn_mvcc_init(&m, c->snap, c->arena, req->lock_ts);
    struct tkv_txn_write rb = {.kind = TKV_TXN_KIND_ROLLBACK, .start_ts = req->lock_ts};

    TKV_RET(tkv_txn_get_lock(&m, req->primary_key, &lock, &found));
    if (found && lock.ts == req->lock_ts) {
        if (lock_expired(&lock, req->current_ts)) {
            tkv_txn_delete_lock(&m, req->primary_key);
            if (lock.kind == TKV_TXN_KIND_PUT)
                tkv_txn_delete_value(&m, req->primary_key);
            tkv_txn_put_write(&m, req->primary_key, req->lock_ts, &rb);
            resp->action = kvrpcpb_Action_TTLExpireRollback;
            *writes = m.writes;
        } else {
            /* "locked iff lock_ttl > 0": a live lock with TTL 0 (allowed
             * by prewrite) still reports 1 so it is not taken for a
             * rollback. */
            resp->lock_ttl = lock.ttl ? lock.ttl : 1;
            resp->action = kvrpcpb_Action_NoAction;
        }
        return 0;
    }
    TKV_RET(tkv_txn_current_write(&m, req->primary_key, &w, &cts, &found));
    if (found) {
        if (w.kind != TKV_TXN_KIND_ROLLBACK)
            resp->commit_version = cts;
        resp->action = kvrpcpb_Action_NoAction;
        return 0;
    }
    /* Neither lock nor record: the prewrite is lost or still coming; a
     * rollback record makes sure it can never succeed. */
    tkv_txn_put_write(&m, req->primary_key, req->lock_ts, &rb);
    resp->action = kvrpcpb_Action_LockNotExistRollback;
    *writes = m.writes;
    return 0;
}

/* ---- KvResolveLock ---- */

int tkv_txn_resolve_scan(struct tkv_engine_snap *snap, struct tkv_arena *arena, tkv_ts start_ts,
                         const struct tkv_txn_region *region, struct tkv_slice **keys_out,
                         size_t *n_out, bool *truncated)
{
    struct tkv_engine_iter *it = NULL;
    struct tkv_slice *keys = NULL;
    size_t n = 0, cap = 0;
    int rv;

    *truncated = false;
    if (start_ts == 0) {
        *keys_out = NULL;
        *n_out = 0;
        return 0;
    }
    TKV_ERR(tkv_engine_iter_open(snap, TKV_CF_LOCK, TKV_SLICE(NULL, 0), TKV_SLICE(NULL, 0), &it));
    TKV_ERR(tkv_engine_iter_seek_first(it));
    while (tkv_engine_iter_valid(it)) {
        struct tkv_slice k = tkv_engine_iter_key(it);
        struct tkv_txn_lock lock;
        TKV_ERR(tkv_txn_lock_decode(tkv_engine_iter_value(it), &lock));
        if (lock.ts == start_ts && tkv_txn_region_contains(region, k)) {
            if (n == TKV_TXN_KEYS_MAX) {
                *truncated = true;
                break;
            }
            if (n == cap) {
                size_t ncap = cap ? 2 * cap : 16;
                keys = tkv_arena_grow(arena, keys, cap * sizeof(*keys), ncap * sizeof(*keys));
                cap = ncap;
            }
            keys[n++] = tkv_pb_dup(arena, k.ptr, k.len);
        }
        TKV_ERR(tkv_engine_iter_next(it));
    }
    *keys_out = keys;
    *n_out = n;
    rv = 0;
err:
    tkv_engine_iter_close(it);
    return rv;
}

int tkv_txn_kv_resolve_lock(struct tkv_txn_ctx *c, const kvrpcpb_ResolveLockRequest *req,
                            const struct tkv_slice *keys, size_t n_keys,
                            kvrpcpb_ResolveLockResponse *resp, struct tkv_txn_writes *writes)
{
    struct tkv_txn_mvcc m;
    bool failed = false;

    memset(resp, 0, sizeof(*resp));
    memset(writes, 0, sizeof(*writes));
    TKV_RET(tkv_txn_check_resolve_lock(req, &c->why));
    if (req->start_version == 0)
        return 0;
    tkv_txn_mvcc_init(&m, c->snap, c->arena, req->start_version);
    for (size_t i = 0; i < n_keys && !failed; i++) {
        struct tkv_txn_lock lock;
        bool found;
        /* Re-check under the latch: the lock may be gone since the scan. */
        TKV_RET(tkv_txn_get_lock(&m, keys[i], &lock, &found));
        if (!found || lock.ts != req->start_version)
            continue;
        if (req->commit_version == 0)
            TKV_RET(rollback_key(&m, keys[i], &resp->error, &failed));
        else
            TKV_RET(commit_key(&m, keys[i], req->commit_version, &resp->error, &failed));
    }
    resp->has_error = failed;
    if (!failed)
        *writes = m.writes;
    return 0;
}
