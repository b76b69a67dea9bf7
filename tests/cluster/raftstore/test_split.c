/* TinyKV's 3B split scenarios (TINYKV-API.md 3.3) on the deterministic
 * simulator: the split checker with small region sizes, the mock
 * scheduler answering ask_split with fresh ids and proposing Split on the
 * asking store, clients routed by the scheduler's region directory and
 * following EpochNotMatch / KeyNotInRegion; every client history checked
 * for linearizability. TKV_SEED=<n> replays one seed; TKV_SEEDS=<n> runs n
 * seeds per scenario. Negative control: the failpoint
 * raftstore/split_no_version_bump (test builds) must fail TestOneSplit3B. */
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

#ifndef SPLIT_DEFAULT_SEEDS
#define SPLIT_DEFAULT_SEEDS 2
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
    return e ? atoi(e) : SPLIT_DEFAULT_SEEDS;
}

static uint64_t seed_of(const char *name, int i)
{
    uint64_t base = seed_base();
    return base ? base : (uint64_t)(i + 1) * 7919u + (uint64_t)strlen(name) * 31u;
}

/* ------------------------------------------------------------ one request */

struct req {
    bool done, abandoned;
    int rv;
    struct tkv_rs_region_error e;
};

static void on_req(void *arg, const struct tkv_rs_result *res)
{
    struct req *r = arg;
    if (r->abandoned) {
        free(r);
        return;
    }
    r->done = true;
    r->rv = res->rv;
    r->e = res->region_error;
}

/* A Get of key in region rg (with epoch ep) on the region's leader, as
 * TinyKV's CallCommandOnLeader: waits for a leader, then one answer. */
static struct req get_on_leader(struct sim *s, uint64_t region_id, struct tkv_rs_epoch ep,
                                const char *key)
{
    struct req out = {0};
    for (int tries = 0; tries < 200 && !s->failed; tries++) {
        int l = sim_region_leader(s, region_id);
        if (!l) {
            sim_run(s, 10);
            continue;
        }
        struct tkv_rs_header h = {.region_id = region_id, .epoch = ep};
        struct req *r = calloc(1, sizeof(*r));
        tkv_raftstore_get(sim_store(s, l), &h, TKV_CF_DEFAULT, TKV_SLICE(key, strlen(key)), on_req, r);
        for (int i = 0; i < 1000 && !r->done; i++)
            sim_run(s, 1);
        if (!r->done) {
            r->abandoned = true;
            continue;
        }
        out = *r;
        free(r);
        if (out.rv == TKV_EREGION && out.e.kind == TKV_RS_NOT_LEADER) {
            sim_run(s, 10);
            continue;
        }
        return out;
    }
    out.rv = TKV_ETIMEDOUT;
    return out;
}

static bool same_bound(const uint8_t *a, uint32_t an, const uint8_t *b, uint32_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* ------------------------------------------------------------ TestOneSplit3B */

/* Returns NULL or what went wrong (the sim is closed by the caller). */
static const char *one_split(struct sim *s, char *msg, size_t cap)
{
    sim_run(s, 400);
    if (sim_put(s, TKV_CF_DEFAULT, "k1", "v1", 5000) || sim_put(s, TKV_CF_DEFAULT, "k2", "v2", 5000))
        return "MustPut k1/k2 failed";
    const struct sim_region *a = sim_route(s, "k1", 2), *b = sim_route(s, "k2", 2);
    if (!a || !b || a->rg.id != b->rg.id)
        return "k1 and k2 not in one region before the split";
    struct tkv_rs_region orig = a->rg;
    int majority[] = {1, 2, 3, 4};
    sim_partition(s, majority, 4);
    for (int i = 100; i < 200; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        if (sim_put(s, TKV_CF_DEFAULT, k, v, 5000) != 0) {
            snprintf(msg, cap, "MustPut %s failed", k);
            return msg;
        }
    }
    /* the checker runs every 10 ticks (100 ms): the split follows */
    for (int i = 0; i < 300 && sim_route(s, "k1", 2)->rg.id == sim_route(s, "k2", 2)->rg.id; i++)
        sim_run(s, 10);
    sim_heal(s);
    struct tkv_rs_region left = sim_route(s, "k1", 2)->rg, right = sim_route(s, "k2", 2)->rg;
    if (left.id == right.id)
        return "no split after 3 s with 808 bytes in an 800-byte region";
    if (!same_bound(left.start, left.start_len, orig.start, orig.start_len) ||
        !same_bound(left.end, left.end_len, right.start, right.start_len) ||
        !same_bound(right.end, right.end_len, orig.end, orig.end_len))
        return "left and right do not tile the original region";
    if (left.id != orig.id)
        return "the original region id does not keep the left half";
    if (left.epoch.version <= orig.epoch.version || right.epoch.version <= orig.epoch.version)
        return "split did not bump the epoch versions";
    /* a Get of k2 on the left region: KeyNotInRegion (TinyKV) */
    struct req r = get_on_leader(s, left.id, left.epoch, "k2");
    if (r.rv != TKV_EREGION || r.e.kind != TKV_RS_KEY_NOT_IN_REGION) {
        snprintf(msg, cap, "Get(k2) on the left region: rv %d kind %u, want KeyNotInRegion", r.rv,
                 r.e.kind);
        return msg;
    }
    if (r.e.key_len != 2 || memcmp(r.e.key, "k2", 2) != 0 || r.e.n_current != 1 ||
        r.e.current[0].id != left.id)
        return "KeyNotInRegion does not name the key and the region";
    /* a request carrying the pre-split epoch: EpochNotMatch with both halves */
    r = get_on_leader(s, left.id, orig.epoch, "k1");
    if (r.rv != TKV_EREGION || r.e.kind != TKV_RS_EPOCH_NOT_MATCH) {
        snprintf(msg, cap, "Get(k1) with the old epoch: rv %d kind %u, want EpochNotMatch", r.rv,
                 r.e.kind);
        return msg;
    }
    if (r.e.n_current != 2 || r.e.current[0].id != left.id || r.e.current[1].id != right.id)
        return "EpochNotMatch does not carry the left and the right region";
    /* reads on both halves still answer (raft path) */
    char val[64];
    if (sim_get(s, TKV_CF_DEFAULT, "k1", val, sizeof(val), 5000) != 0 || strcmp(val, "v1") != 0)
        return "Get(k1) after the split";
    if (sim_get(s, TKV_CF_DEFAULT, "k2", val, sizeof(val), 5000) != 0 || strcmp(val, "v2") != 0)
        return "Get(k2) after the split";
    /* the isolated store catches up: it has k100 and both regions */
    bool ok = false;
    for (int i = 0; i < 300 && !ok; i++) {
        sim_run(s, 20);
        struct tkv_rs_region_status l5, r5;
        tkv_raftstore_region_status(sim_store(s, 5), left.id, &l5);
        tkv_raftstore_region_status(sim_store(s, 5), right.id, &r5);
        ok = sim_engine_get(s, 5, TKV_CF_DEFAULT, "k100", val, sizeof(val)) == 0 &&
             strcmp(val, "v100") == 0 && l5.exists && r5.exists &&
             l5.region.epoch.version == left.epoch.version;
    }
    if (!ok)
        return "store 5 did not catch up (k100 and both regions)";
    return s->failed ? s->err : NULL;
}

static void run_one_split(void)
{
    for (int i = 0; i < seed_count(); i++) {
        uint64_t seed = seed_of("TestOneSplit3B", i);
        struct sim_opts o = {.n_stores = 5, .split = true, .region_max_size = 800,
                             .region_split_size = 500, .n_keys = 1};
        struct sim s;
        sim_init(&s, &o, seed);
        char msg[256];
        const char *err = one_split(&s, msg, sizeof(msg));
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", err ? err : "");
        sim_close(&s);
        cr_assert(!err, "TestOneSplit3B: %s (replay: TKV_SEED=%llu)", copy, (unsigned long long)seed);
    }
}

TestSuite(raftstore_3b, .timeout = 900);

Test(raftstore_3b, TestOneSplit3B) { run_one_split(); }

#ifdef FIU_ENABLE
/* Negative control: a split that does not bump the parent's version lets
 * a request with the pre-split epoch through; TestOneSplit3B must see it. */
Test(raftstore_3b, negative_split_without_version_bump)
{
    fiu_init(0);
    fiu_enable("raftstore/split_no_version_bump", 1, NULL, 0);
    struct sim_opts o = {.n_stores = 5, .split = true, .region_max_size = 800,
                         .region_split_size = 500, .n_keys = 1};
    struct sim s;
    sim_init(&s, &o, seed_of("negative", 0));
    char msg[256];
    const char *err = one_split(&s, msg, sizeof(msg));
    bool caught = err != NULL;
    if (caught)
        fprintf(stderr, "negative control caught: %s\n", err);
    sim_close(&s);
    fiu_disable("raftstore/split_no_version_bump");
    cr_assert(caught, "a split without a version bump went unnoticed");
}
#endif

/* ------------------------------------------------------------ snapshot overlap (2.14) */

static void on_split_answer(void *arg, const struct tkv_rs_result *res)
{
    on_req(arg, res);
}

/* Store 3 misses the split of region 1 and the new region's writes; the
 * new region's log is compacted, so store 3 can only get it by snapshot.
 * While store 3's region 1 still covers the range (its catch-up held
 * back), that snapshot must be refused: else region 1's older entries,
 * applied later, overwrite the snapshot's newer values. */
static const char *overlap_scenario(struct sim *s, char *msg, size_t cap)
{
    sim_run(s, 400);
    int majority[] = {1, 2};
    sim_partition(s, majority, 2);
    if (sim_put(s, TKV_CF_DEFAULT, "k7", "old", 5000) != 0)
        return "put k7=old";
    struct req *r = calloc(1, sizeof(*r));
    for (int tries = 0; tries < 50 && !r->done; tries++) {
        int l = sim_region_leader(s, 1);
        if (!l) {
            sim_run(s, 20);
            continue;
        }
        struct tkv_rs_region_status st;
        tkv_raftstore_region_status(sim_store(s, l), 1, &st);
        uint64_t ids[TKV_RS_MAX_PEERS];
        for (uint32_t i = 0; i < st.region.n_peers; i++)
            ids[i] = 1000 + st.region.peers[i].store_id;
        tkv_raftstore_split(sim_store(s, l), 1, &st.region.epoch, TKV_SLICE("k5", 2), 1000, ids,
                            st.region.n_peers, on_split_answer, r);
        for (int i = 0; i < 1000 && !r->done; i++)
            sim_run(s, 1);
        if (r->done && r->rv != 0)
            r->done = false;
    }
    bool split_ok = r->done;
    if (!r->done)
        r->abandoned = true;
    else
        free(r);
    if (!split_ok)
        return "the split was not applied";
    for (int i = 0; i < 20; i++) {
        char v[16];
        snprintf(v, sizeof(v), "new%d", i);
        if (sim_put(s, TKV_CF_DEFAULT, "k7", v, 5000) != 0)
            return "put k7=new on the new region";
    }
    sim_run(s, 500);
    int rl = sim_region_leader(s, 1000);
    struct tkv_rs_region_status rst;
    tkv_raftstore_region_status(sim_store(s, rl ? rl : 1), 1000, &rst);
    if (rst.truncated_index <= TKV_RAFT_INIT_INDEX + 1)
        return "test setup: the new region's log was not compacted";
    /* heal, but hold region 1's catch-up of store 3 back for a while */
    s->blocked_region = 1;
    s->blocked_store = 3;
    sim_heal(s);
    sim_run(s, 1500);
    s->blocked_region = 0;
    char val[64] = "";
    for (int i = 0; i < 250; i++) {
        sim_run(s, 20);
        struct tkv_rs_region_status st3;
        tkv_raftstore_region_status(sim_store(s, 3), 1000, &st3);
        /* done once store 3's region 1 caught up past the split */
        struct tkv_rs_region_status p3;
        tkv_raftstore_region_status(sim_store(s, 3), 1, &p3);
        if (sim_engine_get(s, 3, TKV_CF_DEFAULT, "k7", val, sizeof(val)) == 0 &&
            strcmp(val, "new19") == 0 && st3.exists && st3.region.n_peers && p3.region.end_len)
            return s->failed ? s->err : NULL;
    }
    snprintf(msg, cap, "store 3 holds k7=%s, want new19 (an older entry of the parent overwrote "
                       "the new region's snapshot?)", val);
    return msg;
}

static void run_overlap(bool inject)
{
    for (int i = 0; i < seed_count(); i++) {
        uint64_t seed = seed_of("SplitSnapshotOverlap", i);
        struct sim_opts o = {.n_stores = 3, .gc_limit = 10, .n_keys = 1};
        struct sim s;
        sim_init(&s, &o, seed);
        char msg[256];
        const char *err = overlap_scenario(&s, msg, sizeof(msg));
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", err ? err : "");
        sim_close(&s);
        if (inject) {
            cr_assert(err, "an overlapping snapshot accepted went unnoticed (seed %llu)",
                      (unsigned long long)seed);
            fprintf(stderr, "negative control caught: %s\n", copy);
            return;
        }
        cr_assert(!err, "SplitSnapshotOverlap: %s (replay: TKV_SEED=%llu)", copy,
                  (unsigned long long)seed);
    }
}

Test(raftstore_3b, SplitSnapshotOverlap) { run_overlap(false); }

#ifdef FIU_ENABLE
Test(raftstore_3b, negative_overlapping_snapshot_accepted)
{
    fiu_init(0);
    fiu_enable("raftstore/accept_overlapping_snapshot", 1, NULL, 0);
    run_overlap(true);
    fiu_disable("raftstore/accept_overlapping_snapshot");
}
#endif

/* ------------------------------------------------------------ GenericTest with split */

static void run_generic_split_cc(const char *name, int clients, bool unreliable, bool crash,
                                 bool partitions, uint64_t gc_limit, bool confchange)
{
    for (int i = 0; i < seed_count(); i++) {
        uint64_t seed = seed_of(name, i);
        int n_keys = 4 * clients + 4;
        if (n_keys < 24)
            n_keys = 24;
        struct sim_opts o = {.n_stores = 5,
                             .n_clients = clients,
                             .unreliable = unreliable,
                             .crash = crash,
                             .partitions = partitions,
                             .gc_limit = gc_limit,
                             .confchange = confchange,
                             .iterations = 3,
                             .iteration_ms = 1000,
                             .n_keys = n_keys,
                             .split = true,
                             .region_max_size = 300,
                             .region_split_size = 200,
                             .value_len = 24};
        struct sim s;
        sim_init(&s, &o, seed);
        sim_generic(&s);
        bool failed = s.failed;
        char err[512];
        snprintf(err, sizeof(err), "%s", s.err);
        uint64_t puts = s.n_ok_puts, gets = s.n_ok_gets, unknown = s.n_unknown, splits = s.n_splits;
        uint64_t ccs = s.n_conf_changes;
        int regions = s.n_regions;
        sim_close(&s);
        cr_assert(!failed, "%s failed: %s (replay: TKV_SEED=%llu)", name, err,
                  (unsigned long long)seed);
        if (getenv("TKV_RS_VERBOSE"))
            fprintf(stderr,
                    "%s seed %llu: %llu puts, %llu gets, %llu unknown, %llu splits, %d regions, "
                    "%llu conf changes\n",
                    name, (unsigned long long)seed, (unsigned long long)puts,
                    (unsigned long long)gets, (unsigned long long)unknown,
                    (unsigned long long)splits, regions, (unsigned long long)ccs);
    }
}

static void run_generic_split_gc(const char *name, int clients, bool unreliable, bool crash,
                                 bool partitions, uint64_t gc_limit)
{
    run_generic_split_cc(name, clients, unreliable, crash, partitions, gc_limit, false);
}

static void run_generic_split(const char *name, int clients, bool unreliable, bool crash)
{
    run_generic_split_gc(name, clients, unreliable, crash, false, 0);
}

Test(raftstore_3b, TestSplitRecover3B) { run_generic_split("TestSplitRecover3B", 1, false, true); }
Test(raftstore_3b, TestSplitRecoverManyClients3B)
{
    run_generic_split("TestSplitRecoverManyClients3B", 20, false, true);
}
Test(raftstore_3b, TestSplitUnreliable3B) { run_generic_split("TestSplitUnreliable3B", 5, true, false); }
Test(raftstore_3b, TestSplitUnreliableRecover3B)
{
    run_generic_split("TestSplitUnreliableRecover3B", 5, true, true);
}

/* Not in TinyKV's list: split with log GC (snapshots of split regions,
 * the overlap rule of 2.14), unreliable network, restarts, partitions. */
Test(raftstore_3b, SplitSnapshotUnreliableRecoverPartition)
{
    run_generic_split_gc("SplitSnapshotUnreliableRecoverPartition", 5, true, true, true, 100);
}

/* TinyKV's last two: everything with the confchanger (random region, the
 * mock scheduler's add/remove operators) and log GC. */
Test(raftstore_3b, TestSplitConfChangeSnapshotUnreliableRecover3B)
{
    run_generic_split_cc("TestSplitConfChangeSnapshotUnreliableRecover3B", 5, true, true, false, 100,
                         true);
}

Test(raftstore_3b, TestSplitConfChangeSnapshotUnreliableRecoverConcurrentPartition3B)
{
    run_generic_split_cc("TestSplitConfChangeSnapshotUnreliableRecoverConcurrentPartition3B", 5, true,
                         true, true, 100, true);
}
