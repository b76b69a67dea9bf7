/* Replication: per-follower progress (probe / replicate / snapshot, the
 * in-flight window), appends and heartbeats out, their responses in,
 * commit by counting, proposals, transport feedback. */
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

struct raft_progress *raft_pr_get(struct tkv_raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

bool raft_promotable(struct tkv_raft *r)
{
    return raft_pr_get(r, r->id) != NULL;
}

uint32_t raft_quorum(const struct tkv_raft *r)
{
    return r->n_prs / 2 + 1;
}

void raft_infl_free_all(struct raft_progress *pr)
{
    tkv_free(pr->infl);
    pr->infl = NULL;
    pr->infl_start = pr->infl_count = 0;
}

static uint32_t max_infl(const struct tkv_raft *r)
{
    return r->cfg.max_inflight_msgs;
}

bool raft_infl_full(const struct tkv_raft *r, const struct raft_progress *pr)
{
    return pr->infl_count >= max_infl(r);
}

static void infl_add(struct tkv_raft *r, struct raft_progress *pr, tkv_index last)
{
    uint32_t cap = max_infl(r);
    pr->infl[(pr->infl_start + pr->infl_count) % cap] = last;
    pr->infl_count++;
}

static void infl_free_le(struct tkv_raft *r, struct raft_progress *pr, tkv_index to)
{
    uint32_t cap = max_infl(r);
    while (pr->infl_count > 0 && pr->infl[pr->infl_start] <= to) {
        pr->infl_start = (pr->infl_start + 1) % cap;
        pr->infl_count--;
    }
}

void raft_infl_free_first(struct tkv_raft *r, struct raft_progress *pr)
{
    if (pr->infl_count > 0)
        infl_free_le(r, pr, pr->infl[pr->infl_start]);
}

void raft_pr_become_probe(struct raft_progress *pr)
{
    if (pr->state == PR_SNAPSHOT) {
        tkv_index ps = pr->pending_snapshot;
        pr->next = TKV_MAX(pr->match + 1, ps + 1);
    } else {
        pr->next = pr->match + 1;
    }
    pr->state = PR_PROBE;
    pr->probe_sent = false;
    pr->pending_snapshot = 0;
    pr->infl_start = pr->infl_count = 0;
}

/* Replicate needs the in-flight window; without memory stay in probe. */
static void pr_become_replicate(struct tkv_raft *r, struct raft_progress *pr)
{
    if (!pr->infl) {
        pr->infl = tkv_malloc(max_infl(r) * sizeof(uint64_t));
        if (!pr->infl) {
            r->stats.msgs_dropped_nomem++;
            return;
        }
    }
    pr->state = PR_REPLICATE;
    pr->probe_sent = false;
    pr->next = pr->match + 1;
    pr->infl_start = pr->infl_count = 0;
}

static bool pr_paused(const struct tkv_raft *r, const struct raft_progress *pr)
{
    switch (pr->state) {
    case PR_PROBE:
        return pr->probe_sent;
    case PR_REPLICATE:
        return raft_infl_full(r, pr);
    default:
        return true;
    }
}

bool raft_pr_maybe_update(struct raft_progress *pr, tkv_index n)
{
    bool updated = false;
    if (pr->match < n) {
        pr->match = n;
        updated = true;
        pr->probe_sent = false;
    }
    if (pr->next < n + 1)
        pr->next = n + 1;
    return updated;
}

static bool pr_maybe_decr_to(struct raft_progress *pr, tkv_index rejected, tkv_index hint)
{
    if (pr->state == PR_REPLICATE) {
        if (rejected <= pr->match)
            return false;
        pr->next = pr->match + 1;
        return true;
    }
    if (pr->next - 1 != rejected)
        return false;
    pr->next = TKV_MAX(TKV_MIN(rejected, hint + 1), pr->match + 1);
    pr->probe_sent = false;
    return true;
}

uint64_t raft_new_ctx(struct tkv_raft *r)
{
    uint64_t base = r->now << CTX_SHIFT;
    if (r->last_ctx < base)
        r->last_ctx = base;
    else if ((r->last_ctx & CTX_SUB_MAX) < CTX_SUB_MAX)
        r->last_ctx++;
    return r->last_ctx;
}

static void send_heartbeat(struct tkv_raft *r, struct raft_progress *pr, uint64_t ctx)
{
    struct tkv_raft_msg m = {
        .type = TKV_RAFT_MSG_HEARTBEAT,
        .to = pr->id,
        .commit = TKV_MIN(pr->match, r->committed),
        .ctx = ctx,
    };
    raft_send(r, m);
}

void raft_bcast_heartbeat(struct tkv_raft *r, uint64_t ctx)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id != r->id)
            send_heartbeat(r, &r->prs[i], ctx);
}

/* etcd's maybeSendAppend. */
bool raft_send_append(struct tkv_raft *r, struct raft_progress *pr, bool send_if_empty)
{
    if (pr_paused(r, pr))
        return false;
    tkv_index prev = pr->next - 1;
    tkv_term prev_term;
    int rt = raft_log_term(r, prev, &prev_term);
    struct tkv_raft_entry *ents = NULL;
    size_t n = 0;
    int re = 0;
    tkv_index last = raft_log_last(r);
    if (rt == 0 && pr->next <= last) {
        tkv_index hi = TKV_MIN(last + 1, pr->next + RAFT_MAX_MSG_ENTRIES);
        re = raft_log_slice(r, pr->next, hi, r->cfg.max_msg_bytes, &ents, &n);
    }
    if (rt == TKV_ECOMPACTED || re == TKV_ECOMPACTED)
        return raft_send_snapshot(r, pr);
    if (rt < 0 || re < 0) {
        if (rt == TKV_ENOMEM || re == TKV_ENOMEM)
            r->stats.msgs_dropped_nomem++;
        return false;
    }
    if (n == 0 && !send_if_empty)
        return false;
    tkv_index ents_last = n ? ents[n - 1].index : 0;
    struct tkv_raft_msg m = {
        .type = TKV_RAFT_MSG_APPEND,
        .to = pr->id,
        .index = prev,
        .log_term = prev_term,
        .entries = ents,
        .n_entries = n,
        .commit = r->committed,
    };
    if (!raft_send(r, m))
        return false;
    pr->sent_commit = r->committed;
    if (n > 0) {
        if (pr->state == PR_REPLICATE) {
            pr->next = ents_last + 1;
            infl_add(r, pr, ents_last);
        } else {
            pr->probe_sent = true;
        }
    }
    return true;
}

void raft_bcast_append(struct tkv_raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id != r->id)
            raft_send_append(r, &r->prs[i], true);
}

bool raft_maybe_commit(struct tkv_raft *r)
{
    tkv_index m[TKV_RAFT_MAX_VOTERS];
    uint32_t n = r->n_prs;
    if (n == 0)
        return false;
    for (uint32_t i = 0; i < n; i++)
        m[i] = r->prs[i].match;
    /* Insertion sort, descending: n <= 16. */
    for (uint32_t i = 1; i < n; i++) {
        tkv_index x = m[i];
        uint32_t j = i;
        while (j > 0 && m[j - 1] < x) {
            m[j] = m[j - 1];
            j--;
        }
        m[j] = x;
    }
    tkv_index mci = m[raft_quorum(r) - 1];
    /* Raft 5.4.2: only current-term entries are committed by counting. */
    if (mci > r->committed && raft_term_or0(r, mci) == r->term) {
        r->committed = mci;
        return true;
    }
    return false;
}

int raft_leader_propose(struct tkv_raft *r, const struct tkv_raft_entry *tmpl, size_t n)
{
    if (r->lead_transferee)
        return TKV_EPROPOSALDROPPED;
    if (!raft_promotable(r))
        return TKV_EPROPOSALDROPPED;
    TKV_RET(raft_ue_reserve(r, n));
    tkv_index li = raft_log_last(r);
    for (size_t i = 0; i < n; i++) {
        struct tkv_raft_entry *d = &r->ue[r->ue_start + r->ue_len + i];
        *d = tmpl[i];
        d->term = r->term;
        d->index = li + 1 + i;
        tkv_raft_buf_ref(d->data);
    }
    r->ue_len += n;
    if (r->u_reported > li + 1)
        r->u_reported = li + 1;
    raft_bcast_append(r);
    return 0;
}

void raft_handle_append_resp(struct tkv_raft *r, const struct tkv_raft_msg *m,
                             struct raft_progress *pr)
{
    pr->recent_active = true;
    if (m->reject) {
        tkv_index next_probe = m->reject_hint;
        if (m->log_term > 0)
            next_probe = raft_find_conflict_by_term(r, m->reject_hint, m->log_term);
        if (pr_maybe_decr_to(pr, m->index, next_probe)) {
            if (pr->state == PR_REPLICATE)
                raft_pr_become_probe(pr);
            raft_send_append(r, pr, true);
        }
        return;
    }
    bool was_paused = pr_paused(r, pr);
    if (!raft_pr_maybe_update(pr, m->index))
        return;
    if (pr->state == PR_PROBE)
        pr_become_replicate(r, pr);
    else if (pr->state == PR_SNAPSHOT && pr->match >= pr->pending_snapshot)
        raft_pr_become_probe(pr);
    else if (pr->state == PR_REPLICATE)
        infl_free_le(r, pr, m->index);
    if (raft_maybe_commit(r))
        raft_bcast_append(r);
    else if (was_paused || pr->sent_commit < r->committed)
        raft_send_append(r, pr, true); /* it may be missing the commit index */
    /* Fill the window (batching across the pipeline). */
    while (pr->state == PR_REPLICATE && raft_send_append(r, pr, false)) {
    }
    if (m->from == r->lead_transferee && pr->match == raft_log_last(r))
        raft_send_timeout_now(r, m->from);
}

int raft_handle_append(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->index < r->committed) {
        resp.index = r->committed;
        raft_send(r, resp);
        return 0;
    }
    if (raft_match_term(r, m->index, m->log_term)) {
        tkv_index lastnewi = m->index + m->n_entries;
        size_t first_new = m->n_entries;
        for (size_t i = 0; i < m->n_entries; i++) {
            if (!raft_match_term(r, m->entries[i].index, m->entries[i].term)) {
                first_new = i;
                break;
            }
        }
        if (first_new < m->n_entries) {
            tkv_assert(m->entries[first_new].index > r->committed);
            TKV_RET(raft_log_append(r, m->entries + first_new, m->n_entries - first_new));
        }
        raft_commit_to(r, TKV_MIN(m->commit, lastnewi));
        resp.index = lastnewi;
        raft_send(r, resp);
        return 0;
    }
    tkv_index hint = TKV_MIN(m->index, raft_log_last(r));
    hint = raft_find_conflict_by_term(r, hint, m->log_term);
    resp.index = m->index;
    resp.reject = true;
    resp.reject_hint = hint;
    resp.log_term = raft_term_or0(r, hint);
    raft_send(r, resp);
    return 0;
}

void raft_handle_heartbeat(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    raft_commit_to(r, m->commit);
    struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .ctx = m->ctx};
    raft_send(r, resp);
}

/* Transport feedback (etcd ReportUnreachable / ReportSnapshot). */
void raft_report(struct tkv_raft *r, uint32_t type, uint64_t node, bool failed)
{
    struct raft_progress *pr = r->role == TKV_RAFT_LEADER ? raft_pr_get(r, node) : NULL;
    if (!pr || node == r->id)
        return;
    if (type == TKV_RAFT_EV_REPORT_UNREACHABLE) {
        /* the pipeline is broken: stop streaming, probe instead */
        if (pr->state == PR_REPLICATE)
            raft_pr_become_probe(pr);
        return;
    }
    if (pr->state != PR_SNAPSHOT)
        return;
    if (failed)
        pr->pending_snapshot = 0; /* probe from match again */
    raft_pr_become_probe(pr);
    /* Success: wait for the follower's append response. Failure: wait for
     * a heartbeat response before retrying (etcd). */
    pr->probe_sent = true;
}
