/* Lifecycle, introspection, the outgoing message queue and the update
 * handed to the caller (built from what was produced since the last one). */
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

static void msg_release(struct tkv_raft_msg *m)
{
    raft_entries_unref(m->entries, m->n_entries);
    tkv_free(m->entries);
    if (m->snapshot) {
        tkv_raft_buf_unref(m->snapshot->data);
        tkv_free(m->snapshot);
    }
}

/* Queue m (takes ownership of its entries/snapshot even on failure).
 * Returns false when the message had to be dropped for lack of memory. */
bool raft_send(struct tkv_raft *r, struct tkv_raft_msg m)
{
    m.from = r->id;
    if (m.term == 0 && m.type != TKV_RAFT_MSG_PROPOSE && m.type != TKV_RAFT_MSG_READ_INDEX &&
        m.type != TKV_RAFT_MSG_TRANSFER_LEADER)
        m.term = r->term;
    if (r->n_msgs == r->cap_msgs) {
        size_t cap = r->cap_msgs ? r->cap_msgs * 2 : 8;
        struct tkv_raft_msg *n = tkv_realloc(r->msgs, cap * sizeof(*n));
        if (!n) {
            msg_release(&m);
            r->stats.msgs_dropped_nomem++;
            return false;
        }
        r->msgs = n;
        r->cap_msgs = cap;
    }
    r->msgs[r->n_msgs++] = m;
    return true;
}

void raft_release_update(struct tkv_raft *r)
{
    for (size_t i = 0; i < r->n_out_msgs; i++)
        msg_release(&r->out_msgs[i]);
    r->n_out_msgs = 0;
    raft_entries_unref(r->out_ents, r->n_out_ents);
    r->n_out_ents = 0;
    raft_entries_unref(r->committed_out, r->n_committed_out);
    r->n_committed_out = 0;
    r->n_out_rs = 0;
    tkv_raft_buf_unref(r->out_snap.data);
    memset(&r->out_snap, 0, sizeof(r->out_snap));
    r->outstanding = false;
}

/* Hand out everything produced since the last update (nothing while an
 * update is outstanding: it accumulates for tkv_raft_advance). */
void raft_build_update(struct tkv_raft *r, struct tkv_raft_update *up)
{
    memset(up, 0, sizeof(*up));
    up->soft_state = (struct tkv_raft_soft_state){.leader = r->lead, .role = r->role};
    if (r->outstanding)
        return;
    /* The new entries are copied (with references) because the unstable
     * tail moves under later events. Without memory for the copy, the
     * entries, the hard state and the messages (which may promise them
     * durable) all wait for a later update. */
    tkv_index last = raft_log_last(r);
    if (r->u_reported < r->u_offset)
        r->u_reported = r->u_offset;
    size_t n_new = r->u_reported <= last ? (size_t)(last - r->u_reported + 1) : 0;
    bool defer = false;
    if (n_new > r->cap_out_ents) {
        struct tkv_raft_entry *n = tkv_realloc(r->out_ents, n_new * sizeof(*n));
        if (n) {
            r->out_ents = n;
            r->cap_out_ents = n_new;
        } else {
            defer = true;
        }
    }
    struct tkv_raft_hard_state hs = {.term = r->term, .vote = r->vote, .commit = r->committed};
    if (!defer && memcmp(&hs, &r->prev_hs, sizeof(hs)) != 0) {
        up->flags |= TKV_RAFT_UPDATE_HARD_STATE;
        up->hard_state = hs;
        r->prev_hs = hs;
    }
    struct tkv_raft_soft_state ss = up->soft_state;
    if (ss.leader != r->prev_ss.leader || ss.role != r->prev_ss.role) {
        up->flags |= TKV_RAFT_UPDATE_SOFT_STATE;
        r->prev_ss = ss;
    }
    if (r->conf_changed) {
        up->flags |= TKV_RAFT_UPDATE_CONF_STATE;
        r->conf_changed = false;
    }
    up->conf_state.n_voters = r->n_prs;
    for (uint32_t i = 0; i < r->n_prs; i++)
        up->conf_state.voters[i] = r->prs[i].id;
    if (!defer && r->has_usnap && !r->usnap_reported) {
        r->out_snap = r->usnap;
        tkv_raft_buf_ref(r->out_snap.data);
        up->flags |= TKV_RAFT_UPDATE_SNAPSHOT;
        up->snapshot = &r->out_snap;
        r->usnap_reported = true;
    }
    if (!defer && n_new) {
        const struct tkv_raft_entry *src = raft_ue_at(r, r->u_reported);
        for (size_t i = 0; i < n_new; i++) {
            r->out_ents[i] = src[i];
            tkv_raft_buf_ref(r->out_ents[i].data);
        }
        r->n_out_ents = n_new;
        up->flags |= TKV_RAFT_UPDATE_ENTRIES;
        up->entries = r->out_ents;
        up->n_entries = n_new;
        r->u_reported = last + 1;
    }
    if (!defer && r->n_msgs) {
        struct tkv_raft_msg *m = r->out_msgs;
        size_t cap = r->cap_out_msgs;
        r->out_msgs = r->msgs;
        r->n_out_msgs = r->n_msgs;
        r->cap_out_msgs = r->cap_msgs;
        r->msgs = m;
        r->cap_msgs = cap;
        r->n_msgs = 0;
        up->flags |= TKV_RAFT_UPDATE_MESSAGES;
        up->msgs = r->out_msgs;
        up->n_msgs = r->n_out_msgs;
    }
    tkv_index hi = TKV_MIN(r->committed, raft_persisted_last(r));
    hi = TKV_MIN(hi, r->emitted + RAFT_MAX_COMMITTED_ENTRIES);
    if (r->emitted < hi) {
        size_t want = (size_t)(hi - r->emitted);
        if (want > r->cap_committed_out) {
            struct tkv_raft_entry *n = tkv_realloc(r->committed_out, want * sizeof(*n));
            if (n) {
                r->committed_out = n;
                r->cap_committed_out = want;
            }
        }
        size_t got = 0;
        /* without memory, the entries are handed out by a later update */
        if (want <= r->cap_committed_out &&
            raft_log_fill(r, r->emitted + 1, hi + 1, r->cfg.max_committed_bytes, r->committed_out,
                          &got) == 0 &&
            got > 0) {
            r->n_committed_out = got;
            r->emitted += got;
            up->flags |= TKV_RAFT_UPDATE_COMMITTED;
            up->committed = r->committed_out;
            up->n_committed = got;
        }
    }
    if (r->n_rs) {
        struct tkv_raft_read_state *rs = r->out_rs;
        size_t cap = r->cap_out_rs;
        r->out_rs = r->rs;
        r->n_out_rs = r->n_rs;
        r->cap_out_rs = r->cap_rs;
        r->rs = rs;
        r->cap_rs = cap;
        r->n_rs = 0;
        up->flags |= TKV_RAFT_UPDATE_READ_STATES;
        up->read_states = r->out_rs;
        up->n_read_states = r->n_out_rs;
    }
    r->outstanding = up->flags != 0;
}

int tkv_raft_init(const struct tkv_raft_config *cfg, struct tkv_raft **r_out)
{
    int rv;
    if (!cfg || cfg->id == 0 || cfg->election_tick == 0 || cfg->heartbeat_tick == 0 ||
        cfg->heartbeat_tick >= cfg->election_tick || !cfg->storage.term ||
        !cfg->storage.entries || !cfg->storage.first_index || !cfg->storage.last_index ||
        !cfg->storage.snapshot || !cfg->storage.initial_state)
        return TKV_EINVAL;
    struct tkv_raft *r = tkv_calloc(1, sizeof(*r));
    if (!r)
        return TKV_ENOMEM;
    r->cfg = *cfg;
    r->cfg.peers = NULL;
    r->cfg.n_peers = 0;
    if (r->cfg.max_inflight_msgs == 0)
        r->cfg.max_inflight_msgs = 256;
    r->st = cfg->storage;
    r->id = cfg->id;
    r->rng = cfg->seed ^ (cfg->id * 0x9e3779b97f4a7c15ULL);

    struct tkv_raft_hard_state hs;
    struct tkv_raft_conf_state cs;
    memset(&hs, 0, sizeof(hs));
    memset(&cs, 0, sizeof(cs));
    TKV_ERR(r->st.initial_state(r->st.ctx, &hs, &cs));
    struct tkv_raft_hard_state stored_hs = hs;
    if (cs.n_voters == 0) {
        if (cfg->n_peers > TKV_RAFT_MAX_VOTERS) {
            rv = TKV_EINVAL;
            goto err;
        }
        cs.n_voters = (uint32_t)cfg->n_peers;
        for (size_t i = 0; i < cfg->n_peers; i++)
            cs.voters[i] = cfg->peers[i];
    }
    if (cs.n_voters > TKV_RAFT_MAX_VOTERS) {
        rv = TKV_EINVAL;
        goto err;
    }
    tkv_index first = r->st.first_index(r->st.ctx);
    tkv_index last = r->st.last_index(r->st.ctx);
    if (first == 0 || last + 1 < first || hs.commit > last) {
        rv = TKV_EINVAL;
        goto err;
    }
    /* A crash between persisting a received snapshot and the hard state of
     * the same update leaves hs behind the snapshot. A snapshot holds only
     * committed state, so its index is committed; and nothing of its term
     * was acknowledged (persist before send), so adopting its term without
     * a vote promises nothing new. */
    if (hs.commit + 1 < first) {
        tkv_term snap_term = 0;
        TKV_ERR(r->st.term(r->st.ctx, first - 1, &snap_term));
        hs.commit = first - 1;
        if (hs.term < snap_term) {
            hs.term = snap_term;
            hs.vote = 0;
        }
    }
    r->u_offset = last + 1;
    r->u_reported = r->u_offset;
    r->term = hs.term;
    r->vote = hs.vote;
    r->committed = hs.commit;
    r->applied = TKV_MAX(cfg->applied, first - 1);
    if (r->applied > r->committed) {
        rv = TKV_EINVAL;
        goto err;
    }
    r->emitted = r->applied;
    /* A member that never voted or followed (term 0) acknowledged no lease. */
    r->lease_elapsed = hs.term == 0 ? cfg->election_tick : 0;
    raft_prs_set(r, &cs);
    r->conf_changed = false;
    raft_become_follower(r, r->term, 0);
    r->prev_hs = stored_hs; /* a repaired hard state is written by the first update */
    r->prev_ss = (struct tkv_raft_soft_state){.leader = 0, .role = TKV_RAFT_FOLLOWER};
    *r_out = r;
    return 0;
err:
    tkv_free(r);
    assert(rv != 0);
    return rv;
}

void tkv_raft_close(struct tkv_raft *r)
{
    if (!r)
        return;
    raft_release_update(r);
    for (size_t i = 0; i < r->n_msgs; i++)
        msg_release(&r->msgs[i]);
    raft_entries_unref(r->ue + r->ue_start, r->ue_len);
    tkv_free(r->ue);
    if (r->has_usnap)
        tkv_raft_buf_unref(r->usnap.data);
    for (uint32_t i = 0; i < r->n_prs; i++)
        raft_infl_free_all(&r->prs[i]);
    tkv_free(r->msgs);
    tkv_free(r->out_msgs);
    tkv_free(r->out_ents);
    tkv_free(r->committed_out);
    tkv_free(r->rs);
    tkv_free(r->out_rs);
    tkv_free(r->reads);
    tkv_free(r);
}

void tkv_raft_status(const struct tkv_raft *r, struct tkv_raft_status *st)
{
    memset(st, 0, sizeof(*st));
    st->id = r->id;
    st->hs = (struct tkv_raft_hard_state){.term = r->term, .vote = r->vote, .commit = r->committed};
    st->ss = (struct tkv_raft_soft_state){.leader = r->lead, .role = r->role};
    st->first_index = raft_log_first(r);
    st->last_index = raft_log_last(r);
    st->applied = r->applied;
    st->persisted = raft_persisted_last(r);
    st->lead_transferee = r->lead_transferee;
    st->conf.n_voters = r->n_prs;
    for (uint32_t i = 0; i < r->n_prs; i++)
        st->conf.voters[i] = r->prs[i].id;
}

int tkv_raft_progress(const struct tkv_raft *r, uint64_t id, struct tkv_raft_progress_info *out)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id != id)
            continue;
        out->match = r->prs[i].match;
        out->next = r->prs[i].next;
        out->state = r->prs[i].state;
        out->recent_active = r->prs[i].recent_active;
        return 0;
    }
    return TKV_ENOTFOUND;
}

int tkv_raft_term(struct tkv_raft *r, tkv_index i, tkv_term *term_out)
{
    return raft_log_term(r, i, term_out);
}

uint32_t tkv_raft_randomized_timeout(const struct tkv_raft *r)
{
    return r->randomized_timeout;
}

void tkv_raft_stats(const struct tkv_raft *r, struct tkv_raft_stats *out)
{
    *out = r->stats;
}
