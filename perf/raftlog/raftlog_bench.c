/* tkv-raftlog-bench: R regions appending 128-byte entries from one core,
 * each region with one append outstanding (closed loop). Measures entries/s,
 * syncs/s and append-to-durable latency (p50/p99) of the raft log (io_uring,
 * group commit per loop turn) against pwrite+fdatasync per entry and a
 * WiredTiger table whose log is synced per commit, plus the raw fdatasync
 * rate of the disk. See README.md.
 *   tkv-raftlog-bench [--dir D] [--seconds S] [--regions 1,100,10000]
 *                     [--only raw|raftlog|pwrite|wt] */
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
} O = {"/tmp", 2.0, {1, 100, 10000}, 3, NULL};

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

static int b_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    struct tkv_raftlog_config cfg = {.dir = B.dir, .reactor = r};
    int rv = tkv_raftlog_open(&cfg, &B.log, NULL);
    if (rv != 0)
        return rv;
    tkv_reactor_defer(r, b_start, NULL);
    return 0;
}

static void b_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    tkv_raftlog_close(B.log);
}

static void bench_raftlog(int regions, struct result *res)
{
    char dir[512];
    mkpath(dir, sizeof(dir), "raftlog");
    memset(&B, 0, sizeof(B));
    B.dir = dir;
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
    tkv_free(B.regs);
    rmrf(dir);
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
                    "[--only raw|raftlog|pwrite|wt]\n",
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
            bench_raftlog(R, &rl);
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
