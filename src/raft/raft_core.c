/* The Raft state machine behind tkv_raft_step: log view (storage + unstable
 * tail), elections with pre-vote and check-quorum, replication with flow
 * control, snapshots, membership changes, leader transfer and reads. */
#include <stdlib.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

enum { PR_PROBE = 0, PR_REPLICATE = 1, PR_SNAPSHOT = 2 };
enum { VOTE_NONE = 0, VOTE_GRANTED = 1, VOTE_REJECTED = 2 };

/* Entries per MSG_APPEND when max_msg_bytes does not stop us earlier. */
#define RAFT_MAX_MSG_ENTRIES 4096
/* Committed entries per update; the rest follow in the next updates. */
#define RAFT_MAX_COMMITTED_ENTRIES 4096
/* Heartbeat contexts are (tick << CTX_SHIFT) | n-th context in that tick:
 * monotonic within a term, and the send tick is recoverable for leases. */
#define CTX_SHIFT 20
#define CTX_SUB_MAX ((1u << CTX_SHIFT) - 1)

struct raft_progress {
    uint64_t id;
    tkv_index match, next;
    uint32_t state;
    bool probe_sent;
    bool recent_active;
    uint8_t vote;
    tkv_index pending_snapshot;
    uint32_t snapshot_ticks;
    uint64_t acked_ctx;
    tkv_index sent_commit; /* commit index last sent in an append */
    /* Replicate-state window: last index of each unacknowledged append. */
    uint64_t *infl;
    uint32_t infl_start, infl_count;
};

struct raft_read {
    uint64_t seq;
    tkv_index index;
    uint64_t from;
    uint64_t ctx;
};

struct tkv_raft {
    struct tkv_raft_config cfg;
    struct tkv_raft_storage st;
    uint64_t id;
    tkv_term term;
    uint64_t vote;
    uint64_t lead;
    uint32_t role;

    /* Log. Indexes < u_offset are durable (in storage or the unstable
     * snapshot); ue holds [u_offset, u_offset + ue_len). */
    tkv_index committed, applied, emitted;
    struct tkv_raft_entry *ue;
    size_t ue_start, ue_len, ue_cap;
    tkv_index u_offset;
    tkv_index u_reported; /* first unstable index not yet in an update */
    struct tkv_raft_snapshot usnap;
    bool has_usnap, usnap_reported;

    struct raft_progress prs[TKV_RAFT_MAX_VOTERS];
    uint32_t n_prs;

    uint32_t election_elapsed, heartbeat_elapsed, randomized_timeout;
    /* Ticks since we last heard from a leader (or since a restart): unlike
     * election_elapsed it is not reset by term changes or votes, so a voter
     * that acknowledged a leader honours the lease (see in_lease). */
    uint32_t lease_elapsed;
    uint64_t rng;
    uint64_t lead_transferee;
    tkv_index pending_conf_index;
    bool lease_broken;
    uint64_t now;
    uint64_t last_ctx;

    struct raft_read *reads;
    size_t n_reads, cap_reads;

    /* Output produced since the last update was built (pending). */
    struct tkv_raft_msg *msgs;
    size_t n_msgs, cap_msgs;
    struct tkv_raft_read_state *rs;
    size_t n_rs, cap_rs;
    /* The update handed out and not yet advanced: it owns its arrays and
     * one reference per payload, so events stepped while the caller works
     * through it (APPLIED, APPLY_CONF_CHANGE, LOG_PERSISTED, ...) cannot
     * free or move anything it points to. Arrays are swapped, not copied. */
    bool outstanding;
    struct tkv_raft_msg *out_msgs;
    size_t n_out_msgs, cap_out_msgs;
    struct tkv_raft_read_state *out_rs;
    size_t n_out_rs, cap_out_rs;
    struct tkv_raft_entry *out_ents;
    size_t n_out_ents, cap_out_ents;
    struct tkv_raft_snapshot out_snap;
    struct tkv_raft_entry *committed_out; /* reused across updates */
    size_t n_committed_out, cap_committed_out;
    struct tkv_raft_hard_state prev_hs;
    struct tkv_raft_soft_state prev_ss;
    bool conf_changed;
    struct tkv_raft_stats stats;
};

static int step_msg(struct tkv_raft *r, const struct tkv_raft_msg *m);

/* ---------------------------------------------------------------- PRNG */

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

/* ---------------------------------------------------------------- log */

static tkv_index log_last(const struct tkv_raft *r)
{
    return r->u_offset + r->ue_len - 1;
}

static tkv_index log_first(const struct tkv_raft *r)
{
    if (r->has_usnap)
        return r->usnap.index + 1;
    return r->st.first_index(r->st.ctx);
}

static struct tkv_raft_entry *ue_at(struct tkv_raft *r, tkv_index i)
{
    return &r->ue[r->ue_start + (size_t)(i - r->u_offset)];
}

static int log_term(struct tkv_raft *r, tkv_index i, tkv_term *t)
{
    if (i >= r->u_offset) {
        if (i - r->u_offset >= r->ue_len)
            return TKV_EUNAVAILABLE;
        *t = ue_at(r, i)->term;
        return 0;
    }
    if (r->has_usnap) {
        if (i == r->usnap.index) {
            *t = r->usnap.term;
            return 0;
        }
        return TKV_ECOMPACTED;
    }
    return r->st.term(r->st.ctx, i, t);
}

/* Term or 0 when unknown (compacted / beyond the log). */
static tkv_term term_or0(struct tkv_raft *r, tkv_index i)
{
    tkv_term t = 0;
    if (log_term(r, i, &t) < 0)
        return 0;
    return t;
}

static tkv_term last_term(struct tkv_raft *r)
{
    return term_or0(r, log_last(r));
}

static bool match_term(struct tkv_raft *r, tkv_index i, tkv_term t)
{
    tkv_term x;
    if (log_term(r, i, &x) < 0)
        return false;
    return x == t;
}

static bool is_up_to_date(struct tkv_raft *r, tkv_index li, tkv_term lt)
{
    tkv_term mine = last_term(r);
    return lt > mine || (lt == mine && li >= log_last(r));
}

static void entries_unref(struct tkv_raft_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tkv_raft_buf_unref(e[i].data);
}

static int log_fill(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                    struct tkv_raft_entry *e, size_t *n_out);

/* Copy entries [lo, hi) (payload-limited, at least one) into a new array
 * holding its own references. */
static int log_slice(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                     struct tkv_raft_entry **out, size_t *n_out)
{
    int rv;
    *out = NULL;
    *n_out = 0;
    if (lo >= hi)
        return 0;
    if (lo < log_first(r))
        return TKV_ECOMPACTED;
    if (hi > log_last(r) + 1)
        return TKV_EUNAVAILABLE;
    size_t cap = (size_t)(hi - lo);
    struct tkv_raft_entry *e = tkv_malloc(cap * sizeof(*e));
    if (!e)
        return TKV_ENOMEM;
    size_t n = 0;
    rv = log_fill(r, lo, hi, max_bytes, e, &n);
    if (rv < 0) {
        tkv_free(e);
        return rv;
    }
    *out = e;
    *n_out = n;
    return 0;
}

/* Fill out (room for hi-lo) with entries [lo, hi) holding references;
 * payload-limited, at least one. No allocation of its own. */
static int log_fill(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                    struct tkv_raft_entry *e, size_t *n_out)
{
    int rv;
    size_t n = 0;
    uint64_t bytes = 0;
    tkv_index i = lo;
    if (i < r->u_offset) {
        tkv_index shi = TKV_MIN(hi, r->u_offset);
        size_t got = 0;
        rv = r->st.entries(r->st.ctx, i, shi, max_bytes ? max_bytes : UINT64_MAX, e, &got);
        if (rv < 0)
            return rv;
        n = got;
        for (size_t k = 0; k < got; k++)
            bytes += e[k].data ? e[k].data->len : 0;
        i += got;
        if (i < shi)
            goto done; /* storage stopped at the byte limit */
    }
    for (; i < hi; i++) {
        struct tkv_raft_entry *x = ue_at(r, i);
        uint64_t sz = x->data ? x->data->len : 0;
        if (n > 0 && max_bytes && bytes + sz > max_bytes)
            break;
        bytes += sz;
        e[n] = *x;
        tkv_raft_buf_ref(e[n].data);
        n++;
    }
done:
    *n_out = n;
    return 0;
}

static int ue_reserve(struct tkv_raft *r, size_t extra)
{
    if (r->ue_start + r->ue_len + extra <= r->ue_cap)
        return 0;
    if (r->ue_start > 0) {
        memmove(r->ue, r->ue + r->ue_start, r->ue_len * sizeof(*r->ue));
        r->ue_start = 0;
        if (r->ue_len + extra <= r->ue_cap)
            return 0;
    }
    size_t cap = r->ue_cap ? r->ue_cap * 2 : 16;
    while (cap < r->ue_len + extra)
        cap *= 2;
    struct tkv_raft_entry *n = tkv_realloc(r->ue, cap * sizeof(*n));
    if (!n)
        return TKV_ENOMEM;
    r->ue = n;
    r->ue_cap = cap;
    return 0;
}

/* Truncate after ents[0].index - 1 and append; takes new references.
 * All-or-nothing: TKV_ENOMEM leaves the log untouched. */
static int log_append(struct tkv_raft *r, const struct tkv_raft_entry *ents, size_t n)
{
    if (n == 0)
        return 0;
    tkv_index k = ents[0].index;
    tkv_assert(k > r->committed && k <= log_last(r) + 1);
    size_t keep = k <= r->u_offset ? 0 : (size_t)(k - r->u_offset);
    /* Reserve room for the final length before dropping anything. */
    if (keep + n > r->ue_len)
        TKV_RET(ue_reserve(r, keep + n - r->ue_len));
    if (keep < r->ue_len) {
        entries_unref(r->ue + r->ue_start + keep, r->ue_len - keep);
        r->ue_len = keep;
    }
    if (k < r->u_offset) {
        tkv_assert(r->ue_len == 0);
        r->u_offset = k;
    }
    for (size_t i = 0; i < n; i++) {
        struct tkv_raft_entry *d = &r->ue[r->ue_start + r->ue_len + i];
        *d = ents[i];
        tkv_raft_buf_ref(d->data);
    }
    r->ue_len += n;
    if (r->u_reported > k)
        r->u_reported = k;
    return 0;
}

static void commit_to(struct tkv_raft *r, tkv_index c)
{
    tkv_index last = log_last(r);
    if (c > last)
        c = last;
    if (c > r->committed)
        r->committed = c;
}

static tkv_index persisted_last(const struct tkv_raft *r)
{
    return r->has_usnap ? 0 : r->u_offset - 1;
}

/* Largest i <= index whose term is <= t (etcd's findConflictByTerm). */
static tkv_index find_conflict_by_term(struct tkv_raft *r, tkv_index index, tkv_term t)
{
    for (; index > 0; index--) {
        tkv_term x;
        if (log_term(r, index, &x) < 0)
            return index;
        if (x <= t)
            return index;
    }
    return 0;
}

/* ---------------------------------------------------------- progress */

static struct raft_progress *pr_get(struct tkv_raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

static bool promotable(struct tkv_raft *r)
{
    return pr_get(r, r->id) != NULL;
}

static uint32_t quorum(const struct tkv_raft *r)
{
    return r->n_prs / 2 + 1;
}

static void infl_free_all(struct raft_progress *pr)
{
    tkv_free(pr->infl);
    pr->infl = NULL;
    pr->infl_start = pr->infl_count = 0;
}

static uint32_t max_infl(const struct tkv_raft *r)
{
    return r->cfg.max_inflight_msgs;
}

static bool infl_full(const struct tkv_raft *r, const struct raft_progress *pr)
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

static void infl_free_first(struct tkv_raft *r, struct raft_progress *pr)
{
    if (pr->infl_count > 0)
        infl_free_le(r, pr, pr->infl[pr->infl_start]);
}

static void pr_become_probe(struct raft_progress *pr)
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
        return infl_full(r, pr);
    default:
        return true;
    }
}

static bool pr_maybe_update(struct raft_progress *pr, tkv_index n)
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

/* Replace the voter set (init, snapshot restore). No allocation. */
static void prs_set(struct tkv_raft *r, const struct tkv_raft_conf_state *cs)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        infl_free_all(&r->prs[i]);
    memset(r->prs, 0, sizeof(r->prs));
    r->n_prs = 0;
    for (uint32_t i = 0; i < cs->n_voters && i < TKV_RAFT_MAX_VOTERS; i++) {
        if (cs->voters[i] == 0 || pr_get(r, cs->voters[i]))
            continue;
        struct raft_progress *pr = &r->prs[r->n_prs++];
        pr->id = cs->voters[i];
        pr->next = log_last(r) + 1;
        pr->recent_active = true;
    }
    r->conf_changed = true;
}

/* ---------------------------------------------------------- messages */

static void msg_release(struct tkv_raft_msg *m)
{
    entries_unref(m->entries, m->n_entries);
    tkv_free(m->entries);
    if (m->snapshot) {
        tkv_raft_buf_unref(m->snapshot->data);
        tkv_free(m->snapshot);
    }
}

/* Queue m (takes ownership of its entries/snapshot even on failure).
 * Returns false when the message had to be dropped for lack of memory. */
static bool send(struct tkv_raft *r, struct tkv_raft_msg m)
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

static uint64_t new_ctx(struct tkv_raft *r)
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
    send(r, m);
}

static void bcast_heartbeat(struct tkv_raft *r, uint64_t ctx)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id != r->id)
            send_heartbeat(r, &r->prs[i], ctx);
}

static bool send_snapshot(struct tkv_raft *r, struct raft_progress *pr)
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
    if (!send(r, m))
        return false;
    pr->state = PR_SNAPSHOT;
    pr->pending_snapshot = si;
    pr->snapshot_ticks = 0;
    pr->infl_start = pr->infl_count = 0;
    return true;
}

/* etcd's maybeSendAppend. */
static bool send_append(struct tkv_raft *r, struct raft_progress *pr, bool send_if_empty)
{
    if (pr_paused(r, pr))
        return false;
    tkv_index prev = pr->next - 1;
    tkv_term prev_term;
    int rt = log_term(r, prev, &prev_term);
    struct tkv_raft_entry *ents = NULL;
    size_t n = 0;
    int re = 0;
    tkv_index last = log_last(r);
    if (rt == 0 && pr->next <= last) {
        tkv_index hi = TKV_MIN(last + 1, pr->next + RAFT_MAX_MSG_ENTRIES);
        re = log_slice(r, pr->next, hi, r->cfg.max_msg_bytes, &ents, &n);
    }
    if (rt == TKV_ECOMPACTED || re == TKV_ECOMPACTED)
        return send_snapshot(r, pr);
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
    if (!send(r, m))
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

static void bcast_append(struct tkv_raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id != r->id)
            send_append(r, &r->prs[i], true);
}

static void send_timeout_now(struct tkv_raft *r, uint64_t to)
{
    struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_TIMEOUT_NOW, .to = to};
    /* The target will campaign through our lease: no more lease reads in
     * this term. */
    r->lease_broken = true;
    send(r, m);
}

/* ---------------------------------------------------------- roles */

static void drop_reads(struct tkv_raft *r)
{
    r->n_reads = 0;
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
    drop_reads(r);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *pr = &r->prs[i];
        infl_free_all(pr);
        pr->match = 0;
        pr->next = log_last(r) + 1;
        pr->state = PR_PROBE;
        pr->probe_sent = false;
        pr->recent_active = false;
        pr->vote = VOTE_NONE;
        pr->pending_snapshot = 0;
        pr->acked_ctx = 0;
        pr->sent_commit = 0;
    }
}

static void become_follower(struct tkv_raft *r, tkv_term term, uint64_t lead)
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
    struct raft_progress *self = pr_get(r, r->id);
    if (self) {
        self->recent_active = true;
        pr_maybe_update(self, persisted_last(r));
        self->state = PR_REPLICATE;
    }
    r->pending_conf_index = log_last(r);
    struct tkv_raft_entry noop = {.term = r->term, .index = log_last(r) + 1};
    int rv = log_append(r, &noop, 1);
    tkv_assert(rv == 0);
}

static int poll(struct tkv_raft *r, uint64_t id, bool granted)
{
    struct raft_progress *pr = pr_get(r, id);
    if (pr && pr->vote == VOTE_NONE)
        pr->vote = granted ? VOTE_GRANTED : VOTE_REJECTED;
    uint32_t g = 0, rej = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].vote == VOTE_GRANTED)
            g++;
        else if (r->prs[i].vote == VOTE_REJECTED)
            rej++;
    }
    if (g >= quorum(r))
        return 1;
    if (rej >= quorum(r))
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
        TKV_RET(ue_reserve(r, 1));
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
    tkv_index li = log_last(r);
    tkv_term lt = last_term(r);
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
        send(r, m);
    }
    return 0;
}

/* A committed-but-unapplied conf change means our voter set may be stale:
 * do not campaign on it (etcd). Memory failure counts as "maybe". */
static bool has_unapplied_conf_change(struct tkv_raft *r)
{
    tkv_index lo = TKV_MAX(r->applied + 1, log_first(r));
    if (lo > r->committed)
        return false;
    struct tkv_raft_entry *e;
    size_t n;
    tkv_index i = lo;
    while (i <= r->committed) {
        if (log_slice(r, i, r->committed + 1, 0, &e, &n) < 0)
            return true;
        bool found = false;
        for (size_t k = 0; k < n; k++)
            found |= e[k].type == TKV_RAFT_ENTRY_CONF_CHANGE;
        entries_unref(e, n);
        tkv_free(e);
        if (found)
            return true;
        if (n == 0)
            break;
        i += n;
    }
    return false;
}

static int hup(struct tkv_raft *r, bool transfer)
{
    if (r->role == TKV_RAFT_LEADER || !promotable(r))
        return 0;
    if (has_unapplied_conf_change(r))
        return 0;
    if (r->cfg.pre_vote && !transfer)
        return campaign(r, true, false);
    return campaign(r, false, transfer);
}

/* ---------------------------------------------------------- leader */

static bool maybe_commit(struct tkv_raft *r)
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
    tkv_index mci = m[quorum(r) - 1];
    /* Raft 5.4.2: only current-term entries are committed by counting. */
    if (mci > r->committed && term_or0(r, mci) == r->term) {
        r->committed = mci;
        return true;
    }
    return false;
}

static bool quorum_active(struct tkv_raft *r)
{
    uint32_t act = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == r->id || r->prs[i].recent_active)
            act++;
    return act >= quorum(r);
}

static void abort_transfer(struct tkv_raft *r)
{
    r->lead_transferee = 0;
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
    uint64_t lt = t[quorum(r) - 1];
    if (lt == 0)
        return false;
    /* Voters that acked a heartbeat sent at tick lt ignore vote requests
     * for election_tick of their ticks after receiving it; keep one tick of
     * margin for tick phase differences. */
    return r->now + 1 < lt + r->cfg.election_tick;
}

static int push_read_state(struct tkv_raft *r, tkv_index index, uint64_t ctx)
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
        return push_read_state(r, index, ctx);
    struct tkv_raft_msg m = {
        .type = TKV_RAFT_MSG_READ_INDEX_RESP, .to = from, .index = index, .ctx = ctx};
    send(r, m);
    return 0;
}

static void advance_reads(struct tkv_raft *r)
{
    size_t done = 0;
    while (done < r->n_reads) {
        struct raft_read *rd = &r->reads[done];
        uint32_t acks = 0;
        for (uint32_t i = 0; i < r->n_prs; i++)
            if (r->prs[i].id == r->id || r->prs[i].acked_ctx >= rd->seq)
                acks++;
        if (acks < quorum(r))
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

static int leader_read_index(struct tkv_raft *r, uint64_t from, uint64_t ctx)
{
    if (quorum(r) == 1 && promotable(r))
        return answer_read(r, from, ctx, r->committed);
    /* Until an entry of this term commits, our commit index may be behind
     * the last leader's (Raft thesis 6.4). */
    if (term_or0(r, r->committed) != r->term)
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
    uint64_t seq = new_ctx(r);
    r->reads[r->n_reads++] = (struct raft_read){.seq = seq, .index = r->committed,
                                                .from = from, .ctx = ctx};
    bcast_heartbeat(r, seq);
    return 0;
}

static int leader_propose(struct tkv_raft *r, const struct tkv_raft_entry *tmpl, size_t n)
{
    if (r->lead_transferee)
        return TKV_EPROPOSALDROPPED;
    if (!promotable(r))
        return TKV_EPROPOSALDROPPED;
    TKV_RET(ue_reserve(r, n));
    tkv_index li = log_last(r);
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
    bcast_append(r);
    return 0;
}

static void handle_append_resp(struct tkv_raft *r, const struct tkv_raft_msg *m,
                               struct raft_progress *pr)
{
    pr->recent_active = true;
    if (m->reject) {
        tkv_index next_probe = m->reject_hint;
        if (m->log_term > 0)
            next_probe = find_conflict_by_term(r, m->reject_hint, m->log_term);
        if (pr_maybe_decr_to(pr, m->index, next_probe)) {
            if (pr->state == PR_REPLICATE)
                pr_become_probe(pr);
            send_append(r, pr, true);
        }
        return;
    }
    bool was_paused = pr_paused(r, pr);
    if (!pr_maybe_update(pr, m->index))
        return;
    if (pr->state == PR_PROBE)
        pr_become_replicate(r, pr);
    else if (pr->state == PR_SNAPSHOT && pr->match >= pr->pending_snapshot)
        pr_become_probe(pr);
    else if (pr->state == PR_REPLICATE)
        infl_free_le(r, pr, m->index);
    if (maybe_commit(r))
        bcast_append(r);
    else if (was_paused || pr->sent_commit < r->committed)
        send_append(r, pr, true); /* it may be missing the commit index */
    /* Fill the window (batching across the pipeline). */
    while (pr->state == PR_REPLICATE && send_append(r, pr, false)) {
    }
    if (m->from == r->lead_transferee && pr->match == log_last(r))
        send_timeout_now(r, m->from);
}

static int step_leader(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    switch (m->type) {
    case TKV_RAFT_MSG_BEAT:
        bcast_heartbeat(r, new_ctx(r));
        return 0;
    case TKV_RAFT_MSG_PROPOSE: {
        if (m->n_entries == 0)
            return TKV_EINVAL;
        for (size_t i = 0; i < m->n_entries; i++)
            if (m->entries[i].type == TKV_RAFT_ENTRY_CONF_CHANGE)
                return TKV_EINVAL; /* use PROPOSE_CONF_CHANGE */
        return leader_propose(r, m->entries, m->n_entries);
    }
    case TKV_RAFT_MSG_READ_INDEX: {
        int rv = leader_read_index(r, m->from ? m->from : r->id, m->ctx);
        return m->from && m->from != r->id ? 0 : rv;
    }
    case TKV_RAFT_MSG_TRANSFER_LEADER: {
        uint64_t target = m->from;
        struct raft_progress *pr = pr_get(r, target);
        if (!pr)
            return 0;
        if (r->lead_transferee) {
            if (r->lead_transferee == target)
                return 0;
            abort_transfer(r);
        }
        if (target == r->id)
            return 0;
        r->election_elapsed = 0;
        r->lead_transferee = target;
        if (pr->match == log_last(r))
            send_timeout_now(r, target);
        else
            send_append(r, pr, true);
        return 0;
    }
    default:
        break;
    }
    struct raft_progress *pr = pr_get(r, m->from);
    if (!pr)
        return 0;
    switch (m->type) {
    case TKV_RAFT_MSG_APPEND_RESP:
        handle_append_resp(r, m, pr);
        break;
    case TKV_RAFT_MSG_HEARTBEAT_RESP:
        pr->recent_active = true;
        pr->probe_sent = false;
        if (pr->state == PR_REPLICATE && infl_full(r, pr))
            infl_free_first(r, pr);
        if (pr->match < log_last(r) || pr->state == PR_PROBE)
            send_append(r, pr, true);
        if (m->ctx > pr->acked_ctx) {
            pr->acked_ctx = m->ctx;
            advance_reads(r);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* ---------------------------------------------------------- follower */

static int handle_append(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->index < r->committed) {
        resp.index = r->committed;
        send(r, resp);
        return 0;
    }
    if (match_term(r, m->index, m->log_term)) {
        tkv_index lastnewi = m->index + m->n_entries;
        size_t first_new = m->n_entries;
        for (size_t i = 0; i < m->n_entries; i++) {
            if (!match_term(r, m->entries[i].index, m->entries[i].term)) {
                first_new = i;
                break;
            }
        }
        if (first_new < m->n_entries) {
            tkv_assert(m->entries[first_new].index > r->committed);
            TKV_RET(log_append(r, m->entries + first_new, m->n_entries - first_new));
        }
        commit_to(r, TKV_MIN(m->commit, lastnewi));
        resp.index = lastnewi;
        send(r, resp);
        return 0;
    }
    tkv_index hint = TKV_MIN(m->index, log_last(r));
    hint = find_conflict_by_term(r, hint, m->log_term);
    resp.index = m->index;
    resp.reject = true;
    resp.reject_hint = hint;
    resp.log_term = term_or0(r, hint);
    send(r, resp);
    return 0;
}

static void handle_heartbeat(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    commit_to(r, m->commit);
    struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .ctx = m->ctx};
    send(r, resp);
}

/* Returns true if the snapshot replaced our log. */
static bool restore(struct tkv_raft *r, const struct tkv_raft_snapshot *s)
{
    if (s->index <= r->committed)
        return false;
    if (match_term(r, s->index, s->term)) {
        commit_to(r, s->index);
        return false;
    }
    entries_unref(r->ue + r->ue_start, r->ue_len);
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
    prs_set(r, &s->conf_state);
    return true;
}

static void handle_snapshot(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->snapshot && restore(r, m->snapshot))
        resp.index = log_last(r);
    else
        resp.index = r->committed;
    send(r, resp);
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
        return handle_append(r, m);
    case TKV_RAFT_MSG_HEARTBEAT:
        r->election_elapsed = 0;
        r->lease_elapsed = 0;
        r->lead = m->from;
        handle_heartbeat(r, m);
        return 0;
    case TKV_RAFT_MSG_SNAPSHOT:
        r->election_elapsed = 0;
        r->lease_elapsed = 0;
        r->lead = m->from;
        handle_snapshot(r, m);
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
        if (send(r, f))
            r->msgs[r->n_msgs - 1].from = transferee; /* TinyKV: from = transferee */
        return 0;
    }
    case TKV_RAFT_MSG_TIMEOUT_NOW:
        return hup(r, true);
    case TKV_RAFT_MSG_READ_INDEX: {
        if (m->from && m->from != r->id)
            return 0; /* only local requests are forwarded */
        if (!r->lead)
            return TKV_ENOTLEADER;
        struct tkv_raft_msg f = {.type = TKV_RAFT_MSG_READ_INDEX, .to = r->lead, .ctx = m->ctx};
        return send(r, f) ? 0 : TKV_ENOMEM;
    }
    case TKV_RAFT_MSG_READ_INDEX_RESP:
        return push_read_state(r, m->index, m->ctx);
    default:
        return 0;
    }
}

static int step_candidate(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    uint32_t my_resp = r->role == TKV_RAFT_PRE_CANDIDATE ? TKV_RAFT_MSG_PRE_VOTE_RESP
                                                         : TKV_RAFT_MSG_VOTE_RESP;
    switch (m->type) {
    case TKV_RAFT_MSG_PROPOSE:
    case TKV_RAFT_MSG_READ_INDEX:
        return TKV_ENOTLEADER;
    case TKV_RAFT_MSG_APPEND:
        become_follower(r, m->term, m->from);
        r->lease_elapsed = 0;
        return handle_append(r, m);
    case TKV_RAFT_MSG_HEARTBEAT:
        become_follower(r, m->term, m->from);
        r->lease_elapsed = 0;
        handle_heartbeat(r, m);
        return 0;
    case TKV_RAFT_MSG_SNAPSHOT:
        become_follower(r, m->term, m->from);
        r->lease_elapsed = 0;
        handle_snapshot(r, m);
        return 0;
    default:
        break;
    }
    if (m->type != my_resp)
        return 0;
    if (r->role == TKV_RAFT_CANDIDATE)
        TKV_RET(ue_reserve(r, 1)); /* winning appends the no-op */
    int res = poll(r, m->from, !m->reject);
    if (res == 1) {
        if (r->role == TKV_RAFT_PRE_CANDIDATE)
            return campaign(r, false, false);
        become_leader(r);
        bcast_append(r);
    } else if (res == -1) {
        become_follower(r, r->term, 0);
    }
    return 0;
}

/* ---------------------------------------------------------- step */

static bool in_lease(const struct tkv_raft *r)
{
    if (!r->cfg.check_quorum)
        return false;
    if (r->role == TKV_RAFT_LEADER)
        return true;
    /* Count from the last leader contact, or from a restart: a restarted
     * voter may have acknowledged a lease just before it crashed. */
    return r->lease_elapsed < r->cfg.election_tick;
}

static int step_msg(struct tkv_raft *r, const struct tkv_raft_msg *m)
{
    if (m->term == 0) {
        /* local message */
    } else if (m->term > r->term) {
        if (m->type == TKV_RAFT_MSG_VOTE || m->type == TKV_RAFT_MSG_PRE_VOTE) {
            bool force = m->ctx == TKV_RAFT_CTX_TRANSFER;
            if (!force && in_lease(r))
                return 0; /* Raft thesis 4.2.3: ignore disruptive requests */
        }
        if (m->type == TKV_RAFT_MSG_PRE_VOTE) {
            /* never change term for a pre-vote */
        } else if (m->type == TKV_RAFT_MSG_PRE_VOTE_RESP && !m->reject) {
            /* the term is bumped when a pre-vote quorum is reached */
        } else if (m->type == TKV_RAFT_MSG_APPEND || m->type == TKV_RAFT_MSG_HEARTBEAT ||
                   m->type == TKV_RAFT_MSG_SNAPSHOT) {
            become_follower(r, m->term, m->from);
        } else {
            become_follower(r, m->term, 0);
        }
    } else if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == TKV_RAFT_MSG_HEARTBEAT || m->type == TKV_RAFT_MSG_APPEND)) {
            /* Tell a stale leader about our term so it steps down. */
            struct tkv_raft_msg resp = {.type = TKV_RAFT_MSG_APPEND_RESP, .to = m->from};
            send(r, resp);
        } else if (m->type == TKV_RAFT_MSG_PRE_VOTE || m->type == TKV_RAFT_MSG_VOTE) {
            /* Raft paper: reply with our term. A stale candidate whose own
             * voters never contact it (e.g. after a membership change they
             * have not applied) would otherwise never learn it. */
            struct tkv_raft_msg resp = {
                .type = m->type == TKV_RAFT_MSG_VOTE ? TKV_RAFT_MSG_VOTE_RESP
                                                     : TKV_RAFT_MSG_PRE_VOTE_RESP,
                .to = m->from, .term = r->term, .reject = true};
            send(r, resp);
        }
        return 0;
    }

    switch (m->type) {
    case TKV_RAFT_MSG_HUP:
        return hup(r, false);
    case TKV_RAFT_MSG_VOTE:
    case TKV_RAFT_MSG_PRE_VOTE: {
        bool can_vote = r->vote == m->from || (r->vote == 0 && r->lead == 0) ||
                        (m->type == TKV_RAFT_MSG_PRE_VOTE && m->term > r->term);
        uint32_t rt = m->type == TKV_RAFT_MSG_VOTE ? TKV_RAFT_MSG_VOTE_RESP
                                                   : TKV_RAFT_MSG_PRE_VOTE_RESP;
        struct tkv_raft_msg resp = {.type = rt, .to = m->from};
        if (can_vote && is_up_to_date(r, m->index, m->log_term)) {
            resp.term = m->term;
            if (m->type == TKV_RAFT_MSG_VOTE) {
                r->election_elapsed = 0;
                r->vote = m->from;
            }
        } else {
            resp.term = r->term;
            resp.reject = true;
        }
        send(r, resp);
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
        return step_candidate(r, m);
    }
}

static int tick(struct tkv_raft *r)
{
    r->now++;
    if (r->lease_elapsed < UINT32_MAX)
        r->lease_elapsed++;
    if (r->role != TKV_RAFT_LEADER) {
        r->election_elapsed++;
        if (promotable(r) && r->election_elapsed >= r->randomized_timeout) {
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
            pr_become_probe(pr);
    }
    if (r->election_elapsed >= r->cfg.election_tick) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum) {
            if (!quorum_active(r)) {
                become_follower(r, r->term, 0);
                return 0;
            }
            for (uint32_t i = 0; i < r->n_prs; i++)
                if (r->prs[i].id != r->id)
                    r->prs[i].recent_active = false;
        }
        if (r->lead_transferee)
            abort_transfer(r);
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        bcast_heartbeat(r, new_ctx(r));
    }
    return 0;
}

static int apply_conf_change(struct tkv_raft *r, uint32_t type, uint64_t node)
{
    if (node == 0)
        return TKV_EINVAL;
    if (type == TKV_RAFT_CONF_ADD_NODE) {
        if (pr_get(r, node))
            return 0;
        if (r->n_prs == TKV_RAFT_MAX_VOTERS)
            return TKV_EINVAL;
        struct raft_progress *pr = &r->prs[r->n_prs++];
        memset(pr, 0, sizeof(*pr));
        pr->id = node;
        pr->next = log_last(r) + 1;
        pr->recent_active = true;
        r->conf_changed = true;
        if (r->role == TKV_RAFT_LEADER)
            send_append(r, pr, true);
        return 0;
    }
    if (type != TKV_RAFT_CONF_REMOVE_NODE)
        return TKV_EINVAL;
    struct raft_progress *pr = pr_get(r, node);
    if (!pr)
        return 0;
    infl_free_all(pr);
    *pr = r->prs[--r->n_prs];
    memset(&r->prs[r->n_prs], 0, sizeof(r->prs[0]));
    r->conf_changed = true;
    if (r->role != TKV_RAFT_LEADER)
        return 0;
    if (node == r->id) {
        /* Removed leader: hand over to the most caught-up voter, then step
         * down; we can no longer count ourselves in any quorum. */
        struct raft_progress *best = NULL;
        for (uint32_t i = 0; i < r->n_prs; i++)
            if (!best || r->prs[i].match > best->match)
                best = &r->prs[i];
        if (best && best->match == log_last(r))
            send_timeout_now(r, best->id);
        become_follower(r, r->term, 0);
        return 0;
    }
    if (r->lead_transferee == node)
        abort_transfer(r);
    if (maybe_commit(r))
        bcast_append(r);
    advance_reads(r);
    return 0;
}

/* Transport feedback (etcd ReportUnreachable / ReportSnapshot). */
static void report(struct tkv_raft *r, uint32_t type, uint64_t node, bool failed)
{
    struct raft_progress *pr = r->role == TKV_RAFT_LEADER ? pr_get(r, node) : NULL;
    if (!pr || node == r->id)
        return;
    if (type == TKV_RAFT_EV_REPORT_UNREACHABLE) {
        /* the pipeline is broken: stop streaming, probe instead */
        if (pr->state == PR_REPLICATE)
            pr_become_probe(pr);
        return;
    }
    if (pr->state != PR_SNAPSHOT)
        return;
    if (failed)
        pr->pending_snapshot = 0; /* probe from match again */
    pr_become_probe(pr);
    /* Success: wait for the follower's append response. Failure: wait for
     * a heartbeat response before retrying (etcd). */
    pr->probe_sent = true;
}

static void on_persisted(struct tkv_raft *r, tkv_index index, tkv_term term)
{
    if (r->has_usnap || index < r->u_offset || index >= r->u_reported)
        return;
    if (index - r->u_offset >= r->ue_len || ue_at(r, index)->term != term)
        return; /* stale: that entry was overwritten since */
    size_t n = (size_t)(index - r->u_offset + 1);
    entries_unref(r->ue + r->ue_start, n);
    r->ue_start += n;
    r->ue_len -= n;
    r->u_offset = index + 1;
    if (r->ue_len == 0)
        r->ue_start = 0;
    if (r->role == TKV_RAFT_LEADER) {
        struct raft_progress *self = pr_get(r, r->id);
        if (self && pr_maybe_update(self, index) && maybe_commit(r))
            bcast_append(r);
    }
}

/* ---------------------------------------------------------- update */

static void release_update(struct tkv_raft *r)
{
    for (size_t i = 0; i < r->n_out_msgs; i++)
        msg_release(&r->out_msgs[i]);
    r->n_out_msgs = 0;
    entries_unref(r->out_ents, r->n_out_ents);
    r->n_out_ents = 0;
    entries_unref(r->committed_out, r->n_committed_out);
    r->n_committed_out = 0;
    r->n_out_rs = 0;
    tkv_raft_buf_unref(r->out_snap.data);
    memset(&r->out_snap, 0, sizeof(r->out_snap));
    r->outstanding = false;
}

/* Hand out everything produced since the last update (nothing while an
 * update is outstanding: it accumulates for tkv_raft_advance). */
static void build_update(struct tkv_raft *r, struct tkv_raft_update *up)
{
    memset(up, 0, sizeof(*up));
    up->soft_state = (struct tkv_raft_soft_state){.leader = r->lead, .role = r->role};
    if (r->outstanding)
        return;
    /* The new entries are copied (with references) because the unstable
     * tail moves under later events. Without memory for the copy, the
     * entries, the hard state and the messages (which may promise them
     * durable) all wait for a later update. */
    tkv_index last = log_last(r);
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
        const struct tkv_raft_entry *src = ue_at(r, r->u_reported);
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
    tkv_index hi = TKV_MIN(r->committed, persisted_last(r));
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
            log_fill(r, r->emitted + 1, hi + 1, r->cfg.max_committed_bytes, r->committed_out,
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
        rv = leader_propose(r, tmp, n);
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
        rv = leader_propose(r, &e, 1);
        if (rv == 0)
            r->pending_conf_index = log_last(r);
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
            rv = leader_read_index(r, r->id, ev->u.ctx);
        else if (r->role == TKV_RAFT_FOLLOWER)
            rv = step_follower(r, &m);
        else
            rv = TKV_ENOTLEADER;
        break;
    }
    case TKV_RAFT_EV_LOG_PERSISTED:
        on_persisted(r, ev->u.persisted.index, ev->u.persisted.term);
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
        rv = apply_conf_change(r, ev->u.conf_change.change_type, ev->u.conf_change.node_id);
        break;
    case TKV_RAFT_EV_REPORT_UNREACHABLE:
    case TKV_RAFT_EV_REPORT_SNAPSHOT:
        report(r, ev->type, ev->u.report.node, ev->u.report.failed);
        break;
    default:
        rv = TKV_EINVAL;
        break;
    }
    build_update(r, up);
    return rv;
}

void tkv_raft_advance(struct tkv_raft *r, struct tkv_raft_update *up)
{
    release_update(r);
    build_update(r, up);
}

/* ---------------------------------------------------------- lifecycle */

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
    prs_set(r, &cs);
    r->conf_changed = false;
    become_follower(r, r->term, 0);
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
    release_update(r);
    for (size_t i = 0; i < r->n_msgs; i++)
        msg_release(&r->msgs[i]);
    entries_unref(r->ue + r->ue_start, r->ue_len);
    tkv_free(r->ue);
    if (r->has_usnap)
        tkv_raft_buf_unref(r->usnap.data);
    for (uint32_t i = 0; i < r->n_prs; i++)
        infl_free_all(&r->prs[i]);
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
    st->first_index = log_first(r);
    st->last_index = log_last(r);
    st->applied = r->applied;
    st->persisted = persisted_last(r);
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
    return log_term(r, i, term_out);
}

uint32_t tkv_raft_randomized_timeout(const struct tkv_raft *r)
{
    return r->randomized_timeout;
}

void tkv_raft_stats(const struct tkv_raft *r, struct tkv_raft_stats *out)
{
    *out = r->stats;
}
