/* Unit tests of the raft log contract; every test runs against the disk and
 * the in-memory implementation (suites raftlog_disk and raftlog_mem). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "raftlog_harness.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/mem.h"

#define BOTH(name)                                   \
    static void name##_body(bool mem);               \
    Test(raftlog_disk, name) { name##_body(false); } \
    Test(raftlog_mem, name) { name##_body(true); }   \
    static void name##_body(bool mem)

struct done {
    int calls;
    int rv;
    int order[64];
    int n_order;
};

static void on_done(void *arg, int rv)
{
    struct done *d = arg;
    d->calls++;
    d->rv = rv;
}

static void check(struct tkv_raftlog *log, const struct m_region *m)
{
    char buf[256];
    const char *err = m_check(log, m, buf, sizeof(buf));
    cr_assert(err == NULL, "%s", err);
}

Test(raftlog_format, record_checksum_is_crc32c)
{
    /* The on-disk format is CRC32C seeded with 0 (codec.h). */
    cr_assert_eq(tkv_codec_crc32c(0, "123456789", 9), 0xE3069283u);
}

BOTH(append_read_hardstate)
{
    struct h h;
    h_init(&h, mem, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 7};
    struct tkv_raftlog_hardstate hs = {.term = 3, .vote = 2, .commit = 5};
    struct done d = {0};
    cr_assert_eq(h_append(h.log, &m, 1, 10, 3, &hs, on_done, &d), 0);
    /* Staged, not durable: reads see nothing yet. */
    cr_assert_eq(d.calls, 0);
    cr_assert_eq(tkv_raftlog_last_index(h.log, 7), 0);
    struct tkv_raftlog_hardstate got;
    cr_assert_eq(tkv_raftlog_hardstate(h.log, 7, &got), TKV_ENOTFOUND);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rv, 0);
    check(h.log, &m);
    tkv_term t;
    cr_assert_eq(tkv_raftlog_term(h.log, 7, 11, &t), TKV_EUNAVAILABLE);
    cr_assert_eq(tkv_raftlog_term(h.log, 8, 1, &t), TKV_EUNAVAILABLE);
    /* max_bytes stops early but returns at least one entry. */
    struct tkv_raftlog_entry *e;
    size_t n;
    cr_assert_eq(tkv_raftlog_read(h.log, 7, 1, 11, 1, &e, &n), 0);
    cr_assert_eq(n, 1);
    tkv_free(e);
    cr_assert_eq(tkv_raftlog_read(h.log, 7, 2, 12, 0, &e, &n), TKV_EUNAVAILABLE);
    cr_assert_eq(tkv_raftlog_read(h.log, 7, 5, 4, 0, &e, &n), TKV_EINVAL);
    /* Hard state only. */
    hs.commit = 9;
    cr_assert_eq(h_append(h.log, &m, 0, 0, 0, &hs, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    free(m.terms);
    h_fini(&h);
}

BOTH(conflict_truncate_and_validation)
{
    struct h h;
    h_init(&h, mem, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 1};
    cr_assert_eq(h_append(h.log, &m, 5, 10, 1, NULL, NULL, NULL), 0); /* 5..14 */
    /* Conflict: staged suffix replaced from 9 (before any flush). */
    cr_assert_eq(h_append(h.log, &m, 9, 3, 2, NULL, NULL, NULL), 0); /* 5..11 */
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    /* Conflict against durable entries. */
    cr_assert_eq(h_append(h.log, &m, 7, 2, 3, NULL, NULL, NULL), 0); /* 5..8 */
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    /* Gap, below first, non-consecutive: rejected, nothing staged. */
    cr_assert_eq(h_append(h.log, &m, 10, 1, 3, NULL, NULL, NULL), TKV_EINVAL);
    cr_assert_eq(h_append(h.log, &m, 4, 1, 3, NULL, NULL, NULL), TKV_EINVAL);
    struct tkv_raftlog_entry bad[2] = {{.index = 9, .term = 3}, {.index = 11, .term = 3}};
    cr_assert_eq(tkv_raftlog_append(h.log, 1, bad, 2, NULL, NULL, NULL), TKV_EINVAL);
    cr_assert_eq(tkv_raftlog_truncate(h.log, 1, 4, NULL, NULL), TKV_EINVAL);
    cr_assert_eq(tkv_raftlog_truncate(h.log, 1, 7, NULL, NULL), 0);
    m_truncate(&m, 7);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    free(m.terms);
    h_fini(&h);
}

BOTH(compact_and_snapshot)
{
    struct h h;
    h_init(&h, mem, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 2};
    cr_assert_eq(h_append(h.log, &m, 1, 20, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    /* term 0: looked up in the durable log. */
    cr_assert_eq(tkv_raftlog_compact(h.log, 2, 5, 0, NULL, NULL), 0);
    m_compact(&m, 5, 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    tkv_term t;
    cr_assert_eq(tkv_raftlog_term(h.log, 2, 5, &t), 0);
    cr_assert_eq(t, 1, "term of the compaction point");
    cr_assert_eq(tkv_raftlog_term(h.log, 2, 4, &t), TKV_ECOMPACTED);
    struct tkv_raftlog_entry *e;
    size_t n;
    cr_assert_eq(tkv_raftlog_read(h.log, 2, 3, 8, 0, &e, &n), TKV_ECOMPACTED);
    /* Snapshot: compact past the last index, then continue from there. */
    cr_assert_eq(tkv_raftlog_compact(h.log, 2, 100, 7, NULL, NULL), 0);
    m_compact(&m, 100, 7);
    cr_assert_eq(h_append(h.log, &m, 50, 1, 4, NULL, NULL, NULL), TKV_EINVAL);
    cr_assert_eq(h_append(h.log, &m, 101, 5, 4, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    cr_assert_eq(tkv_raftlog_term(h.log, 2, 100, &t), 0);
    cr_assert_eq(t, 7, "snapshot term kept for first-1");
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    /* A fresh region: term(0) = 0, nothing else. */
    cr_assert_eq(tkv_raftlog_term(h.log, 77, 0, &t), 0);
    cr_assert_eq(t, 0);
    cr_assert_eq(tkv_raftlog_term(h.log, 77, 1, &t), TKV_EUNAVAILABLE);
    free(m.terms);
    h_fini(&h);
}

BOTH(remove_region_and_recreate)
{
    struct h h;
    h_init(&h, mem, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region a = {.id = 10}, b = {.id = 11};
    struct tkv_raftlog_hardstate hs = {.term = 1, .vote = 1, .commit = 1};
    cr_assert_eq(h_append(h.log, &a, 1, 5, 1, &hs, NULL, NULL), 0);
    cr_assert_eq(h_append(h.log, &b, 1, 5, 1, &hs, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    struct done d = {0};
    cr_assert_eq(tkv_raftlog_remove_region(h.log, 10, on_done, &d), 0);
    m_remove(&a);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(d.calls, 1);
    check(h.log, &a);
    check(h.log, &b);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(h.log, &st);
    cr_assert_eq(st.n_regions, 1);
    /* Re-create with different indexes in the same batch as a removal. */
    cr_assert_eq(tkv_raftlog_remove_region(h.log, 11, NULL, NULL), 0);
    m_remove(&b);
    cr_assert_eq(h_append(h.log, &b, 30, 3, 9, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &b);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &a);
    check(h.log, &b);
    free(a.terms);
    free(b.terms);
    h_fini(&h);
}

static void order_cb(void *arg, int rv)
{
    struct done *d = arg;
    cr_assert_eq(rv, 0);
    d->order[d->n_order++] = d->calls++;
}

BOTH(group_commit_one_sync_per_batch)
{
    struct h h;
    h_init(&h, mem, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m[50];
    struct done d = {0};
    for (int i = 0; i < 50; i++) {
        m[i] = (struct m_region){.id = (uint64_t)i + 1};
        cr_assert_eq(h_append(h.log, &m[i], 1, 2, 1, NULL, i < 32 ? order_cb : NULL, &d), 0);
    }
    struct done d2 = {0};
    cr_assert_eq(tkv_raftlog_sync(h.log, on_done, &d2), 0);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(h.log, &st);
    cr_assert_eq(st.batches, 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    tkv_raftlog_stats(h.log, &st);
    cr_assert_eq(st.batches, 1, "50 appends staged in one turn share one sync (got %" PRIu64 ")",
                 st.batches);
    cr_assert_eq(st.records, 50);
    cr_assert_eq(d.calls, 32);
    cr_assert_eq(d2.calls, 1);
    for (int i = 0; i < 50; i++)
        check(h.log, &m[i]);
    /* A barrier with nothing staged completes at the next flush, no write. */
    cr_assert_eq(tkv_raftlog_sync(h.log, on_done, &d2), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(d2.calls, 2);
    tkv_raftlog_stats(h.log, &st);
    cr_assert_eq(st.batches, 1);
    for (int i = 0; i < 50; i++)
        free(m[i].terms);
    h_fini(&h);
}

/* Random operations on many regions against the model, flushes at random
 * points, reopen at the end; small segments so rotation and purge happen. */
static void random_ops(bool mem, uint64_t seed, int n_ops, bool with_reopen)
{
    struct h h;
    h_init(&h, mem, NULL, 32 * 1024, 4096);
    cr_assert_eq(h_open(&h), 0);
    enum { NR = 12 };
    struct m_region m[NR];
    uint64_t term[NR];
    for (int i = 0; i < NR; i++) {
        m[i] = (struct m_region){.id = (uint64_t)i * 1000 + 3};
        term[i] = 1;
    }
    uint64_t s = seed, purged = 0;
    for (int op = 0; op < n_ops; op++) {
        int i = (int)(h_rand(&s) % NR);
        struct m_region *r = &m[i];
        uint64_t first = r->first ? r->first : 1, last = first + r->n - 1;
        uint64_t x = h_rand(&s) % 100;
        /* TKV_DEBUG_OPS=<region id> traces that region's operations. */
        if (getenv("TKV_DEBUG_OPS") && r->id == (uint64_t)atoi(getenv("TKV_DEBUG_OPS")))
            fprintf(stderr, "op %d x %" PRIu64 " first %" PRIu64 " n %" PRIu64 " snap %" PRIu64 "\n",
                    op, x, r->first, r->n, r->snap_term);
        if (x < 55) {
            uint64_t start = r->n ? first + h_rand(&s) % (r->n + 1) : first + h_rand(&s) % 3;
            if (r->n && h_rand(&s) % 4)
                start = last + 1;
            if (h_rand(&s) % 5 == 0)
                term[i]++;
            struct tkv_raftlog_hardstate hs = {.term = term[i], .vote = h_rand(&s) % 5,
                                               .commit = start};
            cr_assert_eq(h_append(h.log, r, start, 1 + h_rand(&s) % 8, term[i],
                                  h_rand(&s) % 2 ? &hs : NULL, NULL, NULL),
                         0, "seed %" PRIu64 " op %d", seed, op);
        } else if (x < 65 && r->n) {
            uint64_t from = first + h_rand(&s) % r->n;
            cr_assert_eq(tkv_raftlog_truncate(h.log, r->id, from, NULL, NULL), 0);
            m_truncate(r, from);
        } else if (x < 80 && r->n) {
            uint64_t upto = first + h_rand(&s) % r->n;
            uint64_t ct = m_term(r, upto);
            cr_assert_eq(tkv_raftlog_compact(h.log, r->id, upto, ct, NULL, NULL), 0);
            m_compact(r, upto, ct);
        } else if (x < 83) {
            cr_assert_eq(tkv_raftlog_remove_region(h.log, r->id, NULL, NULL), 0);
            m_remove(r);
        } else if (x < 97) {
            cr_assert_eq(tkv_raftlog_flush(h.log), 0);
            if (getenv("TKV_DEBUG_OPS"))
                fprintf(stderr, "flush at op %d\n", op);
            for (int k = 0; k < NR; k++)
                check(h.log, &m[k]);
        } else if (with_reopen) {
            if (getenv("TKV_DEBUG_OPS"))
                fprintf(stderr, "reopen at op %d\n", op);
            cr_assert_eq(tkv_raftlog_flush(h.log), 0);
            struct tkv_raftlog_stats st1;
            tkv_raftlog_stats(h.log, &st1);
            purged += st1.segments_purged;
            h_close(&h);
            cr_assert_eq(h_open(&h), 0, "seed %" PRIu64 ": reopen: %s at %" PRIu64, seed,
                         h.where.reason, h.where.offset);
            for (int k = 0; k < NR; k++)
                check(h.log, &m[k]);
        }
    }
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    if (getenv("TKV_DEBUG_OPS"))
        fprintf(stderr, "final flush done\n");
    for (int k = 0; k < NR; k++)
        check(h.log, &m[k]);
    cr_assert_eq(tkv_raftlog_purge(h.log) >= 0, 1);
    if (getenv("TKV_DEBUG_OPS"))
        fprintf(stderr, "final purge done\n");
    for (int k = 0; k < NR; k++)
        check(h.log, &m[k]);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(h.log, &st);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0, "seed %" PRIu64 ": %s at %" PRIu64, seed, h.where.reason,
                 h.where.offset);
    for (int k = 0; k < NR; k++)
        check(h.log, &m[k]);
    purged += st.segments_purged;
    cr_assert(purged > 0, "segments were never purged (%" PRIu64 " live)", st.n_segments);
    cr_assert_leq(st.n_segments, 16, "%" PRIu64 " live segments", st.n_segments);
    for (int k = 0; k < NR; k++)
        free(m[k].terms);
    h_fini(&h);
}

BOTH(random_ops_match_model_across_reopen)
{
    const char *env = getenv("TKV_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 42;
    for (uint64_t k = 0; k < 4; k++)
        random_ops(mem, seed + k, 1500, true);
}

BOTH(purge_keeps_needed_records_and_rewrites_idle_regions)
{
    struct h h;
    h_init(&h, mem, NULL, 16 * 1024, 4096);
    cr_assert_eq(h_open(&h), 0);
    /* idle: old entries, never compacted; hs_only: just a hard state;
     * snap: compacted to 500 with no entries; busy: appends + compacts;
     * keep: appends, never compacts (pins everything it wrote). */
    struct m_region idle = {.id = 1}, busy = {.id = 2}, hs_only = {.id = 3}, snap = {.id = 4},
                    keep = {.id = 5};
    struct tkv_raftlog_hardstate hs = {.term = 1, .vote = 3, .commit = 0};
    cr_assert_eq(h_append(h.log, &idle, 1, 3, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(h_append(h.log, &hs_only, 0, 0, 0, &hs, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_compact(h.log, 4, 500, 3, NULL, NULL), 0);
    m_compact(&snap, 500, 3);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    uint64_t next = 1;
    struct tkv_raftlog_stats st;
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(h_append(h.log, &busy, next, 4, 1, NULL, NULL, NULL), 0);
        next += 4;
        cr_assert_eq(tkv_raftlog_compact(h.log, 2, next - 4, 1, NULL, NULL), 0);
        m_compact(&busy, next - 4, 1);
        if (i < 40) {
            uint64_t k = keep.n ? keep.first + keep.n : 1;
            cr_assert_eq(h_append(h.log, &keep, k, 1, 1, NULL, NULL, NULL), 0);
        }
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
        if (i == 80) {
            tkv_raftlog_stats(h.log, &st);
            cr_assert_gt(st.n_segments, 2);
            cr_assert_eq(st.segments_purged, 0, "segment 1 holds needed records");
        }
    }
    tkv_raftlog_stats(h.log, &st);
    /* keep's entries span a few segments from the start and pin them. */
    cr_assert_eq(st.segments_purged, 0, "keep pins segment 1");
    cr_assert_eq(tkv_raftlog_compact(h.log, 5, keep.first + keep.n - 1, 1, NULL, NULL), 0);
    m_compact(&keep, keep.first + keep.n - 1, 1);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_geq(tkv_raftlog_purge(h.log), 0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    }
    tkv_raftlog_stats(h.log, &st);
    cr_assert_gt(st.segments_purged, 0, "idle regions were not rewritten");
    cr_assert_leq(st.n_segments, 3, "%" PRIu64 " segments left", st.n_segments);
    struct m_region *all[] = {&idle, &busy, &hs_only, &snap, &keep};
    for (int i = 0; i < 5; i++)
        check(h.log, all[i]);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    for (int i = 0; i < 5; i++) {
        check(h.log, all[i]);
        free(all[i]->terms);
    }
    h_fini(&h);
}

static tkv_index safe_index = 0;
static tkv_index safe_fn(void *arg, tkv_region_id region)
{
    (void)arg;
    (void)region;
    return safe_index;
}

BOTH(safe_hook_holds_back_compaction)
{
    struct h h;
    h_init(&h, mem, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    tkv_raftlog_set_safe_fn(h.log, safe_fn, NULL);
    safe_index = 10;
    struct m_region m = {.id = 5};
    cr_assert_eq(h_append(h.log, &m, 1, 50, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(tkv_raftlog_compact(h.log, 5, 40, 1, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(tkv_raftlog_first_index(h.log, 5), 11, "compaction stops at the safe index");
    safe_index = 30;
    cr_assert_geq(tkv_raftlog_purge(h.log), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(tkv_raftlog_first_index(h.log, 5), 31);
    safe_index = 1000;
    cr_assert_geq(tkv_raftlog_purge(h.log), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    cr_assert_eq(tkv_raftlog_first_index(h.log, 5), 41, "never more than asked");
    m_compact(&m, 40, 1);
    check(h.log, &m);
    free(m.terms);
    h_fini(&h);
}

BOTH(index_memory_bounded_as_regions_come_and_go)
{
    struct h h;
    h_init(&h, mem, NULL, 64 * 1024, 0);
    cr_assert_eq(h_open(&h), 0);
    struct tkv_raftlog_stats st0, st;
    tkv_raftlog_stats(h.log, &st0);
    uint8_t data[128] = {0};
    for (int round = 0; round < 5; round++) {
        for (uint64_t r = 1; r <= 2000; r++) {
            struct tkv_raftlog_entry e = {.index = 1, .term = 1, .data = TKV_SLICE(data, 128)};
            cr_assert_eq(tkv_raftlog_append(h.log, r + (uint64_t)round * 10000, &e, 1, NULL,
                                            NULL, NULL),
                         0);
        }
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
        tkv_raftlog_stats(h.log, &st);
        cr_assert_eq(st.n_regions, 2000);
        for (uint64_t r = 1; r <= 2000; r++)
            cr_assert_eq(tkv_raftlog_remove_region(h.log, r + (uint64_t)round * 10000, NULL,
                                                   NULL),
                         0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
        cr_assert_geq(tkv_raftlog_purge(h.log), 0);
        tkv_raftlog_stats(h.log, &st);
        cr_assert_eq(st.n_regions, 0);
        cr_assert_leq(st.index_bytes, st0.index_bytes + 4096,
                      "index holds %" PRIu64 " bytes after every region left", st.index_bytes);
        cr_assert_leq(st.n_segments, 2);
    }
    h_fini(&h);
}

/* Write n batches of one region; returns the model. */
static void fill(struct h *h, struct m_region *m, int batches, int per)
{
    for (int i = 0; i < batches; i++) {
        uint64_t start = m->n ? m->first + m->n : 1;
        cr_assert_eq(h_append(h->log, m, start, (uint64_t)per, 1, NULL, NULL, NULL), 0);
        cr_assert_eq(tkv_raftlog_flush(h->log), 0);
    }
}

BOTH(torn_tail_is_cut_off)
{
    for (int variant = 0; variant < 3; variant++) {
        struct h h;
        h_init(&h, mem, NULL, 256 * 1024, 4096);
        cr_assert_eq(h_open(&h), 0);
        struct m_region m = {.id = 9};
        fill(&h, &m, 20, 4);
        struct m_region before = m;
        before.terms = malloc(m.cap * sizeof(uint64_t));
        memcpy(before.terms, m.terms, m.cap * sizeof(uint64_t));
        uint64_t start = m.first + m.n;
        cr_assert_eq(h_append(h.log, &m, start, 6, 1, NULL, NULL, NULL), 0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
        size_t end = h_seg_data_end(&h, 0);
        h_close(&h);
        size_t len;
        uint8_t *p = h_seg_load(&h, 0, &len);
        /* The last batch is ~1 KiB; find its start by reopening after
         * damage: torn variants keep every earlier batch. */
        uint64_t s = 99 + (uint64_t)variant;
        if (variant == 0) {
            memset(p + end - 100, 0, 100); /* prefix of the write reached disk */
        } else if (variant == 1) {
            for (size_t i = end - 300; i < end + 500; i++) /* trashed tail */
                p[i] = (uint8_t)h_rand(&s);
        } else {
            p[end - 700] ^= 0x40; /* a flipped bit inside the last batch */
        }
        h_seg_store(&h, 0, p, len);
        free(p);
        cr_assert_eq(h_open(&h), 0, "variant %d: %s at %" PRIu64, variant, h.where.reason,
                     h.where.offset);
        check(h.log, &before);
        /* Appends work after the cut and survive a reopen. */
        cr_assert_eq(h_append(h.log, &before, start, 3, 2, NULL, NULL, NULL), 0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
        h_close(&h);
        cr_assert_eq(h_open(&h), 0);
        check(h.log, &before);
        free(before.terms);
        free(m.terms);
        h_fini(&h);
    }
}

BOTH(corruption_in_the_middle_refuses_to_open)
{
    for (int variant = 0; variant < 3; variant++) {
        struct h h;
        h_init(&h, mem, NULL, 32 * 1024, 2048);
        cr_assert_eq(h_open(&h), 0);
        struct m_region m = {.id = 4};
        fill(&h, &m, 120, 4);
        cr_assert_gt(h_nsegs(&h), 2);
        h_close(&h);
        size_t seg = variant == 2 ? h_nsegs(&h) - 1 : (size_t)variant;
        size_t len;
        uint8_t *p = h_seg_load(&h, seg, &len);
        size_t end = h_seg_data_end(&h, seg);
        size_t off = variant == 2 ? end - 2048 * 3 : 64 + 1500;
        cr_assert_gt(end, 2048 * 4, "newest segment too small for the test");
        p[off] ^= 0x01;
        h_seg_store(&h, seg, p, len);
        free(p);
        cr_assert_eq(h_open(&h), TKV_ECORRUPT, "variant %d: flipped byte at %zu not detected",
                     variant, off);
        cr_assert(strstr(h.where.path, ".rlog") != NULL, "path: %s", h.where.path);
        cr_assert(h.where.offset >= 64 && h.where.offset <= off, "offset %" PRIu64 " vs %zu",
                  h.where.offset, off);
        cr_assert(h.where.reason[0] != 0);
        free(m.terms);
        h_fini(&h);
    }
}

BOTH(missing_segment_in_the_middle_is_detected)
{
    struct h h;
    h_init(&h, mem, NULL, 16 * 1024, 2048);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 4};
    fill(&h, &m, 150, 4);
    cr_assert_gt(h_nsegs(&h), 3);
    h_close(&h);
    /* Swap a middle segment's content for the next one's: batch sequence
     * and segment id checks catch it. */
    size_t len, len2;
    uint8_t *a = h_seg_load(&h, 1, &len);
    uint8_t *b = h_seg_load(&h, 2, &len2);
    h_seg_store(&h, 1, b, len2);
    cr_assert_eq(h_open(&h), TKV_ECORRUPT);
    h_seg_store(&h, 1, a, len);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    free(a);
    free(b);
    free(m.terms);
    h_fini(&h);
}

Test(raftlog_mem, enospc_fails_cleanly_then_recovers)
{
    struct h h;
    h_init(&h, true, NULL, 16 * 1024, 2048);
    cr_assert_eq(h_open(&h), 0);
    tkv_raftlog_memdisk_set_limit(h.disk, 3 * 16 * 1024);
    struct m_region m = {.id = 1};
    struct done d = {0};
    int rv = 0;
    int i;
    for (i = 0; i < 1000 && rv == 0; i++) {
        struct m_region save = m;
        save.terms = malloc((m.cap + 1) * sizeof(uint64_t));
        if (m.cap)
            memcpy(save.terms, m.terms, m.cap * sizeof(uint64_t));
        uint64_t start = m.n ? m.first + m.n : 1;
        cr_assert_eq(h_append(h.log, &m, start, 4, 1, NULL, on_done, &d), 0);
        rv = tkv_raftlog_flush(h.log);
        if (rv != 0) {
            free(m.terms);
            m = save;
        } else {
            free(save.terms);
        }
    }
    cr_assert_eq(rv, TKV_ENOSPACE);
    cr_assert_eq(d.rv, TKV_ENOSPACE);
    check(h.log, &m);
    /* Still full: fails again, the log is not failed. */
    uint64_t start = m.first + m.n;
    struct m_region tmp = m;
    tmp.terms = malloc((m.cap + 8) * sizeof(uint64_t));
    memcpy(tmp.terms, m.terms, m.cap * sizeof(uint64_t));
    tmp.cap = m.cap + 8;
    cr_assert_eq(h_append(h.log, &tmp, start, 4, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), TKV_ENOSPACE);
    free(tmp.terms);
    check(h.log, &m);
    /* Space freed: appends work again. */
    tkv_raftlog_memdisk_set_limit(h.disk, 0);
    cr_assert_eq(h_append(h.log, &m, start, 4, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    check(h.log, &m);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    free(m.terms);
    h_fini(&h);
}

Test(raftlog_disk, leftover_tmp_and_resurrected_segments_are_removed)
{
    struct h h;
    h_init(&h, false, NULL, 16 * 1024, 2048);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 4};
    fill(&h, &m, 10, 4);
    h_close(&h);
    char cmd[512];
    /* A creation interrupted before its rename. */
    snprintf(cmd, sizeof(cmd), "cd '%s' && head -c 100 /dev/urandom > 0000000000000007.rlog.tmp",
             h.dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    h_close(&h);
    snprintf(cmd, sizeof(cmd), "%s -v '%s' | grep -q 'region 4: entries \\[1, 40\\]'",
             RAFTLOG_CHECK_BIN, h.dir);
    cr_assert_eq(system(cmd), 0, "tkv-raftlog-check output");
    cr_assert_eq(h_open(&h), 0);
    snprintf(cmd, sizeof(cmd), "test ! -e '%s/0000000000000007.rlog.tmp'", h.dir);
    cr_assert_eq(system(cmd), 0, "tmp segment left behind");
    free(m.terms);
    h_fini(&h);
}

Test(raftlog_disk, deleted_middle_segment_is_corruption)
{
    struct h h;
    h_init(&h, false, NULL, 16 * 1024, 2048);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 4};
    fill(&h, &m, 150, 4);
    cr_assert_gt(h_nsegs(&h), 3);
    h_close(&h);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm '%s/0000000000000002.rlog'", h.dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(h_open(&h), TKV_ECORRUPT);
    cr_assert(strstr(h.where.path, "0000000000000003.rlog") != NULL, "%s", h.where.path);
    /* The offline check refuses with the corruption exit status. */
    snprintf(cmd, sizeof(cmd), "%s '%s' 2>/dev/null", RAFTLOG_CHECK_BIN, h.dir);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == TKV_RAFTLOG_EXIT_CORRUPT, "status %d", st);
    free(m.terms);
    h_fini(&h);
}

Test(raftlog_disk, one_owner_per_directory)
{
    struct h h;
    h_init(&h, false, NULL, 0, 0);
    cr_assert_eq(h_open(&h), 0);
    struct tkv_raftlog *second;
    cr_assert_eq(tkv_raftlog_open(&h.cfg, &second, NULL), TKV_EBUSY);
    h_close(&h);
    cr_assert_eq(tkv_raftlog_open(&h.cfg, &second, NULL), 0, "lock released by close");
    tkv_raftlog_close(second);
    h_fini(&h);
}

Test(raftlog_disk, bad_config)
{
    struct tkv_raftlog *log;
    struct tkv_raftlog_config cfg = {0};
    cr_assert_eq(tkv_raftlog_open(&cfg, &log, NULL), TKV_EINVAL);
    cfg.dir = "/tmp/x";
    cfg.segment_size = 100;
    cr_assert_eq(tkv_raftlog_open(&cfg, &log, NULL), TKV_EINVAL);
}

/* The raft log's metrics (tinykv_raftlog_*) move with the work done: one
 * sync observed per batch, the bytes written, segments held while open and
 * released at close. The suite runs tests in parallel processes, so the
 * process-wide registry sees only this test's log. */
#include "tkv/metrics.h"

Test(raftlog_disk, metrics_follow_batches_bytes_and_segments)
{
    struct h h;
    h_init(&h, false, NULL, 16 * 1024, 2048);
    cr_assert_eq(h_open(&h), 0);
    struct tkv_metrics *reg = tkv_metrics_default();
    struct tkv_counter *bytes = tkv_metrics_counter(reg, "tinykv_raftlog_write_bytes_total", "", NULL);
    struct tkv_counter *batches = tkv_metrics_counter(reg, "tinykv_raftlog_batches_total", "", NULL);
    struct tkv_gauge *segs = tkv_metrics_gauge(reg, "tinykv_raftlog_segments", "", NULL);
    uint64_t b0 = tkv_counter_value(bytes), n0 = tkv_counter_value(batches);
    struct m_region m = {.id = 4};
    fill(&h, &m, 150, 4);
    uint64_t n_batches = tkv_counter_value(batches) - n0;
    cr_assert_gt(n_batches, 0);
    cr_assert_gt(tkv_counter_value(bytes) - b0, 150 * 4, "entry bytes not counted");
    cr_assert_eq((size_t)tkv_gauge_value(segs), h_nsegs(&h), "segment gauge %g vs %zu",
                 tkv_gauge_value(segs), h_nsegs(&h));
    h_close(&h);
    cr_assert_eq(tkv_gauge_value(segs), 0.0, "segments still counted after close");
    char *text;
    size_t len;
    cr_assert_eq(tkv_metrics_render(reg, &text, &len), 0);
    char want[96];
    snprintf(want, sizeof(want), "tinykv_raftlog_sync_duration_seconds_count %llu\n",
             (unsigned long long)n_batches);
    cr_assert(strstr(text, want), "sync histogram does not count one per batch: %s", text);
    tkv_free(text);
    free(m.terms);
    h_fini(&h);
}
