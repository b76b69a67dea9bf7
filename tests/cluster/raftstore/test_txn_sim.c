/* Transactions in the deterministic cluster simulation (issue 11 item 4,
 * issue 10 item 7): 5 stores running the raftstore, one txn cluster driver
 * per store (tkv/txn_cluster.h: latches on the leader, one proposal per
 * command), and Percolator clients (2PC written here against the Kv*
 * commands) under crashes, partitions, an unreliable network, conf changes
 * and region splits (before and during the run), through leader changes.
 *
 * The clients route like libtinykv (src/client/client_txn.c): each keeps its
 * own region cache (copied from the mock scheduler's directory when a region
 * error says it is stale, or updated from EpochNotMatch's regions) and finds
 * a key's region by EncodeBytes(user key), the form region bounds have for
 * transactional keys. Prewrite: the primary's region batch first, then the
 * other regions' batches; commit: the primary alone (the commit point), then
 * the secondaries grouped by region; rollback grouped by region; a snapshot
 * scan walks region by region (the next start is the decoded region end).
 * Region errors (NotLeader, EpochNotMatch, KeyNotInRegion, RegionNotFound,
 * StaleCommand, ServerIsBusy) refresh the route and retry the batch. A lock
 * met is checked at its primary's region (KvCheckTxnStatus) and resolved in
 * the locked key's region (KvResolveLock). Some clients "die" mid-commit
 * (after a prewrite batch, after the primary commit, between secondary
 * batches): their locks stay behind for the others to resolve.
 *   bank    transfers between accounts; every snapshot read (a KvScan over
 *           every region) must sum to the total (sicheck bank);
 *   append  Elle list-append (read a list, append a unique integer by
 *           read-modify-write), checked by sicheck with the realtime
 *           lost-write check (one timestamp oracle).
 * At the end every client reads every key (resolving what it meets) and no
 * lock may be left in any region on its leader or an up-to-date replica.
 * A failure prints the seed; TKV_SEED=<n> replays it; TKV_SEEDS=<n> runs n
 * seeds per scenario (the long label runs more). The checkers are shown to
 * catch injected bugs: txn failpoints (libfiu, test builds) for reads that
 * ignore locks (bank) and prewrites over another transaction's lock
 * (append), reads without ReadIndex, a client committing secondaries before
 * its primary, and the raftstore's LOCK CF snapshot range (see
 * lock_cf_snapshot_after_split). */
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
#include "tkv/codec.h"
#include "tkv/engine.h"
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
#define MAX_SPLITS 8
#define KEY_MAX 16

enum workload { BANK, APPEND };

enum phase {
    PH_IDLE,
    PH_READ,       /* bank transfer / append: KvGet of keys[cur] */
    PH_SCAN,       /* bank reader: KvScan of every account, region by region */
    PH_PREWRITE,   /* one region's batch of the pending mutations */
    PH_COMMIT_PRI, /* the commit point */
    PH_COMMIT_SEC, /* one region's batch of the pending secondaries */
    PH_ROLLBACK,   /* one region's batch of the pending keys */
    PH_CHECK,      /* met a lock: KvCheckTxnStatus of its primary */
    PH_RESOLVE,    /* then KvResolveLock in the locked key's region */
};

struct tsim;
struct creq;

struct tclient {
    struct tsim *t;
    int idx;
    enum phase ph, resume; /* resume: the phase a lock resolution returns to */
    uint64_t token;        /* answers of abandoned requests are ignored */
    uint64_t next_at, req_deadline;
    bool waiting;
    /* the region cache (libtinykv's): copied from the directory when stale */
    struct sim_region cache[SIM_MAX_REGIONS];
    int n_cache;
    struct tkv_rs_region rq_region; /* where the request in flight went */
    /* the transaction */
    uint64_t start_ts, commit_ts;
    size_t si_txn;
    bool reader;
    unsigned n_keys, cur;
    unsigned keys[MAX_KEYS];
    bool append[MAX_KEYS];
    uint64_t append_val[MAX_KEYS];
    uint64_t lists[MAX_KEYS][LIST_MAX];
    size_t list_n[MAX_KEYS];
    int64_t bal[MAX_KEYS];
    /* batched phases: keys (bits over keys[]) still to do, and in flight */
    unsigned pend, batch;
    bool commit_acked;     /* the primary commit answered success once */
    unsigned n_pw_batches; /* prewrite requests that succeeded (regions) */
    /* the scan in progress: next start key, accounts read so far */
    char scan_from[KEY_MAX];
    size_t scan_from_len;
    unsigned scan_n;
    int64_t scan_bal[MAX_KEYS];
    /* lock being resolved */
    char lock_primary[64], lock_key[64];
    size_t lock_primary_len, lock_key_len;
    uint64_t lock_ts, resolve_commit;
    struct creq *rq; /* the request being built / answered */
};

/* One request with its own memory: an abandoned one (timed out) may still
 * be answered later, after the client moved on. */
struct creq {
    struct tclient *c;
    uint64_t token;
    struct tkv_arena arena;
    struct tkv_slice route; /* the user key whose region the request goes to */
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

/* A directed split: at time `at`, the region holding user key `key` is
 * split at EncodeBytes(key) (the split rule for transactional keys). */
struct split_plan {
    char key[KEY_MAX];
    uint64_t at;
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
    uint64_t n_region_errors[TKV_RS_SERVER_BUSY + 1];
    uint64_t n_multi_region_txns; /* committed writes whose keys spanned regions */
    uint64_t n_stale_peer;        /* requests refused for a stale peer id */
    int last_leader;
    uint64_t last_term;
    bool setup;                    /* the bank's initial transaction: its client does not die */
    bool inject_stale_reads;       /* INJECTED BUG: KvGet on any store's engine, no ReadIndex */
    bool inject_secondaries_first; /* INJECTED BUG: commit secondaries, then the primary */
    bool bug; /* some bug is injected: the client's own sanity checks are off */
    uint64_t n_leader_changes;
    /* directed splits */
    struct split_plan splits[MAX_SPLITS];
    int n_split_plans, n_splits_done;
    uint64_t split_token, split_retry_at;
    bool split_in_flight;
};

/* One timestamp oracle: physical ms << 18 | logical, strictly increasing. */
static uint64_t tso(struct tsim *t)
{
    uint64_t ts = t->s.now << 18;
    t->ts_last = ts > t->ts_last ? ts : t->ts_last + 1;
    return t->ts_last;
}

static size_t key_name(const struct tsim *t, char *buf, unsigned k)
{
    return (size_t)snprintf(buf, KEY_MAX, "%s%02u", t->wl == BANK ? "acct" : "k", k);
}

static struct tkv_slice key_of(struct tsim *t, struct tkv_arena *a, unsigned k)
{
    char *buf = tkv_arena_alloc(a, KEY_MAX);
    return TKV_SLICE(buf, key_name(t, buf, k));
}

/* ---- routing (the client's region cache) ---- */

static bool epoch_newer(const struct tkv_rs_epoch *a, const struct tkv_rs_epoch *b)
{
    return a->version > b->version || (a->version == b->version && a->conf_ver > b->conf_ver);
}

/* Ask the "scheduler" (the simulation's directory) for the current regions. */
static void refresh_route(struct tclient *c)
{
    struct sim *s = &c->t->s;
    for (int i = 0; i < s->n_regions; i++) {
        struct sim_region *e = NULL;
        for (int j = 0; j < c->n_cache && !e; j++)
            if (c->cache[j].rg.id == s->regions[i].rg.id)
                e = &c->cache[j];
        if (!e) {
            e = &c->cache[c->n_cache++];
            *e = (struct sim_region){.rg = s->regions[i].rg};
        } else if (epoch_newer(&s->regions[i].rg.epoch, &e->rg.epoch)) {
            e->rg = s->regions[i].rg;
        }
    }
}

/* A region learned from a region error (EpochNotMatch carries the current
 * ones): newer epochs replace what the cache had. */
static void learn_region(struct tclient *c, const struct tkv_rs_region *rg)
{
    for (int j = 0; j < c->n_cache; j++)
        if (c->cache[j].rg.id == rg->id) {
            if (epoch_newer(&rg->epoch, &c->cache[j].rg.epoch))
                c->cache[j].rg = *rg;
            return;
        }
    if (c->n_cache < SIM_MAX_REGIONS)
        c->cache[c->n_cache++] = (struct sim_region){.rg = *rg};
}

/* The cached region of a user key, compared as EncodeBytes(key). Overlaps
 * (a parent not yet seen split) resolve to the newest epoch. */
static struct sim_region *route_key(struct tclient *c, struct tkv_slice key)
{
    struct sim_region *best = NULL;
    for (int pass = 0; pass < 2 && !best; pass++) {
        if (pass == 1 || c->n_cache == 0)
            refresh_route(c);
        for (int j = 0; j < c->n_cache; j++)
            if (tkv_rs_region_contains_txn_key(&c->cache[j].rg, key) &&
                (!best || epoch_newer(&c->cache[j].rg.epoch, &best->rg.epoch)))
                best = &c->cache[j];
    }
    return best;
}

static struct sim_region *cached(struct tclient *c, uint64_t region_id)
{
    for (int j = 0; j < c->n_cache; j++)
        if (c->cache[j].rg.id == region_id)
            return &c->cache[j];
    return NULL;
}

static bool same_region(struct tclient *c, unsigned a, unsigned b)
{
    char ka[KEY_MAX], kb[KEY_MAX];
    struct sim_region *ra = route_key(c, TKV_SLICE(ka, key_name(c->t, ka, c->keys[a])));
    struct sim_region *rb = route_key(c, TKV_SLICE(kb, key_name(c->t, kb, c->keys[b])));
    return ra && ra == rb;
}

/* The keys (bits over keys[]) that take part in the commit: all of them for
 * the bank, the appended ones for list-append. Bit 0.. in key order; the
 * first one is the primary. */
static unsigned mutation_mask(const struct tclient *c)
{
    unsigned m = 0;
    for (unsigned i = 0; i < c->n_keys; i++)
        if (c->t->wl == BANK || c->append[i])
            m |= 1u << i;
    return m;
}

static int primary_index(const struct tclient *c)
{
    unsigned m = mutation_mask(c);
    return m ? __builtin_ctz(m) : -1;
}

/* The next batch of c->pend: the primary's region first (when pending),
 * else the first pending key's region: every pending key of that region. */
static unsigned next_batch(struct tclient *c)
{
    if (!c->pend)
        return 0;
    int p = primary_index(c);
    unsigned first =
        p >= 0 && (c->pend & (1u << p)) ? (unsigned)p : (unsigned)__builtin_ctz(c->pend);
    unsigned b = 1u << first;
    for (unsigned i = 0; i < c->n_keys; i++)
        if (i != first && (c->pend & (1u << i)) && same_region(c, first, i))
            b |= 1u << i;
    return b;
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
static void splits_step(struct tsim *t);

static void on_step(void *arg)
{
    struct tsim *t = arg;
    /* leader changes of region 1 (it always exists: the left of every
     * split): a new leader, or the same store elected again in a new term */
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
    splits_step(t);
    for (int i = 0; i < N_CLIENTS; i++)
        client_step(&t->c[i]);
    for (int i = 1; i <= t->s.o.n_stores; i++)
        if (t->tc[i])
            (void)tkv_txn_cluster_poll(t->tc[i]);
}

/* ---- directed splits ---- */

struct split_req {
    struct tsim *t;
    uint64_t token;
};

static void on_split(void *arg, const struct tkv_rs_result *res)
{
    struct split_req *r = arg;
    struct tsim *t = r->t;
    if (r->token == t->split_token && t->split_in_flight) {
        t->split_in_flight = false;
        if (res->rv == 0) {
            t->n_splits_done++;
            t->split_retry_at = 0;
        } else
            t->split_retry_at = t->s.now + 20;
        if (res->rv != 0 && getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "split at %s: %d (region error %u)\n", t->splits[t->n_splits_done].key,
                    res->rv, res->region_error.kind);
    }
    free(r);
}

/* The next planned split whose time came: proposed on the leader of the
 * region holding its key (from the directory); retried until applied. */
static void splits_step(struct tsim *t)
{
    struct sim *s = &t->s;
    if (t->n_splits_done >= t->n_split_plans || s->now < t->split_retry_at)
        return;
    const struct split_plan *p = &t->splits[t->n_splits_done];
    if (s->now < p->at)
        return;
    if (t->split_in_flight) {
        if (s->now < t->split_retry_at) /* in flight: give it time */
            return;
        t->split_in_flight = false; /* lost with a crash: ask again */
    }
    uint8_t enc[64];
    size_t n = tkv_codec_encode_bytes(enc, (const uint8_t *)p->key, strlen(p->key));
    const struct sim_region *r = sim_route(s, (const char *)enc, n);
    if (!r) {
        t->split_retry_at = s->now + 20;
        return;
    }
    if (r->rg.start_len == n && memcmp(r->rg.start, enc, n) == 0) {
        t->n_splits_done++; /* already there (a lost answer) */
        return;
    }
    int leader = sim_region_leader(s, r->rg.id);
    if (!leader) {
        t->split_retry_at = s->now + 20;
        return;
    }
    uint64_t ids[TKV_RS_MAX_PEERS];
    for (uint32_t k = 0; k < r->rg.n_peers; k++)
        ids[k] = sim_alloc_id(s);
    struct split_req *q = malloc(sizeof(*q));
    q->t = t;
    q->token = ++t->split_token;
    t->split_in_flight = true;
    t->split_retry_at = s->now + 3000;
    tkv_raftstore_split(sim_store(s, leader), r->rg.id, &r->rg.epoch, TKV_SLICE(enc, n),
                        sim_alloc_id(s), ids, r->rg.n_peers, on_split, q);
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

static int random_peer_store(struct tsim *t, const struct tkv_rs_region *rg)
{
    if (rg->n_peers == 0)
        return (int)(sim_rnd(&t->s) % (uint64_t)t->s.o.n_stores) + 1;
    return (int)rg->peers[sim_rnd(&t->s) % rg->n_peers].store_id;
}

/* Route the request by its key's cached region: to the region's leader
 * hint, else a random peer's store, with the peer and epoch of the cache. */
static void send_req(struct tclient *c)
{
    struct tsim *t = c->t;
    c->waiting = true;
    c->token++;
    c->rq->token = c->token;
    struct sim_region *r = route_key(c, c->rq->route);
    if (!r) {
        sim_fail(&t->s, "client %d: no region holds key %.*s", c->idx, (int)c->rq->route.len,
                 (const char *)c->rq->route.ptr);
        return;
    }
    int target = r->leader ? r->leader : random_peer_store(t, &r->rg);
    struct tkv_rs_peer peer = {0};
    for (uint32_t i = 0; i < r->rg.n_peers; i++)
        if (r->rg.peers[i].store_id == (uint64_t)target)
            peer = r->rg.peers[i];
    if (target < 1 || target > t->s.o.n_stores || !t->tc[target] || peer.id == 0) {
        /* down, or not a peer in the cache: the hinted leader's peer was
         * added after the region was cached: ask for the region again */
        if (peer.id == 0)
            refresh_route(c);
        r->leader = 0;
        c->waiting = false;
        c->next_at = t->s.now + 5;
        creq_free(c->rq);
        c->rq = NULL;
        return;
    }
    c->rq_region = r->rg;
    struct tkv_rs_header h = {.region_id = r->rg.id, .peer = peer, .epoch = r->rg.epoch};
    struct creq *q = c->rq;
    tkv_txn_cluster_submit(t->tc[target], &h, q->cmd, &q->req, &q->resp, &q->arena, on_answer, q);
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
static void handle_answer(struct tclient *c, const struct tkv_txn_cluster_result *res);

/* The request's region moved / is not led there / the store is closing:
 * fix the route and retry the same batch later (regrouped by the new
 * route; writes are idempotent: prewrite rewrites its own lock, commit and
 * rollback answer the same twice). */
static void retry(struct tclient *c, const struct tkv_rs_region_error *e)
{
    struct tsim *t = c->t;
    struct sim_region *r = cached(c, c->rq_region.id);
    if (getenv("TKV_TXN_TRACE"))
        fprintf(stderr,
                "%llu client %d phase %d region %llu v%llu: retry after %d (leader hint %llu)\n",
                (unsigned long long)t->s.now, c->idx, (int)c->ph,
                (unsigned long long)c->rq_region.id, (unsigned long long)c->rq_region.epoch.version,
                e ? (int)e->kind : -1, e ? (unsigned long long)e->leader.store_id : 0ull);
    if (e && e->kind <= TKV_RS_SERVER_BUSY)
        t->n_region_errors[e->kind]++;
    if (e && e->kind == TKV_RS_PEER_NOT_MATCH)
        t->n_stale_peer++;
    if (e && e->kind == TKV_RS_NOT_LEADER && e->leader.store_id) {
        if (r)
            r->leader = (int)e->leader.store_id;
    } else {
        if (r)
            r->leader = 0;
        if (e && e->kind == TKV_RS_EPOCH_NOT_MATCH && e->n_current) {
            for (uint32_t i = 0; i < e->n_current && i < 2; i++)
                learn_region(c, &e->current[i]);
        } else if (e && e->kind != TKV_RS_NOT_LEADER) {
            refresh_route(c);
        }
    }
    c->waiting = false;
    c->next_at = t->s.now + 1 + sim_rnd(&t->s) % 10;
}

/* A lock of another transaction: find out what became of it. */
static void meet_lock(struct tclient *c, const kvrpcpb_LockInfo *li)
{
    c->resume = c->ph;
    c->lock_primary_len = TKV_MIN(li->primary_lock.len, sizeof(c->lock_primary));
    memcpy(c->lock_primary, li->primary_lock.ptr, c->lock_primary_len);
    c->lock_key_len = TKV_MIN(li->key.len, sizeof(c->lock_key));
    memcpy(c->lock_key, li->key.ptr, c->lock_key_len);
    c->lock_ts = li->lock_version;
    start_phase(c, PH_CHECK);
}

static void build_mutations(struct tclient *c, unsigned batch)
{
    struct tsim *t = c->t;
    kvrpcpb_PrewriteRequest *r = &c->rq->req.prewrite;
    memset(r, 0, sizeof(*r));
    r->start_version = c->start_ts;
    r->lock_ttl = LOCK_TTL_MS;
    r->mutations.items = tkv_arena_calloc(&c->rq->arena, c->n_keys, sizeof(*r->mutations.items));
    int p = primary_index(c);
    r->primary_lock = key_of(t, &c->rq->arena, c->keys[p]);
    for (unsigned i = 0; i < c->n_keys; i++) {
        if (!(batch & (1u << i)))
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
            off +=
                (size_t)sprintf(v + off, "%s%" PRIu64, c->list_n[i] ? "," : "", c->append_val[i]);
        }
        m->value = TKV_SLICE(v, off);
    }
}

static struct tkv_slice *keys_of(struct tclient *c, unsigned batch, size_t *n)
{
    struct tkv_slice *ks = tkv_arena_calloc(&c->rq->arena, c->n_keys + 1, sizeof(*ks));
    *n = 0;
    for (unsigned i = 0; i < c->n_keys; i++)
        if (batch & (1u << i))
            ks[(*n)++] = key_of(c->t, &c->rq->arena, c->keys[i]);
    return ks;
}

/* Enter a batched phase with the keys to do. */
static void start_batched(struct tclient *c, enum phase ph, unsigned keys)
{
    c->pend = keys;
    start_phase(c, ph);
}

static void start_phase(struct tclient *c, enum phase ph)
{
    struct tsim *t = c->t;
    c->ph = ph;
    if (ph == PH_IDLE)
        return;
    c->rq = calloc(1, sizeof(*c->rq));
    c->rq->c = c;
    tkv_arena_init(&c->rq->arena, 0);
    c->req_deadline = t->s.now + REQ_TIMEOUT_MS;
    if (ph == PH_PREWRITE || ph == PH_COMMIT_SEC || ph == PH_ROLLBACK || ph == PH_COMMIT_PRI) {
        c->batch = ph == PH_COMMIT_PRI ? 1u << primary_index(c) : next_batch(c);
        c->rq->route = key_of(t, &c->rq->arena, c->keys[__builtin_ctz(c->batch)]);
    }
    switch (ph) {
    case PH_READ:
        memset(&c->rq->req.get, 0, sizeof(c->rq->req.get));
        c->rq->req.get.key = key_of(t, &c->rq->arena, c->keys[c->cur]);
        c->rq->req.get.version = c->start_ts;
        c->rq->route = c->rq->req.get.key;
        c->rq->cmd = TKV_TXN_GET;
        if (t->inject_stale_reads) {
            stale_read(c);
            return;
        }
        break;
    case PH_SCAN:
        memset(&c->rq->req.scan, 0, sizeof(c->rq->req.scan));
        c->rq->req.scan.start_key = TKV_SLICE(
            tkv_arena_memdup(&c->rq->arena, c->scan_from, c->scan_from_len), c->scan_from_len);
        c->rq->req.scan.limit = t->n_accounts - c->scan_n + 1;
        c->rq->req.scan.version = c->start_ts;
        c->rq->route = c->rq->req.scan.start_key;
        c->rq->cmd = TKV_TXN_SCAN;
        break;
    case PH_PREWRITE:
        build_mutations(c, c->batch);
        c->rq->cmd = TKV_TXN_PREWRITE;
        break;
    case PH_COMMIT_PRI:
    case PH_COMMIT_SEC: {
        kvrpcpb_CommitRequest *r = &c->rq->req.commit;
        memset(r, 0, sizeof(*r));
        r->start_version = c->start_ts;
        r->commit_version = c->commit_ts;
        r->keys.items = keys_of(c, c->batch, &r->keys.n);
        c->rq->cmd = TKV_TXN_COMMIT;
        break;
    }
    case PH_ROLLBACK: {
        kvrpcpb_BatchRollbackRequest *r = &c->rq->req.rollback;
        memset(r, 0, sizeof(*r));
        r->start_version = c->start_ts;
        r->keys.items = keys_of(c, c->batch, &r->keys.n);
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
        c->rq->route = c->rq->req.check.primary_key;
        c->rq->cmd = TKV_TXN_CHECK_TXN_STATUS;
        break;
    case PH_RESOLVE:
        memset(&c->rq->req.resolve, 0, sizeof(c->rq->req.resolve));
        c->rq->req.resolve.start_version = c->lock_ts;
        c->rq->req.resolve.commit_version = c->resolve_commit;
        c->rq->route = TKV_SLICE(tkv_arena_memdup(&c->rq->arena, c->lock_key, c->lock_key_len),
                                 c->lock_key_len);
        c->rq->cmd = TKV_TXN_RESOLVE_LOCK;
        break;
    case PH_IDLE:
        return;
    }
    send_req(c);
}
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

/* The value is not NUL-terminated (the bytes after it are whatever the
 * arena holds): parse digits within the slice only. */
static bool parse_list(struct tkv_slice v, uint64_t *out, size_t *n)
{
    *n = 0;
    const uint8_t *p = v.ptr, *end = p + v.len;
    while (p < end && *n < LIST_MAX) {
        uint64_t x = 0;
        const uint8_t *start = p;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            x = x * 10 + (uint64_t)(*p - '0');
        if (p == start || (p < end && *p != ','))
            return false;
        out[(*n)++] = x;
        p += p < end; /* the comma */
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

static void handle_answer(struct tclient *c, const struct tkv_txn_cluster_result *res);

/* Another client dies here (never in the bank's set-up transaction). */
static bool dies(struct tclient *c, unsigned one_in)
{
    struct tsim *t = c->t;
    if (t->setup || sim_rnd(&t->s) % one_in != 0)
        return false;
    t->n_abandoned++;
    return true;
}

static void after_prewrite(struct tclient *c)
{
    struct tsim *t = c->t;
    unsigned secondaries = mutation_mask(c) & ~(1u << primary_index(c));
    c->commit_ts = tso(t);
    if (t->inject_secondaries_first && secondaries) {
        /* INJECTED BUG: the secondaries are committed before the commit
         * point; a client dying before its primary commit leaves a
         * transaction half committed (readers roll the primary back) */
        start_batched(c, PH_COMMIT_SEC, secondaries);
        return;
    }
    start_phase(c, PH_COMMIT_PRI);
}

static bool scan_answer(struct tclient *c)
{
    struct tsim *t = c->t;
    kvrpcpb_ScanResponse *r = &c->rq->resp.scan;
    for (size_t i = 0; i < r->pairs.n; i++)
        if (r->pairs.items[i].has_error) {
            if (!r->pairs.items[i].error.has_locked) {
                sim_fail(&t->s, "KvScan: unexpected KeyError");
                return false;
            }
            meet_lock(c, &r->pairs.items[i].error.locked); /* then this region again */
            return false;
        }
    if (c->scan_n + r->pairs.n > t->n_accounts) {
        sim_fail(&t->s, "KvScan returned %zu more accounts after %u, expected %u in all",
                 r->pairs.n, c->scan_n, t->n_accounts);
        return false;
    }
    for (size_t i = 0; i < r->pairs.n; i++) {
        char buf[32];
        size_t n = TKV_MIN(r->pairs.items[i].value.len, sizeof(buf) - 1);
        memcpy(buf, r->pairs.items[i].value.ptr, n);
        buf[n] = 0;
        c->scan_bal[c->scan_n++] = strtoll(buf, NULL, 10);
    }
    /* the region's end reached: the next region starts at its end, the
     * EncodeBytes form of a user key (split rule for transactional keys) */
    const struct tkv_rs_region *rg = &c->rq_region;
    if (rg->end_len == 0)
        return true;
    uint8_t key[TKV_RS_BOUND_MAX];
    size_t key_len, used;
    if (tkv_codec_decode_bytes(rg->end, rg->end_len, key, &key_len, &used) < 0 ||
        used != rg->end_len || key_len >= sizeof(c->scan_from)) {
        sim_fail(&t->s, "region %llu ends at a key that is not EncodeBytes(user key)",
                 (unsigned long long)rg->id);
        return false;
    }
    memcpy(c->scan_from, key, key_len);
    c->scan_from_len = key_len;
    start_phase(c, PH_SCAN);
    return false;
}

static void handle_answer(struct tclient *c, const struct tkv_txn_cluster_result *res)
{
    struct tsim *t = c->t;
    if (res->rv == TKV_EREGION || res->rv == TKV_ESHUTDOWN) {
        retry(c, res->rv == TKV_EREGION ? res->region_error : NULL);
        return;
    }
    if (res->rv != 0) {
        sim_fail(&t->s, "client %d: command %d (phase %d) failed: %d (%s)", c->idx, (int)c->rq->cmd,
                 (int)c->ph, res->rv, res->why ? res->why : "");
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
            char kn[KEY_MAX];
            size_t kl = key_name(t, kn, k);
            si_txn_read(t->hist, c->si_txn, kn, kl, c->lists[c->cur], c->list_n[c->cur]);
            if (c->append[c->cur])
                si_txn_append(t->hist, c->si_txn, kn, kl, c->append_val[c->cur]);
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
        }
        if (!mutation_mask(c)) {
            end_txn(c, SI_COMMITTED); /* read-only: a snapshot read at start_ts */
            return;
        }
        start_batched(c, PH_PREWRITE, mutation_mask(c));
        return;
    }
    case PH_SCAN:
        if (scan_answer(c)) {
            if (c->scan_n != t->n_accounts) {
                sim_fail(&t->s, "KvScan over every region returned %u accounts, expected %u",
                         c->scan_n, t->n_accounts);
                return;
            }
            si_bank_read(t->bank, (uint32_t)c->idx, t->s.now, c->scan_bal, t->n_accounts);
            t->n_reads++;
            end_txn(c, SI_COMMITTED);
        }
        return;
    case PH_PREWRITE: {
        kvrpcpb_PrewriteResponse *r = &c->rq->resp.prewrite;
        for (size_t i = 0; i < r->errors.n; i++)
            if (r->errors.items[i].has_locked) {
                meet_lock(c, &r->errors.items[i].locked); /* then this batch again */
                return;
            }
        if (r->errors.n) { /* write conflict: roll back what may be there */
            start_batched(c, PH_ROLLBACK, mutation_mask(c));
            return;
        }
        c->pend &= ~c->batch;
        c->n_pw_batches++;
        /* a client that dies here leaves its locks: never committed, the
         * others roll them back once the TTL passed */
        if (dies(c, 16)) {
            end_txn(c, SI_ABORTED);
            return;
        }
        if (c->pend) {
            start_phase(c, PH_PREWRITE);
            return;
        }
        after_prewrite(c);
        return;
    }
    case PH_COMMIT_PRI: {
        unsigned secondaries = mutation_mask(c) & ~(1u << primary_index(c));
        if (c->commit_acked) {
            /* the retry of a commit that had succeeded: it must succeed
             * again and change nothing (under an injected bug it may fail;
             * the transaction is committed all the same) */
            t->n_commit_retries++;
            if (c->rq->resp.commit.has_error)
                t->n_bad_retries++;
        } else if (c->rq->resp.commit.has_error) { /* rolled back by someone: not committed */
            end_txn(c, t->inject_secondaries_first && secondaries ? SI_UNKNOWN : SI_ABORTED);
            return;
        } else if (sim_rnd(&t->s) % 4 == 0) {
            /* its answer "was lost": the client sends the commit again a
             * little later, when other transactions may hold the key */
            c->commit_acked = true;
            c->next_at = t->s.now + sim_rnd(&t->s) % 60;
            return;
        }
        t->n_multi_region_txns += c->n_pw_batches > 1;
        if (!secondaries || t->inject_secondaries_first) {
            end_txn(c, SI_COMMITTED);
            return;
        }
        /* a client that dies here leaves its secondaries' locks: it is
         * committed, the others commit them from the primary */
        if (dies(c, 12)) {
            end_txn(c, SI_COMMITTED);
            return;
        }
        start_batched(c, PH_COMMIT_SEC, secondaries);
        return;
    }
    case PH_COMMIT_SEC:
        if (c->rq->resp.commit.has_error && !t->bug) {
            sim_fail(&t->s, "client %d: commit of a secondary failed after its primary committed",
                     c->idx);
            return;
        }
        c->pend &= ~c->batch;
        if (t->inject_secondaries_first) {
            if (c->pend) {
                start_phase(c, PH_COMMIT_SEC);
            } else if (dies(c, 3)) {
                end_txn(c, SI_UNKNOWN);
            } else {
                start_phase(c, PH_COMMIT_PRI);
            }
            return;
        }
        if (c->pend && dies(c, 12)) { /* between two regions' batches */
            end_txn(c, SI_COMMITTED);
            return;
        }
        if (c->pend)
            start_phase(c, PH_COMMIT_SEC);
        else
            end_txn(c, SI_COMMITTED);
        return;
    case PH_ROLLBACK:
        c->pend &= ~c->batch;
        if (c->pend)
            start_phase(c, PH_ROLLBACK);
        else
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

/* sweep: read every key (bank: a scan), resolving every lock met. */
static void begin_txn(struct tclient *c, bool sweep)
{
    struct tsim *t = c->t;
    c->start_ts = tso(t);
    c->commit_acked = false;
    c->cur = 0;
    c->n_pw_batches = 0;
    c->pend = c->batch = 0;
    if (t->wl == BANK) {
        c->reader = sweep || sim_rnd(&t->s) % 10 < 3;
        if (c->reader) {
            memcpy(c->scan_from, "acct", 4);
            c->scan_from_len = 4;
            c->scan_n = 0;
            start_phase(c, PH_SCAN);
            return;
        }
        c->n_keys = 2;
        c->keys[0] = (unsigned)(sim_rnd(&t->s) % t->n_accounts);
        c->keys[1] =
            (c->keys[0] + 1 + (unsigned)(sim_rnd(&t->s) % (t->n_accounts - 1))) % t->n_accounts;
        start_phase(c, PH_READ);
        return;
    }
    c->si_txn = si_txn_begin(t->hist, (uint32_t)c->idx, t->s.now);
    if (sweep) {
        c->n_keys = t->n_keys;
        for (unsigned i = 0; i < c->n_keys; i++) {
            c->keys[i] = i;
            c->append[i] = false;
        }
        start_phase(c, PH_READ);
        return;
    }
    c->n_keys = 1 + (unsigned)(sim_rnd(&t->s) % MAX_MOPS);
    for (unsigned i = 0; i < c->n_keys; i++) {
        c->keys[i] = (unsigned)(sim_rnd(&t->s) % t->n_keys);
        /* at most one micro-op per key (n_keys > MAX_MOPS: this ends) */
        for (unsigned j = 0; j < i; j++)
            if (c->keys[j] == c->keys[i]) {
                c->keys[i] = (c->keys[i] + 1) % t->n_keys;
                j = (unsigned)-1; /* compare with all of them again */
            }
        c->append[i] = sim_rnd(&t->s) % 3 != 0;
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
            end_txn(c, t->inject_secondaries_first ? SI_UNKNOWN : SI_COMMITTED);
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
            begin_txn(c, false);
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
    bool regions;           /* split into 3 regions before the run, 5 during it */
    bool confchange;        /* the confchanger on random regions during the run */
    uint64_t gc_limit;      /* raft log GC count limit (0: default: no snapshots) */
    bool secondaries_first; /* INJECTED BUG (client) */
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

static void plan_split(struct tsim *t, unsigned key, uint64_t at)
{
    struct split_plan *p = &t->splits[t->n_split_plans++];
    key_name(t, p->key, key);
    p->at = at;
}

/* Locks of region rg in a store's engine (LOCK CF keys whose EncodeBytes
 * form lies in rg); the first one's key in first. */
static size_t locks_in(struct sim *s, int store, const struct tkv_rs_region *rg, char *first,
                       size_t cap)
{
    struct tkv_engine_session *sess = NULL;
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    size_t n = 0;
    first[0] = 0;
    if (tkv_engine_session_open(sim_engine(s, store), &sess) < 0 ||
        tkv_engine_snap_open(sess, &snap) < 0 ||
        tkv_engine_iter_open(snap, TKV_CF_LOCK, TKV_SLICE(NULL, 0), TKV_SLICE(NULL, 0), &it) < 0) {
        sim_fail(s, "store %d: cannot read its engine", store);
    } else {
        for (int rv = tkv_engine_iter_seek_first(it); rv == 0 && tkv_engine_iter_valid(it);
             rv = tkv_engine_iter_next(it)) {
            struct tkv_slice k = tkv_engine_iter_key(it);
            if (!tkv_rs_region_contains_txn_key(rg, k))
                continue;
            if (n++ == 0)
                snprintf(first, cap, "%.*s", (int)k.len, (const char *)k.ptr);
        }
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    tkv_engine_session_close(sess);
    return n;
}

/* After the final sweep: no region may hold a lock, on its leader or on any
 * replica that applied as far. */
static void check_no_locks_left(struct tsim *t)
{
    struct sim *s = &t->s;
    sim_run(s, 300);
    for (int i = 0; i < s->n_regions && !s->failed; i++) {
        uint64_t id = s->regions[i].rg.id;
        int leader = 0;
        for (int w = 0; w < 5000 && !(leader = sim_region_leader(s, id)) && !s->failed; w++)
            sim_run(s, 1);
        if (!leader) {
            sim_fail(s, "region %llu has no leader 5 s after healing", (unsigned long long)id);
            return;
        }
        struct tkv_rs_region_status ls;
        tkv_raftstore_region_status(sim_store(s, leader), id, &ls);
        for (int st = 1; st <= s->o.n_stores && !s->failed; st++) {
            struct tkv_rs_region_status ps;
            if (!sim_store(s, st))
                continue;
            tkv_raftstore_region_status(sim_store(s, st), id, &ps);
            if (!ps.exists || ps.applied != ls.applied)
                continue;
            char key[64];
            size_t n = locks_in(s, st, &ps.region, key, sizeof key);
            if (n)
                sim_fail(s, "%zu lock(s) left unresolved in region %llu on store %d%s (first: %s)",
                         n, (unsigned long long)id, st, st == leader ? " (leader)" : "", key);
        }
    }
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
    for (int i = 0; i < N_CLIENTS; i++)
        t->c[i] = (struct tclient){.t = t, .idx = i};
    struct sim_opts o = {.n_stores = 5,
                         .n_clients = 0,
                         .unreliable = sc->unreliable,
                         .crash = sc->crash,
                         .partitions = sc->partitions,
                         .iterations = sc->iterations,
                         .iteration_ms = sc->iteration_ms,
                         .n_keys = 1,
                         .gc_limit = sc->gc_limit,
                         /* the confchanger picks random regions with split
                          * on (the split checker never fires at the
                          * default sizes: only the directed splits) */
                         .split = sc->confchange,
                         .confchange = sc->confchange,
                         .confchange_min_peers = 3};
    struct sim_hooks hooks = {.arg = t, .store_event = on_store, .step = on_step};
    sim_init_hooks(&t->s, &o, seed, &hooks);
    struct sim *s = &t->s;
    t->inject_stale_reads = sc->stale_reads;
    t->inject_secondaries_first = sc->secondaries_first;
    t->bug = sc->bug;
    sim_run(s, 400);
    if (sc->regions) {
        /* three regions before the run: [.., k02) [k02, k04) [k04, ..) */
        plan_split(t, 2, s->now);
        plan_split(t, 4, s->now);
        for (int i = 0; i < 10000 && t->n_splits_done < 2 && !s->failed; i++)
            sim_run(s, 1);
        if (t->n_splits_done < 2 && !s->failed)
            sim_fail(s, "the splits before the run did not apply in 10 s");
        /* and two more during the first iteration, under the faults */
        plan_split(t, 1, s->now + 100 + sim_rnd(s) % (sc->iteration_ms / 2));
        plan_split(t, 3, t->splits[2].at + sim_rnd(s) % (sc->iteration_ms / 2));
    }
    if (t->wl == BANK) {
        /* the accounts, in one transaction of client 0, before the chaos */
        struct tclient *c = &t->c[0];
        c->start_ts = tso(t);
        c->n_keys = t->n_accounts;
        c->n_pw_batches = 0;
        for (unsigned i = 0; i < t->n_accounts; i++) {
            c->keys[i] = i;
            c->bal[i] = t->balance;
        }
        t->setup = true;
        start_batched(c, PH_PREWRITE, mutation_mask(c));
        for (int i = 0; i < 5000 && c->ph != PH_IDLE && !s->failed; i++)
            sim_run(s, 1);
        t->setup = false;
        if (t->n_committed != 1 && !s->failed)
            sim_fail(s, "bank set-up did not commit");
        t->n_committed = 0;
        t->n_multi_region_txns = 0;
    }
    for (int it = 0; it < sc->iterations && !s->failed; it++) {
        t->clients_on = true;
        s->confchanger_on = sc->confchange;
        uint64_t end = s->now + sc->iteration_ms;
        for (int round = 0; s->now < end && !s->failed; round++) {
            sim_chaos(s);
            /* and through leader changes: take a region's leader away */
            int leader =
                s->n_regions
                    ? sim_region_leader(s, s->regions[sim_rnd(s) % (uint64_t)s->n_regions].rg.id)
                    : 0;
            if (round % 3 == 2 && leader && sc->crash) {
                sim_crash(s, leader);
                sim_run(s, 1 + sim_rnd(s) % 200);
                sim_restart(s, leader);
            } else if (round % 3 == 2 && leader && sc->partitions) {
                sim_partition(s, &leader, 1);
            }
        }
        t->clients_on = false;
        s->confchanger_on = false;
        sim_settle(s);
        for (int i = 0; i < 20000 && any_waiting(t) && !s->failed; i++)
            sim_run(s, 1);
        if (any_waiting(t) && !s->failed) {
            char busy[256];
            size_t off = 0;
            for (int i = 0; i < N_CLIENTS && off < sizeof busy - 64; i++)
                if (t->c[i].ph != PH_IDLE)
                    off += (size_t)snprintf(
                        busy + off, sizeof busy - off,
                        " [client %d: phase %d, region %llu (leader: store %d), waiting %d]", i,
                        (int)t->c[i].ph, (unsigned long long)t->c[i].rq_region.id,
                        sim_region_leader(s, t->c[i].rq_region.id), (int)t->c[i].waiting);
            if (getenv("TKV_RS_VERBOSE"))
                for (int st = 1; st <= s->o.n_stores; st++) {
                    struct tkv_rs_region_status ps;
                    if (!sim_store(s, st))
                        continue;
                    uint64_t rid = t->c[0].rq_region.id;
                    for (int i = 0; i < N_CLIENTS; i++)
                        if (t->c[i].ph != PH_IDLE)
                            rid = t->c[i].rq_region.id;
                    tkv_raftstore_region_status(sim_store(s, st), rid, &ps);
                    fprintf(stderr,
                            "store %d region %llu: exists %d peer %llu term %llu leader %llu "
                            "applied %llu commit %llu last %llu conf_ver %llu peers:",
                            st, (unsigned long long)rid, ps.exists, (unsigned long long)ps.peer_id,
                            (unsigned long long)ps.term, (unsigned long long)ps.leader_peer_id,
                            (unsigned long long)ps.applied, (unsigned long long)ps.commit,
                            (unsigned long long)ps.last_index,
                            (unsigned long long)ps.region.epoch.conf_ver);
                    for (uint32_t k = 0; k < ps.region.n_peers; k++)
                        fprintf(stderr, " %llu@%llu", (unsigned long long)ps.region.peers[k].id,
                                (unsigned long long)ps.region.peers[k].store_id);
                    fprintf(stderr, "\n");
                }
            sim_fail(s, "clients still busy 20 s after healing (liveness):%s", busy);
        }
        for (int r = 0; r < SIM_MAX_REGIONS && sc->confchange && !s->failed; r++)
            for (int i = 0; i < 10000 && s->sched.regions[r].known &&
                            s->sched.regions[r].op != SIM_OP_NONE && !s->failed;
                 i++)
                sim_run(s, 1);
    }
    /* a calm stretch (healed, every store up): the clients must make
     * progress, across regions, with the regions as the chaos left them */
    if (!s->failed) {
        t->clients_on = true;
        sim_run(s, 600);
        t->clients_on = false;
        for (int i = 0; i < 20000 && any_waiting(t) && !s->failed; i++)
            sim_run(s, 1);
    }
    /* final sweeps after everything settled: every key read, every lock met
     * resolved; then none may be left */
    t->clients_on = false;
    for (int round = 0; round < 2 && !s->failed; round++) {
        for (int i = 0; i < N_CLIENTS; i++)
            begin_txn(&t->c[i], true);
        for (int i = 0; i < 20000 && any_waiting(t) && !s->failed; i++)
            sim_run(s, 1);
    }
    if (!s->failed && any_waiting(t))
        sim_fail(s, "the final sweep did not finish in 20 s (liveness)");
    if (!s->failed && !sc->bug)
        check_no_locks_left(t);
    if (!s->failed && t->n_committed < 20)
        sim_fail(s, "only %llu transactions committed (liveness)",
                 (unsigned long long)t->n_committed);
    if (!s->failed && !sc->bug && t->n_bad_retries)
        sim_fail(s, "%llu retried commits of committed transactions failed",
                 (unsigned long long)t->n_bad_retries);
    if (!s->failed && (sc->crash || sc->partitions) && t->n_leader_changes == 0)
        sim_fail(s, "no leader change happened: the scenario did not test one");
    if (!s->failed && sc->regions && t->n_splits_done != t->n_split_plans)
        sim_fail(s,
                 "only %d of %d planned splits applied (next: at %s, planned at %llu ms, now %llu)",
                 t->n_splits_done, t->n_split_plans, t->splits[t->n_splits_done].key,
                 (unsigned long long)t->splits[t->n_splits_done].at, (unsigned long long)s->now);
    if (!s->failed && sc->regions && !sc->bug && t->n_multi_region_txns == 0)
        sim_fail(s, "no committed transaction spanned two regions: the scenario did not test one");
    if (!s->failed && sc->confchange && s->n_conf_changes == 0)
        sim_fail(s, "no conf change happened: the scenario did not test one");
    if (getenv("TKV_RS_VERBOSE"))
        fprintf(stderr,
                "%s seed %llu: %llu committed (%llu multi-region), %llu aborted, %llu unknown, "
                "%llu abandoned, %llu resolutions, %llu snapshot reads, %llu leader changes, "
                "%llu retried commits (%llu failed), %d regions, %llu conf changes, region errors: "
                "%llu NotLeader %llu EpochNotMatch %llu KeyNotInRegion %llu RegionNotFound "
                "%llu StaleCommand %llu ServerIsBusy, %llu stale peer ids\n",
                sc->name, (unsigned long long)seed, (unsigned long long)t->n_committed,
                (unsigned long long)t->n_multi_region_txns, (unsigned long long)t->n_aborted,
                (unsigned long long)t->n_unknown, (unsigned long long)t->n_abandoned,
                (unsigned long long)t->n_resolved, (unsigned long long)t->n_reads,
                (unsigned long long)t->n_leader_changes, (unsigned long long)t->n_commit_retries,
                (unsigned long long)t->n_bad_retries, s->n_regions,
                (unsigned long long)s->n_conf_changes,
                (unsigned long long)t->n_region_errors[TKV_RS_NOT_LEADER],
                (unsigned long long)t->n_region_errors[TKV_RS_EPOCH_NOT_MATCH],
                (unsigned long long)t->n_region_errors[TKV_RS_KEY_NOT_IN_REGION],
                (unsigned long long)t->n_region_errors[TKV_RS_REGION_NOT_FOUND],
                (unsigned long long)t->n_region_errors[TKV_RS_STALE_COMMAND],
                (unsigned long long)t->n_region_errors[TKV_RS_SERVER_BUSY],
                (unsigned long long)t->n_stale_peer);
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
    struct scenario sc = {.name = "bank",
                          .wl = BANK,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500};
    run_scenario(&sc);
}

Test(txn_sim, append_with_crashes_partitions_and_drops)
{
    struct scenario sc = {.name = "append",
                          .wl = APPEND,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500};
    run_scenario(&sc);
}

Test(txn_sim, bank_with_partitions)
{
    struct scenario sc = {.name = "bank/partitions",
                          .wl = BANK,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500};
    run_scenario(&sc);
}

Test(txn_sim, append_with_crashes)
{
    struct scenario sc = {.name = "append/crashes",
                          .wl = APPEND,
                          .crash = true,
                          .iterations = 2,
                          .iteration_ms = 1500};
    run_scenario(&sc);
}

Test(txn_sim, append_with_drops_and_partitions)
{
    struct scenario sc = {.name = "append/drops+partitions",
                          .wl = APPEND,
                          .unreliable = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500};
    run_scenario(&sc);
}

/* Several regions (issue 10 item 7): split into three before the run and
 * into five during it, so transactions span regions (prewrite and commit
 * grouped by region, locks resolved per region) while the splits race with
 * crashes, partitions and drops; stale routes meet EpochNotMatch /
 * KeyNotInRegion. A small log GC limit makes lagging peers catch up by
 * snapshot (the LOCK CF goes with them); the confchanger moves peers. */
Test(txn_sim, bank_regions_with_crashes_partitions_and_drops)
{
    struct scenario sc = {.name = "bank/regions",
                          .wl = BANK,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500,
                          .regions = true,
                          .gc_limit = 40};
    run_scenario(&sc);
}

Test(txn_sim, append_regions_with_crashes_partitions_and_drops)
{
    struct scenario sc = {.name = "append/regions",
                          .wl = APPEND,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500,
                          .regions = true,
                          .gc_limit = 40};
    run_scenario(&sc);
}

Test(txn_sim, bank_regions_with_conf_changes_and_snapshots)
{
    struct scenario sc = {.name = "bank/regions+confchange",
                          .wl = BANK,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500,
                          .regions = true,
                          .confchange = true,
                          .gc_limit = 40};
    run_scenario(&sc);
}

Test(txn_sim, append_regions_with_conf_changes_and_snapshots)
{
    struct scenario sc = {.name = "append/regions+confchange",
                          .wl = APPEND,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500,
                          .regions = true,
                          .confchange = true,
                          .gc_limit = 40};
    run_scenario(&sc);
}

/* A client that commits its secondaries before the primary (the commit
 * point) and dies in between leaves a transfer half done: readers roll the
 * primary back, the credited account keeps its money. */
Test(txn_sim, checker_catches_secondaries_committed_before_the_primary)
{
    struct scenario sc = {.name = "bank/regions/secondaries_first",
                          .wl = BANK,
                          .iterations = 1,
                          .iteration_ms = 1500,
                          .bug = true,
                          .regions = true,
                          .secondaries_first = true};
    expect_caught(&sc, 3);
}

/* The cluster read path: a KvGet served from any store's engine without
 * ReadIndex (a follower or a deposed leader) misses committed appends. */
Test(txn_sim, checker_catches_reads_without_read_index)
{
    struct scenario sc = {.name = "append/stale_reads",
                          .wl = APPEND,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 1,
                          .iteration_ms = 1500,
                          .bug = true,
                          .stale_reads = true};
    expect_caught(&sc, 5);
}

#ifdef FIU_ENABLE
Test(txn_sim, checker_catches_reads_that_ignore_locks)
{
    struct scenario sc = {.name = "bank/read_ignores_locks",
                          .wl = BANK,
                          .iterations = 1,
                          .iteration_ms = 1500,
                          .bug = true};
    fiu_init(0);
    fiu_enable("txn/read_ignores_locks", 1, NULL, 0);
    expect_caught(&sc, 3);
    fiu_disable("txn/read_ignores_locks");
}

Test(txn_sim, checker_catches_prewrite_over_foreign_locks)
{
    struct scenario sc = {.name = "append/prewrite_ignores_locks",
                          .wl = APPEND,
                          .iterations = 1,
                          .iteration_ms = 1500,
                          .bug = true};
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
    struct scenario sc = {.name = "append/commit_ignores_lock_owner",
                          .wl = APPEND,
                          .iterations = 1,
                          .iteration_ms = 1500,
                          .bug = true};
    fiu_init(0);
    fiu_enable("txn/commit_ignores_lock_owner", 1, NULL, 0);
    expect_caught(&sc, 5);
    fiu_disable("txn/commit_ignores_lock_owner");
}
#endif

/* ---- the LOCK CF across a split (src/raftstore/README.md) ---- */

struct direct_call {
    bool done;
    struct tkv_txn_cluster_result res;
};

static void on_direct_call(void *arg, const struct tkv_txn_cluster_result *res)
{
    struct direct_call *d = arg;
    d->done = true;
    d->res = *res;
}

/* One command on a store's driver for a region, run until answered. */
static int direct_cmd(struct tsim *t, int store, uint64_t region_id, enum tkv_txn_cmd cmd,
                      const void *req, void *resp, struct tkv_arena *arena)
{
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&t->s, store), region_id, &st);
    struct tkv_rs_header h = {.region_id = region_id, .epoch = st.region.epoch};
    for (uint32_t i = 0; i < st.region.n_peers; i++)
        if (st.region.peers[i].store_id == (uint64_t)store)
            h.peer = st.region.peers[i];
    struct direct_call d = {0};
    tkv_txn_cluster_submit(t->tc[store], &h, cmd, req, resp, arena, on_direct_call, &d);
    for (int i = 0; i < 3000 && !d.done; i++)
        sim_run(&t->s, 1);
    return d.done ? d.res.rv : TKV_ETIMEDOUT;
}

/* Prewrite key (primary itself) at start_ts on the region's leader. */
static int prewrite_one(struct tsim *t, int leader, uint64_t region_id, const char *key,
                        uint64_t start_ts, uint64_t ttl)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    kvrpcpb_Mutation mu = {
        .op = kvrpcpb_Op_Put, .key = TKV_SLICE(key, strlen(key)), .value = TKV_SLICE("1", 1)};
    kvrpcpb_PrewriteRequest pw = {
        .start_version = start_ts, .lock_ttl = ttl, .primary_lock = mu.key};
    pw.mutations.items = &mu;
    pw.mutations.n = 1;
    kvrpcpb_PrewriteResponse pr;
    int rv = TKV_EREGION;
    /* a fresh leader answers StaleCommand until it committed in its term */
    for (int i = 0; i < 100 && rv == TKV_EREGION; i++) {
        if (i)
            sim_run(&t->s, 20);
        rv = direct_cmd(t, leader, region_id, TKV_TXN_PREWRITE, &pw, &pr, &a);
    }
    if (rv == 0 && pr.errors.n)
        rv = TKV_EINVAL;
    tkv_arena_close(&a);
    return rv;
}

/* Split at EncodeBytes("k05"); a lock on k05 (the new region's first key:
 * raw "k05" sorts BEFORE the region's start EncodeBytes("k05")) is written
 * while one follower of the new region is cut off; the region's log moves
 * on and is compacted past that follower, which then catches up by
 * snapshot and is made leader: a read of k05 there must meet the lock.
 * Returns whether it did (the failure is described in why). */
static bool lock_survives_snapshot(uint64_t seed, char *why, size_t cap)
{
    struct tsim *t = calloc(1, sizeof(*t));
    t->wl = APPEND; /* keys "k%02u" */
    for (int i = 0; i < N_CLIENTS; i++)
        t->c[i] = (struct tclient){.t = t, .idx = i}; /* idle: clients stay off */
    struct sim_opts o = {
        .n_stores = 3, .iterations = 1, .iteration_ms = 100, .n_keys = 1, .gc_limit = 10};
    struct sim_hooks hooks = {.arg = t, .store_event = on_store, .step = on_step};
    sim_init_hooks(&t->s, &o, seed, &hooks);
    struct sim *s = &t->s;
    bool seen = false;
    why[0] = 0;
    sim_run(s, 400);
    plan_split(t, 5, s->now);
    for (int i = 0; i < 5000 && t->n_splits_done < 1; i++)
        sim_run(s, 1);
    uint8_t enc[32];
    size_t n = tkv_codec_encode_bytes(enc, (const uint8_t *)"k05", 3);
    const struct sim_region *r = sim_route(s, (const char *)enc, n);
    int leader = 0;
    for (int i = 0; i < 3000 && r && !(leader = sim_region_leader(s, r->rg.id)); i++)
        sim_run(s, 1);
    if (t->n_splits_done < 1 || !r || !leader) {
        snprintf(why, cap, "the split at k05 did not happen");
        goto out;
    }
    uint64_t rid = r->rg.id;
    int lagger = leader % 3 + 1;
    s->blocked_region = rid;
    s->blocked_store = lagger;
    uint64_t lock_ts = tso(t);
    int rv = prewrite_one(t, leader, rid, "k05", lock_ts, 1000000);
    /* the region's log moves on: other transactions' locks on k100.. */
    for (int i = 0; i < 30 && rv == 0; i++) {
        char k[16];
        snprintf(k, sizeof k, "k1%02d", i);
        rv = prewrite_one(t, leader, rid, k, tso(t), 1);
    }
    if (rv != 0) {
        snprintf(why, cap, "prewrite on the leader failed: %d", rv);
        goto out;
    }
    struct tkv_rs_region_status ls, fs;
    for (int i = 0; i < 3000; i++) {
        sim_run(s, 1);
        tkv_raftstore_region_status(sim_store(s, leader), rid, &ls);
        tkv_raftstore_region_status(sim_store(s, lagger), rid, &fs);
        if (ls.truncated_index > fs.applied + 1)
            break;
    }
    if (ls.truncated_index <= fs.applied + 1) {
        snprintf(why, cap, "the leader's log was not compacted past the lagging follower");
        goto out;
    }
    struct tkv_raftstore_stats before, after;
    tkv_raftstore_stats(sim_store(s, lagger), &before);
    s->blocked_region = 0;
    for (int i = 0; i < 3000; i++) {
        sim_run(s, 1);
        tkv_raftstore_region_status(sim_store(s, leader), rid, &ls);
        tkv_raftstore_region_status(sim_store(s, lagger), rid, &fs);
        if (fs.applied >= ls.applied)
            break;
    }
    tkv_raftstore_stats(sim_store(s, lagger), &after);
    if (after.snapshots_applied == before.snapshots_applied) {
        snprintf(why, cap, "the follower did not catch up by snapshot");
        goto out;
    }
    if (sim_must_transfer_leader(s, rid, lagger, 5000) < 0) {
        snprintf(why, cap, "leadership did not move to the follower: %.160s", s->err);
        goto out;
    }
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    kvrpcpb_GetRequest g = {.key = TKV_SLICE("k05", 3), .version = tso(t)};
    kvrpcpb_GetResponse gr;
    rv = TKV_EREGION;
    for (int i = 0; i < 100 && rv == TKV_EREGION; i++) {
        if (i)
            sim_run(s, 20);
        rv = direct_cmd(t, lagger, rid, TKV_TXN_GET, &g, &gr, &a);
    }
    if (rv != 0)
        snprintf(why, cap, "KvGet on the new leader failed: %d", rv);
    else if (!gr.has_error || !gr.error.has_locked || gr.error.locked.lock_version != lock_ts)
        snprintf(why, cap,
                 "KvGet(k05) on store %d (leader after catching up by snapshot) did not meet the "
                 "lock of ts %llu (%s): the snapshot lost it",
                 lagger, (unsigned long long)lock_ts,
                 gr.has_error   ? "another KeyError"
                 : gr.not_found ? "not found"
                                : "a value");
    else
        seen = true;
    tkv_arena_close(&a);
out:
    sim_close(s);
    si_history_free(t->hist);
    free(t);
    return seen;
}

Test(txn_sim, lock_cf_snapshot_after_split)
{
    for (uint64_t seed = 1; seed <= 3; seed++) {
        char why[256];
        cr_assert(lock_survives_snapshot(seed, why, sizeof why), "seed %llu: %s",
                  (unsigned long long)seed, why);
    }
}

#ifdef FIU_ENABLE
/* The old rule (LOCK CF taken by the region's raw bounds): the snapshot
 * misses k05's lock and the new leader serves the read as if unlocked. */
Test(txn_sim, lock_cf_raw_bounds_bug_loses_the_lock)
{
    fiu_init(0);
    fiu_enable("raftstore/lock_cf_raw_bounds", 1, NULL, 0);
    char why[256];
    bool seen = lock_survives_snapshot(1, why, sizeof why);
    fiu_disable("raftstore/lock_cf_raw_bounds");
    cr_assert(!seen, "the lock survived with the raw-bounds rule: the scenario cannot fail");
    cr_assert(strstr(why, "the snapshot lost it"), "failed otherwise: %s", why);
    if (getenv("TKV_RS_VERBOSE"))
        fprintf(stderr, "raw-bounds rule: %s\n", why);
}

/* The same bug in the multi-region runs: what catches it there (the final
 * lock check: a replica keeps a lock its region resolved; or the checker). */
Test(txn_sim, lock_cf_raw_bounds_bug_caught_by_the_region_runs)
{
    struct scenario sc = {.name = "bank/regions+confchange/lock_cf_raw_bounds",
                          .wl = BANK,
                          .unreliable = true,
                          .crash = true,
                          .partitions = true,
                          .iterations = 2,
                          .iteration_ms = 1500,
                          .regions = true,
                          .confchange = true,
                          .gc_limit = 40};
    fiu_init(0);
    fiu_enable("raftstore/lock_cf_raw_bounds", 1, NULL, 0);
    bool caught = false;
    for (int i = 0; i < 40 && !caught; i++) {
        uint64_t seed = (uint64_t)(i + 1) * 7907u;
        char err[512];
        char *report;
        bool ok = run_one(&sc, seed, err, sizeof err, &report);
        if (!ok || strstr(err, "left unresolved")) {
            caught = true;
            if (getenv("TKV_RS_VERBOSE"))
                fprintf(stderr, "%s: caught with seed %llu: %s\n%s\n", sc.name,
                        (unsigned long long)seed, err, ok ? "" : report);
        }
        free(report);
    }
    fiu_disable("raftstore/lock_cf_raw_bounds");
    cr_assert(caught, "%s: not caught in 40 seeds", sc.name);
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
