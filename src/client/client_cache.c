/* The region cache: key -> region (range, epoch, peers, believed leader),
 * kept as an array sorted by start key with no overlaps. Filled from the
 * scheduler's GetRegion answers and from EpochNotMatch's current regions;
 * entries are dropped on region errors. Small (one entry per region the
 * client touched), so binary search plus memmove is enough. */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "tkv/mem.h"

void client_cache_init(struct client_region_cache *c)
{
    memset(c, 0, sizeof *c);
}

static void region_free(struct client_region *r)
{
    if (!r)
        return;
    free(r->start);
    free(r->end);
    free(r->peers);
    free(r);
}

void client_cache_free(struct client_region_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        region_free(c->regions[i]);
    free(c->regions);
    memset(c, 0, sizeof *c);
}

static int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int d = n ? memcmp(a, b, n) : 0;
    if (d)
        return d;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

bool client_region_contains(const struct client_region *r, struct tkv_slice key)
{
    if (cmp_bytes(key.ptr, key.len, r->start, r->start_len) < 0)
        return false;
    return r->end_len == 0 || cmp_bytes(key.ptr, key.len, r->end, r->end_len) < 0;
}

/* Index of the last region whose start <= key, or -1. */
static long last_start_le(const struct client_region_cache *c, const uint8_t *key, size_t len)
{
    long lo = 0, hi = (long)c->n - 1, found = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        const struct client_region *r = c->regions[mid];
        if (cmp_bytes(r->start, r->start_len, key, len) <= 0) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return found;
}

struct client_region *client_cache_find(struct client_region_cache *c, struct tkv_slice key)
{
    long i = last_start_le(c, key.ptr, key.len);
    if (i < 0)
        return NULL;
    struct client_region *r = c->regions[i];
    return client_region_contains(r, key) ? r : NULL;
}

struct client_region *client_cache_find_id(struct client_region_cache *c, uint64_t id)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->regions[i]->id == id)
            return c->regions[i];
    return NULL;
}

static void remove_at(struct client_region_cache *c, size_t i)
{
    region_free(c->regions[i]);
    memmove(&c->regions[i], &c->regions[i + 1], (c->n - i - 1) * sizeof *c->regions);
    c->n--;
}

void client_cache_drop(struct client_region_cache *c, uint64_t region_id)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->regions[i]->id == region_id) {
            remove_at(c, i);
            return;
        }
}

static uint8_t *dup_bytes(struct tkv_slice s)
{
    uint8_t *p = tkv_xmalloc(s.len ? s.len : 1);
    if (s.len)
        memcpy(p, s.ptr, s.len);
    return p;
}

/* Do [as, ae) and [bs, be) overlap? (empty end = +infinity) */
static bool overlaps(const struct client_region *a, const struct client_region *b)
{
    bool a_before_b_end = b->end_len == 0 || cmp_bytes(a->start, a->start_len, b->end, b->end_len) < 0;
    bool b_before_a_end = a->end_len == 0 || cmp_bytes(b->start, b->start_len, a->end, a->end_len) < 0;
    return a_before_b_end && b_before_a_end;
}

struct client_region *client_cache_insert(struct client_region_cache *c, const metapb_Region *m,
                                          const metapb_Peer *leader)
{
    struct client_region *r = tkv_xmalloc(sizeof *r);
    memset(r, 0, sizeof *r);
    r->id = m->id;
    r->start = dup_bytes(m->start_key);
    r->start_len = m->start_key.len;
    r->end = dup_bytes(m->end_key);
    r->end_len = m->end_key.len;
    r->conf_ver = m->region_epoch.conf_ver;
    r->version = m->region_epoch.version;
    r->n_peers = m->peers.n;
    r->peers = tkv_xmalloc((m->peers.n ? m->peers.n : 1) * sizeof *r->peers);
    for (size_t i = 0; i < m->peers.n; i++)
        r->peers[i] = m->peers.items[i];
    if (leader && leader->id)
        r->leader = *leader;

    /* Keep the leader we learned if the same region (same epoch) comes back
     * without one (EpochNotMatch's current regions carry no leader). */
    struct client_region *old = client_cache_find_id(c, r->id);
    if (old && r->leader.id == 0 && old->conf_ver == r->conf_ver)
        r->leader = old->leader;

    for (size_t i = 0; i < c->n;) {
        if (c->regions[i]->id == r->id || overlaps(c->regions[i], r))
            remove_at(c, i);
        else
            i++;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->regions = tkv_xrealloc(c->regions, c->cap * sizeof *c->regions);
    }
    long at = last_start_le(c, r->start, r->start_len) + 1;
    memmove(&c->regions[at + 1], &c->regions[at], ((size_t)((long)c->n - at)) * sizeof *c->regions);
    c->regions[at] = r;
    c->n++;
    return r;
}
