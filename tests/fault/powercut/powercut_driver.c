/* tkv-powercut-driver: writes through src/raftlog or src/engine, reports
 * every durable step, and after a (simulated) power cut checks that every
 * reported step survived. Driven by test_powercut_storage.py on powercutfs.
 *
 *   tkv-powercut-driver write  raftlog|raftlog-uring|engine DIR
 *       Writes until killed. After each step that the module reports durable
 *       (raftlog: tkv_raftlog_flush returned, synchronous mode;
 *       raftlog-uring: the append's callback fired, io_uring reactor mode,
 *       group commit by the log's before-sleep hook, exit 4 when io_uring is
 *       unavailable; engine: tkv_engine_write returned in sync mode) prints
 *       "ack N" on
 *       stdout, N = durable steps so far. The steps are a pure function of
 *       their number, so the verifier can recompute them.
 *       TKV_POWERCUT_FAILPOINT=<name> enables that libfiu failpoint first
 *       (raftlog/skip_fsync, engine/skip_fsync: the negative control); exit
 *       3 when failpoints are not compiled in (Release builds).
 *   tkv-powercut-driver verify raftlog|raftlog-uring|engine DIR N
 *       Reopens DIR and checks that steps 0..N-1 are all there, intact, and
 *       nothing that was never written. Prints one summary line
 *       "verify <module>: acknowledged N ... lost L" and exits 0 (nothing
 *       lost), 1 (acknowledged data lost or wrong), 2 (recovery failed).
 */
#include <fiu-control.h>
#include <fiu.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tkv/engine.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/raftlog.h"
#include "tkv/reactor.h"

#define NREG 4
#define SEG_SIZE (64 * 1024)
#define MAX_BATCH (16 * 1024)
#define MAX_DATA 400

/* ---- deterministic content ---- */

static size_t entry_data(uint64_t region, uint64_t index, uint8_t *out)
{
    size_t n = 8 + (size_t)((index * 7919 + region * 104729) % (MAX_DATA - 8));
    uint64_t x = region * 0x9E3779B97F4A7C15ull ^ index;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = (uint8_t)(x >> 56);
    }
    return n;
}

/* Step k of the raft log workload: which region, how many entries. */
static void raft_step(uint64_t k, uint64_t *region, uint64_t *n)
{
    *region = 1 + k % NREG;
    *n = 1 + (k * 2654435761u >> 7) % 3;
}

static void enable_failpoint(void)
{
    const char *fp = getenv("TKV_POWERCUT_FAILPOINT");
    if (!fp || !*fp)
        return;
#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
    fiu_init(0);
    if (fiu_enable(fp, 1, NULL, 0) != 0) {
        fprintf(stderr, "cannot enable failpoint %s\n", fp);
        exit(3);
    }
    fprintf(stderr, "failpoint %s enabled\n", fp);
#else
    fprintf(stderr, "failpoints are compiled into test (Debug) builds only\n");
    exit(3);
#endif
}

/* ---- raft log ---- */

static int raft_write(const char *dir)
{
    struct tkv_raftlog_config cfg = {.dir = dir, .segment_size = SEG_SIZE,
                                     .max_batch_bytes = MAX_BATCH};
    struct tkv_raftlog *log;
    int rv = tkv_raftlog_open(&cfg, &log, NULL);
    if (rv) {
        fprintf(stderr, "raftlog open: %s\n", tkv_strerror(rv));
        return 2;
    }
    uint64_t next[NREG + 1];
    for (uint64_t r = 1; r <= NREG; r++)
        next[r] = tkv_raftlog_last_index(log, r) + 1;
    static uint8_t data[3][MAX_DATA];
    for (uint64_t k = 0;; k++) {
        uint64_t r, n;
        raft_step(k, &r, &n);
        struct tkv_raftlog_entry e[3];
        for (uint64_t i = 0; i < n; i++) {
            uint64_t idx = next[r] + i;
            size_t dl = entry_data(r, idx, data[i]);
            e[i] = (struct tkv_raftlog_entry){.index = idx, .term = 1, .type = (uint32_t)(idx % 3),
                                              .data = TKV_SLICE(data[i], dl)};
        }
        struct tkv_raftlog_hardstate hs = {.term = 1, .vote = r, .commit = next[r] - 1};
        rv = tkv_raftlog_append(log, r, e, (size_t)n, &hs, NULL, NULL);
        next[r] += n;
        /* Compaction now and then: segments get purged (unlinked) too. */
        if (rv == 0 && k % 64 == 63 && next[r] > 80)
            rv = tkv_raftlog_compact(log, r, next[r] - 60, 0, NULL, NULL);
        if (rv == 0)
            rv = tkv_raftlog_flush(log);
        if (rv == 0 && k % 64 == 63)
            rv = tkv_raftlog_purge(log);
        if (rv) {
            fprintf(stderr, "raftlog step %" PRIu64 ": %s\n", k, tkv_strerror(rv));
            return 2;
        }
        printf("ack %" PRIu64 "\n", k + 1);
        fflush(stdout);
    }
}

/* io_uring mode: one reactor core stages up to 64 steps ahead; the log's
 * before-sleep hook writes each loop turn's steps as one batch (linked
 * write + fdatasync) and the callbacks fire in staging order, so the
 * callback of step k means steps 0..k are durable. */
static struct {
    const char *dir;
    struct tkv_reactor *r;
    struct tkv_raftlog *log;
    uint64_t next[NREG + 1];
    uint64_t k;
    int inflight;
} U;

static void u_done(void *arg, int rv)
{
    if (rv) {
        fprintf(stderr, "raftlog step %" PRIu64 ": %s\n", (uint64_t)(uintptr_t)arg,
                tkv_strerror(rv));
        _exit(2);
    }
    printf("ack %" PRIu64 "\n", (uint64_t)(uintptr_t)arg + 1);
    fflush(stdout);
    U.inflight--;
}

static void u_pump(void *arg)
{
    (void)arg;
    static uint8_t data[3][MAX_DATA];
    for (int j = 0; j < 4 && U.inflight < 64; j++, U.k++) {
        uint64_t r, n, k = U.k;
        raft_step(k, &r, &n);
        struct tkv_raftlog_entry e[3];
        for (uint64_t i = 0; i < n; i++) {
            uint64_t idx = U.next[r] + i;
            size_t dl = entry_data(r, idx, data[i]);
            e[i] = (struct tkv_raftlog_entry){.index = idx, .term = 1, .type = (uint32_t)(idx % 3),
                                              .data = TKV_SLICE(data[i], dl)};
        }
        struct tkv_raftlog_hardstate hs = {.term = 1, .vote = r, .commit = U.next[r] - 1};
        int rv = tkv_raftlog_append(U.log, r, e, (size_t)n, &hs, u_done, (void *)(uintptr_t)k);
        U.next[r] += n;
        if (rv == 0 && k % 64 == 63 && U.next[r] > 80)
            rv = tkv_raftlog_compact(U.log, r, U.next[r] - 60, 0, NULL, NULL);
        if (rv) {
            fprintf(stderr, "raftlog stage %" PRIu64 ": %s\n", k, tkv_strerror(rv));
            _exit(2);
        }
        U.inflight++;
    }
    tkv_reactor_defer(U.r, u_pump, NULL);
}

static int u_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    struct tkv_raftlog_config cfg = {.dir = U.dir, .reactor = r, .segment_size = SEG_SIZE,
                                     .max_batch_bytes = MAX_BATCH};
    int rv = tkv_raftlog_open(&cfg, &U.log, NULL);
    if (rv) {
        fprintf(stderr, "raftlog open: %s\n", tkv_strerror(rv));
        _exit(2);
    }
    U.r = r;
    for (uint64_t k = 1; k <= NREG; k++)
        U.next[k] = tkv_raftlog_last_index(U.log, k) + 1;
    tkv_reactor_defer(r, u_pump, NULL);
    return 0;
}

static int raft_write_uring(const char *dir)
{
    U.dir = dir;
    struct tkv_reactor_config cfg = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, u_init, NULL, NULL, &g);
    if (rv) {
        fprintf(stderr, "io_uring unavailable: %s\n", tkv_strerror(rv));
        return 4;
    }
    (void)tkv_reactor_group_wait(g);
    return 2; /* the loop never ends by itself */
}

static int raft_verify(const char *dir, uint64_t acked)
{
    uint64_t want[NREG + 1] = {0};
    for (uint64_t k = 0; k < acked; k++) {
        uint64_t r, n;
        raft_step(k, &r, &n);
        want[r] += n;
    }
    struct tkv_raftlog_config cfg = {.dir = dir, .segment_size = SEG_SIZE,
                                     .max_batch_bytes = MAX_BATCH};
    struct tkv_raftlog *log;
    struct tkv_raftlog_corruption where = {0};
    int rv = tkv_raftlog_open(&cfg, &log, &where);
    if (rv) {
        printf("verify raftlog: acknowledged %" PRIu64 " steps: recovery FAILED: %s (%s at %" PRIu64
               ")\n",
               acked, tkv_strerror(rv), where.path, where.offset);
        return 2;
    }
    uint64_t lost = 0, wrong = 0, got_total = 0, want_total = 0;
    static uint8_t data[MAX_DATA];
    for (uint64_t r = 1; r <= NREG; r++) {
        uint64_t first = tkv_raftlog_first_index(log, r);
        uint64_t last = tkv_raftlog_last_index(log, r);
        want_total += want[r];
        got_total += last;
        if (last < want[r]) {
            lost += want[r] - last;
            fprintf(stderr, "region %" PRIu64 ": acknowledged up to %" PRIu64
                            ", recovered up to %" PRIu64 "\n",
                    r, want[r], last);
        }
        if (last < first)
            continue;
        struct tkv_raftlog_entry *e = NULL;
        size_t n = 0;
        rv = tkv_raftlog_read(log, r, first, last + 1, 0, &e, &n);
        if (rv || n != last - first + 1) {
            fprintf(stderr, "region %" PRIu64 ": read [%" PRIu64 ", %" PRIu64 "]: %s\n", r, first,
                    last, tkv_strerror(rv));
            wrong++;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            size_t dl = entry_data(r, first + i, data);
            if (e[i].index != first + i || e[i].term != 1 ||
                e[i].type != (uint32_t)((first + i) % 3) || e[i].data.len != dl ||
                memcmp(e[i].data.ptr, data, dl) != 0) {
                fprintf(stderr, "region %" PRIu64 ": entry %" PRIu64 " is not what was written\n",
                        r, first + i);
                wrong++;
            }
        }
        tkv_free(e);
    }
    tkv_raftlog_close(log);
    printf("verify raftlog: acknowledged %" PRIu64 " steps = %" PRIu64
           " entries, recovered %" PRIu64 " entries, lost %" PRIu64 ", wrong %" PRIu64 "\n",
           acked, want_total, got_total, lost, wrong);
    return lost || wrong ? 1 : 0;
}

/* ---- engine ---- */

static size_t value_of(uint64_t i, uint8_t *out)
{
    return entry_data(0, i, out);
}

static void key_of(char k[24], uint64_t i)
{
    snprintf(k, 24, "key%016" PRIu64, i);
}

static int engine_write(const char *dir)
{
    struct tkv_engine_opts o = {.kind = TKV_ENGINE_WT, .path = dir, .sync = true,
                                .cache_bytes = 32u << 20};
    struct tkv_engine *e;
    struct tkv_engine_session *s;
    int rv = tkv_engine_open(&o, &e);
    if (rv == 0)
        rv = tkv_engine_session_open(e, &s);
    if (rv) {
        fprintf(stderr, "engine open: %s\n", tkv_strerror(rv));
        return 2;
    }
    static uint8_t v[MAX_DATA];
    char k[24];
    for (uint64_t i = 0;; i++) {
        struct tkv_engine_batch b;
        tkv_engine_batch_init(&b);
        size_t n = value_of(i, v);
        key_of(k, i);
        tkv_engine_batch_put(&b, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), TKV_SLICE(v, n));
        tkv_engine_batch_put(&b, TKV_CF_META, TKV_SLICE_STR("last"), TKV_SLICE(&i, sizeof(i)));
        rv = tkv_engine_write(s, &b);
        tkv_engine_batch_close(&b);
        if (rv) {
            fprintf(stderr, "engine write %" PRIu64 ": %s\n", i, tkv_strerror(rv));
            return 2;
        }
        printf("ack %" PRIu64 "\n", i + 1);
        fflush(stdout);
    }
}

static int engine_verify(const char *dir, uint64_t acked)
{
    struct tkv_engine_opts o = {.kind = TKV_ENGINE_WT, .path = dir, .sync = true,
                                .cache_bytes = 32u << 20};
    struct tkv_engine *e;
    struct tkv_engine_session *s = NULL;
    int rv = tkv_engine_open(&o, &e);
    if (rv == 0)
        rv = tkv_engine_session_open(e, &s);
    if (rv) {
        printf("verify engine: acknowledged %" PRIu64 " writes: recovery FAILED: %s\n", acked,
               tkv_strerror(rv));
        return 2;
    }
    struct tkv_slice v;
    uint64_t recovered = 0, wrong = 0, last;
    rv = tkv_engine_get(s, TKV_CF_META, TKV_SLICE_STR("last"), &v);
    if (rv == 0 && v.len == sizeof(last)) {
        memcpy(&last, v.ptr, sizeof(last));
        recovered = last + 1;
    } else if (rv != TKV_ENOTFOUND) {
        fprintf(stderr, "meta last: %s (len %zu)\n", tkv_strerror(rv), v.len);
        wrong++;
    }
    /* Every write up to the recovered one, whole, and none after it. */
    static uint8_t want[MAX_DATA];
    char k[24];
    for (uint64_t i = 0; i <= recovered; i++) {
        key_of(k, i);
        rv = tkv_engine_get(s, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), &v);
        if (i == recovered) {
            if (rv != TKV_ENOTFOUND) {
                fprintf(stderr, "write %" PRIu64 " present beyond the recovered last\n", i);
                wrong++;
            }
            break;
        }
        size_t n = value_of(i, want);
        if (rv != 0 || v.len != n || memcmp(v.ptr, want, n) != 0) {
            fprintf(stderr, "write %" PRIu64 " missing or corrupt (%s)\n", i, tkv_strerror(rv));
            wrong++;
        }
    }
    tkv_engine_session_close(s);
    tkv_engine_close(e);
    uint64_t lost = acked > recovered ? acked - recovered : 0;
    printf("verify engine: acknowledged %" PRIu64 " writes, recovered %" PRIu64 ", lost %" PRIu64
           ", wrong %" PRIu64 "\n",
           acked, recovered, lost, wrong);
    return lost || wrong ? 1 : 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: tkv-powercut-driver write raftlog|raftlog-uring|engine DIR\n"
                    "       tkv-powercut-driver verify raftlog|raftlog-uring|engine DIR ACKED\n");
    return 64;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return usage();
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    bool uring = strcmp(argv[2], "raftlog-uring") == 0;
    bool raft = uring || strcmp(argv[2], "raftlog") == 0;
    if (!raft && strcmp(argv[2], "engine") != 0)
        return usage();
    if (strcmp(argv[1], "write") == 0 && argc == 4) {
        enable_failpoint();
        if (uring)
            return raft_write_uring(argv[3]);
        return raft ? raft_write(argv[3]) : engine_write(argv[3]);
    }
    if (strcmp(argv[1], "verify") == 0 && argc == 5) {
        uint64_t acked = strtoull(argv[4], NULL, 10);
        return raft ? raft_verify(argv[3], acked) : engine_verify(argv[3], acked);
    }
    return usage();
}
