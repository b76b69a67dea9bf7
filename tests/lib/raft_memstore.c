/* In-memory raft storage (see raft_memstore.h). Plain malloc on purpose:
 * the failing allocator targets the library, not the harness. */
#include "raft_memstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/err.h"

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

void raft_memstore_init(struct raft_memstore *ms)
{
    memset(ms, 0, sizeof(*ms));
}

void raft_memstore_free(struct raft_memstore *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        tkv_raft_buf_unref(ms->ents[i].data);
    free(ms->ents);
    tkv_raft_buf_unref(ms->snap.data);
    memset(ms, 0, sizeof(*ms));
}

void raft_memstore_clone(struct raft_memstore *dst, const struct raft_memstore *src)
{
    *dst = *src;
    dst->ents = xrealloc(NULL, (src->n + 1) * sizeof(*dst->ents));
    dst->cap = src->n + 1;
    for (size_t i = 0; i < src->n; i++) {
        dst->ents[i] = src->ents[i];
        tkv_raft_buf_ref(dst->ents[i].data);
    }
    tkv_raft_buf_ref(dst->snap.data);
}

tkv_index raft_memstore_last(const struct raft_memstore *ms)
{
    return ms->snap.index + ms->n;
}

void raft_memstore_append(struct raft_memstore *ms, const struct tkv_raft_entry *e, size_t n)
{
    if (n == 0)
        return;
    tkv_index k = e[0].index;
    if (k <= ms->snap.index) {
        /* already covered by the snapshot: skip that prefix */
        size_t skip = (size_t)(ms->snap.index + 1 - k);
        if (skip >= n)
            return;
        e += skip;
        n -= skip;
        k = e[0].index;
    }
    if (k > raft_memstore_last(ms) + 1) {
        fprintf(stderr, "memstore: gap appending %llu after %llu\n", (unsigned long long)k,
                (unsigned long long)raft_memstore_last(ms));
        abort();
    }
    size_t keep = (size_t)(k - ms->snap.index - 1);
    for (size_t i = keep; i < ms->n; i++)
        tkv_raft_buf_unref(ms->ents[i].data);
    ms->n = keep;
    if (ms->n + n > ms->cap) {
        ms->cap = (ms->n + n) * 2;
        ms->ents = xrealloc(ms->ents, ms->cap * sizeof(*ms->ents));
    }
    for (size_t i = 0; i < n; i++) {
        ms->ents[ms->n + i] = e[i];
        tkv_raft_buf_ref(e[i].data);
    }
    ms->n += n;
}

void raft_memstore_apply_snapshot(struct raft_memstore *ms, const struct tkv_raft_snapshot *s)
{
    for (size_t i = 0; i < ms->n; i++)
        tkv_raft_buf_unref(ms->ents[i].data);
    ms->n = 0;
    tkv_raft_buf_ref(s->data);
    tkv_raft_buf_unref(ms->snap.data);
    ms->snap = *s;
}

static int ms_term(void *ctx, tkv_index i, tkv_term *t)
{
    struct raft_memstore *ms = ctx;
    if (i < ms->snap.index)
        return TKV_ECOMPACTED;
    if (i == ms->snap.index) {
        *t = ms->snap.term;
        return 0;
    }
    if (i > raft_memstore_last(ms))
        return TKV_EUNAVAILABLE;
    *t = ms->ents[i - ms->snap.index - 1].term;
    return 0;
}

int raft_memstore_compact(struct raft_memstore *ms, tkv_index index,
                          const struct tkv_raft_conf_state *cs, struct tkv_raft_buf *data)
{
    tkv_term t;
    int rv = ms_term(ms, index, &t);
    if (rv < 0)
        return rv;
    if (index == ms->snap.index)
        return 0;
    size_t drop = (size_t)(index - ms->snap.index);
    for (size_t i = 0; i < drop; i++)
        tkv_raft_buf_unref(ms->ents[i].data);
    memmove(ms->ents, ms->ents + drop, (ms->n - drop) * sizeof(*ms->ents));
    ms->n -= drop;
    tkv_raft_buf_unref(ms->snap.data);
    ms->snap.index = index;
    ms->snap.term = t;
    ms->snap.conf_state = *cs;
    ms->snap.data = tkv_raft_buf_ref(data);
    return 0;
}

static int ms_initial_state(void *ctx, struct tkv_raft_hard_state *hs, struct tkv_raft_conf_state *cs)
{
    struct raft_memstore *ms = ctx;
    *hs = ms->hs;
    *cs = ms->snap.conf_state;
    return 0;
}

static int ms_entries(void *ctx, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                      struct tkv_raft_entry *out, size_t *n_out)
{
    struct raft_memstore *ms = ctx;
    if (lo <= ms->snap.index)
        return TKV_ECOMPACTED;
    if (hi > raft_memstore_last(ms) + 1)
        return TKV_EUNAVAILABLE;
    size_t n = 0;
    uint64_t bytes = 0;
    for (tkv_index i = lo; i < hi; i++) {
        const struct tkv_raft_entry *e = &ms->ents[i - ms->snap.index - 1];
        uint64_t sz = e->data ? e->data->len : 0;
        if (n > 0 && bytes + sz > max_bytes)
            break;
        bytes += sz;
        out[n] = *e;
        tkv_raft_buf_ref(out[n].data);
        n++;
    }
    *n_out = n;
    return 0;
}

static tkv_index ms_first(void *ctx)
{
    struct raft_memstore *ms = ctx;
    return ms->snap.index + 1;
}

static tkv_index ms_last(void *ctx)
{
    return raft_memstore_last(ctx);
}

static int ms_snapshot(void *ctx, struct tkv_raft_snapshot *out)
{
    struct raft_memstore *ms = ctx;
    if (ms->snap_unavailable)
        return TKV_EUNAVAILABLE;
    *out = ms->snap;
    tkv_raft_buf_ref(out->data);
    return 0;
}

struct tkv_raft_storage raft_memstore_storage(struct raft_memstore *ms)
{
    return (struct tkv_raft_storage){
        .ctx = ms,
        .initial_state = ms_initial_state,
        .term = ms_term,
        .entries = ms_entries,
        .first_index = ms_first,
        .last_index = ms_last,
        .snapshot = ms_snapshot,
    };
}
