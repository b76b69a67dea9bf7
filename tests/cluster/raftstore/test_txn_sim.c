/* Transactions in the deterministic cluster simulation (issue 11 item 4):
 * 5 stores running region 1 through the raftstore, one txn cluster driver
 * per store (tkv/txn_cluster.h: latches on the leader, one proposal per
 * command), and Percolator clients (2PC written here against the Kv*
 * commands: primary first, lock resolution through KvCheckTxnStatus /
 * KvResolveLock) under crashes, partitions and an unreliable network,
 * through leader changes. Some clients "die" mid-commit (abandon the
 * transaction after its prewrite or after its primary commit): their locks
 * stay behind for the others to resolve once the TTL passed.
 *   bank    transfers between accounts; every snapshot read (one KvScan) must
 *           sum to the total (sicheck bank);
 *   append  Elle list-append (read a list, append a unique integer by
 *           read-modify-write), checked by sicheck with the realtime
 *           lost-write check (one timestamp oracle).
 * A failure prints the seed; TKV_SEED=<n> replays it; TKV_SEEDS=<n> runs n
 * seeds per scenario (the long label runs more). The checkers are shown to
 * catch injected bugs: txn failpoints (libfiu, test builds) for reads that
 * ignore locks (bank) and prewrites over another transaction's lock
 * (append). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

#include "rs_sim.h"
#include "sicheck.h"
#include "tkv/err.h"
#include "tkv/txn_cluster.h"

#ifndef TXN_DEFAULT_SEEDS
#define TXN_DEFAULT_SEEDS 2
#endif

#define N_CLIENTS 6
#define MAX_KEYS 8
#define MAX_MOPS 3
#define LOCK_TTL_MS 120
#define REQ_TIMEOUT_MS 1500
#define LIST_MAX 4096

enum workload { BANK, APPEND };

enum phase {
    PH_IDLE,
    PH_READ,       /* bank transfer / append: KvGet of keys[cur] */
    PH_SCAN,       /* bank reader: one KvScan of every account */
    PH_PREWRITE,   /* all mutations in one request (one region) */
    PH_COMMIT_PRI, /* the commit point */
    PH_COMMIT_SEC,
    PH_ROLLBACK,
    PH_CHECK,   /* met a lock: KvCheckTxnStatus of its primary */
    PH_RESOLVE, /* then KvResolveLock */
};

struct tsim;
struct creq;

struct tclient {
    struct tsim *t;
    int idx;
    enum phase ph, resume; /* resume: the phase a lock resolution returns to */
    uint64_t token;        /* answers of abandoned requests are ignored */
    uint64_t next_at, req_deadline;
    int target;
    bool waiting;
    /* the transaction */
    uint64_t start_ts, commit_ts;
    size_t si_txn;
    bool reader;
    unsigned n_keys, cur;
    unsigned keys[MAX_KEYS];
    bool append[MAX_KEYS];
    uint64_t append_val[MAX_KEYS];
    uint64_t lists[MAX_MOPS + 1][LIST_MAX];
    size_t list_n[MAX_MOPS + 1];
    int64_t bal[MAX_KEYS];
    bool prewritten;
    bool commit_acked; /* the primary commit answered success once */
    /* lock being resolved */
    char lock_primary[64];
    size_t lock_primary_len;
    uint64_t lock_ts, resolve_commit;
    struct creq *rq; /* the request being built / answered */
};

/* One request with its own memory: an abandoned one (timed out) may still
 * be answered later, after the client moved on. */
struct creq {
    struct tclient *c;
    uint64_t token;
    struct tkv_arena arena;
    union {
        kvrpcpb_GetRequest get;
        kvrpcpb_ScanRequest scan;
        kvrpcpb_PrewriteRequest prewrite;
        kvrpcpb_CommitRequest commit;
        kvrpcpb_BatchRollbackRequest rollback;
        kvrpcpb_CheckTxnStatusRequest check;
        kvrpcpb_ResolveLockRequest resolve;
    } req;
    union {
        kvrpcpb_GetResponse get;
        kvrpcpb_ScanResponse scan;
        kvrpcpb_PrewriteResponse prewrite;
        kvrpcpb_CommitResponse commit;
        kvrpcpb_BatchRollbackResponse rollback;
        kvrpcpb_CheckTxnStatusResponse check;
        kvrpcpb_ResolveLockResponse resolve;
    } resp;
    enum tkv_txn_cmd cmd;
};

struct tsim {
    struct sim s;
    enum workload wl;
    unsigned n_accounts, n_keys;
    int64_t balance;
    bool clients_on;
    struct tkv_txn_cluster *tc[SIM_MAX_STORES + 1];
    struct tkv_txn_cluster *closing[SIM_MAX_STORES + 1];
    struct tclient c[N_CLIENTS];
    uint64_t ts_last;
    uint64_t next_value;
    struct si_history *hist;
    struct si_bank *bank;
    uint64_t n_committed, n_aborted, n_unknown, n_resolved, n_abandoned, n_reads;
    uint64_t n_commit_retries, n_bad_retries;
    int last_leader;
    uint64_t last_term;
    bool setup; /* the bank's initial transaction: its client does not die */
    bool inject_stale_reads; /* INJECTED BUG: KvGet on any store's engine, no ReadIndex */
    uint64_t n_leader_changes;
};

/* One timestamp oracle: physical ms << 18 | logical, strictly increasing. */
static uint64_t tso(struct tsim *t)
{
    uint64_t ts = t->s.now << 18;
    t->ts_last = ts > t->ts_last ? ts : t->ts_last + 1;
    return t->ts_last;
}

static struct tkv_slice key_of(struct tsim *t, struct tkv_arena *a, unsigned k)
{
    char *buf = tkv_arena_alloc(a, 16);
    int n = snprintf(buf, 16, "%s%02u", t->wl == BANK ? "acct" : "k", k);
    return TKV_SLICE(buf, (size_t)n);
}

/* ---- driver hooks ---- */

static void on_store(void *arg, int store, enum sim_store_event ev, struct tkv_raftstore *rs)
{
    struct tsim *t = arg;
    switch (ev) {
    case SIM_STORE_OPENED:
        t->tc[store] = tkv_txn_cluster_new(rs);
        break;
    case SIM_STORE_CLOSING: /* no new commands on it; close answers the rest */
        t->closing[store] = t->tc[store];
        t->tc[store] = NULL;
        break;
    case SIM_STORE_CLOSED:
        tkv_txn_cluster_free(t->closing[store]);
        t->closing[store] = NULL;
        break;
    }
}

static void client_step(struct tclient *c);

static void on_step(void *arg)
{
    struct tsim *t = arg;
    /* leader changes: a new leader, or the same store elected again in a
     * new term (its old term's proposals failed either way) */
    int leader = sim_leader(&t->s);
    if (leader) {
        struct tkv_rs_region_status st;
        tkv_raftstore_region_status(sim_store(&t->s, leader), 1, &st);
        if (leader != t->last_leader || st.term != t->last_term) {
            t->n_leader_changes += t->last_leader != 0;
            t->last_leader = leader;
            t->last_term = st.term;
        }
    }
    for (int i = 0; i < N_CLIENTS; i++)
        client_step(&t->c[i]);
    for (int i = 1; i <= t->s.o.n_stores; i++)
        if (t->tc[i])
            (void)tkv_txn_cluster_poll(t->tc[i]);
}

/* ---- requests ---- */

static void on_answer(void *arg, const struct tkv_txn_cluster_result *res);

static void creq_free(struct creq *r)
{
    if (!r)
        return;
    tkv_arena_close(&r->arena);
    free(r);
}

static void send_req(struct tclient *c)
{
    struct tsim *t = c->t;
    c->waiting = true;
    c->token++;
    c->rq->token = c->token;
    if (c->target < 1 || c->target > t->s.o.n_stores || !t->tc[c->target]) {
        /* no such store (down): try another one shortly */
        c->waiting = false;
        c->target = (int)(sim_rnd(&t->s) % (uint64_t)t->s.o.n_stores) + 1;
        c->next_at = t->s.now + 5;
        creq_free(c->rq);
        c->rq = NULL;
        return;
    }
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&t->s, c->target), 1, &st);
    struct tkv_rs_header h = {.region_id = 1,
                              .peer = {.id = (uint64_t)c->target, .store_id = (uint64_t)c->target},
                              .epoch = st.region.epoch};
    struct creq *r = c->rq;
    tkv_txn_cluster_submit(t->tc[c->target], &h, r->cmd, &r->req, &r->resp, &r->arena, on_answer, r);
}

static void end_txn(struct tclient *c, enum si_status st)
{
    struct tsim *t = c->t;
    if (t->wl == APPEND)
        si_txn_end(t->hist, c->si_txn, st, t->s.now);
    if (st == SI_COMMITTED)
        t->n_committed++;
    else if (st == SI_ABORTED)
        t->n_aborted++;
    else
        t->n_unknown++;
    c->ph = PH_IDLE;
    c->waiting = false;
    c->next_at = t->s.now + sim_rnd(&t->s) % 5;
}

static void start_phase(struct tclient *c, enum phase ph);
static void stale_read(struct tclient *c);

/* The request's region is gone / not led here / timed out: retry later at
 * another store (writes are idempotent: prewrite rewrites its own lock,
 * commit and rollback answer the same twice). */
static void retry(struct tclient *c, const struct tkv_rs_region_error *e)
{
    struct tsim *t = c->t;
    if (e && e->kind == TKV_RS_NOT_LEADER && e->leader.store_id)
        c->target = (int)e->leader.store_id;
    else
        c->target = (int)(sim_rnd(&t->s) % (uint64_t)t->s.o.n_stores) + 1;
    c->waiting = false;
    c->next_at = t->s.now + 1 + sim_rnd(&t->s) % 10;
}

/* A lock of another transaction: find out what became of it. */
static void meet_lock(struct tclient *c, const kvrpcpb_LockInfo *li)
{
    c->resume = c->ph;
    c->lock_primary_len = TKV_MIN(li->primary_lock.len, sizeof(c->lock_primary));
    memcpy(c->lock_primary, li->primary_lock.ptr, c->lock_primary_len);
    c->lock_ts = li->lock_version;
    start_phase(c, PH_CHECK);
}

static void build_mutations(struct tclient *c)
{
    struct tsim *t = c->t;
    kvrpcpb_PrewriteRequest *r = &c->rq->req.prewrite;
    memset(r, 0, sizeof(*r));
    r->start_version = c->start_ts;
    r->lock_ttl = LOCK_TTL_MS;
    r->mutations.items = tkv_arena_calloc(&c->rq->arena, c->n_keys, sizeof(*r->mutations.items));
    for (unsigned i = 0; i < c->n_keys; i++) {
        if (t->wl == APPEND && !c->append[i])
            continue;
        kvrpcpb_Mutation *m = &r->mutations.items[r->mutations.n++];
        m->op = kvrpcpb_Op_Put;
        m->key = key_of(t, &c->rq->arena, c->keys[i]);
        char *v = tkv_arena_alloc(&c->rq->arena, LIST_MAX * 21 + 1);
        size_t off = 0;
        if (t->wl == BANK) {
            off = (size_t)snprintf(v, 32, "%" PRId64, c->bal[c->keys[i]]);
        } else {
            for (size_t k = 0; k < c->list_n[i]; k++)
                off += (size_t)sprintf(v + off, "%s%" PRIu64, k ? "," : "", c->lists[i][k]);
            off += (size_t)sprintf(v + off, "%s%" PRIu64, c->list_n[i] ? "," : "", c->append_val[i]);
        }
        m->value = TKV_SLICE(v, off);
        if (r->mutations.n == 1)
            r->primary_lock = m->key;
    }
}

static void commit_keys(struct tclient *c, bool primary)
{
    struct tsim *t = c->t;
    kvrpcpb_CommitRequest *r = &c->rq->req.commit;
    memset(r, 0, sizeof(*r));
    r->start_version = c->start_ts;
    r->commit_version = c->commit_ts;
    r->keys.items = tkv_arena_calloc(&c->rq->arena, c->n_keys, sizeof(*r->keys.items));
    bool first = true;
    for (unsigned i = 0; i < c->n_keys; i++) {
        if (t->wl == APPEND && !c->append[i])
            continue;
        if (first == primary)
            r->keys.items[r->keys.n++] = key_of(t, &c->rq->arena, c->keys[i]);
        first = false;
    }
}

static void start_phase(struct tclient *c, enum phase ph)
{
    struct tsim *t = c->t;
    c->ph = ph;
    if (ph != PH_IDLE) {
        c->rq = calloc(1, sizeof(*c->rq));
        c->rq->c = c;
        tkv_arena_init(&c->rq->arena, 0);
    }
    c->req_deadline = t->s.now + REQ_TIMEOUT_MS;
    switch (ph) {
    case PH_READ:
        memset(&c->rq->req.get, 0, sizeof(c->rq->req.get));
        c->rq->req.get.key = key_of(t, &c->rq->arena, c->keys[c->cur]);
        c->rq->req.get.version = c->start_ts;
        c->rq->cmd = TKV_TXN_GET;
        if (t->inject_stale_reads) {
            stale_read(c);
            return;
        }
        break;
    case PH_SCAN:
        memset(&c->rq->req.scan, 0, sizeof(c->rq->req.scan));
        c->rq->req.scan.start_key = TKV_SLICE("acct", 4);
        c->rq->req.scan.limit = t->n_accounts + 1;
        c->rq->req.scan.version = c->start_ts;
        c->rq->cmd = TKV_TXN_SCAN;
        break;
    case PH_PREWRITE:
        build_mutations(c);
        c->rq->cmd = TKV_TXN_PREWRITE;
        break;
    case PH_COMMIT_PRI:
    case PH_COMMIT_SEC:
        commit_keys(c, ph == PH_COMMIT_PRI);
        if (c->rq->req.commit.keys.n == 0) {
            creq_free(c->rq);
            c->rq = NULL;
            end_txn(c, SI_COMMITTED);
            return;
        }
        c->rq->cmd = TKV_TXN_COMMIT;
        break;
    case PH_ROLLBACK: {
        kvrpcpb_BatchRollbackRequest *r = &c->rq->req.rollback;
        memset(r, 0, sizeof(*r));
        r->start_version = c->start_ts;
        build_mutations(c); /* for the keys */
        kvrpcpb_PrewriteRequest pw = c->rq->req.prewrite;
        memset(r, 0, sizeof(*r));
        r->start_version = c->start_ts;
        r->keys.items = tkv_arena_calloc(&c->rq->arena, pw.mutations.n + 1, sizeof(*r->keys.items));
        for (size_t i = 0; i < pw.mutations.n; i++)
            r->keys.items[r->keys.n++] = pw.mutations.items[i].key;
        c->rq->cmd = TKV_TXN_BATCH_ROLLBACK;
        break;
    }
    case PH_CHECK:
        memset(&c->rq->req.check, 0, sizeof(c->rq->req.check));
        c->rq->req.check.primary_key =
            TKV_SLICE(tkv_arena_memdup(&c->rq->arena, c->lock_primary, c->lock_primary_len),
                      c->lock_primary_len);
        c->rq->req.check.lock_ts = c->lock_ts;
        c->rq->req.check.current_ts = tso(t);
        c->rq->cmd = TKV_TXN_CHECK_TXN_STATUS;
        break;
    case PH_RESOLVE:
        memset(&c->rq->req.resolve, 0, sizeof(c->rq->req.resolve));
        c->rq->req.resolve.start_version = c->lock_ts;
        c->rq->req.resolve.commit_version = c->resolve_commit;
        c->rq->cmd = TKV_TXN_RESOLVE_LOCK;
        break;
    case PH_IDLE:
        return;
    }
    send_req(c);
}

static void handle_answer(struct tclient *c, const struct tkv_txn_cluster_result *res);

/* INJECTED BUG (negative control): the read runs the same KvGet on the
 * engine of a random store, follower or deposed leader, without ReadIndex:
 * it may miss what was committed (a stale snapshot). */
static void stale_read(struct tclient *c)
{
    struct tsim *t = c->t;
    int store = (int)(sim_rnd(&t->s) % (uint64_t)t->s.o.n_stores) + 1;
    struct tkv_engine_session *sess = NULL;
    struct tkv_engine_snap *snap = NULL;
    struct tkv_txn_ctx ctx = {.arena = &c->rq->arena};
    struct tkv_txn_cluster_result res = {0};
    res.rv = tkv_engine_session_open(sim_engine(&t->s, store), &sess);
    if (res.rv == 0)
        res.rv = tkv_engine_snap_open(sess, &snap);
    ctx.snap = snap;
    if (res.rv == 0)
        res.rv = tkv_txn_kv_get(&ctx, &c->rq->req.get, &c->rq->resp.get);
    tkv_engine_snap_close(snap);
    tkv_engine_session_close(sess);
    struct creq *r = c->rq;
    c->token++;
    r->token = c->token;
    c->waiting = false;
    handle_answer(c, &res);
    if (c->rq == r)
        c->rq = NULL;
    creq_free(r);
}

static bool parse_list(struct tkv_slice v, uint64_t *out, size_t *n)
{
    *n = 0;
    const char *p = (const char *)v.ptr, *end = p + v.len;
    while (p < end && *n < LIST_MAX) {
        char *e;
        out[(*n)++] = strtoull(p, &e, 10);
        if (e == p)
            return false;
        p = e < end && *e == ',' ? e + 1 : e;
    }
    return true;
}

static void handle_answer(struct tclient *c, const struct tkv_txn_cluster_result *res);

static void on_answer(void *arg, const struct tkv_txn_cluster_result *res)
{
    struct creq *r = arg;
    struct tclient *c = r->c;
    if (r->token == c->token && c->waiting) { /* else given up on */
        c->waiting = false;
        c->rq = r;
        handle_answer(c, res);
        if (c->rq == r)
            c->rq = NULL;
    }
    creq_free(r);
}

static void handle_answer(struct tclient *c, const struct tkv_txn_cluster_result *res)
{
    struct tsim *t = c->t;
    if (res->rv == TKV_EREGION || res->rv == TKV_ESHUTDOWN) {
        retry(c, res->rv == TKV_EREGION ? res->region_error : NULL);
        return;
    }
    if (res->rv != 0) {
        sim_fail(&t->s, "client %d: command %d failed: %d (%s)", c->idx, (int)c->rq->cmd, res->rv,
                 res->why ? res->why : "");
        return;
    }
    switch (c->ph) {
    case PH_READ: {
        kvrpcpb_GetResponse *g = &c->rq->resp.get;
        if (g->has_error) {
            if (!g->error.has_locked) {
                sim_fail(&t->s, "KvGet: unexpected KeyError");
                return;
            }
            meet_lock(c, &g->error.locked);
            return;
        }
        unsigned k = c->keys[c->cur];
        if (t->wl == BANK) {
            char buf[32];
            size_t n = TKV_MIN(g->value.len, sizeof(buf) - 1);
            memcpy(buf, g->value.ptr, n);
            buf[n] = 0;
            c->bal[k] = g->not_found ? 0 : strtoll(buf, NULL, 10);
        } else {
            if (!parse_list(g->not_found ? TKV_SLICE(NULL, 0) : g->value, c->lists[c->cur],
                            &c->list_n[c->cur])) {
                sim_fail(&t->s, "KvGet: unparsable list");
                return;
            }
            char kn[8];
            snprintf(kn, sizeof kn, "k%02u", k);
            si_txn_read(t->hist, c->si_txn, kn, strlen(kn), c->lists[c->cur], c->list_n[c->cur]);
            if (c->append[c->cur]) {
                si_txn_append(t->hist, c->si_txn, kn, strlen(kn), c->append_val[c->cur]);
            }
        }
        if (++c->cur < c->n_keys) {
            start_phase(c, PH_READ);
            return;
        }
        if (t->wl == BANK) {
            int64_t amount = 1 + (int64_t)(sim_rnd(&t->s) % 20);
            unsigned a = c->keys[0], b = c->keys[1];
            if (c->bal[a] < amount) {
                end_txn(c, SI_ABORTED);
                return;
            }
            c->bal[a] -= amount;
            c->bal[b] += amount;
            start_phase(c, PH_PREWRITE);
            return;
        }
        bool writes = false;
        for (unsigned i = 0; i < c->n_keys; i++)
            writes |= c->append[i];
        if (!writes) {
            end_txn(c, SI_COMMITTED); /* read-only: a snapshot read at start_ts */
            return;
        }
        start_phase(c, PH_PREWRITE);
        return;
    }
    case PH_SCAN: {
        kvrpcpb_ScanResponse *r = &c->rq->resp.scan;
        int64_t bal[MAX_KEYS];
        if (r->pairs.n != t->n_accounts) {
            sim_fail(&t->s, "KvScan returned %zu accounts, expected %u", r->pairs.n, t->n_accounts);
            return;
        }
        for (size_t i = 0; i < r->pairs.n; i++) {
            if (r->pairs.items[i].has_error) {
                if (!r->pairs.items[i].error.has_locked) {
                    sim_fail(&t->s, "KvScan: unexpected KeyError");
                    return;
                }
                meet_lock(c, &r->pairs.items[i].error.locked);
                return;
            }
            char buf[32];
            size_t n = TKV_MIN(r->pairs.items[i].value.len, sizeof(buf) - 1);
            memcpy(buf, r->pairs.items[i].value.ptr, n);
            buf[n] = 0;
            bal[i] = strtoll(buf, NULL, 10);
        }
        si_bank_read(t->bank, (uint32_t)c->idx, t->s.now, bal, t->n_accounts);
        t->n_reads++;
        end_txn(c, SI_COMMITTED);
        return;
    }
    case PH_PREWRITE: {
        kvrpcpb_PrewriteResponse *r = &c->rq->resp.prewrite;
        c->prewritten = true;
        for (size_t i = 0; i < r->errors.n; i++)
            if (r->errors.items[i].has_locked) {
                meet_lock(c, &r->errors.items[i].locked);
                return;
            }
        if (r->errors.n) { /* write conflict: roll back what may be there */
            start_phase(c, PH_ROLLBACK);
            return;
        }
        /* a client that dies here leaves its locks: never committed, the
         * others roll them back once the TTL passed */
        if (!t->setup && sim_rnd(&t->s) % 12 == 0) {
            t->n_abandoned++;
            end_txn(c, SI_ABORTED);
            return;
        }
        c->commit_ts = tso(t);
        start_phase(c, PH_COMMIT_PRI);
        return;
    }
    case PH_COMMIT_PRI:
        if (c->commit_acked) {
            /* the retry of a commit that had succeeded: it must succeed
             * again and change nothing (under an injected bug it may fail;
             * the transaction is committed all the same) */
            t->n_commit_retries++;
            if (c->rq->resp.commit.has_error)
                t->n_bad_retries++;
        } else if (c->rq->resp.commit.has_error) { /* rolled back by someone: not committed */
            end_txn(c, SI_ABORTED);
            return;
        } else if (sim_rnd(&t->s) % 4 == 0) {
            /* its answer "was lost": the client sends the commit again a
             * little later, when other transactions may hold the key */
            c->commit_acked = true;
            c->next_at = t->s.now + sim_rnd(&t->s) % 60;
            return;
        }
        /* a client that dies here leaves its secondaries' locks: it is
         * committed, the others commit them from the primary */
        if (!t->setup && sim_rnd(&t->s) % 12 == 0) {
            t->n_abandoned++;
            end_txn(c, SI_COMMITTED);
            return;
        }
        start_phase(c, PH_COMMIT_SEC);
        return;
    case PH_COMMIT_SEC:
        end_txn(c, SI_COMMITTED);
        return;
    case PH_ROLLBACK:
        end_txn(c, SI_ABORTED);
        return;
    case PH_CHECK: {
        kvrpcpb_CheckTxnStatusResponse *r = &c->rq->resp.check;
        if (r->lock_ttl > 0) { /* alive: back off, then retry what we did */
            c->ph = c->resume;
            c->next_at = t->s.now + 10 + sim_rnd(&t->s) % 20;
            return;
        }
        c->resolve_commit = r->commit_version; /* 0: rolled back */
        start_phase(c, PH_RESOLVE);
        return;
    }
    case PH_RESOLVE:
        t->n_resolved++;
        c->ph = c->resume;
        c->next_at = t->s.now;
        return;
    case PH_IDLE:
        return;
    }
}

static void begin_txn(struct tclient *c)
{
    struct tsim *t = c->t;
    c->start_ts = tso(t);
    c->prewritten = false;
    c->commit_acked = false;
    c->cur = 0;
    if (t->wl == BANK) {
        c->reader = sim_rnd(&t->s) % 10 < 3;
        if (c->reader) {
            start_phase(c, PH_SCAN);
            return;
        }
        c->n_keys = 2;
        c->keys[0] = (unsigned)(sim_rnd(&t->s) % t->n_accounts);
        c->keys[1] = (c->keys[0] + 1 + (unsigned)(sim_rnd(&t->s) % (t->n_accounts - 1))) % t->n_accounts;
        start_phase(c, PH_READ);
        return;
    }
    c->si_txn = si_txn_begin(t->hist, (uint32_t)c->idx, t->s.now);
    c->n_keys = 1 + (unsigned)(sim_rnd(&t->s) % MAX_MOPS);
    for (unsigned i = 0; i < c->n_keys; i++) {
        c->keys[i] = (unsigned)(sim_rnd(&t->s) % t->n_keys);
        /* at most one micro-op per key (n_keys > MAX_MOPS: this ends) */
        for (unsigned j = 0; j < i; j++)
            if (c->keys[j] == c->keys[i]) {
                c->keys[i] = (c->keys[i] + 1) % t->n_keys;
                j = (unsigned)-1; /* compare with all of them again */
            }
        c->append[i] = sim_rnd(&t->s) % 2;
        c->append_val[i] = ++t->next_value;
    }
    start_phase(c, PH_READ);
}

static void client_step(struct tclient *c)
{
    struct tsim *t = c->t;
    if (c->waiting) {
        if (t->s.now < c->req_deadline)
            return;
        /* no answer: give up on this request (it may still apply) */
        c->waiting = false;
        c->token++;
        if (c->ph == PH_COMMIT_PRI) { /* the commit point may have passed */
            end_txn(c, SI_UNKNOWN);
            return;
        }
        if (c->ph == PH_COMMIT_SEC) { /* the primary is committed */
            end_txn(c, SI_COMMITTED);
            return;
        }
        if (c->ph == PH_READ || c->ph == PH_SCAN || c->ph == PH_PREWRITE) {
            /* no commit was sent: it can never commit (its locks expire) */
            end_txn(c, SI_ABORTED);
            return;
        }
        retry(c, NULL); /* check / resolve / rollback: just again */
        return;
    }
    if (t->s.now < c->next_at)
        return;
    if (c->ph == PH_IDLE) {
        if (t->clients_on)
            begin_txn(c);
        return;
    }
    start_phase(c, c->ph); /* a retry, or back from a lock resolution */
}

/* ---- scenarios ---- */

struct scenario {
    const char *name;
    enum workload wl;
    bool unreliable, crash, partitions;
    int iterations;
    uint64_t iteration_ms;
    bool bug; /* an injected bug is on: only the checker's verdict counts */
    bool stale_reads;
};

static uint64_t seed_base(void)
{
    const char *e = getenv("TKV_SEED");
    return e ? strtoull(e, NULL, 10) : 0;
}

static int seed_count(void)
{
    if (getenv("TKV_SEED"))
        return 1;
    const char *e = getenv("TKV_SEEDS");
    return e ? atoi(e) : TXN_DEFAULT_SEEDS;
}

static bool any_waiting(struct tsim *t)
{
    for (int i = 0; i < N_CLIENTS; i++)
        if (t->c[i].ph != PH_IDLE)
            return true;
    return false;
}

/* Runs one seed; returns whether the history passed its checker (the
 * report is printed on failure), sets *sim_err on a simulation failure. */
static bool run_one(const struct scenario *sc, uint64_t seed, char *sim_err, size_t cap,
                    char **report)
{
    struct tsim *t = calloc(1, sizeof(*t));
    t->wl = sc->wl;
    t->n_accounts = 5;
    t->n_keys = 5;
    t->balance = 100;
    t->hist = si_history_new();
    t->bank = si_bank_new(t->n_accounts, (int64_t)t->n_accounts * t->balance, true);
    for (int i = 0; i < N_CLIENTS; i++) {
        t->c[i] = (struct tclient){.t = t, .idx = i, .target = 1 + i % 5};
    }
    struct sim_opts o = {.n_stores = 5,
                         .n_clients = 0,
                         .unreliable = sc->unreliable,
                         .crash = sc->crash,
                         .partitions = sc->partitions,
                         .iterations = sc->iterations,
                         .iteration_ms = sc->iteration_ms,
                         .n_keys = 1};
    struct sim_hooks hooks = {.arg = t, .store_event = on_store, .step = on_step};
    sim_init_hooks(&t->s, &o, seed, &hooks);
    struct sim *s = &t->s;
    t->inject_stale_reads = sc->stale_reads;
    sim_run(s, 400);
    if (t->wl == BANK) {
        /* the accounts, in one transaction of client 0, before the chaos */
        struct tclient *c = &t->c[0];
        c->start_ts = tso(t);
        c->n_keys = t->n_accounts;
        for (unsigned i = 0; i < t->n_accounts; i++) {
            c->keys[i] = i;
            c->bal[i] = t->balance;
        }
        t->setup = true;
        start_phase(c, PH_PREWRITE);
        for (int i = 0; i < 5000 && c->ph != PH_IDLE && !s->failed; i++)
            sim_run(s, 1);
        t->setup = false;
        if (t->n_committed != 1 && !s->failed)
            sim_fail(s, "bank set-up did not commit");
        t->n_committed = 0;
    }
    for (int it = 0; it < sc->iterations && !s->failed; it++) {
        t->clients_on = true;
        uint64_t end = s->now + sc->iteration_ms;
        for (int round = 0; s->now < end && !s->failed; round++) {
            sim_chaos(s);
            /* and through leader changes: take the leader away at times */
            int leader = sim_leader(s);
            if (round % 3 == 2 && leader && sc->crash) {
                sim_crash(s, leader);
                sim_run(s, 1 + sim_rnd(s) % 200);
                sim_restart(s, leader);
            } else if (round % 3 == 2 && leader && sc->partitions) {
                sim_partition(s, &leader, 1);
            }
        }
        t->clients_on = false;
        sim_settle(s);
        for (int i = 0; i < 20000 && any_waiting(t) && !s->failed; i++)
            sim_run(s, 1);
        if (any_waiting(t) && !s->failed)
            sim_fail(s, "clients still busy 20 s after healing (liveness)");
    }
    /* final reads after everything settled: locks left behind resolved */
    t->clients_on = false;
    for (int round = 0; round < 2 && !s->failed; round++) {
        for (int i = 0; i < N_CLIENTS; i++)
            begin_txn(&t->c[i]);
        for (int i = 0; i < 20000 && any_waiting(t) && !s->failed; i++)
            sim_run(s, 1);
    }
    if (!s->failed && t->n_committed < 20)
        sim_fail(s, "only %llu transactions committed (liveness)", (unsigned long long)t->n_committed);
    if (!s->failed && !sc->bug && t->n_bad_retries)
        sim_fail(s, "%llu retried commits of committed transactions failed",
                 (unsigned long long)t->n_bad_retries);
    if (!s->failed && (sc->crash || sc->partitions) && t->n_leader_changes == 0)
        sim_fail(s, "no leader change happened: the scenario did not test one");
    if (getenv("TKV_RS_VERBOSE"))
        fprintf(stderr,
                "%s seed %llu: %llu committed, %llu aborted, %llu unknown, %llu abandoned, %llu "
                "resolutions, %llu snapshot reads, %llu leader changes, %llu retried commits (%llu "
                "failed)\n",
                sc->name, (unsigned long long)seed, (unsigned long long)t->n_committed,
                (unsigned long long)t->n_aborted, (unsigned long long)t->n_unknown,
                (unsigned long long)t->n_abandoned, (unsigned long long)t->n_resolved,
                (unsigned long long)t->n_reads, (unsigned long long)t->n_leader_changes,
                (unsigned long long)t->n_commit_retries, (unsigned long long)t->n_bad_retries);
    snprintf(sim_err, cap, "%s", s->failed ? s->err : "");
    bool ok = true;
    *report = NULL;
    if (!s->failed) {
        if (t->wl == BANK) {
            struct si_bank_result r;
            ok = si_bank_check(t->bank, 3, &r);
            if (r.n_reads < 5)
                snprintf(sim_err, cap, "only %zu snapshot reads", r.n_reads);
            *report = strdup(r.report ? r.report : "");
            si_bank_result_free(&r);
        } else {
            struct si_options so = {.realtime = true};
            struct si_result r;
            ok = si_check_append(t->hist, &so, &r);
            *report = strdup(r.report ? r.report : "");
            si_result_free(&r);
        }
    }
    sim_close(s);
    si_history_free(t->hist);
    si_bank_free(t->bank);
    free(t);
    return ok;
}

static void run_scenario(const struct scenario *sc)
{
    uint64_t base = seed_base();
    int n = seed_count();
    for (int i = 0; i < n; i++) {
        uint64_t seed = base ? base : (uint64_t)(i + 1) * 104729u + (uint64_t)strlen(sc->name);
        char err[512];
        char *report;
        bool ok = run_one(sc, seed, err, sizeof err, &report);
        cr_assert(err[0] == 0, "%s: simulation failed: %s (replay: TKV_SEED=%llu)", sc->name, err,
                  (unsigned long long)seed);
        cr_assert(ok, "%s: snapshot isolation violated (replay: TKV_SEED=%llu):\n%s", sc->name,
                  (unsigned long long)seed, report);
        free(report);
    }
}

/* Runs seeds until the checker fails (the injected bug is caught). */
static void expect_caught(const struct scenario *sc, int max_seeds)
{
    for (int i = 0; i < max_seeds; i++) {
        uint64_t seed = (uint64_t)(i + 1) * 7907u;
        char err[512];
        char *report;
        bool ok = run_one(sc, seed, err, sizeof err, &report);
        if (!ok) {
            if (getenv("TKV_RS_VERBOSE"))
                fprintf(stderr, "%s: caught with seed %llu:\n%s\n", sc->name,
                        (unsigned long long)seed, report);
            free(report);
            return;
        }
        free(report);
    }
    cr_assert_fail("%s: the SI checker did not catch the injected bug in %d seeds", sc->name,
                   max_seeds);
}

TestSuite(txn_sim, .timeout = 900);

Test(txn_sim, bank_with_crashes_partitions_and_drops)
{
    struct scenario sc = {"bank", BANK, true, true, true, 2, 1500, false, false};
    run_scenario(&sc);
}

Test(txn_sim, append_with_crashes_partitions_and_drops)
{
    struct scenario sc = {"append", APPEND, true, true, true, 2, 1500, false, false};
    run_scenario(&sc);
}

Test(txn_sim, bank_with_partitions)
{
    struct scenario sc = {"bank/partitions", BANK, false, false, true, 2, 1500, false, false};
    run_scenario(&sc);
}

Test(txn_sim, append_with_crashes)
{
    struct scenario sc = {"append/crashes", APPEND, false, true, false, 2, 1500, false, false};
    run_scenario(&sc);
}

Test(txn_sim, append_with_drops_and_partitions)
{
    struct scenario sc = {"append/drops+partitions", APPEND, true, false, true, 2, 1500, false, false};
    run_scenario(&sc);
}

/* The cluster read path: a KvGet served from any store's engine without
 * ReadIndex (a follower or a deposed leader) misses committed appends. */
Test(txn_sim, checker_catches_reads_without_read_index)
{
    struct scenario sc = {"append/stale_reads", APPEND, true, true, true, 1, 1500, true, true};
    expect_caught(&sc, 5);
}

#ifdef FIU_ENABLE
Test(txn_sim, checker_catches_reads_that_ignore_locks)
{
    struct scenario sc = {"bank/read_ignores_locks", BANK, false, false, false, 1, 1500, true, false};
    fiu_init(0);
    fiu_enable("txn/read_ignores_locks", 1, NULL, 0);
    expect_caught(&sc, 3);
    fiu_disable("txn/read_ignores_locks");
}

Test(txn_sim, checker_catches_prewrite_over_foreign_locks)
{
    struct scenario sc = {"append/prewrite_ignores_locks", APPEND, false, false, false, 1, 1500, true, false};
    fiu_init(0);
    fiu_enable("txn/prewrite_ignores_locks", 1, NULL, 0);
    expect_caught(&sc, 3);
    fiu_disable("txn/prewrite_ignores_locks");
}

/* Commits retried after a "lost" answer meet locks of later transactions:
 * a commit that ignores the lock's owner takes them over, and the owner's
 * own commit then finds nothing to commit: its append is lost. */
Test(txn_sim, checker_catches_commit_that_ignores_the_lock_owner)
{
    struct scenario sc = {"append/commit_ignores_lock_owner", APPEND, false, false, false, 1, 1500, true, false};
    fiu_init(0);
    fiu_enable("txn/commit_ignores_lock_owner", 1, NULL, 0);
    expect_caught(&sc, 5);
    fiu_disable("txn/commit_ignores_lock_owner");
}
#endif

/* ---- the driver's answers to bad input (no raft round, nothing latched) ---- */

struct direct_answer {
    bool done;
    int rv;
    char why[128];
};

static void on_direct(void *arg, const struct tkv_txn_cluster_result *res)
{
    struct direct_answer *a = arg;
    a->done = true;
    a->rv = res->rv;
    snprintf(a->why, sizeof a->why, "%s", res->why ? res->why : "");
}

Test(txn_sim, bad_input_is_invalid_argument_with_a_reason)
{
    struct tsim *t = calloc(1, sizeof(*t));
    t->wl = APPEND;
    for (int i = 0; i < N_CLIENTS; i++)
        t->c[i] = (struct tclient){.t = t, .idx = i}; /* idle: clients stay off */
    struct sim_opts o = {.n_stores = 3, .iterations = 1, .iteration_ms = 100, .n_keys = 1};
    struct sim_hooks hooks = {.arg = t, .store_event = on_store, .step = on_step};
    sim_init_hooks(&t->s, &o, 1, &hooks);
    sim_run(&t->s, 400);
    int leader = sim_leader(&t->s);
    cr_assert(leader, "no leader");
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&t->s, leader), 1, &st);
    struct tkv_rs_header h = {.region_id = 1,
                              .peer = {.id = (uint64_t)leader, .store_id = (uint64_t)leader},
                              .epoch = st.region.epoch};
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);

    kvrpcpb_PrewriteRequest pw = {0};
    kvrpcpb_Mutation mu = {.op = kvrpcpb_Op_Put, .key = TKV_SLICE("k", 1)};
    pw.mutations.items = &mu;
    pw.mutations.n = 1;
    pw.primary_lock = TKV_SLICE("k", 1);
    kvrpcpb_PrewriteResponse pr;
    struct direct_answer a = {0};
    tkv_txn_cluster_submit(t->tc[leader], &h, TKV_TXN_PREWRITE, &pw, &pr, &arena, on_direct, &a);
    cr_assert(a.done, "refused synchronously, before latching");
    cr_assert_eq(a.rv, TKV_EINVAL);
    cr_assert(strstr(a.why, "start_version"), "reason: %s", a.why);
    cr_assert_eq(tkv_txn_cluster_latched(t->tc[leader], 1), 0);

    kvrpcpb_GetRequest g = {.version = 5};
    kvrpcpb_GetResponse gr;
    a = (struct direct_answer){0};
    tkv_txn_cluster_submit(t->tc[leader], &h, TKV_TXN_GET, &g, &gr, &arena, on_direct, &a);
    for (int i = 0; i < 200 && !a.done; i++)
        sim_run(&t->s, 1);
    cr_assert(a.done);
    cr_assert_eq(a.rv, TKV_EINVAL, "empty key: %d", a.rv);
    cr_assert(a.why[0], "a reason");

    tkv_arena_close(&arena);
    sim_close(&t->s);
    free(t);
}
