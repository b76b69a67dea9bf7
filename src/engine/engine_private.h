/* Internal contract between the engine dispatcher (engine.c) and its two
 * implementations (engine_wt.c, engine_mem.c): the vtable, the common head of
 * every public object, and the decoded form of a write batch. */
#ifndef TKV_ENGINE_PRIVATE_H
#define TKV_ENGINE_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>

#include "tkv/engine.h"

enum engine_op_type {
    ENGINE_OP_PUT = 1,
    ENGINE_OP_DELETE = 2,
    ENGINE_OP_DELETE_RANGE = 3, /* key = start, value = end (len 0: unbounded) */
};

/* One decoded batch operation; slices borrow the batch buffer (or the
 * caller's arguments for the one-op conveniences). */
struct engine_op {
    enum engine_op_type type;
    enum tkv_cf cf;
    struct tkv_slice key;
    struct tkv_slice value;
};

struct engine_vtable {
    void (*close)(struct tkv_engine *e);
    int (*checkpoint)(struct tkv_engine *e);
    int (*mem_crash)(struct tkv_engine *e);

    int (*session_open)(struct tkv_engine *e, struct tkv_engine_session **s_out);
    void (*session_close)(struct tkv_engine_session *s);
    int (*get)(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key,
               struct tkv_slice *value_out);
    /* Apply ops atomically; ops are validated (cf in range) by the caller. */
    int (*write)(struct tkv_engine_session *s, const struct engine_op *ops, size_t n_ops);

    int (*snap_open)(struct tkv_engine_session *s, struct tkv_engine_snap **snap_out);
    void (*snap_close)(struct tkv_engine_snap *snap);
    int (*snap_get)(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_slice key,
                    struct tkv_slice *value_out);

    /* Allocate the implementation's iterator; engine.c fills the head. */
    int (*iter_open)(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_engine_iter **it_out);
    void (*iter_close)(struct tkv_engine_iter *it);
    /* Positioning primitives without bounds (engine.c applies the bounds):
     * each sets it->valid, and it->key / it->value when valid. */
    int (*iter_seek_ge)(struct tkv_engine_iter *it, struct tkv_slice key);
    int (*iter_seek_lt)(struct tkv_engine_iter *it, struct tkv_slice key);
    int (*iter_seek_last)(struct tkv_engine_iter *it);
    int (*iter_next)(struct tkv_engine_iter *it);
    int (*iter_prev)(struct tkv_engine_iter *it);
};

/* Common heads: each implementation embeds these as its first member. */
struct tkv_engine {
    const struct engine_vtable *vt;
    enum tkv_engine_kind kind;
    bool sync;
    atomic_int n_sessions;
};

struct tkv_engine_session {
    struct tkv_engine *engine;
    int n_snaps; /* owner thread only */
#ifdef TKV_DEBUG
    /* Debug builds bind the session to the thread of its first data call
     * (not of its open, so a session may be opened elsewhere and handed
     * over) and assert on every later call (STYLE.md 4.6 rule 1). */
    bool has_owner;
    pthread_t owner;
#endif
};

struct tkv_engine_snap {
    struct tkv_engine_session *session;
    int n_iters;
};

struct tkv_engine_iter {
    struct tkv_engine_snap *snap;
    enum tkv_cf cf;
    uint8_t *lower; /* owned copies of the bounds; len 0 = unbounded */
    size_t lower_len;
    uint8_t *upper;
    size_t upper_len;
    bool valid;
    struct tkv_slice key;
    struct tkv_slice value;
};

/* Test hook (fault injection): when N > 0, the next write fails with
 * TKV_EENGINE just before applying its op number N (1-based), after the ops
 * before it were applied inside the transaction; the hook then disarms.
 * Tests use it to prove a failed batch leaves nothing behind. */
extern atomic_int engine_test_fail_write_at;

static inline bool engine_test_fail(size_t i)
{
    int at = atomic_load_explicit(&engine_test_fail_write_at, memory_order_relaxed);
    if (TKV_LIKELY(at <= 0) || (size_t)at != i + 1)
        return false;
    atomic_store(&engine_test_fail_write_at, 0);
    return true;
}

int engine_wt_open(const struct tkv_engine_opts *opts, struct tkv_engine **e_out);
int engine_mem_open(const struct tkv_engine_opts *opts, struct tkv_engine **e_out);
/* tkv_engine_disk_headroom of a WT engine (engine_wt.c). */
uint64_t engine_wt_disk_headroom(const struct tkv_engine_opts *opts);
uint64_t engine_wt_restart_space(const struct tkv_engine_opts *opts);

/* memcmp order with shorter-prefix-first: <0, 0, >0. */
int engine_key_cmp(struct tkv_slice a, struct tkv_slice b);

static inline bool engine_cf_valid(enum tkv_cf cf)
{
    return (unsigned)cf < TKV_CF_COUNT;
}

#endif
