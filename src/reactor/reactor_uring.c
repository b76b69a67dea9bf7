/* The liburing shim: SQE preparation for every operation, CQE dispatch
 * (io_uring_for_each_cqe + one io_uring_cq_advance per batch), short
 * send/write resubmission, linked write+fdatasync, cancellation. */
#include <errno.h>
#include <fiu.h>
#include <string.h>

#include "reactor_private.h"
#include "tkv/err.h"
#include "tkv/log.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* liburing's sanitize.c habit: a buffer handed to the kernel must be live
 * memory; catching a freed or out-of-bounds buffer here beats a silent
 * kernel write into someone else's allocation. */
static void check_buf(const void *p, size_t len)
{
    if (p != NULL && len > 0 && __asan_region_is_poisoned((void *)(uintptr_t)p, len) != NULL)
        TKV_PANIC("io_uring buffer %p (+%zu) is poisoned (freed or out of bounds)", p, len);
}
#else
static void check_buf(const void *p, size_t len)
{
    (void)p;
    (void)len;
}
#endif

const char *tkv_uring_setup_name(enum tkv_uring_setup mode)
{
    switch (mode) {
    case TKV_URING_SETUP_AUTO:
        return "auto";
    case TKV_URING_SETUP_DEFER:
        return "defer";
    case TKV_URING_SETUP_COOP:
        return "coop";
    case TKV_URING_SETUP_PLAIN:
        return "plain";
    }
    return "?";
}

static unsigned setup_flags(enum tkv_uring_setup mode)
{
    switch (mode) {
    case TKV_URING_SETUP_AUTO:
    case TKV_URING_SETUP_DEFER:
        /* DEFER_TASKRUN requires SINGLE_ISSUER; COOP_TASKRUN adds nothing
         * to it (task work never runs outside io_uring_enter anyway) */
        return IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
               IORING_SETUP_TASKRUN_FLAG;
    case TKV_URING_SETUP_COOP:
        return IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    case TKV_URING_SETUP_PLAIN:
        break;
    }
    return 0;
}

static int queue_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p,
                      enum tkv_uring_setup mode)
{
    /* Test builds: the kernel refuses a mode's flags with EINVAL, as a
     * kernel before 6.1 (DEFER) or 5.19 (COOP) does, so the fallback chain
     * runs for real (tests/unit/reactor/test_setup.c). */
    bool refuse = false;
    (void)mode; /* only the failpoints read it */
    fiu_do_on("reactor/uring_refuse_defer", refuse |= mode == TKV_URING_SETUP_DEFER);
    fiu_do_on("reactor/uring_refuse_coop", refuse |= mode == TKV_URING_SETUP_COOP);
    if (refuse)
        return -EINVAL;
    return io_uring_queue_init_params(entries, ring, p);
}

int reactor_uring_init(struct tkv_reactor *r, unsigned entries, enum tkv_uring_setup cap)
{
    enum tkv_uring_setup mode = cap == TKV_URING_SETUP_AUTO ? TKV_URING_SETUP_DEFER : cap;
    struct io_uring_params p;
    int rv;
    /* Fall back one mode per EINVAL (an older kernel or a seccomp filter
     * refusing the flags); other errors (ENOSYS, EPERM, EMFILE, ENOMEM)
     * are not about the flags and are returned as they are. */
    for (;;) {
        memset(&p, 0, sizeof(p));
        /* room for bursts of completions (e.g. every connection's recv) */
        p.flags = IORING_SETUP_CQSIZE | setup_flags(mode);
        p.cq_entries = entries * 4;
        rv = queue_init(entries, &r->ring, &p, mode);
        if (rv != -EINVAL || mode == TKV_URING_SETUP_PLAIN)
            break;
        mode = (enum tkv_uring_setup)(mode + 1);
    }
    if (rv == -EINVAL) {
        /* a kernel without IORING_SETUP_CQSIZE (before 5.5) */
        memset(&p, 0, sizeof(p));
        rv = io_uring_queue_init_params(entries, &r->ring, &p);
    }
    if (rv < 0)
        return rv;
    r->ring_ok = true;
    r->uring_setup = (uint32_t)mode;
    r->st.uring_setup = (uint32_t)mode;
    if (mode != (cap == TKV_URING_SETUP_AUTO ? TKV_URING_SETUP_DEFER : cap))
        TKV_LOG_INFO("io_uring set-up fell back (kernel refused richer flags)",
                     TKV_LF_U64("core", r->core), TKV_LF_STR("mode", tkv_uring_setup_name(mode)));
    if (!(p.features & IORING_FEAT_NODROP))
        TKV_LOG_WARN(
            "kernel io_uring lacks IORING_FEAT_NODROP; completions may be lost under load");
    return 0;
}

void reactor_uring_submit_nowait(struct tkv_reactor *r)
{
    int rv;
    /* IORING_SQ_TASKRUN: completions wait as task work until this thread
     * enters the kernel with GETEVENTS (DEFER: only then; COOP: at any
     * kernel entry). IORING_SQ_CQ_OVERFLOW: CQEs wait in the overflow list.
     * A turn that does not block must flush both, or a core kept busy by
     * self-re-deferring tasks would never see its I/O complete. */
    unsigned kflags = IO_URING_READ_ONCE(*r->ring.sq.kflags);
    if (kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW))
        rv = io_uring_submit_and_get_events(&r->ring);
    else
        rv = io_uring_submit(&r->ring);
    if (rv < 0 && rv != -EINTR && rv != -EAGAIN && rv != -EBUSY)
        TKV_PANIC("io_uring_submit: %s", strerror(-rv));
}

void reactor_uring_exit(struct tkv_reactor *r)
{
    if (r->ring_ok)
        io_uring_queue_exit(&r->ring);
    r->ring_ok = false;
}

struct io_uring_sqe *reactor_sqe(struct tkv_reactor *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (TKV_UNLIKELY(sqe == NULL)) {
        /* SQ full: flush early (never blocks) and retry */
        int rv = io_uring_submit(&r->ring);
        if (rv < 0 && rv != -EAGAIN && rv != -EBUSY && rv != -EINTR)
            TKV_PANIC("io_uring_submit: %s", strerror(-rv));
        sqe = io_uring_get_sqe(&r->ring);
        if (sqe == NULL)
            TKV_PANIC("io_uring submission queue stays full");
    }
    return sqe;
}

void tkv_io_init(struct tkv_io *io, tkv_io_fn cb, void *data)
{
    memset(io, 0, sizeof(*io));
    io->cb = cb;
    io->data = data;
    io->fd = -1;
}

bool tkv_io_pending(const struct tkv_io *io)
{
    return io->op != OP_NONE;
}

static struct io_uring_sqe *io_sqe(struct tkv_reactor *r, struct tkv_io *io, uint64_t tag)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)io | tag);
    r->user_inflight++;
    return sqe;
}

static void io_begin(struct tkv_reactor *r, struct tkv_io *io, int op, int fd)
{
    REACTOR_OWNER(r);
    tkv_assert(((uintptr_t)io & UD_MASK) == 0);
    tkv_assert(io->op == OP_NONE); /* one operation per struct tkv_io */
    io->op = op;
    io->fd = fd;
    io->done = 0;
    io->flags = 0;
}

static unsigned clamp_len(size_t n)
{
    return n > (size_t)(1u << 30) ? (1u << 30) : (unsigned)n;
}

static void prep_send(struct tkv_reactor *r, struct tkv_io *io)
{
    const char *p = (const char *)io->buf + io->done;
    struct io_uring_sqe *sqe = io_sqe(r, io, UD_IO);
    io_uring_prep_send(sqe, io->fd, p, clamp_len(io->len - io->done), MSG_NOSIGNAL);
}

/* (Re)submit the rest of a writev from io->done on, without touching the
 * caller's iovec array: whole iovecs go as a writev, a partly written one
 * as a plain write. */
static void prep_writev_rest(struct tkv_reactor *r, struct tkv_io *io, uint64_t tag)
{
    size_t skip = io->done;
    int i = 0;
    while (i < io->iovcnt && skip >= io->iov[i].iov_len) {
        skip -= io->iov[i].iov_len;
        i++;
    }
    struct io_uring_sqe *sqe = io_sqe(r, io, tag);
    if (skip == 0) {
        io_uring_prep_writev(sqe, io->fd, io->iov + i, (unsigned)(io->iovcnt - i),
                             io->off + io->done);
    } else {
        io_uring_prep_write(sqe, io->fd, (const char *)io->iov[i].iov_base + skip,
                            clamp_len(io->iov[i].iov_len - skip), io->off + io->done);
    }
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++) {
        check_buf(iov[i].iov_base, iov[i].iov_len);
        n += iov[i].iov_len;
    }
    return n;
}

void tkv_reactor_accept(struct tkv_reactor *r, struct tkv_io *io, int listen_fd)
{
    io_begin(r, io, OP_ACCEPT, listen_fd);
    io_uring_prep_accept(io_sqe(r, io, UD_IO), listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void tkv_reactor_recv(struct tkv_reactor *r, struct tkv_io *io, int fd, void *buf, size_t len)
{
    io_begin(r, io, OP_RECV, fd);
    check_buf(buf, len);
    io->buf = buf;
    io->len = len;
    io_uring_prep_recv(io_sqe(r, io, UD_IO), fd, buf, clamp_len(len), 0);
}

void tkv_reactor_send(struct tkv_reactor *r, struct tkv_io *io, int fd, const void *buf, size_t len)
{
    io_begin(r, io, OP_SEND, fd);
    check_buf(buf, len);
    io->buf = buf;
    io->len = len;
    prep_send(r, io);
}

void tkv_reactor_connect(struct tkv_reactor *r, struct tkv_io *io, int fd,
                         const struct sockaddr *addr, uint32_t addrlen)
{
    io_begin(r, io, OP_CONNECT, fd);
    check_buf(addr, addrlen);
    io->buf = addr;
    io->len = addrlen;
    io_uring_prep_connect(io_sqe(r, io, UD_IO), fd, addr, (socklen_t)addrlen);
}

void tkv_reactor_writev(struct tkv_reactor *r, struct tkv_io *io, int fd, struct iovec *iov,
                        int iovcnt, uint64_t off)
{
    io_begin(r, io, OP_WRITEV, fd);
    io->iov = iov;
    io->iovcnt = iovcnt;
    io->off = off;
    io->len = iov_total(iov, iovcnt);
    prep_writev_rest(r, io, UD_IO);
}

void tkv_reactor_fsync(struct tkv_reactor *r, struct tkv_io *io, int fd, bool datasync)
{
    io_begin(r, io, OP_FSYNC, fd);
    io_uring_prep_fsync(io_sqe(r, io, UD_IO), fd, datasync ? IORING_FSYNC_DATASYNC : 0);
}

void tkv_reactor_write_sync(struct tkv_reactor *r, struct tkv_io *io, int fd, struct iovec *iov,
                            int iovcnt, uint64_t off)
{
    io_begin(r, io, OP_WRITE_SYNC, fd);
    io->iov = iov;
    io->iovcnt = iovcnt;
    io->off = off;
    io->len = iov_total(iov, iovcnt);
    /* both SQEs must be adjacent in the SQ for the link to hold: make room
     * for two before taking the first */
    if (io_uring_sq_space_left(&r->ring) < 2)
        io_uring_submit(&r->ring);
    struct io_uring_sqe *w = io_sqe(r, io, UD_IO_LINKED);
    io_uring_prep_writev(w, fd, iov, (unsigned)iovcnt, off);
    w->flags |= IOSQE_IO_LINK;
    io_uring_prep_fsync(io_sqe(r, io, UD_IO), fd, IORING_FSYNC_DATASYNC);
    io->flags = IOF_WAIT_WRITE | IOF_WAIT_SYNC;
    io->off = 0;
    io->done = 0;
}

void tkv_reactor_read(struct tkv_reactor *r, struct tkv_io *io, int fd, void *buf, size_t len,
                      uint64_t off)
{
    io_begin(r, io, OP_READ, fd);
    check_buf(buf, len);
    io->buf = buf;
    io->len = len;
    io->off = off;
    io_uring_prep_read(io_sqe(r, io, UD_IO), fd, buf, clamp_len(len), off);
}

void tkv_reactor_close(struct tkv_reactor *r, struct tkv_io *io, int fd)
{
    io_begin(r, io, OP_CLOSE, fd);
    io_uring_prep_close(io_sqe(r, io, UD_IO), fd);
}

void tkv_reactor_openat(struct tkv_reactor *r, struct tkv_io *io, int dirfd, const char *path,
                        int flags, unsigned mode)
{
    io_begin(r, io, OP_OPENAT, dirfd);
    check_buf(path, strlen(path) + 1);
    io->buf = path;
    io_uring_prep_openat(io_sqe(r, io, UD_IO), dirfd, path, flags, mode);
}

void tkv_reactor_fallocate(struct tkv_reactor *r, struct tkv_io *io, int fd, int mode,
                           uint64_t off, uint64_t len)
{
    io_begin(r, io, OP_FALLOCATE, fd);
    io_uring_prep_fallocate(io_sqe(r, io, UD_IO), fd, mode, (off_t)off, (off_t)len);
}

void tkv_reactor_renameat(struct tkv_reactor *r, struct tkv_io *io, int olddirfd,
                          const char *oldpath, int newdirfd, const char *newpath)
{
    io_begin(r, io, OP_RENAMEAT, olddirfd);
    check_buf(oldpath, strlen(oldpath) + 1);
    check_buf(newpath, strlen(newpath) + 1);
    io_uring_prep_renameat(io_sqe(r, io, UD_IO), olddirfd, oldpath, newdirfd, newpath, 0);
}

void tkv_reactor_unlinkat(struct tkv_reactor *r, struct tkv_io *io, int dirfd, const char *path)
{
    io_begin(r, io, OP_UNLINKAT, dirfd);
    check_buf(path, strlen(path) + 1);
    io_uring_prep_unlinkat(io_sqe(r, io, UD_IO), dirfd, path, 0);
}

static void submit_cancel(struct tkv_reactor *r, uint64_t ud, int flags)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);
    io_uring_prep_cancel64(sqe, ud, flags);
    io_uring_sqe_set_data64(sqe, UD_CANCEL);
    r->intern_inflight++;
}

void tkv_reactor_cancel(struct tkv_reactor *r, struct tkv_io *io)
{
    REACTOR_OWNER(r);
    if (io->op == OP_NONE)
        return;
    if (io->op == OP_WRITE_SYNC && (io->flags & IOF_WAIT_WRITE))
        submit_cancel(r, (uint64_t)(uintptr_t)io | UD_IO_LINKED, 0);
    submit_cancel(r, (uint64_t)(uintptr_t)io | UD_IO, 0);
    /* submit now: if io completes later in this turn and its owner reuses
     * it from the callback, a cancel still sitting in the SQ would hit the
     * new operation instead */
    io_uring_submit(&r->ring);
}

void reactor_uring_cancel_all(struct tkv_reactor *r)
{
    submit_cancel(r, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_submit(&r->ring);
}

static void io_finish(struct tkv_io *io, int res)
{
    io->op = OP_NONE;
    io->cb(io, res);
}

/* write_sync: the callback waits for both CQEs. After submission io->off
 * holds the write's error and io->done the sync's (0 = none). A failed or
 * short write breaks the link, so the kernel fails the fsync with
 * -ECANCELED: the write's error is the one reported. */
static void complete_write_sync(struct tkv_io *io, uint64_t tag, int res)
{
    if (tag == UD_IO_LINKED) {
        io->flags &= ~IOF_WAIT_WRITE;
        if (res < 0)
            io->off = (uint64_t)(int64_t)res;
        else if ((size_t)res != io->len)
            io->off = (uint64_t)(int64_t)-EIO;
    } else {
        io->flags &= ~IOF_WAIT_SYNC;
        if (res < 0)
            io->done = (size_t)(ssize_t)res;
    }
    if (io->flags & (IOF_WAIT_WRITE | IOF_WAIT_SYNC))
        return;
    int werr = (int)(int64_t)io->off, serr = (int)(ssize_t)io->done;
    io_finish(io, werr ? werr : serr ? serr : (int)TKV_MIN(io->len, (size_t)INT32_MAX));
}

static void dispatch(struct tkv_reactor *r, uint64_t ud, int res)
{
    if (ud == UD_CANCEL) {
        r->intern_inflight--;
        return;
    }
    if (ud == UD_WAKE) {
        reactor_wake_complete(r, res);
        return;
    }
    struct tkv_io *io = (struct tkv_io *)(uintptr_t)(ud & ~(uint64_t)UD_MASK);
    uint64_t tag = ud & UD_MASK;
    r->user_inflight--;
    switch (io->op) {
    case OP_SEND:
        if (res > 0) {
            io->done += (size_t)res;
            if (io->done < io->len) {
                r->st.resubmits++;
                prep_send(r, io);
                return;
            }
            res = (int)TKV_MIN(io->len, (size_t)INT32_MAX);
        } else if (res == 0 && io->len > 0) {
            res = -EIO;
        }
        break;
    case OP_WRITEV:
        if (res > 0) {
            io->done += (size_t)res;
            if (io->done < io->len) {
                r->st.resubmits++;
                prep_writev_rest(r, io, UD_IO);
                return;
            }
            res = (int)TKV_MIN(io->len, (size_t)INT32_MAX);
        } else if (res == 0 && io->len > 0) {
            res = -EIO;
        }
        break;
    case OP_WRITE_SYNC:
        complete_write_sync(io, tag, res);
        return;
    case OP_NONE:
        TKV_PANIC("completion for an idle tkv_io %p (res %d)", (void *)io, res);
    default:
        break;
    }
    io_finish(io, res);
}

unsigned reactor_uring_reap(struct tkv_reactor *r)
{
    unsigned total = 0;
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe)
        {
            /* copy out: callbacks may submit, and the slot is reused only
             * after the advance below, but keep the window obvious */
            uint64_t ud = cqe->user_data;
            int res = cqe->res;
            n++;
            dispatch(r, ud, res);
        }
        if (n == 0)
            break;
        io_uring_cq_advance(&r->ring, n);
        total += n;
        if (total >= r->ring.cq.ring_entries)
            break; /* bounded work per turn */
    }
    return total;
}
