/* The ordered in-memory engine: one persistent (path-copying) treap per CF.
 * A write builds new roots and publishes them under a mutex, so a snapshot is
 * just a reference to the roots of the moment and never sees later writes. */
#include <pthread.h>
#include <string.h>

#include "engine_private.h"
#include "tkv/err.h"
#include "tkv/mem.h"

/* Key and value bytes, shared by every tree version that holds them. */
struct mem_kv {
    atomic_uint rc;
    uint32_t klen;
    uint32_t vlen;
    uint8_t data[];
};

/* An immutable treap node. Priorities are a hash of the key, so the tree
 * shape depends only on the key set: runs are deterministic, and a key keeps
 * its priority when its value is replaced. Nodes are shared between versions
 * and freed when the last version referencing them drops (atomic counts:
 * snapshots may be released on another thread than the writer's). */
struct mem_node {
    atomic_uint rc;
    uint32_t prio;
    struct mem_kv *kv;
    struct mem_node *l;
    struct mem_node *r;
};

struct mem_engine {
    struct tkv_engine base;
    pthread_mutex_t write_mu; /* serialises writers for the whole tree build */
    pthread_mutex_t mu;       /* guards root[] and durable[] (the pointers, not the trees) */
    struct mem_node *root[TKV_CF_COUNT];
    struct mem_node *durable[TKV_CF_COUNT]; /* crash image (sync=false) */
};

struct mem_session {
    struct tkv_engine_session base;
    struct mem_kv *held; /* backs the last tkv_engine_get() result */
};

struct mem_snap {
    struct tkv_engine_snap base;
    struct mem_node *root[TKV_CF_COUNT];
};

struct mem_iter {
    struct tkv_engine_iter base;
    struct mem_node *root; /* borrowed from the snapshot */
    struct mem_node *cur;
};

static const struct engine_vtable mem_vt;

/* ---- treap primitives --------------------------------------------------- */

static struct tkv_slice kv_key(const struct mem_kv *kv)
{
    return TKV_SLICE(kv->data, kv->klen);
}

static struct tkv_slice kv_value(const struct mem_kv *kv)
{
    return TKV_SLICE(kv->data + kv->klen, kv->vlen);
}

static struct mem_kv *kv_new(struct tkv_slice key, struct tkv_slice value)
{
    struct mem_kv *kv = tkv_xmalloc(sizeof(*kv) + key.len + value.len);
    atomic_init(&kv->rc, 1);
    kv->klen = (uint32_t)key.len;
    kv->vlen = (uint32_t)value.len;
    if (key.len)
        memcpy(kv->data, key.ptr, key.len);
    if (value.len)
        memcpy(kv->data + key.len, value.ptr, value.len);
    return kv;
}

static struct mem_kv *kv_ref(struct mem_kv *kv)
{
    atomic_fetch_add_explicit(&kv->rc, 1, memory_order_relaxed);
    return kv;
}

static void kv_unref(struct mem_kv *kv)
{
    if (kv && atomic_fetch_sub_explicit(&kv->rc, 1, memory_order_acq_rel) == 1)
        tkv_free(kv);
}

static uint32_t key_prio(struct tkv_slice key)
{
    uint32_t h = 2166136261u; /* FNV-1a, then a murmur3 finalizer to mix */
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ key.ptr[i]) * 16777619u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static struct mem_node *node_ref(struct mem_node *n)
{
    if (n)
        atomic_fetch_add_explicit(&n->rc, 1, memory_order_relaxed);
    return n;
}

static void node_unref(struct mem_node *n)
{
    while (n && atomic_fetch_sub_explicit(&n->rc, 1, memory_order_acq_rel) == 1) {
        struct mem_node *r = n->r;
        kv_unref(n->kv);
        node_unref(n->l);
        tkv_free(n);
        n = r;
    }
}

/* A new node; takes ownership of the kv reference and both children. */
static struct mem_node *node_make(struct mem_kv *kv, uint32_t prio, struct mem_node *l,
                                  struct mem_node *r)
{
    struct mem_node *n = tkv_xmalloc(sizeof(*n));
    atomic_init(&n->rc, 1);
    n->prio = prio;
    n->kv = kv;
    n->l = l;
    n->r = r;
    return n;
}

/* A copy of t with new children (owned); shares t's kv. */
static struct mem_node *node_copy(const struct mem_node *t, struct mem_node *l, struct mem_node *r)
{
    return node_make(kv_ref(t->kv), t->prio, l, r);
}

static struct mem_node *tr_find(struct mem_node *t, struct tkv_slice key)
{
    while (t) {
        int c = engine_key_cmp(key, kv_key(t->kv));
        if (c == 0)
            return t;
        t = c < 0 ? t->l : t->r;
    }
    return NULL;
}

/* Split borrowed t into owned l (keys < key) and r (keys >= key). */
static void tr_split(struct mem_node *t, struct tkv_slice key, struct mem_node **l,
                     struct mem_node **r)
{
    if (t == NULL) {
        *l = *r = NULL;
        return;
    }
    struct mem_node *a, *b;
    if (engine_key_cmp(kv_key(t->kv), key) < 0) {
        tr_split(t->r, key, &a, &b);
        *l = node_copy(t, node_ref(t->l), a);
        *r = b;
    } else {
        tr_split(t->l, key, &a, &b);
        *l = a;
        *r = node_copy(t, b, node_ref(t->r));
    }
}

/* Merge borrowed a and b (every key of a < every key of b); returns owned. */
static struct mem_node *tr_merge(struct mem_node *a, struct mem_node *b)
{
    if (a == NULL)
        return node_ref(b);
    if (b == NULL)
        return node_ref(a);
    if (a->prio >= b->prio)
        return node_copy(a, node_ref(a->l), tr_merge(a->r, b));
    return node_copy(b, tr_merge(a, b->l), node_ref(b->r));
}

/* Insert or replace; t borrowed, kv owned; returns an owned new root. */
static struct mem_node *tr_insert(struct mem_node *t, struct mem_kv *kv, uint32_t prio)
{
    if (t == NULL)
        return node_make(kv, prio, NULL, NULL);
    int c = engine_key_cmp(kv_key(kv), kv_key(t->kv));
    if (c == 0)
        return node_make(kv, t->prio, node_ref(t->l), node_ref(t->r));
    if (prio > t->prio) {
        /* Heap order: the key cannot be below t (its node would have to
         * sit above every lower-priority ancestor), so a split is clean. */
        struct mem_node *l, *r;
        tr_split(t, kv_key(kv), &l, &r);
        return node_make(kv, prio, l, r);
    }
    if (c < 0)
        return node_copy(t, tr_insert(t->l, kv, prio), node_ref(t->r));
    return node_copy(t, node_ref(t->l), tr_insert(t->r, kv, prio));
}

/* Remove a key known to be present; t borrowed; returns owned. */
static struct mem_node *tr_delete(struct mem_node *t, struct tkv_slice key)
{
    tkv_assert(t != NULL);
    int c = engine_key_cmp(key, kv_key(t->kv));
    if (c == 0)
        return tr_merge(t->l, t->r);
    if (c < 0)
        return node_copy(t, tr_delete(t->l, key), node_ref(t->r));
    return node_copy(t, node_ref(t->l), tr_delete(t->r, key));
}

/* Remove [start, end) (end.len == 0: to the end); t borrowed; returns owned. */
static struct mem_node *tr_delete_range(struct mem_node *t, struct tkv_slice start,
                                        struct tkv_slice end)
{
    if (end.len && engine_key_cmp(start, end) >= 0)
        return node_ref(t);
    struct mem_node *a, *b, *c = NULL, *d = NULL;
    tr_split(t, start, &a, &b);
    if (end.len)
        tr_split(b, end, &c, &d);
    struct mem_node *out = tr_merge(a, d);
    node_unref(a);
    node_unref(b);
    node_unref(c);
    node_unref(d);
    return out;
}

/* Smallest node with key >= k (or > k when strict). */
static struct mem_node *tr_ceil(struct mem_node *t, struct tkv_slice k, bool strict)
{
    struct mem_node *best = NULL;
    while (t) {
        int c = engine_key_cmp(kv_key(t->kv), k);
        if (c > 0 || (c == 0 && !strict)) {
            best = t;
            t = t->l;
        } else {
            t = t->r;
        }
    }
    return best;
}

/* Largest node with key < k. */
static struct mem_node *tr_floor_lt(struct mem_node *t, struct tkv_slice k)
{
    struct mem_node *best = NULL;
    while (t) {
        if (engine_key_cmp(kv_key(t->kv), k) < 0) {
            best = t;
            t = t->r;
        } else {
            t = t->l;
        }
    }
    return best;
}

/* ---- engine ------------------------------------------------------------- */

int engine_mem_open(const struct tkv_engine_opts *opts, struct tkv_engine **e_out)
{
    struct mem_engine *me = tkv_xcalloc(1, sizeof(*me));
    me->base.vt = &mem_vt;
    me->base.kind = TKV_ENGINE_MEM;
    me->base.sync = opts->sync;
    atomic_init(&me->base.n_sessions, 0);
    pthread_mutex_init(&me->write_mu, NULL);
    pthread_mutex_init(&me->mu, NULL);
    *e_out = &me->base;
    return 0;
}

static void mem_close(struct tkv_engine *e)
{
    struct mem_engine *me = (struct mem_engine *)e;
    for (int i = 0; i < TKV_CF_COUNT; i++) {
        node_unref(me->root[i]);
        node_unref(me->durable[i]);
    }
    pthread_mutex_destroy(&me->mu);
    pthread_mutex_destroy(&me->write_mu);
    tkv_free(me);
}

static int mem_checkpoint(struct tkv_engine *e)
{
    struct mem_engine *me = (struct mem_engine *)e;
    struct mem_node *old[TKV_CF_COUNT];
    pthread_mutex_lock(&me->mu);
    for (int i = 0; i < TKV_CF_COUNT; i++) {
        old[i] = me->durable[i];
        me->durable[i] = node_ref(me->root[i]);
    }
    pthread_mutex_unlock(&me->mu);
    for (int i = 0; i < TKV_CF_COUNT; i++)
        node_unref(old[i]);
    return 0;
}

static int mem_crash(struct tkv_engine *e)
{
    struct mem_engine *me = (struct mem_engine *)e;
    if (me->base.sync)
        return 0; /* every acknowledged write was durable */
    pthread_mutex_lock(&me->mu);
    for (int i = 0; i < TKV_CF_COUNT; i++) {
        node_unref(me->root[i]);
        me->root[i] = node_ref(me->durable[i]);
    }
    pthread_mutex_unlock(&me->mu);
    return 0;
}

static int mem_session_open(struct tkv_engine *e, struct tkv_engine_session **s_out)
{
    (void)e;
    struct mem_session *ms = tkv_xcalloc(1, sizeof(*ms));
    *s_out = &ms->base;
    return 0;
}

static void mem_session_close(struct tkv_engine_session *s)
{
    struct mem_session *ms = (struct mem_session *)s;
    kv_unref(ms->held);
    tkv_free(ms);
}

static int mem_get(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key,
                   struct tkv_slice *value_out)
{
    struct mem_session *ms = (struct mem_session *)s;
    struct mem_engine *me = (struct mem_engine *)s->engine;
    kv_unref(ms->held);
    ms->held = NULL;
    pthread_mutex_lock(&me->mu);
    struct mem_node *n = tr_find(me->root[cf], key);
    if (n)
        ms->held = kv_ref(n->kv);
    pthread_mutex_unlock(&me->mu);
    if (ms->held == NULL)
        return TKV_ENOTFOUND;
    *value_out = kv_value(ms->held);
    return 0;
}

static int mem_write(struct tkv_engine_session *s, const struct engine_op *ops, size_t n_ops)
{
    struct mem_engine *me = (struct mem_engine *)s->engine;
    struct mem_node *work[TKV_CF_COUNT];

    /* Build the new version privately, then publish all CFs at once: the
     * batch is atomic, and readers (who take only mu, briefly) never wait
     * for the tree work. write_mu serialises batches: the last one wins, as
     * in WiredTiger's commit order. */
    pthread_mutex_lock(&me->write_mu);
    pthread_mutex_lock(&me->mu);
    for (int i = 0; i < TKV_CF_COUNT; i++)
        work[i] = node_ref(me->root[i]);
    pthread_mutex_unlock(&me->mu);
    for (size_t i = 0; i < n_ops; i++) {
        const struct engine_op *op = &ops[i];
        struct mem_node *t = work[op->cf], *nt = NULL;
        if (engine_test_fail(i)) {
            for (int j = 0; j < TKV_CF_COUNT; j++)
                node_unref(work[j]);
            pthread_mutex_unlock(&me->write_mu);
            return TKV_EENGINE;
        }
        switch (op->type) {
        case ENGINE_OP_PUT:
            nt = tr_insert(t, kv_new(op->key, op->value), key_prio(op->key));
            break;
        case ENGINE_OP_DELETE:
            if (tr_find(t, op->key) == NULL)
                continue;
            nt = tr_delete(t, op->key);
            break;
        case ENGINE_OP_DELETE_RANGE:
            nt = tr_delete_range(t, op->key, op->value);
            break;
        }
        node_unref(t);
        work[op->cf] = nt;
    }
    pthread_mutex_lock(&me->mu);
    for (int i = 0; i < TKV_CF_COUNT; i++) {
        struct mem_node *old = me->root[i];
        me->root[i] = work[i];
        work[i] = old;
    }
    if (me->base.sync)
        for (int i = 0; i < TKV_CF_COUNT; i++) {
            node_unref(me->durable[i]);
            me->durable[i] = node_ref(me->root[i]);
        }
    pthread_mutex_unlock(&me->mu);
    pthread_mutex_unlock(&me->write_mu);
    for (int i = 0; i < TKV_CF_COUNT; i++)
        node_unref(work[i]);
    return 0;
}

static int mem_snap_open(struct tkv_engine_session *s, struct tkv_engine_snap **snap_out)
{
    struct mem_engine *me = (struct mem_engine *)s->engine;
    struct mem_snap *sn = tkv_xcalloc(1, sizeof(*sn));
    pthread_mutex_lock(&me->mu);
    for (int i = 0; i < TKV_CF_COUNT; i++)
        sn->root[i] = node_ref(me->root[i]);
    pthread_mutex_unlock(&me->mu);
    *snap_out = &sn->base;
    return 0;
}

static void mem_snap_close(struct tkv_engine_snap *snap)
{
    struct mem_snap *sn = (struct mem_snap *)snap;
    for (int i = 0; i < TKV_CF_COUNT; i++)
        node_unref(sn->root[i]);
    tkv_free(sn);
}

static int mem_snap_get(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_slice key,
                        struct tkv_slice *value_out)
{
    struct mem_snap *sn = (struct mem_snap *)snap;
    struct mem_node *n = tr_find(sn->root[cf], key);
    if (n == NULL)
        return TKV_ENOTFOUND;
    *value_out = kv_value(n->kv); /* lives as long as the snapshot */
    return 0;
}

static int mem_iter_open(struct tkv_engine_snap *snap, enum tkv_cf cf,
                         struct tkv_engine_iter **it_out)
{
    struct mem_iter *mi = tkv_xcalloc(1, sizeof(*mi));
    mi->root = ((struct mem_snap *)snap)->root[cf];
    *it_out = &mi->base;
    return 0;
}

static void mem_iter_close(struct tkv_engine_iter *it)
{
    tkv_free(it);
}

/* Each step is a fresh O(log n) descent from the root: no parent stack to
 * keep, and direction changes are free. */
static int mem_iter_set(struct mem_iter *mi, struct mem_node *n)
{
    mi->cur = n;
    mi->base.valid = n != NULL;
    if (n) {
        mi->base.key = kv_key(n->kv);
        mi->base.value = kv_value(n->kv);
    }
    return 0;
}

static int mem_iter_seek_ge(struct tkv_engine_iter *it, struct tkv_slice key)
{
    struct mem_iter *mi = (struct mem_iter *)it;
    return mem_iter_set(mi, tr_ceil(mi->root, key, false));
}

static int mem_iter_seek_lt(struct tkv_engine_iter *it, struct tkv_slice key)
{
    struct mem_iter *mi = (struct mem_iter *)it;
    return mem_iter_set(mi, tr_floor_lt(mi->root, key));
}

static int mem_iter_seek_last(struct tkv_engine_iter *it)
{
    struct mem_iter *mi = (struct mem_iter *)it;
    struct mem_node *n = mi->root;
    while (n && n->r)
        n = n->r;
    return mem_iter_set(mi, n);
}

static int mem_iter_next(struct tkv_engine_iter *it)
{
    struct mem_iter *mi = (struct mem_iter *)it;
    return mem_iter_set(mi, tr_ceil(mi->root, kv_key(mi->cur->kv), true));
}

static int mem_iter_prev(struct tkv_engine_iter *it)
{
    struct mem_iter *mi = (struct mem_iter *)it;
    return mem_iter_set(mi, tr_floor_lt(mi->root, kv_key(mi->cur->kv)));
}

static const struct engine_vtable mem_vt = {
    .close = mem_close,
    .checkpoint = mem_checkpoint,
    .mem_crash = mem_crash,
    .session_open = mem_session_open,
    .session_close = mem_session_close,
    .get = mem_get,
    .write = mem_write,
    .snap_open = mem_snap_open,
    .snap_close = mem_snap_close,
    .snap_get = mem_snap_get,
    .iter_open = mem_iter_open,
    .iter_close = mem_iter_close,
    .iter_seek_ge = mem_iter_seek_ge,
    .iter_seek_lt = mem_iter_seek_lt,
    .iter_seek_last = mem_iter_seek_last,
    .iter_next = mem_iter_next,
    .iter_prev = mem_iter_prev,
};
