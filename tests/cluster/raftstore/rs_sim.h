/* Deterministic whole-cluster simulation of raftstores: N stores in one
 * thread on the in-memory raft log and engine, virtual time in ms, a
 * seeded network that drops, delays (reorders) and duplicates messages,
 * partitions, crashes that lose the raft log's unsynced tail and every
 * engine write after the last checkpoint (checkpoints run in the
 * background: _begin, then _done 1-40 ms later, or early on the store's
 * env.request_checkpoint), an in-process mock scheduler
 * (bootstrap + leader lookup), and clients whose histories are checked for
 * linearizability
 * (tests/lib/lincheck.h). */
#ifndef TKV_TEST_RS_SIM_H
#define TKV_TEST_RS_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "lincheck.h"
#include "tkv/raftstore.h"

#define SIM_MAX_STORES 8
#define SIM_MAX_CLIENTS 32
#define SIM_MAX_REGIONS 128

struct sim_opts {
    int n_stores;
    int n_clients;
    bool unreliable;  /* drop 10%, duplicate 5%, delays 1-30 ms */
    bool crash;       /* crash/restart stores during and between iterations */
    bool partitions;  /* random partitions during iterations */
    uint64_t gc_limit; /* raft log GC count limit (0 = default 128000) */
    int iterations;
    uint64_t iteration_ms; /* client load per iteration (virtual) */
    int n_keys;
    bool inject_stale_read; /* test hook: reads skip ReadIndex (rs_sim.c) */
    bool inject_early_ack;  /* test hook: writes acknowledged before commit */
    /* crash this store in the loop turn in which it applies a snapshot to
     * its engine / destroys an initialized peer, after the turn's raft log
     * sync and before any checkpoint (the engine write is lost) */
    int crash_on_snapshot, crash_on_destroy;
    /* crash this store right after the checkpoint _done that released an
     * applied snapshot, before the raft log compaction it staged is synced */
    int crash_on_snapshot_release;
    /* split (3B): the checker runs with these sizes (bytes), the mock
     * scheduler answers ask_split; values are padded to value_len bytes */
    bool split;
    uint64_t region_max_size, region_split_size;
    int value_len;
    /* GenericTest's confchanger (3B): during each iteration, on region 1,
     * a random store's peer is removed (if the region keeps one) or a new
     * peer added there, one operator at a time, 0-199 ms apart */
    bool confchange;
    /* raftstore cfg.snap_gen_budget (0: its default) */
    uint64_t snap_gen_budget;
    /* stores holding region 1 at bootstrap (bit i = store i; 0 = every
     * store): the others start empty (the balance scenarios) */
    uint32_t initial_stores;
    /* share of the clients' operations that are puts, in percent (0: half) */
    int put_percent;
    /* keys k with k % cold_mod == 0 are cold: the clients only read them
     * (0: none); a test writes them first */
    uint32_t cold_mod;
    /* the confchanger removes a peer only from a region with more peers
     * than this (0: 1, TinyKV's; the txn scenarios keep 3 replicas, as a
     * scheduler does, away from the two-peer gap of the raftstore README) */
    uint32_t confchange_min_peers;
};

/* The mock scheduler (TinyKV's MockSchedulerClient): a region view fed by
 * the leaders' heartbeats (every SIM_HEARTBEAT_MS and at once after
 * env.region_changed), one operator per region answered in the heartbeat
 * until the view shows it done. A heartbeat whose conf_ver is newer must
 * differ from the view by exactly one peer, and an equal conf_ver must
 * carry the same peers: otherwise the simulation fails. */
#define SIM_HEARTBEAT_MS 100
enum sim_op_type { SIM_OP_NONE = 0, SIM_OP_ADD, SIM_OP_REMOVE, SIM_OP_TRANSFER };
struct sim_sched_region {
    bool known;
    struct tkv_rs_region region;
    int leader_store; /* of the last heartbeat (0: none yet) */
    uint32_t op;      /* enum sim_op_type; NONE once done */
    struct tkv_rs_peer op_peer;
    int op_store; /* TRANSFER: the target store */
    uint64_t op_since;
};
struct sim_sched {
    struct sim_sched_region regions[SIM_MAX_REGIONS];
    uint64_t next_id;
    uint64_t n_heartbeats, n_ops_done;
};

/* The clients' region directory: fed by every store's region_changed
 * (newest epoch wins) and EpochNotMatch answers, read to route a key. */
struct sim_region {
    struct tkv_rs_region rg;
    int leader; /* store hint, 0 = unknown */
};

/* Hooks for layers on top of the raftstore (the transactional driver of
 * txn_sim.c): store lifecycle and one call per virtual ms. */
enum sim_store_event { SIM_STORE_OPENED, SIM_STORE_CLOSING, SIM_STORE_CLOSED };
struct sim_hooks {
    void *arg;
    void (*store_event)(void *arg, int store, enum sim_store_event ev, struct tkv_raftstore *rs);
    /* each ms, after the raw clients and before the stores' ready loops */
    void (*step)(void *arg);
    /* a real scheduler (test_balance.c): every region heartbeat of a
     * leader (every SIM_HEARTBEAT_MS and after a change) also goes here,
     * after the mock scheduler's view checked it; the hook may call into
     * the store (conf change, transfer) */
    void (*region_heartbeat)(void *arg, int store, const struct tkv_rs_region_status *st);
};

struct sim_store;
struct sim_client;
struct sim_msg;
struct sim_ask;

struct sim {
    struct sim_opts o;
    uint64_t seed, rng, now, seq;
    struct sim_store *stores[SIM_MAX_STORES + 1]; /* 1-based store ids */
    bool cut[SIM_MAX_STORES + 1][SIM_MAX_STORES + 1];
    struct sim_msg *q;
    size_t n_q, cap_q;
    struct sim_client *clients;
    struct lc_history *hist;
    uint64_t next_value;
    bool failed;
    char err[512];
    uint64_t n_ok_puts, n_ok_gets, n_unknown, n_failed_ops;
    struct sim_hooks hooks; /* set before sim_init's stores open: sim_init_hooks */
    struct sim_sched sched;
    bool confchanger_on;
    uint64_t confchanger_next;
    uint64_t confchanger_region; /* region of the confchanger's current operator */
    uint64_t n_conf_changes; /* confchanger operators completed */
    struct sim_region regions[SIM_MAX_REGIONS];
    int n_regions;
    struct sim_ask *asks;
    size_t n_asks, cap_asks;
    uint64_t n_splits; /* split proposals answered 0 */
    /* test hook: no checkpoint begins on this store (0: none), so what
     * waits for one (a snapshot's compaction, a removal) stays pending */
    int ckpt_held_store;
    /* messages of this region to this store are dropped (0: none) */
    uint64_t blocked_region;
    int blocked_store;
    /* Snapshot oracle (always on): when a store starts generating a
     * snapshot of a region at applied index X, the simulator builds the
     * expected payload from its own read of that store's engine at that
     * moment (the region at X, in one call); every MSG_SNAPSHOT sent must
     * equal the expected payload of its (store, region, index), or the run
     * fails. */
    struct sim_snapref *snaprefs;
    size_t n_snaprefs;
    uint64_t n_snap_checked, n_snap_unchecked;
    size_t max_snap_checked_len; /* largest payload checked (bytes) */
    /* generations that completed after the leader applied more entries
     * than their snapshot index (writes went on during generation) */
    uint64_t n_snap_gen_overlapped;
};

/* sim_init with hooks (called for the stores sim_init opens too). */
void sim_init_hooks(struct sim *s, const struct sim_opts *o, uint64_t seed,
                    const struct sim_hooks *hooks);
/* The PRNG of the simulation (one stream: a seed replays everything). */
uint64_t sim_rnd(struct sim *s);
/* One chaos round of sim_generic: run, maybe partition / crash a store. */
void sim_chaos(struct sim *s);
/* Heal, restart every store, let a leader settle. */
void sim_settle(struct sim *s);

void sim_init(struct sim *s, const struct sim_opts *o, uint64_t seed);
void sim_close(struct sim *s);
/* Advance virtual time by ms (events, ticks, checkpoints, clients). */
void sim_run(struct sim *s, uint64_t ms);
/* Clients on / off. */
void sim_clients(struct sim *s, bool on);
void sim_partition(struct sim *s, const int *side_a, int n_a);
void sim_heal(struct sim *s);
void sim_crash(struct sim *s, int store);
void sim_restart(struct sim *s, int store);
struct tkv_raftstore *sim_store(struct sim *s, int store);
/* Current leader store of region 1 (0: none). */
int sim_leader(struct sim *s);
/* Current leader store of a region (0: none). */
int sim_region_leader(struct sim *s, uint64_t region_id);
/* The directory's region holding key (raw compare), NULL if none. */
const struct sim_region *sim_route(struct sim *s, const char *key, size_t len);
/* Synchronous client ops through the raft path (retrying until timeout_ms
 * virtual); recorded in the history. rv 0 / TKV_ENOTFOUND / TKV_ETIMEDOUT. */
int sim_put(struct sim *s, enum tkv_cf cf, const char *key, const char *val, uint64_t timeout_ms);
int sim_delete(struct sim *s, enum tkv_cf cf, const char *key, uint64_t timeout_ms);
int sim_get(struct sim *s, enum tkv_cf cf, const char *key, char *val_out, size_t cap,
            uint64_t timeout_ms);
/* A store's engine (alive or not: it outlives crashes). */
struct tkv_engine *sim_engine(struct sim *s, int store);
/* Read a key straight from a store's engine (no raft). */
int sim_engine_get(struct sim *s, int store, enum tkv_cf cf, const char *key, char *val_out,
                   size_t cap);
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the mock scheduler ---- */
/* A fresh id (peers, regions), never reused. */
uint64_t sim_alloc_id(struct sim *s);
/* The scheduler's view of a region (NULL: never heard of). */
const struct sim_sched_region *sim_sched_region(struct sim *s, uint64_t region_id);
/* Set the region's operator (replacing any); it is answered on heartbeats. */
void sim_sched_add_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer);
void sim_sched_remove_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer);
void sim_sched_transfer_leader(struct sim *s, uint64_t region_id, int store);
/* Blocking forms (TinyKV MustAddPeer / MustRemovePeer / MustTransferLeader):
 * set the operator and run until the view shows it done; after timeout_ms
 * virtual the simulation fails. Return 0 or -1. */
int sim_must_add_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer,
                      uint64_t timeout_ms);
int sim_must_remove_peer(struct sim *s, uint64_t region_id, struct tkv_rs_peer peer,
                         uint64_t timeout_ms);
int sim_must_transfer_leader(struct sim *s, uint64_t region_id, int store, uint64_t timeout_ms);
/* The peer of the region on store in the scheduler's view (id 0: none). */
struct tkv_rs_peer sim_sched_peer_on(struct sim *s, uint64_t region_id, int store);

/* The GenericTest of TinyKV's test_raftstore, checked for linearizability. */
void sim_generic(struct sim *s);
/* The end of sim_generic: a recorded final read of every key, then the
 * history's linearizability check (sim_fail on a violation). */
void sim_final_check(struct sim *s);

/* sim_generic for each seed (TKV_SEED=<n>: that one; TKV_SEEDS=<n>: n
 * seeds; else default_seeds). On the first failure returns false with err
 * naming the scenario, the failure and TKV_SEED to replay it. */
bool sim_generic_seeds(const char *name, const struct sim_opts *o, int default_seeds, char *err,
                       size_t cap);

#endif
