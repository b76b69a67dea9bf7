/* Conf change (TINYKV-API.md 2.11) and the peer lifecycle (2.14): the
 * ChangePeer proposal and its apply, destroying a removed peer (data range,
 * raft log, Tombstone region state), gc messages, tombstoned regions,
 * stale senders and newer peer ids on receive. */
#include <stdlib.h>
#include <string.h>

#include "rs_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/raftlog.h"

/* a is older than b in either dimension (TiKV is_epoch_stale) */
static bool epoch_stale(const struct tkv_rs_epoch *a, const struct tkv_rs_epoch *b)
{
    return a->conf_ver < b->conf_ver || a->version < b->version;
}

static bool is_vote(const struct tkv_raft_msg *m)
{
    return m->type == TKV_RAFT_MSG_VOTE || m->type == TKV_RAFT_MSG_PRE_VOTE;
}

/* Only a vote or the leader's first heartbeat (commit 0) creates a peer. */
static bool is_initial_msg(const struct tkv_raft_msg *m)
{
    return is_vote(m) || (m->type == TKV_RAFT_MSG_HEARTBEAT && m->commit == 0);
}

void rs_region_changed(struct tkv_raftstore *s, const struct tkv_rs_region *rg, bool removed)
{
    if (s->env.region_changed)
        s->env.region_changed(s->env.ctx, rg, NULL, removed);
}

/* ------------------------------------------------------------ propose */

static void encode_change(struct rs_buf *b, const struct tkv_rs_region *rg, uint32_t type,
                          struct tkv_rs_peer peer)
{
    rs_cmd_header(b, RS_CMD_CHANGE_PEER, rg);
    rs_buf_u8(b, (uint8_t)type);
    rs_buf_u64(b, peer.id);
    rs_buf_u64(b, peer.store_id);
}

void tkv_raftstore_change_peer(struct tkv_raftstore *s, uint64_t region_id,
                               const struct tkv_rs_epoch *epoch, uint32_t change_type,
                               struct tkv_rs_peer peer, tkv_rs_done_fn cb, void *arg)
{
    if ((change_type != TKV_RS_ADD_PEER && change_type != TKV_RS_REMOVE_PEER) || peer.id == 0 ||
        (change_type == TKV_RS_ADD_PEER && peer.store_id == 0)) {
        rs_answer(cb, arg, TKV_EINVAL);
        return;
    }
    struct rs_peer *p = rs_peer_get(s, region_id);
    if (!p || !p->initialized) {
        rs_answer_kind(cb, arg, TKV_RS_REGION_NOT_FOUND, NULL, region_id);
        return;
    }
    if (!p->is_leader) {
        rs_answer_kind(cb, arg, TKV_RS_NOT_LEADER, p, region_id);
        return;
    }
    /* The scheduler resends an operator on every heartbeat until it sees
     * the change: one already applied is answered as done. */
    const struct tkv_rs_peer *cur = rs_region_peer_by_id(&p->region, peer.id);
    if (change_type == TKV_RS_ADD_PEER && cur) {
        rs_answer(cb, arg, cur->store_id == peer.store_id ? 0 : TKV_EINVAL);
        return;
    }
    if (change_type == TKV_RS_REMOVE_PEER && !cur) {
        rs_answer(cb, arg, 0);
        return;
    }
    if (epoch && epoch->conf_ver != p->region.epoch.conf_ver) {
        rs_answer_kind(cb, arg, TKV_RS_EPOCH_NOT_MATCH, p, region_id);
        return;
    }
    if (change_type == TKV_RS_ADD_PEER &&
        (rs_region_peer_on_store(&p->region, peer.store_id) || p->region.n_peers == TKV_RS_MAX_PEERS)) {
        /* one peer of a region per store */
        rs_answer(cb, arg, TKV_EINVAL);
        return;
    }
    if (change_type == TKV_RS_REMOVE_PEER) {
        if ((peer.store_id && cur->store_id != peer.store_id) || p->region.n_peers == 1) {
            rs_answer(cb, arg, TKV_EINVAL);
            return;
        }
        if (peer.id == p->peer_id && p->region.n_peers == 2) {
            /* A leader of two that removes itself leaves the other peer
             * unable to win an election until it learns the removal
             * committed (its config still counts us, and we are gone).
             * Hand leadership over first; the scheduler's retry reaches
             * the new leader, for which this is an ordinary removal. */
            const struct tkv_rs_peer *other =
                &p->region.peers[p->region.peers[0].id == p->peer_id ? 1 : 0];
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TRANSFER_LEADER, .u.target = other->id};
            (void)rs_peer_step(p, &ev);
            struct tkv_rs_region_error e;
            rs_rerr_init(&e, TKV_RS_NOT_LEADER, region_id);
            e.leader = *other;
            rs_answer_region_error(cb, arg, &e);
            return;
        }
    }
    if (p->n_props + p->n_pend + p->n_reads >= s->cfg.max_pending_per_region) {
        rs_answer_kind(cb, arg, TKV_RS_SERVER_BUSY, p, region_id);
        return;
    }
    struct rs_buf b = {0};
    encode_change(&b, &p->region, change_type, peer);
    struct tkv_raft_buf *d = NULL;
    int rv = tkv_raft_buf_copy(b.p, b.len, &d);
    rs_buf_free(&b);
    if (rv < 0) {
        rs_answer(cb, arg, rv);
        return;
    }
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE_CONF_CHANGE, .u.conf_change_data = d};
    rv = rs_peer_step(p, &ev);
    tkv_raft_buf_unref(d);
    if (rv < 0) {
        /* EBUSY: another conf change is not applied yet; EPROPOSALDROPPED:
         * a leader transfer is under way. Both: retry later. */
        uint32_t kind = rv == TKV_ENOTLEADER                                  ? TKV_RS_NOT_LEADER
                        : rv == TKV_EBUSY || rv == TKV_EPROPOSALDROPPED ? TKV_RS_SERVER_BUSY
                                                                             : TKV_RS_STALE_COMMAND;
        rs_answer_kind(cb, arg, kind, p, region_id);
        return;
    }
    struct tkv_raft_status st;
    tkv_raft_status(p->raft, &st);
    GROW(p->props, p->n_props, p->cap_props);
    p->props[p->n_props++] =
        (struct rs_proposal){.index = st.last_index, .term = st.hs.term, .cb = cb, .arg = arg};
    s->stats.proposals++;
}

/* ------------------------------------------------------------ apply */

void rs_apply_conf_change(struct rs_peer *p, const struct tkv_raft_entry *e,
                          struct tkv_engine_batch *b, struct rs_apply_result *res)
{
    struct tkv_raftstore *s = p->s;
    if (!e->data)
        return; /* an empty conf change: nothing to do */
    struct rs_rd r = {e->data->data, e->data->len, 0};
    uint8_t kind, type;
    uint64_t region_id, id, store_id;
    struct tkv_rs_epoch ep;
    if (!rs_cmd_decode_header(&r, &kind, &region_id, &ep) || kind != RS_CMD_CHANGE_PEER ||
        region_id != p->region.id || !rs_rd_u8(&r, &type) || !rs_rd_u64(&r, &id) ||
        !rs_rd_u64(&r, &store_id) || r.off != r.len ||
        (type != TKV_RS_ADD_PEER && type != TKV_RS_REMOVE_PEER) || id == 0) {
        TKV_LOG_WARN("undecodable conf change skipped", TKV_LF_U64("region_id", p->region.id),
                     TKV_LF_U64("index", e->index));
        res->rv = TKV_ECORRUPT;
        return;
    }
    /* Proposed against another membership (two leaders proposed, or a
     * duplicate): it must not apply twice. */
    if (ep.conf_ver != p->region.epoch.conf_ver) {
        res->has_rerr = true;
        rs_rerr_init(&res->rerr, TKV_RS_EPOCH_NOT_MATCH, p->region.id);
        res->rerr.n_current = 1;
        res->rerr.current[0] = p->region;
        return;
    }
    struct tkv_rs_region *rg = &p->region;
    const struct tkv_rs_peer *cur = rs_region_peer_by_id(rg, id);
    if (type == TKV_RS_ADD_PEER) {
        if (cur)
            return; /* already a member: done */
        if (rs_region_peer_on_store(rg, store_id) || rg->n_peers == TKV_RS_MAX_PEERS ||
            store_id == 0) {
            res->rv = TKV_EINVAL;
            return;
        }
        rg->peers[rg->n_peers++] = (struct tkv_rs_peer){.id = id, .store_id = store_id};
    } else {
        if (!cur)
            return; /* already gone */
        if (id == p->peer_id && rg->n_peers == 2 && !RS_BUG("two_peer_removal_not_held")) {
            /* Our removal from a region of two: the other peer counts us
             * in every quorum until it learns this entry is committed. If
             * we committed it as leader and vanished, our last messages
             * lost, it could never be elected. Hold it (apply_committed
             * applies nothing from here) until it knows. */
            struct tkv_raft_status st;
            tkv_raft_status(p->raft, &st);
            p->held_removal = e->index;
            p->held_last = st.last_index;
            TKV_LOG_INFO("own removal from a region of two held", TKV_LF_U64("region_id", rg->id),
                         TKV_LF_U64("peer_id", p->peer_id), TKV_LF_U64("index", e->index),
                         TKV_LF_U64("last_index", st.last_index));
            return;
        }
        size_t at = (size_t)(cur - rg->peers);
        memmove(&rg->peers[at], &rg->peers[at + 1], (rg->n_peers - at - 1) * sizeof(rg->peers[0]));
        rg->n_peers--;
        memset(&rg->peers[rg->n_peers], 0, sizeof(rg->peers[0]));
    }
    if (!RS_BUG("conf_change_keeps_conf_ver"))
        rg->epoch.conf_ver++;
    bool self_removed = type == TKV_RS_REMOVE_PEER && id == p->peer_id &&
                        !RS_BUG("removed_peer_not_destroyed");
    if (self_removed)
        p->destroy_pending = true; /* the Tombstone is written by rs_peer_destroy */
    else
        rs_write_region_state(p, b);
    /* after the region edit: raft's first append to a new peer needs its
     * address in the region */
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLY_CONF_CHANGE};
    ev.u.conf_change.change_type =
        type == TKV_RS_ADD_PEER ? TKV_RAFT_CONF_ADD_NODE : TKV_RAFT_CONF_REMOVE_NODE;
    ev.u.conf_change.node_id = id;
    (void)rs_peer_step(p, &ev);
    if (!self_removed)
        rs_region_changed(s, rg, false);
}

void rs_held_removal_step(struct rs_peer *p)
{
    struct tkv_raft_status st;
    tkv_raft_status(p->raft, &st);
    if (st.ss.role != TKV_RAFT_LEADER && st.hs.commit > p->held_last) {
        /* a later leader committed an entry of its own term after our
         * removal: it knows the removal is committed and applies it
         * without us. Apply it here too (the Tombstone keeps the region
         * without us) and go. */
        struct tkv_rs_region *rg = &p->region;
        const struct tkv_rs_peer *cur = rs_region_peer_by_id(rg, p->peer_id);
        if (cur) {
            size_t at = (size_t)(cur - rg->peers);
            memmove(&rg->peers[at], &rg->peers[at + 1],
                    (rg->n_peers - at - 1) * sizeof(rg->peers[0]));
            rg->n_peers--;
            memset(&rg->peers[rg->n_peers], 0, sizeof(rg->peers[0]));
            rg->epoch.conf_ver++;
        }
        p->destroy_pending = true;
        return;
    }
    const struct tkv_rs_peer *other = NULL;
    for (uint32_t i = 0; i < p->region.n_peers && !other; i++)
        if (p->region.peers[i].id != p->peer_id)
            other = &p->region.peers[i];
    if (!other)
        return;
    if (st.ss.role != TKV_RAFT_LEADER) {
        /* Raft does not campaign over a committed, unapplied conf change,
         * so a peer that applied our removal and stopped talking to us
         * would never hear from us again: ask it (a pre-vote changes no
         * state; from a sender it removed it earns a gc message, 2.14). */
        struct tkv_raftstore *s = p->s;
        if (s->ticks < p->held_probe_tick)
            return;
        p->held_probe_tick = s->ticks + s->cfg.election_tick;
        tkv_term last_term = 0;
        (void)tkv_raft_term(p->raft, st.last_index, &last_term);
        struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_PRE_VOTE,
                                 .to = other->id,
                                 .from = p->peer_id,
                                 .term = st.hs.term + 1,
                                 .log_term = last_term,
                                 .index = st.last_index};
        rs_queue_msg(p, &m);
        s->dirty = true;
        return;
    }
    if (st.lead_transferee == 0) {
        /* we lead a region we are leaving: the other peer takes over
         * (then commits an entry of its term, which releases us) */
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TRANSFER_LEADER, .u.target = other->id};
        (void)rs_peer_step(p, &ev);
    }
}

/* ------------------------------------------------------------ destroy */

/* start-of-range order; end_len 0 = +infinity */
static int region_start_cmp(const void *x, const void *y)
{
    const struct tkv_rs_region *a = *(const struct tkv_rs_region *const *)x;
    const struct tkv_rs_region *b = *(const struct tkv_rs_region *const *)y;
    return rs_bytes_cmp(a->start, a->start_len, b->start, b->start_len);
}

/* DEFAULT and WRITE (EncodeKey / raw keys: the raw range is exact); the
 * LOCK CF goes by its own rule (rs_lockcf.c). */
static void delete_range(struct tkv_engine_batch *b, const uint8_t *lo, uint32_t lo_len,
                         const uint8_t *hi, uint32_t hi_len)
{
    for (int c = 0; c < 3; c++)
        if ((rs_data_cfs[c] != TKV_CF_LOCK || RS_BUG("lock_cf_raw_bounds")) &&
            tkv_engine_batch_delete_range(b, rs_data_cfs[c], TKV_SLICE(lo, lo_len),
                                          TKV_SLICE(hi, hi_len)) < 0)
            rs_fatal_engine(TKV_EENGINE);
}

/* Delete rg's range in the data CFs except the parts that another
 * initialized region of the store owns (a stale peer's range may have been
 * split off to a region this store serves). */
static void delete_unowned(struct tkv_raftstore *s, const struct tkv_rs_region *rg,
                           struct tkv_engine_batch *b)
{
    const struct tkv_rs_region **own = tkv_xmalloc((s->n_peers + 1) * sizeof(*own));
    size_t n = 0;
    for (size_t i = 0; i < s->n_peers; i++) {
        const struct tkv_rs_region *o = &s->peers[i]->region;
        if (!s->peers[i]->initialized || o->id == rg->id)
            continue;
        bool before_end = rg->end_len == 0 || rs_bytes_cmp(o->start, o->start_len, rg->end, rg->end_len) < 0;
        bool after_start = o->end_len == 0 || rs_bytes_cmp(o->end, o->end_len, rg->start, rg->start_len) > 0;
        if (before_end && after_start)
            own[n++] = o;
    }
    qsort(own, n, sizeof(*own), region_start_cmp);
    const uint8_t *cur = rg->start;
    uint32_t cur_len = rg->start_len;
    bool at_end = false;
    for (size_t i = 0; i < n && !at_end; i++) {
        const struct tkv_rs_region *o = own[i];
        if (rs_bytes_cmp(o->start, o->start_len, cur, cur_len) > 0)
            delete_range(b, cur, cur_len, o->start, o->start_len);
        if (o->end_len == 0) {
            at_end = true;
        } else if (rs_bytes_cmp(o->end, o->end_len, cur, cur_len) > 0) {
            cur = o->end;
            cur_len = o->end_len;
        }
    }
    if (!at_end && (rg->end_len == 0 || rs_bytes_cmp(cur, cur_len, rg->end, rg->end_len) < 0))
        delete_range(b, cur, cur_len, rg->end, rg->end_len);
    tkv_free(own);
}

/* Reads: RegionNotFound (they had no effect). Writes still in flight were
 * proposed after the entry that removed us and may yet commit on the other
 * peers: their outcome is unknown (TKV_ESHUTDOWN), never a region error,
 * which promises the write will not apply. */
static void fail_pending(struct rs_peer *p)
{
    for (size_t i = 0; i < p->n_props; i++) {
        if (RS_BUG("pending_writes_answered_region_not_found"))
            rs_answer_kind(p->props[i].cb, p->props[i].arg, TKV_RS_REGION_NOT_FOUND, NULL,
                           p->region.id);
        else
            rs_answer(p->props[i].cb, p->props[i].arg, TKV_ESHUTDOWN);
    }
    p->n_props = 0;
    /* detached: an answer may start a new request (it finds no peer) */
    struct rs_read *reads = p->reads;
    size_t n = p->n_reads;
    p->reads = NULL;
    p->n_reads = p->cap_reads = 0;
    for (size_t i = 0; i < n; i++) {
        rs_answer_kind(reads[i].cb, reads[i].arg, TKV_RS_REGION_NOT_FOUND, NULL, p->region.id);
        tkv_free(reads[i].key);
    }
    tkv_free(reads);
}

void rs_peer_destroy(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    struct tkv_rs_region rg = p->region;
    for (size_t i = 0; i < s->n_peers; i++) {
        if (s->peers[i] == p) {
            memmove(&s->peers[i], &s->peers[i + 1], (s->n_peers - i - 1) * sizeof(s->peers[0]));
            s->n_peers--;
            break;
        }
    }
    fail_pending(p);
    bool log_now = true;
    if (p->initialized) {
        /* One engine batch: the data, the apply state, the Tombstone (with
         * the region as we last knew it: messages from its epoch or older
         * are stale). Durable only with the next checkpoint, and the raft
         * log forgets the region only then (tkv_raftstore_checkpoint_done),
         * so a crash never leaves a live region state without its log; a
         * crash before the checkpoint brings the region back, which
         * replays the removal from the log (or is told again). */
        struct tkv_engine_batch b;
        tkv_engine_batch_init(&b);
        delete_unowned(s, &rg, &b);
        /* the LOCK CF: the keys this region manages here (rs_lockcf.c);
         * keys other initialized regions hold in EncodeBytes form stay */
        if (!RS_BUG("lock_cf_raw_bounds") && rs_delete_region_locks(s, &rg, &b) < 0)
            rs_fatal_engine(TKV_EENGINE);
        uint8_t k[RS_META_KEY_LEN];
        rs_key_apply_state(k, rg.id);
        int rv = tkv_engine_batch_delete(&b, TKV_CF_META, TKV_SLICE(k, sizeof(k)));
        struct rs_buf v = {0};
        rs_buf_u8(&v, RS_REGION_TOMBSTONE);
        rs_encode_region(&v, &rg);
        rs_key_region_state(k, rg.id);
        if (rv == 0)
            rv = tkv_engine_batch_put(&b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
        rs_buf_free(&v);
        if (rv == 0)
            rv = tkv_engine_write(s->sess, &b);
        tkv_engine_batch_close(&b);
        if (rv < 0)
            rs_fatal_engine(rv);
        if (!RS_BUG("destroy_log_removed_before_checkpoint")) {
            GROW(s->removals, s->n_removals, s->cap_removals);
            s->removals[s->n_removals++] = (struct rs_removal){
                .region_id = rg.id, .durable_applied = p->durable_applied};
            s->removals[s->n_removals - 1].seq = rs_ckpt_wait_begin(s);
            log_now = false;
        }
    }
    /* an uninitialized peer has nothing in the engine: only its hard state
     * goes */
    if (log_now && tkv_raftlog_remove_region(s->env.raftlog, rg.id, NULL, NULL) < 0) {
        TKV_LOG_FATAL("raft log region removal failed", TKV_LF_U64("region_id", rg.id));
        abort();
    }
    s->dirty = true;
    s->stats.peers_destroyed++;
    TKV_LOG_INFO("peer destroyed", TKV_LF_U64("region_id", rg.id), TKV_LF_U64("peer_id", p->peer_id),
                 TKV_LF_U64("conf_ver", rg.epoch.conf_ver));
    bool was_initialized = p->initialized;
    rs_peer_free(p);
    if (was_initialized)
        rs_region_changed(s, &rg, true);
}

/* ------------------------------------------------------------ receive */

/* The region's state in the engine is a Tombstone: *out = its region. */
static bool read_tombstone(struct tkv_raftstore *s, uint64_t region_id, struct tkv_rs_region *out)
{
    uint8_t k[RS_META_KEY_LEN];
    struct tkv_slice v;
    rs_key_region_state(k, region_id);
    if (tkv_engine_get(s->sess, TKV_CF_META, TKV_SLICE(k, sizeof(k)), &v) < 0)
        return false;
    struct rs_rd r = {v.ptr, v.len, 0};
    uint8_t state;
    return rs_rd_u8(&r, &state) && state == RS_REGION_TOMBSTONE && rs_decode_region(&r, out);
}

/* The raft log still shows a removed incarnation of the region (its
 * removal is staged but not written yet). */
static bool raftlog_has_region(struct tkv_raftstore *s, uint64_t region_id)
{
    /* An uninitialized peer lost in a crash leaves only its hard state
     * (term, vote): the peer re-created here reads it back (its vote is
     * kept). Entries or a compaction point are a destroyed initialized
     * incarnation whose removal is not written yet. */
    return tkv_raftlog_last_index(s->env.raftlog, region_id) != 0 ||
           tkv_raftlog_first_index(s->env.raftlog, region_id) != 1;
}

/* Tell the sender of m it was removed (TINYKV-API.md 2.14), leaving with
 * this turn's messages. */
static void send_gc(struct tkv_raftstore *s, const struct tkv_rs_msg *m, const struct tkv_rs_epoch *ours)
{
    if (RS_BUG("stale_voter_not_told"))
        return;
    struct tkv_rs_msg gc = {.region_id = m->region_id,
                            .from = m->to,
                            .to = m->from,
                            .epoch = *ours,
                            .is_tombstone = true,
                            .msg = {.type = TKV_RAFT_MSG_HEARTBEAT, .to = m->from.id, .from = m->to.id}};
    GROW(s->out, s->n_out, s->cap_out);
    tkv_rs_msg_clone(&s->out[s->n_out++], &gc);
    s->dirty = true;
    s->stats.gc_msgs_sent++;
}

static struct rs_peer *dropped(struct tkv_raftstore *s)
{
    s->stats.msgs_dropped++;
    return NULL;
}

void rs_tombstone_cleanup(struct tkv_raftstore *s, uint64_t region_id)
{
    if (raftlog_has_region(s, region_id) &&
        tkv_raftlog_remove_region(s->env.raftlog, region_id, NULL, NULL) < 0)
        TKV_LOG_ERROR("raft log region removal failed", TKV_LF_U64("region_id", region_id));
}

struct rs_peer *rs_route_msg(struct tkv_raftstore *s, const struct tkv_rs_msg *m)
{
    struct rs_peer *p = rs_peer_get(s, m->region_id);
    if (m->is_tombstone) {
        /* "you were removed": only the very peer, and only if the
         * sender's region is newer than ours (it was built by the
         * committed conf changes that removed us) */
        if (!p || p->peer_id != m->to.id || !epoch_stale(&p->region.epoch, &m->epoch))
            return dropped(s);
        rs_peer_destroy(p);
        return NULL;
    }
    if (p) {
        if (m->to.id < p->peer_id)
            return dropped(s); /* for an older incarnation of our peer */
        if (m->to.id == p->peer_id) {
            /* a stale sender: removed from our region before our epoch */
            if (p->initialized && epoch_stale(&m->epoch, &p->region.epoch) &&
                !rs_region_peer_on_store(&p->region, m->from.store_id)) {
                if (is_vote(&m->msg))
                    send_gc(s, m, &p->region.epoch);
                return dropped(s);
            }
            return p;
        }
        /* A newer peer of the region was added on this store, which the
         * group can only do after a committed removal of ours: we are
         * stale. Replace us. */
        rs_peer_destroy(p);
        p = NULL;
    }
    struct tkv_rs_region tomb;
    if (read_tombstone(s, m->region_id, &tomb) &&
        (m->epoch.conf_ver <= tomb.epoch.conf_ver || m->epoch.version < tomb.epoch.version)) {
        /* for the peer this store already destroyed */
        if (is_vote(&m->msg) && !rs_region_peer_on_store(&tomb, m->from.store_id))
            send_gc(s, m, &tomb.epoch);
        return dropped(s);
    }
    /* (2.14's range overlap: a snapshot overlapping another region of the
     * store is refused on receive, see rs_split.c) */
    if (!is_initial_msg(&m->msg) || raftlog_has_region(s, m->region_id) ||
        rs_removal_get(s, m->region_id))
        return dropped(s);
    struct tkv_rs_region rg;
    memset(&rg, 0, sizeof(rg));
    rg.id = m->region_id;
    p = rs_peer_new(s, &rg, m->to.id, false);
    if (rs_peer_start_raft(p) < 0) {
        tkv_free(p);
        return dropped(s);
    }
    rs_store_add_peer(s, p);
    return p;
}
