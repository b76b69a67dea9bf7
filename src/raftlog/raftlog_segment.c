/* Segment switches off the loop (reactor mode on disk): the next segment is
 * prepared ahead of need with io_uring operations (openat, fallocate,
 * header write, zero fill, fsync), and the switch itself (zeroing a failed write's
 * leftover, rename, directory fsync) is asynchronous too, so rolling to a
 * new segment never blocks the core. Synchronous mode and the memory disk
 * keep raftlog_io_create (no loop to block, or no syscall at all). */
#include <errno.h>
#include <fcntl.h>
#include <fiu.h>
#include <signal.h>
#include <unistd.h>

#include "raftlog_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

#ifdef TKV_RAFTLOG_HAVE_REACTOR

static bool async_mode(const struct tkv_raftlog *log)
{
    return log->reactor != NULL && log->mem == NULL;
}

static void spare_fail(struct tkv_raftlog *log, int err)
{
    struct rl_spare *sp = &log->spare;
    sp->err = err;
    if (sp->fd < 0) {
        sp->state = RL_SPARE_FAILED;
        return;
    }
    /* Give the space back: a failed preallocation may hold part of it.
     * close(2) of a regular file does not wait for the disk. */
    close(sp->fd);
    sp->fd = -1;
    sp->step = RL_SP_UNLINK;
    tkv_reactor_unlinkat(log->reactor, &sp->io, log->dir_op_fd, sp->tmp);
}

static void spare_sync(struct tkv_raftlog *log)
{
    struct rl_spare *sp = &log->spare;
    sp->step = RL_SP_SYNC;
    tkv_reactor_fsync(log->reactor, &sp->io, sp->fd, false);
}

static void fill_done(struct tkv_io *io, int res);

/* The zero fill is worth finishing only while nothing waits for it: a
 * switch that needs this spare, or a stopping loop, cuts it short (the
 * rest of the segment stays unwritten extents: correct, slower appends). */
static bool fill_stop(const struct tkv_raftlog *log)
{
    const struct rl_spare *sp = &log->spare;
    return sp->fill_err != 0 || sp->fill_cut || tkv_reactor_stopping(log->reactor);
}

/* Keep up to RL_FILL_DEPTH chunks in flight, each a linked write+fdatasync
 * from the one zero buffer; once none is left in flight, fsync (or fail). */
static void fill_pump(struct tkv_raftlog *log)
{
    struct rl_spare *sp = &log->spare;
    /* raftlog/zero_fill_stall (tests): the fill makes no progress until a
     * switch needs the spare, which must then get it without the fill. */
    if (!fill_stop(log) && fiu_fail("raftlog/zero_fill_stall"))
        return;
    for (unsigned i = 0; i < RL_FILL_DEPTH && !fill_stop(log); i++) {
        if (sp->fill_next >= log->segment_size)
            break;
        if (sp->fill_busy[i])
            continue;
        size_t n = (size_t)TKV_MIN(log->segment_size - sp->fill_next, (uint64_t)RL_FILL_CHUNK);
        sp->fill_iov[i].iov_base = sp->zeros;
        sp->fill_iov[i].iov_len = n;
        sp->fill_busy[i] = true;
        sp->fill_inflight++;
        tkv_io_init(&sp->fill_io[i], fill_done, log);
        tkv_reactor_write_sync(log->reactor, &sp->fill_io[i], sp->fd, &sp->fill_iov[i], 1,
                               sp->fill_next);
        sp->fill_next += n;
    }
    if (sp->fill_inflight > 0)
        return;
    tkv_free(sp->zeros);
    sp->zeros = NULL;
    if (sp->fill_err) {
        spare_fail(log, sp->fill_err);
        return;
    }
    if (sp->fill_next < log->segment_size)
        log->st.zero_fills_cut++;
    spare_sync(log);
}

static void fill_done(struct tkv_io *io, int res)
{
    struct tkv_raftlog *log = io->data;
    struct rl_spare *sp = &log->spare;
    sp->fill_busy[io - sp->fill_io] = false;
    sp->fill_inflight--;
    if (res < 0) {
        if (sp->fill_err == 0)
            sp->fill_err = res;
    } else {
        log->st.zero_filled_bytes += (uint64_t)res;
    }
    /* The crash tests' kill point: a process killed while the spare is
     * being filled leaves a .tmp that the next open deletes. */
    fiu_do_on("raftlog/zero_fill_crash", raise(SIGKILL));
    fill_pump(log);
}

static void spare_step_done(struct tkv_io *io, int res)
{
    struct tkv_raftlog *log = io->data;
    struct rl_spare *sp = &log->spare;
    switch (sp->step) {
    case RL_SP_OPEN:
        if (res < 0) {
            spare_fail(log, res);
            return;
        }
        sp->fd = res;
        sp->step = RL_SP_ALLOC;
        /* Preallocate: appends then never allocate blocks, so a full disk
         * shows up here, before anything of a batch is written. */
        tkv_reactor_fallocate(log->reactor, &sp->io, sp->fd, 0, 0, log->segment_size);
        return;
    case RL_SP_ALLOC:
        /* A file system without fallocate grows the file as it is written
         * (a full disk then shows up as a failed batch write). */
        if (res < 0 && res != -EOPNOTSUPP)
            {
            spare_fail(log, res);
            return;
        }
        sp->step = RL_SP_HEADER;
        sp->iov.iov_base = sp->hdr;
        sp->iov.iov_len = RL_SEG_HDR;
        tkv_reactor_writev(log->reactor, &sp->io, sp->fd, &sp->iov, 1, 0);
        return;
    case RL_SP_HEADER:
        if (res < 0) {
            spare_fail(log, res);
            return;
        }
        if (log->zero_fill) {
            sp->step = RL_SP_FILL;
            sp->fill_next = RL_SEG_HDR;
            sp->zeros = tkv_xcalloc(1, RL_FILL_CHUNK);
            fill_pump(log);
            return;
        }
        spare_sync(log);
        return;
    case RL_SP_FILL:
        TKV_PANIC("raft log: zero fill chunks complete through fill_done");
    case RL_SP_SYNC:
        if (res < 0) {
            spare_fail(log, res);
            return;
        }
        sp->state = RL_SPARE_READY;
        return;
    case RL_SP_UNLINK:
        /* best effort: recovery deletes a leftover .tmp anyway */
        sp->state = RL_SPARE_FAILED;
        return;
    }
}

void raftlog_spare_start(struct tkv_raftlog *log)
{
    struct rl_spare *sp = &log->spare;
    if (!async_mode(log) || log->failed || log->closing || sp->state != RL_SPARE_NONE)
        return;
    uint64_t id = log->segs[log->n_segs - 1].id + 1;
    sp->id = id;
    sp->fd = -1;
    sp->err = 0;
    sp->fill_next = 0;
    sp->fill_inflight = 0;
    sp->fill_err = 0;
    sp->fill_cut = false;
    raftlog_seg_name(sp->tmp, id, true);
    raftlog_seg_name(sp->name, id, false);
    raftlog_seg_header(sp->hdr, id, log->segment_size, log->max_batch);
    sp->state = RL_SPARE_BUSY;
    tkv_io_init(&sp->io, spare_step_done, log);
    if (fiu_fail("raftlog/segment_enospc")) {
        sp->state = RL_SPARE_FAILED;
        sp->err = -ENOSPC;
        return;
    }
    sp->step = RL_SP_OPEN;
    tkv_reactor_openat(log->reactor, &sp->io, log->dir_op_fd, sp->tmp,
                       O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

static void rot_step_done(struct tkv_io *io, int res);

static void rot_rename(struct tkv_raftlog *log)
{
    log->rot_step = RL_ROT_RENAME;
    tkv_reactor_renameat(log->reactor, &log->rot_io, log->dir_op_fd, log->spare.tmp, log->dir_op_fd,
                         log->spare.name);
}

static void rot_fail(struct tkv_raftlog *log, int err)
{
    log->rot_step = RL_ROT_IDLE;
    log->rot_err = err;
}

static void rot_step_done(struct tkv_io *io, int res)
{
    struct tkv_raftlog *log = io->data;
    struct rl_spare *sp = &log->spare;
    switch (log->rot_step) {
    case RL_ROT_ZERO:
        tkv_free(log->rot_zeros);
        log->rot_zeros = NULL;
        if (res < 0) {
            rot_fail(log, res == -ENOSPC ? -EIO : res);
            return;
        }
        log->segs[log->n_segs - 1].dirty_end = 0;
        rot_rename(log);
        return;
    case RL_ROT_RENAME:
        /* a failed rename leaves the spare as it was: the next switch
         * retries it */
        if (res < 0) {
            rot_fail(log, res);
            return;
        }
        if (fiu_fail("raftlog/skip_dir_fsync")) {
            res = 0;
            break;
        }
        log->rot_step = RL_ROT_DIRSYNC;
        tkv_reactor_fsync(log->reactor, &log->rot_io, log->dir_op_fd, false);
        return;
    case RL_ROT_DIRSYNC:
        /* The rename may or may not survive a crash: fatal. */
        if (res < 0) {
            rot_fail(log, res == -ENOSPC ? -EIO : res);
            return;
        }
        break;
    case RL_ROT_IDLE:
        TKV_PANIC("raft log: segment switch completion without a switch");
    }
    struct rl_seg *s = raftlog_seg_push(log, sp->id);
    s->fd = sp->fd;
    s->end = RL_SEG_HDR;
    sp->fd = -1;
    sp->state = RL_SPARE_NONE;
    log->rot_step = RL_ROT_IDLE;
    log->st.segments_created++;
    /* The next spare is prepared while this segment fills. */
    raftlog_spare_start(log);
    /* The log's before-sleep hook writes the waiting batch this turn. */
    (void)tkv_raftlog_purge(log);
}

int raftlog_rotate_async(struct tkv_raftlog *log)
{
    struct rl_spare *sp = &log->spare;
    if (log->rot_err) {
        int err = log->rot_err;
        log->rot_err = 0;
        return err;
    }
    if (log->rot_step != RL_ROT_IDLE)
        return 1;
    switch (sp->state) {
    case RL_SPARE_NONE:
        raftlog_spare_start(log);
        return sp->state == RL_SPARE_FAILED ? raftlog_rotate_async(log) : 1;
    case RL_SPARE_BUSY:
        /* This batch waits for the spare: no point finishing its zero fill
         * first (fill_pump stops after the chunks in flight). */
        if (sp->step == RL_SP_FILL && !sp->fill_cut) {
            sp->fill_cut = true;
            if (sp->fill_inflight == 0)
                fill_pump(log); /* a stalled fill (test failpoint) */
        }
        return 1;
    case RL_SPARE_FAILED: {
        /* Reported to the batch that needed it; the next switch tries a
         * fresh preparation. */
        int err = sp->err;
        sp->state = RL_SPARE_NONE;
        return err;
    }
    case RL_SPARE_READY:
        break;
    }
    struct rl_seg *s = &log->segs[log->n_segs - 1];
    tkv_io_init(&log->rot_io, rot_step_done, log);
    if (s->dirty_end > s->end) {
        /* Leftover of a failed write: recovery must find zeros after the
         * last batch of a sealed segment. */
        size_t n = (size_t)(s->dirty_end - s->end);
        log->rot_zeros = tkv_xcalloc(1, n);
        log->rot_iov.iov_base = log->rot_zeros;
        log->rot_iov.iov_len = n;
        log->rot_step = RL_ROT_ZERO;
        tkv_reactor_write_sync(log->reactor, &log->rot_io, s->fd, &log->rot_iov, 1, s->end);
        return 1;
    }
    rot_rename(log);
    return 1;
}

bool raftlog_spare_idle(const struct tkv_raftlog *log)
{
    const struct rl_spare *sp = &log->spare;
    /* A fill with nothing in flight (stalled by the test failpoint) has
     * nothing the kernel still uses: close may remove the spare. */
    bool spare_quiet = sp->state != RL_SPARE_BUSY ||
                       (sp->step == RL_SP_FILL && sp->fill_inflight == 0);
    return spare_quiet && log->rot_step == RL_ROT_IDLE && !log->del_busy;
}

bool raftlog_async_files(const struct tkv_raftlog *log)
{
    /* raftlog/blocking_segment_switch: the negative control of the tests
     * that count blocking file operations in reactor mode. */
    return async_mode(log) && !fiu_fail("raftlog/blocking_segment_switch");
}

bool raftlog_purge_idle(const struct tkv_raftlog *log)
{
    return !log->del_busy;
}

static void del_step_done(struct tkv_io *io, int res);

static void del_next(struct tkv_raftlog *log)
{
    if (log->del_next < log->del_n) {
        raftlog_seg_name(log->del_name, log->del_ids[log->del_next++], false);
        tkv_reactor_unlinkat(log->reactor, &log->del_io, log->dir_op_fd, log->del_name);
        return;
    }
    log->del_syncing = true;
    if (fiu_fail("raftlog/skip_dir_fsync")) {
        del_step_done(&log->del_io, 0);
        return;
    }
    tkv_reactor_fsync(log->reactor, &log->del_io, log->dir_op_fd, false);
}

static void del_step_done(struct tkv_io *io, int res)
{
    struct tkv_raftlog *log = io->data;
    if (!log->del_syncing && res < 0 && res != -ENOENT) {
        /* Stop here: a later segment deleted while this one stays would be
         * a hole; the ones left are old, contiguous and replayed harmlessly
         * at the next open. */
        TKV_LOG_WARN("raft log purge: cannot delete a segment",
                     TKV_LF_STR("dir", log->dir), TKV_LF_STR("file", log->del_name),
                     TKV_LF_ERR(res));
        log->del_next = log->del_n;
    }
    if (!log->del_syncing) {
        del_next(log);
        return;
    }
    if (res < 0)
        TKV_LOG_WARN("raft log purge: directory fsync failed", TKV_LF_STR("dir", log->dir),
                     TKV_LF_ERR(res));
    tkv_free(log->del_ids);
    log->del_ids = NULL;
    log->del_busy = log->del_syncing = false;
}

void raftlog_purge_async(struct tkv_raftlog *log, const struct rl_seg *segs, size_t n)
{
    tkv_assert(!log->del_busy && n > 0);
    log->del_ids = tkv_xmalloc(n * sizeof(*log->del_ids));
    for (size_t i = 0; i < n; i++) {
        log->del_ids[i] = segs[i].id;
        /* close(2) of a regular file does not wait for the disk */
        if (segs[i].fd >= 0)
            close(segs[i].fd);
    }
    log->del_n = n;
    log->del_next = 0;
    log->del_busy = true;
    log->del_syncing = false;
    tkv_io_init(&log->del_io, del_step_done, log);
    del_next(log);
}

void raftlog_spare_close(struct tkv_raftlog *log)
{
    struct rl_spare *sp = &log->spare;
    if (sp->fd >= 0) {
        /* Closing: the loop no longer serves; a prepared spare is removed
         * (recovery would remove it too). */
        close(sp->fd);
        sp->fd = -1;
        unlinkat(log->dir_op_fd, sp->tmp, 0);
    }
    tkv_free(log->rot_zeros);
    log->rot_zeros = NULL;
    tkv_free(sp->zeros);
    sp->zeros = NULL;
    sp->state = RL_SPARE_NONE;
}

#else

void raftlog_spare_start(struct tkv_raftlog *log)
{
    (void)log;
}

int raftlog_rotate_async(struct tkv_raftlog *log)
{
    (void)log;
    return -ENOSYS;
}

bool raftlog_spare_idle(const struct tkv_raftlog *log)
{
    (void)log;
    return true;
}

bool raftlog_async_files(const struct tkv_raftlog *log)
{
    (void)log;
    return false;
}

bool raftlog_purge_idle(const struct tkv_raftlog *log)
{
    (void)log;
    return true;
}

void raftlog_purge_async(struct tkv_raftlog *log, const struct rl_seg *segs, size_t n)
{
    (void)log;
    (void)segs;
    (void)n;
}

void raftlog_spare_close(struct tkv_raftlog *log)
{
    (void)log;
}

#endif
