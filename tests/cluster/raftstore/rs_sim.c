/* The raftstore cluster simulator (see rs_sim.h). Single thread, virtual
 * time, every random choice from one seeded PRNG: a seed replays exactly. */
#include "rs_sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/raftstore/rs_private.h" /* rs_snapshot_build: the snapshot oracle */
#include "tkv/engine.h"
#include "tkv/err.h"
#include "tkv/raftlog.h"

#define TICK_MS 10
#define ELECTION_MS (10 * TICK_MS)
#define OP_TIMEOUT_MS 1000

struct sim_store {
    struct sim *sim;
    int id;
    bool alive;
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_engine *engine;
    struct tkv_raftstore *rs;
    uint64_t next_tick, next_ckpt, restart_at;
    /* A background checkpoint (the host's helper thread): begun and the
     * engine's image taken at one ms, _done reported at ckpt_done_at (0:
     * none in flight); a crash in between loses the _done. ckpt_wanted:
     * env.request_checkpoint asked for one before the regular interval. */
    uint64_t ckpt_done_at;
    bool ckpt_wanted;
    uint64_t seen_destroyed; /* stats.peers_destroyed at the last turn */
    uint64_t next_hb; /* next scheduler heartbeat of the regions it leads */
    bool hb_due;      /* a region changed: heartbeat at once */
};

struct sim_ask {
    int store;
    struct tkv_rs_region region;
    uint32_t key_len;
    uint8_t key[TKV_RS_BOUND_MAX];
};

struct sim_snapref {
    int store;
    uint64_t region_id;
    tkv_index index;
    struct rs_buf want;
};
#define SIM_MAX_SNAPREFS 64

struct sim_msg {
    uint64_t at, seq;
    int from, to;
    struct tkv_rs_msg m;
};

enum { C_IDLE = 0, C_WAIT = 1 };

enum { OP_PUT = 1, OP_GET = 2 };

struct sim_client {
    int idx;
    int state;
    uint64_t token;
    size_t op; /* lincheck op id */
    uint32_t kind;
    uint32_t key;
    uint64_t region_id; /* where the op was sent */
    uint64_t value;
    uint64_t deadline;
    uint64_t next_at;
    int leader_guess;
    /* synchronous helper result */
    bool done;
    int rv;
    char val[64];
};

struct sim_req {
    struct sim *sim;
    int client;
    uint64_t token;
};

static bool clients_on;
static uint32_t *key_ops; /* ops recorded per key (bounded for the checker) */

/* ------------------------------------------------------------ basics */

static uint64_t rnd(struct sim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rnd_range(struct sim *s, uint64_t lo, uint64_t hi)
{
    return lo + rnd(s) % (hi - lo + 1);
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ network */

static uint64_t env_now(void *ctx)
{
    struct sim_store *st = ctx;
    return st->sim->now;
}

static void enqueue(struct sim *s, int from, int to, const struct tkv_rs_msg *m, uint64_t delay)
{
    if (s->n_q == s->cap_q) {
        s->cap_q = s->cap_q ? s->cap_q * 2 : 256;
        s->q = realloc(s->q, s->cap_q * sizeof(*s->q));
        if (!s->q)
            abort();
    }
    struct sim_msg *q = &s->q[s->n_q++];
    q->at = s->now + delay;
    q->seq = ++s->seq;
    q->from = from;
    q->to = to;
    tkv_rs_msg_clone(&q->m, m);
}

/* A snapshot leaving store `store` must be the region at its index. */
static void snap_check_sent(struct sim *s, int store, const struct tkv_rs_msg *m)
{
    const struct tkv_raft_snapshot *sn = m->msg.snapshot;
    if (m->msg.type != TKV_RAFT_MSG_SNAPSHOT || !sn || !sn->data)
        return;
    for (size_t i = s->n_snaprefs; i-- > 0;) {
        struct sim_snapref *r = &s->snaprefs[i];
        if (r->store != store || r->region_id != m->region_id || r->index != sn->index)
            continue;
        s->n_snap_checked++;
        if (r->want.len != sn->data->len || memcmp(r->want.p, sn->data->data, r->want.len) != 0)
            sim_fail(s, "store %d: snapshot of region %llu at index %llu differs from the region "
                        "at that index (%zu bytes sent, %zu expected)",
                     store, (unsigned long long)m->region_id, (unsigned long long)sn->index,
                     sn->data->len, r->want.len);
        s->max_snap_checked_len = TKV_MAX(s->max_snap_checked_len, r->want.len);
        return;
    }
    s->n_snap_unchecked++;
}

/* Store st just started generating a snapshot (in the Ready that just
 * returned, with nothing applied since): record the expected payload. */
static void snap_record(struct sim *s, struct sim_store *st, uint64_t region_id, tkv_index index)
{
    struct tkv_rs_region_status rst;
    tkv_raftstore_region_status(st->rs, region_id, &rst);
    if (!rst.exists || rst.applied != index) {
        sim_fail(s, "store %d: generation of region %llu at %llu but applied is %llu", st->id,
                 (unsigned long long)region_id, (unsigned long long)index,
                 (unsigned long long)rst.applied);
        return;
    }
    if (s->n_snaprefs == SIM_MAX_SNAPREFS) {
        rs_buf_free(&s->snaprefs[0].want);
        memmove(s->snaprefs, s->snaprefs + 1, (SIM_MAX_SNAPREFS - 1) * sizeof(*s->snaprefs));
        s->n_snaprefs--;
    }
    if (!s->snaprefs)
        s->snaprefs = calloc(SIM_MAX_SNAPREFS, sizeof(*s->snaprefs));
    struct sim_snapref *r = &s->snaprefs[s->n_snaprefs++];
    memset(r, 0, sizeof(*r));
    r->store = st->id;
    r->region_id = region_id;
    r->index = index;
    struct tkv_engine_session *sess = NULL;
    if (tkv_engine_session_open(st->engine, &sess) < 0 ||
        rs_snapshot_build(sess, &rst.region, &r->want) < 0)
        sim_fail(s, "store %d: snapshot oracle could not read the engine", st->id);
    tkv_engine_session_close(sess);
}

static void env_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    struct sim_store *st = ctx;
    struct sim *s = st->sim;
    snap_check_sent(s, st->id, m);
    if (to_store == 0 || to_store > (uint64_t)s->o.n_stores)
        return;
    int to = (int)to_store;
    if (s->cut[st->id][to] || (s->blocked_region == m->region_id && s->blocked_store == to))
        return;
    uint64_t lo = 1, hi = 3;
    if (s->o.unreliable) {
        if (rnd(s) % 100 < 10)
            return;
        hi = 30;
        if (rnd(s) % 100 < 5)
            enqueue(s, st->id, to, m, rnd_range(s, lo, hi));
    }
    enqueue(s, st->id, to, m, rnd_range(s, lo, hi));
}

static int cmp_msg(const void *a, const void *b)
{
    const struct sim_msg *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void deliver_due(struct sim *s)
{
    /* take the due messages out first: delivery may enqueue more */
    size_t n_due = 0;
    for (size_t i = 0; i < s->n_q; i++)
        if (s->q[i].at <= s->now)
            n_due++;
    if (!n_due)
        return;
    struct sim_msg *due = malloc(n_due * sizeof(*due));
    size_t k = 0, d = 0;
    for (size_t i = 0; i < s->n_q; i++) {
        if (s->q[i].at <= s->now)
            due[d++] = s->q[i];
        else
            s->q[k++] = s->q[i];
    }
    s->n_q = k;
    qsort(due, n_due, sizeof(*due), cmp_msg);
    for (size_t i = 0; i < n_due; i++) {
        struct sim_store *to = s->stores[due[i].to];
        if (to && to->alive && !s->cut[due[i].from][due[i].to])
            tkv_raftstore_receive(to->rs, &due[i].m);
        tkv_rs_msg_release(&due[i].m);
    }
    free(due);
}

/* ------------------------------------------------------------ mock scheduler */

static bool epoch_newer(const struct tkv_rs_epoch *a, const struct tkv_rs_epoch *b)
{
    return a->version > b->version || (a->version == b->version && a->conf_ver > b->conf_ver);
}

static void dir_update(struct sim *s, const struct tkv_rs_region *rg)
{
    for (int i = 0; i < s->n_regions; i++) {
        if (s->regions[i].rg.id != rg->id)
            continue;
        if (epoch_newer(&rg->epoch, &s->regions[i].rg.epoch))
            s->regions[i].rg = *rg;
        return;
    }
    if (s->n_regions == SIM_MAX_REGIONS) {
        sim_fail(s, "more than %d regions", SIM_MAX_REGIONS);
        return;
    }
    s->regions[s->n_regions++] = (struct sim_region){.rg = *rg};
}

static struct sim_region *dir_get(struct sim *s, uint64_t region_id)
{
    for (int i = 0; i < s->n_regions; i++)
        if (s->regions[i].rg.id == region_id)
            return &s->regions[i];
    return NULL;
}

static bool key_in(const struct tkv_rs_region *rg, const char *k, size_t n)
{
    size_t m = TKV_MIN(n, rg->start_len);
    int c = m ? memcmp(k, rg->start, m) : 0;
    if (c < 0 || (c == 0 && n < rg->start_len))
        return false;
    if (rg->end_len == 0)
        return true;
    m = TKV_MIN(n, rg->end_len);
    c = m ? memcmp(k, rg->end, m) : 0;
    return c < 0 || (c == 0 && n < rg->end_len);
}

const struct sim_region *sim_route(struct sim *s, const char *key, size_t len)
{
    const struct sim_region *best = NULL;
    for (int i = 0; i < s->n_regions; i++)
        if (key_in(&s->regions[i].rg, key, len) &&
            (!best || epoch_newer(&s->regions[i].rg.epoch, &best->rg.epoch)))
            best = &s->regions[i];
    return best;
}

static void env_region_changed(void *ctx, const struct tkv_rs_region *region,
                               const struct tkv_rs_region *right, bool removed)
{
    struct sim_store *st = ctx;
    /* no call back into the raftstore from here: heartbeat next ms */
    st->hb_due = true;
    if (removed)
        return;
    dir_update(st->sim, region);
    if (right)
        dir_update(st->sim, right);
}

static void env_request_checkpoint(void *ctx)
{
    struct sim_store *st = ctx;
    st->ckpt_wanted = true; /* begun by step_ms after the stores' turns */
}

static void env_ask_split(void *ctx, const struct tkv_rs_region *region, struct tkv_slice key)
{
    struct sim_store *st = ctx;
    struct sim *s = st->sim;
    if (key.len > TKV_RS_BOUND_MAX)
        return;
    if (s->n_asks == s->cap_asks) {
        s->cap_asks = s->cap_asks ? 2 * s->cap_asks : 16;
        s->asks = realloc(s->asks, s->cap_asks * sizeof(*s->asks));
        if (!s->asks)
            abort();
    }
    struct sim_ask *a = &s->asks[s->n_asks++];
    a->store = st->id;
    a->region = *region;
    a->key_len = (uint32_t)key.len;
    memcpy(a->key, key.ptr, key.len);
    /* what the leader saw is news to the directory too (heartbeat) */
    dir_update(s, region);
}

static void on_split_done(void *arg, const struct tkv_rs_result *res)
{
    struct sim *s = arg;
    if (res->rv == 0)
        s->n_splits++;
}

/* AskSplit answered with fresh ids, then Split proposed on the asking
 * store (outside the raftstore's own call, as a host would). */
static void asks_step(struct sim *s)
{
    size_t n = s->n_asks;
    s->n_asks = 0;
    for (size_t i = 0; i < n; i++) {
        struct sim_ask a = s->asks[i];
        struct tkv_raftstore *rs = sim_store(s, a.store);
        if (!rs)
            continue;
        uint64_t nid = sim_alloc_id(s);
        uint64_t ids[TKV_RS_MAX_PEERS];
        for (uint32_t k = 0; k < a.region.n_peers; k++)
            ids[k] = sim_alloc_id(s);
        tkv_raftstore_split(rs, a.region.id, &a.region.epoch, TKV_SLICE(a.key, a.key_len), nid, ids,
                            a.region.n_peers, on_split_done, s);
    }
}

/* ------------------------------------------------------------ stores */


static void store_open(struct sim *s, struct sim_store *st)
{
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    int rv = tkv_raftlog_open_mem(&lc, st->disk, &st->log, NULL);
    if (rv < 0) {
        sim_fail(s, "store %d: raft log open failed: %d", st->id, rv);
        return;
    }
    struct tkv_raftstore_config cfg = {.store_id = (uint64_t)st->id,
                                       .election_tick = 10,
                                       .heartbeat_tick = 2,
                                       .raft_log_gc_tick = 5,
                                       .raft_log_gc_count_limit = s->o.gc_limit,
                                       .seed = s->seed,
                                       .region_max_size = s->o.region_max_size,
                                       .region_split_size = s->o.region_split_size,
                                       .split_check_tick = 10,
                                       .snap_gen_budget = s->o.snap_gen_budget};
    struct tkv_raftstore_env env = {.ctx = st, .now_ms = env_now, .send = env_send,
                                    .raftlog = st->log, .engine = st->engine,
                                    .region_changed = env_region_changed,
                                    .request_checkpoint = env_request_checkpoint};
    if (s->o.split)
        env.ask_split = env_ask_split;
    rv = tkv_raftstore_open(&cfg, &env, &st->rs);
    if (rv < 0) {
        sim_fail(s, "store %d: raftstore open failed: %d", st->id, rv);
        tkv_raftlog_close(st->log);
        st->log = NULL;
        return;
    }
    st->alive = true;
    if (s->hooks.store_event)
        s->hooks.store_event(s->hooks.arg, st->id, SIM_STORE_OPENED, st->rs);
    st->next_tick = s->now + rnd_range(s, 1, TICK_MS);
    st->next_ckpt = s->now + rnd_range(s, 20, 100);
    st->ckpt_done_at = 0;
    st->ckpt_wanted = false;
    st->seen_destroyed = 0;
}

struct tkv_raftstore *sim_store(struct sim *s, int store)
{
    return s->stores[store] && s->stores[store]->alive ? s->stores[store]->rs : NULL;
}

void sim_crash(struct sim *s, int id)
{
    struct sim_store *st = s->stores[id];
    if (!st || !st->alive)
        return;
    /* Stage this turn's writes and crash before the sync: the unsynced
     * raft log tail and the turn's messages are lost with it. */
    (void)tkv_raftstore_ready(st->rs);
    if (s->hooks.store_event)
        s->hooks.store_event(s->hooks.arg, id, SIM_STORE_CLOSING, st->rs);
    tkv_raftstore_close(st->rs);
    if (s->hooks.store_event)
        s->hooks.store_event(s->hooks.arg, id, SIM_STORE_CLOSED, NULL);
    st->rs = NULL;
    tkv_raftlog_close(st->log);
    st->log = NULL;
    if (tkv_engine_mem_crash(st->engine) < 0)
        sim_fail(s, "engine crash hook failed");
    st->alive = false;
    st->restart_at = 0;
}

void sim_restart(struct sim *s, int id)
{
    struct sim_store *st = s->stores[id];
    if (!st || st->alive)
        return;
    store_open(s, st);
}

static void store_process(struct sim *s, struct sim_store *st)
{
    for (int round = 0; round < 3 && st->alive; round++) {
        struct tkv_raftstore_stats before, after;
        tkv_raftstore_stats(st->rs, &before);
        bool more = tkv_raftstore_ready(st->rs);
        tkv_raftstore_stats(st->rs, &after);
        if (after.snapshots_generated > before.snapshots_generated) {
            struct tkv_rs_region_status rst;
            tkv_raftstore_region_status(st->rs, after.snap_gen_last_region, &rst);
            if (rst.applied > after.snap_gen_last_index)
                s->n_snap_gen_overlapped++;
        }
        if (after.snap_gen_started > before.snap_gen_started)
            snap_record(s, st, after.snap_gen_last_region, after.snap_gen_last_index);
        bool crash_now = false;
        if (s->o.crash_on_snapshot == st->id && after.snapshots_applied > before.snapshots_applied) {
            s->o.crash_on_snapshot = 0;
            crash_now = true;
        }
        /* (a gc message destroys on receive, before this turn) */
        if (s->o.crash_on_destroy == st->id && after.peers_destroyed > st->seen_destroyed) {
            s->o.crash_on_destroy = 0;
            crash_now = true;
        }
        st->seen_destroyed = after.peers_destroyed;
        if (tkv_raftlog_flush(st->log) < 0)
            sim_fail(s, "store %d: raft log flush failed", st->id);
        if (crash_now) {
            /* after the turn's group commit, before any checkpoint */
            sim_crash(s, st->id);
            return;
        }
        (void)more;
    }
}

/* The host's checkpoint, as server_cluster.c runs it: _begin on the core,
 * the engine checkpoint on a helper thread (its image is taken now: writes
 * after this ms are not in it), _done on the core 1-40 ms later. What the
 * raftstore stages in the raft log at _done (a snapshot's compaction, a
 * destroyed region's removal) waits for a crash-free window until then. */
static void store_checkpoint(struct sim *s, struct sim_store *st)
{
    if (st->ckpt_done_at) {
        if (s->now < st->ckpt_done_at)
            return;
        struct tkv_raftstore_stats before, after;
        tkv_raftstore_stats(st->rs, &before);
        st->ckpt_done_at = 0;
        tkv_raftstore_checkpoint_done(st->rs);
        tkv_raftstore_stats(st->rs, &after);
        if (s->o.crash_on_snapshot_release == st->id &&
            after.ckpt_waits_done > before.ckpt_waits_done && after.snapshots_applied) {
            /* the released snapshot's compaction is staged by this
             * crash's last Ready turn and never synced */
            s->o.crash_on_snapshot_release = 0;
            sim_crash(s, st->id);
            return;
        }
        if (tkv_raftlog_flush(st->log) < 0)
            sim_fail(s, "store %d: raft log flush failed", st->id);
        return;
    }
    if ((s->now < st->next_ckpt && !st->ckpt_wanted) || s->ckpt_held_store == st->id)
        return;
    st->ckpt_wanted = false;
    st->next_ckpt = s->now + rnd_range(s, 20, 150);
    tkv_raftstore_checkpoint_begin(st->rs);
    if (tkv_engine_checkpoint(st->engine) < 0)
        sim_fail(s, "store %d: checkpoint failed", st->id);
    st->ckpt_done_at = s->now + rnd_range(s, 1, 40);
}

int sim_leader(struct sim *s)
{
    return sim_region_leader(s, 1);
}

int sim_region_leader(struct sim *s, uint64_t region_id)
{
    int best = 0;
    tkv_term best_term = 0;
    for (int i = 1; i <= s->o.n_stores; i++) {
        struct tkv_raftstore *rs = sim_store(s, i);
        if (!rs)
            continue;
        struct tkv_rs_region_status st;
        tkv_raftstore_region_status(rs, region_id, &st);
        if (st.exists && st.is_leader && st.term >= best_term) {
            best = i;
            best_term = st.term;
        }
    }
    return best;
}

/* ------------------------------------------------------------ clients */

/* Ops per key are bounded so each key's search stays small. */
static void count_key(uint32_t key)
{
    key_ops[key]++;
}

static void key_name(char *buf, size_t cap, uint32_t key)
{
    snprintf(buf, cap, "k%04u", key);
}

static void client_finish(struct sim *s, struct sim_client *c, const struct tkv_rs_result *res)
{
    c->state = C_IDLE;
    c->next_at = s->now + rnd_range(s, 0, 3);
    if (res->rv == 0 || (res->rv == TKV_ENOTFOUND && c->kind == OP_GET)) {
        if (c->kind == OP_PUT) {
            lc_complete_ok(s->hist, c->op, ++s->seq);
            s->n_ok_puts++;
        } else {
            lc_complete_get(s->hist, c->op, ++s->seq, res->rv == 0, res->value.ptr, res->value.len);
            s->n_ok_gets++;
        }
        return;
    }
    struct sim_region *rr = dir_get(s, c->region_id);
    if (res->rv == 0 || res->rv == TKV_ENOTFOUND) {
        if (rr)
            rr->leader = c->leader_guess;
    }
    if (res->rv == TKV_EREGION) {
        const struct tkv_rs_region_error *e = &res->region_error;
        if (rr)
            rr->leader = e->kind == TKV_RS_NOT_LEADER ? (int)e->leader.store_id : 0;
        /* EpochNotMatch carries the current regions: the client learns them */
        for (uint32_t i = 0; e->kind == TKV_RS_EPOCH_NOT_MATCH && i < e->n_current && i < 2; i++)
            dir_update(s, &e->current[i]);
        s->n_failed_ops++;
        /* region errors: the command did not and will not apply */
        lc_complete_failed(s->hist, c->op);
        return;
    }
    /* ESHUTDOWN and the like: the outcome of a write is unknown */
    lc_complete_unknown(s->hist, c->op);
    if (c->kind == OP_PUT)
        s->n_unknown++;
    if (rr)
        rr->leader = 0;
}

static void on_answer(void *arg, const struct tkv_rs_result *res)
{
    struct sim_req *rq = arg;
    struct sim *s = rq->sim;
    struct sim_client *c = &s->clients[rq->client];
    if (c->state == C_WAIT && c->token == rq->token)
        client_finish(s, c, res);
    free(rq);
}

static void client_start(struct sim *s, struct sim_client *c, uint32_t kind, uint32_t key)
{
    c->state = C_WAIT;
    c->token++;
    c->kind = kind;
    c->key = key;
    c->deadline = s->now + OP_TIMEOUT_MS;
    if (kind == OP_PUT)
        c->value = ++s->next_value;
    char k[32], v[160];
    key_name(k, sizeof(k), key);
    /* the mock scheduler's directory routes the key; leader hint or a
     * random peer of the region */
    struct sim_region *rr = (struct sim_region *)sim_route(s, k, strlen(k));
    int target = 0;
    if (rr)
        target = rr->leader ? rr->leader
                            : (int)rr->rg.peers[rnd(s) % rr->rg.n_peers].store_id;
    struct tkv_raftstore *rs = target >= 1 && target <= s->o.n_stores ? sim_store(s, target) : NULL;
    if (!rs) {
        c->state = C_IDLE;
        c->next_at = s->now + 5;
        if (rr)
            rr->leader = 0;
        return;
    }
    c->leader_guess = target;
    c->region_id = rr->rg.id;
    int vl = snprintf(v, sizeof(v), "v%llu", (unsigned long long)c->value);
    while (vl < s->o.value_len && vl < (int)sizeof(v) - 1)
        v[vl++] = 'x';
    v[vl] = 0;
    c->op = lc_invoke(s->hist, (uint32_t)c->idx, kind == OP_PUT ? LC_PUT : LC_GET, k, strlen(k), v,
                      kind == OP_PUT ? strlen(v) : 0, ++s->seq);
    count_key(key);
    struct tkv_rs_region_status rst;
    tkv_raftstore_region_status(rs, rr->rg.id, &rst);
    /* region and epoch from the directory; the peer id is the store's
     * own (conf change gives new ids) */
    struct tkv_rs_header h = {.region_id = rr->rg.id, .epoch = rr->rg.epoch,
                              .peer = {.id = rst.peer_id, .store_id = (uint64_t)target}};
    if (kind == OP_GET && s->o.inject_stale_read) {
        /* INJECTED BUG: serve the read from the local engine of any store
         * (a follower, a deposed leader) without ReadIndex */
        int any = (int)rnd_range(s, 1, (uint64_t)s->o.n_stores);
        struct tkv_rs_result res;
        memset(&res, 0, sizeof(res));
        char buf[64];
        res.rv = sim_engine_get(s, any, TKV_CF_DEFAULT, k, buf, sizeof(buf));
        res.value = TKV_SLICE(buf, res.rv == 0 ? strlen(buf) : 0);
        client_finish(s, c, &res);
        return;
    }
    struct sim_req *rq = malloc(sizeof(*rq));
    *rq = (struct sim_req){.sim = s, .client = c->idx, .token = c->token};
    if (kind == OP_PUT) {
        tkv_raftstore_put(rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), TKV_SLICE(v, strlen(v)),
                          on_answer, rq);
        if (s->o.inject_early_ack && c->state == C_WAIT && c->token == rq->token) {
            /* INJECTED BUG: acknowledge a write once proposed, before it
             * commits (the store's later answer is ignored) */
            struct tkv_rs_result ok;
            memset(&ok, 0, sizeof(ok));
            c->token++;
            client_finish(s, c, &ok);
        }
    } else {
        tkv_raftstore_get(rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), on_answer, rq);
    }
}

static void clients_step(struct sim *s)
{
    for (int i = 0; i < s->o.n_clients; i++) {
        struct sim_client *c = &s->clients[i];
        if (c->state == C_WAIT && s->now >= c->deadline) {
            /* gave up: a write may still apply later */
            c->state = C_IDLE;
            c->next_at = s->now;
            lc_complete_unknown(s->hist, c->op);
            if (c->kind == OP_PUT)
                s->n_unknown++;
            struct sim_region *rr = dir_get(s, c->region_id);
            if (rr)
                rr->leader = 0;
            continue;
        }
        if (!clients_on || c->state != C_IDLE || s->now < c->next_at)
            continue;
        uint32_t key = (uint32_t)(rnd(s) % (uint64_t)s->o.n_keys);
        if (key_ops[key] >= 500)
            continue; /* keep each key's history within the checker's reach */
        bool put = s->o.put_percent ? (int)(rnd(s) % 100) < s->o.put_percent : rnd(s) % 2;
        if (s->o.cold_mod && key % s->o.cold_mod == 0)
            put = false;
        client_start(s, c, put ? OP_PUT : OP_GET, key);
    }
}

static bool clients_idle(struct sim *s)
{
    for (int i = 0; i < s->o.n_clients; i++)
        if (s->clients[i].state == C_WAIT)
            return false;
    return true;
}

void sim_clients(struct sim *s, bool on)
{
    (void)s;
    clients_on = on;
}

/* ------------------------------------------------------------ scheduler */

static void ignore_answer(void *arg, const struct tkv_rs_result *res)
{
    (void)arg, (void)res;
}

static struct sim_sched_region *sched_slot(struct sim *s, uint64_t region_id, bool create)
{
    struct sim_sched_region *free_slot = NULL;
    for (int i = 0; i < SIM_MAX_REGIONS; i++) {
        struct sim_sched_region *r = &s->sched.regions[i];
        if (r->known && r->region.id == region_id)
            return r;
        if (!r->known && !free_slot)
            free_slot = r;
    }
    if (!create || !free_slot) {
        if (create)
            sim_fail(s, "scheduler: more than %d regions", SIM_MAX_REGIONS);
        return NULL;
    }
    memset(free_slot, 0, sizeof(*free_slot));
    free_slot->known = true;
    free_slot->region.id = region_id;
    return free_slot;
}

static bool has_peer(const struct tkv_rs_region *rg, uint64_t id)
{
    for (uint32_t i = 0; i < rg->n_peers; i++)
        if (rg->peers[i].id == id)
            return true;
    return false;
}

/* Peers in one region and not the other, both ways. */
static int peers_diff(const struct tkv_rs_region *a, const struct tkv_rs_region *b)
{
    int d = 0;
    for (uint32_t i = 0; i < a->n_peers; i++)
        d += !has_peer(b, a->peers[i].id);
    for (uint32_t i = 0; i < b->n_peers; i++)
        d += !has_peer(a, b->peers[i].id);
    return d;
}

static void op_done(struct sim *s, struct sim_sched_region *v)
{
    v->op = SIM_OP_NONE;
    s->sched.n_ops_done++;
    if (s->o.confchange && v->region.id == s->confchanger_region)
        s->confchanger_next = s->now + rnd_range(s, 0, 199);
}

/* The leader on store `store` reports region st->region. */
static void sched_heartbeat(struct sim *s, int store, const struct tkv_rs_region_status *st)
{
    s->sched.n_heartbeats++;
    const struct tkv_rs_region *rg = &st->region;
    struct sim_sched_region *v = sched_slot(s, rg->id, true);
    if (!v)
        return;
    const struct tkv_rs_epoch *ve = &v->region.epoch;
    if (v->region.n_peers == 0) {
        v->region = *rg;
    } else if (rg->epoch.conf_ver > ve->conf_ver) {
        int d = peers_diff(&v->region, rg);
        if (rg->epoch.conf_ver != ve->conf_ver + 1 || d != 1) {
            sim_fail(s, "scheduler: region %llu conf_ver %llu -> %llu changed %d peers "
                        "(exactly one per conf change)",
                     (unsigned long long)rg->id, (unsigned long long)ve->conf_ver,
                     (unsigned long long)rg->epoch.conf_ver, d);
            return;
        }
        v->region = *rg;
    } else if (rg->epoch.conf_ver == ve->conf_ver) {
        if (peers_diff(&v->region, rg) != 0) {
            sim_fail(s, "scheduler: region %llu peers changed without a conf_ver bump (%llu)",
                     (unsigned long long)rg->id, (unsigned long long)ve->conf_ver);
            return;
        }
        if (rg->epoch.version > ve->version)
            v->region = *rg;
    } else {
        return; /* a stale leader's view */
    }
    v->leader_store = store;
    struct tkv_raftstore *rs = sim_store(s, store);
    switch (v->op) {
    case SIM_OP_ADD:
        if (has_peer(&v->region, v->op_peer.id))
            op_done(s, v);
        else
            tkv_raftstore_change_peer(rs, rg->id, &rg->epoch, TKV_RS_ADD_PEER, v->op_peer,
                                      ignore_answer, NULL);
        break;
    case SIM_OP_REMOVE:
        if (!has_peer(&v->region, v->op_peer.id))
            op_done(s, v);
        else
            tkv_raftstore_change_peer(rs, rg->id, &rg->epoch, TKV_RS_REMOVE_PEER, v->op_peer,
                                      ignore_answer, NULL);
        break;
    case SIM_OP_TRANSFER:
        if (store == v->op_store) {
            op_done(s, v);
        } else {
            struct tkv_rs_peer to = sim_sched_peer_on(s, rg->id, v->op_store);
            if (to.id)
                (void)tkv_raftstore_transfer_leader(rs, rg->id, to.id);
        }
        break;
    default:
        break;
    }
}

static void sched_step(struct sim *s)
{
    for (int i = 1; i <= s->o.n_stores && !s->failed; i++) {
        struct sim_store *st = s->stores[i];
        if (!st->alive || (!st->hb_due && s->now < st->next_hb))
            continue;
        st->hb_due = false;
        st->next_hb = s->now + SIM_HEARTBEAT_MS;
        uint64_t ids[SIM_MAX_REGIONS];
        size_t n = tkv_raftstore_region_ids(st->rs, ids, SIM_MAX_REGIONS);
        for (size_t k = 0; k < n && k < SIM_MAX_REGIONS && st->alive; k++) {
            struct tkv_rs_region_status rst;
            tkv_raftstore_region_status(st->rs, ids[k], &rst);
            if (rst.exists && rst.is_leader && rst.region.n_peers) {
                sched_heartbeat(s, i, &rst);
                if (s->hooks.region_heartbeat && !s->failed && st->alive)
                    s->hooks.region_heartbeat(s->hooks.arg, i, &rst);
            }
        }
    }
}

uint64_t sim_alloc_id(struct sim *s)
{
    return s->sched.next_id++;
}

const struct sim_sched_region *sim_sched_region(struct sim *s, uint64_t region_id)
{
    return sched_slot(s, region_id, false);
}

struct tkv_rs_peer sim_sched_peer_on(struct sim *s, uint64_t region_id, int store)
{
    struct sim_sched_region *v = sched_slot(s, region_id, false);
    struct tkv_rs_peer none = {0, 0};
    if (!v)
        return none;
    for (uint32_t i = 0; i < v->region.n_peers; i++)
        if (v->region.peers[i].store_id == (uint64_t)store)
            return v->region.peers[i];
    return none;
}

static void set_op(struct sim *s, uint64_t region_id, uint32_t op, struct tkv_rs_peer peer, int store)
{
    struct sim_sched_region *v = sched_slot(s, region_id, true);
    if (!v)
        return;
    v->op = op;
    v->op_peer = peer;
    v->op_store = store;
    v->op_since = s->now;
}

void sim_sched_add_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer)
{
    set_op(s, region_id, SIM_OP_ADD, peer, 0);
}

void sim_sched_remove_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer)
{
    set_op(s, region_id, SIM_OP_REMOVE, peer, 0);
}

void sim_sched_transfer_leader(struct sim *s, uint64_t region_id, int store)
{
    struct tkv_rs_peer none = {0, 0};
    set_op(s, region_id, SIM_OP_TRANSFER, none, store);
}

static int wait_op(struct sim *s, uint64_t region_id, uint64_t timeout_ms, const char *what)
{
    uint64_t end = s->now + timeout_ms;
    const struct sim_sched_region *v = sim_sched_region(s, region_id);
    while (v && v->op != SIM_OP_NONE && s->now < end && !s->failed)
        sim_run(s, 1);
    if (s->failed)
        return -1;
    if (v && v->op != SIM_OP_NONE && getenv("TKV_RS_VERBOSE")) {
        fprintf(stderr, "op %u peer %llu@%llu view conf_ver %llu version %llu peers:", v->op,
                (unsigned long long)v->op_peer.id, (unsigned long long)v->op_peer.store_id,
                (unsigned long long)v->region.epoch.conf_ver, (unsigned long long)v->region.epoch.version);
        for (uint32_t i = 0; i < v->region.n_peers; i++)
            fprintf(stderr, " %llu@%llu", (unsigned long long)v->region.peers[i].id, (unsigned long long)v->region.peers[i].store_id);
        fprintf(stderr, "\n");
        for (int i = 1; i <= s->o.n_stores; i++) {
            struct tkv_rs_region_status st;
            tkv_raftstore_region_status(sim_store(s, i), region_id, &st);
            {
                uint64_t ids[64];
                size_t n = sim_store(s, i) ? tkv_raftstore_region_ids(sim_store(s, i), ids, 64) : 0;
                fprintf(stderr, "  store %d regions:", i);
                for (size_t k = 0; k < n && k < 64; k++) {
                    struct tkv_rs_region_status q;
                    tkv_raftstore_region_status(sim_store(s, i), ids[k], &q);
                    fprintf(stderr, " %llu[%.*s,%.*s)v%llu/c%llu%s", (unsigned long long)ids[k], (int)q.region.start_len, (const char *)q.region.start, (int)q.region.end_len, (const char *)q.region.end, (unsigned long long)q.region.epoch.version, (unsigned long long)q.region.epoch.conf_ver, q.region.n_peers ? "" : "(uninit)");
                }
                struct tkv_raftstore_stats stt;
                if (sim_store(s, i)) { tkv_raftstore_stats(sim_store(s, i), &stt); fprintf(stderr, " dropped %llu", (unsigned long long)stt.msgs_dropped); }
                fprintf(stderr, "\n");
            }
            fprintf(stderr, " store %d: exists %d peer %llu leader %d lead %llu term %llu applied %llu commit %llu last %llu conf_ver %llu ver %llu npeers %u\n", i, st.exists, (unsigned long long)st.peer_id, st.is_leader, (unsigned long long)st.leader_peer_id, (unsigned long long)st.term, (unsigned long long)st.applied, (unsigned long long)st.commit, (unsigned long long)st.last_index, (unsigned long long)st.region.epoch.conf_ver, (unsigned long long)st.region.epoch.version, st.region.n_peers);
        }
    }
    if (!v || v->op != SIM_OP_NONE) {
        sim_fail(s, "%s on region %llu not done within %llu ms", what,
                 (unsigned long long)region_id, (unsigned long long)timeout_ms);
        return -1;
    }
    return 0;
}

int sim_must_add_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer, uint64_t timeout_ms)
{
    sim_sched_add_peer(s, region_id, peer);
    return wait_op(s, region_id, timeout_ms, "add peer");
}

int sim_must_remove_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer,
                         uint64_t timeout_ms)
{
    sim_sched_remove_peer(s, region_id, peer);
    return wait_op(s, region_id, timeout_ms, "remove peer");
}

int sim_must_transfer_leader(struct sim *s, uint64_t region_id, int store, uint64_t timeout_ms)
{
    sim_sched_transfer_leader(s, region_id, store);
    return wait_op(s, region_id, timeout_ms, "transfer leader");
}

/* GenericTest's confchanger on region 1: one operator at a time. */
static void confchanger_step(struct sim *s)
{
    if (!s->o.confchange || !s->confchanger_on || s->now < s->confchanger_next)
        return;
    /* TinyKV: a random region (region 1 while nothing split) */
    uint64_t rid = 1;
    if (s->o.split) {
        int known = 0;
        for (int i = 0; i < SIM_MAX_REGIONS; i++)
            known += s->sched.regions[i].known;
        int pick = (int)rnd_range(s, 0, (uint64_t)(known ? known - 1 : 0));
        for (int i = 0; i < SIM_MAX_REGIONS; i++)
            if (s->sched.regions[i].known && pick-- == 0)
                rid = s->sched.regions[i].region.id;
    }
    struct sim_sched_region *v = sched_slot(s, rid, false);
    if (!v || v->op != SIM_OP_NONE || v->region.n_peers == 0)
        return;
    s->confchanger_region = rid;
    int store = (int)rnd_range(s, 1, (uint64_t)s->o.n_stores);
    struct tkv_rs_peer p = sim_sched_peer_on(s, rid, store);
    if (p.id) {
        if (v->region.n_peers > TKV_MAX(1u, s->o.confchange_min_peers)) {
            sim_sched_remove_peer(s, rid, p);
            s->n_conf_changes++;
        } else {
            s->confchanger_next = s->now + rnd_range(s, 0, 199);
        }
    } else {
        sim_sched_add_peer(s, rid, (struct tkv_rs_peer){.id = sim_alloc_id(s),
                                                        .store_id = (uint64_t)store});
        s->n_conf_changes++;
    }
}

/* ------------------------------------------------------------ time */

static void step_ms(struct sim *s)
{
    s->now++;
    deliver_due(s);
    for (int i = 1; i <= s->o.n_stores; i++) {
        struct sim_store *st = s->stores[i];
        if (!st->alive) {
            if (st->restart_at && s->now >= st->restart_at)
                sim_restart(s, i);
            continue;
        }
        while (st->alive && s->now >= st->next_tick) {
            tkv_raftstore_tick(st->rs);
            st->next_tick += TICK_MS;
        }
    }
    asks_step(s);
    clients_step(s);
    sched_step(s);
    confchanger_step(s);
    if (s->hooks.step)
        s->hooks.step(s->hooks.arg);
    for (int i = 1; i <= s->o.n_stores; i++) {
        struct sim_store *st = s->stores[i];
        if (!st->alive)
            continue;
        store_process(s, st);
        if (st->alive)
            store_checkpoint(s, st);
    }
}

void sim_run(struct sim *s, uint64_t ms)
{
    for (uint64_t i = 0; i < ms && !s->failed; i++)
        step_ms(s);
}

/* ------------------------------------------------------------ setup */

uint64_t sim_rnd(struct sim *s)
{
    return rnd(s);
}

void sim_init(struct sim *s, const struct sim_opts *o, uint64_t seed)
{
    sim_init_hooks(s, o, seed, NULL);
}

void sim_init_hooks(struct sim *s, const struct sim_opts *o, uint64_t seed,
                    const struct sim_hooks *hooks)
{
    memset(s, 0, sizeof(*s));
    if (hooks)
        s->hooks = *hooks;
    s->o = *o;
    if (s->o.n_keys == 0)
        s->o.n_keys = 10;
    s->seed = seed;
    s->rng = seed * 0x2545f4914f6cdd1dULL + 1;
    s->clients = calloc(SIM_MAX_CLIENTS + 1, sizeof(*s->clients));
    for (int i = 0; i <= SIM_MAX_CLIENTS; i++) {
        s->clients[i].idx = i;
        s->clients[i].leader_guess = 1 + i % o->n_stores;
    }
    key_ops = calloc((size_t)s->o.n_keys + 1, sizeof(*key_ops));
    s->hist = lc_history_new();
    clients_on = false;
    /* mock scheduler: bootstrap region 1 ["", "") epoch (1,1), one peer
     * per store with peer id = store id (TinyKV's bootstrap) */
    struct tkv_rs_region rg;
    memset(&rg, 0, sizeof(rg));
    rg.id = 1;
    rg.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    for (int i = 0; i < o->n_stores; i++)
        if (!o->initial_stores || (o->initial_stores & (1u << (i + 1))))
            rg.peers[rg.n_peers++] =
                (struct tkv_rs_peer){.id = (uint64_t)i + 1, .store_id = (uint64_t)i + 1};
    s->regions[0] = (struct sim_region){.rg = rg};
    s->n_regions = 1;
    s->sched.next_id = (uint64_t)o->n_stores + 1; /* TinyKV: ids after the bootstrap's */
    struct sim_sched_region *v = sched_slot(s, 1, true);
    v->region = rg;
    for (int i = 1; i <= o->n_stores; i++) {
        struct sim_store *st = calloc(1, sizeof(*st));
        st->sim = s;
        st->id = i;
        st->disk = tkv_raftlog_memdisk_new();
        struct tkv_engine_opts eo = {.kind = TKV_ENGINE_MEM, .sync = false};
        if (tkv_engine_open(&eo, &st->engine) < 0)
            abort();
        struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
        struct tkv_raftlog *log = NULL;
        bool member = !o->initial_stores || (o->initial_stores & (1u << i));
        if (tkv_raftlog_open_mem(&lc, st->disk, &log, NULL) < 0 ||
            (member && tkv_raftstore_bootstrap(log, st->engine, (uint64_t)i, &rg) < 0))
            sim_fail(s, "bootstrap of store %d failed", i);
        tkv_raftlog_close(log);
        s->stores[i] = st;
        store_open(s, st);
    }
}

void sim_close(struct sim *s)
{
    for (int i = 1; i <= s->o.n_stores; i++) {
        struct sim_store *st = s->stores[i];
        if (!st)
            continue;
        if (st->alive) {
            if (s->hooks.store_event)
                s->hooks.store_event(s->hooks.arg, i, SIM_STORE_CLOSING, st->rs);
            tkv_raftstore_close(st->rs);
            if (s->hooks.store_event)
                s->hooks.store_event(s->hooks.arg, i, SIM_STORE_CLOSED, NULL);
            tkv_raftlog_close(st->log);
        }
        tkv_engine_close(st->engine);
        tkv_raftlog_memdisk_free(st->disk);
        free(st);
    }
    for (size_t i = 0; i < s->n_q; i++)
        tkv_rs_msg_release(&s->q[i].m);
    free(s->q);
    free(s->asks);
    for (size_t i = 0; i < s->n_snaprefs; i++)
        rs_buf_free(&s->snaprefs[i].want);
    free(s->snaprefs);
    lc_history_free(s->hist);
    free(s->clients);
    free(key_ops);
    key_ops = NULL;
}

void sim_partition(struct sim *s, const int *side_a, int n_a)
{
    bool in_a[SIM_MAX_STORES + 1] = {0};
    for (int i = 0; i < n_a; i++)
        in_a[side_a[i]] = true;
    for (int a = 1; a <= s->o.n_stores; a++)
        for (int b = 1; b <= s->o.n_stores; b++)
            s->cut[a][b] = in_a[a] != in_a[b];
}

void sim_heal(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
}

/* ------------------------------------------------------------ sync ops */

struct sync_req {
    bool done, abandoned;
    int rv;
    struct tkv_rs_region_error rerr;
    char val[256];
};

static void on_sync(void *arg, const struct tkv_rs_result *res)
{
    struct sync_req *r = arg;
    if (r->abandoned) {
        free(r);
        return;
    }
    r->done = true;
    r->rv = res->rv;
    r->rerr = res->region_error;
    size_t n = TKV_MIN(res->value.len, sizeof(r->val) - 1);
    if (res->rv == 0 && n)
        memcpy(r->val, res->value.ptr, n);
    r->val[n] = 0;
}

/* One op through the raft path, retried on region errors until timeout. */
static int sync_op(struct sim *s, int kind, enum tkv_cf cf, const char *key, const char *val,
                   char *out, size_t cap, uint64_t timeout_ms)
{
    uint64_t end = s->now + timeout_ms;
    const struct sim_region *r0 = sim_route(s, key, strlen(key));
    int guess = r0 ? sim_region_leader(s, r0->rg.id) : 0;
    while (s->now < end && !s->failed) {
        const struct sim_region *rr = sim_route(s, key, strlen(key));
        if (!rr) {
            sim_fail(s, "no region holds key %s", key);
            break;
        }
        if (guess < 1 || guess > s->o.n_stores)
            guess = (int)rnd_range(s, 1, (uint64_t)s->o.n_stores);
        struct tkv_raftstore *rs = sim_store(s, guess);
        if (!rs) {
            guess = 0;
            sim_run(s, 5);
            continue;
        }
        struct tkv_rs_header h = {.region_id = rr->rg.id, .epoch = rr->rg.epoch};
        /* every request is answered exactly once (ESHUTDOWN on close), so
         * an abandoned one is freed by its late answer */
        struct sync_req *r = calloc(1, sizeof(*r));
        if (kind == 1)
            tkv_raftstore_put(rs, &h, cf, TKV_SLICE(key, strlen(key)), TKV_SLICE(val, strlen(val)),
                              on_sync, r);
        else if (kind == 2)
            tkv_raftstore_delete(rs, &h, cf, TKV_SLICE(key, strlen(key)), on_sync, r);
        else
            tkv_raftstore_get(rs, &h, cf, TKV_SLICE(key, strlen(key)), on_sync, r);
        uint64_t wait_end = s->now + OP_TIMEOUT_MS;
        while (!r->done && s->now < wait_end && !s->failed)
            sim_run(s, 1);
        if (!r->done) {
            r->abandoned = true;
            guess = 0;
            continue;
        }
        int rv = r->rv;
        if (rv == 0 && out)
            snprintf(out, cap, "%s", r->val);
        if (rv == TKV_EREGION) {
            guess = r->rerr.kind == TKV_RS_NOT_LEADER && r->rerr.leader.store_id
                        ? (int)r->rerr.leader.store_id
                        : 0;
            for (uint32_t i = 0; r->rerr.kind == TKV_RS_EPOCH_NOT_MATCH && i < r->rerr.n_current && i < 2; i++)
                dir_update(s, &r->rerr.current[i]);
            free(r);
            sim_run(s, 10);
            continue;
        }
        free(r);
        if (rv == TKV_ESHUTDOWN) {
            guess = 0;
            continue;
        }
        return rv;
    }
    return TKV_ETIMEDOUT;
}

int sim_put(struct sim *s, enum tkv_cf cf, const char *key, const char *val, uint64_t timeout_ms)
{
    return sync_op(s, 1, cf, key, val, NULL, 0, timeout_ms);
}

int sim_delete(struct sim *s, enum tkv_cf cf, const char *key, uint64_t timeout_ms)
{
    return sync_op(s, 2, cf, key, NULL, NULL, 0, timeout_ms);
}

int sim_get(struct sim *s, enum tkv_cf cf, const char *key, char *val_out, size_t cap,
            uint64_t timeout_ms)
{
    return sync_op(s, 3, cf, key, NULL, val_out, cap, timeout_ms);
}

struct tkv_engine *sim_engine(struct sim *s, int store)
{
    return s->stores[store] ? s->stores[store]->engine : NULL;
}

int sim_engine_get(struct sim *s, int store, enum tkv_cf cf, const char *key, char *val_out,
                   size_t cap)
{
    struct sim_store *st = s->stores[store];
    struct tkv_engine_session *sess = NULL;
    if (tkv_engine_session_open(st->engine, &sess) < 0)
        return TKV_EENGINE;
    struct tkv_slice v;
    int rv = tkv_engine_get(sess, cf, TKV_SLICE(key, strlen(key)), &v);
    if (rv == 0)
        snprintf(val_out, cap, "%.*s", (int)v.len, (const char *)v.ptr);
    tkv_engine_session_close(sess);
    return rv;
}

/* ------------------------------------------------------------ GenericTest */

static void random_partition(struct sim *s)
{
    int side[SIM_MAX_STORES], n = 0;
    for (int i = 1; i <= s->o.n_stores; i++)
        if (rnd(s) % 2)
            side[n++] = i;
    if (n == 0 || n == s->o.n_stores) {
        sim_heal(s);
        return;
    }
    sim_partition(s, side, n);
}

void sim_chaos(struct sim *s)
{
    uint64_t chaos = ELECTION_MS + rnd_range(s, 0, 199);
    sim_run(s, chaos);
    if (s->o.partitions)
        random_partition(s);
    if (s->o.crash && rnd(s) % 3 == 0) {
        int victim = (int)rnd_range(s, 1, (uint64_t)s->o.n_stores);
        if (s->stores[victim]->alive) {
            sim_crash(s, victim);
            s->stores[victim]->restart_at = s->now + rnd_range(s, 20, 300);
        }
    }
}

void sim_settle(struct sim *s)
{
    sim_heal(s);
    for (int i = 1; i <= s->o.n_stores; i++)
        sim_restart(s, i);
    sim_run(s, 2 * ELECTION_MS);
}

/* Stores outside region 1 (scheduler's view) hold no initialized peer of
 * it and none of its data once stale peers had time to be told (a stale
 * peer campaigns and is answered with a gc message). */
static void check_removed_stores(struct sim *s)
{
    const struct sim_sched_region *v = sim_sched_region(s, 1);
    for (int wait = 0; wait < 3000 && !s->failed; wait += 100) {
        int bad = 0;
        for (int i = 1; i <= s->o.n_stores; i++) {
            if (sim_sched_peer_on(s, 1, i).id)
                continue;
            struct tkv_rs_region_status st;
            tkv_raftstore_region_status(sim_store(s, i), 1, &st);
            if (st.exists && st.region.n_peers && st.region.epoch.conf_ver) {
                bad = i;
                continue;
            }
            for (uint32_t k = 0; k < (uint32_t)s->o.n_keys; k++) {
                char key[32], val[64];
                key_name(key, sizeof(key), k);
                if (!key_in(&v->region, key, strlen(key)))
                    continue; /* another region's (after a split) */
                if (sim_engine_get(s, i, TKV_CF_DEFAULT, key, val, sizeof(val)) == 0) {
                    sim_fail(s, "store %d is not in region 1 (conf_ver %llu) but still has %s", i,
                             (unsigned long long)v->region.epoch.conf_ver, key);
                    return;
                }
            }
        }
        if (!bad)
            return;
        if (wait + 100 >= 3000) {
            sim_fail(s, "store %d keeps a peer of region 1 it was removed from (conf_ver %llu)",
                     bad, (unsigned long long)v->region.epoch.conf_ver);
            return;
        }
        sim_run(s, 100);
    }
}

/* Final reads of every key, recorded: the end state must be explained by
 * the acknowledged (and maybe the unknown) writes. */
static void final_reads(struct sim *s)
{
    for (uint32_t k = 0; k < (uint32_t)s->o.n_keys && !s->failed; k++) {
        char key[32], val[256];
        key_name(key, sizeof(key), k);
        size_t op = lc_invoke(s->hist, SIM_MAX_CLIENTS, LC_GET, key, strlen(key), NULL, 0, ++s->seq);
        int rv = sim_get(s, TKV_CF_DEFAULT, key, val, sizeof(val), 5000);
        if (rv != 0 && rv != TKV_ENOTFOUND) {
            sim_fail(s, "final read of %s failed: %d (no progress after healing)", key, rv);
            return;
        }
        lc_complete_get(s->hist, op, ++s->seq, rv == 0, val, rv == 0 ? strlen(val) : 0);
    }
}

static void lin_check(struct sim *s)
{
    struct lc_result r;
    enum lc_verdict v = lc_check(s->hist, NULL, &r);
    if (v != LC_LINEARIZABLE) {
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "%s\n", r.report);
        sim_fail(s, "linearizability: %s (%zu ops, %zu keys failed, %zu unknown)",
                 lc_verdict_name(v), r.n_ops, r.n_keys_failed, r.n_keys_unknown);
    }
    lc_result_free(&r);
}

void sim_final_check(struct sim *s)
{
    final_reads(s);
    if (!s->failed)
        lin_check(s);
}

void sim_generic(struct sim *s)
{
    sim_run(s, 2 * ELECTION_MS * 2);
    for (int it = 0; it < s->o.iterations && !s->failed; it++) {
        sim_clients(s, true);
        s->confchanger_on = true;
        uint64_t end = s->now + s->o.iteration_ms;
        while (s->now < end && !s->failed) {
            uint64_t chaos = ELECTION_MS + rnd_range(s, 0, 199);
            sim_run(s, chaos);
            if (s->o.partitions)
                random_partition(s);
            if (s->o.crash && rnd(s) % 3 == 0) {
                int victim = (int)rnd_range(s, 1, (uint64_t)s->o.n_stores);
                if (s->stores[victim]->alive) {
                    sim_crash(s, victim);
                    s->stores[victim]->restart_at = s->now + rnd_range(s, 20, 300);
                }
            }
        }
        sim_clients(s, false);
        s->confchanger_on = false;
        for (int i = 0; i < OP_TIMEOUT_MS && !clients_idle(s); i++)
            sim_run(s, 1);
        sim_heal(s);
        for (int i = 1; i <= s->o.n_stores; i++)
            sim_restart(s, i);
        sim_run(s, ELECTION_MS);
        if (s->o.confchange)
            for (int i = 0; i < SIM_MAX_REGIONS && !s->failed; i++)
                if (s->sched.regions[i].known && s->sched.regions[i].op != SIM_OP_NONE)
                    (void)wait_op(s, s->sched.regions[i].region.id, 10000,
                                  "the confchanger's last operator (after healing)");
        if (s->o.crash) {
            /* TinyKV restarts every server between iterations */
            for (int i = 1; i <= s->o.n_stores; i++)
                sim_crash(s, i);
            for (int i = 1; i <= s->o.n_stores; i++)
                sim_restart(s, i);
        }
        sim_run(s, 2 * ELECTION_MS);
    }
    if (s->failed)
        return;
    final_reads(s);
    if (s->failed)
        return;
    if (s->n_ok_puts == 0)
        sim_fail(s, "no write succeeded (liveness)");
    if (s->o.split) {
        /* TinyKV: the region holding "" must have split off its end */
        const struct sim_region *first = sim_route(s, "", 0);
        if (!first || first->rg.end_len == 0)
            sim_fail(s, "no split happened (%llu splits answered)", (unsigned long long)s->n_splits);
    }
    if (s->o.confchange && !s->failed)
        check_removed_stores(s);
    lin_check(s);
    if (s->o.gc_limit && !s->failed) {
        sim_run(s, 1000);
        for (int i = 1; i <= s->o.n_stores; i++) {
            struct tkv_rs_region_status st;
            tkv_raftstore_region_status(sim_store(s, i), 1, &st);
            if (st.applied - st.truncated_index > 2 * s->o.gc_limit)
                sim_fail(s, "store %d: applied %llu - truncated %llu > 2 * %llu (log GC)", i,
                         (unsigned long long)st.applied, (unsigned long long)st.truncated_index,
                         (unsigned long long)s->o.gc_limit);
        }
    }
}

bool sim_generic_seeds(const char *name, const struct sim_opts *o, int default_seeds, char *err,
                       size_t cap)
{
    const char *one = getenv("TKV_SEED"), *many = getenv("TKV_SEEDS");
    int n = one ? 1 : many ? atoi(many) : default_seeds;
    for (int i = 0; i < n; i++) {
        uint64_t seed = one ? strtoull(one, NULL, 10) : (uint64_t)(i + 1) * 7919u + strlen(name);
        struct sim s;
        sim_init(&s, o, seed);
        sim_generic(&s);
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "%s seed %llu: %llu puts, %llu gets, %llu unknown, %llu conf changes%s%s\n",
                    name, (unsigned long long)seed, (unsigned long long)s.n_ok_puts,
                    (unsigned long long)s.n_ok_gets, (unsigned long long)s.n_unknown,
                    (unsigned long long)s.n_conf_changes, s.failed ? ": " : "",
                    s.failed ? s.err : "");
        bool failed = s.failed;
        if (failed)
            snprintf(err, cap, "%s failed: %s (replay: TKV_SEED=%llu)", name, s.err,
                     (unsigned long long)seed);
        sim_close(&s);
        if (failed)
            return false;
    }
    return true;
}
