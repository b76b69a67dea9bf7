/* Helpers for the scheduler core tests: stores and region heartbeats built
 * the way a store would send them. */
#ifndef TKV_TEST_SCHED_FIXTURE_H
#define TKV_TEST_SCHED_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/sched.h"

#define SEC 1000000000ull
/* A "now" far from 0 so stores can be made down by backdating them. */
#define T0 (1000000ull * SEC)

static inline struct tkv_sched_options test_opts(uint64_t max_replicas)
{
    return (struct tkv_sched_options){
        .max_replicas = max_replicas,
        .max_store_down_time_ns = 1800ull * SEC,
        .leader_schedule_limit = 4,
        .region_schedule_limit = 2048,
        .replica_schedule_limit = 64,
    };
}

static inline struct tkv_sched_cluster *mem_cluster(uint64_t max_replicas)
{
    struct tkv_sched_options o = test_opts(max_replicas);
    struct tkv_sched_cluster *c = NULL;
    cr_assert_eq(tkv_sched_cluster_open(NULL, &o, 0, 42, T0, &c), 0);
    return c;
}

/* Register store id (label node=<node> unless node is NULL). */
static inline void add_store(struct tkv_sched_cluster *c, uint64_t id, const char *node)
{
    char addr[64];
    metapb_StoreLabel label = {.key = TKV_SLICE_STR("node"), .value = {0}};
    metapb_Store st = {.id = id};
    const char *why = "";
    snprintf(addr, sizeof(addr), "127.0.0.1:%llu", 20000 + (unsigned long long)id);
    st.address = TKV_SLICE(addr, strlen(addr));
    if (node) {
        label.value = TKV_SLICE(node, strlen(node));
        st.labels.items = &label;
        st.labels.n = 1;
    }
    int rv = tkv_sched_put_store(c, &st, T0, &why);
    cr_assert_eq(rv, 0, "put store %llu: %s", (unsigned long long)id, why);
}

/* A heartbeat under construction (owns its arrays). */
struct hb {
    schedulerpb_RegionHeartbeatRequest req;
    metapb_Peer peers[TKV_SCHED_MAX_PEERS];
    metapb_Peer pending[TKV_SCHED_MAX_PEERS];
    char start[32], end[32];
};

/* Region id over [start, end) with peers on stores[0..n) (peer id =
 * id * 100 + store), leader the peer on leader_store, epoch (conf_ver,
 * version), approximate size in MiB. */
static inline void hb_make(struct hb *h, uint64_t id, const char *start, const char *end,
                           const uint64_t *stores, size_t n, uint64_t leader_store,
                           uint64_t conf_ver, uint64_t version, uint64_t size_mb)
{
    memset(h, 0, sizeof(*h));
    snprintf(h->start, sizeof(h->start), "%s", start);
    snprintf(h->end, sizeof(h->end), "%s", end);
    h->req.has_region = true;
    h->req.region.id = id;
    h->req.region.start_key = TKV_SLICE(h->start, strlen(h->start));
    h->req.region.end_key = TKV_SLICE(h->end, strlen(h->end));
    h->req.region.has_region_epoch = true;
    h->req.region.region_epoch.conf_ver = conf_ver;
    h->req.region.region_epoch.version = version;
    for (size_t i = 0; i < n; i++) {
        h->peers[i].id = id * 100 + stores[i];
        h->peers[i].store_id = stores[i];
        if (stores[i] == leader_store) {
            h->req.has_leader = true;
            h->req.leader = h->peers[i];
        }
    }
    h->req.region.peers.items = h->peers;
    h->req.region.peers.n = n;
    h->req.approximate_size = size_mb << 20;
}

/* Fix up pointers after copying a struct hb. */
static inline void hb_fix(struct hb *h)
{
    h->req.region.start_key = TKV_SLICE(h->start, strlen(h->start));
    h->req.region.end_key = TKV_SLICE(h->end, strlen(h->end));
    h->req.region.peers.items = h->peers;
    h->req.pending_peers.items = h->pending;
}

static inline void hb_set_pending(struct hb *h, uint64_t store)
{
    for (size_t i = 0; i < h->req.region.peers.n; i++)
        if (h->peers[i].store_id == store)
            h->pending[h->req.pending_peers.n++] = h->peers[i];
    h->req.pending_peers.items = h->pending;
}

static inline int hb_send(struct tkv_sched_cluster *c, struct hb *h, bool *updated)
{
    const char *why = "";
    hb_fix(h);
    return tkv_sched_region_heartbeat(c, &h->req, updated, &why);
}

/* The incremental per-store counters must equal a recount from the tree. */
static inline void check_counters(struct tkv_sched_cluster *c)
{
    size_t n = tkv_sched_n_stores(c);
    struct tkv_sched_store saved[64];
    cr_assert(n <= 64);
    for (size_t i = 0; i < n; i++)
        saved[i] = *tkv_sched_store_at(c, i);
    tkv_sched_recount(c);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_sched_store *s = tkv_sched_store_at(c, i);
        cr_assert_eq(saved[i].region_count, s->region_count,
                     "store %llu region_count %llu, tree says %llu", (unsigned long long)s->id,
                     (unsigned long long)saved[i].region_count,
                     (unsigned long long)s->region_count);
        cr_assert_eq(saved[i].leader_count, s->leader_count, "store %llu leader_count",
                     (unsigned long long)s->id);
        cr_assert_eq(saved[i].pending_peer_count, s->pending_peer_count,
                     "store %llu pending_peer_count", (unsigned long long)s->id);
        cr_assert_eq(saved[i].region_size, s->region_size, "store %llu region_size",
                     (unsigned long long)s->id);
        cr_assert_eq(saved[i].leader_size, s->leader_size, "store %llu leader_size",
                     (unsigned long long)s->id);
    }
}

/* The tree is sorted and non-overlapping, and the id index agrees. */
static inline void check_tree(struct tkv_sched_cluster *c)
{
    size_t n = tkv_sched_n_regions(c);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_sched_region *r = tkv_sched_region_at(c, i);
        cr_assert_eq(tkv_sched_region_by_id(c, r->id), r, "id index disagrees for region %llu",
                     (unsigned long long)r->id);
        if (i + 1 < n) {
            const struct tkv_sched_region *nx = tkv_sched_region_at(c, i + 1);
            cr_assert(r->end_key.len > 0, "region %llu ends at +inf but is not last",
                      (unsigned long long)r->id);
            size_t m = r->end_key.len < nx->start_key.len ? r->end_key.len : nx->start_key.len;
            int cmp = memcmp(r->end_key.ptr, nx->start_key.ptr, m);
            cr_assert(cmp < 0 || (cmp == 0 && r->end_key.len <= nx->start_key.len),
                      "regions %llu and %llu overlap", (unsigned long long)r->id,
                      (unsigned long long)nx->id);
        }
    }
}

#endif
