/* Cluster metadata of the scheduler: cluster id, stores, the key-ordered
 * region tree with its id index, heartbeat processing (processRegionHeartbeat
 * of TinyKV 3C), per-store counters, the ID allocator, the TSO, GC safe
 * point, cluster config, and their persistence in the engine's META column
 * family (see README.md "Durable state"). */
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"
#include "tkv/codec.h"
#include "tkv/engine.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/pb.h"

/* ---- persisted records (META column family) ---- */

#define KEY_CLUSTER_ID "sched/cluster_id"
#define KEY_CONFIG "sched/config"
#define KEY_ALLOC "sched/alloc_bound"
#define KEY_TSO "sched/tso_bound"
#define KEY_GC "sched/gc_safe_point"
#define PREFIX_STORE "sched/store/"
#define PREFIX_REGION "sched/region/"

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static struct tkv_slice id_key(uint8_t *buf, const char *prefix, uint64_t id)
{
    size_t n = strlen(prefix);
    memcpy(buf, prefix, n);
    put_be64(buf + n, id);
    return TKV_SLICE(buf, n + 8);
}

/* ---- write commands: every durable change is one command (a list of META
 * puts and deletes); written to the engine here, or handed to the writer
 * (tkv_sched_options.writer: the replicated scheduler) ---- */

struct sched_cmd {
    uint8_t *p;
    size_t len, cap;
};

static void cmd_bytes(struct sched_cmd *cmd, const void *p, size_t n)
{
    if (cmd->len + n > cmd->cap) {
        size_t cap = cmd->cap ? cmd->cap * 2 : 256;
        while (cap < cmd->len + n)
            cap *= 2;
        cmd->p = tkv_xrealloc(cmd->p, cap);
        cmd->cap = cap;
    }
    if (n)
        memcpy(cmd->p + cmd->len, p, n);
    cmd->len += n;
}

static void cmd_slice(struct sched_cmd *cmd, struct tkv_slice s)
{
    uint8_t n[4];
    tkv_codec_put_u32be(n, (uint32_t)s.len);
    cmd_bytes(cmd, n, 4);
    cmd_bytes(cmd, s.ptr, s.len);
}

static void cmd_put(struct sched_cmd *cmd, struct tkv_slice key, struct tkv_slice value)
{
    uint8_t kind = TKV_SCHED_CMD_PUT;
    cmd_bytes(cmd, &kind, 1);
    cmd_slice(cmd, key);
    cmd_slice(cmd, value);
}

static void cmd_delete(struct sched_cmd *cmd, struct tkv_slice key)
{
    uint8_t kind = TKV_SCHED_CMD_DELETE;
    cmd_bytes(cmd, &kind, 1);
    cmd_slice(cmd, key);
}

static void cmd_free(struct sched_cmd *cmd)
{
    tkv_free(cmd->p);
    memset(cmd, 0, sizeof(*cmd));
}

static bool cmd_read_slice(struct tkv_slice *in, size_t max, struct tkv_slice *out)
{
    if (in->len < 4)
        return false;
    uint32_t n = tkv_codec_get_u32be(in->ptr);
    if (n > max || in->len - 4 < n)
        return false;
    *out = TKV_SLICE(in->ptr + 4, n);
    in->ptr += 4 + n;
    in->len -= 4 + n;
    return true;
}

int tkv_sched_cmd_to_batch(struct tkv_slice cmd, struct tkv_engine_batch *b)
{
    static const char prefix[] = "sched/";
    while (cmd.len) {
        uint8_t kind = cmd.ptr[0];
        struct tkv_slice key, value = TKV_SLICE(NULL, 0);
        cmd.ptr++;
        cmd.len--;
        if (!cmd_read_slice(&cmd, TKV_SCHED_CMD_MAX_KEY, &key) || key.len < sizeof(prefix) - 1 ||
            memcmp(key.ptr, prefix, sizeof(prefix) - 1) != 0)
            return TKV_ECORRUPT;
        if (kind == TKV_SCHED_CMD_PUT) {
            if (!cmd_read_slice(&cmd, TKV_SCHED_CMD_MAX_VALUE, &value) ||
                tkv_engine_batch_put(b, TKV_CF_META, key, value) != 0)
                return TKV_ECORRUPT;
        } else if (kind == TKV_SCHED_CMD_DELETE) {
            if (tkv_engine_batch_delete(b, TKV_CF_META, key) != 0)
                return TKV_ECORRUPT;
        } else {
            return TKV_ECORRUPT;
        }
    }
    return 0;
}

/* Make a command durable: the writer (replicated: it returns once the
 * command is proposed; replies wait for its commit) or the engine. lazy:
 * nothing a client was told depends on it (region metas). */
static int cmd_commit(struct sched_cluster_s *c, const struct sched_cmd *cmd, bool lazy)
{
    struct tkv_engine_batch b;
    int rv;
    if (cmd->len == 0)
        return 0;
    if (c->opts.writer)
        return c->opts.writer(c->opts.writer_ctx, TKV_SLICE(cmd->p, cmd->len), lazy);
    tkv_engine_batch_init(&b);
    rv = tkv_sched_cmd_to_batch(TKV_SLICE(cmd->p, cmd->len), &b);
    if (rv == 0)
        rv = tkv_engine_write(c->sess, &b);
    tkv_engine_batch_close(&b);
    return rv;
}

static int write_u64(struct sched_cluster_s *c, const char *key, uint64_t v)
{
    struct sched_cmd cmd = {0};
    uint8_t b[8];
    int rv;
    if (!c->sess)
        return 0;
    put_be64(b, v);
    cmd_put(&cmd, tkv_pb_str(key), TKV_SLICE(b, 8));
    rv = cmd_commit(c, &cmd, false);
    cmd_free(&cmd);
    return rv;
}

static int read_u64(struct sched_cluster_s *c, const char *key, uint64_t *v, bool *found)
{
    struct tkv_slice val;
    int rv = tkv_engine_get(c->sess, TKV_CF_META, tkv_pb_str(key), &val);
    *found = false;
    if (rv == TKV_ENOTFOUND)
        return 0;
    if (rv)
        return rv;
    if (val.len != 8) {
        TKV_LOG_ERROR("persisted scheduler record has a bad length", TKV_LF_STR("key", key),
                      TKV_LF_U64("len", val.len));
        return TKV_ECORRUPT;
    }
    *v = get_be64(val.ptr);
    *found = true;
    return 0;
}

/* ---- u64 -> pointer hash map (open addressing, backward-shift delete) ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

void sched_map_free(struct sched_map *m)
{
    tkv_free(m->slots);
    memset(m, 0, sizeof(*m));
}

void *sched_map_get(const struct sched_map *m, uint64_t key)
{
    if (!m->cap || key == 0)
        return NULL;
    for (size_t i = mix64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == 0)
            return NULL;
        if (m->slots[i].key == key)
            return m->slots[i].val;
    }
}

static void map_insert_raw(struct sched_map *m, uint64_t key, void *val)
{
    size_t i = mix64(key) & (m->cap - 1);
    while (m->slots[i].key != 0 && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == 0)
        m->n++;
    m->slots[i].key = key;
    m->slots[i].val = val;
}

void sched_map_put(struct sched_map *m, uint64_t key, void *val)
{
    TKV_DASSERT(key != 0);
    if ((m->n + 1) * 4 > m->cap * 3) {
        struct sched_map old = *m;
        m->cap = old.cap ? old.cap * 2 : 64;
        m->slots = tkv_xcalloc(m->cap, sizeof(*m->slots));
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].key)
                map_insert_raw(m, old.slots[i].key, old.slots[i].val);
        tkv_free(old.slots);
    }
    map_insert_raw(m, key, val);
}

void sched_map_del(struct sched_map *m, uint64_t key)
{
    if (!m->cap || key == 0)
        return;
    size_t mask = m->cap - 1, i = mix64(key) & mask;
    while (m->slots[i].key != key) {
        if (m->slots[i].key == 0)
            return;
        i = (i + 1) & mask;
    }
    /* Backward shift: move later entries of the probe run into the hole. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].key == 0)
            break;
        size_t home = mix64(m->slots[j].key) & mask;
        /* Entry j may fill hole i if its home is not in (i, j]. */
        bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].val = NULL;
    m->n--;
}

/* ---- keys ---- */

int sched_key_cmp(struct tkv_slice a, struct tkv_slice b)
{
    size_t n = TKV_MIN(a.len, b.len);
    int r = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (r)
        return r;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* key < end of region (empty end = +inf). */
static bool before_end(struct tkv_slice key, const struct tkv_sched_region *r)
{
    return r->end_key.len == 0 || sched_key_cmp(key, r->end_key) < 0;
}

/* ---- region tree (sorted array by start key) ---- */

/* Index of the last region with start_key <= key, or -1. */
static ptrdiff_t last_start_le(const struct sched_cluster_s *c, struct tkv_slice key)
{
    ptrdiff_t lo = 0, hi = (ptrdiff_t)c->n_tree - 1, ans = -1;
    while (lo <= hi) {
        ptrdiff_t mid = lo + (hi - lo) / 2;
        if (sched_key_cmp(c->tree[mid]->start_key, key) <= 0) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans;
}

size_t tkv_sched_region_seek(const struct tkv_sched_cluster *c, struct tkv_slice key)
{
    ptrdiff_t i = last_start_le(c, key);
    if (i < 0)
        return 0;
    return before_end(key, c->tree[i]) ? (size_t)i : (size_t)i + 1;
}

const struct tkv_sched_region *tkv_sched_region_by_key(const struct tkv_sched_cluster *c,
                                                       struct tkv_slice key)
{
    ptrdiff_t i = last_start_le(c, key);
    if (i < 0 || !before_end(key, c->tree[i]))
        return NULL;
    return c->tree[i];
}

/* The region before the one containing key: PD's GetPrevRegion looks up the
 * region containing key and returns the tree's predecessor of it. With no
 * region containing key we return the region ending at or before key that
 * is closest to it. */
const struct tkv_sched_region *tkv_sched_prev_region(const struct tkv_sched_cluster *c,
                                                     struct tkv_slice key)
{
    ptrdiff_t i = last_start_le(c, key);
    if (i < 0)
        return NULL;
    if (before_end(key, c->tree[i]))
        return i > 0 ? c->tree[i - 1] : NULL;
    return c->tree[i];
}

const struct tkv_sched_region *tkv_sched_region_by_id(const struct tkv_sched_cluster *c,
                                                      uint64_t id)
{
    return sched_map_get(&c->by_id, id);
}

size_t tkv_sched_n_regions(const struct tkv_sched_cluster *c)
{
    return c->n_tree;
}

const struct tkv_sched_region *tkv_sched_region_at(const struct tkv_sched_cluster *c, size_t i)
{
    return i < c->n_tree ? c->tree[i] : NULL;
}

static size_t tree_index_of(const struct sched_cluster_s *c, const struct tkv_sched_region *r)
{
    ptrdiff_t i = last_start_le(c, r->start_key);
    TKV_DASSERT(i >= 0 && c->tree[i] == r);
    return (size_t)i;
}

static void tree_remove_at(struct sched_cluster_s *c, size_t i)
{
    memmove(&c->tree[i], &c->tree[i + 1], (c->n_tree - i - 1) * sizeof(*c->tree));
    c->n_tree--;
}

static void tree_insert_at(struct sched_cluster_s *c, size_t i, struct tkv_sched_region *r)
{
    if (c->n_tree == c->cap_tree) {
        c->cap_tree = c->cap_tree ? c->cap_tree * 2 : 64;
        c->tree = tkv_xrealloc(c->tree, c->cap_tree * sizeof(*c->tree));
    }
    memmove(&c->tree[i + 1], &c->tree[i], (c->n_tree - i) * sizeof(*c->tree));
    c->tree[i] = r;
    c->n_tree++;
}

/* ---- stores ---- */

struct tkv_sched_store *tkv_sched_get_store(struct tkv_sched_cluster *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_stores; i++)
        if (c->stores[i].id == id)
            return &c->stores[i];
    return NULL;
}

size_t tkv_sched_n_stores(const struct tkv_sched_cluster *c)
{
    return c->n_stores;
}

struct tkv_sched_store *tkv_sched_store_at(struct tkv_sched_cluster *c, size_t i)
{
    return i < c->n_stores ? &c->stores[i] : NULL;
}

bool tkv_sched_store_available(const struct tkv_sched_cluster *c, const struct tkv_sched_store *s,
                               uint64_t now_ns)
{
    if (!s || s->state != metapb_StoreState_Up)
        return false;
    return now_ns < s->last_heartbeat_ns ||
           now_ns - s->last_heartbeat_ns <= c->opts.max_store_down_time_ns;
}

void tkv_sched_store_to_pb(struct tkv_arena *arena, const struct tkv_sched_store *s,
                           metapb_Store *out)
{
    memset(out, 0, sizeof(*out));
    out->id = s->id;
    out->address = tkv_pb_str(s->address);
    out->state = (metapb_StoreState)s->state;
    if (s->n_labels) {
        TKV_PB_RESERVE(arena, &out->labels, s->n_labels);
        for (uint32_t i = 0; i < s->n_labels; i++) {
            metapb_StoreLabel *l = TKV_PB_PUSH(arena, &out->labels);
            l->key = tkv_pb_str(s->labels[i].key);
            l->value = tkv_pb_str(s->labels[i].value);
        }
    }
}

/* Copy a pb store into s (validated by the caller's check_store). */
static void store_from_pb(struct tkv_sched_store *s, const metapb_Store *pb)
{
    s->id = pb->id;
    memcpy(s->address, pb->address.ptr, pb->address.len);
    s->address[pb->address.len] = '\0';
    s->state = pb->state;
    s->n_labels = (uint32_t)pb->labels.n;
    for (size_t i = 0; i < pb->labels.n; i++) {
        const metapb_StoreLabel *l = &pb->labels.items[i];
        memcpy(s->labels[i].key, l->key.ptr, l->key.len);
        s->labels[i].key[l->key.len] = '\0';
        memcpy(s->labels[i].value, l->value.ptr, l->value.len);
        s->labels[i].value[l->value.len] = '\0';
    }
}

static bool has_nul(struct tkv_slice s)
{
    return s.len && memchr(s.ptr, '\0', s.len) != NULL;
}

static int check_store(const metapb_Store *st, const char **why)
{
    if (st->id == 0) {
        *why = "store id is 0";
        return TKV_EINVAL;
    }
    if (st->address.len == 0) {
        *why = "store address is empty";
        return TKV_EINVAL;
    }
    if (st->address.len > TKV_SCHED_MAX_ADDR_LEN || has_nul(st->address)) {
        *why = "store address is too long or contains NUL";
        return TKV_EINVAL;
    }
    if (st->state == metapb_StoreState_Tombstone) {
        *why = "a store cannot be registered as Tombstone";
        return TKV_EINVAL;
    }
    if ((unsigned)st->state > metapb_StoreState_Tombstone) {
        *why = "unknown store state";
        return TKV_EINVAL;
    }
    if (st->labels.n > TKV_SCHED_MAX_LABELS) {
        *why = "too many store labels (at most 8)";
        return TKV_EINVAL;
    }
    for (size_t i = 0; i < st->labels.n; i++) {
        const metapb_StoreLabel *l = &st->labels.items[i];
        if (l->key.len == 0 || l->key.len > TKV_SCHED_MAX_LABEL_LEN ||
            l->value.len > TKV_SCHED_MAX_LABEL_LEN || has_nul(l->key) || has_nul(l->value)) {
            *why = "bad store label (empty key, over 128 bytes or NUL)";
            return TKV_EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (sched_key_cmp(st->labels.items[j].key, l->key) == 0) {
                *why = "duplicate store label key";
                return TKV_EINVAL;
            }
    }
    return 0;
}

static int persist_store(struct sched_cluster_s *c, const struct tkv_sched_store *s,
                         struct sched_cmd *cmd)
{
    struct tkv_arena arena;
    metapb_Store pb;
    struct tkv_slice enc;
    uint8_t key[32];
    int rv;

    if (!c->sess)
        return 0;
    tkv_arena_init(&arena, 0);
    tkv_sched_store_to_pb(&arena, s, &pb);
    rv = tkv_pb_encode_arena(metapb_Store_fields, &pb, &arena, 0, &enc);
    if (rv == 0)
        cmd_put(cmd, id_key(key, PREFIX_STORE, s->id), enc);
    tkv_arena_close(&arena);
    return rv;
}

static struct tkv_sched_store *store_append(struct sched_cluster_s *c)
{
    if (c->n_stores == c->cap_stores) {
        c->cap_stores = c->cap_stores ? c->cap_stores * 2 : 16;
        c->stores = tkv_xrealloc(c->stores, c->cap_stores * sizeof(*c->stores));
    }
    struct tkv_sched_store *s = &c->stores[c->n_stores++];
    memset(s, 0, sizeof(*s));
    return s;
}

int tkv_sched_put_store(struct tkv_sched_cluster *c, const metapb_Store *pb, uint64_t now_ns,
                        const char **why)
{
    struct tkv_sched_store tmp, *s;
    int rv;

    rv = check_store(pb, why);
    if (rv)
        return rv;
    s = tkv_sched_get_store(c, pb->id);
    if (s && s->state == metapb_StoreState_Tombstone) {
        *why = "store is a tombstone";
        return TKV_ESTALE;
    }
    for (size_t i = 0; i < c->n_stores; i++) {
        const struct tkv_sched_store *o = &c->stores[i];
        if (o->id != pb->id && o->state != metapb_StoreState_Tombstone &&
            strlen(o->address) == pb->address.len &&
            memcmp(o->address, pb->address.ptr, pb->address.len) == 0) {
            *why = "duplicated store address (another store uses it)";
            return TKV_ECONFLICT;
        }
    }
    memset(&tmp, 0, sizeof(tmp));
    if (s)
        tmp = *s; /* keep stats, counters and state */
    int old_state = s ? s->state : (int)pb->state;
    store_from_pb(&tmp, pb);
    tmp.state = old_state;
    if (!s)
        tmp.last_heartbeat_ns = now_ns;
    struct sched_cmd cmd = {0};
    rv = persist_store(c, &tmp, &cmd);
    if (rv == 0)
        rv = cmd_commit(c, &cmd, false);
    cmd_free(&cmd);
    if (rv) {
        *why = "cannot persist the store";
        return rv;
    }
    if (!s)
        s = store_append(c);
    *s = tmp;
    return 0;
}

int tkv_sched_store_heartbeat(struct tkv_sched_cluster *c, const schedulerpb_StoreStats *st,
                              uint64_t now_ns)
{
    struct tkv_sched_store *s = tkv_sched_get_store(c, st->store_id);
    if (!s)
        return TKV_ENOTFOUND;
    if (s->state == metapb_StoreState_Tombstone)
        return TKV_ESTALE;
    s->capacity = st->capacity;
    s->available = st->available;
    s->used_size = st->used_size;
    s->reported_region_count = st->region_count;
    s->is_busy = st->is_busy;
    s->last_heartbeat_ns = now_ns;
    c->stats.store_heartbeats++;
    return 0;
}

/* ---- per-store counters ---- */

static void count_region(struct sched_cluster_s *c, const struct tkv_sched_region *r, int sign)
{
    for (uint32_t i = 0; i < r->n_peers; i++) {
        struct tkv_sched_store *s = tkv_sched_get_store(c, r->peers[i].store_id);
        if (!s)
            continue;
        s->region_count += (uint64_t)(int64_t)sign;
        s->region_size += (uint64_t)((int64_t)sign * (int64_t)r->approximate_size);
        if (r->leader.id == r->peers[i].id) {
            s->leader_count += (uint64_t)(int64_t)sign;
            s->leader_size += (uint64_t)((int64_t)sign * (int64_t)r->approximate_size);
        }
    }
    for (uint32_t i = 0; i < r->n_pending; i++) {
        struct tkv_sched_store *s = tkv_sched_get_store(c, r->pending[i].store_id);
        if (s)
            s->pending_peer_count += (uint64_t)(int64_t)sign;
    }
}

void tkv_sched_recount(struct tkv_sched_cluster *c)
{
    for (size_t i = 0; i < c->n_stores; i++) {
        struct tkv_sched_store *s = &c->stores[i];
        s->leader_count = s->region_count = s->pending_peer_count = 0;
        s->leader_size = s->region_size = 0;
    }
    for (size_t i = 0; i < c->n_tree; i++)
        count_region(c, c->tree[i], 1);
}

/* ---- region heartbeats ---- */

static void mark_dirty(struct sched_cluster_s *c, uint64_t id)
{
    if (!c->sess)
        return;
    if (c->n_dirty == c->cap_dirty) {
        c->cap_dirty = c->cap_dirty ? c->cap_dirty * 2 : 256;
        c->dirty = tkv_xrealloc(c->dirty, c->cap_dirty * sizeof(*c->dirty));
    }
    c->dirty[c->n_dirty++] = id;
}

static int validate_heartbeat(const schedulerpb_RegionHeartbeatRequest *hb, const char **why)
{
    const metapb_Region *r = &hb->region;
    if (!hb->has_region) {
        *why = "region heartbeat without a region";
        return TKV_EINVAL;
    }
    if (r->id == 0) {
        *why = "region id is 0";
        return TKV_EINVAL;
    }
    if (r->peers.n == 0) {
        *why = "region has no peers";
        return TKV_EINVAL;
    }
    if (r->peers.n > TKV_SCHED_MAX_PEERS) {
        *why = "region has more than 16 peers";
        return TKV_EINVAL;
    }
    if (r->start_key.len > TKV_SCHED_MAX_KEY_LEN || r->end_key.len > TKV_SCHED_MAX_KEY_LEN) {
        *why = "region key over 64 KiB";
        return TKV_EINVAL;
    }
    if (r->end_key.len && sched_key_cmp(r->start_key, r->end_key) >= 0) {
        *why = "region start_key is not below end_key";
        return TKV_EINVAL;
    }
    for (size_t i = 0; i < r->peers.n; i++) {
        const metapb_Peer *p = &r->peers.items[i];
        if (p->id == 0 || p->store_id == 0) {
            *why = "region peer with id 0 or store_id 0";
            return TKV_EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (r->peers.items[j].id == p->id || r->peers.items[j].store_id == p->store_id) {
                *why = "region has two peers with the same id or on the same store";
                return TKV_EINVAL;
            }
    }
    if (!hb->has_leader || hb->leader.id == 0) {
        *why = "region heartbeat without a leader";
        return TKV_EINVAL;
    }
    bool found = false;
    for (size_t i = 0; i < r->peers.n; i++)
        if (r->peers.items[i].id == hb->leader.id &&
            r->peers.items[i].store_id == hb->leader.store_id)
            found = true;
    if (!found) {
        *why = "region leader is not one of its peers";
        return TKV_EINVAL;
    }
    if (hb->pending_peers.n > r->peers.n) {
        *why = "more pending peers than peers";
        return TKV_EINVAL;
    }
    for (size_t i = 0; i < hb->pending_peers.n; i++) {
        bool ok = false;
        for (size_t j = 0; j < r->peers.n; j++)
            if (r->peers.items[j].id == hb->pending_peers.items[i].id &&
                r->peers.items[j].store_id == hb->pending_peers.items[i].store_id)
                ok = true;
        if (!ok) {
            *why = "pending peer is not one of the region's peers";
            return TKV_EINVAL;
        }
    }
    return 0;
}

static struct tkv_sched_region *region_from_hb(const schedulerpb_RegionHeartbeatRequest *hb)
{
    const metapb_Region *pr = &hb->region;
    struct tkv_sched_region *r = tkv_xmalloc(sizeof(*r) + pr->start_key.len + pr->end_key.len + 1);
    uint8_t *keys = (uint8_t *)(r + 1);

    memset(r, 0, sizeof(*r));
    r->id = pr->id;
    if (pr->start_key.len)
        memcpy(keys, pr->start_key.ptr, pr->start_key.len);
    r->start_key = TKV_SLICE(keys, pr->start_key.len);
    if (pr->end_key.len)
        memcpy(keys + pr->start_key.len, pr->end_key.ptr, pr->end_key.len);
    r->end_key = TKV_SLICE(keys + pr->start_key.len, pr->end_key.len);
    r->conf_ver = pr->region_epoch.conf_ver;
    r->version = pr->region_epoch.version;
    r->n_peers = (uint32_t)pr->peers.n;
    for (size_t i = 0; i < pr->peers.n; i++) {
        r->peers[i].id = pr->peers.items[i].id;
        r->peers[i].store_id = pr->peers.items[i].store_id;
    }
    r->leader.id = hb->leader.id;
    r->leader.store_id = hb->leader.store_id;
    r->n_pending = (uint32_t)hb->pending_peers.n;
    for (size_t i = 0; i < hb->pending_peers.n; i++) {
        r->pending[i].id = hb->pending_peers.items[i].id;
        r->pending[i].store_id = hb->pending_peers.items[i].store_id;
    }
    /* MiB, at least 1 (an empty region still costs a replica to move). */
    r->approximate_size = hb->approximate_size >> 20;
    if (r->approximate_size == 0)
        r->approximate_size = 1;
    return r;
}

static bool same_peers(const struct tkv_sched_region *a, const struct tkv_sched_region *b)
{
    if (a->n_peers != b->n_peers)
        return false;
    for (uint32_t i = 0; i < a->n_peers; i++)
        if (a->peers[i].id != b->peers[i].id || a->peers[i].store_id != b->peers[i].store_id)
            return false;
    return true;
}

int tkv_sched_region_heartbeat(struct tkv_sched_cluster *c,
                               const schedulerpb_RegionHeartbeatRequest *hb, bool *updated,
                               const char **why)
{
    const metapb_Region *pr = &hb->region;
    struct tkv_sched_region *origin, *nr;
    size_t i, j;
    int rv;

    if (updated)
        *updated = false;
    c->stats.heartbeats++;
    rv = validate_heartbeat(hb, why);
    if (rv)
        return rv;
    uint64_t version = pr->region_epoch.version, conf_ver = pr->region_epoch.conf_ver;

    origin = sched_map_get(&c->by_id, pr->id);
    if (origin) {
        if (version < origin->version || conf_ver < origin->conf_ver) {
            c->stats.stale_heartbeats++;
            *why = "stale region heartbeat: epoch older than the cached region";
            return TKV_ESTALE;
        }
    } else {
        /* Every cached region the new range overlaps must not be newer. */
        for (i = tkv_sched_region_seek(c, pr->start_key); i < c->n_tree; i++) {
            const struct tkv_sched_region *o = c->tree[i];
            if (pr->end_key.len && sched_key_cmp(o->start_key, pr->end_key) >= 0)
                break;
            if (version < o->version) {
                c->stats.stale_heartbeats++;
                *why = "stale region heartbeat: an overlapping cached region has a newer version";
                return TKV_ESTALE;
            }
        }
    }

    nr = region_from_hb(hb);
    if (origin) {
        bool changed = version > origin->version || conf_ver > origin->conf_ver ||
                       nr->leader.id != origin->leader.id || nr->n_pending || origin->n_pending ||
                       !same_peers(nr, origin) ||
                       nr->approximate_size != origin->approximate_size ||
                       sched_key_cmp(nr->start_key, origin->start_key) != 0 ||
                       sched_key_cmp(nr->end_key, origin->end_key) != 0;
        if (!changed) {
            tkv_free(nr);
            return 0;
        }
    }

    /* Update: take out the old copy, then everything the new range covers. */
    if (origin) {
        count_region(c, origin, -1);
        tree_remove_at(c, tree_index_of(c, origin));
        sched_map_del(&c->by_id, origin->id);
        tkv_free(origin);
    }
    i = tkv_sched_region_seek(c, nr->start_key);
    for (j = i; j < c->n_tree; j++) {
        if (nr->end_key.len && sched_key_cmp(c->tree[j]->start_key, nr->end_key) >= 0)
            break;
    }
    for (size_t k = i; k < j; k++) {
        struct tkv_sched_region *o = c->tree[k];
        count_region(c, o, -1);
        sched_map_del(&c->by_id, o->id);
        mark_dirty(c, o->id);
        TKV_LOG_DEBUG("region overlapped and dropped", TKV_LF_U64("region_id", o->id),
                      TKV_LF_U64("by", nr->id));
        tkv_free(o);
    }
    if (j > i) {
        memmove(&c->tree[i], &c->tree[j], (c->n_tree - j) * sizeof(*c->tree));
        c->n_tree -= j - i;
    }
    tree_insert_at(c, i, nr);
    sched_map_put(&c->by_id, nr->id, nr);
    count_region(c, nr, 1);
    mark_dirty(c, nr->id);
    c->stats.region_updates++;
    if (updated)
        *updated = true;
    return 0;
}

void tkv_sched_region_to_pb(struct tkv_arena *arena, const struct tkv_sched_region *r,
                            metapb_Region *out)
{
    memset(out, 0, sizeof(*out));
    out->id = r->id;
    out->start_key = r->start_key;
    out->end_key = r->end_key;
    out->has_region_epoch = true;
    out->region_epoch.conf_ver = r->conf_ver;
    out->region_epoch.version = r->version;
    TKV_PB_RESERVE(arena, &out->peers, r->n_peers);
    for (uint32_t i = 0; i < r->n_peers; i++) {
        metapb_Peer *p = TKV_PB_PUSH(arena, &out->peers);
        p->id = r->peers[i].id;
        p->store_id = r->peers[i].store_id;
    }
}

/* The heartbeat form of a region: what is persisted and reloaded through the
 * same validation and update path as a live heartbeat. */
static void region_to_hb(struct tkv_arena *arena, const struct tkv_sched_region *r,
                         schedulerpb_RegionHeartbeatRequest *hb)
{
    memset(hb, 0, sizeof(*hb));
    hb->has_region = true;
    tkv_sched_region_to_pb(arena, r, &hb->region);
    hb->has_leader = r->leader.id != 0;
    hb->leader.id = r->leader.id;
    hb->leader.store_id = r->leader.store_id;
    hb->approximate_size = r->approximate_size << 20;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

size_t tkv_sched_dirty_regions(const struct tkv_sched_cluster *c)
{
    return c->n_dirty;
}

int tkv_sched_flush_regions(struct tkv_sched_cluster *c)
{
    struct sched_cmd cmd = {0};
    struct tkv_arena arena;
    uint8_t key[32];
    int rv = 0;

    if (!c->sess || c->n_dirty == 0)
        return 0;
    qsort(c->dirty, c->n_dirty, sizeof(*c->dirty), cmp_u64);
    tkv_arena_init(&arena, 0);
    for (size_t i = 0; i < c->n_dirty && rv == 0; i++) {
        if (i && c->dirty[i] == c->dirty[i - 1])
            continue;
        const struct tkv_sched_region *r = sched_map_get(&c->by_id, c->dirty[i]);
        struct tkv_slice k = id_key(key, PREFIX_REGION, c->dirty[i]);
        if (!r) {
            cmd_delete(&cmd, k);
            continue;
        }
        schedulerpb_RegionHeartbeatRequest hb;
        struct tkv_slice enc;
        region_to_hb(&arena, r, &hb);
        rv = tkv_pb_encode_arena(schedulerpb_RegionHeartbeatRequest_fields, &hb, &arena, 0, &enc);
        if (rv == 0)
            cmd_put(&cmd, k, enc);
    }
    if (rv == 0)
        rv = cmd_commit(c, &cmd, true);
    if (rv == 0)
        c->n_dirty = 0;
    else
        TKV_LOG_WARN("cannot persist region metas; will retry", TKV_LF_U64("regions", c->n_dirty),
                     TKV_LF_ERR(rv));
    cmd_free(&cmd);
    tkv_arena_close(&arena);
    return rv;
}

/* ---- AskSplit ---- */

int tkv_sched_ask_split(struct tkv_sched_cluster *c, const metapb_Region *req,
                        uint64_t *new_region_id, uint64_t *new_peer_ids, size_t *n_new,
                        const char **why)
{
    const struct tkv_sched_region *r;
    int rv;

    if (req->id == 0 || req->peers.n == 0 || req->peers.n > TKV_SCHED_MAX_PEERS) {
        *why = "AskSplit region needs an id and 1..16 peers";
        return TKV_EINVAL;
    }
    r = tkv_sched_region_by_key(c, req->start_key);
    if (!r) {
        *why = "no region at the request's start_key";
        return TKV_EREGION;
    }
    if (r->id != req->id) {
        *why = "region id does not match the region at start_key";
        return TKV_ESTALE;
    }
    if (req->region_epoch.version < r->version || req->region_epoch.conf_ver < r->conf_ver) {
        *why = "region epoch is older than the scheduler's";
        return TKV_ESTALE;
    }
    rv = tkv_sched_alloc_id(c, new_region_id);
    for (size_t i = 0; rv == 0 && i < req->peers.n; i++)
        rv = tkv_sched_alloc_id(c, &new_peer_ids[i]);
    if (rv) {
        *why = "cannot allocate ids";
        return rv;
    }
    *n_new = req->peers.n;
    return 0;
}

/* ---- ids, TSO ---- */

int tkv_sched_alloc_id(struct tkv_sched_cluster *c, uint64_t *id_out)
{
    if (c->id_next > c->id_bound) {
        uint64_t bound = c->id_next - 1 + TKV_SCHED_ID_WINDOW;
        int rv = write_u64(c, KEY_ALLOC, bound);
        if (rv) {
            TKV_LOG_ERROR("cannot persist the id allocator bound", TKV_LF_ERR(rv));
            return rv;
        }
        c->id_bound = bound;
    }
    *id_out = c->id_next++;
    c->stats.ids_allocated++;
    return 0;
}

int tkv_sched_tso(struct tkv_sched_cluster *c, uint32_t count, uint64_t wall_ms,
                  uint64_t save_interval_ms, int64_t *physical, int64_t *logical)
{
    const uint64_t max_logical = 1ull << TKV_SCHED_LOGICAL_BITS;
    uint64_t phys = c->tso_physical, log = c->tso_logical;

    if (count == 0 || count > TKV_SCHED_MAX_TSO_COUNT)
        return TKV_EINVAL;
    if (wall_ms > phys) {
        phys = wall_ms;
        log = 0;
    }
    if (log + count >= max_logical) {
        /* Logical space of this millisecond used up: borrow the next one. */
        phys++;
        log = 0;
    }
    log += count;
    if (phys >= c->tso_bound) {
        uint64_t bound = phys + (save_interval_ms ? save_interval_ms : 3000);
        int rv = write_u64(c, KEY_TSO, bound);
        if (rv) {
            TKV_LOG_ERROR("cannot persist the TSO bound", TKV_LF_ERR(rv));
            return rv;
        }
        c->tso_bound = bound;
    }
    c->tso_physical = phys;
    c->tso_logical = log;
    *physical = (int64_t)phys;
    *logical = (int64_t)log;
    c->stats.tso_requests++;
    c->stats.tso_timestamps += count;
    return 0;
}

/* ---- config, GC safe point ---- */

void tkv_sched_get_config(const struct tkv_sched_cluster *c, metapb_Cluster *out)
{
    memset(out, 0, sizeof(*out));
    out->id = c->cluster_id;
    out->max_peer_count = (uint32_t)c->opts.max_replicas;
}

static int persist_config(struct sched_cluster_s *c, struct sched_cmd *cmd)
{
    metapb_Cluster pb;
    uint8_t buf[64];
    size_t n;
    int rv;

    if (!c->sess)
        return 0;
    tkv_sched_get_config(c, &pb);
    rv = tkv_pb_encode(metapb_Cluster_fields, &pb, buf, sizeof(buf), &n);
    if (rv)
        return rv;
    cmd_put(cmd, tkv_pb_str(KEY_CONFIG), TKV_SLICE(buf, n));
    return 0;
}

int tkv_sched_put_config(struct tkv_sched_cluster *c, const metapb_Cluster *cfg, const char **why)
{
    uint64_t old = c->opts.max_replicas;
    int rv;

    if (cfg->id != 0 && cfg->id != c->cluster_id) {
        *why = "cluster id in the config does not match";
        return TKV_EINVAL;
    }
    if (cfg->max_peer_count > 15) {
        *why = "max_peer_count must be between 1 and 15";
        return TKV_EINVAL;
    }
    if (cfg->max_peer_count)
        c->opts.max_replicas = cfg->max_peer_count;
    struct sched_cmd cmd = {0};
    rv = persist_config(c, &cmd);
    if (rv == 0)
        rv = cmd_commit(c, &cmd, false);
    cmd_free(&cmd);
    if (rv) {
        c->opts.max_replicas = old;
        *why = "cannot persist the cluster config";
    }
    return rv;
}

uint64_t tkv_sched_gc_safe_point(const struct tkv_sched_cluster *c)
{
    return c->gc_safe_point;
}

int tkv_sched_update_gc_safe_point(struct tkv_sched_cluster *c, uint64_t sp, uint64_t *now_out)
{
    if (sp > c->gc_safe_point) {
        int rv = write_u64(c, KEY_GC, sp);
        if (rv)
            return rv;
        c->gc_safe_point = sp;
    }
    *now_out = c->gc_safe_point;
    return 0;
}

/* ---- bootstrap ---- */

bool tkv_sched_is_bootstrapped(const struct tkv_sched_cluster *c)
{
    return c->bootstrapped;
}

uint64_t tkv_sched_cluster_id(const struct tkv_sched_cluster *c)
{
    return c->cluster_id;
}

struct tkv_sched_options *tkv_sched_options(struct tkv_sched_cluster *c)
{
    return &c->opts;
}

int tkv_sched_bootstrap(struct tkv_sched_cluster *c, const metapb_Store *store, uint64_t now_ns,
                        const char **why)
{
    struct tkv_sched_store tmp;
    struct sched_cmd cmd = {0};
    int rv;

    if (c->bootstrapped) {
        *why = "cluster is already bootstrapped";
        return TKV_ECONFLICT;
    }
    rv = check_store(store, why);
    if (rv)
        return rv;
    memset(&tmp, 0, sizeof(tmp));
    store_from_pb(&tmp, store);
    tmp.last_heartbeat_ns = now_ns;
    /* Cluster config and the first store in one atomic write. */
    rv = persist_config(c, &cmd);
    if (rv == 0)
        rv = persist_store(c, &tmp, &cmd);
    if (rv == 0)
        rv = cmd_commit(c, &cmd, false);
    cmd_free(&cmd);
    if (rv) {
        *why = "cannot persist the bootstrap";
        return rv;
    }
    struct tkv_sched_store *s = tkv_sched_get_store(c, tmp.id);
    if (!s)
        s = store_append(c);
    *s = tmp;
    c->bootstrapped = true;
    TKV_LOG_INFO("cluster bootstrapped", TKV_LF_U64("cluster_id", c->cluster_id),
                 TKV_LF_U64("store_id", tmp.id), TKV_LF_STR("address", tmp.address));
    return 0;
}

/* ---- open / close ---- */

static int load_prefix(struct sched_cluster_s *c, const char *prefix, uint64_t now_ns)
{
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    struct tkv_arena arena;
    uint8_t upper[64];
    size_t n = strlen(prefix);
    int rv;

    memcpy(upper, prefix, n);
    upper[n - 1]++; /* prefixes end in '/': the next byte bounds them */
    tkv_arena_init(&arena, 0);
    rv = tkv_engine_snap_open(c->sess, &snap);
    if (rv == 0)
        rv = tkv_engine_iter_open(snap, TKV_CF_META, tkv_pb_str(prefix), TKV_SLICE(upper, n), &it);
    if (rv == 0)
        rv = tkv_engine_iter_seek_first(it);
    while (rv == 0 && tkv_engine_iter_valid(it)) {
        struct tkv_slice v = tkv_engine_iter_value(it);
        const char *why = "";
        tkv_arena_reset(&arena);
        uint8_t *copy = tkv_arena_memdup(&arena, v.ptr, v.len ? v.len : 1);
        if (prefix[6] == 's') { /* "sched/store/" */
            metapb_Store pb;
            rv = tkv_pb_decode(metapb_Store_fields, &pb, copy, v.len, &arena);
            if (rv == 0 && check_store(&pb, &why) == 0) {
                struct tkv_sched_store *s = store_append(c);
                store_from_pb(s, &pb);
                s->state = pb.state;
                s->last_heartbeat_ns = now_ns;
            } else if (rv == 0 && pb.state == metapb_StoreState_Tombstone && pb.id) {
                struct tkv_sched_store *s = store_append(c);
                pb.state = metapb_StoreState_Up;
                store_from_pb(s, &pb);
                s->state = metapb_StoreState_Tombstone;
            } else {
                rv = TKV_ECORRUPT;
            }
        } else {
            schedulerpb_RegionHeartbeatRequest hb;
            rv = tkv_pb_decode(schedulerpb_RegionHeartbeatRequest_fields, &hb, copy, v.len, &arena);
            if (rv == 0)
                rv = tkv_sched_region_heartbeat(c, &hb, NULL, &why);
            if (rv == TKV_ESTALE)
                rv = 0; /* overlapped by a newer one: harmless */
            else if (rv)
                rv = TKV_ECORRUPT;
        }
        if (rv) {
            TKV_LOG_ERROR("persisted scheduler record does not decode",
                          TKV_LF_STR("prefix", prefix), TKV_LF_STR("why", why));
            break;
        }
        rv = tkv_engine_iter_next(it);
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    tkv_arena_close(&arena);
    return rv;
}

int tkv_sched_cluster_open(struct tkv_engine_session *sess, const struct tkv_sched_options *opts,
                           uint64_t wall_ms, uint64_t seed, uint64_t now_ns,
                           struct tkv_sched_cluster **out)
{
    struct sched_cluster_s *c = tkv_xcalloc(1, sizeof(*c));
    uint64_t v;
    bool found;
    int rv = 0;

    c->opts = *opts;
    c->id_next = 1;
    if (!sess) {
        c->cluster_id = seed ? seed : 1;
        *out = c;
        return 0;
    }
    c->sess = sess;
    rv = read_u64(c, KEY_CLUSTER_ID, &v, &found);
    if (rv)
        goto err;
    if (found) {
        c->cluster_id = v;
    } else {
        c->cluster_id = ((wall_ms / 1000) << 32) + (mix64(seed ^ wall_ms) & 0xffffffffu);
        rv = write_u64(c, KEY_CLUSTER_ID, c->cluster_id);
        if (rv)
            goto err;
        TKV_LOG_INFO("new cluster id", TKV_LF_U64("cluster_id", c->cluster_id));
    }
    {
        struct tkv_slice val;
        rv = tkv_engine_get(sess, TKV_CF_META, tkv_pb_str(KEY_CONFIG), &val);
        if (rv == 0) {
            metapb_Cluster pb;
            uint8_t buf[64];
            if (val.len > sizeof(buf)) {
                rv = TKV_ECORRUPT;
                goto err;
            }
            memcpy(buf, val.ptr, val.len);
            rv = tkv_pb_decode(metapb_Cluster_fields, &pb, buf, val.len, NULL);
            if (rv) {
                rv = TKV_ECORRUPT;
                goto err;
            }
            c->bootstrapped = true;
            if (pb.max_peer_count >= 1 && pb.max_peer_count <= 15)
                c->opts.max_replicas = pb.max_peer_count;
        } else if (rv != TKV_ENOTFOUND) {
            goto err;
        }
    }
    rv = read_u64(c, KEY_ALLOC, &v, &found);
    if (rv)
        goto err;
    /* Everything up to the persisted bound may have been handed out. */
    c->id_next = (found ? v : 0) + 1;
    c->id_bound = c->id_next - 1;
    rv = read_u64(c, KEY_TSO, &v, &found);
    if (rv)
        goto err;
    /* Every timestamp handed out had a physical part below the bound. */
    c->tso_physical = found ? v : 0;
    c->tso_logical = 0;
    c->tso_bound = c->tso_physical;
    rv = read_u64(c, KEY_GC, &v, &found);
    if (rv)
        goto err;
    c->gc_safe_point = found ? v : 0;
    rv = load_prefix(c, PREFIX_STORE, now_ns);
    if (rv == 0)
        rv = load_prefix(c, PREFIX_REGION, now_ns);
    if (rv)
        goto err;
    c->n_dirty = 0;
    c->stats = (struct tkv_sched_stats){0};
    TKV_LOG_INFO("scheduler state loaded", TKV_LF_U64("cluster_id", c->cluster_id),
                 TKV_LF_BOOL("bootstrapped", c->bootstrapped), TKV_LF_U64("stores", c->n_stores),
                 TKV_LF_U64("regions", c->n_tree), TKV_LF_U64("next_id", c->id_next),
                 TKV_LF_U64("tso_floor_ms", c->tso_physical));
    *out = c;
    return 0;
err:
    c->sess = NULL;
    tkv_sched_cluster_close(c);
    return rv;
}

void tkv_sched_cluster_close(struct tkv_sched_cluster *c)
{
    if (!c)
        return;
    tkv_sched_flush_regions(c);
    tkv_sched_cluster_drop(c);
}

void tkv_sched_cluster_drop(struct tkv_sched_cluster *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_tree; i++)
        tkv_free(c->tree[i]);
    tkv_free(c->tree);
    sched_map_free(&c->by_id);
    for (size_t i = 0; i < c->ops.cap; i++)
        if (c->ops.slots[i].key)
            tkv_free(c->ops.slots[i].val);
    sched_map_free(&c->ops);
    tkv_free(c->stores);
    tkv_free(c->dirty);
    tkv_free(c);
}

void tkv_sched_get_stats(const struct tkv_sched_cluster *c, struct tkv_sched_stats *out)
{
    *out = c->stats;
}
