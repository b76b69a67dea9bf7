/* Zero fill of new segments (tkv_raftlog_config.skip_zero_fill unset): a
 * segment is written with zeros before it is renamed into place, so appends
 * overwrite written blocks instead of converting the file system's unwritten
 * extents on every fdatasync. Checked on the file itself: FS_IOC_FIEMAP
 * reports no unwritten extent and no hole, and every byte after the header
 * is zero; a crash in the middle of a fill leaves only a .tmp that the next
 * open deletes; a switch that needs a spare still being filled cuts the fill
 * short instead of waiting for it. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "raftlog_harness.h"
#include "raftlog_uring.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/reactor.h"

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

/* A segment that spans several fill chunks and ends in a partial one. */
#define BIG_SEG ((3u << 20) + 12288u)

/* What a segment file looks like on disk. */
struct seg_scan {
    int err;                  /* 0, or -errno of stat/open/read/FIEMAP */
    bool no_fiemap;           /* the file system has no FS_IOC_FIEMAP */
    uint64_t size;            /* st_size */
    uint64_t mapped;          /* bytes covered by extents (holes are not) */
    uint64_t unwritten;       /* bytes in FIEMAP_EXTENT_UNWRITTEN extents */
    uint64_t first_nonzero;   /* first non-zero byte at or after the header,
                                 UINT64_MAX if none */
    bool header_ok;           /* starts with the segment magic */
};

static void scan_extents(int fd, struct seg_scan *s)
{
    enum { N = 256 };
    size_t sz = sizeof(struct fiemap) + N * sizeof(struct fiemap_extent);
    struct fiemap *fm = tkv_xcalloc(1, sz);
    uint64_t start = 0;
    for (;;) {
        memset(fm, 0, sz);
        fm->fm_start = start;
        fm->fm_length = FIEMAP_MAX_OFFSET - start;
        fm->fm_flags = FIEMAP_FLAG_SYNC;
        fm->fm_extent_count = N;
        if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
            if (errno == EOPNOTSUPP || errno == ENOTTY)
                s->no_fiemap = true;
            else
                s->err = -errno;
            break;
        }
        if (fm->fm_mapped_extents == 0)
            break;
        bool last = false;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
            const struct fiemap_extent *e = &fm->fm_extents[i];
            uint64_t lo = e->fe_logical, hi = e->fe_logical + e->fe_length;
            if (hi > s->size)
                hi = s->size; /* count the file's bytes only */
            if (lo < hi) {
                s->mapped += hi - lo;
                if (e->fe_flags & FIEMAP_EXTENT_UNWRITTEN)
                    s->unwritten += hi - lo;
            }
            start = e->fe_logical + e->fe_length;
            if (e->fe_flags & FIEMAP_EXTENT_LAST)
                last = true;
        }
        if (last)
            break;
    }
    tkv_free(fm);
}

static struct seg_scan scan_segment(const char *path)
{
    struct seg_scan s = {.first_nonzero = UINT64_MAX};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s.err = -errno;
        return s;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        s.err = -errno;
        close(fd);
        return s;
    }
    s.size = (uint64_t)st.st_size;
    scan_extents(fd, &s);
    uint8_t *buf = tkv_xmalloc(1u << 20);
    uint64_t off = 0;
    while (off < s.size && s.err == 0) {
        ssize_t r = pread(fd, buf, 1u << 20, (off_t)off);
        if (r <= 0) {
            s.err = r < 0 ? -errno : -EIO;
            break;
        }
        if (off == 0)
            s.header_ok = r >= 8 && memcmp(buf, "TKVRLOG", 8) == 0;
        for (ssize_t i = 0; i < r && s.first_nonzero == UINT64_MAX; i++)
            if (off + (uint64_t)i >= 64 && buf[i] != 0)
                s.first_nonzero = off + (uint64_t)i;
        off += (uint64_t)r;
    }
    tkv_free(buf);
    close(fd);
    return s;
}

/* The file systems these tests mean: the disk under /tmp (or TKV_TEST_DIR),
 * not the tmpfs the other unit tests default to (no unwritten extents
 * there). */
static const char *disk_base(void)
{
    const char *b = getenv("TKV_TEST_DIR");
    return b ? b : "/tmp";
}

static void seg_path(char *buf, size_t cap, const char *dir, uint64_t id, bool tmp)
{
    snprintf(buf, cap, "%s/%016" PRIx64 ".rlog%s", dir, id, tmp ? ".tmp" : "");
}

static void skip_without_fiemap(const struct seg_scan *s)
{
    if (s->no_fiemap)
        cr_skip_test("the file system under %s has no FS_IOC_FIEMAP: cannot see extents",
                     disk_base());
}

/* The checks of a freshly prepared (filled) segment of `size` bytes. */
static void assert_filled(const struct seg_scan *s, uint64_t size, const char *what)
{
    cr_assert_eq(s->err, 0, "%s: cannot inspect: %s", what, strerror(-s->err));
    cr_assert(s->header_ok, "%s: no segment header", what);
    cr_assert_eq(s->size, size, "%s: %" PRIu64 " bytes, want %" PRIu64, what, s->size, size);
    cr_assert_eq(s->unwritten, 0,
                 "%s: %" PRIu64 " of %" PRIu64 " bytes are unwritten extents: appends there "
                 "would convert extents on every fdatasync",
                 what, s->unwritten, s->size);
    cr_assert_eq(s->mapped, s->size, "%s: only %" PRIu64 " of %" PRIu64 " bytes allocated", what,
                 s->mapped, s->size);
    cr_assert_eq(s->first_nonzero, UINT64_MAX, "%s: non-zero byte at %" PRIu64 " after the header",
                 what, s->first_nonzero);
}

/* ---- synchronous creation (open, synchronous mode) ---- */

static struct seg_scan sync_created(bool skip, struct tkv_raftlog_stats *st)
{
    struct h h;
    h_init(&h, false, disk_base(), BIG_SEG, 0);
    h.cfg.skip_zero_fill = skip;
    cr_assert_eq(h_open(&h), 0);
    tkv_raftlog_stats(h.log, st);
    char p[256];
    seg_path(p, sizeof(p), h.dir, 1, false);
    struct seg_scan s = scan_segment(p);
    h_fini(&h);
    return s;
}

Test(raftlog_fill, segment_created_at_open_is_written_zeros, .timeout = 60)
{
    struct tkv_raftlog_stats st;
    struct seg_scan s = sync_created(false, &st);
    skip_without_fiemap(&s);
    assert_filled(&s, BIG_SEG, "segment created at open");
    cr_assert_eq(st.zero_filled_bytes, BIG_SEG - 64, "zero_filled_bytes %" PRIu64,
                 st.zero_filled_bytes);
}

/* Negative control: the check above must see the unwritten extents that
 * fallocate leaves when the fill is off. */
Test(raftlog_fill, negative_control_skip_zero_fill_leaves_unwritten_extents, .timeout = 60)
{
    struct tkv_raftlog_stats st;
    struct seg_scan s = sync_created(true, &st);
    skip_without_fiemap(&s);
    cr_assert_eq(s.err, 0);
    if (s.unwritten == 0 && s.mapped == s.size)
        cr_skip_test("fallocate on %s allocates written blocks: nothing to tell apart",
                     disk_base());
    cr_assert_gt(s.unwritten + (s.size - s.mapped), BIG_SEG / 2,
                 "without the fill most of the segment should be unwritten or a hole (%" PRIu64
                 " unwritten, %" PRIu64 " mapped of %" PRIu64 ")",
                 s.unwritten, s.mapped, s.size);
    cr_assert_eq(st.zero_filled_bytes, 0);
}

/* ---- the spare prepared on io_uring ---- */

struct spare_run {
    const char *dir;
    bool skip;
    uint64_t segment_size;
    int open_rv;
    struct seg_scan scan; /* the prepared spare, "<2>.rlog.tmp" */
    struct tkv_raftlog_stats stats;
    bool timed_out;
};

static struct spare_run *SR;
static struct tkv_raftlog *SL;
static struct tkv_timer spare_timer;
static atomic_int spare_finished;

/* Polls until the spare is prepared (the log is idle), then inspects it
 * from the loop thread (blocking reads are fine in a test). */
static void spare_poll(struct tkv_timer *t)
{
    (void)t;
    if (!tkv_raftlog_idle(SL)) {
        tkv_timer_start(tkv_reactor_self(), &spare_timer, 2 * 1000 * 1000);
        return;
    }
    char p[256];
    seg_path(p, sizeof(p), SR->dir, 2, true);
    SR->scan = scan_segment(p);
    tkv_raftlog_stats(SL, &SR->stats);
    atomic_store(&spare_finished, 1);
}

static int spare_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    struct tkv_raftlog_config cfg = {.dir = SR->dir, .reactor = r,
                                     .segment_size = SR->segment_size,
                                     .skip_zero_fill = SR->skip};
    SR->open_rv = tkv_raftlog_open(&cfg, &SL, NULL);
    if (SR->open_rv != 0) {
        atomic_store(&spare_finished, 1);
        return 0;
    }
    tkv_timer_init(&spare_timer, spare_poll, NULL);
    tkv_timer_start(r, &spare_timer, 0);
    return 0;
}

static void spare_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    tkv_raftlog_close(SL);
    SL = NULL;
}

static int spare_prepare(struct spare_run *run)
{
    SR = run;
    atomic_store(&spare_finished, 0);
    struct tkv_reactor_config cfg = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, spare_init, spare_fini, NULL, &g);
    if (rv != 0)
        return rv;
    for (int i = 0; i < 3000 && !atomic_load(&spare_finished); i++)
        usleep(10 * 1000);
    run->timed_out = !atomic_load(&spare_finished);
    tkv_reactor_group_stop(g);
    return tkv_reactor_group_wait(g);
}

static struct spare_run spare_case(bool skip)
{
    struct h h;
    h_init(&h, false, disk_base(), BIG_SEG, 0);
    struct spare_run run = {.dir = h.dir, .skip = skip, .segment_size = BIG_SEG};
    int rv = spare_prepare(&run);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert_eq(run.open_rv, 0);
    cr_assert(!run.timed_out, "the spare segment was not prepared within 30 s");
    h_fini(&h);
    return run;
}

Test(raftlog_fill, spare_prepared_on_io_uring_is_written_zeros, .timeout = 60)
{
    struct spare_run run = spare_case(false);
    skip_without_fiemap(&run.scan);
    assert_filled(&run.scan, BIG_SEG, "spare prepared on io_uring");
    /* segment 1 at open and the spare, both whole */
    cr_assert_eq(run.stats.zero_filled_bytes, 2 * (uint64_t)(BIG_SEG - 64),
                 "zero_filled_bytes %" PRIu64, run.stats.zero_filled_bytes);
    cr_assert_eq(run.stats.zero_fills_cut, 0);
}

Test(raftlog_fill, negative_control_spare_without_fill_has_unwritten_extents, .timeout = 60)
{
    struct spare_run run = spare_case(true);
    skip_without_fiemap(&run.scan);
    cr_assert_eq(run.scan.err, 0);
    if (run.scan.unwritten == 0 && run.scan.mapped == run.scan.size)
        cr_skip_test("fallocate on %s allocates written blocks: nothing to tell apart",
                     disk_base());
    cr_assert_gt(run.scan.unwritten + (run.scan.size - run.scan.mapped), BIG_SEG / 2,
                 "%" PRIu64 " unwritten, %" PRIu64 " mapped of %" PRIu64, run.scan.unwritten,
                 run.scan.mapped, run.scan.size);
}

/* Segments in use: after several switches every segment file on disk
 * (sealed and active) is written blocks only; the active one's tail past
 * its last batch is zeros the appends will overwrite. */
Test(raftlog_fill, segments_rolled_on_io_uring_have_no_unwritten_extents, .timeout = 60)
{
    struct h h;
    h_init(&h, false, disk_base(), 64 * 1024, 0);
    struct uring_run u = {.dir = h.dir, .rounds = 100, .per_round = 8, .continuous = true};
    int rv = uring_run(&u);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert_eq(u.failed, 0, "error %d", u.first_err);
    cr_assert_geq(u.stats.segments_created, 3, "only %" PRIu64 " switches",
                  u.stats.segments_created);
    cr_assert_eq(u.stats.zero_fills_cut, 0);
    for (uint64_t id = u.stats.active_segment + 1 - u.stats.n_segments;
         id <= u.stats.active_segment; id++) {
        char p[256], what[64];
        seg_path(p, sizeof(p), h.dir, id, false);
        snprintf(what, sizeof(what), "segment %" PRIu64, id);
        struct seg_scan s = scan_segment(p);
        skip_without_fiemap(&s);
        cr_assert_eq(s.err, 0, "%s: %s", what, strerror(-s.err));
        cr_assert_eq(s.unwritten, 0, "%s: %" PRIu64 " bytes unwritten", what, s.unwritten);
        cr_assert_eq(s.mapped, s.size, "%s: holes", what);
    }
    h_fini(&h);
}

#ifdef FIU_ENABLE
/* ---- crash in the middle of a fill ---- */

/* Files in dir whose name ends with suffix. */
static size_t count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir %s", dir);
    size_t n = 0, sl = strlen(suffix);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (l >= sl && strcmp(de->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void expect_killed(pid_t pid)
{
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the child was not killed by the fill's kill point (status %d)", status);
}

/* The first segment, filled synchronously at open: the process dies after
 * one chunk. Left: the .tmp only; the next open deletes it and creates a
 * complete segment. */
Test(raftlog_fill, crash_during_fill_at_open_leaves_only_a_tmp, .timeout = 60)
{
    struct h h;
    h_init(&h, false, disk_base(), BIG_SEG, 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        fiu_init(0);
        fiu_enable("raftlog/zero_fill_crash", 1, NULL, 0);
        struct tkv_raftlog *log;
        (void)tkv_raftlog_open(&h.cfg, &log, NULL);
        _exit(3); /* the kill point was not reached */
    }
    expect_killed(pid);
    char p[256];
    seg_path(p, sizeof(p), h.dir, 1, true);
    cr_assert_eq(access(p, F_OK), 0, "no %s after the crash mid-fill", p);
    cr_assert_eq(count_files(h.dir, ".rlog"), 0, "a segment was renamed before its fill ended");
    cr_assert_eq(h_open(&h), 0);
    cr_assert_neq(access(p, F_OK), 0, "open did not delete %s", p);
    cr_assert_eq(count_files(h.dir, ".rlog.tmp"), 0);
    uint8_t d = 7;
    struct tkv_raftlog_entry e = {.index = 1, .term = 1, .data = TKV_SLICE(&d, 1)};
    cr_assert_eq(tkv_raftlog_append(h.log, 1, &e, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    h_close(&h);
    cr_assert_eq(h_open(&h), 0);
    cr_assert_eq(tkv_raftlog_last_index(h.log, 1), 1);
    h_fini(&h);
}

/* The spare, filled on io_uring while the log serves: entries written
 * before survive, the half-filled spare is a .tmp that open deletes. */
static int crash_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    const char *dir = arg;
    struct tkv_raftlog_config cfg = {.dir = dir, .reactor = r, .segment_size = BIG_SEG};
    struct tkv_raftlog *log;
    if (tkv_raftlog_open(&cfg, &log, NULL) != 0)
        _exit(4);
    /* open submitted the spare's preparation; its first fill chunk's
     * completion is the kill point */
    fiu_enable("raftlog/zero_fill_crash", 1, NULL, 0);
    return 0;
}

Test(raftlog_fill, crash_during_spare_fill_leaves_only_a_tmp, .timeout = 60)
{
    struct h h;
    h_init(&h, false, disk_base(), BIG_SEG, 0);
    cr_assert_eq(h_open(&h), 0);
    uint8_t d = 9;
    struct tkv_raftlog_entry e = {.index = 1, .term = 3, .data = TKV_SLICE(&d, 1)};
    cr_assert_eq(tkv_raftlog_append(h.log, 5, &e, 1, NULL, NULL, NULL), 0);
    cr_assert_eq(tkv_raftlog_flush(h.log), 0);
    h_close(&h);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        fiu_init(0);
        struct tkv_reactor_config cfg = {.n_cores = 1};
        struct tkv_reactor_group *g;
        if (tkv_reactor_group_start(&cfg, crash_init, NULL, h.dir, &g) != 0)
            _exit(5);
        sleep(30);
        _exit(3); /* the kill point was not reached */
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 5)
        cr_skip_test("io_uring unavailable here");
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the child was not killed by the fill's kill point (status %d)", status);
    char p[256];
    seg_path(p, sizeof(p), h.dir, 2, true);
    cr_assert_eq(access(p, F_OK), 0, "no %s after the crash mid-fill", p);
    cr_assert_eq(count_files(h.dir, ".rlog"), 1, "only segment 1 was ever in use");
    cr_assert_eq(h_open(&h), 0);
    cr_assert_neq(access(p, F_OK), 0, "open did not delete %s", p);
    cr_assert_eq(tkv_raftlog_last_index(h.log, 5), 1);
    tkv_term term = 0;
    cr_assert_eq(tkv_raftlog_term(h.log, 5, 1, &term), 0);
    cr_assert_eq(term, 3, "entry 1 has term %" PRIu64 " after the crash", term);
    h_fini(&h);
}

/* ---- a switch that needs a spare still being filled ---- */

/* The fill is stalled (failpoint): every switch finds its spare unfilled
 * and must get it at once, cut short, instead of waiting for the fill (the
 * run would time out). */
Test(raftlog_fill, switch_waiting_for_the_spare_cuts_its_fill_short, .timeout = 60)
{
    fiu_init(0);
    struct h h;
    h_init(&h, false, disk_base(), 64 * 1024, 0);
    struct uring_run u = {.dir = h.dir, .rounds = 100, .per_round = 8, .continuous = true};
    fiu_enable("raftlog/zero_fill_stall", 1, NULL, 0);
    int rv = uring_run(&u);
    fiu_disable("raftlog/zero_fill_stall");
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(rv, 0);
    cr_assert(!u.timed_out, "appends stalled behind a spare's fill (%d callbacks)", u.completed);
    cr_assert_eq(u.failed, 0, "error %d", u.first_err);
    cr_assert_eq(u.completed, 100 * 8);
    cr_assert_geq(u.stats.segments_created, 3);
    cr_assert_geq(u.stats.zero_fills_cut, u.stats.segments_created,
                  "%" PRIu64 " fills cut for %" PRIu64 " switches", u.stats.zero_fills_cut,
                  u.stats.segments_created);
    /* only segment 1 (created at open, synchronously) was filled */
    cr_assert_eq(u.stats.zero_filled_bytes, 64 * 1024 - 64, "%" PRIu64,
                 u.stats.zero_filled_bytes);
    cr_assert_eq(h_open(&h), 0);
    for (tkv_region_id r = 1; r <= 100 * 8; r++)
        cr_assert_eq(tkv_raftlog_last_index(h.log, r), 1, "region %" PRIu64, r);
    h_fini(&h);
}
#endif
