/* Engine dispatch: argument checks, write-batch encoding, iterator bounds and
 * lifecycle bookkeeping shared by the WiredTiger and in-memory engines. */
#include <string.h>

#include "engine_private.h"
#include "tkv/err.h"
#include "tkv/mem.h"

atomic_int engine_test_fail_write_at;

static const char *const cf_names[TKV_CF_COUNT] = {"default", "lock", "write", "meta"};

int engine_key_cmp(struct tkv_slice a, struct tkv_slice b)
{
    size_t n = TKV_MIN(a.len, b.len);
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c != 0)
        return c;
    return a.len < b.len ? -1 : (a.len > b.len ? 1 : 0);
}

static void session_check_owner(struct tkv_engine_session *s)
{
#ifdef TKV_DEBUG
    if (!s->has_owner) {
        s->owner = pthread_self();
        s->has_owner = true;
    }
    tkv_assert(pthread_equal(s->owner, pthread_self()));
#else
    (void)s;
#endif
}

int tkv_engine_open(const struct tkv_engine_opts *opts, struct tkv_engine **e_out)
{
    if (opts == NULL || e_out == NULL)
        return TKV_EINVAL;
    switch (opts->kind) {
    case TKV_ENGINE_WT:
        return engine_wt_open(opts, e_out);
    case TKV_ENGINE_MEM:
        return engine_mem_open(opts, e_out);
    }
    return TKV_EINVAL;
}

void tkv_engine_close(struct tkv_engine *e)
{
    if (e == NULL)
        return;
    tkv_assert(atomic_load(&e->n_sessions) == 0);
    e->vt->close(e);
}

int tkv_engine_checkpoint(struct tkv_engine *e)
{
    return e->vt->checkpoint(e);
}

uint64_t tkv_engine_disk_headroom(const struct tkv_engine_opts *opts)
{
    if (opts == NULL || opts->kind != TKV_ENGINE_WT)
        return 0;
    return engine_wt_disk_headroom(opts);
}

uint64_t tkv_engine_restart_space(const struct tkv_engine_opts *opts)
{
    if (opts == NULL || opts->kind != TKV_ENGINE_WT)
        return 0;
    return engine_wt_restart_space(opts);
}

enum tkv_engine_kind tkv_engine_kind_of(const struct tkv_engine *e)
{
    return e->kind;
}

bool tkv_engine_is_sync(const struct tkv_engine *e)
{
    return e->sync;
}

int tkv_engine_mem_crash(struct tkv_engine *e)
{
    if (e->vt->mem_crash == NULL)
        return TKV_EUNIMPL;
    tkv_assert(atomic_load(&e->n_sessions) == 0);
    return e->vt->mem_crash(e);
}

int tkv_engine_session_open(struct tkv_engine *e, struct tkv_engine_session **s_out)
{
    struct tkv_engine_session *s = NULL;
    int rv = e->vt->session_open(e, &s);
    if (rv < 0)
        return rv;
    s->engine = e;
    s->n_snaps = 0;
#ifdef TKV_DEBUG
    s->has_owner = false;
#endif
    atomic_fetch_add(&e->n_sessions, 1);
    *s_out = s;
    return 0;
}

void tkv_engine_session_close(struct tkv_engine_session *s)
{
    if (s == NULL)
        return;
    struct tkv_engine *e = s->engine;
    tkv_assert(s->n_snaps == 0);
    e->vt->session_close(s);
    atomic_fetch_sub(&e->n_sessions, 1);
}

int tkv_engine_cf_from_name(struct tkv_slice name, enum tkv_cf *cf_out)
{
    if (name.len == 0) {
        *cf_out = TKV_CF_DEFAULT;
        return 0;
    }
    for (int i = 0; i < TKV_CF_COUNT; i++) {
        if (i == TKV_CF_META)
            continue;
        size_t n = strlen(cf_names[i]);
        if (name.len == n && memcmp(name.ptr, cf_names[i], n) == 0) {
            *cf_out = (enum tkv_cf)i;
            return 0;
        }
    }
    return TKV_ECF;
}

const char *tkv_engine_cf_name(enum tkv_cf cf)
{
    return engine_cf_valid(cf) ? cf_names[cf] : "?";
}

int tkv_engine_get(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key,
                   struct tkv_slice *value_out)
{
    if (!engine_cf_valid(cf))
        return TKV_ECF;
    if (key.len == 0)
        return TKV_ENOTFOUND;
    session_check_owner(s);
    return s->engine->vt->get(s, cf, key, value_out);
}

/* ---- batches ----------------------------------------------------------- */

/* Record layout: type u8, cf u8, key_len u32, value_len u32, key, value.
 * Host byte order: a batch never leaves the process. */
#define BATCH_HDR 10u

void tkv_engine_batch_init(struct tkv_engine_batch *b)
{
    memset(b, 0, sizeof(*b));
}

void tkv_engine_batch_close(struct tkv_engine_batch *b)
{
    tkv_free(b->buf);
    memset(b, 0, sizeof(*b));
}

void tkv_engine_batch_clear(struct tkv_engine_batch *b)
{
    b->len = 0;
    b->n_ops = 0;
    b->data_bytes = 0;
}

static int batch_append(struct tkv_engine_batch *b, enum engine_op_type type, enum tkv_cf cf,
                        struct tkv_slice key, struct tkv_slice value)
{
    if (!engine_cf_valid(cf))
        return TKV_ECF;
    size_t need = b->len + BATCH_HDR + key.len + value.len;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        b->buf = tkv_xrealloc(b->buf, cap);
        b->cap = cap;
    }
    uint8_t *p = b->buf + b->len;
    uint32_t kl = (uint32_t)key.len, vl = (uint32_t)value.len;
    p[0] = (uint8_t)type;
    p[1] = (uint8_t)cf;
    memcpy(p + 2, &kl, 4);
    memcpy(p + 6, &vl, 4);
    if (key.len)
        memcpy(p + BATCH_HDR, key.ptr, key.len);
    if (value.len)
        memcpy(p + BATCH_HDR + key.len, value.ptr, value.len);
    b->len = need;
    b->n_ops++;
    b->data_bytes += key.len + value.len;
    return 0;
}

int tkv_engine_batch_put(struct tkv_engine_batch *b, enum tkv_cf cf, struct tkv_slice key,
                         struct tkv_slice value)
{
    if (key.len == 0)
        return TKV_EINVAL;
    if (key.len > TKV_ENGINE_KEY_MAX || value.len > TKV_ENGINE_VALUE_MAX)
        return TKV_ETOOBIG;
    return batch_append(b, ENGINE_OP_PUT, cf, key, value);
}

int tkv_engine_batch_delete(struct tkv_engine_batch *b, enum tkv_cf cf, struct tkv_slice key)
{
    if (key.len == 0)
        return TKV_EINVAL;
    if (key.len > TKV_ENGINE_KEY_MAX)
        return TKV_ETOOBIG;
    return batch_append(b, ENGINE_OP_DELETE, cf, key, TKV_SLICE(NULL, 0));
}

int tkv_engine_batch_delete_range(struct tkv_engine_batch *b, enum tkv_cf cf,
                                  struct tkv_slice start, struct tkv_slice end)
{
    if (start.len > TKV_ENGINE_KEY_MAX || end.len > TKV_ENGINE_KEY_MAX)
        return TKV_ETOOBIG;
    return batch_append(b, ENGINE_OP_DELETE_RANGE, cf, start, end);
}

int tkv_engine_write(struct tkv_engine_session *s, const struct tkv_engine_batch *b)
{
    if (b->n_ops == 0)
        return 0;
    session_check_owner(s);
    /* Small batches (the common raw put, an apply of a few keys) decode on
     * the stack. */
    struct engine_op stack_ops[16];
    struct engine_op *ops =
        b->n_ops <= TKV_ARRAY_LEN(stack_ops) ? stack_ops : tkv_xmalloc(b->n_ops * sizeof(*ops));
    size_t off = 0;
    for (size_t i = 0; i < b->n_ops; i++) {
        const uint8_t *p = b->buf + off;
        uint32_t kl, vl;
        memcpy(&kl, p + 2, 4);
        memcpy(&vl, p + 6, 4);
        ops[i].type = (enum engine_op_type)p[0];
        ops[i].cf = (enum tkv_cf)p[1];
        ops[i].key = TKV_SLICE(p + BATCH_HDR, kl);
        ops[i].value = TKV_SLICE(p + BATCH_HDR + kl, vl);
        off += BATCH_HDR + kl + vl;
    }
    tkv_assert(off == b->len);
    int rv = s->engine->vt->write(s, ops, b->n_ops);
    if (ops != stack_ops)
        tkv_free(ops);
    return rv;
}

static int write_one(struct tkv_engine_session *s, enum engine_op_type type, enum tkv_cf cf,
                     struct tkv_slice key, struct tkv_slice value)
{
    if (!engine_cf_valid(cf))
        return TKV_ECF;
    if (key.len == 0 && type != ENGINE_OP_DELETE_RANGE)
        return TKV_EINVAL;
    if (key.len > TKV_ENGINE_KEY_MAX || value.len > TKV_ENGINE_VALUE_MAX)
        return TKV_ETOOBIG;
    struct engine_op op = {.type = type, .cf = cf, .key = key, .value = value};
    session_check_owner(s);
    return s->engine->vt->write(s, &op, 1);
}

int tkv_engine_put(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key,
                   struct tkv_slice value)
{
    return write_one(s, ENGINE_OP_PUT, cf, key, value);
}

int tkv_engine_delete(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key)
{
    return write_one(s, ENGINE_OP_DELETE, cf, key, TKV_SLICE(NULL, 0));
}

int tkv_engine_delete_range(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice start,
                            struct tkv_slice end)
{
    return write_one(s, ENGINE_OP_DELETE_RANGE, cf, start, end);
}

/* ---- snapshots and iterators ------------------------------------------- */

int tkv_engine_snap_open(struct tkv_engine_session *s, struct tkv_engine_snap **snap_out)
{
    struct tkv_engine_snap *snap = NULL;
    session_check_owner(s);
    int rv = s->engine->vt->snap_open(s, &snap);
    if (rv < 0)
        return rv;
    snap->session = s;
    snap->n_iters = 0;
    s->n_snaps++;
    *snap_out = snap;
    return 0;
}

void tkv_engine_snap_close(struct tkv_engine_snap *snap)
{
    if (snap == NULL)
        return;
    struct tkv_engine_session *s = snap->session;
    tkv_assert(snap->n_iters == 0);
    s->engine->vt->snap_close(snap);
    s->n_snaps--;
}

int tkv_engine_snap_get(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_slice key,
                        struct tkv_slice *value_out)
{
    if (!engine_cf_valid(cf))
        return TKV_ECF;
    if (key.len == 0)
        return TKV_ENOTFOUND;
    return snap->session->engine->vt->snap_get(snap, cf, key, value_out);
}

static const struct engine_vtable *iter_vt(const struct tkv_engine_iter *it)
{
    return it->snap->session->engine->vt;
}

int tkv_engine_iter_open(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_slice lower,
                         struct tkv_slice upper, struct tkv_engine_iter **it_out)
{
    if (!engine_cf_valid(cf))
        return TKV_ECF;
    struct tkv_engine_iter *it = NULL;
    int rv = snap->session->engine->vt->iter_open(snap, cf, &it);
    if (rv < 0)
        return rv;
    it->snap = snap;
    it->cf = cf;
    it->lower = lower.len ? tkv_xmemdup(lower.ptr, lower.len) : NULL;
    it->lower_len = lower.len;
    it->upper = upper.len ? tkv_xmemdup(upper.ptr, upper.len) : NULL;
    it->upper_len = upper.len;
    it->valid = false;
    snap->n_iters++;
    *it_out = it;
    return 0;
}

void tkv_engine_iter_close(struct tkv_engine_iter *it)
{
    if (it == NULL)
        return;
    struct tkv_engine_snap *snap = it->snap;
    tkv_free(it->lower);
    tkv_free(it->upper);
    iter_vt(it)->iter_close(it);
    snap->n_iters--;
}

/* Apply the bounds after a primitive moved the cursor. */
static int iter_clamp(struct tkv_engine_iter *it, int rv)
{
    if (rv < 0) {
        it->valid = false;
        return rv;
    }
    if (!it->valid)
        return 0;
    if (it->upper_len && engine_key_cmp(it->key, TKV_SLICE(it->upper, it->upper_len)) >= 0)
        it->valid = false;
    else if (it->lower_len && engine_key_cmp(it->key, TKV_SLICE(it->lower, it->lower_len)) < 0)
        it->valid = false;
    return 0;
}

int tkv_engine_iter_seek(struct tkv_engine_iter *it, struct tkv_slice key)
{
    struct tkv_slice lower = TKV_SLICE(it->lower, it->lower_len);
    if (engine_key_cmp(key, lower) < 0)
        key = lower;
    if (it->upper_len && engine_key_cmp(key, TKV_SLICE(it->upper, it->upper_len)) >= 0) {
        it->valid = false;
        return 0;
    }
    return iter_clamp(it, iter_vt(it)->iter_seek_ge(it, key));
}

int tkv_engine_iter_seek_first(struct tkv_engine_iter *it)
{
    return tkv_engine_iter_seek(it, TKV_SLICE(it->lower, it->lower_len));
}

int tkv_engine_iter_seek_last(struct tkv_engine_iter *it)
{
    if (it->upper_len)
        return iter_clamp(it, iter_vt(it)->iter_seek_lt(it, TKV_SLICE(it->upper, it->upper_len)));
    return iter_clamp(it, iter_vt(it)->iter_seek_last(it));
}

int tkv_engine_iter_next(struct tkv_engine_iter *it)
{
    tkv_assert(it->valid);
    return iter_clamp(it, iter_vt(it)->iter_next(it));
}

int tkv_engine_iter_prev(struct tkv_engine_iter *it)
{
    tkv_assert(it->valid);
    return iter_clamp(it, iter_vt(it)->iter_prev(it));
}

bool tkv_engine_iter_valid(const struct tkv_engine_iter *it)
{
    return it->valid;
}

struct tkv_slice tkv_engine_iter_key(const struct tkv_engine_iter *it)
{
    tkv_assert(it->valid);
    return it->key;
}

struct tkv_slice tkv_engine_iter_value(const struct tkv_engine_iter *it)
{
    tkv_assert(it->valid);
    return it->value;
}
