/* MVCC records and reads over the three Percolator CFs (TINYKV-API.md 2.2):
 * lock and write record codecs, EncodeKey helpers, the write list, and the
 * readers that find a key's lock, visible value and own/newest write. */
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/txn.h"
#include "txn_private.h"

bool tkv_txn_kind_valid(uint8_t kind)
{
    return kind == TKV_TXN_KIND_PUT || kind == TKV_TXN_KIND_DELETE ||
           kind == TKV_TXN_KIND_ROLLBACK || kind == TKV_TXN_KIND_LOCK;
}

struct tkv_slice tkv_txn_lock_encode(struct tkv_arena *arena, const struct tkv_txn_lock *lock)
{
    size_t n = lock->primary.len + TKV_TXN_LOCK_FIXED;
    uint8_t *p = tkv_arena_alloc(arena, n);
    if (lock->primary.len)
        memcpy(p, lock->primary.ptr, lock->primary.len);
    uint8_t *q = p + lock->primary.len;
    q[0] = lock->kind;
    tkv_codec_put_u64be(q + 1, lock->ts);
    tkv_codec_put_u64be(q + 9, lock->ttl);
    return TKV_SLICE(p, n);
}

/* The last 17 bytes are fixed; everything before them is the primary key
 * (which may be empty: TinyKV's tests store such locks). */
int tkv_txn_lock_decode(struct tkv_slice in, struct tkv_txn_lock *lock_out)
{
    if (in.len < TKV_TXN_LOCK_FIXED)
        return TKV_ECORRUPT;
    const uint8_t *q = in.ptr + in.len - TKV_TXN_LOCK_FIXED;
    if (!tkv_txn_kind_valid(q[0]))
        return TKV_ECORRUPT;
    lock_out->primary = TKV_SLICE(in.ptr, in.len - TKV_TXN_LOCK_FIXED);
    lock_out->kind = q[0];
    lock_out->ts = tkv_codec_get_u64be(q + 1);
    lock_out->ttl = tkv_codec_get_u64be(q + 9);
    return 0;
}

void tkv_txn_write_encode(const struct tkv_txn_write *w, uint8_t out[TKV_TXN_WRITE_LEN])
{
    out[0] = w->kind;
    tkv_codec_put_u64be(out + 1, w->start_ts);
}

int tkv_txn_write_decode(struct tkv_slice in, struct tkv_txn_write *w_out)
{
    if (in.len != TKV_TXN_WRITE_LEN || !tkv_txn_kind_valid(in.ptr[0]))
        return TKV_ECORRUPT;
    w_out->kind = in.ptr[0];
    w_out->start_ts = tkv_codec_get_u64be(in.ptr + 1);
    return 0;
}

struct tkv_slice tkv_txn_encode_key(struct tkv_arena *arena, struct tkv_slice key, tkv_ts ts)
{
    size_t n = tkv_codec_encoded_key_len(key.len);
    uint8_t *p = tkv_arena_alloc(arena, n);
    size_t w = tkv_codec_encode_key(p, key.ptr, key.len, ts);
    tkv_assert(w == n);
    return TKV_SLICE(p, n);
}

int tkv_txn_decode_key(struct tkv_arena *arena, struct tkv_slice enc, struct tkv_slice *key_out,
                       tkv_ts *ts_out)
{
    uint8_t *p = tkv_arena_alloc(arena, tkv_codec_decoded_bytes_max(enc.len) + 1);
    size_t n;
    tkv_ts ts;
    if (tkv_codec_decode_key(enc.ptr, enc.len, p, &n, &ts) != 0)
        return TKV_ECORRUPT;
    *key_out = TKV_SLICE(p, n);
    *ts_out = ts;
    return 0;
}

/* EncodeBytes(key) ‖ FF×8 ‖ 00: just above every version of key in the
 * write/default CF (EncodeKey(key, 0) ends in FF×8 and no encoding is a
 * prefix of another), so an iterator bounded by it never leaves the key. */
struct tkv_slice txn_versions_end(struct tkv_arena *arena, struct tkv_slice key)
{
    size_t n = tkv_codec_encoded_key_len(key.len);
    uint8_t *p = tkv_arena_alloc(arena, n + 1);
    tkv_codec_encode_key(p, key.ptr, key.len, 0);
    p[n] = 0;
    return TKV_SLICE(p, n + 1);
}

/* ---- the write list ---- */

static void push(struct tkv_txn_mvcc *m, enum tkv_cf cf, bool is_delete, struct tkv_slice key,
                 struct tkv_slice value)
{
    struct tkv_txn_writes *w = &m->writes;
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 8;
        w->items =
            tkv_arena_grow(m->arena, w->items, w->cap * sizeof(*w->items), cap * sizeof(*w->items));
        w->cap = cap;
    }
    w->items[w->n++] = (struct tkv_txn_modify){
        .cf = cf,
        .is_delete = is_delete,
        .key = key,
        .value = value,
    };
}

static struct tkv_slice dup(struct tkv_arena *arena, struct tkv_slice s)
{
    return TKV_SLICE(s.len ? tkv_arena_memdup(arena, s.ptr, s.len) : NULL, s.len);
}

int tkv_txn_writes_to_batch(const struct tkv_txn_writes *w, struct tkv_engine_batch *b)
{
    int rv;
    for (size_t i = 0; i < w->n; i++) {
        const struct tkv_txn_modify *op = &w->items[i];
        rv = op->is_delete ? tkv_engine_batch_delete(b, op->cf, op->key)
                           : tkv_engine_batch_put(b, op->cf, op->key, op->value);
        if (rv != 0)
            return rv;
    }
    return 0;
}

void tkv_txn_mvcc_init(struct tkv_txn_mvcc *m, struct tkv_engine_snap *snap,
                       struct tkv_arena *arena, tkv_ts start_ts)
{
    memset(m, 0, sizeof(*m));
    m->snap = snap;
    m->arena = arena;
    m->start_ts = start_ts;
}

void tkv_txn_put_lock(struct tkv_txn_mvcc *m, struct tkv_slice key, const struct tkv_txn_lock *l)
{
    push(m, TKV_CF_LOCK, false, dup(m->arena, key), tkv_txn_lock_encode(m->arena, l));
}

void tkv_txn_delete_lock(struct tkv_txn_mvcc *m, struct tkv_slice key)
{
    push(m, TKV_CF_LOCK, true, dup(m->arena, key), TKV_SLICE(NULL, 0));
}

void tkv_txn_put_value(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_slice value)
{
    push(m, TKV_CF_DEFAULT, false, tkv_txn_encode_key(m->arena, key, m->start_ts),
         dup(m->arena, value));
}

void tkv_txn_delete_value(struct tkv_txn_mvcc *m, struct tkv_slice key)
{
    push(m, TKV_CF_DEFAULT, true, tkv_txn_encode_key(m->arena, key, m->start_ts),
         TKV_SLICE(NULL, 0));
}

void tkv_txn_put_write(struct tkv_txn_mvcc *m, struct tkv_slice key, tkv_ts commit_ts,
                       const struct tkv_txn_write *w)
{
    uint8_t *v = tkv_arena_alloc(m->arena, TKV_TXN_WRITE_LEN);
    tkv_txn_write_encode(w, v);
    push(m, TKV_CF_WRITE, false, tkv_txn_encode_key(m->arena, key, commit_ts),
         TKV_SLICE(v, TKV_TXN_WRITE_LEN));
}

/* ---- reads ---- */

int txn_read_lock(struct tkv_engine_snap *snap, struct tkv_arena *arena, struct tkv_slice key,
                  struct tkv_txn_lock *lock_out, bool *found)
{
    struct tkv_slice v;
    int rv;

    *found = false;
    if (key.len == 0)
        return 0; /* the engine cannot hold an empty key */
    rv = tkv_engine_snap_get(snap, TKV_CF_LOCK, key, &v);
    if (rv == TKV_ENOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    TKV_RET(tkv_txn_lock_decode(v, lock_out));
    lock_out->primary = dup(arena, lock_out->primary);
    *found = true;
    return 0;
}

int tkv_txn_get_lock(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_txn_lock *lock_out,
                     bool *found)
{
    return txn_read_lock(m->snap, m->arena, key, lock_out, found);
}

/* Walk key's write records from EncodeKey(key, from_ts) towards older ones,
 * calling visit(record, commit_ts) until it returns non-zero (1 = stop,
 * found; negative = error). Returns 0 when the versions ran out. */
typedef int (*version_visit_fn)(void *arg, const struct tkv_txn_write *w, tkv_ts commit_ts);

static int txn_walk_versions(struct tkv_engine_snap *snap, struct tkv_arena *arena,
                             struct tkv_slice key, tkv_ts from_ts, version_visit_fn visit,
                             void *arg)
{
    struct tkv_engine_iter *it = NULL;
    struct tkv_slice lower = tkv_txn_encode_key(arena, key, from_ts);
    struct tkv_slice upper = txn_versions_end(arena, key);
    int rv;

    TKV_ERR(tkv_engine_iter_open(snap, TKV_CF_WRITE, lower, upper, &it));
    TKV_ERR(tkv_engine_iter_seek(it, lower));
    rv = 0;
    while (rv == 0 && tkv_engine_iter_valid(it)) {
        struct tkv_slice k = tkv_engine_iter_key(it);
        struct tkv_txn_write w;
        if (k.len < 8) {
            rv = TKV_ECORRUPT;
            break;
        }
        TKV_ERR(tkv_txn_write_decode(tkv_engine_iter_value(it), &w));
        rv = visit(arg, &w, tkv_codec_key_ts(k.ptr, k.len));
        if (rv == 0)
            TKV_ERR(tkv_engine_iter_next(it));
    }
err:
    tkv_engine_iter_close(it);
    return rv < 0 ? rv : 0;
}

struct found_write {
    struct tkv_txn_write w;
    tkv_ts commit_ts;
    tkv_ts start_ts; /* for current_write */
    bool found;
};

/* The visible version: Put decides, Delete decides (absent), Rollback and
 * Lock records are skipped (they never change the key's value). */
static int visit_visible(void *arg, const struct tkv_txn_write *w, tkv_ts commit_ts)
{
    struct found_write *f = arg;
    if (w->kind == TKV_TXN_KIND_ROLLBACK || w->kind == TKV_TXN_KIND_LOCK)
        return 0;
    f->w = *w;
    f->commit_ts = commit_ts;
    f->found = true;
    return 1;
}

int txn_read_value(struct tkv_engine_snap *snap, struct tkv_arena *arena, struct tkv_slice key,
                   tkv_ts ts, struct tkv_slice *value_out, bool *found)
{
    struct found_write f = {0};
    struct tkv_slice v;
    int rv;

    *found = false;
    TKV_RET(txn_walk_versions(snap, arena, key, ts, visit_visible, &f));
    if (!f.found || f.w.kind == TKV_TXN_KIND_DELETE)
        return 0;
    rv =
        tkv_engine_snap_get(snap, TKV_CF_DEFAULT, tkv_txn_encode_key(arena, key, f.w.start_ts), &v);
    if (rv == TKV_ENOTFOUND)
        return TKV_ECORRUPT; /* a committed put without its value */
    if (rv != 0)
        return rv;
    *value_out = dup(arena, v);
    *found = true;
    return 0;
}

int tkv_txn_get_value(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_slice *value_out,
                      bool *found)
{
    return txn_read_value(m->snap, m->arena, key, m->start_ts, value_out, found);
}

static int visit_current(void *arg, const struct tkv_txn_write *w, tkv_ts commit_ts)
{
    struct found_write *f = arg;
    if (commit_ts < f->start_ts)
        return 1; /* older than the txn: it cannot have committed here */
    if (w->start_ts != f->start_ts)
        return 0;
    f->w = *w;
    f->commit_ts = commit_ts;
    f->found = true;
    return 1;
}

int tkv_txn_current_write(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_txn_write *w_out,
                          tkv_ts *commit_ts_out, bool *found)
{
    struct found_write f = {.start_ts = m->start_ts};
    TKV_RET(txn_walk_versions(m->snap, m->arena, key, TKV_TXN_TS_MAX, visit_current, &f));
    *found = f.found;
    if (f.found) {
        *w_out = f.w;
        *commit_ts_out = f.commit_ts;
    }
    return 0;
}

static int visit_newest(void *arg, const struct tkv_txn_write *w, tkv_ts commit_ts)
{
    struct found_write *f = arg;
    f->w = *w;
    f->commit_ts = commit_ts;
    f->found = true;
    return 1;
}

int tkv_txn_most_recent_write(struct tkv_txn_mvcc *m, struct tkv_slice key,
                              struct tkv_txn_write *w_out, tkv_ts *commit_ts_out, bool *found)
{
    struct found_write f = {0};
    TKV_RET(txn_walk_versions(m->snap, m->arena, key, TKV_TXN_TS_MAX, visit_newest, &f));
    *found = f.found;
    if (f.found) {
        *w_out = f.w;
        *commit_ts_out = f.commit_ts;
    }
    return 0;
}
