/* Storage backends of the raft log: segment files in a directory (plain
 * syscalls for set-up, recovery and synchronous mode; the io_uring path is in
 * raftlog.c) and the in-memory disk used by simulations. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fiu.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raftlog_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

#define NAME_LEN RL_NAME_LEN

void raftlog_seg_name(char *buf, uint64_t id, bool tmp)
{
    snprintf(buf, NAME_LEN, "%016" PRIx64 ".rlog%s", id, tmp ? ".tmp" : "");
}


void raftlog_seg_header(uint8_t *h, uint64_t id, uint64_t size, uint32_t max_batch)
{
    memset(h, 0, RL_SEG_HDR);
    memcpy(h, RL_MAGIC, 8);
    rl_put32(h + 8, RL_VERSION);
    rl_put32(h + 12, RL_SEG_HDR);
    rl_put64(h + 16, id);
    rl_put64(h + 24, size);
    rl_put32(h + 32, max_batch);
    rl_put32(h + 60, tkv_codec_crc32c(0, h, 60));
}

/* ---- memdisk ---- */

struct tkv_raftlog_memdisk *tkv_raftlog_memdisk_new(void)
{
    return tkv_xcalloc(1, sizeof(struct tkv_raftlog_memdisk));
}

void tkv_raftlog_memdisk_free(struct tkv_raftlog_memdisk *d)
{
    if (d == NULL)
        return;
    tkv_assert(!d->in_use && d->n_held == 0);
    tkv_free(d->held);
    for (size_t i = 0; i < d->n; i++)
        tkv_free(d->segs[i].buf);
    tkv_free(d->segs);
    tkv_free(d);
}

size_t tkv_raftlog_memdisk_segments(const struct tkv_raftlog_memdisk *d)
{
    return d->n;
}

uint8_t *tkv_raftlog_memdisk_segment(struct tkv_raftlog_memdisk *d, size_t i, size_t *len_out)
{
    if (i >= d->n)
        return NULL;
    *len_out = d->segs[i].size;
    return d->segs[i].buf;
}

void tkv_raftlog_memdisk_set_limit(struct tkv_raftlog_memdisk *d, uint64_t bytes)
{
    d->limit = bytes;
}

static struct rl_memseg *mem_find(struct tkv_raftlog_memdisk *d, uint64_t id)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->segs[i].id == id)
            return &d->segs[i];
    return NULL;
}

/* ---- directory ---- */

int raftlog_io_open_dir(struct tkv_raftlog *log)
{
    if (log->mem)
        return 0;
    if (mkdir(log->dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    log->dir_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->dir_fd < 0)
        return -errno;
    /* Two writers on one log would interleave batches: one owner at a time
     * (released by the kernel when a killed process's fds close). */
    if (flock(log->dir_fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? TKV_EBUSY : -errno;
    if (log->reactor) {
        log->dir_op_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (log->dir_op_fd < 0)
            return -errno;
    }
    return 0;
}

void raftlog_io_close_dir(struct tkv_raftlog *log)
{
    if (log->dir_op_fd >= 0)
        close(log->dir_op_fd);
    log->dir_op_fd = -1;
    if (log->dir_fd >= 0)
        close(log->dir_fd);
    log->dir_fd = -1;
}

int raftlog_io_sync_dir(struct tkv_raftlog *log)
{
    if (log->mem)
        return 0;
    /* Power-cut tests' negative control: names never made durable. */
    fiu_return_on("raftlog/skip_dir_fsync", 0);
    return fsync(log->dir_fd) < 0 ? -errno : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool parse_name(const char *name, uint64_t *id, bool *tmp)
{
    size_t len = strlen(name);
    if (len < 21 || memcmp(name + 16, ".rlog", 5) != 0)
        return false;
    if (len == 21)
        *tmp = false;
    else if (len == 25 && strcmp(name + 21, ".tmp") == 0)
        *tmp = true;
    else
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return true;
}

int raftlog_io_list(struct tkv_raftlog *log, uint64_t **ids_out, size_t *n_out)
{
    size_t n = 0, cap = 16;
    uint64_t *ids = tkv_xmalloc(cap * sizeof(*ids));
    if (log->mem) {
        for (size_t i = 0; i < log->mem->n; i++) {
            if (n == cap)
                ids = tkv_xrealloc(ids, (cap *= 2) * sizeof(*ids));
            ids[n++] = log->mem->segs[i].id;
        }
    } else {
        int fd = dup(log->dir_fd);
        DIR *d = fd < 0 ? NULL : fdopendir(fd);
        if (d == NULL) {
            int rv = -errno;
            if (fd >= 0)
                close(fd);
            tkv_free(ids);
            return rv;
        }
        rewinddir(d);
        bool removed = false;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            uint64_t id;
            bool tmp;
            if (!parse_name(de->d_name, &id, &tmp))
                continue;
            if (tmp) {
                /* An interrupted segment creation: never renamed, never used. */
                unlinkat(log->dir_fd, de->d_name, 0);
                removed = true;
                continue;
            }
            if (n == cap)
                ids = tkv_xrealloc(ids, (cap *= 2) * sizeof(*ids));
            ids[n++] = id;
        }
        closedir(d);
        if (removed)
            raftlog_io_sync_dir(log);
    }
    qsort(ids, n, sizeof(*ids), cmp_u64);
    *ids_out = ids;
    *n_out = n;
    return 0;
}

/* ---- segments ---- */

/* Write zeros over [RL_SEG_HDR, segment_size) of a new segment (see
 * tkv_raftlog_config.skip_zero_fill): appends then overwrite written blocks,
 * and their fdatasync does not also convert unwritten extents. The caller
 * fsyncs. Synchronous: open and synchronous mode only. */
static int zero_fill(struct tkv_raftlog *log, int fd)
{
    uint8_t *zeros = tkv_xcalloc(1, RL_FILL_CHUNK);
    uint64_t off = RL_SEG_HDR;
    int rv = 0;
    while (off < log->segment_size) {
        size_t k = (size_t)TKV_MIN(log->segment_size - off, (uint64_t)RL_FILL_CHUNK);
        ssize_t w = pwrite(fd, zeros, k, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rv = -errno;
            break;
        }
        if (w == 0) {
            rv = -EIO;
            break;
        }
        off += (uint64_t)w;
        log->st.zero_filled_bytes += (uint64_t)w;
        /* The crash tests' kill point: a creation interrupted mid-fill must
         * leave only a .tmp that the next open deletes. */
        fiu_do_on("raftlog/zero_fill_crash", raise(SIGKILL));
    }
    tkv_free(zeros);
    return rv;
}

int raftlog_io_create(struct tkv_raftlog *log, uint64_t id)
{
    uint8_t hdr[RL_SEG_HDR];
    raftlog_seg_header(hdr, id, log->segment_size, log->max_batch);
    fiu_return_on("raftlog/segment_enospc", -ENOSPC);
    if (log->mem) {
        struct tkv_raftlog_memdisk *d = log->mem;
        if (d->limit && d->used + log->segment_size > d->limit)
            return -ENOSPC;
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 8;
            d->segs = tkv_xrealloc(d->segs, d->cap * sizeof(*d->segs));
        }
        struct rl_memseg *m = &d->segs[d->n++];
        m->id = id;
        m->size = log->segment_size;
        m->buf = tkv_xcalloc(1, m->size);
        memcpy(m->buf, hdr, RL_SEG_HDR);
        d->used += m->size;
        struct rl_seg *s = raftlog_seg_push(log, id);
        s->end = RL_SEG_HDR;
        /* d->segs may have moved: re-resolve every segment's pointer. */
        for (size_t i = 0; i < log->n_segs; i++)
            log->segs[i].mem = mem_find(d, log->segs[i].id);
        return 0;
    }
    char tmp[NAME_LEN], name[NAME_LEN];
    raftlog_seg_name(tmp, id, true);
    raftlog_seg_name(name, id, false);
    int rv = 0;
    /* Reactor mode prepares segments on io_uring: a blocking creation after
     * open would stall the loop (tests assert this stays 0). */
    if (log->reactor && log->opened)
        log->st.blocking_file_ops++;
    int fd = openat(log->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    /* Preallocate: appends then never allocate blocks, so a full disk shows
     * up here, before anything of a batch is written. */
    if (fallocate(fd, 0, 0, (off_t)log->segment_size) < 0) {
        rv = -errno;
        if (rv == -EOPNOTSUPP) {
            rv = ftruncate(fd, (off_t)log->segment_size) < 0 ? -errno : 0;
        }
        if (rv < 0)
            goto err;
    }
    if (pwrite(fd, hdr, RL_SEG_HDR, 0) != RL_SEG_HDR) {
        rv = errno ? -errno : -EIO;
        goto err;
    }
    if (log->zero_fill) {
        rv = zero_fill(log, fd);
        if (rv < 0)
            goto err;
    }
    if (fsync(fd) < 0) {
        rv = -errno;
        goto err;
    }
    if (renameat(log->dir_fd, tmp, log->dir_fd, name) < 0) {
        rv = -errno;
        goto err;
    }
    if (!fiu_fail("raftlog/skip_dir_fsync") && fsync(log->dir_fd) < 0) {
        /* The rename may or may not survive a crash: fatal for the caller. */
        rv = -errno;
        close(fd);
        return rv == -ENOSPC ? -EIO : rv;
    }
    struct rl_seg *s = raftlog_seg_push(log, id);
    s->fd = fd;
    s->end = RL_SEG_HDR;
    return 0;
err:
    close(fd);
    unlinkat(log->dir_fd, tmp, 0);
    assert(rv != 0);
    return rv;
}

int raftlog_io_attach(struct tkv_raftlog *log, uint64_t id)
{
    if (log->mem) {
        struct rl_memseg *m = mem_find(log->mem, id);
        if (m == NULL)
            return -ENOENT;
        raftlog_seg_push(log, id)->mem = m;
        return 0;
    }
    char name[NAME_LEN];
    raftlog_seg_name(name, id, false);
    int fd = openat(log->dir_fd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    raftlog_seg_push(log, id)->fd = fd;
    return 0;
}

int raftlog_io_map(struct tkv_raftlog *log, struct rl_seg *s, const uint8_t **p_out,
                   size_t *len_out)
{
    if (log->mem) {
        *p_out = s->mem->buf;
        *len_out = s->mem->size;
        return 0;
    }
    struct stat st;
    if (fstat(s->fd, &st) < 0)
        return -errno;
    *len_out = (size_t)st.st_size;
    if (st.st_size == 0) {
        *p_out = NULL;
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    *p_out = p;
    return 0;
}

void raftlog_io_unmap(struct tkv_raftlog *log, const uint8_t *p, size_t len)
{
    if (!log->mem && p != NULL)
        munmap((void *)(uintptr_t)p, len);
}

int raftlog_io_write_sync(struct tkv_raftlog *log, struct rl_seg *s, uint64_t off,
                          const void *buf, size_t len)
{
    fiu_return_on("raftlog/write_enospc", -ENOSPC);
    fiu_return_on("raftlog/write_eio", -EIO);
    if (log->mem) {
        tkv_assert(off + len <= s->mem->size);
        memcpy(s->mem->buf + off, buf, len);
        fiu_return_on("raftlog/fsync_eio", -EIO);
        return (int)len;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(s->fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        done += (size_t)w;
    }
    fiu_return_on("raftlog/fsync_eio", -EIO);
    /* The power-cut tests' negative control: the batch is acknowledged
     * without reaching the disk. */
    fiu_return_on("raftlog/skip_fsync", (int)len);
    if (fdatasync(s->fd) < 0)
        return -errno;
    return (int)len;
}

int raftlog_io_datasync(struct tkv_raftlog *log, struct rl_seg *s)
{
    if (log->mem)
        return 0;
    fiu_return_on("raftlog/skip_fsync", 0);
    return fdatasync(s->fd) < 0 ? -errno : 0;
}

int raftlog_io_read(struct tkv_raftlog *log, const struct rl_seg *s, uint64_t off, void *buf,
                    size_t len)
{
    if (log->mem) {
        if (off + len > s->mem->size)
            return TKV_ECORRUPT;
        memcpy(buf, s->mem->buf + off, len);
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(s->fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return TKV_ECORRUPT;
        done += (size_t)r;
    }
    return 0;
}

int raftlog_io_zero(struct tkv_raftlog *log, struct rl_seg *s, uint64_t off, size_t len)
{
    if (log->mem) {
        memset(s->mem->buf + off, 0, len);
        return 0;
    }
    static const uint8_t zeros[4096];
    size_t done = 0;
    while (done < len) {
        size_t k = TKV_MIN(len - done, sizeof(zeros));
        ssize_t w = pwrite(s->fd, zeros, k, (off_t)(off + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)w;
    }
    return fdatasync(s->fd) < 0 ? -errno : 0;
}

int raftlog_io_remove(struct tkv_raftlog *log, struct rl_seg *s)
{
    if (log->mem) {
        struct tkv_raftlog_memdisk *d = log->mem;
        for (size_t i = 0; i < d->n; i++) {
            if (d->segs[i].id == s->id) {
                tkv_free(d->segs[i].buf);
                d->used -= d->segs[i].size;
                memmove(&d->segs[i], &d->segs[i + 1], (d->n - i - 1) * sizeof(*d->segs));
                d->n--;
                break;
            }
        }
        /* Pointers into d->segs moved: re-resolve the log's segments. */
        for (size_t i = 0; i < log->n_segs; i++)
            if (log->segs[i].id != s->id)
                log->segs[i].mem = mem_find(d, log->segs[i].id);
        s->mem = NULL;
        return 0;
    }
    char name[NAME_LEN];
    raftlog_seg_name(name, s->id, false);
    if (unlinkat(log->dir_fd, name, 0) < 0 && errno != ENOENT)
        return -errno;
    close(s->fd);
    s->fd = -1;
    return 0;
}

void raftlog_io_close_seg(struct tkv_raftlog *log, struct rl_seg *s)
{
    (void)log;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}
