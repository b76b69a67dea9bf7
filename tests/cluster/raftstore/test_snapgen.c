/* Snapshot generation spread over many Ready turns (TINYKV-API.md 2.10,
 * src/raftstore/rs_snapgen.c) in the deterministic simulation: a follower
 * cut off while clients write falls behind log GC, then catches up by a
 * snapshot generated a small budget per turn while the clients keep
 * writing. Checked: the simulator's snapshot oracle (every snapshot sent is
 * byte for byte the region at its index, read in one go when generation
 * started), linearizability of the whole history, the follower's final
 * data equal to the leader's, that generation spanned many turns and no
 * turn read more than the budget. Negative control (test builds): the
 * failpoint raftstore/snapgen_fresh_view reads each turn from a fresh
 * engine view; the oracle must catch the writes leaking in.
 * TKV_SEED=<n> replays one seed; TKV_SEEDS=<n> runs n. */
#include <criterion/criterion.h>
#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rs_sim.h"
#include "tkv/err.h"

#ifndef SNAPGEN_DEFAULT_SEEDS
#define SNAPGEN_DEFAULT_SEEDS 2
#endif

#define BUDGET 256
#define N_KEYS 150

static uint64_t seed_of(int i)
{
    const char *e = getenv("TKV_SEED");
    return e ? strtoull(e, NULL, 10) : (uint64_t)(i + 1) * 104729u;
}

static int seed_count(void)
{
    if (getenv("TKV_SEED"))
        return 1;
    const char *e = getenv("TKV_SEEDS");
    return e ? atoi(e) : SNAPGEN_DEFAULT_SEEDS;
}

struct outcome {
    bool failed;
    char err[512];
    uint64_t generated, started, turns, max_turn_bytes, applied_by_lagger;
    uint64_t checked, unchecked, overlapped;
    size_t max_len;
    int lagger;
};

/* Clients on throughout; a follower is cut off for a second (the log moves
 * far past the GC limit), then healed. */
static void run_scenario(uint64_t seed, struct outcome *out)
{
    memset(out, 0, sizeof(*out));
    struct sim_opts o = {.n_stores = 3,
                         .n_clients = 4,
                         .gc_limit = 20,
                         .n_keys = N_KEYS,
                         .value_len = 100,
                         .snap_gen_budget = BUDGET};
    struct sim s;
    sim_init(&s, &o, seed);
    sim_run(&s, 400);
    sim_clients(&s, true);
    sim_run(&s, 1000); /* most keys written: the region is ~17 KB */
    int leader = sim_leader(&s);
    int lagger = leader ? leader % 3 + 1 : 3;
    out->lagger = lagger;
    int side[1] = {lagger};
    sim_partition(&s, side, 1);
    sim_run(&s, 1000);
    sim_heal(&s);
    sim_run(&s, 1500); /* the lagger catches up while clients write */
    sim_clients(&s, false);
    sim_run(&s, 1500);
    if (!s.failed)
        sim_final_check(&s);
    /* the lagger holds what the leader holds */
    int now_leader = sim_leader(&s);
    for (uint32_t k = 0; k < N_KEYS && !s.failed && now_leader && now_leader != lagger; k++) {
        char key[32], a[256], b[256];
        snprintf(key, sizeof(key), "k%04u", k);
        int ra = sim_engine_get(&s, now_leader, TKV_CF_DEFAULT, key, a, sizeof(a));
        int rb = sim_engine_get(&s, lagger, TKV_CF_DEFAULT, key, b, sizeof(b));
        if (ra != rb || (ra == 0 && strcmp(a, b) != 0))
            sim_fail(&s, "store %d (caught up) differs from the leader %d at %s", lagger,
                     now_leader, key);
    }
    for (int i = 1; i <= 3; i++) {
        struct tkv_raftstore_stats st;
        tkv_raftstore_stats(sim_store(&s, i), &st);
        out->generated += st.snapshots_generated;
        out->started += st.snap_gen_started;
        out->turns += st.snap_gen_turns;
        out->max_turn_bytes = TKV_MAX(out->max_turn_bytes, st.snap_gen_max_turn_bytes);
        if (i == lagger)
            out->applied_by_lagger = st.snapshots_applied;
    }
    out->checked = s.n_snap_checked;
    out->unchecked = s.n_snap_unchecked;
    out->overlapped = s.n_snap_gen_overlapped;
    out->max_len = s.max_snap_checked_len;
    out->failed = s.failed;
    snprintf(out->err, sizeof(out->err), "%s", s.err);
    sim_close(&s);
}

Test(snapgen, LaggingFollowerCatchesUpWhileWritesContinue, .timeout = 600)
{
    for (int i = 0; i < seed_count(); i++) {
        uint64_t seed = seed_of(i);
        struct outcome r;
        run_scenario(seed, &r);
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr,
                    "seed %llu: lagger %d, %llu generations (%llu started) in %llu turns, "
                    "max %llu bytes per turn, largest snapshot %zu bytes, %llu checked, %llu "
                    "with writes during generation, %llu applied by the lagger\n",
                    (unsigned long long)seed, r.lagger, (unsigned long long)r.generated,
                    (unsigned long long)r.started, (unsigned long long)r.turns,
                    (unsigned long long)r.max_turn_bytes, r.max_len, (unsigned long long)r.checked,
                    (unsigned long long)r.overlapped, (unsigned long long)r.applied_by_lagger);
        cr_assert(!r.failed, "%s (replay: TKV_SEED=%llu)", r.err, (unsigned long long)seed);
        cr_assert(r.applied_by_lagger >= 1, "the lagging store %d applied no snapshot (seed %llu)",
                  r.lagger, (unsigned long long)seed);
        cr_assert(r.generated >= 1 && r.checked >= 1,
                  "no snapshot generated (%llu) or checked by the oracle (%llu) (seed %llu)",
                  (unsigned long long)r.generated, (unsigned long long)r.checked,
                  (unsigned long long)seed);
        cr_assert_eq(r.unchecked, 0, "%llu snapshots sent without a recorded generation (seed %llu)",
                     (unsigned long long)r.unchecked, (unsigned long long)seed);
        cr_assert(r.max_turn_bytes <= BUDGET, "a turn read %llu bytes, budget %d (seed %llu)",
                  (unsigned long long)r.max_turn_bytes, BUDGET, (unsigned long long)seed);
        /* payload bytes <= budget units read, so the largest snapshot alone
         * took at least max_len / BUDGET turns */
        cr_assert(r.max_len >= 16 * BUDGET,
                  "largest snapshot %zu bytes: not several turns of %d (seed %llu)", r.max_len,
                  BUDGET, (unsigned long long)seed);
        cr_assert(r.turns >= r.max_len / BUDGET, "%llu generation turns for a %zu-byte snapshot",
                  (unsigned long long)r.turns, r.max_len);
        cr_assert(r.overlapped >= 1,
                  "no generation overlapped client writes: the scenario tests nothing (seed %llu)",
                  (unsigned long long)seed);
    }
}

#ifdef FIU_ENABLE
/* A generator that opens a fresh read view per turn lets writes applied
 * during generation into the snapshot: the oracle must say so. */
Test(snapgen_negative, FreshViewPerTurnIsCaught, .timeout = 600)
{
    fiu_init(0);
    fiu_enable("raftstore/snapgen_fresh_view", 1, NULL, 0);
    struct outcome r;
    run_scenario(seed_of(0), &r);
    fiu_disable("raftstore/snapgen_fresh_view");
    if (getenv("TKV_RS_VERBOSE"))
        fprintf(stderr, "fresh view per turn: %s\n", r.failed ? r.err : "not caught");
    cr_assert(r.failed && strstr(r.err, "differs from the region at that index"),
              "a snapshot read from a fresh view per turn went unnoticed (%s)",
              r.failed ? r.err : "run passed");
}
#endif
