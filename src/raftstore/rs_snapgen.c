/* Snapshot generation (TINYKV-API.md 2.10) without stalling the core.
 *
 * Raft asks storage.snapshot() when a follower needs compacted entries.
 * Instead of reading the region in full there, the request is queued and
 * raft is answered TKV_EUNAVAILABLE (it retries on a later heartbeat
 * response). At the end of a Ready turn, when the engine holds exactly every
 * region's applied state, the oldest waiting request starts: ONE engine
 * snapshot (read view) is opened at the region's applied index, and the
 * payload is built from it a bounded number of bytes per turn
 * (cfg.snap_gen_budget). Writes applied meanwhile are invisible to the view,
 * so the result is exactly the region at that index. When complete, the
 * payload is cached on the peer and handed out at raft's next request.
 *
 * Memory: one generation per store at a time (its payload grows to the
 * region's size, as the cached snapshot it becomes); a generation whose
 * region changed (epoch), whose peer is gone or no longer leads is
 * abandoned at the next turn: iterator and read view closed, buffer freed.
 */
#include <string.h>

#include "rs_private.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/raftlog.h"

struct rs_snapgen {
    uint64_t region_id, serial; /* the peer incarnation it is for */
    struct tkv_rs_region region; /* as of the snapshot index */
    tkv_index index;
    tkv_term term;
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it; /* over rs_data_cfs[cf], NULL between CFs */
    int cf;                     /* 3: every CF read */
    bool lock_filter;           /* the iterator's keys must pass rs_lock_key_in_region */
    size_t count_at;            /* where the current CF's pair count goes */
    uint64_t count;
    struct rs_buf out;
    struct rs_buf resume; /* the next key to read (fresh-view bug only) */
};

static bool epoch_eq(const struct tkv_rs_epoch *a, const struct tkv_rs_epoch *b)
{
    return a->conf_ver == b->conf_ver && a->version == b->version;
}

static tkv_index storage_first(const struct rs_peer *p)
{
    tkv_index f = tkv_raftlog_first_index(p->s->env.raftlog, p->region.id);
    return p->log_floor && f <= p->log_floor ? p->log_floor + 1 : f;
}

/* A cached snapshot can serve raft while the region is the one it
 * describes and the log still holds every entry after it (else the
 * follower would need yet another snapshot right after installing it). */
static bool cache_usable(const struct rs_peer *p)
{
    return p->snap_data && epoch_eq(&p->snap_epoch, &p->region.epoch) &&
           p->snap_index + 1 >= storage_first(p) && p->snap_index <= p->apply.applied;
}

static void cache_drop(struct rs_peer *p)
{
    tkv_raft_buf_unref(p->snap_data);
    p->snap_data = NULL;
    p->snap_index = 0;
    p->snap_term = 0;
}

int rs_snapgen_storage_snapshot(struct rs_peer *p, struct tkv_raft_snapshot *out)
{
    if (!cache_usable(p)) {
        cache_drop(p);
        if (!p->snap_wanted)
            p->snap_wanted = ++p->s->snap_req_seq;
        p->s->dirty = true; /* the next Ready turn starts or advances it */
        return TKV_EUNAVAILABLE;
    }
    memset(out, 0, sizeof(*out));
    out->index = p->snap_index;
    out->term = p->snap_term;
    out->conf_state = p->snap_conf;
    out->data = tkv_raft_buf_ref(p->snap_data);
    return 0;
}

static void gen_free(struct tkv_raftstore *s)
{
    struct rs_snapgen *g = s->gen;
    if (!g)
        return;
    tkv_engine_iter_close(g->it);
    tkv_engine_snap_close(g->snap);
    rs_buf_free(&g->out);
    rs_buf_free(&g->resume);
    tkv_free(g);
    s->gen = NULL;
}

static void gen_abandon(struct tkv_raftstore *s, struct rs_peer *p)
{
    s->stats.snap_gen_abandoned++;
    if (p)
        p->snap_wanted = 0; /* raft asks again if it still needs one */
    gen_free(s);
}

/* The generation still describes p's region as p leads it. */
static bool gen_valid(const struct rs_snapgen *g, const struct rs_peer *p)
{
    return p && p->serial == g->serial && p->initialized && p->is_leader && !p->destroy_pending &&
           epoch_eq(&g->region.epoch, &p->region.epoch);
}

/* Term of the applied index (the snapshot's term). */
static int applied_term(struct rs_peer *p, tkv_term *term)
{
    if (p->apply.applied == p->apply.truncated_index) {
        *term = p->apply.truncated_term;
        return 0;
    }
    return tkv_raftlog_term(p->s->env.raftlog, p->region.id, p->apply.applied, term);
}

static void gen_start(struct tkv_raftstore *s, struct rs_peer *p)
{
    tkv_term term = 0;
    if (applied_term(p, &term) < 0) {
        p->snap_wanted = 0;
        return;
    }
    struct rs_snapgen *g = tkv_xcalloc(1, sizeof(*g));
    if (tkv_engine_snap_open(s->sess, &g->snap) < 0) {
        tkv_free(g);
        return; /* the request stays queued: tried again next turn */
    }
    g->region_id = p->region.id;
    g->serial = p->serial;
    g->region = p->region;
    g->index = p->apply.applied;
    g->term = term;
    rs_snapshot_begin(&g->out, &g->region);
    s->gen = g;
    s->stats.snap_gen_started++;
    s->stats.snap_gen_last_region = g->region_id;
    s->stats.snap_gen_last_index = g->index;
}

/* NEGATIVE CONTROL (failpoint raftstore/snapgen_fresh_view): a fresh read
 * view per turn, resuming at the next key, as a per-chunk reader would;
 * writes applied between turns leak into the snapshot. */
static int gen_reopen_view(struct tkv_raftstore *s, struct rs_snapgen *g)
{
    bool mid_cf = g->it != NULL; /* a turn yields inside a CF */
    tkv_engine_iter_close(g->it);
    g->it = NULL;
    tkv_engine_snap_close(g->snap);
    g->snap = NULL;
    int rv = tkv_engine_snap_open(s->sess, &g->snap);
    if (rv < 0 || !mid_cf)
        return rv;
    const struct tkv_rs_region *rg = &g->region;
    rv = rs_snapshot_iter_open(g->snap, rs_data_cfs[g->cf], rg, &g->it, &g->lock_filter);
    if (rv == 0)
        rv = tkv_engine_iter_seek(g->it, TKV_SLICE(g->resume.p, g->resume.len));
    return rv;
}

/* Read up to the budget; returns 1 when the payload is complete, 0 to
 * continue next turn, or an engine error. */
static int gen_advance(struct tkv_raftstore *s, struct rs_snapgen *g, uint64_t *used)
{
    const struct tkv_rs_region *rg = &g->region;
    uint64_t budget = s->cfg.snap_gen_budget;
    int rv = 0;
    while (g->cf < 3) {
        if (!g->it) {
            /* the LOCK CF by its rule, filtered per key (rs_lockcf.c) */
            rv = rs_snapshot_iter_open(g->snap, rs_data_cfs[g->cf], rg, &g->it, &g->lock_filter);
            if (rv == 0)
                rv = tkv_engine_iter_seek_first(g->it);
            if (rv < 0)
                return rv;
            g->count_at = g->out.len;
            g->count = 0;
            rs_buf_u64(&g->out, 0);
        }
        for (; tkv_engine_iter_valid(g->it); rv = tkv_engine_iter_next(g->it)) {
            if (rv < 0)
                return rv;
            struct tkv_slice k = tkv_engine_iter_key(g->it), v = tkv_engine_iter_value(g->it);
            if (g->lock_filter && !rs_lock_key_in_region(rg, k))
                continue;
            uint64_t cost = TKV_MAX((uint64_t)RS_SNAP_GEN_PAIR_MIN, 8u + k.len + v.len);
            if (*used && *used + cost > budget) {
                g->resume.len = 0;
                rs_buf_bytes(&g->resume, k.ptr, k.len);
                return 0; /* yield: the rest next turn */
            }
            rs_snapshot_pair(&g->out, k, v);
            g->count++;
            *used += cost;
        }
        if (rv < 0)
            return rv;
        tkv_codec_put_u64be(g->out.p + g->count_at, g->count);
        tkv_engine_iter_close(g->it);
        g->it = NULL;
        g->cf++;
    }
    return 1;
}

static void gen_complete(struct tkv_raftstore *s, struct rs_peer *p)
{
    struct rs_snapgen *g = s->gen;
    rs_snapshot_finish(&g->out);
    struct tkv_raft_buf *d = NULL;
    if (tkv_raft_buf_copy(g->out.p, g->out.len, &d) < 0) {
        gen_abandon(s, p);
        return;
    }
    cache_drop(p);
    p->snap_data = d;
    p->snap_index = g->index;
    p->snap_term = g->term;
    p->snap_epoch = g->region.epoch;
    memset(&p->snap_conf, 0, sizeof(p->snap_conf));
    p->snap_conf.n_voters = g->region.n_peers;
    for (uint32_t i = 0; i < g->region.n_peers; i++)
        p->snap_conf.voters[i] = g->region.peers[i].id;
    p->snap_wanted = 0;
    s->stats.snapshots_generated++;
    gen_free(s);
}

void rs_snapgen_turn(struct tkv_raftstore *s)
{
    if (s->gen) {
        struct rs_peer *p = rs_peer_get(s, s->gen->region_id);
        if (!gen_valid(s->gen, p))
            gen_abandon(s, p && p->serial == s->gen->serial ? p : NULL);
        else if (RS_BUG("snapgen_fresh_view") && gen_reopen_view(s, s->gen) < 0)
            gen_abandon(s, p);
    }
    if (!s->gen) {
        /* the oldest request of a peer that can still use it */
        struct rs_peer *next = NULL;
        for (size_t i = 0; i < s->n_peers; i++) {
            struct rs_peer *p = s->peers[i];
            if (!p->snap_wanted)
                continue;
            if (!p->is_leader || !p->initialized || p->destroy_pending) {
                p->snap_wanted = 0;
                continue;
            }
            if (!next || p->snap_wanted < next->snap_wanted)
                next = p;
        }
        if (!next)
            return;
        gen_start(s, next);
        if (!s->gen) {
            s->dirty = true;
            return;
        }
    }
    struct rs_peer *p = rs_peer_get(s, s->gen->region_id);
    uint64_t used = 0;
    int rv = gen_advance(s, s->gen, &used);
    if (used) {
        s->stats.snap_gen_turns++;
        s->stats.snap_gen_bytes += used;
        s->stats.snap_gen_max_turn_bytes = TKV_MAX(s->stats.snap_gen_max_turn_bytes, used);
    }
    if (rv < 0) {
        TKV_LOG_WARN("snapshot generation failed", TKV_LF_U64("region_id", s->gen->region_id),
                     TKV_LF_ERR(rv));
        gen_abandon(s, p);
    } else if (rv == 1) {
        gen_complete(s, p);
    }
    /* more to read, or a request waiting behind this one: come back
     * without sleeping (a finished snapshot waits for raft's retry) */
    for (size_t i = 0; !s->gen && i < s->n_peers && !s->dirty; i++)
        s->dirty = s->peers[i]->snap_wanted != 0;
    if (s->gen)
        s->dirty = true;
}

void rs_snapgen_tick(struct rs_peer *p)
{
    if (p->snap_data && (!p->is_leader || !cache_usable(p)))
        cache_drop(p);
}

void rs_snapgen_peer_free(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    if (s->gen && s->gen->region_id == p->region.id && s->gen->serial == p->serial)
        gen_abandon(s, NULL);
    cache_drop(p);
}

void rs_snapgen_close(struct tkv_raftstore *s)
{
    gen_free(s);
}
