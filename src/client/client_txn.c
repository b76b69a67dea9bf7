/* Percolator transactions on the Kv* commands (TINYKV-API.md 2.6, §4).
 *
 * A transaction buffers its writes (sorted by key). Reads go to KvGet/KvScan
 * at start_ts; a lock of another transaction met by a read or a prewrite is
 * checked at its primary (KvCheckTxnStatus with a fresh timestamp) and
 * resolved (KvResolveLock on the locked key's region) if that transaction
 * committed, rolled back or expired; a live lock means back off and retry.
 *
 * Commit: the smallest key is the primary. Phases, each a set of per-region
 * batches (keys grouped by the region cache; a batch whose region changed
 * comes back with TKV_EEPOCH and is regrouped):
 *   1. prewrite the primary's region batch (the primary with every key of
 *      its cached region; all keys in standalone mode; the primary alone
 *      when its region is not cached yet);
 *   2. prewrite every other batch (in parallel);
 *   3. commit_ts from the TSO; commit the primary key alone: the commit point;
 *   4. commit the secondaries (in parallel, best effort: a failure leaves a
 *      lock that readers resolve from the committed primary).
 * A conflict or failure in 1-2 rolls back every key (KvBatchRollback) and
 * reports TINYKV_ECONFLICT (or the error). Routing uses the memcomparable
 * encoding of user keys, as region boundaries are in that form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/mem.h"

struct batch;

struct txn_mut {
    uint8_t *key, *value;
    size_t key_len, value_len;
    uint8_t *enc; /* EncodeBytes(key), for routing */
    size_t enc_len;
    kvrpcpb_Op op; /* Put or Del */
    bool in_first; /* prewritten with the primary (same region) */
};

enum txn_phase {
    PH_IDLE,
    PH_GET,
    PH_SCAN,
    PH_PREWRITE_PRIMARY,
    PH_PREWRITE_SECONDARY,
    PH_TSO_COMMIT,
    PH_COMMIT_PRIMARY,
    PH_COMMIT_SECONDARY,
    PH_ROLLBACK,
};

struct batch {
    struct tinykv_txn *t;
    enum txn_phase phase;
    size_t *idx; /* mutation indices */
    size_t n;
    uint32_t lock_retries;
    struct tkv_timer timer; /* backoff behind a live lock */
    struct batch *next;     /* in t->parked while the timer runs */
};

struct tinykv_txn {
    struct tinykv *kv;
    uint64_t start_ts, commit_ts;
    bool done;
    enum txn_phase phase;
    struct txn_mut *muts;
    size_t n_muts, cap_muts;
    uint64_t deadline_ns;
    uint32_t lock_retries;
    struct tkv_timer timer; /* asynchronous completions and lock backoff */
    /* current operation */
    tinykv_get_cb get_cb;
    tinykv_scan_cb scan_cb;
    tinykv_done_cb done_cb;
    void *user;
    int result;       /* first error of the phase */
    int fail_rv;      /* why a failed commit is rolling back */
    char fail_msg[512]; /* and its detail (the rollback's own errors are not reported) */
    uint32_t pending; /* batches and region lookups outstanding in the phase */
    enum { TA_NONE, TA_GET_BUFFERED, TA_GET_RETRY, TA_SCAN_RETRY, TA_ROLLBACK_DONE } timer_action;
    struct batch *parked; /* batches waiting out a live lock */
    /* get / scan state */
    uint8_t *key;
    size_t key_len;
    struct tkv_slice get_value; /* buffered value answered asynchronously */
    int get_rv;
    struct tkv_arena scan_arena;
    struct tinykv_kv *scan_kvs;
    size_t scan_n, scan_cap;
    uint32_t scan_limit, scan_server_limit;
    bool scan_exhausted;
    uint8_t *scan_next;
    size_t scan_next_len;
    struct tinykv_txn *prev, *next;
};

static uint8_t *memdup0(const void *p, size_t n)
{
    uint8_t *c = tkv_xmalloc(n ? n : 1);
    if (n)
        memcpy(c, p, n);
    return c;
}

static struct tkv_slice encode_key(struct tkv_arena *a, struct tkv_slice key)
{
    uint8_t *out = tkv_arena_alloc(a, tkv_codec_encoded_bytes_len(key.len));
    size_t n = tkv_codec_encode_bytes(out, key.ptr, key.len);
    return TKV_SLICE(out, n);
}

static void batch_free(struct batch *b)
{
    free(b->idx);
    free(b);
}

static void txn_free(struct tinykv_txn *t)
{
    struct tinykv *kv = t->kv;
    if (t->prev)
        t->prev->next = t->next;
    else if (kv->txns == t)
        kv->txns = t->next;
    if (t->next)
        t->next->prev = t->prev;
    tkv_timer_stop(kv->r, &t->timer);
    while (t->parked) {
        struct batch *b = t->parked;
        t->parked = b->next;
        tkv_timer_stop(kv->r, &b->timer);
        batch_free(b);
    }
    for (size_t i = 0; i < t->n_muts; i++) {
        free(t->muts[i].key);
        free(t->muts[i].value);
        free(t->muts[i].enc);
    }
    free(t->muts);
    free(t->key);
    free(t->scan_next);
    free(t->scan_kvs);
    tkv_arena_close(&t->scan_arena);
    free(t);
}

/* At handle close: an operation of a transaction that waits only on the
 * transaction's own timer (buffered get, rollback, live-lock backoff) or on
 * parked batches still owes its callback: answer TKV_ESHUTDOWN, then free. */
void client_txn_close_all(struct tinykv *kv)
{
    while (kv->txns) {
        struct tinykv_txn *t = kv->txns;
        bool owes = tkv_timer_armed(&t->timer) || t->parked;
        int action = t->timer_action;
        enum txn_phase ph = t->phase;
        tinykv_get_cb get_cb = t->get_cb;
        tinykv_scan_cb scan_cb = t->scan_cb;
        tinykv_done_cb done_cb = t->done_cb;
        void *u = t->user;
        /* The callback may still name t (and get TINYKV_ETXNDONE from it):
         * free only afterwards. */
        t->done = true;
        tkv_timer_stop(kv->r, &t->timer);
        if (owes) {
            t->phase = PH_IDLE;
            if (ph == PH_GET || action == TA_GET_BUFFERED || action == TA_GET_RETRY)
                get_cb(u, TKV_ESHUTDOWN, (struct tkv_slice){0});
            else if (ph == PH_SCAN)
                scan_cb(u, TKV_ESHUTDOWN, NULL, 0);
            else if (done_cb)
                done_cb(u, TKV_ESHUTDOWN);
        }
        txn_free(t);
    }
}

uint64_t tinykv_txn_start_ts(const struct tinykv_txn *t)
{
    return t->start_ts;
}

uint64_t tinykv_txn_commit_ts(const struct tinykv_txn *t)
{
    return t->commit_ts;
}

/* ---- begin ---- */

struct begin_ctx {
    struct tinykv *kv;
    tinykv_begin_cb cb;
    void *user;
};

static void txn_timer(struct tkv_timer *tm);

static void on_begin_ts(void *user, int rv, uint64_t ts)
{
    struct begin_ctx *b = user;
    struct tinykv *kv = b->kv;
    tinykv_begin_cb cb = b->cb;
    void *u = b->user;
    free(b);
    if (rv) {
        cb(u, rv, NULL);
        return;
    }
    struct tinykv_txn *t = tkv_xcalloc(1, sizeof *t);
    t->kv = kv;
    t->start_ts = ts;
    tkv_arena_init(&t->scan_arena, 0);
    tkv_timer_init(&t->timer, txn_timer, t);
    t->next = kv->txns;
    if (kv->txns)
        kv->txns->prev = t;
    kv->txns = t;
    cb(u, 0, t);
}

int tinykv_txn_begin(struct tinykv *kv, tinykv_begin_cb cb, void *user)
{
    if (kv->closing)
        return TKV_ESHUTDOWN;
    if (kv->standalone) {
        int rv = client_local_tso_open(kv);
        if (rv) {
            client_set_errmsg(kv, "local timestamp file %s: %s", kv->tso_path, tkv_strerror(rv));
            return rv;
        }
    }
    struct begin_ctx *b = tkv_xcalloc(1, sizeof *b);
    b->kv = kv;
    b->cb = cb;
    b->user = user;
    client_tso(kv, 0, on_begin_ts, b);
    return 0;
}

/* ---- the write buffer ---- */

static long mut_find(const struct tinykv_txn *t, struct tkv_slice key, bool *found)
{
    long lo = 0, hi = (long)t->n_muts - 1;
    *found = false;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        const struct txn_mut *m = &t->muts[mid];
        size_t n = m->key_len < key.len ? m->key_len : key.len;
        int d = n ? memcmp(m->key, key.ptr, n) : 0;
        if (d == 0)
            d = m->key_len < key.len ? -1 : m->key_len > key.len ? 1 : 0;
        if (d == 0) {
            *found = true;
            return mid;
        }
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return lo;
}

static int buffer_write(struct tinykv_txn *t, struct tkv_slice key, struct tkv_slice value,
                        kvrpcpb_Op op)
{
    if (t->done)
        return TINYKV_ETXNDONE;
    if (t->phase != PH_IDLE)
        return TKV_EBUSY;
    if (key.len == 0 || !key.ptr || (value.len && !value.ptr))
        return TKV_EINVAL;
    bool found;
    long at = mut_find(t, key, &found);
    struct txn_mut *m;
    if (found) {
        m = &t->muts[at];
        free(m->value);
    } else {
        if (t->n_muts == t->cap_muts) {
            t->cap_muts = t->cap_muts ? t->cap_muts * 2 : 8;
            t->muts = tkv_xrealloc(t->muts, t->cap_muts * sizeof *t->muts);
        }
        memmove(&t->muts[at + 1], &t->muts[at], (t->n_muts - (size_t)at) * sizeof *t->muts);
        t->n_muts++;
        m = &t->muts[at];
        memset(m, 0, sizeof *m);
        m->key = memdup0(key.ptr, key.len);
        m->key_len = key.len;
        m->enc = tkv_xmalloc(tkv_codec_encoded_bytes_len(key.len));
        m->enc_len = tkv_codec_encode_bytes(m->enc, key.ptr, key.len);
    }
    m->op = op;
    m->value = op == kvrpcpb_Op_Put ? memdup0(value.ptr, value.len) : NULL;
    m->value_len = op == kvrpcpb_Op_Put ? value.len : 0;
    return 0;
}

int tinykv_txn_set(struct tinykv_txn *t, struct tkv_slice key, struct tkv_slice value)
{
    return buffer_write(t, key, value, kvrpcpb_Op_Put);
}

int tinykv_txn_delete(struct tinykv_txn *t, struct tkv_slice key)
{
    return buffer_write(t, key, (struct tkv_slice){0}, kvrpcpb_Op_Del);
}

/* ---- lock resolution ---- */

typedef void (*resolve_cb)(struct tinykv_txn *t, void *arg, int rv);

struct resolve_ctx {
    struct tinykv_txn *t;
    resolve_cb cb;
    void *arg;
    uint8_t *primary, *key;
    size_t primary_len, key_len;
    uint64_t lock_ts;
    uint64_t commit_version;
};

static void resolve_end(struct resolve_ctx *r, int rv)
{
    struct tinykv_txn *t = r->t;
    resolve_cb cb = r->cb;
    void *arg = r->arg;
    free(r->primary);
    free(r->key);
    free(r);
    cb(t, arg, rv);
}

static void on_resolved(struct client_req *q, int rv, void *resp)
{
    struct resolve_ctx *r = q->user;
    if (rv == 0) {
        kvrpcpb_ResolveLockResponse *res = resp;
        if (res->has_error) {
            client_set_errmsg(r->t->kv, "KvResolveLock: key error");
            rv = TINYKV_ECONFLICT;
        } else {
            r->t->kv->stats.locks_resolved++;
        }
    }
    resolve_end(r, rv);
}

static void on_checked(struct client_req *q, int rv, void *resp)
{
    struct resolve_ctx *r = q->user;
    struct tinykv_txn *t = r->t;
    struct tinykv *kv = t->kv;
    if (rv) {
        resolve_end(r, rv);
        return;
    }
    kvrpcpb_CheckTxnStatusResponse *s = resp;
    if (s->lock_ttl > 0) {
        kv->stats.lock_waits++;
        client_set_errmsg(kv, "key locked by a live transaction (start_ts %llu)",
                          (unsigned long long)r->lock_ts);
        resolve_end(r, TKV_ELOCKED);
        return;
    }
    /* Committed (commit_version > 0) or rolled back (0): resolve the lock on
     * the locked key's region accordingly. */
    struct client_req *q2 = client_req_new(
        kv, "/tinykvpb.TinyKv/KvResolveLock", kvrpcpb_ResolveLockRequest_fields,
        sizeof(kvrpcpb_ResolveLockRequest), kvrpcpb_ResolveLockResponse_fields,
        sizeof(kvrpcpb_ResolveLockResponse), t->deadline_ns, on_resolved, r);
    kvrpcpb_ResolveLockRequest *req = q2->req;
    req->start_version = r->lock_ts;
    req->commit_version = s->commit_version;
    q2->route_key = encode_key(&q2->arena, TKV_SLICE(r->key, r->key_len));
    client_req_start(q2);
}

static void on_resolve_ts(void *user, int rv, uint64_t ts)
{
    struct resolve_ctx *r = user;
    struct tinykv_txn *t = r->t;
    if (rv) {
        resolve_end(r, rv);
        return;
    }
    struct client_req *q = client_req_new(
        t->kv, "/tinykvpb.TinyKv/KvCheckTxnStatus", kvrpcpb_CheckTxnStatusRequest_fields,
        sizeof(kvrpcpb_CheckTxnStatusRequest), kvrpcpb_CheckTxnStatusResponse_fields,
        sizeof(kvrpcpb_CheckTxnStatusResponse), t->deadline_ns, on_checked, r);
    kvrpcpb_CheckTxnStatusRequest *req = q->req;
    req->primary_key = TKV_SLICE(tkv_arena_memdup(&q->arena, r->primary, r->primary_len),
                                 r->primary_len);
    req->lock_ts = r->lock_ts;
    req->current_ts = ts;
    q->route_key = encode_key(&q->arena, req->primary_key);
    client_req_start(q);
}

/* Check and resolve the lock described by li, then cb(t, 0) to retry, or
 * cb(t, TKV_ELOCKED) when it belongs to a live transaction, or an error. */
static void resolve_lock(struct tinykv_txn *t, const kvrpcpb_LockInfo *li, resolve_cb cb,
                         void *arg)
{
    struct resolve_ctx *r = tkv_xcalloc(1, sizeof *r);
    r->t = t;
    r->cb = cb;
    r->arg = arg;
    r->primary = memdup0(li->primary_lock.ptr, li->primary_lock.len);
    r->primary_len = li->primary_lock.len;
    r->key = memdup0(li->key.ptr, li->key.len);
    r->key_len = li->key.len;
    r->lock_ts = li->lock_version;
    client_tso(t->kv, t->deadline_ns, on_resolve_ts, r);
}

/* After a resolution attempt of a get or scan: retry now (resolved), after
 * a backoff (live lock), or fail. */
static void retry_after_resolve(struct tinykv_txn *t, int rv, int action)
{
    struct tinykv *kv = t->kv;
    t->timer_action = action;
    if (rv && rv != TKV_ELOCKED) {
        t->result = rv;
        tkv_timer_start(kv->r, &t->timer, 0);
        return;
    }
    uint64_t wait = rv ? client_backoff_ns(kv, ++t->lock_retries) : 0;
    if (client_now(kv) + wait >= t->deadline_ns) {
        t->result = TKV_ETIMEDOUT;
        wait = 0;
    }
    tkv_timer_start(kv->r, &t->timer, wait);
}

static const char *key_error_text(struct tinykv *kv, const kvrpcpb_KeyError *e, int *rv_out)
{
    if (e->has_conflict) {
        client_set_errmsg(kv, "write conflict (start_ts %llu, conflict_ts %llu)",
                          (unsigned long long)e->conflict.start_ts,
                          (unsigned long long)e->conflict.conflict_ts);
        *rv_out = TINYKV_ECONFLICT;
    } else if (e->retryable.len) {
        client_set_errmsg(kv, "retryable: %.*s", (int)e->retryable.len,
                          (const char *)e->retryable.ptr);
        *rv_out = TINYKV_ECONFLICT;
    } else if (e->abort.len) {
        client_set_errmsg(kv, "abort: %.*s", (int)e->abort.len, (const char *)e->abort.ptr);
        *rv_out = TINYKV_EABORTED;
    } else {
        client_set_errmsg(kv, "key error");
        *rv_out = TKV_EPROTO;
    }
    return kv->errmsg;
}

/* ---- get ---- */

static void get_send(struct tinykv_txn *t);

static void get_end(struct tinykv_txn *t, int rv, struct tkv_slice value)
{
    tinykv_get_cb cb = t->get_cb;
    void *u = t->user;
    t->phase = PH_IDLE;
    cb(u, rv, rv == 0 ? value : (struct tkv_slice){0});
}

static void get_resolved(struct tinykv_txn *t, void *arg, int rv)
{
    (void)arg;
    retry_after_resolve(t, rv, TA_GET_RETRY);
}

static void on_get(struct client_req *q, int rv, void *resp)
{
    struct tinykv_txn *t = q->user;
    if (rv) {
        get_end(t, rv, (struct tkv_slice){0});
        return;
    }
    kvrpcpb_GetResponse *g = resp;
    if (g->has_error) {
        if (g->error.has_locked) {
            resolve_lock(t, &g->error.locked, get_resolved, NULL);
            return;
        }
        int e;
        key_error_text(t->kv, &g->error, &e);
        get_end(t, e, (struct tkv_slice){0});
        return;
    }
    get_end(t, g->not_found ? TKV_ENOTFOUND : 0, g->value);
}

static void get_send(struct tinykv_txn *t)
{
    struct client_req *q = client_req_new(t->kv, "/tinykvpb.TinyKv/KvGet",
                                          kvrpcpb_GetRequest_fields, sizeof(kvrpcpb_GetRequest),
                                          kvrpcpb_GetResponse_fields, sizeof(kvrpcpb_GetResponse),
                                          t->deadline_ns, on_get, t);
    kvrpcpb_GetRequest *r = q->req;
    r->key = TKV_SLICE(tkv_arena_memdup(&q->arena, t->key, t->key_len), t->key_len);
    r->version = t->start_ts;
    q->route_key = encode_key(&q->arena, r->key);
    client_req_start(q);
}

static int op_begin(struct tinykv_txn *t, enum txn_phase ph)
{
    if (t->done)
        return TINYKV_ETXNDONE;
    if (t->phase != PH_IDLE)
        return TKV_EBUSY;
    if (t->kv->closing)
        return TKV_ESHUTDOWN;
    t->phase = ph;
    t->result = 0;
    t->lock_retries = 0;
    t->deadline_ns = client_deadline(t->kv);
    return 0;
}

int tinykv_txn_get(struct tinykv_txn *t, struct tkv_slice key, tinykv_get_cb cb, void *user)
{
    if (key.len == 0 || !key.ptr)
        return TKV_EINVAL;
    int rv = op_begin(t, PH_GET);
    if (rv)
        return rv;
    t->get_cb = cb;
    t->user = user;
    free(t->key);
    t->key = memdup0(key.ptr, key.len);
    t->key_len = key.len;
    bool found;
    long at = mut_find(t, key, &found);
    if (found) { /* our own write: answered from the buffer, next turn */
        t->get_rv = t->muts[at].op == kvrpcpb_Op_Put ? 0 : TKV_ENOTFOUND;
        t->get_value = TKV_SLICE(t->muts[at].value, t->muts[at].value_len);
        t->timer_action = TA_GET_BUFFERED;
        tkv_timer_start(t->kv->r, &t->timer, 0);
        return 0;
    }
    get_send(t);
    return 0;
}

/* ---- scan ---- */

static void scan_send(struct tinykv_txn *t);

static void scan_end(struct tinykv_txn *t, int rv)
{
    tinykv_scan_cb cb = t->scan_cb;
    void *u = t->user;
    t->phase = PH_IDLE;
    if (rv) {
        cb(u, rv, NULL, 0);
    } else {
        /* Merge the snapshot's pairs with the buffer. Server pairs cover
         * [start, last] (or everything from start when exhausted). */
        struct tkv_slice start = TKV_SLICE(t->key, t->key_len);
        struct tinykv_kv *out = tkv_arena_alloc(&t->scan_arena, (t->scan_n + t->n_muts + 1) *
                                                                    sizeof *out);
        size_t n = 0, i = 0;
        bool f;
        size_t j = (size_t)mut_find(t, start, &f);
        const struct tinykv_kv *last = t->scan_n ? &t->scan_kvs[t->scan_n - 1] : NULL;
        while (n < t->scan_limit && (i < t->scan_n || j < t->n_muts)) {
            const struct txn_mut *m = j < t->n_muts ? &t->muts[j] : NULL;
            if (m && !t->scan_exhausted && last) {
                size_t l = m->key_len < last->key.len ? m->key_len : last->key.len;
                int d = l ? memcmp(m->key, last->key.ptr, l) : 0;
                if (d > 0 || (d == 0 && m->key_len > last->key.len))
                    m = NULL; /* beyond what the server covered */
            } else if (m && !t->scan_exhausted && !last) {
                m = NULL;
            }
            int d;
            if (!m)
                d = -1;
            else if (i >= t->scan_n)
                d = 1;
            else {
                const struct tinykv_kv *s = &t->scan_kvs[i];
                size_t l = m->key_len < s->key.len ? m->key_len : s->key.len;
                d = l ? memcmp(s->key.ptr, m->key, l) : 0;
                if (d == 0)
                    d = s->key.len < m->key_len ? -1 : s->key.len > m->key_len ? 1 : 0;
            }
            if (!m && i >= t->scan_n)
                break;
            if (d < 0) {
                out[n++] = t->scan_kvs[i++];
                continue;
            }
            if (d == 0)
                i++;
            if (m->op == kvrpcpb_Op_Put)
                out[n++] = (struct tinykv_kv){TKV_SLICE(m->key, m->key_len),
                                              TKV_SLICE(m->value, m->value_len)};
            j++;
        }
        cb(u, 0, out, n);
    }
    tkv_arena_reset(&t->scan_arena);
    t->scan_n = 0;
}

static void scan_resolved(struct tinykv_txn *t, void *arg, int rv)
{
    (void)arg;
    retry_after_resolve(t, rv, TA_SCAN_RETRY);
}

static void on_scan(struct client_req *q, int rv, void *resp)
{
    struct tinykv_txn *t = q->user;
    struct tinykv *kv = t->kv;
    if (rv) {
        scan_end(t, rv);
        return;
    }
    kvrpcpb_ScanResponse *r = resp;
    uint32_t asked = t->scan_server_limit - (uint32_t)t->scan_n;
    for (size_t i = 0; i < r->pairs.n; i++)
        if (r->pairs.items[i].has_error) {
            const kvrpcpb_KeyError *e = &r->pairs.items[i].error;
            if (e->has_locked) {
                resolve_lock(t, &e->locked, scan_resolved, NULL); /* then rescan this region */
                return;
            }
            int er;
            key_error_text(kv, e, &er);
            scan_end(t, er);
            return;
        }
    size_t take = r->pairs.n < asked ? r->pairs.n : asked;
    /* Keep only the region's own keys (compared in encoded form). */
    bool clipped = false;
    for (size_t i = 0; i < take && q->region_end_len; i++) {
        struct tkv_arena tmp;
        tkv_arena_init(&tmp, 0);
        struct tkv_slice e = encode_key(&tmp, r->pairs.items[i].key);
        size_t l = e.len < q->region_end_len ? e.len : q->region_end_len;
        int d = l ? memcmp(e.ptr, q->region_end, l) : 0;
        tkv_arena_close(&tmp);
        if (d > 0 || (d == 0 && e.len >= q->region_end_len)) {
            take = i;
            clipped = true;
        }
    }
    if (t->scan_n + take > t->scan_cap) {
        t->scan_cap = (t->scan_n + take) * 2;
        t->scan_kvs = tkv_xrealloc(t->scan_kvs, t->scan_cap * sizeof *t->scan_kvs);
    }
    for (size_t i = 0; i < take; i++) {
        const kvrpcpb_KvPair *p = &r->pairs.items[i];
        t->scan_kvs[t->scan_n++] = (struct tinykv_kv){
            TKV_SLICE(tkv_arena_memdup(&t->scan_arena, p->key.ptr, p->key.len), p->key.len),
            TKV_SLICE(tkv_arena_memdup(&t->scan_arena, p->value.ptr, p->value.len),
                      p->value.len)};
    }
    if (take == asked && !clipped) {
        scan_end(t, 0);
        return;
    }
    if (q->region_id == 0 || q->region_end_len == 0) {
        t->scan_exhausted = true;
        scan_end(t, 0);
        return;
    }
    /* Continue at the region's end, which is an encoded user key. */
    uint8_t *dec = tkv_xmalloc(tkv_codec_decoded_bytes_max(q->region_end_len) + 1);
    size_t dl = 0, used = 0;
    if (tkv_codec_decode_bytes(q->region_end, q->region_end_len, dec, &dl, &used) != 0) {
        free(dec);
        client_set_errmsg(kv, "region %llu ends at a key that is not memcomparable-encoded",
                          (unsigned long long)q->region_id);
        scan_end(t, TKV_EPROTO);
        return;
    }
    free(t->scan_next);
    t->scan_next = dec;
    t->scan_next_len = dl;
    scan_send(t);
}

static void scan_send(struct tinykv_txn *t)
{
    struct client_req *q = client_req_new(t->kv, "/tinykvpb.TinyKv/KvScan",
                                          kvrpcpb_ScanRequest_fields, sizeof(kvrpcpb_ScanRequest),
                                          kvrpcpb_ScanResponse_fields,
                                          sizeof(kvrpcpb_ScanResponse), t->deadline_ns, on_scan, t);
    kvrpcpb_ScanRequest *r = q->req;
    r->start_key =
        TKV_SLICE(tkv_arena_memdup(&q->arena, t->scan_next, t->scan_next_len), t->scan_next_len);
    r->limit = t->scan_server_limit - (uint32_t)t->scan_n;
    r->version = t->start_ts;
    q->route_key = encode_key(&q->arena, r->start_key);
    client_req_start(q);
}

int tinykv_txn_scan(struct tinykv_txn *t, struct tkv_slice start, uint32_t limit,
                    tinykv_scan_cb cb, void *user)
{
    if (start.len && !start.ptr)
        return TKV_EINVAL;
    int rv = op_begin(t, PH_SCAN);
    if (rv)
        return rv;
    t->scan_cb = cb;
    t->user = user;
    free(t->key);
    t->key = memdup0(start.ptr, start.len);
    t->key_len = start.len;
    free(t->scan_next);
    t->scan_next = memdup0(start.ptr, start.len);
    t->scan_next_len = start.len;
    t->scan_n = 0;
    t->scan_exhausted = false;
    t->scan_limit = limit;
    /* Buffered deletes may hide server pairs: ask for that many more. */
    uint64_t dels = 0;
    for (size_t i = 0; i < t->n_muts; i++)
        dels += t->muts[i].op == kvrpcpb_Op_Del;
    uint64_t want = (uint64_t)limit + dels;
    t->scan_server_limit = want > UINT32_MAX ? UINT32_MAX : (uint32_t)want;
    scan_send(t);
    return 0;
}

/* ---- commit: batches per region ---- */

static void phase_unit_done(struct tinykv_txn *t);
static void send_groups(struct tinykv_txn *t, enum txn_phase ph, const size_t *idx, size_t n);
static void batch_send(struct batch *b);

static void note_error(struct tinykv_txn *t, int rv)
{
    if (rv == TKV_ELOCKED)
        rv = TKV_ETIMEDOUT;
    /* A conflict says more than what followed it. */
    if (!t->result)
        t->result = rv;
}

static void batch_unpark(struct batch *b)
{
    struct batch **pp = &b->t->parked;
    while (*pp && *pp != b)
        pp = &(*pp)->next;
    if (*pp)
        *pp = b->next;
    b->next = NULL;
}

static void batch_timer(struct tkv_timer *tm)
{
    struct batch *b = tm->data;
    batch_unpark(b);
    batch_send(b);
}

/* The prewrite of batch b met a lock that was then checked: resend b now
 * (resolved) or after a backoff (live lock), or fail the batch. */
static void on_batch_resolved(struct tinykv_txn *t, void *arg, int rv)
{
    struct batch *b = arg;
    struct tinykv *kv = t->kv;
    if (rv == 0) {
        batch_send(b);
        return;
    }
    uint64_t wait = client_backoff_ns(kv, ++b->lock_retries);
    if (rv != TKV_ELOCKED || client_now(kv) + wait >= t->deadline_ns) {
        note_error(t, rv);
        batch_free(b);
        phase_unit_done(t);
        return;
    }
    b->next = t->parked;
    t->parked = b;
    tkv_timer_start(kv->r, &b->timer, wait);
}

static void on_batch(struct client_req *q, int rv, void *resp)
{
    struct batch *b = q->user;
    struct tinykv_txn *t = b->t;
    struct tinykv *kv = t->kv;
    if (rv == TKV_EEPOCH) { /* the region changed: regroup these keys */
        send_groups(t, b->phase, b->idx, b->n);
        batch_free(b);
        phase_unit_done(t);
        return;
    }
    if (rv == 0) {
        if (b->phase == PH_PREWRITE_PRIMARY || b->phase == PH_PREWRITE_SECONDARY) {
            kvrpcpb_PrewriteResponse *r = resp;
            const kvrpcpb_LockInfo *lock = NULL;
            for (size_t i = 0; i < r->errors.n && !rv; i++) {
                const kvrpcpb_KeyError *e = &r->errors.items[i];
                if (e->has_locked) {
                    if (!lock)
                        lock = &e->locked;
                } else {
                    key_error_text(kv, e, &rv);
                }
            }
            if (!rv && lock) {
                /* Another transaction's lock: check its primary, resolve,
                 * and prewrite this batch again (all-or-nothing prewrite
                 * wrote nothing). */
                resolve_lock(t, lock, on_batch_resolved, b);
                return;
            }
        } else {
            /* Commit and BatchRollback answer one KeyError at most (same
             * layout). */
            const kvrpcpb_CommitResponse *r = resp;
            if (r->has_error)
                key_error_text(kv, &r->error, &rv);
        }
    }
    if (rv)
        note_error(t, rv);
    batch_free(b);
    phase_unit_done(t);
}

static void batch_send(struct batch *b)
{
    struct tinykv_txn *t = b->t;
    struct tinykv *kv = t->kv;
    struct client_req *q;
    if (b->phase == PH_PREWRITE_PRIMARY || b->phase == PH_PREWRITE_SECONDARY) {
        q = client_req_new(kv, "/tinykvpb.TinyKv/KvPrewrite", kvrpcpb_PrewriteRequest_fields,
                           sizeof(kvrpcpb_PrewriteRequest), kvrpcpb_PrewriteResponse_fields,
                           sizeof(kvrpcpb_PrewriteResponse), t->deadline_ns, on_batch, b);
        kvrpcpb_PrewriteRequest *r = q->req;
        r->mutations.items = tkv_arena_calloc(&q->arena, b->n, sizeof *r->mutations.items);
        r->mutations.n = b->n;
        for (size_t i = 0; i < b->n; i++) {
            const struct txn_mut *m = &t->muts[b->idx[i]];
            r->mutations.items[i] = (kvrpcpb_Mutation){
                .op = m->op,
                .key = TKV_SLICE(m->key, m->key_len),
                .value = TKV_SLICE(m->value, m->value_len),
            };
        }
        r->primary_lock = TKV_SLICE(t->muts[0].key, t->muts[0].key_len);
        r->start_version = t->start_ts;
        r->lock_ttl = kv->cfg.lock_ttl_ms;
    } else if (b->phase == PH_ROLLBACK) {
        q = client_req_new(kv, "/tinykvpb.TinyKv/KvBatchRollback",
                           kvrpcpb_BatchRollbackRequest_fields, sizeof(kvrpcpb_BatchRollbackRequest),
                           kvrpcpb_BatchRollbackResponse_fields,
                           sizeof(kvrpcpb_BatchRollbackResponse), t->deadline_ns, on_batch, b);
        kvrpcpb_BatchRollbackRequest *r = q->req;
        r->start_version = t->start_ts;
        r->keys.items = tkv_arena_calloc(&q->arena, b->n, sizeof *r->keys.items);
        r->keys.n = b->n;
        for (size_t i = 0; i < b->n; i++)
            r->keys.items[i] = TKV_SLICE(t->muts[b->idx[i]].key, t->muts[b->idx[i]].key_len);
    } else {
        q = client_req_new(kv, "/tinykvpb.TinyKv/KvCommit", kvrpcpb_CommitRequest_fields,
                           sizeof(kvrpcpb_CommitRequest), kvrpcpb_CommitResponse_fields,
                           sizeof(kvrpcpb_CommitResponse), t->deadline_ns, on_batch, b);
        kvrpcpb_CommitRequest *r = q->req;
        r->start_version = t->start_ts;
        r->commit_version = t->commit_ts;
        r->keys.items = tkv_arena_calloc(&q->arena, b->n, sizeof *r->keys.items);
        r->keys.n = b->n;
        for (size_t i = 0; i < b->n; i++)
            r->keys.items[i] = TKV_SLICE(t->muts[b->idx[i]].key, t->muts[b->idx[i]].key_len);
    }
    q->batch = !kv->standalone;
    const struct txn_mut *first = &t->muts[b->idx[0]];
    q->route_key = TKV_SLICE(first->enc, first->enc_len);
    client_req_start(q);
}

static struct batch *batch_new(struct tinykv_txn *t, enum txn_phase ph, size_t n)
{
    struct batch *b = tkv_xcalloc(1, sizeof *b);
    b->t = t;
    b->phase = ph;
    b->idx = tkv_xcalloc(n ? n : 1, sizeof *b->idx);
    tkv_timer_init(&b->timer, batch_timer, b);
    return b;
}

/* Region lookups needed before grouping. */
struct group_wait {
    struct tinykv_txn *t;
    enum txn_phase phase;
    size_t *idx;
    size_t n;
};

static void on_group_region(void *user, int rv, struct client_region *region)
{
    (void)region;
    struct group_wait *g = user;
    struct tinykv_txn *t = g->t;
    if (rv)
        note_error(t, rv);
    else
        send_groups(t, g->phase, g->idx, g->n);
    free(g->idx);
    free(g);
    phase_unit_done(t);
}

/* Split idx[0..n) by region (cache) and send one batch per region. Keys
 * whose region is not cached wait for a scheduler lookup first. Counts every
 * spawned unit in t->pending; never completes a unit synchronously. */
static void send_groups(struct tinykv_txn *t, enum txn_phase ph, const size_t *idx, size_t n)
{
    struct tinykv *kv = t->kv;
    if (n == 0)
        return;
    if (kv->standalone) {
        struct batch *b = batch_new(t, ph, n);
        memcpy(b->idx, idx, n * sizeof *idx);
        b->n = n;
        t->pending++;
        batch_send(b);
        return;
    }
    uint64_t *rid = tkv_xcalloc(n, sizeof *rid);
    for (size_t i = 0; i < n; i++) {
        const struct txn_mut *m = &t->muts[idx[i]];
        struct client_region *r = client_cache_find(&kv->cache, TKV_SLICE(m->enc, m->enc_len));
        if (!r) {
            struct group_wait *g = tkv_xcalloc(1, sizeof *g);
            g->t = t;
            g->phase = ph;
            g->idx = tkv_xmemdup(idx, n * sizeof *idx);
            g->n = n;
            t->pending++;
            client_sched_get_region(kv, TKV_SLICE(m->enc, m->enc_len), t->deadline_ns,
                                    on_group_region, g);
            free(rid);
            return;
        }
        rid[i] = r->id;
    }
    bool *taken = tkv_xcalloc(n, sizeof *taken);
    for (size_t i = 0; i < n; i++) {
        if (taken[i])
            continue;
        struct batch *b = batch_new(t, ph, n);
        for (size_t j = i; j < n; j++)
            if (!taken[j] && rid[j] == rid[i]) {
                taken[j] = true;
                b->idx[b->n++] = idx[j];
            }
        t->pending++;
        batch_send(b);
    }
    free(taken);
    free(rid);
}

static void commit_end(struct tinykv_txn *t, int rv)
{
    tinykv_done_cb cb = t->done_cb;
    void *u = t->user;
    t->done = true;
    t->phase = PH_IDLE;
    cb(u, rv);
    txn_free(t);
}

/* Start a phase over idx[0..n): the phase completes in phase_unit_done. */
static void start_phase(struct tinykv_txn *t, enum txn_phase ph, const size_t *idx, size_t n)
{
    t->phase = ph;
    t->result = 0;
    t->pending++;
    send_groups(t, ph, idx, n);
    phase_unit_done(t);
}

static void start_rollback(struct tinykv_txn *t, int why)
{
    /* Best effort, under a fresh deadline: `why` is what we report. */
    t->fail_rv = why;
    snprintf(t->fail_msg, sizeof t->fail_msg, "%s", t->kv->errmsg);
    t->deadline_ns = client_deadline(t->kv);
    size_t *all = tkv_xcalloc(t->n_muts, sizeof *all);
    for (size_t i = 0; i < t->n_muts; i++)
        all[i] = i;
    start_phase(t, PH_ROLLBACK, all, t->n_muts);
    free(all);
}

static void on_commit_ts(void *user, int rv, uint64_t ts)
{
    struct tinykv_txn *t = user;
    if (rv) {
        start_rollback(t, rv);
        return;
    }
    t->commit_ts = ts;
    size_t primary = 0;
    start_phase(t, PH_COMMIT_PRIMARY, &primary, 1);
}

static void start_rest(struct tinykv_txn *t, enum txn_phase ph)
{
    size_t *rest = tkv_xcalloc(t->n_muts - 1, sizeof *rest);
    for (size_t i = 1; i < t->n_muts; i++)
        rest[i - 1] = i;
    start_phase(t, ph, rest, t->n_muts - 1);
    free(rest);
}

static void phase_unit_done(struct tinykv_txn *t)
{
    if (--t->pending > 0)
        return;
    int rv = t->result;
    switch (t->phase) {
    case PH_PREWRITE_PRIMARY:
        if (rv) {
            start_rollback(t, rv);
            return;
        }
        {
            size_t *rest = tkv_xcalloc(t->n_muts, sizeof *rest), n = 0;
            for (size_t i = 0; i < t->n_muts; i++)
                if (!t->muts[i].in_first)
                    rest[n++] = i;
            if (n) {
                start_phase(t, PH_PREWRITE_SECONDARY, rest, n);
                free(rest);
                return;
            }
            free(rest);
        }
        t->phase = PH_TSO_COMMIT;
        client_tso(t->kv, t->deadline_ns, on_commit_ts, t);
        return;
    case PH_PREWRITE_SECONDARY:
        if (rv) {
            start_rollback(t, rv);
            return;
        }
        t->phase = PH_TSO_COMMIT;
        client_tso(t->kv, t->deadline_ns, on_commit_ts, t);
        return;
    case PH_COMMIT_PRIMARY:
        if (rv == TINYKV_EABORTED || rv == TINYKV_ECONFLICT) {
            /* Our lock was gone: rolled back by another client (expired). */
            start_rollback(t, TINYKV_EABORTED);
            return;
        }
        if (rv == TKV_ESHUTDOWN) { /* the handle is closing: say so */
            commit_end(t, rv);
            return;
        }
        if (rv) { /* no answer: the commit point may or may not have passed */
            client_set_errmsg(t->kv, "primary commit: %s", tinykv_strerror(rv));
            commit_end(t, TINYKV_EUNDETERMINED);
            return;
        }
        if (t->n_muts > 1) {
            start_rest(t, PH_COMMIT_SECONDARY);
            return;
        }
        commit_end(t, 0);
        return;
    case PH_COMMIT_SECONDARY:
        /* The primary is committed, so the transaction is: a lock left on a
         * secondary is resolved by the next reader from the primary. */
        commit_end(t, 0);
        return;
    case PH_ROLLBACK:
        client_set_errmsg(t->kv, "%s", t->fail_msg);
        commit_end(t, t->fail_rv);
        return;
    default:
        return;
    }
}

int tinykv_txn_commit(struct tinykv_txn *t, tinykv_done_cb cb, void *user)
{
    int rv = op_begin(t, PH_PREWRITE_PRIMARY);
    if (rv)
        return rv;
    t->done_cb = cb;
    t->user = user;
    if (t->n_muts == 0) { /* read-only: nothing to commit */
        t->timer_action = TA_ROLLBACK_DONE;
        tkv_timer_start(t->kv->r, &t->timer, 0);
        return 0;
    }
    /* Phase 1: the primary with every key of its region (standalone: one
     * region, so everything; region not cached yet: the primary alone). */
    struct tinykv *kv = t->kv;
    struct client_region *pr =
        kv->standalone ? NULL
                       : client_cache_find(&kv->cache, TKV_SLICE(t->muts[0].enc, t->muts[0].enc_len));
    size_t *first = tkv_xcalloc(t->n_muts, sizeof *first), n = 0;
    for (size_t i = 0; i < t->n_muts; i++) {
        struct txn_mut *m = &t->muts[i];
        m->in_first = i == 0 || kv->standalone ||
                      (pr && client_region_contains(pr, TKV_SLICE(m->enc, m->enc_len)));
        if (m->in_first)
            first[n++] = i;
    }
    start_phase(t, PH_PREWRITE_PRIMARY, first, n);
    free(first);
    return 0;
}

int tinykv_txn_rollback(struct tinykv_txn *t, tinykv_done_cb cb, void *user)
{
    /* Writes are only buffered until commit, so there is nothing on the
     * servers to undo: end the transaction (next turn). */
    int rv = op_begin(t, PH_ROLLBACK);
    if (rv)
        return rv;
    t->done_cb = cb;
    t->user = user;
    t->timer_action = TA_ROLLBACK_DONE;
    tkv_timer_start(t->kv->r, &t->timer, 0);
    return 0;
}

static void txn_timer(struct tkv_timer *tm)
{
    struct tinykv_txn *t = tm->data;
    int action = t->timer_action;
    t->timer_action = TA_NONE;
    switch (action) {
    case TA_GET_BUFFERED:
        get_end(t, t->get_rv, t->get_value);
        return;
    case TA_GET_RETRY:
        if (t->result)
            get_end(t, t->result, (struct tkv_slice){0});
        else
            get_send(t);
        return;
    case TA_SCAN_RETRY:
        if (t->result)
            scan_end(t, t->result);
        else
            scan_send(t);
        return;
    case TA_ROLLBACK_DONE:
        commit_end(t, 0);
        return;
    default:
        return;
    }
}
