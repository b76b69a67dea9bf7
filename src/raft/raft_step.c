/* Message dispatch: tkv_raft_step's events, term checks and votes common to
 * every role, the leader's and follower's message handling, ticks, and the
 * well-formedness check every received message passes first. */
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

static int step_msg(struct tkv_raft *r, const struct tkv_raft_msg *m);

static int step_leader(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    switch (m->type) {
    case TKV_RAFT_MSG_BEAT:
        raft_bcast_heartbeat(r, raft_new_ctx(r));
        return 0;
    case TKV_RAFT_MSG_PROPOSE: {
        if (m->n_entries == 0)
            return TKV_EINVAL;
        for (size_t i = 0; i < m->n_entries; i++)
            if (m->entries[i].type == TKV_RAFT_ENTRY_CONF_CHANGE)
                return TKV_EINVAL; /* use PROPOSE_CONF_CHANGE */
        return raft_leader_propose(r, m->entries, m->n_entries);
    }
    case TKV_RAFT_MSG_READ_INDEX: {
        int rv = raft_leader_read_index(r, m->from ? m->from : r->id, m->ctx);
        return m->from && m->from != r->id ? 0 : rv;
    }
    case TKV_RAFT_MSG_TRANSFER_LEADER: {
        uint64_t target = m->from;
        struct raft_progress *pr = raft_pr_get(r, target);
        if (!pr)
            return 0;
        if (r->lead_transferee) {
            if (r->lead_transferee == target)
                return 0;
            raft_abort_transfer(r);
        }
        if (target == r->id)
            return 0;
        r->election_elapsed = 0;
        r->lead_transferee = target;
        if (pr->match == raft_log_last(r))
            raft_send_timeout_now(r, target);
        else
            raft_send_append(r, pr, true);
        return 0;
    }
    default:
        break;
    }
    struct raft_progress *pr = raft_pr_get(r, m->from);
    if (!pr)
        return 0;
    switch (m->type) {
    case TKV_RAFT_MSG_APPEND_RESP:
        raft_handle_append_resp(r, m, pr);
        break;
    case TKV_RAFT_MSG_HEARTBEAT_RESP:
        pr->recent_active = true;
        pr->probe_sent = false;
        if (pr->state == PR_REPLICATE && raft_infl_full(r, pr))
            raft_infl_free_first(r, pr);
        if (pr->match < raft_log_last(r) || pr->state == PR_PROBE)
            raft_send_append(r, pr, true);
        if (m->ctx > pr->acked_ctx) {
            pr->acked_ctx = m->ctx;
            raft_advance_reads(r);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int step_follower(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    switch (m->type) {
    case TKV_RAFT_MSG_PROPOSE:
        return TKV_ENOTLEADER;
    case TKV_RAFT_MSG_APPEND:
        r->election_elapsed = 0;
        r->lease_elapsed = 0;
        r->lead = m->from;
        return raft_handle_append(r, m);
    case TKV_RAFT_MSG_HEARTBEAT:
        r->election_elapsed = 0;
        r->lease_elapsed = 0;
        r->lead = m->from;
        raft_handle_heartbeat(r, m);
        return 0;
    case TKV_RAFT_MSG_SNAPSHOT:
        r->election_elapsed = 0;
        r->lease_elapsed = 0;
        r->lead = m->from;
        raft_handle_snapshot(r, m);
        return 0;
    case TKV_RAFT_MSG_TRANSFER_LEADER: {
        if (!r->lead)
            return 0;
        struct tkv_raft_msg f = *m;
        f.to = r->lead;
        f.term = 0;
        f.entries = NULL;
        f.n_entries = 0;
        f.snapshot = NULL;
        uint64_t transferee = m->from;
        if (raft_send(r, f))
            r->msgs[r->n_msgs - 1].from = transferee; /* TinyKV: from = transferee */
        return 0;
    }
    case TKV_RAFT_MSG_TIMEOUT_NOW:
        return raft_hup(r, true);
    case TKV_RAFT_MSG_READ_INDEX: {
        if (m->from && m->from != r->id)
            return 0; /* only local requests are forwarded */
        if (!r->lead)
            return TKV_ENOTLEADER;
        struct tkv_raft_msg f = {.type = TKV_RAFT_MSG_READ_INDEX, .to = r->lead, .ctx = m->ctx};
        return raft_send(r, f) ? 0 : TKV_ENOMEM;
    }
    case TKV_RAFT_MSG_READ_INDEX_RESP:
        return raft_push_read_state(r, m->index, m->ctx);
    default:
        return 0;
    }
}

static int step_msg(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    if (m->term == 0) {
        /* local message */
    } else if (m->term > r->term) {
        if (m->type == TKV_RAFT_MSG_VOTE || m->type == TKV_RAFT_MSG_PRE_VOTE) {
            bool force = m->ctx == TKV_RAFT_CTX_TRANSFER;
            if (!force && raft_in_lease(r))
                return 0; /* Raft thesis 4.2.3: ignore disruptive requests */
        }
        if (m->type == TKV_RAFT_MSG_PRE_VOTE) {
            /* never change term for a pre-vote */
        } else if (m->type == TKV_RAFT_MSG_PRE_VOTE_RESP && !m->reject) {
            /* the term is bumped when a pre-vote quorum is reached */
        } else if (m->type == TKV_RAFT_MSG_APPEND || m->type == TKV_RAFT_MSG_HEARTBEAT ||
                   m->type == TKV_RAFT_MSG_SNAPSHOT) {
            raft_become_follower(r, m->term, m->from);
        } else {
            raft_become_follower(r, m->term, 0);
        }
    } else if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == TKV_RAFT_MSG_HEARTBEAT || m->type == TKV_RAFT_MSG_APPEND)) {
            /* Tell a stale leader about our term so it steps down. */
            struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_APPEND_RESP, .to = m->from};
            raft_send(r, resp);
        } else if (m->type == TKV_RAFT_MSG_PRE_VOTE || m->type == TKV_RAFT_MSG_VOTE) {
            /* Raft paper: reply with our term. A stale candidate whose own
             * voters never contact it (e.g. after a membership change they
             * have not applied) would otherwise never learn it. */
            struct tkv_raft_msg resp = {
                .type = m->type == TKV_RAFT_MSG_VOTE ? TKV_RAFT_MSG_VOTE_RESP
                                                     : TKV_RAFT_MSG_PRE_VOTE_RESP,
                .to = m->from, .term = r->term, .reject = true};
            raft_send(r, resp);
        }
        return 0;
    }

    switch (m->type) {
    case TKV_RAFT_MSG_HUP:
        return raft_hup(r, false);
    case TKV_RAFT_MSG_VOTE:
    case TKV_RAFT_MSG_PRE_VOTE: {
        bool can_vote = r->vote == m->from || (r->vote == 0 && r->lead == 0) ||
                        (m->type == TKV_RAFT_MSG_PRE_VOTE && m->term > r->term);
        uint32_t rt = m->type == TKV_RAFT_MSG_VOTE ? TKV_RAFT_MSG_VOTE_RESP
                                                   : TKV_RAFT_MSG_PRE_VOTE_RESP;
        struct tkv_raft_msg resp = {.type = rt, .to = m->from};
        if (can_vote && raft_is_up_to_date(r, m->index, m->log_term)) {
            resp.term = m->term;
            if (m->type == TKV_RAFT_MSG_VOTE) {
                r->election_elapsed = 0;
                r->vote = m->from;
            }
        } else {
            resp.term = r->term;
            resp.reject = true;
        }
        raft_send(r, resp);
        return 0;
    }
    default:
        break;
    }
    switch (r->role) {
    case TKV_RAFT_LEADER:
        return step_leader(r, m);
    case TKV_RAFT_FOLLOWER:
        return step_follower(r, m);
    default:
        return raft_step_candidate(r, m);
    }
}

static int tick(struct tkv_raft *r)
{
    r->now++;
    if (r->lease_elapsed < UINT32_MAX)
        r->lease_elapsed++;
    if (r->role != TKV_RAFT_LEADER) {
        r->election_elapsed++;
        if (raft_promotable(r) && r->election_elapsed >= r->randomized_timeout) {
            r->election_elapsed = 0;
            struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_HUP, .from = r->id};
            return step_msg(r, &m);
        }
        return 0;
    }
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *pr = &r->prs[i];
        /* A lost snapshot would otherwise park the follower forever. */
        if (pr->state == PR_SNAPSHOT && ++pr->snapshot_ticks >= 2 * r->cfg.election_tick)
            raft_pr_become_probe(pr);
    }
    if (r->election_elapsed >= r->cfg.election_tick) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum) {
            if (!raft_quorum_active(r)) {
                raft_become_follower(r, r->term, 0);
                return 0;
            }
            for (uint32_t i = 0; i < r->n_prs; i++)
                if (r->prs[i].id != r->id)
                    r->prs[i].recent_active = false;
        }
        if (r->lead_transferee)
            raft_abort_transfer(r);
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        raft_bcast_heartbeat(r, raft_new_ctx(r));
    }
    return 0;
}

/* Reject what no correct peer sends, before it can touch the log. */
static bool msg_well_formed(const struct tkv_raft_msg *m)
{
    if (m->type > TKV_RAFT_MSG_READ_INDEX_RESP || m->type == 10)
        return false;
    if (m->n_entries && !m->entries)
        return false;
    if (m->n_entries && m->type != TKV_RAFT_MSG_APPEND && m->type != TKV_RAFT_MSG_PROPOSE)
        return false;
    if (m->type == TKV_RAFT_MSG_APPEND) {
        tkv_term prev = m->log_term;
        for (size_t i = 0; i < m->n_entries; i++) {
            const struct tkv_raft_entry *e = &m->entries[i];
            if (e->index != m->index + 1 + i || e->term < prev)
                return false;
            prev = e->term;
        }
    }
    if (m->type == TKV_RAFT_MSG_SNAPSHOT) {
        if (!m->snapshot || m->snapshot->conf_state.n_voters > TKV_RAFT_MAX_VOTERS)
            return false;
    }
    return true;
}

int tkv_raft_step(struct tkv_raft *r, const struct tkv_raft_event *ev, struct tkv_raft_update *up)
{
    int rv = 0;
    switch (ev->type) {
    case TKV_RAFT_EV_TICK:
        rv = tick(r);
        break;
    case TKV_RAFT_EV_RECEIVE:
        if (!ev->u.msg) {
            rv = TKV_EINVAL;
            break;
        }
        if (!msg_well_formed(ev->u.msg)) {
            rv = TKV_EPROTO;
            break;
        }
        rv = step_msg(r, ev->u.msg);
        /* Refusals matter to a local caller only; a remote sender retries. */
        if (ev->u.msg->from && ev->u.msg->from != r->id && ev->u.msg->type != TKV_RAFT_MSG_TRANSFER_LEADER &&
            (rv == TKV_ENOTLEADER || rv == TKV_EPROPOSALDROPPED || rv == TKV_EBUSY))
            rv = 0;
        break;
    case TKV_RAFT_EV_PROPOSE: {
        size_t n = ev->u.propose.n;
        if (n == 0) {
            rv = TKV_EINVAL;
            break;
        }
        if (r->role != TKV_RAFT_LEADER) {
            rv = TKV_ENOTLEADER;
            break;
        }
        struct tkv_raft_entry small[16];
        struct tkv_raft_entry *tmp = n <= TKV_ARRAY_LEN(small) ? small : tkv_malloc(n * sizeof(*tmp));
        if (!tmp) {
            rv = TKV_ENOMEM;
            break;
        }
        for (size_t i = 0; i < n; i++)
            tmp[i] = (struct tkv_raft_entry){.type = TKV_RAFT_ENTRY_NORMAL,
                                             .data = ev->u.propose.data[i]};
        rv = raft_leader_propose(r, tmp, n);
        if (tmp != small)
            tkv_free(tmp);
        break;
    }
    case TKV_RAFT_EV_PROPOSE_CONF_CHANGE: {
        if (r->role != TKV_RAFT_LEADER) {
            rv = TKV_ENOTLEADER;
            break;
        }
        if (r->pending_conf_index > r->applied) {
            rv = TKV_EBUSY;
            break;
        }
        struct tkv_raft_entry e = {.type = TKV_RAFT_ENTRY_CONF_CHANGE,
                                   .data = ev->u.conf_change_data};
        rv = raft_leader_propose(r, &e, 1);
        if (rv == 0)
            r->pending_conf_index = raft_log_last(r);
        break;
    }
    case TKV_RAFT_EV_TRANSFER_LEADER: {
        struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_TRANSFER_LEADER, .from = ev->u.target};
        rv = step_msg(r, &m);
        break;
    }
    case TKV_RAFT_EV_READ_INDEX: {
        struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_READ_INDEX, .ctx = ev->u.ctx};
        if (r->role == TKV_RAFT_LEADER)
            rv = raft_leader_read_index(r, r->id, ev->u.ctx);
        else if (r->role == TKV_RAFT_FOLLOWER)
            rv = step_follower(r, &m);
        else
            rv = TKV_ENOTLEADER;
        break;
    }
    case TKV_RAFT_EV_LOG_PERSISTED:
        raft_on_persisted(r, ev->u.persisted.index, ev->u.persisted.term);
        break;
    case TKV_RAFT_EV_SNAPSHOT_PERSISTED:
        if (r->has_usnap && r->usnap_reported && r->usnap.index == ev->u.persisted.index) {
            tkv_raft_buf_unref(r->usnap.data);
            r->usnap.data = NULL;
            r->has_usnap = false;
            if (r->applied < r->usnap.index)
                r->applied = r->usnap.index;
        }
        break;
    case TKV_RAFT_EV_APPLIED:
        if (ev->u.applied > r->applied)
            r->applied = ev->u.applied;
        break;
    case TKV_RAFT_EV_APPLY_CONF_CHANGE:
        rv = raft_apply_conf_change(r, ev->u.conf_change.change_type, ev->u.conf_change.node_id);
        break;
    case TKV_RAFT_EV_REPORT_UNREACHABLE:
    case TKV_RAFT_EV_REPORT_SNAPSHOT:
        raft_report(r, ev->type, ev->u.report.node, ev->u.report.failed);
        break;
    default:
        rv = TKV_EINVAL;
        break;
    }
    raft_build_update(r, up);
    return rv;
}

void tkv_raft_advance(struct tkv_raft *r, struct tkv_raft_update *up)
{
    raft_release_update(r);
    raft_build_update(r, up);
}
