/* The pipelined group commit's ordering contract (include/tkv/raftlog.h,
 * "Model"): with two batches in flight, whatever order their syncs complete
 * in, callbacks fire in staging order, a callback (a barrier's too) never
 * fires before every earlier batch's sync has completed, and a failed batch
 * fails every later call. Driven deterministically on the memory disk with
 * its sync completions held and released by the test (in reverse order on
 * purpose); the raftlog/unordered_completion failpoint is the negative
 * control: a log that completes a younger batch first must be caught. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

#include "tkv/err.h"
#include "tkv/raftlog.h"

#define MAX_CALLS 64
#define MAX_SUBMITS 16

/* The checker: what the test released to the disk, what the log reported. */
struct checker {
    bool synced[MAX_SUBMITS]; /* submission k's completion has come in (success or not) */
    int n_fired, last_id;
    int violations;
    char why[256];
};

struct call {
    struct checker *c;
    int id;     /* staging order */
    int submit; /* submission (batch) that carries it, as the test staged it */
    bool fired;
    int rv;
};

static void violation(struct checker *c, const char *fmt, int a, int b)
{
    if (c->violations++ == 0)
        snprintf(c->why, sizeof(c->why), fmt, a, b);
}

static void on_done(void *arg, int rv)
{
    struct call *k = arg;
    struct checker *c = k->c;
    if (k->fired)
        violation(c, "call %d completed twice (rv %d)", k->id, rv);
    k->fired = true;
    k->rv = rv;
    if (k->id <= c->last_id)
        violation(c, "call %d completed after call %d: not in staging order", k->id, c->last_id);
    c->last_id = k->id;
    c->n_fired++;
    if (rv == 0)
        for (int s = 0; s <= k->submit; s++)
            if (!c->synced[s])
                violation(c, "call %d succeeded before the sync of batch %d completed", k->id, s);
    /* (a batch that failed counts as completed: calls staged after its
     * failure may succeed; failure_fails_later_batches checks the rest) */
}

struct fixture {
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct checker c;
    struct call calls[MAX_CALLS];
    int n_calls;
    int n_submits; /* batches handed to the disk so far */
};

static void fx_open(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->c.last_id = -1;
    f->disk = tkv_raftlog_memdisk_new();
    struct tkv_raftlog_config cfg = {.segment_size = 1u << 20};
    cr_assert_eq(tkv_raftlog_open_mem(&cfg, f->disk, &f->log, NULL), 0);
    tkv_raftlog_memdisk_hold(f->disk, true);
}

static void fx_close(struct fixture *f)
{
    tkv_raftlog_close(f->log);
    tkv_raftlog_memdisk_free(f->disk);
}

static struct call *new_call(struct fixture *f, int submit)
{
    cr_assert_lt(f->n_calls, MAX_CALLS);
    struct call *k = &f->calls[f->n_calls];
    *k = (struct call){.c = &f->c, .id = f->n_calls, .submit = submit};
    f->n_calls++;
    return k;
}

/* Stage one entry of `region` (its next index) into the batch that will be
 * submission `submit`. */
static struct call *stage_append(struct fixture *f, tkv_region_id region, int submit)
{
    static uint8_t data[64];
    memset(data, (int)region, sizeof(data));
    struct call *k = new_call(f, submit);
    struct tkv_raftlog_entry e = {.index = tkv_raftlog_last_index(f->log, region) + 1, .term = 1,
                                  .data = TKV_SLICE(data, sizeof(data))};
    /* one entry per region per test: durable last + 1 is the staged one too */
    cr_assert_eq(tkv_raftlog_append(f->log, region, &e, 1, NULL, on_done, k), 0);
    return k;
}

static struct call *stage_barrier(struct fixture *f, int submit)
{
    struct call *k = new_call(f, submit);
    cr_assert_eq(tkv_raftlog_sync(f->log, on_done, k), 0);
    return k;
}

static void flush_expect_held(struct fixture *f, size_t held)
{
    cr_assert_eq(tkv_raftlog_flush(f->log), 0);
    cr_assert_eq(tkv_raftlog_memdisk_held(f->disk), held, "held %zu, expected %zu",
                 tkv_raftlog_memdisk_held(f->disk), held);
}

/* Release held completion i (0 = oldest held), which carries submission s. */
static void release(struct fixture *f, size_t i, int s, int res)
{
    (void)res;
    f->c.synced[s] = true;
    tkv_raftlog_memdisk_release(f->disk, i, res);
}

/* Two batches in flight, the younger's sync completes first: nothing fires
 * until the older one's completes, then both in staging order. */
static void reverse_completion(struct fixture *f)
{
    struct call *a1 = stage_append(f, 1, 0);
    struct call *a2 = stage_append(f, 2, 0);
    struct call *ab = stage_barrier(f, 0);
    flush_expect_held(f, 1);
    struct call *b1 = stage_append(f, 3, 1);
    struct call *bb = stage_barrier(f, 1);
    flush_expect_held(f, 2); /* pipelined: submitted while batch 0 is in flight */
    struct call *c1 = stage_append(f, 4, 2);
    flush_expect_held(f, 2); /* the pipeline is full: batch 2 waits */

    release(f, 1, 1, 0); /* batch 1's sync completes first */
    if (f->c.violations)
        return;
    cr_assert(!b1->fired && !bb->fired && !a1->fired, "batch 1 completed before batch 0");
    cr_assert_eq(tkv_raftlog_last_index(f->log, 3), 0, "batch 1 visible before batch 0");
    release(f, 0, 0, 0);
    cr_assert(a1->fired && a2->fired && ab->fired && b1->fired && bb->fired);
    cr_assert_eq(a1->rv, 0);
    cr_assert_eq(bb->rv, 0);
    cr_assert_eq(tkv_raftlog_last_index(f->log, 3), 1);
    cr_assert(!c1->fired);
    flush_expect_held(f, 1);
    release(f, 0, 2, 0);
    cr_assert(c1->fired && c1->rv == 0);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(f->log, &st);
    cr_assert_geq(st.pipelined, 1);
}

Test(raftlog_pipeline, completes_in_submission_order)
{
    struct fixture f;
    fx_open(&f);
    reverse_completion(&f);
    cr_assert_eq(f.c.violations, 0, "%s", f.c.why);
    cr_assert_eq(f.c.n_fired, f.n_calls);
    fx_close(&f);
}

/* A barrier staged alone, while a write is in flight, fires only after
 * that write's sync. */
Test(raftlog_pipeline, barrier_waits_for_an_earlier_write)
{
    struct fixture f;
    fx_open(&f);
    struct call *a = stage_append(&f, 1, 0);
    flush_expect_held(&f, 1);
    struct call *bar = stage_barrier(&f, 0);
    flush_expect_held(&f, 1); /* nothing to write: no new batch */
    cr_assert(!bar->fired, "a barrier fired before the write staged before it was durable");
    release(&f, 0, 0, 0);
    cr_assert(a->fired && bar->fired && bar->rv == 0);
    cr_assert_eq(f.c.violations, 0, "%s", f.c.why);
    fx_close(&f);
}

/* The older batch fails (EIO) after the younger one's sync succeeded: every
 * later call fails too, none succeeds, the log is failed. */
Test(raftlog_pipeline, failure_fails_later_batches)
{
    struct fixture f;
    fx_open(&f);
    struct call *a = stage_append(&f, 1, 0);
    flush_expect_held(&f, 1);
    struct call *b = stage_append(&f, 2, 1);
    struct call *bb = stage_barrier(&f, 1);
    flush_expect_held(&f, 2);
    struct call *c = stage_append(&f, 3, 2);
    struct call *cb = stage_barrier(&f, 2);
    release(&f, 1, 1, 0);
    release(&f, 0, 0, -EIO);
    struct call *all[] = {a, b, bb, c, cb};
    for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++) {
        cr_assert(all[i]->fired, "call %d never completed", all[i]->id);
        cr_assert_eq(all[i]->rv, TKV_EIOFATAL, "call %d: rv %d", all[i]->id, all[i]->rv);
    }
    cr_assert_eq(f.c.violations, 0, "%s", f.c.why);
    cr_assert_eq(tkv_raftlog_last_index(f.log, 2), 0);
    uint8_t d = 1;
    struct tkv_raftlog_entry e = {.index = 1, .term = 1, .data = TKV_SLICE(&d, 1)};
    cr_assert_eq(tkv_raftlog_append(f.log, 9, &e, 1, NULL, NULL, NULL), TKV_EIOFATAL);
    fx_close(&f);
}

/* Disk full on the older batch while the younger is still in the kernel:
 * both fail with TKV_ENOSPACE at once, nothing new is written until the
 * younger's completion is in, then the log works again, and a restart
 * finds exactly what succeeded (not the failed pipeline's batch, although
 * its bytes reached the disk). */
Test(raftlog_pipeline, enospc_fails_the_pipeline_then_recovers)
{
    struct fixture f;
    fx_open(&f);
    struct call *ok = stage_append(&f, 5, 0);
    flush_expect_held(&f, 1);
    release(&f, 0, 0, 0);
    cr_assert(ok->fired && ok->rv == 0);
    struct call *a = stage_append(&f, 1, 1);
    flush_expect_held(&f, 1);
    struct call *b = stage_append(&f, 2, 2);
    flush_expect_held(&f, 2);
    release(&f, 0, 1, -ENOSPC);
    cr_assert(a->fired && a->rv == TKV_ENOSPACE, "rv %d", a->rv);
    cr_assert(b->fired && b->rv == TKV_ENOSPACE, "rv %d", b->rv);
    struct call *c = stage_append(&f, 3, 3);
    flush_expect_held(&f, 1); /* b's write is still in the kernel: c waits */
    release(&f, 0, 2, 0);     /* b's late success changes nothing */
    cr_assert(!c->fired);
    cr_assert_eq(tkv_raftlog_last_index(f.log, 2), 0);
    flush_expect_held(&f, 1);
    release(&f, 0, 3, 0);
    cr_assert(c->fired && c->rv == 0, "rv %d", c->rv);
    cr_assert_eq(f.c.violations, 0, "%s", f.c.why);
    tkv_raftlog_memdisk_hold(f.disk, false);
    tkv_raftlog_close(f.log);
    struct tkv_raftlog_config cfg = {.segment_size = 1u << 20};
    struct tkv_raftlog_corruption where = {0};
    cr_assert_eq(tkv_raftlog_open_mem(&cfg, f.disk, &f.log, &where), 0, "%s at %llu: %s",
                 where.path, (unsigned long long)where.offset, where.reason);
    cr_assert_eq(tkv_raftlog_last_index(f.log, 5), 1);
    cr_assert_eq(tkv_raftlog_last_index(f.log, 3), 1);
    cr_assert_eq(tkv_raftlog_last_index(f.log, 1), 0, "a failed batch came back at restart");
    cr_assert_eq(tkv_raftlog_last_index(f.log, 2), 0, "a failed batch came back at restart");
    fx_close(&f);
}

/* Negative control: with completions processed out of order, the checker
 * above must report the violation. */
Test(raftlog_pipeline, negative_control_unordered_completion_is_caught)
{
#ifndef FIU_ENABLE
    cr_skip_test("failpoints are compiled in Debug (sanitized) builds only");
#else
    struct fixture f;
    fx_open(&f);
    fiu_init(0);
    cr_assert_eq(fiu_enable("raftlog/unordered_completion", 1, NULL, 0), 0);
    reverse_completion(&f);
    fiu_disable("raftlog/unordered_completion");
    cr_assert_gt(f.c.violations, 0, "an out-of-order completion went unnoticed");
    cr_log_info("caught: %s", f.c.why);
    while (tkv_raftlog_memdisk_held(f.disk) > 0)
        tkv_raftlog_memdisk_release(f.disk, 0, 0);
    fx_close(&f);
#endif
}
