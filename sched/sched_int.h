/* Internals of the scheduler core (sched_cluster.c, sched_schedule.c). */
#ifndef TKV_SCHED_INT_H
#define TKV_SCHED_INT_H

#include "tkv/sched.h"

/* u64 -> pointer, open addressing; key 0 is never stored. */
struct sched_map {
    struct {
        uint64_t key;
        void *val;
    } * slots;
    size_t cap, n; /* cap is 0 or a power of two */
};

void *sched_map_get(const struct sched_map *m, uint64_t key);
void sched_map_put(struct sched_map *m, uint64_t key, void *val);
void sched_map_del(struct sched_map *m, uint64_t key);
void sched_map_free(struct sched_map *m);

/* Bytewise key order (memcomparable keys), shorter first on a common prefix. */
int sched_key_cmp(struct tkv_slice a, struct tkv_slice b);

#define sched_cluster_s tkv_sched_cluster

struct tkv_sched_cluster {
    struct tkv_engine_session *sess; /* NULL: memory only */
    struct tkv_sched_options opts;
    uint64_t cluster_id;
    bool bootstrapped;

    struct tkv_sched_store *stores; /* registration order */
    size_t n_stores, cap_stores;

    /* Region tree: non-overlapping regions sorted by start key, plus an id
     * index. A sorted array: lookups are binary searches, inserts memmove
     * (fine up to ~10^5 regions, see README.md). */
    struct tkv_sched_region **tree;
    size_t n_tree, cap_tree;
    struct sched_map by_id;

    uint64_t *dirty; /* region ids to write (or delete) at the next flush */
    size_t n_dirty, cap_dirty;

    uint64_t id_next, id_bound; /* ids < id_next handed out; <= id_bound persisted */
    uint64_t tso_physical, tso_logical, tso_bound;
    uint64_t gc_safe_point;

    struct sched_map ops; /* region id -> struct tkv_sched_operator * */
    size_t n_running[8];  /* by kind bit index */
    struct tkv_sched_stats stats;
};

#endif
