/* The WiredTiger engine: one WT_CONNECTION per store directory, one table per
 * CF (raw "u" keys and values, memcmp collation), one WT_SESSION with cached
 * cursors per core session, and a pooled WT_SESSION per open snapshot. */
#include <errno.h>
#include <fiu.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <wiredtiger.h>

#include "engine_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

/* Attempts for a batch that hits a write-write conflict with a concurrent
 * batch of another session (standalone mode: cores share the tables). */
#define WT_WRITE_RETRIES 1000
/* Idle snapshot sessions kept per core session. */
#define WT_SNAP_POOL_MAX 4

static const char *const wt_uri[TKV_CF_COUNT] = {"table:default", "table:lock", "table:write",
                                                 "table:meta"};

/* Table settings, applied when a table is created (a store keeps the
 * settings it was created with). WiredTiger keeps every key inserted into
 * an in-memory page in a skiplist until the page is reconciled (evicted),
 * by default once the page holds 5 MB (memory_page_max). The lock CF's
 * live set is tiny (one lock per key of an unfinished transaction) but
 * every transaction inserts and then deletes its locks, so its one page
 * collected tens of thousands of tombstones, walked by each of the ~4 lock
 * CF searches of every transaction: __wt_search_insert was the largest
 * single cost of a one-key transaction (perf/README.md "Transactions vs
 * raw puts"). Small lock CF pages are reconciled after ~100 updates, which
 * drops the tombstones; the pages are tiny, so that costs little. */
static const char *const wt_table_config[TKV_CF_COUNT] = {
    [TKV_CF_DEFAULT] = "key_format=u,value_format=u",
    [TKV_CF_LOCK] = "key_format=u,value_format=u,leaf_page_max=4KB,memory_page_max=16KB",
    [TKV_CF_WRITE] = "key_format=u,value_format=u",
    [TKV_CF_META] = "key_format=u,value_format=u",
};

struct wt_engine {
    struct tkv_engine base;
    WT_CONNECTION *conn;
    char *path;
};

struct wt_snap {
    struct tkv_engine_snap base;
    WT_SESSION *ws;
    WT_CURSOR *cur[TKV_CF_COUNT]; /* lazily opened, for snap_get */
    struct wt_snap *next_free;
};

struct wt_session {
    struct tkv_engine_session base;
    WT_SESSION *ws;
    WT_CURSOR *cur[TKV_CF_COUNT]; /* lazily opened, kept for the session's life */
    uint8_t *buf;                 /* copy of the last get's value */
    size_t cap;
    struct wt_snap *pool;
    int n_pool;
};

struct wt_iter {
    struct tkv_engine_iter base;
    WT_CURSOR *c;
};

static const struct engine_vtable wt_vt;

/* Map a WiredTiger return to a tinykv code and log it once, here. */
static int wt_err(int ret, const char *what)
{
    if (ret == 0)
        return 0;
    TKV_LOG_ERROR("wiredtiger call failed", TKV_LF_STR("op", what), TKV_LF_I64("wt_ret", ret),
                  TKV_LF_STR("wt_error", wiredtiger_strerror(ret)));
    if (ret > 0)
        return ret == ENOSPC ? TKV_ENOSPACE : -ret;
    switch (ret) {
    case WT_PANIC:
        return TKV_EIOFATAL;
    case WT_ROLLBACK:
    case WT_CACHE_FULL:
        return TKV_EBUSY;
    case WT_TRY_SALVAGE:
        return TKV_ECORRUPT;
    default:
        return TKV_EENGINE;
    }
}

static int wt_on_error(WT_EVENT_HANDLER *h, WT_SESSION *ws, int error, const char *message)
{
    (void)h;
    (void)ws;
    TKV_LOG_ERROR("wiredtiger", TKV_LF_I64("wt_ret", error), TKV_LF_STR("detail", message));
    return 0;
}

static int wt_on_message(WT_EVENT_HANDLER *h, WT_SESSION *ws, const char *message)
{
    (void)h;
    (void)ws;
    TKV_LOG_INFO("wiredtiger", TKV_LF_STR("detail", message));
    return 0;
}

static WT_EVENT_HANDLER wt_events = {
    .handle_error = wt_on_error,
    .handle_message = wt_on_message,
};

static WT_ITEM wt_item(struct tkv_slice s)
{
    WT_ITEM it;
    memset(&it, 0, sizeof(it));
    it.data = s.ptr;
    it.size = s.len;
    return it;
}

static struct tkv_slice item_slice(const WT_ITEM *it)
{
    return TKV_SLICE(it->data, it->size);
}

static int wt_cursor(WT_SESSION *ws, WT_CURSOR **slot, enum tkv_cf cf)
{
    if (*slot == NULL) {
        int ret = ws->open_cursor(ws, wt_uri[cf], NULL, NULL, slot);
        if (ret != 0) {
            *slot = NULL;
            return wt_err(ret, "open_cursor");
        }
    }
    return 0;
}

/* ---- engine --------------------------------------------------------------- */

#define WT_DEFAULT_CACHE ((size_t)256 << 20)
#define WT_DEFAULT_LOG_FILE_MAX (64ull << 20)
#define WT_DEFAULT_CHECKPOINT_LOG (256ull << 20)
#define WT_MIN_LOG_FILE_MAX (1ull << 20)  /* WiredTiger allows 100 KB; 1 MiB keeps file churn low */
#define WT_MIN_DIRTY (1ull << 20)
/* Metadata, turtle, checkpoint records and the cache-overflow table's
 * first pages: written whatever the data volume. */
#define WT_FIXED_HEADROOM (4ull << 20)

static uint64_t wt_log_file_max(const struct tkv_engine_opts *o)
{
    uint64_t v = o->log_file_max ? o->log_file_max : WT_DEFAULT_LOG_FILE_MAX;
    return TKV_MAX(v, WT_MIN_LOG_FILE_MAX);
}

static uint64_t wt_checkpoint_log_size(const struct tkv_engine_opts *o)
{
    uint64_t v = o->checkpoint_log_size ? o->checkpoint_log_size : WT_DEFAULT_CHECKPOINT_LOG;
    return TKV_MAX(v, wt_log_file_max(o)); /* WiredTiger's own minimum */
}

static uint64_t wt_max_dirty(const struct tkv_engine_opts *o, size_t cache)
{
    if (!o->max_dirty_bytes)
        return cache / 5; /* eviction_dirty_trigger's default: 20 % */
    return TKV_MIN(TKV_MAX(o->max_dirty_bytes, WT_MIN_DIRTY), (uint64_t)cache);
}

/* Why each term (measured on a 64 MiB tmpfs, src/engine/README.md "Disk
 * space"): every byte of dirty data may be written twice before the old
 * blocks are free again (evicted now, rewritten by the checkpoint that
 * frees the evicted blocks only when it completes); a restart after a crash
 * replays up to checkpoint_log_size of log into the cache and checkpoints
 * it; the log file being written and its successor each hold up to
 * file_max until the next checkpoint lets archiving remove them. */
/* A restart after a crash (sync mode): the log since the last checkpoint
 * (checkpoint_log_size, plus the file being written when it triggered) is
 * replayed and checkpointed; then a new log file starts. Measured on a
 * 64 MiB tmpfs filled to the last byte after kill -9: with 0.64 MiB free
 * recovery's checkpoint failed (ENOSPC, WT_PANIC at open). */
uint64_t engine_wt_restart_space(const struct tkv_engine_opts *o)
{
    uint64_t h = WT_FIXED_HEADROOM;
    if (o->sync)
        h += wt_checkpoint_log_size(o) + 2 * wt_log_file_max(o);
    return h;
}

uint64_t engine_wt_disk_headroom(const struct tkv_engine_opts *o)
{
    size_t cache = o->cache_bytes ? o->cache_bytes : WT_DEFAULT_CACHE;
    uint64_t h = 2 * wt_max_dirty(o, cache) + WT_FIXED_HEADROOM;
    if (o->sync)
        h += wt_checkpoint_log_size(o) + 2 * wt_log_file_max(o);
    return h;
}

int engine_wt_open(const struct tkv_engine_opts *opts, struct tkv_engine **e_out)
{
    struct wt_engine *we = NULL;
    WT_SESSION *ws = NULL;
    char *cfg = NULL;
    int rv, ret;

    if (opts->path == NULL || opts->path[0] == '\0')
        return TKV_EINVAL;
    if (mkdir(opts->path, 0755) != 0 && errno != EEXIST) {
        rv = -errno;
        TKV_LOG_ERROR("engine mkdir failed", TKV_LF_STR("path", opts->path), TKV_LF_ERR(rv));
        return rv;
    }
    size_t cache = opts->cache_bytes ? opts->cache_bytes : WT_DEFAULT_CACHE;
    uint64_t file_max = wt_log_file_max(opts), ckpt_log = wt_checkpoint_log_size(opts);
    /* sync: the log makes each commit durable (fsync when the commit
     * returns; WiredTiger's log slots let concurrent commits share it).
     * WiredTiger's own checkpoint thread then bounds the log (and restart
     * recovery time): once a minute or every checkpoint_log_size of log,
     * after which older log files are archived (removed). Log files are
     * neither pre-allocated nor extended ahead of the data written into
     * them (prealloc=false, file_extend log=0): with the defaults WiredTiger
     * keeps two spare log files of file_max each, which on a filesystem
     * that really allocates them (ext4 fallocate) takes 128 MiB that the
     * disk-full headroom would have to cover.
     * !sync: no log; durability comes only from tkv_engine_checkpoint()
     * (raft replays the rest), so commits never touch the disk. */
    /* engine/skip_fsync (test builds, read at open): commits are written to
     * the log file but never fsynced -- the bug the power-cut tests
     * (tests/fault/powercut) must catch and kill -9 cannot. */
    const char *sync_method = "fsync";
    fiu_do_on("engine/skip_fsync", sync_method = "none");
    char log[256];
    if (opts->sync)
        snprintf(log, sizeof(log),
                 "log=(enabled=true,archive=true,prealloc=false,file_max=%llu),"
                 "file_extend=(log=0),transaction_sync=(enabled=true,method=%s),"
                 "checkpoint=(wait=60,log_size=%llu)",
                 (unsigned long long)file_max, sync_method, (unsigned long long)ckpt_log);
    else
        snprintf(log, sizeof(log), "log=(enabled=false)");
    /* Dirty data is what eviction and the next checkpoint still write to
     * the table files: bounded in bytes when the caller asks (a small
     * disk), else WiredTiger's default (trigger 20 %, target 5 % of the
     * cache). Values above 100 are bytes to WiredTiger. */
    char dirty[128] = "";
    if (opts->max_dirty_bytes) {
        uint64_t d = wt_max_dirty(opts, cache);
        snprintf(dirty, sizeof(dirty), "eviction_dirty_trigger=%llu,eviction_dirty_target=%llu,",
                 (unsigned long long)d, (unsigned long long)(d / 2));
    }
    const char *extra = opts->wt_config ? opts->wt_config : "";
    size_t n = (size_t)snprintf(NULL, 0, "create,cache_size=%zu,session_max=1000,%s%s,%s", cache,
                                dirty, log, extra);
    cfg = tkv_xmalloc(n + 1);
    snprintf(cfg, n + 1, "create,cache_size=%zu,session_max=1000,%s%s,%s", cache, dirty, log,
             extra);

    we = tkv_xcalloc(1, sizeof(*we));
    we->base.vt = &wt_vt;
    we->base.kind = TKV_ENGINE_WT;
    we->base.sync = opts->sync;
    atomic_init(&we->base.n_sessions, 0);
    we->path = tkv_xstrdup(opts->path);

    ret = wiredtiger_open(opts->path, &wt_events, cfg, &we->conn);
    if (ret != 0) {
        we->conn = NULL;
        TKV_ERR(wt_err(ret, "wiredtiger_open"));
    }
    ret = we->conn->open_session(we->conn, NULL, NULL, &ws);
    if (ret != 0)
        TKV_ERR(wt_err(ret, "open_session"));
    for (int i = 0; i < TKV_CF_COUNT; i++) {
        /* Raw byte items compare with WiredTiger's default collator, a
         * lexicographic memcmp with the shorter key first. */
        ret = ws->create(ws, wt_uri[i], wt_table_config[i]);
        if (ret != 0)
            TKV_ERR(wt_err(ret, "create table"));
    }
    ws->close(ws, NULL);
    tkv_free(cfg);
    TKV_LOG_INFO("engine opened", TKV_LF_STR("kind", "wiredtiger"), TKV_LF_STR("path", opts->path),
                 TKV_LF_BOOL("sync", opts->sync), TKV_LF_U64("cache_bytes", cache));
    *e_out = &we->base;
    return 0;
err:
    assert(rv != 0);
    if (we->conn)
        we->conn->close(we->conn, NULL);
    if (we) {
        tkv_free(we->path);
        tkv_free(we);
    }
    tkv_free(cfg);
    return rv;
}

static void wt_close(struct tkv_engine *e)
{
    struct wt_engine *we = (struct wt_engine *)e;
    int ret = we->conn->close(we->conn, NULL);
    if (ret != 0)
        (void)wt_err(ret, "connection close");
    tkv_free(we->path);
    tkv_free(we);
}

static int wt_checkpoint(struct tkv_engine *e)
{
    struct wt_engine *we = (struct wt_engine *)e;
    WT_SESSION *ws = NULL;
    int ret = we->conn->open_session(we->conn, NULL, NULL, &ws);
    if (ret != 0)
        return wt_err(ret, "open_session");
    ret = ws->checkpoint(ws, NULL);
    int rv = ret ? wt_err(ret, "checkpoint") : 0;
    ws->close(ws, NULL);
    return rv;
}

/* ---- sessions --------------------------------------------------------------- */

static int wt_session_open(struct tkv_engine *e, struct tkv_engine_session **s_out)
{
    struct wt_engine *we = (struct wt_engine *)e;
    struct wt_session *s = tkv_xcalloc(1, sizeof(*s));
    int ret = we->conn->open_session(we->conn, NULL, "isolation=snapshot", &s->ws);
    if (ret != 0) {
        tkv_free(s);
        return wt_err(ret, "open_session");
    }
    *s_out = &s->base;
    return 0;
}

static void wt_snap_free(struct wt_snap *sn)
{
    /* Closing the session closes its cursors. */
    sn->ws->close(sn->ws, NULL);
    tkv_free(sn);
}

static void wt_session_close(struct tkv_engine_session *base)
{
    struct wt_session *s = (struct wt_session *)base;
    while (s->pool) {
        struct wt_snap *sn = s->pool;
        s->pool = sn->next_free;
        wt_snap_free(sn);
    }
    s->ws->close(s->ws, NULL);
    tkv_free(s->buf);
    tkv_free(s);
}

static int wt_get(struct tkv_engine_session *base, enum tkv_cf cf, struct tkv_slice key,
                  struct tkv_slice *value_out)
{
    struct wt_session *s = (struct wt_session *)base;
    WT_ITEM k = wt_item(key), v;
    TKV_RET(wt_cursor(s->ws, &s->cur[cf], cf));
    WT_CURSOR *c = s->cur[cf];
    c->set_key(c, &k);
    int ret = c->search(c);
    if (ret == WT_NOTFOUND)
        return TKV_ENOTFOUND;
    if (ret == 0)
        ret = c->get_value(c, &v);
    if (ret != 0) {
        c->reset(c);
        return wt_err(ret, "get");
    }
    /* Copy out and release the position: a positioned cursor pins its page
     * (a hazard pointer), which must not outlive the call on a core. */
    if (v.size > s->cap) {
        s->cap = v.size;
        s->buf = tkv_xrealloc(s->buf, s->cap);
    }
    if (v.size)
        memcpy(s->buf, v.data, v.size);
    c->reset(c);
    *value_out = TKV_SLICE(s->buf, v.size);
    return 0;
}

static int wt_delete_range(WT_CURSOR *c, struct tkv_slice start, struct tkv_slice end)
{
    WT_ITEM k = wt_item(start), cur;
    int exact, ret;
    if (end.len && engine_key_cmp(start, end) >= 0)
        return 0;
    if (start.len == 0) { /* WiredTiger refuses empty keys: start at the first */
        ret = c->reset(c);
        if (ret == 0)
            ret = c->next(c);
    } else {
        c->set_key(c, &k);
        ret = c->search_near(c, &exact);
        if (ret == 0 && exact < 0)
            ret = c->next(c);
    }
    while (ret == 0) {
        ret = c->get_key(c, &cur);
        if (ret != 0)
            break;
        if (end.len && engine_key_cmp(item_slice(&cur), end) >= 0)
            break;
        /* With overwrite (the default) the cursor stays positioned on the
         * removed record, so next() continues the walk. */
        ret = c->remove(c);
        if (ret == 0)
            ret = c->next(c);
    }
    return ret == WT_NOTFOUND ? 0 : ret;
}

static int wt_write_once(struct wt_session *s, const struct engine_op *ops, size_t n_ops,
                         bool *injected)
{
    WT_SESSION *ws = s->ws;
    int ret = ws->begin_transaction(ws, NULL);
    if (ret != 0)
        return ret;
    for (size_t i = 0; i < n_ops && ret == 0; i++) {
        const struct engine_op *op = &ops[i];
        WT_CURSOR *c;
        WT_ITEM k = wt_item(op->key), v = wt_item(op->value);
        if (engine_test_fail(i)) {
            *injected = true;
            ret = WT_ERROR;
            break;
        }
        if (s->cur[op->cf] == NULL) {
            ret = ws->open_cursor(ws, wt_uri[op->cf], NULL, NULL, &s->cur[op->cf]);
            if (ret != 0) {
                s->cur[op->cf] = NULL;
                break;
            }
        }
        c = s->cur[op->cf];
        switch (op->type) {
        case ENGINE_OP_PUT:
            c->set_key(c, &k);
            c->set_value(c, &v);
            ret = c->insert(c);
            break;
        case ENGINE_OP_DELETE:
            c->set_key(c, &k);
            ret = c->remove(c);
            if (ret == WT_NOTFOUND)
                ret = 0;
            break;
        case ENGINE_OP_DELETE_RANGE:
            ret = wt_delete_range(c, op->key, op->value);
            break;
        }
    }
    if (ret != 0) {
        (void)ws->rollback_transaction(ws, NULL);
        return ret;
    }
    /* In sync mode the connection's transaction_sync makes this commit
     * wait for the log fsync. A failed commit was rolled back. */
    return ws->commit_transaction(ws, NULL);
}

static int wt_write(struct tkv_engine_session *base, const struct engine_op *ops, size_t n_ops)
{
    struct wt_session *s = (struct wt_session *)base;
    int ret = 0;
    for (int attempt = 0; attempt < WT_WRITE_RETRIES; attempt++) {
        bool injected = false;
        ret = wt_write_once(s, ops, n_ops, &injected);
        if (injected)
            return TKV_EENGINE;
        if (ret != WT_ROLLBACK)
            break;
        sched_yield();
    }
    return ret ? wt_err(ret, "write batch") : 0;
}

/* ---- snapshots ----------------------------------------------------------------- */

static int wt_snap_open(struct tkv_engine_session *base, struct tkv_engine_snap **snap_out)
{
    struct wt_session *s = (struct wt_session *)base;
    struct wt_engine *we = (struct wt_engine *)base->engine;
    struct wt_snap *sn = s->pool;
    int ret;
    if (sn) {
        s->pool = sn->next_free;
        s->n_pool--;
    } else {
        sn = tkv_xcalloc(1, sizeof(*sn));
        ret = we->conn->open_session(we->conn, NULL, "isolation=snapshot", &sn->ws);
        if (ret != 0) {
            tkv_free(sn);
            return wt_err(ret, "open_session (snapshot)");
        }
    }
    sn->next_free = NULL;
    /* WiredTiger takes the transaction's snapshot at begin for snapshot
     * isolation, so later commits stay invisible from here on. */
    ret = sn->ws->begin_transaction(sn->ws, "isolation=snapshot");
    if (ret != 0) {
        wt_snap_free(sn);
        return wt_err(ret, "begin_transaction (snapshot)");
    }
    *snap_out = &sn->base;
    return 0;
}

static void wt_snap_close(struct tkv_engine_snap *base)
{
    struct wt_snap *sn = (struct wt_snap *)base;
    struct wt_session *s = (struct wt_session *)base->session;
    /* Read-only: rollback ends the transaction and resets its cursors. */
    int ret = sn->ws->rollback_transaction(sn->ws, NULL);
    if (ret != 0 || s->n_pool >= WT_SNAP_POOL_MAX) {
        if (ret != 0)
            (void)wt_err(ret, "rollback_transaction (snapshot)");
        wt_snap_free(sn);
        return;
    }
    sn->next_free = s->pool;
    s->pool = sn;
    s->n_pool++;
}

static int wt_snap_get(struct tkv_engine_snap *base, enum tkv_cf cf, struct tkv_slice key,
                       struct tkv_slice *value_out)
{
    struct wt_snap *sn = (struct wt_snap *)base;
    WT_ITEM k = wt_item(key), v;
    TKV_RET(wt_cursor(sn->ws, &sn->cur[cf], cf));
    WT_CURSOR *c = sn->cur[cf];
    c->set_key(c, &k);
    int ret = c->search(c);
    if (ret == WT_NOTFOUND)
        return TKV_ENOTFOUND;
    if (ret == 0)
        ret = c->get_value(c, &v);
    if (ret != 0)
        return wt_err(ret, "snap get");
    /* The cursor stays positioned so the value stays valid until the next
     * snap_get or the snapshot's close (documented in engine.h). */
    *value_out = item_slice(&v);
    return 0;
}

/* ---- iterators ----------------------------------------------------------------- */

static int wt_iter_open(struct tkv_engine_snap *base, enum tkv_cf cf,
                        struct tkv_engine_iter **it_out)
{
    struct wt_snap *sn = (struct wt_snap *)base;
    struct wt_iter *wi = tkv_xcalloc(1, sizeof(*wi));
    /* A cursor of its own (WiredTiger caches closed cursors per session),
     * so several iterators may walk the same CF of one snapshot. */
    int ret = sn->ws->open_cursor(sn->ws, wt_uri[cf], NULL, NULL, &wi->c);
    if (ret != 0) {
        tkv_free(wi);
        return wt_err(ret, "open_cursor (iterator)");
    }
    *it_out = &wi->base;
    return 0;
}

static void wt_iter_close(struct tkv_engine_iter *it)
{
    struct wt_iter *wi = (struct wt_iter *)it;
    wi->c->close(wi->c);
    tkv_free(wi);
}

/* Load the current record after a move that returned ret. */
static int wt_iter_load(struct wt_iter *wi, int ret)
{
    WT_ITEM k, v;
    wi->base.valid = false;
    if (ret == WT_NOTFOUND)
        return 0;
    if (ret == 0)
        ret = wi->c->get_key(wi->c, &k);
    if (ret == 0)
        ret = wi->c->get_value(wi->c, &v);
    if (ret != 0)
        return wt_err(ret, "iterator move");
    wi->base.valid = true;
    wi->base.key = item_slice(&k);
    wi->base.value = item_slice(&v);
    return 0;
}

static int wt_iter_seek_ge(struct tkv_engine_iter *it, struct tkv_slice key)
{
    struct wt_iter *wi = (struct wt_iter *)it;
    WT_ITEM k = wt_item(key);
    int exact, ret;
    if (key.len == 0) { /* every key is >= "": the first record */
        ret = wi->c->reset(wi->c);
        if (ret == 0)
            ret = wi->c->next(wi->c);
        return wt_iter_load(wi, ret);
    }
    wi->c->set_key(wi->c, &k);
    ret = wi->c->search_near(wi->c, &exact);
    if (ret == 0 && exact < 0)
        ret = wi->c->next(wi->c);
    return wt_iter_load(wi, ret);
}

static int wt_iter_seek_lt(struct tkv_engine_iter *it, struct tkv_slice key)
{
    struct wt_iter *wi = (struct wt_iter *)it;
    WT_ITEM k = wt_item(key);
    int exact, ret;
    if (key.len == 0) { /* nothing is < "" */
        wi->base.valid = false;
        return 0;
    }
    wi->c->set_key(wi->c, &k);
    ret = wi->c->search_near(wi->c, &exact);
    if (ret == 0 && exact >= 0)
        ret = wi->c->prev(wi->c);
    return wt_iter_load(wi, ret);
}

static int wt_iter_seek_last(struct tkv_engine_iter *it)
{
    struct wt_iter *wi = (struct wt_iter *)it;
    int ret = wi->c->reset(wi->c);
    if (ret == 0)
        ret = wi->c->prev(wi->c); /* prev on an unpositioned cursor: last record */
    return wt_iter_load(wi, ret);
}

static int wt_iter_next(struct tkv_engine_iter *it)
{
    struct wt_iter *wi = (struct wt_iter *)it;
    return wt_iter_load(wi, wi->c->next(wi->c));
}

static int wt_iter_prev(struct tkv_engine_iter *it)
{
    struct wt_iter *wi = (struct wt_iter *)it;
    return wt_iter_load(wi, wi->c->prev(wi->c));
}

static const struct engine_vtable wt_vt = {
    .close = wt_close,
    .checkpoint = wt_checkpoint,
    .mem_crash = NULL,
    .session_open = wt_session_open,
    .session_close = wt_session_close,
    .get = wt_get,
    .write = wt_write,
    .snap_open = wt_snap_open,
    .snap_close = wt_snap_close,
    .snap_get = wt_snap_get,
    .iter_open = wt_iter_open,
    .iter_close = wt_iter_close,
    .iter_seek_ge = wt_iter_seek_ge,
    .iter_seek_lt = wt_iter_seek_lt,
    .iter_seek_last = wt_iter_seek_last,
    .iter_next = wt_iter_next,
    .iter_prev = wt_iter_prev,
};
