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

/* A store that crashes in the very turn it applies a snapshot (the engine
 * holds the snapshot, checkpointed; the raft log truncation to it was not
 * synced) restarts, repairs its raft log and keeps serving. */
Test(raftstore_2c, crash_between_snapshot_apply_and_log_truncation)
{
    uint64_t seed = seed_base() ? seed_base() : 11;
    struct sim_opts o = {.n_stores = 3, .n_clients = 0, .gc_limit = 10, .n_keys = 1,
                         .crash_on_snapshot = 1};
    struct sim s;
    sim_init(&s, &o, seed);
    sim_run(&s, 400);
    int others[2] = {2, 3};
    sim_partition(&s, others, 2);
    for (int i = 0; i < 60; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(sim_put(&s, TKV_CF_DEFAULT, k, "v", 5000), 0, "put %s", k);
    }
    sim_run(&s, 300);
    sim_heal(&s);
    for (int i = 0; i < 2000 && s.o.crash_on_snapshot; i++)
        sim_run(&s, 1);
    cr_assert_eq(s.o.crash_on_snapshot, 0, "store 1 never applied a snapshot");
    cr_assert_null(sim_store(&s, 1), "store 1 did not crash");
    sim_restart(&s, 1);
    cr_assert(!s.failed, "restart after the crash failed: %s", s.err);
    sim_run(&s, 500);
    char v[16];
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_DEFAULT, "k59", v, sizeof(v)), 0,
                 "store 1 lost the snapshot's data");
    cr_assert_eq(sim_put(&s, TKV_CF_DEFAULT, "after", "x", 5000), 0);
    sim_run(&s, 200);
    cr_assert_eq(sim_engine_get(&s, 1, TKV_CF_DEFAULT, "after", v, sizeof(v)), 0,
                 "store 1 does not follow the log after the repair");
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(sim_store(&s, 1), 1, &st);
    cr_assert_geq(st.first_index, st.truncated_index + 1);
    cr_assert(!s.failed, "%s", s.err);
    sim_close(&s);
}

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
