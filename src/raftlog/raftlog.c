/* The raft log's public face: staging calls into batches, group commit from
 * the reactor's before-sleep hook (one write+fdatasync per batch), applying
 * a durable batch to the index, failure policy, purge and reads. */
#include <errno.h>
#include <fiu.h>
#include <pthread.h>
#include <stdlib.h>

#include "raftlog_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"
#include <time.h>

/* Metrics shared by every log of the process; each core writes its own
 * slot (tinykv_raftlog_*; registered once, on the first open). */
static struct {
    struct tkv_histogram *sync_duration;
    struct tkv_counter *bytes, *batches;
    struct tkv_gauge *segments;
} rl_metrics;
static pthread_once_t rl_metrics_once = PTHREAD_ONCE_INIT;

static void rl_metrics_register(void)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    double secs[20];
    tkv_metrics_exp_buckets(0.00005, 2, 20, secs); /* 50 us .. 26 s */
    rl_metrics.sync_duration = tkv_metrics_histogram(
        reg, "tinykv_raftlog_sync_duration_seconds",
        "Duration of one raft log batch write + fdatasync (group commit).", NULL, secs, 20);
    rl_metrics.bytes = tkv_metrics_counter(reg, "tinykv_raftlog_write_bytes_total",
                                           "Bytes written durably to raft log segments.", NULL);
    rl_metrics.batches = tkv_metrics_counter(reg, "tinykv_raftlog_batches_total",
                                             "Raft log batches made durable (one sync each).",
                                             NULL);
    rl_metrics.segments = tkv_metrics_gauge(reg, "tinykv_raftlog_segments",
                                            "Raft log segment files held by the open logs.", NULL);
}

static uint64_t rl_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Publish the change in this log's segment count (open, rotate, purge). */
static void rl_metrics_segments(struct tkv_raftlog *log)
{
    if (log->n_segs != log->segs_reported) {
        tkv_gauge_add(rl_metrics.segments, (double)log->n_segs - (double)log->segs_reported);
        log->segs_reported = log->n_segs;
    }
}

/* ---- segments ---- */

struct rl_seg *raftlog_seg_find(struct tkv_raftlog *log, uint64_t id)
{
    size_t lo = 0, hi = log->n_segs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (log->segs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < log->n_segs && log->segs[lo].id == id) ? &log->segs[lo] : NULL;
}

struct rl_seg *raftlog_seg_push(struct tkv_raftlog *log, uint64_t id)
{
    tkv_assert(log->n_segs == 0 || log->segs[log->n_segs - 1].id < id);
    tkv_assert(id < UINT32_MAX);
    if (log->n_segs == log->cap_segs) {
        log->cap_segs = log->cap_segs ? log->cap_segs * 2 : 8;
        log->segs = tkv_xrealloc(log->segs, log->cap_segs * sizeof(*log->segs));
    }
    struct rl_seg *s = &log->segs[log->n_segs++];
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->fd = -1;
    return s;
}

static struct rl_seg *active_seg(struct tkv_raftlog *log)
{
    return log->n_segs ? &log->segs[log->n_segs - 1] : NULL;
}

/* ---- batches ---- */

static void batch_free(struct rl_batch *b)
{
    tkv_free(b->buf);
    tkv_free(b->cbs);
    tkv_free(b);
}

static struct rl_batch *batch_new(struct tkv_raftlog *log)
{
    struct rl_batch *b = tkv_xcalloc(1, sizeof(*b));
    b->cap = 4096;
    b->buf = tkv_xmalloc(b->cap);
    b->len = RL_BATCH_HDR;
    if (log->tail)
        log->tail->next = b;
    else
        log->head = b;
    log->tail = b;
    return b;
}

/* The batch that takes the next `need` bytes: the staged tail (never a
 * submitted batch), or a new one when the tail would pass max_batch. */
static struct rl_batch *batch_for(struct tkv_raftlog *log, size_t need)
{
    struct rl_batch *b = log->tail;
    if (b == NULL || (b->n_records > 0 && b->len + need > log->max_batch))
        b = batch_new(log);
    if (b->len + need > b->cap) {
        while (b->len + need > b->cap)
            b->cap *= 2;
        b->buf = tkv_xrealloc(b->buf, b->cap);
    }
    return b;
}

static void batch_add_cb(struct tkv_raftlog *log, struct rl_batch *b, tkv_raftlog_done_fn fn,
                         void *arg)
{
    if (fn == NULL)
        return;
    if (b == NULL)
        b = batch_for(log, 0);
    if (b->n_cbs == b->cap_cbs) {
        b->cap_cbs = b->cap_cbs ? b->cap_cbs * 2 : 8;
        b->cbs = tkv_xrealloc(b->cbs, b->cap_cbs * sizeof(*b->cbs));
    }
    b->cbs[b->n_cbs++] = (struct rl_cb){fn, arg};
}

/* Reserve a record of payload length len; returns the payload pointer. */
static uint8_t *rec_begin(struct rl_batch *b, uint8_t type, tkv_region_id region, size_t len)
{
    uint8_t *h = b->buf + b->len;
    rl_put32(h + 4, (uint32_t)len);
    h[8] = type;
    h[9] = h[10] = h[11] = 0;
    rl_put64(h + 12, region);
    return h + RL_REC_HDR;
}

static void rec_end(struct rl_batch *b, size_t len)
{
    uint8_t *h = b->buf + b->len;
    rl_put32(h, tkv_codec_crc32c(0, h + 4, RL_REC_HDR - 4 + len));
    b->len += RL_REC_HDR + len;
    b->n_records++;
}

static struct rl_region *stage_region(struct tkv_raftlog *log, tkv_region_id id)
{
    struct rl_region *r = raftlog_map_get(&log->regions, id);
    if (r == NULL)
        r = raftlog_map_add(&log->regions, id);
    r->n_pending++;
    return r;
}

static int check_usable(const struct tkv_raftlog *log)
{
    RL_OWNER_CHECK(log);
    if (log->failed)
        return TKV_EIOFATAL;
    if (log->closing)
        return TKV_ESHUTDOWN;
    return 0;
}

static size_t rec_limit(const struct tkv_raftlog *log)
{
    return log->max_batch - RL_BATCH_HDR;
}

int tkv_raftlog_append(struct tkv_raftlog *log, tkv_region_id region,
                       const struct tkv_raftlog_entry *entries, size_t n,
                       const struct tkv_raftlog_hardstate *hs, tkv_raftlog_done_fn cb, void *arg)
{
    TKV_RET(check_usable(log));
    if (n == 0 && hs == NULL)
        return TKV_EINVAL;
    size_t len = RL_APPEND_FIXED + (hs ? RL_HS_BYTES : 0);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && entries[i].index != entries[i - 1].index + 1)
            return TKV_EINVAL;
        if (entries[i].data.len > UINT32_MAX || (entries[i].data.len && !entries[i].data.ptr))
            return TKV_EINVAL;
        len += RL_ENT_FIXED + entries[i].data.len;
        if (len > rec_limit(log))
            return TKV_ETOOBIG;
    }
    if (RL_REC_HDR + len > rec_limit(log) || n > UINT32_MAX)
        return TKV_ETOOBIG;
    struct rl_region *r = raftlog_map_get(&log->regions, region);
    uint64_t s_first = r ? r->s_first : 1, s_last = r ? r->s_last : 0;
    if (n > 0) {
        uint64_t start = entries[0].index;
        if (start == 0 || entries[n - 1].index < start)
            return TKV_EINVAL;
        if (s_last < s_first) {
            if (start < s_first)
                return TKV_EINVAL;
        } else if (start < s_first || start > s_last + 1) {
            return TKV_EINVAL;
        }
    }
    r = stage_region(log, region);
    if (n > 0) {
        if (r->s_last < r->s_first)
            r->s_first = entries[0].index;
        r->s_last = entries[n - 1].index;
    }
    struct rl_batch *b = batch_for(log, RL_REC_HDR + len);
    uint8_t *p = rec_begin(b, RL_REC_APPEND, region, len);
    rl_put64(p, n ? entries[0].index : r->s_first);
    rl_put32(p + 8, (uint32_t)n);
    rl_put32(p + 12, hs ? 1u : 0u);
    p += RL_APPEND_FIXED;
    if (hs) {
        rl_put64(p, hs->term);
        rl_put64(p + 8, hs->vote);
        rl_put64(p + 16, hs->commit);
        p += RL_HS_BYTES;
    }
    for (size_t i = 0; i < n; i++) {
        rl_put64(p, entries[i].term);
        rl_put32(p + 8, entries[i].type);
        rl_put32(p + 12, (uint32_t)entries[i].data.len);
        if (entries[i].data.len)
            memcpy(p + RL_ENT_FIXED, entries[i].data.ptr, entries[i].data.len);
        p += RL_ENT_FIXED + entries[i].data.len;
    }
    rec_end(b, len);
    batch_add_cb(log, b, cb, arg);
    return 0;
}

/* TRUNCATE (from, staged first) and COMPACT (upto, term) records. */
static int stage_2u64(struct tkv_raftlog *log, uint8_t type, tkv_region_id region, uint64_t a,
                      uint64_t b2, tkv_raftlog_done_fn cb, void *arg)
{
    stage_region(log, region);
    struct rl_batch *b = batch_for(log, RL_REC_HDR + 16);
    uint8_t *p = rec_begin(b, type, region, 16);
    rl_put64(p, a);
    rl_put64(p + 8, b2);
    rec_end(b, 16);
    batch_add_cb(log, b, cb, arg);
    return 0;
}

int tkv_raftlog_truncate(struct tkv_raftlog *log, tkv_region_id region, tkv_index from,
                         tkv_raftlog_done_fn cb, void *arg)
{
    TKV_RET(check_usable(log));
    struct rl_region *r = raftlog_map_get(&log->regions, region);
    if (from == 0 || (r && from < r->s_first))
        return TKV_EINVAL;
    TKV_RET(stage_2u64(log, RL_REC_TRUNCATE, region, from, r ? r->s_first : 1, cb, arg));
    r = raftlog_map_get(&log->regions, region);
    if (from <= r->s_last)
        r->s_last = from - 1;
    return 0;
}

static void stage_compact_view(struct rl_region *r, uint64_t upto)
{
    if (upto < r->s_first)
        return;
    if (upto >= r->s_last)
        r->s_last = upto;
    r->s_first = upto + 1;
}

/* Term of a durable entry, or of the compaction point; 0 when unknown. */
static tkv_term durable_term(const struct rl_region *r, tkv_index i)
{
    if (r == NULL)
        return 0;
    if (i >= r->first && i < r->first + r->count)
        return r->ents[r->head + (i - r->first)].term;
    if (i + 1 == r->first && r->snap_index == i)
        return r->snap_term;
    return 0;
}

int tkv_raftlog_compact(struct tkv_raftlog *log, tkv_region_id region, tkv_index upto,
                        tkv_term term, tkv_raftlog_done_fn cb, void *arg)
{
    TKV_RET(check_usable(log));
    struct rl_region *r = raftlog_map_get(&log->regions, region);
    uint64_t eff = upto;
    /* Log GC never cuts below what the engine still needs for replay
     * (ARCHITECTURE.md "Durability"); the rest is applied by later purges.
     * Dropping everything (upto >= last: a snapshot was installed) is the
     * caller's explicit decision and is not held back. */
    if (log->safe_fn && r && upto < r->s_last) {
        tkv_index safe = log->safe_fn(log->safe_arg, region);
        if (safe < eff)
            eff = safe;
    }
    if (eff != upto || term == 0)
        term = durable_term(r, eff);
    TKV_RET(stage_2u64(log, RL_REC_COMPACT, region, eff, term, cb, arg));
    r = raftlog_map_get(&log->regions, region);
    if (eff < upto && upto > r->want_compact)
        r->want_compact = upto;
    stage_compact_view(r, eff);
    return 0;
}

int tkv_raftlog_remove_region(struct tkv_raftlog *log, tkv_region_id region,
                              tkv_raftlog_done_fn cb, void *arg)
{
    TKV_RET(check_usable(log));
    struct rl_region *r = stage_region(log, region);
    r->s_first = 1;
    r->s_last = 0;
    r->want_compact = 0;
    struct rl_batch *b = batch_for(log, RL_REC_HDR);
    rec_begin(b, RL_REC_REMOVE, region, 0);
    rec_end(b, 0);
    batch_add_cb(log, b, cb, arg);
    return 0;
}

int tkv_raftlog_sync(struct tkv_raftlog *log, tkv_raftlog_done_fn cb, void *arg)
{
    TKV_RET(check_usable(log));
    if (cb == NULL)
        return 0;
    batch_add_cb(log, NULL, cb, arg);
    return 0;
}

/* ---- completion ---- */

static void fire(struct rl_batch *b, int rv)
{
    for (size_t i = 0; i < b->n_cbs; i++)
        b->cbs[i].fn(b->cbs[i].arg, rv);
}

/* Staged view := durable view for every region; free regions left empty. */
static void rollback_staged(struct tkv_raftlog *log)
{
    struct rl_map *m = &log->regions;
    size_t n_dead = 0;
    tkv_region_id *dead = tkv_xmalloc((m->n + 1) * sizeof(*dead));
    for (size_t i = 0; i < m->cap; i++) {
        struct rl_region *r = m->slots[i];
        if (r == NULL)
            continue;
        r->n_pending = 0;
        raftlog_region_restage(r);
        if (rl_region_dead(r))
            dead[n_dead++] = r->id;
    }
    for (size_t i = 0; i < n_dead; i++) {
        struct rl_region *r = raftlog_map_get(m, dead[i]);
        raftlog_map_del(m, dead[i]);
        raftlog_region_free(r);
    }
    tkv_free(dead);
}

/* ---- flights ---- */

static struct rl_flight *flight_at(struct tkv_raftlog *log, unsigned k)
{
    return &log->flights[(log->fl_first + k) % RL_MAX_FLIGHTS];
}

/* Fail `first` (the failed oldest batch, already out of the ring; may be
 * NULL), then every in-flight and staged batch with rv, in staging order,
 * after the state is fixed so callbacks observe the final state. In-flight
 * batches become orphans: their callbacks fire now, their buffers stay until
 * the kernel's completion arrives, and nothing new is submitted before then
 * (a late write could land where the next batch goes). */
static void fail_all(struct tkv_raftlog *log, struct rl_batch *first, int rv)
{
    struct rl_batch *b = log->head;
    log->head = log->tail = NULL;
    rollback_staged(log);
    struct rl_batch *orphaned[RL_MAX_FLIGHTS];
    unsigned n_orph = 0;
    for (unsigned k = 0; k < log->fl_n; k++) {
        struct rl_flight *f = flight_at(log, k);
        if (!f->orphan && f->b != NULL) {
            f->orphan = true;
            log->fl_orphans++;
            log->fl_bytes -= f->wlen;
            orphaned[n_orph++] = f->b;
        }
    }
    if (first) {
        fire(first, rv);
        batch_free(first);
    }
    for (unsigned k = 0; k < n_orph; k++) {
        fire(orphaned[k], rv);
        orphaned[k]->n_cbs = 0;
    }
    while (b) {
        struct rl_batch *next = b->next;
        fire(b, rv);
        batch_free(b);
        b = next;
    }
}

static void go_fatal(struct tkv_raftlog *log, struct rl_batch *first, int res, const char *what)
{
    log->failed = true;
    log->st.failed = true;
    TKV_LOG_ERROR("raft log write failed: fail-stop, the store must restart",
                  TKV_LF_STR("dir", log->dir ? log->dir : "(memory)"), TKV_LF_STR("op", what),
                  TKV_LF_ERR(res));
    fail_all(log, first, TKV_EIOFATAL);
}

static bool is_nospace(int res)
{
    return res == -ENOSPC || res == -EDQUOT;
}

/* The oldest flight f, already removed from the ring, completed with res:
 * apply its records and fire its callbacks, or apply the failure policy. */
static int batch_done(struct tkv_raftlog *log, struct rl_flight *f, int res)
{
    struct rl_batch *b = f->b;
    struct rl_seg *s = active_seg(log);
    log->fl_bytes -= f->wlen;
    if (res >= 0 && (size_t)res != f->wlen)
        res = -EIO; /* short write: fatal like any write error */
    if (res < 0) {
        if (is_nospace(res)) {
            /* A partial write may have left bytes past end (this flight's
             * and any later one's); the next batch overwrites them, a
             * segment switch zeroes them first. */
            uint64_t dirty = f->off + f->wlen;
            for (unsigned k = 0; k < log->fl_n; k++) {
                struct rl_flight *g = flight_at(log, k);
                dirty = TKV_MAX(dirty, g->off + g->wlen);
            }
            if (s->dirty_end < dirty)
                s->dirty_end = dirty;
            TKV_LOG_WARN("raft log append failed: disk full",
                         TKV_LF_STR("dir", log->dir ? log->dir : "(memory)"), TKV_LF_ERR(res));
            fail_all(log, b, TKV_ENOSPACE);
            return TKV_ENOSPACE;
        }
        go_fatal(log, b, res, "write+fdatasync");
        return TKV_EIOFATAL;
    }
    /* In order: this batch starts where the durable log ends (the
     * unordered_completion failpoint, a negative control, breaks this). */
    s->end = TKV_MAX(s->end, f->off + f->len);
    if (s->dirty_end <= f->off + f->wlen)
        s->dirty_end = 0; /* the padding zeroed a failed write's leftover */
    tkv_histogram_observe(rl_metrics.sync_duration,
                          (double)(rl_clock_ns() - f->start_ns) / 1e9);
    tkv_counter_add(rl_metrics.bytes, b->len);
    tkv_counter_inc(rl_metrics.batches);
    rl_metrics_segments(log);
    log->next_seq++;
    log->st.batches++;
    log->st.records += b->n_records;
    log->st.bytes_written += b->len;
    for (size_t pos = RL_BATCH_HDR; pos < b->len;) {
        const uint8_t *rec = b->buf + pos;
        int rv = raftlog_apply_record(log, (uint32_t)s->id, f->off + pos, rec, true);
        tkv_assert(rv == 0);
        pos += RL_REC_HDR + rl_get32(rec + 4);
    }
    fire(b, 0);
    batch_free(b);
    return 0;
}

/* Process completed flights strictly in submission order: a completion that
 * arrives before an older one's waits, so a callback (a barrier's included)
 * never fires before every earlier batch's fdatasync has returned. Returns
 * the first error of a batch processed here (0 if none). */
static int drain(struct tkv_raftlog *log)
{
    int first_err = 0;
    if (log->draining)
        return 0; /* a callback's completion: the outer loop processes it */
    log->draining = true;
    while (log->fl_n > 0) {
        struct rl_flight *f = flight_at(log, 0);
        if (!f->done) {
            /* Negative control of the ordering tests (Debug builds): process
             * a younger completion first, as a broken implementation would. */
            struct rl_flight *y = log->fl_n > 1 ? flight_at(log, 1) : NULL;
            if (y && y->done && y->b && !y->orphan && fiu_fail("raftlog/unordered_completion")) {
                int rv = batch_done(log, y, y->res);
                y->b = NULL; /* popped later without processing */
                if (rv < 0 && first_err == 0)
                    first_err = rv;
                continue;
            }
            break;
        }
        /* Done: the kernel no longer references f (its io, its buffer). */
        struct rl_flight ff = *f;
        log->fl_first = (log->fl_first + 1) % RL_MAX_FLIGHTS;
        log->fl_n--;
        if (ff.b == NULL)
            continue;
        if (ff.orphan) {
            log->fl_orphans--;
            batch_free(ff.b);
            continue;
        }
        int rv = batch_done(log, &ff, ff.res);
        if (rv < 0 && first_err == 0)
            first_err = rv;
    }
    log->draining = false;
    return first_err;
}

static int flight_complete(struct rl_flight *f, int res)
{
    f->res = res;
    f->done = true;
    return drain(f->log);
}

/* ---- memdisk test hooks (need the completion path) ---- */

void tkv_raftlog_memdisk_hold(struct tkv_raftlog_memdisk *d, bool on)
{
    d->hold = on;
}

size_t tkv_raftlog_memdisk_held(const struct tkv_raftlog_memdisk *d)
{
    return d->n_held;
}

void tkv_raftlog_memdisk_release(struct tkv_raftlog_memdisk *d, size_t i, int res)
{
    tkv_assert(i < d->n_held);
    struct rl_flight *f = d->held[i];
    memmove(&d->held[i], &d->held[i + 1], (d->n_held - i - 1) * sizeof(*d->held));
    d->n_held--;
    (void)flight_complete(f, res < 0 ? res : (int)f->wlen);
}

/* ---- flush ---- */

static int rotate(struct tkv_raftlog *log)
{
    struct rl_seg *s = active_seg(log);
    int rv;
    if (s->dirty_end > s->end) {
        /* Leftover of a failed write: recovery must find zeros after the last
         * batch of a sealed segment. */
        rv = raftlog_io_zero(log, s, s->end, (size_t)(s->dirty_end - s->end));
        if (rv < 0)
            return rv;
        s->dirty_end = 0;
    }
    rv = raftlog_io_create(log, s->id + 1);
    if (rv == 0)
        log->st.segments_created++;
    return rv;
}

static void seal(struct rl_batch *b, uint64_t seq)
{
    uint8_t *h = b->buf;
    rl_put32(h + 4, RL_BATCH_PAYLOAD);
    h[8] = RL_REC_BATCH;
    h[9] = h[10] = h[11] = 0;
    rl_put64(h + 12, 0);
    rl_put64(h + RL_REC_HDR, seq);
    rl_put32(h + RL_REC_HDR + 8, (uint32_t)(b->len - RL_BATCH_HDR));
    rl_put32(h + RL_REC_HDR + 12, b->n_records);
    rl_put32(h, tkv_codec_crc32c(0, h + 4, RL_BATCH_HDR - 4));
}

#ifdef TKV_RAFTLOG_HAVE_REACTOR
static void uring_done(struct tkv_io *io, int res)
{
    struct rl_flight *f = io->data;
    /* Failpoints on the io_uring path (Debug builds): the CQE reports an
     * error even though the kernel may have written the data. */
    fiu_do_on("raftlog/write_eio", res = -EIO);
    fiu_do_on("raftlog/fsync_eio", res = -EIO);
    fiu_do_on("raftlog/write_enospc", res = -ENOSPC);
    (void)flight_complete(f, res);
}

static void mem_done(void *arg)
{
    struct rl_flight *f = arg;
    (void)flight_complete(f, f->res);
}
#endif

/* Complete a memory write now, later (reactor: next loop step), or when the
 * test releases it (tkv_raftlog_memdisk_hold). */
static int mem_submitted(struct tkv_raftlog *log, struct rl_flight *f, int res)
{
    struct tkv_raftlog_memdisk *d = log->mem;
    f->res = res;
    if (d->hold) {
        if (d->n_held == d->cap_held) {
            d->cap_held = d->cap_held ? d->cap_held * 2 : 4;
            d->held = tkv_xrealloc(d->held, d->cap_held * sizeof(*d->held));
        }
        d->held[d->n_held++] = f;
        return 0;
    }
#ifdef TKV_RAFTLOG_HAVE_REACTOR
    if (log->reactor) {
        tkv_reactor_defer(log->reactor, mem_done, f);
        return 0;
    }
#endif
    return flight_complete(f, res);
}

/* Barrier-only batch at the head: its callbacks belong after the newest
 * flight (everything staged before them), or fire now when nothing is in
 * flight. */
static void flush_barriers(struct tkv_raftlog *log, struct rl_batch *b)
{
    log->head = b->next;
    if (log->head == NULL)
        log->tail = NULL;
    if (log->fl_n == 0) {
        fire(b, 0);
        batch_free(b);
        return;
    }
    struct rl_batch *last = flight_at(log, log->fl_n - 1)->b;
    for (size_t i = 0; i < b->n_cbs; i++)
        batch_add_cb(log, last, b->cbs[i].fn, b->cbs[i].arg);
    batch_free(b);
}

/* Submit the head batch if the pipeline has room. Returns 0 when it was
 * submitted (or completed), 1 when it must wait for flights to complete,
 * <0 on an error completed synchronously. */
static int flush_one(struct tkv_raftlog *log)
{
    struct rl_batch *b = log->head;
    bool rotated = false;
    int rv;
    if (log->fl_orphans > 0)
        return 1; /* a failed batch's late companion is still in the kernel */
    if (b->n_records == 0) {
        flush_barriers(log, b);
        return 0;
    }
    if (log->fl_n == RL_MAX_FLIGHTS || (log->fl_n > 0 && log->fl_bytes + b->len > log->max_batch))
        return 1; /* full, or past the torn-write window recovery allows */
    struct rl_seg *s = active_seg(log);
    uint64_t off = s->end + log->fl_bytes;
    if (off + b->len > log->segment_size) {
        if (log->fl_n > 0)
            return 1; /* never write two segments at once: seal after the drain */
        if (raftlog_async_files(log)) {
            /* off the loop: the switch completes on io_uring and a later
             * turn's flush writes this batch */
            rv = raftlog_rotate_async(log);
            if (rv > 0)
                return 1;
        } else {
            rv = rotate(log);
        }
        if (rv < 0) {
            if (is_nospace(rv)) {
                TKV_LOG_WARN("raft log: cannot create a segment, disk full",
                             TKV_LF_STR("dir", log->dir ? log->dir : "(memory)"),
                             TKV_LF_ERR(rv));
                fail_all(log, NULL, TKV_ENOSPACE);
                return TKV_ENOSPACE;
            }
            go_fatal(log, NULL, rv, "segment switch");
            return TKV_EIOFATAL;
        }
        s = active_seg(log);
        off = s->end;
        rotated = true;
    }
    log->head = b->next;
    if (log->head == NULL)
        log->tail = NULL;
    b->next = NULL;
    if (log->fl_n > 0)
        log->st.pipelined++;
    seal(b, log->next_seq + log->fl_n);
    /* After a failed (ENOSPC) write the bytes past the durable end may hold
     * a whole batch of the failed pipeline with the sequence number the
     * next batches reuse: zero them in the same write. */
    size_t wlen = b->len;
    if (s->dirty_end > off + b->len) {
        wlen = (size_t)(s->dirty_end - off);
        if (wlen > b->cap) {
            b->cap = wlen;
            b->buf = tkv_xrealloc(b->buf, b->cap);
        }
        memset(b->buf + b->len, 0, wlen - b->len);
    }
    struct rl_flight *f = flight_at(log, log->fl_n);
    *f = (struct rl_flight){.log = log, .b = b, .off = off, .len = b->len, .wlen = wlen,
                            .start_ns = rl_clock_ns()};
    log->fl_n++;
    log->fl_bytes += wlen;
    if (log->mem) {
        rv = raftlog_io_write_sync(log, s, off, b->buf, wlen);
        rv = mem_submitted(log, f, rv < 0 ? rv : (int)wlen);
    } else {
#ifdef TKV_RAFTLOG_HAVE_REACTOR
        if (log->reactor) {
            f->iov.iov_base = b->buf;
            f->iov.iov_len = wlen;
            tkv_io_init(&f->io, uring_done, f);
            /* raftlog/skip_fsync: the power-cut tests' negative control. */
            if (fiu_fail("raftlog/skip_fsync"))
                tkv_reactor_writev(log->reactor, &f->io, s->fd, &f->iov, 1, off);
            else
                tkv_reactor_write_sync(log->reactor, &f->io, s->fd, &f->iov, 1, off);
            rv = 0;
        } else
#endif
        {
            rv = raftlog_io_write_sync(log, s, off, b->buf, wlen);
            rv = flight_complete(f, rv < 0 ? rv : (int)wlen);
        }
    }
    if (rv == 0 && rotated && !log->failed)
        tkv_raftlog_purge(log);
    return rv;
}

int tkv_raftlog_flush(struct tkv_raftlog *log)
{
    int rv = 0;
    RL_OWNER_CHECK(log);
    if (log->failed)
        return TKV_EIOFATAL;
    if (log->flushing)
        return 0; /* a callback flushed: the outer loop goes on */
    log->flushing = true;
    while (log->head) {
        rv = flush_one(log);
        if (rv != 0)
            break;
    }
    log->flushing = false;
    return rv > 0 ? 0 : rv;
}

#ifdef TKV_RAFTLOG_HAVE_REACTOR
/* Group commit: the log's own before-sleep hook (embedded in the log,
 * removed at close) flushes what this loop turn staged. */
static void before_sleep(void *arg)
{
    struct tkv_raftlog *log = arg;
    if (log->head)
        tkv_raftlog_flush(log);
}

static void hook_attach(struct tkv_raftlog *log)
{
    tkv_reactor_hook_init(&log->flush_hook, before_sleep, log);
    tkv_reactor_hook_add(log->reactor, &log->flush_hook);
}

static void hook_detach(struct tkv_raftlog *log)
{
    tkv_reactor_hook_remove(log->reactor, &log->flush_hook);
}
#endif

/* ---- purge ---- */

/* The oldest segment the region's durable state still depends on: its first
 * entry (later entries sit in the same or later segments, since a
 * truncation re-appends after), its latest hard state, and for an empty
 * region the latest record (which carries its first index). */
static uint64_t pin_seg(const struct rl_region *r)
{
    uint64_t pin = UINT64_MAX;
    if (r->count > 0)
        pin = r->ents[r->head].seg;
    else if (r->first > 1 || r->has_hs)
        pin = r->last_seg;
    if (r->has_hs && r->hs_seg < pin)
        pin = r->hs_seg;
    if (r->snap_seg != 0 && r->snap_seg < pin)
        pin = r->snap_seg;
    return pin;
}

/* Idle regions pin old segments forever; copy their needed state (entries
 * from first_index, hard state) to the log head so the segment can go
 * (raft-engine's rewrite). Only regions with nothing staged (a rewrite is an
 * append at first_index, which would cut staged entries) whose last record
 * is old, and whose entries fit one record. The purge after the rewrite's
 * batch is durable deletes the segment. */
static void rewrite_pinning(struct tkv_raftlog *log, uint64_t oldest, uint64_t active)
{
    struct rl_map *m = &log->regions;
    size_t n = 0;
    tkv_region_id *ids = NULL;
    for (size_t i = 0; i < m->cap; i++) {
        struct rl_region *r = m->slots[i];
        if (r && r->n_pending == 0 && pin_seg(r) == oldest && r->last_seg + 1 < active) {
            if (ids == NULL)
                ids = tkv_xmalloc(m->n * sizeof(*ids));
            ids[n++] = r->id;
        }
    }
    for (size_t k = 0; k < n; k++) {
        struct rl_region *r = raftlog_map_get(m, ids[k]);
        const struct tkv_raftlog_hardstate *hs = r->has_hs ? &r->hs : NULL;
        /* The compaction point (first index and its term) moves first. */
        if (r->snap_seg != 0 || (r->count == 0 && r->first > 1))
            stage_2u64(log, RL_REC_COMPACT, r->id, r->first - 1, durable_term(r, r->first - 1),
                       NULL, NULL);
        if (r->count == 0) {
            if (hs)
                tkv_raftlog_append(log, r->id, NULL, 0, hs, NULL, NULL);
            continue;
        }
        size_t bytes = RL_REC_HDR + RL_APPEND_FIXED + RL_HS_BYTES;
        for (uint64_t i = 0; i < r->count; i++)
            bytes += RL_ENT_FIXED + r->ents[r->head + i].len;
        if (bytes > rec_limit(log))
            continue;
        struct tkv_raftlog_entry *e = NULL;
        size_t ne = 0;
        tkv_index first = r->first, last = r->first + r->count - 1;
        if (tkv_raftlog_read(log, r->id, first, last + 1, 0, &e, &ne) == 0 && ne == r->count)
            tkv_raftlog_append(log, r->id, e, ne, hs, NULL, NULL);
        tkv_free(e);
    }
    tkv_free(ids);
}

int tkv_raftlog_purge(struct tkv_raftlog *log)
{
    TKV_RET(check_usable(log));
    struct rl_map *m = &log->regions;
    struct rl_seg *act = active_seg(log);
    uint64_t min_seg = act->id;
    /* Held-back compactions first: the safe index may have moved. */
    if (log->safe_fn) {
        size_t n_re = 0;
        tkv_region_id *re = NULL;
        for (size_t i = 0; i < m->cap; i++) {
            struct rl_region *r = m->slots[i];
            if (r && r->want_compact >= r->s_first) {
                if (re == NULL)
                    re = tkv_xmalloc(m->n * sizeof(*re));
                re[n_re++] = r->id;
            }
        }
        for (size_t i = 0; i < n_re; i++) {
            struct rl_region *r = raftlog_map_get(m, re[i]);
            tkv_index safe = log->safe_fn(log->safe_arg, re[i]);
            tkv_index upto = TKV_MIN(r->want_compact, safe);
            if (upto >= r->s_first)
                tkv_raftlog_compact(log, re[i], upto, 0, NULL, NULL);
        }
        tkv_free(re);
    }
    for (size_t i = 0; i < m->cap; i++) {
        struct rl_region *r = m->slots[i];
        if (r != NULL)
            min_seg = TKV_MIN(min_seg, pin_seg(r));
    }
    if (log->n_segs > 2 && min_seg == log->segs[0].id)
        rewrite_pinning(log, min_seg, act->id);
    size_t n_del = 0;
    int rv = 0;
    bool async = raftlog_async_files(log);
    if (async && raftlog_purge_idle(log)) {
        /* off the loop: unlinkat + directory fsync on io_uring */
        while (n_del + 1 < log->n_segs && log->segs[n_del].id < min_seg)
            n_del++;
        if (n_del > 0)
            raftlog_purge_async(log, log->segs, n_del);
    }
    while (!async && n_del + 1 < log->n_segs && log->segs[n_del].id < min_seg) {
        if (log->reactor && !log->mem)
            log->st.blocking_file_ops++; /* a blocking file operation */
        rv = raftlog_io_remove(log, &log->segs[n_del]);
        if (rv < 0)
            break;
        n_del++;
    }
    if (n_del > 0) {
        memmove(log->segs, log->segs + n_del, (log->n_segs - n_del) * sizeof(*log->segs));
        log->n_segs -= n_del;
        log->st.segments_purged += n_del;
        int rv2 = async ? 0 : raftlog_io_sync_dir(log);
        if (rv == 0)
            rv = rv2;
    }
    rl_metrics_segments(log);
    if (rv < 0) {
        TKV_LOG_WARN("raft log purge: cannot delete a segment",
                     TKV_LF_STR("dir", log->dir ? log->dir : "(memory)"), TKV_LF_ERR(rv));
        return rv;
    }
    return (int)n_del;
}

void tkv_raftlog_set_safe_fn(struct tkv_raftlog *log, tkv_raftlog_safe_fn fn, void *arg)
{
    log->safe_fn = fn;
    log->safe_arg = arg;
}

/* ---- reads ---- */

tkv_index tkv_raftlog_first_index(const struct tkv_raftlog *log, tkv_region_id region)
{
    const struct rl_region *r = raftlog_map_get(&log->regions, region);
    return r ? r->first : 1;
}

tkv_index tkv_raftlog_last_index(const struct tkv_raftlog *log, tkv_region_id region)
{
    const struct rl_region *r = raftlog_map_get(&log->regions, region);
    return r ? r->first + r->count - 1 : 0;
}

int tkv_raftlog_term(const struct tkv_raftlog *log, tkv_region_id region, tkv_index index,
                     tkv_term *term_out)
{
    const struct rl_region *r = raftlog_map_get(&log->regions, region);
    uint64_t first = r ? r->first : 1;
    if (index + 1 == first) {
        tkv_term t = index == 0 ? 0 : durable_term(r, index);
        if (index != 0 && t == 0)
            return TKV_ECOMPACTED;
        *term_out = t;
        return 0;
    }
    if (r == NULL)
        return TKV_EUNAVAILABLE;
    if (index < r->first)
        return TKV_ECOMPACTED;
    if (index >= r->first + r->count)
        return TKV_EUNAVAILABLE;
    *term_out = r->ents[r->head + (index - r->first)].term;
    return 0;
}

int tkv_raftlog_hardstate(const struct tkv_raftlog *log, tkv_region_id region,
                          struct tkv_raftlog_hardstate *hs_out)
{
    const struct rl_region *r = raftlog_map_get(&log->regions, region);
    if (r == NULL || !r->has_hs)
        return TKV_ENOTFOUND;
    *hs_out = r->hs;
    return 0;
}

int tkv_raftlog_read(struct tkv_raftlog *log, tkv_region_id region, tkv_index lo, tkv_index hi,
                     size_t max_bytes, struct tkv_raftlog_entry **entries_out, size_t *n_out)
{
    const struct rl_region *r = raftlog_map_get(&log->regions, region);
    if (lo > hi)
        return TKV_EINVAL;
    if (r == NULL)
        return lo == hi ? (*entries_out = NULL, *n_out = 0, 0) : TKV_EUNAVAILABLE;
    if (lo < r->first)
        return TKV_ECOMPACTED;
    if (hi > r->first + r->count)
        return TKV_EUNAVAILABLE;
    size_t n = 0, data = 0;
    for (tkv_index i = lo; i < hi; i++) {
        const struct rl_ent *e = &r->ents[r->head + (i - r->first)];
        if (max_bytes && n > 0 && data + e->len > max_bytes)
            break;
        data += e->len;
        n++;
    }
    if (n == 0) {
        *entries_out = NULL;
        *n_out = 0;
        return 0;
    }
    struct tkv_raftlog_entry *out = tkv_malloc(n * sizeof(*out) + data);
    if (out == NULL)
        return TKV_ENOMEM;
    uint8_t *dp = (uint8_t *)(out + n);
    uint8_t *span = NULL;
    size_t span_cap = 0;
    int rv = 0;
    /* One pread per run of entries laid out back to back in one segment
     * (entries of one APPEND record sit 16 header bytes apart). */
    for (size_t k = 0; k < n;) {
        const struct rl_ent *e0 = &r->ents[r->head + (lo + k - r->first)];
        size_t j = k + 1;
        uint64_t end = (uint64_t)e0->off + e0->len;
        while (j < n) {
            const struct rl_ent *e = &r->ents[r->head + (lo + j - r->first)];
            if (e->seg != e0->seg || e->off < end || e->off - end > 64 ||
                (uint64_t)e->off + e->len - e0->off > (1u << 20))
                break;
            end = (uint64_t)e->off + e->len;
            j++;
        }
        struct rl_seg *s = raftlog_seg_find(log, e0->seg);
        if (s == NULL) {
            TKV_LOG_ERROR("raft log index points at a purged segment",
                          TKV_LF_U64("region_id", region), TKV_LF_U64("segment", e0->seg));
            rv = TKV_ECORRUPT;
            break;
        }
        size_t span_len = (size_t)(end - e0->off);
        if (span_len > span_cap) {
            tkv_free(span);
            span_cap = span_len;
            span = tkv_malloc(span_cap);
            if (span == NULL) {
                rv = TKV_ENOMEM;
                break;
            }
        }
        if (span_len > 0 && (rv = raftlog_io_read(log, s, e0->off, span, span_len)) < 0)
            break;
        for (; k < j; k++) {
            const struct rl_ent *e = &r->ents[r->head + (lo + k - r->first)];
            if (e->len)
                memcpy(dp, span + (e->off - e0->off), e->len);
            out[k].index = lo + k;
            out[k].term = e->term;
            out[k].type = e->type;
            out[k].data = TKV_SLICE(dp, e->len);
            dp += e->len;
        }
    }
    tkv_free(span);
    if (rv < 0) {
        tkv_free(out);
        return rv;
    }
    *entries_out = out;
    *n_out = n;
    return 0;
}

void tkv_raftlog_foreach_region(const struct tkv_raftlog *log,
                                void (*fn)(void *arg, tkv_region_id region), void *arg)
{
    for (size_t i = 0; i < log->regions.cap; i++) {
        const struct rl_region *r = log->regions.slots[i];
        if (r && (r->count > 0 || r->has_hs || r->first > 1))
            fn(arg, r->id);
    }
}

void tkv_raftlog_stats(const struct tkv_raftlog *log, struct tkv_raftlog_stats *out)
{
    *out = log->st;
    out->n_regions = log->regions.n;
    out->n_segments = log->n_segs;
    out->active_segment = log->n_segs ? log->segs[log->n_segs - 1].id : 0;
    uint64_t bytes = log->regions.cap * sizeof(void *) + log->n_segs * sizeof(struct rl_seg);
    for (size_t i = 0; i < log->regions.cap; i++) {
        const struct rl_region *r = log->regions.slots[i];
        if (r)
            bytes += sizeof(*r) + r->cap * sizeof(struct rl_ent);
    }
    out->index_bytes = bytes;
    out->failed = log->failed;
}

bool tkv_raftlog_idle(const struct tkv_raftlog *log)
{
    return log->fl_n == 0 && raftlog_spare_idle(log);
}

/* ---- open / close ---- */

static int open_common(const struct tkv_raftlog_config *cfg, struct tkv_raftlog_memdisk *disk,
                       struct tkv_raftlog **log_out, struct tkv_raftlog_corruption *where)
{
    pthread_once(&rl_metrics_once, rl_metrics_register);
    int rv;
    struct tkv_raftlog *log = NULL;
    if (cfg == NULL || (disk == NULL && (cfg->dir == NULL || cfg->dir[0] == '\0')))
        return TKV_EINVAL;
#ifndef TKV_RAFTLOG_HAVE_REACTOR
    if (cfg->reactor)
        return TKV_EINVAL;
#endif
    uint64_t seg = cfg->segment_size ? cfg->segment_size : 64ull << 20;
    if (seg < RL_MIN_SEGMENT || seg > UINT32_MAX)
        return TKV_EINVAL;
    uint64_t mb = cfg->max_batch_bytes ? cfg->max_batch_bytes : 1u << 20;
    if (mb > seg - RL_SEG_HDR)
        mb = seg - RL_SEG_HDR;
    if (mb < 256)
        return TKV_EINVAL;
    if (disk && disk->in_use)
        return TKV_EINVAL;
    log = tkv_xcalloc(1, sizeof(*log));
    log->dir_fd = -1;
    log->dir_op_fd = -1;
    log->spare.fd = -1;
    log->mem = disk;
    log->reactor = cfg->reactor;
    log->segment_size = seg;
    log->max_batch = (uint32_t)mb;
    log->zero_fill = !cfg->skip_zero_fill;
    if (disk)
        disk->in_use = true;
    else
        log->dir = tkv_xstrdup(cfg->dir);
    TKV_ERR(raftlog_io_open_dir(log));
    TKV_ERR(raftlog_recover(log, where));
    rl_metrics_segments(log);
#ifdef TKV_RAFTLOG_HAVE_REACTOR
    if (log->reactor) {
        log->owner_core = tkv_reactor_core_id(log->reactor);
        hook_attach(log);
    }
#endif
    log->opened = true;
    raftlog_spare_start(log);
    *log_out = log;
    return 0;
err:
    log->closing = true;
    tkv_raftlog_close(log);
    assert(rv != 0);
    return rv;
}

int tkv_raftlog_open(const struct tkv_raftlog_config *cfg, struct tkv_raftlog **log_out,
                     struct tkv_raftlog_corruption *where_out)
{
    return open_common(cfg, NULL, log_out, where_out);
}

int tkv_raftlog_open_mem(const struct tkv_raftlog_config *cfg, struct tkv_raftlog_memdisk *disk,
                         struct tkv_raftlog **log_out, struct tkv_raftlog_corruption *where_out)
{
    if (disk == NULL)
        return TKV_EINVAL;
    return open_common(cfg, disk, log_out, where_out);
}

void tkv_raftlog_close(struct tkv_raftlog *log)
{
    if (log == NULL)
        return;
    RL_OWNER_CHECK(log);
    tkv_assert(tkv_raftlog_idle(log));
    log->closing = true;
    raftlog_spare_close(log);
#ifdef TKV_RAFTLOG_HAVE_REACTOR
    if (log->reactor)
        hook_detach(log);
#endif
    struct rl_batch *b = log->head;
    log->head = log->tail = NULL;
    while (b) {
        struct rl_batch *next = b->next;
        fire(b, TKV_ESHUTDOWN);
        batch_free(b);
        b = next;
    }
    for (size_t i = 0; i < log->n_segs; i++)
        raftlog_io_close_seg(log, &log->segs[i]);
    if (log->segs_reported)
        tkv_gauge_add(rl_metrics.segments, -(double)log->segs_reported);
    raftlog_io_close_dir(log);
    if (log->mem)
        log->mem->in_use = false;
    raftlog_map_free(&log->regions);
    tkv_free(log->segs);
    tkv_free(log->dir);
    tkv_free(log);
}
