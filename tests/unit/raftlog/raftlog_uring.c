/* Drives a raft log on a real io_uring reactor (see raftlog_uring.h). */
#include "raftlog_uring.h"

#include <errno.h>
#include <fiu-control.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "tkv/err.h"
#include "tkv/reactor.h"

static struct uring_run *U;
static struct tkv_raftlog *L;
static struct tkv_reactor *R;
static int round_no, round_cbs, round_failed;
static atomic_int finished;

static void round_start(void *arg);

static void end_run(void)
{
    tkv_raftlog_stats(L, &U->stats);
    atomic_store(&finished, 1);
}

static int staged, acked;
static void pump(void *arg);

static void on_done(void *arg, int rv)
{
    (void)arg;
    if (U->continuous) {
        acked++;
        if (rv == 0) {
            U->completed++;
        } else {
            U->failed++;
            if (U->first_err == 0)
                U->first_err = rv;
        }
        if (acked == U->rounds * U->per_round || rv != 0)
            end_run();
        return;
    }
    if (rv == 0) {
        U->completed++;
    } else {
        U->failed++;
        round_failed++;
        if (U->first_err == 0)
            U->first_err = rv;
    }
    if (++round_cbs < U->per_round)
        return;
    if (round_failed) {
        uint8_t d = 1;
        /* The probe uses its own region so the next round's indexes stay
         * the durable last + 1. */
        struct tkv_raftlog_entry e = {.index = tkv_raftlog_last_index(L, 1000) + 1, .term = 1,
                                      .data = TKV_SLICE(&d, 1)};
#ifdef FIU_ENABLE
        if (U->disarm_after_failure && U->failpoint)
            fiu_disable(U->failpoint);
#endif
        U->append_after_failure = tkv_raftlog_append(L, 1000, &e, 1, NULL, NULL, NULL);
        if (!U->disarm_after_failure) {
            end_run();
            return;
        }
    }
    if (++round_no >= U->rounds) {
        end_run();
        return;
    }
    tkv_reactor_defer(R, round_start, NULL);
}

static void round_start(void *arg)
{
    (void)arg;
    round_cbs = 0;
    round_failed = 0;
#ifdef FIU_ENABLE
    if (U->failpoint && round_no == U->fail_round)
        fiu_enable(U->failpoint, 1, NULL, 0);
#endif
    uint8_t data[128];
    memset(data, 0xab, sizeof(data));
    for (int k = 0; k < U->per_round; k++) {
        tkv_region_id region = (tkv_region_id)k + 1;
        tkv_index next = tkv_raftlog_last_index(L, region) + 1;
        struct tkv_raftlog_entry e = {.index = next, .term = 1, .type = 0,
                                      .data = TKV_SLICE(data, sizeof(data))};
        int rv = tkv_raftlog_append(L, region, &e, 1, NULL, on_done, NULL);
        if (rv != 0) {
            U->failed++;
            if (U->first_err == 0)
                U->first_err = rv;
            end_run();
            return;
        }
    }
}

static bool stage_one(tkv_region_id region)
{
    uint8_t data[128];
    memset(data, 0xab, sizeof(data));
    tkv_index next = tkv_raftlog_last_index(L, region) + 1;
    struct tkv_raftlog_entry e = {.index = next, .term = 1, .type = 0,
                                  .data = TKV_SLICE(data, sizeof(data))};
    int rv = tkv_raftlog_append(L, region, &e, 1, NULL, on_done, NULL);
    if (rv != 0) {
        U->failed++;
        if (U->first_err == 0)
            U->first_err = rv;
        end_run();
        return false;
    }
    return true;
}

/* Continuous mode: every turn stages the next per_round appends, append k
 * to region k + 1 (index 1 each), while fewer than 4 rounds are
 * unacknowledged. */
static void pump(void *arg)
{
    (void)arg;
    if (atomic_load(&finished))
        return;
    int total = U->rounds * U->per_round;
    if (staged < total && staged - acked < 4 * U->per_round) {
        for (int k = 0; k < U->per_round && staged < total; k++, staged++)
            if (!stage_one((tkv_region_id)staged + 1))
                return;
    }
    if (staged < total)
        tkv_reactor_defer(R, pump, NULL);
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    R = r;
    struct tkv_raftlog_config cfg = {.dir = U->dir, .reactor = r,
                                     .segment_size = U->segment_size ? U->segment_size : 64 * 1024};
    U->open_rv = U->dir ? tkv_raftlog_open(&cfg, &L, NULL)
                        : tkv_raftlog_open_mem(&cfg, U->disk, &L, NULL);
    if (U->open_rv != 0) {
        atomic_store(&finished, 1);
        return 0;
    }
    tkv_reactor_defer(r, U->continuous ? pump : round_start, NULL);
    return 0;
}

static void core_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    tkv_raftlog_close(L);
    L = NULL;
}

int uring_run(struct uring_run *u)
{
    U = u;
    round_no = 0;
    staged = acked = 0;
    atomic_store(&finished, 0);
    struct tkv_reactor_config cfg = {.n_cores = 1};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, core_init, core_fini, NULL, &g);
    if (rv != 0)
        return rv;
    for (int i = 0; i < 3000 && !atomic_load(&finished); i++)
        usleep(10 * 1000);
    u->timed_out = !atomic_load(&finished);
    tkv_reactor_group_stop(g);
    return tkv_reactor_group_wait(g);
}
