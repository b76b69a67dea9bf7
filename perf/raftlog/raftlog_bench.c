/* tkv-raftlog-bench: R regions appending 128-byte entries from one core,
 * each region with one append outstanding (closed loop). Measures entries/s,
 * syncs/s and append-to-durable latency (p50/p99) of the raft log (io_uring,
 * group commit per loop turn) against pwrite+fdatasync per entry and a
 * WiredTiger table whose log is synced per commit, plus the raw fdatasync
 * rate of the disk. See README.md.
 *   tkv-raftlog-bench [--dir D] [--seconds S] [--regions 1,100,10000]
 *                     [--only raw|raftlog|pwrite|wt|fill] [--reps N]
 * --only fill: appends into zero-filled (prewritten) against fallocated
 * (unwritten-extent) space, raw and through the raft log, with the ratio. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wiredtiger.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raftlog.h"
#include "tkv/reactor.h"

#define ENTRY 128

static struct {
    const char *dir;
    double seconds;
    int regions[8];
    int n_regions;
    const char *only;
    int reps;
} O = {"/tmp", 2.0, {1, 100, 10000}, 3, NULL, 3};

static uint8_t payload[ENTRY];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Latency samples (ns); sorted at the end for percentiles. */
struct lat {
    uint64_t *v;
    size_t n, cap;
};

static void lat_add(struct lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        l->v = tkv_xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double lat_pct(struct lat *l, double p)
{
    if (l->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(l->n - 1));
    return (double)l->v[i] / 1e3; /* us */
}

struct result {
    double entries_s, syncs_s, p50_us, p99_us;
    double bytes_s; /* raftlog: batch bytes written per second */
};

static void finish(struct lat *l, uint64_t entries, uint64_t syncs, uint64_t ns,
                   struct result *r)
{
    qsort(l->v, l->n, sizeof(*l->v), cmp_u64);
    r->entries_s = (double)entries * 1e9 / (double)ns;
    r->syncs_s = (double)syncs * 1e9 / (double)ns;
    r->p50_us = lat_pct(l, 0.50);
    r->p99_us = lat_pct(l, 0.99);
    tkv_free(l->v);
    memset(l, 0, sizeof(*l));
}

static void rmrf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

static void mkpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/tkv-raftlog-bench-%d-%s", O.dir, (int)getpid(), name);
    rmrf(buf);
    if (mkdir(buf, 0755) != 0) {
        fprintf(stderr, "mkdir %s: %s\n", buf, strerror(errno));
        exit(1);
    }
}

/* ---- raw fdatasync ----
 * new_blocks: 4 KiB pwrite at increasing offsets of a fallocate'd file (each
 * sync also commits the extent conversion: a journal commit);
 * overwrite: 128 bytes rewritten in a block that already holds data (a pure
 * data flush: the disk's best case). */

static double bench_raw(bool overwrite)
{
    char dir[512], file[600];
    mkpath(dir, sizeof(dir), "raw");
    snprintf(file, sizeof(file), "%s/f", dir);
    int fd = open(file, O_CREAT | O_RDWR, 0644);
    if (fd < 0 || fallocate(fd, 0, 0, 64 << 20) != 0 || fsync(fd) != 0) {
        perror("raw: prepare");
        exit(1);
    }
    static uint8_t buf[4096];
    size_t len = overwrite ? ENTRY : sizeof(buf);
    if (overwrite && (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) || fsync(fd))) {
        perror("raw: prepare");
        exit(1);
    }
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(O.seconds * 1e9), n = 0, off = 0;
    while (now_ns() < end) {
        if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len || fdatasync(fd)) {
            perror("raw");
            exit(1);
        }
        if (!overwrite)
            off = (off + sizeof(buf)) % (64 << 20);
        n++;
    }
    double rate = (double)n * 1e9 / (double)(now_ns() - t0);
    close(fd);
    rmrf(dir);
    return rate;
}

/* ---- baseline 1: pwrite + fdatasync per entry, one shared log file,
 * preallocated like the raft log's segments (same extent behaviour) ---- */

static void bench_pwrite(int regions, struct result *res)
{
    char dir[512], file[600];
    mkpath(dir, sizeof(dir), "pwrite");
    snprintf(file, sizeof(file), "%s/log", dir);
    int fd = open(file, O_CREAT | O_RDWR, 0644);
    uint64_t fsize = 256ull << 20, off = 0;
    if (fd < 0 || fallocate(fd, 0, 0, (off_t)fsize) != 0 || fsync(fd) != 0) {
        perror("pwrite: prepare");
        exit(1);
    }
    /* Closed loop, one core: region k's next append is issued when its
     * previous one is durable; requests are served in order. */
    uint64_t *issued = tkv_xcalloc((size_t)regions, sizeof(uint64_t));
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(O.seconds * 1e9), n = 0;
    for (int k = 0; k < regions; k++)
        issued[k] = t0;
    struct lat l = {0};
    uint8_t rec[ENTRY + 24];
    memcpy(rec + 24, payload, ENTRY);
    for (int k = 0;; k = (k + 1) % regions) {
        uint64_t t = now_ns();
        if (t >= end)
            break;
        uint64_t hdr[3] = {(uint64_t)k, n, ENTRY};
        memcpy(rec, hdr, sizeof(hdr));
        if (pwrite(fd, rec, sizeof(rec), (off_t)off) != (ssize_t)sizeof(rec) ||
            fdatasync(fd) != 0) {
            perror("pwrite");
            exit(1);
        }
        off = (off + sizeof(rec)) % (fsize - sizeof(rec));
        uint64_t done = now_ns();
        lat_add(&l, done - issued[k]);
        issued[k] = done;
        n++;
    }
    finish(&l, n, n, now_ns() - t0, res);
    tkv_free(issued);
    close(fd);
    rmrf(dir);
}

/* ---- baseline 2: WiredTiger, log synced per commit, one entry per commit ---- */

static void bench_wt(int regions, struct result *res)
{
    char dir[512];
    mkpath(dir, sizeof(dir), "wt");
    WT_CONNECTION *conn;
    WT_SESSION *s;
    WT_CURSOR *c;
    int ret = wiredtiger_open(dir, NULL,
                              "create,cache_size=256MB,log=(enabled=true,file_max=64MB),"
                              "transaction_sync=(enabled=true,method=fsync),"
                              "statistics=(none)",
                              &conn);
    if (ret != 0) {
        fprintf(stderr, "wiredtiger_open: %s\n", wiredtiger_strerror(ret));
        exit(1);
    }
    conn->open_session(conn, NULL, NULL, &s);
    s->create(s, "table:raftlog", "key_format=QQ,value_format=u");
    s->open_cursor(s, "table:raftlog", NULL, NULL, &c);
    uint64_t *issued = tkv_xcalloc((size_t)regions, sizeof(uint64_t));
    uint64_t *next = tkv_xcalloc((size_t)regions, sizeof(uint64_t));
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(O.seconds * 1e9), n = 0;
    for (int k = 0; k < regions; k++)
        issued[k] = t0;
    struct lat l = {0};
    WT_ITEM v = {.data = payload, .size = ENTRY};
    for (int k = 0;; k = (k + 1) % regions) {
        if (now_ns() >= end)
            break;
        s->begin_transaction(s, NULL);
        c->set_key(c, (uint64_t)k + 1, ++next[k]);
        c->set_value(c, &v);
        if ((ret = c->insert(c)) != 0 || (ret = s->commit_transaction(s, "sync=on")) != 0) {
            fprintf(stderr, "wt: %s\n", wiredtiger_strerror(ret));
            exit(1);
        }
        uint64_t done = now_ns();
        lat_add(&l, done - issued[k]);
        issued[k] = done;
        n++;
    }
    finish(&l, n, n, now_ns() - t0, res);
    tkv_free(issued);
    tkv_free(next);
    conn->close(conn, NULL);
    rmrf(dir);
}

/* ---- tinykv raft log on one io_uring core ---- */

struct breg {
    tkv_region_id id;
    tkv_index next;
    uint64_t issued;
};

static struct {
    struct tkv_raftlog *log;
    struct breg *regs;
    int n;
    uint64_t t0, end;
    uint64_t entries;
    int outstanding;
    int err;
    struct lat lat;
    struct tkv_raftlog_stats st;
    const char *dir;
    bool skip_fill; /* tkv_raftlog_config.skip_zero_fill */
    uint64_t open_ns;  /* tkv_raftlog_open: segment 1 created (and filled) */
    uint64_t spare_ns; /* from open until the spare segment was prepared */
    uint64_t t_open;
    struct tkv_timer idle_timer;
    atomic_int finished;
} B;

static void b_append(struct breg *g);

static void b_done(void *arg, int rv)
{
    struct breg *g = arg;
    uint64_t t = now_ns();
    B.outstanding--;
    if (rv != 0) {
        B.err = rv;
    } else {
        lat_add(&B.lat, t - g->issued);
        B.entries++;
        if (t < B.end) {
            g->issued = t;
            b_append(g);
        }
    }
    if (B.outstanding == 0) {
        tkv_raftlog_stats(B.log, &B.st);
        atomic_store(&B.finished, 1);
    }
}

static void b_append(struct breg *g)
{
    struct tkv_raftlog_entry e = {.index = g->next, .term = 1,
                                  .data = TKV_SLICE(payload, ENTRY)};
    int rv = tkv_raftlog_append(B.log, g->id, &e, 1, NULL, b_done, g);
    if (rv != 0) {
        B.err = rv;
        return;
    }
    g->next++;
    B.outstanding++;
}

static void b_start(void *arg)
{
    (void)arg;
    B.t0 = now_ns();
    B.end = B.t0 + (uint64_t)(O.seconds * 1e9);
    for (int k = 0; k < B.n; k++) {
        B.regs[k].issued = B.t0;
        b_append(&B.regs[k]);
    }
}

/* The timed run starts once the spare segment is prepared (its zero fill
 * would otherwise compete with the first second of appends): steady state,
 * where a spare is filled once per segment_size of appends. */
static void b_wait_idle(struct tkv_timer *t)
{
    if (!tkv_raftlog_idle(B.log)) {
        tkv_timer_start(tkv_reactor_self(), t, 1000 * 1000);
        return;
    }
    B.spare_ns = now_ns() - B.t_open;
    b_start(NULL);
}

static int b_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    struct tkv_raftlog_config cfg = {.dir = B.dir, .reactor = r, .skip_zero_fill = B.skip_fill};
    B.t_open = now_ns();
    int rv = tkv_raftlog_open(&cfg, &B.log, NULL);
    if (rv != 0)
        return rv;
    B.open_ns = now_ns() - B.t_open;
    tkv_timer_init(&B.idle_timer, b_wait_idle, NULL);
    tkv_timer_start(r, &B.idle_timer, 0);
    return 0;
}

static void b_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    tkv_raftlog_close(B.log);
}

static void bench_raftlog(int regions, bool skip_fill, struct result *res)
{
    char dir[512];
    mkpath(dir, sizeof(dir), "raftlog");
    memset(&B, 0, sizeof(B));
    B.dir = dir;
    B.skip_fill = skip_fill;
    B.n = regions;
    B.regs = tkv_xcalloc((size_t)regions, sizeof(*B.regs));
    for (int k = 0; k < regions; k++)
        B.regs[k] = (struct breg){.id = (tkv_region_id)k + 1, .next = 1};
    struct tkv_reactor_config cfg = {.n_cores = 1, .pin = false};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, b_init, b_fini, NULL, &g);
    if (rv != 0) {
        fprintf(stderr, "reactor: %s\n", tkv_strerror(rv));
        exit(1);
    }
    while (!atomic_load(&B.finished))
        usleep(5000);
    uint64_t t1 = now_ns();
    tkv_reactor_group_stop(g);
    rv = tkv_reactor_group_wait(g);
    if (rv != 0 || B.err != 0) {
        fprintf(stderr, "raftlog: %s\n", tkv_strerror(rv ? rv : B.err));
        exit(1);
    }
    finish(&B.lat, B.entries, B.st.batches, t1 - B.t0, res);
    res->bytes_s = (double)B.st.bytes_written * 1e9 / (double)(t1 - B.t0);
    tkv_free(B.regs);
    rmrf(dir);
}

/* ---- zero fill: appends into prewritten vs fallocated space ----
 * The raft log writes zeros over every new segment before use
 * (src/raftlog/README.md "Zero fill") so that appends overwrite written
 * blocks: appending into fallocate's unwritten extents makes each
 * fdatasync also convert the extent and commit the journal.
 * raw: `len`-byte appends at consecutive offsets, each followed by
 * fdatasync, into two files of FILL_FILE bytes: one fallocate'd only, one
 * fallocate'd and then written with zeros and fsynced. The two alternate in
 * blocks of FILL_BLOCK appends so both see the same disk noise.
 * raftlog: the log itself, skip_zero_fill off against on, runs alternating. */

#define FILL_FILE (256ull << 20)
#define FILL_BLOCK 50

struct fill_side {
    int fd;
    uint64_t off, n, ns;
    struct lat l;
};

static void fill_prepare(struct fill_side *f, const char *path, bool prewrite)
{
    memset(f, 0, sizeof(*f));
    f->fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (f->fd < 0 || fallocate(f->fd, 0, 0, (off_t)FILL_FILE) != 0) {
        perror("fill: prepare");
        exit(1);
    }
    if (prewrite) {
        uint8_t *z = tkv_xcalloc(1, 1 << 20);
        for (uint64_t off = 0; off < FILL_FILE; off += 1 << 20)
            if (pwrite(f->fd, z, 1 << 20, (off_t)off) != 1 << 20) {
                perror("fill: zero");
                exit(1);
            }
        tkv_free(z);
    }
    if (fsync(f->fd) != 0) {
        perror("fill: fsync");
        exit(1);
    }
}

/* FILL_BLOCK appends; false once the file is full. */
static bool fill_block(struct fill_side *f, const uint8_t *buf, size_t len)
{
    for (int i = 0; i < FILL_BLOCK; i++) {
        if (f->off + len > FILL_FILE)
            return false;
        uint64_t t = now_ns();
        if (pwrite(f->fd, buf, len, (off_t)f->off) != (ssize_t)len || fdatasync(f->fd) != 0) {
            perror("fill: append");
            exit(1);
        }
        uint64_t d = now_ns() - t;
        lat_add(&f->l, d);
        f->ns += d;
        f->n++;
        f->off += len;
    }
    return true;
}

static void fill_row(const char *what, const char *size, const struct result *fa,
                     const struct result *pre, double ratio_rate, double ratio_p50)
{
    printf("%-8s %-12s %10.0f %9.1f %9.1f  %10.0f %9.1f %9.1f   %6.2fx %6.2fx\n", what, size,
           fa->entries_s, fa->p50_us, fa->p99_us, pre->entries_s, pre->p50_us, pre->p99_us,
           ratio_rate, ratio_p50);
    fflush(stdout);
}

static void bench_fill_raw(size_t len)
{
    char dir[512], pa[600], pb[600];
    mkpath(dir, sizeof(dir), "fill");
    snprintf(pa, sizeof(pa), "%s/fallocated", dir);
    snprintf(pb, sizeof(pb), "%s/prewritten", dir);
    struct fill_side fa, pre;
    fill_prepare(&fa, pa, false);
    fill_prepare(&pre, pb, true);
    uint8_t *buf = tkv_xmalloc(len);
    memset(buf, 0x5a, len);
    uint64_t budget = (uint64_t)(2 * O.seconds * 1e9);
    while (fa.ns + pre.ns < budget && fill_block(&fa, buf, len) && fill_block(&pre, buf, len)) {
    }
    struct result ra, rp;
    double fa_rate = (double)fa.n * 1e9 / (double)fa.ns, pre_rate = (double)pre.n * 1e9 / (double)pre.ns;
    finish(&fa.l, fa.n, fa.n, fa.ns, &ra);
    finish(&pre.l, pre.n, pre.n, pre.ns, &rp);
    char what[32];
    snprintf(what, sizeof(what), "%zu B", len);
    fill_row("raw", what, &ra, &rp, pre_rate / fa_rate, ra.p50_us / rp.p50_us);
    tkv_free(buf);
    close(fa.fd);
    close(pre.fd);
    rmrf(dir);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void bench_fill_raftlog(int regions)
{
    enum { MAX_REPS = 32 };
    int reps = O.reps < 1 ? 1 : O.reps > MAX_REPS ? MAX_REPS : O.reps;
    double rate[2][MAX_REPS], p50[2][MAX_REPS], p99[2][MAX_REPS], rr[MAX_REPS], rp[MAX_REPS];
    double open_ms[2][MAX_REPS], spare_ms[2][MAX_REPS], bytes_s[2][MAX_REPS];
    for (int i = 0; i < reps; i++) {
        struct result r[2];
        /* alternate which goes first, so drift hits both alike */
        for (int k = 0; k < 2; k++) {
            int side = (i + k) % 2; /* 0 = fallocated (skip_zero_fill), 1 = zero-filled */
            bench_raftlog(regions, side == 0, &r[side]);
            open_ms[side][i] = (double)B.open_ns / 1e6;
            spare_ms[side][i] = (double)B.spare_ns / 1e6;
            bytes_s[side][i] = r[side].bytes_s;
        }
        for (int side = 0; side < 2; side++) {
            rate[side][i] = r[side].entries_s;
            p50[side][i] = r[side].p50_us;
            p99[side][i] = r[side].p99_us;
        }
        rr[i] = r[1].entries_s / r[0].entries_s;
        rp[i] = r[0].p50_us / r[1].p50_us;
    }
    struct result m[2];
    for (int side = 0; side < 2; side++)
        m[side] = (struct result){.entries_s = median(rate[side], reps),
                                  .p50_us = median(p50[side], reps),
                                  .p99_us = median(p99[side], reps)};
    char what[32];
    snprintf(what, sizeof(what), "%d regions", regions);
    fill_row("raftlog", what, &m[0], &m[1], median(rr, reps), median(rp, reps));
    double seg_mb = 64.0; /* the default segment_size the runs use */
    printf("  open (segment 1) %.0f ms filled / %.0f ms fallocated only; spare ready after "
           "%.0f / %.0f ms; log written at %.2f MB/s filled: a %.0f MiB segment lasts %.0f s\n",
           median(open_ms[1], reps), median(open_ms[0], reps), median(spare_ms[1], reps),
           median(spare_ms[0], reps), median(bytes_s[1], reps) / 1e6, seg_mb,
           seg_mb * 1048576.0 / median(bytes_s[1], reps));
}

static void bench_fill(void)
{
    printf("zero fill: appends into fallocated (unwritten extents) vs prewritten (zero-filled) "
           "space\n"
           "raw: %.1f s per side, alternating blocks of %d append+fdatasync; raftlog: "
           "median of %d alternating runs of %.1f s (entries/s, append-to-durable latency)\n",
           O.seconds, FILL_BLOCK, O.reps, O.seconds);
    printf("%-8s %-12s %10s %9s %9s  %10s %9s %9s   %7s %7s\n", "", "", "fallocated", "",
           "", "prewritten", "", "", "ratio", "");
    printf("%-8s %-12s %10s %9s %9s  %10s %9s %9s   %7s %7s\n", "what", "append", "per s",
           "p50 us", "p99 us", "per s", "p50 us", "p99 us", "rate", "p50");
    static const size_t sizes[] = {256, 4096, 16384};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        bench_fill_raw(sizes[i]);
    for (int i = 0; i < O.n_regions; i++)
        bench_fill_raftlog(O.regions[i]);
    printf("ratio: prewritten/fallocated appends per second, and fallocated/prewritten p50 "
           "latency (> 1: the zero fill helps)\n");
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--dir") == 0 && v) {
            O.dir = v;
            i++;
        } else if (strcmp(a, "--seconds") == 0 && v) {
            O.seconds = atof(v);
            i++;
        } else if (strcmp(a, "--reps") == 0 && v) {
            O.reps = atoi(v);
            i++;
        } else if (strcmp(a, "--only") == 0 && v) {
            O.only = v;
            i++;
        } else if (strcmp(a, "--regions") == 0 && v) {
            O.n_regions = 0;
            char *copy = tkv_xstrdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t && O.n_regions < 8;
                 t = strtok_r(NULL, ",", &save))
                O.regions[O.n_regions++] = atoi(t);
            tkv_free(copy);
            i++;
        } else {
            fprintf(stderr,
                    "usage: %s [--dir D] [--seconds S] [--regions 1,100,10000] "
                    "[--only raw|raftlog|pwrite|wt|fill] [--reps N]\n",
                    argv[0]);
            exit(2);
        }
    }
}

static bool want(const char *what)
{
    return O.only == NULL || strcmp(O.only, what) == 0;
}

static void row(const char *name, int regions, const struct result *r)
{
    printf("%-8s %8d %12.0f %10.0f %10.1f %10.1f\n", name, regions, r->entries_s, r->syncs_s,
           r->p50_us, r->p99_us);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    memset(payload, 0x5a, sizeof(payload));
    printf("dir %s, %.1f s per run, %d-byte entries, one core\n", O.dir, O.seconds, ENTRY);
    if (O.only != NULL && strcmp(O.only, "fill") == 0) {
        bench_fill();
        return 0;
    }
    double raw = 0, raw_new = 0;
    if (want("raw")) {
        raw_new = bench_raw(false);
        raw = bench_raw(true);
        printf("raw fdatasync: %.0f/s overwriting a written block (ceiling), %.0f/s with 4 KiB "
               "writes into new preallocated blocks\n",
               raw, raw_new);
    }
    printf("%-8s %8s %12s %10s %10s %10s\n", "system", "regions", "entries/s", "syncs/s",
           "p50 us", "p99 us");
    for (int i = 0; i < O.n_regions; i++) {
        int R = O.regions[i];
        struct result rl = {0}, pw = {0}, wt = {0};
        if (want("raftlog")) {
            bench_raftlog(R, false, &rl);
            row("raftlog", R, &rl);
        }
        if (want("pwrite")) {
            bench_pwrite(R, &pw);
            row("pwrite", R, &pw);
        }
        if (want("wt")) {
            bench_wt(R, &wt);
            row("wt", R, &wt);
        }
        if (rl.entries_s > 0 && pw.entries_s > 0 && wt.entries_s > 0)
            printf("ratio    %8d  raftlog/pwrite %.1fx  raftlog/wt %.1fx entries/s;"
                   "  p99 pwrite/raftlog %.1fx  wt/raftlog %.1fx\n",
                   R, rl.entries_s / pw.entries_s, rl.entries_s / wt.entries_s,
                   pw.p99_us / rl.p99_us, wt.p99_us / rl.p99_us);
    }
    if (raw > 0)
        printf("ceiling: raw fdatasync %.0f/s (new blocks %.0f/s)\n", raw, raw_new);
    return 0;
}
