/* powercutfs: a FUSE passthrough filesystem that simulates a power cut.
 *
 * Contract (README.md in this folder has the full semantics and limits):
 *   powercutfs [--posix-dirs] BACKING MOUNTPOINT [-o fuse-option,...]
 * mounts BACKING on MOUNTPOINT and stays in the foreground. BACKING plays the
 * disk; this process's memory plays the page cache:
 *  - file data written through the mount is kept here, per inode, as dirty
 *    4 KiB pages plus a pending size; reads see it (page-cache semantics);
 *    it reaches BACKING only on fsync/fdatasync of that file (or a write on
 *    an O_SYNC/O_DSYNC descriptor);
 *  - namespace operations (create, mkdir, symlink, link, unlink, rmdir,
 *    rename) are applied to BACKING at once but journaled with their undo;
 *    they become durable in journal order when the file or directory they
 *    touch is fsynced (ext4-like: fsync of a file or directory also commits
 *    its own name; with --posix-dirs only fsync of the directory holding a
 *    name commits it);
 *  - SIGUSR1 is the power cut: the daemon stops serving, unmounts, drops
 *    every unsynced page and size change, undoes every uncommitted namespace
 *    operation (newest first), prints what it dropped and exits 0;
 *  - SIGTERM / SIGINT / fusermount3 -u is a clean unmount: everything is
 *    flushed to BACKING, as a real unmount would.
 * --persist-random PCT[:SEED]: a cut first writes each dirty page with PCT %
 * chance (the kernel may have written any of them back before the power
 * went), in no order; the rest as above.
 * kill -9 of the daemon is NOT a power cut (uncommitted namespace changes
 * stay in BACKING). Single-threaded event loop: no locking anywhere.
 * Test infrastructure only: never part of the product. */
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <search.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PC_PAGE 4096
#define TRASH ".powercutfs-trash"

/* ---- state ------------------------------------------------------------- */

struct pc_page {
    uint64_t no;
    uint8_t data[PC_PAGE];
};

/* Page-cache state of one backing inode; lives while it is open or dirty. */
struct pc_inode {
    ino_t ino;
    int fd;          /* backing file, O_RDWR when possible */
    int opens;       /* open handles */
    void *pages;     /* tsearch tree of struct pc_page by no */
    size_t n_pages;
    off_t size;      /* size readers see */
    off_t keep;      /* backing bytes still valid: the backing size, lowered
                      * by every truncation since the last sync (bytes at or
                      * past keep read as zeros unless a dirty page has them) */
    bool dirty;      /* pages or size differ from the backing file */
};

struct pc_handle {
    bool dir;
    bool root;       /* a directory handle of the mount's root */
    bool sync_writes; /* opened O_SYNC / O_DSYNC */
    DIR *d;
    struct pc_inode *in;
};

enum jkind { J_CREATE, J_UNLINK, J_RMDIR, J_RENAME, J_EXCHANGE };

/* One uncommitted namespace operation with what is needed to undo it. */
struct jop {
    enum jkind kind;
    bool isdir;      /* J_CREATE: created a directory */
    mode_t mode;     /* J_RMDIR: mode, owner of the removed directory */
    uid_t uid;
    gid_t gid;
    char *a, *b;     /* paths relative to the backing root */
    char trash[32];  /* entry displaced into the trash ("" if none) */
    bool trash_isdir;
    ino_t keys[4];   /* inodes it touches: the objects, then the parent directories */
    bool key_is_parent[4];
    int n_keys;
};

static int root_fd = -1, trash_fd = -1;
static void *inodes; /* tsearch tree of struct pc_inode by ino */
static size_t n_inodes;
static struct jop *journal;
static size_t j_n, j_cap;
static uint64_t trash_seq;
static bool posix_dirs;
static unsigned persist_pct; /* --persist-random: share of dirty pages a cut writes */
static uint64_t persist_seed;
static volatile sig_atomic_t cut_requested;
static struct fuse_session *the_session;

static struct {
    uint64_t fsyncs, fsyncdirs, synced_bytes, commits;
} stats;

/* ---- helpers ----------------------------------------------------------- */

static const char *rel(const char *path)
{
    return path[0] == '/' && path[1] ? path + 1 : ".";
}

static bool hidden(const char *path)
{
    static const char t[] = "/" TRASH;
    size_t n = sizeof(t) - 1;
    return strncmp(path, t, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static ino_t ino_of(const char *rpath)
{
    struct stat st;
    return fstatat(root_fd, rpath, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_ino : 0;
}

static ino_t parent_ino(const char *rpath)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", rpath);
    return ino_of(dirname(buf));
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) {
        fprintf(stderr, "powercutfs: out of memory\n");
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) {
        fprintf(stderr, "powercutfs: out of memory\n");
        abort();
    }
    return p;
}

/* ---- pages ------------------------------------------------------------- */

static int page_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct pc_page *)a)->no, y = ((const struct pc_page *)b)->no;
    return x < y ? -1 : x > y;
}

static struct pc_page *page_find(struct pc_inode *in, uint64_t no)
{
    struct pc_page key = {.no = no};
    void *r = tfind(&key, &in->pages, page_cmp);
    return r ? *(struct pc_page **)r : NULL;
}

/* Reads what the backing file holds at [off, off+n) as this inode sees it:
 * zeros at or past keep. */
static int lower_read(struct pc_inode *in, uint8_t *dst, size_t n, off_t off)
{
    size_t got = 0;
    if (off < in->keep) {
        size_t want = (size_t)(in->keep - off) < n ? (size_t)(in->keep - off) : n;
        while (got < want) {
            ssize_t r = pread(in->fd, dst + got, want - got, off + (off_t)got);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (r == 0)
                break;
            got += (size_t)r;
        }
    }
    memset(dst + got, 0, n - got);
    return 0;
}

static int page_get(struct pc_inode *in, uint64_t no, struct pc_page **out)
{
    struct pc_page *p = page_find(in, no);
    if (!p) {
        p = xcalloc(1, sizeof(*p));
        p->no = no;
        int rv = lower_read(in, p->data, PC_PAGE, (off_t)(no * PC_PAGE));
        if (rv) {
            free(p);
            return rv;
        }
        if (!tsearch(p, &in->pages, page_cmp)) {
            free(p);
            return -ENOMEM;
        }
        in->n_pages++;
    }
    *out = p;
    return 0;
}

/* twalk_r visitors: collect the leaves once each. */
struct page_list {
    struct pc_page **v;
    size_t n;
};

static void collect_page(const void *node, VISIT which, void *arg)
{
    if (which == postorder || which == leaf) {
        struct page_list *l = arg;
        l->v[l->n++] = *(struct pc_page *const *)node;
    }
}

static struct page_list pages_of(struct pc_inode *in)
{
    struct page_list l = {xcalloc(in->n_pages + 1, sizeof(*l.v)), 0};
    twalk_r(in->pages, collect_page, &l);
    return l;
}

static void drop_pages(struct pc_inode *in)
{
    tdestroy(in->pages, free);
    in->pages = NULL;
    in->n_pages = 0;
}

/* ---- inodes ------------------------------------------------------------ */

static int inode_cmp(const void *a, const void *b)
{
    ino_t x = ((const struct pc_inode *)a)->ino, y = ((const struct pc_inode *)b)->ino;
    return x < y ? -1 : x > y;
}

static struct pc_inode *inode_find(ino_t ino)
{
    struct pc_inode key = {.ino = ino};
    void *r = tfind(&key, &inodes, inode_cmp);
    return r ? *(struct pc_inode **)r : NULL;
}

/* Returns the inode of the open backing file fd, taking ownership of fd. */
static int inode_adopt(int fd, struct pc_inode **out)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rv = -errno;
        close(fd);
        return rv;
    }
    struct pc_inode *in = inode_find(st.st_ino);
    if (in) {
        close(fd);
    } else {
        in = xcalloc(1, sizeof(*in));
        in->ino = st.st_ino;
        in->fd = fd;
        in->size = in->keep = st.st_size;
        if (!tsearch(in, &inodes, inode_cmp)) {
            close(fd);
            free(in);
            return -ENOMEM;
        }
        n_inodes++;
    }
    *out = in;
    return 0;
}

static int inode_open(const char *rpath, struct pc_inode **out)
{
    int fd = openat(root_fd, rpath, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && (errno == EACCES || errno == EROFS || errno == ETXTBSY))
        fd = openat(root_fd, rpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    return inode_adopt(fd, out);
}

static void inode_free(struct pc_inode *in)
{
    tdelete(in, &inodes, inode_cmp);
    n_inodes--;
    drop_pages(in);
    close(in->fd);
    free(in);
}

/* Forgets an inode nobody can reach again: closed and clean, or closed and
 * without any name left (an unlink that was committed). */
static void inode_maybe_free(struct pc_inode *in)
{
    if (in->opens > 0)
        return;
    struct stat st;
    if (!in->dirty || (fstat(in->fd, &st) == 0 && st.st_nlink == 0))
        inode_free(in);
}

static int inode_read(struct pc_inode *in, char *buf, size_t size, off_t off)
{
    if (off >= in->size)
        return 0;
    if ((off_t)size > in->size - off)
        size = (size_t)(in->size - off);
    size_t done = 0;
    while (done < size) {
        off_t o = off + (off_t)done;
        uint64_t no = (uint64_t)o / PC_PAGE;
        size_t po = (size_t)((uint64_t)o % PC_PAGE);
        size_t n = PC_PAGE - po < size - done ? PC_PAGE - po : size - done;
        struct pc_page *p = page_find(in, no);
        if (p) {
            memcpy(buf + done, p->data + po, n);
        } else {
            int rv = lower_read(in, (uint8_t *)buf + done, n, o);
            if (rv)
                return rv;
        }
        done += n;
    }
    return (int)size;
}

static int inode_write(struct pc_inode *in, const char *buf, size_t size, off_t off)
{
    size_t done = 0;
    while (done < size) {
        off_t o = off + (off_t)done;
        uint64_t no = (uint64_t)o / PC_PAGE;
        size_t po = (size_t)((uint64_t)o % PC_PAGE);
        size_t n = PC_PAGE - po < size - done ? PC_PAGE - po : size - done;
        struct pc_page *p;
        int rv = page_get(in, no, &p);
        if (rv)
            return rv;
        memcpy(p->data + po, buf + done, n);
        done += n;
    }
    if (off + (off_t)size > in->size)
        in->size = off + (off_t)size;
    in->dirty = true;
    return (int)size;
}

static void inode_truncate(struct pc_inode *in, off_t size)
{
    if (size < in->size) {
        uint64_t first_gone = ((uint64_t)size + PC_PAGE - 1) / PC_PAGE;
        struct page_list l = pages_of(in);
        for (size_t i = 0; i < l.n; i++) {
            struct pc_page *p = l.v[i];
            if (p->no >= first_gone) {
                tdelete(p, &in->pages, page_cmp);
                in->n_pages--;
                free(p);
            } else if (p->no == (uint64_t)size / PC_PAGE) {
                size_t keep = (size_t)((uint64_t)size % PC_PAGE);
                memset(p->data + keep, 0, PC_PAGE - keep);
            }
        }
        free(l.v);
        if (size < in->keep)
            in->keep = size;
    }
    in->size = size;
    in->dirty = true;
}

/* fsync: the dirty state becomes the backing file's content. */
static int inode_sync(struct pc_inode *in)
{
    if (!in->dirty)
        return 0;
    struct stat st;
    if (fstat(in->fd, &st) < 0)
        return -errno;
    if (in->keep < st.st_size && ftruncate(in->fd, in->keep) < 0)
        return -errno;
    struct page_list l = pages_of(in);
    int rv = 0;
    for (size_t i = 0; i < l.n && rv == 0; i++) {
        struct pc_page *p = l.v[i];
        off_t o = (off_t)(p->no * PC_PAGE);
        if (o >= in->size)
            continue;
        size_t n = in->size - o < PC_PAGE ? (size_t)(in->size - o) : PC_PAGE;
        size_t done = 0;
        while (done < n) {
            ssize_t w = pwrite(in->fd, p->data + done, n - done, o + (off_t)done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rv = w < 0 ? -errno : -EIO;
                break;
            }
            done += (size_t)w;
        }
        stats.synced_bytes += done;
    }
    free(l.v);
    if (rv)
        return rv;
    if (ftruncate(in->fd, in->size) < 0)
        return -errno;
    drop_pages(in);
    in->keep = in->size;
    in->dirty = false;
    return 0;
}

/* ---- namespace journal ------------------------------------------------- */

static struct jop *journal_add(enum jkind kind, const char *a, const char *b)
{
    if (j_n == j_cap) {
        j_cap = j_cap ? 2 * j_cap : 64;
        journal = realloc(journal, j_cap * sizeof(*journal));
        if (!journal) {
            fprintf(stderr, "powercutfs: out of memory\n");
            abort();
        }
    }
    struct jop *op = &journal[j_n++];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    op->a = xstrdup(a);
    op->b = b ? xstrdup(b) : NULL;
    return op;
}

static void jop_key(struct jop *op, ino_t ino, bool parent)
{
    if (ino && op->n_keys < 4) {
        op->key_is_parent[op->n_keys] = parent;
        op->keys[op->n_keys++] = ino;
    }
}

static void jop_free(struct jop *op)
{
    free(op->a);
    free(op->b);
}

/* Moves rpath into the trash; the name goes into trash_out. */
static int to_trash(const char *rpath, char trash_out[32])
{
    snprintf(trash_out, 32, "%" PRIu64, ++trash_seq);
    return renameat(root_fd, rpath, trash_fd, trash_out) < 0 ? -errno : 0;
}

/* The first n journal entries become durable. */
static void journal_commit(size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct jop *op = &journal[i];
        if (op->trash[0] &&
            unlinkat(trash_fd, op->trash, op->trash_isdir ? AT_REMOVEDIR : 0) < 0)
            fprintf(stderr, "powercutfs: cannot empty trash entry %s: %s\n", op->trash,
                    strerror(errno));
        jop_free(op);
        stats.commits++;
    }
    memmove(journal, journal + n, (j_n - n) * sizeof(*journal));
    j_n -= n;
}

/* Commits the journal up to the newest entry that touches ino (as the
 * parent directory of a name it changed, when as_parent_only). */
static void journal_commit_for(ino_t ino, bool as_parent_only)
{
    for (size_t i = j_n; i > 0; i--) {
        struct jop *op = &journal[i - 1];
        for (int k = 0; k < op->n_keys; k++) {
            if (op->keys[k] == ino && (!as_parent_only || op->key_is_parent[k])) {
                journal_commit(i);
                return;
            }
        }
    }
}

static void undo_warn(const char *what, const char *path)
{
    fprintf(stderr, "powercutfs: cannot undo %s of %s: %s\n", what, path, strerror(errno));
}

static size_t undone[5];

/* The power cut: newest first, so every op sees the namespace it left. */
static void journal_undo_all(void)
{
    for (size_t i = j_n; i > 0; i--) {
        struct jop *op = &journal[i - 1];
        switch (op->kind) {
        case J_CREATE:
            if (unlinkat(root_fd, op->a, op->isdir ? AT_REMOVEDIR : 0) < 0)
                undo_warn("create", op->a);
            break;
        case J_UNLINK:
            if (renameat(trash_fd, op->trash, root_fd, op->a) < 0)
                undo_warn("unlink", op->a);
            break;
        case J_RMDIR:
            if (mkdirat(root_fd, op->a, op->mode & 07777) < 0 ||
                fchownat(root_fd, op->a, op->uid, op->gid, AT_SYMLINK_NOFOLLOW) < 0)
                undo_warn("rmdir", op->a);
            break;
        case J_RENAME:
            if (renameat(root_fd, op->b, root_fd, op->a) < 0)
                undo_warn("rename", op->b);
            else if (op->trash[0] && renameat(trash_fd, op->trash, root_fd, op->b) < 0)
                undo_warn("rename (replaced target)", op->b);
            break;
        case J_EXCHANGE:
            if (renameat2(root_fd, op->a, root_fd, op->b, RENAME_EXCHANGE) < 0)
                undo_warn("exchange", op->a);
            break;
        }
        undone[op->kind]++;
        jop_free(op);
    }
    j_n = 0;
}

/* ---- FUSE operations --------------------------------------------------- */

static struct pc_handle *H(struct fuse_file_info *fi)
{
    return fi ? (struct pc_handle *)(uintptr_t)fi->fh : NULL;
}

static void fix_size(struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return;
    struct pc_inode *in = inode_find(st->st_ino);
    if (in) {
        st->st_size = in->size;
        blkcnt_t b = (in->size + 511) / 512;
        if (st->st_blocks < b)
            st->st_blocks = b;
    }
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct pc_handle *h = H(fi);
    if (h && h->in) {
        if (fstat(h->in->fd, st) < 0)
            return -errno;
    } else if (h && h->d) {
        if (fstat(dirfd(h->d), st) < 0)
            return -errno;
    } else {
        if (!path || hidden(path))
            return -ENOENT;
        if (fstatat(root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
    }
    fix_size(st);
    return 0;
}

static int op_access(const char *path, int mask)
{
    if (hidden(path))
        return -ENOENT;
    return faccessat(root_fd, rel(path), mask, 0) < 0 ? -errno : 0;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    if (hidden(path))
        return -ENOENT;
    ssize_t n = readlinkat(root_fd, rel(path), buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static void journal_create(const char *rpath, bool isdir)
{
    struct jop *op = journal_add(J_CREATE, rpath, NULL);
    op->isdir = isdir;
    jop_key(op, ino_of(rpath), false);
    jop_key(op, parent_ino(rpath), true);
}

static int op_mknod(const char *path, mode_t mode, dev_t rdev)
{
    if (hidden(path))
        return -EPERM;
    if (mknodat(root_fd, rel(path), mode, rdev) < 0)
        return -errno;
    journal_create(rel(path), false);
    return 0;
}

static int op_mkdir(const char *path, mode_t mode)
{
    if (hidden(path))
        return -EPERM;
    if (mkdirat(root_fd, rel(path), mode) < 0)
        return -errno;
    journal_create(rel(path), true);
    return 0;
}

static int op_symlink(const char *target, const char *path)
{
    if (hidden(path))
        return -EPERM;
    if (symlinkat(target, root_fd, rel(path)) < 0)
        return -errno;
    journal_create(rel(path), false);
    return 0;
}

static int op_link(const char *from, const char *to)
{
    if (hidden(from) || hidden(to))
        return -EPERM;
    if (linkat(root_fd, rel(from), root_fd, rel(to), 0) < 0)
        return -errno;
    journal_create(rel(to), false);
    return 0;
}

static int op_unlink(const char *path)
{
    if (hidden(path))
        return -ENOENT;
    const char *r = rel(path);
    struct stat st;
    if (fstatat(root_fd, r, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    ino_t parent = parent_ino(r);
    char t[32];
    int rv = to_trash(r, t);
    if (rv)
        return rv;
    struct jop *op = journal_add(J_UNLINK, r, NULL);
    memcpy(op->trash, t, sizeof(t));
    jop_key(op, st.st_ino, false);
    jop_key(op, parent, true);
    return 0;
}

static int op_rmdir(const char *path)
{
    if (hidden(path))
        return -ENOENT;
    const char *r = rel(path);
    struct stat st;
    if (fstatat(root_fd, r, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    ino_t parent = parent_ino(r);
    if (unlinkat(root_fd, r, AT_REMOVEDIR) < 0)
        return -errno;
    struct jop *op = journal_add(J_RMDIR, r, NULL);
    op->mode = st.st_mode;
    op->uid = st.st_uid;
    op->gid = st.st_gid;
    jop_key(op, st.st_ino, false);
    jop_key(op, parent, true);
    return 0;
}

static bool dir_is_empty(const char *rpath)
{
    int fd = openat(root_fd, rpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return false;
    }
    bool empty = true;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    closedir(d);
    return empty;
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
    if (hidden(from) || hidden(to))
        return -EPERM;
    const char *a = rel(from), *b = rel(to);
    struct stat sa, sb;
    if (fstatat(root_fd, a, &sa, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    bool target = fstatat(root_fd, b, &sb, AT_SYMLINK_NOFOLLOW) == 0;
    if (!target && errno != ENOENT)
        return -errno;
    ino_t pa = parent_ino(a), pb = parent_ino(b);
    if (flags & RENAME_EXCHANGE) {
        if (renameat2(root_fd, a, root_fd, b, RENAME_EXCHANGE) < 0)
            return -errno;
        struct jop *op = journal_add(J_EXCHANGE, a, b);
        jop_key(op, sa.st_ino, false);
        jop_key(op, sb.st_ino, false);
        jop_key(op, pa, true);
        jop_key(op, pb, true);
        return 0;
    }
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL;
    char t[32] = "";
    if (target) {
        if (flags & RENAME_NOREPLACE)
            return -EEXIST;
        if (sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev)
            return 0; /* rename(2): two links to one file: nothing happens */
        if (S_ISDIR(sb.st_mode) && !S_ISDIR(sa.st_mode))
            return -EISDIR;
        if (!S_ISDIR(sb.st_mode) && S_ISDIR(sa.st_mode))
            return -ENOTDIR;
        if (S_ISDIR(sb.st_mode) && !dir_is_empty(b))
            return -ENOTEMPTY;
        int rv = to_trash(b, t);
        if (rv)
            return rv;
    }
    if (renameat(root_fd, a, root_fd, b) < 0) {
        int rv = -errno;
        if (t[0] && renameat(trash_fd, t, root_fd, b) < 0)
            undo_warn("displacement", b);
        return rv;
    }
    struct jop *op = journal_add(J_RENAME, a, b);
    memcpy(op->trash, t, sizeof(t));
    op->trash_isdir = target && S_ISDIR(sb.st_mode);
    jop_key(op, sa.st_ino, false);
    jop_key(op, pa, true);
    jop_key(op, pb, true);
    if (target)
        jop_key(op, sb.st_ino, false);
    return 0;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct pc_handle *h = H(fi);
    if (h && h->in)
        return fchmod(h->in->fd, mode) < 0 ? -errno : 0;
    if (!path || hidden(path))
        return -ENOENT;
    return fchmodat(root_fd, rel(path), mode, 0) < 0 ? -errno : 0;
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    struct pc_handle *h = H(fi);
    if (h && h->in)
        return fchown(h->in->fd, uid, gid) < 0 ? -errno : 0;
    if (!path || hidden(path))
        return -ENOENT;
    return fchownat(root_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    struct pc_handle *h = H(fi);
    if (h && h->in)
        return futimens(h->in->fd, tv) < 0 ? -errno : 0;
    if (!path || hidden(path))
        return -ENOENT;
    return utimensat(root_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (size < 0)
        return -EINVAL;
    struct pc_handle *h = H(fi);
    struct pc_inode *in;
    if (h && h->in) {
        in = h->in;
    } else {
        if (!path || hidden(path))
            return -ENOENT;
        int rv = inode_open(rel(path), &in);
        if (rv)
            return rv;
    }
    inode_truncate(in, size);
    return 0;
}

static int handle_new(struct pc_inode *in, struct fuse_file_info *fi)
{
    struct pc_handle *h = xcalloc(1, sizeof(*h));
    h->in = in;
    h->sync_writes = (fi->flags & O_DSYNC) != 0;
    in->opens++;
    if (fi->flags & O_TRUNC)
        inode_truncate(in, 0);
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = 0;
    fi->direct_io = 0;
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    if (hidden(path))
        return -ENOENT;
    struct pc_inode *in;
    int rv = inode_open(rel(path), &in);
    if (rv)
        return rv;
    return handle_new(in, fi);
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    if (hidden(path))
        return -EPERM;
    const char *r = rel(path);
    int fd = openat(root_fd, r, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
    bool created = fd >= 0;
    if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL))
        fd = openat(root_fd, r, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct pc_inode *in;
    int rv = inode_adopt(fd, &in);
    if (rv)
        return rv;
    if (created)
        journal_create(r, false);
    return handle_new(in, fi);
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    return inode_read(H(fi)->in, buf, size, off);
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    struct pc_handle *h = H(fi);
    int rv = inode_write(h->in, buf, size, off);
    if (rv >= 0 && h->sync_writes) {
        int s = inode_sync(h->in);
        if (s)
            return s;
        if (!posix_dirs)
            journal_commit_for(h->in->ino, false);
    }
    return rv;
}

static int op_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return fstatvfs(root_fd, st) < 0 ? -errno : 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    struct pc_handle *h = H(fi);
    h->in->opens--;
    inode_maybe_free(h->in);
    free(h);
    return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    (void)datasync; /* fdatasync of a file whose size or name changed commits those too */
    struct pc_handle *h = H(fi);
    stats.fsyncs++;
    int rv = inode_sync(h->in);
    if (rv)
        return rv;
    if (!posix_dirs)
        journal_commit_for(h->in->ino, false);
    return 0;
}

static int op_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi)
{
    (void)path;
    if (mode != 0)
        return -EOPNOTSUPP;
    if (off < 0 || len <= 0)
        return -EINVAL;
    struct pc_inode *in = H(fi)->in;
    if (off + len > in->size) {
        in->size = off + len;
        in->dirty = true;
    }
    return 0;
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    if (hidden(path))
        return -ENOENT;
    int fd = openat(root_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int rv = -errno;
        close(fd);
        return rv;
    }
    struct pc_handle *h = xcalloc(1, sizeof(*h));
    h->dir = true;
    h->d = d;
    h->root = strcmp(path, "/") == 0;
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path;
    (void)off;
    (void)flags;
    struct pc_handle *h = H(fi);
    rewinddir(h->d);
    struct dirent *e;
    errno = 0;
    while ((e = readdir(h->d)) != NULL) {
        if (h->root && strcmp(e->d_name, TRASH) == 0)
            continue;
        struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type)};
        if (filler(buf, e->d_name, &st, 0, 0))
            break;
    }
    return errno ? -errno : 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    struct pc_handle *h = H(fi);
    closedir(h->d);
    free(h);
    return 0;
}

static int op_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    (void)datasync;
    struct stat st;
    if (fstat(dirfd(H(fi)->d), &st) < 0)
        return -errno;
    stats.fsyncdirs++;
    /* ext4-like: also the directory's own creation or rename; POSIX: only
     * the entries it holds (its own name needs an fsync of its parent). */
    journal_commit_for(st.st_ino, posix_dirs);
    return 0;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* Write-through to this process (no kernel writeback cache), no cached
     * attributes or names: every read of size or data asks us. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    cfg->use_ino = 1;
    cfg->hard_remove = 1;
    cfg->nullpath_ok = 1;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->kernel_cache = 0;
    return NULL;
}

static const struct fuse_operations pc_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .access = op_access,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .symlink = op_symlink,
    .link = op_link,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .chmod = op_chmod,
    .chown = op_chown,
    .utimens = op_utimens,
    .truncate = op_truncate,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .statfs = op_statfs,
    .release = op_release,
    .fsync = op_fsync,
    .fallocate = op_fallocate,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
};

/* ---- power cut / clean unmount ---------------------------------------- */

struct inode_list {
    struct pc_inode **v;
    size_t n;
};

static void collect_inode(const void *node, VISIT which, void *arg)
{
    if (which == postorder || which == leaf) {
        struct inode_list *l = arg;
        l->v[l->n++] = *(struct pc_inode *const *)node;
    }
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* --persist-random: the kernel may have written back any dirty page before
 * the power went; each one reaches the disk with probability persist_pct %
 * (content only: pending size changes are lost, the file grows to cover a
 * page written past its backing end). Returns the pages written. */
static uint64_t persist_some(struct pc_inode *in, uint64_t *rng)
{
    uint64_t n = 0;
    struct page_list l = pages_of(in);
    for (size_t i = 0; i < l.n; i++) {
        struct pc_page *p = l.v[i];
        off_t o = (off_t)(p->no * PC_PAGE);
        if (rng_next(rng) % 100 >= persist_pct || o >= in->size)
            continue;
        size_t len = in->size - o < PC_PAGE ? (size_t)(in->size - o) : PC_PAGE;
        if (pwrite(in->fd, p->data, len, o) == (ssize_t)len)
            n++;
    }
    free(l.v);
    return n;
}

static void power_cut(void)
{
    struct inode_list l = {xcalloc(n_inodes + 1, sizeof(*l.v)), 0};
    twalk_r(inodes, collect_inode, &l);
    uint64_t files = 0, pages = 0, persisted = 0, rng = persist_seed | 1;
    for (size_t i = 0; i < l.n; i++) {
        if (l.v[i]->dirty) {
            files++;
            pages += l.v[i]->n_pages;
            if (persist_pct)
                persisted += persist_some(l.v[i], &rng);
        }
        inode_free(l.v[i]);
    }
    free(l.v);
    size_t pending = j_n;
    journal_undo_all();
    fprintf(stderr,
            "powercutfs: power cut: dropped %" PRIu64 " dirty pages in %" PRIu64
            " files with unsynced data; undid %zu namespace operations (%zu creates, %zu unlinks, "
            "%zu rmdirs, %zu renames, %zu exchanges); %" PRIu64 " fsyncs and %" PRIu64
            " directory fsyncs had been served\n",
            pages, files, pending, undone[J_CREATE], undone[J_UNLINK], undone[J_RMDIR],
            undone[J_RENAME], undone[J_EXCHANGE], stats.fsyncs, stats.fsyncdirs);
    if (persist_pct)
        fprintf(stderr,
                "powercutfs: power cut: --persist-random %u:%" PRIu64 " wrote %" PRIu64
                " of those dirty pages to the disk first\n",
                persist_pct, persist_seed, persisted);
}

static int clean_unmount(void)
{
    struct inode_list l = {xcalloc(n_inodes + 1, sizeof(*l.v)), 0};
    twalk_r(inodes, collect_inode, &l);
    int bad = 0;
    for (size_t i = 0; i < l.n; i++) {
        int rv = inode_sync(l.v[i]);
        if (rv) {
            fprintf(stderr, "powercutfs: flush at unmount failed: %s\n", strerror(-rv));
            bad = 1;
        }
        inode_free(l.v[i]);
    }
    free(l.v);
    journal_commit(j_n);
    fprintf(stderr, "powercutfs: clean unmount: everything flushed\n");
    return bad;
}

static void on_cut_signal(int sig)
{
    (void)sig;
    cut_requested = 1;
    if (the_session)
        fuse_session_exit(the_session);
}

static int rm_entry(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (type == FTW_DP ? rmdir(p) : unlink(p)) < 0 ? -1 : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: powercutfs [--posix-dirs] [--persist-random PCT[:SEED]] BACKING "
                    "MOUNTPOINT [-o fuse-options]\n"
                    "  SIGUSR1: power cut (drop unsynced data, undo uncommitted names, exit)\n"
                    "  --persist-random: a cut first writes each dirty page with PCT %% chance\n"
                    "  SIGTERM/SIGINT/unmount: clean unmount (flush everything)\n");
}

int main(int argc, char **argv)
{
    const char *backing = NULL, *mnt = NULL;
    char *fargv[16];
    int fargc = 0;
    fargv[fargc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--posix-dirs") == 0) {
            posix_dirs = true;
        } else if (strcmp(argv[i], "--persist-random") == 0 && i + 1 < argc) {
            char *end;
            unsigned long pct = strtoul(argv[++i], &end, 10);
            persist_seed = *end == ':' ? strtoull(end + 1, &end, 10)
                                       : (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
            if (*end != '\0' || pct > 100) {
                usage();
                return 2;
            }
            persist_pct = (unsigned)pct;
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc && fargc < 14) {
            fargv[fargc++] = argv[i++];
            fargv[fargc++] = argv[i];
        } else if (argv[i][0] == '-') {
            usage();
            return 2;
        } else if (!backing) {
            backing = argv[i];
        } else if (!mnt) {
            mnt = argv[i];
        } else {
            usage();
            return 2;
        }
    }
    if (!backing || !mnt) {
        usage();
        return 2;
    }
    fargv[fargc] = NULL;
    root_fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        fprintf(stderr, "powercutfs: cannot open the backing directory %s: %s\n", backing,
                strerror(errno));
        return 1;
    }
    /* The trash holds names displaced by uncommitted unlinks and renames;
     * left-overs come from a daemon that was killed: they are garbage. */
    char tpath[PATH_MAX];
    snprintf(tpath, sizeof(tpath), "%s/%s", backing, TRASH);
    (void)nftw(tpath, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdir(tpath, 0700) < 0 ||
        (trash_fd = open(tpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "powercutfs: cannot create %s: %s\n", tpath, strerror(errno));
        return 1;
    }

    struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);
    struct fuse *f = fuse_new(&args, &pc_ops, sizeof(pc_ops), NULL);
    if (!f) {
        fuse_opt_free_args(&args);
        return 1;
    }
    if (fuse_mount(f, mnt) != 0) {
        fprintf(stderr, "powercutfs: cannot mount on %s\n", mnt);
        fuse_destroy(f);
        fuse_opt_free_args(&args);
        return 1;
    }
    the_session = fuse_get_session(f);
    if (fuse_set_signal_handlers(the_session) != 0)
        return 1;
    struct sigaction sa = {.sa_handler = on_cut_signal}; /* no SA_RESTART: interrupts the read */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    fprintf(stderr, "powercutfs: %s mounted on %s (%s directory semantics)\n", backing, mnt,
            posix_dirs ? "posix" : "ext4-like");
    /* Returns the number of the signal that ended it, or 0 after an unmount. */
    (void)fuse_loop(f);
    fuse_remove_signal_handlers(the_session);
    fuse_unmount(f);
    int rv = 0;
    if (cut_requested)
        power_cut();
    else if (clean_unmount())
        rv = 1;
    fuse_destroy(f);
    fuse_opt_free_args(&args);
    close(trash_fd);
    (void)unlinkat(root_fd, TRASH, AT_REMOVEDIR);
    close(root_fd);
    free(journal);
    return rv;
}
