/* The log view: storage below u_offset plus the unstable tail in memory,
 * terms, slices, appends, the commit index and LOG_PERSISTED. */
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

#include "raft_private.h"

tkv_index raft_log_last(const struct tkv_raft *r)
{
    return r->u_offset + r->ue_len - 1;
}

tkv_index raft_log_first(const struct tkv_raft *r)
{
    if (r->has_usnap)
        return r->usnap.index + 1;
    return r->st.first_index(r->st.ctx);
}

struct tkv_raft_entry *raft_ue_at(struct tkv_raft *r, tkv_index i)
{
    return &r->ue[r->ue_start + (size_t)(i - r->u_offset)];
}

int raft_log_term(struct tkv_raft *r, tkv_index i, tkv_term *t)
{
    if (i >= r->u_offset) {
        if (i - r->u_offset >= r->ue_len)
            return TKV_EUNAVAILABLE;
        *t = raft_ue_at(r, i)->term;
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
tkv_term raft_term_or0(struct tkv_raft *r, tkv_index i)
{
    tkv_term t = 0;
    if (raft_log_term(r, i, &t) < 0)
        return 0;
    return t;
}

tkv_term raft_last_term(struct tkv_raft *r)
{
    return raft_term_or0(r, raft_log_last(r));
}

bool raft_match_term(struct tkv_raft *r, tkv_index i, tkv_term t)
{
    tkv_term x;
    if (raft_log_term(r, i, &x) < 0)
        return false;
    return x == t;
}

bool raft_is_up_to_date(struct tkv_raft *r, tkv_index li, tkv_term lt)
{
    tkv_term mine = raft_last_term(r);
    return lt > mine || (lt == mine && li >= raft_log_last(r));
}

void raft_entries_unref(struct tkv_raft_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tkv_raft_buf_unref(e[i].data);
}

/* Copy entries [lo, hi) (payload-limited, at least one) into a new array
 * holding its own references. */
int raft_log_slice(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                   struct tkv_raft_entry **out, size_t *n_out)
{
    int rv;
    *out = NULL;
    *n_out = 0;
    if (lo >= hi)
        return 0;
    if (lo < raft_log_first(r))
        return TKV_ECOMPACTED;
    if (hi > raft_log_last(r) + 1)
        return TKV_EUNAVAILABLE;
    size_t cap = (size_t)(hi - lo);
    struct tkv_raft_entry *e = tkv_malloc(cap * sizeof(*e));
    if (!e)
        return TKV_ENOMEM;
    size_t n = 0;
    rv = raft_log_fill(r, lo, hi, max_bytes, e, &n);
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
int raft_log_fill(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
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
        struct tkv_raft_entry *x = raft_ue_at(r, i);
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

int raft_ue_reserve(struct tkv_raft *r, size_t extra)
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
int raft_log_append(struct tkv_raft *r, const struct tkv_raft_entry *ents, size_t n)
{
    if (n == 0)
        return 0;
    tkv_index k = ents[0].index;
    tkv_assert(k > r->committed && k <= raft_log_last(r) + 1);
    size_t keep = k <= r->u_offset ? 0 : (size_t)(k - r->u_offset);
    /* Reserve room for the final length before dropping anything. */
    if (keep + n > r->ue_len)
        TKV_RET(raft_ue_reserve(r, keep + n - r->ue_len));
    if (keep < r->ue_len) {
        raft_entries_unref(r->ue + r->ue_start + keep, r->ue_len - keep);
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

void raft_commit_to(struct tkv_raft *r, tkv_index c)
{
    tkv_index last = raft_log_last(r);
    if (c > last)
        c = last;
    if (c > r->committed)
        r->committed = c;
}

tkv_index raft_persisted_last(const struct tkv_raft *r)
{
    return r->has_usnap ? 0 : r->u_offset - 1;
}

/* Largest i <= index whose term is <= t (etcd's findConflictByTerm). */
tkv_index raft_find_conflict_by_term(struct tkv_raft *r, tkv_index index, tkv_term t)
{
    for (; index > 0; index--) {
        tkv_term x;
        if (raft_log_term(r, index, &x) < 0)
            return index;
        if (x <= t)
            return index;
    }
    return 0;
}

void raft_on_persisted(struct tkv_raft *r, tkv_index index, tkv_term term)
{
    if (r->has_usnap || index < r->u_offset || index >= r->u_reported)
        return;
    if (index - r->u_offset >= r->ue_len || raft_ue_at(r, index)->term != term)
        return; /* stale: that entry was overwritten since */
    size_t n = (size_t)(index - r->u_offset + 1);
    raft_entries_unref(r->ue + r->ue_start, n);
    r->ue_start += n;
    r->ue_len -= n;
    r->u_offset = index + 1;
    if (r->ue_len == 0)
        r->ue_start = 0;
    if (r->role == TKV_RAFT_LEADER) {
        struct raft_progress *self = raft_pr_get(r, r->id);
        if (self && raft_pr_maybe_update(self, index) && raft_maybe_commit(r))
            raft_bcast_append(r);
    }
}
