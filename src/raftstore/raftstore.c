/* The raftstore: region peers of one store, the per-turn Ready loop (one
 * raft log group commit, then messages, then apply, then answers), region
 * checks and errors, ReadIndex reads, CompactLog, snapshots. */
#include <fiu.h> /* failpoints: FIU_ENABLE only in the sanitized test build */
#include <stdlib.h>
#include <string.h>

#include "rs_private.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/raftlog.h"

/* ------------------------------------------------------------ messages */

void tkv_rs_msg_clone(struct tkv_rs_msg *dst, const struct tkv_rs_msg *src)
{
    *dst = *src;
    const struct tkv_raft_msg *m = &src->msg;
    if (m->n_entries) {
        dst->msg.entries = tkv_xmalloc(m->n_entries * sizeof(*m->entries));
        for (size_t i = 0; i < m->n_entries; i++) {
            dst->msg.entries[i] = m->entries[i];
            tkv_raft_buf_ref(dst->msg.entries[i].data);
        }
    } else {
        dst->msg.entries = NULL;
    }
    if (m->snapshot) {
        dst->msg.snapshot = tkv_xmalloc(sizeof(*m->snapshot));
        *dst->msg.snapshot = *m->snapshot;
        tkv_raft_buf_ref(dst->msg.snapshot->data);
    }
}

void tkv_rs_msg_release(struct tkv_rs_msg *m)
{
    for (size_t i = 0; i < m->msg.n_entries; i++)
        tkv_raft_buf_unref(m->msg.entries[i].data);
    tkv_free(m->msg.entries);
    if (m->msg.snapshot) {
        tkv_raft_buf_unref(m->msg.snapshot->data);
        tkv_free(m->msg.snapshot);
    }
    memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------ helpers */

struct rs_peer *rs_peer_get(const struct tkv_raftstore *s, uint64_t region_id)
{
    for (size_t i = 0; i < s->n_peers; i++)
        if (s->peers[i]->region.id == region_id)
            return s->peers[i];
    return NULL;
}

const struct tkv_rs_peer *rs_region_peer_by_id(const struct tkv_rs_region *rg, uint64_t id)
{
    for (uint32_t i = 0; i < rg->n_peers; i++)
        if (rg->peers[i].id == id)
            return &rg->peers[i];
    return NULL;
}

const struct tkv_rs_peer *rs_region_peer_on_store(const struct tkv_rs_region *rg,
                                                      uint64_t store_id)
{
    for (uint32_t i = 0; i < rg->n_peers; i++)
        if (rg->peers[i].store_id == store_id)
            return &rg->peers[i];
    return NULL;
}

bool rs_key_in_region(const struct tkv_rs_region *rg, struct tkv_slice k)
{
    size_t n = TKV_MIN(k.len, rg->start_len);
    int c = n ? memcmp(k.ptr, rg->start, n) : 0; /* k.ptr may be NULL when empty */
    if (c < 0 || (c == 0 && k.len < rg->start_len))
        return false;
    if (rg->end_len == 0)
        return true;
    n = TKV_MIN(k.len, rg->end_len);
    c = n ? memcmp(k.ptr, rg->end, n) : 0;
    return c < 0 || (c == 0 && k.len < rg->end_len);
}

/* Transactional keys: region bounds are EncodeBytes(user key) (ARCHITECTURE.md
 * "Keys"), so the user key is compared in that form. */
bool tkv_rs_region_contains_txn_key(const struct tkv_rs_region *rg, struct tkv_slice user_key)
{
    uint8_t small[512];
    size_t n = tkv_codec_encoded_bytes_len(user_key.len);
    uint8_t *enc = n <= sizeof(small) ? small : tkv_xmalloc(n);
    tkv_codec_encode_bytes(enc, user_key.ptr, user_key.len);
    bool in = rs_key_in_region(rg, TKV_SLICE(enc, n));
    if (enc != small)
        tkv_free(enc);
    return in;
}

void rs_answer(tkv_rs_done_fn cb, void *arg, int rv)
{
    struct tkv_rs_result res;
    memset(&res, 0, sizeof(res));
    res.rv = rv;
    cb(arg, &res);
}

void rs_answer_region_error(tkv_rs_done_fn cb, void *arg, const struct tkv_rs_region_error *e)
{
    struct tkv_rs_result res;
    memset(&res, 0, sizeof(res));
    res.rv = TKV_EREGION;
    res.region_error = *e;
    cb(arg, &res);
}

void rs_rerr_init(struct tkv_rs_region_error *e, uint32_t kind, uint64_t region_id)
{
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->region_id = region_id;
}

void rs_answer_kind(tkv_rs_done_fn cb, void *arg, uint32_t kind, const struct rs_peer *p,
                        uint64_t region_id)
{
    struct tkv_rs_region_error e;
    rs_rerr_init(&e, kind, region_id);
    if (p && kind == TKV_RS_NOT_LEADER && p->leader_peer_id) {
        const struct tkv_rs_peer *l = rs_region_peer_by_id(&p->region, p->leader_peer_id);
        if (l)
            e.leader = *l;
    }
    if (p && kind == TKV_RS_EPOCH_NOT_MATCH)
        rs_epoch_not_match(p, &e);
    rs_answer_region_error(cb, arg, &e);
}

/* ------------------------------------------------------------ raft storage */

static int st_initial_state(void *ctx, struct tkv_raft_hard_state *hs, struct tkv_raft_conf_state *cs)
{
    struct rs_peer *p = ctx;
    struct tkv_raftlog_hardstate h;
    memset(hs, 0, sizeof(*hs));
    if (tkv_raftlog_hardstate(p->s->env.raftlog, p->region.id, &h) == 0)
        *hs = (struct tkv_raft_hard_state){.term = h.term, .vote = h.vote, .commit = h.commit};
    /* Applied entries were committed: a hard state whose sync was lost
     * behind an engine checkpoint is repaired here. */
    if (hs->commit < p->apply.applied)
        hs->commit = p->apply.applied;
    /* a split-created peer (rs_split.c): at least the genesis term, and an
     * uninitialized predecessor's live vote */
    if (p->boot_hs.term > hs->term || (p->boot_hs.term == hs->term && hs->vote == 0)) {
        hs->term = p->boot_hs.term;
        hs->vote = p->boot_hs.vote;
    }
    memset(cs, 0, sizeof(*cs));
    if (p->initialized) {
        cs->n_voters = p->region.n_peers;
        for (uint32_t i = 0; i < p->region.n_peers; i++)
            cs->voters[i] = p->region.peers[i].id;
    }
    return 0;
}

static int st_term(void *ctx, tkv_index i, tkv_term *t)
{
    struct rs_peer *p = ctx;
    if (p->log_floor && i == p->log_floor) {
        *t = TKV_RAFT_INIT_TERM; /* split genesis, maybe not synced yet */
        return 0;
    }
    return tkv_raftlog_term(p->s->env.raftlog, p->region.id, i, t);
}

static int st_entries(void *ctx, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                      struct tkv_raft_entry *out, size_t *n_out)
{
    struct rs_peer *p = ctx;
    struct tkv_raftlog_entry *ents = NULL;
    size_t n = 0;
    int rv = tkv_raftlog_read(p->s->env.raftlog, p->region.id, lo, hi, max_bytes, &ents, &n);
    if (rv < 0)
        return rv;
    for (size_t i = 0; i < n; i++) {
        out[i] = (struct tkv_raft_entry){.term = ents[i].term, .index = ents[i].index,
                                         .type = ents[i].type, .data = NULL};
        if (ents[i].data.len) {
            rv = tkv_raft_buf_copy(ents[i].data.ptr, ents[i].data.len, &out[i].data);
            if (rv < 0) {
                for (size_t k = 0; k < i; k++)
                    tkv_raft_buf_unref(out[k].data);
                tkv_free(ents);
                return rv;
            }
        }
    }
    tkv_free(ents);
    *n_out = n;
    return 0;
}

static tkv_index st_first(void *ctx)
{
    struct rs_peer *p = ctx;
    tkv_index f = tkv_raftlog_first_index(p->s->env.raftlog, p->region.id);
    return p->log_floor && f <= p->log_floor ? p->log_floor + 1 : f;
}

static tkv_index st_last(void *ctx)
{
    struct rs_peer *p = ctx;
    tkv_index l = tkv_raftlog_last_index(p->s->env.raftlog, p->region.id);
    return l < p->log_floor ? p->log_floor : l;
}

/* A snapshot of the region: generated over several Ready turns
 * (rs_snapgen.c); TKV_EUNAVAILABLE until it is ready (raft retries). */
static int st_snapshot(void *ctx, struct tkv_raft_snapshot *out)
{
    return rs_snapgen_storage_snapshot(ctx, out);
}

/* ------------------------------------------------------------ peers */

static void peer_mark_ready(struct rs_peer *p)
{
    p->s->dirty = true;
}

/* Step the peer's raft; a non-empty update is kept for the next ready. */
int rs_peer_step(struct rs_peer *p, const struct tkv_raft_event *ev)
{
    struct tkv_raft_update up;
    int rv = tkv_raft_step(p->raft, ev, &up);
    if (up.flags) {
        p->up = up;
        p->has_up = true;
        peer_mark_ready(p);
    }
    return rv;
}

int rs_peer_start_raft(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    struct tkv_raft_config rc = {
        .id = p->peer_id,
        .election_tick = s->cfg.election_tick,
        .heartbeat_tick = s->cfg.heartbeat_tick,
        .storage = {.ctx = p,
                    .initial_state = st_initial_state,
                    .term = st_term,
                    .entries = st_entries,
                    .first_index = st_first,
                    .last_index = st_last,
                    .snapshot = st_snapshot},
        .applied = p->apply.applied,
        .seed = s->cfg.seed ^ (s->cfg.store_id * 0x100000001b3ULL) ^ p->region.id,
        .max_msg_bytes = 1u << 20,
        .pre_vote = true,
        .check_quorum = true,
        .lease_read = true,
    };
    int rv = tkv_raft_init(&rc, &p->raft);
    if (rv == 0) {
        struct tkv_raft_status st;
        tkv_raft_status(p->raft, &st);
        p->synced_term = st.hs.term; /* read back from the raft log: durable */
    }
    return rv;
}

struct rs_peer *rs_peer_new(struct tkv_raftstore *s, const struct tkv_rs_region *rg,
                                uint64_t peer_id, bool initialized)
{
    struct rs_peer *p = tkv_xcalloc(1, sizeof(*p));
    p->s = s;
    p->serial = ++s->next_serial;
    p->region = *rg;
    p->peer_id = peer_id;
    p->initialized = initialized;
    return p;
}

static void peer_fail_all(struct rs_peer *p, int rv)
{
    for (size_t i = 0; i < p->n_pend; i++) {
        tkv_raft_buf_unref(p->pend[i].data);
        rs_answer(p->pend[i].cb, p->pend[i].arg, rv);
    }
    p->n_pend = 0;
    for (size_t i = 0; i < p->n_props; i++)
        rs_answer(p->props[i].cb, p->props[i].arg, rv);
    p->n_props = 0;
    for (size_t i = 0; i < p->n_reads; i++) {
        rs_answer(p->reads[i].cb, p->reads[i].arg, rv);
        tkv_free(p->reads[i].key);
    }
    p->n_reads = 0;
}

void rs_peer_free(struct rs_peer *p)
{
    peer_fail_all(p, TKV_ESHUTDOWN);
    tkv_raft_close(p->raft);
    rs_snapgen_peer_free(p);
    rs_split_peer_free(p);
    tkv_free(p->props);
    tkv_free(p->pend);
    tkv_free(p->reads);
    tkv_free(p);
}

void rs_store_add_peer(struct tkv_raftstore *s, struct rs_peer *p)
{
    GROW(s->peers, s->n_peers, s->cap_peers);
    s->peers[s->n_peers++] = p;
}

/* ------------------------------------------------------------ open / close */

static tkv_index safe_to_drop(void *arg, tkv_region_id region)
{
    struct tkv_raftstore *s = arg;
    struct rs_peer *p = rs_peer_get(s, region);
    if (p)
        return p->durable_applied;
    /* a destroyed peer whose Tombstone is not checkpointed yet: a crash
     * brings the region back, replaying from here */
    const struct rs_removal *rm = rs_removal_get(s, region);
    return rm ? rm->durable_applied : UINT64_MAX;
}

static int load_region(struct tkv_raftstore *s, struct tkv_slice key, struct tkv_slice val)
{
    (void)key;
    struct rs_rd r = {val.ptr, val.len, 0};
    uint8_t state;
    struct tkv_rs_region rg;
    if (!rs_rd_u8(&r, &state) || !rs_decode_region(&r, &rg) || r.off != r.len)
        return TKV_ECORRUPT;
    if (state == RS_REGION_TOMBSTONE) {
        rs_tombstone_cleanup(s, rg.id);
        return 0;
    }
    const struct tkv_rs_peer *me = rs_region_peer_on_store(&rg, s->cfg.store_id);
    if (!me)
        return TKV_ECORRUPT;
    uint8_t k[RS_META_KEY_LEN];
    struct tkv_slice v;
    rs_key_apply_state(k, rg.id);
    struct rs_apply_state a;
    int rv = tkv_engine_get(s->sess, TKV_CF_META, TKV_SLICE(k, sizeof(k)), &v);
    if (rv < 0 || !rs_decode_apply_state(v, &a))
        return TKV_ECORRUPT;
    struct rs_peer *p = rs_peer_new(s, &rg, me->id, true);
    p->apply = a;
    p->durable_applied = a.applied;
    p->ckpt_applied = a.applied;
    /* The engine may hold a snapshot whose raft log compaction was not
     * synced before a crash (the checkpoint that released it completed,
     * the compaction's group commit did not): redo it (the snapshot is the
     * truncation). The old log may end before the snapshot, or hold an
     * entry at its index from another history (another term): then what
     * follows it can never commit either and goes too. */
    struct tkv_raftlog *log = s->env.raftlog;
    tkv_term log_term = 0;
    bool other_history = a.truncated_index == a.applied && a.applied > TKV_RAFT_INIT_INDEX &&
                         tkv_raftlog_last_index(log, rg.id) >= a.applied &&
                         tkv_raftlog_term(log, rg.id, a.applied, &log_term) == 0 &&
                         log_term != a.truncated_term;
    if (tkv_raftlog_last_index(log, rg.id) < a.applied || other_history) {
        if (a.truncated_index != a.applied) {
            TKV_LOG_ERROR("raft log behind the applied index", TKV_LF_U64("region_id", rg.id));
            tkv_free(p);
            return TKV_ECORRUPT;
        }
        struct tkv_raftlog_hardstate h = {0};
        (void)tkv_raftlog_hardstate(log, rg.id, &h);
        if (h.term < a.truncated_term) {
            h.term = a.truncated_term;
            h.vote = 0;
        }
        h.commit = a.applied;
        rv = other_history ? tkv_raftlog_truncate(log, rg.id, a.applied + 1, NULL, NULL) : 0;
        if (rv == 0)
            rv = tkv_raftlog_compact(log, rg.id, a.applied, a.truncated_term, NULL, NULL);
        if (rv == 0)
            rv = tkv_raftlog_append(log, rg.id, NULL, 0, &h, NULL, NULL);
        /* raft reads the durable view: the repair must be written first
         * (synchronous at open; see README "Departures" for reactor mode) */
        if (rv == 0)
            rv = tkv_raftlog_flush(log);
        if (rv == 0 && tkv_raftlog_last_index(log, rg.id) < a.applied)
            rv = TKV_EIOFATAL;
        if (rv < 0) {
            tkv_free(p);
            return rv;
        }
    }
    rv = rs_peer_start_raft(p);
    if (rv < 0) {
        TKV_LOG_ERROR("region peer failed to start", TKV_LF_U64("region_id", rg.id), TKV_LF_ERR(rv));
        tkv_free(p);
        return rv;
    }
    rs_store_add_peer(s, p);
    return 0;
}

int tkv_raftstore_open(const struct tkv_raftstore_config *cfg, const struct tkv_raftstore_env *env,
                       struct tkv_raftstore **out)
{
    if (!cfg || !env || !env->raftlog || !env->engine || !env->send || cfg->store_id == 0 ||
        cfg->election_tick <= cfg->heartbeat_tick || cfg->heartbeat_tick == 0)
        return TKV_EINVAL;
    struct tkv_raftstore *s = tkv_xcalloc(1, sizeof(*s));
    s->cfg = *cfg;
    if (s->cfg.max_pending_per_region == 0)
        s->cfg.max_pending_per_region = 4096;
    if (s->cfg.raft_log_gc_tick == 0)
        s->cfg.raft_log_gc_tick = 10;
    if (s->cfg.raft_log_gc_count_limit == 0)
        s->cfg.raft_log_gc_count_limit = 128000;
    if (s->cfg.snap_gen_budget == 0)
        s->cfg.snap_gen_budget = RS_SNAP_GEN_BUDGET_DEFAULT;
    s->env = *env;
    int rv = tkv_engine_session_open(env->engine, &s->sess);
    if (rv < 0) {
        tkv_free(s);
        return rv;
    }
    /* every region state under 01 03 */
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    const uint8_t lo[] = {0x01, 0x03}, hi[] = {0x01, 0x04};
    rv = tkv_engine_snap_open(s->sess, &snap);
    if (rv == 0)
        rv = tkv_engine_iter_open(snap, TKV_CF_META, TKV_SLICE(lo, 2), TKV_SLICE(hi, 2), &it);
    /* collect first: loading reads the engine through the session */
    struct rs_buf keys = {0}, vals = {0};
    size_t n = 0;
    if (rv == 0) {
        for (rv = tkv_engine_iter_seek_first(it); rv == 0 && tkv_engine_iter_valid(it);
             rv = tkv_engine_iter_next(it)) {
            rs_buf_slice(&keys, tkv_engine_iter_key(it));
            rs_buf_slice(&vals, tkv_engine_iter_value(it));
            n++;
        }
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    struct rs_rd kr = {keys.p, keys.len, 0}, vr = {vals.p, vals.len, 0};
    for (size_t i = 0; i < n && rv == 0; i++) {
        struct tkv_slice k, v;
        if (!rs_rd_slice(&kr, SIZE_MAX, &k) || !rs_rd_slice(&vr, SIZE_MAX, &v)) {
            rv = TKV_ECORRUPT;
            break;
        }
        rv = load_region(s, k, v);
    }
    rs_buf_free(&keys);
    rs_buf_free(&vals);
    if (rv == 0)
        rv = tkv_raftlog_flush(env->raftlog) < 0 ? TKV_EIOFATAL : 0;
    if (rv < 0) {
        tkv_raftstore_close(s);
        return rv;
    }
    tkv_raftlog_set_safe_fn(env->raftlog, safe_to_drop, s);
    *out = s;
    return 0;
}

void tkv_raftstore_close(struct tkv_raftstore *s)
{
    if (!s)
        return;
    tkv_raftlog_set_safe_fn(s->env.raftlog, NULL, NULL);
    for (struct rs_turn *t = s->inflight; t; t = t->next)
        t->s = NULL;
    for (size_t i = 0; i < s->n_out; i++)
        tkv_rs_msg_release(&s->out[i]);
    tkv_free(s->out);
    for (size_t i = 0; i < s->n_peers; i++)
        rs_peer_free(s->peers[i]);
    rs_snapgen_close(s);
    tkv_free(s->peers);
    tkv_free(s->removals); /* redone at open (rs_tombstone_cleanup) */
    tkv_free(s->split_notes);
    tkv_engine_session_close(s->sess);
    tkv_free(s);
}

int tkv_raftstore_bootstrap(struct tkv_raftlog *log, struct tkv_engine *engine, uint64_t store_id,
                            const struct tkv_rs_region *region)
{
    if (!region || region->id == 0 || !rs_region_peer_on_store(region, store_id))
        return TKV_EINVAL;
    struct tkv_engine_session *sess = NULL;
    int rv = tkv_engine_session_open(engine, &sess);
    if (rv < 0)
        return rv;
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    struct rs_buf v = {0};
    uint8_t k[RS_META_KEY_LEN];
    rs_buf_u8(&v, RS_REGION_NORMAL);
    rs_encode_region(&v, region);
    rs_key_region_state(k, region->id);
    rv = tkv_engine_batch_put(&b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
    v.len = 0;
    struct rs_apply_state a = {.applied = TKV_RAFT_INIT_INDEX,
                               .truncated_index = TKV_RAFT_INIT_INDEX,
                               .truncated_term = TKV_RAFT_INIT_TERM};
    rs_encode_apply_state(&v, &a);
    rs_key_apply_state(k, region->id);
    if (rv == 0)
        rv = tkv_engine_batch_put(&b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
    if (rv == 0)
        rv = tkv_engine_write(sess, &b);
    tkv_engine_batch_close(&b);
    rs_buf_free(&v);
    tkv_engine_session_close(sess);
    if (rv == 0)
        rv = tkv_engine_checkpoint(engine);
    struct tkv_raftlog_hardstate hs = {.term = TKV_RAFT_INIT_TERM, .commit = TKV_RAFT_INIT_INDEX};
    if (rv == 0)
        rv = tkv_raftlog_compact(log, region->id, TKV_RAFT_INIT_INDEX, TKV_RAFT_INIT_TERM, NULL, NULL);
    if (rv == 0)
        rv = tkv_raftlog_append(log, region->id, NULL, 0, &hs, NULL, NULL);
    if (rv == 0)
        rv = tkv_raftlog_flush(log);
    return rv;
}

/* ------------------------------------------------------------ receive */

/* A sender our region does not list (added by a conf change we have not
 * applied yet): kept so replies can reach it (rs_queue_msg). */
static void remember_sender(struct rs_peer *p, struct tkv_rs_peer from)
{
    const size_t cap = sizeof(p->senders) / sizeof(p->senders[0]);
    for (uint32_t i = 0; i < p->n_senders; i++)
        if (p->senders[i].id == from.id) {
            p->senders[i] = from;
            return;
        }
    if (p->n_senders < cap) {
        p->senders[p->n_senders++] = from;
        return;
    }
    p->senders[p->next_sender] = from;
    p->next_sender = (uint32_t)((p->next_sender + 1) % cap);
}

void tkv_raftstore_receive(struct tkv_raftstore *s, const struct tkv_rs_msg *m)
{
    s->stats.msgs_received++;
    if (!m || m->region_id == 0 || m->to.store_id != s->cfg.store_id || m->to.id == 0 ||
        m->from.id == 0 || m->msg.to != m->to.id || m->msg.from != m->from.id) {
        s->stats.msgs_dropped++;
        return;
    }
    /* TINYKV-API.md 2.14: gc messages, stale senders, tombstones, new and
     * replaced peers (rs_confchange.c) */
    struct rs_peer *p = rs_route_msg(s, m);
    if (!p)
        return;
    /* remember how to reach the sender (uninitialized peers know nobody) */
    if (!p->initialized && !rs_region_peer_by_id(&p->region, m->from.id) &&
        p->region.n_peers < TKV_RS_MAX_PEERS)
        p->region.peers[p->region.n_peers++] = m->from;
    else if (p->initialized && m->epoch.conf_ver > p->region.epoch.conf_ver &&
             !rs_region_peer_by_id(&p->region, m->from.id))
        remember_sender(p, m->from);
    if (m->msg.type == TKV_RAFT_MSG_SNAPSHOT) {
        /* refuse a snapshot that is corrupt, not for this peer, or older
         * than the region we have (2.10) */
        struct tkv_rs_region rg;
        size_t off;
        const struct tkv_raft_snapshot *sn = m->msg.snapshot;
        if (!sn || !sn->data ||
            rs_snapshot_check(TKV_SLICE(sn->data->data, sn->data->len), &rg, &off) < 0 ||
            rg.id != p->region.id || !rs_region_peer_by_id(&rg, p->peer_id) ||
            (p->initialized && (rg.epoch.conf_ver < p->region.epoch.conf_ver ||
                                rg.epoch.version < p->region.epoch.version)) ||
            rs_range_overlaps_other(s, &rg)) {
            s->stats.msgs_dropped++;
            return;
        }
    }
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &m->msg};
    if (rs_peer_step(p, &ev) == TKV_EPROTO)
        s->stats.msgs_dropped++;
}

static void report(struct tkv_raftstore *s, uint32_t type, uint64_t region_id, uint64_t to_peer_id,
                   bool failed)
{
    struct rs_peer *p = rs_peer_get(s, region_id);
    if (!p || to_peer_id == 0)
        return;
    struct tkv_raft_event ev = {.type = type};
    ev.u.report.node = to_peer_id;
    ev.u.report.failed = failed;
    (void)rs_peer_step(p, &ev);
}

void tkv_raftstore_report_unreachable(struct tkv_raftstore *s, uint64_t region_id,
                                      uint64_t to_peer_id)
{
    report(s, TKV_RAFT_EV_REPORT_UNREACHABLE, region_id, to_peer_id, true);
}

void tkv_raftstore_report_snapshot(struct tkv_raftstore *s, uint64_t region_id, uint64_t to_peer_id,
                                   bool failed)
{
    report(s, TKV_RAFT_EV_REPORT_SNAPSHOT, region_id, to_peer_id, failed);
}

/* ------------------------------------------------------------ tick, GC */

static void propose_compact(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    /* from the truncated state, not the raft log's first index: the log
     * keeps entries above the last checkpoint however far GC went */
    tkv_index first = p->apply.truncated_index + 1;
    tkv_index applied = p->apply.applied;
    if (applied <= first || applied - first < s->cfg.raft_log_gc_count_limit)
        return;
    tkv_index ci = applied - 1;
    tkv_term ct = 0;
    if (ci < first || tkv_raft_term(p->raft, ci, &ct) < 0)
        return;
    struct rs_buf b = {0};
    rs_cmd_header(&b, RS_CMD_COMPACT_LOG, &p->region);
    rs_buf_u64(&b, ci);
    rs_buf_u64(&b, ct);
    struct tkv_raft_buf *d = NULL;
    if (tkv_raft_buf_copy(b.p, b.len, &d) == 0) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
        ev.u.propose.data = &d;
        ev.u.propose.n = 1;
        (void)rs_peer_step(p, &ev);
        tkv_raft_buf_unref(d);
    }
    rs_buf_free(&b);
}

void tkv_raftstore_tick(struct tkv_raftstore *s)
{
    s->ticks++;
    s->split_scan_budget = RS_SPLIT_SCAN_BUDGET; /* the split checker's reads this tick */
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
    for (size_t i = 0; i < s->n_peers; i++) {
        struct rs_peer *p = s->peers[i];
        (void)rs_peer_step(p, &ev);
        if (p->is_leader && s->ticks % s->cfg.raft_log_gc_tick == 0)
            propose_compact(p);
        rs_split_tick(p);
        rs_snapgen_tick(p);
    }
}

/* ------------------------------------------------------------ requests */

/* Checks common to every request (TINYKV-API.md 2.4); NULL = answered.
 * keys[0..n_keys) are raw keys, or user keys of a transactional command
 * (txn: compared in EncodeBytes form). */
static struct rs_peer *check_request_keys(struct tkv_raftstore *s, const struct tkv_rs_header *h,
                                          const struct tkv_slice *keys, size_t n_keys, bool txn,
                                          tkv_rs_done_fn cb, void *arg)
{
    if (h->peer.store_id && h->peer.store_id != s->cfg.store_id) {
        rs_answer_kind(cb, arg, TKV_RS_STORE_NOT_MATCH, NULL, h->region_id);
        return NULL;
    }
    struct rs_peer *p = rs_peer_get(s, h->region_id);
    if (!p || !p->initialized) {
        rs_answer_kind(cb, arg, TKV_RS_REGION_NOT_FOUND, NULL, h->region_id);
        return NULL;
    }
    if (!p->is_leader) {
        rs_answer_kind(cb, arg, TKV_RS_NOT_LEADER, p, h->region_id);
        return NULL;
    }
    if (h->peer.id && h->peer.id != p->peer_id) {
        /* a stale route, not a malformed request: the client retries */
        rs_answer_kind(cb, arg, TKV_RS_PEER_NOT_MATCH, p, h->region_id);
        return NULL;
    }
    struct tkv_raft_status st;
    tkv_raft_status(p->raft, &st);
    if (h->term && st.hs.term > h->term + 1) {
        rs_answer_kind(cb, arg, TKV_RS_STALE_COMMAND, p, h->region_id);
        return NULL;
    }
    if (h->epoch.version != p->region.epoch.version) {
        rs_answer_kind(cb, arg, TKV_RS_EPOCH_NOT_MATCH, p, h->region_id);
        return NULL;
    }
    for (size_t i = 0; i < n_keys; i++) {
        struct tkv_slice key = keys[i];
        if (key.len == 0 || key.len > TKV_ENGINE_KEY_MAX) {
            rs_answer(cb, arg, key.len ? TKV_ETOOBIG : TKV_EINVAL);
            return NULL;
        }
        if (txn ? !tkv_rs_region_contains_txn_key(&p->region, key)
                : !rs_key_in_region(&p->region, key)) {
            struct tkv_rs_region_error e;
            rs_rerr_init(&e, TKV_RS_KEY_NOT_IN_REGION, p->region.id);
            e.key_len = (uint32_t)TKV_MIN(key.len, TKV_RS_BOUND_MAX);
            memcpy(e.key, key.ptr, e.key_len);
            e.n_current = 1;
            e.current[0] = p->region;
            rs_answer_region_error(cb, arg, &e);
            return NULL;
        }
    }
    if (p->n_props + p->n_pend + p->n_reads >= s->cfg.max_pending_per_region) {
        rs_answer_kind(cb, arg, TKV_RS_SERVER_BUSY, p, h->region_id);
        return NULL;
    }
    return p;
}

/* scan_start: key is a scan's start, which may be empty: the region's
 * first key, in the region only when the region starts at "" (the first
 * region); a get/put/delete key may not be empty. */
static struct rs_peer *check_request(struct tkv_raftstore *s, const struct tkv_rs_header *h,
                                     struct tkv_slice key, bool scan_start, tkv_rs_done_fn cb,
                                     void *arg)
{
    if (!scan_start || key.len != 0)
        return check_request_keys(s, h, &key, 1, false, cb, arg);
    struct rs_peer *p = check_request_keys(s, h, NULL, 0, false, cb, arg);
    if (p && p->region.start_len) {
        struct tkv_rs_region_error e;
        rs_rerr_init(&e, TKV_RS_KEY_NOT_IN_REGION, p->region.id);
        e.n_current = 1;
        e.current[0] = p->region;
        rs_answer_region_error(cb, arg, &e);
        return NULL;
    }
    return p;
}

static bool valid_cf(enum tkv_cf cf)
{
    return cf == TKV_CF_DEFAULT || cf == TKV_CF_LOCK || cf == TKV_CF_WRITE;
}

__attribute__((unused)) static void ignore_answer(void *arg, const struct tkv_rs_result *res)
{
    (void)arg, (void)res;
}

/* Queue the encoded command b (freed here) for this turn's proposal. */
static void propose_cmd(struct rs_peer *p, struct rs_buf *b, tkv_rs_done_fn cb, void *arg)
{
    struct tkv_raft_buf *d = NULL;
    int rv = tkv_raft_buf_copy(b->p, b->len, &d);
    rs_buf_free(b);
    if (rv < 0) {
        rs_answer(cb, arg, rv);
        return;
    }
    GROW(p->pend, p->n_pend, p->cap_pend);
    p->pend[p->n_pend++] = (struct rs_pending_prop){.data = d, .cb = cb, .arg = arg};
    peer_mark_ready(p);
}

/* Propose every command queued this turn as one raft proposal: raft sends
 * one append per follower for the batch instead of one per command, which
 * divides the messages, their encoding and the followers' acknowledgements
 * by the number of commands a turn carries. */
static void flush_proposals(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    size_t n = p->n_pend;
    struct tkv_raft_buf *small[64];
    struct tkv_raft_buf **ds = n <= 64 ? small : tkv_xmalloc(n * sizeof(*ds));
    for (size_t i = 0; i < n; i++)
        ds[i] = p->pend[i].data;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = ds;
    ev.u.propose.n = n;
    int rv = rs_peer_step(p, &ev);
    for (size_t i = 0; i < n; i++)
        tkv_raft_buf_unref(ds[i]);
    if (ds != small)
        tkv_free(ds);
    struct rs_pending_prop *pend = p->pend;
    p->n_pend = 0;
    if (rv < 0) {
        for (size_t i = 0; i < n; i++)
            rs_answer_kind(pend[i].cb, pend[i].arg,
                           rv == TKV_ENOTLEADER ? TKV_RS_NOT_LEADER : TKV_RS_STALE_COMMAND, p,
                           p->region.id);
        return;
    }
    struct tkv_raft_status st;
    tkv_raft_status(p->raft, &st);
    tkv_index first = st.last_index - n + 1;
    for (size_t i = 0; i < n; i++) {
        tkv_rs_done_fn cb = pend[i].cb;
        void *arg = pend[i].arg;
        /* Injected bug for the negative controls of the cluster tests
         * (tests/integration/cluster): answer success as soon as the command is
         * proposed, before it is committed or applied. A read that follows can
         * miss the write (stale read) and a leader killed then loses it. */
        fiu_do_on("raftstore/ack_before_apply", {
            struct tkv_rs_result ok;
            memset(&ok, 0, sizeof(ok));
            cb(arg, &ok);
            cb = ignore_answer;
            arg = NULL;
        });
        GROW(p->props, p->n_props, p->cap_props);
        p->props[p->n_props++] =
            (struct rs_proposal){.index = first + i, .term = st.hs.term, .cb = cb, .arg = arg};
        s->stats.proposals++;
    }
}

static void propose_write(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                          uint8_t op, struct tkv_slice key, struct tkv_slice value,
                          tkv_rs_done_fn cb, void *arg)
{
    if (!valid_cf(cf)) {
        rs_answer(cb, arg, TKV_ECF);
        return;
    }
    if (value.len > TKV_ENGINE_VALUE_MAX) {
        rs_answer(cb, arg, TKV_ETOOBIG);
        return;
    }
    struct rs_peer *p = check_request(s, h, key, false, cb, arg);
    if (!p)
        return;
    struct rs_buf b = {0};
    rs_cmd_header(&b, RS_CMD_WRITE, &p->region);
    rs_buf_u32(&b, 1);
    rs_buf_u8(&b, op);
    rs_buf_u8(&b, (uint8_t)cf);
    rs_buf_slice(&b, key);
    if (op == RS_OP_PUT)
        rs_buf_slice(&b, value);
    propose_cmd(p, &b, cb, arg);
}

void tkv_raftstore_put(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                       struct tkv_slice key, struct tkv_slice value, tkv_rs_done_fn cb, void *arg)
{
    propose_write(s, h, cf, RS_OP_PUT, key, value, cb, arg);
}

void tkv_raftstore_delete(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                          struct tkv_slice key, tkv_rs_done_fn cb, void *arg)
{
    propose_write(s, h, cf, RS_OP_DELETE, key, TKV_SLICE(NULL, 0), cb, arg);
}

static void start_read(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                       struct tkv_slice key, bool scan, uint32_t limit, tkv_rs_done_fn cb,
                       void *arg);

void tkv_raftstore_get(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                       struct tkv_slice key, tkv_rs_done_fn cb, void *arg)
{
    start_read(s, h, cf, key, false, 0, cb, arg);
}

void tkv_raftstore_scan(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                        struct tkv_slice start, uint32_t limit, tkv_rs_done_fn cb, void *arg)
{
    if (limit > TKV_RS_SCAN_LIMIT_MAX) {
        rs_answer(cb, arg, TKV_EINVAL);
        return;
    }
    start_read(s, h, cf, start, true, limit, cb, arg);
}

/* ReadIndex, then (serve_reads) the read or the transactional command. */
static void read_index(struct tkv_raftstore *s, struct rs_peer *p, const struct tkv_rs_header *h,
                       struct rs_read rd)
{
    tkv_rs_done_fn cb = rd.cb;
    void *arg = rd.arg;
    uint64_t ctx = ++s->next_ctx;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_READ_INDEX, .u.ctx = ctx};
    int rv = rs_peer_step(p, &ev);
    if (rv < 0) {
        /* not leader, or a new leader that has not committed in its term */
        rs_answer_kind(cb, arg, rv == TKV_ENOTLEADER ? TKV_RS_NOT_LEADER : TKV_RS_STALE_COMMAND, p,
                    h->region_id);
        tkv_free(rd.key);
        return;
    }
    rd.ctx = ctx;
    rd.version = p->region.epoch.version;
    GROW(p->reads, p->n_reads, p->cap_reads);
    p->reads[p->n_reads++] = rd;
}

static void start_read(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                       struct tkv_slice key, bool scan, uint32_t limit, tkv_rs_done_fn cb,
                       void *arg)
{
    if (!valid_cf(cf)) {
        rs_answer(cb, arg, TKV_ECF);
        return;
    }
    struct rs_peer *p = check_request(s, h, key, scan, cb, arg);
    if (!p)
        return;
    read_index(s, p, h,
               (struct rs_read){.cf = cf, .key = tkv_xmemdup(key.ptr, key.len), .key_len = key.len,
                                .scan = scan, .limit = limit, .cb = cb, .arg = arg});
}

void tkv_raftstore_txn(struct tkv_raftstore *s, const struct tkv_rs_header *h,
                       const struct tkv_slice *keys, size_t n_keys, tkv_rs_txn_run_fn run,
                       tkv_rs_done_fn done, void *arg)
{
    struct rs_peer *p = check_request_keys(s, h, keys, n_keys, true, done, arg);
    if (!p)
        return;
    read_index(s, p, h, (struct rs_read){.run = run, .cb = done, .arg = arg});
}

/* A transactional command whose read index is applied: run it on one
 * snapshot and propose its write list as one entry. */
static void serve_txn(struct rs_peer *p, struct rs_read *rd)
{
    struct tkv_engine_snap *snap = NULL;
    const struct tkv_rs_modify *mods = NULL;
    size_t n = 0;
    int rv = tkv_engine_snap_open(p->s->sess, &snap);
    if (rv == 0) {
        rv = rd->run(rd->arg, snap, &p->region, &mods, &n);
        tkv_engine_snap_close(snap);
    }
    if (rv < 0 || n == 0) {
        rs_answer(rd->cb, rd->arg, rv < 0 ? rv : 0);
        return;
    }
    if (!p->is_leader) {
        rs_answer_kind(rd->cb, rd->arg, TKV_RS_NOT_LEADER, p, p->region.id);
        return;
    }
    struct rs_buf b = {0};
    rs_cmd_header(&b, RS_CMD_TXN_WRITE, &p->region);
    rs_buf_u32(&b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_rs_modify *m = &mods[i];
        if (!valid_cf(m->cf) || m->key.len == 0 || m->key.len > TKV_ENGINE_KEY_MAX ||
            m->value.len > TKV_ENGINE_VALUE_MAX || n > UINT32_MAX) {
            rs_buf_free(&b);
            rs_answer(rd->cb, rd->arg, TKV_EINVAL);
            return;
        }
        rs_buf_u8(&b, m->is_delete ? RS_OP_DELETE : RS_OP_PUT);
        rs_buf_u8(&b, (uint8_t)m->cf);
        rs_buf_slice(&b, m->key);
        if (!m->is_delete)
            rs_buf_slice(&b, m->value);
    }
    propose_cmd(p, &b, rd->cb, rd->arg);
}

int tkv_raftstore_transfer_leader(struct tkv_raftstore *s, uint64_t region_id, uint64_t to_peer)
{
    struct rs_peer *p = rs_peer_get(s, region_id);
    if (!p)
        return TKV_EREGION;
    if (!rs_region_peer_by_id(&p->region, to_peer))
        return TKV_EINVAL;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TRANSFER_LEADER, .u.target = to_peer};
    return rs_peer_step(p, &ev);
}

int tkv_raftstore_campaign(struct tkv_raftstore *s, uint64_t region_id)
{
    struct rs_peer *p = rs_peer_get(s, region_id);
    if (!p)
        return TKV_EREGION;
    if (!p->initialized)
        return TKV_EINVAL;
    struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_HUP, .from = p->peer_id};
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &m};
    return rs_peer_step(p, &ev);
}

size_t tkv_raftstore_region_ids(const struct tkv_raftstore *s, uint64_t *ids, size_t cap)
{
    for (size_t i = 0; i < s->n_peers && i < cap; i++)
        ids[i] = s->peers[i]->region.id;
    return s->n_peers;
}

/* One engine snapshot, keys in [start, region end), at most limit pairs;
 * answers and frees the read. */
static void serve_scan(struct rs_peer *p, struct rs_read *rd, struct tkv_rs_result *res)
{
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    struct rs_buf b = {0};
    size_t n = 0;
    int rv = tkv_engine_snap_open(p->s->sess, &snap);
    if (rv == 0)
        rv = tkv_engine_iter_open(snap, rd->cf, TKV_SLICE(rd->key, rd->key_len),
                                  TKV_SLICE(p->region.end, p->region.end_len), &it);
    if (rv == 0) {
        for (rv = tkv_engine_iter_seek_first(it); rv == 0 && n < rd->limit && tkv_engine_iter_valid(it);
             rv = tkv_engine_iter_next(it)) {
            rs_buf_slice(&b, tkv_engine_iter_key(it));
            rs_buf_slice(&b, tkv_engine_iter_value(it));
            n++;
        }
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    struct tkv_rs_kv *kvs = n ? tkv_xmalloc(n * sizeof(*kvs)) : NULL;
    struct rs_rd r = {b.p, b.len, 0};
    for (size_t i = 0; i < n; i++)
        if (!rs_rd_slice(&r, SIZE_MAX, &kvs[i].key) || !rs_rd_slice(&r, SIZE_MAX, &kvs[i].value))
            abort(); /* we just wrote it */
    res->rv = rv < 0 ? rv : 0;
    res->kvs = rv < 0 ? NULL : kvs;
    res->n_kvs = rv < 0 ? 0 : n;
    rd->cb(rd->arg, res);
    tkv_free(kvs);
    rs_buf_free(&b);
    tkv_free(rd->key);
}

/* Serve the reads whose read index is applied; on losing leadership fail
 * those still waiting for a read index (raft drops them silently). */
static void serve_reads(struct rs_peer *p)
{
    /* Detached: an answer may start new requests on this peer (a latch
     * released by a transactional answer wakes the next command). */
    struct rs_read *reads = p->reads;
    size_t n_reads = p->n_reads, cap_reads = p->cap_reads;
    p->reads = NULL;
    p->n_reads = p->cap_reads = 0;
    size_t k = 0;
    for (size_t i = 0; i < n_reads; i++) {
        struct rs_read *rd = &reads[i];
        if (rd->index && rd->index <= p->apply.applied &&
            rd->version != p->region.epoch.version) {
            /* split meanwhile: the keys may belong to another region now */
            rs_answer_kind(rd->cb, rd->arg, TKV_RS_EPOCH_NOT_MATCH, p, p->region.id);
            tkv_free(rd->key);
            continue;
        }
        if (rd->index && rd->index <= p->apply.applied && rd->run) {
            serve_txn(p, rd);
            continue;
        }
        if (rd->index && rd->index <= p->apply.applied) {
            struct tkv_rs_result res;
            memset(&res, 0, sizeof(res));
            struct tkv_slice key = TKV_SLICE(rd->key, rd->key_len);
            if (!rs_key_in_region(&p->region, key)) {
                rs_rerr_init(&res.region_error, TKV_RS_KEY_NOT_IN_REGION, p->region.id);
                res.rv = TKV_EREGION;
            } else if (rd->scan) {
                serve_scan(p, rd, &res);
                continue;
            } else {
                res.rv = tkv_engine_get(p->s->sess, rd->cf, key, &res.value);
            }
            rd->cb(rd->arg, &res);
            tkv_free(rd->key);
            continue;
        }
        if (!rd->index && !p->is_leader) {
            rs_answer_kind(rd->cb, rd->arg, TKV_RS_NOT_LEADER, p, p->region.id);
            tkv_free(rd->key);
            continue;
        }
        reads[k++] = *rd;
    }
    /* keep the waiting ones first (request order), then any that arrived */
    for (size_t i = 0; i < p->n_reads; i++) {
        GROW(reads, k, cap_reads);
        reads[k++] = p->reads[i];
    }
    tkv_free(p->reads);
    p->reads = reads;
    p->n_reads = k;
    p->cap_reads = cap_reads;
}

/* ------------------------------------------------------------ apply */

void rs_answer_proposals(struct rs_peer *p, tkv_index index, tkv_term term, int rv,
                             const struct tkv_rs_region_error *rerr)
{
    size_t k = 0;
    for (size_t i = 0; i < p->n_props; i++) {
        struct rs_proposal *pr = &p->props[i];
        if (pr->index > index) {
            p->props[k++] = *pr;
            continue;
        }
        if (pr->index == index && pr->term == term) {
            if (rerr)
                rs_answer_region_error(pr->cb, pr->arg, rerr);
            else
                rs_answer(pr->cb, pr->arg, rv);
        } else {
            /* its entry was overwritten by another leader's */
            rs_answer_kind(pr->cb, pr->arg, TKV_RS_STALE_COMMAND, p, p->region.id);
        }
    }
    p->n_props = k;
}

/* Decode one committed entry into the batch; what to answer goes in *res. */
static void apply_entry(struct rs_peer *p, const struct tkv_raft_entry *e,
                        struct tkv_engine_batch *b, struct rs_apply_result *res, tkv_index *compact_to,
                        tkv_term *compact_term)
{
    res->index = e->index;
    res->term = e->term;
    res->rv = 0;
    res->has_rerr = false;
    if (e->type == TKV_RAFT_ENTRY_CONF_CHANGE) {
        rs_apply_conf_change(p, e, b, res);
        return;
    }
    if (!e->data || e->type != TKV_RAFT_ENTRY_NORMAL)
        return; /* the leader's no-op */
    struct rs_rd r = {e->data->data, e->data->len, 0};
    uint8_t kind;
    uint64_t region_id;
    struct tkv_rs_epoch ep;
    if (!rs_cmd_decode_header(&r, &kind, &region_id, &ep) || region_id != p->region.id) {
        TKV_LOG_WARN("undecodable raft command skipped", TKV_LF_U64("region_id", p->region.id),
                     TKV_LF_U64("index", e->index));
        res->rv = TKV_ECORRUPT;
        return;
    }
    if (kind == RS_CMD_COMPACT_LOG) {
        uint64_t ci, ct;
        if (!rs_rd_u64(&r, &ci) || !rs_rd_u64(&r, &ct))
            return;
        if (ci > p->apply.truncated_index && ci <= e->index) {
            p->apply.truncated_index = ci;
            p->apply.truncated_term = ct;
            *compact_to = ci;
            *compact_term = ct;
            p->s->stats.compact_logs++;
        }
        return;
    }
    if (kind == RS_CMD_SPLIT) {
        rs_split_apply(p, &r, &ep, b, &res->rv, &res->has_rerr, &res->rerr);
        return;
    }
    if (kind != RS_CMD_WRITE && kind != RS_CMD_TXN_WRITE)
        return;
    /* the region may have changed between propose and apply */
    if (ep.version != p->region.epoch.version) {
        res->has_rerr = true;
        rs_rerr_init(&res->rerr, TKV_RS_EPOCH_NOT_MATCH, p->region.id);
        rs_epoch_not_match(p, &res->rerr);
        return;
    }
    uint32_t n;
    if (!rs_rd_u32(&r, &n))
        goto bad;
    size_t mark = b->len, ops = b->n_ops, bytes = b->data_bytes;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t op, cf;
        struct tkv_slice k, v = {0};
        if (!rs_rd_u8(&r, &op) || !rs_rd_u8(&r, &cf) || !rs_rd_slice(&r, TKV_ENGINE_KEY_MAX, &k) ||
            !valid_cf((enum tkv_cf)cf))
            goto undo;
        /* transactional LOCK CF keys are user keys; the others carry
         * EncodeBytes(user key) as their prefix and compare as they are */
        if (kind == RS_CMD_TXN_WRITE && cf == TKV_CF_LOCK ? !tkv_rs_region_contains_txn_key(&p->region, k)
                                                          : !rs_key_in_region(&p->region, k))
            goto undo;
        if (op == RS_OP_PUT) {
            if (!rs_rd_slice(&r, TKV_ENGINE_VALUE_MAX, &v) ||
                tkv_engine_batch_put(b, (enum tkv_cf)cf, k, v) < 0)
                goto undo;
            if (cf == TKV_CF_DEFAULT)
                rs_split_note_write(p, k.len + v.len);
        } else if (op != RS_OP_DELETE || tkv_engine_batch_delete(b, (enum tkv_cf)cf, k) < 0) {
            goto undo;
        }
    }
    return;
undo:
    b->len = mark;
    b->n_ops = ops;
    b->data_bytes = bytes;
bad:
    res->rv = TKV_EINVAL;
}

void rs_write_apply_state(struct rs_peer *p, struct tkv_engine_batch *b)
{
    uint8_t k[RS_META_KEY_LEN];
    struct rs_buf v = {0};
    rs_key_apply_state(k, p->region.id);
    rs_encode_apply_state(&v, &p->apply);
    (void)tkv_engine_batch_put(b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
    rs_buf_free(&v);
}

void rs_write_region_state(struct rs_peer *p, struct tkv_engine_batch *b)
{
    uint8_t k[RS_META_KEY_LEN];
    struct rs_buf v = {0};
    rs_buf_u8(&v, RS_REGION_NORMAL);
    rs_encode_region(&v, &p->region);
    rs_key_region_state(k, p->region.id);
    (void)tkv_engine_batch_put(b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
    rs_buf_free(&v);
}

void rs_fatal_engine(int rv)
{
    /* An engine that cannot apply committed entries cannot go on: the
     * state machine would fork from the log (RELIABILITY.md fail-stop). */
    TKV_LOG_FATAL("engine write failed while applying", TKV_LF_ERR(rv));
    abort();
}

static void apply_committed(struct rs_peer *p, const struct tkv_raft_entry *ents, size_t n)
{
    struct tkv_raftstore *s = p->s;
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    struct rs_apply_result *res = tkv_xmalloc(n * sizeof(*res));
    tkv_index compact_to = 0;
    tkv_term compact_term = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].index <= p->apply.applied || p->held_removal) {
            /* already applied (replay overlap), or after our held removal */
            res[i].index = 0;
            continue;
        }
        apply_entry(p, &ents[i], &b, &res[i], &compact_to, &compact_term);
        if (p->held_removal) {
            res[i].index = 0; /* held: not applied (rs_held_removal_step) */
            continue;
        }
        p->apply.applied = ents[i].index;
        if (p->destroy_pending) {
            /* we were removed: nothing after it applies here */
            for (size_t k = i + 1; k < n; k++)
                res[k].index = 0;
            break;
        }
    }
    rs_write_apply_state(p, &b);
    int rv = tkv_engine_write(s->sess, &b);
    tkv_engine_batch_close(&b);
    if (rv < 0)
        rs_fatal_engine(rv);
    s->stats.applied_entries += n;
    rs_split_after_write(s);
    for (size_t i = 0; i < n; i++)
        if (res[i].index)
            rs_answer_proposals(p, res[i].index, res[i].term, res[i].rv,
                             res[i].has_rerr ? &res[i].rerr : NULL);
    tkv_free(res);
    if (compact_to) {
        /* the raft log clamps this to what the last checkpoint covers */
        (void)tkv_raftlog_compact(s->env.raftlog, p->region.id, compact_to, compact_term, NULL,
                                  NULL);
    }
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLIED, .u.applied = p->apply.applied};
    (void)rs_peer_step(p, &ev);
}

/* A lock of the snapshot held by another region of this store (in
 * EncodeBytes form) is that region's to manage: not overwritten. */
static bool snapshot_skip_lock(void *ctx, struct tkv_slice key)
{
    const struct rs_peer *p = ctx;
    return !RS_BUG("lock_cf_raw_bounds") && rs_lock_managed_elsewhere(p->s, p->region.id, key);
}

/* Install a snapshot into the engine atomically (old range data out, the
 * snapshot's data, region and apply state in: one batch). Not durable
 * until a checkpoint covers it: the raft log compaction to the snapshot
 * waits for that (handle_update), so a crash meanwhile finds the engine
 * and the raft log both as before the snapshot (the leader sends another
 * one). */
static void install_snapshot(struct rs_peer *p, const struct tkv_raft_snapshot *sn)
{
    struct tkv_raftstore *s = p->s;
    struct tkv_rs_region rg;
    size_t off;
    struct tkv_slice data = sn->data ? TKV_SLICE(sn->data->data, sn->data->len) : TKV_SLICE(NULL, 0);
    if (rs_snapshot_check(data, &rg, &off) < 0) {
        /* checked on receive; a local corruption is fatal */
        TKV_LOG_FATAL("corrupt snapshot in an update", TKV_LF_U64("region_id", p->region.id));
        abort();
    }
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    const struct tkv_rs_region *old = p->initialized ? &p->region : &rg;
    for (int c = 0; c < 3; c++)
        if (rs_data_cfs[c] != TKV_CF_LOCK)
            (void)tkv_engine_batch_delete_range(&b, rs_data_cfs[c],
                                                TKV_SLICE(old->start, old->start_len),
                                                TKV_SLICE(old->end, old->end_len));
    /* the LOCK CF by the region's rule (rs_lockcf.c): locks of the region
     * lie outside its raw range, and keys in it may be another's locks */
    int rv = rs_delete_region_locks(s, old, &b);
    if (rv < 0)
        rs_fatal_engine(rv);
    rv = rs_snapshot_to_batch(data, off, &b, snapshot_skip_lock, p);
    if (rv < 0)
        rs_fatal_engine(rv);
    p->region = rg;
    p->initialized = true;
    p->apply.applied = sn->index;
    p->apply.truncated_index = sn->index;
    p->apply.truncated_term = sn->term;
    rs_write_apply_state(p, &b);
    rs_write_region_state(p, &b);
    rv = tkv_engine_write(s->sess, &b);
    tkv_engine_batch_close(&b);
    if (rv < 0)
        rs_fatal_engine(rv);
    s->stats.snapshots_applied++;
    p->split.size_known = false;
    /* requests against the old state are void */
    rs_answer_proposals(p, sn->index, 0, 0, NULL);
    rs_region_changed(s, &p->region, false);
}

/* ------------------------------------------------------------ ready */

void rs_queue_msg(struct rs_peer *p, const struct tkv_raft_msg *m)
{
    struct tkv_raftstore *s = p->s;
    const struct tkv_rs_peer *to = rs_region_peer_by_id(&p->region, m->to);
    for (uint32_t i = 0; !to && i < p->n_senders; i++)
        if (p->senders[i].id == m->to)
            to = &p->senders[i];
    if (!to) {
        s->stats.msgs_dropped++;
        return;
    }
    struct tkv_rs_msg rm = {.region_id = p->region.id,
                            .from = {.id = p->peer_id, .store_id = s->cfg.store_id},
                            .to = *to,
                            .epoch = p->region.epoch,
                            .msg = *m};
    /* A leader's messages leave at once: it writes its log in parallel with
     * its followers (Raft thesis 10.2.1; etcd does the same), safe because
     * raft counts its own entries toward the commit only at LOG_PERSISTED.
     * Only in a term its raft log already holds durably: a leader elected
     * alone (one voter) has not synced its new term yet, and appends sent in
     * it could outlive a crash that forgets the term, letting it win the
     * same term again with different entries. Not in a region of two
     * voters: the commit index these messages carry may not be durable
     * here yet, and a peer leaving a region of two goes as soon as it sees
     * its removal committed (rs_held_removal_step); if we then crashed
     * before our sync, we would restart below that commit, still counting
     * the departed peer, and never win an election again. Everyone else's
     * messages wait for this turn's sync (turn_synced): a vote or an append
     * acknowledgement promises durable state. */
    if (p->is_leader && m->term && m->term <= p->synced_term && p->region.n_peers > 2 &&
        !RS_BUG("two_voters_send_early")) {
        s->env.send(s->env.ctx, to->store_id, &rm);
        s->stats.msgs_sent++;
        return;
    }
    GROW(s->out, s->n_out, s->cap_out);
    tkv_rs_msg_clone(&s->out[s->n_out++], &rm);
}

/* The region's only voter is this peer. Its commit index is then known to
 * no one else, and a restart recomputes it alone (its own log is the
 * quorum): the commit index need not be durable. With two voters it must
 * be: a peer held in its removal from a region of two goes once it learns
 * the survivor committed the removal, and a survivor restarting with an
 * older commit index would then wait forever for the gone peer's vote
 * (TestConfChangeRecover3B, seed 15861, with commits deferred there). */
static bool sole_voter(const struct rs_peer *p)
{
    return p->initialized && p->region.n_peers == 1 && p->region.peers[0].id == p->peer_id;
}

/* The update whose hard state goes into the raft log: up itself, or a copy
 * in *local without a hard state that moved only the commit index of a
 * sole voter (it waits, lazy_commit), or with the waiting commit index
 * riding along with the entries of a later update. */
static const struct tkv_raft_update *hard_state_to_write(struct rs_peer *p,
                                                         const struct tkv_raft_update *up,
                                                         struct tkv_raft_update *local)
{
    if (up->snapshot) { /* the snapshot point resets what the log holds */
        p->hs_known = false;
        p->lazy_commit = 0;
    }
    bool has_hs = (up->flags & TKV_RAFT_UPDATE_HARD_STATE) != 0;
    if (has_hs && !up->n_entries && !up->snapshot && p->hs_known && sole_voter(p) &&
        up->hard_state.term == p->hs_term && up->hard_state.vote == p->hs_vote &&
        !RS_BUG("commit_hs_eager")) {
        *local = *up;
        local->flags &= ~(uint32_t)TKV_RAFT_UPDATE_HARD_STATE;
        p->lazy_commit = up->hard_state.commit;
        p->s->stats.commit_only_deferred++;
        return local;
    }
    if (!has_hs && up->n_entries && p->lazy_commit) {
        *local = *up;
        local->flags |= TKV_RAFT_UPDATE_HARD_STATE;
        local->hard_state = (struct tkv_raft_hard_state){
            .term = p->hs_term, .vote = p->hs_vote, .commit = p->lazy_commit};
        up = local;
        has_hs = true;
    }
    if (has_hs) {
        p->hs_known = true;
        p->hs_term = up->hard_state.term;
        p->hs_vote = up->hard_state.vote;
        p->lazy_commit = 0;
    }
    return up;
}

/* Handle one update; false: it is held (a snapshot waiting for its
 * checkpoint, see rs_peer.ckpt_wait), not to be advanced yet: called again
 * with the same update once the checkpoint is done. */
static bool handle_update(struct rs_peer *p, const struct tkv_raft_update *up)
{
    struct tkv_raftstore *s = p->s;
    if (up->flags & TKV_RAFT_UPDATE_SOFT_STATE) {
        p->leader_peer_id = up->soft_state.leader;
        p->is_leader = up->soft_state.role == TKV_RAFT_LEADER;
    }
    struct tkv_raft_update local;
    up = hard_state_to_write(p, up, &local);
    /* 1. persistence, staged into this turn's group commit */
    if (up->snapshot) {
        const struct tkv_raft_snapshot *sn = up->snapshot;
        if (!p->snap_in_engine) {
            install_snapshot(p, sn);
            p->snap_in_engine = true;
            /* The raft log must not forget what the engine's durable (old)
             * state replays from before a checkpoint holds the snapshot:
             * the rest of this update waits for one that begins after the
             * write (no checkpoint on the core). */
            if (!RS_BUG("snapshot_log_compacted_before_checkpoint")) {
                p->ckpt_wait = true;
                p->ckpt_wait_seq = rs_ckpt_wait_begin(s);
            }
        }
        if (p->ckpt_wait)
            return false;
        p->snap_in_engine = false;
        (void)tkv_raftlog_compact(s->env.raftlog, p->region.id, sn->index, sn->term, NULL, NULL);
        p->staged_snap = true;
        p->staged_snap_index = sn->index;
    }
    if (up->n_entries || (up->flags & TKV_RAFT_UPDATE_HARD_STATE)) {
        struct tkv_raftlog_entry small[32];
        struct tkv_raftlog_entry *le = up->n_entries <= 32 ? small : tkv_xmalloc(up->n_entries * sizeof(*le));
        for (size_t i = 0; i < up->n_entries; i++) {
            const struct tkv_raft_entry *e = &up->entries[i];
            le[i] = (struct tkv_raftlog_entry){
                .index = e->index, .term = e->term, .type = e->type,
                .data = e->data ? TKV_SLICE(e->data->data, e->data->len) : TKV_SLICE(NULL, 0)};
        }
        struct tkv_raftlog_hardstate hs = {.term = up->hard_state.term, .vote = up->hard_state.vote,
                                           .commit = up->hard_state.commit};
        int rv = tkv_raftlog_append(s->env.raftlog, p->region.id, le, up->n_entries,
                                    (up->flags & TKV_RAFT_UPDATE_HARD_STATE) ? &hs : NULL, NULL, NULL);
        if (up->flags & TKV_RAFT_UPDATE_HARD_STATE)
            p->staged_term = TKV_MAX(p->staged_term, hs.term);
        if (le != small)
            tkv_free(le);
        if (rv < 0) {
            TKV_LOG_FATAL("raft log append failed", TKV_LF_U64("region_id", p->region.id),
                          TKV_LF_ERR(rv));
            abort();
        }
        if (up->n_entries) {
            p->staged_entries = true;
            p->staged_last = up->entries[up->n_entries - 1].index;
            p->staged_last_term = up->entries[up->n_entries - 1].term;
        }
    }
    /* 2. messages wait for this turn's sync */
    for (size_t i = 0; i < up->n_msgs; i++)
        rs_queue_msg(p, &up->msgs[i]);
    /* 3. apply (committed entries are durable locally already) */
    if (up->n_committed)
        apply_committed(p, up->committed, up->n_committed);
    for (size_t i = 0; i < up->n_read_states; i++)
        for (size_t k = 0; k < p->n_reads; k++)
            if (p->reads[k].ctx == up->read_states[i].ctx && !p->reads[k].index)
                p->reads[k].index = TKV_MAX(up->read_states[i].index, 1);
    /* 4. answer */
    serve_reads(p);
    return true;
}

static void turn_synced(void *arg, int rv)
{
    struct rs_turn *t = arg;
    struct tkv_raftstore *s = t->s;
    if (s) {
        struct rs_turn **pp = &s->inflight;
        while (*pp && *pp != t)
            pp = &(*pp)->next;
        if (*pp)
            *pp = t->next;
    }
    if (s && rv == 0) {
        for (size_t i = 0; i < t->n_persist; i++) {
            struct rs_persist *ps = &t->persist[i];
            struct rs_peer *p = rs_peer_get(s, ps->region_id);
            if (!p || p->serial != ps->serial)
                continue;
            if (ps->hs_term > p->synced_term)
                p->synced_term = ps->hs_term;
            struct tkv_raft_event ev;
            if (ps->snap) {
                ev = (struct tkv_raft_event){.type = TKV_RAFT_EV_SNAPSHOT_PERSISTED};
                ev.u.persisted.index = ps->snap_index;
                (void)rs_peer_step(p, &ev);
            }
            if (ps->entries) {
                ev = (struct tkv_raft_event){.type = TKV_RAFT_EV_LOG_PERSISTED};
                ev.u.persisted.index = ps->last;
                ev.u.persisted.term = ps->last_term;
                (void)rs_peer_step(p, &ev);
            }
        }
        for (size_t i = 0; i < t->n_msgs; i++) {
            s->env.send(s->env.ctx, t->msgs[i].to.store_id, &t->msgs[i]);
            s->stats.msgs_sent++;
        }
    } else if (s && rv < 0) {
        TKV_LOG_FATAL("raft log sync failed", TKV_LF_ERR(rv));
        abort();
    }
    for (size_t i = 0; i < t->n_msgs; i++)
        tkv_rs_msg_release(&t->msgs[i]);
    tkv_free(t->msgs);
    tkv_free(t->persist);
    tkv_free(t);
}

bool tkv_raftstore_ready(struct tkv_raftstore *s)
{
    s->dirty = false;
    s->stats.ready_turns++;
    struct rs_turn *t = tkv_xcalloc(1, sizeof(*t));
    size_t cap_persist = 0;
    for (size_t i = 0; i < s->n_peers; i++) {
        struct rs_peer *p = s->peers[i];
        p->staged_entries = p->staged_snap = false;
        p->staged_term = 0;
        if (p->n_pend && !p->destroy_pending)
            flush_proposals(p);
        /* bounded: each advance hands out at most what accumulated */
        for (int round = 0; p->has_up && round < 8 && !p->destroy_pending && !p->ckpt_wait;
             round++) {
            struct tkv_raft_update up = p->up;
            if (!handle_update(p, &up))
                break; /* held for a checkpoint: not advanced */
            tkv_raft_advance(p->raft, &p->up);
            p->has_up = p->up.flags != 0;
        }
        if (p->held_removal && !p->destroy_pending)
            rs_held_removal_step(p);
        if (p->destroy_pending) {
            /* what raft said last (a removed leader's TimeoutNow to its
             * successor) still leaves with this turn */
            for (size_t k = 0; p->has_up && k < p->up.n_msgs; k++)
                rs_queue_msg(p, &p->up.msgs[k]);
            rs_peer_destroy(p);
            i--;
            continue;
        }
        if (p->has_up && !p->ckpt_wait) /* a held update waits for _done, not for us */
            s->dirty = true;
        if (p->staged_entries || p->staged_snap || p->staged_term > p->synced_term) {
            GROW(t->persist, t->n_persist, cap_persist);
            t->persist[t->n_persist++] = (struct rs_persist){
                .region_id = p->region.id, .serial = p->serial, .entries = p->staged_entries,
                .snap = p->staged_snap, .last = p->staged_last, .last_term = p->staged_last_term,
                .snap_index = p->staged_snap_index, .hs_term = p->staged_term};
        }
    }
    /* the engine now holds every region's applied state: a snapshot
     * generation starts here or reads its next bounded piece */
    rs_snapgen_turn(s);
    if (!t->n_persist && !s->n_out) {
        tkv_free(t->persist);
        tkv_free(t);
        return s->dirty;
    }
    t->s = s;
    t->msgs = s->out;
    t->n_msgs = s->n_out;
    s->out = NULL;
    s->n_out = s->cap_out = 0;
    t->next = s->inflight;
    s->inflight = t;
    int rv = tkv_raftlog_sync(s->env.raftlog, turn_synced, t);
    if (rv < 0) {
        TKV_LOG_FATAL("raft log sync refused", TKV_LF_ERR(rv));
        abort();
    }
    return s->dirty;
}

/* ------------------------------------------------------------ checkpoints */

void tkv_raftstore_checkpoint_begin(struct tkv_raftstore *s)
{
    s->ckpt_begun++;
    for (size_t i = 0; i < s->n_peers; i++)
        s->peers[i]->ckpt_applied = s->peers[i]->apply.applied;
}

uint64_t rs_ckpt_wait_begin(struct tkv_raftstore *s)
{
    s->stats.ckpt_requests++;
    if (s->env.request_checkpoint)
        s->env.request_checkpoint(s->env.ctx);
    return s->ckpt_begun + 1;
}

struct rs_removal *rs_removal_get(const struct tkv_raftstore *s, uint64_t region_id)
{
    for (size_t i = 0; i < s->n_removals; i++)
        if (s->removals[i].region_id == region_id)
            return &s->removals[i];
    return NULL;
}

void tkv_raftstore_checkpoint_done(struct tkv_raftstore *s)
{
    for (size_t i = 0; i < s->n_peers; i++) {
        struct rs_peer *p = s->peers[i];
        if (p->initialized)
            p->durable_applied = p->ckpt_applied;
        if (p->ckpt_wait && s->ckpt_begun >= p->ckpt_wait_seq) {
            /* the snapshot is durable in the engine: the held update goes
             * on at the next Ready (raft log compaction, then the rest) */
            p->ckpt_wait = false;
            s->dirty = true;
            s->stats.ckpt_waits_done++;
        }
    }
    /* destroyed peers whose Tombstone is now durable: the raft log may
     * forget them (staged; written with the next group commit) */
    size_t keep = 0;
    for (size_t i = 0; i < s->n_removals; i++) {
        struct rs_removal rm = s->removals[i];
        if (s->ckpt_begun < rm.seq) {
            s->removals[keep++] = rm;
            continue;
        }
        if (tkv_raftlog_remove_region(s->env.raftlog, rm.region_id, NULL, NULL) < 0) {
            TKV_LOG_FATAL("raft log region removal failed", TKV_LF_U64("region_id", rm.region_id));
            abort();
        }
        s->dirty = true;
        s->stats.ckpt_waits_done++;
    }
    s->n_removals = keep;
    (void)tkv_raftlog_purge(s->env.raftlog);
}

/* ------------------------------------------------------------ status */

void tkv_raftstore_region_status(const struct tkv_raftstore *s, uint64_t region_id,
                                 struct tkv_rs_region_status *out)
{
    memset(out, 0, sizeof(*out));
    struct rs_peer *p = rs_peer_get(s, region_id);
    if (!p)
        return;
    struct tkv_raft_status st;
    tkv_raft_status(p->raft, &st);
    out->exists = true;
    out->is_leader = p->is_leader;
    out->peer_id = p->peer_id;
    out->leader_peer_id = p->leader_peer_id;
    out->term = st.hs.term;
    out->applied = p->apply.applied;
    out->commit = st.hs.commit;
    out->first_index = tkv_raftlog_first_index(s->env.raftlog, region_id);
    out->last_index = st.last_index;
    out->truncated_index = p->apply.truncated_index;
    out->durable_applied = p->durable_applied;
    out->region = p->region;
    /* TinyKV's pending peers (reported to the scheduler, whose AddPeer step
     * ends only when the new peer is no longer pending): on the leader, the
     * peers whose log does not reach the truncated index (they need a
     * snapshot) or whose progress is unknown. */
    for (uint32_t i = 0; p->is_leader && i < p->region.n_peers; i++) {
        struct tkv_raft_progress_info pi;
        const struct tkv_rs_peer *q = &p->region.peers[i];
        if (q->id == p->peer_id)
            continue;
        if (tkv_raft_progress(p->raft, q->id, &pi) != 0 || pi.match < p->apply.truncated_index)
            out->pending[out->n_pending++] = *q;
    }
}

void tkv_raftstore_stats(const struct tkv_raftstore *s, struct tkv_raftstore_stats *out)
{
    *out = s->stats;
}

/* ------------------------------------------------------------ multi-raft admin */

/* ------------------------------------------------------------ shared with rs_split.c */

void rs_propose_cmd(struct rs_peer *p, struct rs_buf *b, tkv_rs_done_fn cb, void *arg)
{
    propose_cmd(p, b, cb, arg);
}
