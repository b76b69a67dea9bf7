/* Linearizable reads: ReadIndex confirmed by a heartbeat round, lease reads,
 * read states handed to the caller or answered to a forwarding follower. */
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

void raft_drop_reads(struct tkv_raft *r)
{
    r->n_reads = 0;
}

/* The quorum-th newest heartbeat send tick acknowledged (self = now). */
static bool lease_valid(struct tkv_raft *r)
{
    if (!r->cfg.lease_read || !r->cfg.check_quorum || r->lease_broken || r->lead_transferee)
        return false;
    uint64_t t[TKV_RAFT_MAX_VOTERS];
    uint32_t n = r->n_prs;
    for (uint32_t i = 0; i < n; i++) {
        const struct raft_progress *pr = &r->prs[i];
        t[i] = pr->id == r->id ? r->now : (pr->acked_ctx >> CTX_SHIFT);
    }
    for (uint32_t i = 1; i < n; i++) {
        uint64_t x = t[i];
        uint32_t j = i;
        while (j > 0 && t[j - 1] < x) {
            t[j] = t[j - 1];
            j--;
        }
        t[j] = x;
    }
    uint64_t lt = t[raft_quorum(r) - 1];
    if (lt == 0)
        return false;
    /* Voters that acked a heartbeat sent at tick lt ignore vote requests
     * for election_tick of their ticks after receiving it; keep one tick of
     * margin for tick phase differences. */
    return r->now + 1 < lt + r->cfg.election_tick;
}

int raft_push_read_state(struct tkv_raft *r, tkv_index index, uint64_t ctx)
{
    if (r->n_rs == r->cap_rs) {
        size_t cap = r->cap_rs ? r->cap_rs * 2 : 4;
        struct tkv_raft_read_state *n = tkv_realloc(r->rs, cap * sizeof(*n));
        if (!n)
            return TKV_ENOMEM;
        r->rs = n;
        r->cap_rs = cap;
    }
    r->rs[r->n_rs++] = (struct tkv_raft_read_state){.index = index, .ctx = ctx};
    return 0;
}

static int answer_read(struct tkv_raft *r, uint64_t from, uint64_t ctx, tkv_index index)
{
    if (from == r->id || from == 0)
        return raft_push_read_state(r, index, ctx);
    struct tkv_raft_msg m = {
        .type = TKV_RAFT_MSG_READ_INDEX_RESP, .to = from, .index = index, .ctx = ctx};
    raft_send(r, m);
    return 0;
}

void raft_advance_reads(struct tkv_raft *r)
{
    size_t done = 0;
    while (done < r->n_reads) {
        struct raft_read *rd = &r->reads[done];
        uint32_t acks = 0;
        for (uint32_t i = 0; i < r->n_prs; i++)
            if (r->prs[i].id == r->id || r->prs[i].acked_ctx >= rd->seq)
                acks++;
        if (acks < raft_quorum(r))
            break;
        if (answer_read(r, rd->from, rd->ctx, rd->index) < 0)
            break; /* keep it pending; the next ack retries */
        done++;
    }
    if (done) {
        memmove(r->reads, r->reads + done, (r->n_reads - done) * sizeof(*r->reads));
        r->n_reads -= done;
    }
}

int raft_leader_read_index(struct tkv_raft *r, uint64_t from, uint64_t ctx)
{
    if (raft_quorum(r) == 1 && raft_promotable(r))
        return answer_read(r, from, ctx, r->committed);
    /* Until an entry of this term commits, our commit index may be behind
     * the last leader's (Raft thesis 6.4). */
    if (raft_term_or0(r, r->committed) != r->term)
        return TKV_EPROPOSALDROPPED;
    if (lease_valid(r))
        return answer_read(r, from, ctx, r->committed);
    if ((r->last_ctx >> CTX_SHIFT) == r->now && (r->last_ctx & CTX_SUB_MAX) == CTX_SUB_MAX)
        return TKV_EBUSY;
    if (r->n_reads == r->cap_reads) {
        size_t cap = r->cap_reads ? r->cap_reads * 2 : 4;
        struct raft_read *n = tkv_realloc(r->reads, cap * sizeof(*n));
        if (!n)
            return TKV_ENOMEM;
        r->reads = n;
        r->cap_reads = cap;
    }
    uint64_t seq = raft_new_ctx(r);
    r->reads[r->n_reads++] = (struct raft_read){.seq = seq, .index = r->committed,
                                                .from = from, .ctx = ctx};
    raft_bcast_heartbeat(r, seq);
    return 0;
}
