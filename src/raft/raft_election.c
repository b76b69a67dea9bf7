/* Elections: roles and their transitions, the randomized timeout, pre-vote
 * and vote counting, campaigns, check-quorum and the leader lease a voter
 * honours (in_lease), the candidate's message handling. */
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

static uint64_t rng_next(struct tkv_raft *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void reset_randomized_timeout(struct tkv_raft *r)
{
    uint32_t et = r->cfg.election_tick;
    r->randomized_timeout = et + (uint32_t)(rng_next(r) % et);
}

static void reset(struct tkv_raft *r, tkv_term term)
{
    if (r->term != term) {
        r->term = term;
        r->vote = 0;
    }
    r->lead = 0;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    reset_randomized_timeout(r);
    r->lead_transferee = 0;
    raft_drop_reads(r);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *pr = &r->prs[i];
        raft_infl_free_all(pr);
        pr->match = 0;
        pr->next = raft_log_last(r) + 1;
        pr->state = PR_PROBE;
        pr->probe_sent = false;
        pr->recent_active = false;
        pr->vote = VOTE_NONE;
        pr->pending_snapshot = 0;
        pr->acked_ctx = 0;
        pr->sent_commit = 0;
    }
}

void raft_become_follower(struct tkv_raft *r, tkv_term term, uint64_t lead)
{
    reset(r, term);
    r->role = TKV_RAFT_FOLLOWER;
    r->lead = lead;
}

static void become_pre_candidate(struct tkv_raft *r)
{
    /* Term and vote untouched: a failed pre-vote disturbs nobody. */
    tkv_term t = r->term;
    reset(r, t);
    r->role = TKV_RAFT_PRE_CANDIDATE;
}

static void become_candidate(struct tkv_raft *r)
{
    reset(r, r->term + 1);
    r->vote = r->id;
    r->role = TKV_RAFT_CANDIDATE;
}

/* Precondition: ue has room for one more entry (the no-op). */
static void become_leader(struct tkv_raft *r)
{
    reset(r, r->term);
    r->role = TKV_RAFT_LEADER;
    r->lead = r->id;
    r->lease_broken = false;
    struct raft_progress *self = raft_pr_get(r, r->id);
    if (self) {
        self->recent_active = true;
        raft_pr_maybe_update(self, raft_persisted_last(r));
        self->state = PR_REPLICATE;
    }
    r->pending_conf_index = raft_log_last(r);
    struct tkv_raft_entry noop = {.term = r->term, .index = raft_log_last(r) + 1};
    int rv = raft_log_append(r, &noop, 1);
    tkv_assert(rv == 0);
}

static int poll(struct tkv_raft *r, uint64_t id, bool granted)
{
    struct raft_progress *pr = raft_pr_get(r, id);
    if (pr && pr->vote == VOTE_NONE)
        pr->vote = granted ? VOTE_GRANTED : VOTE_REJECTED;
    uint32_t g = 0, rej = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].vote == VOTE_GRANTED)
            g++;
        else if (r->prs[i].vote == VOTE_REJECTED)
            rej++;
    }
    if (g >= raft_quorum(r))
        return 1;
    if (rej >= raft_quorum(r))
        return -1;
    return 0;
}

static int campaign(struct tkv_raft *r, bool pre, bool transfer)
{
    uint32_t vote_type;
    tkv_term term;
    if (pre) {
        become_pre_candidate(r);
        vote_type = TKV_RAFT_MSG_PRE_VOTE;
        term = r->term + 1;
    } else {
        /* Reserve the no-op now so winning can never fail. */
        TKV_RET(raft_ue_reserve(r, 1));
        become_candidate(r);
        vote_type = TKV_RAFT_MSG_VOTE;
        term = r->term;
    }
    if (poll(r, r->id, true) == 1) {
        if (pre)
            return campaign(r, false, transfer);
        become_leader(r);
        return 0;
    }
    tkv_index li = raft_log_last(r);
    tkv_term lt = raft_last_term(r);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == r->id)
            continue;
        struct tkv_raft_msg m = {
            .type = vote_type,
            .to = r->prs[i].id,
            .term = term,
            .index = li,
            .log_term = lt,
            .ctx = transfer ? TKV_RAFT_CTX_TRANSFER : 0,
        };
        raft_send(r, m);
    }
    return 0;
}

/* A committed-but-unapplied conf change means our voter set may be stale:
 * do not campaign on it (etcd). Memory failure counts as "maybe". */
static bool has_unapplied_conf_change(struct tkv_raft *r)
{
    tkv_index lo = TKV_MAX(r->applied + 1, raft_log_first(r));
    if (lo > r->committed)
        return false;
    struct tkv_raft_entry *e;
    size_t n;
    tkv_index i = lo;
    while (i <= r->committed) {
        if (raft_log_slice(r, i, r->committed + 1, 0, &e, &n) < 0)
            return true;
        bool found = false;
        for (size_t k = 0; k < n; k++)
            found |= e[k].type == TKV_RAFT_ENTRY_CONF_CHANGE;
        raft_entries_unref(e, n);
        tkv_free(e);
        if (found)
            return true;
        if (n == 0)
            break;
        i += n;
    }
    return false;
}

int raft_hup(struct tkv_raft *r, bool transfer)
{
    if (r->role == TKV_RAFT_LEADER || !raft_promotable(r))
        return 0;
    if (has_unapplied_conf_change(r))
        return 0;
    if (r->cfg.pre_vote && !transfer)
        return campaign(r, true, false);
    return campaign(r, false, transfer);
}

bool raft_quorum_active(struct tkv_raft *r)
{
    uint32_t act = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == r->id || r->prs[i].recent_active)
            act++;
    return act >= raft_quorum(r);
}

int raft_step_candidate(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    uint32_t my_resp = r->role == TKV_RAFT_PRE_CANDIDATE ? TKV_RAFT_MSG_PRE_VOTE_RESP
                                                         : TKV_RAFT_MSG_VOTE_RESP;
    switch (m->type) {
    case TKV_RAFT_MSG_PROPOSE:
    case TKV_RAFT_MSG_READ_INDEX:
        return TKV_ENOTLEADER;
    case TKV_RAFT_MSG_APPEND:
        raft_become_follower(r, m->term, m->from);
        r->lease_elapsed = 0;
        return raft_handle_append(r, m);
    case TKV_RAFT_MSG_HEARTBEAT:
        raft_become_follower(r, m->term, m->from);
        r->lease_elapsed = 0;
        raft_handle_heartbeat(r, m);
        return 0;
    case TKV_RAFT_MSG_SNAPSHOT:
        raft_become_follower(r, m->term, m->from);
        r->lease_elapsed = 0;
        raft_handle_snapshot(r, m);
        return 0;
    default:
        break;
    }
    if (m->type != my_resp)
        return 0;
    if (r->role == TKV_RAFT_CANDIDATE)
        TKV_RET(raft_ue_reserve(r, 1)); /* winning appends the no-op */
    int res = poll(r, m->from, !m->reject);
    if (res == 1) {
        if (r->role == TKV_RAFT_PRE_CANDIDATE)
            return campaign(r, false, false);
        become_leader(r);
        raft_bcast_append(r);
    } else if (res == -1) {
        raft_become_follower(r, r->term, 0);
    }
    return 0;
}

bool raft_in_lease(const struct tkv_raft *r)
{
    if (!r->cfg.check_quorum)
        return false;
    if (r->role == TKV_RAFT_LEADER)
        return true;
    /* Count from the last leader contact, or from a restart: a restarted
     * voter may have acknowledged a lease just before it crashed. */
    return r->lease_elapsed < r->cfg.election_tick;
}
