/* tinyscheduler-server's brain, without I/O: cluster metadata (cluster id,
 * stores, a key-ordered region tree), region-heartbeat processing with
 * stale-epoch rejection and per-store counters, the ID allocator and the TSO
 * (both persisted a window ahead), GC safe point, cluster config, operators
 * and the schedulers that make them (replica checker, balance-region,
 * balance-leader). The gRPC service (sched/sched_service.c) is a thin layer
 * over this contract; tests drive it directly. See sched/README.md.
 *
 * Threading: a tkv_sched_cluster is a single-thread object (the scheduler's
 * one reactor core, or a test's thread). Time comes in as arguments
 * (monotonic ns for heartbeats and operators, wall ms for the TSO), never
 * from a clock read here, so tests are deterministic.
 *
 * Persistence: when opened with an engine session (WiredTiger in the
 * binary, the mem engine in tests) every state change a client may rely on
 * is written, synchronously, before the call returns: cluster id, bootstrap
 * (cluster config + first store), stores, ID and TSO upper bounds, GC safe
 * point. Region metas are a cache the stores re-report: they are written in
 * batches by tkv_sched_flush_regions(). A NULL session keeps everything in
 * memory (unit tests of the algorithms).
 *
 * Keys: region boundaries are compared bytewise (memcmp, shorter first on a
 * common prefix): they are memcomparable-encoded keys (ARCHITECTURE.md Keys);
 * an empty end key means +infinity. */
#ifndef TKV_SCHED_H
#define TKV_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"
#include "metapb.pb.h"
#include "schedulerpb.pb.h"

struct tkv_engine_session;

/* The store label that names a tinykv-server node: no two replicas of a
 * region are placed on stores with the same value (stores without it count
 * as separate nodes). */
#define TKV_SCHED_NODE_LABEL "node"

/* Limits on untrusted input. */
#define TKV_SCHED_MAX_PEERS 16      /* peers per region (max-replicas <= 15) */
#define TKV_SCHED_MAX_LABELS 8      /* labels per store */
#define TKV_SCHED_MAX_LABEL_LEN 128 /* bytes of a label key or value */
#define TKV_SCHED_MAX_ADDR_LEN 255  /* bytes of a store address */
#define TKV_SCHED_MAX_KEY_LEN 65536 /* bytes of a region boundary */
#define TKV_SCHED_MAX_TSO_COUNT ((1u << 18) - 1)
#define TKV_SCHED_LOGICAL_BITS 18
#define TKV_SCHED_ID_WINDOW 1000 /* ids reserved per persisted bound */

/* Operator timeouts (TINYKV-API.md 2.15). */
#define TKV_SCHED_LEADER_OP_TIMEOUT_NS (10ull * 1000000000ull)
#define TKV_SCHED_REGION_OP_TIMEOUT_NS (600ull * 1000000000ull)

struct tkv_sched_peer {
    uint64_t id;
    uint64_t store_id;
};

struct tkv_sched_label {
    char key[TKV_SCHED_MAX_LABEL_LEN + 1];
    char value[TKV_SCHED_MAX_LABEL_LEN + 1];
};

/* A store as the scheduler knows it: its registration (persisted), its last
 * heartbeat's stats (memory only) and counters derived from the region tree
 * (recomputed on every region update). */
struct tkv_sched_store {
    uint64_t id;
    char address[TKV_SCHED_MAX_ADDR_LEN + 1];
    int state; /* metapb_StoreState */
    struct tkv_sched_label labels[TKV_SCHED_MAX_LABELS];
    uint32_t n_labels;
    /* From StoreHeartbeat. */
    uint64_t capacity, available, used_size;
    uint32_t reported_region_count;
    bool is_busy;
    uint64_t last_heartbeat_ns; /* monotonic; load/put time until the first heartbeat */
    /* From the region tree. */
    uint64_t leader_count, region_count, pending_peer_count;
    uint64_t leader_size, region_size; /* MiB: sums of approximate sizes */
    /* What running operators will still change (steps not done yet): the
     * balancers decide on counters + influence, so the operators of one
     * patrol do not all pile onto the same emptiest store. */
    int64_t influence_size, influence_leaders;
};

/* A region as last accepted from a heartbeat (or loaded from disk). One
 * allocation owned by the cluster; replaced, never edited, on update. */
struct tkv_sched_region {
    uint64_t id;
    struct tkv_slice start_key, end_key; /* into the allocation; end len 0 = +inf */
    uint64_t conf_ver, version;
    struct tkv_sched_peer peers[TKV_SCHED_MAX_PEERS];
    uint32_t n_peers;
    struct tkv_sched_peer leader; /* id 0: unknown */
    struct tkv_sched_peer pending[TKV_SCHED_MAX_PEERS];
    uint32_t n_pending;
    uint64_t approximate_size; /* MiB, at least 1 */
};

/* ---- operators ---- */

enum tkv_sched_step_kind {
    TKV_SCHED_STEP_ADD_PEER,    /* add peer{peer_id, store_id}; done when present, not pending */
    TKV_SCHED_STEP_REMOVE_PEER, /* remove the peer on store_id; done when gone */
    TKV_SCHED_STEP_TRANSFER_LEADER, /* leader to the peer on store_id; done when it leads */
};

struct tkv_sched_step {
    enum tkv_sched_step_kind kind;
    uint64_t store_id;
    uint64_t peer_id; /* ADD_PEER only */
};

enum tkv_sched_op_kind {
    TKV_SCHED_OP_LEADER = 1,  /* balance-leader: counts against leader-schedule-limit */
    TKV_SCHED_OP_REGION = 2,  /* balance-region: region-schedule-limit */
    TKV_SCHED_OP_REPLICA = 4, /* replica checker: replica-schedule-limit */
};

#define TKV_SCHED_MAX_STEPS 4

struct tkv_sched_operator {
    uint64_t region_id;
    enum tkv_sched_op_kind kind;
    char desc[48]; /* "balance-region", "make-up-replica", ... */
    struct tkv_sched_step steps[TKV_SCHED_MAX_STEPS];
    uint32_t n_steps, current;
    uint64_t created_ns, timeout_ns;
    int status;                             /* schedulerpb_OperatorStatus: RUNNING until it ends */
    uint64_t epoch_conf_ver, epoch_version; /* region epoch when created */
    uint64_t region_size;                   /* MiB, when created (influence) */
    uint64_t leader_store;                  /* leader's store when created (influence) */
    bool admin; /* asked for by an administrator: replaces the schedulers' operators */
};

/* ---- the cluster ---- */

/* The writer of a replicated scheduler (sched/sched_raft.c): takes one
 * write command (see tkv_sched_cmd_to_batch for its bytes; borrowed for the
 * call) and returns 0 once it is proposed to the group, or an error
 * (TKV_ENOTLEADER: nothing will be written; the cluster keeps its old
 * value). The writer's owner must not let a client see anything that
 * depends on a non-lazy command before that command is committed (the
 * reply barrier in sched_raft.c). lazy: region metas, a cache nothing
 * depends on. */
typedef int (*tkv_sched_writer_fn)(void *ctx, struct tkv_slice cmd, bool lazy);

struct tkv_sched_options {
    uint64_t max_replicas;
    uint64_t max_store_down_time_ns;
    uint64_t leader_schedule_limit, region_schedule_limit, replica_schedule_limit;
    /* NULL: write commands straight into the session's engine (one member).
     * Reads (at open) always come from the session. */
    tkv_sched_writer_fn writer;
    void *writer_ctx;
};

/* Write commands: every durable change of the cluster is one command, a
 * sequence of ops on META keys starting with "sched/":
 *   put:    u8 1, u32be key_len, key, u32be value_len, value
 *   delete: u8 2, u32be key_len, key
 * applied atomically. */
#define TKV_SCHED_CMD_PUT 1
#define TKV_SCHED_CMD_DELETE 2
#define TKV_SCHED_CMD_MAX_KEY 1024
#define TKV_SCHED_CMD_MAX_VALUE (1u << 20)
struct tkv_engine_batch;
/* Decode an untrusted command into b (ops appended). Errors: TKV_ECORRUPT
 * (truncated, unknown op, key outside "sched/", oversized): b may hold a
 * prefix of the ops, so discard it. */
int tkv_sched_cmd_to_batch(struct tkv_slice cmd, struct tkv_engine_batch *b);

struct tkv_sched_cluster;

/* Create a cluster. With a session, load what an earlier run persisted (or
 * create and persist a new cluster id: (unix seconds << 32) + random32 from
 * wall_ms and seed) and reserve fresh ID and TSO windows above the persisted
 * bounds; without, start empty with cluster id `seed` (tests).
 * now_ns: monotonic now (loaded stores count as heard from now).
 * Errors: engine errors, TKV_ECORRUPT (a persisted record does not decode).
 * Thread: the cluster's. */
int tkv_sched_cluster_open(struct tkv_engine_session *sess, const struct tkv_sched_options *opts,
                           uint64_t wall_ms, uint64_t seed, uint64_t now_ns,
                           struct tkv_sched_cluster **out);
/* Flush region metas and free. NULL is a no-op. */
void tkv_sched_cluster_close(struct tkv_sched_cluster *c);
/* Free without the final flush (tests: what a crash leaves behind). */
void tkv_sched_cluster_drop(struct tkv_sched_cluster *c);

uint64_t tkv_sched_cluster_id(const struct tkv_sched_cluster *c);
bool tkv_sched_is_bootstrapped(const struct tkv_sched_cluster *c);
struct tkv_sched_options *tkv_sched_options(struct tkv_sched_cluster *c);

/* Bootstrap with the first store (TinyKV's BootstrapRequest has no region).
 * Errors: TKV_EINVAL (store id 0, no address, bad labels: *why says what),
 * TKV_ECONFLICT (already bootstrapped), engine errors. */
int tkv_sched_bootstrap(struct tkv_sched_cluster *c, const metapb_Store *store, uint64_t now_ns,
                        const char **why);

/* Next unique id (store, region and peer ids share it). Persists a new
 * bound TKV_SCHED_ID_WINDOW ahead when the window is used up.
 * Errors: engine errors (nothing handed out). */
int tkv_sched_alloc_id(struct tkv_sched_cluster *c, uint64_t *id_out);

/* Allocate `count` timestamps at wall time wall_ms: *physical / *logical
 * name the highest (the batch is logical-count+1 .. logical). Strictly
 * greater than every timestamp returned before, by this process or (with a
 * session) any earlier one, whatever wall_ms does. Persists a new upper
 * bound (physical + save_interval_ms) before handing out a physical part at
 * or past the persisted one.
 * Errors: TKV_EINVAL (count 0 or > TKV_SCHED_MAX_TSO_COUNT), engine errors. */
int tkv_sched_tso(struct tkv_sched_cluster *c, uint32_t count, uint64_t wall_ms,
                  uint64_t save_interval_ms, int64_t *physical, int64_t *logical);

/* ---- stores ---- */

/* Register or update a store (PutStore). Errors: TKV_EINVAL (id 0, empty or
 * oversized address, bad labels; *why), TKV_ECONFLICT (address used by
 * another non-tombstone store), TKV_ESTALE (the store is a tombstone),
 * engine errors. */
int tkv_sched_put_store(struct tkv_sched_cluster *c, const metapb_Store *store, uint64_t now_ns,
                        const char **why);
/* The store or NULL. Valid until the next put_store. */
struct tkv_sched_store *tkv_sched_get_store(struct tkv_sched_cluster *c, uint64_t id);
size_t tkv_sched_n_stores(const struct tkv_sched_cluster *c);
struct tkv_sched_store *tkv_sched_store_at(struct tkv_sched_cluster *c, size_t i);
/* StoreHeartbeat. Errors: TKV_ENOTFOUND (unknown store), TKV_ESTALE (tombstone). */
int tkv_sched_store_heartbeat(struct tkv_sched_cluster *c, const schedulerpb_StoreStats *stats,
                              uint64_t now_ns);
/* A store that may receive replicas: Up and heard from within
 * max-store-down-time. */
bool tkv_sched_store_available(const struct tkv_sched_cluster *c, const struct tkv_sched_store *s,
                               uint64_t now_ns);
/* Fill the pb form of a store (labels point into s). */
void tkv_sched_store_to_pb(struct tkv_arena *arena, const struct tkv_sched_store *s,
                           metapb_Store *out);

/* ---- regions ---- */

/* processRegionHeartbeat (TINYKV-API.md 2.15): validate, reject stale,
 * update the tree and the store counters when anything changed.
 * Errors: TKV_EINVAL (*why: no region, id 0, no peers, a peer with id 0 or
 * store 0, duplicate stores, inverted range, leader not a peer, oversized
 * keys), TKV_ESTALE (older epoch than what is cached or than an overlapped
 * region). *updated (may be NULL) says whether the cache changed. */
int tkv_sched_region_heartbeat(struct tkv_sched_cluster *c,
                               const schedulerpb_RegionHeartbeatRequest *hb, bool *updated,
                               const char **why);

/* Lookups. Returned pointers are valid until the next region update. */
const struct tkv_sched_region *tkv_sched_region_by_key(const struct tkv_sched_cluster *c,
                                                       struct tkv_slice key);
const struct tkv_sched_region *tkv_sched_prev_region(const struct tkv_sched_cluster *c,
                                                     struct tkv_slice key);
const struct tkv_sched_region *tkv_sched_region_by_id(const struct tkv_sched_cluster *c,
                                                      uint64_t id);
size_t tkv_sched_n_regions(const struct tkv_sched_cluster *c);
/* i-th region in key order (0 <= i < n_regions). */
const struct tkv_sched_region *tkv_sched_region_at(const struct tkv_sched_cluster *c, size_t i);
/* Index of the first region whose range ends after key (the one containing
 * key, or the next one), n_regions if none. */
size_t tkv_sched_region_seek(const struct tkv_sched_cluster *c, struct tkv_slice key);
/* Fill the pb form (slices point into r). */
void tkv_sched_region_to_pb(struct tkv_arena *arena, const struct tkv_sched_region *r,
                            metapb_Region *out);
/* Recompute every store counter from the tree (tests check the incremental
 * counters against this). */
void tkv_sched_recount(struct tkv_sched_cluster *c);

/* Write dirty region metas in one engine batch. Returns 0 or engine errors
 * (they stay dirty). */
int tkv_sched_flush_regions(struct tkv_sched_cluster *c);
size_t tkv_sched_dirty_regions(const struct tkv_sched_cluster *c);

/* AskSplit: the region must exist at region.start_key with the same id and
 * an epoch not older than the cached one; allocates a new region id and one
 * peer id per peer. Errors: TKV_EINVAL, TKV_EREGION (no such region),
 * TKV_ESTALE, engine errors. new_peer_ids must hold TKV_SCHED_MAX_PEERS. */
int tkv_sched_ask_split(struct tkv_sched_cluster *c, const metapb_Region *region,
                        uint64_t *new_region_id, uint64_t *new_peer_ids, size_t *n_new,
                        const char **why);

/* ---- cluster config, GC safe point ---- */

/* Stored cluster config (id, max_peer_count). */
void tkv_sched_get_config(const struct tkv_sched_cluster *c, metapb_Cluster *out);
/* PutClusterConfig: the id must match (or be 0), max_peer_count 1..15 (0
 * keeps the current value). Also updates max-replicas.
 * Errors: TKV_EINVAL (*why), engine errors. */
int tkv_sched_put_config(struct tkv_sched_cluster *c, const metapb_Cluster *cfg, const char **why);
uint64_t tkv_sched_gc_safe_point(const struct tkv_sched_cluster *c);
/* Monotonic: a smaller value is ignored. *now_out = the stored value after. */
int tkv_sched_update_gc_safe_point(struct tkv_sched_cluster *c, uint64_t sp, uint64_t *now_out);

/* ---- operators and scheduling ---- */

/* The operator of a region (running or the last finished one), or NULL. */
const struct tkv_sched_operator *tkv_sched_get_operator(const struct tkv_sched_cluster *c,
                                                        uint64_t region_id);
/* Running operators of the kinds in mask. */
size_t tkv_sched_running_operators(const struct tkv_sched_cluster *c, unsigned kind_mask);
/* Add an operator for op->region_id (replaces nothing: TKV_EBUSY if one is
 * running). The cluster copies it and sets status RUNNING. TKV_EINVAL: no
 * steps / too many / region 0, or its steps would leave more replicas of the
 * region sharing a node (TKV_SCHED_NODE_LABEL) than it has now. */
int tkv_sched_add_operator(struct tkv_sched_cluster *c, const struct tkv_sched_operator *op,
                           uint64_t now_ns);

/* Operators an administrator asks for (PD's POST /pd/api/v1/operators,
 * tinykv-ctl operator add). */
enum tkv_sched_admin_kind {
    TKV_SCHED_ADMIN_TRANSFER_LEADER, /* leader to the region's peer on store_id */
    TKV_SCHED_ADMIN_ADD_PEER,        /* a new peer (fresh id) on store_id */
    TKV_SCHED_ADMIN_REMOVE_PEER,     /* remove the region's peer on store_id */
};

/* Check and build (not add) an administrator's operator: the region and the
 * store must exist and the region must have no running operator;
 * transfer-leader needs a caught-up peer on an available store that does
 * not lead yet; add-peer an available store without a peer of the region
 * whose node (TKV_SCHED_NODE_LABEL) holds no replica of it yet (allocates
 * the peer id); remove-peer a peer on the store and another peer left.
 * A running operator of the schedulers does not stop it (as in PD, the
 * administrator's wins: tkv_sched_add_admin_operator replaces it); a
 * running administrator's operator does.
 * Returns 0 and *op, or TKV_ENOTFOUND (region or store), TKV_EBUSY (an
 * administrator's operator runs), TKV_EINVAL (the rest), engine errors of
 * the id allocator, with a sentence in why. */
int tkv_sched_admin_operator(struct tkv_sched_cluster *c, enum tkv_sched_admin_kind kind,
                             uint64_t region_id, uint64_t store_id, uint64_t now_ns,
                             struct tkv_sched_operator *op, char *why, size_t why_cap);
/* Add op (from tkv_sched_admin_operator), cancelling the region's running
 * operator if there is one (counted in ops_cancelled). Errors as
 * tkv_sched_add_operator. */
int tkv_sched_add_admin_operator(struct tkv_sched_cluster *c, const struct tkv_sched_operator *op,
                                 uint64_t now_ns);

/* After a region heartbeat: advance the region's operator against its state
 * (finish steps that are done, time it out), then say what to send: returns
 * true and fills *resp (region_id, epoch, target_peer, change_peer or
 * transfer_leader, header.cluster_id) when a command should go to the
 * region's leader store. */
bool tkv_sched_dispatch(struct tkv_sched_cluster *c, uint64_t region_id, uint64_t now_ns,
                        schedulerpb_RegionHeartbeatResponse *resp);

/* Replica checker for one region: an operator that adds a missing replica,
 * replaces one on an unavailable store or on a node already holding another
 * replica, or removes an extra one. Returns true and fills *op. Peer ids
 * come from the allocator (so this may write the ID bound). */
bool tkv_sched_check_replicas(struct tkv_sched_cluster *c, const struct tkv_sched_region *r,
                              uint64_t now_ns, struct tkv_sched_operator *op);
/* balance-region (TinyKV 3C) and balance-leader: one operator or false.
 * rng_state: a seeded PRNG state (xorshift64*), advanced. */
bool tkv_sched_balance_region(struct tkv_sched_cluster *c, uint64_t now_ns, uint64_t *rng_state,
                              struct tkv_sched_operator *op);
bool tkv_sched_balance_leader(struct tkv_sched_cluster *c, uint64_t now_ns, uint64_t *rng_state,
                              struct tkv_sched_operator *op);

/* One patrol pass: time out operators, run the replica checker over every
 * region without an operator (within replica-schedule-limit), then
 * balance-region and balance-leader while under their limits (at most
 * `max_new` new operators in all). Returns the number of operators added. */
size_t tkv_sched_patrol(struct tkv_sched_cluster *c, uint64_t now_ns, uint64_t *rng_state,
                        size_t max_new);

/* Counters for logs and tests. */
struct tkv_sched_stats {
    uint64_t heartbeats, stale_heartbeats, region_updates;
    uint64_t ops_created, ops_finished, ops_timed_out, ops_cancelled;
    uint64_t store_heartbeats;           /* accepted StoreHeartbeats */
    uint64_t tso_requests, tso_timestamps; /* successful tkv_sched_tso calls, their counts */
    uint64_t ids_allocated;
    /* The operator counters above by kind: [0] leader, [1] region, [2] replica. */
    uint64_t ops_created_by_kind[3], ops_finished_by_kind[3], ops_timed_out_by_kind[3];
};
void tkv_sched_get_stats(const struct tkv_sched_cluster *c, struct tkv_sched_stats *out);

#endif
