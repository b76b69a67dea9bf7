/* Crash recovery under load: a child appends through the io_uring reactor
 * and reports every completed sync through a pipe; it is killed with SIGKILL
 * at a random moment, then recovery must hold every reported entry, in
 * order, with its exact content, and nothing that was never appended.
 * TKV_CRASH_ITERS sets the iteration count (default 200), TKV_SEED the seed. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "raftlog_harness.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/reactor.h"

#define NREG 8
#define SEG_SIZE (64 * 1024)
#define MAX_BATCH (16 * 1024)

struct report {
    uint64_t region;
    uint64_t last;
};

/* ---- child ---- */

static int C_pipe;
static struct tkv_raftlog *C_log;
static struct tkv_reactor *C_r;
static uint64_t C_next[NREG + 1], C_durable[NREG + 1], C_rng;
static int C_inflight;

struct c_append {
    uint64_t region, last;
};

static void c_done(void *arg, int rv)
{
    struct c_append *a = arg;
    if (rv != 0)
        _exit(20);
    struct report rep = {a->region, a->last};
    /* Report first, then act on it: the parent's view of what is durable
     * is never behind a compaction the child stages afterwards. */
    if (write(C_pipe, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
        _exit(21);
    if (a->last > C_durable[a->region])
        C_durable[a->region] = a->last;
    C_inflight--;
    free(a);
}

static void c_step(void)
{
    static uint8_t data[4][256];
    int n_app = 1 + (int)(h_rand(&C_rng) % 6);
    for (int k = 0; k < n_app && C_inflight < 64; k++) {
        uint64_t r = 1 + h_rand(&C_rng) % NREG;
        uint64_t n = 1 + h_rand(&C_rng) % 4;
        struct tkv_raftlog_entry e[4];
        for (uint64_t i = 0; i < n; i++) {
            uint64_t idx = C_next[r] + i;
            size_t dl = h_data(r, idx, 1, data[i], 200);
            e[i] = (struct tkv_raftlog_entry){.index = idx, .term = 1, .type = (uint32_t)(idx % 3),
                                              .data = TKV_SLICE(data[i], dl)};
        }
        struct c_append *a = malloc(sizeof(*a));
        a->region = r;
        a->last = C_next[r] + n - 1;
        struct tkv_raftlog_hardstate hs = {.term = 1, .vote = r, .commit = C_durable[r]};
        if (tkv_raftlog_append(C_log, r, e, (size_t)n, &hs, c_done, a) != 0)
            _exit(22);
        C_next[r] += n;
        C_inflight++;
        if (h_rand(&C_rng) % 16 == 0 && C_durable[r] > 60 &&
            C_durable[r] - 50 >= tkv_raftlog_first_index(C_log, r)) {
            if (tkv_raftlog_compact(C_log, r, C_durable[r] - 50, 0, NULL, NULL) != 0)
                _exit(23);
        }
    }
}

static void c_pump(void *arg)
{
    (void)arg;
    c_step();
    tkv_reactor_defer(C_r, c_pump, NULL);
}

static void c_open(const char *dir, struct tkv_reactor *r)
{
    struct tkv_raftlog_config cfg = {.dir = dir, .reactor = r, .segment_size = SEG_SIZE,
                                     .max_batch_bytes = MAX_BATCH};
    if (tkv_raftlog_open(&cfg, &C_log, NULL) != 0)
        _exit(24);
    for (uint64_t k = 1; k <= NREG; k++) {
        C_next[k] = tkv_raftlog_last_index(C_log, k) + 1;
        C_durable[k] = C_next[k] - 1;
    }
}

static const char *C_dir;

static int c_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    C_r = r;
    c_open(C_dir, r);
    uint8_t b = 0;
    struct report hello = {0, 0};
    (void)b;
    if (write(C_pipe, &hello, sizeof(hello)) != (ssize_t)sizeof(hello))
        _exit(25);
    tkv_reactor_defer(r, c_pump, NULL);
    return 0;
}

static _Noreturn void child(const char *dir, int fd, uint64_t seed)
{
    C_pipe = fd;
    C_dir = dir;
    C_rng = seed;
    struct tkv_reactor_config cfg = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, c_init, NULL, NULL, &g);
    if (rv == 0) {
        tkv_reactor_group_wait(g);
        _exit(26);
    }
    /* io_uring blocked here: the synchronous path, same format. */
    c_open(dir, NULL);
    struct report hello = {0, 0};
    if (write(C_pipe, &hello, sizeof(hello)) != (ssize_t)sizeof(hello))
        _exit(25);
    for (;;) {
        c_step();
        if (tkv_raftlog_flush(C_log) != 0)
            _exit(27);
    }
}

/* ---- parent ---- */

static void verify(const char *dir, uint64_t *durable, int iter, uint64_t seed)
{
    struct tkv_raftlog_config cfg = {.dir = dir, .segment_size = SEG_SIZE,
                                     .max_batch_bytes = MAX_BATCH};
    struct tkv_raftlog *log;
    struct tkv_raftlog_corruption where = {0};
    int rv = tkv_raftlog_open(&cfg, &log, &where);
    cr_assert_eq(rv, 0, "iteration %d (seed %" PRIu64 "): recovery failed: %s (%s at %" PRIu64 ")",
                 iter, seed, tkv_strerror(rv), where.path, where.offset);
    uint8_t data[256];
    for (uint64_t r = 1; r <= NREG; r++) {
        uint64_t first = tkv_raftlog_first_index(log, r);
        uint64_t last = tkv_raftlog_last_index(log, r);
        cr_assert_geq(last, durable[r],
                      "iteration %d (seed %" PRIu64 "): region %" PRIu64 " lost entries: last %" PRIu64
                      " but %" PRIu64 " was synced",
                      iter, seed, r, last, durable[r]);
        cr_assert(first == 1 || first + 49 <= durable[r] || durable[r] == 0,
                  "iteration %d: region %" PRIu64 " compacted past what was allowed (first %" PRIu64
                  ", synced %" PRIu64 ")",
                  iter, r, first, durable[r]);
        if (last < first)
            continue;
        struct tkv_raftlog_entry *e = NULL;
        size_t n = 0;
        rv = tkv_raftlog_read(log, r, first, last + 1, 0, &e, &n);
        cr_assert_eq(rv, 0, "iteration %d: read region %" PRIu64 ": %s", iter, r, tkv_strerror(rv));
        cr_assert_eq(n, last - first + 1);
        for (size_t i = 0; i < n; i++) {
            size_t dl = h_data(r, first + i, 1, data, 200);
            cr_assert(e[i].index == first + i && e[i].term == 1 &&
                          e[i].type == (uint32_t)((first + i) % 3) && e[i].data.len == dl &&
                          memcmp(e[i].data.ptr, data, dl) == 0,
                      "iteration %d (seed %" PRIu64 "): region %" PRIu64 " entry %" PRIu64
                      " is not what was appended",
                      iter, seed, r, first + i);
        }
        tkv_free(e);
        struct tkv_raftlog_hardstate hs;
        cr_assert_eq(tkv_raftlog_hardstate(log, r, &hs), 0);
        cr_assert_eq(hs.vote, r);
        /* What recovery returns is durable now (it synced the tail). */
        durable[r] = last;
    }
    tkv_raftlog_close(log);
}

Test(raftlog_crash, kill9_under_load_keeps_every_synced_entry, .timeout = 1700)
{
    const char *env = getenv("TKV_CRASH_ITERS");
    int iters = env ? atoi(env) : 200;
    env = getenv("TKV_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    struct h h;
    h_init(&h, false, "/tmp", SEG_SIZE, MAX_BATCH);
    uint64_t durable[NREG + 1] = {0};
    uint64_t rng = seed, total = 0;
    for (int it = 0; it < iters; it++) {
        int fds[2];
        cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            child(h.dir, fds[1], seed * 1000 + (uint64_t)it);
        }
        close(fds[1]);
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, 10000);
        /* Let it run under load for 0-20 ms after it has started. */
        if (pr == 1)
            usleep((useconds_t)(h_rand(&rng) % 20000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "iteration %d: child exited by itself (status %d)", it, status);
        struct report rep;
        ssize_t got;
        while ((got = read(fds[0], &rep, sizeof(rep))) == (ssize_t)sizeof(rep)) {
            if (rep.region == 0)
                continue;
            cr_assert(rep.region <= NREG);
            if (rep.last > durable[rep.region])
                durable[rep.region] = rep.last;
            total++;
        }
        close(fds[0]);
        verify(h.dir, durable, it, seed);
    }
    cr_log_info("%d kills, %" PRIu64 " synced appends checked, seed %" PRIu64, iters, total, seed);
    cr_assert_gt(total, 0, "the child never completed a sync");
    h_fini(&h);
}
