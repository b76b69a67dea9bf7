/* TinyKV's raftstore scenarios of projects 2B and 2C (TINYKV-API.md 3.3)
 * on the deterministic simulator, every client history checked for
 * linearizability; and the checker itself caught on injected bugs.
 * TKV_SEED=<n> replays one seed; TKV_SEEDS=<n> runs n seeds per scenario
 * (the long label runs many). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rs_sim.h"
#include "tkv/err.h"

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

#ifndef RS_DEFAULT_SEEDS
#define RS_DEFAULT_SEEDS 2
#endif

static uint64_t seed_base(void)
{
    const char *e = getenv("TKV_SEED");
    return e ? strtoull(e, NULL, 10) : 0;
}

static int seed_count(void)
{
    if (getenv("TKV_SEED"))
        return 1;
    const char *e = getenv("TKV_SEEDS");
    return e ? atoi(e) : RS_DEFAULT_SEEDS;
}

static void run_generic(const char *name, int clients, bool unreliable, bool crash, bool partitions,
                        uint64_t gc_limit)
{
    uint64_t base = seed_base();
    int n = seed_count();
    for (int i = 0; i < n; i++) {
        uint64_t seed = base ? base : (uint64_t)(i + 1) * 7919u + (uint64_t)strlen(name);
        struct sim_opts o = {.n_stores = 5,
                             .n_clients = clients,
                             .unreliable = unreliable,
                             .crash = crash,
                             .partitions = partitions,
                             .gc_limit = gc_limit,
                             .iterations = 3,
                             .iteration_ms = 1000,
                             .n_keys = 4 * clients + 4};
        struct sim s;
        sim_init(&s, &o, seed);
        sim_generic(&s);
        bool failed = s.failed;
        char err[512];
        snprintf(err, sizeof(err), "%s", s.err);
        uint64_t puts = s.n_ok_puts, gets = s.n_ok_gets, unknown = s.n_unknown;
        sim_close(&s);
        cr_assert(!failed, "%s failed: %s (replay: TKV_SEED=%llu)", name, err,
                  (unsigned long long)seed);
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "%s seed %llu: %llu puts, %llu gets, %llu unknown\n", name,
                    (unsigned long long)seed, (unsigned long long)puts, (unsigned long long)gets,
                    (unsigned long long)unknown);
    }
}

TestSuite(raftstore_2b, .timeout = 600);
TestSuite(raftstore_2c, .timeout = 600);

Test(raftstore_2b, TestBasic2B) { run_generic("TestBasic2B", 1, false, false, false, 0); }
Test(raftstore_2b, TestConcurrent2B) { run_generic("TestConcurrent2B", 5, false, false, false, 0); }
Test(raftstore_2b, TestUnreliable2B) { run_generic("TestUnreliable2B", 5, true, false, false, 0); }
Test(raftstore_2b, TestManyPartitionsOneClient2B)
{
    run_generic("TestManyPartitionsOneClient2B", 1, false, false, true, 0);
}
Test(raftstore_2b, TestManyPartitionsManyClients2B)
{
    run_generic("TestManyPartitionsManyClients2B", 5, false, false, true, 0);
}
Test(raftstore_2b, TestPersistOneClient2B) { run_generic("TestPersistOneClient2B", 1, false, true, false, 0); }
Test(raftstore_2b, TestPersistConcurrent2B) { run_generic("TestPersistConcurrent2B", 5, false, true, false, 0); }
Test(raftstore_2b, TestPersistConcurrentUnreliable2B)
{
    run_generic("TestPersistConcurrentUnreliable2B", 5, true, true, false, 0);
}
Test(raftstore_2b, TestPersistPartition2B) { run_generic("TestPersistPartition2B", 5, false, true, true, 0); }
Test(raftstore_2b, TestPersistPartitionUnreliable2B)
{
    run_generic("TestPersistPartitionUnreliable2B", 5, true, true, true, 0);
}
Test(raftstore_2c, TestSnapshotRecover2C) { run_generic("TestSnapshotRecover2C", 1, false, true, false, 100); }
Test(raftstore_2c, TestSnapshotRecoverManyClients2C)
{
    run_generic("TestSnapshotRecoverManyClients2C", 20, false, true, false, 100);
}
Test(raftstore_2c, TestSnapshotUnreliable2C) { run_generic("TestSnapshotUnreliable2C", 5, true, false, false, 100); }
Test(raftstore_2c, TestSnapshotUnreliableRecover2C)
{
    run_generic("TestSnapshotUnreliableRecover2C", 5, true, true, false, 100);
}
Test(raftstore_2c, TestSnapshotUnreliableRecoverConcurrentPartition2C)
{
    run_generic("TestSnapshotUnreliableRecoverConcurrentPartition2C", 5, true, true, true, 100);
}

/* Leader in the majority: writes succeed and the minority does not see
 * them; then the old leader in a minority: a new leader is elected, the
 * minority keeps the old value; after healing the old leader catches up. */
Test(raftstore_2b, TestOnePartition2B)
{
    uint64_t seed = seed_base() ? seed_base() : 42;
    struct sim_opts o = {.n_stores = 5, .n_clients = 0, .n_keys = 1};
    struct sim s;
    sim_init(&s, &o, seed);
    sim_run(&s, 400);
    int l = sim_leader(&s);
    cr_assert(l, "no leader (TKV_SEED=%llu)", (unsigned long long)seed);
    cr_assert_eq(sim_put(&s, TKV_CF_DEFAULT, "k1", "v1", 5000), 0);
    sim_run(&s, 200); /* every store applies v1 */
    /* leader plus one follower on the majority side */
    int a[3] = {l, l % 5 + 1, (l + 1) % 5 + 1};
    sim_partition(&s, a, 3);
    cr_assert_eq(sim_put(&s, TKV_CF_DEFAULT, "k1", "changed", 5000), 0);
    sim_run(&s, 300);
    char v[64];
    for (int i = 1; i <= 5; i++) {
        bool majority = i == a[0] || i == a[1] || i == a[2];
        int rv = sim_engine_get(&s, i, TKV_CF_DEFAULT, "k1", v, sizeof(v));
        cr_assert_eq(rv, 0);
        if (!majority)
            cr_assert_str_eq(v, "v1", "minority store %d saw a write it cannot have", i);
    }
    /* now put the old leader in the minority */
    int b[2] = {l, a[1]};
    sim_partition(&s, b, 2);
    sim_run(&s, 500);
    int nl = sim_leader(&s);
    cr_assert(nl && nl != l && nl != a[1], "no new leader in the majority");
    cr_assert_eq(sim_put(&s, TKV_CF_DEFAULT, "k1", "changed again", 5000), 0);
    cr_assert_eq(sim_engine_get(&s, l, TKV_CF_DEFAULT, "k1", v, sizeof(v)), 0);
    cr_assert_str_eq(v, "changed", "minority old leader applied a write it cannot have");
    sim_heal(&s);
    sim_run(&s, 500);
    cr_assert_eq(sim_engine_get(&s, l, TKV_CF_DEFAULT, "k1", v, sizeof(v)), 0);
    cr_assert_str_eq(v, "changed again", "old leader did not catch up after healing");
    cr_assert(!s.failed, "%s", s.err);
    sim_close(&s);
}

/* 3 stores, GC limit 10, writes in the lock CF; isolate store 1, write
 * 15 keys and delete k2; heal: store 1 gets the data by snapshot (k2
 * gone); restart store 1; its log was trimmed. */
Test(raftstore_2c, TestOneSnapshot2C)
{
    uint64_t seed = seed_base() ? seed_base() : 7;
    struct sim_opts o = {.n_stores = 3, .n_clients = 0, .gc_limit = 10, .n_keys = 1};
    struct sim s;
    sim_init(&s, &o, seed);
    sim_run(&s, 400);
    cr_assert_eq(sim_put(&s, TKV_CF_LOCK, "k1", "v1", 5000), 0);
    cr_assert_eq(sim_put(&s, TKV_CF_LOCK, "k2", "v2", 5000), 0);
    char v[64];
    sim_run(&s, 100);
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_LOCK, "k1", v, sizeof(v)), 0);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&s, 1), 1, &st);
    cr_assert_eq(st.truncated_index, 5, "truncated state starts at (5,5)");
    int others[2] = {2, 3};
    sim_partition(&s, others, 2);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i + 3);
        cr_assert_eq(sim_put(&s, TKV_CF_LOCK, k, "v", 5000), 0, "put %s", k);
    }
    cr_assert_eq(sim_delete(&s, TKV_CF_LOCK, "k2", 5000), 0);
    sim_run(&s, 500);
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_LOCK, "k2", v, sizeof(v)), 0,
                 "store 1 is isolated and still has k2");
    sim_heal(&s);
    sim_run(&s, 1000);
    struct tkv_raftstore_stats stats;
    tkv_raftstore_stats(sim_store(&s, 1), &stats);
    cr_assert_geq(stats.snapshots_applied, 1, "store 1 caught up without a snapshot");
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_LOCK, "k2", v, sizeof(v)), TKV_ENOTFOUND,
                 "the delete did not reach store 1");
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_LOCK, "k50", v, sizeof(v)), 0);
    sim_crash(&s, 1);
    sim_restart(&s, 1);
    sim_run(&s, 500);
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_LOCK, "k102", v, sizeof(v)), 0);
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_LOCK, "k2", v, sizeof(v)), TKV_ENOTFOUND);
    tkv_raftstore_region_status(sim_store(&s, 1), 1, &st);
    cr_assert_gt(st.truncated_index, 5, "log of store 1 was never trimmed");
    cr_assert_leq(st.applied - st.truncated_index, 2 * o.gc_limit);
    cr_assert(!s.failed, "%s", s.err);
    sim_close(&s);
}

/* ---- the crash window of snapshot apply and peer destroy ----
 * The core never checkpoints: a snapshot / a destroyed peer's Tombstone is
 * one engine write, durable only with the next background checkpoint, and
 * the raft log side (compaction to the snapshot / forgetting the region)
 * waits for it (README "Durability"). A crash in between must find a
 * consistent region: these run the window on purpose and end with store
 * 1 (or the survivors) serving a linearizable history. */

/* 3 stores, GC at 10 entries, 3 clients; store 1 cut off while 60 more
 * keys are written (its log position is compacted away on the others):
 * after the heal it needs a snapshot. */
static void snap_scenario_start(struct sim *s, struct sim_opts *o, uint64_t seed)
{
    sim_init(s, o, seed);
    sim_run(s, 400);
    int others[2] = {2, 3};
    sim_partition(s, others, 2);
    sim_clients(s, true);
    for (int i = 0; i < 60; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(sim_put(s, TKV_CF_DEFAULT, k, "v", 5000), 0, "put %s", k);
    }
    sim_run(s, 300);
    sim_heal(s);
}

/* Store 1 leads, then the clients stop and every key is read through it
 * (sim_final_check: linearizability of the whole history). */
static void snap_scenario_end(struct sim *s)
{
    sim_run(s, 500);
    char v[16];
    cr_assert_eq(sim_engine_get(s, 1, TKV_CF_DEFAULT, "k59", v, sizeof(v)), 0,
                 "store 1 never got the region's data back (%s)", s->failed ? s->err : "");
    cr_assert_eq(sim_must_transfer_leader(s, 1, 1, 5000), 0, "store 1 cannot lead: %s", s->err);
    sim_clients(s, false);
    sim_run(s, 1100);
    cr_assert_eq(sim_put(s, TKV_CF_DEFAULT, "after", "x", 5000), 0);
    sim_final_check(s);
    cr_assert(!s->failed, "%s", s->err);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(s, 1), 1, &st);
    cr_assert(st.is_leader, "final reads were not served by store 1");
    cr_assert_geq(st.first_index, st.truncated_index + 1);
}

static uint64_t window_seed(uint64_t dflt)
{
    return seed_base() ? seed_base() : dflt;
}

/* Crash after the snapshot's turn was synced, before any checkpoint: the
 * engine forgets the snapshot (so it was not checkpointed on the core) and
 * the raft log still holds what the old state replays from: store 1
 * restarts as before the snapshot and is sent a new one. */
static void snapshot_crash_before_checkpoint(uint64_t seed, char *err, size_t cap)
{
    struct sim_opts o = {.n_stores = 3, .n_clients = 3, .n_keys = 3, .gc_limit = 10,
                         .crash_on_snapshot = 1};
    struct sim s;
    snap_scenario_start(&s, &o, seed);
    for (int i = 0; i < 2000 && s.o.crash_on_snapshot && !s.failed; i++)
        sim_run(&s, 1);
    err[0] = 0;
    if (s.o.crash_on_snapshot || sim_store(&s, 1)) {
        snprintf(err, cap, "store 1 never applied a snapshot");
    } else {
        char v[16];
        if (sim_engine_get(&s, 1, TKV_CF_DEFAULT, "k59", v, sizeof(v)) != TKV_ENOTFOUND)
            snprintf(err, cap, "the snapshot survived the crash: checkpointed on the core");
    }
    if (!err[0]) {
        sim_restart(&s, 1);
        if (s.failed)
            snprintf(err, cap, "restart after the crash failed: %.180s", s.err);
    }
    if (!err[0]) {
        struct tkv_rs_region_status st;
        tkv_raftstore_region_status(sim_store(&s, 1), 1, &st);
        if (!st.exists || st.applied >= 60)
            snprintf(err, cap, "store 1 restarted at applied %llu, not before the snapshot",
                     (unsigned long long)st.applied);
    }
    if (!err[0]) {
        sim_run(&s, 500);
        char v[16];
        if (s.failed)
            snprintf(err, cap, "%.180s", s.err);
        else if (sim_engine_get(&s, 1, TKV_CF_DEFAULT, "k59", v, sizeof(v)) != 0)
            snprintf(err, cap, "store 1 never caught up after the crash");
    }
    if (!err[0])
        snap_scenario_end(&s);
    sim_close(&s);
}

Test(raftstore_2c, snapshot_crash_before_its_checkpoint)
{
    char err[256];
    snapshot_crash_before_checkpoint(window_seed(11), err, sizeof(err));
    cr_assert(!err[0], "%s", err);
}

/* The checkpoint covering the snapshot completed (_done released the held
 * update), the crash loses the raft log compaction it staged: the engine
 * keeps the snapshot and open repairs the raft log behind it. */
Test(raftstore_2c, snapshot_crash_after_its_checkpoint_before_log_truncation)
{
    struct sim_opts o = {.n_stores = 3, .n_clients = 3, .n_keys = 3, .gc_limit = 10,
                         .crash_on_snapshot_release = 1};
    struct sim s;
    snap_scenario_start(&s, &o, window_seed(11));
    for (int i = 0; i < 2000 && s.o.crash_on_snapshot_release && !s.failed; i++)
        sim_run(&s, 1);
    cr_assert_eq(s.o.crash_on_snapshot_release, 0, "no snapshot was released on store 1");
    cr_assert_null(sim_store(&s, 1), "store 1 did not crash");
    char v[16];
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_DEFAULT, "k59", v, sizeof(v)), 0,
                 "the checkpointed snapshot was lost");
    sim_restart(&s, 1);
    cr_assert(!s.failed, "restart after the crash failed: %.180s", s.err);
    snap_scenario_end(&s);
    sim_close(&s);
}

/* The snapshot waits for its checkpoint a long while (none begins on store
 * 1 for 1.5 s) as the clients go on writing and the leader keeps sending:
 * raft's events pile up behind the held update, nothing leaves store 1
 * for the region, and it all goes on once the checkpoint came. */
Test(raftstore_2c, snapshot_held_while_checkpoints_stall)
{
    struct sim_opts o = {.n_stores = 3, .n_clients = 3, .n_keys = 3, .gc_limit = 10};
    struct sim s;
    sim_init(&s, &o, window_seed(13));
    s.ckpt_held_store = 1;
    /* snap_scenario_start's steps, store 1's checkpoints held throughout */
    sim_run(&s, 400);
    int others[2] = {2, 3};
    sim_partition(&s, others, 2);
    sim_clients(&s, true);
    for (int i = 0; i < 60; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(sim_put(&s, TKV_CF_DEFAULT, k, "v", 5000), 0, "put %s", k);
    }
    sim_run(&s, 300);
    sim_heal(&s);
    struct tkv_raftstore_stats before;
    tkv_raftstore_stats(sim_store(&s, 1), &before);
    sim_run(&s, 1500);
    struct tkv_raftstore_stats mid;
    tkv_raftstore_stats(sim_store(&s, 1), &mid);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&s, 1), 1, &st);
    cr_assert_gt(mid.snapshots_applied, before.snapshots_applied, "no snapshot reached store 1");
    cr_assert_eq(mid.ckpt_waits_done, before.ckpt_waits_done, "released without a checkpoint");
    cr_assert_lt(st.first_index, 60, "the raft log was compacted to the snapshot before its "
                                     "checkpoint (first index %llu)",
                 (unsigned long long)st.first_index);
    s.ckpt_held_store = 0;
    snap_scenario_end(&s);
    sim_close(&s);
}

/* Store 3's peer is removed; store 3 crashes after the destroying turn's
 * sync, before any checkpoint: the Tombstone is lost, the raft log kept
 * the region, so it restarts live, replays its removal and is destroyed
 * again; once a checkpoint covers it, a restart finds it gone for good. */
static void destroy_crash_before_checkpoint(uint64_t seed, char *err, size_t cap)
{
    struct sim_opts o = {.n_stores = 3, .n_clients = 3, .n_keys = 3, .crash_on_destroy = 3};
    struct sim s;
    sim_init(&s, &o, seed);
    sim_run(&s, 400);
    sim_clients(&s, true);
    sim_run(&s, 300);
    err[0] = 0;
    struct tkv_rs_peer p3 = sim_sched_peer_on(&s, 1, 3);
    if (!p3.id || sim_must_remove_peer(&s, 1, p3, 5000) != 0)
        snprintf(err, cap, "removing store 3's peer failed: %.180s", s.err);
    for (int i = 0; i < 2000 && !err[0] && s.o.crash_on_destroy && !s.failed; i++)
        sim_run(&s, 1);
    if (!err[0] && (s.o.crash_on_destroy || sim_store(&s, 3)))
        snprintf(err, cap, "store 3 never destroyed its peer");
    if (!err[0]) {
        sim_restart(&s, 3);
        if (s.failed)
            snprintf(err, cap, "restart after the crash failed: %.180s", s.err);
    }
    struct tkv_rs_region_status st;
    if (!err[0]) {
        tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
        if (!st.exists)
            snprintf(err, cap, "the Tombstone survived the crash: checkpointed on the core");
    }
    if (!err[0]) {
        sim_run(&s, 1000);
        tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
        if (s.failed)
            snprintf(err, cap, "%.180s", s.err);
        else if (st.exists)
            snprintf(err, cap, "store 3 did not destroy its peer again after the restart");
    }
    if (!err[0]) {
        sim_run(&s, 300); /* checkpoints: the raft log forgets the region */
        sim_crash(&s, 3);
        sim_restart(&s, 3);
        tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
        if (s.failed)
            snprintf(err, cap, "second restart failed: %.180s", s.err);
        else if (st.exists)
            snprintf(err, cap, "the destroyed peer came back after a checkpointed removal");
    }
    if (!err[0]) {
        sim_clients(&s, false);
        sim_run(&s, 1100);
        sim_final_check(&s);
        if (s.failed)
            snprintf(err, cap, "%.180s", s.err);
    }
    sim_close(&s);
}

Test(raftstore_2c, destroy_crash_before_its_checkpoint)
{
    char err[256];
    destroy_crash_before_checkpoint(window_seed(17), err, sizeof(err));
    cr_assert(!err[0], "%s", err);
}

/* While the removal of store 3's old peer waits for a checkpoint (none
 * begins there), the region re-adds a peer on store 3: it is not created
 * before the raft log forgot the old one, and then is, and catches up. */
Test(raftstore_2c, readded_peer_waits_for_the_removal_checkpoint)
{
    struct sim_opts o = {.n_stores = 3, .n_clients = 3, .n_keys = 3};
    struct sim s;
    sim_init(&s, &o, window_seed(19));
    sim_run(&s, 400);
    sim_clients(&s, true);
    sim_run(&s, 300);
    struct tkv_rs_peer p3 = sim_sched_peer_on(&s, 1, 3);
    cr_assert(p3.id);
    s.ckpt_held_store = 3;
    cr_assert_eq(sim_must_remove_peer(&s, 1, p3, 5000), 0, "%.180s", s.err);
    sim_run(&s, 300);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
    cr_assert(!st.exists, "store 3 kept its removed peer");
    struct tkv_rs_peer np = {.id = sim_alloc_id(&s), .store_id = 3};
    sim_sched_add_peer(&s, 1, np);
    sim_run(&s, 1000);
    tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
    cr_assert(!st.exists, "a new peer was created while the old one's removal waited");
    s.ckpt_held_store = 0;
    for (int i = 0; i < 5000 && !(st.exists && st.peer_id == np.id && st.applied > 5); i++) {
        sim_run(&s, 1);
        tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
    }
    cr_assert(st.exists && st.peer_id == np.id, "the re-added peer never came to store 3");
    cr_assert_eq(sim_must_transfer_leader(&s, 1, 3, 5000), 0, "store 3 cannot lead: %.180s", s.err);
    sim_clients(&s, false);
    sim_run(&s, 1100);
    sim_final_check(&s);
    cr_assert(!s.failed, "%.180s", s.err);
    tkv_raftstore_region_status(sim_store(&s, 3), 1, &st);
    cr_assert(st.is_leader, "final reads were not served by store 3");
    sim_close(&s);
}

#ifdef FIU_ENABLE
/* Negative controls: the raft log side effect run at once (before the
 * checkpoint, i.e. the inline checkpoint simply dropped) must make the
 * directed crash tests fail. */
Test(raftstore_2c, negative_snapshot_log_compacted_before_checkpoint)
{
    fiu_init(0);
    fiu_enable("raftstore/snapshot_log_compacted_before_checkpoint", 1, NULL, 0);
    char err[256];
    snapshot_crash_before_checkpoint(window_seed(11), err, sizeof(err));
    fiu_disable("raftstore/snapshot_log_compacted_before_checkpoint");
    cr_assert(err[0], "the snapshot crash window went unnoticed with the compaction done early");
    fprintf(stderr, "negative control snapshot_log_compacted_before_checkpoint caught: %s\n", err);
}

Test(raftstore_2c, negative_destroy_log_removed_before_checkpoint)
{
    fiu_init(0);
    fiu_enable("raftstore/destroy_log_removed_before_checkpoint", 1, NULL, 0);
    char err[256];
    destroy_crash_before_checkpoint(window_seed(17), err, sizeof(err));
    fiu_disable("raftstore/destroy_log_removed_before_checkpoint");
    cr_assert(err[0], "the destroy crash window went unnoticed with the removal done early");
    fprintf(stderr, "negative control destroy_log_removed_before_checkpoint caught: %s\n", err);
}
#endif

/* ---- the checker (tests/lib/lincheck.h) catches injected bugs ---- */

/* The whole pipeline catches a real stale-read bug: gets are served from
 * the local engine of a random store (a lagging follower, a deposed
 * leader) without ReadIndex. */
Test(raftstore_checker, simulation_catches_reads_without_read_index)
{
    int caught = 0;
    for (uint64_t seed = 1; seed <= 6 && !caught; seed++) {
        struct sim_opts o = {.n_stores = 5, .n_clients = 5, .partitions = true, .iterations = 3,
                             .iteration_ms = 1000, .n_keys = 3, .inject_stale_read = true};
        struct sim s;
        sim_init(&s, &o, seed);
        sim_generic(&s);
        if (s.failed && strstr(s.err, "linearizability"))
            caught++;
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "seed %llu: %s\n", (unsigned long long)seed, s.failed ? s.err : "passed");
        sim_close(&s);
    }
    cr_assert(caught, "stale reads from followers went unnoticed in 6 seeds");
}

/* ... and a lost acknowledged write: puts acknowledged as soon as they are
 * proposed; a leader cut off in a minority (or crashed) loses them. */
Test(raftstore_checker, simulation_catches_writes_acknowledged_before_commit)
{
    int caught = 0;
    for (uint64_t seed = 1; seed <= 6 && !caught; seed++) {
        struct sim_opts o = {.n_stores = 5, .n_clients = 5, .partitions = true, .crash = true,
                             .iterations = 3, .iteration_ms = 1000, .n_keys = 3,
                             .inject_early_ack = true};
        struct sim s;
        sim_init(&s, &o, seed);
        sim_generic(&s);
        if (s.failed && strstr(s.err, "linearizability"))
            caught++;
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "seed %llu: %s\n", (unsigned long long)seed, s.failed ? s.err : "passed");
        sim_close(&s);
    }
    cr_assert(caught, "writes acknowledged before commit went unnoticed in 6 seeds");
}
