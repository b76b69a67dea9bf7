/* kill -9 recovery of the WiredTiger engine: a child commits batches and
 * reports each acknowledged one on a pipe; the parent SIGKILLs it at a random
 * moment, reopens the directory and demands every acknowledged batch, whole.
 * sync mode: every acknowledged write. no-log (raft) mode: every write before
 * the last completed checkpoint. TKV_SEED=<n> replays one run. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine_fixture.h"
#include "tkv/log.h"

static size_t value_len(long i)
{
    return 16 + (size_t)((i * 7919) % 3000);
}

static void fill_value(uint8_t *v, size_t n, long i)
{
    for (size_t j = 0; j < n; j++)
        v[j] = (uint8_t)(i * 31 + (long)j);
}

static void key_of(char *k, long i)
{
    snprintf(k, 32, "key%08ld", i % 100000000);
}

enum crash_mode {
    CRASH_SYNC,     /* sync mode: every acknowledged write */
    CRASH_NOLOG,    /* no-log mode, the writer checkpoints every 25 batches */
    CRASH_NOLOG_BG, /* no-log mode, a second thread checkpoints while the
                     * writer runs and acknowledges the applied index it
                     * read before each checkpoint (the raft-store pattern) */
};

struct bg_ckpt {
    struct tkv_engine *e;
    int fd;
};

static void *bg_checkpointer(void *arg)
{
    struct bg_ckpt *c = arg;
    struct tkv_engine_session *s;
    char line[32];
    if (tkv_engine_session_open(c->e, &s))
        _exit(7);
    for (;;) {
        struct tkv_slice v;
        long applied;
        int rv = tkv_engine_get(s, TKV_CF_META, S("last"), &v);
        if (rv == 0) {
            memcpy(&applied, v.ptr, sizeof(applied));
            if (tkv_engine_checkpoint(c->e) != 0)
                _exit(5);
            int len = snprintf(line, sizeof(line), "%ld\n", applied);
            if (write(c->fd, line, (size_t)len) != len)
                _exit(6);
        } else if (rv != TKV_ENOTFOUND) {
            _exit(8);
        }
        usleep(5000);
    }
    return NULL;
}

/* The child: never returns. */
static void child_main(const char *dir, enum crash_mode mode, int fd)
{
    bool sync = mode == CRASH_SYNC;
    /* TKV_ENGINE_CRASH_WTCONFIG lets a human prove the test can fail, e.g.
     * "transaction_sync=(enabled=false)" must make the sync test fail. */
    struct tkv_engine_opts o = {.kind = TKV_ENGINE_WT,
                                .path = dir,
                                .sync = sync,
                                .cache_bytes = 32u << 20,
                                .wt_config = getenv("TKV_ENGINE_CRASH_WTCONFIG")};
    struct tkv_engine *e;
    struct tkv_engine_session *s;
    static uint8_t v[4096];
    char k[32], line[32];
    if (tkv_engine_open(&o, &e) || tkv_engine_session_open(e, &s))
        _exit(3);
    static struct bg_ckpt bg;
    pthread_t th;
    if (mode == CRASH_NOLOG_BG) {
        bg = (struct bg_ckpt){.e = e, .fd = fd};
        if (pthread_create(&th, NULL, bg_checkpointer, &bg) != 0)
            _exit(9);
    }
    for (long i = 0;; i++) {
        struct tkv_engine_batch b;
        tkv_engine_batch_init(&b);
        size_t n = value_len(i);
        fill_value(v, n, i);
        key_of(k, i);
        tkv_engine_batch_put(&b, TKV_CF_DEFAULT, TKV_SLICE(k, 11), TKV_SLICE(v, n));
        tkv_engine_batch_put(&b, TKV_CF_WRITE, TKV_SLICE(k, 11), TKV_SLICE(&i, sizeof(i)));
        tkv_engine_batch_put(&b, TKV_CF_META, S("last"), TKV_SLICE(&i, sizeof(i)));
        if (tkv_engine_write(s, &b) != 0)
            _exit(4);
        tkv_engine_batch_close(&b);
        int len = 0;
        if (sync)
            len = snprintf(line, sizeof(line), "%ld\n", i);
        else if (mode == CRASH_NOLOG && i % 25 == 24) {
            if (tkv_engine_checkpoint(e) != 0)
                _exit(5);
            len = snprintf(line, sizeof(line), "%ld\n", i);
        }
        if (len > 0 && write(fd, line, (size_t)len) != len)
            _exit(6);
    }
}

/* Read acknowledgements until the deadline (ms; -1: until EOF) or until
 * one >= stop_at arrives; returns the highest acknowledged index, -1 if none.
 * buf keeps only the tail of the stream: the last complete line counts. */
static long read_acks(int fd, int deadline_ms, long stop_at, char *buf, size_t *used, size_t cap)
{
    struct timespec t0, t;
    long last = -1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        /* the last complete line */
        size_t end = *used;
        while (end > 0 && buf[end - 1] != '\n')
            end--;
        if (end > 0) {
            size_t st = end - 1;
            while (st > 0 && buf[st - 1] != '\n')
                st--;
            last = strtol(buf + st, NULL, 10);
            if (*used > cap / 2) { /* drop everything before that line */
                memmove(buf, buf + st, *used - st);
                *used -= st;
            }
        }
        if (stop_at >= 0 && last >= stop_at)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (deadline_ms >= 0 && el >= deadline_ms)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, deadline_ms < 0 ? 1000 : (int)(deadline_ms - el));
        if (pr <= 0)
            continue;
        ssize_t r = read(fd, buf + *used, cap - *used);
        if (r <= 0)
            break;
        *used += (size_t)r;
    }
    return last;
}

/* Removed by the suite's fini even when an assertion fails. */
static char crash_dir[64];

static void crash_fini(void)
{
    if (crash_dir[0])
        fx_rmtree(crash_dir);
    crash_dir[0] = '\0';
}

static void crash_once(enum crash_mode mode, unsigned seed)
{
    bool sync = mode == CRASH_SYNC;
    char *dir = crash_dir;
    strcpy(dir, "/tmp/tkv-engine-crash-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[0]);
        child_main(dir, mode, p[1]);
    }
    close(p[1]);
    static char buf[1 << 16];
    size_t used = 0;
    /* first let the child get going (WiredTiger start-up under ASan on a
     * loaded machine can take a while), then kill it at a random moment */
    long need = mode == CRASH_NOLOG ? 24 : 5;
    long first = read_acks(p[0], 30000, need, buf, &used, sizeof(buf));
    int kill_ms = (int)((seed * 2654435761u) % 400);
    (void)read_acks(p[0], kill_ms, -1, buf, &used, sizeof(buf));
    kill(pid, SIGKILL);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    /* acknowledgements already in the pipe count: they were printed after
     * the write returned */
    long acked = read_acks(p[0], -1, -1, buf, &used, sizeof(buf));
    close(p[0]);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "seed %u: child died on its own (status %d)", seed, st);
    cr_assert_geq(first, need, "seed %u: child acknowledged too little in 30 s (%ld)", seed, first);
    cr_assert_geq(acked, first);

    struct tkv_engine_opts o = {.kind = TKV_ENGINE_WT, .path = dir, .sync = sync};
    struct tkv_engine *e;
    struct tkv_engine_session *s;
    must(tkv_engine_open(&o, &e));
    must(tkv_engine_session_open(e, &s));
    struct tkv_slice v;
    long last;
    must(tkv_engine_get(s, TKV_CF_META, S("last"), &v));
    cr_assert_eq(v.len, sizeof(last));
    memcpy(&last, v.ptr, sizeof(last));
    cr_log_info("seed %u: killed after %d ms, acknowledged %ld, recovered %ld", seed, kill_ms,
                acked, last);
    cr_assert_geq(last, acked, "seed %u: acknowledged %ld but recovered only up to %ld", seed,
                  acked, last);
    /* the recovered state is exactly batches 0..last, each one whole */
    static uint8_t want[4096];
    char k[32];
    for (long i = 0; i <= last + 1; i++) {
        key_of(k, i);
        int r1 = tkv_engine_get(s, TKV_CF_DEFAULT, TKV_SLICE(k, 11), &v);
        if (i == last + 1) {
            cr_assert_eq(r1, TKV_ENOTFOUND, "seed %u: batch %ld beyond last", seed, i);
            break;
        }
        cr_assert_eq(r1, 0, "seed %u: acknowledged key %ld lost (last %ld)", seed, i, last);
        size_t n = value_len(i);
        fill_value(want, n, i);
        cr_assert(v.len == n && memcmp(v.ptr, want, n) == 0, "seed %u: value %ld corrupt", seed, i);
        cr_assert_eq(tkv_engine_get(s, TKV_CF_WRITE, TKV_SLICE(k, 11), &v), 0,
                     "seed %u: batch %ld half applied", seed, i);
    }
    tkv_engine_session_close(s);
    tkv_engine_close(e);
    crash_fini();
}

static unsigned base_seed(void)
{
    const char *e = getenv("TKV_SEED");
    return e ? (unsigned)strtoul(e, NULL, 0) : (unsigned)time(NULL);
}

TestSuite(engine_crash, .fini = crash_fini);

Test(engine_crash, sync_mode_keeps_every_acknowledged_batch, .timeout = 100)
{
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    unsigned seed = base_seed();
    for (unsigned i = 0; i < 3; i++) {
        cr_log_info("seed %u", seed + i);
        crash_once(CRASH_SYNC, seed + i);
    }
}

Test(engine_crash, nolog_mode_keeps_every_checkpointed_batch, .timeout = 100)
{
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    unsigned seed = base_seed();
    for (unsigned i = 0; i < 3; i++) {
        cr_log_info("seed %u", seed + i);
        crash_once(CRASH_NOLOG, seed + i);
    }
}

Test(engine_crash, nolog_mode_concurrent_checkpoints_cover_prior_applied_index, .timeout = 100)
{
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    unsigned seed = base_seed();
    for (unsigned i = 0; i < 3; i++) {
        cr_log_info("seed %u", seed + i);
        crash_once(CRASH_NOLOG_BG, seed + i);
    }
}
