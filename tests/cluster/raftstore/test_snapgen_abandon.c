/* Abandoning a snapshot generation (src/raftstore/rs_snapgen.c) when its
 * region changes under it, on the deterministic simulator: a follower is
 * behind log GC, its leader generates the snapshot one pair per turn, and
 * while that runs the region splits, the leader's own peer is removed, or
 * leadership moves away. The generation must be abandoned (counted; its
 * read view and buffer freed: ASan's leak check runs at exit), nothing
 * stale may be sent (the simulator's snapshot oracle compares every
 * snapshot sent with the region at its index), and the follower must still
 * catch up from a later generation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rs_sim.h"
#include "tkv/err.h"

#define N_KEYS 150

struct fixture {
    struct sim s;
    int leader, lagger, other;
};

static struct tkv_raftstore_stats stats_of(struct fixture *f, int store)
{
    struct tkv_raftstore_stats st;
    memset(&st, 0, sizeof(st));
    if (sim_store(&f->s, store))
        tkv_raftstore_stats(sim_store(&f->s, store), &st);
    return st;
}

static bool generating(struct fixture *f, int store)
{
    struct tkv_raftstore_stats st = stats_of(f, store);
    return st.snap_gen_started > st.snapshots_generated + st.snap_gen_abandoned;
}

/* A lagging follower and its leader in the middle of generating the
 * snapshot it needs (one pair per turn: ~150 turns). */
static void setup(struct fixture *f, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    struct sim_opts o = {.n_stores = 3,
                         .n_clients = 4,
                         .gc_limit = 20,
                         .n_keys = N_KEYS,
                         .value_len = 100,
                         .snap_gen_budget = 64};
    sim_init(&f->s, &o, seed);
    sim_run(&f->s, 400);
    sim_clients(&f->s, true);
    sim_run(&f->s, 1000);
    f->leader = sim_leader(&f->s);
    cr_assert(f->leader, "no leader");
    f->lagger = f->leader % 3 + 1;
    f->other = 6 - f->leader - f->lagger;
    int side[1] = {f->lagger};
    sim_partition(&f->s, side, 1);
    sim_run(&f->s, 600);
    sim_clients(&f->s, false);
    sim_run(&f->s, 1000); /* clients done, the log compacted past the lagger */
    cr_assert_eq(sim_leader(&f->s), f->leader, "leadership moved during setup");
    sim_heal(&f->s);
    for (int ms = 0; ms < 2000 && !generating(f, f->leader) && !f->s.failed; ms++)
        sim_run(&f->s, 1);
    cr_assert(!f->s.failed, "%s", f->s.err);
    cr_assert(generating(f, f->leader), "store %d never started generating a snapshot",
              f->leader);
}

static void wait_abandoned(struct fixture *f)
{
    for (int ms = 0; ms < 500 && stats_of(f, f->leader).snap_gen_abandoned == 0 && !f->s.failed;
         ms++)
        sim_run(&f->s, 1);
    cr_assert(!f->s.failed, "%s", f->s.err);
    struct tkv_raftstore_stats st = stats_of(f, f->leader);
    cr_assert_eq(st.snap_gen_abandoned, 1, "generation not abandoned (started %llu, done %llu)",
                 (unsigned long long)st.snap_gen_started,
                 (unsigned long long)st.snapshots_generated);
    cr_assert(!generating(f, f->leader), "a generation still runs");
}

/* The lagger ends with region 1 at least as new as `version` and every
 * key of the history explained (linearizability). */
static void finish(struct fixture *f, uint64_t version)
{
    sim_run(&f->s, 3000);
    cr_assert(!f->s.failed, "%s", f->s.err);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&f->s, f->lagger), 1, &st);
    if (st.exists) {
        cr_assert(st.region.epoch.version >= version, "lagger's region 1 at version %llu",
                  (unsigned long long)st.region.epoch.version);
        struct tkv_raftstore_stats lg = stats_of(f, f->lagger);
        cr_assert(lg.snapshots_applied >= 1, "the lagger never got a snapshot");
    }
    cr_assert(f->s.n_snap_checked >= 1, "no snapshot sent");
    cr_assert_eq(f->s.n_snap_unchecked, 0);
    sim_final_check(&f->s);
    cr_assert(!f->s.failed, "%s", f->s.err);
    sim_close(&f->s);
}

static void on_done(void *arg, const struct tkv_rs_result *res)
{
    int *rv = arg;
    *rv = res->rv;
}

Test(snapgen_abandon, RegionSplitDuringGeneration)
{
    struct fixture f;
    setup(&f, 11);
    struct tkv_rs_region_status st;
    struct tkv_raftstore *rs = sim_store(&f.s, f.leader);
    tkv_raftstore_region_status(rs, 1, &st);
    uint64_t nid = sim_alloc_id(&f.s), ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = sim_alloc_id(&f.s);
    int rv = 1;
    tkv_raftstore_split(rs, 1, &st.region.epoch, TKV_SLICE("k0075", 5), nid, ids, 3, on_done, &rv);
    wait_abandoned(&f);
    cr_assert_eq(rv, 0, "split answered %d", rv);
    finish(&f, st.region.epoch.version + 1);
}

Test(snapgen_abandon, GeneratingPeerRemoved)
{
    struct fixture f;
    setup(&f, 12);
    struct tkv_rs_region_status st;
    struct tkv_raftstore *rs = sim_store(&f.s, f.leader);
    tkv_raftstore_region_status(rs, 1, &st);
    int rv = 1;
    tkv_raftstore_change_peer(rs, 1, &st.region.epoch, TKV_RS_REMOVE_PEER,
                              (struct tkv_rs_peer){.id = st.peer_id, .store_id = (uint64_t)f.leader},
                              on_done, &rv);
    wait_abandoned(&f);
    for (int ms = 0; ms < 1000 && rv == 1; ms++)
        sim_run(&f.s, 1);
    cr_assert_eq(rv, 0, "removal answered %d", rv);
    for (int ms = 0; ms < 1000 && stats_of(&f, f.leader).peers_destroyed == 0; ms++)
        sim_run(&f.s, 1);
    cr_assert_eq(stats_of(&f, f.leader).peers_destroyed, 1, "the removed leader kept its peer");
    finish(&f, 0);
}

Test(snapgen_abandon, LeaderStepsDownDuringGeneration)
{
    struct fixture f;
    setup(&f, 13);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&f.s, f.other), 1, &st);
    cr_assert_eq(tkv_raftstore_transfer_leader(sim_store(&f.s, f.leader), 1, st.peer_id), 0);
    wait_abandoned(&f);
    cr_assert_neq(sim_leader(&f.s), f.leader, "leadership did not move");
    finish(&f, 0);
}
