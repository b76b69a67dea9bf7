/* TinyKV's raftstore scenarios of project 3B without split (TINYKV-API.md
 * 3.3): leader transfer, conf change (add / remove peers, removing the
 * leader, re-adding a removed store), and the GenericTest runs with the
 * confchanger, on the deterministic simulator with the mock scheduler;
 * every client history is checked for linearizability and every region
 * heartbeat against the scheduler's invariants (rs_sim.h).
 * TKV_SEED=<n> replays one seed; TKV_SEEDS=<n> runs n seeds. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rs_sim.h"
#include "tkv/err.h"

#ifndef RS_DEFAULT_SEEDS
#define RS_DEFAULT_SEEDS 2
#endif

#define MUST_MS 5000

static uint64_t seed_or(uint64_t dflt)
{
    const char *e = getenv("TKV_SEED");
    return e ? strtoull(e, NULL, 10) : dflt;
}

static void generic(const char *name, int clients, bool unreliable, bool crash, bool partitions,
                    uint64_t gc_limit)
{
    struct sim_opts o = {.n_stores = 5,
                         .n_clients = clients,
                         .unreliable = unreliable,
                         .crash = crash,
                         .partitions = partitions,
                         .gc_limit = gc_limit,
                         .iterations = 3,
                         .iteration_ms = 1000,
                         .n_keys = 4 * clients + 4,
                         .confchange = true};
    char err[1024];
    cr_assert(sim_generic_seeds(name, &o, RS_DEFAULT_SEEDS, err, sizeof(err)), "%s", err);
}

/* Poll a store's engine (TinyKV MustGetCfEqual / MustGetCfNone: 300 x 20 ms). */
static bool engine_has(struct sim *s, int store, const char *key, const char *want)
{
    for (int i = 0; i < 300; i++) {
        char v[64];
        int rv = sim_engine_get(s, store, TKV_CF_DEFAULT, key, v, sizeof(v));
        if (want ? rv == 0 && strcmp(v, want) == 0 : rv == TKV_ENOTFOUND)
            return true;
        sim_run(s, 20);
    }
    return false;
}

#define MUST_HAVE(s, store, key, val)                                                      \
    cr_assert(engine_has(s, store, key, val), "store %d: %s != %s (TKV_SEED=%llu)", store, \
              key, val, (unsigned long long)(s)->seed)
#define MUST_NONE(s, store, key)                                                             \
    cr_assert(engine_has(s, store, key, NULL), "store %d still has %s (TKV_SEED=%llu)", store, \
              key, (unsigned long long)(s)->seed)
#define MUST_OK(s, expr)                                                                       \
    cr_assert((expr) == 0 && !(s)->failed, "%s failed: %s (TKV_SEED=%llu)", #expr, (s)->err, \
              (unsigned long long)(s)->seed)

static struct tkv_rs_peer peer(uint64_t id, int store)
{
    return (struct tkv_rs_peer){.id = id, .store_id = (uint64_t)store};
}

static void must_put(struct sim *s, const char *k, const char *v)
{
    MUST_OK(s, sim_put(s, TKV_CF_DEFAULT, k, v, MUST_MS));
}

static void must_get(struct sim *s, const char *k, const char *want)
{
    char v[64];
    MUST_OK(s, sim_get(s, TKV_CF_DEFAULT, k, v, sizeof(v), MUST_MS));
    cr_assert_str_eq(v, want, "get %s (TKV_SEED=%llu)", k, (unsigned long long)s->seed);
}

static void start(struct sim *s, int n_stores, uint64_t seed)
{
    struct sim_opts o = {.n_stores = n_stores, .n_keys = 1};
    sim_init(s, &o, seed);
    sim_run(s, 400);
}

TestSuite(raftstore_3b, .timeout = 600);

/* Region 1's leadership goes to store 1, 2, 3, 4, 5 in turn. */
Test(raftstore_3b, TestTransferLeader3B)
{
    struct sim s;
    start(&s, 5, seed_or(31));
    for (int store = 1; store <= 5; store++)
        MUST_OK(&s, sim_must_transfer_leader(&s, 1, store, MUST_MS));
    must_put(&s, "k1", "v1");
    must_get(&s, "k1", "v1");
    sim_close(&s);
}

/* Leader transfer is not a log entry (2.12): the only entry a transfer
 * adds is the new leader's no-op of its term; and a lagging transferee is
 * caught up before it takes over, so it serves every acknowledged write. */
Test(raftstore_3b, transfer_leader_is_not_replicated_and_catches_the_transferee_up)
{
    struct sim s;
    start(&s, 5, seed_or(37));
    MUST_OK(&s, sim_must_transfer_leader(&s, 1, 1, MUST_MS));
    must_put(&s, "k0", "v0");
    sim_run(&s, 200);
    struct tkv_rs_region_status before, after;
    tkv_raftstore_region_status(sim_store(&s, 1), 1, &before);
    MUST_OK(&s, sim_must_transfer_leader(&s, 1, 2, MUST_MS));
    tkv_raftstore_region_status(sim_store(&s, 2), 1, &after);
    cr_assert(after.is_leader);
    cr_assert_eq(after.last_index, before.last_index + 1,
                 "transfer added %llu entries, expected only the new leader's no-op",
                 (unsigned long long)(after.last_index - before.last_index));
    /* store 3 misses 30 writes, then is made leader at once */
    int others[4] = {1, 2, 4, 5};
    sim_partition(&s, others, 4);
    for (int i = 0; i < 30; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i + 1);
        must_put(&s, k, "v");
    }
    tkv_raftstore_region_status(sim_store(&s, 2), 1, &before);
    sim_heal(&s);
    MUST_OK(&s, sim_must_transfer_leader(&s, 1, 3, MUST_MS));
    tkv_raftstore_region_status(sim_store(&s, 3), 1, &after);
    cr_assert_geq(after.last_index, before.last_index + 1, "transferee led without the log");
    must_get(&s, "k30", "v");
    must_get(&s, "k1", "v");
    sim_close(&s);
}

/* TinyKV TestBasicConfChange3B: shrink to (1,1), grow back, data follows
 * the membership. TinyKV re-adds store 2 as (2,2) again — kept (a re-add
 * with the id of a destroyed peer) — and then as (2,4), an id its store 4
 * once used: here a fresh id (our scheduler never reuses ids). */
Test(raftstore_3b, TestBasicConfChange3B)
{
    struct sim s;
    start(&s, 5, seed_or(41));
    MUST_OK(&s, sim_must_transfer_leader(&s, 1, 1, MUST_MS));
    for (int i = 2; i <= 5; i++)
        MUST_OK(&s, sim_must_remove_peer(&s, 1, peer((uint64_t)i, i), MUST_MS));
    const struct sim_sched_region *v = sim_sched_region(&s, 1);
    cr_assert_eq(v->region.n_peers, 1);
    must_put(&s, "k1", "v1");
    MUST_NONE(&s, 2, "k1");

    MUST_OK(&s, sim_must_add_peer(&s, 1, peer(2, 2), MUST_MS));
    must_put(&s, "k2", "v2");
    must_get(&s, "k2", "v2");
    MUST_HAVE(&s, 2, "k1", "v1");
    MUST_HAVE(&s, 2, "k2", "v2");
    cr_assert_gt(v->region.epoch.conf_ver, 1);
    MUST_NONE(&s, 5, "k1");

    uint64_t p3 = sim_alloc_id(&s);
    MUST_OK(&s, sim_must_add_peer(&s, 1, peer(p3, 3), MUST_MS));
    MUST_OK(&s, sim_must_remove_peer(&s, 1, peer(2, 2), MUST_MS));
    must_put(&s, "k3", "v3");
    must_get(&s, "k3", "v3");
    MUST_HAVE(&s, 3, "k1", "v1");
    MUST_HAVE(&s, 3, "k2", "v2");
    MUST_HAVE(&s, 3, "k3", "v3");
    MUST_NONE(&s, 2, "k1");
    MUST_NONE(&s, 2, "k2");

    MUST_OK(&s, sim_must_add_peer(&s, 1, peer(2, 2), MUST_MS));
    MUST_HAVE(&s, 2, "k1", "v1");
    MUST_HAVE(&s, 2, "k2", "v2");
    MUST_HAVE(&s, 2, "k3", "v3");

    MUST_OK(&s, sim_must_remove_peer(&s, 1, peer(2, 2), MUST_MS));
    uint64_t p2 = sim_alloc_id(&s);
    MUST_OK(&s, sim_must_add_peer(&s, 1, peer(p2, 2), MUST_MS));
    MUST_OK(&s, sim_must_remove_peer(&s, 1, peer(p3, 3), MUST_MS));
    must_put(&s, "k4", "v4");
    MUST_HAVE(&s, 2, "k1", "v1");
    MUST_HAVE(&s, 2, "k4", "v4");
    MUST_NONE(&s, 3, "k1");
    MUST_NONE(&s, 3, "k4");
    struct tkv_raftstore_stats st;
    tkv_raftstore_stats(sim_store(&s, 3), &st);
    cr_assert_geq(st.peers_destroyed, 2, "store 3 lost its peers twice");
    cr_assert(!s.failed, "%s", s.err);
    sim_close(&s);
}

/* TinyKV TestConfChangeRemoveLeader3B (2024): remove the leader of five,
 * re-add it and make it leader; shrink to two and remove the leader. */
Test(raftstore_3b, TestConfChangeRemoveLeader3B)
{
    struct sim s;
    start(&s, 5, seed_or(43));
    MUST_OK(&s, sim_must_transfer_leader(&s, 1, 1, MUST_MS));
    must_put(&s, "k1", "v1");
    MUST_OK(&s, sim_must_remove_peer(&s, 1, peer(1, 1), MUST_MS));
    must_put(&s, "k2", "v2");
    must_get(&s, "k2", "v2");
    MUST_NONE(&s, 1, "k1");
    uint64_t p1 = sim_alloc_id(&s);
    MUST_OK(&s, sim_must_add_peer(&s, 1, peer(p1, 1), MUST_MS));
    MUST_OK(&s, sim_must_transfer_leader(&s, 1, 1, MUST_MS));
    MUST_HAVE(&s, 1, "k2", "v2");
    for (int i = 2; i <= 4; i++)
        MUST_OK(&s, sim_must_remove_peer(&s, 1, peer((uint64_t)i, i), MUST_MS));
    const struct sim_sched_region *v = sim_sched_region(&s, 1);
    cr_assert_eq(v->region.n_peers, 2, "region should be {store 1, store 5}");
    /* the leader of two asked to remove itself */
    MUST_OK(&s, sim_must_remove_peer(&s, 1, peer(p1, 1), MUST_MS));
    cr_assert_eq(v->region.n_peers, 1);
    cr_assert_eq(v->region.peers[0].store_id, 5);
    must_put(&s, "k3", "v3");
    must_get(&s, "k3", "v3");
    MUST_NONE(&s, 1, "k1");
    MUST_NONE(&s, 1, "k2");
    uint64_t q1 = sim_alloc_id(&s);
    MUST_OK(&s, sim_must_add_peer(&s, 1, peer(q1, 1), MUST_MS));
    MUST_HAVE(&s, 1, "k1", "v1");
    MUST_HAVE(&s, 1, "k3", "v3");
    cr_assert(!s.failed, "%s", s.err);
    sim_close(&s);
}

Test(raftstore_3b, TestConfChangeRecover3B) { generic("TestConfChangeRecover3B", 1, false, true, false, 0); }
Test(raftstore_3b, TestConfChangeRecoverManyClients3B)
{
    generic("TestConfChangeRecoverManyClients3B", 20, false, true, false, 0);
}
Test(raftstore_3b, TestConfChangeUnreliable3B) { generic("TestConfChangeUnreliable3B", 5, true, false, false, 0); }
Test(raftstore_3b, TestConfChangeUnreliableRecover3B)
{
    generic("TestConfChangeUnreliableRecover3B", 5, true, true, false, 0);
}
Test(raftstore_3b, TestConfChangeSnapshotUnreliableRecover3B)
{
    generic("TestConfChangeSnapshotUnreliableRecover3B", 5, true, true, false, 100);
}
Test(raftstore_3b, TestConfChangeSnapshotUnreliableRecoverConcurrentPartition3B)
{
    generic("TestConfChangeSnapshotUnreliableRecoverConcurrentPartition3B", 5, true, true, true, 100);
}

/* ---- the checks catch injected conf change bugs (libfiu, test builds) ---- */
#ifdef FIU_ENABLE
#include <fiu-control.h>
#ifndef CHECKER_SEEDS
#define CHECKER_SEEDS 4
#endif
#include <fiu.h>

/* Run the confchanger scenario under a failpoint until a seed fails with a
 * message containing `expect` (one of them). */
static void expect_caught_opts(const char *failpoint, const char *expect1, const char *expect2,
                               const struct sim_opts *opts)
{
    fiu_init(0);
    fiu_enable(failpoint, 1, NULL, 0);
    int caught = 0;
    char last[512] = "passed";
    for (uint64_t seed = 1; seed <= CHECKER_SEEDS && !caught; seed++) {
        struct sim s;
        sim_init(&s, opts, seed);
        sim_generic(&s);
        if (s.failed)
            snprintf(last, sizeof(last), "%s", s.err);
        if (s.failed && (strstr(s.err, expect1) || (expect2 && strstr(s.err, expect2))))
            caught++;
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr, "%s seed %llu: %s\n", failpoint, (unsigned long long)seed,
                    s.failed ? s.err : "passed");
        sim_close(&s);
    }
    fiu_disable(failpoint);
    cr_assert(caught, "%s went unnoticed in %d seeds (last: %s)", failpoint, CHECKER_SEEDS, last);
}

static void expect_caught(const char *failpoint, const char *expect1, const char *expect2)
{
    struct sim_opts o = {.n_stores = 5, .n_clients = 2, .iterations = 2, .iteration_ms = 1000,
                         .n_keys = 8, .confchange = true};
    expect_caught_opts(failpoint, expect1, expect2, &o);
}

/* Membership edited without bumping conf_ver: the scheduler's heartbeat
 * check (peers changed at an equal conf_ver) fails the run. */
Test(raftstore_3b_checker, catches_a_conf_change_that_keeps_conf_ver)
{
    expect_caught("raftstore/conf_change_keeps_conf_ver", "without a conf_ver bump", NULL);
}

/* A removed peer that is not destroyed keeps the region's data on a store
 * outside the region. */
Test(raftstore_3b_checker, catches_a_removed_peer_that_is_not_destroyed)
{
    expect_caught("raftstore/removed_peer_not_destroyed", "still has", "keeps a peer");
}
/* Writes pending on a destroyed peer answered RegionNotFound ("did not
 * apply") although they may still commit on the other peers: the
 * linearizability checker sees a value nobody wrote. */
Test(raftstore_3b_checker, catches_pending_writes_reported_failed_on_destroy)
{
    struct sim_opts o = {.n_stores = 5, .n_clients = 5, .iterations = 3, .iteration_ms = 1000,
                         .n_keys = 12, .confchange = true, .unreliable = true};
    expect_caught_opts("raftstore/pending_writes_answered_region_not_found", "linearizability",
                       NULL, &o);
}
#endif
