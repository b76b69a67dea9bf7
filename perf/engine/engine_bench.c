/* tkv-engine-bench: single-key puts, random point gets and a full scan
 * through the engine API, from T threads each with its own session (as the
 * standalone server's cores do). Prints ops/s per phase.
 *   tkv-engine-bench [--engine wt|mem] [--sync 0|1] [--threads T] [--ops N]
 *                    [--value B] [--dir PATH]   (PATH is created and removed) */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tkv/engine.h"
#include "tkv/err.h"
#include "tkv/log.h"

static struct {
    enum tkv_engine_kind kind;
    bool sync;
    int threads;
    long ops; /* per thread */
    size_t value;
    const char *dir;
} O = {TKV_ENGINE_WT, true, 1, 20000, 100, "/tmp/tkv-engine-bench"};

static struct tkv_engine *E;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct job {
    int id;
    int phase; /* 0 put, 1 get */
    int rv;
};

static void *run(void *arg)
{
    struct job *j = arg;
    struct tkv_engine_session *s;
    char k[32];
    uint8_t *v = calloc(1, O.value + 1);
    uint64_t x = 88172645463325252ull + (uint64_t)j->id;
    if ((j->rv = tkv_engine_session_open(E, &s)) != 0)
        return NULL;
    for (long i = 0; i < O.ops && j->rv == 0; i++) {
        if (j->phase == 0) {
            int n = snprintf(k, sizeof(k), "user%02d%010ld", j->id, i);
            memcpy(v, &i, sizeof(i) < O.value ? sizeof(i) : O.value);
            j->rv =
                tkv_engine_put(s, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)n), TKV_SLICE(v, O.value));
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int n = snprintf(k, sizeof(k), "user%02d%010ld", (int)(x % (uint64_t)O.threads),
                             (long)((x >> 8) % (uint64_t)O.ops));
            struct tkv_slice got;
            j->rv = tkv_engine_get(s, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)n), &got);
        }
    }
    tkv_engine_session_close(s);
    free(v);
    return NULL;
}

static double phase(int p)
{
    pthread_t th[64];
    struct job jobs[64];
    double t0 = now_s();
    for (int i = 0; i < O.threads; i++) {
        jobs[i] = (struct job){.id = i, .phase = p};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    for (int i = 0; i < O.threads; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].rv) {
            fprintf(stderr, "thread %d: %s\n", i, tkv_strerror(jobs[i].rv));
            exit(1);
        }
    }
    return now_s() - t0;
}

static int rm_cb(const char *p, const struct stat *st, int f, struct FTW *w)
{
    (void)st;
    (void)f;
    (void)w;
    return remove(p);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--engine"))
            O.kind = strcmp(argv[i + 1], "mem") ? TKV_ENGINE_WT : TKV_ENGINE_MEM;
        else if (!strcmp(argv[i], "--sync"))
            O.sync = atoi(argv[i + 1]) != 0;
        else if (!strcmp(argv[i], "--threads"))
            O.threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ops"))
            O.ops = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--value"))
            O.value = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            O.dir = argv[i + 1];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (O.threads < 1 || O.threads > 64 || O.ops < 1 || O.value < 1) {
        fprintf(stderr, "bad options\n");
        return 2;
    }
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    nftw(O.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    struct tkv_engine_opts eo = {.kind = O.kind, .path = O.dir, .sync = O.sync};
    int rv = tkv_engine_open(&eo, &E);
    if (rv) {
        fprintf(stderr, "open: %s\n", tkv_strerror(rv));
        return 1;
    }
    long total = O.ops * O.threads;
    printf("engine=%s sync=%d threads=%d ops=%ld value=%zu\n",
           O.kind == TKV_ENGINE_WT ? "wt" : "mem", O.sync, O.threads, total, O.value);
    double tp = phase(0);
    printf("put   %10.0f ops/s  (%.2f s)\n", (double)total / tp, tp);
    double tg = phase(1);
    printf("get   %10.0f ops/s  (%.2f s)\n", (double)total / tg, tg);

    struct tkv_engine_session *s;
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    long n = 0;
    double t0 = now_s();
    if (tkv_engine_session_open(E, &s) || tkv_engine_snap_open(s, &snap) ||
        tkv_engine_iter_open(snap, TKV_CF_DEFAULT, TKV_SLICE(NULL, 0), TKV_SLICE(NULL, 0), &it))
        return 1;
    for (tkv_engine_iter_seek_first(it); tkv_engine_iter_valid(it); tkv_engine_iter_next(it))
        n++;
    double ts = now_s() - t0;
    printf("scan  %10.0f keys/s (%ld keys, %.2f s)\n", (double)n / ts, n, ts);
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    tkv_engine_session_close(s);
    tkv_engine_close(E);
    nftw(O.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return n == total ? 0 : 1;
}
