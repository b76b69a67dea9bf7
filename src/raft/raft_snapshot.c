/* Snapshots: sending one to a follower whose entries are compacted, and
 * restoring one received from the leader. */
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

bool raft_send_snapshot(struct tkv_raft *r, struct raft_progress *pr)
{
    if (!pr->recent_active)
        return false;
    struct tkv_raft_snapshot *s = tkv_malloc(sizeof(*s));
    if (!s) {
        r->stats.msgs_dropped_nomem++;
        return false;
    }
    memset(s, 0, sizeof(*s));
    if (r->st.snapshot(r->st.ctx, s) < 0 || s->index == 0) {
        tkv_raft_buf_unref(s->data);
        tkv_free(s);
        return false; /* being generated: retry on a later response */
    }
    tkv_index si = s->index;
    struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_SNAPSHOT, .to = pr->id, .snapshot = s};
    if (!raft_send(r, m))
        return false;
    pr->state = PR_SNAPSHOT;
    pr->pending_snapshot = si;
    pr->snapshot_ticks = 0;
    pr->infl_start = pr->infl_count = 0;
    return true;
}

/* Returns true if the snapshot replaced our log. */
static bool restore(struct tkv_raft *r, const struct tkv_raft_snapshot *s)
{
    if (s->index <= r->committed)
        return false;
    if (raft_match_term(r, s->index, s->term)) {
        raft_commit_to(r, s->index);
        return false;
    }
    raft_entries_unref(r->ue + r->ue_start, r->ue_len);
    r->ue_start = r->ue_len = 0;
    if (r->has_usnap)
        tkv_raft_buf_unref(r->usnap.data);
    r->usnap = *s;
    tkv_raft_buf_ref(r->usnap.data);
    r->has_usnap = true;
    r->usnap_reported = false;
    r->u_offset = s->index + 1;
    r->u_reported = r->u_offset;
    r->committed = s->index;
    r->emitted = s->index;
    raft_prs_set(r, &s->conf_state);
    return true;
}

void raft_handle_snapshot(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->snapshot && restore(r, m->snapshot))
        resp.index = raft_log_last(r);
    else
        resp.index = r->committed;
    raft_send(r, resp);
}
