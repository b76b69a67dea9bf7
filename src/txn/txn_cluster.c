/* Cluster mode of the Kv* commands (tkv/txn_cluster.h): per-region latch
 * tables on the leader, each command run by tkv_raftstore_txn (ReadIndex,
 * one snapshot, one proposal). Reads take no latches; ResolveLock scans for
 * its keys first (a read-only pass), then latches them and runs. */
#include <stdlib.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/txn_cluster.h"

/* Bound on one KvScan answer (the gRPC message limit of the server). */
#define SCAN_MAX_BYTES (4u << 20)

struct region_latches {
    uint64_t region_id;
    struct tkv_txn_latches *latches;
};

struct job {
    struct tkv_txn_cluster *tc;
    struct job *next;               /* ready queue */
    struct job *all_prev, *all_next; /* every live job (answered at free) */
    struct tkv_rs_header h;
    enum tkv_txn_cmd cmd;
    const void *req;
    void *resp;
    struct tkv_arena *arena;
    tkv_txn_cluster_cb cb;
    void *arg;
    /* writing commands */
    struct tkv_txn_latches *latches; /* NULL: none held / wanted */
    struct tkv_txn_latch_req latch;
    bool latched;
    /* resolve: the keys found by the first (read-only) pass */
    bool resolve_scanned;
    struct tkv_slice *resolve_keys;
    size_t n_resolve_keys;
    /* filled by run() */
    struct tkv_rs_region region;
    const char *why;
    struct tkv_rs_region_error rerr;
};

struct tkv_txn_cluster {
    struct tkv_raftstore *rs;
    struct region_latches *regions;
    size_t n_regions;
    struct job *ready_head, *ready_tail;
    struct job *all;
};

struct tkv_txn_cluster *tkv_txn_cluster_new(struct tkv_raftstore *rs)
{
    struct tkv_txn_cluster *tc = tkv_xcalloc(1, sizeof(*tc));
    tc->rs = rs;
    return tc;
}

static void finish(struct job *j, int rv)
{
    struct tkv_txn_cluster_result res = {.rv = rv, .why = j->why};
    if (rv == TKV_EREGION)
        res.region_error = &j->rerr;
    if (j->latched) {
        /* may hand latches to parked jobs: their on_ready only queues */
        tkv_txn_latches_release(j->latches, &j->latch);
        j->latched = false;
    }
    struct tkv_txn_cluster *tc = j->tc;
    if (j->all_prev)
        j->all_prev->all_next = j->all_next;
    else
        tc->all = j->all_next;
    if (j->all_next)
        j->all_next->all_prev = j->all_prev;
    j->cb(j->arg, &res);
    tkv_free(j);
}

void tkv_txn_cluster_free(struct tkv_txn_cluster *tc)
{
    if (!tc)
        return;
    /* queued and parked jobs (those in the raftstore were answered when it
     * closed); the latch tables go away with us, nothing is released */
    tc->ready_head = tc->ready_tail = NULL;
    while (tc->all) {
        struct job *j = tc->all;
        j->latched = false;
        finish(j, TKV_ESHUTDOWN);
    }
    for (size_t i = 0; i < tc->n_regions; i++)
        tkv_txn_latches_free(tc->regions[i].latches);
    tkv_free(tc->regions);
    tkv_free(tc);
}

static struct tkv_txn_latches *latches_of(struct tkv_txn_cluster *tc, uint64_t region_id)
{
    for (size_t i = 0; i < tc->n_regions; i++)
        if (tc->regions[i].region_id == region_id)
            return tc->regions[i].latches;
    tc->regions = tkv_xrealloc(tc->regions, (tc->n_regions + 1) * sizeof(*tc->regions));
    tc->regions[tc->n_regions] =
        (struct region_latches){.region_id = region_id, .latches = tkv_txn_latches_new()};
    return tc->regions[tc->n_regions++].latches;
}

size_t tkv_txn_cluster_latched(const struct tkv_txn_cluster *tc, uint64_t region_id)
{
    for (size_t i = 0; i < tc->n_regions; i++)
        if (tc->regions[i].region_id == region_id)
            return tkv_txn_latches_held(tc->regions[i].latches);
    return 0;
}

static void enqueue(struct job *j)
{
    struct tkv_txn_cluster *tc = j->tc;
    j->next = NULL;
    if (tc->ready_tail)
        tc->ready_tail->next = j;
    else
        tc->ready_head = j;
    tc->ready_tail = j;
}

static void on_latched(struct tkv_txn_latch_req *req)
{
    struct job *j = req->data;
    j->latched = true;
    enqueue(j); /* the latch table must not be re-entered from here */
}

/* Keys to latch (user keys), or NULL for reads. */
static const struct tkv_slice *cmd_keys(struct job *j, size_t *n)
{
    switch (j->cmd) {
    case TKV_TXN_GET: {
        const kvrpcpb_GetRequest *r = j->req;
        *n = 1;
        return &r->key;
    }
    case TKV_TXN_SCAN: {
        const kvrpcpb_ScanRequest *r = j->req;
        *n = r->start_key.len ? 1 : 0;
        return &r->start_key;
    }
    case TKV_TXN_PREWRITE: {
        const kvrpcpb_PrewriteRequest *r = j->req;
        struct tkv_slice *keys = tkv_arena_alloc(j->arena, (r->mutations.n + 1) * sizeof(*keys));
        for (size_t i = 0; i < r->mutations.n; i++)
            keys[i] = r->mutations.items[i].key;
        *n = r->mutations.n;
        return keys;
    }
    case TKV_TXN_COMMIT: {
        const kvrpcpb_CommitRequest *r = j->req;
        *n = r->keys.n;
        return r->keys.items;
    }
    case TKV_TXN_CHECK_TXN_STATUS: {
        const kvrpcpb_CheckTxnStatusRequest *r = j->req;
        *n = 1;
        return &r->primary_key;
    }
    case TKV_TXN_BATCH_ROLLBACK: {
        const kvrpcpb_BatchRollbackRequest *r = j->req;
        *n = r->keys.n;
        return r->keys.items;
    }
    case TKV_TXN_RESOLVE_LOCK:
        *n = j->n_resolve_keys;
        return j->resolve_keys;
    }
    *n = 0;
    return NULL;
}

/* The command on the leader's snapshot (tkv_rs_txn_run_fn). */
static int run_cmd(void *arg, struct tkv_engine_snap *snap, const struct tkv_rs_region *region,
                   const struct tkv_rs_modify **mods_out, size_t *n_out)
{
    struct job *j = arg;
    j->region = *region;
    struct tkv_txn_region rg = {.start = TKV_SLICE(j->region.start, j->region.start_len),
                                .end = TKV_SLICE(j->region.end, j->region.end_len)};
    struct tkv_txn_ctx c = {.snap = snap, .arena = j->arena, .region = &rg};
    struct tkv_txn_writes w = {0};
    int rv = 0;
    *n_out = 0;
    switch (j->cmd) {
    case TKV_TXN_GET:
        rv = tkv_txn_kv_get(&c, j->req, j->resp);
        break;
    case TKV_TXN_SCAN:
        rv = tkv_txn_kv_scan(&c, j->req, SCAN_MAX_BYTES, j->resp);
        break;
    case TKV_TXN_PREWRITE:
        rv = tkv_txn_kv_prewrite(&c, j->req, j->resp, &w);
        break;
    case TKV_TXN_COMMIT:
        rv = tkv_txn_kv_commit(&c, j->req, j->resp, &w);
        break;
    case TKV_TXN_CHECK_TXN_STATUS:
        rv = tkv_txn_kv_check_txn_status(&c, j->req, j->resp, &w);
        break;
    case TKV_TXN_BATCH_ROLLBACK:
        rv = tkv_txn_kv_batch_rollback(&c, j->req, j->resp, &w);
        break;
    case TKV_TXN_RESOLVE_LOCK:
        if (!j->resolve_scanned) {
            /* first pass: which keys hold this transaction's locks */
            const kvrpcpb_ResolveLockRequest *r = j->req;
            bool truncated;
            return tkv_txn_resolve_scan(snap, j->arena, r->start_version, &rg, &j->resolve_keys,
                                        &j->n_resolve_keys, &truncated);
        }
        rv = tkv_txn_kv_resolve_lock(&c, j->req, j->resolve_keys, j->n_resolve_keys, j->resp, &w);
        break;
    }
    if (rv == TKV_EINVAL)
        j->why = c.why;
    if (rv < 0 || w.n == 0)
        return rv;
    struct tkv_rs_modify *mods = tkv_arena_alloc(j->arena, w.n * sizeof(*mods));
    for (size_t i = 0; i < w.n; i++)
        mods[i] = (struct tkv_rs_modify){.cf = w.items[i].cf, .is_delete = w.items[i].is_delete,
                                         .key = w.items[i].key, .value = w.items[i].value};
    *mods_out = mods;
    *n_out = w.n;
    return 0;
}

static void start(struct job *j);

static void on_done(void *arg, const struct tkv_rs_result *res)
{
    struct job *j = arg;
    int rv = res->rv;
    if (rv == TKV_EREGION) {
        j->rerr = res->region_error;
    } else if ((rv == TKV_EINVAL || rv == TKV_ETOOBIG) && !j->why) {
        /* refused by the raftstore's request checks */
        j->why = rv == TKV_EINVAL ? "a key is empty" : "a key is too long";
        rv = TKV_EINVAL;
    } else if (rv == TKV_EKEYRANGE) {
        /* a key outside the region, found by the command itself */
        memset(&j->rerr, 0, sizeof(j->rerr));
        j->rerr.kind = TKV_RS_KEY_NOT_IN_REGION;
        j->rerr.region_id = j->region.id;
        j->rerr.n_current = 1;
        j->rerr.current[0] = j->region;
        rv = TKV_EREGION;
    }
    if (rv == 0 && j->cmd == TKV_TXN_RESOLVE_LOCK && !j->resolve_scanned) {
        j->resolve_scanned = true;
        if (j->n_resolve_keys == 0) {
            memset(j->resp, 0, sizeof(kvrpcpb_ResolveLockResponse));
            finish(j, 0);
            return;
        }
        tkv_txn_latch_req_init(&j->latch, j->arena, j->resolve_keys, j->n_resolve_keys);
        j->latch.on_ready = on_latched;
        j->latch.data = j;
        j->latches = latches_of(j->tc, j->h.region_id);
        if (tkv_txn_latches_acquire(j->latches, &j->latch)) {
            j->latched = true;
            enqueue(j); /* not from inside the raftstore's callback */
        }
        return;
    }
    finish(j, rv);
}

static void start(struct job *j)
{
    size_t n = 0;
    const struct tkv_slice *keys = cmd_keys(j, &n);
    tkv_raftstore_txn(j->tc->rs, &j->h, keys, n, run_cmd, on_done, j);
}

void tkv_txn_cluster_submit(struct tkv_txn_cluster *tc, const struct tkv_rs_header *h,
                            enum tkv_txn_cmd cmd, const void *req, void *resp,
                            struct tkv_arena *arena, tkv_txn_cluster_cb cb, void *arg)
{
    struct job *j = tkv_xcalloc(1, sizeof(*j));
    *j = (struct job){.tc = tc, .h = *h, .cmd = cmd, .req = req, .resp = resp, .arena = arena,
                      .cb = cb, .arg = arg, .all_next = tc->all};
    if (tc->all)
        tc->all->all_prev = j;
    tc->all = j;
    int rv = 0;
    switch (cmd) {
    case TKV_TXN_GET:
    case TKV_TXN_SCAN:
        break; /* checked by the command (no latches) */
    case TKV_TXN_PREWRITE:
        rv = tkv_txn_check_prewrite(req, &j->why);
        break;
    case TKV_TXN_COMMIT:
        rv = tkv_txn_check_commit(req, &j->why);
        break;
    case TKV_TXN_CHECK_TXN_STATUS:
        rv = tkv_txn_check_check_txn_status(req, &j->why);
        break;
    case TKV_TXN_BATCH_ROLLBACK:
        rv = tkv_txn_check_rollback(req, &j->why);
        break;
    case TKV_TXN_RESOLVE_LOCK:
        rv = tkv_txn_check_resolve_lock(req, &j->why);
        break;
    default:
        rv = TKV_EINVAL;
        j->why = "unknown transactional command";
    }
    if (rv) {
        finish(j, rv);
        return;
    }
    if (cmd == TKV_TXN_GET || cmd == TKV_TXN_SCAN || cmd == TKV_TXN_RESOLVE_LOCK) {
        enqueue(j); /* reads, and ResolveLock's scan, without latches */
        return;
    }
    size_t n = 0;
    const struct tkv_slice *keys = cmd_keys(j, &n);
    tkv_txn_latch_req_init(&j->latch, arena, keys, n);
    j->latch.on_ready = on_latched;
    j->latch.data = j;
    j->latches = latches_of(tc, h->region_id);
    if (tkv_txn_latches_acquire(j->latches, &j->latch)) {
        j->latched = true;
        enqueue(j);
    }
}

size_t tkv_txn_cluster_poll(struct tkv_txn_cluster *tc)
{
    size_t n = 0;
    /* only what is queued now: jobs queued while starting wait a turn */
    struct job *j = tc->ready_head;
    tc->ready_head = tc->ready_tail = NULL;
    while (j) {
        struct job *next = j->next;
        start(j);
        n++;
        j = next;
    }
    return n;
}
