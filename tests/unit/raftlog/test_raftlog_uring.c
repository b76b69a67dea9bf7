/* The raft log on the real io_uring reactor: group commit from the
 * before-sleep hook, one linked write+fdatasync per loop turn's batch. */
#include <criterion/criterion.h>
#include <errno.h>
#include <dirent.h>
#include <inttypes.h>
#include <string.h>

#include "raftlog_harness.h"
#include "raftlog_uring.h"
#include "tkv/err.h"
#include "tkv/mem.h"

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

static void run_and_check(bool mem)
{
    struct h h;
    h_init(&h, mem, "/tmp", 64 * 1024, 0);
    struct uring_run u = {.dir = mem ? NULL : h.dir, .disk = h.disk, .rounds = 60,
                          .per_round = 20};
    int rv = uring_run(&u);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert_eq(u.open_rv, 0);
    cr_assert(!u.timed_out, "rounds did not complete (%d callbacks)", u.completed);
    cr_assert_eq(u.failed, 0, "error %d", u.first_err);
    cr_assert_eq(u.completed, 60 * 20);
    /* Twenty appends staged in one task = one batch = one sync. */
    cr_assert_eq(u.stats.batches, 60, "batches %" PRIu64, u.stats.batches);
    cr_assert_gt(u.stats.segments_purged + u.stats.n_segments, 1);
    cr_assert_eq(h_open(&h), 0);
    for (tkv_region_id r = 1; r <= 20; r++)
        cr_assert_eq(tkv_raftlog_last_index(h.log, r), 60, "region %" PRIu64, r);
    struct tkv_raftlog_entry *e;
    size_t n;
    cr_assert_eq(tkv_raftlog_read(h.log, 7, 1, 61, 0, &e, &n), 0);
    cr_assert_eq(n, 60);
    for (size_t i = 0; i < n; i++)
        cr_assert(e[i].data.len == 128 && e[i].data.ptr[127] == 0xab);
    tkv_free(e);
    h_fini(&h);
}

Test(raftlog_uring, group_commit_per_turn_disk, .timeout = 60) { run_and_check(false); }
Test(raftlog_uring, group_commit_per_turn_mem, .timeout = 60) { run_and_check(true); }

/* Appends staged on every loop turn without waiting: the next turn's batch
 * is submitted while the previous one's write+fdatasync runs (pipelined),
 * every callback succeeds, and a reopen finds every append. */
static void run_continuous(bool mem)
{
    struct h h;
    h_init(&h, mem, "/tmp", 64 * 1024, 0);
    struct uring_run u = {.dir = mem ? NULL : h.dir, .disk = h.disk, .rounds = 150,
                          .per_round = 8, .continuous = true};
    int rv = uring_run(&u);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert_eq(u.open_rv, 0);
    cr_assert(!u.timed_out, "appends did not complete (%d callbacks)", u.completed);
    cr_assert_eq(u.failed, 0, "error %d", u.first_err);
    cr_assert_eq(u.completed, 150 * 8);
    cr_assert_gt(u.stats.pipelined, 0, "no batch was submitted while another was in flight "
                 "(%" PRIu64 " batches)", u.stats.batches);
    cr_assert_gt(u.stats.segments_purged + u.stats.n_segments, 1);
    if (!mem) {
        /* Rolling to new segments never created one with blocking
         * syscalls on the core: each was prepared ahead on io_uring. */
        cr_assert_geq(u.stats.segments_created, 3, "only %" PRIu64 " segment switches",
                      u.stats.segments_created);
        cr_assert_eq(u.stats.blocking_file_ops, 0,
                     "%" PRIu64 " blocking segment creations/deletions on the core (%" PRIu64
                     " switches, %" PRIu64 " purged)",
                     u.stats.blocking_file_ops, u.stats.segments_created,
                     u.stats.segments_purged);
        /* Purged segments were deleted on io_uring: what is left on disk
         * after the log closed is exactly what it still held. */
        cr_assert_gt(u.stats.segments_purged, 0);
        size_t files = 0;
        DIR *d = opendir(h.dir);
        cr_assert_not_null(d);
        for (struct dirent *de; (de = readdir(d)) != NULL;)
            if (strstr(de->d_name, ".rlog") != NULL)
                files++;
        closedir(d);
        cr_assert_eq(files, u.stats.n_segments, "%zu segment files, the log held %" PRIu64, files,
                     u.stats.n_segments);
    }
    cr_assert_eq(h_open(&h), 0);
    for (tkv_region_id r = 1; r <= 150 * 8; r++)
        cr_assert_eq(tkv_raftlog_last_index(h.log, r), 1, "region %" PRIu64, r);
    h_fini(&h);
}

Test(raftlog_uring, pipelined_under_continuous_load_disk, .timeout = 60) { run_continuous(false); }
Test(raftlog_uring, pipelined_under_continuous_load_mem, .timeout = 60) { run_continuous(true); }

#ifdef FIU_ENABLE
/* Negative control of the check above: with segment switches forced onto
 * the old blocking path, the counter must see them. */
Test(raftlog_uring, negative_control_blocking_segment_switch_is_counted, .timeout = 60)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, "/tmp", 64 * 1024, 0);
    struct uring_run u = {.dir = h.dir, .rounds = 100, .per_round = 8, .continuous = true};
    fiu_enable("raftlog/blocking_segment_switch", 1, NULL, 0);
    int rv = uring_run(&u);
    fiu_disable("raftlog/blocking_segment_switch");
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert_eq(u.failed, 0, "error %d", u.first_err);
    cr_assert_gt(u.stats.segments_created, 0);
    cr_assert_geq(u.stats.blocking_file_ops, u.stats.segments_created,
                 "blocking creations went uncounted (%" PRIu64 " of %" PRIu64 ")",
                 u.stats.blocking_file_ops, u.stats.segments_created);
    h_fini(&h);
}
#endif
