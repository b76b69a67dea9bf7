/* The in-memory index: regions in an open-addressing hash map (it shrinks as
 * regions go), each with an array of entry locations, and the one function
 * that gives a log record its meaning (used by commit and by recovery). */
#include <errno.h>

#include "raftlog_private.h"
#include "tkv/err.h"
#include "tkv/mem.h"

static size_t slot_of(tkv_region_id id, size_t cap)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

struct rl_region *raftlog_map_get(const struct rl_map *m, tkv_region_id id)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = slot_of(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
        struct rl_region *r = m->slots[i];
        if (r == NULL)
            return NULL;
        if (r->id == id)
            return r;
    }
}

static void map_put(struct rl_region **slots, size_t cap, struct rl_region *r)
{
    size_t i = slot_of(r->id, cap);
    while (slots[i] != NULL)
        i = (i + 1) & (cap - 1);
    slots[i] = r;
}

static void map_resize(struct rl_map *m, size_t cap)
{
    struct rl_region **slots = tkv_xcalloc(cap, sizeof(*slots));
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i] != NULL)
            map_put(slots, cap, m->slots[i]);
    tkv_free(m->slots);
    m->slots = slots;
    m->cap = cap;
}

struct rl_region *raftlog_map_add(struct rl_map *m, tkv_region_id id)
{
    if ((m->n + 1) * 4 > m->cap * 3)
        map_resize(m, m->cap ? m->cap * 2 : 16);
    struct rl_region *r = tkv_xcalloc(1, sizeof(*r));
    r->id = id;
    r->first = 1;
    r->s_first = 1;
    r->s_last = 0;
    map_put(m->slots, m->cap, r);
    m->n++;
    return r;
}

void raftlog_map_del(struct rl_map *m, tkv_region_id id)
{
    if (m->cap == 0)
        return;
    size_t i = slot_of(id, m->cap);
    while (m->slots[i] != NULL && m->slots[i]->id != id)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i] == NULL)
        return;
    m->slots[i] = NULL;
    m->n--;
    /* Backward-shift deletion: no tombstones, so lookups stay short. */
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j] != NULL; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m->slots[j]->id, m->cap);
        bool between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!between) {
            m->slots[i] = m->slots[j];
            m->slots[j] = NULL;
            i = j;
        }
    }
    if (m->cap > 16 && m->n * 8 < m->cap)
        map_resize(m, m->cap / 2);
}

void raftlog_region_free(struct rl_region *r)
{
    if (r == NULL)
        return;
    tkv_free(r->ents);
    tkv_free(r);
}

void raftlog_map_free(struct rl_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        raftlog_region_free(m->slots[i]);
    tkv_free(m->slots);
    memset(m, 0, sizeof(*m));
}

void raftlog_region_restage(struct rl_region *r)
{
    r->s_first = r->first;
    r->s_last = r->first + r->count - 1;
}

/* Keep the array compact: slide live entries down when the dead prefix is
 * large, shrink when mostly empty. */
static void ents_tidy(struct rl_region *r)
{
    if (r->count == 0) {
        r->head = 0;
        if (r->cap > 64) {
            tkv_free(r->ents);
            r->ents = NULL;
            r->cap = 0;
        }
        return;
    }
    if (r->head > r->count) {
        memmove(r->ents, r->ents + r->head, r->count * sizeof(*r->ents));
        r->head = 0;
    }
    if (r->cap > 64 && r->head + r->count < r->cap / 4) {
        r->cap /= 2;
        r->ents = tkv_xrealloc(r->ents, r->cap * sizeof(*r->ents));
    }
}

static struct rl_ent *ents_push(struct rl_region *r)
{
    if (r->head + r->count == r->cap) {
        if (r->head > 0 && r->head >= r->cap / 2) {
            memmove(r->ents, r->ents + r->head, r->count * sizeof(*r->ents));
            r->head = 0;
        } else {
            r->cap = r->cap ? r->cap * 2 : 8;
            r->ents = tkv_xrealloc(r->ents, r->cap * sizeof(*r->ents));
        }
    }
    return &r->ents[r->head + r->count++];
}

static void region_truncate(struct rl_region *r, uint64_t from)
{
    if (from < r->first)
        from = r->first;
    if (from < r->first + r->count)
        r->count = from - r->first;
}

static void region_compact(struct rl_region *r, uint64_t upto)
{
    if (upto < r->first)
        return;
    uint64_t drop = upto + 1 - r->first;
    if (drop >= r->count) {
        r->count = 0;
        r->head = 0;
    } else {
        r->head += (size_t)drop;
        r->count -= drop;
    }
    r->first = upto + 1;
    if (r->want_compact <= upto)
        r->want_compact = 0;
}

/* The term kept for first-1 is tied to its index (snap_index), so a first
 * index set otherwise (or a transient state while recovery replays a log
 * whose oldest segments were purged) never makes it lie. */
static void set_first(struct rl_region *r, uint64_t first)
{
    r->first = first;
}

static int bad(const char *what)
{
    (void)what;
    return TKV_ECORRUPT;
}

int raftlog_apply_record(struct tkv_raftlog *log, uint32_t seg, uint64_t rec_off,
                         const uint8_t *rec, bool pending)
{
    uint32_t len = rl_get32(rec + 4);
    uint8_t type = rec[8];
    tkv_region_id id = rl_get64(rec + 12);
    const uint8_t *p = rec + RL_REC_HDR;
    struct rl_region *r = raftlog_map_get(&log->regions, id);

    switch (type) {
    case RL_REC_APPEND: {
        if (len < RL_APPEND_FIXED)
            return bad("append too short");
        uint64_t start = rl_get64(p);
        uint32_t n = rl_get32(p + 8);
        uint32_t flags = rl_get32(p + 12);
        size_t pos = RL_APPEND_FIXED;
        if ((flags & 1) && len < pos + RL_HS_BYTES)
            return bad("append hard state");
        /* Validate the whole payload before touching the index. */
        size_t q = pos + ((flags & 1) ? RL_HS_BYTES : 0);
        for (uint32_t i = 0; i < n; i++) {
            if (len - q < RL_ENT_FIXED)
                return bad("entry header");
            uint32_t dl = rl_get32(p + q + 12);
            if (len - q - RL_ENT_FIXED < dl)
                return bad("entry data");
            q += RL_ENT_FIXED + dl;
        }
        if (q != len)
            return bad("append length");
        if (r == NULL)
            r = raftlog_map_add(&log->regions, id);
        if (flags & 1) {
            r->has_hs = true;
            r->hs.term = rl_get64(p + pos);
            r->hs.vote = rl_get64(p + pos + 8);
            r->hs.commit = rl_get64(p + pos + 16);
            r->hs_seg = seg;
            pos += RL_HS_BYTES;
        }
        if (n == 0 && r->count == 0 && start != 0)
            set_first(r, start);
        if (n > 0) {
            if (r->count == 0 || start < r->first || start > r->first + r->count) {
                /* Empty region (any start), or a record written after a
                 * remove/compaction the staged view allowed: start afresh. */
                r->count = 0;
                r->head = 0;
                set_first(r, start);
            } else {
                region_truncate(r, start);
            }
            for (uint32_t i = 0; i < n; i++) {
                struct rl_ent *e = ents_push(r);
                uint32_t dl = rl_get32(p + pos + 12);
                e->term = rl_get64(p + pos);
                e->type = rl_get32(p + pos + 8);
                e->len = dl;
                e->seg = seg;
                e->off = (uint32_t)(rec_off + RL_REC_HDR + pos + RL_ENT_FIXED);
                pos += RL_ENT_FIXED + dl;
            }
        }
        break;
    }
    case RL_REC_TRUNCATE:
        if (len != 16)
            return bad("truncate length");
        if (r == NULL)
            r = raftlog_map_add(&log->regions, id);
        region_truncate(r, rl_get64(p));
        if (r->count == 0)
            set_first(r, rl_get64(p + 8));
        ents_tidy(r);
        break;
    case RL_REC_COMPACT:
        if (len != 16)
            return bad("compact length");
        if (r == NULL)
            r = raftlog_map_add(&log->regions, id);
        /* Compaction points only grow in a region's life; keep the newest
         * even when it is a no-op here (recovery of a log whose oldest
         * segments are purged starts from a partial state). */
        if (r->snap_seg == 0 || rl_get64(p) >= r->snap_index) {
            r->snap_index = rl_get64(p);
            r->snap_term = rl_get64(p + 8);
            r->snap_seg = seg;
        }
        region_compact(r, rl_get64(p));
        ents_tidy(r);
        break;
    case RL_REC_REMOVE:
        if (len != 0)
            return bad("remove length");
        if (r == NULL)
            r = raftlog_map_add(&log->regions, id);
        tkv_free(r->ents);
        r->ents = NULL;
        r->cap = r->head = 0;
        r->count = 0;
        r->first = 1;
        r->has_hs = false;
        r->want_compact = 0;
        r->snap_term = 0;
        r->snap_index = 0;
        r->snap_seg = 0;
        break;
    default:
        return bad("record type");
    }
    r->last_seg = seg;
    if (pending) {
        tkv_assert(r->n_pending > 0);
        r->n_pending--;
    } else {
        raftlog_region_restage(r);
    }
    if (rl_region_dead(r)) {
        raftlog_map_del(&log->regions, id);
        raftlog_region_free(r);
    }
    return 0;
}
