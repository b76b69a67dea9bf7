/* Disk faults: ENOSPC on a small tmpfs the test mounts (skipped when mount is
 * not permitted), and libfiu failpoints on write, fdatasync and segment
 * creation, on the synchronous path and on the io_uring path. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

#include "raftlog_harness.h"
#include "raftlog_uring.h"
#include "tkv/err.h"
#include "tkv/mem.h"

struct done {
    int calls, rv;
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

/* Copy of a model, to roll back a failed append. */
static struct m_region m_clone(const struct m_region *m)
{
    struct m_region c = *m;
    c.terms = malloc((m->cap + 1) * sizeof(uint64_t));
    if (m->cap)
        memcpy(c.terms, m->terms, m->cap * sizeof(uint64_t));
    return c;
}

static char mnt[] = "/tmp/tkv-rl-enospc-XXXXXX";
static bool mounted;

/* Runs even when an assertion ends the test early: never leave a mount. */
static void unmount_tmpfs(void)
{
    if (mounted)
        umount2(mnt, MNT_DETACH);
    mounted = false;
    if (strchr(mnt, 'X') == NULL)
        rmdir(mnt);
}

Test(raftlog_enospc, tmpfs_full_fails_cleanly_and_recovers_when_freed, .timeout = 60,
     .fini = unmount_tmpfs)
{
    cr_assert(mkdtemp(mnt) != NULL);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") != 0) {
        int e = errno;
        cr_skip_test("cannot mount a tmpfs here (%s)", strerror(e));
    }
    mounted = true;
    struct h h;
    h_init(&h, false, mnt, 256 * 1024, 16 * 1024);
    cr_assert_eq(h_open(&h), 0);
    /* Leave room for about one more segment. */
    char filler[256];
    snprintf(filler, sizeof(filler), "%s/filler", mnt);
    struct statvfs sv;
    cr_assert_eq(statvfs(mnt, &sv), 0);
    long long fill = (long long)sv.f_bavail * (long long)sv.f_frsize - 400 * 1024;
    int ffd = open(filler, O_CREAT | O_RDWR, 0644);
    cr_assert(ffd >= 0 && fill > 0);
    cr_assert_eq(fallocate(ffd, 0, 0, fill), 0, "%s", strerror(errno));
    close(ffd);

    struct m_region m = {.id = 1};
    struct done d = {0};
    int rv = 0, acked = 0;
    for (int i = 0; i < 5000 && rv == 0; i++) {
        struct m_region save = m_clone(&m);
        uint64_t start = m.n ? m.first + m.n : 1;
        cr_assert_eq(h_append(h.log, &m, start, 8, 1, NULL, on_done, &d), 0);
        rv = tkv_raftlog_flush(h.log);
        if (rv != 0) {
            free(m.terms);
            m = save;
        } else {
            free(save.terms);
            acked++;
        }
    }
    cr_assert_eq(rv, TKV_ENOSPACE, "flush: %s", tkv_strerror(rv));
    cr_assert_eq(d.rv, TKV_ENOSPACE, "the callback must see the failure");
    cr_assert_gt(acked, 10);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(h.log, &st);
    cr_assert(!st.failed, "disk full must not fail-stop the log");
    check(h.log, &m); /* reads keep working, nothing half-applied */
    /* Still full: fails again, cleanly. */
    struct m_region tmp = m_clone(&m);
    cr_assert_eq(h_append(h.log, &tmp, m.first + m.n, 8, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), TKV_ENOSPACE);
    free(tmp.terms);
    check(h.log, &m);
    /* A reopen on the full disk works and sees exactly the acked entries. */
    h_close(&h);
    cr_assert_eq(h_open(&h), 0, "%s at %" PRIu64, h.where.reason, h.where.offset);
    check(h.log, &m);
    /* Space freed: appends work again. */
    cr_assert_eq(unlink(filler), 0);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(h_append(h.log, &m, m.first + m.n, 8, 1, NULL, NULL, NULL), 0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    }
    check(h.log, &m);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    check(h.log, &m);
    h_close(&h);
    free(m.terms);
    h_fini(&h);
}

#ifdef FIU_ENABLE
static void fatal_sync_path(const char *fp)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, "/tmp", 64 * 1024, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 3};
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(h_append(h.log, &m, m.n ? m.first + m.n : 1, 4, 1, NULL, NULL, NULL), 0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    }
    struct m_region acked = m_clone(&m);
    struct done d = {0};
    fiu_enable(fp, 1, NULL, 0);
    cr_assert_eq(h_append(h.log, &m, m.first + m.n, 4, 1, NULL, on_done, &d), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), TKV_EIOFATAL);
    fiu_disable(fp);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(d.rv, TKV_EIOFATAL, "%s: callback got %d", fp, d.rv);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(h.log, &st);
    cr_assert(st.failed);
    /* Fail-stop: nothing is retried or accepted afterwards. */
    cr_assert_eq(h_append(h.log, &m, m.first + m.n, 1, 1, NULL, NULL, NULL), TKV_EIOFATAL);
    cr_assert_eq(tkv_raftlog_flush(h.log), TKV_EIOFATAL);
    cr_assert_eq(tkv_raftlog_sync(h.log, on_done, &d), TKV_EIOFATAL);
    check(h.log, &acked);
    h_close(&h);
    /* Restart: every acknowledged entry is there (the failed batch may or
     * may not be: it was never acknowledged). */
    cr_assert_eq(h_open(&h), 0);
    cr_assert_geq(tkv_raftlog_last_index(h.log, 3), acked.first + acked.n - 1);
    struct tkv_raftlog_entry *e;
    size_t n;
    cr_assert_eq(tkv_raftlog_read(h.log, 3, 1, acked.n + 1, 0, &e, &n), 0);
    cr_assert_eq(n, acked.n);
    tkv_free(e);
    free(m.terms);
    free(acked.terms);
    h_fini(&h);
}

Test(raftlog_failpoint, write_eio_is_fatal_sync_path) { fatal_sync_path("raftlog/write_eio"); }
Test(raftlog_failpoint, fsync_eio_is_fatal_sync_path) { fatal_sync_path("raftlog/fsync_eio"); }

static void nospace_then_ok(const char *fp, uint64_t seg)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, "/tmp", seg, 0);
    cr_assert_eq(h_open(&h), 0);
    struct m_region m = {.id = 4};
    struct done d = {0};
    int rv = 0;
    fiu_enable(fp, 1, NULL, 0);
    for (int i = 0; i < 2000 && rv == 0; i++) {
        struct m_region save = m_clone(&m);
        cr_assert_eq(h_append(h.log, &m, m.n ? m.first + m.n : 1, 4, 1, NULL, on_done, &d), 0);
        rv = tkv_raftlog_flush(h.log);
        if (rv != 0) {
            free(m.terms);
            m = save;
        } else {
            free(save.terms);
        }
    }
    fiu_disable(fp);
    cr_assert_eq(rv, TKV_ENOSPACE, "%s: %s", fp, tkv_strerror(rv));
    cr_assert_eq(d.rv, TKV_ENOSPACE);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(h.log, &st);
    cr_assert(!st.failed);
    check(h.log, &m);
    for (int i = 0; i < 30; i++) {
        cr_assert_eq(h_append(h.log, &m, m.n ? m.first + m.n : 1, 4, 1, NULL, NULL, NULL), 0);
        cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    }
    check(h.log, &m);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0, "%s at %" PRIu64, h.where.reason, h.where.offset);
    check(h.log, &m);
    free(m.terms);
    h_fini(&h);
}

Test(raftlog_failpoint, write_enospc_fails_append_then_recovers)
{
    nospace_then_ok("raftlog/write_enospc", 64 * 1024);
}
Test(raftlog_failpoint, segment_enospc_fails_append_then_recovers)
{
    nospace_then_ok("raftlog/segment_enospc", 16 * 1024);
}

static void uring_fatal(const char *fp)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, "/tmp", 64 * 1024, 0);
    struct uring_run u = {.dir = h.dir, .rounds = 20, .per_round = 10, .failpoint = fp,
                          .fail_round = 5};
    int rv = uring_run(&u);
    fiu_disable(fp);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert(!u.timed_out);
    cr_assert_eq(u.completed, 50, "%s: %d appends acknowledged", fp, u.completed);
    cr_assert_eq(u.failed, 10);
    cr_assert_eq(u.first_err, TKV_EIOFATAL);
    cr_assert_eq(u.append_after_failure, TKV_EIOFATAL);
    cr_assert(u.stats.failed);
    cr_assert_eq(h_open(&h), 0);
    for (tkv_region_id r = 1; r <= 10; r++)
        cr_assert_geq(tkv_raftlog_last_index(h.log, r), 5);
    h_fini(&h);
}

Test(raftlog_failpoint, uring_fsync_eio_is_fatal, .timeout = 60) { uring_fatal("raftlog/fsync_eio"); }
Test(raftlog_failpoint, uring_write_eio_is_fatal, .timeout = 60) { uring_fatal("raftlog/write_eio"); }

Test(raftlog_failpoint, uring_write_enospc_fails_round_then_continues, .timeout = 60)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, "/tmp", 64 * 1024, 0);
    struct uring_run u = {.dir = h.dir, .rounds = 20, .per_round = 10,
                          .failpoint = "raftlog/write_enospc", .fail_round = 5,
                          .disarm_after_failure = true};
    int rv = uring_run(&u);
    fiu_disable("raftlog/write_enospc");
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert(!u.timed_out);
    cr_assert_eq(u.failed, 10);
    cr_assert_eq(u.first_err, TKV_ENOSPACE);
    cr_assert_eq(u.append_after_failure, 0);
    cr_assert_eq(u.completed, 190);
    cr_assert(!u.stats.failed);
    cr_assert_eq(h_open(&h), 0);
    for (tkv_region_id r = 1; r <= 10; r++)
        cr_assert_eq(tkv_raftlog_last_index(h.log, r), 19, "region %" PRIu64, r);
    h_fini(&h);
}

/* Disk full while the next segment is prepared on io_uring (reactor mode):
 * the batch that needs the segment fails with TKV_ENOSPACE, the log is not
 * failed, and the next switch prepares a fresh segment and goes on. */
Test(raftlog_failpoint, uring_segment_enospc_fails_round_then_continues, .timeout = 60)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, "/tmp", 16 * 1024, 0);
    struct uring_run u = {.dir = h.dir, .rounds = 40, .per_round = 10,
                          .segment_size = 16 * 1024, .failpoint = "raftlog/segment_enospc",
                          .fail_round = 5, .disarm_after_failure = true};
    int rv = uring_run(&u);
    fiu_disable("raftlog/segment_enospc");
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert(!u.timed_out);
    cr_assert_eq(u.failed, 10, "%d appends failed", u.failed);
    cr_assert_eq(u.first_err, TKV_ENOSPACE);
    cr_assert_eq(u.append_after_failure, 0);
    cr_assert_eq(u.completed, 390);
    cr_assert(!u.stats.failed);
    cr_assert_eq(u.stats.blocking_file_ops, 0);
    cr_assert_geq(u.stats.segments_created, 3);
    cr_assert_eq(h_open(&h), 0);
    for (tkv_region_id r = 1; r <= 10; r++)
        cr_assert_eq(tkv_raftlog_last_index(h.log, r), 39, "region %" PRIu64, r);
    h_fini(&h);
}
#else
Test(raftlog_failpoint, skipped_without_failpoints)
{
    cr_skip_test("failpoints are compiled in Debug builds only (TKV_FAILPOINTS)");
}
#endif
