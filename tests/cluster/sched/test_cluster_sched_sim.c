/* A simulated cluster of 10-100 stores (two stores per node, as a 2-core
 * tinykv-server node runs) feeding the scheduler core heartbeats every
 * 100 ms of simulated time; the stores carry out every command instantly
 * (an added peer is pending for one tick). Starting from every region on the
 * same three stores, the regions and leaders must converge to balance with
 * no two replicas of a region on one node. Prints operators and time.
 * Deterministic: a seeded PRNG, simulated clock. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tkv/err.h"
#include "tkv/sched.h"

#define SEC 1000000000ull
#define TICK (100ull * 1000000ull)
#define MAXP 8

struct sim_region {
    uint64_t id;
    char start[24], end[24];
    uint64_t conf_ver, version;
    metapb_Peer peers[MAXP];
    size_t n_peers;
    uint64_t leader;  /* peer id */
    uint64_t pending; /* peer id pending until the next tick, 0 = none */
};

static void put_store(struct tkv_sched_cluster *c, uint64_t id, uint64_t now)
{
    char addr[40], node[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%llu", 20000 + (unsigned long long)id);
    snprintf(node, sizeof(node), "node-%llu", (unsigned long long)(id - 1) / 2);
    metapb_StoreLabel l = {TKV_SLICE("node", 4), TKV_SLICE(node, strlen(node))};
    metapb_Store st = {.id = id, .address = TKV_SLICE(addr, strlen(addr))};
    st.labels.items = &l;
    st.labels.n = 1;
    const char *why = "";
    cr_assert_eq(tkv_sched_put_store(c, &st, now, &why), 0, "%s", why);
}

static size_t peer_index(const struct sim_region *r, uint64_t store)
{
    for (size_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].store_id == store)
            return i;
    return SIZE_MAX;
}

/* Heartbeat one region; carry out what comes back. Returns 1 if a command
 * was applied. */
static int beat(struct tkv_sched_cluster *c, struct sim_region *r, uint64_t now)
{
    schedulerpb_RegionHeartbeatRequest hb = {0};
    metapb_Peer pend;
    const char *why = "";
    hb.has_region = true;
    hb.region.id = r->id;
    hb.region.start_key = TKV_SLICE(r->start, strlen(r->start));
    hb.region.end_key = TKV_SLICE(r->end, strlen(r->end));
    hb.region.has_region_epoch = true;
    hb.region.region_epoch.conf_ver = r->conf_ver;
    hb.region.region_epoch.version = r->version;
    hb.region.peers.items = r->peers;
    hb.region.peers.n = r->n_peers;
    for (size_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].id == r->leader) {
            hb.has_leader = true;
            hb.leader = r->peers[i];
        }
    if (r->pending) {
        for (size_t i = 0; i < r->n_peers; i++)
            if (r->peers[i].id == r->pending)
                pend = r->peers[i];
        hb.pending_peers.items = &pend;
        hb.pending_peers.n = 1;
    }
    hb.approximate_size = 64ull << 20;
    int rv = tkv_sched_region_heartbeat(c, &hb, NULL, &why);
    cr_assert_eq(rv, 0, "region %llu heartbeat refused: %s", (unsigned long long)r->id, why);
    r->pending = 0; /* caught up by the next tick */

    schedulerpb_RegionHeartbeatResponse resp;
    if (!tkv_sched_dispatch(c, r->id, now, &resp))
        return 0;
    cr_assert_eq(resp.target_peer.id, r->leader, "command sent to a non-leader");
    if (resp.has_change_peer) {
        const metapb_Peer *p = &resp.change_peer.peer;
        if (resp.change_peer.change_type == eraftpb_ConfChangeType_AddNode) {
            cr_assert_eq(peer_index(r, p->store_id), SIZE_MAX, "AddNode on a store with a peer");
            cr_assert(r->n_peers < MAXP);
            r->peers[r->n_peers++] = *p;
            r->pending = p->id;
        } else {
            size_t i = peer_index(r, p->store_id);
            cr_assert_neq(i, SIZE_MAX, "RemoveNode of a peer that is not there");
            cr_assert_neq(r->peers[i].id, r->leader, "the leader was told to remove itself");
            r->peers[i] = r->peers[--r->n_peers];
        }
        r->conf_ver++;
    } else if (resp.has_transfer_leader) {
        size_t i = peer_index(r, resp.transfer_leader.peer.store_id);
        cr_assert_neq(i, SIZE_MAX, "leader transferred to a non-peer");
        r->leader = r->peers[i].id;
    }
    return 1;
}

static void run_sim(uint64_t n_stores, uint64_t regions_per_store)
{
    struct tkv_sched_options opts = {
        .max_replicas = 3,
        .max_store_down_time_ns = 1800 * SEC,
        .leader_schedule_limit = 4,
        .region_schedule_limit = 2048,
        .replica_schedule_limit = 64,
    };
    struct tkv_sched_cluster *c;
    uint64_t now = 1000 * SEC, rng = 12345, next_id = 1000000;
    uint64_t n_regions = n_stores * regions_per_store;
    struct sim_region *rs = calloc(n_regions, sizeof(*rs));
    struct timespec w0, w1;

    clock_gettime(CLOCK_MONOTONIC, &w0);
    cr_assert_eq(tkv_sched_cluster_open(NULL, &opts, 0, 1, now, &c), 0);
    for (uint64_t s = 1; s <= n_stores; s++)
        put_store(c, s, now);
    /* Every region starts on stores 1, 3, 5 (nodes 0, 1, 2), led by store 1. */
    for (uint64_t i = 0; i < n_regions; i++) {
        struct sim_region *r = &rs[i];
        r->id = i + 1;
        snprintf(r->start, sizeof(r->start), i ? "k%08llu" : "", (unsigned long long)i);
        if (i + 1 < n_regions)
            snprintf(r->end, sizeof(r->end), "k%08llu", (unsigned long long)i + 1);
        r->conf_ver = r->version = 1;
        for (uint64_t k = 0; k < 3; k++)
            r->peers[r->n_peers++] = (metapb_Peer){next_id++, 1 + 2 * k};
        r->leader = r->peers[0].id;
    }

    uint64_t ticks = 0, quiet = 0, commands = 0;
    for (; ticks < 20000 && quiet < 30; ticks++) {
        now += TICK;
        for (uint64_t s = 1; s <= n_stores; s++) {
            schedulerpb_StoreStats st = {.store_id = s, .capacity = 1ull << 40};
            cr_assert_eq(tkv_sched_store_heartbeat(c, &st, now), 0);
        }
        size_t added = tkv_sched_patrol(c, now, &rng, 64);
        int applied = 0;
        for (uint64_t i = 0; i < n_regions; i++)
            applied += beat(c, &rs[i], now);
        commands += (uint64_t)applied;
        quiet =
            (added == 0 && applied == 0 && tkv_sched_running_operators(c, 7) == 0) ? quiet + 1 : 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);

    struct tkv_sched_stats stats;
    tkv_sched_get_stats(c, &stats);
    uint64_t min_r = UINT64_MAX, max_r = 0, min_l = UINT64_MAX, max_l = 0;
    for (size_t i = 0; i < tkv_sched_n_stores(c); i++) {
        const struct tkv_sched_store *s = tkv_sched_store_at(c, i);
        min_r = s->region_count < min_r ? s->region_count : min_r;
        max_r = s->region_count > max_r ? s->region_count : max_r;
        min_l = s->leader_count < min_l ? s->leader_count : min_l;
        max_l = s->leader_count > max_l ? s->leader_count : max_l;
    }
    double wall = (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) / 1e9;
    fprintf(stderr,
            "sched sim: %llu stores, %llu regions x 3: converged after %.1f s simulated "
            "(%llu ticks), %llu operators (%llu finished, %llu timed out), %llu commands, "
            "replicas/store %llu..%llu, leaders/store %llu..%llu, %.2f s wall\n",
            (unsigned long long)n_stores, (unsigned long long)n_regions,
            (double)(ticks - quiet) * 0.1, (unsigned long long)ticks,
            (unsigned long long)stats.ops_created, (unsigned long long)stats.ops_finished,
            (unsigned long long)stats.ops_timed_out, (unsigned long long)commands,
            (unsigned long long)min_r, (unsigned long long)max_r, (unsigned long long)min_l,
            (unsigned long long)max_l, wall);
    cr_assert_lt(quiet < 30 ? 1 : 0, 1, "no convergence within %llu ticks",
                 (unsigned long long)ticks);
    /* Balanced: within the balancers' own thresholds (a move needs a
     * difference of two region sizes; a transfer a difference of 2). */
    cr_assert_leq(max_r - min_r, 2, "replicas per store spread %llu..%llu",
                  (unsigned long long)min_r, (unsigned long long)max_r);
    cr_assert_leq(max_l - min_l, 2, "leaders per store spread %llu..%llu",
                  (unsigned long long)min_l, (unsigned long long)max_l);
    /* Every region has 3 replicas on 3 different nodes. */
    for (uint64_t i = 0; i < n_regions; i++) {
        cr_assert_eq(rs[i].n_peers, 3, "region %llu has %zu replicas", (unsigned long long)rs[i].id,
                     rs[i].n_peers);
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < a; b++)
                cr_assert_neq((rs[i].peers[a].store_id - 1) / 2, (rs[i].peers[b].store_id - 1) / 2,
                              "region %llu has two replicas on one node",
                              (unsigned long long)rs[i].id);
    }
    tkv_sched_cluster_close(c);
    free(rs);
}

Test(sched_sim, converges_10_stores)
{
    run_sim(10, 20);
}

Test(sched_sim, converges_30_stores)
{
    run_sim(30, 10);
}

Test(sched_sim, converges_100_stores, .timeout = 250)
{
    run_sim(100, 6);
}
