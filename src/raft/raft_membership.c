/* Membership: the voter set from a conf state, applying a conf change (a
 * removed leader hands over and steps down), leader transfer. */
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

/* Replace the voter set (init, snapshot restore). No allocation. */
void raft_prs_set(struct tkv_raft *r, const struct tkv_raft_conf_state *cs)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        raft_infl_free_all(&r->prs[i]);
    memset(r->prs, 0, sizeof(r->prs));
    r->n_prs = 0;
    for (uint32_t i = 0; i < cs->n_voters && i < TKV_RAFT_MAX_VOTERS; i++) {
        if (cs->voters[i] == 0 || raft_pr_get(r, cs->voters[i]))
            continue;
        struct raft_progress *pr = &r->prs[r->n_prs++];
        pr->id = cs->voters[i];
        pr->next = raft_log_last(r) + 1;
        pr->recent_active = true;
    }
    r->conf_changed = true;
}

void raft_send_timeout_now(struct tkv_raft *r, uint64_t to)
{
    struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_TIMEOUT_NOW, .to = to};
    /* The target will campaign through our lease: no more lease reads in
     * this term. */
    r->lease_broken = true;
    raft_send(r, m);
}

void raft_abort_transfer(struct tkv_raft *r)
{
    r->lead_transferee = 0;
}

int raft_apply_conf_change(struct tkv_raft *r, uint32_t type, uint64_t node)
{
    if (node == 0)
        return TKV_EINVAL;
    if (type == TKV_RAFT_CONF_ADD_NODE) {
        if (raft_pr_get(r, node))
            return 0;
        if (r->n_prs == TKV_RAFT_MAX_VOTERS)
            return TKV_EINVAL;
        struct raft_progress *pr = &r->prs[r->n_prs++];
        memset(pr, 0, sizeof(*pr));
        pr->id = node;
        pr->next = raft_log_last(r) + 1;
        pr->recent_active = true;
        r->conf_changed = true;
        if (r->role == TKV_RAFT_LEADER)
            raft_send_append(r, pr, true);
        return 0;
    }
    if (type != TKV_RAFT_CONF_REMOVE_NODE)
        return TKV_EINVAL;
    struct raft_progress *pr = raft_pr_get(r, node);
    if (!pr)
        return 0;
    raft_infl_free_all(pr);
    *pr = r->prs[--r->n_prs];
    memset(&r->prs[r->n_prs], 0, sizeof(r->prs[0]));
    r->conf_changed = true;
    if (r->role != TKV_RAFT_LEADER)
        return 0;
    if (node == r->id) {
        /* Removed leader: hand over to the most caught-up voter, then step
         * down; we can no longer count ourselves in any quorum. First tell
         * the others the commit index (heartbeats carry min(match,
         * committed)): the removal may be committed here only, and a voter
         * that does not learn it keeps counting us (a group of two would
         * never elect the survivor, whose vote we can no longer give). */
        raft_bcast_heartbeat(r, raft_new_ctx(r));
        struct raft_progress *best = NULL;
        for (uint32_t i = 0; i < r->n_prs; i++)
            if (!best || r->prs[i].match > best->match)
                best = &r->prs[i];
        if (best && best->match == raft_log_last(r))
            raft_send_timeout_now(r, best->id);
        raft_become_follower(r, r->term, 0);
        return 0;
    }
    if (r->lead_transferee == node)
        raft_abort_transfer(r);
    if (raft_maybe_commit(r))
        raft_bcast_append(r);
    raft_advance_reads(r);
    return 0;
}
